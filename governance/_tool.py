"""Tools: the callables that perform actions, and what they may answer.

A tool is a sync or async callable taking the action (and, if it declares an
``idempotency_key`` parameter, the ledger's key for this call, to pass on to
the system it calls).  It returns the action's result (msgpack-friendly data
or a pydantic model), or a :class:`Result` when it knows the actual cost or
that the result is partial.  It raises for a failure; an exception the
action declares among its ``business_errors`` is a business outcome, not a
failure (a circuit breaker does not count it).

:class:`Tool` adds what a bare callable cannot say: a ``reconcile`` hook, the
answer to "did this call happen?" after a crash left its intent without an
outcome (see ``runtime._gateway``).  It returns a :class:`Result` (it
happened: this is what came of it) or :data:`NOT_DONE` (it did not: call it
now); if it raises or returns anything else, the outcome stays unknown and
goes to a human.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["NOT_DONE", "Result", "Tool", "as_tool"]


@dataclass(frozen=True, slots=True)
class Result:
    """A tool's result with what it cost (None: the action's estimate) and whether it is partial."""

    value: Any = None
    cost: float | None = None
    partial: bool = False


class _NotDone:
    """The reconcile hook's answer "the call did not happen"."""

    def __repr__(self) -> str:
        return "NOT_DONE"


#: A reconcile hook's answer: the interrupted call did not take effect; making it now is safe.
NOT_DONE = _NotDone()


@dataclass(frozen=True, slots=True)
class Tool:
    """A callable that performs an action, with an optional ``reconcile(action, key)`` hook."""

    call: Callable[..., Any]
    reconcile: Callable[..., Any] | None = None

    def takes_key(self) -> bool:
        """Whether ``call`` accepts ``idempotency_key=`` (then the ledger's key is passed on)."""
        return _takes_key(self.call)


@functools.lru_cache(maxsize=1024)
def _takes_key(call: Callable[..., Any]) -> bool:
    # Cached: a signature costs tens of microseconds, and the gateway asks on every call.
    try:
        params = inspect.signature(call).parameters
    except (TypeError, ValueError):
        return False
    return "idempotency_key" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def as_tool(fn: Callable[..., Any] | Tool) -> Tool:
    """A :class:`Tool` for a bare callable (no reconcile hook); a Tool as it is."""
    if isinstance(fn, Tool):
        return fn
    if not callable(fn):
        raise TypeError(f"a tool must be callable or a governance.Tool, got {type(fn).__name__}")
    return Tool(fn)
