"""``QueueSet``: one queue over several ``WorkQueue`` agents, partitioned by key."""

from __future__ import annotations

import collections
import uuid

import pytest

from runtime import ConfigError
from runtime.queue import Completion, NewItem, QueueSet, partition_of


def test_a_keys_partition_is_stable_and_keys_spread_over_every_partition():
    keys = [f"order-{i}" for i in range(6_000)]
    first = [partition_of(k, 4) for k in keys]
    assert first == [partition_of(k, 4) for k in keys], "a pure function of the key"
    counts = collections.Counter(first)
    assert sorted(counts) == [0, 1, 2, 3]
    assert min(counts.values()) > 0.8 * len(keys) / 4, counts  # no partition starved
    assert {partition_of(k, 1) for k in keys} == {0}


def test_a_set_needs_a_partition():
    with pytest.raises(ConfigError):
        QueueSet([])
    with pytest.raises(ConfigError):
        QueueSet.ids("jobs", 0)


@pytest.mark.ray
def test_three_partitions_act_as_one_queue(system):
    name = f"qs-{uuid.uuid4().hex[:8]}"
    jobs = QueueSet.spawn(system, name, 3)
    keys = [f"ticket-{i}" for i in range(120)]
    first = jobs.enqueue_many([NewItem(key=k, payload={"n": i}) for i, k in enumerate(keys)])
    assert [a["queue"] for a in first] == [f"{name}-{partition_of(k, 3)}" for k in keys]
    assert jobs.enqueue(keys[7], payload={"n": -1})["duplicate"] is True, "a duplicate reaches the same agent"
    per = jobs.stats()["partitions"]
    assert sum(s["pending"]["count"] for s in per.values()) == 120 and all(s["depth"] > 0 for s in per.values())

    again = QueueSet.lookup(system, name, 3)  # another handle on the same set, as another driver has
    claimed: list[dict] = []
    for worker in ("w1", "w2", "w3", "w1", "w2", "w3"):
        claimed.extend(again.claim(worker, limit=25, lease_seconds=60))
    assert sorted(c["id"] for c in claimed) == sorted(keys), "each item claimed once, across every partition"
    assert {c["queue"] for c in claimed} == set(QueueSet.ids(name, 3))
    odd = [c for c in claimed if int(c["id"].split("-")[1]) % 2]
    even = [c for c in claimed if not int(c["id"].split("-")[1]) % 2]
    outcomes = jobs.complete_many([Completion(item=c["id"], token=c["token"], result=c["payload"]) for c in odd])
    assert [o["status"] for o in outcomes] == ["completed"] * len(odd)
    for c in even:
        assert jobs.complete(c["id"], c["token"], c["payload"])["status"] == "completed"
    assert jobs.complete(even[0]["id"], even[0]["token"])["status"] == "already_completed"

    page = jobs.results(limit=200)
    assert sorted(r["id"] for r in page["items"]) == sorted(keys)
    assert {r["id"]: r["result"]["n"] for r in page["items"]} == {k: i for i, k in enumerate(keys)}
    assert jobs.results(page["cursors"])["items"] == [], "the cursors say where each partition was read to"
    stats = jobs.stats()
    assert stats["done"]["count"] == 120 and stats["depth"] == 0


class FakeQueue:
    """A queue agent's ref stand-in: the queue's rules over a dict, asked in-process (no Ray)."""

    def __init__(self, agent_id: str) -> None:
        from runtime._queue_logic import MemoryKV, QueueLogic

        self.agent_id = agent_id
        self.logic = QueueLogic(MemoryKV(), lambda: 1000.0)
        self.asked: list[str] = []

    def ask(self, msg, timeout=None):
        from runtime import queue as q

        self.asked.append(type(msg).__name__)
        if isinstance(msg, q.EnqueueMany):
            return self.logic.enqueue(i.model_dump() for i in msg.items)
        if isinstance(msg, q.Enqueue):
            return self.logic.enqueue([msg.model_dump()])[0]
        if isinstance(msg, q.Claim):
            return self.logic.claim(msg.worker, msg.limit, msg.lease_seconds)
        if isinstance(msg, q.CompleteMany):
            return self.logic.complete_many((c.item, c.token, c.result) for c in msg.items)
        if isinstance(msg, q.FailMany):
            return self.logic.fail_many((f.item, f.token, f.reason, f.retry) for f in msg.items)
        if isinstance(msg, q.Complete):
            return self.logic.complete(msg.item, msg.token, msg.result)
        if isinstance(msg, q.Extend):
            return self.logic.extend(msg.item, msg.token, msg.lease_seconds)
        raise AssertionError(f"unexpected {msg!r}")


def test_a_sets_session_items_share_their_sessions_partition_and_are_reached_through_it():
    from runtime.queue import Failure

    refs = [FakeQueue(f"jobs-{i}") for i in range(4)]
    jobs = QueueSet(refs)
    keys = [f"chat-{i}" for i in range(40)]
    answers = jobs.enqueue_many([NewItem(key=k, session="customer-7") for k in keys])
    home = f"jobs-{partition_of('customer-7', 4)}"
    assert {a["queue"] for a in answers} == {home}, "one session, one partition, whatever the keys"
    assert {partition_of(k, 4) for k in keys} != {partition_of("customer-7", 4)}, "(the keys alone would spread)"
    assert jobs.enqueue("solo", session="customer-7")["queue"] == home
    claimed = jobs.claim("w1", limit=41)
    assert len(claimed) == 41 and {c["queue"] for c in claimed} == {home} and claimed[0]["session"] == "customer-7"
    outcomes = jobs.complete_many([Completion(item=c["id"], token=c["token"], session=c["session"])
                                   for c in claimed[:30]])
    assert [o["status"] for o in outcomes] == ["completed"] * 30
    fails = jobs.fail_many([Failure(item=c["id"], token=c["token"], reason="no", retry=False, session=c["session"])
                            for c in claimed[30:35]])
    assert [o["state"] for o in fails] == ["dead"] * 5
    c = claimed[35]
    assert jobs.extend(c["id"], c["token"], 60, session="customer-7")["lease_until"] == 1060.0
    assert jobs.complete(c["id"], c["token"], session="customer-7")["status"] == "completed"
    assert all(set(r.asked) <= {"Claim"} for r in refs if r.agent_id != home), "the others: asked to claim at most"
    assert {"EnqueueMany", "Enqueue", "CompleteMany", "FailMany", "Extend", "Complete"} <= set(refs[int(home[-1])].asked)
