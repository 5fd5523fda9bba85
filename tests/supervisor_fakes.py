"""Fakes for unit tests of the supervisor's collaborators: no Ray, no actor, one asyncio loop.

* :class:`FakePort` records what a collaborator asks of its supervisor (the
  :class:`SupervisorPort` calls) in ``calls``, and the events in ``events``.
* :class:`FakeHandle` stands for an actor handle: ``handle.<method>.remote(*args)``
  returns an awaitable, as a Ray ObjectRef is; what it answers is up to the test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from supervisors._child import Child
from supervisors._lifecycle import ChildState, SupervisorState
from supervisors._port import SupervisorPort
from supervisors._spec import ChildSpec
from tests.agents import Counter


class FakeMethod:
    """``handle.method``: ``remote(*args, **kw)`` calls ``fn(*args)``; a coroutine or future it returns is the ObjectRef.

    ``calls`` records the positional arguments, ``keywords`` the keyword ones (``auth``), call by call.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.calls: list[tuple[Any, ...]] = []
        self.keywords: list[dict[str, Any]] = []

    def remote(self, *args: Any, **keywords: Any) -> Any:
        self.calls.append(args)
        self.keywords.append(keywords)
        result = self.fn(*args)
        if asyncio.iscoroutine(result) or asyncio.isfuture(result):
            return result
        return _value(result)


async def _value(value: Any) -> Any:
    return value


class FakeHandle:
    """An actor handle whose methods are given as ``name=fn``; each records its calls."""

    def __init__(self, name: str = "h", **methods: Callable[..., Any]) -> None:
        self.name = name
        for method, fn in methods.items():
            setattr(self, method, FakeMethod(fn))

    def __repr__(self) -> str:
        return f"FakeHandle({self.name!r})"


class FakePort:
    """A supervisor as its collaborators see it; every call recorded, in order, in ``calls``."""

    def __init__(self, state: SupervisorState = SupervisorState.RUNNING, children: list[Child] = ()) -> None:
        self.state = state
        self.children = {c.id: c for c in children}
        self.calls: list[tuple[Any, ...]] = []
        self.events: list[tuple[str, str | None, str, str]] = []
        self.tasks: list[asyncio.Task[Any]] = []
        self.acted = asyncio.Event()  # set by kill_and_exit and quarantine_child

    def port(self) -> SupervisorPort:
        return SupervisorPort(
            emit=self.emit, spawn_task=self.spawn_task, state=lambda: self.state, status=self.status,
            child=self.children.__getitem__, children=lambda: list(self.children.values()),
            start_child=self.start_child, replace_child=self.replace_child, kill_and_exit=self.kill_and_exit,
            quarantine_child=self.quarantine_child, halt_subtree=self.halt_subtree, lift_halt=self.lift_halt,
            release_subtree=self.release_subtree,
        )

    def kinds(self) -> list[str]:
        return [kind for kind, *_ in self.events]

    def emit(self, kind: str, child: str | None, *, who: str = "supervisor", why: str = "",
             details: dict[str, Any] | None = None) -> None:
        self.events.append((kind, child, who, why))

    def spawn_task(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.append(task)
        return task

    def status(self) -> dict[str, Any]:
        return {"state": self.state.value}

    async def start_child(self, child: Child) -> None:
        self.calls.append(("start_child", child.id))

    async def replace_child(self, child: Child, why: str, spec: Any) -> None:
        self.calls.append(("replace_child", child.id, why, spec))
        if spec is None:
            del self.children[child.id]

    async def kill_and_exit(self, child: Child, reason: Any, failure: str) -> None:
        self.calls.append(("kill_and_exit", child.id, reason, failure))
        self.acted.set()

    async def quarantine_child(self, child: Child, why: str) -> None:
        self.calls.append(("quarantine_child", child.id, why))
        child.state = ChildState.QUARANTINED
        self.emit("quarantined", child.id, why=why)  # with the state change, as the supervisor's does
        self.acted.set()

    def halt_subtree(self) -> None:
        self.calls.append(("halt_subtree",))
        self.state = SupervisorState.HALTED

    def lift_halt(self) -> None:
        self.calls.append(("lift_halt",))
        self.state = SupervisorState.RUNNING

    async def release_subtree(self) -> None:
        self.calls.append(("release_subtree",))
        self.state = SupervisorState.RUNNING


def running_child(child_id: str, handle: Any, **spec: Any) -> Child:
    """A child record in state RUNNING with ``handle`` as its live incarnation (generation 1)."""
    child = Child(ChildSpec(id=child_id, agent=Counter, **spec))
    child.state, child.handle, child.generation = ChildState.RUNNING, handle, 1
    return child

