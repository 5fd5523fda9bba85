"""Agent-to-agent throughput with the audit log on, beside off, in the same run.

The scenario of ``protocol_throughput`` (an ``Emitter`` sends effectively-once
``Tick`` messages to a ``Counter``), twice per round, interleaved: both agents
with ``AgentConfig(audit=True)`` (the default: a ``request`` record per message
handled, committed with it, shipped to the agent's audit log each ship
interval) and with ``audit=False``.  Reported: per-round rates, medians, and
how much slower the audited pair is (aim: at most 15%).
"""

from __future__ import annotations

import statistics
from typing import Any

from ._ray import data_dir, ensure_ray
from .protocol_throughput import garrison_rate

__all__ = ["report", "run"]


def run(quick: bool = False) -> dict[str, Any]:
    ensure_ray()
    from runtime import AgentConfig, System

    n = 20_000 if quick else 100_000
    rounds = 1 if quick else 5
    on, off = [], []
    with data_dir() as path, System(path) as system:
        for _ in range(rounds):
            off.append(garrison_rate(system, n, 10_000, AgentConfig(audit=False))["messages_per_s"])
            on.append(garrison_rate(system, n, 10_000, AgentConfig(audit=True))["messages_per_s"])
    return report(n, on, off)


def report(n: int, on: list[float], off: list[float]) -> dict[str, Any]:
    """The scenario's result from each round's rates (messages a second) with the audit log ``on`` and ``off``.

    ``on[i]`` and ``off[i]`` were measured in the same round (the per-round lists stay aligned).
    """
    on_median, off_median = statistics.median(on), statistics.median(off)
    return {
        "messages_per_round": n,
        "audit_off_per_s": [round(r) for r in off],
        "audit_on_per_s": [round(r) for r in on],
        "audit_off_per_s_median": round(off_median),
        "audit_on_per_s_median": round(on_median),
        "slower_pct": round(100 * (1 - on_median / off_median), 1),
        "aim": {"slower_pct_at_most": 15},
    }
