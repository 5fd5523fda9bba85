"""The benchmark charts (``benchmarks._plot``, ``benchmarks.runner --plot``/``--plot-from``): no Ray.

Each scenario's result is made by the scenario's own ``report`` from measurements drawn at random
(the soak's samples by its ``sample_row``, on real LMDB environments holding the agents' tables), and
the document by the runner's ``document``: the charts get what a run gives them.
"""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path
from typing import Any

import lmdb
import pytest
from matplotlib.image import imread

from benchmarks import _plot, ask_latency, audit_overhead, failover, metrics_overhead, protocol_throughput, runner, soak
from runtime._store import TABLES

ROUNDS = 5
PNG = b"\x89PNG\r\n\x1a\n"


def _rates(rng: random.Random, centre: float) -> list[float]:
    return [rng.uniform(0.8 * centre, 1.2 * centre) for _ in range(ROUNDS)]


def _soak(root: Path, rng: random.Random) -> dict[str, Any]:
    """The soak's result from samples of real LMDB environments, a few entries added before each sample."""
    n, samples = soak.CHUNK * 10, 12
    state_dirs = {role: root / role for role in ("sender", "receiver")}
    store = root / "store"
    store.mkdir(parents=True)
    rows = []
    for i in range(samples):
        for folder in state_dirs.values():
            env = lmdb.open(str(folder), max_dbs=32, map_size=64 << 20)
            with env.begin(write=True) as txn:
                for name in TABLES:  # every table the agent's store has, as ``lmdb_usage`` opens them all
                    db = env.open_db(name.encode(), txn=txn)
                    for _ in range(rng.randrange(50)):
                        txn.put(rng.randbytes(8), rng.randbytes(rng.randrange(16, 256)), db=db)
            env.close()  # before sampling: LMDB allows one open environment per file and process
        (store / f"segment-{i}.bin").write_bytes(rng.randbytes(rng.randrange(1, 8192)))
        rows.append(soak.sample_row(i * soak.SAMPLE_S, n * (i + 1) // samples, store, state_dirs))
    status = {role: dict.fromkeys(soak.FINAL, 0) for role in state_dirs}
    return soak.report(n, n / (samples * soak.SAMPLE_S), samples * soak.SAMPLE_S, rows, status,
                       [{"seq": seq} for seq in (1, 2, 3)])


def _results(root: Path, rng: random.Random) -> dict[str, Any]:
    n = 100_000
    latency = 0.9e-3  # seconds; lognormal samples have the long right tail of real ones
    return {
        "protocol_throughput": protocol_throughput.report(n, _rates(rng, 3_400), _rates(rng, 110_000)),
        "ask_latency": ask_latency.report(
            [rng.lognormvariate(math.log(latency), 0.4) for _ in range(3000)],
            [rng.lognormvariate(math.log(0.8 * latency), 0.4) for _ in range(3000)]),
        "soak": _soak(root, rng),
        "failover": failover.report(_rates(rng, 1.4), _rates(rng, 0.5), _rates(rng, 0.05)),
        "audit_overhead": audit_overhead.report(n, _rates(rng, 95_000), _rates(rng, 105_000)),
        "metrics_overhead": metrics_overhead.report(20_000, {True: _rates(rng, 41), False: _rates(rng, 40)},
                                                    n, {True: _rates(rng, 75_000), False: _rates(rng, 80_000)}),
    }


@pytest.fixture
def doc(tmp_path: Path) -> dict[str, Any]:
    """A full run's document (every scenario with a chart), as the runner prints it."""
    results = _results(tmp_path / "measured", random.Random(20261203))
    assert set(results) == set(_plot.CHARTS), "a scenario with a chart that this test does not make"
    return json.loads(json.dumps(runner.document(results, quick=False)))  # through JSON, as --plot-from reads it


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG), path
    assert len(data) < 200_000, f"{path} is {len(data)} bytes: too big for the README"
    height, width, _ = imread(path).shape  # decodes the whole image
    assert width > 0 and height > 0
    assert width == round(_plot.WIDTH * _plot.DPI), "every chart has the same width"


def test_every_scenario_with_a_chart_gets_a_valid_png(doc, tmp_path):
    out = tmp_path / "img" / "new"  # created, parents included
    written = _plot.plot(doc, out)
    assert _plot.skipped(doc) == {}
    assert written == [out / f"{name}.png" for name in _plot.CHARTS]
    assert sorted(out.iterdir()) == sorted(written)
    for path in written:
        _assert_png(path)


def test_a_scenario_missing_from_the_results_gets_no_chart(doc, tmp_path):
    del doc["scenarios"]["soak"], doc["scenarios"]["failover"]
    written = _plot.plot(doc, tmp_path)
    assert _plot.skipped(doc) == {"soak": "not in the results", "failover": "not in the results"}
    assert [path.name for path in written] == [f"{name}.png" for name in _plot.CHARTS if name in doc["scenarios"]]
    assert not (tmp_path / "soak.png").exists() and not (tmp_path / "failover.png").exists()


def test_a_result_saved_before_its_series_was_recorded_gets_no_chart(doc, tmp_path):
    del doc["scenarios"]["ask_latency"]["latency_ms_quantiles"]
    written = _plot.plot(doc, tmp_path)
    assert "latency_ms_quantiles" in _plot.skipped(doc)["ask_latency"]
    assert tmp_path / "ask_latency.png" not in written and len(written) == len(_plot.CHARTS) - 1


@pytest.fixture
def nothing_runs(monkeypatch):
    def refuse(names, quick):
        raise AssertionError(f"the runner ran {names}")

    monkeypatch.setattr(runner, "run_scenarios", refuse)


def test_plot_from_draws_a_saved_run_without_running_anything(doc, tmp_path, capsys, nothing_runs):
    del doc["scenarios"]["failover"]
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps(doc, indent=2))
    out = tmp_path / "charts"
    assert runner.main(["--plot-from", str(saved), "--plot", str(out)]) == 0
    names = [name for name in _plot.CHARTS if name != "failover"]
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{name}.png" for name in names)
    for name in names:
        _assert_png(out / f"{name}.png")
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing ran: no JSON
    assert "plot: no failover chart: not in the results" in captured.err


def test_plot_from_needs_a_directory_and_a_readable_file_and_runs_no_scenarios(tmp_path, capsys, nothing_runs):
    for argv in (["--plot-from", str(tmp_path / "run.json")],
                 ["--plot-from", str(tmp_path / "run.json"), "--plot", str(tmp_path), "--quick"],
                 ["--plot-from", str(tmp_path / "run.json"), "--plot", str(tmp_path), "failover"],
                 ["--plot-from", str(tmp_path / "run.json"), "--plot", str(tmp_path)]):  # no such file
        with pytest.raises(SystemExit) as exited:
            runner.main(argv)
        assert exited.value.code == 2
        assert "--plot-from" in capsys.readouterr().err


def test_without_matplotlib_plot_says_how_to_install_it_before_running(tmp_path, capsys, monkeypatch, nothing_runs):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    with pytest.raises(SystemExit) as exited:
        runner.main(["protocol_throughput", "--plot", str(tmp_path / "charts")])
    assert exited.value.code == 2
    assert _plot.INSTALL in capsys.readouterr().err
    assert not (tmp_path / "charts").exists()
