"""Agents per node: one actor per agent beside packed agents, with memory per agent and reactivation latency.

Baseline, same run: ``ONE_ACTOR`` agents (20) spawned the default way, an actor each.  Each
handles a ``Tick`` (a state write), then each process's memory is read from
``/proc/<pid>/smaps_rollup``: RSS, PSS (shared pages divided among their users) and USS
(pages of that process alone).

Garrison, packed: ``PACKED`` agents (10,000) of a class marked packed (``packed = Packing(...)``),
spawned through ``System.spawn`` by four driver threads, each agent sent a ``Tick`` at once
(its own LMDB state, journal, checkpoint on passivation, epoch).  The host keeps at most
``CAPACITY`` open; the rest are passivated.  Memory of every process involved: the packed
host's (PSS, USS, RSS), and what Ray's GCS server and raylet grew by (the directory's
records, the calls).  The host's PSS is also read after the first ``CAPACITY`` agents (all
open), which splits its growth into what an open agent costs and what a passivated one
does.  Disk: the agents' LMDB directories and the checkpoint store, per agent.

Latency, aligned samples of ``LATENCY_SAMPLES`` agents (the least recently used, passivated:
their status says ``passive`` before): an ask that reopens the agent (a *resume*: its LMDB
reopened under its epoch), the same ask again (open), and an ask to one of the one-actor
agents.  Then the packed host is SIGKILLed; once Ray has restarted it, asks to other
passivated agents time a *start* (new epoch claimed, state restored from the local LMDB),
the path an agent takes on a host that never had it open (another node, after a crash).

The extrapolation to a 24 GiB node divides what is left after Ray's own processes by the
measured cost per agent; for packed agents memory stops being the bound well before
disk and the agent directory do (both reported).
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import ray

from protocols import Message
from runtime import Agent, Packing, handler

from ._ray import data_dir, ensure_ray, percentile

__all__ = ["report", "run"]

NODE_BYTES = 24 << 30
AIM_PACKED = 10_000
AIM_REACTIVATION_MS = 10.0
ONE_ACTOR = 20
KEEP_ACTORS = 2
PACKED = 10_000
CAPACITY = 500
LATENCY_SAMPLES = 300
NAMESPACE = "bench-agents-per-node"  # its directory records stay out of other scenarios' way


class Tick(Message, name="bench.apn.tick"):
    n: int = 1


class Count(Message, name="bench.apn.count"):
    pass


class Ticker(Agent):
    """Counts ticks in its own state (one actor each: the default)."""

    @handler
    def tick(self, msg: Tick) -> int:
        self.state.put("last", msg.n)
        return self.state.increment("count", msg.n)

    @handler
    def count(self, msg: Count) -> int:
        return self.state.get("count", 0)


class PackedTicker(Ticker):
    """The same agent, packed: many to a host, at most ``CAPACITY`` open at once."""

    packed = Packing(host="bench-apn", capacity=CAPACITY, idle_timeout=600.0)


# -- measuring -------------------------------------------------------------------------------------


def smaps(pid: int) -> dict[str, int]:
    """A process's memory in bytes: rss, pss, uss (private clean + dirty), pss_anon."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                fields[parts[0][:-1]] = int(parts[1]) * 1024
    return {"rss": fields["Rss"], "pss": fields["Pss"], "uss": fields["Private_Clean"] + fields["Private_Dirty"],
            "pss_anon": fields.get("Pss_Anon", 0)}


def ray_processes() -> dict[str, int]:
    """PIDs of the GCS server and raylet of the Ray this process started (they grow with agents and calls
    too); none when it joined a Ray started elsewhere."""
    out = {}
    for name in ("gcs_server", "raylet"):
        found = subprocess.run(["pgrep", "-P", str(os.getpid()), "-x", name], capture_output=True, text=True,
                               check=False).stdout.split()
        if found:
            out[name] = int(found[0])
    return out


def _disk(path: Path) -> tuple[int, int]:
    """Bytes allocated on disk and files under ``path``."""
    total = files = 0
    for root, _, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
                files += 1
            except OSError:
                pass
    return total, files


def _timed_ask(ref: Any, msg: Message) -> float:
    t0 = time.perf_counter()
    ref.ask(msg, timeout=60)
    return (time.perf_counter() - t0) * 1000


def _say(text: str) -> None:
    print(f"  agents_per_node: {text}", file=sys.stderr, flush=True)


# -- the two modes ---------------------------------------------------------------------------------------


def one_actor(system: Any, n: int) -> tuple[list[Any], dict[str, Any]]:
    refs, mems = [], []
    for i in range(n):
        ref = system.spawn(Ticker, f"apn-actor-{i}-{uuid.uuid4().hex[:4]}", timeout=300)
        ref.ask(Tick(n=1))
        refs.append(ref)
    time.sleep(1.0)  # let start-up garbage settle the same for each
    for ref in refs:
        mems.append(smaps(ref.admin.status()["pid"]))
    per = {k: sum(m[k] for m in mems) / len(mems) for k in mems[0]}
    for ref in refs[KEEP_ACTORS:]:  # measured: two stay up as the latency baseline, the rest free their 2 GB
        system.stop(ref.agent_id)
    return refs[:KEEP_ACTORS], {"agents": n, "per_agent_bytes": {k: round(v) for k, v in per.items()}}


def packed(system: Any, n: int, threads: int = 4) -> tuple[list[Any], dict[str, Any]]:
    first = system.spawn(PackedTicker, f"apn-packed-{0:06d}", timeout=300)  # starts the host
    host = first.route.handle.host
    stats0 = ray.get(host.stats.remote())
    pid = stats0["pid"]
    empty = smaps(pid)
    refs: list[Any] = [first] + [None] * (n - 1)
    marks: dict[str, Any] = {}
    ray_pids = ray_processes()
    ray_before = {name: smaps(p) for name, p in ray_pids.items()}

    def make(i: int) -> None:
        ref = system.spawn(PackedTicker, f"apn-packed-{i:06d}", timeout=300)
        ref.tell(Tick(n=1))
        refs[i] = ref

    t0 = time.perf_counter()
    first.tell(Tick(n=1))
    # The first batch fills the host to its capacity (every agent open), the others go on past it.
    bounds = [1, min(n, CAPACITY), *range(CAPACITY + 1000, n, 1000), n]
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for start, end in itertools.pairwise(bounds):
            list(pool.map(make, range(start, end)))
            for ref in refs[start:end]:
                ref.flush(timeout=120)
            if "open" not in marks:
                time.sleep(1.0)
                marks["open"] = (end, smaps(pid), ray.get(host.stats.remote()))
            stats = ray.get(host.stats.remote())
            _say(f"{end} packed agents in {time.perf_counter() - t0:.0f}s: {stats['active']} open, "
                 f"{stats.get('passivations', 0)} passivations, mean ms {stats.get('mean_ms')}")
    create_s = time.perf_counter() - t0
    deadline = time.time() + 120  # until passivation has caught up: the steady state
    while ray.get(host.stats.remote())["active"] > CAPACITY and time.time() < deadline:
        time.sleep(0.5)
    time.sleep(2.0)
    stats = ray.get(host.stats.remote())
    mem = smaps(pid)
    ray_after = {name: smaps(p) for name, p in ray_pids.items()}
    counted, open_mem, open_stats = marks["open"]
    return refs, {
        "agents": n, "create_seconds": round(create_s, 1), "create_per_s": round(n / create_s),
        "host": stats, "host_empty_bytes": empty, "host_bytes": mem,
        "host_at_first": {"agents": counted, "active": open_stats["active"], "bytes": open_mem},
        "ray_growth_bytes": {name: ray_after[name]["rss"] - ray_before[name]["rss"] for name in ray_pids},
        "pid": pid,
    }


def latencies(passive: list[Any], actors: list[Any]) -> dict[str, list[float]]:
    """Aligned samples: an ask that reopens a passivated agent, the same ask again (open), one to a one-actor agent."""
    out: dict[str, list[float]] = {"reactivate": [], "open": [], "one_actor": []}
    for i, ref in enumerate(passive):
        out["reactivate"].append(_timed_ask(ref, Count()))
        out["open"].append(_timed_ask(ref, Count()))
        out["one_actor"].append(_timed_ask(actors[i % len(actors)], Count()))
    return out


def passivated(refs: list[Any], count: int) -> list[Any]:
    """``count`` of ``refs`` whose status says they are passivated (a look that does not reopen them)."""
    out = []
    for ref in refs:
        if ref.admin.status()["state"] == "passive":
            out.append(ref)
            if len(out) == count:
                break
    return out


def after_crash(host: Any, pid: int, refs: list[Any], samples: int) -> list[float]:
    """Asks that open agents anew (epoch claimed, local LMDB restored) on the host Ray restarted."""
    os.kill(pid, signal.SIGKILL)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            stats = ray.get(host.stats.remote(), timeout=10)
            if stats["pid"] != pid:
                break
        except Exception:  # noqa: BLE001 - restarting
            time.sleep(0.05)
    # It reopens the agents that were open before the crash first: let it finish, then measure.
    seen = None
    while time.time() < deadline and seen != (seen := ray.get(host.stats.remote()).get("started", 0)):
        time.sleep(1.0)
    return [_timed_ask(ref, Count()) for ref in refs[:samples]]


def run(quick: bool = False) -> dict[str, Any]:
    ensure_ray()
    from runtime import System

    n = 1500 if quick else PACKED
    samples = 100 if quick else LATENCY_SAMPLES
    with data_dir() as path:
        system = System(path, namespace=NAMESPACE)
        try:
            _say(f"{ONE_ACTOR} one-actor agents")
            actors, actor_result = one_actor(system, ONE_ACTOR)
            _say(f"{n} packed agents, at most {CAPACITY} open")
            refs, packed_result = packed(system, n)
            host = refs[0].route.handle.host
            stats = ray.get(host.stats.remote())
            # At capacity (the steady state of many agents): each reopening passivates the least recently used.
            _say(f"latency at capacity ({stats['active']} open)")
            at_capacity = latencies(passivated(refs, samples), actors)
            # Below it: every agent passivated first, so that reopening passivates nothing meanwhile.
            ray.get(host.passivate.remote(), timeout=600)
            _say(f"latency below capacity ({ray.get(host.stats.remote())['active']} open)")
            below = latencies(passivated(refs[len(refs) // 2:], samples), actors)
            disk_agents = _disk(Path(path) / "agents")
            disk_store = _disk(Path(path) / "checkpoints")
            _say("SIGKILL of the packed host, then starts")
            cold = after_crash(host, packed_result["pid"], passivated(refs[len(refs) // 4:], samples), samples)
            for ref in actors:
                system.stop(ref.agent_id)
            ray.kill(host, no_restart=True)
        finally:
            system.shutdown(stop_agents=False)
    return report(actor_result, packed_result, {"at_capacity": at_capacity, "below_capacity": below}, cold, stats,
                  disk_agents, disk_store)


def _pcts(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(percentile(values, 50), 2), "p99_ms": round(percentile(values, 99), 2),
            "n": len(values)}


def report(actor: dict[str, Any], packed_result: dict[str, Any], lat: dict[str, dict[str, list[float]]],
           cold: list[float], stats: dict[str, Any], disk_agents: tuple[int, int],
           disk_store: tuple[int, int]) -> dict[str, Any]:
    n = packed_result["agents"]
    host_pss = packed_result["host_bytes"]["pss"]
    empty_pss = packed_result["host_empty_bytes"]["pss"]
    first = packed_result["host_at_first"]
    ray_growth = sum(max(0, v) for v in packed_result["ray_growth_bytes"].values())
    per_open = (first["bytes"]["pss"] - empty_pss) / max(1, first["active"])
    passive_n = max(1, n - first["agents"])
    per_passive = max(0.0, (host_pss - first["bytes"]["pss"]) / passive_n)
    total = host_pss + ray_growth
    actor_pss = actor["per_agent_bytes"]["pss"]
    free = NODE_BYTES - (1 << 30)  # Ray's own processes and the OS: about 1 GiB kept aside
    capacity = stats["capacity"]
    packed_fit = (free - empty_pss - capacity * per_open) / max(per_passive + ray_growth / n, 1.0)
    react = _pcts(lat["at_capacity"]["reactivate"])
    return {
        "one_actor": {**actor, "fit_on_24_gib": int(free // actor_pss)},
        "packed": {
            "agents": n, "open_at_end": stats["active"], "passivated_at_end": stats["passive"],
            "capacity": capacity, "create_seconds": packed_result["create_seconds"],
            "create_per_s": packed_result["create_per_s"],
            "host_bytes": packed_result["host_bytes"], "host_empty_bytes": packed_result["host_empty_bytes"],
            "ray_growth_bytes": packed_result["ray_growth_bytes"],
            "total_bytes": total, "per_agent_bytes": round(total / n),
            "per_open_agent_bytes": round(per_open), "per_passivated_agent_bytes": round(per_passive),
            "host_threads": stats["threads"], "activations": {k: stats.get(k, 0) for k in ("started", "resumed")},
            "passivations": stats.get("passivations", 0),
            "disk_per_agent_bytes": round((disk_agents[0] + disk_store[0]) / n),
            "files_per_agent": round((disk_agents[1] + disk_store[1]) / n, 1),
            "fit_on_24_gib_by_memory": int(packed_fit),
        },
        "latency": {
            **{where: {"reactivate_passivated": _pcts(samples["reactivate"]), "ask_open_packed": _pcts(samples["open"]),
                       "ask_one_actor": _pcts(samples["one_actor"])} for where, samples in lat.items()},
            "start_after_host_crash": _pcts(cold),
        },
        "ratio_reactivate_to_one_actor_ask_p50": {
            where: round(percentile(samples["reactivate"], 50) / percentile(samples["one_actor"], 50), 2)
            for where, samples in lat.items()},
        "ratio_memory_per_agent_one_actor_to_packed": round(actor_pss / max(1.0, total / n), 1),
        "aim": {"packed_agents": AIM_PACKED, "reactivation_ms": AIM_REACTIVATION_MS},
        "meets_aim": n >= AIM_PACKED and react["p50_ms"] < AIM_REACTIVATION_MS,
        "reactivation_p99_under_aim": react["p99_ms"] < AIM_REACTIVATION_MS,
    }


if __name__ == "__main__":  # python -m benchmarks.agents_per_node: one run, its JSON
    import json

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
