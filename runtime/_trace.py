"""Which trace a message belongs to: its W3C ``traceparent``, passed on to every message its handler sends.

``current_message`` holds the message being handled (its id and
``traceparent``) while a handler runs (``_invoke``), and the trace a driver
opened with :func:`trace`.  Every envelope made meanwhile -- ``Agent.send``,
``ref.tell`` and ``ref.ask`` from a handler, or from the driver inside
``with trace():`` -- carries a *child* of it: the same trace id, a new parent
id (``00-<trace id>-<new 16 hex>-<flags>``), so one trace spans every agent a
request reaches, and the logs (``_logs``), the audit records and the observer
(``_observer``) all name it.

Invariant: the trace id is never changed on the way; only a malformed
``traceparent`` (not four dash-separated parts with a 32-hex trace id) is not
passed on.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
from collections.abc import Iterator
from typing import NamedTuple

__all__ = ["MessageTrace", "child", "current_message", "new_traceparent", "outgoing", "trace", "trace_id"]

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


class MessageTrace(NamedTuple):
    """The message being handled (``id`` in hex; None in a driver's trace) and its traceparent.

    ``span``: the traceparent is an OpenTelemetry span's own (``_spans``): passed on unchanged,
    so the receiver's span is its child.
    """

    id: str | None
    traceparent: str | None
    span: bool = False


current_message: contextvars.ContextVar[MessageTrace | None] = contextvars.ContextVar(
    "garrison_message", default=None)


def new_traceparent() -> str:
    """A new trace: a random trace id and parent id, sampled."""
    return f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"


def child(traceparent: str | None) -> str | None:
    """``traceparent`` one hop on: the same trace id and flags, a new parent id; None stays None."""
    if not traceparent:
        return None
    found = _TRACEPARENT.match(traceparent)
    if found is None:
        return None
    version, trace_hex, _, flags = found.groups()
    return f"{version}-{trace_hex}-{os.urandom(8).hex()}-{flags}"


def trace_id(traceparent: str | None) -> str | None:
    """The trace-id part of a W3C ``traceparent`` (``00-<trace id>-<span id>-<flags>``), or None."""
    if not traceparent:
        return None
    parts = traceparent.split("-")
    return parts[1] if len(parts) >= 4 else traceparent


def outgoing() -> str | None:
    """The traceparent an envelope made now carries: a child of the current message's, or None."""
    current = current_message.get()
    if current is None:
        return None
    return current.traceparent if current.span else child(current.traceparent)


@contextlib.contextmanager
def trace(traceparent: str | None = None) -> Iterator[str]:
    """In a driver: every ask and tell inside the block belongs to one trace (new, or ``traceparent``'s).

    Yields the traceparent; ``garrison decisions ID --trace`` and the agents' logs find it by its id.
    """
    opened = traceparent or new_traceparent()
    token = current_message.set(MessageTrace(None, opened))
    try:
        yield opened
    finally:
        current_message.reset(token)
