"""An agent's circuit breakers: one per tool, one for the agent, and the semantic (drift) breaker.

:class:`Breakers` admits a call (every breaker that applies must allow it),
records how it went, and observes each successful result with the agent's
drift scorer.  A breaker that opens is *tripped*: ``on_trip(name, why)`` is
called once per trip (the gateway logs it, counts it in ``status()`` and,
when ``AgentConfig.on_trip`` is ``"halt"``, pulls the agent's kill switch).
Declared business errors count for nothing (``CallResult.BUSINESS_ERROR``).

State lives in the agent's ledger (``s/breaker/<name>``, ``s/drift``), written
with the outcome that changed it, so breakers stay open across restarts.
The drift monitor stays open until an operator resets it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from governance import Breaker, BreakerPolicy, BreakerState, CallResult, DriftMonitor, DriftPolicy, Transition

from ._ledger import Ledger

__all__ = ["Admitted", "Breakers"]

log = logging.getLogger("garrison.gateway")

AGENT = "breaker/agent"
#: Trips kept for the supervisor's probe to report (more between two probes are counted, not named).
RECENT_TRIPS = 8

#: The breakers that admitted one call: (name, generation) each.
Admitted = list[tuple[str, int]]


class Breakers:
    """The breakers of one agent (see module docstring)."""

    def __init__(self, *, agent_id: str, policy: BreakerPolicy, ledger: Ledger, drift: DriftPolicy | None,
                 scorer: Callable[[Any], float] | None, on_trip: Callable[[str, str], None],
                 policy_on_trip: str = "notify") -> None:
        self.agent_id = agent_id
        self.policy_on_trip = policy_on_trip
        self._policy = policy
        self._on_trip = on_trip
        self._breakers = {name: Breaker.restore(policy, snapshot)
                          for name, snapshot in ledger.states("breaker/").items()}
        self.trips = 0
        #: The newest trips, oldest first, each ``{"breaker", "why", "at"}`` (a tuple replaced whole, so
        #: another thread reads it safely).
        self.recent_trips: tuple[dict[str, Any], ...] = ()
        self._drift: DriftMonitor | None = None
        if drift is not None and scorer is not None:
            snapshot = ledger.state("drift")
            self._drift = (DriftMonitor(drift, scorer) if snapshot is None
                           else DriftMonitor.restore(drift, scorer, snapshot))

    def _get(self, name: str) -> Breaker:
        if name not in self._breakers:
            self._breakers[name] = Breaker(self._policy)
        return self._breakers[name]

    def admit(self, tag: str, now: float) -> tuple[Admitted, str | None]:
        """Ask every breaker for ``tag``'s call: ``(admitted, None)``, or ``([], why not)``."""
        if self._drift is not None and self._drift.state is not BreakerState.CLOSED:
            return [], f"semantic breaker open: recent outputs drifted (mean score {self._drift.mean:.2f})"
        admitted: Admitted = []
        for name in (AGENT, f"breaker/{tag}"):
            admission = self._get(name).allow(now)
            if admission.transition is not None:
                self._tripped(name, admission.transition)
            if not admission.allowed:
                self.release(admitted, now)
                until = f" until {admission.until:.3f}" if admission.until else ""
                return [], f"{name.split('/', 1)[1]} breaker is {admission.state.value}{until}"
            admitted.append((name, admission.generation))
        return admitted, None

    def release(self, admitted: Admitted, now: float) -> None:
        """The call was not made after all: free what it held (a half-open probe slot)."""
        for name, generation in admitted:
            self._get(name).record(CallResult.BUSINESS_ERROR, 0.0, now, generation=generation)

    def record(self, admitted: Admitted, result: CallResult, duration: float, now: float) -> list[str]:
        """Count the call in each breaker that admitted it; the names of those whose state must be saved.

        A plain success in a closed breaker with no failures in a row changes
        only the successes in its window, which are not worth a write per call:
        a restart forgets them (the window then holds the call history up to the
        last failure or state change, which can only trip it sooner).
        """
        dirty = []
        for name, generation in admitted:
            breaker = self._get(name)
            before = (breaker.state, breaker.consecutive)
            transition = breaker.record(result, duration, now, generation=generation)
            if transition is not None:
                self._tripped(name, transition)
            if (result is not CallResult.SUCCESS or transition is not None
                    or before != (BreakerState.CLOSED, 0) or breaker.state is not BreakerState.CLOSED):
                dirty.append(name)
        return dirty

    def observe(self, output: Any, now: float) -> None:
        """A successful result, for the drift scorer."""
        if self._drift is None:
            return
        transition = self._drift.observe(output, now)
        if transition is not None:
            self._tripped("drift", transition)

    def reset(self, name: str, who: str, now: float) -> list[tuple[str, Any]]:
        """An operator closes breaker ``name`` (``agent``, a tool's tag, or ``drift``); the state to save."""
        if name == "drift":
            if self._drift is None:
                raise KeyError(name)
            self._drift.reset(who, now)
            return [("drift", self._drift.snapshot())]
        key = f"breaker/{name}"
        if key not in self._breakers:
            raise KeyError(name)
        self._breakers[key].reset(who, now)
        return [(key, self._breakers[key].snapshot())]

    def _tripped(self, name: str, transition: Transition) -> None:
        log.warning("agent %s: %s %s -> %s (%s)", self.agent_id, name, transition.from_state.value,
                    transition.to_state.value, transition.reason.value)
        if transition.to_state is BreakerState.OPEN and transition.from_state is BreakerState.CLOSED:
            why = transition.reason.value + (f" ({transition.detail})" if transition.detail else "")
            trip = {"breaker": name.removeprefix("breaker/"), "why": why, "at": transition.at}
            self.recent_trips = (*self.recent_trips, trip)[-RECENT_TRIPS:]
            self.trips += 1  # after recent_trips: a reader that sees the new count sees its trip
            self._on_trip(name.removeprefix("breaker/"), transition.reason.value)

    def tripped(self) -> dict[str, Any] | None:
        """For a supervisor's probe: how many trips this incarnation saw, the newest, and what a trip
        does besides telling operators (``on_trip``); None before the first."""
        return None if not self.trips else {"count": self.trips, "recent": list(self.recent_trips),
                                            "on_trip": self.policy_on_trip}

    def state(self, names: list[str]) -> list[tuple[str, Any]]:
        """What to commit with an outcome: the snapshots of the breakers ``record`` named, and the drift monitor's."""
        out: list[tuple[str, Any]] = [(name, self._get(name).snapshot()) for name in names]
        if self._drift is not None:
            out.append(("drift", self._drift.snapshot()))
        return out

    def status(self) -> dict[str, Any]:
        states = {name.removeprefix("breaker/"): b.state.value for name, b in sorted(self._breakers.items())}
        if self._drift is not None:
            states["drift"] = self._drift.state.value
        return {"breakers": states, "open_breakers": sorted(n for n, s in states.items() if s != "closed"),
                "breaker_trips": self.trips}
