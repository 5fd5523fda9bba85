"""Starting one incarnation of an agent: lock, epoch, sweep, restore, metadata.

:func:`start_incarnation` is the only way an agent host gets its files.  In
order, and undone in reverse if a step fails (nothing is left locked or
open):

1. the host lock (``HostLock``): one live host per agent id per data directory;
2. the epoch claim (``Fence``): claimed *before* the restore, so whatever an
   older incarnation publishes from now on is refused and the restore sees
   all it may ever see;
3. the sweep: holding the lock, no checkpoint of this agent can be running,
   so what an interrupted one left behind (a body without a manifest) goes;
4. the restore (``_restore``), then the epoch's base recorded before this
   epoch writes anything: what older epochs publish past it is a fork this
   incarnation never saw, and later restores skip it;
5. the metadata: the restore report appended to a bounded history, the
   incarnation number, the agent's identity.

The :class:`Incarnation` it returns owns the open store and the host lock
until :meth:`Incarnation.close`.

:func:`resume_incarnation` is a packed host's shortcut (``_activation``): it
reopens the files of an agent it passivated under the same epoch, with its
host lock, when no later epoch has been claimed: no claim, sweep or restore.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from ._ckstore import CheckpointStore, DirectoryStore
from ._config import AgentConfig
from ._fence import Fence
from ._hostlock import HostLock
from ._restore import RestoreReport, restore
from ._spec import SHIP_CODE_HINT, HostSpec, check_agent_id, check_writable_dir, local_data_dir
from ._store import LmdbStore
from .exceptions import AgentStartError, CheckpointError, DataDirectoryError

__all__ = ["Incarnation", "resume_incarnation", "start_incarnation"]

log = logging.getLogger("garrison.agent")


@dataclass(eq=False)
class Incarnation:
    """What a host start built: the agent's files, opened and fenced."""

    agent_id: str
    #: This incarnation's fencing epoch (newer than every earlier one's).
    epoch: int
    fence: Fence
    ckstore: CheckpointStore
    store: LmdbStore
    restore_report: RestoreReport
    host_lock: HostLock

    @property
    def number(self) -> int:
        """1 for the agent's first host start, then one more per start."""
        return self.restore_report.incarnation

    def close(self) -> None:
        """Close the store, then release the host lock (the lock even if closing fails)."""
        try:
            self.store.close()
        finally:
            self.host_lock.release()


def _claim(ckstore: CheckpointStore, agent_id: str) -> int:
    """A new fencing epoch.  A store too full even for that is swept of interrupted checkpoints
    first: a predecessor killed while copying its checkpoint body leaves a partial copy, which on a
    full store takes the room the epoch file needs (a live predecessor's copy only fails, and is
    retried: it is about to be fenced anyway)."""
    claimant = {"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}
    try:
        return ckstore.claim_epoch(agent_id, claimant)
    except CheckpointError as exc:
        if exc.errno != errno.ENOSPC or not ckstore.sweep(agent_id):
            raise
        log.warning("agent %s: checkpoint store full; removed an interrupted checkpoint's leftovers", agent_id)
        return ckstore.claim_epoch(agent_id, claimant)


def start_incarnation(spec: HostSpec) -> Incarnation:
    """Open ``spec``'s agent for a new incarnation (see module docstring); raises, leaving nothing held."""
    agent_id = check_agent_id(spec.agent_id)
    if spec.agent_cls is None:  # this worker could not load the code the driver used
        raise AgentStartError(
            f"agent {agent_id!r}: class {spec.class_path} cannot be loaded here "
            f"({spec.load_error}); {SHIP_CODE_HINT}",
            agent_id=agent_id, cause=spec.load_error)
    cfg = spec.config
    # Per node when ``data_dir`` holds ``{node}``: expanded here, in the host's process.
    data_root = local_data_dir(spec.data_dir)
    ckstore: CheckpointStore = DirectoryStore(check_writable_dir(spec.checkpoint_dir, "checkpoint directory"))
    agent_dir = data_root / "agents" / agent_id
    try:
        agent_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataDirectoryError(f"cannot create {agent_dir}: {exc}", path=str(agent_dir)) from exc
    host_lock = HostLock(agent_dir / "host.lock", agent_id)
    try:
        epoch = _claim(ckstore, agent_id)
        fence = Fence(ckstore, agent_id, epoch)
        ckstore.sweep(agent_id)
        store, report, _ = restore(agent_dir / "state", ckstore, agent_id=agent_id, agent_class=spec.class_path,
                                   replaces=spec.replaces, map_size=cfg.map_size, sync=cfg.lmdb_sync)
    except BaseException:
        host_lock.release()
        raise
    try:
        store.take_epoch(epoch)
        ckstore.record_base(agent_id, epoch, store.seq)
        _configure(store, cfg)
        history = [*store.meta("restores", []), report.model_dump(mode="json")]
        store.put_meta("restores", history[-cfg.restore_history :])
        store.put_meta("incarnation", report.incarnation)
        store.put_meta("identity", {"agent_id": agent_id, "agent_class": spec.class_path})
    except BaseException:
        store.close()
        host_lock.release()
        raise
    log.info("agent %s restored: %s", agent_id, report.model_dump_json())
    return Incarnation(agent_id, epoch, fence, ckstore, store, report, host_lock)


def resume_incarnation(spec: HostSpec, epoch: int, *, data_root: Path, ckstore: CheckpointStore) -> Incarnation | None:
    """Reopen ``spec``'s agent under ``epoch``, which this process held and let go of.

    None when it cannot be resumed (no local files, or files stamped by another
    epoch): start it instead.  Raises Fenced if a later epoch has been claimed,
    AgentAlreadyRunning if another process holds its host lock.
    """
    agent_id = spec.agent_id
    agent_dir = data_root / "agents" / agent_id
    if not (agent_dir / "state" / "data.mdb").exists():
        return None
    t0 = time.perf_counter()
    host_lock = HostLock(agent_dir / "host.lock", agent_id)
    store: LmdbStore | None = None
    try:
        fence = Fence(ckstore, agent_id, epoch)
        fence.check("resume")
        cfg = spec.config
        store = LmdbStore(agent_dir / "state", agent_id=agent_id, map_size=cfg.map_size, sync=cfg.lmdb_sync)
        if store.stamped_epoch() != epoch:  # these files were taken by another incarnation since
            store.close()
            host_lock.release()
            return None
        store.take_epoch(epoch)
        _configure(store, cfg)
        report = RestoreReport(agent_id=agent_id, incarnation=store.meta("incarnation", 0), source="resumed",
                               seq=store.seq, duration_s=time.perf_counter() - t0, time=time.time())
    except BaseException:
        if store is not None:
            store.close()
        host_lock.release()
        raise
    return Incarnation(agent_id, epoch, fence, ckstore, store, report, host_lock)


def _configure(store: LmdbStore, cfg: AgentConfig) -> None:
    """The agent's settings its store applies (a started or a resumed incarnation alike)."""
    store.dedup_horizon = cfg.dedup_horizon
    store.dead_letter_limit = cfg.dead_letter_limit
