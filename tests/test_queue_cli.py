"""``garrison queue items`` and ``garrison queue replay`` against a live queue (a real subprocess)."""

from __future__ import annotations

import json

import pytest

from runtime.queue import Claim, EnqueueMany, Fail, GetItem, NewItem, WorkQueue

from .test_cli import console, garrison

pytestmark = pytest.mark.ray


def test_queue_items_and_replay_from_the_cli(system, agent_id, ray_session):
    address = ray_session.get_runtime_context().gcs_address
    queue = system.spawn(WorkQueue, agent_id)
    queue.ask(EnqueueMany(items=[NewItem(key=f"job-{i}", payload=i) for i in range(5)]))
    for c in queue.ask(Claim(worker="w", limit=3, lease_seconds=60)):  # job-0, 1, 2 die
        queue.ask(Fail(item=c["id"], token=c["token"], reason=f"poison {c['id']}", retry=False))

    out = garrison("queue", "items", agent_id, "--state", "dead", "--limit", "2", address=address)
    assert out.returncode == 0, out.stderr[-1500:]
    page = json.loads(out.stdout)
    assert [(i["id"], i["reason"]) for i in page["items"]] == [("job-0", "poison job-0"), ("job-1", "poison job-1")]
    assert page["more"]
    out = garrison("queue", "items", agent_id, "--state", "dead", "--after", page["cursor"], address=address)
    assert [i["id"] for i in json.loads(out.stdout)["items"]] == ["job-2"]

    out = garrison("queue", "replay", agent_id, "job-3", "job-1", "--who", "alice", address=address)
    assert out.returncode == 2 and "QueueError" in out.stderr and "job-3" in out.stderr, out.stderr[-1500:]
    assert queue.ask(GetItem(item="job-1"))["state"] == "dead", "a refused replay changes nothing"
    out = garrison("queue", "replay", agent_id, "job-1", "--who", "alice", address=address)
    assert json.loads(out.stdout) == {"replayed": [{"id": "job-1", "attempts": 1, "replay_count": 1}], "dead": 2}
    out = garrison("queue", "replay", agent_id, "--all", address=address)
    assert [r["id"] for r in json.loads(out.stdout)["replayed"]] == ["job-0", "job-2"]
    item = queue.ask(GetItem(item="job-1"))
    assert (item["state"], item["attempts"], item["replays"][0]["by"]) == ("pending", 0, "alice")

    table = console("queue", "items", agent_id, "--limit", "3", address=address, as_json=False)
    assert table.returncode == 0, table.stderr[-1500:]
    assert "job-3" in table.stdout and "pending" in table.stdout and "more: --after" in table.stdout
    usage = console("queue", "replay", agent_id, address="127.0.0.1:1")  # no item, no --all: refused before connecting
    assert usage.returncode == 2 and "--all" in usage.stderr
