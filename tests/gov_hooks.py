"""Intervention hooks for the tests (named by import path in an agent's config)."""

from __future__ import annotations

from governance import ActionEvent, Intervention, MessageEvent

from .gov_agents import Act, Refund


def refund_rules(event):
    """No refund over 1000; the others are capped at 50; ship orders starting with H are held."""
    if not isinstance(event, ActionEvent):
        return None
    action = event.action
    if isinstance(action, Refund) and action.amount > 1000:
        return Intervention.drop("refunds over 1000 are not done by agents")
    if isinstance(action, Refund) and action.amount > 50:
        return Intervention.modify(action.model_copy(update={"amount": 50}), "capped at 50")
    if type(action).__name__ == "Ship" and action.order.startswith("H"):
        return Intervention.hold("orders starting with H are checked by hand")
    return None


def message_rules(event):
    """Drop what 'spammer' sends; hold Acts that ask to be held; redact card numbers in orders."""
    if not isinstance(event, MessageEvent):
        return None
    if event.sender == "spammer":
        return Intervention.drop("spammer")
    if isinstance(event.message, Act):
        if any(a.get("order") == "hold-me" for a in event.message.actions):
            return Intervention.hold("asked to be held")
        redacted = [{**a, "order": "REDACTED"} if str(a.get("order", "")).startswith("4111") else a
                    for a in event.message.actions]
        if redacted != event.message.actions:
            return Intervention.modify(Act(actions=redacted), "card number redacted")
    return None


def broken(event):
    raise RuntimeError("this hook is broken")
