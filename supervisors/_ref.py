"""Starting a root supervisor from a driver, and a blocking handle on it.

::

    from supervisors import ChildSpec, SupervisorSpec, start_supervisor

    spec = SupervisorSpec(id="billing", children=[ChildSpec(id="ledger", agent=Ledger)])
    sup = start_supervisor(spec, data_dir="./garrison-data")
    sup.which_children()
    sup.stop()

Ray's errors are translated here: an error the supervisor raised comes back
as itself (``ChildStartError``, ``ChildNotFound`` ...), a dead or silent
supervisor as :class:`SupervisorUnavailable`.

Calls that start or stop children (start, stop, start_child, unhalt, release)
and :meth:`SupervisorRef.wait_until` measure their ``timeout`` from the
supervisor's latest event, not from the call: a tree of many children on a
loaded machine takes as long as it needs while each child gets somewhere
(starts, exits, restarts) within ``timeout``; a supervisor that goes silent
for ``timeout`` is given up on.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from audit import AccessDenied, OperatorsFileError
from runtime import NAMESPACE
from runtime._gatekeeper import credential_for

from ._notifier import Notifier
from ._spec import SupervisorSpec
from ._supervisor import RemoteSupervisor
from .exceptions import SpecError, SupervisorError, SupervisorUnavailable

__all__ = ["SupervisorRef", "start_supervisor"]


def start_supervisor(
    spec: SupervisorSpec,
    *,
    data_dir: str | os.PathLike[str],
    checkpoint_dir: str | os.PathLike[str] | None = None,
    notifiers: list[Notifier] | tuple[Notifier, ...] = (),
    namespace: str = NAMESPACE,
    detached: bool = False,
    seed: int | None = None,
    timeout: float = 120.0,
) -> SupervisorRef:
    """Start a root supervisor and its children (in order); return once all are ready.

    ``timeout`` bounds the time without progress (module docstring), so a
    large tree is not refused for its size.

    ``data_dir``/``checkpoint_dir`` are as for :class:`runtime.System` and must
    exist.  Raises ChildStartError (after stopping the children already
    started) if a child cannot start.  Children are owned by the supervisor's
    process: if the supervisor dies, Ray ends them too (OTP's links).
    """
    if not isinstance(spec, SupervisorSpec):
        raise SpecError(f"expected a SupervisorSpec, got {type(spec).__name__}")
    if checkpoint_dir is None and "{node}" in str(data_dir):
        # As runtime.System: a per-node data directory needs one shared checkpoint directory.
        raise SpecError(f"data directory {data_dir} is per node ({{node}}): give a checkpoint_dir shared by "
                        "every node (the default would be per node too)", supervisor=spec.id)
    data = Path(data_dir).expanduser().resolve()
    ckpt = Path(checkpoint_dir).expanduser().resolve() if checkpoint_dir else data / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    try:
        handle = RemoteSupervisor.options(
            name=spec.id, namespace=namespace, lifetime="detached" if detached else None,
            max_restarts=0, max_task_retries=0, num_cpus=0,
        ).remote(spec, data_dir=str(data), checkpoint_dir=str(ckpt), namespace=namespace,
                 notifiers=tuple(notifiers), root=True, seed=seed)
    except ValueError as exc:
        raise SpecError(f"a supervisor or agent named {spec.id!r} is already live", supervisor=spec.id) from exc
    ref = SupervisorRef(spec.id, handle)
    try:
        _call(spec.id, handle, "start", timeout=timeout, progressing=True)
    except BaseException:
        ray.kill(handle, no_restart=True)
        raise
    return ref


def _call(name: str, handle: Any, method: str, *args: Any, timeout: float = 60.0, progressing: bool = False,
          **kwargs: Any) -> Any:
    """Call ``method`` on the supervisor actor ``handle`` and wait; Ray's errors translated (module docstring).

    With ``progressing``, ``timeout`` counts from the supervisor's latest event.
    """
    try:
        pending = getattr(handle, method).remote(*args, **kwargs)
        if progressing and not _wait_progressing(handle, pending, timeout):
            raise SupervisorUnavailable(f"supervisor {name!r} did not answer {method} and reported no progress "
                                        f"for {timeout}s", supervisor=name)
        return ray.get(pending, timeout=timeout)
    except RayTaskError as exc:
        cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else None
        if isinstance(cause, SupervisorError | AccessDenied | OperatorsFileError):  # ours, as themselves
            raise cause from exc
        raise SupervisorError(f"supervisor {name!r} failed in {method}: {exc}", supervisor=name) from exc
    except RayActorError as exc:
        raise SupervisorUnavailable(f"supervisor {name!r} is dead", supervisor=name) from exc
    except GetTimeoutError as exc:
        raise SupervisorUnavailable(f"supervisor {name!r} did not answer {method} within {timeout}s",
                                    supervisor=name) from exc


def _wait_progressing(handle: Any, pending: Any, timeout: float) -> bool:
    """Wait for ``pending``; False once ``timeout`` passes with it unanswered and no new supervisor event."""
    progress = _Progress(handle)
    while True:
        ready, _ = ray.wait([pending], timeout=min(1.0, max(0.0, progress.deadline(timeout) - time.monotonic())))
        if ready:
            return True
        if not progress.advanced() and time.monotonic() >= progress.deadline(timeout):
            return False


class _Progress:
    """A supervisor's event count, as seen from a driver: has anything happened since the last look?

    Invariant: ``since`` is the time of the last look that saw a new event (or of the first look).
    """

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self._next: int | None = None
        self.since = time.monotonic()
        self.advanced()

    def advanced(self) -> bool:
        """True if the supervisor recorded an event since the last look (an unanswered look is no progress)."""
        try:
            events = ray.get(self._handle.events.remote(self._next or 0), timeout=10)
        except (GetTimeoutError, RayActorError):
            return False
        latest = events[-1]["index"] + 1 if events else (self._next or 0)
        first, moved = self._next is None, self._next is not None and latest > self._next
        self._next = latest
        if moved or first:
            self.since = time.monotonic()
        return moved

    def deadline(self, timeout: float) -> float:
        return self.since + timeout


class SupervisorRef:
    """A driver's blocking handle on a supervisor actor."""

    def __init__(self, name: str, handle: Any) -> None:
        self.name = name
        self._handle = handle

    def __repr__(self) -> str:
        return f"SupervisorRef({self.name!r})"

    @classmethod
    def lookup(cls, name: str, *, namespace: str = NAMESPACE) -> SupervisorRef:
        try:
            return cls(name, ray.get_actor(name, namespace=namespace))
        except ValueError as exc:
            raise SupervisorUnavailable(f"no live supervisor {name!r}", supervisor=name) from exc

    def _call(self, method: str, *args: Any, timeout: float = 60.0, progressing: bool = False, **kwargs: Any) -> Any:
        return _call(self.name, self._handle, method, *args, timeout=timeout, progressing=progressing, **kwargs)

    def which_children(self) -> list[dict[str, Any]]:
        """Children in start order: id, kind, state, incarnation, epoch, pid, restarts, last_failure, last_exit."""
        return self._call("which_children")

    def child(self, child_id: str) -> dict[str, Any]:
        for c in self.which_children():
            if c["id"] == child_id:
                return c
        raise KeyError(child_id)

    def spares(self) -> list[dict[str, Any]]:
        """The warm-standby spares ready to take over an agent (``flags.standby``)."""
        return self._call("spares")

    def status(self) -> dict[str, Any]:
        return self._call("status")

    def events(self, after: int = 0) -> list[dict[str, Any]]:
        return self._call("events", after)

    def start_child(self, child_id: str, init: dict[str, Any] | None = None, *, timeout: float = 60.0) -> dict[str, Any]:
        return self._call("start_child", child_id, init, timeout=timeout, progressing=True)

    def start_children(self, child_ids: list[str], init: dict[str, Any] | None = None, *,
                       timeout: float = 60.0) -> list[dict[str, Any]]:
        """Several pool children at once, started ``SupervisorFlags.start_concurrency`` at a time."""
        return self._call("start_children", list(child_ids), init, timeout=timeout, progressing=True)

    def terminate_child(self, child_id: str, *, timeout: float = 60.0) -> dict[str, Any]:
        return self._call("terminate_child", child_id, timeout=timeout)

    def _operate(self, action: str, who: Any, why: str, child: str | None, *, timeout: float,
                 progressing: bool = False) -> dict[str, Any]:
        """An operator's call: ``who`` signs it for this supervisor if it is an ``audit.OperatorKey``."""
        return self._call("operate", action, credential_for(who, action, self.name), {"why": why, "child": child},
                          timeout=timeout, progressing=progressing)

    def halt(self, who: Any, why: str, *, child: str | None = None, timeout: float = 30.0) -> dict[str, Any]:
        """Kill switch on one child or the whole subtree (see :func:`supervisors.halt`).

        ``who`` here and in ``unhalt``, ``quarantine`` and ``release``: an
        ``audit.OperatorKey`` (required when the supervisor has an operators file,
        ``SupervisorFlags.operators``), or a name (recorded as ``unverified``).
        """
        return self._operate("halt", who, why, child, timeout=timeout)

    def unhalt(self, who: Any, why: str = "", *, child: str | None = None, timeout: float = 60.0) -> dict[str, Any]:
        """Lift the kill switch on one halted child or the halted subtree (see :func:`supervisors.unhalt`)."""
        return self._operate("unhalt", who, why, child, timeout=timeout, progressing=True)

    def quarantine(self, child: str, *, who: Any, why: str, timeout: float = 30.0) -> dict[str, Any]:
        """Quarantine one child by hand (it keeps its state and refuses messages until released or retired)."""
        return self._operate("quarantine", who, why, child, timeout=timeout)

    def deploy(self, child: str, *, who: Any, why: str, agent: type | None = None,
               config: dict[str, Any] | None = None, init: dict[str, Any] | None = None,
               timeout: float = 120.0) -> dict[str, Any]:
        """Run agent child ``child`` under a new version: another ``agent`` class, ``config`` fields
        changed, other ``init`` arguments (see ``supervisors._deploy``); its state is kept.

        Returns the child's entry with ``version`` and ``previous`` (manifest hashes).
        """
        args = {"why": why, "child": child, "agent": agent, "config": config, "init": init}
        return self._call("operate", "deploy", credential_for(who, "deploy", self.name), args, timeout=timeout,
                          progressing=True)

    def rollback(self, child: str, *, who: Any, why: str, to: str | None = None,
                 timeout: float = 120.0) -> dict[str, Any]:
        """Run ``child`` again under an earlier version: the one before (``to`` None), or the newest
        whose hash starts with ``to``.  The state is kept, not rolled back."""
        args = {"why": why, "child": child, "to": to}
        return self._call("operate", "rollback", credential_for(who, "rollback", self.name), args, timeout=timeout,
                          progressing=True)

    def retire(self, child: str, *, who: str, why: str = "retired", timeout: float = 60.0) -> dict[str, Any]:
        """Stop a child for good and forget it; its state stays on disk."""
        return self._call("retire", child, who, why, timeout=timeout)

    def release(self, child: str | None = None, *, who: Any = "operator", why: str = "",
                timeout: float = 60.0) -> dict[str, Any]:
        """Lift a quarantine: one child's, or (``child=None``) a quarantined supervisor's."""
        return self._operate("release", who, why, child, timeout=timeout, progressing=True)

    def stop(self, *, timeout: float = 120.0, kill: bool = True) -> dict[str, Any] | None:
        """Stop the children in reverse order, then (``kill``) end the supervisor's process."""
        try:
            return self._call("stop", timeout=timeout, progressing=True)
        finally:
            if kill:
                ray.kill(self._handle, no_restart=True)

    def wait_until(self, predicate: Callable[[SupervisorRef], Any], *, timeout: float = 30.0,
                   interval: float = 0.1) -> Any:
        """Poll ``predicate(self)`` until it returns something truthy (for operators and tests).

        Raises TimeoutError once ``timeout`` passes with the predicate false and
        no new supervisor event: restarts still under way are waited for.
        """
        progress = _Progress(self._handle)
        while True:
            value = predicate(self)
            if value:
                return value
            if not progress.advanced() and time.monotonic() > progress.deadline(timeout):
                raise TimeoutError(f"condition not met, and no supervisor event, for {timeout}s; "
                                   f"children: {self.which_children()}")
            time.sleep(interval)
