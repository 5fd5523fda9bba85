"""A driver's tells across a SIGKILL and a supervisor restart, on the shared local Ray.

Held while the agent is down, delivered in order to the new incarnation,
each effect once; past the ref's bound, dead letters with reason ``overflow``
in the agent's store (see ``runtime/_holding.py``).
"""

from __future__ import annotations

import os
import pprint
import signal
import time

import pytest

from protocols import decode_envelope
from runtime import GarrisonError, System
from supervisors import BackoffPolicy, ChildSpec, SupervisorFlags, SupervisorSpec, start_supervisor
from tests.agents import GetItems, Item, Report, Sink
from tests.sup_agents import FAST, uid

pytestmark = pytest.mark.ray


def _sink_under_supervisor(data_dir, refs, backoff=FAST):
    sid = uid("sink")
    spec = SupervisorSpec(id=uid("sup"), flags=SupervisorFlags(intensity=5, period=60, backoff=backoff),
                          children=[ChildSpec(id=sid, agent=Sink, init={"delay": 0.001})])
    sup = start_supervisor(spec, data_dir=data_dir)
    refs.append(sup)
    return sup, sid


def test_tells_across_a_sigkill_and_supervisor_restart_take_effect_once_each_in_order(data_dir, refs):
    sup, sid = _sink_under_supervisor(data_dir, refs)
    ref = System(data_dir).lookup(sid)
    pid = sup.child(sid)["pid"]
    told, killed_at, most_held = 0, None, 0

    def tell() -> None:
        nonlocal told, most_held
        ref.tell(Item(n=told))
        told += 1
        most_held = max(most_held, ref.tell_stats()["held"])
        time.sleep(0.002)  # pacing, so that some tells meet the agent down

    # Keep telling: before the kill, while the agent is down and being restarted, and after. While
    # it is down, at most WHILE_DOWN tells: on a loaded machine the restart can take seconds, and
    # telling on at this pace would pass the ref's hold limit (1,000), which is the overflow test's
    # subject, not this one's.
    WHILE_DOWN = 500
    while told < 300:
        tell()
    os.kill(pid, signal.SIGKILL)
    killed_at = told
    while sup.child(sid)["restarts"] < 1 and told < killed_at + WHILE_DOWN:
        tell()
    sup.wait_until(lambda s: s.child(sid)["restarts"] >= 1, timeout=90, interval=0.02)
    for _ in range(300):
        tell()
    try:
        ref.flush(timeout=60)
        stats = ref.tell_stats()
        assert most_held > 0 and stats["resent"] > 0, "tells were held and failed ones went again"
        assert (stats["held"], stats["overflowed"], stats["mode"]) == (0, 0, "direct")
        assert sup.child(sid)["pid"] != pid
        assert ref.ask(Report(), timeout=30) == {"count": told, "dups": 0, "out_of_order": 0}
        assert ref.ask(GetItems(), timeout=30) == list(range(told))
    except (AssertionError, GarrisonError) as exc:
        # It failed once in a full run beside two CPU hogs and passed alone beside them: say
        # everything (pytest.fail is not truncated), for whoever meets it next.
        pytest.fail(pprint.pformat({"failed": f"{type(exc).__name__}: {exc}", "told": told,
                                    "killed_at": killed_at, "most_held": most_held,
                                    "stats": ref.tell_stats(), "children": sup.which_children(),
                                    "events": sup.events()[-20:]}))


def test_tells_past_the_bound_while_the_agent_is_down_become_overflow_dead_letters(data_dir, refs):
    # The supervisor waits 3 s before restarting: the agent is away that long.
    slow = BackoffPolicy(initial=3.0, max_delay=3.0, jitter=0.0)
    sup, sid = _sink_under_supervisor(data_dir, refs, backoff=slow)
    ref = System(data_dir).lookup(sid)
    ref.max_held = 20
    ref.tell(Item(n=0))
    ref.flush(timeout=30)
    pid = sup.child(sid)["pid"]
    os.kill(pid, signal.SIGKILL)
    sup.wait_until(lambda s: s.child(sid)["state"] == "restarting", timeout=30, interval=0.02)
    t0 = time.monotonic()
    for n in range(1, 51):  # 50 tells to an agent that is down: 20 held, 30 overflow
        ref.tell(Item(n=n))
    assert time.monotonic() - t0 < 1.0, "telling an agent that is down does not block"
    assert sup.child(sid)["pid"] is None, "all 50 were told while it was down"
    stats = ref.tell_stats()
    assert (stats["held"], stats["overflowed"]) == (20, 30), stats
    ref.flush(timeout=60)
    assert ref.ask(GetItems(), timeout=30) == list(range(21)), "the oldest 20 were delivered, in order"
    letters = ref.admin.dead_letters(reason="overflow", limit=100)
    assert sorted(decode_envelope(d["envelope"]).body["n"] for d in letters) == list(range(21, 51))
    assert all("max_held" in d["message"] and d["type"] == "test.item@1" for d in letters), letters[0]
    assert ref.tell_stats()["overflow_unrecorded"] == 0
    # Overflow is a dead letter like any other: replayed, it takes effect, after the rest.
    replayed = ref.admin.replay_dead_letters(reason="overflow")
    assert len(replayed) == 30 and all(r["ok"] for r in replayed)
    assert ref.ask(Report(), timeout=30) == {"count": 51, "dups": 0, "out_of_order": 0}
