"""The README's demo: four agents, one SIGKILLed mid-run, resumes with its state."""

from __future__ import annotations

import io

import pytest

from runtime.demo import run

pytestmark = pytest.mark.ray


def test_demo_survives_a_kill_and_a_second_run_resumes_state(ray_session, tmp_path):
    out = io.StringIO()
    first = run(str(tmp_path / "data"), tickets=12, out=out)
    assert first["ok"], out.getvalue()
    assert first["draft"]["incarnation"] == 2 and first["draft"]["restored_from"] == "local"
    assert first["intake"]["handled"] == 12
    # Governed: refunds of 10 and 38 EUR ran at once; 66 EUR waited for the approval the demo gave;
    # closing an account (prohibited) was refused each time; the book has each refund once.
    intake = first["intake"]
    assert (intake["refund/ok"], intake["refund/pending"], intake["approved_refund/ok"]) == (2, 1, 1), intake
    assert intake["close_account/refused"] == 3
    assert first["book"] == {"refunds": 3, "distinct": 3}
    second = run(str(tmp_path / "data"), tickets=4, out=io.StringIO())
    assert second["intake"]["handled"] == 16, "state carried over from the first run"
    assert second["intake"]["restored_from"] == "local"
    assert second["book"] == {"refunds": 4, "distinct": 4}


def test_demo_with_the_dashboard_prints_its_url_serves_it_and_stops_on_ctrl_c(tmp_path):
    import urllib.error
    import urllib.request

    from .demo_process import DashboardDemo

    demo = DashboardDemo(tmp_path)
    try:
        url = demo.up()
        try:
            with urllib.request.urlopen(url, timeout=30) as reply:
                status = reply.status
        except urllib.error.HTTPError as exc:  # token authentication: it answers, asking for the token
            status = exc.code
        assert status in (200, 401, 403), status
        assert "every ticket drafted exactly once" in demo.output(), demo.output()
        assert demo.interrupt() == 0, demo.output()
    finally:
        demo.close()
