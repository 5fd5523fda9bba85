"""A fleet budget shared by three agents acting at once, on a real Ray: never overspent."""

from __future__ import annotations

import threading
import uuid

import pytest

from runtime import AgentConfig, FleetBudget
from runtime import FleetUsage

from .gov_agents import Act, Clerk
from .waiting import wait_for

pytestmark = pytest.mark.ray


def test_three_agents_drawing_from_one_fleet_budget_never_overspend_it(system, tmp_path):
    tag = uuid.uuid4().hex[:6]
    fleet = system.spawn(FleetBudget, f"fleet-{tag}", init={"limit": 10.0})
    config = AgentConfig(grants=("payments.refund",), fleet_budget=fleet.agent_id)
    clerks = [system.spawn(Clerk, f"clerk{i}-{tag}", config=config) for i in range(3)]
    log = tmp_path / "calls"
    outcomes: list[dict] = []
    lock = threading.Lock()

    def spend(clerk, n: int) -> None:
        for j in range(12):  # each refund of 70 is estimated (and charged) 0.70
            got = clerk.ask(Act(actions=[{"kind": "refund", "order": f"{n}-{j}", "amount": 70, "log": str(log)}]),
                            timeout=60)
            with lock:
                outcomes.extend(got)

    threads = [threading.Thread(target=spend, args=(c, i)) for i, c in enumerate(clerks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = [o["code"] for o in outcomes]
    assert len(codes) == 36 and set(codes) <= {"ok", "budget_exceeded"}
    # 10.0 / 0.70: 14 fit; the 15th and every later one is refused before its tool runs.
    assert codes.count("ok") == 14, codes
    assert len(log.read_text().splitlines()) == 14
    wait_for(lambda: fleet.ask(FleetUsage())["reserved"] == 0)  # every reservation settled
    final = fleet.ask(FleetUsage())
    assert final["spent"] == pytest.approx(14 * 0.70) and final["spent"] <= final["limit"]
    refused = [o for o in outcomes if o["code"] == "budget_exceeded"]
    assert all("fleet budget" in o["reason"] for o in refused)
