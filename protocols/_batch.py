"""Batches: many envelopes to one receiver in one call, and the receiver's acknowledgement.

A batch is ``[base, [envelope, ...], epoch]``: encoded envelopes (each still a
complete, self-describing envelope, so a receiver can refuse one bad envelope
and handle the rest) that share sender and recipient and carry consecutive
``seq`` numbers, and ``base``, the highest seq the sender knows to be
acknowledged, and ``epoch``, the fencing epoch of the sender's incarnation
that sends the batch (nil outside a fenced runtime).  That epoch rides on the
batch because an outbox written by one incarnation is sent by the next: what
is fenced is the process that sends.  (Each envelope's own ``epoch`` is the
one that numbered it, which orders the pair across restores.)  A receiver with
no record of the sender (new, or trimmed past the dedup horizon) starts from
``base``, so it still sees a gap when a later batch overtakes an earlier one.

The receiver acknowledges with ``[hwm, errors]``: ``hwm`` is the ``seq`` of
the last envelope of this batch it has durably dealt with, in order (handled,
a duplicate, or dead-lettered with a reason), or ``base`` if the first one is
a gap; everything up to it may leave the sender's outbox.  ``errors`` lists ``[seq, code, message]`` for envelopes it refused.
"""

from __future__ import annotations

from typing import Any

import msgpack

from .exceptions import EncodingError

__all__ = ["decode_batch", "encode_batch"]


def encode_batch(base: int, envelopes: list[bytes], epoch: int | None = None) -> bytes:
    return msgpack.packb([base, envelopes, epoch], use_bin_type=True)


def decode_batch(raw: Any) -> tuple[int, list[bytes], int | None]:
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise EncodingError(f"batch must be bytes, got {type(raw).__name__}")
    try:
        frame = msgpack.unpackb(raw, raw=False)
    except Exception as exc:
        raise EncodingError(f"batch is not msgpack: {type(exc).__name__}: {exc}") from exc
    if (
        not isinstance(frame, list)
        or len(frame) != 3
        or not isinstance(frame[0], int)
        or isinstance(frame[0], bool)
        or frame[0] < 0
        or not isinstance(frame[1], list)
        or not all(isinstance(i, bytes) for i in frame[1])
        or not (frame[2] is None or type(frame[2]) is int and frame[2] >= 1)
    ):
        raise EncodingError("batch must be [base, [encoded envelope, ...], epoch or nil]")
    return frame[0], frame[1], frame[2]
