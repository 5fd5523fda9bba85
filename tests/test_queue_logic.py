"""The work queue's rules (``runtime._queue_logic``) over a dict and a fake clock: no Ray, no sleeping."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from runtime import LeaseLost, NoHandler, QueueError, RetryPolicy, UnknownItem
from runtime._queue_logic import MemoryKV, QueueLogic
from runtime.queue import ExtendMany, QueueWorker


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
    assert c == {"id": "a", "token": 1, "attempt": 1, "lease_until": clock.now + 7, "payload": {"n": "a"}, "priority": 2}
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


def test_extend_many_extends_each_held_lease_under_one_new_lease_and_answers_per_item(clock):
    kv = MemoryKV()
    q = QueueLogic(kv, clock, RetryPolicy(max_attempts=3))
    for key in "abcd":
        add(q, key)
    a, b, c, d = q.claim("w", limit=4, lease_seconds=10)
    q.complete("d", d["token"], "done")
    clock.advance(8)
    out = q.extend_many([("a", a["token"]), ("b", b["token"]), ("a", a["token"]), ("c", c["token"] + 1),
                         ("d", d["token"]), ("x", 1)], lease_seconds=10)
    assert [o["status"] for o in out] == ["extended", "extended", "extended", "lease_lost", "lease_lost", "unknown"]
    assert out[0]["lease_until"] == clock.now + 10 and "claimed again" not in out[3]["error"]
    leases = [v for k, v in kv.data.items() if k.startswith("l/")]
    assert sorted((len(v["ids"]), v["open"]) for v in leases) == [(2, 2), (4, 1)], "a and b moved; c still held"
    clock.advance(5)  # past the first lease's end, before the new one's
    assert q.complete("a", a["token"], 1)["status"] == "completed"
    with pytest.raises(LeaseLost):
        q.complete("c", c["token"], 1)
    with pytest.raises(ValueError):
        q.extend_many([("b", b["token"])], lease_seconds=0)
    assert q.extend("b", b["token"], 10)["lease_until"] == clock.now + 10


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


def test_a_queue_that_keeps_no_results_acks_each_completion_as_it_happens(clock):
    kv = MemoryKV()
    q = QueueLogic(kv, clock, RetryPolicy(max_attempts=3), keep_results=False)
    for key in "abc":
        add(q, key)
    a, b, c = q.claim("w", limit=3)
    assert q.complete("a", a["token"], "A") == {"id": "a", "status": "completed", "seq": 1}
    out = q.complete_many([("b", b["token"], "B"), ("a", a["token"], "A"), ("c", c["token"] + 1, "C")])
    assert [o["status"] for o in out] == ["completed", "already_completed", "lease_lost"]
    assert [o.get("seq") for o in out[:2]] == [2, 1], "an acked completion still answers with its number"
    for key in "ab":
        item = q.item(key)
        assert (item["state"], item["result"], item["payload"], item["done_seq"]) == ("done", None, None, "ab".index(key) + 1)
    assert q.results(after=0)["items"] == [] and q.stats()["results_acked"] == 2
    assert q.item("c")["payload"] == {"n": "c"}, "an item not done keeps its payload"
    assert add(q, "a")["duplicate"], "a done item is still a duplicate"
    # A queue that kept its results until now: its first completion without them acks the kept ones too.
    kept = QueueLogic(MemoryKV(), clock, RetryPolicy(max_attempts=3))
    for key in "xyz":
        add(kept, key)
    x, y, z = kept.claim("w", limit=3)
    kept.complete_many([("x", x["token"], "X"), ("y", y["token"], "Y")])
    assert [r["result"] for r in kept.results(after=0)["items"]] == ["X", "Y"]
    kept.keep_results = False
    assert kept.complete("z", z["token"], "Z")["seq"] == 3
    assert kept.results(after=0)["items"] == [] and kept.stats()["results_acked"] == 3
    assert [kept.item(k)["result"] for k in "xyz"] == [None, None, None]


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


# -- fail_many ---------------------------------------------------------------------------------


def test_fail_many_answers_per_item_and_a_stale_token_fails_only_its_item(clock):
    q = make(clock, base=2.0, max_attempts=3)
    for key in "abcde":
        add(q, key)
    a, b, c, d, e = q.claim("w", limit=5, lease_seconds=10)
    q.complete("e", e["token"], "done")
    before = dict(q.item("c"))
    out = q.fail_many([("a", a["token"], "flaky", True), ("b", b["token"], "bad input", False),
                       ("c", c["token"] + 1, "stale", True), ("x", 1, "?", True), ("e", e["token"], "late", True),
                       ("d", d["token"], "flaky too", True)])
    assert [o["status"] for o in out] == ["failed", "failed", "lease_lost", "unknown", "lease_lost", "failed"]
    assert out[0] == {"id": "a", "status": "failed", "state": "pending", "attempts": 1, "retry_at": clock.now + 2.0}
    assert out[1] == {"id": "b", "status": "failed", "state": "dead", "attempts": 1, "retry_at": None}
    assert out[2]["current_token"] == 1 and "no lease has that token" in out[2]["error"]
    assert out[4]["state"] == "done" and "it is done" in out[4]["error"]
    assert q.item("c") == before, "a refused item is left as it was"
    assert (q.item("a")["reason"], q.item("b")["reason"], q.item("d")["reason"]) == ("flaky", "bad input", "flaky too")
    stats = q.stats()
    assert {s: stats[s]["count"] for s in ("pending", "leased", "done", "dead")} == {
        "pending": 2, "leased": 1, "done": 1, "dead": 1}
    assert q.claim("w", limit=5) == [], "a and d wait out their backoff"
    clock.advance(2.0)
    assert ids(q.claim("w", limit=5)) == ["a", "d"]
    assert q.complete("c", c["token"], "ok")["status"] == "completed", "c's own lease was untouched"


def test_fail_raises_as_before_for_one_item(clock):
    q = make(clock)
    add(q, "a")
    [a] = q.claim("w")
    assert q.fail("a", a["token"], "boom") == {"id": "a", "state": "pending", "attempts": 1,
                                                "retry_at": clock.now + 1.0}
    with pytest.raises(LeaseLost):
        q.fail("a", a["token"], "again")
    with pytest.raises(UnknownItem):
        q.fail("nope", 1)


# -- replay ------------------------------------------------------------------------------------


def kill(q: QueueLogic, clock: Clock, key: str, attempts: int = 3) -> list[int]:
    """Fail ``key`` until it is dead: the tokens it was claimed with."""
    tokens = []
    for _ in range(attempts):
        clock.advance(100)  # past any backoff
        [c] = [c for c in q.claim("w", limit=100) if c["id"] == key]
        tokens.append(c["token"])
        q.fail(key, c["token"], f"boom {c['token']}")
    assert q.item(key)["state"] == "dead"
    return tokens


def test_replay_moves_a_dead_item_back_with_its_attempts_reset_and_a_record(clock):
    q = make(clock, max_attempts=3)
    add(q, "a")
    assert kill(q, clock, "a") == [1, 2, 3]
    clock.advance(5)
    answer = q.replay(["a"], who="ops@alice")
    assert answer == {"replayed": [{"id": "a", "attempts": 3, "replay_count": 1}], "dead": 0}
    item = q.item("a")
    assert (item["state"], item["attempts"], item["reason"], item["replay_count"]) == ("pending", 0, None, 1)
    assert item["replays"] == [{"at": clock.now, "by": "ops@alice", "attempts": 3, "reason": "boom 3"}]
    stats = q.stats()
    assert stats["dead"] == {"count": 0, "oldest_age": None} and stats["pending"]["count"] == 1
    [c] = q.claim("w2")
    assert (c["id"], c["token"]) == ("a", 4), "tokens go on counting across a replay"
    assert q.item("a")["attempts"] == 1
    for stale in (1, 3):  # a token of the item's first life never holds the new lease
        with pytest.raises(LeaseLost):
            q.complete("a", stale, "late")
    q.fail("a", 4, "boom again")
    clock.advance(100)
    [c] = q.claim("w")
    assert c["token"] == 5 and q.item("a")["attempts"] == 2, "a fresh set of attempts: not dead after one"
    q.fail("a", 5, "x")
    clock.advance(100)
    q.fail("a", q.claim("w")[0]["token"], "dead again")
    assert q.item("a")["state"] == "dead"
    assert q.replay(["a"], who="bob")["replayed"][0]["replay_count"] == 2
    assert [r["by"] for r in q.item("a")["replays"]] == ["ops@alice", "bob"]


def test_replay_refuses_an_item_that_is_not_dead_and_changes_nothing(clock):
    q = make(clock)
    add(q, "dead")
    kill(q, clock, "dead")
    add(q, "waiting")
    snapshot = {k: (dict(v) if isinstance(v, dict) else v) for k, v in q.kv.data.items()}
    with pytest.raises(QueueError, match="it is pending") as err:
        q.replay(["dead", "waiting"], who="ops")
    assert not isinstance(err.value, (LeaseLost, UnknownItem)) and err.value.details["item"] == "waiting"
    with pytest.raises(UnknownItem):
        q.replay(["dead", "nope"])
    assert q.kv.data == snapshot, "a refused replay changes nothing"
    [c] = q.claim("w")
    with pytest.raises(QueueError, match="leased"):
        q.replay([c["id"]])
    q.complete(c["id"], c["token"])
    with pytest.raises(QueueError, match="done"):
        q.replay([c["id"]])
    assert q.replay(["dead", "dead"])["replayed"] == [{"id": "dead", "attempts": 3, "replay_count": 1}]


def test_replay_all_takes_those_that_died_first_up_to_the_limit(clock):
    q = make(clock, max_attempts=1)
    for key in "abcde":
        add(q, key)
    for c in q.claim("w", limit=5):  # each dies at its own time: a first
        q.fail(c["id"], c["token"], "no", retry=False)
        clock.advance(1)
    assert q.replay(["c"])["dead"] == 4, "by id, from the middle of the dead"
    assert [r["id"] for r in q.replay(None, limit=2, who="ops")["replayed"]] == ["a", "b"]
    assert q.stats()["dead"] == {"count": 2, "oldest_age": 2.0}, "d, dead since 2 s ago, is the oldest now"
    assert [i["id"] for i in q.items("dead")["items"]] == ["d", "e"]
    assert q.replay(None, limit=10)["replayed"] == [{"id": "d", "attempts": 1, "replay_count": 1},
                                                     {"id": "e", "attempts": 1, "replay_count": 1}]
    assert q.replay(None, limit=10) == {"replayed": [], "dead": 0}
    assert sorted(ids(q.claim("w", limit=10))) == list("abcde")


# -- listing -----------------------------------------------------------------------------------


def every_page(q: QueueLogic, state: str | None, limit: int) -> list[dict]:
    out, cursor = [], None
    for _ in range(1000):
        page = q.items(state, after=cursor, limit=limit)
        assert len(page["items"]) <= limit
        out.extend(page["items"])
        cursor = page["cursor"]
        if not page["more"]:
            return out
    raise AssertionError("the listing never ended")


def a_queue_in_every_state(clock: Clock) -> QueueLogic:
    q = make(clock, base=50.0)
    for i, key in enumerate("abcdefghijkl"):
        add(q, key, priority=i % 3)
    clock.advance(1)
    claimed = {c["id"]: c for c in q.claim("w1", limit=7, lease_seconds=30)}  # c f i l b e h (priority 2, 1)
    q.complete("c", claimed["c"]["token"], 1)
    q.complete("f", claimed["f"]["token"], 2)
    q.fail("i", claimed["i"]["token"], "retry me")  # waits 10 s (the cap)
    q.fail("l", claimed["l"]["token"], "poison", retry=False)
    q.fail("b", claimed["b"]["token"], "poison too", retry=False)
    return q  # pending k a d g j (ready) + i (waiting); leased e h; done c f; dead l b


def test_items_lists_each_state_page_by_page_in_its_order(clock):
    q = a_queue_in_every_state(clock)
    clock.advance(2)
    pending = every_page(q, "pending", 2)
    assert [i["id"] for i in pending] == ["k", "a", "d", "g", "j", "i"], "claim order, then those waiting"
    assert pending[-1]["retry_in"] == 8.0  # the policy caps the 50 s at 10 and pending[-1]["reason"] == "retry me"
    assert [i["id"] for i in every_page(q, "leased", 1)] == ["e", "h"]
    assert [i["id"] for i in every_page(q, "done", 5)] == ["c", "f"]
    assert [i["id"] for i in every_page(q, "dead", 5)] == ["l", "b"]
    e = every_page(q, "leased", 5)[0]
    assert e == {"id": "e", "state": "leased", "priority": 1, "attempts": 1, "token": 1, "session": None,
                 "worker": "w1", "age": 3.0, "in_state": 2.0, "lease_left": 28.0, "retry_in": None, "reason": None,
                 "replays": 0}
    everything = every_page(q, None, 3)
    assert [i["id"] for i in everything] == ["k", "a", "d", "g", "j", "i", "e", "h", "l", "b", "c", "f"]
    assert every_page(q, None, 100) == everything


def test_a_listing_resumes_from_its_cursor_after_the_queue_moved(clock):
    q = a_queue_in_every_state(clock)
    page = q.items("pending", limit=2)
    assert [i["id"] for i in page["items"]] == ["k", "a"] and page["more"]
    assert ids(q.claim("w2", limit=2)) == ["k", "a"], "the heads of the lines go"
    nxt = q.items("pending", after=page["cursor"], limit=10)
    assert [i["id"] for i in nxt["items"]] == ["d", "g", "j", "i"] and not nxt["more"]
    done = q.items("done", limit=10)
    q.complete("e", 1, 3)
    assert [i["id"] for i in q.items("done", after=done["cursor"])["items"]] == ["e"], "a cursor can tail the done"
    assert q.items("done", after=q.items("done", limit=10)["cursor"]) == {
        "items": [], "cursor": q.items("done", limit=10)["cursor"], "more": False}
    with pytest.raises(ValueError):
        q.items("dead", after=page["cursor"])
    with pytest.raises(ValueError):
        q.items("nope")


def test_items_expired_leases_are_listed_where_they_went(clock):
    q = make(clock)
    add(q, "a")
    q.claim("w", lease_seconds=5)
    clock.advance(5)
    assert q.items("leased")["items"] == []
    [a] = q.items("pending")["items"]
    assert a["id"] == "a" and "lease expired" in a["reason"]


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


def test_a_listing_page_reads_about_limit_keys_not_the_whole_queue(clock):
    kv = Counting()
    q = QueueLogic(kv, clock, RetryPolicy(max_attempts=1))
    q.enqueue({"key": f"k{i:05d}"} for i in range(8000))
    claimed = q.claim("w", limit=6000)
    q.complete_many((c["id"], c["token"], None) for c in claimed[:3000])
    q.fail_many((c["id"], c["token"], "x", False) for c in claimed[3000:4500])
    q.replay([c["id"] for c in claimed[3000:3400] + claimed[3600:3800]])  # holes in the dead index
    q.ack(2000)
    for state in ("pending", "done", "dead", "leased"):
        page = q.items(state, limit=10)
        assert len(page["items"]) == 10, state
        middle = q.items(state, after=page["cursor"], limit=10)
        assert len(middle["items"]) == 10 and middle["items"][0] != page["items"][0], state
        far = q.items(state, limit=200)["cursor"]  # dead: just before the second stretch of holes
        kv.reads = 0
        deep = q.items(state, after=far, limit=10)
        reads = kv.reads
        assert len(deep["items"]) == 10 and reads < 60, (state, reads)
    assert [i["id"] for i in q.items("done", limit=2)["items"]] == ["k00000", "k00001"], "acked: still listed"


# -- session affinity --------------------------------------------------------------------------


def sessions_queue(clock: Clock, affinity: float = 10.0, **policy) -> QueueLogic:
    return QueueLogic(MemoryKV(), clock, RetryPolicy(**{"base": 1.0, "max_attempts": 5, **policy}),
                      affinity_seconds=affinity)


def test_a_sessions_items_go_to_the_worker_that_claimed_one_and_come_first_for_it(clock):
    q = sessions_queue(clock)
    for i in range(3):
        add(q, f"a{i}", session="A")
        add(q, f"b{i}", session="B")
    add(q, "x0")
    add(q, "urgent", priority=9)
    [first] = q.claim("w1", limit=1, lease_seconds=5)
    assert first["id"] == "urgent"
    [a0] = q.claim("w1", limit=1, lease_seconds=5)
    assert (a0["id"], a0["session"]) == ("a0", "A") and q.item("a0")["session"] == "A"
    got = q.claim("w2", limit=10, lease_seconds=5)
    assert ids(got) == ["b0", "x0", "b1", "b2"], "B's entry binds B to w2, who takes the rest of B; never A"
    assert ids(q.claim("w1", limit=10, lease_seconds=5)) == ["a1", "a2"]
    add(q, "a3", session="A")
    add(q, "b3", session="B")
    add(q, "high", priority=5)
    assert ids(q.claim("w2", limit=1)) == ["b3"], "a bound session's items before any other, whatever the priority"
    assert ids(q.claim("w2", limit=5)) == ["high"], "A's are w1's"
    assert ids(q.claim("w1", limit=5)) == ["a3"]
    assert q.claim("w3", limit=5) == []


def test_a_binding_lasts_the_affinity_window_after_the_last_claim_then_the_session_is_free(clock):
    q = sessions_queue(clock, affinity=10.0)
    add(q, "a1", session="A")
    [a1] = q.claim("w1", lease_seconds=2)
    clock.advance(1)
    q.complete("a1", a1["token"], "ok")
    add(q, "a2", session="A")
    clock.advance(8.999)  # 9.999 s after w1's claim
    assert q.claim("w2") == [], "A is w1's for 10 s after its claim, though its lease ended long ago"
    assert q.items("pending")["items"][0]["id"] == "a2"
    clock.advance(0.001)
    [a2] = q.claim("w2", lease_seconds=2)
    assert a2["id"] == "a2", "w1 presumed gone: anyone may take A"
    add(q, "a3", session="A")
    assert q.claim("w1") == [], "A is w2's now"
    assert ids(q.claim("w2")) == ["a3"]


def test_extending_a_lease_extends_the_binding(clock):
    q = sessions_queue(clock, affinity=5.0)
    add(q, "a1", session="A")
    add(q, "a2", session="A")
    [a1] = q.claim("w1", lease_seconds=3)
    clock.advance(2)
    q.extend("a1", a1["token"], 20)  # bound until now + 20 (> now + 5)
    clock.advance(15)
    assert q.claim("w2", limit=5) == [], "w1 holds a live lease on A's a1: A is still w1's"
    assert ids(q.claim("w1", limit=5)) == ["a2"]


def test_an_item_of_a_bound_session_that_comes_back_waits_for_its_worker_while_the_binding_lasts(clock):
    q = sessions_queue(clock, affinity=10.0)
    add(q, "a1", session="A")
    assert ids(q.claim("w1", lease_seconds=2)) == ["a1"]
    clock.advance(2)  # the lease expired; w1's binding lasts until 10
    assert q.claim("w2") == []
    [again] = q.claim("w1", lease_seconds=2)
    assert (again["id"], again["token"]) == ("a1", 2)
    q.fail("a1", again["token"], "flaky")  # back after 2 s (base 1, factor 2: attempt 2)
    clock.advance(10)  # w1's binding (until 12, from its claim at 2) ended at 12
    [third] = q.claim("w2", lease_seconds=2)
    assert (third["id"], third["token"]) == ("a1", 3), "once the binding lapsed, another worker takes it"


def test_with_no_affinity_window_a_session_is_bound_only_while_leases_live(clock):
    q = sessions_queue(clock, affinity=0.0)
    for i in range(3):
        add(q, f"a{i}", session="A")
    [a0] = q.claim("w1", lease_seconds=4)
    assert q.claim("w2") == []
    q.complete("a0", a0["token"])
    assert q.claim("w2") == [], "bound until the lease's end, even though it was completed"
    clock.advance(4)
    assert ids(q.claim("w2", limit=5)) == ["a1", "a2"]


def test_sessions_keep_their_priority_order_and_leave_no_record_once_finished(clock):
    q = sessions_queue(clock, affinity=1.0)
    add(q, "low", session="S", priority=-1)
    add(q, "mid", session="S")
    add(q, "top", session="S", priority=4)
    add(q, "other", priority=2)
    got = q.claim("w", limit=10, lease_seconds=1)
    assert ids(got) == ["top", "other", "mid", "low"], "S's entry is at its highest priority; within S, by priority"
    q.complete_many((c["id"], c["token"], None) for c in got)
    clock.advance(1)
    q.stats()  # applies the binding's end
    assert not [k for k in q.kv.data if k.startswith(("s/", "sl/", "h/", "b/"))], "a finished session leaves nothing"
    assert q.kv.data["q/meta"]["sessions"] == 0


def test_an_entry_a_session_left_behind_gives_its_items_to_no_other_worker(clock):
    q = sessions_queue(clock)
    add(q, "a0", session="A")
    add(q, "a1", session="A", priority=5)  # A's entry moves up to 5; the one at 0 stays behind
    assert ids(q.claim("x", limit=1)) == ["a1"]
    assert q.claim("y", limit=5) == [], "the entry at 0 is A's, and A is x's"
    assert ids(q.claim("x", limit=5)) == ["a0"]
    add(q, "other")
    assert ids(q.claim("y", limit=5)) == ["other"], "the entry left behind does not stop a claim"


def test_an_entry_left_behind_by_a_finished_session_is_passed_over(clock):
    q = sessions_queue(clock, affinity=1.0)
    add(q, "a0", session="A")
    add(q, "a1", session="A", priority=5)  # A's entry at 5, and the one at 0 left behind
    got = q.claim("x", limit=1, lease_seconds=1) + q.claim("x", limit=1, lease_seconds=1)
    assert ids(got) == ["a1", "a0"], "a0 through x's binding: A's entry at 0 is still in the line"
    q.complete_many((c["id"], c["token"], None) for c in got)
    clock.advance(1)
    q.stats()  # applies the binding's end
    assert q.kv.data["q/meta"]["sessions"] == 0, "A is finished and unbound: no record"
    add(q, "b")
    assert ids(q.claim("y", limit=5)) == ["b"]
    assert q.claim("y", limit=5) == []


def test_session_names_and_worker_names_may_hold_any_character(clock):
    q = sessions_queue(clock)
    add(q, "1", session="a/b")
    add(q, "2", session="a")
    add(q, "3", session="a/b%2F")
    assert ids(q.claim("w/1", limit=1)) == ["1"]
    assert ids(q.claim("w", limit=5)) == ["2", "3"]
    add(q, "4", session="a/b")
    assert q.claim("w", limit=5) == [] and ids(q.claim("w/1", limit=5)) == ["4"]


def test_a_replayed_item_of_a_session_goes_back_to_its_session(clock):
    q = sessions_queue(clock, affinity=3.0, max_attempts=1)
    add(q, "a1", session="A")
    [a1] = q.claim("w1")
    q.fail("a1", a1["token"], "poison", retry=False)
    q.replay(["a1"], who="ops")
    assert q.claim("w2") == [], "A is still w1's"
    assert ids(q.claim("w1")) == ["a1"]


def test_stats_and_listing_see_a_sessions_pending_items(clock):
    q = sessions_queue(clock)
    add(q, "a0", session="A")
    clock.advance(1)
    add(q, "a1", session="A")
    add(q, "x")
    q.claim("w1", limit=1)  # a0: A is w1's, a1 waits in A's lines
    clock.advance(2)
    assert q.stats()["pending"] == {"count": 2, "oldest_age": 2.0}
    pending = every_page(q, "pending", 1)
    assert [(i["id"], i["session"]) for i in pending] == [("x", None), ("a1", "A")]


WORKERS = ("w0", "w1", "w2")
SESSION_OPS = st.lists(st.tuples(st.sampled_from(["enqueue", "claim", "complete", "fail", "extend", "tick"]),
                                 st.integers(0, 11), st.sampled_from(WORKERS)), max_size=70)


@settings(max_examples=200, deadline=None)
@given(SESSION_OPS, st.sampled_from([0.0, 1.0, 3.0]))
# A session's entry left behind at a lower priority, reached by another worker's claim:
@example([("enqueue", 0, "w0"), ("enqueue", 4, "w1"), ("claim", 0, "w2"), ("claim", 3, "w0")], 3.0)
def test_random_interleavings_keep_each_session_with_one_worker_and_lose_nothing(ops, affinity):
    """Model of the rules: ``bound[s] = (worker, until)``, pushed on by that worker's claims and extends."""
    clock = Clock()
    q = QueueLogic(MemoryKV(), clock, RetryPolicy(base=0.0, max_attempts=1000), affinity_seconds=affinity)
    session_of: dict[str, str | None] = {}
    bound: dict[str, tuple[str, float]] = {}
    held: dict[str, tuple[str, int, float]] = {}  # item -> (worker, token, lease_until)
    done: set[str] = set()

    def live_owner(s: str | None) -> str | None:
        if s is None or s not in bound or clock.now >= bound[s][1]:
            return None
        return bound[s][0]

    def bind(s: str | None, worker: str, until: float) -> None:
        if s is not None:
            base = bound[s][1] if s in bound and bound[s][0] == worker else 0.0
            bound[s] = (worker, max(base, until, clock.now + affinity))

    for op, n, worker in ops:
        if op == "enqueue":
            key, session = f"k{n}", ["S0", "S1", "S2", None][n % 4]
            if key not in session_of:
                session_of[key] = session
            add(q, key, priority=WORKERS.index(worker), session=session)
        elif op == "claim":
            live = {k for k, (_, _, until) in held.items() if clock.now < until}
            claimable = {k for k in session_of if k not in done and k not in live}
            mine = {k for k in claimable if live_owner(session_of[k]) == worker}
            got = q.claim(worker, limit=n % 4 + 1, lease_seconds=2)
            for c in got:
                owner = live_owner(session_of[c["id"]])
                assert owner in (None, worker), f"{c['id']} of a session bound to {owner} went to {worker}"
                assert c["id"] in claimable and c.get("session") == session_of[c["id"]]
            if any(c["id"] not in mine for c in got):
                assert mine <= set(ids(got)), "a worker's bound sessions' items come first"
            for c in got:
                held[c["id"]] = (worker, c["token"], c["lease_until"])
                bind(session_of[c["id"]], worker, c["lease_until"])
        elif op in ("complete", "fail", "extend") and held:
            key = sorted(held)[n % len(held)]
            holder, token, until = held[key]
            valid = clock.now < until
            try:
                if op == "complete":
                    q.complete(key, token)
                    done.add(key)
                elif op == "fail":
                    q.fail(key, token, "x")
                else:
                    extended = q.extend(key, token, 3)
                    held[key] = (holder, token, extended["lease_until"])
                    bind(session_of[key], holder, extended["lease_until"])
                    continue
                del held[key]
                assert valid, "a lost lease was honoured"
            except LeaseLost:
                assert not valid, "a live lease was refused"
                del held[key]
        elif op == "tick":
            clock.advance(n * 0.25)
        live = [(session_of[k], w) for k, (w, _, until) in held.items() if clock.now < until and session_of[k]]
        assert len(set(live)) == len({s for s, _ in live}), f"two workers hold live leases in one session: {live}"
    clock.advance(1000)
    rest = {c["id"] for c in q.claim("w0", limit=1000)}
    assert rest == set(session_of) - done, "every unfinished item is claimable once bindings and leases end"
    stats = q.stats()
    assert stats["done"]["count"] == len(done) and stats["leased"]["count"] == len(rest)


class InProcessQueue:
    """A queue agent's ``ask`` for a worker, in-process; ``extend_many=False``: an older Garrison's,
    which knows ``Extend`` and not ``ExtendMany``."""

    def __init__(self, q: QueueLogic, extend_many: bool = True) -> None:
        self.q = q
        self.extend_many = extend_many
        self.asked: list[str] = []

    def ask(self, msg, timeout=None):
        self.asked.append(type(msg).__name__)
        if not isinstance(msg, ExtendMany):
            return self.q.extend(msg.item, msg.token, msg.lease_seconds)
        if not self.extend_many:
            raise NoHandler("agent has no handler for garrison.queue.extend_many")
        return self.q.extend_many([(h.item, h.token) for h in msg.items], msg.lease_seconds)


def test_a_worker_extends_a_batch_in_one_call_or_item_by_item_on_a_queue_that_predates_it(clock):
    q = make(clock)
    for key in "abc":
        add(q, key)
    a, b, c = q.claim("w", limit=3, lease_seconds=10)
    q.complete("c", c["token"], "done")
    worker = QueueWorker("jobs", lease_seconds=10)
    old = InProcessQueue(q, extend_many=False)
    clock.advance(6)
    assert worker._extend(old, [("a", a["token"]), ("b", b["token"]), ("c", c["token"])]) == {"c"}
    assert old.asked == ["ExtendMany", "Extend", "Extend", "Extend"]
    clock.advance(6)  # past the claim's lease, inside the extended one
    current = InProcessQueue(q)
    assert worker._extend(current, [("a", a["token"]), ("b", b["token"] + 1)]) == {"b"}
    assert current.asked == ["ExtendMany"] and q.complete("a", a["token"], 1)["status"] == "completed"
