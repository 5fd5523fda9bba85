"""MCP tools through the gateway, against a real MCP server process over stdio.

The server (``tests/mcp_server.py``, the ``mcp`` SDK's ``MCPServer``) appends
a line per tool call to a file, so a test knows what reached it.  A real
agent host (``AgentCore``, real LMDB, no Ray) performs the actions
:func:`governance.mcp.mcp_actions` made from the server's listing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest

from governance import BreakerPolicy, PolicyError
from governance.mcp import McpServer, McpTool, action_for, mcp_actions
from protocols import Message, encode_envelope, make_envelope
from runtime import Agent, AgentConfig, handler
from runtime._core import AgentCore
from runtime._ledger import Ledger
from runtime._reply import decode_reply
from runtime._spec import HostSpec

SERVER = Path(__file__).resolve().parent / "mcp_server.py"

CONFIG = {
    "add": {"capability": "calc.add", "risk": "low", "idempotent": True, "cost": 0.25},
    "lookup_order": {"capability": "shop.read", "risk": "low", "idempotent": True},
    "refund": {"capability": "payments.refund", "risk": "low"},
}


class Use(Message, name="govtest.mcp.use"):
    """Perform these MCP actions (``{"action": name, "arguments": {...}}``), in order; the reply is their outcomes."""

    calls: list[dict]


class McpUser(Agent):
    tools: ClassVar[dict] = {}  # each test makes a subclass with its tools

    @handler
    async def use(self, msg: Use) -> list[dict]:
        out = []
        for call in msg.calls:
            action = action_for(self.tools, call["action"])(arguments=call["arguments"])
            out.append((await self.act(action)).model_dump(mode="json"))
        return out

    async def on_stop(self) -> None:  # close this loop's sessions: the stdio servers exit
        for server in {tool.server for tool in self.tools.values() if isinstance(tool, McpTool)}:
            await server.aclose()


@pytest.fixture(scope="module")
def listed(tmp_path_factory):
    """The test server's tools, listed once for the module (a real server process)."""
    return McpServer("shop", command=[sys.executable, str(SERVER)]).list_tools()


def _server(tmp_path) -> tuple[McpServer, Path]:
    calls = tmp_path / "calls"
    return McpServer("shop", command=[sys.executable, str(SERVER), str(calls)], timeout=30), calls


def _core(tmp_path, tools: dict, **config) -> AgentCore:
    for d in ("data", "ck"):
        (tmp_path / d).mkdir(exist_ok=True)
    config.setdefault("grants", ("calc.add", "shop.read", "payments.refund"))
    agent = type("McpUser", (McpUser,), {"tools": tools})
    return AgentCore(HostSpec("mcp-user", agent, str(tmp_path / "data"), str(tmp_path / "ck"),
                              config=AgentConfig(**config)))


def _use(core: AgentCore, *calls: tuple[str, dict]) -> list[dict]:
    msg = Use(calls=[{"action": f"mcp.shop.{tool}", "arguments": args} for tool, args in calls])
    ok, value = decode_reply(core.deliver(encode_envelope(make_envelope(msg, "mcp-user"))))
    assert ok, value
    return value


def _lines(calls: Path) -> list[str]:
    return calls.read_text().splitlines() if calls.exists() else []


def test_listed_tools_become_registered_actions_and_the_rest_are_not_exposed(tmp_path, listed):
    assert {t.name for t in listed} == {"add", "lookup_order", "refund", "wipe_database"}
    server, calls = _server(tmp_path)
    tools = mcp_actions(server, CONFIG, listed=listed)
    assert sorted(cls.type_tag() for cls in tools) == ["mcp.shop.add@1", "mcp.shop.lookup_order@1",
                                                      "mcp.shop.refund@1"]
    add = action_for(tools, "mcp.shop.add")
    assert (add.capability, add.idempotent, add(arguments={}).risk().value) == ("calc.add", True, "low")
    assert add.input_schema["required"] == ["a", "b"] and add.__doc__ == "Add two integers."
    with pytest.raises(KeyError):
        action_for(tools, "mcp.shop.wipe_database")
    assert _lines(calls) == []


def test_a_tool_call_is_ok_costed_and_recorded_once(tmp_path, listed):
    server, calls = _server(tmp_path)
    core = _core(tmp_path, mcp_actions(server, CONFIG, listed=listed))
    try:
        first, second = _use(core, ("add", {"a": 2, "b": 3}), ("lookup_order", {"order": "A1"}))
        assert first["code"] == "ok" and first["result"]["text"] == "5"
        assert first["result"]["structured"] == {"result": 5} and first["cost"] == 0.25
        assert second["code"] == "ok"
        assert json.loads(second["result"]["text"]) == {"order": "A1", "status": "shipped"}
        assert _lines(calls) == ['add {"a": 2, "b": 3}', 'lookup_order {"order": "A1"}']
        entries = Ledger(core.store, agent_id="mcp-user").entries()
        assert [e["tag"] for e in entries] == ["mcp.shop.add@1", "mcp.shop.lookup_order@1"]
        assert entries[0]["args"] == {"arguments": {"a": 2, "b": 3}}
        assert [e["outcome"]["code"] for e in entries] == ["ok", "ok"] and entries[0]["outcome"]["cost"] == 0.25
    finally:
        core.stop()


def test_a_capability_not_granted_is_refused_before_the_server_is_called(tmp_path, listed):
    server, calls = _server(tmp_path)
    core = _core(tmp_path, mcp_actions(server, CONFIG, listed=listed), grants=("shop.read",))
    try:
        [outcome] = _use(core, ("add", {"a": 1, "b": 1}))
        assert outcome["code"] == "refused" and "calc.add" in outcome["reason"]
        assert _lines(calls) == [] and Ledger(core.store, agent_id="mcp-user").entries() == []
    finally:
        core.stop()


def test_an_error_result_is_a_failed_outcome_that_counts_against_the_breaker(tmp_path, listed):
    server, calls = _server(tmp_path)
    core = _core(tmp_path, mcp_actions(server, CONFIG, listed=listed),
                 breaker=BreakerPolicy(consecutive_failures=2, failure_rate=None, open_for=600))
    try:
        outcomes = _use(core, *[("refund", {"order": "A1"})] * 3)
        assert [o["code"] for o in outcomes] == ["failed", "failed", "breaker_open"]
        assert not outcomes[0]["retryable"] and "payment provider declined" in outcomes[0]["reason"]
        assert len(_lines(calls)) == 2
        [entry, _] = Ledger(core.store, agent_id="mcp-user").entries()
        assert entry["outcome"]["code"] == "failed"
    finally:
        core.stop()


def test_error_results_declared_business_do_not_count_against_the_breaker(tmp_path, listed):
    server, calls = _server(tmp_path)
    config = {"refund": {**CONFIG["refund"], "error_results": "business", "name": "mcp.shop.refund"}}
    core = _core(tmp_path, mcp_actions(server, config, listed=listed),
                 breaker=BreakerPolicy(consecutive_failures=2, failure_rate=None, open_for=600))
    try:
        outcomes = _use(core, *[("refund", {"order": "A1"})] * 3)
        assert [o["code"] for o in outcomes] == ["failed"] * 3
        assert len(_lines(calls)) == 3 and core.gateway.status()["open_breakers"] == []
    finally:
        core.stop()


def test_arguments_the_server_refuses_are_a_failed_outcome(tmp_path, listed):
    server, calls = _server(tmp_path)
    core = _core(tmp_path, mcp_actions(server, CONFIG, listed=listed))
    try:
        [outcome] = _use(core, ("add", {"a": "x"}))
        assert outcome["code"] == "failed" and not outcome["retryable"] and "validation" in outcome["reason"]
        assert _lines(calls) == []
    finally:
        core.stop()


def test_a_server_that_cannot_start_is_a_retryable_failure(tmp_path, listed):
    server = McpServer("shop", command=[str(tmp_path / "no-such-server")], timeout=10)
    core = _core(tmp_path, mcp_actions(server, CONFIG, listed=listed))
    try:
        [outcome] = _use(core, ("add", {"a": 1, "b": 2}))
        assert outcome["code"] == "failed" and outcome["retryable"] and "could not be reached" in outcome["reason"]
    finally:
        core.stop()


@pytest.mark.parametrize("config, match", [
    ({"nope": {"capability": "x.y", "risk": "low"}}, "lists no tool 'nope'"),
    ({"add": {"risk": "low"}}, "capability"),
    ({"add": {"capability": "calc.add"}}, "risk"),
    ({"add": {"capability": "calc.add", "risk": "low", "colour": "red"}}, "unknown settings"),
    ({"add": {"capability": "calc.add", "risk": "catastrophic"}}, "risk"),
    ({"add": {"capability": "calc.add", "risk": "low", "error_results": "ignore"}}, "error_results"),
    ({"add": {"capability": "calc.add", "risk": "low", "cost": -1}}, "cost"),
])
def test_a_wrong_config_is_refused_when_the_actions_are_made(tmp_path, listed, config, match):
    server, _ = _server(tmp_path)
    with pytest.raises(PolicyError, match=match):
        mcp_actions(server, config, listed=listed)


@pytest.mark.parametrize("kwargs", [{}, {"command": ["x"], "url": "http://127.0.0.1:1/mcp"}, {"command": []}])
def test_a_server_needs_exactly_one_way_to_reach_it(kwargs):
    with pytest.raises(PolicyError):
        McpServer("shop", **kwargs)


def test_the_tools_travel_by_value_to_another_process_as_ray_ships_them(tmp_path, listed):
    cloudpickle = pytest.importorskip("ray.cloudpickle")  # what Ray pickles with; Ray is not started
    server, _ = _server(tmp_path)
    (tmp_path / "tools").write_bytes(cloudpickle.dumps(mcp_actions(server, CONFIG, listed=listed)))
    script = (f"import pickle, sys; sys.path.insert(0, {str(SERVER.parent.parent)!r})\n"
              f"from protocols._registry import default_registry\n"
              f"tools = pickle.loads(open({str(tmp_path / 'tools')!r}, 'rb').read())\n"
              f"cls = default_registry.latest('mcp.shop.add')\n"
              f"assert cls is not None and cls.capability == 'calc.add' and cls.idempotent, cls\n"
              f"assert {{c.type_tag(): t.tool for c, t in tools.items()}}['mcp.shop.add@1'] == 'add'\n"
              f"assert cls(arguments={{'a': 1}}).estimated_cost() == 0.25\n")
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
