"""The side-effect ledger on a real LMDB: intents, outcomes, deferred outcomes, what is in doubt."""

from __future__ import annotations

import pytest

from runtime._ledger import Ledger
from runtime._store import DELETE, LmdbStore, Op
from runtime.exceptions import StateError


@pytest.fixture
def store(tmp_path):
    s = LmdbStore(tmp_path / "db", agent_id="clerk", map_size=1 << 24, sync=False)
    yield s
    s.close()


def _intent(ledger: Ledger, key: str, **state) -> None:
    ledger.intent(key, tag="t@1", args={"n": key}, digest="d", idempotent=True, state=state.items())


def _reopened(store: LmdbStore) -> Ledger:
    """What the next incarnation sees: only what was committed."""
    return Ledger(store, agent_id="clerk")


def test_an_intent_without_an_outcome_is_in_doubt_until_its_outcome_commits(store):
    ledger = Ledger(store, agent_id="clerk")
    _intent(ledger, "k1")
    assert ledger.in_doubt_count() == 1 and [e["key"] for e in ledger.in_doubt()] == ["k1"]
    assert _reopened(store).in_doubt_count() == 1, "found again by the scan when the ledger opens"
    ledger.outcome("k1", {"code": "ok"}, [("budget", {"spent": 1})])
    assert ledger.in_doubt_count() == 0 and ledger.get("k1")[1]["code"] == "ok"
    again = _reopened(store)
    assert again.in_doubt_count() == 0 and again.state("budget") == {"spent": 1}


def test_a_deferred_outcome_counts_at_once_and_rides_with_the_next_intent(store):
    ledger = Ledger(store, agent_id="clerk")
    _intent(ledger, "k1")
    seq = store.seq
    ledger.outcome("k1", {"code": "ok"}, [("breaker/agent", "closed")], defer=True)
    assert store.seq == seq, "nothing committed yet"
    assert ledger.get("k1")[1]["code"] == "ok" and ledger.state("breaker/agent") == "closed"
    assert ledger.in_doubt_count() == 0
    assert _reopened(store).get("k1")[1] is None, "a crash now would leave k1 in doubt (and re-call it)"
    _intent(ledger, "k2")
    reopened = _reopened(store)
    assert reopened.get("k1")[1]["code"] == "ok" and reopened.state("breaker/agent") == "closed"
    assert [e["key"] for e in reopened.in_doubt()] == ["k2"]


def test_flush_commits_the_deferred_outcomes_once_and_then_nothing(store):
    ledger = Ledger(store, agent_id="clerk")
    for key in ("a", "b"):
        _intent(ledger, key)
        ledger.outcome(key, {"code": "ok"}, defer=True)
    ledger.flush()
    seq = store.seq
    ledger.flush()
    assert store.seq == seq, "an empty flush commits nothing"
    reopened = _reopened(store)
    assert [e["outcome"]["code"] for e in reopened.entries()] == ["ok", "ok"] and reopened.in_doubt_count() == 0


def test_a_failed_commit_keeps_the_deferred_outcomes_for_the_next(store, monkeypatch):
    ledger = Ledger(store, agent_id="clerk")
    _intent(ledger, "k1")
    ledger.outcome("k1", {"code": "ok"}, defer=True)
    real = store.commit

    def failing(ops, **kw):
        raise StateError("commit failed: disk full")

    monkeypatch.setattr(store, "commit", failing)
    with pytest.raises(StateError):
        ledger.flush()
    monkeypatch.setattr(store, "commit", real)
    assert ledger.get("k1")[1]["code"] == "ok"
    ledger.flush()
    assert _reopened(store).get("k1")[1]["code"] == "ok"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_trim_deletes_what_is_past_the_retention_with_its_outcome_and_keeps_what_is_in_doubt(store):
    clock = Clock(1_000.0)
    ledger = Ledger(store, agent_id="clerk", clock=clock)
    for n in range(5):  # k0..k4 at 1000..1004; k2 stays in doubt
        clock.now = 1_000.0 + n
        _intent(ledger, f"k{n}")
        if n != 2:
            ledger.outcome(f"k{n}", {"code": "ok"})
    assert ledger.trim(1_003.5, retention=1.0, batch=100) == 2, "k0 and k1; k2 is in doubt; k3 is recent"
    assert [e["key"] for e in ledger.entries(limit=0)] == ["k2", "k3", "k4"]
    assert ledger.trim(1_003.5, retention=1.0) == 0
    ledger.outcome("k2", {"code": "unknown"})
    assert ledger.trim(1_010.0, retention=1.0, batch=2) == 2, "a batch at a time, oldest first"
    assert [e["key"] for e in ledger.entries(limit=0)] == ["k4"]
    assert store.scan("ledger", b"t/") == [(store.scan("ledger", b"t/")[0][0], b"")]
    assert _reopened(store).entries(limit=0)[0]["key"] == "k4"


def test_a_ledger_written_before_the_time_index_is_indexed_once_when_opened(store):
    ledger = Ledger(store, agent_id="clerk", clock=Clock(5.0))
    _intent(ledger, "old")
    ledger.outcome("old", {"code": "ok"})
    [(tkey, _)] = store.scan("ledger", b"t/")
    store.commit([Op("ledger", DELETE, tkey, None)])  # as an older Garrison left it
    again = Ledger(store, agent_id="clerk", clock=Clock(100.0))
    assert len(store.scan("ledger", b"t/")) == 1 and again.index() == 0
    assert again.trim(100.0, retention=10.0) == 1 and again.entries(limit=0) == []
