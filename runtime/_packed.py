"""The Ray actor that serves many packed agents: ``PackedHost``.

One actor-per-agent is the default (``_host``); an agent class marked packed
(``_packing``) is served here instead, with thousands of others in one
process.  Each keeps its own LMDB state, journal, checkpoints, outbox, inbox
dedup, epoch and host lock (each open agent is an ``AgentCore``, as in its own
host), but only the recently used are open (``_packed_slots``): an idle one
is passivated (closed, its state in its LMDB and the checkpoint store) and
reopened by its next message.

Concurrency groups, as ``AgentHost``'s (Ray runs each caller's calls in order):

``lane0`` ... ``lane15`` (1 thread each)  one agent's messages always go to the
        same lane (``PackedHandle``), so they are handled one at a time in each
        caller's order; other lanes go on meanwhile (an agent being opened holds
        up its lane only).
``control`` (4 threads)  status, checkpoints, operators' calls, stats.

Threads: the lanes, the control group, one sweeper (every agent's idle timer) and
four passivation workers, shared by every agent; and each *open* agent's own
(``Background``'s shipping and checkpoints, its outbox sender, a loop for async
handlers): bounded by the capacity, not by the agents placed.

Memory: start-up's objects are frozen out of the garbage collector's way (a
closed agent's objects are cycles, freed by full collections), and glibc's
mapping threshold is pinned (``pin_mmap_threshold``): a passivated agent costs
its table entry, not what its LMDB environment allocated.  After a crash Ray restarts the host (``max_restarts=-1``);
it reopens at once the agents that were open (their outboxes resume) and the
others on their next message, on whichever node it runs.

Invariant: ``deliver`` and ``deliver_batch`` never raise; every failure,
the host's own included (an agent not placed here, or moved elsewhere),
is an encoded error reply, as ``AgentHost``'s.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import threading
from collections.abc import Iterator
from typing import Any

import ray

from ._activation import Activator
from ._boundary import guarded, internal_error
from ._logs import LogContext, configure_logs
from ._packed_policy import ActiveSet
from ._packed_roster import Roster
from ._packed_slots import Keeper
from ._packing import LANES, lane_of
from ._reply import encode_error
from ._selfwait import current_lane
from ._spec import HostSpec
from .exceptions import AgentNotRunning, ConfigError, GarrisonError

__all__ = ["AGENT_CALLS", "CONTROL", "PackedHost", "RemotePackedHost"]

log = logging.getLogger("garrison.packed")

CONTROL = "control"

#: ``AgentHost`` methods a packed agent answers through ``call`` (besides ``stop`` and ``kill``, which retire it).
AGENT_CALLS = frozenset({
    "checkpoint", "decisions", "dead_letters", "describe", "feedback", "inspect", "ledger", "logs", "metrics",
    "halt", "operate", "operator_log", "probe", "quarantine", "ready", "record_dead_letters", "record_operation",
    "release", "replay_dead_letters", "restore_history", "status", "transitions", "unhalt", "versions",
})
#: What a passivated agent answers without being opened.
_PASSIVE_CALLS = frozenset({"status", "probe", "describe"})


class PackedHost:
    """Many packed agents in one actor (see module docstring)."""

    def __init__(self, name: str, namespace: str, roster_dir: str, capacity: int) -> None:
        configure_logs(LogContext(name), fmt="json", level="warning")  # thousands of agents: no line per open
        pin_mmap_threshold()
        self.name = name
        #: This host's actor id (None outside Ray): with a lane, what an ask from a handler must not wait on.
        self.actor_id: str | None = ray.get_runtime_context().get_actor_id()
        roster = Roster(roster_dir)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.keeper = Keeper(name=name, namespace=namespace, roster=roster, active=ActiveSet(capacity),
                             activator=Activator(host_name=name, namespace=namespace, lanes=LANES),
                             wake=self._wake.set)
        self._sweeper = threading.Thread(target=self._sweep, args=(roster.opened(),), daemon=True,
                                         name="garrison-packed-sweeper")
        # What start-up built lives as long as the process: out of every collection from now on, so that
        # the full collections that free closed agents (cycles, by then old) only go through what is open.
        gc.freeze()
        self._sweeper.start()

    def __repr__(self) -> str:
        return f"PackedHost({self.name})"

    def _sweep(self, reopen: list[str]) -> None:
        """The one thread that passivates (every agent's idle timer), after reopening what a crash left open."""
        if reopen:
            log.warning("packed host %s: reopened %d of %d agents open before a restart", self.name,
                        self.keeper.reopen(reopen), len(reopen))
        while not self._stop.is_set():
            try:
                wait = self.keeper.sweep()
            except Exception:  # the sweeper must survive anything: a failed close is retried next time
                log.exception("packed host %s: passivation failed", self.name)
                wait = 1.0
            self._wake.wait(wait)
            self._wake.clear()

    # -- lanes: an agent's messages, in order ---------------------------------------------

    @guarded
    def place(self, agent_id: str, spec: HostSpec, take_over: bool = False) -> dict[str, Any]:
        """Serve ``spec``'s agent here (``System.spawn`` of a packed class); its status once open."""
        if spec.agent_id != agent_id:
            raise ConfigError(f"spec of {spec.agent_id!r} placed as {agent_id!r}")
        with self._on_lane(agent_id):  # on_start runs on the lane
            return self.keeper.place(spec, take_over=take_over)

    def deliver(self, agent_id: str, raw: bytes) -> bytes:
        return self._handle(agent_id, raw, batch=False)

    def deliver_batch(self, agent_id: str, blob: bytes) -> bytes:
        return self._handle(agent_id, blob, batch=True)

    @contextlib.contextmanager
    def _on_lane(self, agent_id: str) -> Iterator[None]:
        """While ``agent_id``'s lane thread works for it: what an ask from its handler must not wait on
        (``_selfwait``)."""
        token = current_lane.set((self.actor_id, lane_of(agent_id, LANES)))
        try:
            yield
        finally:
            current_lane.reset(token)

    def _handle(self, agent_id: str, data: bytes, *, batch: bool) -> bytes:
        try:
            with self._on_lane(agent_id), self.keeper.serving(agent_id) as slot:
                assert slot.core is not None
                return slot.core.deliver_batch(data) if batch else slot.core.deliver(data)
        except GarrisonError as exc:
            return encode_error(exc)
        except Exception as exc:
            log.exception("packed host %s: delivery to %s failed", self.name, agent_id)
            return encode_error(internal_error(exc, "deliver_batch" if batch else "deliver"))

    # -- control: one agent's status and operators' calls; the host's own ---------------------

    @ray.method(concurrency_group=CONTROL)
    @guarded
    def call(self, agent_id: str, method: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """``AgentHost.<method>(*args, **kwargs)`` for ``agent_id`` (opened first if passivated)."""
        if method in ("stop", "kill"):  # a packed agent has no process to end: it is retired
            return self.keeper.retire(agent_id)
        if method not in AGENT_CALLS:
            raise AgentNotRunning(f"{method!r} is not served for packed agent {agent_id!r} (a packed agent has "
                                  "no process of its own to watch or adopt)", state="packed")
        slot = self.keeper.find(agent_id)
        if method in _PASSIVE_CALLS and slot.core is None:
            status = self.keeper.passive_status(slot)
            return f"Agent({agent_id}, passive on {self.name})" if method == "describe" else status
        with self.keeper.serving(agent_id) as slot:
            result = getattr(slot.view, method)(*args, **kwargs)
        return {**result, "packed_host": self.name} if method == "status" else result

    @ray.method(concurrency_group=CONTROL)
    @guarded
    def stats(self) -> dict[str, Any]:
        """How many agents are placed, open and passive; activations and passivations so far; pid, threads."""
        return self.keeper.stats()

    @ray.method(concurrency_group=CONTROL)
    @guarded
    def passivate(self, agent_ids: list[str] | None = None) -> int:
        """Passivate these agents (default: every open one) now; how many were."""
        return self.keeper.passivate(agent_ids)

    @ray.method(concurrency_group=CONTROL)
    @guarded
    def close(self) -> dict[str, Any]:
        """Stop passivating, then passivate every open agent (before the host is ended); the stats."""
        self._stop.set()
        self._wake.set()
        self._sweeper.join(timeout=30)
        self.keeper.shutdown()
        return self.keeper.stats()


#: glibc's ``mallopt`` parameter for the size from which allocations are mapped on their own.
_M_MMAP_THRESHOLD = -3


def pin_mmap_threshold(size: int = 128 * 1024) -> bool:
    """Have every allocation of ``size`` bytes or more mapped on its own, and unmapped when freed.

    Each open LMDB environment ``calloc``s about 2.5 MB (its dirty-page list and free-page
    list).  glibc raises its mapping threshold each time such a block is freed, after which
    the next ones come from its heaps, where ``calloc`` zeroes (touches) all of it and the
    freed block stays resident: opening and closing thousands of agents grew a host to
    1.3 GB with 500 open, against 0.24 GB with the threshold pinned (a pinned threshold also
    turns glibc's adjustment off).  False where the C library is not glibc.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, size))


RemotePackedHost = ray.remote(concurrency_groups={CONTROL: 4, **{f"lane{i}": 1 for i in range(LANES)}})(PackedHost)

