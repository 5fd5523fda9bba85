"""The transactional outbox: at-least-once and effectively-once sends between agents.

A handler's sends are staged in its state layer and written to the ``outbox``
table in the same LMDB transaction as its state changes, each with the next
sequence number for its recipient.  So a message leaves if and only if the
handler's effects committed, and it survives a crash of the sender.

A dispatcher thread moves the outbox to the recipients:

* up to ``max_batch`` consecutive messages per Ray call (``deliver_batch``),
  at most ``window`` messages in flight per recipient (the sender's memory
  bound, and the flow control: a slow receiver slows its senders down);
* the receiver answers with its high-water mark ``hwm`` (see
  ``protocols._batch``); entries up to it are deleted (one journaled range
  delete), anything after it is sent again in order;
* a failed call (receiver dead or restarting, not found, timed out) is
  retried from the oldest unacknowledged message after an exponential
  backoff with full jitter; after ``max_attempts`` failures in a row the
  recipient's pending messages move to dead letters (``undeliverable``),
  except when the receiver answered ``NotDurable`` (it committed the batch
  but cannot ship it yet): that is retried for as long as it lasts.

The thread's rounds are :meth:`Dispatcher.step`; how it waits for replies and
its clock are collaborators (:class:`Replies`, ``clock``): Ray's and
``time.monotonic`` by default, fakes in ``tests/test_outbox.py``.

Invariant: per (sender, recipient), messages are offered in ``seq`` order,
and the receiver applies only the next one, so order holds across retries
and restarts of either side.  Each message carries the epoch that numbered
it (stamped here, at staging): a sender restored from an older point numbers
new messages from its restored seq under a newer epoch, and the receiver
ranks them after everything the older epoch numbered (``_core._mark``).

Bound: the ``outbox`` table holds what was staged and not yet acknowledged;
each acknowledgement deletes up to the receiver's ``hwm`` (one range delete),
and a recipient that fails ``max_attempts`` calls in a row has its pending
messages moved to dead letters (bounded there, see ``_deadletters``).  So it
is bounded by the recipients' lag, not by the messages sent: at most
``window`` in flight per recipient, plus what handlers staged faster than the
recipient takes it (a sender that outruns its receiver for good grows it; the
``outbox_pending`` status shows it).  ``outseq`` holds one entry per recipient.
"""

from __future__ import annotations

import logging
import random
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from protocols import Envelope, decode_envelope, encode_batch, encode_envelopes, error_from_wire

from ._backoff import Backoff
from ._codec import unpack
from ._config import AgentConfig
from ._deadletters import dead_letter_op
from ._store import DELETE_RANGE, PUT, LmdbStore, Op
from .exceptions import AgentUnavailable

__all__ = ["Dispatcher", "RayReplies", "Replies", "outbox_key"]

log = logging.getLogger("garrison.outbox")
_U64 = struct.Struct(">Q")


def outbox_key(recipient: str, seq: int) -> bytes:
    return recipient.encode() + b"\x00" + _U64.pack(seq)


def _seq_of(key: bytes) -> int:
    return _U64.unpack(key[-8:])[0]


def retry_policy(config: AgentConfig) -> Backoff:
    """Full-jitter exponential backoff between attempts to one peer: uniform in (0, min(cap, base * 2**failures)]."""
    return Backoff(initial=config.retry_backoff, factor=2.0, cap=config.retry_backoff_max, jitter=1.0)


class Replies(Protocol):
    """How the dispatcher waits for and reads the answers to its ``deliver_batch`` calls."""

    def wait(self, calls: list[Any], timeout: float) -> list[Any]:
        """The calls among ``calls`` that have finished: at least one unless ``timeout`` seconds pass."""

    def result(self, call: Any) -> bytes:
        """A finished call's reply; raises RayActorError or GetTimeoutError if the call failed."""


class RayReplies:
    """:class:`Replies` of Ray calls (``ObjectRef`` s): the dispatcher's default."""

    def wait(self, calls: list[Any], timeout: float) -> list[Any]:
        # Wait for one reply, then take every other finished one.
        ready, rest = ray.wait(calls, num_returns=1, timeout=timeout)
        if ready and rest:
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        return ready

    def result(self, call: Any) -> bytes:
        return ray.get(call, timeout=0)


@dataclass
class _Peer:
    """Dispatch state towards one recipient (only the dispatcher thread touches it)."""

    name: str
    handle: Any = None
    acked: int = 0  # highest seq the recipient acknowledged
    sent: int = 0  # highest seq handed to Ray (acked <= sent)
    inflight: dict[Any, tuple[int, int]] = field(default_factory=dict)  # ObjectRef -> (first, last)
    failures: int = 0
    retry_at: float = 0.0


class Dispatcher:
    """Stages sends into commits, and delivers the outbox (see module docstring)."""

    def __init__(
        self,
        store: LmdbStore,
        *,
        agent_id: str,
        config: AgentConfig,
        resolve: Callable[[str], Any] | None,
        on_error: Callable[[str, list[Any]], None] | None = None,
        epoch: int | None = None,
        held_until: int | None = None,
        replies: Replies | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.epoch = epoch  # stamped on every batch: receivers refuse a replaced sender's
        self.agent_id = agent_id
        self.config = config
        self.resolve = resolve
        self.on_error = on_error
        self.replies = RayReplies() if replies is None else replies
        self.clock = clock  # monotonic seconds: when a peer may be retried
        self._rng = random.Random()
        self._retry = retry_policy(config)
        self._lock = threading.Lock()
        # recipient -> last seq allocated; only the committing thread writes it.
        self.last_seq: dict[str, int] = {
            k.decode(): _U64.unpack(v)[0] for k, v in store.scan("outseq")
        }
        # recipient -> last seq that may leave (<= last_seq).  Under SYNC durability a
        # message leaves only once the commit that staged it is shipped, so no receiver
        # ever acts on a message its sender could lose with its node; until then the
        # seqs wait in ``_held`` as (store seq of the commit, seqs), in commit order.
        self.ready: dict[str, int] = {}
        self._held: list[tuple[int, dict[str, int]]] = []
        self._peers: dict[str, _Peer] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._progress = threading.Event()  # set by each acknowledgement (``drain`` waits on it)
        self._thread: threading.Thread | None = None
        self.delivered = 0
        self.dead_lettered = 0
        self.rounds = 0  # offer rounds done (see ``step``)
        if self.last_seq:  # a restart: what the outbox holds is offered again
            self.published(dict(self.last_seq), at=held_until)

    # -- staging (the committing thread) -----------------------------------------

    def stage(self, sends: list[tuple[str, Envelope]], now: float) -> tuple[list[Op], dict[str, int]]:
        """Ops that put ``sends`` in the outbox, and the seqs to publish after the commit."""
        seqs: dict[str, int] = {}
        keys: list[bytes] = []
        prefixes: dict[str, bytes] = {}  # recipient -> its outbox key prefix
        for recipient, env in sends:
            seq = seqs.get(recipient)
            if seq is None:
                seq = self.last_seq.get(recipient, 0)
                prefixes[recipient] = recipient.encode() + b"\x00"
            seq = seqs[recipient] = seq + 1
            env.seq = seq
            env.epoch = self.epoch  # the epoch that numbered it: orders the pair across restores
            keys.append(prefixes[recipient] + _U64.pack(seq))  # outbox_key(recipient, seq)
        blobs = encode_envelopes([env for _, env in sends])  # after the seqs are set
        ops: list[Op] = [("outbox", PUT, key, blob) for key, blob in zip(keys, blobs)]  # type: ignore[misc]
        for recipient, seq in seqs.items():
            ops.append(Op("outseq", PUT, recipient.encode(), _U64.pack(seq)))
        return ops, seqs

    def published(self, seqs: dict[str, int], *, at: int | None = None) -> None:
        """The commit carrying ``seqs`` succeeded: the next sends are numbered after them.

        They may leave at once, or, given ``at`` (the commit's store seq, SYNC
        durability), once the journal is shipped up to it (:meth:`shipped`).
        """
        if not seqs:
            return
        self.last_seq.update(seqs)
        with self._lock:
            if at is None:
                self._release(seqs)
            else:
                self._held.append((at, seqs))

    def shipped(self, upto: int) -> None:
        """The journal is in the checkpoint store up to ``upto``: held sends of commits up to it may leave."""
        if not self._held:
            return
        with self._lock:
            while self._held and self._held[0][0] <= upto:
                self._release(self._held.pop(0)[1])

    def _release(self, seqs: dict[str, int]) -> None:
        # Under ``_lock``: the committing and the background thread both release.
        ready = self.ready
        for recipient, seq in seqs.items():
            if seq > ready.get(recipient, 0):
                ready[recipient] = seq
        self._wake.set()

    # -- dispatching (the dispatcher thread) ---------------------------------------

    def start(self) -> None:
        if self.resolve is None or self._thread is not None:
            return
        # Anything already in the outbox (a restart) is offered again from the start.
        for recipient, seq in self.last_seq.items():
            first = self.store.scan("outbox", recipient.encode() + b"\x00", limit=1)
            acked = _seq_of(first[0][0]) - 1 if first else seq
            self._peers[recipient] = _Peer(recipient, acked=acked, sent=acked)
        self._thread = threading.Thread(target=self._run, name=f"garrison-out-{self.agent_id}", daemon=True)
        self._thread.start()
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._thread = None

    def drain(self, timeout: float) -> bool:
        """Before a graceful stop, wait up to ``timeout`` s (retries included) for what is pending to be
        acknowledged; True if nothing is left (what is, stays in the outbox for the next start)."""
        deadline = time.monotonic() + timeout
        while self.pending():
            self._progress.clear()
            left = deadline - time.monotonic()
            if self._thread is None or left <= 0:
                return False
            self._wake.set()
            self._progress.wait(min(0.1, left))
        return True

    def resume(self) -> None:
        """Start sending again after ``stop`` (the outbox is durable: nothing was lost)."""
        self._stop = threading.Event()
        self._peers.clear()
        self.start()

    def pending(self) -> dict[str, int]:
        """Unacknowledged messages per recipient (any thread: works on snapshots)."""
        peers = dict(self._peers)
        out = {}
        for recipient, seq in list(self.last_seq.items()):
            peer = peers.get(recipient)
            acked = peer.acked if peer is not None else 0
            if seq > acked:
                out[recipient] = seq - acked
        return out

    def in_memory(self) -> int:
        """Messages currently held in memory by the dispatcher, in flight (any thread)."""
        return sum(last - first + 1 for p in list(self._peers.values()) for first, last in list(p.inflight.values()))

    def wake(self) -> None:
        """Have the dispatcher thread run a round now rather than at the end of its idle wait."""
        self._wake.set()

    def step(self, timeout: float) -> bool:
        """One round of the dispatcher thread: offer what may leave, then settle the replies that
        come within ``timeout`` seconds.  False if nothing was in flight (the thread then idles).

        Only the dispatcher thread calls it, or a test instead of starting that thread.
        """
        self._offer_all()
        self.rounds += 1
        refs = [ref for p in self._peers.values() for ref in p.inflight]
        if not refs:
            return False
        for ref in self.replies.wait(refs, timeout):
            self._settle(ref)
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                # New sends are offered at the latest after this timeout.
                if not self.step(self.config.linger * 10 + 0.01):
                    self._wake.wait(self._idle_wait())
                    self._wake.clear()
            except Exception:  # the thread must survive anything; the outbox is durable
                log.exception("agent %s: outbox dispatcher error", self.agent_id)
                time.sleep(0.1)

    def _idle_wait(self) -> float:
        now = self.clock()
        waits = [p.retry_at - now for p in self._peers.values() if p.retry_at > now and self._has_pending(p)]
        return max(0.0, min(waits)) if waits else 1.0

    def _has_pending(self, peer: _Peer) -> bool:
        return self.ready.get(peer.name, 0) > peer.sent

    def _offer_all(self) -> None:
        for recipient, last in list(self.ready.items()):
            peer = self._peers.get(recipient)
            if peer is None:
                peer = self._peers[recipient] = _Peer(recipient)
            while last > peer.sent and not self._stop.is_set():
                if not self._offer(peer, last):
                    break

    def _offer(self, peer: _Peer, last: int) -> bool:
        cfg = self.config
        if self.clock() < peer.retry_at:
            return False
        room = cfg.window - (peer.sent - peer.acked)
        if room <= 0:
            return False
        if peer.handle is None:
            try:
                peer.handle = self.resolve(peer.name)  # type: ignore[misc]
            except Exception as exc:
                self._failed(peer, f"cannot resolve {peer.name!r}: {exc}")
                return False
        count = min(room, cfg.max_batch, last - peer.sent)
        rows = self.store.scan("outbox", peer.name.encode() + b"\x00",
                               start=outbox_key(peer.name, peer.sent + 1), limit=count)
        if not rows:
            # Acknowledged in the meantime (or dead-lettered): nothing to send.
            peer.sent = max(peer.sent, last)
            return False
        first, final = _seq_of(rows[0][0]), _seq_of(rows[-1][0])
        ref = peer.handle.deliver_batch.remote(encode_batch(peer.acked, [v for _, v in rows], self.epoch))
        peer.inflight[ref] = (first, final)
        peer.sent = final
        return True

    def _settle(self, ref: Any) -> None:
        peer = next((p for p in self._peers.values() if ref in p.inflight), None)
        if peer is None:
            return
        first, last = peer.inflight.pop(ref)
        try:
            reply = self.replies.result(ref)
        except (RayActorError, GetTimeoutError) as exc:
            self._failed(peer, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            return
        parts = unpack(reply)
        if parts[0] != 0:
            err = error_from_wire(parts[1:])
            # NotDurable: the receiver handled and committed the batch, but cannot
            # ship it yet (SYNC).  Retried, never given up on: dead letters of
            # messages that took effect would be replayed with a second effect.
            self._failed(peer, f"{err.code}: {err.message}", may_give_up=err.code != "NotDurable")
            return
        hwm, errors = parts[1]
        if errors and self.on_error is not None:
            self.on_error(peer.name, errors)
        self._acknowledge(peer, hwm)
        if hwm < last:
            # The receiver stopped short (a gap after a failure): resend from hwm + 1, in order.
            self._rewind(peer)

    def _acknowledge(self, peer: _Peer, hwm: int) -> None:
        if hwm <= peer.acked:
            return
        self.store.commit([Op("outbox", DELETE_RANGE, outbox_key(peer.name, 0), outbox_key(peer.name, hwm + 1))])
        self.delivered += hwm - peer.acked
        peer.acked = hwm
        peer.failures = 0
        peer.sent = max(peer.sent, hwm)
        self._progress.set()

    def _rewind(self, peer: _Peer) -> None:
        # Forget in-flight calls: their replies still settle, but we resend from acked + 1.
        peer.inflight.clear()
        peer.sent = peer.acked

    def _failed(self, peer: _Peer, why: str, *, may_give_up: bool = True) -> None:
        """A failed attempt: retry after a backoff; after ``max_attempts`` in a row, give up (if ``may_give_up``)."""
        cfg = self.config
        peer.failures += 1
        self._rewind(peer)
        peer.handle = None  # re-resolve: the agent may have been spawned anew elsewhere
        if may_give_up and cfg.max_attempts and peer.failures >= cfg.max_attempts:
            self._give_up(peer, why)
            return
        peer.retry_at = self.clock() + self._retry.delay(peer.failures, self._rng.random())
        log.warning("agent %s: delivery to %s failed (%d): %s", self.agent_id, peer.name, peer.failures, why)

    def _give_up(self, peer: _Peer, why: str) -> None:
        rows = self.store.scan("outbox", peer.name.encode() + b"\x00")
        if not rows:
            return
        err = AgentUnavailable(f"undeliverable to {peer.name!r} after {peer.failures} attempts: {why}")
        ops = [dead_letter_op("undeliverable", err, raw=v, env=decode_envelope(v), attempts=peer.failures) for _, v in rows]
        last = _seq_of(rows[-1][0])
        ops.append(Op("outbox", DELETE_RANGE, outbox_key(peer.name, 0), outbox_key(peer.name, last + 1)))
        self.store.commit(ops)
        self.dead_lettered += len(rows)
        peer.acked = peer.sent = last
        peer.failures = 0
        log.error("agent %s: %d message(s) to %s moved to dead letters: %s", self.agent_id, len(rows), peer.name, why)
