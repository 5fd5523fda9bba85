"""A small deterministic OpenAI-compatible server on loopback, for the model tests.

``POST /v1/chat/completions`` answers ``"echo: <last user message>"``; token
counts are words: ``prompt_tokens`` is the number of words in all the
messages, ``completion_tokens`` the number in the reply, which is cut to
``max_tokens`` words (then ``finish_reason`` is ``"length"``).

Some model names fail on purpose: ``fail-500``, ``fail-429``, ``fail-400``
and ``fail-401`` answer that status with an OpenAI-style error body;
``no-usage`` answers without ``usage``.  Every request is counted
(``requests``), whatever it answers.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

__all__ = ["OpenAIServer"]


class OpenAIServer:
    """Serves on ``127.0.0.1`` on a free port from :meth:`start` to :meth:`stop` (a context manager too)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="openai-server", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> OpenAIServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def record(self, body: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(body)


def reply_for(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The status and JSON body the server answers ``body`` with (pure, so tests can predict it)."""
    model = body.get("model", "")
    if model.startswith("fail-"):
        status = int(model.split("-", 1)[1])
        return status, {"error": {"message": f"deliberate {status}", "type": "test", "code": str(status)}}
    messages = body.get("messages", [])
    last = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    words = f"echo: {last}".split()
    limit = body.get("max_tokens") or len(words)
    finish = "length" if len(words) > limit else "stop"
    words = words[:limit]
    prompt = sum(len(m["content"].split()) for m in messages)
    answer: dict[str, Any] = {
        "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "finish_reason": finish,
                     "message": {"role": "assistant", "content": " ".join(words)}}],
    }
    if model != "no-usage":
        answer["usage"] = {"prompt_tokens": prompt, "completion_tokens": len(words),
                           "total_tokens": prompt + len(words)}
    return 200, answer


def _handler_for(server: OpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # http.server names it
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            server.record(body)
            if self.path.rstrip("/") != "/v1/chat/completions":
                status, answer = 404, {"error": {"message": f"no route {self.path}", "type": "test"}}
            else:
                status, answer = reply_for(body)
            raw = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: Any) -> None:  # quiet
            pass

    return Handler
