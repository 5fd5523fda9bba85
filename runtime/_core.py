"""The agent host's logic, independent of Ray: restore, handle, checkpoint, stop.

``AgentHost`` (the Ray actor) is a thin shell around one :class:`AgentCore`.

Threads and invariants:

* Messages are handled one at a time, in arrival order, on the host's event
  loop thread (an asyncio lock, which is FIFO-fair).  All LMDB writes happen
  there too; LMDB write transactions are never held across an ``await``.
* One background thread ships the journal every ``ship_interval`` and takes a
  checkpoint every ``checkpoint_interval``; it only reads LMDB (snapshot
  isolation), so it never stalls a handler on a lock.
* A handled message's reply is sent only after its state changes, journal
  records and dedup record are committed (and, under SYNC durability,
  shipped).  So an acknowledged message is never lost with the process.
* One live host per agent id per data directory: an exclusive ``flock`` on
  the agent's lock file, released by the kernel when the process dies.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fcntl
import inspect
import logging
import os
import re
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocols import (
    Delivery,
    Envelope,
    ProtocolError,
    WireError,
    decode_envelope,
    parse_message,
)

from ._agent import Agent, Context, current_deadline
from ._checkpoint import Checkpointer
from ._ckstore import CheckpointStore, DirectoryStore
from ._codec import pack, unpack
from ._config import AgentConfig, Durability
from ._journal import Shipper
from ._lifecycle import AgentState
from ._metrics import AgentMetrics
from ._restore import restore
from ._state import State
from ._store import PUT, Op, dedup_time_key
from .exceptions import (
    AgentAlreadyRunning,
    AgentNotRunning,
    AgentStartError,
    ConfigError,
    DataDirectoryError,
    HandlerError,
    NoHandler,
)

__all__ = [
    "AgentCore",
    "HostSpec",
    "check_agent_id",
    "check_writable_dir",
    "decode_reply",
    "encode_error",
    "encode_ok",
]

log = logging.getLogger("garrison.agent")

_AGENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
OK, ERR = 0, 1


def check_agent_id(agent_id: str) -> str:
    if not isinstance(agent_id, str) or not _AGENT_ID.match(agent_id):
        raise ConfigError(
            f"agent id {agent_id!r} must be 1-128 characters of letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
            agent_id=str(agent_id),
        )
    return agent_id


def check_writable_dir(path: str | os.PathLike[str], what: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise DataDirectoryError(f"{what} {p} does not exist (create it, or pass create=True)", path=str(p))
    # A real write, not os.access: root passes access checks on read-only mounts.
    try:
        fd, probe = tempfile.mkstemp(dir=p, prefix=".garrison-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise DataDirectoryError(f"{what} {p} is not writable: {exc.strerror}", path=str(p)) from exc
    return p


def encode_ok(value: Any) -> bytes:
    return pack([OK, value])


def encode_error(exc: WireError) -> bytes:
    return pack([ERR, *exc.to_wire()])


def decode_reply(raw: bytes) -> tuple[bool, Any]:
    """``(True, value)`` or ``(False, [code, message, details])``."""
    parts = unpack(raw)
    if parts[0] == OK:
        return True, parts[1]
    return False, parts[1:]


def _dedup_slot(env: Envelope) -> tuple[str, bytes]:
    """Where the reply to ``env`` is remembered: by id, or by the caller's idempotency key."""
    if env.idempotency_key is None:
        return "dedup", env.id
    return "dedup_keys", env.idempotency_key


@dataclass(frozen=True)
class HostSpec:
    """Everything a host needs to (re)build its agent; Ray replays it on restart."""

    agent_id: str
    agent_cls: type[Agent]
    data_dir: str
    checkpoint_dir: str
    config: AgentConfig = field(default_factory=AgentConfig)
    init: dict[str, Any] = field(default_factory=dict)

    @property
    def class_path(self) -> str:
        return f"{self.agent_cls.__module__}:{self.agent_cls.__qualname__}"


class _HostLock:
    """Exclusive per-agent lock file; the kernel releases it if the process dies."""

    def __init__(self, path: Path, agent_id: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(self.fd)
            raise AgentAlreadyRunning(
                f"agent {agent_id!r} is already live on this node (lock {path} is held)", agent_id=agent_id
            ) from exc
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class AgentCore:
    """One agent's host logic (see module docstring)."""

    def __init__(self, spec: HostSpec) -> None:
        self.spec = spec
        self._stop_bg = threading.Event()
        #: Done once the agent has stopped gracefully (any thread or loop may wait on it).
        self.stopped: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.agent_id = check_agent_id(spec.agent_id)
        self.config = spec.config
        self.lifecycle = AgentState.STARTING
        self.failure: str | None = None
        self.metrics = AgentMetrics(self.agent_id)
        data_root = check_writable_dir(spec.data_dir, "data directory")
        self.ckstore: CheckpointStore = DirectoryStore(check_writable_dir(spec.checkpoint_dir, "checkpoint directory"))
        agent_dir = data_root / "agents" / self.agent_id
        try:
            agent_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataDirectoryError(f"cannot create {agent_dir}: {exc}", path=str(agent_dir)) from exc
        self._lock_file = _HostLock(agent_dir / "host.lock", self.agent_id)

        self.lifecycle = AgentState.RESTORING
        try:
            self.store, self.restore_report, _ = restore(
                agent_dir / "state",
                self.ckstore,
                agent_id=self.agent_id,
                agent_class=spec.class_path,
                map_size=self.config.map_size,
                sync=self.config.lmdb_sync,
            )
        except BaseException:
            self._lock_file.release()
            raise
        self.store.dedup_horizon = self.config.dedup_horizon
        self.incarnation = self.restore_report.incarnation
        history = self.store.meta("restores", [])
        history = [*history, self.restore_report.model_dump(mode="json")][-self.config.restore_history :]
        self.store.put_meta("restores", history)
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

        self.shipper = Shipper(self.store, self.ckstore, self.agent_id)
        self.checkpointer = Checkpointer(
            self.store,
            self.ckstore,
            self.shipper,
            agent_id=self.agent_id,
            agent_class=spec.class_path,
            config_version=self.config.config_version,
            keep=self.config.keep_checkpoints,
            retention=self.config.journal_retention,
            summarize=self._summarize if type(self.agent).summary is not Agent.summary else None,
        )
        self._checkpoint_lock = threading.Lock()
        self.background_error: str | None = None
        self._handler_started: float | None = None
        self._lock: asyncio.Lock | None = None
        self._started: asyncio.Future[None] | None = None
        self._bg = threading.Thread(target=self._background, name=f"garrison-bg-{self.agent_id}", daemon=True)
        self._bg.start()

    # -- start ---------------------------------------------------------------

    async def ensure_started(self) -> None:
        """Run the start hooks once per incarnation (on the event loop)."""
        if self._started is None:
            self._started = asyncio.get_running_loop().create_future()
            self._lock = asyncio.Lock()
            try:
                if self.restore_report.source != "fresh":
                    await self._run_hook(self.agent.on_restore, self.restore_report)
                await self._run_hook(self.agent.on_start)
            except Exception as exc:
                self.lifecycle = AgentState.FAILED
                self.failure = f"on_start raised {type(exc).__name__}: {exc}"
                log.exception("agent %s failed to start", self.agent_id)
            else:
                self.lifecycle = AgentState.RUNNING
            self._started.set_result(None)
        elif not self._started.done():
            await self._started

    async def _run_hook(self, hook: Any, *args: Any) -> None:
        self.state.begin()
        try:
            result = hook(*args)
            if inspect.isawaitable(result):
                await result
        except BaseException:
            self.state.discard()
            raise
        self.store.commit(self.state.take_ops())

    # -- messages --------------------------------------------------------------

    async def deliver(self, raw: bytes) -> bytes:
        """Handle one wire envelope; always returns a reply, never raises for bad input."""
        try:
            env = decode_envelope(raw, max_bytes=self.config.max_message_bytes)
        except ProtocolError as exc:
            self.metrics.outcome(f"rejected_{exc.code}")
            return encode_error(exc)
        await self.ensure_started()
        assert self._lock is not None
        async with self._lock:
            return await self._handle(env)

    async def _handle(self, env: Envelope) -> bytes:
        if self.lifecycle is not AgentState.RUNNING:
            self.metrics.outcome("refused")
            err = AgentNotRunning(
                f"agent {self.agent_id!r} cannot handle {env.type} while {self.lifecycle.name}"
                + (f" ({self.failure})" if self.failure else ""),
                state=self.lifecycle.value,
            )
            return encode_error(err)
        t0 = time.perf_counter()
        remember = env.delivery is not Delivery.AT_MOST_ONCE
        try:
            env.check_deadline(f"agent {self.agent_id!r} before handling")
            if remember:
                cached = self.store.get(*_dedup_slot(env))
                if cached is not None:
                    self.metrics.outcome("duplicate")
                    return unpack(cached)[1]
            msg = parse_message(env)
            method = self.agent.__handlers__.get(type(msg))
            if method is None:
                raise NoHandler(
                    f"agent {self.agent_id!r} ({type(self.agent).__qualname__}) has no handler for "
                    f"{env.type}; it handles: {', '.join(self.agent.handled_types()) or 'nothing'}",
                    tag=env.type,
                    handles=self.agent.handled_types(),
                )
        except WireError as exc:
            self.metrics.outcome(f"rejected_{exc.code}")
            return encode_error(exc)

        self.agent.context = Context(env.id, env.sender, env.deadline, env.attempt, env.traceparent)
        deadline_token = current_deadline.set(env.deadline)
        self.state.begin()
        self._handler_started = time.monotonic()
        try:
            result = getattr(self.agent, method)(msg)
            if inspect.isawaitable(result):
                result = await result
            reply = encode_ok(result)
            ops = self.state.take_ops()
        except Exception as exc:
            self.state.discard()
            self.metrics.outcome("handler_error")
            err = exc if isinstance(exc, WireError) else HandlerError(
                f"{type(self.agent).__qualname__}.{method} raised {type(exc).__name__}: {exc}",
                exception=type(exc).__name__,
                traceback="".join(traceback.format_exception(exc)[-3:]),
            )
            return encode_error(err)
        finally:
            self._handler_started = None
            self.agent.context = None
            current_deadline.reset(deadline_token)

        now = time.time()
        if remember:
            table, key = _dedup_slot(env)
            ops.append(Op(table, PUT, key, pack([now, reply])))
            if table == "dedup_keys":
                ops.append(Op("dedup_time", PUT, dedup_time_key(now, key), b""))
        seq = self.store.commit(ops, now=now)
        if self.config.durability is Durability.SYNC and ops:
            self.shipper.ship_until(seq)
        self.metrics.outcome("handled")
        self.metrics.handle_seconds.labels(self.agent_id).observe(time.perf_counter() - t0)
        return reply

    # -- background: shipping and checkpoints ------------------------------------

    def _background(self) -> None:
        cfg = self.config
        next_checkpoint = time.monotonic() + cfg.checkpoint_interval
        while not self._stop_bg.wait(min(cfg.ship_interval, max(0.0, next_checkpoint - time.monotonic()))):
            try:
                self.metrics.shipped.labels(self.agent_id).set(self.shipper.ship())
                self.metrics.seq.labels(self.agent_id).set(self.store.seq)
                if time.monotonic() >= next_checkpoint:
                    self.checkpoint()
                    next_checkpoint = time.monotonic() + cfg.checkpoint_interval
            except Exception as exc:  # keep the thread alive; report in status and metrics
                self.background_error = f"{type(exc).__name__}: {exc}"
                self.metrics.background_errors.labels(self.agent_id).inc()
                log.exception("agent %s: background shipping/checkpoint failed", self.agent_id)

    def checkpoint(self, *, force: bool = False) -> dict[str, Any] | None:
        """Ship the journal, then take a checkpoint (blocking; call off the event loop)."""
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

    def _summarize(self, state: Any) -> Any:
        return self.agent.summary(state)

    # -- introspection ------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        started = self._handler_started
        last = self.checkpointer.last
        return {
            "agent_id": self.agent_id,
            "agent_class": self.spec.class_path,
            "state": self.lifecycle.value,
            "incarnation": self.incarnation,
            "pid": os.getpid(),
            "seq": self.store.seq,
            "shipped_seq": self.shipper.shipped,
            "journal_entries": None if self.lifecycle is AgentState.STOPPED else self.store.count("journal"),
            "last_checkpoint_seq": last.seq if last else None,
            "last_checkpoint_time": last.time if last else None,
            "checkpoints_taken": self.checkpointer.taken,
            "handler_running_for": None if started is None else time.monotonic() - started,
            "background_error": self.background_error,
            "failure": self.failure,
            "restore": self.restore_report.model_dump(mode="json"),
        }

    def probe(self) -> dict[str, Any]:
        """The cheap subset of status a liveness probe needs."""
        started = self._handler_started
        return {
            "state": self.lifecycle.value,
            "incarnation": self.incarnation,
            "pid": os.getpid(),
            "handler_running_for": None if started is None else time.monotonic() - started,
        }

    def restore_history(self) -> list[dict[str, Any]]:
        return list(self.store.meta("restores", []))

    # -- stop ---------------------------------------------------------------

    async def stop(self) -> dict[str, Any]:
        """Drain, run ``on_stop``, ship, take a final checkpoint, close.  Idempotent."""
        if self.lifecycle is AgentState.STOPPED:
            return self.status()
        await self.ensure_started()
        assert self._lock is not None
        was_running = self.lifecycle is AgentState.RUNNING
        self.lifecycle = AgentState.DRAINING
        async with self._lock:
            if was_running:
                try:
                    await self._run_hook(self.agent.on_stop)
                except Exception:
                    log.exception("agent %s: on_stop raised; stopping anyway", self.agent_id)
            self._stop_bg.set()
            await asyncio.to_thread(self._bg.join)
            await asyncio.to_thread(self.checkpoint)
            status = self.status()
            self.lifecycle = AgentState.STOPPED
            status["state"] = self.lifecycle.value
            self.close_files()
        if not self.stopped.done():
            self.stopped.set_result(None)
        return status

    def close_files(self) -> None:
        self._stop_bg.set()
        try:
            self.store.close()
        finally:
            self._lock_file.release()

