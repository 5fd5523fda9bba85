"""Time from SIGKILL to serving again with state restored: warm standby and cold restart vs Ray's own.

Baseline: an agent spawned with Ray's restarts on (``max_restarts=-1``): Ray
starts a new process for the same actor, which restores its state from
local LMDB.  Garrison: an agent under a supervisor (``max_restarts=0``): the
supervisor sees the death through its pending ``watch`` call and starts a
new actor under the same name, which restores the same way.  Both agents
hold one committed tick; "serving again" is the first ``Count`` ask that
answers with it.  Warm standby: an agent under a supervisor that keeps one
spare host started (``SupervisorFlags(standby=1)``): the spare adopts the
agent (restores it from the same local LMDB, records itself in the agent
directory) and the caller's retries follow it.  Rounds rotate through the
three; a warm round starts only once the spare used by the previous one has
been replaced.
"""

from __future__ import annotations

import os
import signal
import statistics
import time
import uuid
from typing import Any

import ray

from ._ray import data_dir, ensure_ray

__all__ = ["report", "run"]


def _serve_again(lookup: Any, pid: int) -> float:
    from ._agents import Count

    t0 = time.perf_counter()
    os.kill(pid, signal.SIGKILL)
    while True:
        try:
            if lookup().ask(Count(), timeout=2) == 1:
                return time.perf_counter() - t0
        except Exception:  # noqa: BLE001 - whatever a call to the dead or restarting agent raises: retried
            time.sleep(0.01)


def run(quick: bool = False) -> dict[str, Any]:
    ensure_ray()
    from runtime import System
    from supervisors import BackoffPolicy, ChildSpec, SupervisorFlags, SupervisorSpec, start_supervisor

    from ._agents import Counter, Tick

    rounds = 2 if quick else 7
    with data_dir() as path:
        system = System(path)
        plain = f"bench-ray-{uuid.uuid4().hex[:4]}"
        system.spawn(Counter, plain, detached=False).ask(Tick(n=1))
        child = f"bench-sup-{uuid.uuid4().hex[:4]}"
        spec = SupervisorSpec(
            id=f"bench-s-{uuid.uuid4().hex[:4]}",
            flags=SupervisorFlags(intensity=100, period=1, backoff=BackoffPolicy(initial=0, max_delay=0, jitter=0)),
            children=[ChildSpec(id=child, agent=Counter)],
        )
        sup = start_supervisor(spec, data_dir=path)
        warm = f"bench-warm-{uuid.uuid4().hex[:4]}"
        warm_spec = SupervisorSpec(
            id=f"bench-w-{uuid.uuid4().hex[:4]}",
            flags=SupervisorFlags(intensity=100, period=1, standby=1,
                                  backoff=BackoffPolicy(initial=0, max_delay=0, jitter=0)),
            children=[ChildSpec(id=warm, agent=Counter)],
        )
        warm_sup = start_supervisor(warm_spec, data_dir=path)
        try:
            system.lookup(child).ask(Tick(n=1))
            system.lookup(warm).ask(Tick(n=1))
            ray_times, sup_times, warm_times = [], [], []
            for _ in range(rounds):
                pid = ray.get(ray.get_actor(plain, namespace=system.namespace).probe.remote())["pid"]
                ray_times.append(_serve_again(lambda: system.lookup(plain), pid))
                sup_times.append(_serve_again(lambda: system.lookup(child), sup.child(child)["pid"]))
                _wait_for_spare(warm_sup)
                warm_times.append(_serve_again(lambda: system.lookup(warm), warm_sup.child(warm)["pid"]))
        finally:
            warm_sup.stop()
            sup.stop()
            system.stop(plain)
    return report(ray_times, sup_times, warm_times)


def report(ray_times: list[float], sup_times: list[float], warm_times: list[float]) -> dict[str, Any]:
    """The scenario's result from each round's seconds, SIGKILL to serving again, of the three ways back.

    Index ``i`` of each list is round ``i`` (the three lists stay aligned).
    """
    ray_median, sup_median = statistics.median(ray_times), statistics.median(sup_times)
    warm_median = statistics.median(warm_times)
    return {
        "rounds": len(ray_times),
        "ray_restart_s": [round(t, 3) for t in ray_times],
        "supervisor_cold_restart_s": [round(t, 3) for t in sup_times],
        "warm_standby_s": [round(t, 3) for t in warm_times],
        "ray_restart_median_s": round(ray_median, 3),
        "supervisor_cold_restart_median_s": round(sup_median, 3),
        "warm_standby_median_s": round(warm_median, 3),
        "cold_minus_ray_s": round(sup_median - ray_median, 3),
        "warm_over_ray": round(warm_median / ray_median, 3),
        "aim": {"cold_minus_ray_s": 0.3, "warm_standby_median_s": 0.2},
    }


def _wait_for_spare(sup: Any, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while sup.status()["spares"] < 1:
        if time.monotonic() > end:
            raise RuntimeError("the warm supervisor's spare was not replaced in time")
        time.sleep(0.05)
