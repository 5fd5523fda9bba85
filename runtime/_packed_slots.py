"""The agents of one packed host: placed, open or passivated, and the moves between.

:class:`Keeper` owns the table of a packed host's agents (a :class:`Slot` each),
the :class:`~runtime._packed_policy.ActiveSet` of the open ones and the
:class:`~runtime._packed_roster.Roster` on disk; the host's Ray methods
(``_packed``) call it, and so does the host's one sweeper thread.

* **open** (activate): on the first message, operator's call or placement,
  under the agent's slot lock (``_activation``: resumed, or started anew).
* **use**: :meth:`Keeper.serving` holds the agent open while a message or call
  is handled (``busy``); the handling itself is the core's (its own lock,
  dedup, pair order), outside the slot lock.
* **passivate**: :meth:`Keeper.sweep` hands what the active set names (idle,
  or least recently used past the capacity) to a few passivation workers
  (closing waits on the disk), which skip an agent that is busy or has sends
  not yet delivered (only an open agent delivers its outbox); closing is the
  core's graceful stop: ``on_stop``, ship, close the LMDB and release the host
  lock, with a checkpoint only once ``checkpoint_interval`` has passed since the
  agent's last (``Slot.checkpointed``); retiring one always takes a checkpoint.  A passivated agent is a slot of a few
  hundred bytes; its directory record stays, and its next message reopens it.
  Should the workers fall behind the openers by more than a margin (a tenth of
  the capacity), an opener passivates the least recently used agent itself
  first: the bound holds whatever the rate of opening.
* **moved**: an agent found fenced (a later epoch claimed elsewhere) is
  forgotten here, spec included; callers get Fenced and follow the directory.

Invariants: an agent's slot lock is held across its opening and its closing,
so a message never meets a half-open or half-closed agent and no two cores of
one agent exist in the process; the table and the active set change under
the keeper's lock, never while a slot lock is waited for under it.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import _directory
from ._activation import Activator
from ._core import AgentCore
from ._host import AgentHost
from ._lifecycle import AgentState
from ._packed_policy import ActiveSet
from ._packed_roster import Roster
from ._packing import Packing, packing_of
from ._spec import HostSpec
from .exceptions import AgentAlreadyRunning, AgentNotFound, Fenced, GarrisonError

__all__ = ["Keeper", "Slot"]

log = logging.getLogger("garrison.packed")


@dataclasses.dataclass(eq=False, slots=True)
class Slot:
    """One agent placed on the host: open (``core``) or passivated (``core`` None)."""

    agent_id: str
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    core: AgentCore | None = None
    #: ``AgentHost``'s per-agent methods around ``core`` (status, checkpoint, operators' calls, ...).
    view: AgentHost | None = None
    #: The epoch this process last held the agent under: resumed under it if no later one exists.
    epoch: int | None = None
    idle_timeout: float = Packing().idle_timeout
    #: Messages and calls in progress (it is not passivated meanwhile).
    busy: int = 0
    #: Retired or moved: no longer served here.
    gone: bool = False
    #: When (``time.time``) the agent's last checkpoint known here was taken, or it was first opened
    #: here: a passivation takes a checkpoint only once ``checkpoint_interval`` has passed since.
    checkpointed: float = 0.0


def _forget_logger(agent_id: str) -> None:
    """Drop the agent's own logger (``self.log``, made by ``logging.getLogger`` when it opened), which
    logging keeps for ever: one per agent ever opened, each pinning a block of the allocator amid
    what its agent's opening allocated.  Its next opening makes a new one."""
    logging.Logger.manager.loggerDict.pop(f"garrison.agent.{agent_id}", None)


def _lower_priority() -> None:
    """A passivation worker yields the CPU to the lanes (a Linux thread has its own nice value), as an
    agent's background thread does: closing an idle agent is never more urgent than a message."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


class Keeper:
    """The table of one packed host's agents and their moves (see module docstring)."""

    def __init__(self, *, name: str, namespace: str, roster: Roster, active: ActiveSet, activator: Activator,
                 wake: Callable[[], None], workers: int = 4) -> None:
        self.name = name
        self.namespace = namespace
        self._roster = roster
        self._active = active
        self._activator = activator
        self._wake = wake  # the sweeper: the active set went past its capacity
        self._lock = threading.Lock()
        self._closed = threading.Condition(self._lock)  # notified whenever a handed agent is done with
        self._slots: dict[str, Slot] = {agent_id: Slot(agent_id) for agent_id in roster.ids()}
        #: Agents handed to a passivation worker and not yet closed (under ``_lock``).
        self._closing: set[str] = set()
        # Closing waits on the disk (the final checkpoint's fsyncs): a few at once keep up with opening.
        self._workers = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="garrison-passivate",
                                                              initializer=_lower_priority)
        #: How far past the capacity passivation may lag before openers passivate one themselves first.
        self._margin = max(4, active.capacity // 10)
        #: activations (``resumed`` or ``started``), ``passivations``, ``moved``, ``failed`` opens.
        self.counts: collections.Counter[str] = collections.Counter()
        #: Seconds spent in each kind of open (``resumed``, ``started``) and in ``passivations``.
        self.times: collections.Counter[str] = collections.Counter()

    # -- placing and retiring --------------------------------------------------------

    def place(self, spec: HostSpec, *, take_over: bool = False) -> dict[str, Any]:
        """Serve ``spec``'s agent here from now on: record it, open it (``on_start``), return its status.

        AgentAlreadyRunning if it is placed here already or (unless ``take_over``) another live actor
        serves it.  On failure nothing is left placed.
        """
        agent_id = spec.agent_id
        owner = None if take_over else self._activator.owner(agent_id)
        if owner is not None:
            raise AgentAlreadyRunning(f"agent {agent_id!r} is live, served by {owner!r}", agent_id=agent_id)
        self._make_room()
        with self._lock:
            old = self._slots.get(agent_id)
            if old is not None and not old.gone:
                raise AgentAlreadyRunning(f"agent {agent_id!r} is already placed on {self.name}", agent_id=agent_id)
            slot = self._slots[agent_id] = Slot(agent_id)
        with slot.lock:
            try:
                self._roster.put(spec)
                self._open(slot, spec, take_over=True)  # whoever else served it was checked above
            except BaseException:
                self._forget(slot)
                raise
            assert slot.view is not None
            return {**slot.view.status(), "packed_host": self.name}

    def retire(self, agent_id: str) -> dict[str, Any]:
        """Stop serving the agent (a graceful stop if open) and forget it here; its state stays."""
        slot = self._slot(agent_id)
        with slot.lock:
            status = self._close(slot, checkpoint=True) if slot.core is not None else self.passive_status(slot)
            self._forget(slot)
        _directory.forget(agent_id, self.name, namespace=self.namespace)
        return {**(status or {}), "state": "stopped", "packed_host": self.name}

    # -- using -------------------------------------------------------------------------

    @contextlib.contextmanager
    def serving(self, agent_id: str) -> Iterator[Slot]:
        """The agent's slot, open, for one message or call (opened first if passivated)."""
        slot = self._slot(agent_id)
        if slot.core is None:
            self._make_room()
        with slot.lock:
            if slot.gone:
                raise self._not_here(agent_id)
            if slot.core is None:
                self._open(slot)
            slot.busy += 1
        with self._lock:
            self._active.touched(agent_id)
        try:
            yield slot
        finally:
            with slot.lock:
                slot.busy -= 1
                core = slot.core
                if slot.busy == 0 and core is not None and core.lifecycle is AgentState.FENCED:
                    self._close(slot)  # replaced elsewhere: forgotten here (callers got Fenced)

    def passive_status(self, slot: Slot) -> dict[str, Any]:
        """What a passivated agent's status says, without opening it."""
        return {"state": "passive", "agent_id": slot.agent_id, "packed_host": self.name, "epoch": slot.epoch,
                "incarnation": None, "pid": os.getpid(), "handler_running_for": None}

    def find(self, agent_id: str) -> Slot:
        return self._slot(agent_id)

    # -- passivating -----------------------------------------------------------------

    def sweep(self) -> float:
        """Hand what the active set names now to the passivation workers; seconds until the next sweep."""
        with self._lock:
            victims = [v for v in self._active.victims(keep=self._in_use) if v not in self._closing]
            self._closing.update(victims)
        for agent_id in victims:
            self._workers.submit(self._passivate_handed, agent_id)
        with self._lock:
            due, over = self._active.next_due(), self._active.over()
        if over:
            return 0.05  # closing, busy or its outbox not delivered: look again soon
        return 1.0 if due is None else min(1.0, max(0.01, due))

    def passivate(self, agent_ids: Iterable[str] | None = None) -> int:
        """Passivate ``agent_ids`` (default: every open agent) now, waiting for messages in progress; how many."""
        with self._lock:
            ids = self._active.ids() if agent_ids is None else list(agent_ids)
        return sum(self._workers.map(lambda agent_id: self._passivate(agent_id, wait=True), ids))

    def shutdown(self) -> None:
        """Passivate every open agent, then end the passivation workers."""
        self.passivate()
        self._workers.shutdown(wait=True)

    def reopen(self, agent_ids: Iterable[str]) -> int:
        """Open ``agent_ids`` (those open when the host died: their outboxes resume); how many opened."""
        opened = 0
        for agent_id in agent_ids:
            try:
                with self.serving(agent_id):
                    opened += 1
            except GarrisonError as exc:
                log.warning("packed host %s: could not reopen %s: %s", self.name, agent_id, exc.message)
        return opened

    def stats(self) -> dict[str, Any]:
        with self._lock:
            placed, active = len(self._slots), len(self._active)
        return {"host": self.name, "pid": os.getpid(), "placed": placed, "active": active,
                "passive": placed - active, "capacity": self._active.capacity,
                "threads": threading.active_count(), **self.counts,
                "mean_ms": {k: round(v / self.counts[k] * 1000, 2) for k, v in self.times.items() if self.counts[k]}}

    # -- inside ----------------------------------------------------------------------

    def _slot(self, agent_id: str) -> Slot:
        slot = self._slots.get(agent_id)
        if slot is None:
            raise self._not_here(agent_id)
        return slot

    def _not_here(self, agent_id: str) -> GarrisonError:
        """Moved to another live host (the caller follows it), or not placed at all."""
        owner = self._activator.owner(agent_id)
        if owner is not None:
            return Fenced(f"agent {agent_id!r} is served by {owner!r} now, not by {self.name!r}",
                          agent_id=agent_id, epoch=None, where="packed host")
        return AgentNotFound(f"agent {agent_id!r} is not placed on packed host {self.name!r}", agent_id=agent_id)

    def _in_use(self, agent_id: str) -> bool:
        slot = self._slots.get(agent_id)
        return slot is not None and slot.busy > 0

    def _open(self, slot: Slot, spec: HostSpec | None = None, *, take_over: bool = False) -> None:
        """Open ``slot``'s agent (its lock held)."""
        spec = spec or self._roster.load(slot.agent_id)
        if spec is None:
            self._forget(slot)
            raise AgentNotFound(f"agent {slot.agent_id!r} has no spec on packed host {self.name!r}",
                                agent_id=slot.agent_id)
        t0 = time.perf_counter()
        try:
            core = self._activator.open(spec, epoch=slot.epoch, take_over=take_over)
        except Fenced:
            self.counts["moved"] += 1
            self._forget(slot)  # a later epoch elsewhere: served there now
            raise
        except BaseException:
            self.counts["failed"] += 1
            raise
        kind = "resumed" if core.restore_report.source == "resumed" else "started"
        self.counts[kind] += 1
        self.times[kind] += time.perf_counter() - t0
        packing = packing_of(spec.agent_cls) or Packing()
        slot.core, slot.view, slot.epoch = core, AgentHost(spec, self.namespace, core), core.epoch
        slot.idle_timeout = packing.idle_timeout
        slot.checkpointed = slot.checkpointed or time.time()
        self._roster.mark_open(slot.agent_id)
        with self._lock:
            self._active.opened(slot.agent_id, slot.idle_timeout)
            over = self._active.over()
        if over:
            self._wake()

    def _close(self, slot: Slot, *, checkpoint: bool = False) -> dict[str, Any] | None:
        """Passivate ``slot``'s open agent (its lock held); its final status.

        A checkpoint is taken if ``checkpoint`` or if the agent's last one is ``checkpoint_interval``
        old, as its background thread would while it runs; else its journal is shipped only (an agent
        opened and closed many times a minute would otherwise copy its whole state each time)."""
        core, slot.core, slot.view = slot.core, None, None
        assert core is not None
        with self._lock:
            self._active.closed(slot.agent_id)
        fenced = core.lifecycle is AgentState.FENCED
        t0 = time.perf_counter()
        due = checkpoint or time.time() - slot.checkpointed >= core.spec.config.checkpoint_interval
        status = self._activator.close(core, checkpoint=due)
        if core.checkpointer.last is not None:
            slot.checkpointed = core.checkpointer.last.time
        _forget_logger(slot.agent_id)
        self._roster.mark_closed(slot.agent_id)
        self.counts["passivations"] += 1
        self.times["passivations"] += time.perf_counter() - t0
        if fenced or core.fence.fenced:
            self.counts["moved"] += 1
            self._forget(slot)
        return status

    def _make_room(self, patience: float = 5.0) -> None:
        """Past the capacity by more than the margin (the workers lag behind the openers): passivate
        the least recently used agent here first, or wait for the workers, so the bound holds whatever
        the rate of opening (for ``patience`` seconds at most: then the opener goes on)."""
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            with self._lock:
                if self._active.over() <= self._margin:
                    return
                victims = [v for v in self._active.victims(keep=self._in_use) if v not in self._closing]
                if victims:
                    self._closing.add(victims[0])
                else:  # every victim is being closed already: wait for one of those
                    self._closed.wait(0.05)
                    continue
            self._passivate_handed(victims[0])

    def _passivate_handed(self, agent_id: str) -> None:
        """Passivate an agent marked closing (a worker's task, or an opener's), then unmark it."""
        try:
            self._passivate(agent_id, wait=False)
        except Exception:  # a failed close is logged; the agent stays open and is tried again later
            log.exception("packed host %s: passivating %s failed", self.name, agent_id)
        finally:
            with self._lock:
                self._closing.discard(agent_id)
                self._closed.notify_all()

    def _passivate(self, agent_id: str, *, wait: bool) -> bool:
        slot = self._slots.get(agent_id)
        if slot is None or not slot.lock.acquire(blocking=wait):
            return False
        try:
            if slot.core is None or slot.busy:
                return False
            if slot.core.dispatcher.pending():  # only an open agent delivers its outbox: later
                with self._lock:
                    self._active.touched(agent_id)
                return False
            self._close(slot)
            return True
        finally:
            slot.lock.release()

    def _forget(self, slot: Slot) -> None:
        """No longer serve ``slot``'s agent here (its lock held): out of the table and the roster."""
        slot.gone = True
        with self._lock:
            if self._slots.get(slot.agent_id) is slot:
                del self._slots[slot.agent_id]
            self._active.closed(slot.agent_id)
        self._roster.remove(slot.agent_id)
