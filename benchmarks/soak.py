"""Soak: storage stays bounded under a long effectively-once stream between two agents.

An ``Emitter`` agent sends N ``Tick`` messages (effectively-once, through its
outbox, batched) to a ``SlotSink`` agent that writes one state key per
message into a ring of 65,536 keys, so its working state is flat while every
message leaves a journal record and a state-transition record.  Checkpoint,
shipping and retention intervals are short, so many trims happen in the run.

The driver paces the stream at a fixed rate (``GARRISON_SOAK_RATE``, default
6,000 msg/s, below what this shared 2-core machine sustains under load): every
bound is a time window (checkpoint interval, retentions), so what is kept is
proportional to the rate, and a rate that drifts with the machine's load
would read as growth.

Sampled every ``SAMPLE_S`` seconds: each agent's local LMDB use -- live
bytes (pages of every table's B-tree, from ``txn.stat``) and the file's
high-water mark (``(last page number + 1) * page size`` from ``env.info()``;
LMDB reuses freed pages but never shrinks its file) -- and the checkpoint
store's size on disk (``du``: allocated blocks of every file under it), split
into the tiers (checkpoints, journal and transition segments: bounded by
retention) and the audit log (append-only by design: one record per batch of
requests handled, so it grows with the message count; reported as bytes per
message).  After a warm-up (the first ``WARMUP`` share of the messages) the
samples are split into thirds; reported is the growth ratio of the median of
the last third over the median of the first (aim: < 1.1, for the LMDB and
the tiers).

Message count: ``GARRISON_SOAK_MESSAGES`` (default 3,000,000; ``--quick``
200,000).  Run: ``python -m benchmarks.runner soak``.
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import lmdb

from runtime._store import TABLES as ALL_TABLES

from ._ray import data_dir, ensure_ray

__all__ = ["FINAL", "report", "run", "sample_row"]

SAMPLE_S = 2.0
WARMUP = 0.2
CHUNK = 2_000
#: Largest number of sent-but-unhandled messages the driver lets build up (pacing, not a bound of the runtime).
AHEAD = 60_000
CONFIG = {
    "checkpoint_interval": 3.0,
    "ship_interval": 0.25,
    "journal_retention": 2.0,
    "transition_retention": 15.0,
    "keep_checkpoints": 2,
    "dedup_horizon": 30.0,
}
TABLES = ("data", "journal", "transitions", "outbox", "inseq", "dedup", "deadletters")
#: What the result keeps of each agent's ``admin.status()`` at the end.
FINAL = ("seq", "journal_entries", "transition_entries", "checkpoints_taken", "dead_letters")


def lmdb_usage(path: Path) -> dict[str, int]:
    """Live bytes (every B-tree's pages), high-water mark, file size and entries per table of LMDB at ``path``.

    A read-only environment opened and closed at once: a read transaction held
    open would keep the writer from reusing freed pages.
    """
    env = lmdb.open(str(path), readonly=True, lock=True, max_dbs=32, readahead=False)
    try:
        psize = env.stat()["psize"]
        out = {"used_bytes": (env.info()["last_pgno"] + 1) * psize,
               "file_bytes": (path / "data.mdb").stat().st_size}
        with env.begin() as txn:
            live = sum(env.stat()[k] for k in ("branch_pages", "leaf_pages", "overflow_pages"))
            for name in ALL_TABLES:
                stat = txn.stat(env.open_db(name.encode(), txn=txn, create=False))
                live += stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]
                if name in TABLES:
                    out[name] = stat["entries"]
        out["live_bytes"] = live * psize
        return out
    finally:
        env.close()


def du(root: Path) -> tuple[int, dict[str, int]]:
    """Bytes allocated under ``root``, and how many files of each kind (by suffix) it holds."""
    total = 0
    kinds: dict[str, int] = {}
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_blocks * 512
            except FileNotFoundError:
                continue  # trimmed while we walked
            kind = "temp" if name.startswith(".") else os.path.splitext(name)[1] or "other"
            kinds[kind] = kinds.get(kind, 0) + 1
    return total, kinds


def growth(values: list[float]) -> float | None:
    third = len(values) // 3
    if third < 1:
        return None
    first, last = statistics.median(values[:third]), statistics.median(values[-third:])
    return round(last / first, 3) if first else None


def run(quick: bool = False) -> dict[str, Any]:
    ensure_ray()
    from runtime import System

    from ._agents import Burst, Count, Emitter, SlotSink

    n = int(os.environ.get("GARRISON_SOAK_MESSAGES", "200000" if quick else "3000000"))
    rate = float(os.environ.get("GARRISON_SOAK_RATE", "6000"))
    tag = uuid.uuid4().hex[:6]
    samples: list[dict[str, Any]] = []
    with data_dir() as path, System(path) as system:
        sink = system.spawn(SlotSink, f"soak-sink-{tag}", config=CONFIG)
        source = system.spawn(Emitter, f"soak-src-{tag}", config=CONFIG)
        agents = {"sender": source.agent_id, "receiver": sink.agent_id}
        state_dirs = {role: Path(path) / "agents" / aid / "state" for role, aid in agents.items()}
        store_dir = Path(system.checkpoint_dir)
        handled = [0]
        stop = threading.Event()
        t0 = time.perf_counter()

        def sample() -> None:
            while not stop.wait(SAMPLE_S):
                row = sample_row(time.perf_counter() - t0, handled[0], store_dir, state_dirs)
                samples.append(row)
                print(f"  soak {row['t']:7.1f}s {handled[0]:>9} msgs  receiver lmdb "
                      f"{row['receiver']['live_bytes'] >> 20}/{row['receiver']['used_bytes'] >> 20} MiB "
                      f"(journal {row['receiver']['journal']}, "
                      f"transitions {row['receiver']['transitions']})  sender lmdb "
                      f"{row['sender']['used_bytes'] >> 20} MiB  store {row['store_bytes'] >> 20} MiB {row['store_files']}",
                      file=sys.stderr, flush=True)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            for start in range(0, n, CHUNK):
                ahead = start / rate - (time.perf_counter() - t0)
                if ahead > 0:
                    time.sleep(ahead)  # the pace: ``rate`` messages a second
                handled[0] = sink.ask(Count())
                while start - handled[0] > AHEAD:
                    time.sleep(0.02)
                    handled[0] = sink.ask(Count())
                source.ask(Burst(to=sink.agent_id, start=start, count=min(CHUNK, n - start)), timeout=120)
            while handled[0] < n:
                handled[0] = sink.ask(Count())
                time.sleep(0.02)
            elapsed = time.perf_counter() - t0
        finally:
            stop.set()
            sampler.join()
        status = {role: ref.admin.status() for role, ref in (("sender", source), ("receiver", sink))}
        # The oldest transitions the store still keeps: ``transition_retention`` (15 s here) bounds the history.
        first = sink.admin.transitions(0, 3)
        for ref in (source, sink):
            system.stop(ref.agent_id)
    return report(n, rate, elapsed, samples, status, first)


def sample_row(t: float, handled: int, store_dir: Path, state_dirs: dict[str, Path]) -> dict[str, Any]:
    """One sample of the run, ``t`` seconds in: the checkpoint store's size and each role's LMDB use.

    The soak chart of ``benchmarks._plot`` reads these rows from the result's ``series``.
    """
    store_bytes, store_files = du(store_dir)
    # The audit log (``<agent>/audit``, on by default) is append-only by design: a record of every
    # request handled, kept whole so it can be proven.  It is the one part of the store meant to grow;
    # ``tiers_bytes`` is the rest, the tiers every retention bounds.
    audit_bytes = sum(du(folder)[0] for folder in store_dir.glob("*/audit"))
    row: dict[str, Any] = {"t": round(t, 1), "handled": handled, "store_bytes": store_bytes, "store_files": store_files,
                           "audit_bytes": audit_bytes, "tiers_bytes": store_bytes - audit_bytes}
    for role, folder in state_dirs.items():
        row[role] = lmdb_usage(folder)
    return row


def report(n: int, rate: float, elapsed: float, samples: list[dict[str, Any]],
           status: dict[str, dict[str, Any]], first: list[dict[str, Any]]) -> dict[str, Any]:
    """The scenario's result: ``samples`` (rows of :func:`sample_row`, in time order), each role's
    ``admin.status()`` at the end (the :data:`FINAL` keys of it) and the receiver's first transitions."""
    steady = [s for s in samples if s["handled"] >= WARMUP * n]
    series = {
        "receiver_lmdb_live_bytes": [s["receiver"]["live_bytes"] for s in steady],
        "receiver_lmdb_used_bytes": [s["receiver"]["used_bytes"] for s in steady],
        "sender_lmdb_live_bytes": [s["sender"]["live_bytes"] for s in steady],
        "sender_lmdb_used_bytes": [s["sender"]["used_bytes"] for s in steady],
        "store_bytes": [s["store_bytes"] for s in steady],
        "tiers_bytes": [s["tiers_bytes"] for s in steady if "tiers_bytes" in s],
    }
    audited = [s for s in steady if "audit_bytes" in s]
    per_message = None
    if len(audited) >= 2 and audited[-1]["handled"] > audited[0]["handled"]:
        per_message = round((audited[-1]["audit_bytes"] - audited[0]["audit_bytes"])
                            / (audited[-1]["handled"] - audited[0]["handled"]), 1)
    return {
        "messages": n,
        "seconds": round(elapsed, 1),
        "messages_per_s": round(n / elapsed),
        "target_messages_per_s": rate,
        "config": CONFIG,
        "samples": len(samples),
        "steady_samples": len(steady),
        "steady_from_s": steady[0]["t"] if steady else None,  # the warm-up ends there: growth is of later samples
        "growth_last_over_first_third": {k: growth(v) for k, v in series.items()},
        "max_bytes": {k: max(v, default=0) for k, v in series.items()},
        "final": {role: {k: status[role][k] for k in FINAL} for role in status},
        "first_transition_seqs": [t["seq"] for t in first],
        # The audit log's growth: bytes on disk per message handled, over the steady samples.
        "audit_bytes_per_message": per_message,
        "series": samples,
        "aim": {"growth": 1.1},
    }
