"""A supervisor's record of one child: spec, lifecycle state, the live incarnation's handles."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._lifecycle import ChildState
from ._spec import ChildSpec
from ._strategy import ChildView

__all__ = ["Child"]


@dataclass
class Child:
    """Mutable, owned by the supervisor's event loop (never touched from another thread).

    Invariant: ``generation`` changes whenever the supervisor replaces, stops
    or kills the incarnation on purpose; a monitor or prober started for an
    older generation finds it changed and reports nothing, so one death is
    acted on exactly once.
    """

    spec: ChildSpec
    state: ChildState = ChildState.STOPPED
    #: The Ray actor handle of the live incarnation (agent host or sub-supervisor).
    handle: Any = None
    #: The pending ``watch`` call of the live incarnation; it fails when the process dies.
    watch_ref: Any = None
    generation: int = 0
    #: The agent's own incarnation number (from its restore report); a sub-supervisor counts its starts.
    incarnation: int | None = None
    #: The live incarnation's fencing epoch (see ``runtime._fence``); None for a sub-supervisor.
    epoch: int | None = None
    pid: int | None = None
    #: Times this child was started again after the first start.
    restarts: int = 0
    #: Failures in a row, for the backoff (reset after a stable period).
    consecutive: int = 0
    #: Monotonic time the live incarnation became ready.
    started_at: float | None = None
    last_failure: str | None = None
    last_exit: str | None = None
    #: Tasks (monitor, prober) of the live incarnation.
    tasks: list[Any] = field(default_factory=list)
    #: The specs it ran under, oldest first (``_deploy.Deployment``); empty until the first deploy.
    deployments: list[Any] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def running(self) -> bool:
        return self.handle is not None

    def view(self) -> ChildView:
        return ChildView(self.id, self.spec.restart, self.running)

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": "supervisor" if self.spec.is_supervisor else "agent",
            "state": self.state.value,
            "restart": self.spec.restart.value,
            "incarnation": self.incarnation,
            "epoch": self.epoch,
            "pid": self.pid,
            "restarts": self.restarts,
            "last_failure": self.last_failure,
            "last_exit": self.last_exit,
            "deployments": [d.describe() for d in self.deployments],
        }
