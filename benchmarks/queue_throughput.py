"""Work queue throughput: items claimed and completed per second through a ``WorkQueue`` agent.

Garrison: N items are enqueued (``EnqueueMany``, timed apart), then ``workers`` threads of the
driver each claim ``batch`` items (``Claim(limit=batch)``) and complete them (``CompleteMany``)
until the queue is empty.  The rate is N / the workers' time: each item is leased, fenced, completed and numbered in the
results, every change committed to the agent's LMDB state (and journaled) before each reply.

Measured with 2 workers and with 4 (``WORKERS``).  Between two of its requests a worker waits
out an ask's round trip and decodes and builds a thousand items; when 4 workers give no more than
2, that is not what bounds the rate: the queue agent is.

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

from ._ray import data_dir, ensure_ray

__all__ = ["run"]

AIM = 20_000
WORKERS = (2, 4)


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


def queue_rate(system: Any, n: int, batch: int, workers: int = 2) -> dict[str, float]:
    """Items/s claimed and completed through a new ``WorkQueue`` agent by ``workers`` driver threads.

    Each worker loops: ``Claim(limit=batch)``, then ``CompleteMany`` of what it got, until the queue
    is empty.  With two, one worker's driver-side work (building and decoding messages) overlaps the
    agent's handling of the other's; the agent still handles one message at a time.
    """
    from runtime.queue import Claim, CompleteMany, Completion, EnqueueMany, NewItem, QueueStats, WorkQueue

    queue = system.spawn(WorkQueue, f"bench-queue-{uuid.uuid4().hex[:6]}")
    items = _items(n, "q")
    t0 = time.perf_counter()
    for start in range(0, n, 2000):
        queue.ask(EnqueueMany(items=[NewItem(**i) for i in items[start:start + 2000]]), timeout=120)
    enqueue_seconds = time.perf_counter() - t0
    done = [0] * workers

    def work(w: int) -> None:
        while True:
            claimed = queue.ask(Claim(worker=f"bench-{w}", limit=batch, lease_seconds=60), timeout=120)
            if not claimed:
                return
            queue.ask(CompleteMany(items=[Completion(item=c["id"], token=c["token"], result={"ok": True})
                                          for c in claimed]), timeout=120)
            done[w] += len(claimed)

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
    queue: dict[int, list[float]] = {w: [] for w in WORKERS}
    enqueue, bare, asks = [], [], []
    with data_dir() as path, System(path) as system:
        for _ in range(rounds):
            bare.append(bare_lmdb_rate(n, batch))
            for workers in WORKERS:
                measured = queue_rate(system, n, batch, workers)
                queue[workers].append(measured["items_per_s"])
                enqueue.append(measured["enqueue_per_s"])
            asks.append(trivial_ask_rate(system, 2 * (n // batch)))
    return report(n, batch, queue, enqueue, bare, asks)


def report(n: int, batch: int, queue: dict[int, list[float]], enqueue: list[float], bare: list[float],
           asks: list[float]) -> dict[str, Any]:
    """The scenario's result from each round's rates (per second), the lists aligned by round;
    ``queue``: the rates by the number of worker threads."""
    b, a = statistics.median(bare), statistics.median(asks)
    ask_seconds = 2 / a  # the two asks each batch costs, message passing alone
    by_workers = {}
    for workers, rates in queue.items():
        q = statistics.median(rates)
        by_workers[str(workers)] = {
            "queue_items_per_s": [round(r) for r in rates],
            "queue_items_per_s_median": round(q),
            "ratio_queue_to_bare_lmdb": round(q / b, 2),
            "message_share_of_batch_time": round(ask_seconds / (batch / q), 3),
            "meets_aim": q >= AIM,
        }
    return {
        "items_per_round": n,
        "batch": batch,
        "workers": by_workers,
        "enqueue_items_per_s_median": round(statistics.median(enqueue)),
        "bare_lmdb_items_per_s": [round(r) for r in bare],
        "bare_lmdb_items_per_s_median": round(b),
        "trivial_asks_per_s_median": round(a),
        "aim": {"queue_items_per_s": AIM},
    }
