"""The agent's metrics, without Ray: counters on the hot path, gauges from its status, merged expositions.

Ray's export of them and a real Prometheus scraping it: ``test_prometheus``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from runtime._metrics import LIFECYCLE_STATES, AgentMetrics, StatusGauges, merge_expositions


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


STATUS = {"state": "halted", "incarnation": 3, "outbox_pending": {"b": 4, "c": 5}, "outbox_in_memory": 2,
          "dead_letters": 7, "handler_running_for": None,
          "governance": {"breakers": {"tool/x": "closed", "agent": "open"}, "in_doubt": 1,
                         "budget": {"spent": 2.5, "limit": 10.0}}}


def test_status_gauges_give_the_state_one_hot_and_what_the_status_counts():
    registry = CollectorRegistry()
    registry.register(StatusGauges("a1", lambda: STATUS))
    got = _samples(generate_latest(registry).decode())
    states = {dict(k[1])["state"]: v for k, v in got.items() if k[0] == "garrison_agent_state"}
    assert states == {state: float(state == "halted") for state in LIFECYCLE_STATES}
    one = (("agent", "a1"),)
    assert got[("garrison_outbox_pending", one)] == 9.0 and got[("garrison_outbox_in_memory", one)] == 2.0
    assert got[("garrison_dead_letters", one)] == 7.0 and got[("garrison_incarnation", one)] == 3.0
    assert got[("garrison_handler_running_seconds", one)] == 0.0
    assert got[("garrison_budget_spent", one)] == 2.5 and got[("garrison_actions_in_doubt", one)] == 1.0
    assert got[("garrison_breaker_open", (("agent", "a1"), ("breaker", "agent")))] == 1.0
    assert got[("garrison_breaker_open", (("agent", "a1"), ("breaker", "tool/x")))] == 0.0


def test_an_agents_own_gauges_are_collected_and_a_bad_one_is_left_out():
    own = {"garrison_approvals_pending": 3, "not a metric name": 1, "queue_depth": "many"}
    registry = CollectorRegistry()
    registry.register(StatusGauges("a1", lambda: STATUS, lambda: own))
    got = _samples(generate_latest(registry).decode())
    assert got[("garrison_approvals_pending", (("agent", "a1"),))] == 3.0
    assert not any(k[0] in ("not a metric name", "queue_depth") for k in got), "refused names and values left out"
    assert got[("garrison_dead_letters", (("agent", "a1"),))] == 7.0, "the runtime's gauges are still there"

    def broken() -> dict:
        raise RuntimeError("the agent's gauges() has a bug")

    failing = CollectorRegistry()
    failing.register(StatusGauges("a1", lambda: STATUS, broken))
    assert _samples(generate_latest(failing).decode())[("garrison_dead_letters", (("agent", "a1"),))] == 7.0


def test_a_status_that_fails_reads_as_the_state_failed_and_the_collection_goes_on():
    def broken() -> dict:
        raise RuntimeError("the store is closed")

    registry = CollectorRegistry()
    registry.register(StatusGauges("a1", broken))
    got = _samples(generate_latest(registry).decode())
    assert got[("garrison_agent_state", (("agent", "a1"), ("state", "failed")))] == 1.0
    assert sum(v for k, v in got.items() if k[0] == "garrison_agent_state") == 1.0


def test_per_message_metrics_off_counts_no_handled_message_and_still_counts_the_rest():
    on, off = AgentMetrics("a1"), AgentMetrics("a1", per_message=False)
    for metrics in (on, off):
        metrics.handled(0.0002)
        metrics.handled_batch(5)
        metrics.outcome("duplicate")
        metrics.action("shop.refund", "success")
    handled = ("garrison_messages_total", (("agent", "a1"), ("outcome", "handled")))
    assert _samples(on.text())[handled] == 6.0 and handled not in _samples(off.text())
    assert _samples(on.text())[("garrison_handle_seconds_count", (("agent", "a1"),))] == 1.0
    for metrics in (on, off):
        got = _samples(metrics.text())
        assert got[("garrison_messages_total", (("agent", "a1"), ("outcome", "duplicate")))] == 1.0
        assert got[("garrison_actions_total", (("agent", "a1"), ("code", "success"), ("tag", "shop.refund")))] == 1.0


def test_merged_expositions_hold_each_family_once_with_every_agents_samples():
    texts = []
    for agent in ("a1", "a2"):
        registry = CollectorRegistry()
        Counter("garrison_messages", "Messages.", ["agent"], registry=registry).labels(agent).inc(2)
        texts.append(generate_latest(registry).decode())
    joined = "".join(texts)
    assert joined.count("# TYPE garrison_messages_total counter") == 2, "what concatenation gives"
    merged = merge_expositions(texts)
    assert merged.count("# TYPE garrison_messages_total counter") == 1
    got = _samples(merged)
    assert got[("garrison_messages_total", (("agent", "a1"),))] == 2.0
    assert got[("garrison_messages_total", (("agent", "a2"),))] == 2.0


def test_handling_times_fall_in_the_bucket_of_their_upper_bound_and_the_histogram_stays_cumulative():
    metrics = AgentMetrics("a1")
    for seconds in (0.00005, 0.0001, 0.0003, 0.5, 9.0):
        metrics.handled(seconds)
    metrics.handled_batch(4)  # counted, not timed
    got = _samples(metrics.text())
    bucket = {dict(k[1])["le"]: v for k, v in got.items() if k[0] == "garrison_handle_seconds_bucket"}
    assert (bucket["0.0001"], bucket["0.0005"], bucket["0.1"], bucket["0.5"], bucket["5.0"], bucket["+Inf"]) == (
        2.0, 3.0, 3.0, 4.0, 4.0, 5.0), "le is inclusive; each bucket counts every bucket below it"
    one = (("agent", "a1"),)
    assert got[("garrison_handle_seconds_count", one)] == 5.0
    assert abs(got[("garrison_handle_seconds_sum", one)] - 9.50045) < 1e-9
    assert got[("garrison_messages_total", (("agent", "a1"), ("outcome", "handled")))] == 9.0
