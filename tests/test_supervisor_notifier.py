"""Notifiers: JSON lines, a real HTTP webhook, and one failing notifier not silencing the others."""

from __future__ import annotations

import json
import pickle
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from supervisors import Event, JsonlNotifier, WebhookNotifier
from supervisors._notifier import notify_all


@pytest.fixture
def webhook():
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()


def test_the_webhook_posts_alerts_with_who_and_why_and_skips_routine_events(webhook):
    url, received = webhook
    hook = WebhookNotifier(url, headers={"X-Token": "t"})
    hook.notify(Event("restarted", "sup", "a"))
    hook.notify(Event("halted", "sup", "a", who="alice", why="runaway"))
    assert len(received) == 1
    assert (received[0]["kind"], received[0]["who"], received[0]["why"], received[0]["alert"]) == (
        "halted", "alice", "runaway", True)


def test_jsonl_keeps_every_event_in_order_and_survives_pickling(tmp_path):
    notifier = pickle.loads(pickle.dumps(JsonlNotifier(tmp_path / "e.jsonl")))  # as shipped to the actor
    for kind in ("started", "exited", "restarted"):
        notifier.notify(Event(kind, "sup", "a"))
    assert [e["kind"] for e in notifier.read()] == ["started", "exited", "restarted"]


def test_a_failing_notifier_does_not_stop_the_others(tmp_path):
    class Broken:
        def notify(self, event):
            raise OSError("down")

    good = JsonlNotifier(tmp_path / "e.jsonl")
    notify_all([Broken(), WebhookNotifier("http://127.0.0.1:9/unreachable", timeout=0.5), good],
               Event("quarantined", "sup"))
    assert [e["kind"] for e in good.read()] == ["quarantined"]
