"""Pipelines: ``from runtime.pipelines import Stage, Pipeline, ...``.

A pipeline is a chain of stages, each a :class:`~runtime.WorkQueue` pulled by a pool of that stage's
:class:`Stage` agents; a ticket (a dict: ``key``, ``data``, ``trail``) moves from stage to stage
through the agents' durable outboxes, and a ticket a stage gives up on goes to the pipeline's
:class:`PipelineDesk`, for people.  ``supervisors.start_pipeline`` starts one (queues, pools that
scale on each stage's own queue, the desk) under one supervisor; :class:`Pipeline` reads and feeds a
running one by its name (``garrison pipeline status NAME``).  How tickets move and fail:
:mod:`runtime._stage`; the desk: :mod:`runtime._pipeline_desk`.  ``Pipeline`` and
``PipelineError`` are in ``runtime`` too.
"""

from __future__ import annotations

from ._pipeline import Pipeline, latency
from ._pipeline_desk import DescribePipeline, EscalationCounts, Escalations, PipelineDesk, Resolve
from ._stage import Escalate, Stage, ticket
from .exceptions import PipelineError

__all__ = [
    "DescribePipeline",
    "Escalate",
    "EscalationCounts",
    "Escalations",
    "Pipeline",
    "PipelineDesk",
    "PipelineError",
    "Resolve",
    "Stage",
    "latency",
    "ticket",
]
