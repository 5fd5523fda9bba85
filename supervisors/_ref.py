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
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from runtime import NAMESPACE

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
        _call(spec.id, handle, "start", timeout=timeout)
    except BaseException:
        ray.kill(handle, no_restart=True)
        raise
    return ref


def _call(name: str, handle: Any, method: str, *args: Any, timeout: float = 60.0, **kwargs: Any) -> Any:
    """Call ``method`` on the supervisor actor ``handle`` and wait; Ray's errors translated (module docstring)."""
    try:
        return ray.get(getattr(handle, method).remote(*args, **kwargs), timeout=timeout)
    except RayTaskError as exc:
        cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else None
        if isinstance(cause, SupervisorError):
            raise cause from exc
        raise SupervisorError(f"supervisor {name!r} failed in {method}: {exc}", supervisor=name) from exc
    except RayActorError as exc:
        raise SupervisorUnavailable(f"supervisor {name!r} is dead", supervisor=name) from exc
    except GetTimeoutError as exc:
        raise SupervisorUnavailable(f"supervisor {name!r} did not answer {method} within {timeout}s",
                                    supervisor=name) from exc


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

    def _call(self, method: str, *args: Any, timeout: float = 60.0, **kwargs: Any) -> Any:
        return _call(self.name, self._handle, method, *args, timeout=timeout, **kwargs)

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
        return self._call("start_child", child_id, init, timeout=timeout)

    def terminate_child(self, child_id: str, *, timeout: float = 60.0) -> dict[str, Any]:
        return self._call("terminate_child", child_id, timeout=timeout)

    def halt(self, who: str, why: str, *, child: str | None = None, timeout: float = 30.0) -> dict[str, Any]:
        """Kill switch on one child or the whole subtree (see :func:`supervisors.halt`)."""
        return self._call("halt", who, why, child, timeout=timeout)

    def unhalt(self, who: str, why: str = "", *, child: str | None = None, timeout: float = 60.0) -> dict[str, Any]:
        """Lift the kill switch on one halted child or the halted subtree (see :func:`supervisors.unhalt`)."""
        return self._call("unhalt", who, why, child, timeout=timeout)

    def quarantine(self, child: str, *, who: str, why: str, timeout: float = 30.0) -> dict[str, Any]:
        """Quarantine one child by hand (it keeps its state and refuses messages until released or retired)."""
        return self._call("quarantine", child, who, why, timeout=timeout)

    def retire(self, child: str, *, who: str, why: str = "retired", timeout: float = 60.0) -> dict[str, Any]:
        """Stop a child for good and forget it; its state stays on disk."""
        return self._call("retire", child, who, why, timeout=timeout)

    def release(self, child: str | None = None, *, who: str = "operator", why: str = "",
                timeout: float = 60.0) -> dict[str, Any]:
        """Lift a quarantine: one child's, or (``child=None``) a quarantined supervisor's."""
        return self._call("release", child, who, why, timeout=timeout)

    def stop(self, *, timeout: float = 120.0, kill: bool = True) -> dict[str, Any] | None:
        """Stop the children in reverse order, then (``kill``) end the supervisor's process."""
        try:
            return self._call("stop", timeout=timeout)
        finally:
            if kill:
                ray.kill(self._handle, no_restart=True)

    def wait_until(self, predicate: Callable[[SupervisorRef], Any], *, timeout: float = 30.0,
                   interval: float = 0.1) -> Any:
        """Poll ``predicate(self)`` until it returns something truthy (for operators and tests)."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate(self)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout}s; children: {self.which_children()}")
            time.sleep(interval)
