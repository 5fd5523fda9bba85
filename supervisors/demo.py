"""``garrison demo``: the customer-service chain from the source article, as a pipeline.

Four stages, each a plain deterministic Python decision function over the ticket (no model, nothing
leaves the machine), each a work queue with a pool of workers that sizes itself on it
(``start_pipeline``)::

    classify ──► gather ──► draft ──► review ──► (payments: refunds, account closures)

and the governance around what ``payments`` does in the world: a refund is an action
(``IssueRefund``) through its gateway, low risk up to 50 EUR and high risk (human approval, through
an ``ApprovalQueue`` agent) above; its budget trips once the refunds it paid pass 400 EUR; closing
an account is prohibited and refused.  The review stage hands each refund or account request to
``payments`` through its outbox (sent once its review commits); ``payments`` acts with the ticket
as idempotency key, so a ticket reviewed twice (its first reviewer killed before reporting) is paid
once.  After the tickets, the demo approves the pending refunds through ``Approvals`` (what
``garrison approvals approve`` calls), the decisions resume the refunds, and the payments book shows
each ticket refunded at most once.

Half-way through, the demo SIGKILLs a ``draft`` worker's process.  Its supervisor starts it again
(its state restored from its LMDB), the tickets it held come back to the pool when their leases
expire, and every ticket goes through each stage exactly once (each finished ticket's trail names
the four stages once).  The demo then prints each stage's counts, the end-to-end latency, and what
``payments`` did.  Run it again on the same data directory: the queues and ``payments`` resume.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

from pydantic import BaseModel

from governance import Action, BudgetPolicy, Risk, RiskPolicy
from protocols import Message
from runtime import Agent, ApprovalDecided, ApprovalQueue, Approvals, RetryPolicy, System, handler
from runtime.cli import progress_bar
from runtime.pipelines import Stage

from ._autoscale import ScalePolicy
from ._pipeline import StageSpec, start_pipeline
from ._ref import SupervisorRef

__all__ = ["main", "run"]

CATEGORIES = {
    "refund": ("refund", "money back", "charge"),
    "shipping": ("late", "shipping", "tracking", "delivery"),
    "account": ("password", "login", "account"),
}
ORDERS = {f"A{n:03d}": {"status": ("shipped", "processing", "delivered")[n % 3], "total": 10 + 7 * n}
          for n in range(200)}
#: Refunds above this many EUR need a person's approval.
APPROVE_ABOVE = 50
#: What ``payments`` may refund in all, in EUR: its budget.
REFUND_BUDGET = 400.0
BANNED = ("guarantee", "lawsuit")
#: Every demo agent's config: frequent checkpoints and shipping, so a short run shows them.
FAST = {"checkpoint_interval": 2.0, "ship_interval": 0.5}


class Settle(Message, name="demo.settle"):
    """From the review stage to ``payments``: do what the ticket asks of the world (governed)."""

    ticket_id: str
    order_id: str
    category: str
    total: int
    text: str


class Stats(Message, name="demo.stats"):
    pass


class IssueRefund(Action, name="demo.refund", capability="payments.refund", idempotent=False,
                  risk=lambda a: Risk.HIGH if a.amount > APPROVE_ABOVE else Risk.LOW, cost=lambda a: float(a.amount)):
    """Pay money back: the one thing in this demo that touches the world."""

    ticket_id: str
    order: str
    amount: int
    book: str  # the payments system of record: an append-only file


class CloseAccount(Action, name="demo.close_account", capability="accounts.close", risk=Risk.PROHIBITED):
    """Prohibited: no agent closes accounts, whatever anyone approves."""

    ticket_id: str


def issue_refund(action: IssueRefund) -> dict:
    with open(action.book, "a") as book:
        book.write(f"{action.ticket_id} {action.order} {action.amount}\n")
    return {"refunded": action.amount}


def close_account(action: CloseAccount) -> None:
    raise AssertionError("a prohibited action reached its tool")


class Tally(BaseModel):
    settled: int
    by_outcome: dict[str, int]


def classify(text: str) -> str:
    lowered = text.lower()
    for category, words in CATEGORIES.items():
        if any(w in lowered for w in words):
            return category
    return "other"


class Classify(Stage):
    """Stage 1: the ticket's category, from its words."""

    def handle(self, data: dict) -> dict:
        return {**data, "category": classify(data["text"])}


class Gather(Stage):
    """Stage 2: looks the order up in the (simulated) internal systems."""

    def handle(self, data: dict) -> dict:
        order = ORDERS.get(data["order_id"], {"status": "unknown", "total": 0})
        return {**data, "status": order["status"], "total": order["total"]}


class Draft(Stage):
    """Stage 3: fills a reply template per category."""

    def handle(self, data: dict) -> dict:
        templates = {
            "refund": f"We have refunded {data['total']} EUR for order {data['order_id']}.",
            "shipping": f"Order {data['order_id']} is {data['status']}; tracking follows by mail.",
            "account": "We have sent you a link to reset your password.",
            "other": f"Thank you, a specialist will look at order {data['order_id']}.",
        }
        return {**data, "reply": templates[data["category"]]}


class Review(Stage):
    """Stage 4: quality rules (anything doubtful is marked for a person); hands refunds and account
    requests to ``payments``, through the outbox: sent once the ticket's review commits, once."""

    def handle(self, data: dict) -> dict:
        doubtful = any(b in data["reply"].lower() for b in BANNED) or "refunded" in data["reply"]
        if data["category"] in ("refund", "account"):
            self.send(self.payments, Settle(ticket_id=data["ticket_id"], order_id=data["order_id"],
                                            category=data["category"], total=data["total"], text=data["text"]))
        return {**data, "verdict": "needs_human" if doubtful else "approved"}

    def __init__(self, payments: str = "payments", **stage) -> None:
        super().__init__(**stage)
        self.payments = payments


class Payments(Agent):
    """Acts on tickets in the world, governed: refunds (through its gateway) and account closures (refused)."""

    tools = {IssueRefund: issue_refund, CloseAccount: close_account}  # noqa: RUF012

    def __init__(self, book: str = "payments.book") -> None:
        self.book = book

    @handler
    async def settle(self, msg: Settle) -> str:
        if msg.category == "refund":
            action = IssueRefund(ticket_id=msg.ticket_id, order=msg.order_id, amount=msg.total, book=self.book)
            outcome = await self.act(action, key=f"refund/{msg.ticket_id}", context=f"ticket {msg.ticket_id}: {msg.text!r}")
            self.state.increment(f"refund/{outcome.code.value}")
        else:
            outcome = await self.act(CloseAccount(ticket_id=msg.ticket_id), key=f"close/{msg.ticket_id}")
            self.state.increment(f"close_account/{outcome.code.value}")
        self.state.increment("settled")
        return outcome.code.value

    @handler
    async def decided(self, msg: ApprovalDecided) -> None:
        """A person decided a refund: resume it (the gateway checks the approval with the queue)."""
        outcome = await self.act(msg.action(), approval=msg.approval_id)
        self.state.increment(f"approved_refund/{outcome.code.value}")

    @handler
    def stats(self, msg: Stats) -> dict:
        return {"settled": self.state.get("settled", 0), **dict(self.state.scan("refund/")),
                **dict(self.state.scan("approved_refund/")), **dict(self.state.scan("close_account/"))}

    def summary(self, state):
        return Tally(settled=state.get("settled", 0),
                     by_outcome={k: v for k, v in state.scan("") if k.startswith(("refund/", "close_account/"))})


TEXTS = (
    "I want my money back for the charge",
    "My parcel is late, where is the tracking?",
    "I cannot login to my account",
    "Question about my order",
)


def stages() -> list[StageSpec]:
    """The chain: each stage a queue and a pool of one or two workers sized on it; short leases, so a
    ticket whose worker is killed is taken up again within seconds."""
    pool = ScalePolicy(min_size=1, max_size=2, target_wait=2.0, items_per_worker=20)
    retry = RetryPolicy(base=0.2, max=2.0, max_attempts=5)
    work = {"batch": 4, "lease_seconds": 3.0, "idle_wait": 0.05}
    return [StageSpec(name, cls, scale=pool, retry=retry, init=work, config=FAST, queue_config=FAST)
            for name, cls in (("classify", Classify), ("gather", Gather), ("draft", Draft), ("review", Review))]


def run(data_dir: str = "./garrison-data", tickets: int = 40, out=None, *, dashboard: bool = False,
        hold: float | None = None) -> dict[str, dict]:
    """Run the demo; returns what the tests check (the pipeline's status, ``payments``' stats, the book).

    ``dashboard``: start Ray's dashboard too, print its URL, and keep the agents up after the run
    for ``hold`` seconds (None: until Ctrl-C) so they can be looked at.
    """

    def say(line: str) -> None:
        # ``sys.stdout`` looked up at each line: under the progress bar it is rich's proxy (lines above the bar).
        print(line, file=out if out is not None else sys.stdout, flush=True)

    t0 = time.time()
    say(f"garrison demo: starting an embedded local Ray, data in {Path(data_dir).resolve()}")
    ray_init = {"include_dashboard": True, "dashboard_host": "127.0.0.1"} if dashboard else None
    with System(data_dir, create=True, ray_init=ray_init) as system:
        if dashboard:
            say(f"  Ray's dashboard: {system.dashboard_url} (it asks for Ray's token: `ray get-auth-token`); "
                f"agents are actors named by their id in the namespace 'garrison'")
        book = Path(data_dir).resolve() / "payments.book"
        system.spawn(ApprovalQueue, "approvals", config=FAST)
        governed = {**FAST, "grants": ["payments.refund", "accounts.close"], "approvals": "approvals",
                    "risk_policy": RiskPolicy(version="demo-1"), "budget": BudgetPolicy(limit=REFUND_BUDGET)}
        payments = system.spawn(Payments, "payments", config=governed, init={"book": str(book)})
        pipeline = start_pipeline("support", stages(), data_dir=system.data_dir, every=0.5, system=system)
        try:
            before = {"completed": pipeline.status()["completed"], **payments.ask(Stats())}
            say(f"  pipeline 'support' up in {time.time() - t0:.1f}s: classify -> gather -> draft -> review, "
                "each stage a queue and a pool that sizes itself on it; `garrison pipeline status support` shows it")
            with progress_bar("tickets", tickets) as advance:
                killed = _run_tickets(pipeline, tickets, t0, before["completed"], say, advance)
            waiting = _approve_pending(Approvals(system, "approvals"), payments, say)
            return _report(pipeline, payments, book, killed, before, tickets, waiting, say, t0, system.dashboard_url
                           if dashboard else None, hold)
        finally:
            pipeline.stop()


def _run_tickets(pipeline, tickets: int, t0: float, already: int, say, advance) -> dict:
    """Submit the tickets; SIGKILL a ``draft`` worker once half of them are drafted; wait for all of them."""
    submitted = pipeline.submit_many([(f"T{i:04d}-{int(t0)}", {"ticket_id": f"T{i:04d}-{int(t0)}",
                                                                "order_id": f"A{i % 200:03d}",
                                                                "text": TEXTS[i % len(TEXTS)]})
                                      for i in range(tickets)])
    say(f"  {len(submitted)} tickets submitted")
    killed: dict = {}
    done = shown = 0
    deadline = time.monotonic() + 120 + tickets
    while done < tickets and time.monotonic() < deadline:
        status = pipeline.status()
        drafted = status["stages"][2]["done"]
        if not killed and drafted - already >= tickets // 2:
            killed = _kill_a_draft_worker(say)
        done = status["completed"] - already
        advance(done - shown)
        if done // 10 > shown // 10 or done == tickets:
            say(f"  {done:>3}/{tickets} tickets through all four stages; in flight: {status['in_flight']}")
        shown = done
        time.sleep(0.2)
    return killed


def _kill_a_draft_worker(say) -> dict:
    workers = SupervisorRef.lookup("support-draft-workers")
    victim = next(c for c in workers.which_children() if c["state"] == "running")
    os.kill(victim["pid"], signal.SIGKILL)
    say(f"  SIGKILL sent to draft worker {victim['id']} (pid {victim['pid']}) mid-run")
    return {"id": victim["id"], "pid": victim["pid"]}


def _restarted(worker: str, timeout: float = 60.0) -> dict | None:
    """The killed worker as its supervisor lists it once it runs again (None: no longer in the pool)."""
    deadline = time.monotonic() + timeout
    while True:
        child = next((c for c in SupervisorRef.lookup("support-draft-workers").which_children()
                      if c["id"] == worker), None)
        if child is None or (child["state"] == "running" and (child["incarnation"] or 0) >= 2) \
                or time.monotonic() > deadline:
            return child
        time.sleep(0.1)


def _report(pipeline, payments, book: Path, killed: dict, before: dict, tickets: int, waiting: int, say, t0: float,
            url: str | None, hold: float | None) -> dict:
    status = pipeline.status()
    finished = [r["result"] for r in pipeline.finished()]
    run_ids = {t["key"] for t in finished if t["key"].endswith(f"-{int(t0)}")}
    once = len(run_ids) == tickets and all([s["stage"] for s in t["trail"]] == ["classify", "gather", "draft", "review"]
                                           for t in finished)
    redone = sum(t["trail"][2]["attempt"] > 1 for t in finished if t["key"] in run_ids)
    say("  results:")
    for stage in status["stages"]:
        say(f"    {stage['stage']:<9} done={stage['done']:<4} pending={stage['pending']} leased={stage['leased']} "
            f"dead={stage['dead']}")
    lat = status["latency"]
    say(f"    end to end: {status['completed']} tickets completed, latency p50 {lat['p50']:.2f}s, "
        f"p95 {lat['p95']:.2f}s, max {lat['max']:.2f}s")
    victim = {}
    if killed:
        child = _restarted(killed["id"])
        victim = {**killed, "incarnation": child and child["incarnation"]}
        again = (f"its supervisor restarted it (incarnation {victim['incarnation']})" if child
                 else "the pool's scaler has retired it since")
        say(f"  draft worker {killed['id']} was killed; {again}; {redone} of its tickets were drafted again by "
            "the pool, " + ("every ticket through each stage exactly once" if once else "NO - see above"))
    p = payments.ask(Stats())
    status_p = payments.admin.status()
    say(f"  governed: {p.get('refund/ok', 0)} refunds paid at once (50 EUR or less), "
        f"{p.get('refund/pending', 0)} waited for approval: {p.get('approved_refund/ok', 0)} paid, "
        f"{p.get('approved_refund/budget_exceeded', 0)} refused by the {REFUND_BUDGET:.0f} EUR budget; "
        f"{p.get('close_account/refused', 0)} account closures refused (prohibited)")
    refunded = [line.split()[0] for line in book.read_text().splitlines()] if book.exists() else []
    paid_once = len(refunded) == len(set(refunded)) and not waiting
    say(f"  payments book: {len(refunded)} refunds, "
        + ("no ticket refunded twice" if paid_once else f"NO - {len(refunded) - len(set(refunded))} twice, "
           f"{waiting} approvals not executed"))
    say(f"done in {time.time() - t0:.1f}s")
    result = {"ok": bool(once and paid_once and killed), "pipeline": status, "draft_killed": victim,
              "payments": {**p, "incarnation": status_p["incarnation"], "restored_from": status_p["restore"]["source"],
                           "before": before},
              "book": {"refunds": len(refunded), "distinct": len(set(refunded))}}
    if url is not None:
        _hold(url, hold, say)
    return result


def _hold(url: str | None, seconds: float | None, say) -> None:
    """Keep the agents (and the dashboard) up for ``seconds``, or until Ctrl-C (SIGINT) or SIGTERM.

    The handlers are installed here, not left to Python's default: a process started in the
    background by a shell that is not interactive inherits SIGINT ignored, and would never stop.
    """
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    say(f"  the agents stay up for the dashboard at {url}: "
        + ("press Ctrl-C to stop" if seconds is None else f"for {seconds:g}s, or until Ctrl-C"))
    try:
        deadline = None if seconds is None else time.monotonic() + seconds
        while not stop.wait(0.2):  # short waits: the handler runs between them
            if deadline is not None and time.monotonic() >= deadline:
                break
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    say("  stopping")


def _approve_pending(approvals: Approvals, payments, say) -> int:
    """Approve every pending refund, as a person would; wait until each decision was acted on.

    Returns how many approved decisions ``payments`` had not acted on within a minute (0 when all were).
    """
    deadline = time.monotonic() + 60
    pending = []
    while time.monotonic() < deadline:  # each request travels through payments's outbox to the queue
        asked = sum(v for k, v in payments.ask(Stats()).items() if k == "refund/pending")
        pending = approvals.list()
        if len(pending) >= asked - _decided(payments):
            break
        time.sleep(0.1)
    target = _decided(payments) + len(pending)
    for req in pending:
        approvals.approve(req["id"], who="demo-supervisor")
        say(f"  approved refund {req['arguments']['amount']} EUR for {req['arguments']['ticket_id']} "
            f"as 'demo-supervisor' (garrison approvals approve {req['id']} --who demo-supervisor)")
    while _decided(payments) < target and time.monotonic() < deadline:
        time.sleep(0.1)
    return target - _decided(payments)


def _decided(payments) -> int:
    return sum(v for k, v in payments.ask(Stats()).items() if k.startswith("approved_refund/"))


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="garrison demo", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="./garrison-data")
    parser.add_argument("--tickets", type=int, default=40)
    args = parser.parse_args(argv)
    result = run(args.data_dir, args.tickets)
    return 0 if result["ok"] else 1
