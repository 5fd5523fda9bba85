"""Malformed input thrown at a live agent: no crash, every input accounted for, state unchanged."""

from __future__ import annotations

import re

import msgpack
import pytest
import ray
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from protocols import (
    ProtocolError,
    WireError,
    decode_envelope,
    encode_batch,
    error_from_wire,
    make_envelope,
    parse_message,
)
from protocols._envelope import FORMAT
from runtime._reply import decode_reply

from .agents import Append, Counter, GetCount, GetItems

pytestmark = pytest.mark.ray

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False),
                    st.text(max_size=20), st.binary(max_size=20))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=10)


def _fields(agent_id):
    good = make_envelope(Append(item=1), agent_id)
    return [FORMAT, good.id, good.type, None, agent_id, None, None, None, 1, None, None, None, "effectively_once", {"item": 1}]


@st.composite
def malformed(draw, agent_id):
    kind = draw(st.sampled_from(["bytes", "truncated", "field", "body", "type", "deadline", "oversize", "sender", "batch"]))
    fields = _fields(agent_id)
    if kind == "bytes":
        return "deliver", draw(st.binary(max_size=200))
    if kind == "truncated":
        raw = msgpack.packb(fields)
        return "deliver", raw[: draw(st.integers(0, len(raw) - 1))]
    if kind == "field":
        i = draw(st.integers(0, len(fields) - 1))
        fields[i] = draw(values)
        if draw(st.booleans()):
            del fields[draw(st.integers(0, len(fields) - 1))]
    elif kind == "body":
        body = draw(values)
        assume(not (isinstance(body, dict) and set(body) == {"item"} and type(body["item"]) is int))
        fields[13] = body
    elif kind == "type":
        fields[2] = draw(st.one_of(st.text(max_size=30), st.sampled_from(["test.append@2", "test.append@0", "nope@1"])))
        assume(fields[2] != "test.append@1")
    elif kind == "deadline":
        fields[7] = draw(st.floats(0, 1_000_000_000))
    elif kind == "oversize":
        fields[13] = {"item": 1, "pad": "x" * (70_000 + draw(st.integers(0, 1000)))}
    elif kind == "sender":
        fields[3] = draw(st.text(min_size=1, max_size=30))
        fields[13] = {"item": "not an int"}
    elif kind == "batch":
        raw = msgpack.packb(fields)
        return "batch", draw(st.one_of(st.binary(max_size=50), st.just(encode_batch(0, [raw, b"\xc1"])),
                                       st.just(msgpack.packb([0, [1, 2]]))))
    raw = msgpack.packb(fields, use_bin_type=True)
    assume(not _acceptable(raw))  # a mutation that happens to be a valid Append is not malformed
    return "deliver", raw


def _acceptable(raw: bytes) -> bool:
    try:
        env = decode_envelope(raw, max_bytes=65536)
        env.check_deadline("fuzz")
        parse_message(env)
    except ProtocolError:
        return False
    return True


def _rejections(metrics: str) -> int:
    return int(sum(float(v) for v in re.findall(r'garrison_messages_total\{[^}]*outcome="rejected_[^"]*"\} (\S+)', metrics)))


def test_fuzzed_envelopes_never_crash_and_are_all_accounted_for(system, agent_id):
    ref = system.spawn(Counter, agent_id, config={"max_message_bytes": 65536})
    for i in range(3):
        ref.ask(Append(item=i))
    pid = ref.status()["pid"]
    sent = {"deliver": 0, "batch": 0, "batch_items": 0}

    @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(malformed(agent_id))
    def throw(case):
        route, raw = case
        sent[route] += 1
        method = ref._handle.deliver if route == "deliver" else ref._handle.deliver_batch
        ok, value = decode_reply(ray.get(method.remote(raw), timeout=30))
        if route == "deliver":
            assert not ok, f"malformed input was accepted: {raw!r}"
            err = error_from_wire(value)
            assert isinstance(err, WireError) and type(err).__name__ != "RemoteError", err
        elif ok:
            sent["batch_items"] += len(value[1]) - 1  # the batch frame itself was fine
        else:
            assert type(error_from_wire(value)).__name__ == "EncodingError"

    throw()
    status = ref.status()
    assert status["pid"] == pid and status["state"] == "running", "no crash, no restart"
    assert ref.ask(GetItems()) == [0, 1, 2] and ref.ask(GetCount()) == 3, "state unchanged"
    # Every input got a typed error and was counted; those nobody waited on are dead letters.
    rejected = _rejections(ref.metrics())
    assert rejected >= sent["deliver"] + sent["batch"], (rejected, sent)
    assert status["dead_letters"] >= sent["deliver"]
