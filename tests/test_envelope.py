"""The envelope's wire form: round trip, and a typed error for every malformed input."""

from __future__ import annotations

import time
from typing import Any

import msgpack
import pytest

from protocols import (
    DeadlineExpired,
    Delivery,
    EncodingError,
    Message,
    PayloadTooLarge,
    ProtocolError,
    decode_envelope,
    encode_envelope,
    id_time,
    make_envelope,
    new_id,
)

from .agents import Add


def test_round_trip_keeps_every_field():
    env = make_envelope(Add(n=3), "bob", sender="alice", deadline=123.5, traceparent="00-abc-def-01",
                        idempotency_key=b"k1", delivery=Delivery.AT_LEAST_ONCE)
    env.seq, env.attempt, env.correlation_id, env.reply_to = 7, 2, new_id(), "carol"
    back = decode_envelope(encode_envelope(env))
    assert back == env


def test_ids_are_unique_and_time_ordered():
    ids = [new_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert [i[:6] for i in ids] == sorted(i[:6] for i in ids), "ordered by their millisecond"
    assert abs(id_time(ids[-1]) - time.time()) < 5


@pytest.mark.parametrize(
    "raw, match",
    [
        (b"\xc1", "not msgpack"),
        (b"", "not msgpack"),
        (msgpack.packb({"a": 1}), "15-element array"),
        (msgpack.packb([1] + [None] * 14), "unknown envelope format"),
        (msgpack.packb([2, b"short", "t@1", None, "r", None, None, None, 1, None, None, None, "at_most_once", {}, None]), "16 bytes"),
        (msgpack.packb([2, b"x" * 16, 5, None, "r", None, None, None, 1, None, None, None, "at_most_once", {}, None]), "'type'"),
        (msgpack.packb([2, b"x" * 16, "t@1", None, "r", None, None, "soon", 1, None, None, None, "at_most_once", {}, None]), "'deadline'"),
        (msgpack.packb([2, b"x" * 16, "t@1", None, "r", None, None, None, 0, None, None, None, "at_most_once", {}, None]), "'attempt'"),
        (msgpack.packb([2, b"x" * 16, "t@1", None, "r", None, None, None, True, None, None, None, "at_most_once", {}, None]), "'attempt'"),
        (msgpack.packb([2, b"x" * 16, "t@1", None, "r", None, None, None, 1, None, None, None, "twice", {}, None]), "'delivery'"),
        (msgpack.packb([2, b"x" * 16, "t@1", None, "r", None, None, None, 1, None, None, None, "at_most_once", {}, 0]), "'epoch'"),
        (msgpack.packb([2, b"x" * 16, "t@1", None, "r", None, None, None, 1, None, None, None, "at_most_once", {}, "1"]), "'epoch'"),
        (msgpack.packb([2.0, b"x" * 16, "t@1", None, "r", None, None, None, 1, None, None, None, "at_most_once", {}, None]), "unknown envelope format"),
        (msgpack.packb([2, b"x" * 16, "t@1", None, "r", None, None, float("nan"), 1, None, None, None, "at_most_once", {}, None]), "'deadline' must be a finite"),
        (msgpack.packb([2, b"x" * 16, "t@1", None, "r", None, None, float("inf"), 1, None, None, None, "at_most_once", {}, None]), "'deadline' must be a finite"),
        (msgpack.packb([2, b"x" * 16, "t@1", None, "r", None, None, float("-inf"), 1, None, None, None, "at_most_once", {}, None]), "'deadline' must be a finite"),
        ("not bytes", "must be bytes"),
    ],
)
def test_malformed_envelopes_raise_encoding_error(raw, match):
    with pytest.raises(EncodingError, match=match):
        decode_envelope(raw)


def test_truncated_envelope_is_an_encoding_error():
    raw = encode_envelope(make_envelope(Add(n=1), "bob"))
    for cut in range(1, len(raw)):
        with pytest.raises(EncodingError):
            decode_envelope(raw[:cut])


def test_oversize_envelope_is_refused_before_parsing():
    raw = encode_envelope(make_envelope(Add(n=1), "bob"))
    with pytest.raises(PayloadTooLarge) as err:
        decode_envelope(raw, max_bytes=len(raw) - 1)
    assert err.value.details == {"size": len(raw), "limit": len(raw) - 1}


def test_deadline_check_names_where_it_expired():
    env = make_envelope(Add(n=1), "bob", deadline=100.0)
    env.check_deadline("here", now=99.0)
    with pytest.raises(DeadlineExpired, match="at the middle") as err:
        env.check_deadline("the middle", now=101.5)
    assert err.value.details["late_by"] == pytest.approx(1.5)


class Loose(Message, name="test.loose"):
    data: dict[str, Any]


@pytest.mark.parametrize("value, cause", [(b"\xfc\xfd raw bytes", "UnicodeDecodeError"),
                                          (object(), "PydanticSerializationError")])
def test_a_body_that_cannot_be_encoded_is_an_encoding_error_naming_the_message(value, cause):
    with pytest.raises(EncodingError) as info:
        make_envelope(Loose(data={"x": value}), "someone")
    assert "test.loose@1" in str(info.value) and cause in str(info.value) and isinstance(info.value, ProtocolError)
    assert make_envelope(Loose(data={"x": "text"}), "someone").body == {"data": {"x": "text"}}
