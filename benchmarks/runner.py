"""Run benchmark scenarios and print one JSON document.

    python -m benchmarks.runner [--quick] [scenario ...]

A scenario is a module in this package with ``run(quick: bool) -> dict``.
Progress goes to stderr; stdout carries only the JSON.
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
from typing import Any

import ray

import benchmarks


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


def main(argv: list[str] | None = None) -> int:
    known = scenarios()
    parser = argparse.ArgumentParser(prog="python -m benchmarks.runner", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", choices=known + [[]], metavar="scenario", help=f"one of {known}")
    parser.add_argument("--quick", action="store_true", help="smaller runs, for a smoke test")
    args = parser.parse_args(argv)
    # Ray prints worker deaths and the like to stdout: point file descriptor 1
    # at stderr while scenarios run, and write the JSON to the real stdout.
    sys.stdout.flush()
    json_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    results: dict[str, Any] = {}
    for name in args.names or known:
        print(f"benchmark {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        results[name] = importlib.import_module(f"benchmarks.{name}").run(quick=args.quick)
        print(f"benchmark {name} done in {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
    json.dump({"machine": machine(), "quick": args.quick, "scenarios": results}, json_out, indent=2)
    json_out.write("\n")
    json_out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
