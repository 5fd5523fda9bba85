"""Clusters from a driver: the ``ray up`` config is valid for Ray, and on a cluster started with ``ray start``
a node with queue workers is removed mid-queue and no item is lost.

``test_the_cluster_yaml_*``: ``docs/deploy/ray-cluster.yaml`` goes through the checks ``ray up`` makes
before it launches anything (``prepare_config``, then ``validate_config``: Ray's JSON schema and its
node-type rules), its ``ray start`` lines parse with Ray's own CLI, and its placement and storage
settings say what the README says (worker nodes offer ``agent_host``, the head neither it nor CPU; one
shared checkpoint store mounted on every node; per-node local state).  ``test_the_kuberay_note_*``:
the RayCluster fragment of ``docs/deploy/kuberay.md`` says the same for pods.

``test_a_node_with_queue_workers_*``: a cluster of three nodes on this machine, started with the
``ray`` CLI as a user would (``ray start --head``, then ``ray start --address`` twice), and a driver
in a process of its own (``tests/_ray_start_scenario.py``, which tells the story).  The workers' node
is removed (all its processes SIGKILLed) mid-queue; every item ends done exactly once: one result per
item in the queue, one effect file per item, none dead.

Isolation: the cluster has a private ``RAY_TMPDIR`` (its sockets, logs and address file), its own
ports for everything Ray would otherwise put on a fixed default (6379, 8265, 10001, 52365), auth off
(a token left by another local Ray would turn it on for the head only), and each ``ray start`` runs
in a session of its own: the teardown SIGKILLs exactly those sessions' processes, also when the test
fails.  ``ray stop`` is never used: it would stop every Ray of this user on the machine.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from ._ray_start_scenario import kill_session, raylet_ports, session_members

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_YAML = ROOT / "docs" / "deploy" / "ray-cluster.yaml"
SCENARIO = Path(__file__).with_name("_ray_start_scenario.py")


def _ray_command() -> str:
    """The ``ray`` command of this interpreter's Ray (its venv's), else the one on PATH."""
    beside = Path(sys.executable).with_name("ray")
    return str(beside) if beside.exists() else shutil.which("ray") or "ray"


RAY = _ray_command()

ITEMS, WORKERS, REMOVE_AT = 300, 3, 60
#: Hang guards, not speed bars: quiet, a node starts in about 5 s and the driver takes about 25 s.
NODE_START_LIMIT = 180
#: Tries of each ``ray start`` (see ``LocalCluster._start``).
NODE_STARTS = 3
DRIVER_LIMIT = 420
#: The GCS notices a SIGKILLed raylet by missed health checks: Ray's defaults (3 s apart, 5 misses)
#: take 15 s and more; these about 5 s, yet a node may stall 5 s (a loaded machine) and live.
HEALTH_CHECKS = {"RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "2000",
                 "RAY_health_check_failure_threshold": "5"}


# -- the cluster YAML ----------------------------------------------------------------------------

def load_cluster_yaml() -> dict[str, Any]:
    with open(CLUSTER_YAML) as f:
        return yaml.safe_load(f)


def ray_up_checks(config: dict[str, Any]) -> dict[str, Any]:
    """What ``ray up`` does with a config before it talks to a cloud (``commands._bootstrap_config``)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def ray_start_args(command: str) -> list[list[str]]:
    """The arguments of each ``ray start`` in a shell command line (``a; B=1 ray start ...``)."""
    found = []
    for part in command.replace("&&", ";").split(";"):
        words = shlex.split(part)
        while words and "=" in words[0] and not words[0].startswith("-"):
            words = words[1:]  # VAR=value before the command
        if words[:2] == ["ray", "start"]:
            found.append(words[2:])
    return found


def parse_ray_start(args: list[str]) -> dict[str, Any]:
    """``args`` parsed by Ray's own ``ray start`` command (click): unknown flags or bad values raise."""
    from ray.scripts.scripts import start

    with start.make_context("start", list(args)) as ctx:
        return dict(ctx.params)


def test_the_cluster_yaml_passes_the_checks_ray_up_makes_and_a_broken_one_does_not():
    import jsonschema

    config = load_cluster_yaml()
    prepared = ray_up_checks(config)
    assert prepared["head_node_type"] in prepared["available_node_types"]
    for broken in ({**config, "setup_command": []},                        # a misspelt key
                   {**config, "available_node_types": {**config["available_node_types"],
                                                       "agents": {**config["available_node_types"]["agents"],
                                                                  "resources": {"agent_host": "many"}}}}):
        with pytest.raises(jsonschema.ValidationError):
            ray_up_checks(broken)


def test_the_cluster_yaml_starts_ray_with_valid_flags_and_agents_only_on_worker_nodes():
    config = load_cluster_yaml()
    head_starts = [a for c in config["head_start_ray_commands"] for a in ray_start_args(c)]
    worker_starts = [a for c in config["worker_start_ray_commands"] for a in ray_start_args(c)]
    assert len(head_starts) == len(worker_starts) == 1
    head, worker = parse_ray_start(head_starts[0]), parse_ray_start(worker_starts[0])
    assert head["head"] and not worker["head"] and worker["address"]
    assert head["autoscaling_config"], "the head's autoscaler needs the bootstrap config"

    types = config["available_node_types"]
    head_type = types[config["head_node_type"]]
    agent_types = [t for name, t in types.items() if name != config["head_node_type"]]
    # The head offers no CPU and no agent_host: no agent and no task is ever placed there.
    assert head["num_cpus"] == 0 and head_type["resources"].get("CPU") == 0
    assert "agent_host" not in head_type["resources"]
    # Worker nodes offer agent_host, the same in the autoscaler's view and in their ray start; and
    # a second node is always there for a lost one's agents to move to.
    started_with = json.loads(worker["resources"])
    assert agent_types and all(t["resources"]["agent_host"] == started_with["agent_host"] >= 1 for t in agent_types)
    assert sum(t.get("min_workers", 0) for t in agent_types) >= 2


def test_the_cluster_yaml_mounts_one_checkpoint_store_on_every_node_and_keeps_state_per_node():
    config = load_cluster_yaml()
    setup = config["setup_commands"]  # every node's, head included
    exports = dict(m for c in setup for m in re.findall(r"export (GARRISON_\w+)=([^\s'\\]+)", c))
    store, data = exports["GARRISON_CHECKPOINT_DIR"], exports["GARRISON_DATA_DIR"]
    mounts = [shlex.split(c.split("||")[-1]) for c in setup if "mount -t nfs" in c]
    assert len(mounts) == 1 and mounts[0][-1] == store, "the exported checkpoint dir is the shared mount"
    assert not any(c.strip().startswith("mount") for c in config.get("head_setup_commands", []) +
                   config.get("worker_setup_commands", [])), "mounted the same on every node"
    assert data.endswith("/{node}") and "{node}" not in store
    local_root = data.rsplit("/{node}", 1)[0]
    assert any(f"mkdir -p {local_root}" in c for c in setup)
    # The code that `pip install` gets is this checkout, shipped by file_mounts.
    (remote, local), = config["file_mounts"].items()
    assert (ROOT / local / "pyproject.toml").is_file() and any("install" in c and remote in c for c in setup)


def kuberay_documents() -> list[dict[str, Any]]:
    """The YAML blocks of ``docs/deploy/kuberay.md``, parsed."""
    text = (ROOT / "docs" / "deploy" / "kuberay.md").read_text()
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)]


def test_the_kuberay_note_mounts_one_read_write_many_store_in_every_pod_and_agents_only_on_workers():
    docs = {d["kind"]: d for d in kuberay_documents()}
    claim, spec = docs["PersistentVolumeClaim"], docs["RayCluster"]["spec"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    for group in groups:
        pod = group["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        (container,) = pod["containers"]
        env = {e["name"]: e["value"] for e in container["env"]}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
        store = mounts[env["GARRISON_CHECKPOINT_DIR"]]
        assert store["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
        assert env["GARRISON_DATA_DIR"].endswith("/{node}")
        assert "persistentVolumeClaim" not in mounts[env["GARRISON_DATA_DIR"].rsplit("/{node}", 1)[0]]
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert "resources" not in spec["headGroupSpec"]["rayStartParams"]
    for group in spec["workerGroupSpecs"]:
        # KubeRay passes the value to `ray start --resources` as it is: a quoted JSON object.
        assert json.loads(json.loads(group["rayStartParams"]["resources"]))["agent_host"] >= 1


# -- a local cluster started with ray start ---------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Node:
    """One ``ray start`` and what identifies its processes: its session id and its ports."""

    name: str
    sid: int
    node_manager_port: int
    tmpdir: Path
    log: Path
    proc: subprocess.Popen = field(repr=False)


@dataclass
class LocalCluster:
    """Nodes started with ``ray start`` on this machine, each in a session and a temp dir of its own.

    A temp dir per node, as separate machines have: Ray names a node's sockets and logs by what its
    temp dir already holds, so two nodes starting at once in one dir could pick the same names.
    """

    workdir: Path
    tmpdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="grs-", dir="/tmp")))
    nodes: list[Node] = field(default_factory=list)
    gcs_port: int = 0
    #: Every port handed to a node: never twice (the OS may hand a port just let go of out again).
    ports: set[int] = field(default_factory=set)

    def port(self) -> int:
        while (p := free_port()) in self.ports:
            pass
        self.ports.add(p)
        return p

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of this cluster's processes and its driver: none of the caller's Ray settings."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update({
            # Auth off on every node and driver: a token another local Ray left in ~/.ray would turn
            # it on for `ray start --head` alone, and the worker nodes would be refused.
            "RAY_AUTH_MODE": "disabled",
            "RAY_worker_niceness": "0",  # agents at normal priority (README, "Operating it")
            "RAY_USAGE_STATS_ENABLED": "0",
            # Ray's workers on every node import the test agents from here.
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            **extra,
        })
        return env

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    def node(self, name: str) -> Node:
        """The node ``name`` (its latest start: a start that failed was retried)."""
        return [n for n in self.nodes if n.name == name][-1]

    def _launch(self, name: str, args: list[str], env: dict[str, str]) -> Node:
        """Run ``ray start`` for node ``name`` (not waiting for it); recorded at once, for the teardown."""
        nm = self.port()
        # Every port Ray would otherwise take from a fixed default (52365) or pick itself.
        ports = [f"--node-manager-port={nm}", f"--object-manager-port={self.port()}",
                 f"--dashboard-agent-listen-port={self.port()}", f"--dashboard-agent-grpc-port={self.port()}",
                 f"--runtime-env-agent-port={self.port()}", f"--metrics-export-port={self.port()}"]
        attempt = sum(n.name == name for n in self.nodes) + 1
        tmpdir = self.tmpdir / f"{name}-{attempt}"
        tmpdir.mkdir()
        log = self.workdir / f"ray-start-{name}-{attempt}.log"
        cmd = [RAY, "start", *args, *ports, "--node-ip-address=127.0.0.1", f"--temp-dir={tmpdir}",
               "--object-store-memory=100000000", "--disable-usage-stats"]
        with open(log, "w") as out:
            # A session of its own: its pid is the session id of every process the node will have.
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**env, "RAY_TMPDIR": str(tmpdir)},
                                    start_new_session=True)
        node = Node(name, proc.pid, nm, tmpdir, log, proc)
        self.nodes.append(node)
        return node

    @staticmethod
    def _failure(node: Node) -> str | None:
        """None once ``node`` is up or coming up; else why not, its processes killed.

        ``ray start`` gives a node's raylet a fixed 30 s to register with the GCS, and on a machine
        busy enough (load 16 on 2 cores, seen) that runs out; it then exits 1 but leaves the node's
        processes running.  A raylet still running there registers late: the node is kept (the
        driver waits for every node to be alive).  Anything else is a failed start.
        """
        try:
            code = node.proc.wait(timeout=NODE_START_LIMIT)
            if code == 0:
                return None
            why = f"exit {code}"
        except subprocess.TimeoutExpired:
            node.proc.kill()
            why = f"no answer in {NODE_START_LIMIT}s"
        log = node.log.read_text()
        if "timed out during startup" in log and raylet_ports(node.sid) == [node.node_manager_port]:
            print(f"`ray start` of {node.name}: its raylet did not register within Ray's 30 s; it runs, kept")
            return None
        kill_session(node.sid)  # half started: its raylet must not join later
        return f"`ray start` of {node.name} failed ({why}):\n{log[-2000:]}"

    def _start(self, starts: dict[str, tuple[list[str], dict[str, str]]]) -> None:
        """Start the nodes ``name: (ray start args, env)`` together; one that fails is started again."""
        pending = list(starts)
        for attempt in range(1, NODE_STARTS + 1):
            launched = [self._launch(name, *starts[name]) for name in pending]
            failures = {n.name: why for n in launched if (why := self._failure(n)) is not None}
            if not failures:
                return
            pending = list(failures)
            print(f"start {attempt} of {pending} failed; " + " | ".join(failures.values())[-600:])
        raise AssertionError(f"nodes {pending} did not start in {NODE_STARTS} tries:\n" + "\n".join(failures.values()))

    def start_head(self) -> None:
        self.gcs_port = self.port()
        self._start({"head": (["--head", f"--port={self.gcs_port}", f"--ray-client-server-port={self.port()}",
                               "--include-dashboard=false", f"--dashboard-port={self.port()}", "--num-cpus=0"],
                              self.env(**HEALTH_CHECKS))})

    def add_workers(self, *names: str) -> None:
        """Worker nodes offering ``agent_host``, started together (each ``ray start`` joins on its own)."""
        args = [f"--address={self.address}", "--num-cpus=1", '--resources={"agent_host": 100}']
        self._start({name: (args, self.env()) for name in names})

    def teardown(self) -> dict[str, list[int]]:
        """SIGKILL every process of every node started here (workers first, the head last); the pids."""
        killed = {}
        for n in reversed(self.nodes):
            if n.proc.poll() is None:
                n.proc.kill()  # a `ray start` still starting: it starts nothing more
                n.proc.wait()
            killed[f"{n.name}/{n.sid}"] = kill_session(n.sid)
        shutil.rmtree(self.tmpdir, ignore_errors=True)
        return killed


@pytest.fixture
def cluster(tmp_path):
    """A head and two worker nodes, started with ``ray start``; all their processes killed afterwards."""
    c = LocalCluster(tmp_path)
    try:
        t0 = time.time()
        c.start_head()
        c.add_workers("stay", "doomed")
        print(f"cluster started in {time.time() - t0:.1f}s")
        yield c
    finally:
        c.teardown()


def run_driver(cluster: LocalCluster, workdir: Path) -> dict[str, Any]:
    """The scenario's driver against ``cluster``; its JSON result.  A driver that hangs is killed."""
    stay, doomed = cluster.node("stay"), cluster.node("doomed")
    cmd = [sys.executable, str(SCENARIO), "--workdir", str(workdir), "--stay-port", str(stay.node_manager_port),
           "--doomed-port", str(doomed.node_manager_port), "--doomed-sid", str(doomed.sid),
           "--items", str(ITEMS), "--workers", str(WORKERS), "--remove-at", str(REMOVE_AT)]
    # On the head's machine, as a user's driver: the head's temp dir, the cluster's address.
    env = cluster.env(RAY_ADDRESS=cluster.address, RAY_TMPDIR=str(cluster.node("head").tmpdir))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=DRIVER_LIMIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"the driver did not finish in {DRIVER_LIMIT}s; stderr tail:\n{err[-4000:]}") from None
    finally:
        if proc.poll() is None:  # interrupted (the test's own timeout): the driver goes too
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise AssertionError(f"the driver failed (exit {proc.returncode}); stderr tail:\n{err[-4000:]}")
    last = out.strip().splitlines()[-1] if out.strip() else ""
    try:
        return json.loads(last)
    except json.JSONDecodeError:
        raise AssertionError(f"no JSON on the driver's last stdout line: {last[:300]!r}; stderr tail:\n"
                             f"{err[-4000:]}") from None


@pytest.mark.timeout(2 * NODE_STARTS * NODE_START_LIMIT + DRIVER_LIMIT + 60)
def test_a_node_with_queue_workers_is_removed_mid_queue_and_every_item_is_done_exactly_once(cluster, tmp_path):
    t0 = time.time()
    r = run_driver(cluster, tmp_path / "work")
    print("ray-start cluster timing:", json.dumps(r["timing"]))
    nodes = r["nodes"]
    doomed, stay = nodes["doomed"], nodes["stay"]

    # Where things ran: the driver on the head, the queue on the node that stays, the workers on the
    # doomed node before, each restarted by Ray on the one left after: a new process, a new fencing epoch.
    assert r["driver_node"] == nodes["head"]
    assert r["queue_node"] == stay
    reported_by = Counter(res["result"]["pid"] for res in r["results"])
    for worker, where in r["before"].items():
        assert where["node"] == doomed, (worker, where)
        now, restarted = r["after"][worker], r["restarted"][worker]
        assert now["node"] == stay and now["pid"] != where["pid"], (worker, now)
        assert restarted["epoch"] >= 2, (worker, restarted)
        report = restarted["restore"]
        assert report["source"] != "local" and not report["gap"] and report["corrupt"] == [], (worker, report)
        # Its state rebuilt from the shared checkpoint store (the other node has no local copy of it):
        # a SYNC worker that reported an item had shipped its journal there first.
        if reported_by[where["pid"]]:
            assert report["source"] in ("journal", "checkpoint") and report["seq"] > 0, (worker, report)
        assert restarted["background_error"] is None and restarted["dead_letters"] == 0, (worker, restarted)
    assert any(reported_by[w["pid"]] for w in r["before"].values())
    # The node was removed for real: its processes (the workers' among them) are gone.
    worker_pids = {w["pid"] for w in r["before"].values()}
    assert worker_pids <= set(r["killed"]) and r["killed_alive"] == []
    assert session_members(cluster.node("doomed").sid) == []

    # Mid-queue: some items were done when the node went, most were not.
    done_then = r["at_removal"]["done"]["count"]
    assert REMOVE_AT <= done_then < ITEMS, r["at_removal"]

    # Every item done exactly once, none lost, none dead.
    final = r["final"]
    assert final["done"]["count"] == ITEMS and final["dead"]["count"] == 0 and final["depth"] == 0, final
    per_item = Counter(res["id"] for res in r["results"])
    assert sorted(per_item) == r["keys"] and set(per_item.values()) == {1}, per_item.most_common(3)
    assert all(res["result"]["key"] == res["id"] for res in r["results"])
    # The results say who did each item: workers on the doomed node before its removal, on the
    # node that stays after it.
    done_on = Counter(res["result"]["node"] for res in r["results"])
    assert set(done_on) == {doomed, stay}, done_on

    # One effect file per item: the effect happened once each, wherever the work ran and however
    # often (an item a lost worker had leased is taken over by another worker once the lease expires:
    # if the lost one had done it without reporting it, the work runs again, and O_EXCL refuses it).
    files = r["effects"]["files"]
    assert sorted(files) == r["keys"], sorted(set(r["keys"]) ^ set(files))[:10]
    again = r["effects"]["again"]
    print(f"work run again for {len(again)} items, its effect refused: {sorted(set(again))[:10]}; "
          f"test {time.time() - t0:.1f}s")
