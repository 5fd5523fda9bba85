"""Structured logs: JSON lines naming the agent, its incarnation, the message and the trace, across agents."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from runtime import AgentConfig, trace
from runtime._logs import JsonFormatter, LogContext, configure_logs
from runtime._trace import MessageTrace, child, current_message, trace_id

from .agents import Chain, Hop
from .waiting import wait_for


def test_a_json_line_names_the_agent_incarnation_message_and_trace_and_keeps_the_traceback():
    context = LogContext("a1")
    context.incarnation = 3
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(context)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("garrison.test_logs")
    logger.addHandler(handler)
    try:
        tp = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
        token = current_message.set(MessageTrace("0f" * 8, tp))
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("handler failed on %s", "t1")
        finally:
            current_message.reset(token)
        logger.warning("between messages")
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (first["agent"], first["incarnation"], first["message_id"], first["trace_id"]) == ("a1", 3, "0f" * 8, "ab" * 16)
    assert first["level"] == "error" and first["message"] == "handler failed on t1"
    assert "ValueError: boom" in first["exception"]
    assert "message_id" not in second and "trace_id" not in second and second["agent"] == "a1"


def test_a_child_traceparent_keeps_the_trace_id_and_a_malformed_one_is_not_passed_on():
    tp = "00-" + "12" * 16 + "-" + "34" * 8 + "-01"
    hop = child(tp)
    assert trace_id(hop) == "12" * 16 and hop != tp and hop.endswith("-01")
    assert child("not-a-traceparent") is None and child(None) is None
    with trace() as opened:
        assert current_message.get() == MessageTrace(None, opened) and len(trace_id(opened)) == 32
    assert current_message.get() is None


def test_configuring_twice_leaves_one_handler():
    context = LogContext("a1")
    root = logging.getLogger("garrison")
    before = list(root.handlers)
    try:
        configure_logs(context, fmt="json", level="info")
        configure_logs(context, fmt="text", level="info")
        assert len([h for h in root.handlers if getattr(h, "garrison", False)]) == 1
    finally:
        for h in [h for h in root.handlers if h not in before]:
            root.removeHandler(h)
        root.propagate = True


@pytest.mark.ray
def test_json_logs_carry_one_trace_id_across_a_three_agent_ask_chain(ray_session, system, agent_id):
    config = AgentConfig(log_level="debug")
    ids = [f"{agent_id}-{n}" for n in ("a", "b", "c")]
    refs = {ids[2]: system.spawn(Chain, ids[2], config=config)}
    refs[ids[1]] = system.spawn(Chain, ids[1], init={"next": ids[2]}, config=config)
    refs[ids[0]] = system.spawn(Chain, ids[0], init={"next": ids[1]}, config=config)
    logs = Path(ray_session._private.worker._global_node.get_session_dir_path()) / "logs"
    with trace() as opened:
        assert refs[ids[0]].ask(Hop(), timeout=30) == ids[2]
    wanted = trace_id(opened)

    def lines(agent: str) -> list[dict]:
        pid = refs[agent].admin.status()["pid"]
        out = []
        for path in logs.glob(f"worker-*-{pid}.err"):
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith("{") and f'"agent": "{agent}"' in line:
                    out.append(json.loads(line))
        return out

    def hops() -> dict[str, dict]:
        found = {}
        for agent in ids:
            for line in lines(agent):
                if line.get("trace_id") == wanted and line["message"].startswith("handled test.hop"):
                    found[agent] = line
        return found

    found = wait_for(lambda: len(hops()) == 3 and hops(), timeout=60, every=0.5, describe=hops)
    assert {line["incarnation"] for line in found.values()} == {1}
    assert len({line["message_id"] for line in found.values()}) == 3, "three messages, one trace"
    assert all(line["level"] == "debug" and line["logger"] == "garrison.agent" for line in found.values())
    started = [line for line in lines(ids[0]) if "serving" in line["message"]]
    assert started and "trace_id" not in started[0], "a line outside any message names no trace"
