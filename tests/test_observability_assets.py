"""The Grafana dashboard and the Prometheus alert rules Garrison ships (``runtime/assets``).

With Debian's ``promtool``: the rules load, their unit tests
(``tests/data/garrison-alerts-test.yml``: each alert fires on the agent that
misbehaves, at the time it should, and on no other) pass, and every query of
the dashboard parses as PromQL.  Without it they skip, saying so.  Every
metric they name is one an agent exports.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from runtime import ApprovalQueue
from runtime._metrics import AgentMetrics
from runtime.cli import asset
from supervisors._metrics import EventCounts

from .test_metrics import STATUS
from .test_prometheus import NEEDS_PROMETHEUS, PROMTOOL

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "runtime" / "assets" / "garrison-alerts.yml"


def _exported() -> set[str]:
    """Every series name an agent exports, as Ray serves it (``ray_`` prefix)."""
    metrics = AgentMetrics("a1")
    metrics.watch(lambda: STATUS, ApprovalQueue().gauges)  # the approval queue's own gauge too
    families = [*metrics.registry.collect(), *EventCounts("s1").collect()]  # an agent's, a supervisor's
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    return {f"ray_{family.name}{suffix}" for family in families for suffix in suffixes[family.type]}


def _dashboard() -> dict:
    return json.loads(asset("garrison-dashboard.json"))


def _queries() -> list[str]:
    return [t["expr"] for panel in _dashboard()["panels"] for t in panel["targets"]]


def test_the_dashboard_is_an_importable_grafana_dashboard_with_a_panel_per_concern():
    dash = _dashboard()
    assert dash["uid"] == "garrison-agents" and dash["__inputs"][0]["pluginId"] == "prometheus"
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for concern in ("state", "handled", "handling time", "restarts", "handler", "breakers", "budget", "actions",
                    "approvals"):
        assert concern in titles, concern
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    assert all(t["datasource"]["uid"] == "${DS_PROMETHEUS}" for p in dash["panels"] for t in p["targets"])
    assert all('agent=~"$agent"' in q or 'child=~"$agent"' in q for q in _queries()), "every panel follows the selector"


def test_every_metric_the_dashboard_and_the_rules_name_is_one_an_agent_exports():
    named = set(re.findall(r"\bray_garrison_\w+", " ".join(_queries()) + RULES.read_text()))
    assert len(named) >= 10
    assert named <= _exported(), named - _exported()


@NEEDS_PROMETHEUS
def test_the_alert_rules_load_and_their_unit_tests_pass():
    checked = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, timeout=60, check=False)
    assert checked.returncode == 0 and b"SUCCESS: 8 rules found" in checked.stdout, checked.stdout + checked.stderr
    tested = subprocess.run([PROMTOOL, "test", "rules", "garrison-alerts-test.yml"], cwd=ROOT / "tests" / "data",
                            capture_output=True, timeout=60, check=False)
    assert tested.returncode == 0 and b"SUCCESS" in tested.stdout, tested.stdout + tested.stderr


@NEEDS_PROMETHEUS
def test_every_dashboard_query_parses_as_promql(tmp_path):
    # As recording rules, which promtool parses; Grafana's $variables become what they stand for.
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"garrison:panel_{i}", "expr": q.replace("$agent", ".*").replace("$__rate_interval", "1m")}
        for i, q in enumerate(_queries())]}]}
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    checked = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, timeout=60, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text(json.dumps({"groups": [{"name": "x", "rules": [{"record": "x:y", "expr": "sum by (agent"}]}]}))
    assert subprocess.run([PROMTOOL, "check", "rules", str(broken)], capture_output=True, timeout=60,
                          check=False).returncode == 1, "promtool does reject what does not parse"
