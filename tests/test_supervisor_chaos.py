"""Chaos: effectively-once streams to five agents while a random agent is SIGKILLed every 2 s.

The issue's acceptance run, as stated: 60 s by default (``GARRISON_CHAOS_SECONDS``
shortens it for a quick local run).  Senders and receivers are both victims:
the supervisor restarts each, the receiver restores its state and the sender
resumes its outbox, and the per-pair sequence numbers make every effect
happen once.  The final states are compared with the ones the same stream
gives without faults (:func:`_fault_free`): every item once, in order, and
every ``Emit`` counted once.
"""

from __future__ import annotations

import os
import pprint
import random
import signal
import threading
import time
import uuid

import pytest

from protocols import make_envelope
from runtime import System
from supervisors import BackoffPolicy, ChildSpec, SupervisorFlags, SupervisorSpec, start_supervisor
from tests._quiet import Quiet
from tests.agents import Emit, GetItems, Producer, Report, Sink

pytestmark = pytest.mark.ray

SECONDS = float(os.environ.get("GARRISON_CHAOS_SECONDS", "60"))
#: Seconds an ``Emit`` (and so each item it sends) may take end to end: longer than the test may run
#: (its timeout), because this test is about exactly-once, not deadlines (``test_deadlines``).  Beside
#: a CPU hog on 2 cores the kills (one every 2 s) outpace cold restarts (about 10 s each, one at a
#: time per supervisor), so a sink can wait minutes for its turn; with 180 s, 1,150 items expired
#: there, every one of them dead-lettered at its sink as ``expired`` (the runtime did as documented).
EMIT_DEADLINE = 900.0


@pytest.mark.timeout(900)  # quiet: about 70 s; loaded, the kills take up to 5 x ``seconds`` to land
@pytest.mark.parametrize(
    "standby, seconds",
    [(0, SECONDS), (1, min(SECONDS, 20.0))],
    ids=["cold-restarts", "warm-standby"],
)
def test_every_message_takes_effect_exactly_once_while_random_agents_are_sigkilled(
        ray_session, tmp_path, standby, seconds):
    """Cold restarts for the acceptance's full length; then a shorter run where warm spares
    adopt the victims (outboxes and refs then follow agents to actors not named after them)."""
    data = tmp_path / "data"
    data.mkdir()
    tag = uuid.uuid4().hex[:4]
    sinks = [f"chaos-sink{i}-{tag}" for i in range(5)]
    prod = f"chaos-prod-{tag}"
    sender = {"retry_backoff": 0.05, "retry_backoff_max": 0.5, "max_batch": 50, "window": 100, "max_attempts": 0}
    spec = SupervisorSpec(
        id=f"chaos-{tag}",
        flags=SupervisorFlags(intensity=100, period=10, standby=standby,
                              backoff=BackoffPolicy(initial=0.0, max_delay=0.0, jitter=0)),
        children=[*(ChildSpec(id=s, agent=Sink, init={"delay": 0.001}) for s in sinks),
                  ChildSpec(id=prod, agent=Producer, config=sender)],
    )
    sup = start_supervisor(spec, data_dir=data)
    rng = random.Random(2026)
    per_round, sent = 50, {s: 0 for s in sinks}
    emits: list[Emit] = []
    kills: list[str] = []
    stop = threading.Event()

    def killer() -> None:  # every 2 s, a random agent that is up (receiver or sender) is SIGKILLed
        krng = random.Random(7)
        while not stop.wait(2.0):
            try:
                up = sorted((c["id"], c["pid"]) for c in sup.which_children() if c["pid"])
                if up:
                    victim, pid = krng.choice(up)
                    os.kill(pid, signal.SIGKILL)
                    kills.append(victim)
            except Exception:
                pass

    thread = threading.Thread(target=killer, daemon=True)
    try:
        thread.start()
        # A kill lands only on a child that is up, and the supervisor restarts one child at a
        # time: kills cannot land faster than restarts finish.  Beside a CPU hog on 2 cores a cold
        # restart took about 10 s (28 kills in 300 s), so the stream runs past ``seconds`` until
        # the kills it promises (one per 2 s) have landed, within a bound of 5 x ``seconds``.
        wanted = max(1, int(seconds / 2) - 1)
        end = time.monotonic() + seconds
        cap = end + 4 * seconds
        while time.monotonic() < end or (len(kills) < wanted and time.monotonic() < cap):
            sink = rng.choice(sinks)
            emit = Emit(to=sink, start=sent[sink], count=per_round)
            _emit_exactly_once(data, sup, prod, emit, key=f"{sink}/{sent[sink]}".encode())
            emits.append(emit)
            sent[sink] += per_round
            # A steady stream, well under what the receivers handle.  The items inherit the
            # Emit's deadline (EMIT_DEADLINE): a backlog that outlives it would (rightly) expire.
            time.sleep(0.2)
        stop.set()
        thread.join()
        assert len(kills) >= wanted, f"{len(kills)} kills landed in {5 * seconds:.0f}s"
        assert len(set(kills)) >= 3, f"several agents were victims: {kills}"
        expected = _fault_free(emits, sinks, prod)
        deadline = time.monotonic() + 180
        states: dict = {}
        while time.monotonic() < deadline:
            try:
                states = _final_states(data, sinks, prod)
            except Exception:
                states = {}
            if states == expected:
                break
            time.sleep(0.5)
        if states != expected:  # pytest.fail: the whole diagnostic, untruncated
            pytest.fail(pprint.pformat({
                "diff": _diff(states, expected), "dead letters": _dead_letters(data, [*sinks, prod]),
                "producer": _status(data, prod), "kills": kills, "children": sup.which_children()}))
        warm = [e for e in sup.events() if e["kind"] == "started" and e["details"].get("warm")]
        assert bool(warm) == bool(standby), f"{len(warm)} warm starts with standby={standby}"
        assert sup.status()["state"] == "running"
    finally:
        stop.set()
        sup.stop()


def _fault_free(emits: list[Emit], sinks: list[str], prod: str) -> dict:
    """The final states the stream of ``emits`` gives with no faults: Producer's and Sink's handlers, replayed."""
    items: dict[str, list[int]] = {s: [] for s in sinks}
    for emit in emits:
        items[emit.to].extend(range(emit.start, emit.start + emit.count))
    states: dict = {s: {"count": len(ns), "dups": 0, "out_of_order": 0, "items": ns} for s, ns in items.items()}
    states[prod] = {"emitted": sum(e.count for e in emits)}
    return states


def _final_states(data, sinks: list[str], prod: str) -> dict:
    system = System(data)
    states: dict = {}
    for s in sinks:
        ref = system.lookup(s)
        states[s] = {**ref.ask(Report(), timeout=10), "items": ref.ask(GetItems(), timeout=10)}
    states[prod] = system.lookup(prod).ask(Report(), timeout=10)
    return states


def _dead_letters(data, agents: list[str]) -> dict:
    """Per agent, how many dead letters of each reason (an item expired, refused...): where a missing one went."""
    out: dict = {}
    for s in agents:
        try:
            letters = System(data).lookup(s).admin.dead_letters(limit=10_000)
        except Exception as exc:  # noqa: BLE001 - a diagnostic: say why it is missing
            out[s] = repr(exc)
            continue
        out[s] = {r: sum(1 for d in letters if d["reason"] == r) for r in {d["reason"] for d in letters}}
    return out


def _status(data, agent: str) -> dict:
    """An agent's status (its outbox depth, lifecycle...), or why it could not be read."""
    try:
        return System(data).lookup(agent).admin.status()
    except Exception as exc:  # noqa: BLE001 - a diagnostic: say why it is missing
        return {"error": repr(exc)}


def _diff(states: dict, expected: dict) -> dict:
    """What differs, without the item lists (which can be long)."""
    out = {}
    for key, want in expected.items():
        got = states.get(key)
        if got != want:
            out[key] = {"got": {k: (len(v) if isinstance(v, list) else v) for k, v in (got or {}).items()},
                        "want": {k: (len(v) if isinstance(v, list) else v) for k, v in want.items()}}
    return out


def _emit_exactly_once(data, sup, prod, msg, *, key: bytes) -> None:
    """Retry with one idempotency key until acknowledged: the producer may be down or restarting.

    A ref's ask follows a restart within its deadline; past that (the producer was down
    longer), a fresh lookup finds the new incarnation, or fails while none is registered.
    The key makes a retry after a lost reply return the first reply instead of emitting twice.
    Gives up after 60 s without a supervisor event: beside a CPU hog, restarts queue behind
    one another (one kill every 2 s, about 10 s a cold restart) but each one is an event.
    """
    quiet = Quiet(sup, 60)
    while True:
        env = make_envelope(msg, prod, sender="chaos-driver", deadline=time.time() + EMIT_DEADLINE,
                            idempotency_key=key)
        env.reply_to = "chaos-driver"
        try:
            System(data).lookup(prod).ask_envelope(env)
            return
        except Exception:
            if quiet.passed():
                raise
            time.sleep(0.2)
