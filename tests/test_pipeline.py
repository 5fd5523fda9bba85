"""Pipelines: four stages, each with its own queue and pool, on the shared Ray; and their pure parts."""

from __future__ import annotations

import json
import os
import signal
import uuid

import pytest

from runtime import PipelineError, RetryPolicy
from runtime.pipelines import latency
from runtime.queue import GetItem
from supervisors import ScalePolicy, SpecError, StageSpec, SupervisorRef, start_pipeline
from supervisors._pipeline import pipeline_spec

from .pipeline_agents import Classify, Draft, Gather, Review
from .test_cli import console
from .waiting import wait_for

FAST = RetryPolicy(base=0.05, factor=2.0, max=0.2, max_attempts=3)
ONE = ScalePolicy(min_size=1, max_size=2, target_wait=1.0, items_per_worker=50)


def stages(retry: RetryPolicy = FAST) -> list[StageSpec]:
    lease = {"batch": 5, "lease_seconds": 2.0, "idle_wait": 0.05}
    return [StageSpec(name, cls, scale=ONE, retry=retry, init=lease)
            for name, cls in (("classify", Classify), ("gather", Gather), ("draft", Draft), ("review", Review))]


def tickets(n: int, effects: str, *, start: int = 0) -> list[tuple[str, dict]]:
    texts = ("I want my money back", "my parcel is late", "a question")
    return [(f"T{i:03d}", {"id": f"T{i:03d}", "order": f"A{i % 100:03d}", "text": texts[i % 3], "effects": effects})
            for i in range(start, start + n)]


def test_latency_is_read_from_the_last_stages_results():
    results = [{"finished_at": 10.0 + i, "result": {"entered_at": 10.0}} for i in range(1, 101)]
    results.append({"finished_at": 5.0, "result": {"escalated": "desk"}})  # no ticket: not a latency
    got = latency(results)
    assert got["count"] == 100 and got["p50"] == 51.0 and got["p95"] == 96.0 and got["max"] == 100.0
    assert latency([]) == {"count": 0, "p50": None, "p95": None, "max": None}


def test_a_pipeline_spec_is_checked_before_anything_starts():
    with pytest.raises(SpecError, match="no stages"):
        pipeline_spec("p", [])
    with pytest.raises(SpecError, match="repeat"):
        pipeline_spec("p", [StageSpec("a", Classify), StageSpec("a", Gather)])
    with pytest.raises(SpecError, match="not a runtime.pipelines.Stage"):
        pipeline_spec("p", [StageSpec("a", dict)])
    with pytest.raises(SpecError, match="forget_after"):
        pipeline_spec("p", [StageSpec("a", Classify, forget_after=0.0)])
    kept = pipeline_spec("p", [StageSpec("a", Classify, forget_after=3600.0), StageSpec("b", Gather)])
    assert [(c.init["keep_results"], c.init["forget_after"]) for c in kept.children[1:3]] == [(False, 3600.0), (True, None)]
    spec = pipeline_spec("p", stages())
    ids = [c.id for c in spec.children]
    assert ids[:5] == ["p-desk", "p-classify-queue", "p-gather-queue", "p-draft-queue", "p-review-queue"]
    assert ids[5:7] == ["p-classify-workers", "p-classify-scaler"] and len(ids) == 13
    draft = spec.children[ids.index("p-draft-workers")].supervisor.children[0]
    assert draft.init["next"] == "p-review-queue" and draft.init["stage"] == "draft"
    review = spec.children[ids.index("p-review-workers")].supervisor.children[0]
    assert review.init["next"] is None
    placed = pipeline_spec("p", [StageSpec("a", Classify, ray_options={"resources": {"agent_host": 1}})])
    worker = placed.children[2].supervisor.children[0]
    assert worker.ray_options == {"resources": {"agent_host": 1}}
    assert placed.children[3].init["worker_resources"] == {"CPU": 1.0, "agent_host": 1}  # what the scaler asks Ray for


@pytest.mark.ray
def test_four_stages_with_a_worker_sigkilled_mid_run_finish_every_ticket_once(system, tmp_path, ray_session):
    name = f"pl-{uuid.uuid4().hex[:6]}"
    effects = tmp_path / "effects"
    effects.mkdir()
    data_dir = tmp_path / "pipeline"
    data_dir.mkdir()
    pipeline = start_pipeline(name, stages(), data_dir=data_dir, every=0.25, system=system)
    try:
        n = 60
        submitted = pipeline.submit_many(tickets(n, str(effects)))
        assert [s["duplicate"] for s in submitted] == [False] * n
        assert pipeline.submit(*tickets(1, str(effects))[0])["duplicate"] is True  # one ticket per key
        draft = SupervisorRef.lookup(f"{name}-draft-workers")
        wait_for(lambda: pipeline.status()["stages"][2]["done"] >= 5, timeout=60, describe=pipeline.status)
        moving = pipeline.status(tickets=200)["tickets"]  # mid-run: tickets listed at the stage each is at
        assert moving and {t["stage"] for t in moving} <= {"classify", "gather", "draft", "review"}
        assert len({t["key"] for t in moving}) == len(moving) and all(t["state"] in ("pending", "leased") for t in moving)
        victim = next(c for c in draft.which_children() if c["state"] == "running")
        os.kill(victim["pid"], signal.SIGKILL)  # mid-run: its leased tickets come back after their lease
        wait_for(lambda: pipeline.status()["completed"] == n, timeout=120, describe=pipeline.status)
        # Settled: the killed worker's hand-overs can finish its tickets at review (from its outbox, after
        # its restart) while its draft leases are still live; each is done at draft once its lease expires.
        wait_for(lambda: pipeline.status()["tickets"] == [], timeout=60, describe=pipeline.status)

        done = list(pipeline.finished())
        assert sorted(r["result"]["key"] for r in done) == [k for k, _ in tickets(n, "")], "every ticket once"
        for r in done:
            t = r["result"]
            assert [s["stage"] for s in t["trail"]] == ["classify", "gather", "draft", "review"]
            assert t["data"]["verdict"] == "approved" and t["data"]["reply"].endswith(f"{t['data']['total']} EUR")
        drafted = {p.name for p in effects.iterdir() if not p.name.endswith(".again")}
        assert drafted == {k for k, _ in tickets(n, "")}
        # A ticket drafted twice is one whose first draft's lease was lost with the killed worker: the draft
        # queue leased it again.  (Its trail may still say attempt 1: when the first draft's hand-over to
        # review got through before the kill and only its completion was lost, review keeps that one.)
        again = {p.name.removesuffix(".again") for p in effects.iterdir() if p.name.endswith(".again")}
        draft_queue = system.lookup(f"{name}-draft-queue")
        claims = {k: draft_queue.ask(GetItem(item=k))["attempts"] for k in again}
        assert all(c >= 2 for c in claims.values()), claims

        status = pipeline.status()
        assert status["submitted"] == n and status["in_flight"] == 0 and status["dead"] == 0 and status["tickets"] == []
        assert status["latency"]["count"] == n and 0 < status["latency"]["p50"] <= status["latency"]["max"]
        assert pipeline.where("T007") == {"key": "T007", "stage": "review", "state": "done", "stages": [
            {"stage": s, "state": "done", "attempts": pipeline.where("T007")["stages"][i]["attempts"], "reason": None}
            for i, s in enumerate(("classify", "gather", "draft", "review"))]}

        address = ray_session.get_runtime_context().gcs_address
        view = json.loads(console("pipeline", "status", name, address=address).stdout)
        assert view["completed"] == n and [s["stage"] for s in view["stages"]] == ["classify", "gather", "draft", "review"]
        table = console("pipeline", "status", name, address=address, as_json=False).stdout
        assert "draft" in table and str(n) in table, table

        # The inner stages' queues keep no copy of a ticket once done; the last one keeps it until acked.
        inner = system.lookup(f"{name}-classify-queue").ask(GetItem(item="T007"))
        assert (inner["state"], inner["payload"], inner["result"]) == ("done", None, None), inner
        assert system.lookup(f"{name}-review-queue").ask(GetItem(item="T007"))["result"]["key"] == "T007"
        assert pipeline.ack(pipeline.results(0, n)["cursor"]) == {"acked": n, "dropped": n}
        assert list(pipeline.finished()) == [] and pipeline.status()["completed"] == n
    finally:
        pipeline.stop()


@pytest.mark.ray
def test_a_ticket_a_stage_gives_up_on_goes_to_the_desk_and_a_person_retries_or_drops_it(system, tmp_path,
                                                                                         ray_session):
    name = f"pl-{uuid.uuid4().hex[:6]}"
    effects = tmp_path / "effects"
    effects.mkdir()
    data_dir = tmp_path / "pipeline"
    data_dir.mkdir()
    pipeline = start_pipeline(name, stages(RetryPolicy(base=0.05, max=0.1, max_attempts=2)), data_dir=data_dir,
                              every=0.25, system=system)
    try:
        ok = tickets(4, str(effects))
        bad = [(key, {**data, "text": "my lawsuit"}) for key, data in tickets(2, str(effects), start=10)]
        pipeline.submit_many(ok + bad)
        wait_for(lambda: len(pipeline.escalations()) == 2 and pipeline.status()["completed"] == 4, timeout=90,
                 describe=pipeline.status)
        open_ = pipeline.escalations()
        assert {e["key"] for e in open_} == {"T010", "T011"} and {e["stage"] for e in open_} == {"review"}
        assert all(e["attempts"] == 2 and "lawsuit" in e["error"] and e["state"] == "open" for e in open_)
        status = pipeline.status()
        assert status["escalated_open"] == 2 and status["completed"] == 4 and status["in_flight"] == 0

        fixed = {**open_[0]["ticket"]["data"], "text": "a question"}
        retried = pipeline.resolve(open_[0]["item"], "retry", who="ana", why="reworded", data=fixed,
                                   replace_data=True)
        assert retried["state"] == "retried" and retried["resolved"]["as"] == f"{open_[0]['key']}~h1"
        dropped = pipeline.resolve(open_[1]["item"], "drop", who="ana", why="duplicate of another")
        assert dropped["state"] == "dropped"
        with pytest.raises(PipelineError, match="resolved: dropped by ana"):
            pipeline.resolve(open_[1]["item"], "retry", who="bo")
        wait_for(lambda: pipeline.status()["completed"] == 5, timeout=60, describe=pipeline.status)
        keys = sorted(r["result"]["key"] for r in pipeline.finished())
        assert keys == sorted(["T000", "T001", "T002", "T003", open_[0]["key"]])
        status = pipeline.status()
        assert status["escalated_open"] == 0 and status["escalated"] == 2

        address = ray_session.get_runtime_context().gcs_address
        listed = json.loads(console("pipeline", "escalations", name, "--all", address=address).stdout)
        assert {e["state"] for e in listed} == {"retried", "dropped"}
    finally:
        pipeline.stop()
