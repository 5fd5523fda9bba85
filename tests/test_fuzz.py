"""Malformed input thrown at a live agent: each kind of damage reaches its own check and gets its own typed error.

Every mutation starts from a real envelope made by the encoder (so the base
cannot drift from the wire layout) that passes every check, and damages one
thing: the first check that looks at that thing must be the one that refuses
it.  A tally of which check refused each input proves every kind of damage got
past the guards in front of its own check (a wrong-length base, say, would
have every input refused by the length check and this test would fail).
Then: no crash, state unchanged, every refusal counted once in the metrics and
once as a dead letter.
"""

from __future__ import annotations

import math
import re
from collections import Counter as Tally

import msgpack
import pytest
import ray
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from protocols import (
    Delivery,
    ProtocolError,
    decode_envelope,
    default_registry,
    encode_batch,
    encode_envelope,
    error_from_wire,
    make_envelope,
    parse_message,
)
from protocols._envelope import FORMAT
from runtime._reply import decode_reply

from .agents import Append, Counter, GetCount, GetItems

pytestmark = pytest.mark.ray

MAX_BYTES = 65536
#: The wire layout, in order (see protocols/_envelope.py); the base is checked against it.
FIELDS = ["format", "id", "type", "sender", "recipient", "correlation_id", "reply_to", "deadline", "attempt",
          "idempotency_key", "traceparent", "seq", "delivery", "body", "epoch"]
IX = {name: i for i, name in enumerate(FIELDS)}
HEADER = [f for f in FIELDS if f != "body"]  # the body has its own check (schema validation)
LEVELS = {d.value for d in Delivery}
BATCH_SENDER = "fuzz-batch-sender"
FENCED_SENDER = "fuzz-fenced-sender"
NEWEST_EPOCH = 1_000_000
MIN_PER_KIND = 10
LONG_AGO = 1.6e9  # September 2020: a fixed past, so the strategy does not depend on the clock

# What each header field accepts, written from the layout's documentation (not from the decoder).
VALID = {
    "format": lambda v: type(v) is int and v == FORMAT,
    "id": lambda v: type(v) is bytes and len(v) == 16,
    "type": lambda v: type(v) is str,
    "sender": lambda v: v is None or type(v) is str,
    "recipient": lambda v: type(v) is str,
    "correlation_id": lambda v: v is None or type(v) is bytes,
    "reply_to": lambda v: v is None or type(v) is str,
    "deadline": lambda v: v is None or type(v) in (int, float) and math.isfinite(v),
    "attempt": lambda v: type(v) is int and v >= 1,
    "idempotency_key": lambda v: v is None or type(v) is bytes,
    "traceparent": lambda v: v is None or type(v) is str,
    "seq": lambda v: v is None or type(v) is int,
    "delivery": lambda v: type(v) is str and v in LEVELS,
    "epoch": lambda v: v is None or type(v) is int and v >= 1,
}
# Near misses worth trying beside arbitrary values.
NEAR = {
    "format": st.sampled_from([1, 3, 2.0, True, "2"]),
    "id": st.binary(max_size=40),
    "attempt": st.one_of(st.integers(-(2**63), 0), st.just(True)),
    "epoch": st.one_of(st.integers(-(2**63), 0), st.booleans()),
    "deadline": st.sampled_from([math.nan, math.inf, -math.inf, True, "soon"]),
    "delivery": st.one_of(st.text(max_size=15), st.sampled_from(["AT_MOST_ONCE", "twice"])),
    "seq": st.sampled_from([True, 1.5, "1"]),
    "type": st.just(b"test.append@1"),
}

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False),
                    st.text(max_size=20), st.binary(max_size=20))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=10)


def _base(agent_id: str, **kw) -> list:
    """A valid Append envelope's wire fields, from the real encoder."""
    fields = msgpack.unpackb(encode_envelope(make_envelope(Append(item=1), agent_id, **kw)), raw=False)
    assert len(fields) == len(FIELDS), "the test's idea of the layout is out of date"
    return fields


def _pack(fields: list) -> bytes:
    return msgpack.packb(fields, use_bin_type=True)


class Raw(bytes):
    """Bytes to send as they are (not a field list to pack)."""


def _wire(damage: object) -> bytes:
    return bytes(damage) if isinstance(damage, Raw) else _pack(damage)


# Bodies that cannot validate as Append(item: int), by construction.
_no_digits = st.text(max_size=10).filter(lambda s: not any(c.isdigit() for c in s))
bad_bodies = st.one_of(
    values.filter(lambda v: not isinstance(v, dict)),  # not a map
    st.dictionaries(st.text(max_size=8).filter(lambda k: k != "item"), values, max_size=3),  # no item
    st.builds(lambda extra, v: {"item": 1, **{f"x{extra}": v}}, st.text(max_size=5), values),  # extra field
    st.builds(lambda v: {"item": v}, st.one_of(st.none(), st.lists(values, max_size=3), _no_digits,
                                               st.dictionaries(st.text(max_size=4), values, max_size=2),
                                               st.floats(0.1, 0.9).map(lambda f: 7 + f))),  # item not an int
)
# Tags nobody registered, by construction: unknown names, versions past the latest, malformed tags.
bad_tags = st.one_of(
    st.builds(lambda n, v: f"fuzz.unregistered.{n}@{v}", st.text(max_size=10), st.integers(1, 99)),
    st.builds(lambda v: f"test.append@{v}", st.integers(2, 10**6)),
    st.sampled_from(["test.append@0", "test.append", "test.append@", "@1", "test.append@x", "test.append@1.0",
                     "test.append@²", "test.append@١", "test.append@ 1", ""]),
    st.text(max_size=30).filter(lambda t: "@" not in t),
)


@st.composite
def damaged(draw, agent_id: str, kind: str, *, sender: str | None = None) -> tuple[str, set[str], object]:
    """``(kind, the checks allowed to refuse it, fields to pack or Raw bytes)`` for one kind of damage."""
    fields = _base(agent_id, sender=sender)
    if kind == "bytes":
        return kind, {"msgpack", "length"}, Raw(draw(st.binary(max_size=200)))
    if kind == "truncated":
        raw = _pack(fields)
        return kind, {"msgpack"}, Raw(raw[: draw(st.integers(0, len(raw) - 1))])
    if kind == "length":
        how = draw(st.sampled_from(["drop", "add", "not a list"]))
        if how == "drop":
            for _ in range(draw(st.integers(1, 5))):
                del fields[draw(st.integers(0, len(fields) - 1))]
        elif how == "add":
            fields += draw(st.lists(values, min_size=1, max_size=3))
        else:
            fields = draw(values.filter(lambda v: not isinstance(v, list)))
        return kind, {"length"}, fields
    if kind == "field":
        name = draw(st.sampled_from(HEADER))
        pool = st.one_of(values, NEAR[name]) if name in NEAR else values
        fields[IX[name]] = draw(pool.filter(lambda v: not VALID[name](v)))
        return kind, {"format" if name == "format" else f"field:{name}"}, fields
    if kind == "body":
        fields[IX["body"]] = draw(bad_bodies)
        return kind, {"body"}, fields
    if kind == "type":
        fields[IX["type"]] = draw(bad_tags)
        return kind, {"type"}, fields
    if kind == "deadline":
        fields[IX["deadline"]] = draw(st.one_of(st.floats(-1e12, LONG_AGO), st.integers(-(2**63), int(LONG_AGO))))
        return kind, {"deadline"}, fields
    if kind == "epoch":  # a valid message from an incarnation older than one this agent has seen
        fields[IX["sender"]] = FENCED_SENDER
        fields[IX["epoch"]] = draw(st.integers(1, NEWEST_EPOCH - 1))
        return kind, {"epoch"}, fields
    if kind == "oversize":
        fields[IX["body"]] = {"item": 1, "pad": "x" * (MAX_BYTES + draw(st.integers(0, 1000)))}
        return kind, {"size"}, fields
    raise AssertionError(kind)


DELIVER_KINDS = ["bytes", "truncated", "length", "field", "field", "field", "body", "type", "deadline", "epoch",
                 "oversize"]
# In a batch: damage that fails decoding, the batch's own guard, and damage past it (needs sender and seq).
ITEM_DECODE_KINDS = ["bytes", "truncated", "length", "field"]
ITEM_LATER_KINDS = ["body", "type", "deadline"]


def _frame_shaped(raw: bytes) -> bool:
    try:
        f = msgpack.unpackb(raw, raw=False)
    except Exception:
        return False
    return (isinstance(f, list) and len(f) == 3 and type(f[0]) is int and f[0] >= 0 and isinstance(f[1], list)
            and all(type(i) is bytes for i in f[1]) and (f[2] is None or type(f[2]) is int and f[2] >= 1))


bad_frames = st.one_of(
    st.binary(max_size=50).filter(lambda b: not _frame_shaped(b)),
    st.sampled_from([msgpack.packb(f) for f in ([0, [1, 2]], [0, [1, 2], None], [-1, [], None], [True, [], None],
                                                [0, [], 0], [0, "x", None], [0, [], None, 1], {"base": 0})]),
)


@st.composite
def cases(draw, agent_id: str):
    route = draw(st.sampled_from(["deliver"] * 4 + ["batch_frame", "batch_items"]))
    if route == "deliver":
        return route, draw(damaged(agent_id, draw(st.sampled_from(DELIVER_KINDS))))
    if route == "batch_frame":
        return route, ("batch_frame", {"batch_frame"}, draw(bad_frames))
    items = []
    for _ in range(draw(st.integers(1, 4))):
        which = draw(st.sampled_from(ITEM_DECODE_KINDS + ITEM_LATER_KINDS + ["no_sender"]))
        if which == "no_sender":  # a valid envelope, but a batch needs a sender and a seq
            items.append(("no_sender", {"batch_item"}, _base(agent_id)))
        else:
            items.append(draw(damaged(agent_id, which, sender=BATCH_SENDER)))
    return route, items


def _check(code: str, message: str) -> str:
    """Which check refused an input, from the error it got."""
    if code == "EncodingError":
        if m := re.match(r"envelope field '(\w+)'", message):
            return f"field:{m[1]}"
        for prefix, name in [("not msgpack", "msgpack"), ("envelope must be a ", "length"),
                             ("unknown envelope format", "format"), ("batch", "batch_frame"),
                             ("a batched envelope needs", "batch_item")]:
            if message.startswith(prefix):
                return name
    return {"PayloadTooLarge": "size", "UnknownMessageType": "type", "MessageValidationError": "body",
            "DeadlineExpired": "deadline", "StaleEpoch": "epoch"}.get(code, f"unexpected {code}: {message}")


def _acceptable(raw: bytes) -> bool:
    try:
        parse_message(decode_envelope(raw, max_bytes=MAX_BYTES))
    except ProtocolError:
        return False
    return True


def _rejections(metrics: str) -> Tally:
    found = re.findall(r'garrison_messages_total\{[^}]*outcome="rejected_([^"]*)"[^}]*\} (\S+)', metrics)
    return Tally({code: int(float(n)) for code, n in found if float(n)})


def test_fuzzed_envelopes_reach_their_own_check_and_are_all_accounted_for(system, agent_id):
    ref = system.spawn(Counter, agent_id, config={"max_message_bytes": MAX_BYTES})
    for i in range(3):
        ref.ask(Append(item=i))
    pid = ref.admin.status()["pid"]
    assert _acceptable(_pack(_base(agent_id))), "the undamaged base passes every check"
    assert _acceptable(_pack(_base(agent_id, sender=FENCED_SENDER, epoch=1))), "and so does the stale-epoch one"
    assert "test.append@1" in default_registry.known()

    reached: Tally = Tally()  # (kind, check that refused it)
    refused: Tally = Tally()  # error code -> how many refusals the agent sent back
    batch = {"base": 0}

    def deliver(raw: bytes) -> tuple[str, str, dict]:
        ok, value = decode_reply(ray.get(ref.route.handle.deliver.remote(raw), timeout=60))
        assert not ok, f"malformed input was accepted: {raw!r}"
        err = error_from_wire(value)
        assert isinstance(err, ProtocolError), f"{type(err).__name__}: {err}"
        refused[err.code] += 1
        return err.code, err.message, err.details

    # Prime the fence: this agent sees FENCED_SENDER at NEWEST_EPOCH (the message itself is refused for its body).
    prime = _base(agent_id, sender=FENCED_SENDER, epoch=NEWEST_EPOCH)
    prime[IX["body"]] = {"item": "not an int"}
    assert _check(*deliver(_pack(prime))[:2]) == "body"

    @settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
              database=None)
    @given(cases(agent_id))
    def throw(case):
        route, payload = case
        if route == "deliver":
            kind, expected, fields = payload
            code, message, details = deliver(_wire(fields))
            check = _check(code, message)
            assert check in expected, (kind, expected, code, message)
            if check.startswith("field:"):
                assert details.get("field") == check[len("field:"):], details
            if check == "body":
                assert details.get("errors"), details
            reached[kind, check] += 1
            return
        if route == "batch_frame":
            kind, expected, raw = payload
            ok, value = decode_reply(ray.get(ref.route.handle.deliver_batch.remote(raw), timeout=60))
            assert not ok, f"a malformed batch frame was accepted: {raw!r}"
            err = error_from_wire(value)
            refused[err.code] += 1
            assert _check(err.code, err.message) == "batch_frame", err
            reached[kind, "batch_frame"] += 1
            return
        # A well-formed frame of damaged envelopes: each is refused on its own, in order.
        seq, raws, want = batch["base"], [], []
        for kind, expected, fields in payload:
            if kind in ITEM_LATER_KINDS:
                seq += 1
                fields[IX["seq"]] = seq  # decodes, so takes the next seq of the pair
                want.append((kind, expected, seq))
            else:
                want.append((kind, expected, None))  # refused before anyone reads its seq
            raws.append(_wire(fields))
        ok, value = decode_reply(ray.get(ref.route.handle.deliver_batch.remote(encode_batch(batch["base"], raws)),
                                         timeout=60))
        assert ok, error_from_wire(value)
        hwm, errors = value
        assert len(errors) == len(raws), (errors, want)
        for (kind, expected, item_seq), (got_seq, code, message) in zip(want, errors, strict=True):
            check = _check(code, message)
            assert check in expected and got_seq == item_seq, (kind, expected, item_seq, got_seq, code, message)
            refused[code] += 1
            reached[f"batch {kind}", check] += 1
        assert hwm == seq, "the acknowledgement covers every refused envelope that had a seq"
        batch["base"] = hwm

    for name in HEADER:  # besides what is drawn, each header field's own check at least once
        fields = _base(agent_id)
        fields[IX[name]] = [f"not a {name}"]  # a list is wrong for every header field
        throw = example(("deliver", ("field", {"format" if name == "format" else f"field:{name}"}, fields)))(throw)
    throw()

    kinds = Tally()
    for (kind, _), n in reached.items():
        kinds[kind] += n
    wanted = set(DELIVER_KINDS) | {"batch_frame"} | {f"batch {k}" for k in ITEM_DECODE_KINDS + ITEM_LATER_KINDS
                                                     + ["no_sender"]}
    thin = {k: kinds[k] for k in wanted if kinds[k] < MIN_PER_KIND}
    assert not thin, f"kinds of damage that rarely reached their own check: {thin}; all: {sorted(reached.items())}"
    fields_hit = {check for (kind, check) in reached if kind == "field"}
    assert fields_hit == {"format"} | {f"field:{f}" for f in HEADER if f != "format"}, sorted(fields_hit)

    status = ref.admin.status()
    assert status["pid"] == pid and status["state"] == "running", "no crash, no restart"
    assert ref.ask(GetItems()) == [0, 1, 2] and ref.ask(GetCount()) == 3, "state unchanged"
    # Every refusal was counted once under its own code, and kept once as a dead letter.
    assert _rejections(ref.admin.metrics()) == refused, (refused, ref.admin.metrics())
    assert status["dead_letters"] == sum(refused.values())
