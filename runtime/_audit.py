"""The agent's audit trail: records committed with its handlers' changes, shipped to its audit log.

What an agent records (``kind``: ``body``), each in the transaction of what it records:

``request``   every message handled (committed) from a driver or an ask: ``id`` (hex), ``type``,
              ``sender``, ``trace``
``requests``  a batch from another agent's outbox: ``sender`` and ``messages``, ``[id, type,
              trace]`` of each one handled (one record per batch, after its handlers' records)
``decision``  ``Agent.decide``: ``id``, ``message``, ``trace``, ``choice``, ``options``,
              ``rationale``, ``context_digest`` (SHA-256 of the context's canonical bytes),
              ``context`` (only when kept), ``actions``
``intent``    a governed action about to run (``_ledger``, its own commit before the call): ``key``,
              ``tag``, ``args``, ``digest``, ``idempotent``
``outcome``   what came of it: ``key`` and the outcome as the ledger keeps it (``code``, ``result``, ...)
``operator``  a kill switch pulled or released, a quarantine or release, a review, a breaker reset:
              ``action``, ``who``, ``auth`` (how ``who`` was established: ``ed25519:<key id>`` of
              the operator's key, ``unverified`` free text, or ``runtime``; ``_gatekeeper``), ``why``
``refusal``   a governed action that never ran (refused, breaker_open, budget_exceeded): ``key``,
              ``tag``, ``code``, ``reason``, ``message``, ``trace`` (``_gateway``)
``manifest``  an incarnation started under another agent version than the last recorded: ``hash``,
              ``manifest`` (``_version``), ``incarnation``
``segment``   a transition segment stored (``_transitions``): ``first``, ``last``, ``epoch``,
              ``records``, ``digest`` (``sha256:<hex>`` of its payload as stored); carried by the
              agent's next commit, or at stop
``feedback``  a person's annotation of a decision: ``decision`` (its id), ``label``, ``note``, ``who``,
              ``auth`` (``_feedback``)

The log: ``<checkpoint store>/<agent_id>/audit/`` (the format of :mod:`audit`: framed,
hash-chained records under an RFC 6962 tree, signed checkpoint notes when the agent has a
signing key, ``AgentConfig.audit_key``).  Each record's body carries the ``seq`` of its op and
``version``, the hash of the agent version's manifest in force when it was made (the last
``manifest`` record before it in seq order; None before the first).

Flow: :func:`audit_op` makes a PUT to the journaled ``audit`` table whose key the store sets
to the op's own seq (``_store``, empty key), so it is journaled, shipped, restored and
replayed like any state.  :meth:`AuditTrail.ship` (the background thread, after each journal
shipment) appends the entries with seq in ``(shipped, upto]`` to the log, syncs it, signs a
checkpoint every ``checkpoint_every`` records, every ``sign_interval`` seconds and at stop,
then lets retention trim the local table up to ``shipped``.

Invariants:

* ``upto`` is the journal's shipped seq: the log only holds records whose op is already in the
  checkpoint store, and a restore brings back at least that much, so a later incarnation's
  records always have seqs above every record in the log.
* ``shipped`` is the seq in the log's last record (read when the log is opened): entries at or
  below it are skipped, so a crash between appending and trimming puts nothing in twice.
* One writer: the incarnation's fence is checked before each shipment (a replaced
  incarnation appends nothing more), and the log directory's lock file is held while open.
  A replaced incarnation that is still alive finds out at its next shipment (``Fenced``) and
  lets go of the lock (``AgentCore._fenced`` closes the trail); its successor waits for it
  quietly for ``HELD_GRACE`` seconds, then reports the log as failing (degraded) until it can.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from audit import AuditError, AuditLog, SigningKey, read_signing_key
from protocols import canonical_bytes

from ._agent import current_stage
from ._ckstore import store_error
from ._codec import pack, unpack
from ._store import PUT, LmdbStore, Op
from ._trace import trace_id
from .exceptions import AgentStartError, CheckpointError

__all__ = ["AUDIT_TABLE", "AuditTrail", "DecisionRecorder", "audit_op", "context_digest", "open_trail",
           "request_op", "requests_op", "segment_op"]

AUDIT_TABLE = "audit"
#: Seconds a new incarnation waits, shipping nothing and reporting nothing, for the one it
#: replaced to let go of the log's lock (it does within a ``ship_interval`` of its next check).
HELD_GRACE = 10.0


def audit_op(kind: str, body: dict[str, Any], now: float) -> Op:
    """The op recording ``kind``/``body`` at ``now``, committed with whatever it rides with."""
    return Op(AUDIT_TABLE, PUT, b"", pack([now, kind, body]))


def request_op(env: Any, now: float) -> Op:
    """The record of a message handled: its id, type, sender and trace (never its body)."""
    return audit_op("request", {"id": env.id.hex(), "type": env.type, "sender": env.sender,
                                "trace": env.traceparent}, now)


def requests_op(sender: str | None, messages: list[list[Any]], now: float) -> Op:
    """The record of a batch from another agent's outbox: ``[id, type, trace]`` of each message handled."""
    return audit_op("requests", {"sender": sender, "messages": messages}, now)


def segment_op(info: Any, records: int, payload: bytes, now: float) -> Op:
    """The record of a transition segment stored: its range, epoch, size and the digest of its bytes."""
    return audit_op("segment", {"first": info.first, "last": info.last, "epoch": info.epoch, "records": records,
                                "digest": "sha256:" + hashlib.sha256(payload).hexdigest()}, now)


def context_digest(context: Any) -> str:
    """``sha256:<hex>`` of the context's canonical bytes: what a decision saw, without keeping it."""
    return "sha256:" + hashlib.sha256(canonical_bytes(context)).hexdigest()


def load_signing_key(path: str | None, name: str, agent_id: str) -> SigningKey | None:
    """The agent's checkpoint signing key (None: an unsigned log); a bad file is an ``AgentStartError``."""
    if path is None:
        return None
    try:
        return read_signing_key(path, name)
    except AuditError as exc:
        raise AgentStartError(f"audit_key {path}: {exc.message}", agent_id=agent_id) from exc


def _storage_error(directory: Path, exc: AuditError) -> CheckpointError:
    """The store's error for the audit log's: with the OS error's ``errno`` when there is one, so a full
    or read-only store reads as such (``store_full``, ...), whichever of its writes met it first."""
    if isinstance(exc.__cause__, OSError):
        return store_error(f"audit log {directory}", exc.__cause__, directory)
    return CheckpointError(f"audit log {directory}: {exc.message}", path=str(directory))


def open_trail(config: Any, ckstore: Any, store: LmdbStore, agent_id: str,
               fence: Callable[[str], None]) -> AuditTrail | None:
    """The agent's trail, or None: audit off, or a checkpoint store that keeps no audit log."""
    directory = ckstore.audit_dir(agent_id) if config.audit else None
    if directory is None:
        return None
    return AuditTrail(store, directory, agent_id=agent_id, fence=fence,
                      key=load_signing_key(config.audit_key, config.audit_key_name, agent_id),
                      checkpoint_every=config.audit_checkpoint_every, sign_interval=config.checkpoint_interval)


def staged_recorder(record: Callable[[Op], None] | None,
                    commit: Callable[[list[Op]], Any]) -> Callable[[str, dict[str, Any]], None] | None:
    """``(kind, body)`` -> an audit record committed with the running handler's changes (``record``),
    or on its own (``commit``) when no handler runs.  None when ``record`` is (audit off)."""
    if record is None:
        return None
    def recorder(kind: str, body: dict[str, Any]) -> None:
        op = audit_op(kind, body, time.time())
        if current_stage.get() is not None:
            record(op)
        else:
            commit([op])

    return recorder


class DecisionRecorder:
    """What ``Agent.decide`` calls: one ``decision`` record into the running handler's transaction."""

    def __init__(self, record: Callable[[Op], None] | None, context: Callable[[], Any], tap: Any = None) -> None:
        self._record = record  # None: audit off, nothing is recorded
        self._context = context
        self._tap = tap  # the observer tap (``_observer``), or None

    def __call__(self, choice: Any, *, options: Iterable[Any], rationale: str, context: Any, keep_context: bool,
                 actions: Iterable[str]) -> str:
        ctx = self._context()
        decision_id = uuid.uuid4().hex
        if self._tap is not None:
            self._tap.emit("decision", ctx.traceparent if ctx is not None else None, {"id": decision_id, "choice": choice})
        if self._record is None:
            return decision_id
        body = {"id": decision_id, "message": ctx.message_id.hex() if ctx is not None else None,
                "trace": ctx.traceparent if ctx is not None else None, "choice": choice,
                "options": list(options), "rationale": rationale, "context_digest": context_digest(context),
                "actions": list(actions)}
        if keep_context:
            body["context"] = context
        try:
            canonical_bytes(body)  # refused here, in the handler, not later in the background
        except (TypeError, ValueError) as exc:  # a mistake in the handler: it fails (HandlerError)
            raise TypeError("a decision must be plain data (str, int, float, bool, None, bytes, "
                            f"lists and str-keyed maps): {exc}") from exc
        self._record(audit_op("decision", body, time.time()))
        return decision_id


class AuditTrail:
    """Ships the ``audit`` table to the agent's audit log; reads decisions back (see module docstring)."""

    def __init__(self, store: LmdbStore, directory: Path, *, agent_id: str, key: SigningKey | None,
                 fence: Callable[[str], None], checkpoint_every: int = 1000, sign_interval: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.directory = directory
        self.agent_id = agent_id
        self.origin = f"garrison/audit/{agent_id}"
        self._key = key
        self._fence = fence
        self._every = checkpoint_every
        self._sign_interval = sign_interval
        self._clock = clock
        self._log: AuditLog | None = None
        self._lock_fd: int | None = None
        self._signed_at = clock()
        self._held_since: float | None = None  # when the lock was first found held by another writer
        self._mutex = threading.Lock()
        #: The seq of the newest op in the log (None until the log was opened).
        self.shipped: int | None = None
        #: The agent version (manifest hash) the next record shipped ran under (``_version``).
        self._version: str | None = None

    def _open(self) -> AuditLog | None:
        """The open log; None while another writer holds it, within ``HELD_GRACE`` (then an error)."""
        if self._log is not None:
            return self._log
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            # Read-only: flock needs no write access, and no file stays open for writing.
            fd = os.open(self.directory / "writer.lock", os.O_RDONLY | os.O_CREAT, 0o644)
        except OSError as exc:
            raise CheckpointError(f"cannot open audit log {self.directory}: {exc}", errno=exc.errno,
                                  path=str(self.directory)) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            now = self._clock()
            if self._held_since is None:
                self._held_since = now
            if now - self._held_since < HELD_GRACE:
                return None
            raise CheckpointError(f"audit log {self.directory} has been held by another writer for "
                                  f"{now - self._held_since:.0f}s (an older incarnation still alive?)",
                                  errno=exc.errno, path=str(self.directory)) from exc
        self._held_since = None
        try:
            log = AuditLog(self.directory, self._key, self.origin, checkpoint_every=self._every)
        except AuditError as exc:
            os.close(fd)
            raise _storage_error(self.directory, exc) from exc
        self._lock_fd, self._log = fd, log
        last = log.last
        self.shipped = int(last.body["seq"]) if last is not None else 0
        self._version = last.body.get("version") if last is not None and isinstance(last.body, dict) else None
        self.store.audit_trim_upto = max(self.store.audit_trim_upto, self.shipped)
        return log

    def ship(self, upto: int, *, final: bool = False) -> int:
        """Append the local records with ``shipped < seq <= upto`` to the log; the new ``shipped``."""
        with self._mutex:
            self._fence("audit log")
            log = self._open()
            if log is None:
                return self.shipped or 0
            assert self.shipped is not None
            try:
                for seq, raw in self.store.raw_since(AUDIT_TABLE, self.shipped, upto):
                    when, kind, body = unpack(raw)
                    if kind == "manifest":
                        self._version = body["hash"]
                    log.append(kind, {**body, "seq": seq, "agent": self.agent_id, "version": self._version}, time=when)
                    self.shipped = seq
                if self._key is not None and (final or (self._clock() - self._signed_at >= self._sign_interval
                                                        and log.size > 0)):
                    log.checkpoint()
                    self._signed_at = self._clock()
                else:
                    log.sync()
            except AuditError as exc:
                raise _storage_error(self.directory, exc) from exc
            self.store.audit_trim_upto = self.shipped
            return self.shipped

    def status(self) -> dict[str, Any]:
        log = self._log
        return {"directory": str(self.directory), "signed": self._key is not None, "shipped_seq": self.shipped,
                "records": None if log is None else log.size}

    def decisions(self, *, trace: str | None = None, since: float | None = None, until: float | None = None,
                  limit: int = 100) -> list[dict[str, Any]]:
        """Decisions, oldest first: the log's, then those not shipped yet; filtered by trace and time."""
        return self.records("decision", trace=trace, since=since, until=until, limit=limit)

    def records(self, kind: str, *, trace: str | None = None, since: float | None = None,
                until: float | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The newest ``limit`` records of ``kind`` (0: all), oldest first: the log's, then those not
        shipped yet; each body with its ``time``, ``index`` (None: not in the log yet) and ``seq``."""
        from audit import read_log  # the whole log is read: a query, not the hot path

        out: list[dict[str, Any]] = []
        wanted = trace_id(trace)  # a traceparent or a bare trace id: every hop of the trace matches

        def add(when: float, body: dict[str, Any], index: int | None) -> None:
            if (trace is None or trace_id(body.get("trace")) == wanted) and (since is None or when >= since) and \
                    (until is None or when < until):
                out.append({**body, "time": when, "index": index})

        last, version = 0, None
        if (self.directory / "records").exists():
            for rec in read_log(self.directory, 0, None):
                if "malformed" in rec:
                    continue
                last, version = max(last, rec["body"].get("seq", 0)), rec["body"].get("version", version)
                if rec["kind"] == kind:
                    add(rec["time"], rec["body"], rec["index"])
        for seq, raw in self.store.raw_since(AUDIT_TABLE, last):
            when, rec_kind, body = unpack(raw)
            version = body["hash"] if rec_kind == "manifest" else version
            if rec_kind == kind:
                add(when, {**body, "seq": seq, "agent": self.agent_id, "version": version}, None)
        return out[-limit:] if limit else out

    def close(self) -> None:
        with self._mutex:
            if self._log is not None:
                try:
                    self._log.close()
                except AuditError:
                    pass  # the records not synced are still in the local table: the next incarnation ships them
                self._log = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

