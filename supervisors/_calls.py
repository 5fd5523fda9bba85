"""Small helpers for the supervisor's Ray calls: awaiting, death, error text."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["DEATH_WAIT", "await_death", "awaitable", "first_line"]

#: Seconds to wait for a killed process to be reported dead before going on.
DEATH_WAIT = 10.0


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message``, for events and failure reasons."""
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text.strip().splitlines()[0] if text.strip() else ''}"


async def awaitable(ref: Any) -> Any:
    """A Ray ObjectRef as a coroutine (for ``asyncio.wait_for`` and ``gather``)."""
    return await ref


async def await_death(watch_ref: Any) -> None:
    """Wait (at most DEATH_WAIT) for a child's pending ``watch`` call to end, however it ends."""
    if watch_ref is None:
        return
    try:
        await asyncio.wait_for(awaitable(watch_ref), DEATH_WAIT)
    except Exception:
        pass
