"""Governed actions: what an agent does in the world, behind one gateway.

Policy as data and small pure functions: actions and their risk classes,
outcomes, risk policy, approvals, circuit breakers, drift, budgets, tools.
Two optional modules ship tools people use: :mod:`governance.models` (an
OpenAI-compatible chat model; needs ``garrison[models]``) and
:mod:`governance.mcp` (MCP servers' tools; needs ``garrison[mcp]``).  Neither
is imported here.
It depends only on :mod:`protocols`; the runtime's gateway
(``runtime._gateway``) and ledger apply it (``protocols <- governance <-
runtime <- supervisors``).
"""

from ._action import Action, ActionDeclaration, Risk, argument_digest
from ._approval import (
    Approval,
    ApprovalRequest,
    ApprovalState,
    Clearance,
    Denial,
    Verdict,
    approve,
    binding_hash,
    check,
    deny,
    expire,
    new_request,
)
from ._behaviour import BehaviourLevel, BehaviourMonitor, BehaviourPolicy, BehaviourReport, Observation
from ._breaker import Admission, Breaker, BreakerPolicy, BreakerState, CallResult, Transition, TransitionReason
from ._budget import Budget, BudgetPolicy, BudgetUsage, Refusal, RefusalReason, Reservation, Settlement
from ._drift import DriftMonitor, DriftPolicy, Scorer
from ._intervention import ActionEvent, Intervention, InterventionKind, MessageEvent, intervene
from ._outcome import Outcome, OutcomeCode
from ._risk import Decision, DecisionCode, RiskPolicy, decide, effective_risk, is_granted, parse_grants
from ._tool import NOT_DONE, Result, Tool, as_tool
from .exceptions import (
    ActionDeclarationError,
    ApprovalError,
    BudgetError,
    GovernanceError,
    ModelNotPriced,
    PolicyError,
    ToolError,
    ToolErrorResult,
    ToolRejected,
    ToolUnavailable,
)

__all__ = [
    "NOT_DONE",
    "Action",
    "ActionDeclaration",
    "ActionDeclarationError",
    "ActionEvent",
    "Admission",
    "Approval",
    "ApprovalError",
    "ApprovalRequest",
    "ApprovalState",
    "BehaviourLevel",
    "BehaviourMonitor",
    "BehaviourPolicy",
    "BehaviourReport",
    "Breaker",
    "BreakerPolicy",
    "BreakerState",
    "Budget",
    "BudgetError",
    "BudgetPolicy",
    "BudgetUsage",
    "CallResult",
    "Clearance",
    "Decision",
    "DecisionCode",
    "Denial",
    "DriftMonitor",
    "DriftPolicy",
    "GovernanceError",
    "Intervention",
    "InterventionKind",
    "MessageEvent",
    "ModelNotPriced",
    "Observation",
    "Outcome",
    "OutcomeCode",
    "PolicyError",
    "Refusal",
    "RefusalReason",
    "Reservation",
    "Result",
    "Risk",
    "RiskPolicy",
    "Scorer",
    "Settlement",
    "Tool",
    "ToolError",
    "ToolErrorResult",
    "ToolRejected",
    "ToolUnavailable",
    "Transition",
    "TransitionReason",
    "Verdict",
    "approve",
    "argument_digest",
    "as_tool",
    "binding_hash",
    "check",
    "decide",
    "deny",
    "effective_risk",
    "expire",
    "intervene",
    "is_granted",
    "new_request",
    "parse_grants",
]
