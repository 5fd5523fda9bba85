"""The inbox: taking messages in, one at a time, and answering each.

:class:`Inbox` handles a single wire envelope (an ask or a driver's tell)
and a batch from another agent's outbox.  It decodes, refuses what it must
(a typed error for the caller, a dead letter unless the caller waits for the
reply), deduplicates, keeps each sender's pair ordering, checks deadlines,
has the :class:`~runtime._invoke.Invoker` run the handler inside the host's
:class:`~runtime._transaction.Transaction`, and has the
:class:`~runtime._committer.Committer` commit it.

Invariants:

* Messages are handled one at a time (the handling lock), in the order Ray
  hands them over (the host's default concurrency group has one thread, so
  each caller's calls run in submission order).
* A handler's state changes, records and sends are committed in one LMDB
  transaction after it returns, and dropped if it raises or its reply cannot
  be encoded.  Its reply is returned only after that commit (under SYNC, after
  the journal is shipped), so an acknowledged message is never lost.
* Effectively once: the reply to a remembered message (by id, or by the
  caller's idempotency key) is committed with its effect; a retry gets the
  first reply and runs nothing.
* A batch is handled in seq order with one group commit; where the pair
  stands (numbering epoch, seq) is part of that commit, so a redelivered
  message has no second effect.  A gap stops the batch: the sender resends.
* Nothing is ever raised for bad input: every call returns an encoded reply.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from protocols import (
    Delivery,
    EncodingError,
    Envelope,
    ProtocolError,
    WireError,
    decode_batch,
    decode_envelope,
)

from ._audit import request_op, requests_op
from ._codec import pack, unpack
from ._committer import Committer
from ._config import AgentConfig, Durability
from ._deadletters import dead_letter_op, reason_for
from ._fence import Fence, PeerEpochs
from ._invoke import Invoker
from ._lifecycle import AgentState, Lifecycle
from ._metrics import AgentMetrics
from ._reply import encode_error, encode_ok
from ._store import PUT, LmdbStore, Op, dedup_time_key
from ._transaction import Transaction
from .exceptions import AgentNotRunning, Fenced, NotDurable, StateError

__all__ = ["Inbox"]

log = logging.getLogger("garrison.agent")


def _dedup_slot(env: Envelope) -> tuple[str, bytes]:
    """Where the reply to ``env`` is remembered: by id, or by the caller's idempotency key."""
    if env.idempotency_key is None:
        return "dedup", env.id
    return "dedup_keys", env.idempotency_key


class Inbox:
    """Single messages and outbox batches (see module docstring)."""

    def __init__(self, *, agent_id: str, config: AgentConfig, store: LmdbStore, lifecycle: Lifecycle,
                 lock: threading.RLock, txn: Transaction, invoker: Invoker, committer: Committer, fence: Fence,
                 peer_epochs: PeerEpochs, metrics: AgentMetrics, on_fenced: Callable[[Fenced], None],
                 audited: bool = False) -> None:
        self.agent_id = agent_id
        self._audited = audited  # each message handled leaves a ``request`` audit record (``_audit``)
        self._max_bytes = config.max_message_bytes
        self._sync = config.durability is Durability.SYNC
        self._store = store
        self._lifecycle = lifecycle
        self._lock = lock
        self._txn = txn
        self._invoker = invoker
        self._committer = committer
        self._fence = fence
        self._peer_epochs = peer_epochs
        self._metrics = metrics
        self._on_fenced = on_fenced
        self._inseq: dict[str, tuple[int, int]] = {}  # cache of the ``inseq`` table: sender -> (epoch, seq)

    # -- hooks -----------------------------------------------------------------------

    def run_hook(self, hook: Callable[..., Any], *args: Any) -> None:
        """Run a start/stop/restore hook in its own transaction; raises what it raises (nothing committed).

        Under SYNC, a hook whose commit could not be shipped yet (NotDurable: the checkpoint
        store is unreachable) has still run and committed: the background thread ships it
        later, and the agent goes on (a store outage at start does not fail the agent).
        """
        self._txn.begin()
        ok, result = self._invoker.call(hook, args, None)
        if not ok:
            self._txn.discard()
            raise result
        try:
            self._committer.commit(*self._txn.take(), time.time())
        except NotDurable as exc:
            log.warning("agent %s: %s committed, not shipped yet: %s", self.agent_id,
                        getattr(hook, "__name__", "a hook"), exc.message)

    # -- refusing ----------------------------------------------------------------------

    def refuse(self, exc: WireError, *, raw: Any = None, env: Envelope | None = None) -> bytes:
        """A typed error for the caller; a dead letter too unless the caller waits for the reply."""
        self._metrics.outcome(f"rejected_{exc.code}")
        if env is None or env.reply_to is None:
            try:
                self._store.commit([dead_letter_op(reason_for(exc), exc, raw=raw, env=env)])
            except StateError:
                log.exception("agent %s: cannot record a dead letter", self.agent_id)
        return encode_error(exc)

    def not_running(self, what: str) -> AgentNotRunning:
        return AgentNotRunning(f"agent {self.agent_id!r} cannot handle {what} while {self._lifecycle.describe()}",
                               state=self._lifecycle.state.value)

    def _not_durable(self, exc: NotDurable) -> bytes:
        """Handled and committed, not shipped (SYNC): the caller may ask again; nothing is lost here."""
        self._metrics.outcome("not_durable")
        log.warning("agent %s: %s", self.agent_id, exc.message)
        return encode_error(exc)

    def _fenced(self, exc: Fenced) -> bytes:
        self._on_fenced(exc)
        return encode_error(exc)

    # -- one message: asks and tells ----------------------------------------------------

    def deliver(self, raw: bytes) -> bytes:
        """Handle one wire envelope; always returns a reply, never raises for bad input."""
        try:
            env = decode_envelope(raw, max_bytes=self._max_bytes)
        except ProtocolError as exc:
            return self.refuse(exc, raw=raw)
        with self._lock:
            try:
                return self.deliver_one(env, raw)
            except NotDurable as exc:
                return self._not_durable(exc)

    def deliver_one(self, env: Envelope, raw: bytes) -> bytes:
        """Handle one decoded envelope, holding the handling lock."""
        state = self._lifecycle.state
        if state is AgentState.FENCED:
            return encode_error(self._fence.error("delivery"))  # the caller retries with the new incarnation
        if state is not AgentState.RUNNING:
            return self.refuse(self.not_running(env.type), raw=raw, env=env)
        t0 = time.monotonic()
        remember = env.delivery is not Delivery.AT_MOST_ONCE
        cached = None
        try:
            if env.epoch is not None:
                stale = self._peer_epochs.refusal(env.sender, env.epoch)
                if stale is not None:
                    raise stale
            env.check_deadline(f"agent {self.agent_id!r} before handling")
            if remember:
                cached = self._store.get(*_dedup_slot(env))
            if cached is None:
                msg, method = self._invoker.resolve(env)
        except WireError as exc:
            return self.refuse(exc, raw=raw, env=env)
        if cached is not None:
            self._metrics.outcome("duplicate")
            if self._sync:
                self._committer.ship_until(self._store.seq)  # the first reply may have failed to ship
            return unpack(cached)[1]

        txn = self._txn
        txn.begin()
        if self._audited:  # first, so the request precedes the decisions its handler records
            txn.record(request_op(env, time.time()))
        ok, result = self._invoker.handle(env, msg, method)
        if not ok:
            txn.discard()
            self._metrics.outcome("handler_error")
            return self.refuse(self._invoker.handler_error(method, result), raw=raw, env=env)
        try:
            reply = encode_ok(result)
        except (TypeError, ValueError, OverflowError) as exc:
            # As if the handler raised: nothing it changed or sent is kept.
            txn.discard()
            self._metrics.outcome("handler_error")
            return self.refuse(self._invoker.unencodable(method, result, exc), raw=raw, env=env)
        now = time.time()
        if remember:
            table, key = _dedup_slot(env)
            txn.record(Op(table, PUT, key, pack([now, reply])))
            if table == "dedup_keys":
                txn.record(Op("dedup_time", PUT, dedup_time_key(now, key), b""))
        try:
            self._committer.commit(*txn.take(), now)
        except Fenced as exc:
            return self._fenced(exc)
        self._metrics.handled(time.monotonic() - t0)
        return reply

    # -- batches from other agents' outboxes --------------------------------------------

    def deliver_batch(self, blob: bytes) -> bytes:
        """Handle an outbox batch in seq order with one group commit; reply ``[hwm, errors]``."""
        try:
            base, items, epoch = decode_batch(blob)
        except EncodingError as exc:
            return self.refuse(exc, raw=blob)
        with self._lock:
            state = self._lifecycle.state
            if state is AgentState.FENCED:
                return encode_error(self._fence.error("delivery"))
            if state is not AgentState.RUNNING:
                return encode_error(self.not_running("a batch"))  # the sender keeps it and retries
            try:
                return self._deliver_batch(base, items, epoch)
            except Fenced as exc:
                return self._fenced(exc)
            except NotDurable as exc:
                return self._not_durable(exc)  # the sender keeps the batch and retries

    def _mark(self, sender: str, base: int) -> tuple[int, int]:
        """Where the pair stands: ``(epoch, seq)`` of the newest message from ``sender`` dealt with.

        Positions order by the epoch that *numbered* a message (stamped when
        its sender staged it), then by seq.  A sender restored from an older
        point (ASYNC durability, node lost) numbers its new messages from its
        restored seq, under a newer epoch: they rank after everything of the
        older epoch, so they are not mistaken for duplicates.
        """
        mark = self._inseq.get(sender)
        if mark is None:
            raw = self._store.get("inseq", sender.encode())
            if raw is None:
                # No record (a new sender, or one idle past the dedup horizon):
                # start from what the sender knows was acknowledged.
                mark = (0, base)
            else:
                record = unpack(raw)
                mark = (record[2] if len(record) > 2 else 0, record[0])
            self._inseq[sender] = mark
        if mark[1] < base:
            # Below what this agent already acknowledged: its state rolled back
            # (ASYNC durability, node lost before the journal shipped).  What it
            # acknowledged is gone from the sender's outbox; go on from there
            # rather than wait forever for a gap that will never fill.
            log.warning("agent %s: high-water mark of %s rolled back from %d to %d", self.agent_id, sender,
                        base, mark[1])
            self._inseq[sender] = mark = (mark[0], base)
        return mark

    def _deliver_batch(self, base: int, items: list[bytes], epoch: int | None) -> bytes:
        now = time.time()
        errors: list[list[Any]] = []
        sender: str | None = None
        mark = start = (0, 0)
        dealt: int | None = None  # seq of the last envelope of this batch dealt with, in order
        handled = 0
        where = f"agent {self.agent_id!r} before handling"
        metrics, invoker, txn = self._metrics, self._invoker, self._txn
        audited: list[list[Any]] | None = [] if self._audited else None  # [id, type, trace] of each handled
        read = self._store.read_txn()
        stage_token = invoker.staging()
        try:
            txn.begin(read)
            for raw in items:
                try:
                    env = decode_envelope(raw, max_bytes=self._max_bytes)
                    if env.sender is None or env.seq is None:
                        raise EncodingError("a batched envelope needs a sender and a seq")
                    if sender is None:
                        stale = self._peer_epochs.refusal(env.sender, epoch)
                        if stale is not None:
                            # The whole batch: a replaced sender acts no more (its
                            # successor sends the same outbox again, under its epoch).
                            metrics.outcome(f"rejected_{stale.code}")
                            return encode_error(stale)
                        sender = env.sender
                        mark = start = self._mark(sender, base)
                    elif env.sender != sender:
                        raise EncodingError(f"batch mixes senders {sender!r} and {env.sender!r}")
                except ProtocolError as exc:
                    metrics.outcome(f"rejected_{exc.code}")
                    txn.record(dead_letter_op(reason_for(exc), exc, raw=raw, now=now))
                    errors.append([None, exc.code, exc.message])
                    continue
                position = (env.epoch or 0, env.seq)
                if position <= mark:
                    metrics.outcome("duplicate")
                    dealt = env.seq
                    continue
                if env.seq > mark[1] + 1:
                    break  # a gap: an earlier batch was lost; the sender resends after the reply's seq
                mark = position
                dealt = env.seq
                try:
                    if env.deadline is not None:
                        env.check_deadline(where)
                    msg, method = invoker.resolve(env)
                except WireError as exc:
                    metrics.outcome(f"rejected_{exc.code}")
                    txn.record(dead_letter_op(reason_for(exc), exc, raw=raw, env=env, now=now))
                    errors.append([env.seq, exc.code, exc.message])
                    continue
                point = txn.savepoint()
                ok, result = invoker.handle(env, msg, method)
                if ok:
                    txn.release()
                    handled += 1
                    if audited is not None:
                        audited.append([env.id.hex(), env.type, env.traceparent])
                else:
                    txn.rollback(point)
                    err = invoker.handler_error(method, result)
                    metrics.outcome("handler_error")
                    txn.record(dead_letter_op("handler_error", err, raw=raw, env=env, now=now))
                    errors.append([env.seq, err.code, err.message])
            if sender is not None and mark != start:
                txn.record(Op("inseq", PUT, sender.encode(), pack([mark[1], now, mark[0]])))
            if audited:  # one audit record for the batch's handled messages, not one each
                txn.record(requests_op(sender, audited, now))
            layer, records = txn.take()
        finally:
            invoker.unstage(stage_token)
            read.abort()
            if txn.is_open():
                txn.discard()
        try:
            self._committer.commit(layer, records, now)
        except BaseException:
            # Committed or not (SYNC: committed, then shipping failed), the store
            # knows where the pair stands; the cache may be behind it.
            self._inseq.pop(sender, None)  # type: ignore[arg-type]
            raise
        if sender is None:
            return encode_ok([base, errors])
        self._inseq[sender] = mark
        if handled:
            metrics.handled_batch(handled)
        # The acknowledgement is in the sender's numbering: up to the last
        # envelope of this batch dealt with, or, if the first one is a gap,
        # no further than what the sender already knows (``base``).
        return encode_ok([dealt if dealt is not None else min(mark[1], base), errors])
