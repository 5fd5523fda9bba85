"""Structured logs: one JSON object per line, naming the agent, its incarnation, the message and its trace.

An agent host sends the ``garrison`` loggers (the runtime's, and each
agent's own ``self.log``, ``garrison.agent.<id>``) to its stderr -- Ray's
worker log file, ``<session>/logs/worker-*-<pid>.err`` -- as JSON lines
(``AgentConfig.log_format="json"``, the default) or as text, at
``AgentConfig.log_level``.  Every line carries::

    {"time": 1764712345.123, "level": "warning", "logger": "garrison.agent",
     "message": "...", "agent": "intake", "incarnation": 2,
     "message_id": "<hex of the message being handled>", "trace_id": "<32 hex>",
     "exception": "<traceback, when there is one>"}

``message_id`` and ``trace_id`` are those of the message being handled when
the line was logged (``_trace.current_message``), absent otherwise.  At
``debug`` every message handled gets a line of its own (``_inbox``).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from ._trace import current_message, trace_id

__all__ = ["LOGGER", "JsonFormatter", "LogContext", "configure_logs"]

#: The root of every logger Garrison writes to.
LOGGER = "garrison"
_TEXT = "%(asctime)s %(levelname)s %(name)s [%(agent)s#%(incarnation)s %(trace_id)s] %(message)s"


class LogContext(logging.Filter):
    """Adds the agent, its incarnation and the current message and trace to each record (never drops one)."""

    def __init__(self, agent_id: str) -> None:
        super().__init__()
        self.agent_id = agent_id
        self.incarnation: int | None = None  # set once the incarnation is known (after the restore)

    def filter(self, record: logging.LogRecord) -> bool:
        record.agent = self.agent_id
        record.incarnation = self.incarnation
        current = current_message.get()
        record.message_id = None if current is None else current.id
        record.trace_id = None if current is None else trace_id(current.traceparent)
        return True


class JsonFormatter(logging.Formatter):
    """A record as one line of JSON (fields above); what a field cannot encode is its ``str``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"time": round(record.created, 6), "level": record.levelname.lower(),
                               "logger": record.name, "message": record.getMessage()}
        for field in ("agent", "incarnation", "message_id", "trace_id"):
            value = getattr(record, field, None)
            if value is not None:
                out[field] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logs(context: LogContext, *, fmt: str, level: str) -> logging.Handler:
    """Send the ``garrison`` loggers to stderr with ``context``, as ``fmt`` (json or text); the handler.

    Replaces a handler an earlier call put there (a spare adopting an agent, a restarted host):
    one line per record, whatever happened before.
    """
    root = logging.getLogger(LOGGER)
    for old in [h for h in root.handlers if getattr(h, "garrison", False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler.garrison = True  # type: ignore[attr-defined]
    handler.addFilter(context)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT))
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False  # not again through Ray's own handlers: one line per record
    return handler
