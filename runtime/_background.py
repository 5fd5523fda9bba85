"""The agent's background thread: ships the journal (and the audit records) and takes checkpoints.

:class:`Background` owns the thread, its wake-up, the queue of checkpoints
asked for from other threads, and the failure bookkeeping; it is given the
store, shipper, checkpointer, metrics and lifecycle it works with, and is
told what to do when it finds the incarnation fenced.  Invariants: the thread only
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
import queue
import contextlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ._degraded import DegradedEpisode, DegradedState, retry_backoff
from ._audit import AuditTrail
from ._checkpoint import Checkpointer
from ._config import AgentConfig
from ._journal import Shipper
from ._lifecycle import AgentState, Lifecycle
from ._metrics import AgentMetrics
from ._store import LmdbStore
from .exceptions import Fenced

__all__ = ["Background"]

log = logging.getLogger("garrison.agent")

T = TypeVar("T")


class Background:
    """Shipping and checkpoints, off the handling thread (see module docstring)."""

    def __init__(self, *, agent_id: str, config: AgentConfig, store: LmdbStore, shipper: Shipper,
                 checkpointer: Checkpointer, metrics: AgentMetrics, lifecycle: Lifecycle,
                 on_fenced: Callable[[Fenced], None], audit: AuditTrail | None = None) -> None:
        self.agent_id = agent_id
        self._audit = audit  # ships the audit records after each journal shipment (``_audit``)
        self._config = config
        self._store = store
        self._shipper = shipper
        self._checkpointer = checkpointer
        self._metrics = metrics
        self._lifecycle = lifecycle
        self._on_fenced = on_fenced
        #: The last failure of background work, as text (kept after it clears, for status).
        self.background_error: str | None = None
        gauge = metrics.degraded.labels(agent_id)
        #: The current (and the last ended) episode of failing store work.
        self.degraded = DegradedState(on_change=lambda on: gauge.set(1 if on else 0))
        self._retry_backoff = retry_backoff(config.ship_interval, config.checkpoint_interval)
        self._retry_rng = random.Random()
        #: While degraded: monotonic time the background work is tried again.
        self._retry_at = 0.0
        self._checkpoint_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._requests: queue.SimpleQueue[tuple[bool, str, concurrent.futures.Future[Any]]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"garrison-bg-{agent_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, *, wait: bool = True) -> None:
        """Stop the thread for good (after the work in progress); ``wait`` for it unless called from it."""
        self._stop.set()
        self._wake.set()
        if wait and self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()

    def _run(self) -> None:
        # Shipping and checkpoints yield the CPU to handlers: on a small machine
        # a checkpoint's copy and checksum would otherwise compete with the
        # handling thread for a core (a Linux thread has its own nice value).
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        cfg = self._config
        next_checkpoint = time.monotonic() + cfg.checkpoint_interval

        def periodic() -> bool:
            """Ship; take a checkpoint if one is due (a failed one stays due) or to end a degraded
            episode (only a checkpoint does: nothing if nothing changed since the last one); True if it did."""
            shipped = self._shipper.ship()
            self._metrics.shipped.labels(self.agent_id).set(shipped)
            self._metrics.seq.labels(self.agent_id).set(self._store.seq)
            took = self.degraded.active or time.monotonic() >= next_checkpoint
            if took:
                self._checkpoint_now(False)
            if self._audit is not None:  # last: a failing audit log is degraded too, but stops no checkpoint
                self._audit.ship(shipped)
            return took

        next_ship = time.monotonic() + cfg.ship_interval
        while not self._stop.is_set():
            now = time.monotonic()
            until = self._retry_at if self.degraded.active else min(next_ship, next_checkpoint)
            self._wake.wait(max(0.0, until - now))
            self._wake.clear()
            try:
                while not self._requests.empty():
                    force, where, future = self._requests.get_nowait()
                    try:
                        future.set_result(self._attempt(lambda force=force: self._checkpoint_now(force), where))
                    except Exception as exc:
                        future.set_exception(exc)
                if self._stop.is_set():
                    break
                if time.monotonic() < (self._retry_at if self.degraded.active else until):
                    continue  # woken early by a request (served above): the periodic work waits until due
                next_ship = time.monotonic() + cfg.ship_interval
                if self._attempt(periodic, "background"):
                    next_checkpoint = time.monotonic() + cfg.checkpoint_interval
            except Fenced as exc:
                self._on_fenced(exc)
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
        self._metrics.background_errors.labels(self.agent_id).inc()
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

    def final_checkpoint(self, why: str, *, force: bool = False, ship_only: bool = False) -> dict[str, Any] | None:
        """The last checkpoint of a state change (``stop``, ``halt``, ``quarantine``): tried once.

        A failure is recorded (degraded) and logged, never raised: the state
        change completes.  Nothing is lost: every commit is in the local LMDB,
        which the next incarnation on this node restores from, and which is
        shipped once the store takes writes again.  ``Fenced`` still raises.
        ``ship_only``: the journal (and the audit log) shipped, no checkpoint: a
        packed agent passivated before its next checkpoint is due (``_packed_slots``);
        a restore elsewhere replays the journal from the last checkpoint, as after a crash.
        """
        try:
            manifest = None if ship_only else self.checkpoint(force=force, where=why)
            if ship_only or self._audit is not None:  # the last records, and a signed checkpoint of the log
                self._attempt(self._final_ship, why)
            return manifest
        except Fenced:
            raise
        except Exception as exc:
            log.warning("agent %s: final checkpoint (%s) failed, going on without it: %s",
                        self.agent_id, why, exc)
            return None

    def _final_ship(self) -> None:
        """Commit the records waiting for a commit (the last segment's, ``LmdbStore.defer``), ship the
        journal, then append everything shipped to the audit log (if the agent keeps one) and sign it."""
        if self._store.deferred:
            self._store.commit([])
        shipped = self._shipper.ship()
        if self._audit is not None:
            self._audit.ship(shipped, final=True)

    def checkpoint(self, *, force: bool = False, where: str = "checkpoint") -> dict[str, Any] | None:
        """Ship the journal, then take a checkpoint; returns its manifest (None if nothing changed).

        Runs on the background thread (low CPU priority) while it is alive;
        the caller waits for it.  A failure raises (CheckpointError) and is
        recorded as degraded; a success ends a degraded episode.
        """
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            future: concurrent.futures.Future[dict[str, Any] | None] = concurrent.futures.Future()
            self._requests.put((force, where, future))
            self._wake.set()
            return future.result()
        return self._attempt(lambda: self._checkpoint_now(force), where)

    def _checkpoint_now(self, force: bool) -> dict[str, Any] | None:
        with self._checkpoint_lock:
            if self._lifecycle.state is AgentState.STOPPED:
                return None
            t0 = time.perf_counter()
            self._shipper.ship()
            manifest = self._checkpointer.take(force=force)
            if manifest is None:
                return None
            self._metrics.checkpoints.labels(self.agent_id).inc()
            self._metrics.checkpoint_seconds.labels(self.agent_id).set(time.perf_counter() - t0)
            return manifest.model_dump(mode="json")
