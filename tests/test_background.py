"""``runtime._background``: checkpoints run on the background thread; failures degrade, successes clear.

The shipper and checkpointer are fakes (the background work's collaborators);
the store is a real LMDB file.  Nothing waits on time: each checkpoint asked
for is answered by the thread, and the periodic intervals are an hour.
"""

from __future__ import annotations

import threading

import pytest

from runtime import CheckpointError, Fenced
from runtime._background import Background
from runtime._config import AgentConfig
from runtime._lifecycle import AgentState, Lifecycle
from runtime._metrics import AgentMetrics
from runtime._store import LmdbStore


class Manifest:
    def __init__(self, seq: int) -> None:
        self.seq = seq

    def model_dump(self, mode: str) -> dict:
        return {"seq": self.seq}


class FakeShipper:
    shipped = 0

    def ship(self) -> int:
        return 0


class FakeCheckpointer:
    """Takes checkpoints, or raises what the test queued; records the thread each ran on."""

    def __init__(self) -> None:
        self.raises: list[BaseException] = []
        self.threads: list[str] = []

    def take(self, force: bool) -> Manifest:
        self.threads.append(threading.current_thread().name)
        if self.raises:
            raise self.raises.pop(0)
        return Manifest(len(self.threads))


@pytest.fixture
def bg(tmp_path):
    store = LmdbStore(tmp_path / "db", agent_id="bg-1", map_size=1 << 24, sync=False)
    fenced: list[Fenced] = []
    checkpointer = FakeCheckpointer()
    metrics = AgentMetrics("bg-1")
    background = Background(agent_id="bg-1", config=AgentConfig(ship_interval=3600, checkpoint_interval=3600),
                            store=store, shipper=FakeShipper(), checkpointer=checkpointer, metrics=metrics,
                            lifecycle=Lifecycle(AgentState.RUNNING), on_fenced=fenced.append)
    background.start()
    yield background, checkpointer, metrics, fenced
    background.stop()
    store.close()


def _gauge(metrics: AgentMetrics, name: str) -> float:
    return metrics.registry.get_sample_value(name, {"agent": "bg-1"})


def test_a_checkpoint_asked_for_from_another_thread_runs_on_the_background_thread(bg):
    background, checkpointer, metrics, _ = bg
    assert background.checkpoint(force=True) == {"seq": 1}
    assert checkpointer.threads == ["garrison-bg-bg-1"]
    assert _gauge(metrics, "garrison_checkpoints_total") == 1


def test_a_failure_degrades_visibly_and_the_next_success_clears_it(bg):
    background, checkpointer, metrics, _ = bg
    checkpointer.raises.append(CheckpointError("no space left on device", errno=28, path="/ck"))
    with pytest.raises(CheckpointError):
        background.checkpoint(force=True)
    assert background.degraded.active and background.degraded.probe()["attempts"] == 1
    assert "no space left" in background.background_error
    assert _gauge(metrics, "garrison_degraded") == 1
    assert background.checkpoint(force=True) == {"seq": 2}
    assert not background.degraded.active and background.degraded.probe() is None
    assert _gauge(metrics, "garrison_degraded") == 0


def test_a_final_checkpoint_that_fails_is_recorded_not_raised(bg):
    background, checkpointer, _, _ = bg
    checkpointer.raises.append(CheckpointError("read-only file system", errno=30, path="/ck"))
    assert background.final_checkpoint("stop", force=True) is None
    assert background.degraded.active and background.degraded.status()["degraded"]["where"] == "stop"


def test_finding_the_incarnation_fenced_hands_it_over_and_ends_the_thread(bg):
    background, checkpointer, _, fenced = bg
    checkpointer.raises.append(Fenced("replaced", agent_id="bg-1"))
    with pytest.raises(Fenced):
        background.checkpoint(force=True)
    # A Fenced from the periodic work goes to on_fenced; one asked for is raised to the asker.
    assert not background.degraded.active
    background.stop()
    assert background.checkpoint(force=True) == {"seq": 2}  # the thread is gone: runs inline
    assert checkpointer.threads[-1] == threading.current_thread().name
