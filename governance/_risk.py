"""Risk policy as versioned data, capability grants, and the one pure decision over both.

:func:`decide` answers, for one action, before any work is done, what the
gateway must do with it:

==================  =========================================================
Decision            when
==================  =========================================================
REFUSE              the agent is not granted the action's capability
PROHIBIT            its risk is ``prohibited``: it never executes
EXECUTE             its risk is ``low``
EXECUTE_AND_FLAG    ``medium`` and fewer than ``medium_unreviewed_limit``
                    medium actions of this agent wait for review: it executes
                    and is recorded for review (flag and continue)
NEEDS_APPROVAL      ``high``; or ``medium`` with the unreviewed limit reached
==================  =========================================================

Checks run in that order: the capability first (deny by default, and an
ungranted action's risk function is never even called), then the risk.

Capability grants (a set of strings, per agent):

- ``"payments.refund"`` grants exactly that capability;
- ``"payments.*"`` grants every capability strictly under ``payments``
  (``payments.refund``, ``payments.refund.large``), not ``payments`` itself
  and not ``paymentsx.refund``;
- nothing else grants anything: there is no grant-all ``"*"``, and a
  malformed grant (:func:`parse_grants` refuses it) matches nothing.

Risk of an action under a policy (:func:`effective_risk`): the policy's
override for the action's tag (``"shop.refund@1"``), else for its name
(``"shop.refund"``, all versions), else what the class declares.  An override
may raise or lower a risk, with one exception: a class that declares itself
``prohibited`` stays prohibited.  Only a change of code lifts that, never data
and never an approval.

Invariants:

- ``decide`` is pure: same action, policy, grants and count, same decision.
- A prohibited action's decision is PROHIBIT (or REFUSE when its capability is
  not granted) whatever the policy's other fields and whatever the count.
- Every policy field is validated when the policy is built or loaded; a bad
  one raises :class:`~governance.PolicyError`.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ._action import CAPABILITY, Action, Risk
from ._policy import Policy
from .exceptions import PolicyError

__all__ = ["Decision", "DecisionCode", "RiskPolicy", "decide", "effective_risk", "is_granted", "parse_grants"]


class RiskPolicy(Policy):
    """Versioned risk policy: overrides of action risk classes, the review limit, approval rules.

    ``version`` is the policy's identity: an approval is bound to it, so any
    change of the policy that matters must come with a new version.
    """

    version: str
    #: action tag (``"shop.refund@1"``) or name (``"shop.refund"``) -> its risk under this policy.
    #: A copy of what was given; read it, never change it (a plain dict so the policy pickles and dumps).
    overrides: dict[str, Risk] = Field(default_factory=dict)
    #: how many medium actions of one agent may wait for review before its medium actions block.
    medium_unreviewed_limit: int = 10
    #: distinct approvers a high-risk action needs (1 or 2).
    approvals_required: int = 1
    #: seconds an approval request (and an approval) stays valid.
    approval_ttl: float = 3600.0

    @field_validator("version")
    @classmethod
    def _version_is_named(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the policy version must be a non-empty string")
        return value

    @field_validator("overrides")
    @classmethod
    def _overrides_name_actions(cls, value: dict[str, Risk]) -> dict[str, Risk]:
        for key in value:
            name, at, version = key.partition("@")
            if not name or (at and not (version.isascii() and version.isdigit())):
                raise ValueError(f"override key {key!r} must be an action name or 'name@version'")
        return dict(value)

    @field_validator("medium_unreviewed_limit")
    @classmethod
    def _limit_not_negative(cls, value: int) -> int:
        if value < 0:
            raise ValueError(f"medium_unreviewed_limit must be >= 0, got {value}")
        return value

    @field_validator("approvals_required")
    @classmethod
    def _one_or_two_approvers(cls, value: int) -> int:
        if value not in (1, 2):
            raise ValueError(f"approvals_required must be 1 or 2, got {value}")
        return value

    @field_validator("approval_ttl")
    @classmethod
    def _ttl_positive(cls, value: float) -> float:
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"approval_ttl must be a finite number of seconds > 0, got {value}")
        return value



class DecisionCode(str, enum.Enum):
    """What the gateway does with an action (see the module docstring's table)."""

    REFUSE = "refuse"                       # capability not granted: never runs
    PROHIBIT = "prohibit"                   # prohibited risk: never runs, no approval unlocks it
    EXECUTE = "execute"                     # low risk: runs
    EXECUTE_AND_FLAG = "execute_and_flag"   # medium under the limit: runs and is recorded for review
    NEEDS_APPROVAL = "needs_approval"       # high, or medium past the limit: runs only once approved


class Decision(BaseModel):
    """The decision for one action: its code, the risk it was judged at, and why."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: DecisionCode
    risk: Risk | None        # None when refused before its risk was looked at
    reason: str
    policy_version: str

    @property
    def executes(self) -> bool:
        """True when the action runs now (EXECUTE or EXECUTE_AND_FLAG)."""
        return self.code in (DecisionCode.EXECUTE, DecisionCode.EXECUTE_AND_FLAG)


def parse_grants(grants: Iterable[str]) -> frozenset[str]:
    """Validate capability grants (module docstring grammar); PolicyError names the first bad one."""
    out = set()
    for grant in grants:
        exact = grant[:-2] if isinstance(grant, str) and grant.endswith(".*") else grant
        if not isinstance(exact, str) or not CAPABILITY.fullmatch(exact):
            raise PolicyError(f"capability grant {grant!r} must be 'area.verb' or 'area.*'", grant=repr(grant))
        out.add(grant)
    return frozenset(out)


def is_granted(capability: str, granted: frozenset[str]) -> bool:
    """True when ``capability`` is granted exactly or by a ``prefix.*`` grant (deny by default)."""
    if capability in granted:
        return True
    parts = capability.split(".")
    return any(".".join(parts[:i]) + ".*" in granted for i in range(1, len(parts)))


def effective_risk(action: Action, policy: RiskPolicy) -> Risk:
    """The action's risk under ``policy``: override by tag, then by name, then declared; prohibited sticks."""
    declared = action.risk()
    if declared is Risk.PROHIBITED:
        return declared
    tag = action.type_tag()
    override = policy.overrides.get(tag)
    if override is None:
        override = policy.overrides.get(tag.rpartition("@")[0])
    return declared if override is None else override


def decide(action: Action, policy: RiskPolicy, *, granted: frozenset[str], unreviewed_medium: int) -> Decision:
    """What to do with ``action`` for an agent holding ``granted`` with ``unreviewed_medium`` flags pending."""
    version = policy.version
    capability = type(action).capability
    if not is_granted(capability, granted):
        return Decision(code=DecisionCode.REFUSE, risk=None, policy_version=version,
                        reason=f"capability {capability!r} is not granted to this agent")
    risk = effective_risk(action, policy)
    if risk is Risk.PROHIBITED:
        return Decision(code=DecisionCode.PROHIBIT, risk=risk, policy_version=version,
                        reason=f"{action.type_tag()} is prohibited: it never executes")
    if risk is Risk.LOW:
        return Decision(code=DecisionCode.EXECUTE, risk=risk, policy_version=version, reason="low risk")
    if risk is Risk.MEDIUM:
        limit = policy.medium_unreviewed_limit
        if unreviewed_medium < limit:
            return Decision(code=DecisionCode.EXECUTE_AND_FLAG, risk=risk, policy_version=version,
                            reason=f"medium risk: executes and is flagged for review "
                                   f"({unreviewed_medium + 1} of {limit} unreviewed)")
        return Decision(code=DecisionCode.NEEDS_APPROVAL, risk=risk, policy_version=version,
                        reason=f"medium risk with {unreviewed_medium} actions unreviewed (limit {limit}): "
                               f"needs approval")
    return Decision(code=DecisionCode.NEEDS_APPROVAL, risk=risk, policy_version=version,
                    reason=f"high risk: needs {policy.approvals_required} approval(s)")
