"""Run benchmark scenarios and print one JSON document; optionally draw its charts.

    python -m benchmarks.runner [--quick] [--plot DIR] [scenario ...]
    python -m benchmarks.runner --plot-from RUN.json --plot DIR

A scenario is a module in this package with ``run(quick: bool) -> dict``.
Progress goes to stderr; stdout carries only the JSON.  ``--plot DIR`` writes
PNG charts of the run (``benchmarks._plot``; needs the extra ``plot``) into
DIR after the JSON; ``--plot-from`` draws them from a saved JSON, running nothing.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import platform
import sys
import time
from pathlib import Path
from typing import Any

import ray

import benchmarks
from runtime._console import progress

from . import _plot


def scenarios() -> list[str]:
    names = []
    for info in pkgutil.iter_modules(benchmarks.__path__):
        if info.name.startswith("_") or info.name == "runner":
            continue
        if hasattr(importlib.import_module(f"benchmarks.{info.name}"), "run"):
            names.append(info.name)
    return sorted(names)


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "ray": ray.__version__,
        "platform": platform.platform(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def document(results: dict[str, Any], quick: bool) -> dict[str, Any]:
    """The JSON document of a run: the machine, whether it was ``--quick``, each scenario's result."""
    return {"machine": machine(), "quick": quick, "scenarios": results}


def run_scenarios(names: list[str], quick: bool) -> dict[str, Any]:
    """Run ``names`` in order and write their document to stdout; returns it."""
    # Ray prints worker deaths and the like to stdout: point file descriptor 1
    # at stderr while scenarios run, and write the JSON to the real stdout.
    sys.stdout.flush()
    json_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    results: dict[str, Any] = {}
    # A bar over the scenarios on a terminal (stderr; file descriptor 1 is stderr by now), lines above it.
    with progress("benchmarks", len(names)) as advance:
        for name in names:
            print(f"benchmark {name} ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            results[name] = importlib.import_module(f"benchmarks.{name}").run(quick=quick)
            print(f"benchmark {name} done in {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
            advance(1)
    doc = document(results, quick)
    json.dump(doc, json_out, indent=2)
    json_out.write("\n")
    json_out.flush()
    return doc


def draw(doc: dict[str, Any], out_dir: Path) -> list[Path]:
    """The charts of ``doc`` into ``out_dir``, a line on stderr for each chart written or skipped."""
    for name, why in _plot.skipped(doc).items():
        print(f"plot: no {name} chart: {why}", file=sys.stderr, flush=True)
    written = _plot.plot(doc, out_dir)
    for path in written:
        print(f"plot: wrote {path}", file=sys.stderr, flush=True)
    return written


def main(argv: list[str] | None = None) -> int:
    known = scenarios()
    parser = argparse.ArgumentParser(prog="python -m benchmarks.runner", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", choices=known + [[]], metavar="scenario", help=f"one of {known}")
    parser.add_argument("--quick", action="store_true", help="smaller runs, for a smoke test")
    parser.add_argument("--plot", metavar="DIR", type=Path,
                        help=f"also write PNG charts of the run into DIR, created if missing ({_plot.INSTALL})")
    parser.add_argument("--plot-from", metavar="FILE", type=Path,
                        help="run nothing: draw the charts of a run's saved JSON (with --plot DIR)")
    args = parser.parse_args(argv)
    if args.plot_from is not None and (args.names or args.quick):
        parser.error("--plot-from draws a saved run: it takes no scenario names and no --quick")
    if args.plot_from is not None and args.plot is None:
        parser.error("--plot-from needs --plot DIR, where the charts go")
    if args.plot is not None:
        try:  # before any scenario runs: a long run must not end without its charts
            _plot.require_matplotlib()
        except _plot.PlotUnavailable as exc:
            parser.exit(2, f"{parser.prog}: error: {exc}\n")
    if args.plot_from is not None:
        try:
            doc = json.loads(args.plot_from.read_text())
        except (OSError, ValueError) as exc:  # ValueError: JSONDecodeError, and text that is not UTF-8
            parser.error(f"--plot-from {args.plot_from}: {exc}")
    else:
        doc = run_scenarios(args.names or known, args.quick)
    if args.plot is not None:
        draw(doc, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
