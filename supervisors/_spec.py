"""Supervision policy as frozen data: child specs, supervisor flags and specs.

Defaults follow Erlang/OTP's ``supervisor`` (``default_flags``,
``default_child_spec``) where the two worlds meet, and are documented on each
field.  Everything is validated when built; a bad value raises
:class:`SpecError` (or :class:`DuplicateChildId`) before anything starts.

Semantics, as in OTP:

* ``restart``  permanent: always restarted.  transient: restarted only after an
  abnormal exit (crash, hang), not after a normal or shutdown exit.
  temporary: never restarted, and dropped from the supervisor when it exits,
  even when a sibling's failure makes the supervisor stop it.
* ``shutdown`` seconds the supervisor waits for a graceful stop (drain,
  ``on_stop``, final checkpoint) before a hard kill.  Default 5 s for an
  agent, unlimited (``math.inf``) for a sub-supervisor, so that a subtree
  always gets to stop its own children first.
* ``intensity``/``period``: more than ``intensity`` restarts within ``period``
  seconds, counted across all children, make the supervisor give up: it stops
  its children and escalates (see :mod:`supervisors._intensity`).
"""

from __future__ import annotations

import enum
import math
from typing import Any

from pydantic import Field, field_validator, model_validator

from runtime import Agent, AgentConfig, ConfigError, check_agent_id, validated

from ._backoff import BackoffPolicy
from ._frozen import Frozen
from ._health import ProbePolicy
from .exceptions import DuplicateChildId

__all__ = ["AGENT_SHUTDOWN", "ChildSpec", "RestartType", "Strategy", "SupervisorFlags", "SupervisorSpec",
           "inherit_operators"]

#: Graceful stop budget of an agent child, in seconds (OTP: 5000 ms for workers).
AGENT_SHUTDOWN = 5.0


class Strategy(enum.Enum):
    """Which children restart when one must (OTP's restart strategies)."""

    #: Only the failed child.
    ONE_FOR_ONE = "one_for_one"
    #: Every child: the others are stopped in reverse start order, then all start in order.
    ONE_FOR_ALL = "one_for_all"
    #: The failed child and those started after it.
    REST_FOR_ONE = "rest_for_one"
    #: A dynamic pool of identical children from one template; behaves as one_for_one.
    SIMPLE_ONE_FOR_ONE = "simple_one_for_one"


class RestartType(enum.Enum):
    """Whether a child that exited is started again (see module docstring)."""

    PERMANENT = "permanent"
    TRANSIENT = "transient"
    TEMPORARY = "temporary"


class SupervisorFlags(Frozen):
    """A supervisor's strategy and restart intensity (OTP's ``sup_flags``)."""

    strategy: Strategy = Strategy.ONE_FOR_ONE
    #: Restarts allowed within ``period`` before the supervisor gives up (OTP default 1).
    intensity: int = Field(1, ge=0)
    #: Seconds of the sliding window the restarts are counted in (OTP default 5).
    period: float = Field(5.0, gt=0)
    #: Delay between a failure and its restart.
    backoff: BackoffPolicy = Field(default_factory=BackoffPolicy)
    #: Warm spares kept started for this supervisor's agent children: a restart
    #: hands the agent to a spare (which restores its state and takes over its
    #: id) instead of starting a new process.  0: cold restarts only.  Spares
    #: are placed as the first agent child (a pool's template) asks in its
    #: ``ray_options``; a child placed otherwise always restarts cold.
    standby: int = Field(0, ge=0, le=64)
    #: The operators file (``runtime.AgentConfig.operators``), readable on every node: operators'
    #: calls through this supervisor must then be signed by an operator whose role grants them.
    #: Children that name none get this one (:func:`inherit_operators`).
    operators: str | None = None
    #: How many children ``start`` starts at once.  1 (OTP's way): one after another, in order, each
    #: running before the next starts.  More: for children that do not need the earlier ones up
    #: first; they are begun in order, up to this many at a time, and the supervisor runs once all are.
    start_concurrency: int = Field(1, ge=1, le=64)


def _valid_id(value: str) -> str:
    """A child's or a supervisor's id, checked as an agent id (pydantic's ValueError when it is not one)."""
    try:
        return check_agent_id(value)
    except ConfigError as exc:
        raise ValueError(exc.message) from None


class ChildSpec(Frozen):
    """How to start one child, and what to do when it exits."""

    #: The child's id: its agent id (also its Ray actor name) or its sub-supervisor's name.
    id: str
    #: The agent class (a subclass of :class:`runtime.Agent`); exactly one of ``agent`` and ``supervisor``.
    agent: type | None = None
    #: A sub-supervisor's spec, for a supervision tree.
    supervisor: SupervisorSpec | None = None
    #: The agent's :class:`runtime.AgentConfig` (or a dict of its fields).
    config: AgentConfig = Field(default_factory=AgentConfig)
    #: Keyword arguments of the agent class's constructor.
    init: dict[str, Any] = Field(default_factory=dict)
    #: Earlier agent classes (``module:QualName``) whose state this child takes over: a deploy sets
    #: it (``_deploy``); set it yourself when an agent class was renamed or moved.
    replaces: tuple[str, ...] = ()
    restart: RestartType = RestartType.PERMANENT
    #: Graceful stop budget in seconds; ``None`` means the default for the kind
    #: (5 s for an agent, ``math.inf`` for a sub-supervisor).
    shutdown: float | None = Field(None, ge=0)
    #: Hang detection for this child; ``None``: crash detection only.
    probe: ProbePolicy | None = None
    #: Extra Ray actor options for an agent child's host, for placement
    #: (``resources``, ``scheduling_strategy``, ``num_cpus``...).  Name, namespace,
    #: lifetime and restarts are the supervisor's and cannot be set here.  A warm
    #: spare that adopts the child was placed without them.
    ray_options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("ray_options")
    @classmethod
    def _ray_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        reserved = {"name", "namespace", "lifetime", "max_restarts", "max_task_retries"} & set(value)
        if reserved:
            raise ValueError(f"ray_options may not set {sorted(reserved)}: the supervisor owns them")
        return value

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        return _valid_id(value)

    @field_validator("agent")
    @classmethod
    def _agent(cls, value: type | None) -> type | None:
        if value is not None and not (isinstance(value, type) and issubclass(value, Agent)):
            raise ValueError(f"{value!r} is not a subclass of runtime.Agent")
        return value

    @field_validator("config", mode="before")
    @classmethod
    def _config(cls, value: Any) -> AgentConfig:
        try:
            return validated(AgentConfig, value)  # type: ignore[return-value]
        except ConfigError as exc:
            raise ValueError(exc.message) from None

    @model_validator(mode="after")
    def _kind(self) -> ChildSpec:
        if (self.agent is None) == (self.supervisor is None):
            raise ValueError("give exactly one of agent= and supervisor=")
        if self.supervisor is not None and self.supervisor.id != self.id:
            raise ValueError(f"a sub-supervisor child's id ({self.id!r}) must equal its spec's id "
                             f"({self.supervisor.id!r})")
        if self.shutdown is None:
            default = AGENT_SHUTDOWN if self.agent is not None else math.inf
            object.__setattr__(self, "shutdown", default)
        return self

    @property
    def is_supervisor(self) -> bool:
        return self.supervisor is not None


class SupervisorSpec(Frozen):
    """A supervisor: its name, flags and children in start order.

    Under ``simple_one_for_one`` there must be exactly one child spec: the
    template of the pool's children (its id is the prefix of theirs); the
    pool starts empty and grows with ``start_child``.
    """

    #: The supervisor's name (its Ray actor name).
    id: str
    flags: SupervisorFlags = Field(default_factory=SupervisorFlags)
    children: tuple[ChildSpec, ...] = ()

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        return _valid_id(value)

    @model_validator(mode="after")
    def _children(self) -> SupervisorSpec:
        seen: set[str] = set()
        for child in self.children:
            if child.id in seen:
                raise DuplicateChildId(f"supervisor {self.id!r}: two children have the id {child.id!r}",
                                       supervisor=self.id, child=child.id)
            seen.add(child.id)
        if self.flags.strategy is Strategy.SIMPLE_ONE_FOR_ONE and len(self.children) != 1:
            raise ValueError(f"simple_one_for_one needs exactly one child spec (the template), "
                             f"got {len(self.children)}")
        return self


ChildSpec.model_rebuild()


def inherit_operators(spec: SupervisorSpec, path: str | None = None) -> SupervisorSpec:
    """``spec`` with its operators file (or ``path``) given to every child that names none, recursively.

    So one ``SupervisorFlags(operators=...)`` on a root puts its whole tree behind the same file.
    """
    path = spec.flags.operators or path
    if path is None:
        return spec
    children = []
    for c in spec.children:
        if c.supervisor is not None:
            c = c.model_copy(update={"supervisor": inherit_operators(c.supervisor, path)})
        elif c.config.operators is None:
            c = c.model_copy(update={"config": c.config.model_copy(update={"operators": path})})
        children.append(c)
    flags = spec.flags if spec.flags.operators else spec.flags.model_copy(update={"operators": path})
    return spec.model_copy(update={"flags": flags, "children": tuple(children)})
