"""The observer tap's cost to a watched agent: one ``emit`` on the agent's thread.

Baseline, same run: a bare ``deque.append`` under a lock (what an emit does at its core), so the
ratio says what the event dict, the clock and the trace id add.  The tap's thread sends to a
no-op, so the figure is the agent's side only (the observer's is off its thread by design).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from runtime._observer import ObserverTap

TRACE = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"


def _bare(n: int) -> float:
    q: deque[dict[str, Any]] = deque()
    lock = threading.Lock()
    t0 = time.perf_counter()
    for i in range(n):
        with lock:
            q.append({"i": i})
    return time.perf_counter() - t0


def _tap(n: int) -> tuple[float, dict[str, int]]:
    tap = ObserverTap("bench", lambda events, dropped: None, capacity=n + 1, batch=5000, interval=0.01)
    body = {"id": "01a2382bcf9a0000e10db60eb730d7c2", "type": "bench.msg@1", "sender": "a", "ok": True,
            "seconds": 0.0001}
    t0 = time.perf_counter()
    for _ in range(n):
        tap.emit("message", TRACE, body)
    took = time.perf_counter() - t0
    tap.close()
    return took, tap.status()


def run(quick: bool = False) -> dict[str, Any]:
    n = 20_000 if quick else 200_000
    bare = min(_bare(n) for _ in range(3))
    runs = [_tap(n) for _ in range(3)]
    tap = min(t for t, _ in runs)
    return {
        "events": n,
        "emit_us": round(tap / n * 1e6, 3),
        "bare_locked_append_us": round(bare / n * 1e6, 3),
        "emit_over_bare": round(tap / bare, 1),
        "dropped": runs[0][1]["dropped"],
        "aim": "a microsecond or so per event on the agent's thread; never a wait",
    }
