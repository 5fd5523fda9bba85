"""Garrison's runtime: agents as Ray actors with tiered LMDB state.

Public surface; everything else is private and may change.
"""

from ._admin import AgentAdmin
from ._agent import Agent, Context, handler
from ._approvals import ApprovalDecided, ApprovalQueue, Approvals
from ._ckstore import CheckpointStore, DirectoryStore, Manifest
from ._config import AgentConfig, Durability, validated
from ._directory import live_ids
from ._directory import resolve as host_of
from ._fleet_budget import FleetBudget, FleetUsage
from ._lifecycle import AgentState
from ._observer import GetTrace, Observed, Observer, ObserverStats
from ._packing import Packing
from ._pipeline import Pipeline
from ._queue_logic import RetryPolicy
from ._ref import AgentRef
from ._restore import RestoreReport
from ._spec import check_agent_id
from ._state import ReadOnlyState, State
from ._system import NAMESPACE, System
from ._topic import Topic
from ._trace import trace
from ._workqueue import WorkQueue  # its messages: runtime.queue
from .exceptions import (
    AgentAlreadyRunning,
    AgentError,
    AgentNotFound,
    AgentNotRunning,
    AgentStartError,
    AgentUnavailable,
    AskDeadlock,
    AskTimeout,
    CheckpointCorrupt,
    CheckpointError,
    ClusterUnavailable,
    ConfigError,
    ContractError,
    DataDirectoryError,
    FeedbackError,
    Fenced,
    GarrisonError,
    HandlerError,
    IllegalTransition,
    InternalError,
    LeaseLost,
    MailboxFull,
    NoHandler,
    NotDurable,
    PipelineError,
    QueueError,
    RestoreError,
    StateDecodeError,
    StateError,
    UnencodableReply,
    UnknownItem,
    UnknownTask,
)

__all__ = [
    "Agent",
    "AgentAdmin",
    "AgentAlreadyRunning",
    "AgentConfig",
    "AgentError",
    "AgentNotFound",
    "AgentNotRunning",
    "AgentRef",
    "AgentStartError",
    "AgentState",
    "AgentUnavailable",
    "ApprovalDecided",
    "ApprovalQueue",
    "Approvals",
    "AskDeadlock",
    "AskTimeout",
    "CheckpointCorrupt",
    "CheckpointError",
    "CheckpointStore",
    "ClusterUnavailable",
    "ConfigError",
    "Context",
    "ContractError",
    "DataDirectoryError",
    "DirectoryStore",
    "Durability",
    "FeedbackError",
    "Fenced",
    "FleetBudget",
    "FleetUsage",
    "GarrisonError",
    "GetTrace",
    "HandlerError",
    "IllegalTransition",
    "InternalError",
    "LeaseLost",
    "MailboxFull",
    "Manifest",
    "NAMESPACE",
    "NoHandler",
    "NotDurable",
    "Observed",
    "Observer",
    "ObserverStats",
    "Packing",
    "Pipeline",
    "PipelineError",
    "QueueError",
    "ReadOnlyState",
    "RestoreError",
    "RestoreReport",
    "RetryPolicy",
    "State",
    "StateDecodeError",
    "StateError",
    "System",
    "Topic",
    "UnencodableReply",
    "UnknownItem",
    "UnknownTask",
    "WorkQueue",
    "check_agent_id",
    "handler",
    "host_of",
    "live_ids",
    "trace",
    "validated",
]
