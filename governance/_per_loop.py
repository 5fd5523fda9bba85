"""One resource per asyncio event loop: what async clients need to be shared safely.

An async HTTP client or an MCP session belongs to the event loop it was made
on (its connections, tasks and locks do).  A tool is one object shared by
every agent of its class in a process, and each agent host runs async tools
on its own loop thread (``runtime._loop``), so a tool keeps one resource per
loop, made on first use in that loop.

Invariants:

- :meth:`PerLoop.get` hands a loop only the resource made on that loop.
- A loop that is garbage-collected drops its resource (weak keys); nothing
  here closes it: the owner does, on its loop (:meth:`PerLoop.items`).
- Not picklable on purpose: an owner that travels (to a Ray worker) drops it
  and makes a new one where it lands.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["PerLoop"]

T = TypeVar("T")


class PerLoop(Generic[T]):
    """``make()`` once per running event loop; thread-safe."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = weakref.WeakKeyDictionary()

    def get(self) -> T:
        """The running loop's resource, made now if it has none (RuntimeError outside a running loop)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            value = self._by_loop.get(loop)
            if value is None:
                value = self._by_loop[loop] = self._make()
            return value

    def discard(self, value: T) -> None:
        """Forget ``value`` (it broke): the next :meth:`get` on its loop makes a new one."""
        with self._lock:
            for loop, held in list(self._by_loop.items()):
                if held is value:
                    del self._by_loop[loop]

    def items(self) -> list[tuple[asyncio.AbstractEventLoop, T]]:
        """Every live ``(loop, resource)`` pair, for an owner closing them."""
        with self._lock:
            return list(self._by_loop.items())

    def __reduce__(self):
        raise TypeError("a PerLoop holds loop-bound resources and does not travel; drop it in __getstate__")
