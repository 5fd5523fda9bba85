"""Opening one agent of a packed host: its files, its epoch, its directory record.

A packed host (``_packed``) opens an agent (activation) by building an
:class:`~runtime._core.AgentCore` for it, as an agent's own host does, in one of
two ways:

* **resumed**: this process passivated the agent under epoch ``e`` and no later
  epoch has been claimed since.  Its local LMDB is reopened under ``e``, with
  its host lock: no new claim, no restore, no directory write.  It is the same
  incarnation going on (the same number), which is safe for the reason an
  incarnation that never paused is: any later claim fences it at its next
  commit.  This keeps reactivation to a couple of milliseconds, and keeps the
  epoch files (one per claim, kept for ever, ``_fence``) from growing with every
  activation.
* **started**: anything else (the first placement, the first use after a crash,
  on another node, local files gone or stamped by another epoch):
  ``start_incarnation`` (host lock, epoch claim, sweep, restore, as any host
  start), then a directory record naming this host (``_directory``, with the
  host's lane count, so refs reach it through a ``PackedHandle``).

Two hosts never serve one agent: a start first looks the agent up in the
directory, and refuses (the caller gets ``owner``) when another live actor
serves it, unless it takes the agent over on purpose; a resume refuses (Fenced)
once any later epoch exists; and whatever still slips through (two hosts cut off
from each other) is fenced by the epochs, as for agents with actors of their own.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import ray

from . import _directory
from ._ckstore import CheckpointStore, DirectoryStore
from ._core import AgentCore
from ._host import lookup_agent
from ._incarnation import resume_incarnation
from ._lifecycle import AgentState
from ._spec import HostSpec, check_writable_dir, local_data_dir
from .exceptions import AgentStartError, Fenced

__all__ = ["Activator"]

log = logging.getLogger("garrison.packed")


class Activator:
    """Builds the cores of one packed host's agents (see module docstring)."""

    def __init__(self, *, host_name: str, namespace: str, lanes: int) -> None:
        self.host_name = host_name
        self.namespace = namespace
        self.lanes = lanes
        self._resolve = functools.partial(_directory.resolve, namespace=namespace)
        self._lookup = functools.partial(lookup_agent, namespace=namespace)
        # Checked once per directory, not at every activation (a write probe each).
        self._data_roots: dict[str, Path] = {}
        self._ckstores: dict[str, CheckpointStore] = {}

    def owner(self, agent_id: str) -> str | None:
        """Another live actor serving ``agent_id`` now, by the directory (or by its name), or None."""
        name = _directory.actor_name(agent_id, namespace=self.namespace)
        if name == self.host_name:
            return None
        try:
            ray.get_actor(name, namespace=self.namespace)
        except ValueError:
            return None
        return name

    def open(self, spec: HostSpec, *, epoch: int | None, take_over: bool = False) -> AgentCore:
        """A started core of ``spec``'s agent, resumed under ``epoch`` if it can be, else started anew.

        A start refuses (Fenced: the caller follows the directory) while another live actor serves
        the agent, unless ``take_over`` (a placement, which checked that itself).  Raises
        AgentStartError (or what the start raised: Fenced, AgentAlreadyRunning, ...), leaving
        nothing open.
        """
        inc = None
        if epoch is not None:
            inc = resume_incarnation(spec, epoch, data_root=self._data_root(spec), ckstore=self._ckstore(spec))
        if inc is None and not take_over and (owner := self.owner(spec.agent_id)) is not None:
            raise Fenced(f"agent {spec.agent_id!r} is served by {owner!r} now, not by {self.host_name!r}",
                         agent_id=spec.agent_id, epoch=None, where="open")
        core = AgentCore(spec, resolve=self._resolve, lookup=self._lookup, incarnation=inc)
        try:
            core.ensure_started()
            if core.lifecycle is AgentState.FAILED:
                raise AgentStartError(f"agent {spec.agent_id!r} failed to start: {core.failure}",
                                      agent_id=spec.agent_id)
            if inc is None:  # a new epoch: the record names this host from it on
                core.fence.check("registration")
                _directory.register(spec.agent_id, self.host_name, core.epoch, namespace=self.namespace,
                                    packed=self.lanes)
            core.metrics.watch(core.status, core.agent.gauges)
        except BaseException:
            self.close(core)
            raise
        return core

    @staticmethod
    def close(core: AgentCore, *, checkpoint: bool = True) -> dict[str, Any] | None:
        """Stop ``core`` gracefully (drain, ``on_stop``, ship, a final ``checkpoint`` or not, close its files)."""
        try:
            return core.stop(checkpoint=checkpoint)
        except Exception:
            log.exception("agent %s: stopping it failed; its files are closed", core.agent_id)
            core.close_files()
            return None

    def _data_root(self, spec: HostSpec) -> Path:
        root = self._data_roots.get(spec.data_dir)
        if root is None:
            root = self._data_roots[spec.data_dir] = local_data_dir(spec.data_dir)
        return root

    def _ckstore(self, spec: HostSpec) -> CheckpointStore:
        store = self._ckstores.get(spec.checkpoint_dir)
        if store is None:
            check_writable_dir(spec.checkpoint_dir, "checkpoint directory")
            store = self._ckstores[spec.checkpoint_dir] = DirectoryStore(spec.checkpoint_dir)
        return store
