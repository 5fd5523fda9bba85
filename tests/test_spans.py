"""OpenTelemetry spans: one per message handled and per governed action, one trace across agents."""

from __future__ import annotations

import json

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from runtime import AgentConfig, trace
from runtime._spans import JsonLinesExporter, Spans
from runtime._trace import current_message, outgoing, trace_id

from .agents import Chain, Hop
from .waiting import wait_for


def test_a_message_sent_inside_a_span_names_it_as_the_receivers_parent_and_an_action_is_its_child():
    exporter = InMemorySpanExporter()
    a, b = Spans("a", exporter), Spans("b", exporter)
    with trace() as opened:
        sent = outgoing()  # the driver's ask: a new parent id, the same trace
    with a.handling("01" * 8, "t.ask", sent):
        with a.acting("crm.lookup", "k/1"):
            pass
        to_b = outgoing()
    assert current_message.get() is None
    with b.handling("02" * 8, "t.ask", to_b):
        pass
    spans = {s.name + "@" + s.attributes["garrison.agent"]: s for s in exporter.get_finished_spans()}
    handle_a, action, handle_b = spans["handle t.ask@a"], spans["action crm.lookup@a"], spans["handle t.ask@b"]
    assert {f"{s.context.trace_id:032x}" for s in spans.values()} == {trace_id(opened)}
    assert handle_a.parent.span_id == int(sent.split("-")[2], 16), "the driver's ask is its parent"
    assert action.parent.span_id == handle_a.context.span_id
    assert handle_b.parent.span_id == handle_a.context.span_id, "what a span's handler sends is its child"
    assert handle_a.attributes["garrison.message_id"] == "01" * 8


def test_the_json_lines_exporter_appends_one_line_per_span(tmp_path):
    path = tmp_path / "spans.jsonl"
    spans = Spans("a", JsonLinesExporter(str(path)))
    for n in range(3):
        with spans.handling(f"{n:016x}", "t.x", None):
            pass
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["name"] for line in lines] == ["handle t.x"] * 3
    assert len({line["context"]["trace_id"] for line in lines}) == 3, "no traceparent: a new trace each"


@pytest.mark.ray
def test_one_trace_spans_a_three_agent_ask_chain(system, agent_id, tmp_path):
    path = tmp_path / "spans.jsonl"
    config = AgentConfig(spans=str(path))
    ids = [f"{agent_id}-{n}" for n in ("a", "b", "c")]
    refs = {ids[2]: system.spawn(Chain, ids[2], config=config)}
    refs[ids[1]] = system.spawn(Chain, ids[1], init={"next": ids[2]}, config=config)
    refs[ids[0]] = system.spawn(Chain, ids[0], init={"next": ids[1]}, config=config)
    with trace() as opened:
        assert refs[ids[0]].ask(Hop(), timeout=30) == ids[2]

    def hops() -> dict[str, dict]:
        if not path.exists():
            return {}
        found = {}
        for line in path.read_text().splitlines():
            span = json.loads(line)
            if span["name"].startswith("handle test.hop") and span["context"]["trace_id"] == "0x" + trace_id(opened):
                found[span["attributes"]["garrison.agent"]] = span
        return found

    found = wait_for(lambda: len(hops()) == 3 and hops(), timeout=60, every=0.2, describe=hops)
    a, b, c = (found[i] for i in ids)
    assert b["parent_id"] == a["context"]["span_id"] and c["parent_id"] == b["context"]["span_id"]
    assert a["parent_id"] not in (b["context"]["span_id"], c["context"]["span_id"])
