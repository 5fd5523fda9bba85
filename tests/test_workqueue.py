"""The ``WorkQueue`` agent on a real local Ray: claim races, leases in real time, poison items,
duplicates, a worker process SIGKILLed mid-item, the queue's own process SIGKILLed mid-stream,
batch failures, an operator's replay and listing, and session affinity across two worker processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import ray

from runtime import AgentStartError
from runtime.queue import (
    Ack,
    Claim,
    Complete,
    CompleteMany,
    Completion,
    Enqueue,
    EnqueueMany,
    Fail,
    FailMany,
    Failure,
    GetItem,
    Items,
    LeaseLost,
    NewItem,
    QueueError,
    QueueStats,
    Replay,
    Results,
    WorkQueue,
)

from .waiting import wait_for

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parent.parent


def all_results(queue) -> list[dict]:
    out, cursor = [], 0
    while True:
        page = queue.ask(Results(after=cursor, limit=500))
        if not page["items"]:
            return out
        out.extend(page["items"])
        cursor = page["cursor"]


def test_a_claim_race_has_exactly_one_winner(system, agent_id):
    queue = system.spawn(WorkQueue, agent_id)
    queue.ask(Enqueue(key="only", payload={"x": 1}))
    start = threading.Barrier(8)
    won: list[list[dict]] = []

    def claimer(i: int) -> None:
        start.wait()
        won.append(queue.ask(Claim(worker=f"w{i}", limit=1, lease_seconds=30), timeout=60))

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [c for c in won if c]
    assert len(won) == 8 and len(winners) == 1
    assert winners[0][0]["id"] == "only" and winners[0][0]["token"] == 1
    assert queue.ask(QueueStats())["leased"]["count"] == 1


def test_an_expired_lease_makes_the_item_claimable_again_and_fences_the_old_token(system, agent_id):
    queue = system.spawn(WorkQueue, agent_id)
    queue.ask(Enqueue(key="job"))
    [first] = queue.ask(Claim(worker="slow", lease_seconds=0.3))
    # No sleeping: claim until the lease has run out and the item comes back.
    [second] = wait_for(lambda: queue.ask(Claim(worker="fast", lease_seconds=30)), timeout=30)
    assert (second["id"], second["token"]) == ("job", 2), "the expired lease counted as an attempt"
    with pytest.raises(LeaseLost) as err:
        queue.ask(Complete(item="job", token=first["token"], result="late"))
    assert err.value.details["current_token"] == 2
    assert queue.ask(Complete(item="job", token=2, result="ok"))["status"] == "completed"
    assert queue.ask(Complete(item="job", token=2, result="again"))["status"] == "already_completed"
    assert [(r["id"], r["result"]) for r in all_results(queue)] == [("job", "ok")]


def test_a_poison_item_is_dead_after_max_attempts_failures(system, agent_id):
    queue = system.spawn(WorkQueue, agent_id, init={"policy": {"base": 0.05, "factor": 2.0, "max_attempts": 3}})
    queue.ask(Enqueue(key="poison", payload="bad"))
    tokens = []
    for _ in range(3):  # each retry is claimable once its backoff (0.05 s, then 0.1 s) is over
        [c] = wait_for(lambda: queue.ask(Claim(worker="w", lease_seconds=30)), timeout=30)
        tokens.append(c["token"])
        queue.ask(Fail(item="poison", token=c["token"], reason=f"boom {c['token']}"))
    assert tokens == [1, 2, 3]
    item = queue.ask(GetItem(item="poison"))
    assert item["state"] == "dead" and item["reason"] == "boom 3" and item["attempts"] == 3
    stats = queue.ask(QueueStats())
    assert stats["dead"]["count"] == 1 and stats["depth"] == 0
    assert queue.ask(Enqueue(key="poison"))["state"] == "dead", "a dead item stays (for an operator)"


def test_duplicate_enqueues_are_one_item(system, agent_id):
    queue = system.spawn(WorkQueue, agent_id)
    answers: list[dict] = []

    def producer() -> None:
        answers.append(queue.ask(Enqueue(key="order-42", payload={"cents": 100})))

    threads = [threading.Thread(target=producer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batch = queue.ask(EnqueueMany(items=[NewItem(key="order-42"), NewItem(key="order-43"), NewItem(key="order-43")]))
    assert sorted(a["duplicate"] for a in answers) == [False, True, True, True]
    assert [a["duplicate"] for a in batch] == [True, False, True]
    assert queue.ask(QueueStats())["pending"]["count"] == 2
    claimed = queue.ask(Claim(worker="w", limit=10))
    assert sorted(c["id"] for c in claimed) == ["order-42", "order-43"]
    assert queue.ask(Enqueue(key="order-42"))["state"] == "leased"



def test_a_queue_spawned_to_keep_no_results_and_forget_drops_them_then_forgets_its_done_items(system, agent_id):
    queue = system.spawn(WorkQueue, agent_id, init={"keep_results": False, "forget_after": 0.5})
    queue.ask(EnqueueMany(items=[NewItem(key=k, payload={"k": k}) for k in ("a", "b", "c")]))
    claimed = queue.ask(Claim(worker="w", limit=3))
    queue.ask(CompleteMany(items=[Completion(item=c["id"], token=c["token"], result="ok") for c in claimed]))
    done = queue.ask(GetItem(item="a"))
    assert (done["state"], done["payload"], done["result"]) == ("done", None, None), done
    assert queue.ask(Results(after=0))["items"] == [] and queue.ask(QueueStats())["results_acked"] == 3
    assert queue.ask(Enqueue(key="a"))["duplicate"] is True, "remembered until forget_after has passed"
    # Forgetting runs with completions and acks: ack nothing, until the three are due and gone.
    wait_for(lambda: queue.ask(Ack(upto=0)) and queue.ask(QueueStats())["forgotten"] == 3, timeout=30,
             describe=lambda: queue.ask(QueueStats()))
    assert queue.ask(QueueStats())["done"]["count"] == 3
    assert queue.ask(Enqueue(key="a"))["duplicate"] is False, "a forgotten key is new work"
    with pytest.raises(AgentStartError, match="forget_after"):
        system.spawn(WorkQueue, f"{agent_id}-bad", init={"forget_after": 0})


WORKER = """
import os, sys, time
from runtime import System
from runtime.queue import Claim
address, queue_id, effects, log = sys.argv[1:5]
queue = System(address=address).lookup(queue_id)
[item] = queue.ask(Claim(worker="doomed", limit=1, lease_seconds=2.0), timeout=60)
os.close(os.open(os.path.join(effects, item["id"]), os.O_CREAT | os.O_EXCL | os.O_WRONLY))  # the effect
with open(log, "a") as f:
    f.write(f"started {item['id']} {item['token']}\\n")
time.sleep(600)  # "working": never completes, SIGKILLed by the test
"""


def _effect(effects: Path, item_id: str) -> bool:
    """The idempotent effect, keyed by item id: True if this call did it."""
    try:
        os.close(os.open(effects / item_id, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def test_a_worker_process_sigkilled_mid_item_leaves_it_to_another_worker_once(system, agent_id, tmp_path):
    queue = system.spawn(WorkQueue, agent_id)
    queue.ask(Enqueue(key="charge-7", payload={"cents": 700}))
    effects, log = tmp_path / "effects", tmp_path / "worker.log"
    effects.mkdir()
    address = ray.get_runtime_context().gcs_address
    worker = subprocess.Popen([sys.executable, "-c", WORKER, address, agent_id, str(effects), str(log)],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: log.exists() and "started charge-7 1" in log.read_text(), timeout=50,
                 describe=lambda: worker.poll())
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
    assert queue.ask(GetItem(item="charge-7"))["worker"] == "doomed"
    [item] = wait_for(lambda: queue.ask(Claim(worker="survivor", lease_seconds=30)), timeout=30)
    assert (item["id"], item["token"]) == ("charge-7", 2), "claimed again once the killed worker's lease expired"
    did_it = _effect(effects, item["id"])  # the killed worker did it already: not again
    assert queue.ask(Complete(item="charge-7", token=item["token"], result={"effect_done_here": did_it}))[
        "status"] == "completed"
    with pytest.raises(LeaseLost):  # had the killed worker lived, its completion would be refused
        queue.ask(Complete(item="charge-7", token=1, result="stale"))
    assert sorted(p.name for p in effects.iterdir()) == ["charge-7"], "exactly one effect"
    results = all_results(queue)
    assert [(r["id"], r["attempts"], r["result"]) for r in results] == [("charge-7", 2, {"effect_done_here": False})]


def test_the_queue_sigkilled_mid_stream_loses_no_item_and_completes_each_once(system, agent_id):
    n = 240
    queue = system.spawn(WorkQueue, agent_id)
    pid = queue.admin.status()["pid"]
    enqueued, completed = [], []
    lock = threading.Lock()
    under_way, finished = threading.Event(), threading.Event()

    def producer() -> None:
        for i in range(n):
            assert not queue.ask(Enqueue(key=f"item-{i:04d}", payload=i), timeout=60)["duplicate"]
            enqueued.append(i)
            if i == n // 3:
                under_way.set()

    def worker(w: int) -> None:
        while not finished.is_set():
            claimed = queue.ask(Claim(worker=f"w{w}", limit=8, lease_seconds=10), timeout=60)
            if not claimed:
                continue
            outcomes = queue.ask(CompleteMany(items=[Completion(item=c["id"], token=c["token"], result=c["payload"])
                                                     for c in claimed]), timeout=60)
            with lock:
                completed.extend(o["id"] for o in outcomes if o["status"] == "completed")

    threads = [threading.Thread(target=producer)] + [threading.Thread(target=worker, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    try:
        assert under_way.wait(60)
        os.kill(pid, signal.SIGKILL)
        threads[0].join(90)
        assert len(enqueued) == n
        wait_for(lambda: queue.ask(QueueStats())["done"]["count"] == n, timeout=50,
                 describe=lambda: queue.ask(QueueStats()))
    finally:
        finished.set()
        for t in threads:
            t.join(60)
    results = all_results(queue)
    assert sorted(r["id"] for r in results) == [f"item-{i:04d}" for i in range(n)], "none lost, none twice"
    assert all(r["result"] == int(r["id"][5:]) for r in results)
    assert sorted(completed) == [f"item-{i:04d}" for i in range(n)], "each completion acknowledged exactly once"
    status = queue.admin.status()
    assert status["incarnation"] == 2, "the queue's process was killed and restarted mid-stream"


def test_fail_many_replay_and_items_through_the_agent(system, agent_id):
    queue = system.spawn(WorkQueue, agent_id, init={"policy": {"base": 30.0, "max_attempts": 2}})
    queue.ask(EnqueueMany(items=[NewItem(key=k, payload=k) for k in ("a", "b", "c")]))
    a, b, c = queue.ask(Claim(worker="w", limit=3, lease_seconds=60))
    outcomes = queue.ask(FailMany(items=[Failure(item="a", token=a["token"], reason="poison", retry=False),
                                         Failure(item="b", token=b["token"] + 5, reason="stale"),
                                         Failure(item="c", token=c["token"], reason="flaky")]))
    assert [o["status"] for o in outcomes] == ["failed", "lease_lost", "failed"]
    assert (outcomes[0]["state"], outcomes[2]["state"]) == ("dead", "pending")
    assert queue.ask(GetItem(item="b"))["state"] == "leased", "the stale failure left b alone"

    dead = queue.ask(Items(state="dead"))
    assert [(i["id"], i["reason"]) for i in dead["items"]] == [("a", "poison")] and not dead["more"]
    with pytest.raises(QueueError, match="only dead items"):
        queue.ask(Replay(items=["a", "c"], who="ops"))
    assert queue.ask(GetItem(item="a"))["state"] == "dead", "a refused replay changed nothing"
    answer = queue.ask(Replay(all=True, limit=10, who="ops"))
    assert answer == {"replayed": [{"id": "a", "attempts": 1, "replay_count": 1}], "dead": 0}
    item = queue.ask(GetItem(item="a"))
    assert (item["state"], item["attempts"], item["replays"][0]["by"]) == ("pending", 0, "ops")

    first = queue.ask(Items(limit=2))
    rest = queue.ask(Items(after=first["cursor"], limit=10))
    listed = first["items"] + rest["items"]
    assert first["more"] and not rest["more"]
    assert [(i["id"], i["state"]) for i in listed] == [("a", "pending"), ("c", "pending"), ("b", "leased")]
    assert listed[1]["retry_in"] > 20 and listed[2]["worker"] == "w"
    [again] = queue.ask(Claim(worker="w2", limit=5, lease_seconds=60))
    assert (again["id"], again["token"]) == ("a", 2), "the replayed item is claimable again, its token new"
    assert again["attempt"] == 1, "its attempts counted from the replay on: a stage escalates only on its last"


SESSION_WORKER = """
import json, os, sys, time
from runtime import System
from runtime.queue import Claim, Complete
address, queue_id, name, log, hang_file = sys.argv[1:6]
queue = System(address=address).lookup(queue_id)
with open(log, "a", buffering=1) as out:
    out.write(json.dumps({"event": "up"}) + "\\n")
    while True:
        claimed = queue.ask(Claim(worker=name, limit=1, lease_seconds=4.0), timeout=60)
        if not claimed:
            time.sleep(0.02)  # an idle worker's poll
            continue
        [item] = claimed
        out.write(json.dumps({"event": "claimed", "at": time.time(), "id": item["id"], "token": item["token"],
                              "session": item["session"], "lease_until": item["lease_until"]}) + "\\n")
        if hang_file != "-" and os.path.exists(hang_file):
            out.write(json.dumps({"event": "hanging", "id": item["id"]}) + "\\n")
            time.sleep(600)  # mid-item when the test SIGKILLs it
        time.sleep(0.05)  # the work
        queue.ask(Complete(item=item["id"], token=item["token"], result=name), timeout=60)
"""


def _events(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_each_session_stays_with_one_worker_while_it_lives_and_a_killed_workers_move(system, agent_id, tmp_path):
    queue = system.spawn(WorkQueue, agent_id, init={"affinity_seconds": 2.0})
    address = ray.get_runtime_context().gcs_address
    logs = {w: tmp_path / f"{w}.log" for w in ("w1", "w2")}
    hang = tmp_path / "hang"
    workers = {w: subprocess.Popen([sys.executable, "-c", SESSION_WORKER, address, agent_id, w, str(logs[w]),
                                    str(hang) if w == "w1" else "-"],
                                   cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for w in logs}
    try:
        wait_for(lambda: all(_events(log) for log in logs.values()), timeout=60,
                 describe=lambda: {w: p.poll() for w, p in workers.items()})
        sessions = [f"s{i}" for i in range(8)]
        queue.ask(EnqueueMany(items=[NewItem(key=f"{s}-{n}", payload=n, session=s)
                                     for n in range(8) for s in sessions]))

        def claims(worker: str) -> list[dict]:
            return [e for e in _events(logs[worker]) if e["event"] == "claimed"]

        wait_for(lambda: len(claims("w1")) >= 3 and len(claims("w2")) >= 3, timeout=60)  # both at work
        hang.touch()
        hung = wait_for(lambda: next((e for e in _events(logs["w1"]) if e["event"] == "hanging"), None), timeout=60)
        workers["w1"].send_signal(signal.SIGKILL)
        workers["w1"].wait(30)
        wait_for(lambda: queue.ask(QueueStats())["done"]["count"] == 64, timeout=60,
                 describe=lambda: queue.ask(QueueStats()))
    finally:
        for p in workers.values():
            p.kill()
            p.wait(30)

    by_w1, by_w2 = claims("w1"), claims("w2")
    [hung_claim] = [e for e in by_w1 if e["id"] == hung["id"]]
    owner: dict[str, set[str]] = {}
    for worker, events in (("w1", by_w1), ("w2", by_w2)):
        for e in events:
            if e["at"] < hung_claim["lease_until"]:  # while w1 lived (and for as long as its lease did)
                owner.setdefault(e["session"], set()).add(worker)
    assert {s: len(ws) for s, ws in owner.items()} == dict.fromkeys(owner, 1), owner
    assert {w for ws in owner.values() for w in ws} == {"w1", "w2"}, "both workers had sessions"

    moved = hung_claim["session"]
    later = [e for e in by_w2 if e["session"] == moved]
    assert later and all(e["at"] >= hung_claim["lease_until"] for e in later), "w1's session waited for its lease"
    assert (hung["id"], 2) in {(e["id"], e["token"]) for e in later}, "w2 took the item w1 was killed on"
    results = {r["id"]: r for r in all_results(queue)}
    assert len(results) == 64
    assert results[hung["id"]]["result"] == "w2" and results[hung["id"]]["attempts"] == 2
    assert {results[e["id"]]["result"] for e in later} == {"w2"}
