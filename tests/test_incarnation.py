"""``runtime._incarnation``: each start claims a newer epoch and restores; a failed start holds nothing."""

from __future__ import annotations

import pytest

from runtime import AgentAlreadyRunning, AgentStartError, Fenced, RestoreError
from runtime._incarnation import start_incarnation
from runtime._spec import HostSpec

from .agents import Counter


@pytest.fixture
def spec(tmp_path):
    for d in ("data", "ck"):
        (tmp_path / d).mkdir()
    return HostSpec("inc-1", Counter, str(tmp_path / "data"), str(tmp_path / "ck"))


def test_each_start_claims_a_newer_epoch_and_counts_the_incarnation(spec):
    first = start_incarnation(spec)
    assert first.number == 1 and first.restore_report.source == "fresh"
    first.close()
    second = start_incarnation(spec)
    try:
        assert second.epoch > first.epoch and second.number == 2
        assert second.restore_report.source == "local"
        assert [r["incarnation"] for r in second.store.meta("restores")] == [1, 2]
        assert second.store.meta("identity") == {"agent_id": "inc-1", "agent_class": spec.class_path}
        # The older incarnation is fenced by the newer claim.
        with pytest.raises(Fenced):
            first.fence.check("commit")
        second.fence.check("commit")
    finally:
        second.close()


def test_one_live_incarnation_per_data_directory(spec):
    live = start_incarnation(spec)
    try:
        with pytest.raises(AgentAlreadyRunning):
            start_incarnation(spec)
    finally:
        live.close()
    start_incarnation(spec).close()  # the lock went with the close


def test_a_class_the_worker_cannot_load_fails_before_taking_anything(spec, tmp_path):
    broken = HostSpec("inc-1", None, spec.data_dir, spec.checkpoint_dir, class_name="mine:Agent",
                      load_error="ModuleNotFoundError: No module named 'mine'")
    with pytest.raises(AgentStartError) as info:
        start_incarnation(broken)
    assert "No module named 'mine'" in info.value.message and "working_dir" in info.value.message
    assert not (tmp_path / "data" / "agents" / "inc-1").exists()
    start_incarnation(spec).close()  # nothing left locked


def test_a_restore_that_fails_releases_the_host_lock(spec, tmp_path):
    state = tmp_path / "data" / "agents" / "inc-1" / "state"
    state.parent.mkdir(parents=True)
    state.write_text("not a directory: LMDB cannot open it")
    with pytest.raises(RestoreError):
        start_incarnation(spec)
    state.unlink()
    start_incarnation(spec).close()  # the lock was released
