"""Taking checkpoints and trimming what they make redundant.

A checkpoint is LMDB's own copy of one read snapshot (written in C, without
the GIL, while handlers keep committing), checksummed and published with a
manifest (see ``_ckstore``).  The plain copy, not the compacting one: the
compacting copy is two orders of magnitude slower on values that spill into
LMDB overflow pages (about 2 KB and up).

Retention rule, for the journal in the store and locally: with checkpoints
``newest`` and ``previous``, a journal record may be trimmed once

* it is covered by ``previous`` (seq <= previous.seq), so restoring from
  either of the two newest checkpoints replays a contiguous journal, and
* it is older than ``newest.time - journal_retention``, and
* it has been shipped.

With one checkpoint nothing is trimmed: if it were corrupt, the full journal
is the only way back.

Before each checkpoint's copy, the transition records the shipped journal holds
go to the store as transition segments and are trimmed locally (see
``_transitions``); their ``segment`` audit records are committed before the
copy, so the checkpoint holds them.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._ckstore import CheckpointStore, Manifest, sha256_file, store_error
from ._journal import Shipper
from ._state import ReadOnlyState
from ._store import LmdbStore
from .exceptions import CheckpointCorrupt, Fenced

from ._transitions import TransitionLog

__all__ = ["Checkpointer"]

log = logging.getLogger("garrison.checkpoint")

Summarize = Callable[[ReadOnlyState], Any]


class Checkpointer:
    def __init__(
        self,
        store: LmdbStore,
        ckstore: CheckpointStore,
        shipper: Shipper,
        *,
        agent_id: str,
        agent_class: str,
        config_version: str,
        keep: int,
        retention: float,
        summarize: Summarize | None = None,
        fence: Callable[[str], None] | None = None,
        epoch: int = 0,
        transitions: TransitionLog | None = None,
        version: str | None = None,
    ) -> None:
        self.store = store
        self.version = version  # the agent version's manifest hash, stamped on each checkpoint
        self.transitions = transitions
        self.fence = fence
        self.epoch = epoch
        self.ckstore = ckstore
        self.shipper = shipper
        self.agent_id = agent_id
        self.agent_class = agent_class
        self.config_version = config_version
        self.keep = keep
        self.retention = retention
        self.summarize = summarize
        self.last: Manifest | None = None
        self.taken = 0

    def take(self, *, force: bool = False) -> Manifest | None:
        """Write a checkpoint unless nothing changed since the last one (or ``force``).

        The body is LMDB's plain copy of the environment: one consistent
        snapshot written by C code without the GIL, so handlers go on
        committing meanwhile.  Its sequence number and summary are then read
        from the copy itself, so the manifest describes exactly the body.
        """
        if not force and self.last is not None and self.last.seq == self.store.seq:
            return None
        failed = self._ship_transitions()
        staging = self.ckstore.staging(self.agent_id)
        try:
            taken_at = time.time()
            self.store.env.copy(str(staging))
            seq, summary, summary_type = self._describe(staging)
        except Exception as exc:
            # A half-written copy would only fill a full store further.
            shutil.rmtree(staging, ignore_errors=True)
            raise store_error(f"snapshot of {self.agent_id} failed", exc, staging) from exc
        body = staging / "data.mdb"
        manifest = Manifest(
            agent_id=self.agent_id,
            agent_class=self.agent_class,
            config_version=self.config_version,
            seq=seq,
            time=taken_at,
            size=body.stat().st_size,
            checksum=sha256_file(body),
            summary=summary,
            summary_type=summary_type,
            epoch=self.epoch,
            version=self.version,
        )
        if self.fence is not None:
            try:
                self.fence("checkpoint publication")  # a replaced incarnation publishes nothing
            except Exception:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        self.ckstore.put_checkpoint(manifest, body)
        self.last = manifest
        self.taken += 1
        self.trim()
        if failed is not None:  # raised once the checkpoint is published: it cost no checkpoint
            raise failed
        return manifest

    def _ship_transitions(self) -> Exception | None:
        """Ship the transitions the shipped journal holds, then commit the ``segment`` audit records
        that put in wait (``LmdbStore.defer``), so the copy that follows holds them too: a stop's
        checkpoint still covers every commit, and the next one finds nothing new.  A failure is
        returned, for ``take`` to raise after publishing the checkpoint."""
        if self.transitions is None:
            return None
        try:
            self.transitions.ship(self.shipper.ship())  # the journal first: it ships nothing it could lose
            if self.store.deferred:
                self.store.commit([])
                self.shipper.ship()
        except Fenced:
            raise
        except Exception as exc:  # noqa: BLE001 - the store's errors, raised by ``take`` after publication
            return exc
        return None

    def _describe(self, staging: Path) -> tuple[int, Any, str | None]:
        """Sequence number and summary of the copy at ``staging`` (opened read-only)."""
        copy = LmdbStore(staging, agent_id=self.agent_id, map_size=self.store.env.info()["map_size"],
                         sync=False, readonly=True)
        try:
            summary, summary_type = None, None
            if self.summarize is not None:
                try:
                    model = self.summarize(ReadOnlyState(copy))
                except Exception:  # a broken summary must not cost the checkpoint
                    log.exception("summary of %s failed; checkpoint taken without it", self.agent_id)
                    model = None
                if model is not None:
                    summary = model.model_dump(mode="json") if hasattr(model, "model_dump") else model
                    summary_type = f"{type(model).__module__}:{type(model).__qualname__}"
            return copy.seq, summary, summary_type
        finally:
            copy.close()

    def trim(self) -> int:
        """Apply the retention rule; return the trim horizon (a seq)."""
        seqs = self.ckstore.list_checkpoints(self.agent_id)
        for old in seqs[self.keep :]:
            self.ckstore.delete_checkpoint(self.agent_id, old)
        seqs = seqs[: self.keep]
        if len(seqs) < 2 or self.last is None:
            return 0
        try:
            previous = self.ckstore.read_manifest(self.agent_id, seqs[1])
        except CheckpointCorrupt:
            return 0  # keep everything: the fallback base is already damaged
        cutoff = self.last.time - self.retention
        segments = self.ckstore.list_segments(self.agent_id)
        aged = max((s.last for s in segments if s.last_time < cutoff), default=0)
        horizon = min(previous.seq, aged, self.shipper.shipped)
        for seg in segments:
            if seg.last <= horizon:
                self.ckstore.delete_segment(self.agent_id, seg)
        # Local deletes ride along with the writer's next commits (see LmdbStore).
        self.store.trim_upto = max(self.store.trim_upto, horizon)
        return horizon
