"""The work queue's rules (``runtime._queue_logic``) over a dict and a fake clock: no Ray, no sleeping."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime import LeaseLost, QueueError, RetryPolicy, UnknownItem
from runtime._queue_logic import MemoryKV, QueueLogic


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(clock: Clock, **policy) -> QueueLogic:
    return QueueLogic(MemoryKV(), clock, RetryPolicy(**{"base": 1.0, "factor": 2.0, "max": 10.0,
                                                        "max_attempts": 3, **policy}))


def add(q: QueueLogic, key: str, priority: int = 0, **extra) -> dict:
    return q.enqueue([{"key": key, "payload": {"n": key}, "priority": priority, **extra}])[0]


def ids(claimed: list[dict]) -> list[str]:
    return [c["id"] for c in claimed]


def test_claims_take_the_highest_priority_first_then_first_in_first_out(clock):
    q = make(clock)
    for key, priority in [("a", 0), ("b", 5), ("c", 0), ("d", 5), ("e", -3), ("f", 9)]:
        add(q, key, priority)
    assert ids(q.claim("w", limit=3)) == ["f", "b", "d"]
    assert ids(q.claim("w", limit=10)) == ["a", "c", "e"]
    assert q.claim("w", limit=10) == []


def test_a_claim_gives_the_payload_a_token_and_the_lease_end(clock):
    q = make(clock)
    add(q, "a", 2)
    [c] = q.claim("w1", limit=5, lease_seconds=7)
    assert c == {"id": "a", "token": 1, "lease_until": clock.now + 7, "payload": {"n": "a"}, "priority": 2}
    assert q.item("a")["state"] == "leased" and q.item("a")["worker"] == "w1"


def test_a_duplicate_enqueue_is_one_item_and_answers_the_existing_state(clock):
    q = make(clock)
    assert add(q, "a") == {"id": "a", "duplicate": False, "state": "pending", "attempts": 0}
    q.claim("w")
    assert add(q, "a", priority=9) == {"id": "a", "duplicate": True, "state": "leased", "attempts": 1}
    answers = q.enqueue([{"key": "a"}, {"key": "b"}, {"key": "b"}])
    assert [a["duplicate"] for a in answers] == [True, False, True]
    assert q.stats()["pending"]["count"] == 1 and q.stats()["leased"]["count"] == 1


def test_extend_moves_the_lease_end_and_complete_records_the_result_once(clock):
    q = make(clock)
    add(q, "a")
    [c] = q.claim("w", lease_seconds=5)
    clock.advance(4)
    assert q.extend("a", c["token"], 5)["lease_until"] == clock.now + 5
    clock.advance(4)  # past the first lease's end, inside the extended one
    assert q.claim("w") == []
    assert q.complete("a", c["token"], {"ok": 1}) == {"id": "a", "status": "completed", "seq": 1}
    assert q.complete("a", c["token"], {"ok": 2}) == {"id": "a", "status": "already_completed", "seq": 1}
    page = q.results()
    assert [(r["id"], r["result"]) for r in page["items"]] == [("a", {"ok": 1})], "no second result"
    assert q.stats()["done"]["count"] == 1


def test_a_stale_token_is_refused_after_the_lease_expired_and_another_worker_claimed(clock):
    q = make(clock)
    add(q, "a")
    [first] = q.claim("w1", lease_seconds=2)
    clock.advance(2)
    [second] = q.claim("w2", lease_seconds=2)
    assert (second["id"], second["token"]) == ("a", 2), "the expired lease made it claimable, attempt counted"
    for op in (lambda: q.complete("a", first["token"], "late"), lambda: q.extend("a", first["token"]),
               lambda: q.fail("a", first["token"], "late")):
        with pytest.raises(LeaseLost) as err:
            op()
        assert err.value.details["current_token"] == 2 and isinstance(err.value, QueueError)
    assert q.complete("a", second["token"], "ok")["status"] == "completed"
    with pytest.raises(LeaseLost, match="claimed again"):
        q.complete("a", first["token"], "late")


def test_an_expired_lease_is_lost_even_before_anyone_claims_again(clock):
    q = make(clock)
    add(q, "a")
    [c] = q.claim("w", lease_seconds=2)
    clock.advance(2)
    with pytest.raises(LeaseLost, match="expired"):
        q.complete("a", c["token"], "late")
    with pytest.raises(LeaseLost, match="expired"):
        q.extend("a", c["token"])
    stats = q.stats()  # applies the expiry
    assert stats["pending"]["count"] == 1 and stats["leased"]["count"] == 0
    assert "lease expired" in q.item("a")["reason"]


def test_unknown_items_are_refused(clock):
    q = make(clock)
    with pytest.raises(UnknownItem):
        q.complete("nope", 1)
    with pytest.raises(UnknownItem):
        q.item("nope")
    assert q.complete_many([("nope", 1, None)]) == [{"id": "nope", "status": "unknown"}]


def test_fail_retries_after_an_exponential_backoff(clock):
    q = make(clock, base=1.0, factor=3.0, max=5.0, max_attempts=5)
    add(q, "a")
    delays = []
    for attempt in range(1, 5):
        [c] = q.claim("w")
        assert c["token"] == attempt
        answer = q.fail("a", c["token"], f"boom {attempt}")
        assert answer["state"] == "pending"
        delays.append(answer["retry_at"] - clock.now)
        clock.advance(delays[-1] - 0.001)
        assert q.claim("w") == [], "not claimable before the backoff ends"
        clock.advance(0.001)
    assert delays == [1.0, 3.0, 5.0, 5.0]
    assert q.claim("w")[0]["token"] == 5


def test_an_item_is_dead_after_max_attempts_failures_or_expiries(clock):
    q = make(clock, max_attempts=3, base=0.0)
    add(q, "a")
    add(q, "b", max_attempts=2)  # its own limit
    for _ in range(2):
        claimed = q.claim("w", limit=2, lease_seconds=1)
        assert ids(claimed) == ["a", "b"]
        for c in claimed:
            q.fail(c["id"], c["token"], "boom")
    assert q.item("b")["state"] == "dead" and q.item("b")["reason"] == "boom"
    [c] = q.claim("w", lease_seconds=1)  # "a", third claim: its lease expires
    assert c["id"] == "a" and c["token"] == 3
    add(q, "c")
    clock.advance(1)
    assert ids(q.claim("w")) == ["c"]
    assert q.item("a")["state"] == "dead" and "lease expired" in q.item("a")["reason"]
    assert q.claim("w") == []
    assert q.fail("c", 1, "not retryable", retry=False)["state"] == "dead"
    stats = q.stats()
    assert stats["dead"]["count"] == 3 and stats["pending"]["count"] == 0 and stats["depth"] == 0


def test_results_come_in_completion_order_with_a_cursor_and_ack_drops_them(clock):
    q = make(clock)
    for key in "abcde":
        add(q, key)
    claimed = q.claim("w", limit=5)
    for c in reversed(claimed):
        q.complete(c["id"], c["token"], c["id"].upper())
    page = q.results(after=0, limit=2)
    assert [(r["id"], r["seq"], r["result"]) for r in page["items"]] == [("e", 1, "E"), ("d", 2, "D")]
    page = q.results(after=page["cursor"], limit=10)
    assert [r["id"] for r in page["items"]] == ["c", "b", "a"] and page["cursor"] == 5
    assert q.results(after=5)["items"] == [] and q.results(after=5)["cursor"] == 5
    assert q.ack(2) == {"acked": 2, "dropped": 2}
    assert [r["id"] for r in q.results(after=0)["items"]] == ["c", "b", "a"]
    assert add(q, "e")["duplicate"], "an acked item is still a duplicate"


def test_complete_many_answers_per_item(clock):
    q = make(clock)
    for key in "abc":
        add(q, key)
    a, b, _ = q.claim("w", limit=3, lease_seconds=5)
    q.complete("a", a["token"], 1)
    out = q.complete_many([("a", a["token"], 1), ("b", b["token"], 2), ("c", 99, 3), ("x", 1, 0)])
    assert [o["status"] for o in out] == ["already_completed", "completed", "lease_lost", "unknown"]
    assert q.stats()["leased"]["count"] == 1


def test_stats_count_and_age_each_state(clock):
    q = make(clock, base=10.0)
    add(q, "a")
    clock.advance(1)
    add(q, "b")
    add(q, "c")
    add(q, "d")
    clock.advance(2)
    a, b, _ = q.claim("w", limit=3, lease_seconds=100)
    clock.advance(3)
    q.complete("a", a["token"])
    q.fail("b", b["token"], "boom", retry=False)
    clock.advance(4)
    stats = q.stats()
    assert stats["pending"] == {"count": 1, "oldest_age": 9.0}  # d, enqueued at +1
    assert stats["leased"] == {"count": 1, "oldest_age": 7.0}
    assert stats["done"] == {"count": 1, "oldest_age": 4.0}
    assert stats["dead"] == {"count": 1, "oldest_age": 4.0}
    assert stats["depth"] == 2
    assert make(clock).stats()["pending"] == {"count": 0, "oldest_age": None}


def test_a_claim_reads_about_limit_keys_not_the_whole_queue(clock):
    class Counting(MemoryKV):
        def __init__(self):
            super().__init__()
            self.reads = 0

        def get(self, key, default=None):
            self.reads += 1
            return super().get(key, default)

        def scan(self, prefix=""):
            for pair in super().scan(prefix):
                self.reads += 1
                yield pair

    kv = Counting()
    q = QueueLogic(kv, clock)
    q.enqueue({"key": f"k{i}"} for i in range(5000))
    kv.reads = 0
    assert len(q.claim("w", limit=10)) == 10
    assert kv.reads < 40


OPS = st.lists(st.tuples(st.sampled_from(["enqueue", "claim", "complete", "stale", "fail", "tick"]),
                         st.integers(0, 7)), max_size=80)


@settings(max_examples=150, deadline=None)
@given(OPS)
def test_random_interleavings_never_complete_an_item_twice_nor_lose_one(ops):
    clock = Clock()
    q = make(clock, base=0.5, max_attempts=3)
    held: dict[str, int] = {}
    stale: list[tuple[str, int]] = []
    completed: list[str] = []
    keys: set[str] = set()
    for op, n in ops:
        if op == "enqueue":
            keys.add(f"k{n}")
            add(q, f"k{n}", priority=n % 3)
        elif op == "claim":
            for c in q.claim("w", limit=n + 1, lease_seconds=2):
                held[c["id"]] = c["token"]
        elif op in ("complete", "fail") and held:
            key = sorted(held)[n % len(held)]
            token = held.pop(key)
            try:
                if op == "complete":
                    if q.complete(key, token, n)["status"] == "completed":
                        completed.append(key)
                else:
                    q.fail(key, token, "boom")
            except LeaseLost:
                stale.append((key, token))
        elif op == "stale" and stale:
            key, token = stale[n % len(stale)]
            with pytest.raises(LeaseLost):
                q.complete(key, token, "stale")
        elif op == "tick":
            clock.advance(n * 0.5)
    assert len(completed) == len(set(completed)), "an item completed twice"
    stats = q.stats()
    assert sum(stats[s]["count"] for s in ("pending", "leased", "done", "dead")) == len(keys), "an item lost"
    states = {k: q.item(k)["state"] for k in keys}
    assert sorted(k for k, s in states.items() if s == "done") == sorted(completed)
    assert [r["id"] for r in q.results(limit=1000)["items"]] == completed
    # Whatever is not finished is claimable again, sooner or later.
    clock.advance(1000)
    pending = {c["id"] for c in q.claim("w", limit=100)}
    assert pending == {k for k, s in states.items() if s in ("pending", "leased")} - {
        k for k in keys if q.item(k)["state"] == "dead"}
