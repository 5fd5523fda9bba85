"""Pipelines: a chain of stages, each a work queue pulled by its own autoscaled pool (``start_pipeline``).

``start_pipeline(name, [StageSpec("classify", Classify), ...])`` starts one supervision tree::

    <name>                    one_for_one
    ├── <name>-desk           PipelineDesk: the stages, and the tickets given up on, for people
    ├── <name>-<stage>-queue  WorkQueue, with the stage's RetryPolicy          (one per stage)
    ├── <name>-<stage>-workers  the stage's pool (simple_one_for_one of its Stage class)
    └── <name>-<stage>-scaler   the stage's PoolScaler, on its queue, with its ScalePolicy

so each stage scales on its own bottleneck (its queue's depth and wait), retries by its own policy,
and is watched like any agent.  How a ticket moves from stage to stage, and what happens when one
fails, is :mod:`runtime._stage`'s; reading the pipeline (submit, status, where a ticket is,
escalations) is :class:`runtime.Pipeline`'s.  The desk and queues start first (the workers pull from
the queues as soon as they start), each stage's workers next.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from runtime import NAMESPACE, Pipeline, RetryPolicy, System
from runtime.pipelines import PipelineDesk, Stage
from runtime.queue import WorkQueue

from ._autoscale import ScalePolicy
from ._pool import pool_children
from ._ref import start_supervisor
from ._spec import ChildSpec, SupervisorFlags, SupervisorSpec
from .exceptions import SpecError

__all__ = ["StageSpec", "start_pipeline"]


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """One stage: its name, its ``Stage`` class, how its pool scales and how its items are retried.

    ``escalate``: on the last attempt, a failing ticket goes to the pipeline's desk for a person
    (else it is dead in the stage's queue).  ``init``: more of the worker's constructor arguments
    (``batch``, ``lease_seconds``...); ``config``: its ``AgentConfig``; ``queue_config``: the
    stage queue's.  ``forget_after``: seconds after which the stage queue forgets a done ticket
    (``WorkQueue``'s; None: never), so a long-running pipeline's queues stop growing with every
    ticket; a key submitted again after that is a new ticket.
    """

    name: str
    worker: type
    scale: ScalePolicy = dataclasses.field(default_factory=ScalePolicy)
    retry: RetryPolicy = dataclasses.field(default_factory=RetryPolicy)
    escalate: bool = True
    init: dict[str, Any] = dataclasses.field(default_factory=dict)
    config: Any = None
    queue_config: Any = None
    #: Where the stage's workers go (``ChildSpec.ray_options``: resources, a scheduling strategy).
    ray_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    forget_after: float | None = None


def _check(name: str, stages: Sequence[StageSpec]) -> None:
    if not stages:
        raise SpecError(f"pipeline {name!r} has no stages")
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise SpecError(f"pipeline {name!r}: stage names repeat: {names}")
    for stage in stages:
        if not (isinstance(stage.worker, type) and issubclass(stage.worker, Stage)):
            raise SpecError(f"pipeline {name!r}, stage {stage.name!r}: {stage.worker!r} is not a runtime.pipelines.Stage")
        if stage.forget_after is not None and not stage.forget_after > 0:
            raise SpecError(f"pipeline {name!r}, stage {stage.name!r}: forget_after must be positive seconds or None")


def pipeline_spec(name: str, stages: Sequence[StageSpec], *, every: float = 1.0,
                  request_capacity: bool = False) -> SupervisorSpec:
    """The pipeline's supervision tree (module docstring), checked."""
    _check(name, stages)
    queues = [f"{name}-{s.name}-queue" for s in stages]
    described = [{"name": s.name, "queue": q, "attempts": s.retry.max_attempts, "escalate": s.escalate}
                 for s, q in zip(stages, queues, strict=True)]
    desk = ChildSpec(id=f"{name}-desk", agent=PipelineDesk, init={"pipeline": name, "stages": described})
    children: list[ChildSpec] = [desk]
    for stage, queue in zip(stages, queues, strict=True):
        # Only the last stage's results are read (``Pipeline.results``, dropped by ``Pipeline.ack``):
        # an inner queue's item is done only after its worker committed the ticket's hand-over to
        # the next queue (in its durable outbox) or the desk has it, so that queue keeps no copy.
        children.append(ChildSpec(id=queue, agent=WorkQueue, init={"policy": dataclasses.asdict(stage.retry),
                                                                   "keep_results": queue == queues[-1],
                                                                   "forget_after": stage.forget_after},
                                  **({"config": stage.queue_config} if stage.queue_config is not None else {})))
    for i, (stage, queue) in enumerate(zip(stages, queues, strict=True)):
        last = i == len(stages) - 1
        init = {"stage": stage.name, "desk": desk.id, "attempts": stage.retry.max_attempts,
                "escalate": stage.escalate, "next": None if last else queues[i + 1],
                "next_attempts": None if last else stages[i + 1].retry.max_attempts, **stage.init}
        children.extend(pool_children(f"{name}-{stage.name}", stage.worker, queue=queue, policy=stage.scale,
                                      init=init, config=stage.config, every=every,
                                      request_capacity=request_capacity, ray_options=stage.ray_options))
    # The desk, queues and pools do not need each other up to start (workers retry their claims): four
    # at a time.  Ten restarts in ten seconds before the pipeline gives up, as for a pool's workers.
    flags = SupervisorFlags(intensity=10, period=10.0, start_concurrency=4)
    return SupervisorSpec(id=name, flags=flags, children=tuple(children))


def start_pipeline(name: str, stages: Sequence[StageSpec], *, data_dir: Any, every: float = 1.0,
                   request_capacity: bool = False, system: System | None = None, **supervisor: Any) -> Pipeline:
    """Start the pipeline ``name`` (module docstring); a :class:`runtime.Pipeline` on it.

    ``supervisor``: ``start_supervisor``'s other arguments (``checkpoint_dir``, ``notifiers``,
    ``namespace``, ``detached``).  ``system``: the driver's ``System`` (its ``lookup`` reaches the
    agents; by default one on ``data_dir`` joining the running Ray).  The handle holds the root
    supervisor (``pipeline.root``, also ``SupervisorRef.lookup(name)``): unless ``detached``, the
    pipeline lives while the handle does; ``pipeline.stop()`` stops it.
    """
    root = start_supervisor(pipeline_spec(name, stages, every=every, request_capacity=request_capacity),
                            data_dir=data_dir, **supervisor)
    system = system or System(data_dir, namespace=supervisor.get("namespace", NAMESPACE))
    return Pipeline(name, system.lookup, root=root)
