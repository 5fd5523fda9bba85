"""The agent's background thread: ships the journal and takes checkpoints.

Part of :class:`runtime._core.AgentCore` (a mixin: it uses the core's store,
shipper, checkpointer, metrics and lifecycle).  Invariants: the thread only
reads LMDB (snapshot isolation), so it never stalls a handler on a lock; it
runs at a lower CPU priority than the handling thread; checkpoints asked for
from other threads run on it, one at a time (``_checkpoint_lock``); once the
incarnation is fenced it stops for good.

Failures (the store is full, read-only, refuses access...) are not retried
every ``ship_interval``: the agent is *degraded* (``_degraded``: status,
probe and the ``garrison_degraded`` gauge say so) and the work is tried again
after an exponential, jittered, capped delay; the first success clears it.
Invariant: every failure of store work run here is recorded exactly once
(``_attempt``), and every success ends the current episode.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ._degraded import DegradedEpisode, DegradedState, retry_backoff
from ._lifecycle import AgentState
from .exceptions import Fenced

__all__ = ["Background"]

log = logging.getLogger("garrison.agent")

T = TypeVar("T")


class Background:
    """Shipping and checkpoints, off the handling thread (see module docstring)."""

    def _init_background(self) -> None:
        """The failure bookkeeping (call before the thread starts)."""
        self.background_error: str | None = None
        gauge = self.metrics.degraded.labels(self.agent_id)
        self.degraded = DegradedState(on_change=lambda on: gauge.set(1 if on else 0))
        self._retry_backoff = retry_backoff(self.config.ship_interval, self.config.checkpoint_interval)
        self._retry_rng = random.Random()
        #: While degraded: monotonic time the background work is tried again.
        self._retry_at = 0.0

    def _background(self) -> None:
        # Shipping and checkpoints yield the CPU to handlers: on a small machine
        # a checkpoint's copy and checksum would otherwise compete with the
        # handling thread for a core (a Linux thread has its own nice value).
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        cfg = self.config
        next_checkpoint = time.monotonic() + cfg.checkpoint_interval

        def periodic() -> bool:
            """Ship; take a checkpoint if one is due (a failed one stays due) or to end a degraded
            episode (only a checkpoint does: nothing if nothing changed since the last one); True if it did."""
            self.metrics.shipped.labels(self.agent_id).set(self.shipper.ship())
            self.metrics.seq.labels(self.agent_id).set(self.store.seq)
            if self.degraded.active or time.monotonic() >= next_checkpoint:
                self._checkpoint_now(False)
                return True
            return False

        while not self._stop_bg.is_set():
            now = time.monotonic()
            until = self._retry_at if self.degraded.active else min(now + cfg.ship_interval, next_checkpoint)
            self._bg_wake.wait(max(0.0, until - now))
            self._bg_wake.clear()
            try:
                while not self._bg_requests.empty():
                    force, where, future = self._bg_requests.get_nowait()
                    try:
                        future.set_result(self._attempt(lambda force=force: self._checkpoint_now(force), where))
                    except Exception as exc:
                        future.set_exception(exc)
                if self._stop_bg.is_set():
                    break
                if self.degraded.active and time.monotonic() < self._retry_at:
                    continue  # backing off; woken early by a request
                if self._attempt(periodic, "background"):
                    next_checkpoint = time.monotonic() + cfg.checkpoint_interval
            except Fenced as exc:
                self._fenced(exc)
                break
            except Exception:  # recorded by ``_attempt``; keep the thread alive and retry later
                continue

    def _attempt(self, work: Callable[[], T], where: str) -> T:
        """Run store work: a failure is recorded (degraded) and re-raised; a success ends the episode."""
        try:
            result = work()
        except Fenced:
            raise
        except Exception as exc:
            self._store_failed(exc, where)
            raise
        ended = self.degraded.recovered()
        if ended is not None:
            log.warning("agent %s: checkpoint store works again after %d failed attempt(s) since %.3f (%s)",
                        self.agent_id, ended.attempts, ended.since, ended.reason)
        return result

    def _store_failed(self, exc: Exception, where: str) -> DegradedEpisode:
        """Record one failure: degraded episode, status, metrics, log; schedule the retry."""
        episode = self.degraded.failed(exc, where)
        self.background_error = f"{type(exc).__name__}: {exc}"
        self.metrics.background_errors.labels(self.agent_id).inc()
        delay = self._retry_backoff.delay(episode.attempts - 1, self._retry_rng.random())
        self._retry_at = time.monotonic() + delay
        if episode.attempts == 1:
            log.error("agent %s: %s failed; degraded (%s), retrying in %.2fs", self.agent_id, where,
                      episode.reason, delay, exc_info=exc)
        else:
            log.warning("agent %s: %s failed again (attempt %d, degraded since %.3f, %s): %s; retrying in %.2fs",
                        self.agent_id, where, episode.attempts, episode.since, episode.reason,
                        episode.last_error, delay)
        return episode

    def _final_checkpoint(self, why: str, *, force: bool = False) -> dict[str, Any] | None:
        """The last checkpoint of a state change (``stop``, ``halt``, ``quarantine``): tried once.

        A failure is recorded (degraded) and logged, never raised: the state
        change completes.  Nothing is lost: every commit is in the local LMDB,
        which the next incarnation on this node restores from, and which is
        shipped once the store takes writes again.  ``Fenced`` still raises.
        """
        try:
            return self.checkpoint(force=force, where=why)
        except Fenced:
            raise
        except Exception as exc:
            log.warning("agent %s: final checkpoint (%s) failed, going on without it: %s",
                        self.agent_id, why, exc)
            return None

    def checkpoint(self, *, force: bool = False, where: str = "checkpoint") -> dict[str, Any] | None:
        """Ship the journal, then take a checkpoint; returns its manifest (None if nothing changed).

        Runs on the background thread (low CPU priority) while it is alive;
        the caller waits for it.  A failure raises (CheckpointError) and is
        recorded as degraded; a success ends a degraded episode.
        """
        if self._bg.is_alive() and threading.current_thread() is not self._bg:
            future: concurrent.futures.Future[dict[str, Any] | None] = concurrent.futures.Future()
            self._bg_requests.put((force, where, future))
            self._bg_wake.set()
            return future.result()
        return self._attempt(lambda: self._checkpoint_now(force), where)

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
