"""What every scenario needs: a local Ray that can import this repo, a temporary data directory."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import ray

ROOT = Path(__file__).resolve().parent.parent


def ensure_ray() -> None:
    """Start a local Ray (dashboard off) whose workers can import ``benchmarks``, once, as ``System`` does."""
    if ray.is_initialized():
        return
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    from runtime import System

    System()  # starts Ray as a user's embedded System would (agents at normal priority)


@contextlib.contextmanager
def data_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="garrison-bench-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]
