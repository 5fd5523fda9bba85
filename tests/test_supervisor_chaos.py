"""Chaos: effectively-once streams to five agents while a random agent is SIGKILLed every 2 s.

The issue's acceptance run is 60 s; the default here is short to keep the
suite fast.  ``GARRISON_CHAOS_SECONDS=60 pytest tests/test_supervisor_chaos.py``
runs the full one.  Senders and receivers are both victims: the supervisor
restarts each, the receiver restores its state and the sender resumes its
outbox, and the per-pair sequence numbers make every effect happen once.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import uuid

import pytest

from protocols import make_envelope
from runtime import System
from supervisors import BackoffPolicy, ChildSpec, SupervisorFlags, SupervisorSpec, start_supervisor
from tests.agents import Emit, Producer, Report, Sink

pytestmark = pytest.mark.ray

SECONDS = float(os.environ.get("GARRISON_CHAOS_SECONDS", "8"))


def test_every_message_takes_effect_exactly_once_while_random_agents_are_sigkilled(ray_session, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    tag = uuid.uuid4().hex[:4]
    sinks = [f"chaos-sink{i}-{tag}" for i in range(5)]
    prod = f"chaos-prod-{tag}"
    sender = {"retry_backoff": 0.05, "retry_backoff_max": 0.5, "max_batch": 50, "window": 100, "max_attempts": 0}
    spec = SupervisorSpec(
        id=f"chaos-{tag}",
        flags=SupervisorFlags(intensity=100, period=10, backoff=BackoffPolicy(initial=0.0, max_delay=0.0, jitter=0)),
        children=[*(ChildSpec(id=s, agent=Sink, init={"delay": 0.001}) for s in sinks),
                  ChildSpec(id=prod, agent=Producer, config=sender)],
    )
    sup = start_supervisor(spec, data_dir=data)
    rng = random.Random(2026)
    per_round, sent = 50, {s: 0 for s in sinks}
    kills: list[str] = []
    stop = threading.Event()

    def killer() -> None:  # every 2 s, a random agent (receiver or sender) is SIGKILLed
        krng = random.Random(7)
        while not stop.wait(2.0):
            victim = krng.choice([*sinks, prod])
            try:
                pid = sup.child(victim)["pid"]
                if pid:
                    os.kill(pid, signal.SIGKILL)
                    kills.append(victim)
            except Exception:
                pass

    thread = threading.Thread(target=killer, daemon=True)
    try:
        thread.start()
        end = time.monotonic() + SECONDS
        while time.monotonic() < end:
            sink = rng.choice(sinks)
            _emit_exactly_once(data, prod, Emit(to=sink, start=sent[sink], count=per_round),
                               key=f"{sink}/{sent[sink]}".encode())
            sent[sink] += per_round
            # A steady stream, well under what the receivers handle: the items inherit the
            # Emit's 10 s deadline, and a backlog that outlives it would (rightly) expire.
            time.sleep(0.2)
        stop.set()
        thread.join()
        assert len(kills) >= max(1, int(SECONDS / 2) - 1)
        expected = {s: {"count": n, "dups": 0, "out_of_order": 0} for s, n in sent.items()}
        deadline = time.monotonic() + 60
        reports: dict = {}
        while time.monotonic() < deadline:
            try:
                reports = {s: System(data).lookup(s).ask(Report(), timeout=10) for s in sinks}
            except Exception:
                reports = {}
            if reports == expected:
                break
            time.sleep(0.5)
        assert reports == expected, (kills, sup.which_children())
        assert sup.status()["state"] == "running"
    finally:
        stop.set()
        sup.stop()


def _emit_exactly_once(data, prod, msg, *, key: bytes) -> None:
    """Retry with one idempotency key until acknowledged: the producer may be down or restarting.

    A fresh lookup per attempt: an AgentRef does not follow a supervisor restart (runtime gap).
    The key makes a retry after a lost reply return the first reply instead of emitting twice.
    """
    deadline = time.monotonic() + 60
    while True:
        env = make_envelope(msg, prod, sender="chaos-driver", deadline=time.time() + 10, idempotency_key=key)
        env.reply_to = "chaos-driver"
        try:
            System(data).lookup(prod).ask_envelope(env)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
