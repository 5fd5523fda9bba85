"""Packed agents without Ray: the open-agent policy on a fake clock, the routing of a packed handle,
the roster on disk, and resuming a passivated agent's incarnation in-process.

The packed host itself, on a real Ray, is tests/test_packed.py.
"""

from __future__ import annotations

import pytest

from protocols import encode_envelope, error_from_wire, make_envelope
from runtime import AgentConfig, ConfigError, Fenced
from runtime._ckstore import DirectoryStore
from runtime._core import AgentCore
from runtime._incarnation import resume_incarnation
from runtime._packed_handle import PackedHandle
from runtime._packed_policy import ActiveSet
from runtime._packed_roster import Roster
from runtime._packing import LANES, PACKED_PREFIX, Packing, host_name, lane_of, packing_of
from runtime._reply import decode_reply
from runtime._spec import HostSpec

from .packed_agents import IdleSession, Note, Notes, Session


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the policy ------------------------------------------------------------------------------------


def test_least_recently_used_agents_past_the_capacity_are_the_victims_oldest_first():
    clock = Clock()
    active = ActiveSet(3, clock=clock)
    for name in "abcde":
        clock.now += 1
        active.opened(name, idle_timeout=60)
    assert active.over() == 2
    assert active.victims() == ["a", "b"]
    active.touched("a")  # used again: now the most recent
    assert active.victims() == ["b", "c"]
    assert active.ids() == ["b", "c", "d", "e", "a"]


def test_agents_idle_past_their_own_timeout_are_victims_whatever_the_capacity():
    clock = Clock()
    active = ActiveSet(100, clock=clock)
    active.opened("quick", idle_timeout=1)
    active.opened("slow", idle_timeout=10)
    assert active.victims() == [] and active.next_due() == pytest.approx(1)
    clock.now += 1
    assert active.victims() == ["quick"] and active.next_due() == 0
    active.touched("quick")
    assert active.victims() == [] and active.next_due() == pytest.approx(1)
    clock.now += 9
    assert active.victims() == ["slow", "quick"]  # least recently used first


def test_agents_in_use_are_never_victims_and_the_next_in_line_is_taken_instead():
    clock = Clock()
    active = ActiveSet(2, clock=clock)
    for name in "abcd":
        active.opened(name, idle_timeout=60)
    busy = {"a"}
    assert active.victims(keep=busy.__contains__) == ["b", "c"]
    clock.now += 60
    assert active.victims(keep=busy.__contains__) == ["b", "c", "d"]


def test_closing_forgets_and_an_empty_set_has_nothing_due():
    active = ActiveSet(1, clock=Clock())
    assert active.next_due() is None and active.victims() == []
    active.opened("a", idle_timeout=5)
    assert "a" in active and len(active) == 1
    active.closed("a")
    active.closed("a")  # twice: no error
    active.touched("a")  # not open: nothing happens
    assert "a" not in active and active.next_due() is None
    with pytest.raises(ValueError):
        ActiveSet(0)


# -- the option, the host and the lane ---------------------------------------------------------------


def test_a_class_is_packed_by_its_class_attribute():
    assert packing_of(Session) == Packing(host="test-session", idle_timeout=600.0)
    assert packing_of(IdleSession).idle_timeout == 0.5

    class Plain:
        pass

    class Flagged:
        packed = True

    class Wrong:
        packed = "yes"

    assert packing_of(Plain) is None
    assert packing_of(Flagged) == Packing()
    with pytest.raises(ConfigError):
        packing_of(Wrong)


def test_hosts_and_lanes_are_stable_functions_of_the_agent_id_and_spread_them():
    one, four = Packing(host="s"), Packing(host="s", hosts=4)
    assert host_name(one, "x") == f"{PACKED_PREFIX}s"
    ids = [f"customer-{i}" for i in range(400)]
    hosts = {host_name(four, i) for i in ids}
    assert hosts == {f"{PACKED_PREFIX}s-{k}" for k in range(4)}
    assert all(host_name(four, i) == host_name(four, i) for i in ids)
    lanes = [lane_of(i) for i in ids]
    assert set(lanes) == {f"lane{k}" for k in range(LANES)}
    # Independent of the host's bucket: every host of four uses every lane.
    for h in hosts:
        assert len({lane_of(i) for i in ids if host_name(four, i) == h}) == LANES


# -- the handle --------------------------------------------------------------------------------------


class _Method:
    def __init__(self, log: list, name: str, options: dict | None = None) -> None:
        self.log, self.name, self.opts = log, name, options or {}

    def options(self, **options):
        return _Method(self.log, self.name, {**self.opts, **options})

    def remote(self, *args, **kwargs):
        self.log.append((self.name, self.opts, args, kwargs))
        return "ref"


class _Host:
    def __init__(self) -> None:
        self.log: list = []

    def __getattr__(self, name):
        return _Method(self.log, name)


def test_a_packed_handle_puts_the_agent_first_and_messages_on_the_agents_lane():
    host = _Host()
    handle = PackedHandle(host, "a-1", LANES)
    handle.deliver.remote(b"raw")
    handle.deliver_batch.remote(b"blob")
    handle.status.remote()
    handle.halt.options(name="x").remote("ops", "why", auth="runtime")
    lane = lane_of("a-1")
    assert host.log == [
        ("deliver", {"concurrency_group": lane}, ("a-1", b"raw"), {}),
        ("deliver_batch", {"concurrency_group": lane}, ("a-1", b"blob"), {}),
        ("call", {}, ("a-1", "status", [], {}), {}),
        ("call", {"name": "x"}, ("a-1", "halt", ["ops", "why"], {"auth": "runtime"}), {}),
    ]
    with pytest.raises(AttributeError):
        handle._private  # noqa: B018 - the probe pickle and copy make
    assert handle.__reduce__() == (PackedHandle, (host, "a-1", LANES))


# -- the roster ---------------------------------------------------------------------------------------


def test_the_roster_keeps_specs_and_which_agents_were_open(tmp_path):
    roster = Roster(tmp_path / "packed" / "h")
    spec = HostSpec("a-1", Session, str(tmp_path), str(tmp_path), config=AgentConfig(window=7), init={})
    roster.put(spec)
    roster.put(HostSpec("a-2", Session, str(tmp_path), str(tmp_path)))
    assert roster.ids() == ["a-1", "a-2"]
    loaded = Roster(tmp_path / "packed" / "h").load("a-1")  # as a restarted host reads it
    assert loaded.agent_cls is Session and loaded.config.window == 7
    assert roster.load("nobody") is None
    roster.mark_open("a-1")
    roster.mark_open("a-2")
    roster.mark_closed("a-2")
    assert roster.opened() == ["a-1"]
    roster.remove("a-1")
    assert roster.ids() == ["a-2"] and roster.opened() == []


# -- resuming in-process ------------------------------------------------------------------------------


def _ask(core: AgentCore, msg):
    ok, value = decode_reply(core.deliver(encode_envelope(make_envelope(msg, core.agent_id))))
    return value if ok else error_from_wire(value)


def _spec(tmp_path, node: str = "node") -> HostSpec:
    (tmp_path / node).mkdir(exist_ok=True)
    (tmp_path / "ck").mkdir(exist_ok=True)
    return HostSpec("p-1", Session, str(tmp_path / node), str(tmp_path / "ck"))


def test_a_passivated_agent_resumes_under_its_epoch_with_its_state_and_no_new_claim(tmp_path):
    spec = _spec(tmp_path)
    core = AgentCore(spec)
    core.ensure_started()
    assert _ask(core, Note(item=7)) == 1
    epoch, incarnation = core.epoch, core.incarnation
    core.stop()
    ckstore = DirectoryStore(tmp_path / "ck")
    inc = resume_incarnation(spec, epoch, data_root=tmp_path / "node", ckstore=ckstore)
    resumed = AgentCore(spec, incarnation=inc)
    resumed.ensure_started()
    assert resumed.epoch == epoch and resumed.incarnation == incarnation
    assert resumed.restore_report.source == "resumed"
    assert _ask(resumed, Notes()) == [7]
    assert _ask(resumed, Note(item=8)) == 2
    assert not ckstore.superseded("p-1", epoch)  # no epoch claimed for the resume
    resumed.stop()


def test_no_resume_once_a_later_epoch_exists_or_without_local_files(tmp_path):
    spec = _spec(tmp_path)
    core = AgentCore(spec)
    core.ensure_started()
    _ask(core, Note(item=1))
    epoch = core.epoch
    core.stop()
    ckstore = DirectoryStore(tmp_path / "ck")
    assert resume_incarnation(spec, epoch, data_root=tmp_path / "elsewhere", ckstore=ckstore) is None
    other = AgentCore(_spec(tmp_path, "node-b"))  # the agent started on another node: a later epoch
    other.stop()
    with pytest.raises(Fenced):
        resume_incarnation(spec, epoch, data_root=tmp_path / "node", ckstore=ckstore)
    # The lock was let go: a start on these files still works (and restores past the fork rules).
    again = AgentCore(spec)
    assert again.epoch > other.epoch
    again.stop()


def test_a_passivation_between_checkpoints_ships_the_journal_only_and_a_restore_elsewhere_replays_it(tmp_path):
    spec = _spec(tmp_path)
    core = AgentCore(spec)
    core.ensure_started()
    assert _ask(core, Note(item=1)) == 1
    core.stop()  # a graceful stop: a final checkpoint
    ckstore = DirectoryStore(tmp_path / "ck")
    checkpoints, segments = ckstore.list_checkpoints("p-1"), len(ckstore.list_segments("p-1"))
    resumed = AgentCore(spec, incarnation=resume_incarnation(spec, core.epoch, data_root=tmp_path / "node",
                                                             ckstore=ckstore))
    resumed.ensure_started()
    assert _ask(resumed, Note(item=2)) == 2
    resumed.stop(checkpoint=False)  # a passivation before a checkpoint is due
    assert ckstore.list_checkpoints("p-1") == checkpoints, "no checkpoint taken"
    assert len(ckstore.list_segments("p-1")) > segments, "the journal was shipped"
    elsewhere = AgentCore(_spec(tmp_path, "node-b"))  # another node: the checkpoint, then the journal
    elsewhere.ensure_started()
    assert _ask(elsewhere, Notes()) == [1, 2]
    assert elsewhere.restore_report.source != "local"
    elsewhere.stop()
