"""The envelope every message travels in, and its msgpack wire form.

On the wire an envelope is one msgpack array, positional for speed::

    [format, id, type, sender, recipient, correlation_id, reply_to,
     deadline, attempt, idempotency_key, traceparent, seq, delivery, body, epoch]

Field by field:

``format``           int, always 2 for this layout; anything else (2.0 too) is refused.
``id``               16 bytes, time-ordered and unique (see ``_ids``).
``type``             str ``"name@version"``: which registered class the body is.
``sender``           str or nil: the sending agent's id, or ``driver:<hex>`` for
                     a driver script; nil when nobody can be answered.
``recipient``        str: the receiving agent's id.
``correlation_id``   16 bytes or nil: on a reply, the id of the request.
``reply_to``         str or nil: where a reply goes if not to ``sender``.
``deadline``         float or nil: absolute Unix time after which the message
                     must not be handled; finite (NaN would never expire, and
                     would poison every onward deadline computed from it).  Absolute, so it survives hops: each
                     hop's remaining budget is ``deadline - now``.
``attempt``          int >= 1: 1 on the first send, +1 per redelivery.
``idempotency_key``  bytes or nil: what the receiver deduplicates on;
                     nil means "use ``id``".
``traceparent``      str or nil: W3C trace context, passed through untouched.
``seq``              int or nil: the sender's sequence number towards this
                     recipient, for per-pair FIFO order.
``delivery``         str: a :class:`Delivery` value.
``body``             the message fields as a msgpack map (pydantic JSON mode).
``epoch``            int or nil: the sending agent incarnation's fencing epoch
                     (see ``runtime._fence``); a receiver refuses a message
                     whose sender has since been replaced by a later epoch.
                     nil from drivers, which are never fenced.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import msgpack

from ._delivery import Delivery
from ._ids import new_id
from ._message import Message
from .exceptions import DeadlineExpired, EncodingError, PayloadTooLarge

__all__ = ["Envelope", "decode_envelope", "encode_envelope", "encode_envelopes", "make_envelope"]

FORMAT = 2
_FIELDS = 15
_INF = float("inf")
_DELIVERY_BY_VALUE = {d.value: d for d in Delivery}


@dataclass(slots=True)
class Envelope:
    id: bytes
    type: str
    recipient: str
    body: Any
    sender: str | None = None
    correlation_id: bytes | None = None
    reply_to: str | None = None
    deadline: float | None = None
    attempt: int = 1
    idempotency_key: bytes | None = None
    traceparent: str | None = None
    seq: int | None = None
    delivery: Delivery = Delivery.EFFECTIVELY_ONCE
    epoch: int | None = None

    @property
    def dedup_key(self) -> bytes:
        return self.idempotency_key or self.id

    def remaining(self, now: float | None = None) -> float | None:
        """Seconds left before the deadline (negative once past), or None."""
        if self.deadline is None:
            return None
        return self.deadline - (time.time() if now is None else now)

    def check_deadline(self, where: str, now: float | None = None) -> None:
        """Raise DeadlineExpired, naming ``where``, if the deadline has passed."""
        left = self.remaining(now)
        if left is not None and left <= 0:
            raise DeadlineExpired(
                f"{self.type} to {self.recipient!r}: deadline expired {-left:.3f}s ago at {where}",
                deadline=self.deadline,
                where=where,
                late_by=-left,
            )


def make_envelope(
    msg: Message,
    recipient: str,
    *,
    sender: str | None = None,
    deadline: float | None = None,
    delivery: Delivery | None = None,
    traceparent: str | None = None,
    idempotency_key: bytes | None = None,
    epoch: int | None = None,
) -> Envelope:
    """Wrap a message for sending; the body is dumped in pydantic's JSON mode."""
    # The class's serializer directly: what ``model_dump(mode="json")`` calls,
    # without its keyword-argument plumbing (half the cost of a small body).
    try:
        body = msg.__pydantic_serializer__.to_python(msg, mode="json")
    except ValueError as exc:  # pydantic's serialization errors, and bytes that are not UTF-8 text
        raise EncodingError(f"a {msg.__message_tag__} message cannot be encoded: its body is not JSON-mode "
                            f"data ({type(exc).__name__}: {exc}); send bytes as base64 text, or as a bytes "
                            "field of the message class") from exc
    return Envelope(
        new_id(), msg.__message_tag__, recipient, body, sender, None, None,
        deadline, 1, idempotency_key, traceparent, None, delivery or msg.__message_delivery__, epoch,
    )


_local = threading.local()


def _packer() -> msgpack.Packer:
    packer = getattr(_local, "packer", None)
    if packer is None:  # one per thread: packb() would build a new Packer per call
        packer = _local.packer = msgpack.Packer(use_bin_type=True)
    return packer


def _pack(pack: Any, env: Envelope) -> bytes:
    return pack(
        [
            FORMAT, env.id, env.type, env.sender, env.recipient, env.correlation_id, env.reply_to,
            env.deadline, env.attempt, env.idempotency_key, env.traceparent, env.seq,
            env.delivery._value_, env.body, env.epoch,  # _value_: Enum.value without the descriptor
        ]
    )


def encode_envelope(env: Envelope) -> bytes:
    packer = _packer()
    try:
        return _pack(packer.pack, env)
    except (TypeError, ValueError, OverflowError) as exc:
        packer.reset()
        raise EncodingError(f"cannot encode envelope of {env.type}: {exc}", tag=env.type) from exc


def encode_envelopes(envs: list[Envelope]) -> list[bytes]:
    """``encode_envelope`` of each, in order (one packer look-up for all)."""
    packer = _packer()
    pack = packer.pack
    out = []
    for env in envs:
        try:
            out.append(_pack(pack, env))
        except (TypeError, ValueError, OverflowError) as exc:
            packer.reset()
            raise EncodingError(f"cannot encode envelope of {env.type}: {exc}", tag=env.type) from exc
    return out


def _expect(value: Any, types: type | tuple[type, ...], name: str, nullable: bool = False) -> Any:
    if value is None and nullable:
        return None
    if not isinstance(value, types) or isinstance(value, bool) and types is not bool:
        raise EncodingError(
            f"envelope field {name!r} has type {type(value).__name__}",
            field=name,
        )
    return value


def _explain(parts: list[Any]) -> None:
    """Raise the EncodingError that names the first bad field."""
    (_, mid, tag, sender, recipient, corr, reply_to, deadline, attempt, ikey, tp, seq, delivery, _body, epoch) = parts
    _expect(mid, bytes, "id")
    if len(mid) != 16:
        raise EncodingError(f"envelope field 'id' must be 16 bytes, got {len(mid)}", field="id")
    _expect(tag, str, "type")
    _expect(sender, str, "sender", nullable=True)
    _expect(recipient, str, "recipient")
    _expect(corr, bytes, "correlation_id", nullable=True)
    _expect(reply_to, str, "reply_to", nullable=True)
    _expect(deadline, (int, float), "deadline", nullable=True)
    if deadline is not None and not -_INF < deadline < _INF:
        raise EncodingError(f"envelope field 'deadline' must be a finite time, got {deadline!r}", field="deadline")
    _expect(attempt, int, "attempt")
    if attempt < 1:
        raise EncodingError(f"envelope field 'attempt' must be >= 1, got {attempt}", field="attempt")
    _expect(ikey, bytes, "idempotency_key", nullable=True)
    _expect(tp, str, "traceparent", nullable=True)
    _expect(seq, int, "seq", nullable=True)
    _expect(epoch, int, "epoch", nullable=True)
    if type(delivery) is str and delivery in _DELIVERY_BY_VALUE:
        raise EncodingError(f"envelope field 'epoch' must be >= 1, got {epoch}", field="epoch")
    raise EncodingError(f"envelope field 'delivery' is not a delivery level: {delivery!r}", field="delivery")


def decode_envelope(raw: Any, *, max_bytes: int | None = None) -> Envelope:
    """Parse wire bytes into an Envelope; every failure is an EncodingError or PayloadTooLarge.

    The body is not validated here: that needs the schema registry
    (``Registry.resolve`` then the class's ``model_validate``).
    """
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise EncodingError(f"envelope must be bytes, got {type(raw).__name__}")
    if max_bytes is not None and len(raw) > max_bytes:
        raise PayloadTooLarge(
            f"envelope of {len(raw)} bytes exceeds the limit of {max_bytes}",
            size=len(raw),
            limit=max_bytes,
        )
    try:
        parts = msgpack.unpackb(raw, raw=False, strict_map_key=False, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise EncodingError(f"not msgpack: {type(exc).__name__}: {exc}") from exc
    if not isinstance(parts, list) or len(parts) != _FIELDS:
        raise EncodingError(
            f"envelope must be a {_FIELDS}-element array, got {type(parts).__name__}"
            + (f" of {len(parts)}" if isinstance(parts, list) else "")
        )
    if type(parts[0]) is not int or parts[0] != FORMAT:
        raise EncodingError(f"unknown envelope format {parts[0]!r}; this build reads format {FORMAT}")
    (_, mid, tag, sender, recipient, corr, reply_to, deadline, attempt, ikey, tp, seq, delivery, body, epoch) = parts
    level = _DELIVERY_BY_VALUE.get(delivery) if type(delivery) is str else None
    # Fast path: one pass of exact type checks; the slow path below only runs
    # to say precisely what is wrong.
    if not (
        type(mid) is bytes and len(mid) == 16 and type(tag) is str and type(recipient) is str
        and (sender is None or type(sender) is str) and (corr is None or type(corr) is bytes)
        and (reply_to is None or type(reply_to) is str)
        and (deadline is None or type(deadline) is float and -_INF < deadline < _INF or type(deadline) is int)
        and type(attempt) is int and attempt >= 1 and (ikey is None or type(ikey) is bytes)
        and (tp is None or type(tp) is str) and (seq is None or type(seq) is int) and level is not None
        and (epoch is None or type(epoch) is int and epoch >= 1)
    ):
        _explain(parts)
    # Positional, in field order (cheaper than keywords on the hot path).
    return Envelope(
        mid, tag, recipient, body, sender, corr, reply_to,
        float(deadline) if deadline is not None else None, attempt, ikey, tp, seq, level, epoch,
    )
