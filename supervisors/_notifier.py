"""Telling humans: the notifier interface and three senders (log, JSON-lines file, webhook).

A notifier receives :class:`Event` records: restarts, escalations, quarantines,
suspect (hung) children, degraded ones (their checkpoint store fails), kill
switches (with who pulled them and why).
Notifiers run in the supervisor's process, off its event loop; one that raises
is logged and skipped, never allowed to stop supervision.  They are pickled
to the supervisor's actor, so they hold only plain data (paths, URLs).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = ["Event", "JsonlNotifier", "LogNotifier", "Notifier", "WebhookNotifier", "notify_all"]

log = logging.getLogger("garrison.supervisor.notify")

#: Event kinds worth waking a human for; the others are informational.
ALERTS = frozenset({"escalated", "quarantined", "halted", "suspect", "start_failed", "degraded", "breaker_tripped"})


@dataclass(frozen=True)
class Event:
    """Something a supervisor did or saw."""

    #: What happened: started, exited, restarting, restarted, restart_failed, stopped, killed,
    #: suspect, escalated, quarantined, released, halted, unhalted, degraded (the child's checkpoint
    #: store fails; ``details`` say since when, why, errno), recovered (it works again),
    #: breaker_tripped (a breaker of the child's governed actions opened; ``details`` count the trips).
    kind: str
    #: The supervisor that reports it.
    supervisor: str
    #: The child concerned; None for the supervisor itself.
    child: str | None = None
    #: Who caused it (an operator for a kill switch, else "supervisor").
    who: str = "supervisor"
    #: Why, in words a human can act on.
    why: str = ""
    time: float = field(default_factory=time.time)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def alert(self) -> bool:
        return self.kind in ALERTS

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "alert": self.alert}


@runtime_checkable
class Notifier(Protocol):
    """Anything with ``notify(event)``; it may block (it runs off the event loop)."""

    def notify(self, event: Event) -> None: ...


class LogNotifier:
    """Logs every event; alerts at WARNING, the rest at INFO."""

    def __init__(self, logger: str = "garrison.supervisor.events") -> None:
        self.logger = logger

    def notify(self, event: Event) -> None:
        logging.getLogger(self.logger).log(
            logging.WARNING if event.alert else logging.INFO, "%s", json.dumps(event.to_dict(), default=str)
        )


class JsonlNotifier:
    """Appends each event as one JSON line to a file (an audit trail; also what tests read)."""

    def __init__(self, path: str | Path, *, alerts_only: bool = False) -> None:
        self.path = str(path)
        self.alerts_only = alerts_only
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "alerts_only": self.alerts_only}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], alerts_only=state["alerts_only"])  # type: ignore[misc]

    def notify(self, event: Event) -> None:
        if self.alerts_only and not event.alert:
            return
        line = json.dumps(event.to_dict(), default=str) + "\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line)

    def read(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, encoding="utf-8") as f:
                return [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            return []


class WebhookNotifier:
    """POSTs alerts (or every event) as JSON to a URL, with a timeout; failures are logged."""

    def __init__(self, url: str, *, timeout: float = 5.0, alerts_only: bool = True,
                 headers: dict[str, str] | None = None) -> None:
        self.url = url
        self.timeout = timeout
        self.alerts_only = alerts_only
        self.headers = dict(headers or {})

    def notify(self, event: Event) -> None:
        if self.alerts_only and not event.alert:
            return
        body = json.dumps(event.to_dict(), default=str).encode()
        req = urllib.request.Request(self.url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", **self.headers})
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 (operator-configured URL)
            resp.read()


def notify_all(notifiers: list[Notifier] | tuple[Notifier, ...], event: Event) -> None:
    """Give ``event`` to every notifier; one that raises is logged and does not stop the others."""
    for notifier in notifiers:
        try:
            notifier.notify(event)
        except Exception:
            log.exception("notifier %r failed on %s", notifier, event.kind)
