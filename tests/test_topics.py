"""Topics (``runtime.topics``): the rules over a dict and a fake clock, then the ``Topic`` agent on a
real local Ray: fan-out in publish order, a subscriber and the topic itself SIGKILLed mid-stream,
unsubscribing, duplicate publishes, replays, and a subscriber that does not exist."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from protocols import Delivery, Message
from runtime._queue_logic import MemoryKV
from runtime._topic import TopicLogic
from runtime.topics import Publish, Published, Subscribe, Subscribers, Topic, TopicPolicy, TopicStats, Unsubscribe

from .topic_agents import Reader, Received
from .waiting import wait_for


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Shipped(Message, name="test.topic.shipped"):
    order: str
    cents: int


def make(clock: Clock | None = None, **policy) -> TopicLogic:
    return TopicLogic(MemoryKV(), clock or Clock(), TopicPolicy(**policy), "orders")


def sent(sends) -> list[tuple[str, int, object]]:
    return [(f.to, f.message.seq, f.message.payload) for f in sends]


# -- the rules, without Ray ---------------------------------------------------------------------


def test_each_publish_is_numbered_and_sent_to_every_current_subscriber():
    t = make()
    assert t.publish("nobody hears this") == ({"seq": 1, "duplicate": False, "subscribers": 0}, [])
    t.subscribe("a")
    t.subscribe("b")
    reply, sends = t.publish({"n": 2})
    assert reply == {"seq": 2, "duplicate": False, "subscribers": 2}
    assert sent(sends) == [("a", 2, {"n": 2}), ("b", 2, {"n": 2})]
    assert all(f.message.topic == "orders" and f.delivery is Delivery.EFFECTIVELY_ONCE and f.timeout is None
               for f in sends)


def test_a_publish_with_a_known_key_is_a_duplicate_of_the_first_and_sends_nothing():
    t = make()
    t.subscribe("a")
    assert t.publish("x", key="k1")[0]["seq"] == 1
    assert t.publish("y", key="k1") == ({"seq": 1, "duplicate": True, "subscribers": 0}, [])
    assert t.publish("z", key="k2")[0] == {"seq": 2, "duplicate": False, "subscribers": 1}
    assert t.publish("unkeyed")[0]["seq"] == 3 and t.publish("unkeyed")[0]["seq"] == 4, "no key: no dedup"


def test_only_the_last_keys_are_remembered():
    t = make(keys=2)
    for key in ("k1", "k2", "k3"):
        t.publish(key, key=key)
    assert t.publish("again", key="k3")[0]["duplicate"] is True
    assert t.publish("again", key="k2")[0]["duplicate"] is True
    assert t.publish("again", key="k1")[0] == {"seq": 4, "duplicate": False, "subscribers": 0}, "k1 was forgotten"
    assert len([k for k in t.kv.data if k.startswith("t/key/")]) == 2, "the key table stays at its bound"
    assert t.stats()["keys"] == 2


def test_a_new_subscriber_gets_only_later_messages_and_a_resubscribe_changes_nothing():
    t = make()
    t.publish("before")
    assert t.subscribe("a") == ({"subscriber": "a", "since": 1, "already": False, "replayed": 0, "missed": 0,
                                 "expired": 0}, [])
    assert t.subscribe("a", after=0)[0] == {"subscriber": "a", "since": 1, "already": True, "replayed": 0,
                                            "missed": 0, "expired": 0}
    assert sent(t.publish("after")[1]) == [("a", 2, "after")]


def test_a_subscribe_after_a_seq_replays_what_is_retained_and_counts_what_is_not():
    clock = Clock()
    t = make(clock, retain=3)
    for i in range(1, 6):
        t.publish(i, ttl=10 if i == 3 else None)
    assert len([k for k in t.kv.data if k.startswith("t/msg/")]) == 3, "retention stays at its bound"
    clock.now += 11  # message 3 is past its ttl
    reply, sends = t.subscribe("late", after=0)
    assert reply == {"subscriber": "late", "since": 0, "already": False, "replayed": 2, "missed": 2, "expired": 1}
    assert sent(sends) == [("late", 4, 4), ("late", 5, 5)]
    assert t.subscribe("later", after=99)[0]["since"] == 5, "after is clamped to the topic's seq"
    assert t.stats() == {"topic": "orders", "seq": 5, "subscribers": 2,
                         "retained": {"first": 3, "last": 5, "count": 3}, "keys": 0}


def test_unsubscribe_stops_the_sends_and_says_where():
    t = make()
    t.subscribe("a")
    t.subscribe("b", delivery=Delivery.AT_LEAST_ONCE)
    assert [f.delivery for f in t.publish(1)[1]] == [Delivery.EFFECTIVELY_ONCE, Delivery.AT_LEAST_ONCE]
    assert t.unsubscribe("b") == {"subscriber": "b", "removed": True, "last_seq": 1}
    assert t.unsubscribe("b")["removed"] is False
    assert sent(t.publish(2)[1]) == [("a", 2, 2)]
    assert [s["subscriber"] for s in t.subscriptions()] == ["a"]


def test_a_ttl_becomes_the_deliveries_timeout():
    t = make()
    t.subscribe("a")
    [fanout] = t.publish("soon stale", ttl=5.0)[1]
    assert fanout.timeout == 5.0


def test_a_published_message_is_decoded_at_the_subscriber():
    publish = Publish.of(Shipped(order="A1", cents=1200), key="A1")
    assert (publish.payload_type, publish.payload, publish.key) == ("test.topic.shipped@1",
                                                                     {"order": "A1", "cents": 1200}, "A1")
    got = Published(topic="orders", seq=1, payload=publish.payload, payload_type=publish.payload_type)
    assert got.message() == got.message(Shipped) == Shipped(order="A1", cents=1200)
    with pytest.raises(ValueError, match="not a test.topic.received@1"):
        got.message(Received)
    with pytest.raises(ValueError, match="plain data"):
        Published(topic="orders", seq=2, payload={"plain": True}).message()


def test_a_subscriber_must_be_an_agent_id():
    with pytest.raises(ValueError):
        Subscribe(subscriber="not an id!")
    with pytest.raises(ValueError):
        TopicPolicy(retain=-1)


# -- the agent, on a real local Ray -------------------------------------------------------------


def received(ref) -> list[list]:
    return ref.ask(Received(), timeout=60)


def seqs(ref) -> list[int]:
    return [seq for _, seq, _ in received(ref)]


def readers(system, agent_id: str, names: tuple[str, ...]) -> list:
    return [system.spawn(Reader, f"{agent_id}-{name}") for name in names]


@pytest.mark.ray
def test_every_subscriber_gets_every_message_in_publish_order(system, agent_id):
    topic = system.spawn(Topic, agent_id)
    subs = readers(system, agent_id, ("a", "b", "c"))
    for sub in subs:
        assert topic.ask(Subscribe(subscriber=sub.agent_id))["already"] is False
    n = 60
    for i in range(n):
        assert topic.ask(Publish(payload={"i": i}))["subscribers"] == 3
    for sub in subs:
        got = wait_for(lambda sub=sub: len(received(sub)) >= n and received(sub), timeout=60)
        assert got == [[agent_id, i + 1, {"i": i}] for i in range(n)], "each message once, in publish order"
    assert [s["subscriber"] for s in topic.ask(Subscribers())] == sorted(s.agent_id for s in subs)
    assert topic.ask(TopicStats())["seq"] == n


def _producer(topic, n: int, *, pause_at: int | None = None, resume: threading.Event | None = None,
              under_way: threading.Event | None = None, replies: list | None = None) -> threading.Thread:
    def run() -> None:
        for i in range(n):
            if i == pause_at:
                assert resume.wait(90)
            if under_way is not None and i == n // 3:
                under_way.set()
            reply = topic.ask(Publish(payload=i, key=f"m-{i}"), timeout=90)
            if replies is not None:
                replies.append(reply)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.ray
def test_a_subscriber_sigkilled_mid_stream_gets_every_message_exactly_once_in_order(system, agent_id, tmp_path):
    n = 200
    gate = tmp_path / "gate"  # the restarted subscriber waits in on_restore until this file exists
    topic = system.spawn(Topic, agent_id)
    victim = system.spawn(Reader, f"{agent_id}-victim", init={"gate": str(gate)})
    [steady] = readers(system, agent_id, ("steady",))
    for sub in (victim, steady):
        topic.ask(Subscribe(subscriber=sub.agent_id))
    resume = threading.Event()
    producer = _producer(topic, n, pause_at=n // 2, resume=resume)
    try:
        wait_for(lambda: len(received(victim)) >= 20, timeout=60)
        pid = victim.admin.status()["pid"]
        os.kill(pid, signal.SIGKILL)
    finally:
        resume.set()  # the second half is published while the subscriber is down
        producer.join(120)
    # Held down: the topic keeps what the subscriber has not acknowledged, at least the second half.
    pending = topic.admin.status()["outbox_pending"].get(victim.agent_id, 0)
    assert pending >= n // 2, topic.admin.status()["outbox_pending"]
    wait_for(lambda: len(received(steady)) >= n, timeout=90, describe=lambda: len(received(steady)))
    gate.touch()
    for sub in (victim, steady):
        got = wait_for(lambda sub=sub: len(received(sub)) >= n and received(sub), timeout=90,
                       describe=lambda sub=sub: len(received(sub)))
        assert [seq for _, seq, _ in got] == list(range(1, n + 1)), "nothing lost, nothing twice, in order"
        assert [payload for _, _, payload in got] == list(range(n))
    status = victim.admin.status()
    assert status["incarnation"] == 2 and status["pid"] != pid, "the subscriber's process was killed and restarted"
    assert status["restore"]["source"] != "fresh", status["restore"]
    assert steady.admin.status()["incarnation"] == 1
    wait_for(lambda: not topic.admin.status()["outbox_pending"], timeout=30)


@pytest.mark.ray
def test_the_topic_sigkilled_mid_stream_loses_and_doubles_nothing_at_its_subscribers(system, agent_id):
    n = 150
    topic = system.spawn(Topic, agent_id)
    subs = readers(system, agent_id, ("a", "b"))
    for sub in subs:
        topic.ask(Subscribe(subscriber=sub.agent_id))
    pid = topic.admin.status()["pid"]
    under_way, replies = threading.Event(), []
    producer = _producer(topic, n, under_way=under_way, replies=replies)
    try:
        assert under_way.wait(60)
        os.kill(pid, signal.SIGKILL)
        at_kill = len(replies)
    finally:
        producer.join(150)
    assert at_kill < n, "the topic was killed mid-stream"
    assert [r["seq"] for r in replies] == list(range(1, n + 1)), "each publish numbered once, the asks retried"
    assert not any(r["duplicate"] for r in replies)
    for sub in subs:
        got = wait_for(lambda sub=sub: len(received(sub)) >= n and received(sub), timeout=90,
                       describe=lambda sub=sub: len(received(sub)))
        assert got == [[agent_id, i + 1, i] for i in range(n)], "nothing lost, nothing twice, in order"
    status = topic.admin.status()
    assert status["incarnation"] == 2 and status["pid"] != pid, "the topic's process was killed and restarted"
    assert topic.ask(TopicStats())["seq"] == n


@pytest.mark.ray
def test_unsubscribe_stops_deliveries(system, agent_id):
    topic = system.spawn(Topic, agent_id)
    stays, leaves = readers(system, agent_id, ("stays", "leaves"))
    for sub in (stays, leaves):
        topic.ask(Subscribe(subscriber=sub.agent_id))
    for i in range(1, 6):
        assert topic.ask(Publish(payload=i))["subscribers"] == 2
    assert topic.ask(Unsubscribe(subscriber=leaves.agent_id)) == {"subscriber": leaves.agent_id, "removed": True,
                                                                 "last_seq": 5}
    for i in range(6, 11):
        assert topic.ask(Publish(payload=i))["subscribers"] == 1, "sent to the remaining subscriber only"
    wait_for(lambda: seqs(stays) == list(range(1, 11)), timeout=60, describe=lambda: seqs(stays))
    # The topic's outbox has nothing left for anyone: what the leaver got is all it will get.
    wait_for(lambda: not topic.admin.status()["outbox_pending"], timeout=30)
    assert seqs(leaves) == [1, 2, 3, 4, 5]
    assert [s["subscriber"] for s in topic.ask(Subscribers())] == [stays.agent_id]


@pytest.mark.ray
def test_a_duplicate_publish_is_delivered_once(system, agent_id):
    topic = system.spawn(Topic, agent_id)
    [sub] = readers(system, agent_id, ("a",))
    topic.ask(Subscribe(subscriber=sub.agent_id))
    answers: list[dict] = []
    threads = [threading.Thread(target=lambda: answers.append(topic.ask(Publish(payload="paid", key="order-7"))))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(a["duplicate"] for a in answers) == [False, True, True, True]
    assert {a["seq"] for a in answers} == {1}
    assert topic.ask(Publish(payload="next", key="order-8"))["seq"] == 2
    # Per-subscriber order: once seq 2 is in, anything published before it is too.
    got = wait_for(lambda: (r := received(sub)) and r[-1][1] == 2 and r, timeout=60)
    assert got == [[agent_id, 1, "paid"], [agent_id, 2, "next"]]


@pytest.mark.ray
def test_a_late_subscriber_gets_later_messages_or_a_replay_of_the_retained_ones(system, agent_id):
    topic = system.spawn(Topic, agent_id, init={"policy": {"retain": 3}})
    for i in range(1, 6):
        topic.ask(Publish(payload=i))
    from_now, replaying = readers(system, agent_id, ("now", "replay"))
    assert topic.ask(Subscribe(subscriber=from_now.agent_id))["since"] == 5
    reply = topic.ask(Subscribe(subscriber=replaying.agent_id, after=0, delivery=Delivery.AT_LEAST_ONCE))
    assert (reply["replayed"], reply["missed"]) == (3, 2)
    topic.ask(Publish(payload=6))
    wait_for(lambda: seqs(replaying) == [3, 4, 5, 6], timeout=60, describe=lambda: seqs(replaying))
    wait_for(lambda: seqs(from_now) == [6], timeout=60, describe=lambda: seqs(from_now))


@pytest.mark.ray
def test_a_subscriber_that_does_not_exist_becomes_dead_letters_on_the_topic_and_others_are_unaffected(
        system, agent_id):
    topic = system.spawn(Topic, agent_id, config={"max_attempts": 3, "retry_backoff": 0.01,
                                                  "retry_backoff_max": 0.05})
    [real] = readers(system, agent_id, ("real",))
    ghost = f"{agent_id}-ghost"
    topic.ask(Subscribe(subscriber=ghost))
    topic.ask(Subscribe(subscriber=real.agent_id))
    for i in range(3):
        assert topic.ask(Publish(payload=i))["subscribers"] == 2
    wait_for(lambda: seqs(real) == [1, 2, 3], timeout=60, describe=lambda: seqs(real))
    dead = wait_for(lambda: len(d := topic.admin.dead_letters()) >= 3 and d, timeout=60,
                    describe=lambda: topic.admin.dead_letters())
    assert [(d["reason"], d["recipient"], d["type"], d["seq"]) for d in dead] == [
        ("undeliverable", ghost, "garrison.topic.published@1", seq) for seq in (1, 2, 3)]
    assert ghost in [s["subscriber"] for s in topic.ask(Subscribers())], "the subscription itself stays"
