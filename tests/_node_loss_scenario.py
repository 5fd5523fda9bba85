"""Node loss, end to end: run by ``tests/test_node_loss.py`` in a process of its own.

It needs its own Ray: a local multi-node cluster (``ray.cluster_utils.Cluster``:
a head and three worker nodes, all processes of this machine), which the
session-wide test Ray of ``tests/conftest.py`` cannot be.  It prints one JSON
object (the last line of stdout) and exits 0 once the cluster is down.

The story:

1. Agents ``relay-0``, ``relay-1`` and ``sink`` are spawned on the *doomed*
   worker node (a soft node affinity: placed there first, anywhere when it is
   gone) with Ray restarts, SYNC durability, per-node local state
   (``data_dir=.../nodes/{node}``) and one checkpoint directory shared by all.
   Only worker nodes carry the ``agent_host`` resource, so no agent ever runs
   on the head, where the driver is.
2. The driver streams asks to each relay from one thread per relay; each
   relay records the item and forwards it to the sink through its outbox
   (effectively once, agent to agent).  An ask that returned is acknowledged.
3. Part-way, every agent takes a checkpoint (so the journal after it has
   records to replay); further on, the doomed node is removed, ungracefully
   (its processes are SIGKILLed, as a lost machine's would stop), while the
   stream goes on.  Ray restarts the agents on the surviving nodes.
4. Once the stream is done and the sink has caught up, the JSON reports where
   each agent runs now, its restore reports, every acknowledged and failed
   item, what each relay and the sink hold, and how long the driver saw no
   answer.

Run by hand: ``python tests/_node_loss_scenario.py --workdir /tmp/nl``.

The machine is shared: the cluster keeps its sockets, logs and address file
in a private ``RAY_TMPDIR`` (``Cluster`` otherwise writes its address to
``/tmp/ray/ray_current_cluster``, where any ``ray.init()`` on the machine
would join it) and its dashboard process off the default port 8265.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Ray workers on every node inherit this process's environment: they import ``tests.node_agents``.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
sys.path.insert(0, str(ROOT))
# Set before Ray reads it; short, as Ray's unix socket paths live under it.
OWN_TMPDIR = "RAY_TMPDIR" not in os.environ
if OWN_TMPDIR:
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="gnl-", dir="/tmp")

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402

from runtime import System  # noqa: E402
from tests.agents import Append, Report  # noqa: E402
from tests.node_agents import PlacedSink, Relay, SeenBy, Where  # noqa: E402

#: A SIGKILLed raylet says nothing: its death is noticed by the GCS's health
#: checks.  Ray's defaults (3 s period, 5 failures) take 15 s or more; these, 1 to 2 s.
SYSTEM_CONFIG = {"health_check_period_ms": 300, "health_check_timeout_ms": 500, "health_check_failure_threshold": 3}
#: Every agent: nothing acknowledged may be lost with a node, so SYNC (the
#: journal is in the checkpoint store before the reply); ASYNC would allow
#: losing up to ``ship_interval`` of acknowledged messages.  Periodic
#: checkpoints are left to the explicit one in step 3, so the restore has a
#: journal to replay.  Outbox retries are capped low so the relays find the
#: moved sink soon after it is back.
AGENT_CONFIG = {"durability": "sync", "checkpoint_interval": 300.0, "retry_backoff_max": 0.5}
ASK_TIMEOUT = 60.0


def log(msg: str) -> None:
    print(f"[scenario {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Stream(threading.Thread):
    """Asks ``Append(item=i)`` for i in range(total), one at a time; records what was acknowledged."""

    def __init__(self, ref: Any, total: int) -> None:
        super().__init__(name=f"stream-{ref.agent_id}", daemon=True)
        self.ref, self.total = ref, total
        self.acked: list[int] = []
        self.failed: list[list[Any]] = []  # [item, error]: not acknowledged, effect unknown
        self.longest_wait = 0.0
        self.longest_wait_at = 0.0

    def run(self) -> None:
        for i in range(self.total):
            t0 = time.time()
            try:
                self.ref.ask(Append(item=i), timeout=ASK_TIMEOUT)
            except Exception as exc:  # an ask that did not return: not acknowledged
                self.failed.append([i, f"{type(exc).__name__}: {exc}"])
            else:
                self.acked.append(i)
            took = time.time() - t0
            if took > self.longest_wait:
                self.longest_wait, self.longest_wait_at = took, t0

    @property
    def done(self) -> int:
        return len(self.acked) + len(self.failed)


def wait_until(pred: Any, timeout: float, what: str) -> Any:
    end = time.time() + timeout
    while time.time() < end:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"{what}: not within {timeout}s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run(workdir: Path, total: int, checkpoint_at: int, remove_at: int) -> dict[str, Any]:
    t_start = time.time()
    # No CPUs on the head: only the driver runs there.  Ray starts a minimal
    # dashboard process even with include_dashboard=False; keep it off 8265.
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False, "dashboard_port": free_port(), "_system_config": SYSTEM_CONFIG})
    system: System | None = None
    try:
        # Added one by one: Cluster.add_node waits for each to register.
        doomed = cluster.add_node(num_cpus=1, resources={"agent_host": 100})
        survivors = [cluster.add_node(num_cpus=1, resources={"agent_host": 100}) for _ in range(2)]
        cluster.wait_for_nodes()
        log(f"cluster up in {time.time() - t_start:.1f}s; doomed node {doomed.node_id[:8]}")

        system = System(workdir / "nodes" / "{node}", checkpoint_dir=workdir / "checkpoints", create=True,
                        address=cluster.address)
        pin = {"resources": {"agent_host": 1},
               "scheduling_strategy": NodeAffinitySchedulingStrategy(doomed.node_id, soft=True)}
        sink = system.spawn(PlacedSink, "sink", config=AGENT_CONFIG, ray_options=pin)
        relays = [system.spawn(Relay, f"relay-{k}", init={"to": "sink"}, config=AGENT_CONFIG, ray_options=pin)
                  for k in range(2)]
        agents = [*relays, sink]
        before = {ref.agent_id: ref.ask(Where(), timeout=30) for ref in agents}
        log(f"agents spawned on {sorted({w['node'][:8] for w in before.values()})}")

        streams = [Stream(ref, total) for ref in relays]
        for s in streams:
            s.start()
        wait_until(lambda: all(s.done >= checkpoint_at for s in streams), 120, "stream to the checkpoint point")
        checkpoints = {ref.agent_id: (ref.admin.checkpoint() or {}).get("seq") for ref in agents}
        log(f"checkpoints taken mid-stream: {checkpoints}")
        wait_until(lambda: all(s.done >= remove_at for s in streams), 120, "stream to the removal point")

        acked_before_removal = {s.ref.agent_id: len(s.acked) for s in streams}
        t_remove = time.time()
        cluster.remove_node(doomed, allow_graceful=False)
        removed_in = time.time() - t_remove
        # The raylet is gone, but its workers notice only after a moment: how long do the
        # old agent processes live on (answering calls made straight to them)?
        old_pids = {a: w["pid"] for a, w in before.items()}
        lingered = {}
        while len(lingered) < len(old_pids) and time.time() - t_remove < 10:
            for a, pid in old_pids.items():
                if a not in lingered and not alive(pid):
                    lingered[a] = round(time.time() - t_remove, 3)
            time.sleep(0.01)
        log(f"doomed node removed in {removed_in:.2f}s with {acked_before_removal} acknowledged")

        for s in streams:
            s.join(timeout=ASK_TIMEOUT * 3)
        stream_done = time.time()
        log(f"stream done {stream_done - t_remove:.1f}s after the removal")

        # The relays' outboxes deliver on their own time: wait until the sink holds every item each relay holds.
        reports = {}

        def caught_up() -> bool:
            reports.update({ref.agent_id: ref.ask(Report(), timeout=30) for ref in relays})
            seen = sink.ask(SeenBy(), timeout=30)
            return all(sorted(seen.get(r.agent_id, [])) == reports[r.agent_id]["items"] for r in relays)

        try:
            wait_until(caught_up, 30, "the sink catching up with the relays")
            sink_caught_up = True
        except TimeoutError:  # reported, for the test to say what is missing
            sink_caught_up = False
        after = {ref.agent_id: ref.ask(Where(), timeout=30) for ref in agents}
        statuses = {ref.agent_id: ref.admin.status() for ref in agents}
        nodes_dir = workdir / "nodes"
        local_copies = {ref.agent_id: sorted(n.name for n in nodes_dir.iterdir()
                                             if (n / "agents" / ref.agent_id / "state").is_dir())
                        for ref in agents}
        result = {
            "doomed": doomed.node_id,
            "survivors": [n.node_id for n in survivors],
            "head": cluster.head_node.node_id,
            "before": before,
            "after": after,
            "old_pids_alive": {a: alive(w["pid"]) for a, w in before.items()},
            "old_pids_lingered_s": lingered,
            "checkpoints": checkpoints,
            "acked_before_removal": acked_before_removal,
            "acked": {s.ref.agent_id: s.acked for s in streams},
            "failed": {s.ref.agent_id: s.failed for s in streams},
            "relay_reports": reports,
            "sink_caught_up": sink_caught_up,
            "sink_seen": sink.ask(SeenBy(), timeout=30),
            "sink_report": sink.ask(Report(), timeout=30),
            "restore": {a: st["restore"] for a, st in statuses.items()},
            "restore_history": {ref.agent_id: ref.admin.restore_history() for ref in agents},
            "incarnation": {a: st["incarnation"] for a, st in statuses.items()},
            "background_error": {a: st["background_error"] for a, st in statuses.items()},
            "dead_letters": {a: st["dead_letters"] for a, st in statuses.items()},
            "local_copies": local_copies,
            "timing": {
                "longest_wait_s": max(s.longest_wait for s in streams),
                "longest_wait_starts_after_removal_s": max(s.longest_wait_at for s in streams) - t_remove,
                "remove_node_s": removed_in,
                # From the removal to each new incarnation's restore (GCS noticing the node's
                # death, Ray starting a worker on a survivor, the restore itself).
                "restored_after_removal_s": {a: round(st["restore"]["time"] - t_remove, 3)
                                             for a, st in statuses.items()},
                "stream_after_removal_s": stream_done - t_remove,
                "scenario_s": time.time() - t_start,
            },
        }
        return result
    finally:
        t0 = time.time()
        if system is not None:
            system.shutdown()  # stops the agents (graceful, final checkpoint), disconnects from Ray
        ray.shutdown()
        cluster.shutdown()
        log(f"cluster down in {time.time() - t0:.1f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--total", type=int, default=400, help="asks per relay")
    parser.add_argument("--checkpoint-at", type=int, default=100, help="asks per relay before the checkpoints")
    parser.add_argument("--remove-at", type=int, default=200, help="asks per relay before the node is removed")
    args = parser.parse_args()
    try:
        result = run(args.workdir.resolve(), args.total, args.checkpoint_at, args.remove_at)
    finally:
        if OWN_TMPDIR:
            shutil.rmtree(os.environ["RAY_TMPDIR"], ignore_errors=True)
    # Ray writes chatter to stdout too (a dead raylet's last log lines): the result is the last line.
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
