"""One-way effectively-once throughput between two agents, beside raw Ray calls.

Garrison: an ``Emitter`` agent sends N ``Tick`` messages (effectively-once:
through its LMDB outbox, batched, acknowledged after the receiver's commit,
deduplicated by sequence number) to a ``Counter`` agent that increments a
key in its LMDB state per message.  Time runs from the first ``Burst`` ask
to the moment the receiver's committed count reaches N.

Baseline, same run: a raw Ray actor sends N one-way calls (one call per
message, all submitted before waiting: Ray's pipelined best case) to a raw
actor that increments an int in memory.  No durability, no dedup, no order.

Both are measured in each of several rounds, interleaved, so they share the
machine's state; reported are the per-round figures, their medians and the
ratio of the medians.
"""

from __future__ import annotations

import statistics
import time
import uuid
from typing import Any

import ray

from ._ray import data_dir, ensure_ray

__all__ = ["report", "run"]


@ray.remote(num_cpus=0)
class _RawSink:
    def __init__(self) -> None:
        self.n = 0

    def put(self, payload: bytes) -> None:
        self.n += 1

    def count(self) -> int:
        return self.n


@ray.remote(num_cpus=0)
class _RawSource:
    def send(self, sink: Any, n: int) -> int:
        ray.get([sink.put.remote(b"x" * 64) for _ in range(n)])
        return n


def _raw_rate(n: int) -> float:
    sink, source = _RawSink.remote(), _RawSource.remote()
    ray.get(source.send.remote(sink, 200))
    t0 = time.perf_counter()
    ray.get(source.send.remote(sink, n))
    rate = n / (time.perf_counter() - t0)
    for actor in (sink, source):
        ray.kill(actor)
    return rate


def garrison_rate(system: Any, n: int, chunk: int, config: Any = None) -> dict[str, float]:
    """Effectively-once messages per second from a new ``Emitter`` to a new ``Counter`` (both with ``config``)."""
    from ._agents import Burst, Count, Counter, Emitter

    tag = uuid.uuid4().hex[:6]
    sink = system.spawn(Counter, f"bench-sink-{tag}", config=config)
    source = system.spawn(Emitter, f"bench-src-{tag}", config=config)
    source.ask(Burst(to=sink.agent_id, start=0, count=1000))  # warm up both sides
    while sink.ask(Count()) < 1000:
        time.sleep(0.005)
    t0 = time.perf_counter()
    for start in range(1000, 1000 + n, chunk):
        source.ask(Burst(to=sink.agent_id, start=start, count=min(chunk, 1000 + n - start)), timeout=120)
    emitted = time.perf_counter() - t0
    while sink.ask(Count()) < 1000 + n:
        time.sleep(0.01)
    elapsed = time.perf_counter() - t0
    for ref in (source, sink):
        system.stop(ref.agent_id)
    return {"messages_per_s": n / elapsed, "seconds": elapsed, "emit_seconds": emitted}


def run(quick: bool = False) -> dict[str, Any]:
    ensure_ray()
    from runtime import System

    n = 20_000 if quick else 100_000
    rounds = 1 if quick else 5
    raw, ours = [], []
    with data_dir() as path, System(path) as system:
        for _ in range(rounds):
            raw.append(_raw_rate(3_000 if quick else 10_000))
            ours.append(garrison_rate(system, n, 10_000)["messages_per_s"])
    return report(n, raw, ours)


def report(n: int, raw: list[float], ours: list[float]) -> dict[str, Any]:
    """The scenario's result from each round's rates (a second): ``raw`` Ray calls, ``ours`` effectively-once.

    ``raw[i]`` and ``ours[i]`` were measured in the same round (the per-round lists stay aligned).
    """
    raw_median, ours_median = statistics.median(raw), statistics.median(ours)
    return {
        "messages_per_round": n,
        "raw_ray_calls_per_s": [round(r) for r in raw],
        "effectively_once_per_s": [round(r) for r in ours],
        "raw_ray_calls_per_s_median": round(raw_median),
        "effectively_once_per_s_median": round(ours_median),
        "ratio_of_medians": round(ours_median / raw_median, 1),
        "aim": {"effectively_once_per_s": 50_000, "ratio": 25},
    }
