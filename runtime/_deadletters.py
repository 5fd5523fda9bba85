"""Dead letters: messages that could not be delivered or handled, kept with the reason.

A receiver records what it refused (malformed, invalid, unknown type, expired,
no handler, the handler raised); a sender records what it gave up delivering
(out of attempts).  Records live in the agent's LMDB (journaled, so they
survive node loss), keyed by a time-ordered id, and can be listed and replayed.

Reasons (``DeadLetter.reason``):

``malformed``       the bytes are not an envelope (``EncodingError``)
``too_large``       over ``max_message_bytes``
``unknown_type``    the type or version is not registered
``invalid``         the body failed validation
``expired``         the deadline passed before handling
``no_handler``      this agent has no handler for the type
``handler_error``   the handler raised (its changes were rolled back)
``dropped``         an intervention hook dropped it before its handler
``held``            an intervention hook held it; replaying it passes the hooks again
``not_running``     the agent's lifecycle state refused it
``undeliverable``   the sender ran out of attempts
``mailbox_full``    an at-most-once send found the receiver's window full
``stale_epoch``     the sender's incarnation had been replaced (fencing)
``fenced``          this incarnation had been replaced when it tried to send
``not_durable``     an at-most-once send of a SYNC agent whose commit could not be
                    shipped: it was not sent, as the sender might forget it
``overflow``        a driver's ref held its bound of tells while this agent was
                    down; newer ones were not delivered (recorded here by the
                    ref once the agent is back)

Bound: at most ``dead_letter_limit`` records (default 100,000); past it each
commit deletes the oldest (see ``_retention``), so the table stays
at the limit under any rate of failures.  Each record keeps the message's
bytes (up to ``max_message_bytes``): lower the limit for large messages.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict

from protocols import Envelope, WireError, new_id

from ._codec import pack, unpack
from ._store import PUT, LmdbStore, Op

__all__ = ["REASONS", "DeadLetter", "dead_letter_op", "list_dead_letters", "reason_for"]

_REASONS = {
    "EncodingError": "malformed",
    "PayloadTooLarge": "too_large",
    "UnknownMessageType": "unknown_type",
    "MessageValidationError": "invalid",
    "DeadlineExpired": "expired",
    "NoHandler": "no_handler",
    "HandlerError": "handler_error",
    "AgentNotRunning": "not_running",
    "MailboxFull": "mailbox_full",
    "StaleEpoch": "stale_epoch",
    "Fenced": "fenced",
    "NotDurable": "not_durable",
    "MessageDropped": "dropped",
    "MessageHeld": "held",
}

#: Every reason a dead letter may have (see the module docstring).
REASONS = frozenset({*_REASONS.values(), "undeliverable", "overflow"})


def reason_for(exc: WireError) -> str:
    return _REASONS.get(exc.code, "handler_error")


class DeadLetter(BaseModel):
    """One dead letter, as listed by the API and the CLI."""

    model_config = ConfigDict(frozen=True)

    id: str
    time: float
    reason: str
    error: str
    message: str
    type: str | None = None
    sender: str | None = None
    recipient: str | None = None
    seq: int | None = None
    attempts: int = 1
    envelope: bytes | None = None


def dead_letter_op(
    reason: str,
    exc: WireError | None,
    *,
    raw: bytes | None = None,
    env: Envelope | None = None,
    attempts: int | None = None,
    now: float | None = None,
) -> Op:
    """The op that records one dead letter (commit it with the batch it belongs to)."""
    record: dict[str, Any] = {
        "time": time.time() if now is None else now,
        "reason": reason,
        "error": exc.code if exc else reason,
        "message": exc.message if exc else reason,
        "type": env.type if env else None,
        "sender": env.sender if env else None,
        "recipient": env.recipient if env else None,
        "seq": env.seq if env else None,
        "attempts": attempts if attempts is not None else (env.attempt if env else 1),
        "envelope": bytes(raw) if isinstance(raw, (bytes, bytearray, memoryview)) else None,
    }
    return Op("deadletters", PUT, new_id(), pack(record))


def list_dead_letters(store: LmdbStore, *, reason: str | None = None, limit: int = 100) -> list[DeadLetter]:
    out = []
    for key, raw in store.scan("deadletters"):
        record = unpack(raw)
        if reason is not None and record["reason"] != reason:
            continue
        out.append(DeadLetter(id=key.hex(), **record))
        if len(out) >= limit:
            break
    return out
