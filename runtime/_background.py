"""The agent's background thread: ships the journal and takes checkpoints.

Part of :class:`runtime._core.AgentCore` (a mixin: it uses the core's store,
shipper, checkpointer, metrics and lifecycle).  Invariants: the thread only
reads LMDB (snapshot isolation), so it never stalls a handler on a lock; it
runs at a lower CPU priority than the handling thread; checkpoints asked for
from other threads run on it, one at a time (``_checkpoint_lock``); once the
incarnation is fenced it stops for good.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import threading
import time
from typing import Any

from ._lifecycle import AgentState
from .exceptions import Fenced

__all__ = ["Background"]

log = logging.getLogger("garrison.agent")


class Background:
    """Shipping and checkpoints, off the handling thread (see module docstring)."""

    def _background(self) -> None:
        # Shipping and checkpoints yield the CPU to handlers: on a small machine
        # a checkpoint's copy and checksum would otherwise compete with the
        # handling thread for a core (a Linux thread has its own nice value).
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        cfg = self.config
        next_checkpoint = time.monotonic() + cfg.checkpoint_interval
        while not self._stop_bg.is_set():
            self._bg_wake.wait(min(cfg.ship_interval, max(0.0, next_checkpoint - time.monotonic())))
            self._bg_wake.clear()
            try:
                while not self._bg_requests.empty():
                    force, future = self._bg_requests.get_nowait()
                    try:
                        future.set_result(self._checkpoint_now(force))
                    except Exception as exc:
                        future.set_exception(exc)
                if self._stop_bg.is_set():
                    break
                self.metrics.shipped.labels(self.agent_id).set(self.shipper.ship())
                self.metrics.seq.labels(self.agent_id).set(self.store.seq)
                if time.monotonic() >= next_checkpoint:
                    self._checkpoint_now(False)
                    next_checkpoint = time.monotonic() + cfg.checkpoint_interval
            except Fenced as exc:
                self._fenced(exc)
                break
            except Exception as exc:  # keep the thread alive; report in status and metrics
                self.background_error = f"{type(exc).__name__}: {exc}"
                self.metrics.background_errors.labels(self.agent_id).inc()
                log.exception("agent %s: background shipping/checkpoint failed", self.agent_id)

    def checkpoint(self, *, force: bool = False) -> dict[str, Any] | None:
        """Ship the journal, then take a checkpoint; returns its manifest (None if nothing changed).

        Runs on the background thread (low CPU priority) while it is alive;
        the caller waits for it.
        """
        if self._bg.is_alive() and threading.current_thread() is not self._bg:
            future: concurrent.futures.Future[dict[str, Any] | None] = concurrent.futures.Future()
            self._bg_requests.put((force, future))
            self._bg_wake.set()
            return future.result()
        return self._checkpoint_now(force)

    def _checkpoint_now(self, force: bool) -> dict[str, Any] | None:
        with self._checkpoint_lock:
            if self.lifecycle is AgentState.STOPPED:
                return None
            t0 = time.perf_counter()
            self.shipper.ship()
            manifest = self.checkpointer.take(force=force)
            if manifest is None:
                return None
            self.metrics.checkpoints.labels(self.agent_id).inc()
            self.metrics.checkpoint_seconds.labels(self.agent_id).set(time.perf_counter() - t0)
            return manifest.model_dump(mode="json")
