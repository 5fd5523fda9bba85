"""The OpenAI-compatible chat model through the gateway, against a real HTTP server on loopback.

A real agent host (``AgentCore``, real LMDB, no Ray) performs
``ChatCompletion`` with a ``ChatModel`` pointed at the deterministic server
of ``tests/openai_server.py``; the server counts every request, so a test
knows what reached it.
"""

from __future__ import annotations

import asyncio
import pickle
import socket
from typing import ClassVar

import pytest

from governance import BreakerPolicy, BudgetPolicy, PolicyError, ToolRejected, ToolUnavailable
from governance.models import ChatCompletion, ChatModel, estimate_cost, price_of, translate_error
from protocols import Message, encode_envelope, make_envelope
from runtime import Agent, AgentConfig, handler
from runtime._core import AgentCore
from runtime._ledger import Ledger
from runtime._reply import decode_reply
from runtime._spec import HostSpec

from .openai_server import OpenAIServer

PRICES = {"echo-1": (0.5, 1.5), "no-usage": (1.0, 1.0), "fail-500": (1.0, 1.0), "fail-429": (1.0, 1.0),
          "fail-400": (1.0, 1.0), "fail-401": (1.0, 1.0)}


class Ask(Message, name="govtest.model.ask"):
    """Perform these chat completions, in order; the reply is their outcomes."""

    requests: list[dict]


class Asker(Agent):
    tools: ClassVar[dict] = {}  # each test makes a subclass with its ChatModel

    @handler
    async def ask(self, msg: Ask) -> list[dict]:
        out = []
        for request in msg.requests:
            outcome = await self.act(ChatCompletion(**request))
            out.append(outcome.model_dump(mode="json"))
        return out


@pytest.fixture
def server():
    with OpenAIServer() as srv:
        yield srv


def _core(tmp_path, base_url: str, **config) -> AgentCore:
    for d in ("data", "ck"):
        (tmp_path / d).mkdir(exist_ok=True)
    agent = type("Asker", (Asker,), {"tools": {ChatCompletion: ChatModel(base_url, api_key="sk-test",
                                                                          prices=PRICES, timeout=10)}})
    config.setdefault("grants", ("model.chat",))
    return AgentCore(HostSpec("asker", agent, str(tmp_path / "data"), str(tmp_path / "ck"),
                              config=AgentConfig(**config)))


def _ask(core: AgentCore, *requests: dict) -> list[dict]:
    ok, value = decode_reply(core.deliver(encode_envelope(make_envelope(Ask(requests=list(requests)), "asker"))))
    assert ok, value
    return value


def _chat(text: str, model: str = "echo-1", max_tokens: int = 50) -> dict:
    return {"model": model, "max_tokens": max_tokens, "messages": [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": text}]}


def test_a_completion_is_ok_costed_from_usage_and_recorded_once(tmp_path, server):
    core = _core(tmp_path, server.base_url)
    try:
        [outcome] = _ask(core, _chat("where is my parcel"))
        assert outcome["code"] == "ok" and not outcome["partial"]
        result = outcome["result"]
        assert result["content"] == "echo: where is my parcel" and result["model"] == "echo-1"
        assert result["usage"] == {"prompt_tokens": 6, "completion_tokens": 5, "total_tokens": 11}
        assert outcome["cost"] == pytest.approx(6 / 1000 * 0.5 + 5 / 1000 * 1.5)
        assert len(server.requests) == 1
        assert server.requests[0]["messages"][1] == {"role": "user", "content": "where is my parcel"}
        [entry] = Ledger(core.store, agent_id="asker").entries()
        assert entry["tag"] == "garrison.model.chat@1" and entry["idempotent"]
        assert entry["args"]["model"] == "echo-1"
        assert entry["outcome"]["code"] == "ok" and entry["outcome"]["cost"] == outcome["cost"]
    finally:
        core.stop()


def test_the_budget_reserves_the_upper_bound_and_settles_the_usage(tmp_path, server):
    core = _core(tmp_path, server.base_url, budget=BudgetPolicy(limit=1.0))
    try:
        request = _chat("hello", max_tokens=40)
        estimate = estimate_cost(ChatCompletion(**request))
        [outcome] = _ask(core, request)
        assert outcome["code"] == "ok" and outcome["cost"] < estimate
        budget = core.gateway.status()["budget"]
        assert budget["spent"] == pytest.approx(outcome["cost"]) and budget["reserved"] == 0
    finally:
        core.stop()


def test_a_reply_cut_at_max_tokens_is_ok_and_partial(tmp_path, server):
    core = _core(tmp_path, server.base_url)
    try:
        [outcome] = _ask(core, _chat("one two three four", max_tokens=2))
        assert outcome["code"] == "ok" and outcome["partial"]
        assert outcome["result"]["content"] == "echo: one" and outcome["result"]["finish_reason"] == "length"
    finally:
        core.stop()


def test_a_server_without_usage_is_charged_the_estimate(tmp_path, server):
    core = _core(tmp_path, server.base_url)
    try:
        request = _chat("hi", model="no-usage")
        [outcome] = _ask(core, request)
        assert outcome["code"] == "ok" and outcome["result"]["usage"] is None
        assert outcome["cost"] == pytest.approx(estimate_cost(ChatCompletion(**request)))
    finally:
        core.stop()


@pytest.mark.parametrize("model, retryable", [
    ("fail-500", True), ("fail-429", True), ("fail-400", False), ("fail-401", False),
])
def test_a_server_error_is_a_failed_outcome_retryable_as_documented(tmp_path, server, model, retryable):
    core = _core(tmp_path, server.base_url)
    try:
        [outcome] = _ask(core, _chat("x", model=model))
        assert outcome["code"] == "failed" and outcome["retryable"] is retryable
        assert outcome["escalation"] == "operator"
        assert model.split("-")[1] in outcome["reason"]
        [entry] = Ledger(core.store, agent_id="asker").entries()
        assert entry["outcome"]["code"] == "failed"
    finally:
        core.stop()


def test_server_errors_count_against_the_breaker_which_then_stops_the_calls(tmp_path, server):
    core = _core(tmp_path, server.base_url,
                 breaker=BreakerPolicy(consecutive_failures=2, failure_rate=None, open_for=600))
    try:
        outcomes = _ask(core, *[_chat("x", model="fail-500")] * 3, _chat("fine"))
        assert [o["code"] for o in outcomes] == ["failed", "failed", "breaker_open", "breaker_open"]
        assert len(server.requests) == 2
        assert "garrison.model.chat@1" in core.gateway.status()["open_breakers"]
    finally:
        core.stop()


def test_an_unpriced_model_is_refused_by_the_tool_before_anything_is_sent(tmp_path, server):
    core = _core(tmp_path, server.base_url,
                 breaker=BreakerPolicy(consecutive_failures=1, failure_rate=None, open_for=600))
    try:
        outcomes = _ask(core, _chat("x", model="gpt-unknown"), _chat("x", model="gpt-unknown"), _chat("ok"))
        assert [o["code"] for o in outcomes] == ["failed", "failed", "ok"]  # a business error: no breaker trips
        assert not outcomes[0]["retryable"] and "price table" in outcomes[0]["reason"]
        assert len(server.requests) == 1
    finally:
        core.stop()


def test_a_capability_not_granted_is_refused_before_the_server_is_called(tmp_path, server):
    core = _core(tmp_path, server.base_url, grants=("crm.note",))
    try:
        [outcome] = _ask(core, _chat("x"))
        assert outcome["code"] == "refused" and "model.chat" in outcome["reason"]
        assert server.requests == [] and Ledger(core.store, agent_id="asker").entries() == []
    finally:
        core.stop()


def test_an_unreachable_server_is_a_retryable_failure(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    core = _core(tmp_path, f"http://127.0.0.1:{port}/v1")
    try:
        [outcome] = _ask(core, _chat("x"))
        assert outcome["code"] == "failed" and outcome["retryable"] and "unreachable" in outcome["reason"]
    finally:
        core.stop()


# -- the tool on its own -----------------------------------------------------------------


def test_a_chat_model_pickles_as_its_settings_and_works_where_it_lands(server):
    model = ChatModel(server.base_url, api_key="sk-test", prices={"echo-1": (0.5, 1.5)})
    clone = pickle.loads(pickle.dumps(model))
    assert (clone.base_url, clone.prices) == (model.base_url, model.prices)
    result = asyncio.run(clone(ChatCompletion(**_chat("hi"))))
    assert result.value["content"] == "echo: hi"


def test_the_tool_raises_ours_with_the_openai_error_as_its_cause(server):
    import openai

    model = ChatModel(server.base_url, api_key="sk-test", prices=PRICES)
    with pytest.raises(ToolUnavailable) as caught:
        asyncio.run(model(ChatCompletion(**_chat("x", model="fail-429"))))
    assert isinstance(caught.value.__cause__, openai.RateLimitError) and caught.value.details["status"] == 429


def test_one_model_has_one_price_per_process():
    ChatModel("http://127.0.0.1:9/v1", prices={"priced-once": (1.0, 2.0)})
    ChatModel("http://127.0.0.1:9/v1", prices={"priced-once": (1.0, 2.0)})  # the same price again is fine
    with pytest.raises(PolicyError, match="priced-once"):
        ChatModel("http://127.0.0.1:9/v1", prices={"priced-once": (1.0, 3.0)})
    assert price_of("priced-once") == (1.0, 2.0)


@pytest.mark.parametrize("prices", [{}, {"m": (1.0,)}, {"m": (-1.0, 1.0)}, {"m": ("a", 1)}, {"m": (float("inf"), 1)}])
def test_a_bad_price_table_is_refused_at_construction(prices):
    with pytest.raises(PolicyError):
        ChatModel("http://127.0.0.1:9/v1", prices=prices)


def test_openai_errors_are_translated_with_the_original_kept():
    import httpx2
    import openai

    request = httpx2.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    cases = [
        (openai.APIConnectionError(request=request), ToolUnavailable, True),
        (openai.APITimeoutError(request=request), ToolUnavailable, True),
        (openai.APIResponseValidationError(httpx2.Response(200, request=request), None), ToolRejected, False),
    ]
    for status, want, retryable in [(429, ToolUnavailable, True), (408, ToolUnavailable, True),
                                    (503, ToolUnavailable, True), (400, ToolRejected, False),
                                    (403, ToolRejected, False), (404, ToolRejected, False)]:
        response = httpx2.Response(status, request=request)
        cases.append((openai.APIStatusError("boom", response=response, body=None), want, retryable))
    for exc, want, retryable in cases:
        ours = translate_error(exc)
        assert type(ours) is want and ours.retryable is retryable, (exc, ours)
