"""One open MCP client session on one event loop, held open by a task of that loop.

The ``mcp`` SDK's :class:`mcp.Client` is an async context manager whose task
groups must be entered and left by one task.  A :class:`Session` starts a
*holder* task that enters it and waits; calls made from other tasks of the
same loop use the open client.  Opening is lazy (the first call) and
serialised (one opening at a time); a session whose holder ended (the
server exited, the connection dropped) opens again on the next call.

Invariants:

- A session is used on the loop that made it only (``governance._per_loop``).
- :meth:`Session.close` stops the holder, which leaves the client's context
  (for stdio: closes the server's stdin and waits for it to exit).  A
  session never closed lives as long as its loop; a stdio server left
  behind by a process that exits sees end of input and exits too.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

__all__ = ["Session"]

log = logging.getLogger("garrison.mcp")


class Session:
    """The open client of one MCP server on the running loop (see module docstring)."""

    def __init__(self, target: Any, timeout: float) -> None:
        self._target = target
        self._timeout = timeout
        self._opening = asyncio.Lock()
        self._client: Any = None
        self._stop: asyncio.Event | None = None
        self._holder: asyncio.Task[None] | None = None

    async def client(self) -> Any:
        """The open ``mcp.Client``, opened now if it is not (raises what opening raised)."""
        async with self._opening:
            if self._client is None or self._holder is None or self._holder.done():
                self._client = await self._open()
            return self._client

    async def _open(self) -> Any:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[Any] = loop.create_future()
        stop = asyncio.Event()
        holder = loop.create_task(self._hold(ready, stop), name=f"mcp session {self._target!r}")
        try:
            client = await asyncio.wait_for(asyncio.shield(ready), self._timeout)
        except BaseException:
            stop.set()
            holder.cancel()
            raise
        self._stop, self._holder = stop, holder
        return client

    async def _hold(self, ready: asyncio.Future[Any], stop: asyncio.Event) -> None:
        from mcp import Client

        try:
            async with Client(self._target, read_timeout_seconds=self._timeout) as client:
                ready.set_result(client)
                await stop.wait()
        except Exception as exc:  # noqa: BLE001 - reported to the opener, or logged once open
            if not ready.done():
                ready.set_exception(exc)
            else:
                log.warning("MCP session %r ended: %s: %s", self._target, type(exc).__name__, exc)
        finally:
            if not ready.done():
                ready.cancel()

    async def close(self) -> None:
        """Leave the client's context (stops a stdio server); the next :meth:`client` opens again."""
        stop, holder = self._stop, self._holder
        self._client = self._stop = self._holder = None
        if stop is not None and holder is not None:
            stop.set()
            try:
                await asyncio.wait_for(holder, self._timeout)
            except (TimeoutError, asyncio.CancelledError):
                holder.cancel()
