"""Publish/subscribe: ``from runtime.topics import Topic, Publish, Published, Subscribe, ...``.

:class:`Topic` is a Garrison agent (one per topic; its state in LMDB, checkpointed, supervisable)
holding durable subscriptions.  Each publish is numbered and sent to every subscriber through the
topic's durable outbox, so a subscriber gets the delivery levels of direct messages: per-subscriber
order, retries across restarts of either side, effectively-once at the receiver, dead letters on
the topic when a subscriber cannot be reached.  A subscriber is any agent with a handler for
:class:`Published`.  The messages have names of their own (``garrison.topic.publish@1`` ...) and live here
rather than in ``runtime``'s namespace; the rules and the agent are in :mod:`runtime._topic`.
``Topic`` is in ``runtime`` too.
"""

from __future__ import annotations

from ._topic import (
    Publish,
    Published,
    Subscribe,
    Subscribers,
    Topic,
    TopicPolicy,
    TopicStats,
    Unsubscribe,
)

__all__ = [
    "Publish",
    "Published",
    "Subscribe",
    "Subscribers",
    "Topic",
    "TopicPolicy",
    "TopicStats",
    "Unsubscribe",
]
