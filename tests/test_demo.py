"""The README's demo: the four-stage pipeline, a draft worker SIGKILLed mid-run, every ticket once.

``garrison demo --dashboard`` (its URL, Ctrl-C) is ``tests/test_dashboard_browser.py``'s.
"""

from __future__ import annotations

import io

import pytest

from supervisors.demo import run

pytestmark = pytest.mark.ray


def test_demo_survives_a_kill_and_a_second_run_resumes_state(ray_session, tmp_path):
    out = io.StringIO()
    first = run(str(tmp_path / "data"), tickets=12, out=out)
    assert first["ok"], out.getvalue()
    assert first["draft_killed"]["incarnation"] >= 2, first["draft_killed"]
    status = first["pipeline"]
    assert status["completed"] == 12 and status["in_flight"] == 0 and status["dead"] == 0
    assert [s["done"] for s in status["stages"]] == [12, 12, 12, 12]
    # Governed: refunds of 10 and 38 EUR ran at once; 66 EUR waited for the approval the demo gave;
    # closing an account (prohibited) was refused each time; the book has each refund once.
    payments = first["payments"]
    assert (payments["refund/ok"], payments["refund/pending"], payments["approved_refund/ok"]) == (2, 1, 1), payments
    assert payments["close_account/refused"] == 3 and payments["settled"] == 6
    assert first["book"] == {"refunds": 3, "distinct": 3}
    second = run(str(tmp_path / "data"), tickets=4, out=io.StringIO())
    assert second["pipeline"]["completed"] == 16, "the queues carried over from the first run"
    assert second["payments"]["settled"] == 8 and second["payments"]["restored_from"] == "local"
    assert second["book"] == {"refunds": 4, "distinct": 4}
