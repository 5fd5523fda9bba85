"""Approval round trip: from a person's approve to the action's execution, excluding the person.

On a local Ray: a ``Cashier`` agent asks approval for a high-risk ``Pay``
(the request goes to an ``ApprovalQueue`` agent through its outbox); once the
request is in the queue, the driver approves it (``Approvals.approve``, as
``garrison approvals approve`` does) and the clock runs until the cashier's
handler has executed the action, time-stamped in its state: the queue
records the approval, sends ``ApprovalDecided``, the cashier's gateway asks
the queue for the request, checks it, commits the intent, calls the tool and
commits the outcome.  Baseline in the same run: one ``ask`` to the queue (a
plain governed-agent round trip), so the ratio says how many round trips the
approval path costs.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from ._ray import data_dir, ensure_ray, percentile

__all__ = ["run"]


def run(quick: bool = False) -> dict[str, Any]:
    ensure_ray()
    from runtime import AgentConfig, ApprovalQueue, Approvals, System
    from runtime._approvals import ListApprovals

    from ._agents import Cashier, Executed, Request

    n = 20 if quick else 100
    tag = uuid.uuid4().hex[:6]
    with data_dir() as path, System(path) as system:
        queue = system.spawn(ApprovalQueue, f"bench-approvals-{tag}")
        cashier = system.spawn(Cashier, f"bench-cashier-{tag}", config=AgentConfig(
            grants=("payments.refund",), approvals=queue.agent_id))
        approvals = Approvals(system, queue.agent_id)
        round_trips, asks = [], []
        for i in range(n + 5):
            approval_id = cashier.ask(Request(order=f"o{i}"))
            while not any(r["id"] == approval_id for r in approvals.list()):
                time.sleep(0.001)
            t0 = time.time()
            approvals.approve(approval_id, who="bench")
            while (done := cashier.ask(Executed(approval_id=approval_id))) is None:
                time.sleep(0.001)
            assert done[0] == "ok", done
            a0 = time.perf_counter()
            queue.ask(ListApprovals(state="approved", limit=1))
            if i >= 5:  # the first few warm up
                round_trips.append(done[1] - t0)
                asks.append(time.perf_counter() - a0)
    p50, ask50 = percentile(round_trips, 50), percentile(asks, 50)
    return {
        "approvals": n,
        "approve_to_execution_ms_p50": round(p50 * 1e3, 2),
        "approve_to_execution_ms_p95": round(percentile(round_trips, 95) * 1e3, 2),
        "baseline_ask_ms_p50": round(ask50 * 1e3, 2),
        "round_trip_over_ask": round(p50 / ask50, 1),
        "aim": "under 50 ms from approve to execution",
    }
