"""The operator's CLI: tables by default, ``--json`` on every command, ``top``, ``tree``, ``inspect``, ``logs``.

The pure parts (top's rows from two samples, latency quantiles from real
histograms, the worker-log reader, the tree's assembly, the table rules)
have fast tests without Ray; the commands run as users run them, the
installed console script in a real process against agents on the shared Ray.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import uuid
from pathlib import Path

import click
import pytest

from runtime import AgentConfig, AgentUnavailable
from runtime._console import as_text, cell, render
from runtime._metrics import AgentMetrics
from runtime._top import SAMPLERS, Sample, parse_metrics, quantile, row, take_all
from runtime._worker_log import read_worker_log
from supervisors import ChildSpec, SupervisorSpec, start_supervisor
from supervisors._tree import assemble
from supervisors.cli import garrison as garrison_group

from .agents import Add, Counter, GetCount
from .test_cli import GARRISON, ROOT, console
from .waiting import incarnation, wait_for

# -- every command: --json, and tables otherwise ----------------------------------------------


def _leaves(group: click.Group, path: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _leaves(command, (*path, name))
        else:
            yield (*path, name), command


def test_every_command_takes_json():
    leaves = dict(_leaves(garrison_group))
    assert len(leaves) >= 30, sorted(leaves)  # the walk reached the groups' commands too
    missing = [" ".join(p) for p, c in leaves.items() if not any("--json" in o.opts for o in c.params
                                                                   if isinstance(o, click.Option))]
    assert missing == []


def test_cells_follow_the_table_rules():
    assert cell(None) == "-" and cell(True) == "yes" and cell(False) == "no"
    assert cell(1_764_712_345.5, "last_checkpoint_time") == "2025-12-02 21:52:25Z"
    assert cell(3.5, "time") == "3.5", "a small number in a time field is a duration, not a date"
    assert cell(1_764_712_345, "seq") == "1764712345", "only fields named like times are dates"
    assert cell(b"\x01\xff") == "01ff" and cell(b"count") == "count", "a state key reads as text; other bytes as hex"
    assert cell(list(range(20))).endswith("(20 in all)")


def test_rows_become_a_table_with_every_key_as_a_column():
    text = as_text(render([{"id": "a", "state": "running"}, {"id": "b", "reason": "expired"}], title="letters"))
    header = next(line for line in text.splitlines() if "id" in line and "state" in line)
    assert header.index("id") < header.index("state") < header.index("reason")
    assert "expired" in text and "letters" in text
    nested = as_text(render({"restore": {"source": "checkpoint"}, "children": [{"id": "c9"}]}))
    assert "checkpoint" in nested and "c9" in nested
    assert as_text(render([])).strip() == "(none)"


# -- top: rows from two samples ---------------------------------------------------------------


def _sample(metrics: AgentMetrics, at: float, incarnation: int = 1, **status) -> Sample:
    return Sample(at=at, status={"state": "running", "incarnation": incarnation, **status},
                  **parse_metrics(metrics.text()))


def test_top_rates_and_latencies_are_over_the_interval():
    metrics = AgentMetrics("a1")
    for _ in range(100):
        metrics.handled(0.0004)  # before the first look: not in the interval
    first = _sample(metrics, at=10.0)
    took = [0.002] * 90 + [0.2] * 10
    for seconds in took:
        metrics.handled(seconds)
    metrics.outcome("handler_error", 3)
    second = _sample(metrics, at=12.0, outbox_pending={"b": 4, "c": 1}, dead_letters=2)
    r = row("a1", first, second)
    assert r["handled"] == 200 and r["rate_per_s"] == pytest.approx(len(took) / 2.0)
    assert r["mean_ms"] == pytest.approx(1000 * sum(took) / len(took), rel=1e-6)
    buckets = [b for b, _ in second.buckets]
    # The median lies in the bucket holding 2 ms, the 99th percentile in the one holding 200 ms.
    assert max(b for b in buckets if b < 0.002) <= r["p50_ms"] / 1000 <= min(b for b in buckets if b >= 0.002)
    assert max(b for b in buckets if b < 0.2) <= r["p99_ms"] / 1000 <= min(b for b in buckets if b >= 0.2)
    assert (r["outbox"], r["dead_letters"], r["errors"]) == (5, 2, 3)


def test_top_leaves_rates_out_across_a_restart_and_on_the_first_look():
    metrics = AgentMetrics("a1")
    metrics.handled(0.01)
    before = _sample(metrics, at=1.0, incarnation=1)
    after = _sample(AgentMetrics("a1"), at=3.0, incarnation=2)  # counters restart with the incarnation
    for r in (row("a1", before, after), row("a1", None, before)):
        assert r["rate_per_s"] is None and r["p50_ms"] is None


def test_a_quantile_with_nothing_observed_in_the_interval_is_none():
    metrics = AgentMetrics("a1")
    metrics.handled(0.01)
    same = _sample(metrics, at=1.0)
    assert quantile(0.5, same.buckets, same.buckets) is None
    assert row("a1", same, _sample(metrics, at=2.0))["rate_per_s"] == 0.0


# -- logs: the worker-log reader ---------------------------------------------------------------


def _line(message: str, **fields) -> str:
    return json.dumps({"time": 1.0, "level": "info", "logger": "garrison.agent", "message": message, **fields}) + "\n"


def test_top_samples_every_agent_at_once_and_an_unreachable_one_does_not_hide_the_others():
    n = SAMPLERS
    together = threading.Barrier(n, timeout=30)  # broken unless all n samples are taken at the same time

    def take(ref: str) -> Sample:
        together.wait()
        if ref == "r3":
            raise AgentUnavailable("agent a3 is gone", agent_id="a3")
        return Sample(at=1.0, status={"agent_id": ref})

    got = take_all({f"a{i}": f"r{i}" for i in range(n)}, take=take)
    assert list(got) == [f"a{i}" for i in range(n)], "in the listing's order"
    assert isinstance(got["a3"], AgentUnavailable)
    assert [s.status["agent_id"] for a, s in got.items() if a != "a3"] == [f"r{i}" for i in range(n) if i != 3]
    assert take_all({}, take=take) == {}


def test_the_log_reader_tails_follows_and_skips_rays_markers(tmp_path):
    path = tmp_path / "worker.err"
    path.write_text(":actor_name:AgentHost\n" + "".join(_line(f"m{i}") for i in range(10)) + "a plain line\n")
    tail = read_worker_log(None, 3, str(path))
    assert [ln["message"] for ln in tail["lines"]] == ["m8", "m9", "a plain line"]
    assert tail["offset"] == path.stat().st_size
    with path.open("a") as f:
        f.write(_line("m10") + '{"half": "a line still being writ')
    more = read_worker_log(tail["offset"], 100, str(path))
    assert [ln["message"] for ln in more["lines"]] == ["m10"], "a line without its newline waits"
    with path.open("a") as f:
        f.write('ten"}\n')
    rest = read_worker_log(more["offset"], 100, str(path))
    assert rest["lines"] == [{"message": '{"half": "a line still being written"}'}]
    paged = read_worker_log(0, 4, str(path))
    assert [ln["message"] for ln in paged["lines"]] == ["m0", "m1", "m2", "m3"]
    assert [ln["message"] for ln in read_worker_log(paged["offset"], 1, str(path))["lines"]] == ["m4"]
    path.write_text(_line("after rotation"))
    assert read_worker_log(rest["offset"], 10, str(path))["lines"][0]["message"] == "after rotation"


# -- tree: assembly ----------------------------------------------------------------------------


def test_the_tree_nests_child_supervisors_and_lists_unsupervised_agents():
    statuses = {
        "root": {"state": "running", "strategy": "one_for_one", "children": [
            {"id": "a", "kind": "agent", "state": "running", "restarts": 0},
            {"id": "sub", "kind": "supervisor", "state": "running", "restarts": 2}]},
        "sub": {"state": "halted", "strategy": "one_for_all", "children": [
            {"id": "b", "kind": "agent", "state": "halted", "restarts": 1}]},
    }
    forest = assemble(statuses, ["a", "b", "lone"])
    assert [n["id"] for n in forest] == ["root", "lone"]
    root = forest[0]
    assert [c["id"] for c in root["children"]] == ["a", "sub"]
    sub = root["children"][1]
    assert (sub["state"], sub["strategy"], sub["restarts"]) == ("halted", "one_for_all", 2)
    assert sub["children"][0]["id"] == "b"
    cycle = assemble({"x": {"children": [{"id": "y", "kind": "supervisor"}]},
                      "y": {"children": [{"id": "x", "kind": "supervisor"}]}})
    assert [n["id"] for n in cycle] == ["x"] and cycle[0]["children"][0]["id"] == "y", "each shown once"
    assert "children" not in cycle[0]["children"][0]["children"][0], "x again is a leaf: no endless nesting"


# -- the commands against live agents ------------------------------------------------------------

ray_tests = pytest.mark.ray


@ray_tests
def test_status_and_deadletters_print_tables_by_default(system, agent_id, ray_session):
    address = ray_session.get_runtime_context().gcs_address
    ref = system.spawn(Counter, agent_id)
    ref.tell(Add(n=7), timeout=-1)  # expires before it is handled: a dead letter
    wait_for(ref.admin.dead_letters, timeout=30)
    out = console("status", agent_id, address=address, as_json=False)
    assert out.returncode == 0, out.stderr[-1500:]
    assert any(line.split()[:2] == ["state", "running"] for line in out.stdout.splitlines()), out.stdout
    letters = console("deadletters", agent_id, address=address, as_json=False)
    assert "expired" in letters.stdout and "┃" in letters.stdout, letters.stdout  # a table, not JSON
    with pytest.raises(ValueError):
        json.loads(letters.stdout)


@ray_tests
def test_top_shows_each_agents_rate_and_latency_while_it_works(system, agent_id, ray_session):
    address = ray_session.get_runtime_context().gcs_address
    ref = system.spawn(Counter, agent_id)
    for _ in range(5):
        ref.ask(Add(n=1))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("GARRISON_JSON", None)
    proc = subprocess.Popen([GARRISON, "top", "--once", "--interval", "1", "--json", "--address", address],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    sent = 0
    while proc.poll() is None:  # work through both of top's looks
        ref.ask(Add(n=1))
        sent += 1
    out, err = proc.communicate()
    assert proc.returncode == 0, err[-1500:]
    mine = next(r for r in json.loads(out) if r["agent"] == agent_id)
    assert mine["state"] == "running" and 5 <= mine["handled"] <= 5 + sent
    assert mine["rate_per_s"] > 0 and mine["p50_ms"] is not None and mine["p99_ms"] >= mine["p50_ms"]
    table = console("top", "--once", "--interval", "0.2", address=address, as_json=False)
    line = next(ln for ln in table.stdout.splitlines() if agent_id in ln)
    assert "running" in line and str(ref.ask(GetCount())) in line


@ray_tests
def test_inspect_gathers_summary_config_transitions_and_restores(system, agent_id, ray_session):
    address = ray_session.get_runtime_context().gcs_address
    ref = system.spawn(Counter, agent_id, config=AgentConfig(checkpoint_interval=7.0))
    for _ in range(6):
        ref.ask(Add(n=2))
    out = console("inspect", agent_id, "--transitions", "3", address=address)
    assert out.returncode == 0, out.stderr[-1500:]
    seen = json.loads(out.stdout)
    assert seen["status"]["agent_id"] == agent_id and seen["config"]["checkpoint_interval"] == 7.0
    assert 1 <= len(seen["transitions"]) <= 3 and all(t["op"] == "put" for t in seen["transitions"])
    assert [t["seq"] for t in seen["transitions"]] == sorted(t["seq"] for t in seen["transitions"])
    assert seen["restores"][-1]["source"] == "fresh"
    human = console("inspect", agent_id, address=address, as_json=False).stdout
    for heading in (f"agent {agent_id}", "config", "recent transitions", "restore history"):
        assert heading in human, human


@ray_tests
def test_logs_follow_an_agent_across_a_sigkill_and_its_restart(system, agent_id, ray_session):
    address = ray_session.get_runtime_context().gcs_address
    ref = system.spawn(Counter, agent_id)
    out = console("logs", agent_id, address=address)
    assert out.returncode == 0, out.stderr[-1500:]
    first = [json.loads(line) for line in out.stdout.splitlines()]
    assert any(ln.get("agent") == agent_id and "incarnation 1 serving" in ln["message"] for ln in first), first
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([GARRISON, "logs", agent_id, "--follow", "--json", "--address", address],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    lines: list[dict] = []
    threading.Thread(target=lambda: lines.extend(json.loads(ln) for ln in proc.stdout), daemon=True).start()
    try:
        wait_for(lambda: any("incarnation 1 serving" in ln["message"] for ln in lines), timeout=60)
        os.kill(ref.admin.status()["pid"], signal.SIGKILL)
        wait_for(lambda: incarnation(ref) == 2, timeout=120)
        wait_for(lambda: any("incarnation 2 serving" in ln["message"] for ln in lines), timeout=60)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    again = console("logs", agent_id, "--level", "warning", address=address)
    assert all(ln.get("level") in (None, "warning", "error", "critical") for ln in
               map(json.loads, again.stdout.splitlines()))


@ray_tests
def test_tree_shows_the_supervision_tree_with_states(data_dir, ray_session):
    address = ray_session.get_runtime_context().gcs_address
    tag = uuid.uuid4().hex[:8]
    sub = SupervisorSpec(id=f"sub-{tag}", children=(ChildSpec(id=f"leaf-{tag}", agent=Counter),))
    spec = SupervisorSpec(id=f"root-{tag}", children=(ChildSpec(id=f"a-{tag}", agent=Counter),
                                                       ChildSpec(id=sub.id, supervisor=sub)))
    sup = start_supervisor(spec, data_dir=data_dir)
    try:
        out = console("tree", address=address)
        assert out.returncode == 0, out.stderr[-1500:]
        root = next(n for n in json.loads(out.stdout) if n["id"] == spec.id)
        assert [(c["id"], c["kind"], c["state"]) for c in root["children"]] == [
            (f"a-{tag}", "agent", "running"), (sub.id, "supervisor", "running")]
        assert [c["id"] for c in root["children"][1]["children"]] == [f"leaf-{tag}"]
        human = console("tree", address=address, as_json=False).stdout
        lines = [ln for ln in human.splitlines() if tag in ln]
        assert [ln.strip("│├└─ ").split()[0] for ln in lines] == [spec.id, f"a-{tag}", sub.id, f"leaf-{tag}"]
        indent = [len(ln) - len(ln.lstrip("│├└─ ")) for ln in lines]
        assert indent[0] < indent[1] == indent[2] < indent[3], human
    finally:
        sup.stop()


def test_the_readme_shows_the_operators_commands():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for command in ("garrison top", "garrison tree", "garrison inspect", "garrison logs", "--json"):
        assert command in readme, command
