"""The driver of the ``ray start`` cluster scenario, run by ``tests/test_ray_start_cluster.py`` in a process of its own.

The test starts a cluster with the ``ray`` CLI, as a user would (a head with no CPU, two worker
nodes offering ``agent_host``), then runs this script as the cluster's driver: it joins with
``RAY_ADDRESS`` (``System(address=...)``, on the head node, which Ray prefers for a driver on its
host) and prints one JSON object, the last line of its stdout.

The story:

1. A ``WorkQueue`` agent (``PlacedQueue``) is spawned on the node that stays (a hard node
   affinity), and ``--workers`` ``EffectWriter`` queue workers (SYNC) on the doomed node (a soft
   one: there first, anywhere once it is gone), all with ``agent_host``, per-node local state
   (``data_dir=.../nodes/{node}``) and one checkpoint directory shared by every node.
2. ``--items`` items are enqueued at once; each one's work creates one file, ``O_EXCL``, named by the
   item's id (``tests/cluster_agents.py``).
3. Once ``--remove-at`` of them are done, the doomed node is removed ungracefully: every process of
   its ``ray start`` session (its raylet, its agents' workers, its dashboard and runtime-env agents)
   is SIGKILLed, as a lost machine's would stop.  Ray restarts the workers on the node that stays;
   the items the lost workers had leased come back when their leases expire.
4. Once the queue has every item done, the JSON reports where everything ran, the queue's results
   and stats, the effect files, and how long each step took.

A node's processes are found by their session: ``ray start`` is started in a new session (its pid
is the session id), and everything it starts, and everything its raylet starts, stays in it (Ray
gives each worker a process group of its own, but not a session).  Nothing else on the machine is in
that session, so nothing else is touched: not the test suite's own Ray, not another cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

#: Items each worker claims at once, and for how long (seconds): a lost worker's items come back
#: after at most this long.  Far above what a batch takes even on a loaded machine, so a live
#: worker does not lose its leases.
BATCH, LEASE_S = 4, 8.0
#: Seconds each item's work takes (a sleep: the scenario must not depend on free CPU).
WORK_S = 0.05
#: An item's claims before it is dead: a node loss costs one, a lease that ran out under load one
#: more; none of them may poison an item.
MAX_ATTEMPTS = 20
ASK_TIMEOUT = 60.0
#: The workers': SYNC, as the README advises on a cluster.  An item's work commits its done-record
#: before its result is reported, and SYNC ships that record to the shared store first: a worker
#: that reported anything has a journal there, and its restart elsewhere restores from it.
WORKER_CONFIG = {"durability": "sync"}


def log(msg: str) -> None:
    print(f"[driver {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- a node's processes, by session ---------------------------------------------------------------

def _session(pid: int) -> int | None:
    """The session id of live process ``pid``; None once it is gone or a zombie (dead, not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # after the command name, which may hold anything
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else int(fields[3])


def alive(pid: int) -> bool:
    return _session(pid) is not None


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace").split("\0")
    except OSError:
        return []


def _is_ray(pid: int) -> bool:
    """Whether ``pid`` runs Ray (its binaries, its Python modules, a ``ray::`` worker)."""
    return any("ray" in word for word in _cmdline(pid))


def raylet_ports(sid: int) -> list[int]:
    """The node manager ports of the raylets in session ``sid``: one, the node's, for a ``ray start`` session."""
    ports = []
    for pid in session_members(sid):
        words = _cmdline(pid)
        if words and words[0].endswith("/raylet"):
            ports += [int(w.split("=", 1)[1]) for w in words if w.startswith("--node_manager_port=")]
    return ports


def session_members(sid: int) -> list[int]:
    """The Ray processes of session ``sid`` (the pid of the ``ray start`` that began it), this one excepted.

    Invariant: a session id stays allocated while any process of the session lives, so it cannot
    name another's processes meanwhile; once all are gone, the list is empty.
    """
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        if _session(int(entry)) == sid and _is_ray(int(entry)):
            members.append(int(entry))
    return sorted(members)


def kill_session(sid: int, timeout: float = 30.0) -> list[int]:
    """SIGKILL every Ray process of session ``sid`` until none is left; the pids killed."""
    killed: set[int] = set()
    end = time.time() + timeout
    while members := session_members(sid):
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except ProcessLookupError:
                pass
        if time.time() > end:
            raise RuntimeError(f"session {sid}: processes {members} outlived SIGKILL for {timeout}s")
        time.sleep(0.05)  # a killed process lingers as a zombie until its parent (or init) reaps it
    return sorted(killed)


# -- the driver -----------------------------------------------------------------------------------

def node_ids(ports: dict[str, int]) -> dict[str, str]:
    """The Ray node id of each named node (by its node manager port), once all are alive; and ``head``."""
    import ray

    from tests.waiting import wait_for

    def found() -> dict[str, str] | None:
        alive = [n for n in ray.nodes() if n["Alive"]]
        by_port = {n["NodeManagerPort"]: n["NodeID"] for n in alive}
        heads = [n["NodeID"] for n in alive if "node:__internal_head__" in n["Resources"]]
        if not heads or any(p not in by_port for p in ports.values()):
            return None
        return {**{name: by_port[p] for name, p in ports.items()}, "head": heads[0]}

    # A raylet may register late on a busy machine.
    return wait_for(found, 300, every=0.1, describe=lambda: [(n["NodeManagerPort"], n["Alive"]) for n in ray.nodes()])


def node_alive(node_id: str) -> bool:
    import ray

    return any(n["NodeID"] == node_id and n["Alive"] for n in ray.nodes())


def placed(node_id: str, *, soft: bool) -> dict[str, Any]:
    """Ray options of an agent host on ``node_id`` (while it lives, if ``soft``), on an ``agent_host`` node."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return {"resources": {"agent_host": 1}, "scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=soft)}


def all_results(queue: Any, total: int) -> list[dict[str, Any]]:
    """Every result the queue holds, in completion order (paged by its cursor)."""
    from runtime.queue import Results

    items: list[dict[str, Any]] = []
    cursor = 0
    while True:
        page = queue.ask(Results(after=cursor, limit=100), timeout=ASK_TIMEOUT)
        items += page["items"]
        if not page["items"] or len(items) > total:
            return items
        cursor = page["cursor"]


def effects(directory: Path) -> dict[str, Any]:
    """The effect files (one per item done) and the traces of work done again."""
    from tests.cluster_agents import AGAIN

    files = {}
    for f in directory.iterdir():
        if f.is_file():
            text = f.read_text()
            files[f.name] = json.loads(text)["node"] if text else None  # empty: killed between create and write
    again = sorted(f.name.rsplit(".", 1)[0] for f in (directory / AGAIN).iterdir())
    return {"files": files, "again": again}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    from runtime import System
    from runtime.queue import EnqueueMany, NewItem, QueueStats
    from tests.cluster_agents import AGAIN, EffectWriter, PlacedQueue
    from tests.node_agents import Where
    from tests.waiting import wait_for

    t0 = time.time()
    work = args.workdir
    (work / "effects" / AGAIN).mkdir(parents=True, exist_ok=True)
    system = System(work / "nodes" / "{node}", checkpoint_dir=work / "checkpoints", create=True,
                    address=os.environ["RAY_ADDRESS"])
    try:
        nodes = node_ids({"stay": args.stay_port, "doomed": args.doomed_port})
        driver_node = ray.get_runtime_context().get_node_id()
        log(f"joined in {time.time() - t0:.1f}s; nodes {({k: v[:8] for k, v in nodes.items()})}")
        if driver_node == nodes["doomed"]:
            raise RuntimeError("the driver joined through the doomed node: removing it would end the driver")

        t_spawn = time.time()
        queue = system.spawn(PlacedQueue, "jobs", init={"policy": {"base": 0.05, "max_attempts": MAX_ATTEMPTS}},
                             ray_options=placed(nodes["stay"], soft=False), timeout=120)
        init = {"queue": "jobs", "effects": str(work / "effects"), "work_s": WORK_S, "batch": BATCH,
                "lease_seconds": LEASE_S}
        with ThreadPoolExecutor(args.workers) as pool:  # their processes start side by side
            workers = list(pool.map(lambda k: system.spawn(EffectWriter, f"writer-{k}", init=init, timeout=120,
                                                           config=WORKER_CONFIG,
                                                           ray_options=placed(nodes["doomed"], soft=True)),
                                    range(args.workers)))
        before = {w.agent_id: w.ask(Where(), timeout=ASK_TIMEOUT) for w in workers}
        spawned_in = time.time() - t_spawn
        log(f"queue and {len(workers)} workers spawned in {spawned_in:.1f}s")

        keys = [f"item-{i:04d}" for i in range(args.items)]
        t_enqueue = time.time()
        queue.ask(EnqueueMany(items=[NewItem(key=k, payload={"key": k}) for k in keys]), timeout=ASK_TIMEOUT)

        def stats() -> dict[str, Any]:
            return queue.ask(QueueStats(), timeout=ASK_TIMEOUT)

        wait_for(lambda: stats()["done"]["count"] >= args.remove_at, 180, every=0.1, describe=stats)
        at_removal = stats()
        if raylet_ports(args.doomed_sid) != [args.doomed_port]:  # the session is that node's, and only it
            raise RuntimeError(f"session {args.doomed_sid} holds raylets {raylet_ports(args.doomed_sid)}, "
                               f"not the doomed node's ({args.doomed_port}): not killing it")
        t_remove = time.time()
        killed = kill_session(args.doomed_sid)
        removed_in = time.time() - t_remove
        log(f"doomed node's {len(killed)} processes killed in {removed_in:.2f}s with "
            f"{at_removal['done']['count']} of {args.items} done")
        wait_for(lambda: not node_alive(nodes["doomed"]), 120, every=0.1)  # the GCS marks the doomed node dead
        noticed_in = time.time() - t_remove

        wait_for(lambda: stats()["done"]["count"] == args.items, 300, every=0.25, describe=stats)
        drained_in = time.time() - t_remove
        log(f"node death noticed after {noticed_in:.1f}s; queue drained {drained_in:.1f}s after the removal")

        after = {w.agent_id: w.ask(Where(), timeout=ASK_TIMEOUT) for w in workers}
        statuses = {w.agent_id: w.admin.status(timeout=ASK_TIMEOUT) for w in workers}
        return {
            "nodes": nodes,
            "driver_node": driver_node,
            "queue_node": queue.ask(Where(), timeout=ASK_TIMEOUT)["node"],
            "before": before,
            "after": after,
            "restarted": {a: {"epoch": st["epoch"], "incarnation": st["incarnation"], "restore": st["restore"],
                              "background_error": st["background_error"], "dead_letters": st["dead_letters"]}
                          for a, st in statuses.items()},
            "killed": killed,
            "killed_alive": [pid for pid in killed if alive(pid)],
            "at_removal": at_removal,
            "final": stats(),
            "keys": keys,
            "results": all_results(queue, args.items),
            "effects": effects(work / "effects"),
            "timing": {"spawn_s": round(spawned_in, 2), "removal_after_enqueue_s": round(t_remove - t_enqueue, 2),
                       "kill_s": round(removed_in, 2), "death_noticed_s": round(noticed_in, 2),
                       "drained_after_removal_s": round(drained_in, 2), "driver_s": round(time.time() - t0, 2)},
        }
    finally:
        system.shutdown(stop_agents=False)  # the cluster goes down with its processes: no graceful stops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--stay-port", type=int, required=True, help="node manager port of the node that stays")
    parser.add_argument("--doomed-port", type=int, required=True, help="node manager port of the doomed node")
    parser.add_argument("--doomed-sid", type=int, required=True, help="session id of the doomed node's processes")
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--remove-at", type=int, default=60, help="items done before the node is removed")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    result = run(args)
    # Ray may write to stdout too: the result is the last line.
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
