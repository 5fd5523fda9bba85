"""Stages for the pipeline tests (importable by Ray's workers: tests/ is on their path).

The customer-service chain in miniature: classify, gather, draft, review.  ``Draft`` leaves an effect
outside the agent, one file per ticket created with O_EXCL in the directory its ticket names, so a
test can count how many times each ticket was drafted to completion.
"""

from __future__ import annotations

import os
from typing import Any

from runtime.pipelines import Stage

ORDERS = {f"A{n:03d}": 10 + 7 * n for n in range(100)}


class Classify(Stage):
    def handle(self, data: dict[str, Any]) -> dict[str, Any]:
        text = data["text"].lower()
        category = "refund" if "money" in text else "shipping" if "late" in text else "other"
        return {**data, "category": category}


class Gather(Stage):
    def handle(self, data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "total": ORDERS.get(data["order"], 0)}


class Draft(Stage):
    def handle(self, data: dict[str, Any]) -> dict[str, Any]:
        reply = f"{data['category']}: order {data['order']}, {data['total']} EUR"
        marker = os.path.join(data["effects"], data["id"])
        try:  # the effect, idempotent by ticket: a second draft of a ticket finds the file
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            with open(marker + ".again", "a") as again:
                again.write("x")
        return {**data, "reply": reply}


class Review(Stage):
    """Refuses replies with a word it does not allow: they fail every attempt (for the desk)."""

    def handle(self, data: dict[str, Any]) -> dict[str, Any]:
        if "lawsuit" in data["text"]:
            raise ValueError(f"ticket {data['id']}: a reply about a lawsuit needs a person")
        return {**data, "verdict": "approved"}
