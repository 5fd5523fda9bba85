"""Hang detection time against the configured probe budget, and busy-but-healthy controls.

A supervised agent with a :class:`supervisors.ProbePolicy` is made to hang,
and the time from the hang's start (written by the handler itself, just
before it hangs) to the supervisor's ``suspect`` event is measured, over
several runs; then to ``restarted`` (serving again).  Two kinds of hang, one
per signal the supervisor judges (see ``supervisors/_health.py``):

* ``stuck_handler``: a handler loops forever in Python.  The process still
  answers probes (they run off the handling thread), and the answer says how
  long the handler has run: suspect once past ``handler_limit``.
  Budget: ``handler_limit + interval`` (the first probe after the limit).
* ``stuck_process``: a handler is stuck in C holding the GIL (a regular
  expression backtracking without end), so the whole process answers
  nothing: suspect after ``missed_limit`` probes in a row time out.
  Budget: ``missed_limit * interval + timeout`` (probes go out on a fixed
  cadence; the K-th one sent after the hang times out).

Controls, with the same policies: an agent doing legitimate long work just
under ``handler_limit``, back to back, and one kept CPU-busy with short
handlers; neither may be flagged.  The baseline is the budget itself: the
ratio is detection time / budget (at most 1 means within budget).
"""

from __future__ import annotations

import os
import re
import statistics
import tempfile
import time
import uuid
from typing import Any

from protocols import Delivery, Message
from runtime import Agent, handler

from ._ray import data_dir, ensure_ray

__all__ = ["run"]

INTERVAL, TIMEOUT, MISSED, LIMIT = 0.25, 0.5, 3, 1.0


class Hang(Message, name="bench.hang", delivery=Delivery.AT_MOST_ONCE):
    """Write the time to ``mark``, then never return: in Python (``gil=False``) or in C holding the GIL."""

    mark: str
    gil: bool = False


class Busy(Message, name="bench.busy", delivery=Delivery.AT_MOST_ONCE):
    """Legitimate work: burn the CPU for ``seconds``, then count it."""

    seconds: float


class Alive(Message, name="bench.alive"):
    pass


class Hanger(Agent):
    @handler
    def hang(self, msg: Hang) -> None:
        with open(msg.mark, "w") as f:
            f.write(repr(time.time()))
        if msg.gil:  # catastrophic backtracking: CPython's regex engine never releases the GIL
            re.match(r"(a+)+$", "a" * 64 + "b")
        n = 0
        while True:
            n += 1

    @handler
    def busy(self, msg: Busy) -> None:
        end = time.monotonic() + msg.seconds
        while time.monotonic() < end:
            pass
        self.state.increment("busy")

    @handler
    def alive(self, msg: Alive) -> int:
        return self.state.get("busy", 0)


def _start(path: str, policy: Any) -> tuple[Any, str]:
    from supervisors import BackoffPolicy, ChildSpec, SupervisorFlags, SupervisorSpec, start_supervisor

    child = f"bench-hang-{uuid.uuid4().hex[:4]}"
    spec = SupervisorSpec(
        id=f"bench-hs-{uuid.uuid4().hex[:4]}",
        flags=SupervisorFlags(intensity=100, period=1, backoff=BackoffPolicy(initial=0, max_delay=0, jitter=0)),
        children=[ChildSpec(id=child, agent=Hanger, probe=policy)],
    )
    return start_supervisor(spec, data_dir=path), child


def _event_after(sup: Any, kind: str, after: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in sup.events(after):
            if event["kind"] == kind:
                return event
        time.sleep(0.02)
    raise TimeoutError(f"no {kind!r} event within {timeout}s: {sup.events(after)}")


def _hang_runs(path: str, policy: Any, *, gil: bool, runs: int) -> list[dict[str, float]]:
    from runtime import System

    sup, child = _start(path, policy)
    out = []
    try:
        system = System(path)
        for _ in range(runs):
            ref = system.lookup(child)
            ref.ask(Alive(), timeout=30)  # serving
            after = len(sup.events())
            fd, mark = tempfile.mkstemp(prefix="garrison-hang-")
            os.close(fd)
            os.unlink(mark)
            ref.tell(Hang(mark=mark, gil=gil))
            suspect = _event_after(sup, "suspect", after, timeout=60)
            restarted = _event_after(sup, "restarted", after, timeout=60)
            with open(mark) as f:
                started = float(f.read())
            os.unlink(mark)
            out.append({"detect_s": suspect["time"] - started, "restart_s": restarted["time"] - started,
                        "why": suspect["why"]})
    finally:
        sup.stop()
    return out


def _control(path: str, policy: Any, *, seconds: float, work: float) -> dict[str, Any]:
    """Busy but healthy for ``seconds``: handlers of ``work`` seconds each, back to back."""
    from runtime import System

    sup, child = _start(path, policy)
    try:
        ref = System(path).lookup(child)
        pid = sup.child(child)["pid"]
        count = max(1, int(seconds / work))
        for _ in range(count):
            ref.tell(Busy(seconds=work))
        handled = ref.ask(Alive(), timeout=seconds * 3 + 30)  # queued behind all of them
        suspects = [e for e in sup.events() if e["kind"] == "suspect"]
        c = sup.child(child)
        return {"handlers": count, "handler_s": work, "busy_s": round(count * work, 2), "handled": handled,
                "suspects": len(suspects), "restarts": c["restarts"], "same_pid": c["pid"] == pid,
                "flagged": bool(suspects) or c["restarts"] > 0 or c["pid"] != pid}
    finally:
        sup.stop()


def _summary(runs: list[dict[str, Any]], budget: float) -> dict[str, Any]:
    detect = [r["detect_s"] for r in runs]
    restart = [r["restart_s"] for r in runs]
    return {
        "runs": len(runs),
        "budget_s": round(budget, 3),
        "detect_s": [round(t, 3) for t in detect],
        "detect_median_s": round(statistics.median(detect), 3),
        "detect_max_s": round(max(detect), 3),
        "median_over_budget": round(statistics.median(detect) / budget, 2),
        "max_over_budget": round(max(detect) / budget, 2),
        "within_budget": max(detect) <= budget,
        "serving_again_median_s": round(statistics.median(restart), 3),
        "why": runs[0]["why"],
    }


def run(quick: bool = False) -> dict[str, Any]:
    ensure_ray()
    from supervisors import ProbePolicy

    runs = 2 if quick else 7
    # One policy per signal, so each hang is caught by the signal it is about.
    by_limit = ProbePolicy(interval=INTERVAL, timeout=TIMEOUT, missed_limit=MISSED, handler_limit=LIMIT)
    by_missed = ProbePolicy(interval=INTERVAL, timeout=TIMEOUT, missed_limit=MISSED)
    with data_dir() as path:
        handler_runs = _hang_runs(path, by_limit, gil=False, runs=runs)
        process_runs = _hang_runs(path, by_missed, gil=True, runs=runs)
        long_work = _control(path, by_limit, seconds=3.0 if quick else 8.0, work=LIMIT * 0.8)
        short_work = _control(path, by_missed, seconds=3.0 if quick else 8.0, work=0.05)
    return {
        "policy": {"interval_s": INTERVAL, "timeout_s": TIMEOUT, "missed_limit": MISSED, "handler_limit_s": LIMIT},
        "stuck_handler": _summary(handler_runs, LIMIT + INTERVAL),
        "stuck_process": _summary(process_runs, MISSED * INTERVAL + TIMEOUT),
        "control_long_work_under_limit": long_work,
        "control_cpu_busy_short_handlers": short_work,
    }
