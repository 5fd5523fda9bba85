"""Schema registry: tags, versions, upcasters, and what an unknown type is told."""

from __future__ import annotations

import pytest

from protocols import (
    Message,
    MessageValidationError,
    RegistrationError,
    Registry,
    UnknownMessageType,
    WireError,
    error_from_wire,
    make_envelope,
    parse_message,
)


def test_v1_body_is_upcast_to_v2_receiver():
    reg = Registry()

    class RefundV1(Message, name="refund", version=1, registry=reg):
        cents: int

    class RefundV2(Message, name="refund", version=2, registry=reg):
        amount: dict[str, int | str]
        reason: str = ""

    @reg.upcaster("refund", from_version=1)
    def _v1_to_v2(body):
        return {"amount": {"value": body["cents"], "currency": "EUR"}}

    env = make_envelope(RefundV1(cents=250), "billing")
    assert env.type == "refund@1"
    msg = parse_message(env, reg)
    assert isinstance(msg, RefundV2)
    assert msg.amount == {"value": 250, "currency": "EUR"} and msg.reason == ""


def test_older_version_without_upcaster_and_unknown_version_are_refused():
    reg = Registry()

    class _A2(Message, name="a", version=2, registry=reg):
        x: int

    env = make_envelope(_A2(x=1), "r")
    env.type = "a@1"
    with pytest.raises(UnknownMessageType, match="no upcaster from version 1"):
        parse_message(env, reg)
    env.type = "a@3"
    with pytest.raises(UnknownMessageType, match="known: a@2") as err:
        parse_message(env, reg)
    assert err.value.details["known"] == ["a@2"]
    # Non-ASCII digits: "²" passes str.isdigit() but not int(); "٢" would alias a@2.
    for bad in ("a", "a@", "@1", "a@x", "a@²", "a@٢", "a@ 2"):
        env.type = bad
        with pytest.raises(UnknownMessageType):
            parse_message(env, reg)


def test_validation_errors_carry_field_paths():
    reg = Registry()

    class Inner(Message, abstract=True):
        y: int

    class Outer(Message, name="outer", registry=reg):
        inner: Inner
        tags: list[str]

    env = make_envelope(Outer(inner=Inner(y=1), tags=[]), "r")
    env.body = {"inner": {"y": "nope"}, "tags": [1]}
    with pytest.raises(MessageValidationError) as err:
        parse_message(env, reg)
    assert [e["loc"] for e in err.value.details["errors"]] == ["inner.y", "tags.0"]


def test_registration_rules():
    reg = Registry()

    class _B(Message, name="b", registry=reg):
        pass

    with pytest.raises(RegistrationError, match="already registered"):
        type("Other", (Message,), {"__module__": "elsewhere"}, name="b", registry=reg)
    with pytest.raises(RegistrationError, match="version"):
        type("V0", (Message,), {}, name="v0", version=0, registry=reg)
    with pytest.raises(RegistrationError, match="@"):
        type("At", (Message,), {}, name="x@y", registry=reg)


def test_errors_survive_the_wire_by_code():
    err = MessageValidationError("bad", errors=[{"loc": "a"}])
    back = error_from_wire(err.to_wire())
    assert type(back) is MessageValidationError and back.details == err.details
    unknown = error_from_wire(["SomethingNew", "msg", {}])
    assert isinstance(unknown, WireError) and "SomethingNew" in str(unknown)
