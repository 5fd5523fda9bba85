"""Autoscaler reaction time: a load step on a work queue, until the pool serving it has grown.

A pool (``supervisors.start_pool``: ``Sleeper`` workers, min 1, max 4, a look every 0.25 s, no up
cooldown in the way) serves an idle queue; then a step of ``items`` items of 20 ms of work each
is enqueued at once.  Measured from the enqueue: the look that decided the first growth (the
look interval bounds it; the change is recorded with its look's time once the workers it adds have
started, which the supervisor does one after the other), the pool running at its max, and the
backlog drained; then how long after the drain the pool is back at its min (its quiet stretch and
cooldowns bound it).

Baseline, same run: the time ``System.spawn`` takes to start one agent on this machine (what a
growth costs at the least), and the policy's own bounds (look interval; quiet stretch plus down
cooldowns), so the figures read as ratios to what the design allows.

    python -m benchmarks.runner autoscale_reaction
"""

from __future__ import annotations

import statistics
import time
import uuid
from typing import Any

from ._ray import data_dir, ensure_ray

__all__ = ["run"]

EVERY = 0.25
WORK_S = 0.02


def _wait(predicate: Any, timeout: float, every: float = 0.02) -> float:
    """Seconds until ``predicate()`` holds (TimeoutError past ``timeout``)."""
    t0 = time.perf_counter()
    while not predicate():
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError("the pool did not get there in time")
        time.sleep(every)
    return time.perf_counter() - t0


def _spawn_seconds(system: Any) -> float:
    from ._agents import Counter

    agent_id = f"spawn-{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    system.spawn(Counter, agent_id)
    took = time.perf_counter() - t0
    system.stop(agent_id)
    return took


def _round(system: Any, path: str, items: int) -> dict[str, float]:
    from runtime import WorkQueue
    from runtime.queue import EnqueueMany, NewItem, QueueStats
    from supervisors import PoolStatus, ScalePolicy, SupervisorRef, start_pool

    from ._agents import Sleeper

    tag = uuid.uuid4().hex[:8]
    policy = ScalePolicy(min_size=1, max_size=4, target_wait=0.5, items_per_worker=25, max_step=4,
                         up_cooldown=0.0, down_cooldown=1.0, quiet_for=1.0)
    queue = system.spawn(WorkQueue, f"react-q-{tag}")
    root = start_pool(f"react-{tag}", Sleeper, queue=queue.agent_id, data_dir=path, policy=policy, every=EVERY,
                      init={"batch": 5})
    try:
        pool, scaler = SupervisorRef.lookup(f"react-{tag}-workers"), system.lookup(f"react-{tag}-scaler")

        def running() -> int:
            return sum(c["state"] == "running" for c in pool.which_children())

        _wait(lambda: running() == policy.min_size, 60)
        before = len(scaler.ask(PoolStatus())["changes"])
        t0, wall0 = time.perf_counter(), time.time()
        queue.ask(EnqueueMany(items=[NewItem(key=f"{tag}-{i}", payload=WORK_S) for i in range(items)]))
        at_max = _wait(lambda: running() == policy.max_size, 60)
        drained = _wait(lambda: queue.ask(QueueStats())["done"]["count"] == items, 120) + at_max
        back = _wait(lambda: running() == policy.min_size, 60)
        first = scaler.ask(PoolStatus())["changes"][before]  # a change is recorded once made: its ``time`` is the look's
        decided = first["time"] - wall0
        assert time.perf_counter() - t0 >= drained
    finally:
        root.stop()
        system.stop(queue.agent_id)
    return {"first_decision_s": decided, "at_max_s": at_max, "drained_s": drained, "back_to_min_s": back,
            "down_bound_s": policy.quiet_for + (policy.max_size - policy.min_size) * policy.down_cooldown + EVERY}


def run(quick: bool = False) -> dict[str, Any]:
    ensure_ray()
    from runtime import System

    rounds, items = (1, 200) if quick else (3, 400)
    spawns, results = [], []
    with data_dir() as path, System(path) as system:
        for _ in range(rounds):
            spawns.append(_spawn_seconds(system))
            results.append(_round(system, path, items))
    med = {k: statistics.median(r[k] for r in results) for k in results[0]}
    spawn = statistics.median(spawns)
    return {
        "rounds": rounds,
        "items": items,
        "work_s_per_item": WORK_S,
        "look_every_s": EVERY,
        "per_round": [{k: round(v, 3) for k, v in r.items()} for r in results],
        "first_decision_s_median": round(med["first_decision_s"], 3),
        "at_max_s_median": round(med["at_max_s"], 3),
        "drained_s_median": round(med["drained_s"], 3),
        "back_to_min_s_median": round(med["back_to_min_s"], 3),
        "spawn_one_agent_s_median": round(spawn, 3),
        "first_decision_over_look_interval": round(med["first_decision_s"] / EVERY, 2),
        "growth_over_one_spawn": round((med["at_max_s"] - med["first_decision_s"]) / spawn, 2),
        "workers_added": 3,
        "back_to_min_over_bound": round(med["back_to_min_s"] / med["down_bound_s"], 2),
    }
