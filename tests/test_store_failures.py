"""A checkpoint store that fills up or turns read-only, for real: a small tmpfs mount.

Under ASYNC durability the agent keeps accepting messages (they are committed
to its local LMDB), and the failure is a visible *degraded* state: status,
probe, the ``garrison_degraded`` gauge, a supervisor's notifiers.  Once the
store takes writes again the state clears, and nothing acknowledged is lost,
even restored on another node from the store alone.

The mount needs root (``mount -t tmpfs``); read-only is a remount, since a
``chmod`` does not stop root.  Without either the tests are skipped, saying why.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import ray

from audit import verify_log
from protocols import encode_envelope, make_envelope
from runtime import AgentAlreadyRunning, AgentConfig, AgentNotRunning, CheckpointError, System, host_of
from runtime._core import AgentCore
from runtime._degraded import retry_backoff
from runtime._reply import decode_reply
from runtime._spec import HostSpec
from supervisors import (
    ChildSpec,
    DegradedAction,
    JsonlNotifier,
    ProbePolicy,
    SupervisorFlags,
    SupervisorSpec,
    start_supervisor,
)
from tests.agents import Append, Counter, Fill, GetCount, GetItems
from tests.sup_agents import FAST, uid
from tests.waiting import wait_for

#: Background work often, so the tests see failures and recoveries within a second or two.
QUICK = AgentConfig(ship_interval=0.05, checkpoint_interval=0.3)
#: No background work at all: only the checkpoints a test asks for.
QUIET = AgentConfig(ship_interval=3600, checkpoint_interval=3600)


class SmallFs:
    """A 8 MiB tmpfs: fill it up, free it, make it read-only and writable again."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.filler = root / "filler"

    def fill(self) -> None:
        """Write a file until the filesystem says ENOSPC: not a byte left for the store."""
        chunk = b"\0" * (64 << 10)
        with open(self.filler, "ab", buffering=0) as f:
            try:
                while True:
                    f.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
        with open(self.filler, "ab", buffering=0) as f:  # the last partial chunk too
            try:
                while True:
                    f.write(b"\0" * 512)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
        assert os.statvfs(self.root).f_bavail == 0

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def make_room(self, size: int) -> None:
        """Give ``size`` bytes back: room for a small write, not for a big one."""
        os.truncate(self.filler, self.filler.stat().st_size - size)

    def _remount(self, mode: str) -> None:
        # EBUSY while a file is open for writing on it (an atomic write in flight): try again.
        def remounted() -> bool:
            done = subprocess.run(["mount", "-o", f"remount,{mode}", str(self.root)],
                                  capture_output=True, check=False)
            return done.returncode == 0
        wait_for(remounted, timeout=20, every=0.01)

    def read_only(self) -> None:
        self._remount("ro")
        with pytest.raises(OSError) as refused:
            (self.root / "probe").write_bytes(b"x")
        assert refused.value.errno == errno.EROFS

    def writable(self) -> None:
        self._remount("rw")


@pytest.fixture
def small_fs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs (a real full / read-only filesystem) needs root")
    root = tmp_path / "store"
    root.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(root)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    fs = SmallFs(root)
    try:
        yield fs
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(root)], capture_output=True, check=False)
        fs.free()
        if subprocess.run(["umount", str(root)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(root)], capture_output=True, check=False)


def _gauge(metrics: str, agent_id: str) -> float:
    match = re.search(rf'^garrison_degraded\{{agent="{re.escape(agent_id)}"\}} (\S+)$', metrics, re.MULTILINE)
    assert match, metrics
    return float(match.group(1))


def _probe(agent_id: str) -> dict:
    return ray.get(host_of(agent_id, namespace="garrison").probe.remote(), timeout=30)


def _spawn(system: System, agent_id: str, config: AgentConfig):
    """Spawn, waiting for a killed predecessor's name to be released."""
    def spawned():
        try:
            return system.spawn(Counter, agent_id, config=config, detached=False)
        except AgentAlreadyRunning:
            return None
    return wait_for(spawned, timeout=30, every=0.1)


def _check_backoff(episode: dict, config: AgentConfig) -> None:
    """n failed attempts took at least the shortest backoff allows (retrying every ship_interval would not)."""
    backoff = retry_backoff(config.ship_interval, config.checkpoint_interval)
    shortest = sum(backoff.delay(k) * (1 - backoff.jitter) for k in range(episode["attempts"] - 1))
    assert episode["last_attempt"] - episode["since"] >= shortest * 0.99, episode


@pytest.mark.ray
def test_a_full_store_degrades_the_agent_visibly_and_nothing_acknowledged_is_lost(
        ray_session, tmp_path, small_fs, agent_id):
    ck = small_fs.root / "ck"
    ck.mkdir()
    node1 = System(tmp_path / "node1", checkpoint_dir=ck, create=True)
    ref = _spawn(node1, agent_id, QUICK)
    assert ref.ask(Append(item=0), timeout=20) == 1
    wait_for(lambda: ref.admin.status()["last_checkpoint_seq"] is not None, timeout=20)
    assert ref.admin.status()["degraded"] is None and _probe(agent_id)["degraded"] is None
    assert _gauge(ref.admin.metrics(), agent_id) == 0

    small_fs.fill()
    t_full = time.time()
    # Messages keep being accepted: asks answered, tells taken (and handled, as the ask after them shows).
    for i in range(1, 21):
        assert ref.ask(Append(item=i), timeout=20) == i + 1
    for i in range(21, 41):
        ref.tell(Append(item=i))
    assert ref.ask(GetCount(), timeout=20) == 41

    status = wait_for(lambda: (s := ref.admin.status())["degraded"] and s["degraded"]["attempts"] >= 5 and s, timeout=30)
    episode = status["degraded"]
    assert (episode["reason"], episode["errno"], episode["errno_name"]) == ("store_full", errno.ENOSPC, "ENOSPC")
    assert t_full - 1 <= episode["since"] <= time.time() and episode["cleared_at"] is None
    assert episode["path"] and episode["path"].startswith(str(ck)), episode
    assert status["state"] == "running" and "No space left" in status["background_error"]
    _check_backoff(episode, QUICK)
    probed = _probe(agent_id)["degraded"]
    assert (probed["since"], probed["reason"], probed["errno"]) == (episode["since"], "store_full", "ENOSPC")
    metrics = ref.admin.metrics()
    assert _gauge(metrics, agent_id) == 1
    assert re.search(rf'^garrison_background_errors_total\{{agent="{agent_id}"\}} ([1-9]\S*)$', metrics, re.MULTILINE)

    small_fs.free()
    status = wait_for(lambda: (s := ref.admin.status())["degraded"] is None and s, timeout=60)
    cleared = status["degraded_cleared"]
    assert cleared["since"] == episode["since"] and cleared["cleared_at"] >= episode["since"]
    assert cleared["attempts"] >= episode["attempts"]
    assert _probe(agent_id)["degraded"] is None and _gauge(ref.admin.metrics(), agent_id) == 0
    # Clearing took a shipment: everything acknowledged is in the store.
    assert status["shipped_seq"] == status["seq"]

    # The node is lost: the process dies and its local state is out of reach.
    ray.kill(host_of(agent_id, namespace="garrison"), no_restart=True)
    node2 = System(tmp_path / "node2", checkpoint_dir=ck, create=True)
    ref2 = _spawn(node2, agent_id, QUICK)
    try:
        assert ref2.admin.status()["restore"]["source"] in ("checkpoint", "journal")
        assert ref2.ask(GetItems(), timeout=20) == list(range(41))
    finally:
        node2.stop(agent_id)


@pytest.mark.ray
def test_a_read_only_store_is_notified_by_the_supervisor_and_clears_when_writable_again(
        data_dir, tmp_path, small_fs, refs):
    ck = small_fs.root / "ck"
    ck.mkdir()
    events = JsonlNotifier(tmp_path / "alerts.jsonl", alerts_only=True)
    wid = uid("w")
    probe = ProbePolicy(interval=0.1, timeout=2.0)
    assert probe.on_degraded is DegradedAction.NOTIFY  # the default
    spec = SupervisorSpec(id=uid("sup"), flags=SupervisorFlags(intensity=5, period=60, backoff=FAST),
                          children=[ChildSpec(id=wid, agent=Counter, config=QUICK, probe=probe)])
    sup = start_supervisor(spec, data_dir=data_dir, checkpoint_dir=ck, notifiers=[events])
    refs.append(sup)
    agent = System(data_dir, checkpoint_dir=ck).lookup(wid)
    for i in range(5):
        assert agent.ask(Append(item=i), timeout=20) == i + 1

    small_fs.read_only()
    for i in range(5, 15):
        assert agent.ask(Append(item=i), timeout=20) == i + 1
    episode = wait_for(lambda: agent.admin.status()["degraded"], timeout=30)
    assert (episode["reason"], episode["errno_name"]) == ("store_read_only", "EROFS")
    alert = wait_for(lambda: [e for e in events.read() if e["kind"] == "degraded"], timeout=30)[0]
    assert alert["child"] == wid and alert["alert"] is True
    assert (alert["details"]["errno"], alert["details"]["action"]) == ("EROFS", "notify")
    assert alert["details"]["since"] == episode["since"]
    # Notified, not restarted: the agent is up and still taking messages.
    child = sup.child(wid)
    assert (child["state"], child["restarts"]) == ("running", 0)
    assert agent.ask(Append(item=15), timeout=20) == 16

    small_fs.writable()
    sup.wait_until(lambda s: [e for e in s.events() if e["kind"] == "recovered" and e["child"] == wid], timeout=60)
    status = agent.admin.status()
    assert status["degraded"] is None and status["degraded_cleared"]["since"] == episode["since"]
    assert len([e for e in events.read() if e["kind"] == "degraded"]) == 1  # once per episode
    wait_for(lambda: (s := agent.admin.status())["shipped_seq"] == s["seq"], timeout=20)

    # SIGKILL: the supervisor restarts it; every acknowledged message is still there.
    os.kill(sup.child(wid)["pid"], signal.SIGKILL)
    sup.wait_until(lambda s: s.child(wid)["restarts"] == 1 and s.child(wid)["state"] == "running", timeout=60)
    assert System(data_dir, checkpoint_dir=ck).lookup(wid).ask(GetItems(), timeout=30) == list(range(16))


def _deliver(core: AgentCore, msg) -> tuple[bool, object]:
    return decode_reply(core.deliver(encode_envelope(make_envelope(msg, core.agent_id))))


def test_quarantine_halt_and_stop_finish_when_their_final_checkpoint_fails_and_leave_no_debris(
        tmp_path, small_fs):
    ck = small_fs.root / "ck"
    ck.mkdir()
    (tmp_path / "data").mkdir()
    spec = HostSpec("core-full", Counter, str(tmp_path / "data"), str(ck), config=QUIET)
    core = AgentCore(spec)
    core.ensure_started()
    for i in range(5):
        assert _deliver(core, Append(item=i)) == (True, i + 1)
    assert _deliver(core, Fill(start=0, count=20, size=100_000)) == (True, 20)  # a 2 MB body
    assert core.checkpoint() is not None

    small_fs.fill()
    small_fs.make_room(256 << 10)  # the journal still ships; the checkpoint's copy does not fit
    for i in range(5, 10):
        assert _deliver(core, Append(item=i)) == (True, i + 1)  # ASYNC: accepted, committed locally
    with pytest.raises(CheckpointError) as failed:
        core.checkpoint(force=True)
    assert failed.value.errno == errno.ENOSPC and failed.value.path.startswith(str(ck))
    assert "snapshot" in failed.value.message and core.shipper.shipped == core.store.seq
    agent_dir = ck / "core-full"
    # No debris on the full disk: no staging copy, no body without a manifest.
    assert list((agent_dir / "staging").iterdir()) == []
    bodies = {p.stem for p in agent_dir.glob("ckpt-*.mdb")}
    assert bodies == {p.stem for p in agent_dir.glob("ckpt-*.manifest")}
    degraded = core.status()["degraded"]
    assert (degraded["reason"], degraded["where"], degraded["attempts"]) == ("store_full", "checkpoint", 1)

    status = core.quarantine("looking into it")
    assert status["state"] == "quarantined" and status["degraded"]["where"] == "quarantine"
    core.release()
    status = core.halt("ops", "disk full")
    assert status["state"] == "halted" and status["degraded"]["where"] == "halt"
    status = core.stop()
    assert status["state"] == "stopped" and core.stopped.done()
    assert status["degraded"]["where"] == "stop" and status["degraded"]["attempts"] == 4
    assert list((agent_dir / "staging").iterdir()) == []

    # Nothing lost: the next incarnation restores it from the local LMDB (halted, as it was left).
    small_fs.free()
    core = AgentCore(spec)
    try:
        core.ensure_started()
        assert core.restore_report.source == "local" and core.lifecycle.value == "halted"
        core.unhalt("ops")
        assert _deliver(core, GetItems()) == (True, list(range(10)))
    finally:
        core.stop()


@pytest.mark.ray
def test_a_quarantine_policy_quarantines_a_child_whose_store_is_full_and_release_resumes_it(
        data_dir, small_fs, refs):
    ck = small_fs.root / "ck"
    ck.mkdir()
    wid = uid("w")
    probe = ProbePolicy(interval=0.1, timeout=2.0, on_degraded=DegradedAction.QUARANTINE)
    spec = SupervisorSpec(id=uid("sup"), flags=SupervisorFlags(intensity=5, period=60, backoff=FAST),
                          children=[ChildSpec(id=wid, agent=Counter, config=QUICK, probe=probe)])
    sup = start_supervisor(spec, data_dir=data_dir, checkpoint_dir=ck)
    refs.append(sup)
    agent = System(data_dir, checkpoint_dir=ck).lookup(wid)
    for i in range(5):
        assert agent.ask(Append(item=i), timeout=20) == i + 1

    small_fs.fill()
    assert agent.ask(Append(item=5), timeout=20) == 6  # accepted until the supervisor acts
    sup.wait_until(lambda s: s.child(wid)["state"] == "quarantined", timeout=30)
    quarantined = [e for e in sup.events() if e["kind"] == "quarantined" and e["child"] == wid]
    assert quarantined and quarantined[0]["why"].startswith("degraded: "), sup.events()[-8:]
    # The quarantine completed although its final checkpoint could not be written.  (The supervisor
    # marks the child, emits the event, then tells the agent: wait for the agent to have it.)
    status = wait_for(lambda: (s := agent.admin.status())["state"] == "quarantined" and s, timeout=30)
    assert status["degraded"]["reason"] == "store_full"
    assert sup.child(wid)["restarts"] == 0
    with pytest.raises(AgentNotRunning):
        agent.ask(Append(item=99), timeout=20)

    small_fs.free()
    wait_for(lambda: agent.admin.status()["degraded"] is None, timeout=60)
    sup.release(wid)
    assert agent.ask(GetItems(), timeout=20) == list(range(6))


def test_a_new_incarnation_on_a_full_store_sweeps_what_a_killed_one_left_mid_checkpoint(tmp_path, small_fs):
    """A predecessor SIGKILLed while copying its checkpoint body leaves a partial copy in ``staging``;
    on a full store that copy holds the room the next incarnation's epoch file needs."""
    ck, node = small_fs.root / "ck", tmp_path / "node"
    ck.mkdir()
    node.mkdir()
    spec = HostSpec("c-full", Counter, str(node), str(ck), config=QUICK)
    AgentCore(spec).stop()  # it has an epoch, a checkpoint and an audit log in the store
    leftover = ck / "c-full" / "staging" / "dead-incarnation"
    leftover.mkdir(parents=True)
    with open(leftover / "data.mdb", "wb", buffering=0) as f:  # the copy, until the store is full
        try:
            while True:
                f.write(b"\0" * (64 << 10))
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    small_fs.fill()
    with pytest.raises(OSError) as full:  # what the epoch file meets: no room (the path this test is for)
        (ck / "c-full" / "epochs" / "probe").write_bytes(b"x" * 4096)
    assert full.value.errno == errno.ENOSPC
    core = AgentCore(spec)  # claims its epoch once the leftover is swept
    try:
        assert core.epoch >= 2 and not leftover.exists()  # (the failed claim used up a number: never reused)
    finally:
        core.stop()


def test_an_audit_log_that_meets_a_full_store_says_the_store_is_full(tmp_path, small_fs):
    """Whichever write meets the full store first (the journal, a checkpoint, the audit log), the agent
    is degraded for the same reason: the audit log's error carries the OS error's errno too."""
    ck, node = small_fs.root / "ck", tmp_path / "node"
    ck.mkdir()
    node.mkdir()
    core = AgentCore(HostSpec("c-aud", Counter, str(node), str(ck), config=QUICK))
    try:
        core.ensure_started()
        core.audit.ship(core.store.seq)  # the log is open and holds the first records
        for n in range(50):
            core.deliver(encode_envelope(make_envelope(Append(item=n), "c-aud")))
        small_fs.fill()
        with pytest.raises(CheckpointError) as full:
            core.audit.ship(core.store.seq)
        assert full.value.errno == errno.ENOSPC and "audit log" in str(full.value), full.value
        small_fs.free()  # room again: the next shipment writes what the failed one could not
        core.audit.ship(core.store.seq)
        assert core.audit.status()["records"] == 51 and verify_log(core.audit.directory, []).ok  # version, 50 asks
    finally:
        small_fs.free()
        core.stop()


def test_every_write_of_the_directory_store_on_a_read_only_mount_is_a_checkpoint_error_with_errno_and_path(
        small_fs):
    from runtime import DirectoryStore
    from runtime._ckstore import SegmentInfo

    (small_fs.root / "ck").mkdir()
    store = DirectoryStore(small_fs.root / "ck")
    store.claim_epoch("a", {"pid": 1})  # the layout of an agent that started while the store was writable
    small_fs.read_only()
    attempts = {
        "staging": lambda: store.staging("a"),
        "put_segment": lambda: store.put_segment("a", SegmentInfo(1, 2, 1.0, 1), b"payload"),
        "claim_epoch": lambda: store.claim_epoch("a", {"pid": 1}),
        "record_base": lambda: store.record_base("a", 1, 0),
        "new agent": lambda: store.staging("b"),
    }
    for what, attempt in attempts.items():
        with pytest.raises(CheckpointError) as refused:
            attempt()
        assert refused.value.errno == errno.EROFS, what
        assert refused.value.details["errno_name"] == "EROFS", what
        assert refused.value.path.startswith(str(small_fs.root / "ck")), (what, refused.value.path)


def test_a_checkpoint_whose_manifest_does_not_fit_leaves_no_body_behind(small_fs):
    from runtime import DirectoryStore, Manifest

    store = DirectoryStore(small_fs.root)
    staging = store.staging("a")
    body = staging / "data.mdb"
    body.write_bytes(os.urandom(1 << 20))  # written while there was room
    small_fs.fill()
    manifest = Manifest(agent_id="a", agent_class="x:Y", config_version="1", seq=7, time=1.0, size=1 << 20,
                        checksum="sha256:0")
    with pytest.raises(CheckpointError) as refused:
        store.put_checkpoint(manifest, body)  # the body is renamed in place; its manifest finds no room
    assert refused.value.errno == errno.ENOSPC
    agent_dir = small_fs.root / "a"
    assert list(agent_dir.glob("ckpt-*")) == [] and list((agent_dir / "staging").iterdir()) == []
    assert store.list_checkpoints("a") == []


@pytest.mark.ray
def test_a_restart_policy_restarts_a_degraded_child_and_the_restarts_count_toward_the_intensity(
        data_dir, small_fs, refs):
    ck = small_fs.root / "ck"
    ck.mkdir()
    wid = uid("w")
    probe = ProbePolicy(interval=0.1, timeout=2.0, on_degraded=DegradedAction.RESTART)
    spec = SupervisorSpec(id=uid("sup"), flags=SupervisorFlags(intensity=1, period=60, backoff=FAST),
                          children=[ChildSpec(id=wid, agent=Counter, config=QUICK, probe=probe)])
    sup = start_supervisor(spec, data_dir=data_dir, checkpoint_dir=ck)
    refs.append(sup)
    agent = System(data_dir, checkpoint_dir=ck).lookup(wid)
    for i in range(3):
        assert agent.ask(Append(item=i), timeout=20) == i + 1
    assert agent.ask(Fill(start=0, count=20, size=100_000), timeout=20) == 20  # a 2 MB checkpoint body
    wait_for(lambda: (s := agent.admin.status())["last_checkpoint_seq"] == s["seq"], timeout=30)

    # Room for the journal and a new incarnation's epoch files, not for a checkpoint: every
    # incarnation degrades (its first checkpoint fails), so restarting does not help.
    small_fs.fill()
    small_fs.make_room(256 << 10)
    assert agent.ask(Append(item=3), timeout=20) == 4
    sup.wait_until(lambda s: s.status()["state"] == "quarantined", timeout=90)
    events = sup.events()
    exits = [e["details"]["reason"] for e in events if e["kind"] == "exited" and e["child"] == wid]
    assert exits == ["degraded", "degraded"], [(e["kind"], e.get("why")) for e in events if e["child"] == wid]
    assert len([e for e in events if e["kind"] == "restarted" and e["child"] == wid]) == 1
    assert "more than 1 restart(s) in 60" in sup.status()["escalation"]
    assert "(degraded:" in sup.status()["escalation"]

    # Nothing acknowledged was lost: the next incarnation has all of it.
    small_fs.free()
    system = System(data_dir, checkpoint_dir=ck)
    try:
        assert system.spawn(Counter, wid, config=QUICK, detached=False).ask(GetItems(), timeout=30) == [0, 1, 2, 3]
    finally:
        system.stop(wid)
