"""A real Prometheus scrapes the agents' metrics from Ray's metrics export ports, found as Ray lists them.

Debian's ``prometheus`` package (``.ci/run`` installs it) runs with a file
service discovery of the session's ``prom_metrics_service_discovery.json``,
the file Ray writes for exactly this (README, *Metrics*); PromQL over its HTTP
API must see each agent's handled messages and its lifecycle state, and the
state change when an operator halts one.  Also: ``System.metrics()`` is one
valid exposition (``promtool check metrics``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .agents import Add, Counter
from .conftest import _free_port
from .waiting import wait_for

pytestmark = pytest.mark.ray

PROMETHEUS, PROMTOOL = shutil.which("prometheus"), shutil.which("promtool")
NEEDS_PROMETHEUS = pytest.mark.skipif(
    PROMETHEUS is None or PROMTOOL is None,
    reason="Debian's prometheus package is not installed here (apt-get install prometheus; .ci/run installs it)")


@pytest.fixture
def prometheus(ray_session, tmp_path):
    """A Prometheus server on loopback scraping every target Ray lists, each second; its query URL."""
    session = Path(ray_session._private.worker._global_node.get_session_dir_path())
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n- job_name: ray\n  file_sd_configs:\n"
        f"  - files: ['{session / 'prom_metrics_service_discovery.json'}']\n    refresh_interval: 1s\n")
    port = _free_port()
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                            stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("wb"))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _get(f"{base}/-/ready") is not None, timeout=60)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.read()
    except OSError:
        return None


def query(base: str, promql: str) -> list[dict]:
    raw = _get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
    if raw is None:
        return []
    answer = json.loads(raw)
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def test_an_agents_metrics_are_on_the_nodes_ray_export_port_with_its_class(ray_session, system, agent_id):
    ref = system.spawn(Counter, agent_id)
    for _ in range(7):
        ref.ask(Add(n=1))
    port = ray_session.nodes()[0]["MetricsExportPort"]

    def exported() -> dict[str, float]:
        text = (_get(f"http://127.0.0.1:{port}/metrics") or b"").decode()
        return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples
                if s.labels.get("agent") == agent_id and s.labels.get("outcome", "handled") == "handled"
                and s.labels.get("state", "running") == "running" and s.labels.get("le", "+Inf") == "+Inf"}

    want = {"ray_garrison_messages_total": 7.0, "ray_garrison_agent_state": 1.0,
            "ray_garrison_handle_seconds_bucket": 7.0, "ray_garrison_handle_seconds_count": 7.0}
    wait_for(lambda: {k: v for k, v in exported().items() if k in want} == want, timeout=120, every=0.5,
             describe=exported)


def test_a_supervisors_restarts_are_counted_on_the_export_port(ray_session, data_dir, refs):
    import os
    import signal

    from supervisors import ChildSpec, SupervisorFlags, SupervisorSpec, start_supervisor
    from tests.sup_agents import FAST, Worker, uid

    child, name = uid("w"), uid("sup")
    sup = start_supervisor(SupervisorSpec(id=name, flags=SupervisorFlags(intensity=3, period=10, backoff=FAST),
                                          children=[ChildSpec(id=child, agent=Worker)]), data_dir=data_dir, seed=1)
    refs.append(sup)
    os.kill(sup.child(child)["pid"], signal.SIGKILL)
    sup.wait_until(lambda s: s.child(child)["restarts"] == 1 and s.child(child)["state"] == "running")
    port = ray_session.nodes()[0]["MetricsExportPort"]

    def events() -> dict[str, float]:
        text = (_get(f"http://127.0.0.1:{port}/metrics") or b"").decode()
        return {s.labels["event"]: s.value for family in text_string_to_metric_families(text) for s in family.samples
                if s.name == "ray_garrison_supervisor_events_total" and s.labels.get("supervisor") == name
                and s.labels.get("child") == child}

    wait_for(lambda: events().get("restarted") == 1.0 and events().get("started", 0) >= 1.0, timeout=120,
             every=0.5, describe=events)


@NEEDS_PROMETHEUS
def test_prometheus_sees_each_agents_handled_messages_and_lifecycle_state(system, agent_id, prometheus):
    first, second = f"{agent_id}-a", f"{agent_id}-b"
    refs = {first: system.spawn(Counter, first), second: system.spawn(Counter, second)}
    for n, ref in enumerate(refs.values(), start=1):
        for _ in range(10 * n):
            ref.ask(Add(n=1))

    def handled() -> dict[str, float]:
        rows = query(prometheus, f'ray_garrison_messages_total{{agent=~"{first}|{second}",outcome="handled"}}')
        return {row["metric"]["agent"]: float(row["value"][1]) for row in rows}

    def states() -> dict[str, str]:
        rows = query(prometheus, f'ray_garrison_agent_state{{agent=~"{first}|{second}"}} == 1')
        return {row["metric"]["agent"]: row["metric"]["state"] for row in rows}

    # Ray reports each worker's metrics every 10 s by default: wait for what Prometheus stored.
    wait_for(lambda: handled() == {first: 10.0, second: 20.0}, timeout=120, every=0.5, describe=handled)
    wait_for(lambda: states() == {first: "running", second: "running"}, timeout=120, every=0.5, describe=states)
    [row] = query(prometheus, f'ray_garrison_messages_total{{agent="{first}",outcome="handled"}}')
    assert row["metric"]["agent_class"] == "tests.agents:Counter" and "WorkerId" in row["metric"]

    refs[second].admin.halt("alice@ops", "a state change Prometheus must see")
    wait_for(lambda: states() == {first: "running", second: "halted"}, timeout=120, every=0.5, describe=states)


@NEEDS_PROMETHEUS
def test_the_systems_exposition_of_several_agents_is_valid(system, agent_id, tmp_path):
    refs = [system.spawn(Counter, f"{agent_id}-{suffix}") for suffix in ("a", "b")]
    for ref in refs:
        ref.ask(Add(n=1))
    text = system.metrics()
    assert text.count("# TYPE garrison_messages_total counter") == 1, "each family once"
    assert text.count('garrison_messages_total{agent="') == 2 and 'garrison_agent_state{agent="' in text
    checked = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60, check=False)
    assert checked.returncode == 0, checked.stderr.decode() + checked.stdout.decode()
    # What System.metrics() used to give, the agents' texts one after the other, promtool refuses.
    joined = "".join(ref.admin.metrics() for ref in refs)
    refused = subprocess.run([PROMTOOL, "check", "metrics"], input=joined.encode(), capture_output=True, timeout=60, check=False)
    assert refused.returncode == 1 and b"second HELP line" in refused.stderr, refused.stderr
