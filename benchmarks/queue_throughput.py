"""Work queue throughput: items claimed and completed per second through a ``WorkQueue`` agent.

Garrison: N items are enqueued (``EnqueueMany``, timed apart), then workers each claim ``batch``
items (``Claim(limit=batch)``) and complete them (``CompleteMany``) until the queue is empty.  The
rate is N / the workers' time: each item is leased, fenced, completed and numbered in the results,
every change committed to the agent's LMDB state (and journaled) before each reply.

Two kinds of workers, each with 2 and with 4 (``WORKERS``):

- ``worker_processes``: each worker a Ray actor of its own (``Puller``), as a pool's workers are
  (every ``QueueWorker`` is an agent, one process each), looking the queue up through a ``System``.
- ``driver_threads``: each worker a thread of this driver.  They share the driver's GIL: while one
  decodes a claim and builds its completions, the other cannot take its reply and ask again, so
  the queue agent waits on the driver part of each batch (its process used 78-93% of a core in
  such runs, against 100% with worker processes).

Baselines, same run:

- ``bare_lmdb``: the same queue logic (``QueueLogic``) over a bare LMDB environment in this
  process (msgpack values, one write transaction per claim or completion batch, no fsync as the
  agent's async durability): the storage and logic cost without an agent, Ray or messages.
- ``trivial_asks``: the same number of asks (two per batch) to a trivial agent, sequentially: the
  message-passing cost alone.

Each is measured in several rounds, interleaved; reported are the per-round figures, the medians
and the ratios of the medians.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import lmdb
import msgpack
import ray

from ._ray import data_dir, ensure_ray

__all__ = ["run"]

AIM = 20_000
WORKERS = (2, 4)
KINDS = ("worker_processes", "driver_threads")


class _LmdbKV:
    """The queue's key-value interface over a bare LMDB environment: one write transaction per operation."""

    def __init__(self, path: str) -> None:
        self.env = lmdb.open(path, map_size=1 << 30, sync=False, metasync=False)
        self.txn: Any = None

    def begin(self) -> None:
        self.txn = self.env.begin(write=True)

    def commit(self) -> None:
        self.txn.commit()
        self.txn = None

    def get(self, key: str, default: Any = None) -> Any:
        raw = self.txn.get(key.encode())
        return default if raw is None else msgpack.unpackb(raw, raw=False, strict_map_key=False)

    def put(self, key: str, value: Any) -> None:
        self.txn.put(key.encode(), msgpack.packb(value, use_bin_type=True))

    def delete(self, key: str) -> bool:
        return self.txn.delete(key.encode())

    def scan(self, prefix: str = "") -> Iterator[tuple[str, Any]]:
        p = prefix.encode()
        cur = self.txn.cursor()
        out = []
        if cur.set_range(p):
            for k, v in cur:
                if not k.startswith(p):
                    break
                out.append((k.decode(), msgpack.unpackb(v, raw=False, strict_map_key=False)))
        return iter(out)


def _items(n: int, tag: str) -> list[dict[str, Any]]:
    return [{"key": f"{tag}-{i}", "payload": {"n": i}, "priority": i % 3} for i in range(n)]


def bare_lmdb_rate(n: int, batch: int) -> float:
    """Items/s of the same claim + complete loop over the queue logic on a bare LMDB environment."""
    from runtime._queue_logic import QueueLogic

    with tempfile.TemporaryDirectory(prefix="garrison-bench-lmdb-") as path:
        kv = _LmdbKV(path)
        q = QueueLogic(kv, time.time)
        items = _items(n, "b")
        for start in range(0, n, 1000):
            kv.begin()
            q.enqueue(items[start:start + 1000])
            kv.commit()
        t0 = time.perf_counter()
        done = 0
        while True:
            kv.begin()
            claimed = q.claim("bench", limit=batch, lease_seconds=60)
            kv.commit()
            if not claimed:
                break
            kv.begin()
            q.complete_many((c["id"], c["token"], {"ok": True}) for c in claimed)
            kv.commit()
            done += len(claimed)
        elapsed = time.perf_counter() - t0
        kv.env.close()
    assert done == n
    return n / elapsed


def _pull(queue: Any, worker: str, batch: int) -> int:
    """One worker's loop: claim ``batch``, complete what it got, until the queue is empty; items done."""
    from runtime.queue import Claim, CompleteMany, Completion

    done = 0
    while True:
        claimed = queue.ask(Claim(worker=worker, limit=batch, lease_seconds=60), timeout=120)
        if not claimed:
            return done
        queue.ask(CompleteMany(items=[Completion(item=c["id"], token=c["token"], result={"ok": True})
                                      for c in claimed]), timeout=120)
        done += len(claimed)


@ray.remote(num_cpus=0)
class Puller:
    """A worker in a process of its own: the queue looked up as a user's worker would."""

    def __init__(self, data: str, queue_id: str) -> None:
        from runtime import System

        self.queue = System(data).lookup(queue_id)

    def ready(self) -> bool:
        return True

    def pull(self, worker: str, batch: int) -> int:
        return _pull(self.queue, worker, batch)


def queue_rate(system: Any, n: int, batch: int, workers: int = 2, kind: str = "worker_processes") -> dict[str, float]:
    """Items/s claimed and completed through a new ``WorkQueue`` agent by ``workers`` workers of ``kind``.

    Each worker loops (``_pull``): ``Claim(limit=batch)``, then ``CompleteMany`` of what it got,
    until the queue is empty.  The agent handles one message at a time; the workers' own part
    (decoding claims, building completions) overlaps it.  Worker processes are started and ready
    before the clock starts.
    """
    from runtime.queue import EnqueueMany, NewItem, QueueStats, WorkQueue

    queue = system.spawn(WorkQueue, f"bench-queue-{uuid.uuid4().hex[:6]}")
    items = _items(n, "q")
    t0 = time.perf_counter()
    for start in range(0, n, 2000):
        queue.ask(EnqueueMany(items=[NewItem(**i) for i in items[start:start + 2000]]), timeout=120)
    enqueue_seconds = time.perf_counter() - t0
    names = [f"bench-{w}" for w in range(workers)]
    if kind == "worker_processes":
        pullers = [Puller.remote(str(system.data_dir), queue.agent_id) for _ in names]
        ray.get([p.ready.remote() for p in pullers])
        t0 = time.perf_counter()
        done = ray.get([p.pull.remote(name, batch) for p, name in zip(pullers, names, strict=True)])
        elapsed = time.perf_counter() - t0
        for p in pullers:
            ray.kill(p)
    else:
        done = [0] * workers

        def work(w: int) -> None:
            done[w] = _pull(queue, names[w], batch)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
    stats = queue.ask(QueueStats())
    system.stop(queue.agent_id)
    assert sum(done) == n and stats["done"]["count"] == n, (done, stats)
    return {"items_per_s": n / elapsed, "enqueue_per_s": n / enqueue_seconds}


def trivial_ask_rate(system: Any, asks: int) -> float:
    """Asks/s to a trivial agent (an echo), sequentially from the driver."""
    from ._agents import Counter, Echo

    ref = system.spawn(Counter, f"bench-echo-{uuid.uuid4().hex[:6]}")
    for _ in range(20):
        ref.ask(Echo(payload="x"))
    t0 = time.perf_counter()
    for _ in range(asks):
        ref.ask(Echo(payload="x"))
    rate = asks / (time.perf_counter() - t0)
    system.stop(ref.agent_id)
    return rate


def run(quick: bool = False) -> dict[str, Any]:
    ensure_ray()
    from runtime import System

    n = 20_000 if quick else 100_000
    batch = 1000
    rounds = 1 if quick else 3
    queue: dict[str, dict[int, list[float]]] = {kind: {w: [] for w in WORKERS} for kind in KINDS}
    enqueue, bare, asks = [], [], []
    with data_dir() as path, System(path) as system:
        for _ in range(rounds):
            bare.append(bare_lmdb_rate(n, batch))
            for kind in KINDS:
                for workers in WORKERS:
                    measured = queue_rate(system, n, batch, workers, kind)
                    queue[kind][workers].append(measured["items_per_s"])
                    enqueue.append(measured["enqueue_per_s"])
            asks.append(trivial_ask_rate(system, 2 * (n // batch)))
    return report(n, batch, queue, enqueue, bare, asks)


def report(n: int, batch: int, queue: dict[str, dict[int, list[float]]], enqueue: list[float], bare: list[float],
           asks: list[float]) -> dict[str, Any]:
    """The scenario's result from each round's rates (per second), the lists aligned by round;
    ``queue``: the rates by the kind of worker, then by the number of workers."""
    b, a = statistics.median(bare), statistics.median(asks)
    ask_seconds = 2 / a  # the two asks each batch costs, message passing alone
    by_kind: dict[str, dict[str, Any]] = {}
    for kind, by_workers in queue.items():
        for workers, rates in by_workers.items():
            q = statistics.median(rates)
            by_kind.setdefault(kind, {})[str(workers)] = {
                "queue_items_per_s": [round(r) for r in rates],
                "queue_items_per_s_median": round(q),
                "ratio_queue_to_bare_lmdb": round(q / b, 2),
                "message_share_of_batch_time": round(ask_seconds / (batch / q), 3),
                "meets_aim": q >= AIM,
            }
    return {
        "items_per_round": n,
        "batch": batch,
        **by_kind,
        "enqueue_items_per_s_median": round(statistics.median(enqueue)),
        "bare_lmdb_items_per_s": [round(r) for r in bare],
        "bare_lmdb_items_per_s_median": round(b),
        "trivial_asks_per_s_median": round(a),
        "aim": {"queue_items_per_s": AIM},
    }
