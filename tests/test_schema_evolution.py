"""A v1 sender reaches a v2 receiver through the upcaster; an unknown version is named and refused."""

from __future__ import annotations

import pytest

from protocols import UnknownMessageType, encode_envelope, make_envelope

from .agents import Billing, RefundV1, RefundV2

pytestmark = pytest.mark.ray


def test_v1_message_is_upcast_for_a_v2_agent(system, agent_id):
    ref = system.spawn(Billing, agent_id)
    assert ref.ask(RefundV1(cents=250)) == "250 EUR"
    assert ref.ask(RefundV2(amount=5, currency="USD")) == "5 USD"


def test_unknown_version_is_refused_with_what_is_known(system, agent_id):
    ref = system.spawn(Billing, agent_id)
    env = make_envelope(RefundV2(amount=1), agent_id)
    env.type = "test.refund@3"
    with pytest.raises(UnknownMessageType) as err:
        ref.send_raw(encode_envelope(env))
    assert "test.refund@3" in str(err.value) and "test.refund@2" in err.value.details["known"]
