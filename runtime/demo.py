"""``garrison demo``: the customer-service chain from the source article.

Four agents, each a plain deterministic Python decision function over typed
messages (no model, nothing leaves the machine):

    intake --classify--> gather --facts--> draft --reply--> review

and the governance around what ``intake`` does in the world: a refund is an
action (``IssueRefund``) through its gateway, low risk up to 50 EUR and high
risk (human approval, through an ``ApprovalQueue`` agent) above; its budget
trips once the refunds it paid pass 400 EUR; closing an account is
prohibited and refused.  After the tickets, the demo approves the pending
refunds through ``Approvals`` (what ``garrison approvals approve`` calls),
the decisions resume the refunds, and the payments book shows each ticket
refunded at most once.

``intake`` orchestrates: for each ticket it classifies, then asks ``gather``,
``draft`` and ``review`` in turn, and records the outcome.  Half-way through,
the demo SIGKILLs the ``draft`` agent's process.  Ray starts a new process,
the host restores ``draft``'s state from its LMDB, the in-flight ask is sent
again with the same message id, and the effectively-once record makes sure
no ticket is drafted twice.  The demo then prints each agent's counts, its
incarnation and where its state came from.
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

from ._agent import Agent, handler
from ._approvals import ApprovalDecided, ApprovalQueue, Approvals
from ._console import progress
from ._system import System

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
#: What intake may refund in all, in EUR: its budget.
REFUND_BUDGET = 400.0
BANNED = ("guarantee", "lawsuit")


class Ticket(Message, name="demo.ticket"):
    ticket_id: str
    order_id: str
    text: str


class Classified(Message, name="demo.classified"):
    ticket_id: str
    order_id: str
    category: str


class Facts(Message, name="demo.facts"):
    ticket_id: str
    category: str
    facts: dict[str, str | int]


class Draft(Message, name="demo.draft"):
    ticket_id: str
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
    handled: int
    by_outcome: dict[str, int]


def classify(text: str) -> str:
    lowered = text.lower()
    for category, words in CATEGORIES.items():
        if any(w in lowered for w in words):
            return category
    return "other"


class Intake(Agent):
    """Classifies a ticket, walks it through gather, draft and review, and acts on it (governed)."""

    tools = {IssueRefund: issue_refund, CloseAccount: close_account}  # noqa: RUF012

    def __init__(self, book: str = "payments.book") -> None:
        self.book = book

    @handler
    async def ticket(self, msg: Ticket) -> str:
        category = classify(msg.text)
        facts = await self.lookup("gather").ask_async(Classified(ticket_id=msg.ticket_id, order_id=msg.order_id, category=category))
        draft = await self.lookup("draft").ask_async(Facts(ticket_id=msg.ticket_id, category=category, facts=facts))
        verdict = await self.lookup("review").ask_async(Draft(ticket_id=msg.ticket_id, text=draft))
        if category == "refund":
            action = IssueRefund(ticket_id=msg.ticket_id, order=msg.order_id, amount=facts["total"], book=self.book)
            outcome = await self.act(action, context=f"ticket {msg.ticket_id}: {msg.text!r}")
            self.state.increment(f"refund/{outcome.code.value}")
        elif category == "account":
            outcome = await self.act(CloseAccount(ticket_id=msg.ticket_id))
            self.state.increment(f"close_account/{outcome.code.value}")
        self.state.increment("handled")
        self.state.increment(f"outcome/{verdict}")
        self.state.put(f"ticket/{msg.ticket_id}", {"category": category, "verdict": verdict})
        return verdict

    @handler
    async def decided(self, msg: ApprovalDecided) -> None:
        """A person decided a refund: resume it (the gateway checks the approval with the queue)."""
        outcome = await self.act(msg.action(), approval=msg.approval_id)
        self.state.increment(f"approved_refund/{outcome.code.value}")

    @handler
    def stats(self, msg: Stats) -> dict:
        return {"handled": self.state.get("handled", 0), **dict(self.state.scan("outcome/")),
                **dict(self.state.scan("refund/")), **dict(self.state.scan("approved_refund/")),
                **dict(self.state.scan("close_account/"))}

    def summary(self, state):
        return Tally(
            handled=state.get("handled", 0),
            by_outcome={k.removeprefix("outcome/"): v for k, v in state.scan("outcome/")},
        )


class Gather(Agent):
    """Looks the order up in the (simulated) internal systems."""

    @handler
    def classified(self, msg: Classified) -> dict:
        self.state.increment("handled")
        order = ORDERS.get(msg.order_id, {"status": "unknown", "total": 0})
        return {"order": msg.order_id, "status": order["status"], "total": order["total"]}

    @handler
    def stats(self, msg: Stats) -> dict:
        return {"handled": self.state.get("handled", 0)}


class Drafter(Agent):
    """Fills a reply template per category; remembers every ticket it drafted."""

    @handler
    def facts(self, msg: Facts) -> str:
        if self.state.get(f"drafted/{msg.ticket_id}") is not None:
            self.state.increment("drafted_twice")  # must never happen: effectively-once
        self.state.put(f"drafted/{msg.ticket_id}", True)
        self.state.increment("handled")
        f = msg.facts
        templates = {
            "refund": f"We have refunded {f['total']} EUR for order {f['order']}.",
            "shipping": f"Order {f['order']} is {f['status']}; tracking follows by mail.",
            "account": "We have sent you a link to reset your password.",
            "other": f"Thank you, a specialist will look at order {f['order']}.",
        }
        return templates[msg.category]

    @handler
    def stats(self, msg: Stats) -> dict:
        return {"handled": self.state.get("handled", 0), "drafted_twice": self.state.get("drafted_twice", 0)}


class Reviewer(Agent):
    """Applies quality rules; anything doubtful goes to a human."""

    @handler
    def draft(self, msg: Draft) -> str:
        self.state.increment("handled")
        if any(b in msg.text.lower() for b in BANNED) or "refunded" in msg.text:
            verdict = "needs_human"  # refunds are high-risk: human approval
        else:
            verdict = "approved"
        self.state.increment(f"verdict/{verdict}")
        return verdict

    @handler
    def stats(self, msg: Stats) -> dict:
        return {"handled": self.state.get("handled", 0), **dict(self.state.scan("verdict/"))}


TEXTS = (
    "I want my money back for the charge",
    "My parcel is late, where is the tracking?",
    "I cannot login to my account",
    "Question about my order",
)


def run(data_dir: str = "./garrison-data", tickets: int = 40, out=None, *, dashboard: bool = False,
        hold: float | None = None) -> dict[str, dict]:
    """Run the demo; returns each agent's final stats (the tests check them).

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
        fast = {"checkpoint_interval": 2.0, "ship_interval": 0.5}
        book = Path(data_dir).resolve() / "payments.book"
        system.spawn(ApprovalQueue, "approvals", config=fast)
        governed = {**fast, "grants": ["payments.refund", "accounts.close"], "approvals": "approvals",
                    "risk_policy": RiskPolicy(version="demo-1"), "budget": BudgetPolicy(limit=REFUND_BUDGET)}
        refs = {
            name: system.spawn(cls, name, config=governed if name == "intake" else fast,
                               init={"book": str(book)} if name == "intake" else None)
            for name, cls in (("gather", Gather), ("draft", Drafter), ("review", Reviewer), ("intake", Intake))
        }
        before = {name: ref.ask(Stats()) for name, ref in refs.items()}
        say(f"  4 agents up in {time.time() - t0:.1f}s: " + ", ".join(refs))
        killed_at = tickets // 2
        with progress("tickets", tickets) as advance:
            _run_tickets(refs, tickets, killed_at, t0, say, advance)
        approvals = Approvals(system, "approvals")
        waiting = _approve_pending(approvals, refs["intake"], say)
        say("  results:")
        final = {}
        for name, ref in refs.items():
            stats = ref.ask(Stats())
            status = ref.admin.status()
            restore = status["restore"]
            final[name] = {**stats, "incarnation": status["incarnation"], "restored_from": restore["source"],
                           "before": before[name]}
            say(
                f"    {name:<7} handled={stats['handled']:<4} incarnation={status['incarnation']} "
                f"restored_from={restore['source']:<10} seq={status['seq']} "
                f"{'  ' + str({k: v for k, v in stats.items() if k != 'handled'}) if len(stats) > 1 else ''}"
            )
        draft = final["draft"]
        ok = draft["incarnation"] >= 2 and draft["drafted_twice"] == 0 and draft["handled"] - before["draft"]["handled"] == tickets
        say(
            "  'draft' was killed and came back with its state: "
            + ("yes, every ticket drafted exactly once" if ok else "NO - see above")
        )
        i = final["intake"]
        say(f"  governed: {i.get('refund/ok', 0)} refunds paid at once (50 EUR or less), "
            f"{i.get('refund/pending', 0)} waited for approval: {i.get('approved_refund/ok', 0)} paid, "
            f"{i.get('approved_refund/budget_exceeded', 0)} refused by the {REFUND_BUDGET:.0f} EUR budget; "
            f"{i.get('close_account/refused', 0)} account closures refused (prohibited)")
        refunded = [line.split()[0] for line in book.read_text().splitlines()] if book.exists() else []
        once = len(refunded) == len(set(refunded)) and not waiting
        say(f"  payments book: {len(refunded)} refunds, "
            + ("no ticket refunded twice" if once else f"NO - {len(refunded) - len(set(refunded))} twice, "
               f"{waiting} approvals not executed"))
        final["book"] = {"refunds": len(refunded), "distinct": len(set(refunded))}  # type: ignore[assignment]
        ok = ok and once
        say(f"done in {time.time() - t0:.1f}s")
        final["ok"] = ok  # type: ignore[assignment]
        if dashboard:
            _hold(system.dashboard_url, hold, say)
        return final


def _run_tickets(refs: dict, tickets: int, killed_at: int, t0: float, say, advance) -> None:
    """The tickets through intake, one at a time; ``draft`` SIGKILLed before ticket ``killed_at``."""
    for i in range(tickets):
        if i == killed_at:
            pid = refs["draft"].admin.status()["pid"]
            os.kill(pid, signal.SIGKILL)
            say(f"  ticket {i}: SIGKILL sent to agent 'draft' (pid {pid}) mid-run")
        verdict = refs["intake"].ask(
            Ticket(ticket_id=f"T{i:04d}-{int(t0)}", order_id=f"A{i % 200:03d}", text=TEXTS[i % len(TEXTS)]),
            timeout=60,
        )
        if (i + 1) % 10 == 0 or i == killed_at:
            say(f"  ticket {i + 1:>3}/{tickets}: {verdict}")
        advance(1)


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


def _approve_pending(approvals: Approvals, intake, say) -> int:
    """Approve every pending refund, as a person would; wait until each decision was acted on.

    Returns how many approved decisions intake had not acted on within a minute (0 when all were).
    """
    deadline = time.monotonic() + 60
    pending = []
    while time.monotonic() < deadline:  # each request travels through intake's outbox to the queue
        asked = sum(v for k, v in intake.ask(Stats()).items() if k == "refund/pending")
        pending = approvals.list()
        if len(pending) >= asked - _decided(intake):
            break
        time.sleep(0.1)
    target = _decided(intake) + len(pending)
    for req in pending:
        approvals.approve(req["id"], who="demo-supervisor")
        say(f"  approved refund {req['arguments']['amount']} EUR for {req['arguments']['ticket_id']} "
            f"as 'demo-supervisor' (garrison approvals approve {req['id']} --who demo-supervisor)")
    while _decided(intake) < target and time.monotonic() < deadline:
        time.sleep(0.1)
    return target - _decided(intake)


def _decided(intake) -> int:
    return sum(v for k, v in intake.ask(Stats()).items() if k.startswith("approved_refund/"))


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="garrison demo", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="./garrison-data")
    parser.add_argument("--tickets", type=int, default=40)
    args = parser.parse_args(argv)
    result = run(args.data_dir, args.tickets)
    return 0 if result["ok"] else 1
