"""``ask`` round-trip latency, beside a raw Ray actor call measured in the same run.

Garrison: a driver asks a ``Counter`` agent an ``Echo`` (effectively-once: the
agent commits a state change and its dedup record to LMDB before answering).
Baseline: a plain Ray actor method that returns its argument.  Calls
alternate between the two, one at a time, so both see the same machine.

Beside the p50 and p99, the result keeps each side's distribution compactly:
the latency at each of :data:`QUANTILES` (``latency_ms_quantiles``), which
``benchmarks._plot`` draws as a CDF.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import ray

from ._ray import data_dir, ensure_ray, percentile

__all__ = ["QUANTILES", "report", "run"]

#: Percentiles kept of each side's latencies: every 1% and the tail's 99.5 and 99.9 (ascending; 0 and
#: 100 are the fastest and slowest call).
QUANTILES: tuple[float, ...] = (*range(100), 99.5, 99.9, 100)


@ray.remote(num_cpus=0)
class _RawEcho:
    def echo(self, payload: bytes) -> bytes:
        return payload


def run(quick: bool = False) -> dict[str, Any]:
    ensure_ray()
    from runtime import System

    from ._agents import Counter, Echo

    n = 500 if quick else 3000
    with data_dir() as path, System(path) as system:
        ref = system.spawn(Counter, f"bench-echo-{uuid.uuid4().hex[:6]}")
        raw = _RawEcho.remote()
        msg = Echo(payload="x" * 100)
        for _ in range(200):
            ref.ask(msg)
            ray.get(raw.echo.remote(b"x" * 100))
        ours, theirs = [], []
        for _ in range(n):
            t0 = time.perf_counter()
            ray.get(raw.echo.remote(b"x" * 100))
            t1 = time.perf_counter()
            ref.ask(msg)
            t2 = time.perf_counter()
            theirs.append(t1 - t0)
            ours.append(t2 - t1)
        ray.kill(raw)
    return report(ours, theirs)


def report(ours: list[float], theirs: list[float]) -> dict[str, Any]:
    """The scenario's result from each call's seconds: ``ours`` Garrison asks, ``theirs`` raw Ray calls."""
    p50, p99 = percentile(ours, 50), percentile(ours, 99)
    r50, r99 = percentile(theirs, 50), percentile(theirs, 99)
    return {
        "calls": len(ours),
        "ask_p50_ms": round(p50 * 1e3, 3),
        "ask_p99_ms": round(p99 * 1e3, 3),
        "raw_ray_p50_ms": round(r50 * 1e3, 3),
        "raw_ray_p99_ms": round(r99 * 1e3, 3),
        "p50_ratio": round(p50 / r50, 2),
        "p99_ratio": round(p99 / r99, 2),
        "aim": {"p50_ratio": 1.3},
        # Same percentile rule as the p50/p99 above, so those are points of these curves.
        "latency_ms_quantiles": {
            "percent": list(QUANTILES),
            "ask": [round(percentile(ours, q) * 1e3, 3) for q in QUANTILES],
            "raw_ray": [round(percentile(theirs, q) * 1e3, 3) for q in QUANTILES],
        },
    }
