"""Polling helper for integration tests: wait for a condition with a deadline, never forever."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def incarnation(ref: Any) -> int | None:
    """The agent's incarnation, or None while it does not answer (between a death and its restart)."""
    from runtime import AgentUnavailable, AskTimeout

    try:
        return ref.admin.status(timeout=5)["incarnation"]
    except (AgentUnavailable, AskTimeout):
        return None


def wait_for(pred: Callable[[], Any], timeout: float = 60.0, every: float = 0.05,
             describe: Callable[[], Any] | None = None) -> Any:
    """The first truthy value ``pred()`` returns; AssertionError after ``timeout`` seconds.

    ``describe()``, if given, is called on timeout and its value put in the message
    (what the state was when the wait gave up).
    """
    end = time.time() + timeout
    while time.time() < end:
        value = pred()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s"
                         + (f"; last seen: {describe()!r}" if describe is not None else ""))
