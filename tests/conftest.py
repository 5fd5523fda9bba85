"""Shared fixtures: one real local Ray per test process, fresh directories per test.

The suite runs on two pytest-xdist workers (``-n 2 --dist loadfile``, pyproject.toml); each
worker that runs a test needing Ray starts one Ray of its own, once, and keeps it for the
session.  ``python -m pytest -n 0`` runs everything in one process with one Ray.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


#: Files that take a minute or more, collected first: the two pytest-xdist workers (``--dist
#: loadfile --no-loadscope-reorder`` in pyproject.toml; xdist would otherwise hand out the files
#: with the most tests first) then start on them, instead of one of them finishing a long file
#: alone at the end.
SLOW_FIRST = ("test_readme.py", "test_readme_even.py", "test_supervisor_chaos.py", "test_supervisor_actor.py",
              "test_cli.py", "test_node_loss.py", "test_supervisor_intensity.py", "test_demo.py",
              "test_ray_start_cluster.py", "test_pipeline.py", "test_dashboard_browser.py")


#: Where this checkout's Python lives (everything a test process, Ray worker or script imports from it).
PACKAGES = ("protocols", "runtime", "supervisors", "audit", "governance", "benchmarks", "tests")


def pytest_configure(config):
    """Compile the checkout's bytecode once, before any test process starts.

    Where ``PYTHONDONTWRITEBYTECODE`` is set (CI's image sets it), no process writes ``.pyc``
    files, so every Ray worker, console script and README example compiled the packages from
    source again: about 0.4 s of CPU each, some hundreds of times a run.  The variable does not
    stop reading ``.pyc`` files, and ``compileall`` writes them regardless (up-to-date ones skipped).
    """
    if hasattr(config, "workerinput"):  # an xdist worker: the controller did it before starting it
        return
    import compileall

    for package in PACKAGES:
        compileall.compile_dir(ROOT / package, quiet=1)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the others keep their order


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_session():
    """A real local Ray, started once; its workers can import ``tests.agents``."""
    import ray

    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    from runtime import System

    # Started by a System, as a user's embedded Ray is (its workers at normal priority, see
    # ``runtime._system.EMBEDDED_RAY_CONFIG``); the dashboard is on: tests read the state API it serves.
    # Its dashboard on a free port: under pytest-xdist each worker process has a Ray of its own.
    host = System(ray_init={"include_dashboard": True, "dashboard_host": "127.0.0.1",
                            "dashboard_port": _free_port(), "num_cpus": 2})
    yield ray
    host.shutdown(stop_agents=False)


@pytest.fixture
def system(ray_session, tmp_path):
    """A System on the shared Ray with its own data directory; stops its agents after the test."""
    from runtime import System

    sys_ = System(tmp_path / "data", create=True)
    yield sys_
    sys_.shutdown()


@pytest.fixture
def agent_id() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def data_dir(ray_session, tmp_path):
    """An empty data directory, with the shared Ray up."""
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
def refs():
    """Supervisors a test started; stopped after it, whatever happened."""
    started = []
    yield started
    for ref in started:
        try:
            ref.stop(timeout=60)
        except Exception:
            pass
