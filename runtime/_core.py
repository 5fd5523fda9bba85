"""The agent host's logic: restore, handle, send, checkpoint, stop.

``AgentHost`` (the Ray actor) is a thin shell around one :class:`AgentCore`.
Ray appears here only through the ``resolve`` callable (finding a peer's
handle to send to); without it the core runs, and is tested, in-process.

Threads and invariants:

* Messages are handled one at a time (``_lock``), in the order Ray hands them
  over (the host's default concurrency group has one thread, so each caller's
  calls run in submission order).  ``async`` handlers run on a private event
  loop thread while the handling thread waits for them.
* A handler's state changes, journal records, effectively-once record and
  outgoing messages are committed in one LMDB transaction after it returns,
  and dropped if it raises.  Its reply is sent only after that commit (and,
  under SYNC durability, after the journal is shipped, as are its sends:
  the outbox holds them until then), so an acknowledged message is never
  lost with the process.
* A batch from another agent's outbox is handled in order with one group
  commit; where the pair stands (numbering epoch, seq) is part of that
  commit, so a redelivered message has no second effect.
* A background thread ships the journal every ``ship_interval`` and takes a
  checkpoint every ``checkpoint_interval``; it only reads LMDB (snapshot
  isolation), so it never stalls a handler on a lock.
* One live host per agent id per data directory (``HostLock``).
* Fencing (``_fence``): the host claims its epoch before it restores; once a
  later epoch exists, this incarnation commits, ships, checkpoints and sends
  nothing more (state FENCED), and receivers refuse its messages.
"""

from __future__ import annotations

import collections
import concurrent.futures
import inspect
import logging
import os
import queue
import socket
import threading
import time
import traceback
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
    encode_envelope,
    parse_message,
)

from ._agent import Agent, Context, current_deadline, current_stage
from ._background import Background
from ._checkpoint import Checkpointer
from ._ckstore import CheckpointStore, DirectoryStore
from ._codec import pack, unpack
from ._config import Durability
from ._deadletters import dead_letter_op, reason_for
from ._fence import Fence, PeerEpochs
from ._hostlock import HostLock
from ._journal import Shipper
from ._lifecycle import AgentState
from ._loop import LoopThread
from ._metrics import AgentMetrics
from ._operations import HALT_KEY, QUARANTINE_KEY, Operations
from ._outbox import Dispatcher
from ._reply import encode_error, encode_ok
from ._restore import restore
from ._spec import SHIP_CODE_HINT, HostSpec, check_agent_id, check_writable_dir, local_data_dir
from ._state import State
from ._store import PUT, Op, dedup_time_key
from ._transitions import TransitionLog
from .exceptions import (
    AgentNotRunning,
    AgentStartError,
    CheckpointError,
    DataDirectoryError,
    Fenced,
    HandlerError,
    MailboxFull,
    NoHandler,
    NotDurable,
    StateError,
    UnencodableReply,
)

__all__ = ["AgentCore"]

log = logging.getLogger("garrison.agent")


def _dedup_slot(env: Envelope) -> tuple[str, bytes]:
    """Where the reply to ``env`` is remembered: by id, or by the caller's idempotency key."""
    if env.idempotency_key is None:
        return "dedup", env.id
    return "dedup_keys", env.idempotency_key


class AgentCore(Background, Operations):
    """One agent's host logic (see module docstring; shipping and checkpoints in
    ``_background``, operators' calls in ``_operations``)."""

    def __init__(self, spec: HostSpec, *, resolve: Callable[[str], Any] | None = None) -> None:
        self.spec = spec
        self._stop_bg = threading.Event()
        #: Done once the agent has stopped gracefully, with its final status (any thread may wait on it).
        self.stopped: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()
        self.agent_id = check_agent_id(spec.agent_id)
        if spec.agent_cls is None:  # this worker could not load the code the driver used
            raise AgentStartError(
                f"agent {self.agent_id!r}: class {spec.class_path} cannot be loaded here "
                f"({spec.load_error}); {SHIP_CODE_HINT}",
                agent_id=self.agent_id, cause=spec.load_error)
        self.config = cfg = spec.config
        self.lifecycle = AgentState.STARTING
        self.failure: str | None = None
        self.metrics = AgentMetrics(self.agent_id)
        # Per node when ``data_dir`` holds ``{node}``: expanded here, in the host's process.
        data_root = local_data_dir(spec.data_dir)
        self.ckstore: CheckpointStore = DirectoryStore(check_writable_dir(spec.checkpoint_dir, "checkpoint directory"))
        agent_dir = data_root / "agents" / self.agent_id
        try:
            agent_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataDirectoryError(f"cannot create {agent_dir}: {exc}", path=str(agent_dir)) from exc
        self._host_lock = HostLock(agent_dir / "host.lock", self.agent_id)
        try:
            # Claimed before the restore: whatever an older incarnation publishes
            # from now on is refused, so the restore sees all it may ever see.
            self.epoch = self.ckstore.claim_epoch(
                self.agent_id, {"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()})
        except BaseException:
            self._host_lock.release()
            raise
        self.fence = Fence(self.ckstore, self.agent_id, self.epoch)
        # Holding the lock, no checkpoint of this agent can be running: clear
        # what an interrupted one left behind (a body without a manifest).
        self.ckstore.sweep(self.agent_id)

        self.lifecycle = AgentState.RESTORING
        try:
            self.store, self.restore_report, _ = restore(
                agent_dir / "state", self.ckstore, agent_id=self.agent_id, agent_class=spec.class_path,
                map_size=cfg.map_size, sync=cfg.lmdb_sync,
            )
        except BaseException:
            self._host_lock.release()
            raise
        try:
            self.store.take_epoch(self.epoch)
            # Before this epoch writes anything: what older epochs publish past this
            # point is a fork this incarnation never saw, and later restores skip it.
            self.ckstore.record_base(self.agent_id, self.epoch, self.store.seq)
        except BaseException:
            self.store.close()
            self._host_lock.release()
            raise
        self.store.dedup_horizon = cfg.dedup_horizon
        self.store.dead_letter_limit = cfg.dead_letter_limit
        self.incarnation = self.restore_report.incarnation
        history = [*self.store.meta("restores", []), self.restore_report.model_dump(mode="json")]
        self.store.put_meta("restores", history[-cfg.restore_history :])
        self.store.put_meta("incarnation", self.incarnation)
        self.store.put_meta("identity", {"agent_id": self.agent_id, "agent_class": spec.class_path})
        self.metrics.restores.labels(self.agent_id, self.restore_report.source).inc()
        log.info("agent %s restored: %s", self.agent_id, self.restore_report.model_dump_json())

        try:
            self.agent: Agent = spec.agent_cls(**spec.init)
        except Exception as exc:
            self.close_files()
            raise AgentStartError(
                f"{spec.class_path}({', '.join(spec.init)}) raised {type(exc).__name__}: {exc}",
                agent_id=self.agent_id,
            ) from exc
        self.state = State(self.store)
        self.agent.agent_id = self.agent_id
        self.agent.state = self.state
        self.agent.context = None
        self.agent.log = logging.getLogger(f"garrison.agent.{self.agent_id}")
        # Handlers by type tag, not by class object: a message class that reached
        # this process by value (defined in a driver's ``__main__``) may be a
        # different object from the one the agent class was pickled with.
        self._handlers = {cls.type_tag(): method for cls, method in type(self.agent).__handlers__.items()}

        # Under SYNC, what the restored outbox holds leaves once shipped (a copy restored
        # from this node may hold commits a crash kept from shipping).
        self.dispatcher = Dispatcher(self.store, agent_id=self.agent_id, config=cfg, resolve=resolve,
                                     on_error=self._peer_refused, epoch=self.epoch,
                                     held_until=self.store.seq if cfg.durability is Durability.SYNC else None)
        self._peer_epochs = PeerEpochs(self.ckstore)
        self._resolve = resolve
        # What ``send`` calls to stage a message (the ``current_stage`` context
        # variable); one bound method, so "is it set?" is an identity check.
        self._stage_fn = self.state.stage_send
        self._direct: dict[str, list[Any]] = {}  # at-most-once sends in flight, per recipient
        self._inseq: dict[str, tuple[int, int]] = {}  # cache of the ``inseq`` table: sender -> (epoch, seq)
        self.shipper = Shipper(self.store, self.ckstore, self.agent_id, fence=self.fence.check, epoch=self.epoch,
                              on_shipped=self.dispatcher.shipped)
        self.transition_log = TransitionLog(self.store, self.ckstore, self.agent_id,
                                            retention=cfg.transition_retention, epoch=self.epoch,
                                            fence=self.fence.check)
        self.checkpointer = Checkpointer(
            self.store, self.ckstore, self.shipper,
            agent_id=self.agent_id, agent_class=spec.class_path, config_version=cfg.config_version,
            keep=cfg.keep_checkpoints, retention=cfg.journal_retention,
            summarize=self.agent.summary if type(self.agent).summary is not Agent.summary else None,
            fence=self.fence.check,
            epoch=self.epoch,
            transitions=self.transition_log,
        )
        self._lock = threading.RLock()
        self._loop = LoopThread(f"garrison-loop-{self.agent_id}")
        self._checkpoint_lock = threading.Lock()
        self._started = False
        self._init_background()  # failure bookkeeping: background_error, degraded state, retry schedule
        self._handler_started: float | None = None
        #: (monotonic start, seconds) of recently handled single messages, for
        #: operators and benchmarks: how long handling took, from taking the
        #: message to its commit.
        self.recent_handling: collections.deque[tuple[float, float]] = collections.deque(maxlen=20_000)
        self._bg_wake = threading.Event()
        self._bg_requests: queue.SimpleQueue[tuple[bool, str, concurrent.futures.Future[Any]]] = queue.SimpleQueue()
        self._bg = threading.Thread(target=self._background, name=f"garrison-bg-{self.agent_id}", daemon=True)
        self._bg.start()

    # -- start -----------------------------------------------------------------

    def ensure_started(self) -> None:
        """Run the start hooks once per incarnation, then start sending."""
        with self._lock:
            if self._started:
                return
            self._started = True
            try:
                if self.restore_report.source != "fresh":
                    self._run_hook(self.agent.on_restore, self.restore_report)
                self._run_hook(self.agent.on_start)
            except Exception as exc:
                self.lifecycle = AgentState.FAILED
                self.failure = f"on_start raised {type(exc).__name__}: {exc}"
                log.exception("agent %s failed to start", self.agent_id)
                return
            halted = self.store.get("control", HALT_KEY)
            if halted is not None:  # a kill switch outlives the incarnation that saw it
                record = unpack(halted)
                self.lifecycle = AgentState.HALTED
                self.failure = f"halted by {record['who']}: {record['why']}"
                return
            quarantined = self.store.get("control", QUARANTINE_KEY)
            if quarantined is not None:  # so does a quarantine: handle nothing until released
                self.lifecycle = AgentState.QUARANTINED
                self.failure = f"quarantined: {unpack(quarantined)['why']}"
            else:
                self.lifecycle = AgentState.RUNNING
            self.dispatcher.shipped(self.shipper.shipped)
            self.dispatcher.start()

    def _run_hook(self, hook: Callable[..., Any], *args: Any) -> None:
        self.state.begin()
        ok, result = self._call(hook, args, None)
        if not ok:
            self.state.discard()
            raise result
        self._commit(self.state.take(), [], time.time())

    # -- calling user code --------------------------------------------------------

    def _call(self, fn: Callable[..., Any], args: tuple[Any, ...], deadline: float | None) -> tuple[bool, Any]:
        """Run a handler or hook (sync, or async on the loop thread): ``(ok, result or exception)``."""
        self._handler_started = time.monotonic()
        # Set only what differs: a batch sets the stage once for all its
        # messages, and its messages mostly share one deadline (none).
        deadline_token = current_deadline.set(deadline) if current_deadline.get() != deadline else None
        stage_token = current_stage.set(self._stage_fn) if current_stage.get() is not self._stage_fn else None
        try:
            result = fn(*args)
            if result is not None and inspect.isawaitable(result):
                result = self._loop.run(self._in_context(result, deadline))
            return True, result
        except Exception as exc:
            return False, exc
        finally:
            if deadline_token is not None:
                current_deadline.reset(deadline_token)
            if stage_token is not None:
                current_stage.reset(stage_token)
            self._handler_started = None

    async def _in_context(self, awaitable: Any, deadline: float | None) -> Any:
        # Context variables do not cross threads: set them again on the loop.
        current_deadline.set(deadline)
        current_stage.set(self._stage_fn)
        return await awaitable

    def _resolve_handler(self, env: Envelope) -> tuple[Any, str]:
        msg = parse_message(env)
        method = self._handlers.get(type(msg).__message_tag__)
        if method is None:
            raise NoHandler(
                f"agent {self.agent_id!r} ({type(self.agent).__qualname__}) has no handler for "
                f"{env.type}; it handles: {', '.join(self.agent.handled_types()) or 'nothing'}",
                tag=env.type,
                handles=self.agent.handled_types(),
            )
        return msg, method

    def _unencodable(self, method: str, result: Any, exc: Exception) -> UnencodableReply:
        return UnencodableReply(
            f"{type(self.agent).__qualname__}.{method} returned a {type(result).__name__} that cannot be "
            f"encoded as a reply ({exc}); its changes were rolled back. Return msgpack-able data or a "
            "pydantic model", handler=method, value_type=type(result).__name__)

    def _handler_error(self, method: str, exc: Exception) -> WireError:
        if isinstance(exc, WireError):
            return exc
        return HandlerError(
            f"{type(self.agent).__qualname__}.{method} raised {type(exc).__name__}: {exc}",
            exception=type(exc).__name__,
            traceback="".join(traceback.format_exception(exc)[-3:]),
        )

    # -- committing ------------------------------------------------------------------

    def _commit(self, layer: Any, extra: list[Op], now: float) -> int:
        """One LMDB transaction for a layer's ops, ``extra`` ops and its outbox sends."""
        self.fence.check("commit")  # a replaced incarnation's changes are refused (Fenced)
        durable = [s for s in layer.sends if s[1].delivery is not Delivery.AT_MOST_ONCE]
        out_ops, seqs = self.dispatcher.stage(durable, now) if durable else ([], {})
        ops = layer.ops + extra + out_ops if (extra or out_ops) else layer.ops
        seq = self.store.commit(ops, now=now) if ops else self.store.seq
        sync = self.config.durability is Durability.SYNC
        # Under SYNC nothing this commit sent leaves before its journal is shipped:
        # a receiver never acts on a message that its sender, should its node be
        # lost now, would not remember sending (and might send again, differently).
        self.dispatcher.published(seqs, at=seq if sync else None)
        once = []  # at-most-once sends: not in the outbox, sent once below
        if len(durable) < len(layer.sends):
            once = [s for s in layer.sends if s[1].delivery is Delivery.AT_MOST_ONCE]
        if sync:
            try:
                # Every reply waits for this, even one that committed nothing (a
                # duplicate): what it acknowledges may not have been shipped yet.
                self._ship_until(seq)  # then releases what the commit sent (``on_shipped``)
            except NotDurable as exc:
                if once:
                    self.store.commit([dead_letter_op("not_durable", exc, raw=encode_envelope(env), env=env)
                                       for _, env in once])
                raise
        for recipient, env in once:
            self._send_once(recipient, env)
        return seq

    def _ship_until(self, seq: int) -> None:
        try:
            self.shipper.ship_until(seq)
        except CheckpointError as exc:
            raise NotDurable(
                f"agent {self.agent_id!r} handled and committed up to seq {seq}, but could not ship it "
                f"to the checkpoint store (SYNC durability): {exc.message}; asking again with the same "
                "message id is safe", agent_id=self.agent_id, seq=seq) from exc

    def _send_once(self, recipient: str, env: Envelope) -> None:
        """At-most-once: one call, no retry; refused at once if the window is full."""
        if self.lifecycle is AgentState.HALTED:
            err = AgentNotRunning(f"agent {self.agent_id!r} is halted: {env.type} to {recipient!r} not sent")
            self.store.commit([dead_letter_op("not_running", err, raw=encode_envelope(env), env=env)])
            return
        try:
            if self._resolve is None:
                raise MailboxFull(f"no transport to {recipient!r} in this process")
            inflight = self._direct.setdefault(recipient, [])
            if len(inflight) >= self.config.window:
                import ray

                done, inflight[:] = ray.wait(inflight, num_returns=len(inflight), timeout=0)
            if len(inflight) >= self.config.window:
                raise MailboxFull(
                    f"{len(inflight)} at-most-once messages to {recipient!r} are unanswered "
                    f"(window {self.config.window}); {env.type} dropped",
                    recipient=recipient,
                )
            env.epoch = self.epoch
            inflight.append(self._resolve(recipient).deliver.remote(encode_envelope(env)))
        except Exception as exc:
            err = exc if isinstance(exc, WireError) else MailboxFull(f"cannot send to {recipient!r}: {exc}")
            self.metrics.outcome("send_dropped")
            self.store.commit([dead_letter_op(reason_for(err), err, raw=encode_envelope(env), env=env)])

    def _refuse(self, exc: WireError, *, raw: Any = None, env: Envelope | None = None) -> bytes:
        """A typed error for the caller; a dead letter too unless the caller waits for the reply."""
        self.metrics.outcome(f"rejected_{exc.code}")
        if env is None or env.reply_to is None:
            try:
                self.store.commit([dead_letter_op(reason_for(exc), exc, raw=raw, env=env)])
            except StateError:
                log.exception("agent %s: cannot record a dead letter", self.agent_id)
        return encode_error(exc)

    def _not_running(self, what: str) -> AgentNotRunning:
        return AgentNotRunning(
            f"agent {self.agent_id!r} cannot handle {what} while {self.lifecycle.name}"
            + (f" ({self.failure})" if self.failure else ""),
            state=self.lifecycle.value,
        )

    # -- one message: asks and tells ----------------------------------------------------

    def deliver(self, raw: bytes) -> bytes:
        """Handle one wire envelope; always returns a reply, never raises for bad input."""
        try:
            env = decode_envelope(raw, max_bytes=self.config.max_message_bytes)
        except ProtocolError as exc:
            return self._refuse(exc, raw=raw)
        self.ensure_started()
        with self._lock:
            try:
                return self._deliver_one(env, raw)
            except NotDurable as exc:
                return self._not_durable(exc)

    def _deliver_one(self, env: Envelope, raw: bytes) -> bytes:
        if self.lifecycle is AgentState.FENCED:
            return encode_error(self.fence.error("delivery"))  # the caller retries with the new incarnation
        if self.lifecycle is not AgentState.RUNNING:
            return self._refuse(self._not_running(env.type), raw=raw, env=env)
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
                cached = self.store.get(*_dedup_slot(env))
            if cached is None:
                msg, method = self._resolve_handler(env)
        except WireError as exc:
            return self._refuse(exc, raw=raw, env=env)
        if cached is not None:
            self.metrics.outcome("duplicate")
            if self.config.durability is Durability.SYNC:
                self._ship_until(self.store.seq)  # the first reply may have failed to ship
            return unpack(cached)[1]

        self.agent.context = Context(env.id, env.sender, env.deadline, env.attempt, env.traceparent)
        self.state.begin()
        ok, result = self._call(getattr(self.agent, method), (msg,), env.deadline)
        self.agent.context = None
        if not ok:
            self.state.discard()
            self.metrics.outcome("handler_error")
            return self._refuse(self._handler_error(method, result), raw=raw, env=env)
        try:
            reply = encode_ok(result)
        except (TypeError, ValueError, OverflowError) as exc:
            # As if the handler raised: nothing it changed or sent is kept.
            self.state.discard()
            self.metrics.outcome("handler_error")
            return self._refuse(self._unencodable(method, result, exc), raw=raw, env=env)
        now = time.time()
        extra: list[Op] = []
        if remember:
            table, key = _dedup_slot(env)
            extra.append(Op(table, PUT, key, pack([now, reply])))
            if table == "dedup_keys":
                extra.append(Op("dedup_time", PUT, dedup_time_key(now, key), b""))
        try:
            self._commit(self.state.take(), extra, now)
        except Fenced as exc:
            return self._fenced(exc)
        took = time.monotonic() - t0
        self.recent_handling.append((t0, took))
        self.metrics.outcome("handled")
        self.metrics.handle_seconds.labels(self.agent_id).observe(took)
        return reply

    # -- batches from other agents' outboxes --------------------------------------------

    def deliver_batch(self, blob: bytes) -> bytes:
        """Handle an outbox batch in seq order with one group commit; reply ``[hwm, errors]``."""
        try:
            base, items, epoch = decode_batch(blob)
        except EncodingError as exc:
            return self._refuse(exc, raw=blob)
        self.ensure_started()
        with self._lock:
            if self.lifecycle is AgentState.FENCED:
                return encode_error(self.fence.error("delivery"))
            if self.lifecycle is not AgentState.RUNNING:
                return encode_error(self._not_running("a batch"))  # the sender keeps it and retries
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
            raw = self.store.get("inseq", sender.encode())
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
        extra: list[Op] = []
        sender: str | None = None
        mark = start = (0, 0)
        dealt: int | None = None  # seq of the last envelope of this batch dealt with, in order
        handled = 0
        where = f"agent {self.agent_id!r} before handling"
        txn = self.store.read_txn()
        stage_token = current_stage.set(self._stage_fn)
        try:
            self.state.begin(txn)
            for raw in items:
                try:
                    env = decode_envelope(raw, max_bytes=self.config.max_message_bytes)
                    if env.sender is None or env.seq is None:
                        raise EncodingError("a batched envelope needs a sender and a seq")
                    if sender is None:
                        stale = self._peer_epochs.refusal(env.sender, epoch)
                        if stale is not None:
                            # The whole batch: a replaced sender acts no more (its
                            # successor sends the same outbox again, under its epoch).
                            self.metrics.outcome(f"rejected_{stale.code}")
                            return encode_error(stale)
                        sender = env.sender
                        mark = start = self._mark(sender, base)
                    elif env.sender != sender:
                        raise EncodingError(f"batch mixes senders {sender!r} and {env.sender!r}")
                except ProtocolError as exc:
                    self.metrics.outcome(f"rejected_{exc.code}")
                    extra.append(dead_letter_op(reason_for(exc), exc, raw=raw, now=now))
                    errors.append([None, exc.code, exc.message])
                    continue
                position = (env.epoch or 0, env.seq)
                if position <= mark:
                    self.metrics.outcome("duplicate")
                    dealt = env.seq
                    continue
                if env.seq > mark[1] + 1:
                    break  # a gap: an earlier batch was lost; the sender resends after the reply's seq
                mark = position
                dealt = env.seq
                try:
                    if env.deadline is not None:
                        env.check_deadline(where)
                    msg, method = self._resolve_handler(env)
                except WireError as exc:
                    self.metrics.outcome(f"rejected_{exc.code}")
                    extra.append(dead_letter_op(reason_for(exc), exc, raw=raw, env=env, now=now))
                    errors.append([env.seq, exc.code, exc.message])
                    continue
                self.agent.context = Context(env.id, env.sender, env.deadline, env.attempt, env.traceparent)
                point = self.state.savepoint()
                ok, result = self._call(getattr(self.agent, method), (msg,), env.deadline)
                if ok:
                    self.state.release()
                    handled += 1
                else:
                    self.state.rollback(point)
                    err = self._handler_error(method, result)
                    self.metrics.outcome("handler_error")
                    extra.append(dead_letter_op("handler_error", err, raw=raw, env=env, now=now))
                    errors.append([env.seq, err.code, err.message])
            self.agent.context = None
            layer = self.state.take()
        finally:
            current_stage.reset(stage_token)
            txn.abort()
            if self.state.depth():
                self.state.discard()
        if sender is not None and mark != start:
            extra.append(Op("inseq", PUT, sender.encode(), pack([mark[1], now, mark[0]])))
        try:
            self._commit(layer, extra, now)
        except BaseException:
            # Committed or not (SYNC: committed, then shipping failed), the store
            # knows where the pair stands; the cache may be behind it.
            self._inseq.pop(sender, None)  # type: ignore[arg-type]
            raise
        if sender is None:
            return encode_ok([base, errors])
        self._inseq[sender] = mark
        if handled:
            self.metrics.messages.labels(self.agent_id, "handled").inc(handled)
        # The acknowledgement is in the sender's numbering: up to the last
        # envelope of this batch dealt with, or, if the first one is a gap,
        # no further than what the sender already knows (``base``).
        return encode_ok([dealt if dealt is not None else min(mark[1], base), errors])

    def _not_durable(self, exc: NotDurable) -> bytes:
        """Handled and committed, not shipped (SYNC): the caller may ask again; nothing is lost here."""
        self.metrics.outcome("not_durable")
        log.warning("agent %s: %s", self.agent_id, exc.message)
        return encode_error(exc)

    def _fenced(self, exc: Fenced) -> bytes:
        """This incarnation was replaced: stop acting for good, and say so to the caller."""
        if self.lifecycle is not AgentState.FENCED:
            self.lifecycle = AgentState.FENCED
            self.failure = f"fenced: {exc.message}"
            self.metrics.outcome("fenced")
            log.warning("agent %s epoch %s fenced: %s", self.agent_id, self.epoch, exc.message)
        self.dispatcher.stop(timeout=0)
        self._stop_bg.set()
        self._bg_wake.set()
        return encode_error(exc)

    def _peer_refused(self, recipient: str, errors: list[Any]) -> None:
        for seq, code, message in errors:
            self.metrics.outcome(f"refused_by_peer_{code}")
            log.warning("agent %s: %s refused seq %s: %s: %s", self.agent_id, recipient, seq, code, message)

    # -- introspection ----------------------------------------------------------------

    def probe(self) -> dict[str, Any]:
        """The cheap subset of status a liveness probe needs (answered off the handling thread)."""
        started = self._handler_started
        return {
            "state": self.lifecycle.value,
            "incarnation": self.incarnation,
            "epoch": self.epoch,
            "pid": os.getpid(),
            "handler_running_for": None if started is None else time.monotonic() - started,
            # None, or the current episode of failing background work (``_degraded``).
            "degraded": self.degraded.probe(),
        }

    def status(self) -> dict[str, Any]:
        last = self.checkpointer.last
        open_ = self.lifecycle is not AgentState.STOPPED
        return {
            **self.probe(),
            "agent_id": self.agent_id,
            "agent_class": self.spec.class_path,
            "seq": self.store.seq,
            "shipped_seq": self.shipper.shipped,
            "journal_entries": self.store.count("journal") if open_ else None,
            "transition_entries": self.store.count("transitions") if open_ else None,
            "transitions_shipped_seq": self.transition_log.shipped,
            "last_checkpoint_seq": last.seq if last else None,
            "last_checkpoint_time": last.time if last else None,
            "checkpoints_taken": self.checkpointer.taken,
            "outbox_pending": self.dispatcher.pending(),
            "outbox_in_memory": self.dispatcher.in_memory(),
            "delivered": self.dispatcher.delivered,
            "dead_letters": self.store.count("deadletters") if open_ else None,
            "background_error": self.background_error,
            **self.degraded.status(),  # degraded (current episode), degraded_cleared (last ended one)
            "failure": self.failure,
            "restore": self.restore_report.model_dump(mode="json"),
        }

    def restore_history(self) -> list[dict[str, Any]]:
        return list(self.store.meta("restores", []))

    # -- stop ---------------------------------------------------------------------

    def stop(self) -> dict[str, Any]:
        """Drain, run ``on_stop``, ship, take a final checkpoint, close.  Idempotent."""
        with self._lock:
            if self.lifecycle is AgentState.STOPPED:
                return self.status()
            was_running = self.lifecycle is AgentState.RUNNING
            fenced = self.lifecycle is AgentState.FENCED
            self.lifecycle = AgentState.DRAINING
            if was_running:
                try:
                    self._run_hook(self.agent.on_stop)
                except Exception:
                    log.exception("agent %s: on_stop raised; stopping anyway", self.agent_id)
            self.dispatcher.stop()
            self._stop_bg.set()
            self._bg_wake.set()
            self._bg.join()
            if not fenced:  # a replaced incarnation publishes nothing, not even a last checkpoint
                self._final_checkpoint("stop")  # a failure is recorded (degraded), not raised: it still stops
            status = self.status()
            self.lifecycle = AgentState.STOPPED
            status["state"] = self.lifecycle.value
            self.close_files()
        if not self.stopped.done():
            self.stopped.set_result(status)
        return status

    def close_files(self) -> None:
        self._stop_bg.set()
        if hasattr(self, "_bg_wake"):
            self._bg_wake.set()
        try:
            self.store.close()
        finally:
            self._host_lock.release()
            if hasattr(self, "_loop"):
                self._loop.close()
