"""The supervisors package's public surface, its one-rooted errors, and error translation at its boundary."""

from __future__ import annotations

import inspect
import pathlib
import re

import pytest
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

import supervisors
from runtime import GarrisonError
from supervisors import _ref
from supervisors import exceptions as sexc
from supervisors._ref import SupervisorRef


def test_public_surface_is_sorted_complete_and_deliberate():
    assert supervisors.__all__ == sorted(supervisors.__all__)
    assert all(hasattr(supervisors, name) for name in supervisors.__all__)
    assert {"ChildSpec", "SupervisorSpec", "SupervisorFlags", "start_supervisor", "halt", "SupervisorRef",
            "Notifier", "JsonlNotifier", "WebhookNotifier", "LogNotifier", "SupervisorError"} <= set(supervisors.__all__)
    assert not [n for n in supervisors.__all__ if n.startswith("_")]


def test_every_supervisor_error_has_one_root_a_docstring_and_a_place_in_the_tree():
    classes = [c for _, c in inspect.getmembers(sexc, inspect.isclass) if c.__module__ == sexc.__name__]
    assert len(classes) >= 6
    for cls in classes:
        assert issubclass(cls, sexc.SupervisorError) and issubclass(cls, GarrisonError)
        assert cls.__doc__ and cls.__name__ in sexc.__doc__
        assert cls.__name__ in sexc.__all__


def test_supervisors_import_nothing_that_imports_them_back():
    root = pathlib.Path(supervisors.__file__).parent.parent
    pattern = re.compile(r"^\s*(?:from|import)\s+supervisors\b", re.M)
    for package in ("runtime", "protocols"):
        for path in (root / package).glob("*.py"):
            assert not pattern.search(path.read_text()), f"{package}/{path.name} must not import supervisors"


class _Method:
    def __init__(self, exc):
        self.exc = exc

    def remote(self, *args, **kwargs):
        return self.exc


class _Handle:
    def __init__(self, exc):
        self.exc = exc

    def __getattr__(self, name):
        return _Method(self.exc)


@pytest.fixture
def raising_get(monkeypatch):
    def fake_get(exc, timeout=None):
        raise exc

    monkeypatch.setattr("supervisors._ref.ray.get", fake_get)


def test_an_error_raised_by_the_supervisor_comes_back_as_itself(raising_get):
    cause = sexc.ChildNotFound("no child 'x'", supervisor="s", child="x")
    ref = SupervisorRef("s", _Handle(RayTaskError("which_children", "tb", cause)))
    with pytest.raises(sexc.ChildNotFound) as info:
        ref.which_children()
    assert info.value.details == {"supervisor": "s", "child": "x"}
    assert isinstance(info.value.__cause__, RayTaskError)


def test_a_foreign_error_inside_the_supervisor_becomes_a_supervisor_error(raising_get):
    ref = SupervisorRef("s", _Handle(RayTaskError("status", "tb", ZeroDivisionError("x"))))
    with pytest.raises(sexc.SupervisorError) as info:
        ref.status()
    assert type(info.value) is sexc.SupervisorError and "failed in status" in str(info.value)


@pytest.mark.parametrize("exc, fragment", [(RayActorError(), "is dead"), (GetTimeoutError("t"), "did not answer")])
def test_a_dead_or_silent_supervisor_is_unavailable(raising_get, exc, fragment):
    ref = SupervisorRef("s", _Handle(exc))
    with pytest.raises(sexc.SupervisorUnavailable) as info:
        ref.status()
    assert fragment in str(info.value) and info.value.__cause__ is exc


def test_looking_up_a_missing_supervisor_is_unavailable(ray_session):
    with pytest.raises(sexc.SupervisorUnavailable):
        SupervisorRef.lookup("no-such-supervisor-here")


class _Clock:
    def __init__(self):
        self.now = 0.0

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


class _Call:
    def __init__(self, method):
        self.method = method

    def remote(self, *args):
        return (self.method, *args)


class _Tree:
    """A scripted supervisor: an event every ``every`` s until ``busy_until``; its call answers at ``answers_at``."""

    def __init__(self, clock, *, every, busy_until, answers_at):
        self.clock, self.every, self.busy_until, self.answers_at = clock, every, busy_until, answers_at
        self.events, self.start, self.which_children = _Call("events"), _Call("start"), _Call("which_children")

    def events_seen(self):
        return int(min(self.clock.now, self.busy_until) // self.every)

    def wait(self, objects, timeout):
        self.clock.now = min(self.clock.now + timeout, max(self.answers_at, self.clock.now))
        return ([o for o in objects if self.clock.now >= self.answers_at], [])

    def get(self, obj, timeout=None):
        method, *args = obj
        if method == "events":
            return [{"index": i} for i in range(args[0], self.events_seen())]
        return [] if method == "which_children" else "started"


@pytest.fixture
def scripted(monkeypatch):
    clock = _Clock()

    def make(**script):
        tree = _Tree(clock, **script)
        monkeypatch.setattr("supervisors._ref.time", clock)
        monkeypatch.setattr("supervisors._ref.ray.wait", tree.wait)
        monkeypatch.setattr("supervisors._ref.ray.get", tree.get)
        return tree, clock

    return make


def test_a_start_that_keeps_reporting_progress_is_waited_for_past_its_timeout(scripted):
    tree, clock = scripted(every=5.0, busy_until=60.0, answers_at=60.0)
    assert _ref._call("s", tree, "start", timeout=8.0, progressing=True) == "started"
    assert clock.now >= 60.0  # seven and a half timeouts, each bridged by an event


def test_a_start_that_goes_silent_is_given_up_a_timeout_after_its_last_event(scripted):
    tree, clock = scripted(every=5.0, busy_until=10.0, answers_at=1000.0)
    with pytest.raises(sexc.SupervisorUnavailable, match="reported no progress for 8.0s"):
        _ref._call("s", tree, "start", timeout=8.0, progressing=True)
    assert 18.0 <= clock.now <= 20.0  # the last event at 10 s, then 8 s of silence (polled each second)


def test_wait_until_waits_while_the_supervisor_reports_events_and_not_after(scripted):
    tree, clock = scripted(every=5.0, busy_until=40.0, answers_at=0.0)
    ref = SupervisorRef("s", tree)
    assert ref.wait_until(lambda r: clock.now >= 35.0, timeout=8.0, interval=1.0)
    with pytest.raises(TimeoutError, match="no supervisor event, for 8.0s"):
        ref.wait_until(lambda r: False, timeout=8.0, interval=1.0)
    assert 48.0 <= clock.now <= 50.0
