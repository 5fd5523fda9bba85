"""``Topic``: publish/subscribe as a Garrison agent, its rules, and its messages.

A topic is an agent (one per topic: ``system.spawn(Topic, "orders")``) whose state holds the
durable subscriptions.  Each :class:`Publish` is numbered (the topic's ``seq``: 1, 2, ...) and, in
the same handler, sent to every current subscriber as a :class:`Published` with ``self.send``.  So
the fan-out commits atomically with the publish and leaves through the topic's durable outbox:
each subscriber gets the delivery level of a direct message (per-subscriber order, retried across
restarts of either side, effectively-once at the receiver by default, dead letters on the topic
for a subscriber that cannot be reached).  Nothing here re-implements delivery; that is the point.

Semantics, with their edge cases:

- **Numbering.** ``seq`` counts accepted publishes, from 1, with no gaps.  A subscriber sees the
  seqs published while it was subscribed, in increasing order; a jump in them means messages were
  dead-lettered on the topic (or missed on a replay, see below).
- **Subscriptions.** ``Subscribe(subscriber)`` takes effect at the topic's current seq: the
  subscriber gets every message published after it, and none before, unless ``after=n`` asks for a
  replay of the retained messages numbered after ``n`` (sent first, in order, in the same handler).
  Subscribing again while subscribed changes nothing (``already: True``, no replay).  The subscriber
  need not exist yet: deliveries wait in the outbox (``AgentConfig.max_attempts`` tries with backoff),
  then go to the topic's dead letters (``undeliverable``).  ``Unsubscribe`` takes effect at the
  current seq too: what was published before it is still delivered, nothing after.
- **Delivery level.** Per subscription (``Subscribe(delivery=...)``), EFFECTIVELY_ONCE by default;
  the same levels, with the same meaning, as a direct message's.
- **Idempotent publish.** A publish with ``key`` that the topic has already numbered is not
  published again: it answers ``duplicate: True`` with the first publish's seq.  The topic remembers
  the last ``TopicPolicy.keys`` keys (older ones are forgotten, and may then publish again).  A
  driver's ask retried across a restart of the topic (same message id) gets its first reply anyway.
- **Retention.** The last ``TopicPolicy.retain`` messages are kept for replays (0: none).
- **Deadlines.** A publish's own deadline (its ask's timeout) is not passed on to the deliveries:
  they are kept for as long as the outbox tries, unless ``Publish(ttl=...)`` gives them one (then a
  delivery later than that is dead-lettered ``expired`` at its subscriber, and skipped on a replay).

Payloads are plain msgpack-able data, or a registered message (``Publish.of(msg)``): it travels as
its type tag and body, and ``Published.message(OrderPlaced)`` decodes it at the subscriber (whose process
must have the class: naming it there makes a driver script's class travel with the handler).  The topic itself never decodes a payload.

The rules are :class:`TopicLogic` (a plain class over a key-value store and a clock, unit-tested
over ``MemoryKV``); :class:`Topic` maps each message onto it over ``self.state``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from pydantic import Field

from protocols import Delivery, Message, Registry, default_registry

from ._agent import Agent, handler
from ._queue_logic import KeyValue

# Public through ``runtime.topics`` (the messages) and ``runtime`` (``Topic``).

#: What an agent id looks like (``runtime._spec``): a subscriber must be one.
AGENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"

_SEQ = "t/seq"  # the last seq numbered
_SUB = "t/sub/"  # t/sub/<subscriber> -> {"since", "delivery", "at"}
_KEY = "t/key/"  # t/key/<key> -> the seq it was published as
_KEYED = "t/keyed"  # keyed publishes counted, to forget the oldest key
_KEYLOG = "t/kx/"  # t/kx/<n:020d> -> the n-th key remembered
_MSG = "t/msg/"  # t/msg/<seq:020d> -> a retained message


class Publish(Message, name="garrison.topic.publish"):
    """Publish ``payload`` to every subscriber.  Reply: ``{"seq", "duplicate", "subscribers"}``
    (``subscribers``: how many it was sent to; 0 for a duplicate)."""

    payload: Any = None
    #: Set when the payload is a message's body (``Publish.of``): its ``name@version`` tag.
    payload_type: str | None = None
    #: Idempotency key: a key the topic has numbered already is not published again.
    key: str | None = Field(None, min_length=1)
    #: Seconds the deliveries stay valid (default: as long as the outbox tries).
    ttl: float | None = Field(None, gt=0)

    @classmethod
    def of(cls, msg: Message, *, key: str | None = None, ttl: float | None = None) -> Publish:
        """Publish a registered message: its tag and body travel; ``Published.message(cls)`` decodes them."""
        body = msg.__pydantic_serializer__.to_python(msg, mode="json")
        return cls(payload=body, payload_type=msg.type_tag(), key=key, ttl=ttl)


class Published(Message, name="garrison.topic.published"):
    """What a subscriber receives: write a handler for it (``@handler def on_news(self, msg: Published)``)."""

    topic: str
    seq: int
    payload: Any = None
    payload_type: str | None = None
    key: str | None = None
    published_at: float = 0.0

    def message(self, cls: type[Message] | None = None, *, registry: Registry | None = None) -> Message:
        """The payload as the registered message it was published as (``Publish.of``), upcast to the
        newest version this process knows.

        Name the class you expect (``msg.message(OrderPlaced)``): the handler then refers to it, so a
        class defined in a driver script travels to the subscriber's process with the handler.
        Raises ``ValueError`` for a plain-data payload or one of another type, and
        ``UnknownMessageType`` or ``MessageValidationError`` (:mod:`protocols`) if it cannot be decoded here.
        """
        if self.payload_type is None:
            raise ValueError(f"message {self.seq} of topic {self.topic!r} is plain data, not a message")
        found, body = (registry or default_registry).resolve(self.payload_type, self.payload)
        if cls is not None and not issubclass(found, cls):
            raise ValueError(f"message {self.seq} of topic {self.topic!r} is a {self.payload_type}, "
                             f"not a {cls.type_tag()}")
        return found.model_validate(body)


class Subscribe(Message, name="garrison.topic.subscribe"):
    """Subscribe agent ``subscriber``.  Reply: ``{"subscriber", "since", "already", "replayed", "missed",
    "expired"}``: it gets every message numbered after ``since``; ``replayed`` of them were retained and
    sent now, ``missed`` were asked for but no longer retained, ``expired`` were past their ttl."""

    subscriber: str = Field(pattern=AGENT_ID_PATTERN)
    #: None: messages published from now on.  ``n``: also replay the retained ones after seq ``n``.
    after: int | None = Field(None, ge=0)
    #: Delivery level of this subscriber's messages.
    delivery: Delivery = Delivery.EFFECTIVELY_ONCE


class Unsubscribe(Message, name="garrison.topic.unsubscribe"):
    """End ``subscriber``'s subscription.  Reply: ``{"subscriber", "removed", "last_seq"}``: what was
    published up to ``last_seq`` is still delivered, nothing after."""

    subscriber: str = Field(pattern=AGENT_ID_PATTERN)


class Subscribers(Message, name="garrison.topic.subscribers"):
    """Reply: the subscriptions, by subscriber id: ``[{"subscriber", "since", "delivery", "at"}]``."""


class TopicStats(Message, name="garrison.topic.stats"):
    """Reply: ``{"topic", "seq", "subscribers", "retained": {"first", "last", "count"}, "keys"}``."""


@dataclass(frozen=True)
class TopicPolicy:
    """What a topic remembers: the last ``retain`` messages (for replays) and ``keys`` idempotency keys."""

    #: Messages kept for ``Subscribe(after=...)``; 0 keeps none.
    retain: int = 1000
    #: Publish keys remembered for duplicate detection; older ones are forgotten.
    keys: int = 10_000

    def __post_init__(self) -> None:
        if self.retain < 0 or self.keys < 0:
            raise ValueError("retain and keys count messages and keys: 0 or more")


class Fanout(NamedTuple):
    """One send the topic makes: ``Published`` to ``to``, at ``delivery``, valid for ``timeout`` seconds."""

    to: str
    message: Published
    delivery: Delivery
    timeout: float | None


def _msg_key(seq: int) -> str:
    return f"{_MSG}{seq:020d}"


class TopicLogic:
    """The topic's rules over a key-value store and a clock (see the module docstring).

    Each method changes the store and returns plain data, plus the :class:`Fanout` sends it asks
    for; the caller makes them in the same transaction (the agent, with ``self.send``).
    """

    def __init__(self, kv: KeyValue, clock: Callable[[], float], policy: TopicPolicy, topic: str) -> None:
        self.kv = kv
        self.clock = clock
        self.policy = policy
        self.topic = topic

    def seq(self) -> int:
        return self.kv.get(_SEQ, 0)

    def publish(self, payload: Any, *, payload_type: str | None = None, key: str | None = None,
                ttl: float | None = None) -> tuple[dict[str, Any], list[Fanout]]:
        if key is not None:
            first = self.kv.get(_KEY + key)
            if first is not None:
                return {"seq": first, "duplicate": True, "subscribers": 0}, []
        now = self.clock()
        seq = self.seq() + 1
        self.kv.put(_SEQ, seq)
        if key is not None:
            self._remember(key, seq)
        expires = None if ttl is None else now + ttl
        record = {"payload": payload, "payload_type": payload_type, "key": key, "at": now, "expires": expires}
        if self.policy.retain:
            self.kv.put(_msg_key(seq), record)
            if seq > self.policy.retain:
                self.kv.delete(_msg_key(seq - self.policy.retain))
        # Invariant: every subscriber present when seq is numbered gets a send of seq, in this transaction.
        sends = [self._fanout(sub, seq, record, now) for sub in self.subscriptions()]
        return {"seq": seq, "duplicate": False, "subscribers": len(sends)}, sends

    def _remember(self, key: str, seq: int) -> None:
        if not self.policy.keys:
            return
        n = self.kv.get(_KEYED, 0) + 1
        self.kv.put(_KEYED, n)
        self.kv.put(_KEY + key, seq)
        self.kv.put(f"{_KEYLOG}{n:020d}", key)
        if n > self.policy.keys:  # forget the oldest key (one read, two deletes)
            old = f"{_KEYLOG}{n - self.policy.keys:020d}"
            forgotten = self.kv.get(old)
            self.kv.delete(old)
            if forgotten is not None:
                self.kv.delete(_KEY + forgotten)

    def _fanout(self, sub: dict[str, Any], seq: int, record: dict[str, Any], now: float) -> Fanout:
        msg = Published(topic=self.topic, seq=seq, payload=record["payload"], payload_type=record["payload_type"],
                        key=record["key"], published_at=record["at"])
        timeout = None if record["expires"] is None else record["expires"] - now
        return Fanout(sub["subscriber"], msg, Delivery(sub["delivery"]), timeout)

    def subscriptions(self) -> list[dict[str, Any]]:
        return [value for _, value in self.kv.scan(_SUB)]

    def subscribe(self, subscriber: str, *, after: int | None = None,
                  delivery: Delivery = Delivery.EFFECTIVELY_ONCE) -> tuple[dict[str, Any], list[Fanout]]:
        seq = self.seq()
        existing = self.kv.get(_SUB + subscriber)
        if existing is not None:
            return {"subscriber": subscriber, "since": existing["since"], "already": True, "replayed": 0,
                    "missed": 0, "expired": 0}, []
        since = seq if after is None else min(after, seq)
        sub = {"subscriber": subscriber, "since": since, "delivery": Delivery(delivery).value, "at": self.clock()}
        self.kv.put(_SUB + subscriber, sub)
        first = max(since + 1, seq - self.policy.retain + 1)
        sends, expired, now = [], 0, self.clock()
        for n in range(first, seq + 1):
            record = self.kv.get(_msg_key(n))
            if record is None:
                continue
            if record["expires"] is not None and record["expires"] <= now:
                expired += 1
                continue
            sends.append(self._fanout(sub, n, record, now))
        missed = (seq - since) - len(sends) - expired
        return {"subscriber": subscriber, "since": since, "already": False, "replayed": len(sends),
                "missed": missed, "expired": expired}, sends

    def unsubscribe(self, subscriber: str) -> dict[str, Any]:
        return {"subscriber": subscriber, "removed": self.kv.delete(_SUB + subscriber), "last_seq": self.seq()}

    def stats(self) -> dict[str, Any]:
        seq = self.seq()
        count = min(seq, self.policy.retain)
        return {"topic": self.topic, "seq": seq, "subscribers": len(self.subscriptions()),
                "retained": {"first": seq - count + 1 if count else None, "last": seq if count else None,
                             "count": count},
                "keys": min(self.kv.get(_KEYED, 0), self.policy.keys)}


class Topic(Agent):
    """A publish/subscribe topic (see the module docstring for the semantics)."""

    #: What every topic of this class remembers, unless spawned with ``init={"policy": {...}}``.
    policy: ClassVar[TopicPolicy] = TopicPolicy()

    def __init__(self, policy: dict[str, Any] | TopicPolicy | None = None) -> None:
        if isinstance(policy, dict):
            policy = TopicPolicy(**policy)
        self.topic_policy = policy or type(self).policy

    def _logic(self) -> TopicLogic:
        return TopicLogic(self.state, time.time, self.topic_policy, self.agent_id)

    def _fan_out(self, sends: list[Fanout]) -> None:
        # The deliveries do not inherit the publish's deadline (an ask's timeout is about the
        # reply): they are tried for as long as the outbox tries, or for the publish's ttl.
        for to, msg, delivery, timeout in sends:
            self.send(to, msg, delivery=delivery, timeout=timeout, inherit_deadline=False)

    @handler
    def publish(self, msg: Publish) -> dict[str, Any]:
        reply, sends = self._logic().publish(msg.payload, payload_type=msg.payload_type, key=msg.key, ttl=msg.ttl)
        self._fan_out(sends)
        return reply

    @handler
    def subscribe(self, msg: Subscribe) -> dict[str, Any]:
        reply, sends = self._logic().subscribe(msg.subscriber, after=msg.after, delivery=msg.delivery)
        self._fan_out(sends)
        return reply

    @handler
    def unsubscribe(self, msg: Unsubscribe) -> dict[str, Any]:
        return self._logic().unsubscribe(msg.subscriber)

    @handler
    def subscribers(self, msg: Subscribers) -> list[dict[str, Any]]:
        return self._logic().subscriptions()

    @handler
    def stats(self, msg: TopicStats) -> dict[str, Any]:
        return self._logic().stats()
