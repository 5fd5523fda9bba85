"""The degraded record and the retry delay: pure logic, an injected clock and random numbers, no sleeps."""

from __future__ import annotations

import errno

import lmdb
import pytest

from runtime import CheckpointError
from runtime._ckstore import store_error
from runtime._degraded import DegradedState, reason_of, retry_backoff


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _full(path: str = "/ck/a/staging/x") -> CheckpointError:
    return store_error("snapshot failed", OSError(errno.ENOSPC, "No space left on device", path))


# -- retry_backoff -----------------------------------------------------------------------------


def test_the_retry_wait_doubles_from_the_ship_interval_up_to_the_checkpoint_interval():
    backoff = retry_backoff(ship_interval=1.0, checkpoint_interval=30.0)
    assert [backoff.delay(n) for n in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff.delay(10_000) == 30.0
    assert retry_backoff(ship_interval=5.0, checkpoint_interval=5.0).cap == 5.0


def test_up_to_half_of_the_retry_wait_is_random():
    backoff = retry_backoff(ship_interval=2.0, checkpoint_interval=100.0)
    assert backoff.delay(2, 0.0) == pytest.approx(8.0)
    assert backoff.delay(2, 0.999999) == pytest.approx(4.0, rel=1e-5)
    assert backoff.delay(2, 0.5) == pytest.approx(6.0)


# -- reasons --------------------------------------------------------------------------------


@pytest.mark.parametrize(("err", "reason"), [
    (errno.ENOSPC, "store_full"), (errno.EDQUOT, "store_full"), (errno.EROFS, "store_read_only"),
    (errno.EACCES, "store_permission_denied"), (errno.EPERM, "store_permission_denied"),
    (errno.EIO, "store_error"),
])
def test_the_reason_follows_the_errno(err, reason):
    assert reason_of(store_error("x", OSError(err, "boom"))) == reason


def test_a_store_error_without_errno_and_a_foreign_error_have_their_own_reasons():
    assert reason_of(CheckpointError("unreachable")) == "store_error"
    assert reason_of(RuntimeError("bug")) == "background_error"


def test_store_error_carries_errno_and_path_and_reads_lmdbs_strerror():
    exc = _full()
    assert (exc.errno, exc.details["errno_name"], exc.path) == (errno.ENOSPC, "ENOSPC", "/ck/a/staging/x")

    # py-lmdb says "call: strerror", without the number (as it raised on a full tmpfs).
    exc = store_error("snapshot failed", lmdb.DiskError("mdb_env_copy3: No space left on device"), "/ck/a")
    assert (exc.errno, exc.details["errno_name"], exc.path) == (errno.ENOSPC, "ENOSPC", "/ck/a")
    assert isinstance(exc, CheckpointError) and "No space left" in exc.message
    assert store_error("x", lmdb.Error("mdb_env_copy3: File exists")).errno == errno.EEXIST
    assert store_error("x", lmdb.Error("no errno here")).errno is None


# -- the record ----------------------------------------------------------------------------


def test_the_first_failure_begins_an_episode_and_later_ones_count_attempts():
    clock, changes = Clock(), []
    state = DegradedState(clock=clock, on_change=changes.append)
    assert not state.active and state.status() == {"degraded": None, "degraded_cleared": None}
    first = state.failed(_full(), "background")
    assert (first.reason, first.errno, first.errno_name, first.since, first.attempts) == (
        "store_full", errno.ENOSPC, "ENOSPC", 1000.0, 1)
    assert first.path == "/ck/a/staging/x" and first.error_type == "CheckpointError"
    clock.now = 1005.0
    second = state.failed(store_error("again", OSError(errno.EROFS, "read-only")), "stop")
    # The episode keeps its first cause and start; attempts, last error and place move on.
    assert (second.reason, second.since, second.attempts, second.last_attempt, second.where) == (
        "store_full", 1000.0, 2, 1005.0, "stop")
    assert "read-only" in second.last_error
    assert changes == [True]  # the gauge is told once per transition
    assert state.probe() == {"since": 1000.0, "reason": "store_full", "attempts": 2, "errno": "ENOSPC",
                             "path": "/ck/a/staging/x", "last_error": second.last_error}


def test_a_success_clears_the_episode_and_keeps_it_with_its_cleared_time():
    clock, changes = Clock(), []
    state = DegradedState(clock=clock, on_change=changes.append)
    assert state.recovered() is None and changes == []  # healthy stays healthy, silently
    state.failed(_full())
    clock.now = 1042.0
    ended = state.recovered()
    assert ended is not None and ended.cleared_at == 1042.0 and ended.since == 1000.0
    assert not state.active and state.probe() is None
    status = state.status()
    assert status["degraded"] is None and status["degraded_cleared"]["cleared_at"] == 1042.0
    assert changes == [True, False]
    # A new episode starts afresh; the cleared one is still there until it clears too.
    clock.now = 1100.0
    again = state.failed(_full())
    assert (again.since, again.attempts) == (1100.0, 1)
    assert state.status()["degraded_cleared"]["since"] == 1000.0
