"""Contract-net agents for ``tests/test_contract_net.py``, importable by Ray's workers."""

from __future__ import annotations

import os
import time
from typing import Any

from runtime import handler
from runtime.contracts import Award, CallForProposals, ContractManager, Contractor


class Manager(ContractManager):
    """A plain manager: bidders and policy come with ``init``."""


class Worker(Contractor):
    """Performs a task by answering who did it (deterministic)."""

    def perform(self, task: Any) -> Any:
        return {"by": self.agent_id, "task": task}


class Patient(Worker):
    """Its work lasts until ``task["not_before"]`` (a Unix time): past the deadline of whoever announced it."""

    def perform(self, task: Any) -> Any:
        while time.time() < task["not_before"]:
            time.sleep(0.05)
        return super().perform(task)


class Silent(Worker):
    """Never answers a call for proposals: the manager's bid deadline has to pass."""

    @handler
    def called(self, msg: CallForProposals) -> None:
        self.log.info("silent: ignoring the CFP of %s", msg.task_id)


class HangOnAward(Worker):
    """Its first incarnation to get an award hangs there (after writing ``<marker_dir>/<id>``) until
    it is SIGKILLed; later incarnations handle awards normally."""

    def __init__(self, marker_dir: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.marker_dir = marker_dir

    @handler
    async def awarded(self, msg: Award) -> None:
        try:
            os.close(os.open(os.path.join(self.marker_dir, self.agent_id), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            await super().awarded(msg)
            return
        time.sleep(600)  # noqa: ASYNC251 - the whole agent "stuck" before committing: the test SIGKILLs it
