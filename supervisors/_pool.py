"""Worker pools that size themselves on a work queue: ``start_pool`` and the ``PoolScaler`` agent.

``start_pool(name, Worker, queue=...)`` starts one supervision tree::

    <name>              one_for_one
    ├── <name>-workers  simple_one_for_one: the pool, ``Worker`` (a ``runtime.queue.QueueWorker``) as template
    └── <name>-scaler   the PoolScaler agent

The scaler looks at the queue every ``every`` seconds (its own thread asks
it a ``PoolTick``, one at a time): the queue's depth and its oldest pending
item's wait, the pool's running workers.  The policy
(:mod:`supervisors._autoscale`, pure) decides; the scaler starts or
terminates workers through the pool's supervisor (the newest go first), and
keeps each decision that changed the size, with its reason, in its state
(``PoolStatus``; also a log line and its gauges ``garrison_pool_size`` and
``garrison_pool_wanted``).  Its memory (last change, quiet since) is in its
state too, so a restarted scaler keeps its cooldowns.  The pool's size is
read from the supervisor at each look, never remembered: a scaler that died
between starting a worker and recording it counts that worker next time.

``request_capacity``: on a cluster with Ray's autoscaler, each change also
asks it for the pool's resources (``ray.autoscaler.sdk.request_resources``,
one bundle per worker), so a pool that outgrows the nodes gets more.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
import uuid
from typing import Any

from protocols import Message
from runtime import Agent, GarrisonError, handler
from runtime.queue import QueueStats

from ._autoscale import Memory, Observation, ScalePolicy, decide
from ._ref import SupervisorRef, start_supervisor
from ._spec import ChildSpec, Strategy, SupervisorFlags, SupervisorSpec

__all__ = ["PoolScaler", "PoolStatus", "PoolTick", "pool_children", "start_pool"]

log = logging.getLogger("garrison.supervisor.pool")
#: Pool children the scaler counts as workers (a restarting one is still the pool's).
_COUNTED = ("starting", "running", "restarting")
#: Workers a pool's supervisor starts side by side when its scaler grows it by several at once.
POOL_START_CONCURRENCY = 4


class PoolTick(Message, name="garrison.pool.tick"):
    """Look at the queue and the pool, and resize (the scaler's own thread sends it)."""


class PoolStatus(Message, name="garrison.pool.status"):
    """Reply: the pool's size, what the policy wants, the last look's reason, the recent changes."""


class PoolScaler(Agent):
    """Sizes the pool ``supervisor`` (simple_one_for_one) on ``queue`` under ``policy`` (see the module)."""

    def __init__(self, supervisor: str, queue: str, template: str, policy: dict[str, Any] | None = None,
                 every: float = 1.0, history: int = 100, request_capacity: bool = False,
                 worker_resources: dict[str, float] | None = None) -> None:
        self.supervisor = supervisor
        self.queue = queue
        self.template = template
        self.policy = ScalePolicy(**(policy or {}))
        self.every = every
        self.history = history
        self.request_capacity = request_capacity
        self.worker_resources = worker_resources or {"CPU": 1.0}
        self._stopping = threading.Event()
        self._size = self._wanted = 0  # for ``gauges``: the last look's

    def on_start(self) -> None:
        threading.Thread(target=self._timer, name=f"garrison-scaler-{self.agent_id}", daemon=True).start()

    def on_stop(self) -> None:
        self._stopping.set()

    def gauges(self) -> dict[str, float]:
        return {"garrison_pool_size": self._size, "garrison_pool_wanted": self._wanted}

    def _timer(self) -> None:
        me = self.lookup(self.agent_id)
        while not self._stopping.wait(self.every):
            try:
                me.ask(PoolTick(), timeout=max(30.0, 10 * self.every))
            except GarrisonError as exc:  # a look that failed (the queue or the pool restarting): the next one
                log.info("pool scaler %s: look failed: %s", self.agent_id, exc)

    @handler
    async def tick(self, msg: PoolTick) -> dict[str, Any]:
        stats = await self.lookup(self.queue).ask_async(QueueStats(), timeout=10.0)
        pool = SupervisorRef.lookup(self.supervisor)
        workers = [c["id"] for c in await asyncio.to_thread(pool.which_children) if c["state"] in _COUNTED]
        obs = Observation(now=time.time(), size=len(workers), depth=stats["depth"],
                          oldest_wait=stats["pending"]["oldest_age"])
        decision, memory = decide(self.policy, obs, Memory(**self.state.get("memory", {})))
        self.state.put("memory", dataclasses.asdict(memory))
        self._size, self._wanted = obs.size, decision.size
        look = {"time": obs.now, "size": obs.size, "depth": obs.depth, "oldest_wait": obs.oldest_wait,
                "to": decision.size, "changed": decision.changed, "reason": decision.reason}
        self.state.put("last", look)
        if decision.changed:
            await self._resize(pool, workers, decision.size)
            self._size = decision.size
            seq = self.state.increment("changes")
            self.state.put(f"change/{seq:012d}", look)
            self.state.delete(f"change/{seq - self.history:012d}")
            log.info("pool %s: %s", self.supervisor, decision.reason)
        return look

    async def _resize(self, pool: SupervisorRef, workers: list[str], size: int) -> None:
        if size > len(workers):  # all at once: the pool starts them side by side (``POOL_START_CONCURRENCY``)
            await asyncio.to_thread(pool.start_children,
                                    [f"{self.template}-{uuid.uuid4().hex[:8]}" for _ in range(size - len(workers))])
        for child in reversed(workers[size:]):  # the newest first
            await asyncio.to_thread(pool.terminate_child, child)
        if self.request_capacity:
            from ray.autoscaler.sdk import request_resources

            await asyncio.to_thread(request_resources, bundles=[dict(self.worker_resources)] * size)

    @handler
    def status(self, msg: PoolStatus) -> dict[str, Any]:
        return {"supervisor": self.supervisor, "queue": self.queue, "policy": dataclasses.asdict(self.policy),
                "last": self.state.get("last"), "changes": [v for _, v in self.state.scan("change/")]}


def pool_children(name: str, worker: type, *, queue: str, policy: ScalePolicy | None = None,
                  init: dict[str, Any] | None = None, config: Any = None, every: float = 1.0,
                  request_capacity: bool = False,
                  ray_options: dict[str, Any] | None = None) -> tuple[ChildSpec, ChildSpec]:
    """The two children of a pool tree (module docstring): ``<name>-workers`` and ``<name>-scaler``."""
    policy = policy or ScalePolicy()
    template = f"{name}-w"
    workers = ChildSpec(id=template, agent=worker, init={"queue": queue, **(init or {})},
                        ray_options=dict(ray_options or {}), **({"config": config} if config is not None else {}))
    # What the scaler asks Ray's autoscaler for, per worker: what the workers are placed by.
    resources = {"CPU": 1.0, **(ray_options or {}).get("resources", {})}
    if "num_cpus" in (ray_options or {}):
        resources["CPU"] = float(ray_options["num_cpus"])
    pool = SupervisorSpec(id=f"{name}-workers", flags=SupervisorFlags(strategy=Strategy.SIMPLE_ONE_FOR_ONE,
                                                                       intensity=10, period=10.0,
                                                                       start_concurrency=POOL_START_CONCURRENCY),
                          children=(workers,))
    scaler = ChildSpec(id=f"{name}-scaler", agent=PoolScaler,
                       init={"supervisor": pool.id, "queue": queue, "template": template,
                             "policy": dataclasses.asdict(policy), "every": every,
                             "request_capacity": request_capacity, "worker_resources": resources})
    return ChildSpec(id=pool.id, supervisor=pool), scaler


def start_pool(name: str, worker: type, *, queue: str, data_dir: Any, policy: ScalePolicy | None = None,
               init: dict[str, Any] | None = None, config: Any = None, every: float = 1.0,
               request_capacity: bool = False, ray_options: dict[str, Any] | None = None,
               **supervisor: Any) -> SupervisorRef:
    """Start the pool tree ``name`` (module docstring) whose workers pull from ``queue``; its root's ref.

    ``worker``: a ``QueueWorker`` subclass; ``init``: more of its constructor's
    arguments (``batch``, ``lease_seconds``...); ``config``: its ``AgentConfig``;
    ``ray_options``: where its workers go (``{"resources": {"agent_host": 1}}``, a scheduling
    strategy...; what ``request_capacity`` asks for per worker).
    ``supervisor``: ``start_supervisor``'s other arguments (``checkpoint_dir``,
    ``notifiers``, ``namespace``, ``detached``).  The pool starts empty; the
    scaler's first look grows it to ``policy.min_size``.
    """
    children = pool_children(name, worker, queue=queue, policy=policy, init=init, config=config, every=every,
                             request_capacity=request_capacity, ray_options=ray_options)
    return start_supervisor(SupervisorSpec(id=name, children=children), data_dir=data_dir, **supervisor)
