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
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from ._ckstore import CheckpointStore, Manifest
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
    set_aside: str | None = None
    duration_s: float
    time: float


def _set_aside(path: Path, why: str) -> str | None:
    if not path.exists():
        return None
    dest = path.with_name(f"{path.name}.{why}-{int(time.time() * 1000)}")
    path.rename(dest)
    return str(dest)


def _open_local(path: Path, agent_id: str, agent_class: str, **kw: Any) -> LmdbStore:
    store = LmdbStore(path, agent_id=agent_id, **kw)
    ident = store.meta("identity")
    if ident is not None and ident.get("agent_id") != agent_id:
        store.close()
        raise RestoreError(
            f"local state at {path} belongs to agent {ident.get('agent_id')!r}, not {agent_id!r}",
            path=str(path),
        )
    if ident is not None and ident.get("agent_class") != agent_class:
        store.close()
        raise RestoreError(
            f"local state at {path} was written by {ident.get('agent_class')}, not {agent_class}; "
            "spawn the agent with its original class or retire the id",
            path=str(path),
        )
    return store


def _replay(store: LmdbStore, ckstore: CheckpointStore, agent_id: str, corrupt: list[str]) -> tuple[int, bool]:
    """Apply shipped segments after ``store.seq``; return (ops applied, gap?)."""
    applied = 0
    for seg in ckstore.list_segments(agent_id):
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
        applied += store.replay(records)
    return applied, False


def _shipped_head(ckstore: CheckpointStore, agent_id: str) -> int:
    head = max((s.last for s in ckstore.list_segments(agent_id)), default=0)
    return max(head, max(ckstore.list_checkpoints(agent_id), default=0))


def restore(
    path: Path,
    ckstore: CheckpointStore,
    *,
    agent_id: str,
    agent_class: str,
    incarnation: int | None = None,
    **store_kw: Any,
) -> tuple[LmdbStore, RestoreReport, Manifest | None]:
    """Open or rebuild the agent's LMDB at ``path``; see the module docstring."""
    t0 = time.perf_counter()
    corrupt: list[str] = []
    set_aside: str | None = None
    head = _shipped_head(ckstore, agent_id)

    if (path / "data.mdb").exists():
        try:
            store = _open_local(path, agent_id, agent_class, **store_kw)
        except StateError as exc:
            corrupt.append(f"local state: {exc}")
            set_aside = _set_aside(path, "corrupt")
        else:
            applied, gap = 0, False
            if store.seq < head:
                applied, gap = _replay(store, ckstore, agent_id, corrupt)
            if not gap or store.seq >= head:
                return store, _report(store, "local", None, applied, corrupt, gap, set_aside, t0, incarnation), None
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
    applied, gap = _replay(store, ckstore, agent_id, corrupt)
    source = "checkpoint" if base is not None else "fresh"
    if base is None and applied:
        source = "journal"
    return store, _report(store, source, base, applied, corrupt, gap, set_aside, t0, incarnation), base


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
        set_aside=set_aside,
        duration_s=time.perf_counter() - t0,
        time=time.time(),
    )

