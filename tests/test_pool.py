"""A worker pool that sizes itself on its queue: a load step up then down, on the shared Ray."""

from __future__ import annotations

import itertools
import json
import os
import signal
import uuid

import pytest

from runtime import WorkQueue
from runtime.queue import EnqueueMany, Forget, GetItem, NewItem, Process, QueueStats, Results
from supervisors import PoolStatus, ScalePolicy, SupervisorRef, start_pool

from .pool_agents import SLOW_S, CountingDoubler, Doubler, SlowDoubler, Worked
from .test_cli import console
from .waiting import wait_for

pytestmark = pytest.mark.ray

POLICY = ScalePolicy(min_size=1, max_size=3, target_wait=0.5, items_per_worker=20, max_step=2,
                     up_cooldown=0.5, down_cooldown=1.0, quiet_for=1.0)


def test_a_load_step_grows_the_pool_then_it_shrinks_back_without_flapping(system, tmp_path, ray_session):
    tag = uuid.uuid4().hex[:8]
    data_dir = tmp_path / "pool"
    data_dir.mkdir()
    queue = system.spawn(WorkQueue, f"jobs-{tag}")
    root = start_pool(f"pool-{tag}", Doubler, queue=queue.agent_id, data_dir=data_dir, policy=POLICY, every=0.25,
                      init={"batch": 5, "lease_seconds": 3.0})
    try:
        pool = SupervisorRef.lookup(f"pool-{tag}-workers")
        scaler = system.lookup(f"pool-{tag}-scaler")

        def workers() -> int:
            return sum(c["state"] == "running" for c in pool.which_children())

        wait_for(lambda: workers() == POLICY.min_size, timeout=60)
        n = 240
        queue.ask(EnqueueMany(items=[NewItem(key=f"item-{i}", payload=i) for i in range(n)]))
        wait_for(lambda: workers() == POLICY.max_size, timeout=60, describe=lambda: scaler.ask(PoolStatus()))
        victim = next(c for c in pool.which_children() if c["state"] == "running")
        os.kill(victim["pid"], signal.SIGKILL)  # mid-stream: its leased items come back after their lease
        wait_for(lambda: queue.ask(QueueStats())["done"]["count"] == n, timeout=120,
                 describe=lambda: queue.ask(QueueStats()))
        wait_for(lambda: workers() == POLICY.min_size, timeout=60, describe=lambda: scaler.ask(PoolStatus()))
        with pytest.raises(ProcessLookupError):
            os.kill(victim["pid"], 0)  # the kill took: that process is gone (its supervisor restarts or retires it)

        results = queue.ask(Results(after=0, limit=n + 10))["items"]
        assert sorted((r["id"], r["result"]) for r in results) == sorted((f"item-{i}", 2 * i) for i in range(n))
        changes = scaler.ask(PoolStatus())["changes"]
        sizes = [c["to"] for c in changes]
        assert max(sizes) == POLICY.max_size and sizes[-1] == POLICY.min_size
        assert all(c["reason"].startswith(("grow", "shrink")) and "depth" in c["reason"] for c in changes)
        ups = [c for c in changes if c["reason"].startswith("grow")]
        downs = [c for c in changes if c["reason"].startswith("shrink")]
        # Up to the max at most max_step at a time, then down one at a time: no size visited twice on the way.
        assert len(ups) <= 1 + POLICY.max_size // POLICY.max_step + 1 and len(downs) == POLICY.max_size - POLICY.min_size
        assert all(a["time"] < b["time"] for a, b in itertools.pairwise(changes))
        first_down = changes.index(downs[0])
        assert all(c["reason"].startswith("shrink") for c in changes[first_down:]), "no growth after the shrink began"

        # What an operator sees: the pool and its queue from the console script.
        address = ray_session.get_runtime_context().gcs_address
        view = json.loads(console("pool", f"pool-{tag}", address=address).stdout)
        assert view["queue"] == queue.agent_id and view["changes"][-1]["reason"].startswith("shrink")
        assert sum(w["state"] == "running" for w in view["workers"]) == POLICY.min_size
        table = console("queue", "stats", queue.agent_id, address=address, as_json=False).stdout
        assert any(line.split()[:2] == ["done", "count"] or line.split()[:1] == ["done"] for line in table.splitlines())
        assert str(n) in table, table
    finally:
        root.stop()


def test_an_item_done_before_its_report_was_lost_is_not_done_again(system, agent_id):
    """The worker died after ``Process`` committed and before ``CompleteMany``: the item comes back with
    token 2, and the worker answers the recorded result without running ``work`` again."""
    worker = system.spawn(CountingDoubler, agent_id, init={"queue": f"no-such-queue-{agent_id}"})
    assert worker.ask(Process(item="x", token=1, payload=21)) == 42
    assert worker.ask(Process(item="x", token=2, payload=21)) == 42
    assert worker.ask(Worked()) == 1, "work ran once"
    assert worker.ask(Forget(items=["x"])) == 1
    assert worker.ask(Process(item="x", token=3, payload=21)) == 42 and worker.ask(Worked()) == 2


def test_a_batch_slower_than_its_lease_is_extended_and_every_item_done_on_its_first_claim(system, agent_id):
    """Four items of 0.6 s in a batch leased for 2 s: past half the lease the worker extends what it still
    holds (done and not yet reported too), so no lease expires and no attempt is lost."""
    queue = system.spawn(WorkQueue, f"{agent_id}-queue")
    queue.ask(EnqueueMany(items=[NewItem(key=f"slow-{i}", payload=i) for i in range(8)]))
    lease = 2.0
    assert 4 * SLOW_S > lease
    worker = system.spawn(SlowDoubler, f"{agent_id}-worker",
                          init={"queue": queue.agent_id, "batch": 4, "lease_seconds": lease, "idle_wait": 0.05})
    wait_for(lambda: queue.ask(QueueStats())["done"]["count"] == 8, timeout=60, describe=lambda: queue.ask(QueueStats()))
    items = [queue.ask(GetItem(item=f"slow-{i}")) for i in range(8)]
    assert [(item["state"], item["attempts"]) for item in items] == [("done", 1)] * 8, items
    assert [item["result"] for item in items] == [2 * i for i in range(8)]
    extended = [line for line in worker.admin.metrics().splitlines()
                if line.startswith("garrison_worker_leases_extended")]
    assert extended and float(extended[0].split()[-1]) > 0, extended
    system.stop(worker.agent_id)
