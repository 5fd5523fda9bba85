"""Garrison's supervisors: watch agents, apply restart policies, quarantine and kill switches.

Depends on :mod:`runtime` and :mod:`protocols`; nothing depends on it.
Policy is frozen data (:class:`ChildSpec`, :class:`SupervisorFlags`,
:class:`SupervisorSpec`) plus small pure functions (``supervisors._intensity``,
``_strategy``, ``_backoff``, ``_health``); the Ray actor applies them.
"""

from ._autoscale import ScalePolicy
from ._backoff import BackoffPolicy
from ._health import DegradedAction, HangAction, ProbePolicy
from ._killswitch import halt, quarantine, release, unhalt
from ._lifecycle import ChildState, SupervisorState
from ._monitor import Down, Monitor, monitor, wait_down
from ._notifier import Event, JsonlNotifier, LogNotifier, Notifier, WebhookNotifier
from ._pipeline import StageSpec, start_pipeline
from ._pool import PoolScaler, PoolStatus, PoolTick, start_pool
from ._ref import SupervisorRef, start_supervisor
from ._spec import ChildSpec, RestartType, Strategy, SupervisorFlags, SupervisorSpec
from ._strategy import ExitReason
from .exceptions import (
    ChildNotFound,
    ChildStartError,
    DuplicateChildId,
    GarrisonError,
    SpecError,
    SupervisorError,
    SupervisorNotRunning,
    SupervisorUnavailable,
)

__all__ = [
    "BackoffPolicy",
    "ChildNotFound",
    "ChildSpec",
    "ChildStartError",
    "ChildState",
    "DegradedAction",
    "Down",
    "DuplicateChildId",
    "Event",
    "ExitReason",
    "GarrisonError",
    "HangAction",
    "JsonlNotifier",
    "LogNotifier",
    "Monitor",
    "Notifier",
    "PoolScaler",
    "PoolStatus",
    "PoolTick",
    "ProbePolicy",
    "RestartType",
    "ScalePolicy",
    "SpecError",
    "StageSpec",
    "Strategy",
    "SupervisorError",
    "SupervisorFlags",
    "SupervisorNotRunning",
    "SupervisorRef",
    "SupervisorSpec",
    "SupervisorState",
    "SupervisorUnavailable",
    "WebhookNotifier",
    "halt",
    "monitor",
    "quarantine",
    "release",
    "start_pipeline",
    "start_pool",
    "start_supervisor",
    "unhalt",
    "wait_down",
]
