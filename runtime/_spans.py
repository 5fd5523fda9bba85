"""OpenTelemetry spans, optional: one per message handled and per governed action, linked across agents.

With ``AgentConfig.spans`` set (a file path), the agent's host makes a
``TracerProvider`` of its own (``opentelemetry-sdk``, the ``otel`` extra; Ray
brings it too) that writes each finished span as one JSON line to that file
(:class:`JsonLinesExporter`: spans of several agents may share a file, each
line is one ``write``).  Spans:

``handle <type>``  each message handled (kind SERVER), child of the span the
                   message's ``traceparent`` names: so an ask from agent A's
                   handler to B makes B's span a child of A's;
``action <tag>``   each governed action, inside its handler's span.

While a span is current the message's trace (``_trace.current_message``)
*is* the span's own traceparent, marked as a span, so whatever the handler
sends carries it unchanged (``_trace.outgoing``): the receiver's span names
this one as its parent.  Without ``spans`` nothing here runs.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from ._trace import MessageTrace, current_message

__all__ = ["JsonLinesExporter", "Spans", "open_spans"]


def _sdk() -> Any:
    try:
        from opentelemetry.sdk import trace as sdk_trace
    except ImportError as exc:  # pragma: no cover - Ray[default] brings it
        raise ImportError("AgentConfig.spans needs opentelemetry-sdk: pip install 'garrison[otel]'") from exc
    return sdk_trace


class JsonLinesExporter:
    """A span exporter writing each span as one JSON line (``ReadableSpan.to_json``) to ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        data = "".join(span.to_json(indent=None) + "\n" for span in spans).encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


class Spans:
    """The agent's tracer: spans for messages and actions (see module docstring)."""

    def __init__(self, agent_id: str, exporter: Any) -> None:
        sdk_trace = _sdk()
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        self.agent_id = agent_id
        self.provider = sdk_trace.TracerProvider(resource=Resource.create({"service.name": "garrison",
                                                                           "garrison.agent": agent_id}))
        self.provider.add_span_processor(SimpleSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("garrison")

    @contextlib.contextmanager
    def handling(self, message_id: str, type_: str, traceparent: str | None) -> Iterator[None]:
        """A span for one message, child of ``traceparent``'s; the message's trace becomes the span's."""
        from opentelemetry.trace import SpanKind
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        propagator = TraceContextTextMapPropagator()
        parent = propagator.extract({"traceparent": traceparent}) if traceparent else None
        with self.tracer.start_as_current_span(f"handle {type_}", context=parent, kind=SpanKind.SERVER,
                                               attributes={"garrison.agent": self.agent_id,
                                                           "garrison.message_id": message_id}):
            carrier: dict[str, str] = {}
            propagator.inject(carrier)
            token = current_message.set(MessageTrace(message_id, carrier.get("traceparent"), span=True))
            try:
                yield
            finally:
                current_message.reset(token)

    @contextlib.contextmanager
    def acting(self, tag: str, key: str) -> Iterator[None]:
        """A span for one governed action, child of the current message's span.

        The parent is taken from ``current_message``, not from OpenTelemetry's own context: an
        async handler runs on the agent's loop thread, where only our context variables are set.
        """
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        current = current_message.get()
        parent = (TraceContextTextMapPropagator().extract({"traceparent": current.traceparent})
                  if current is not None and current.traceparent else None)
        with self.tracer.start_as_current_span(f"action {tag}", context=parent,
                                               attributes={"garrison.agent": self.agent_id,
                                                           "garrison.action_key": key}):
            yield

    def close(self) -> None:
        self.provider.shutdown()


def open_spans(agent_id: str, path: str | None) -> Spans | None:
    """The agent's spans, written to ``path``; None without one."""
    return None if path is None else Spans(agent_id, JsonLinesExporter(path))
