"""What the per-message metrics cost: metrics on beside off, in the same run, interleaved.

Two measurements, each with ``AgentConfig(metrics=True)`` (the default: every
message handled counted, ``garrison_messages_total``, and timed,
``garrison_handle_seconds``) beside ``metrics=False``:

``single``  the per-message path, in-process without Ray: one ``AgentCore``
            takes ``Count`` asks one envelope at a time through ``deliver``
            (decode, dedup, handler, commit, reply), as a host does for every
            ask (garbage collector set up as in a host); the calling thread's
            CPU time per message.  Compared by the best round of each: the
            rounds spread by 10-30% on this machine, the best is steady.
``pair``    agent-to-agent throughput on the local Ray, the scenario of
            ``protocol_throughput`` (batches: one count per batch).

Rounds alternate which goes first.  Reported: per-round figures, the best
(single) or median (pair) of each, and how much slower "on" is (aim: at most
5%).  Ray's own copy of the metrics (``_export``) runs on its own thread
every 2 s and is not in either path.
"""

from __future__ import annotations

import gc
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from ._ray import data_dir, ensure_ray
from .protocol_throughput import garrison_rate

__all__ = ["report", "run"]


def _single_us(root: Path, metrics: bool, n: int) -> float:
    """Thread CPU microseconds per ask delivered to one in-process core."""
    from protocols import encode_envelope, make_envelope
    from runtime._config import AgentConfig
    from runtime._core import AgentCore
    from runtime._spec import HostSpec

    from ._agents import Count, Counter

    for d in ("data", "ck"):
        (root / d).mkdir(parents=True)
    cfg = AgentConfig(checkpoint_interval=3600, ship_interval=3600, metrics=metrics)
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)  # as ``AgentHost`` sets it up
    core = AgentCore(HostSpec("mo-sink", Counter, str(root / "data"), str(root / "ck"), cfg))
    core.ensure_started()
    try:
        blobs = [encode_envelope(make_envelope(Count(), "mo-sink", sender="driver:mo")) for _ in range(n)]
        for blob in blobs[:200]:  # warm up
            core.deliver(blob)
        c0 = time.thread_time()
        for blob in blobs[200:]:
            core.deliver(blob)
        return (time.thread_time() - c0) / (n - 200) * 1e6
    finally:
        core.stop()


def run(quick: bool = False) -> dict[str, Any]:
    rounds = 1 if quick else 7
    single_n = 2_000 if quick else 20_000
    single: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="garrison-bench-") as tmp:
        for r in range(rounds):
            for metrics in ((False, True) if r % 2 == 0 else (True, False)):
                single[metrics].append(_single_us(Path(tmp) / f"{r}-{metrics}", metrics, single_n))
    ensure_ray()
    from runtime import AgentConfig, System

    n = 20_000 if quick else 100_000
    pair: dict[bool, list[float]] = {True: [], False: []}
    with data_dir() as path, System(path) as system:
        for r in range(rounds):
            for metrics in ((False, True) if r % 2 == 0 else (True, False)):
                pair[metrics].append(garrison_rate(system, n, 10_000, AgentConfig(metrics=metrics))["messages_per_s"])
    return report(single_n, single, n, pair)


def report(single_n: int, single: dict[bool, list[float]], n: int, pair: dict[bool, list[float]]) -> dict[str, Any]:
    """The scenario's result from each round's figures, keyed by metrics on (``True``) and off.

    ``single``: thread CPU microseconds per message, ``single_n`` messages a round; ``pair``:
    messages a second, ``n`` a round.  Index ``i`` of each list is round ``i`` (on and off aligned).
    """
    s_on, s_off = min(single[True]), min(single[False])
    p_on, p_off = statistics.median(pair[True]), statistics.median(pair[False])
    return {
        "single": {
            "messages_per_round": single_n,
            "metrics_off_us": [round(x, 2) for x in single[False]],
            "metrics_on_us": [round(x, 2) for x in single[True]],
            "metrics_off_us_best": round(s_off, 2),
            "metrics_on_us_best": round(s_on, 2),
            "metrics_off_us_median": round(statistics.median(single[False]), 2),
            "metrics_on_us_median": round(statistics.median(single[True]), 2),
            "slower_pct": round(100 * (s_on / s_off - 1), 1),
        },
        "pair": {
            "messages_per_round": n,
            "metrics_off_per_s": [round(x) for x in pair[False]],
            "metrics_on_per_s": [round(x) for x in pair[True]],
            "metrics_off_per_s_median": round(p_off),
            "metrics_on_per_s_median": round(p_on),
            "slower_pct": round(100 * (1 - p_on / p_off), 1),
        },
        "aim": {"slower_pct_at_most": 5},
    }
