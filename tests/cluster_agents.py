"""Agents of the ``ray start`` cluster scenario (importable by Ray workers on every node of its cluster).

``EffectWriter`` is a queue worker whose work has an effect outside the agent: one file per item,
created with ``O_EXCL`` in a directory every node sees.  The effect is idempotent by item id, as
``runtime.queue.QueueWorker`` asks of such work: an item done again (another worker took it over
once a lost worker's lease expired, or its done-record was lost with its node) finds its file and
leaves it as it is.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from runtime import WorkQueue, handler
from runtime.queue import QueueWorker

from .node_agents import Where

#: Where the repeats of an item's work leave a trace (``<effects>/again/<item>.<uuid>``): for the report.
AGAIN = "again"


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


class EffectWriter(QueueWorker):
    """Sleeps ``work_s`` (the work), then creates ``<effects>/<key>`` once; answers which node did it."""

    def __init__(self, queue: str, effects: str, work_s: float = 0.05, **pulling: Any) -> None:
        super().__init__(queue, **pulling)
        self.effects = Path(effects)
        self.work_s = work_s

    def work(self, payload: Any) -> dict[str, Any]:
        time.sleep(self.work_s)  # stands in for the real work (I/O bound: no CPU taken from a busy machine)
        key, node = payload["key"], _node_id()
        # Invariant: at most one file per item, whatever number of times its work runs (O_EXCL).
        try:
            fd = os.open(self.effects / key, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            (self.effects / AGAIN / f"{key}.{uuid.uuid4().hex[:8]}").write_text(node)
            return {"key": key, "node": node, "pid": os.getpid(), "again": True}
        with os.fdopen(fd, "w") as f:
            json.dump({"node": node, "pid": os.getpid(), "agent": self.agent_id}, f)
        return {"key": key, "node": node, "pid": os.getpid(), "again": False}

    @handler
    def where(self, msg: Where) -> dict[str, Any]:
        return {"node": _node_id(), "pid": os.getpid()}


class PlacedQueue(WorkQueue):
    """A ``WorkQueue`` that also says where it runs."""

    @handler
    def where(self, msg: Where) -> dict[str, Any]:
        return {"node": _node_id(), "pid": os.getpid()}
