"""Shared fixtures: one real local Ray for the whole session, fresh directories per test."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def ray_session():
    """A real local Ray, started once; its workers can import ``tests.agents``."""
    import ray

    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    from runtime import System

    # Started by a System, as a user's embedded Ray is (its workers at normal priority, see
    # ``runtime._system.EMBEDDED_RAY_CONFIG``); the dashboard is on: tests read the state API it serves.
    host = System(ray_init={"include_dashboard": True, "dashboard_host": "127.0.0.1", "num_cpus": 2})
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
