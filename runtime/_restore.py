"""Rebuilding an agent's working state when its host starts.

Order of preference:

1. The local LMDB, when it opens, belongs to this agent, and is at least as
   new as anything shipped (a node that comes back after its agent moved
   elsewhere has a stale copy, which is set aside).
2. The newest checkpoint that passes its checksums, then every shipped
   journal record after it, in order.  A corrupt checkpoint is reported and
   the previous one used.  Nothing is deserialized before its checksum passes.
3. No checkpoint: an empty state, then the shipped journal from the start.

Invariant: journal replay stops at the first gap or corrupt segment, and the
report says so (``gap``), rather than apply records past a hole.

Forks (fencing, see ``_fence``): every epoch records the seq it restored to
(its *base*) before it writes anything.  Whatever an older epoch wrote past
the base of a newer one (a local LMDB, a checkpoint, journal records) is a
fork the newer incarnation never saw: a replaced incarnation that kept going,
or work lost with a node under ASYNC durability.  It is never restored on top
of the newer history: such a local copy is set aside, such a checkpoint
skipped, such records not replayed (``forks`` in the report says what).

Bound: each host start appends one report to the ``restores`` history in
``meta``; the host keeps the newest ``restore_history`` of them (default 20,
see ``_core``).  A report's lists name at most the store's checkpoints and
segments, which are bounded by retention.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from ._ckstore import CheckpointStore, Cutoff, Manifest, epoch_cutoff
from ._journal import decode_segment
from ._store import LmdbStore
from .exceptions import CheckpointCorrupt, CheckpointError, RestoreError, StateError

__all__ = ["RestoreReport", "restore"]

log = logging.getLogger("garrison.restore")


class RestoreReport(BaseModel):
    """What a host start restored from, and how long it took."""

    model_config = ConfigDict(frozen=True)

    agent_id: str
    incarnation: int
    source: str  # "fresh" | "local" | "checkpoint"
    checkpoint_seq: int | None = None
    seq: int
    ops_replayed: int = 0
    corrupt: list[str] = []
    gap: bool = False
    #: What an older epoch wrote past a newer one's restore point, and was left out.
    forks: list[str] = []
    set_aside: str | None = None
    duration_s: float
    time: float


def _set_aside(path: Path, why: str) -> str | None:
    if not path.exists():
        return None
    dest = path.with_name(f"{path.name}.{why}-{int(time.time() * 1000)}")
    path.rename(dest)
    return str(dest)


def _open_local(path: Path, agent_id: str, agent_class: str, replaces: tuple[str, ...] = (), **kw: Any) -> LmdbStore:
    store = LmdbStore(path, agent_id=agent_id, **kw)
    ident = store.meta("identity")
    if ident is not None and ident.get("agent_id") != agent_id:
        store.close()
        raise RestoreError(
            f"local state at {path} belongs to agent {ident.get('agent_id')!r}, not {agent_id!r}",
            path=str(path),
        )
    if ident is not None and ident.get("agent_class") not in (agent_class, *replaces):
        store.close()
        raise RestoreError(
            f"local state at {path} was written by {ident.get('agent_class')}, not {agent_class}; "
            "spawn the agent with its original class or retire the id",
            path=str(path),
        )
    return store


def _replay(store: LmdbStore, ckstore: CheckpointStore, agent_id: str, corrupt: list[str],
            cutoff: Cutoff, forks: list[str]) -> tuple[int, bool]:
    """Apply shipped segments after ``store.seq``, none past its epoch's cut-off; return (ops applied, gap?)."""
    applied = 0
    for seg in ckstore.list_segments(agent_id):
        limit = cutoff(seg.epoch)
        if seg.first > limit:
            forks.append(f"journal {seg.first}-{seg.last} of epoch {seg.epoch} (a newer epoch restored to {limit})")
            continue
        if seg.last <= store.seq:
            continue
        if seg.first > store.seq + 1:
            log.warning("%s: journal gap after seq %d (next segment starts at %d)", agent_id, store.seq, seg.first)
            return applied, True
        try:
            records = decode_segment(ckstore.read_segment(agent_id, seg))
        except CheckpointCorrupt as exc:
            corrupt.append(str(exc))
            return applied, True
        if seg.last > limit:
            forks.append(f"journal {int(limit) + 1}-{seg.last} of epoch {seg.epoch} (past a newer epoch's base)")
            records = [r for r in records if r.seq <= limit]
        applied += store.replay(records)
    return applied, False


def _shipped_head(ckstore: CheckpointStore, agent_id: str, cutoff: Cutoff) -> int:
    head = max((min(s.last, cutoff(s.epoch)) for s in ckstore.list_segments(agent_id)), default=0)
    return int(max(head, max(ckstore.list_checkpoints(agent_id), default=0)))


def restore(
    path: Path,
    ckstore: CheckpointStore,
    *,
    agent_id: str,
    agent_class: str,
    replaces: tuple[str, ...] = (),
    incarnation: int | None = None,
    **store_kw: Any,
) -> tuple[LmdbStore, RestoreReport, Manifest | None]:
    """Open or rebuild the agent's LMDB at ``path``; see the module docstring."""
    t0 = time.perf_counter()
    corrupt: list[str] = []
    forks: list[str] = []
    set_aside: str | None = None
    cutoff = epoch_cutoff(ckstore.bases(agent_id))
    head = _shipped_head(ckstore, agent_id, cutoff)

    if (path / "data.mdb").exists():
        try:
            store = _open_local(path, agent_id, agent_class, replaces, **store_kw)
        except StateError as exc:
            corrupt.append(f"local state: {exc}")
            set_aside = _set_aside(path, "corrupt")
        else:
            applied, gap = 0, False
            local_epoch = store.stamped_epoch()
            if store.seq > cutoff(local_epoch):
                # Written past a newer epoch's restore point: a fork (this node's copy
                # went on after the agent was restored elsewhere).  Never the base.
                forks.append(f"local state of epoch {local_epoch} at seq {store.seq} "
                             f"(a newer epoch restored to {int(cutoff(local_epoch))})")
                store.close()
                set_aside = _set_aside(path, "forked")
            else:
                if store.seq < head:
                    applied, gap = _replay(store, ckstore, agent_id, corrupt, cutoff, forks)
                if not gap or store.seq >= head:
                    return store, _report(store, "local", None, applied, corrupt, gap, set_aside, t0, incarnation,
                                          forks), None
                # The local copy is older than what was shipped and cannot be caught
                # up from the journal: it is stale (the agent ran elsewhere since).
                store.close()
                set_aside = _set_aside(path, "stale")

    base: Manifest | None = None
    for seq in ckstore.list_checkpoints(agent_id):
        try:
            manifest = ckstore.read_manifest(agent_id, seq)
            if manifest.agent_id != agent_id:
                raise CheckpointCorrupt(f"checkpoint {seq} names agent {manifest.agent_id!r}")
            if manifest.seq > cutoff(manifest.epoch):
                forks.append(f"checkpoint {seq} of epoch {manifest.epoch} "
                             f"(a newer epoch restored to {int(cutoff(manifest.epoch))})")
                continue
            ckstore.fetch_checkpoint(manifest, path / "data.mdb")
        except (CheckpointCorrupt, CheckpointError) as exc:
            log.error("%s: checkpoint %d unusable, trying the previous one: %s", agent_id, seq, exc)
            corrupt.append(str(exc))
            continue
        base = manifest
        break
    try:
        store = LmdbStore(path, agent_id=agent_id, **store_kw)
    except StateError as exc:
        raise RestoreError(f"cannot open state for {agent_id} at {path}: {exc}") from exc
    applied, gap = _replay(store, ckstore, agent_id, corrupt, cutoff, forks)
    source = "checkpoint" if base is not None else "fresh"
    if base is None and applied:
        source = "journal"
    return store, _report(store, source, base, applied, corrupt, gap, set_aside, t0, incarnation, forks), base


def _report(
    store: LmdbStore,
    source: str,
    base: Manifest | None,
    applied: int,
    corrupt: list[str],
    gap: bool,
    set_aside: str | None,
    t0: float,
    incarnation: int | None,
    forks: list[str],
) -> RestoreReport:
    previous = store.meta("incarnation", 0)
    inc = incarnation if incarnation is not None else previous + 1
    return RestoreReport(
        agent_id=store.agent_id,
        incarnation=inc,
        source=source,
        checkpoint_seq=base.seq if base else None,
        seq=store.seq,
        ops_replayed=applied,
        corrupt=corrupt,
        gap=gap,
        forks=forks,
        set_aside=set_aside,
        duration_s=time.perf_counter() - t0,
        time=time.time(),
    )

