"""The SparePool on its own: fake spares (handles), a fake spawn and kill, a fake port for the supervisor.

No Ray, no actor.  A spare is ready once its ``describe`` answers; a test
holds that answer back (an asyncio.Event) to catch a spare mid-start.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from supervisors import ChildSpec
from supervisors._lifecycle import SupervisorState
from supervisors._standby import SparePool
from tests.agents import Counter
from tests.supervisor_fakes import FakeHandle, FakePort

PINNED = {"resources": {"gpu_box": 1}}


class Spares:
    """Fake spawn and kill: spawned spares are numbered; ``hold`` keeps each new one starting until set."""

    def __init__(self, fail: int = 0) -> None:
        self.spawned: list[FakeHandle] = []
        self.killed: list[FakeHandle] = []
        self.options: list[dict[str, Any]] = []
        self.fail = fail
        self.hold: asyncio.Event | None = None
        self._lock = threading.Lock()  # spawn runs in a thread

    def spawn(self, *, ray_options: dict[str, Any]) -> FakeHandle:
        with self._lock:
            self.options.append(ray_options)
            if self.fail:
                self.fail -= 1
                raise RuntimeError("no room on the node")
            n = len(self.spawned)
            hold = self.hold

            async def describe() -> dict[str, Any]:
                if hold is not None:
                    await hold.wait()
                return {"state": "spare"}

            spare = FakeHandle(f"spare-{n}", describe=describe, probe=lambda: {"state": "spare", "pid": 100 + n})
            self.spawned.append(spare)
            return spare

    def kill(self, spare: FakeHandle) -> None:
        self.killed.append(spare)


def pool(port: FakePort, spares: Spares, target: int = 2, options: dict[str, Any] | None = None) -> SparePool:
    return SparePool(port.port(), target=target, options=PINNED if options is None else options,
                     spawn=spares.spawn, kill=spares.kill)


async def settle(port: FakePort) -> None:
    """Wait for every task the pool started so far (and those they started)."""
    while not all(t.done() for t in port.tasks):
        await asyncio.gather(*port.tasks)


def spec(child_id: str = "a", ray_options: dict[str, Any] | None = None) -> ChildSpec:
    return ChildSpec(id=child_id, agent=Counter, ray_options=PINNED if ray_options is None else ray_options)


def test_a_running_supervisor_keeps_its_target_of_spares_placed_as_its_first_agent():
    async def go() -> None:
        port, spares = FakePort(), Spares()
        p = pool(port, spares, target=2)
        p.replenish()
        p.replenish()  # two are starting already: none more
        assert len(port.tasks) == 2
        await settle(port)
        assert p.ready == 2 and len(spares.spawned) == 2
        assert spares.options == [PINNED, PINNED]
        p.replenish()
        assert len(port.tasks) == 2, "two ready: none more"

    asyncio.run(go())


def test_no_spare_is_started_unless_the_supervisor_is_running():
    async def go() -> None:
        for state in (SupervisorState.STARTING, SupervisorState.HALTED, SupervisorState.QUARANTINED,
                      SupervisorState.STOPPING, SupervisorState.STOPPED):
            port, spares = FakePort(state), Spares()
            pool(port, spares).replenish()
            assert port.tasks == [] and spares.spawned == [], state

    asyncio.run(go())


def test_taking_a_spare_hands_out_the_oldest_and_starts_a_replacement():
    async def go() -> None:
        port, spares = FakePort(), Spares()
        p = pool(port, spares, target=2)
        p.replenish()
        await settle(port)
        first, second = spares.spawned
        assert p.take(spec()) is first
        assert p.ready == 1 and len(port.tasks) == 3, "a replacement is starting"
        await settle(port)
        assert p.ready == 2
        assert p.take(spec("b")) is second

    asyncio.run(go())


def test_a_child_placed_otherwise_than_the_spares_gets_none_and_starts_cold():
    async def go() -> None:
        port, spares = FakePort(), Spares()
        p = pool(port, spares, target=1)
        p.replenish()
        await settle(port)
        assert p.take(spec(ray_options={})) is None
        assert p.take(spec(ray_options={"resources": {"gpu_box": 2}})) is None
        assert p.ready == 1, "the spare is kept for a child placed alike"
        assert p.take(spec(ray_options={"resources": {"gpu_box": 1}})) is spares.spawned[0]

    asyncio.run(go())


def test_with_no_spare_ready_a_child_gets_none():
    async def go() -> None:
        port, spares = FakePort(), Spares()
        spares.hold = asyncio.Event()
        p = pool(port, spares, target=1)
        assert p.take(spec()) is None
        p.replenish()
        assert p.take(spec()) is None, "one starting is not ready"
        spares.hold.set()
        await settle(port)
        assert p.take(spec()) is spares.spawned[0]

    asyncio.run(go())


def test_a_spare_ready_after_the_supervisor_left_running_is_killed_not_kept():
    async def go() -> None:
        port, spares = FakePort(), Spares()
        spares.hold = asyncio.Event()
        p = pool(port, spares, target=2)
        p.replenish()
        while len(spares.spawned) < 2:  # both spawned (in threads), their describe held back
            await asyncio.sleep(0)
        port.state = SupervisorState.STOPPING
        spares.hold.set()
        await settle(port)
        assert p.ready == 0
        assert sorted(s.name for s in spares.killed) == ["spare-0", "spare-1"]

    asyncio.run(asyncio.wait_for(go(), 10))


def test_a_spare_that_fails_to_start_is_reported_and_started_again_on_the_next_replenish():
    async def go() -> None:
        port, spares = FakePort(), Spares(fail=1)
        p = pool(port, spares, target=1)
        p.replenish()
        await settle(port)
        assert p.ready == 0
        assert port.events == [("spare_failed", None, "supervisor", "RuntimeError: no room on the node")]
        p.replenish()
        await settle(port)
        assert p.ready == 1

    asyncio.run(go())


def test_kill_all_kills_every_ready_spare():
    async def go() -> None:
        port, spares = FakePort(), Spares()
        p = pool(port, spares, target=3)
        p.replenish()
        await settle(port)
        p.kill_all()
        assert p.ready == 0 and spares.killed == spares.spawned

    asyncio.run(go())


def test_describe_lists_the_ready_spares_as_their_probes_answer():
    async def go() -> list[dict[str, Any]]:
        port, spares = FakePort(), Spares()
        p = pool(port, spares, target=2)
        p.replenish()
        await settle(port)
        return await p.describe()

    assert sorted(s["pid"] for s in asyncio.run(go())) == [100, 101]


def test_no_target_no_spares():
    async def go() -> None:
        port, spares = FakePort(), Spares()
        p = pool(port, spares, target=0)
        p.replenish()
        assert port.tasks == [] and p.take(spec()) is None

    asyncio.run(go())
