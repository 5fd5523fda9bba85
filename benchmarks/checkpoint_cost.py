"""Checkpoint cost at 1, 10 and 100 MB of working state, under a steady message stream.

For each size an agent's state is filled to the size, then a driver thread
asks the agent a small state-changing message every 2 ms (a steady stream)
while checkpoints are taken (``ref.admin.checkpoint()``: ship the journal, LMDB's
copy of a read snapshot, sha256 of the body, fsync, rename, manifest).

*Handler stall* is what a checkpoint adds to the handling of a message,
measured two ways, each during checkpoints against the same stream with no
checkpoint running (the second before the first checkpoint, same run):

* in the agent: the time from taking a message to its commit (the host keeps
  recent handling times; its monotonic clock dates the checkpoint windows);
* end to end: the round trip of the stream's asks as the driver sees it,
  which adds the driver, Ray's transport and the rest of the machine.  The checkpoint is bigger than the state: it also holds the journal
(the rolling op buffer, itself the size of what was written since the last
trim) and the transition records.  Reported as p50 and p99 of each, and the difference of the p99s.

Baselines in the same run: raw LMDB writes of the same data (one transaction,
no fsync, and the same with ``sync``), and a raw ``env.copy()`` of an
environment of the same size, so the checkpoint's bytes/s read as a
ratio to what LMDB itself does.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import uuid
from typing import Any, Self

import lmdb

from ._ray import data_dir, ensure_ray, percentile

__all__ = ["run"]

VALUE = 1000  # bytes per key when filling state (below LMDB's overflow-page size)


def _raw_lmdb(size: int) -> dict[str, float]:
    """Raw LMDB: write ``size`` bytes in VALUE-byte puts, then copy the env."""
    n = size // VALUE
    value = os.urandom(VALUE)
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = lmdb.open(os.path.join(tmp, "a"), map_size=4 << 30, sync=False)
        t0 = time.perf_counter()
        with env.begin(write=True) as txn:
            for i in range(n):
                txn.put(b"blob/%08d" % i, value)
        env.sync(True)
        out["write_mb_per_s"] = size / (time.perf_counter() - t0) / 1e6
        t0 = time.perf_counter()
        os.mkdir(os.path.join(tmp, "copy"))
        env.copy(os.path.join(tmp, "copy"))
        out["copy_mb_per_s"] = size / (time.perf_counter() - t0) / 1e6
        env.close()
        synced = lmdb.open(os.path.join(tmp, "b"), map_size=1 << 30, sync=True)
        k = 300
        t0 = time.perf_counter()
        for i in range(k):
            with synced.begin(write=True) as txn:
                txn.put(b"k%d" % i, value[:256])
        out["fsync_commits_per_s"] = k / (time.perf_counter() - t0)
        synced.close()
    return out


class _Stream:
    """Asks the agent one small message every ``period`` seconds; records (start, latency)."""

    def __init__(self, ref: Any, period: float = 0.002) -> None:
        from ._agents import Tick

        self.ref, self.period, self.msg = ref, period, Tick(n=0)
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            self.ref.ask(self.msg, timeout=60)
            t1 = time.monotonic()
            self.samples.append((t0, t1 - t0))
            time.sleep(max(0.0, self.period - (t1 - t0)))

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def between(self, start: float, end: float) -> list[float]:
        return [lat for t0, lat in self.samples if start <= t0 <= end or start <= t0 + lat <= end]


def _scenario(system: Any, size: int, checkpoints: int) -> dict[str, Any]:
    from ._agents import Counter, Fill

    ref = system.spawn(Counter, f"bench-ckpt-{uuid.uuid4().hex[:6]}",
                       config={"checkpoint_interval": 3600, "ship_interval": 1.0})
    per_call = max(1, (4 << 20) // VALUE)
    n = size // VALUE
    for start in range(0, n, per_call):
        ref.ask(Fill(start=start, count=min(per_call, n - start), size=VALUE), timeout=300)
    ref.admin.checkpoint()  # the first copy also warms the page cache
    durations, sizes = [], []
    with _Stream(ref) as stream:
        time.sleep(1.0)
        quiet_start, quiet_end = time.monotonic() - 0.9, time.monotonic()
        windows = []
        for _ in range(checkpoints):
            t0 = time.monotonic()
            manifest = ref.admin.checkpoint(timeout=300)
            t1 = time.monotonic()
            durations.append(t1 - t0)
            sizes.append(manifest["size"])
            windows.append((t0, t1))
            time.sleep(0.3)
        quiet = stream.between(quiet_start, quiet_end)
        during = [lat for a, b in windows for lat in stream.between(a, b)]
        # The same windows on the agent's clock: shift by the clocks' offset.
        times = ref.admin.handling_times()
        offset = times["now"] - time.monotonic()  # ~0: both are CLOCK_MONOTONIC on one machine
        inside_quiet = [d for t, d in times["recent"] if quiet_start + offset <= t <= quiet_end + offset]
        inside_during = [d for t, d in times["recent"] for a, b in windows if a + offset <= t <= b + offset]
    system.stop(ref.agent_id)
    duration = percentile(durations, 50)
    p99_during, p99_quiet = percentile(during, 99), percentile(quiet, 99)
    return {
        "state_mb": size / 1e6,
        "checkpoint_mb": round(percentile(sizes, 50) / 1e6, 1),
        "checkpoint_seconds_p50": round(duration, 3),
        "checkpoint_mb_per_s": round(percentile(sizes, 50) / duration / 1e6, 1),
        "messages_during_checkpoints": len(during),
        "latency_during_ms": {"p50": round(percentile(during, 50) * 1e3, 2), "p99": round(p99_during * 1e3, 2)},
        "latency_without_ms": {"p50": round(percentile(quiet, 50) * 1e3, 2), "p99": round(p99_quiet * 1e3, 2)},
        "round_trip_stall_p50_ms": round((percentile(during, 50) - percentile(quiet, 50)) * 1e3, 2),
        "round_trip_stall_p99_ms": round((p99_during - p99_quiet) * 1e3, 2),
        "handling_during_ms": {"p50": round(percentile(inside_during, 50) * 1e3, 3),
                               "p99": round(percentile(inside_during, 99) * 1e3, 3)},
        "handling_without_ms": {"p50": round(percentile(inside_quiet, 50) * 1e3, 3),
                                "p99": round(percentile(inside_quiet, 99) * 1e3, 3)},
        "handler_stall_p50_ms": round((percentile(inside_during, 50) - percentile(inside_quiet, 50)) * 1e3, 3),
        "handler_stall_p99_ms": round((percentile(inside_during, 99) - percentile(inside_quiet, 99)) * 1e3, 3),
    }


def run(quick: bool = False) -> dict[str, Any]:
    ensure_ray()
    from runtime import System

    sizes = [1 << 20, 10 << 20] if quick else [1 << 20, 10 << 20, 100 << 20]
    results: dict[str, Any] = {}
    with data_dir() as path, System(path) as system:
        for size in sizes:
            raw = _raw_lmdb(size)
            result = _scenario(system, size, 3 if quick else 5)
            result["raw_lmdb"] = {k: round(v, 1) for k, v in raw.items()}
            result["checkpoint_vs_raw_copy"] = round(result["checkpoint_mb_per_s"] / raw["copy_mb_per_s"], 2)
            results[f"{size >> 20}MB"] = result
    results["aim"] = {"handler_stall_p99_ms_at_100MB": 5.0}
    return results

