"""``garrison logs ID``: the agent host's own log, read where Ray put it, by the host itself.

Ray sends each worker's stderr to ``<session>/logs/worker-*-<pid>.err`` on
its node; the agent's log lines go there (``_logs``: one JSON object per line
by default).  The host reads that file through its own standard error
(``/proc/self/fd/2``), so the command works from any machine that reaches the
cluster, without the dashboard.  Reads are bounded: at most ``_CHUNK`` bytes
and ``limit`` lines per call; a caller that follows the log passes back the
``offset`` it got.
"""

from __future__ import annotations

import json
import os
from typing import Any

__all__ = ["log_file", "parse_line", "read_worker_log"]

#: At most this many bytes are read per call.
_CHUNK = 1 << 20
#: Ray's own markers in worker log files (for its log-to-driver prefixes), not log lines.
_RAY_MARKERS = (":task_name:", ":actor_name:", ":job_id:", ":task_attempt_start:", ":task_attempt_end:")


def log_file() -> str | None:
    """The file this process's standard error goes to, or None (a terminal, a pipe, not Linux)."""
    try:
        path = os.readlink("/proc/self/fd/2")
    except OSError:
        return None
    return path if os.path.isfile(path) else None


def parse_line(line: str) -> dict[str, Any]:
    """One of Garrison's JSON log lines as its fields; any other line as ``{"message": line}``."""
    if line.startswith("{"):
        try:
            value = json.loads(line)
        except ValueError:
            value = None
        if isinstance(value, dict) and "message" in value:
            return value
    return {"message": line}


def read_worker_log(offset: int | None, limit: int, path: str | None = None) -> dict[str, Any]:
    """Lines of ``path`` (default: :func:`log_file`): the last ``limit`` (``offset`` None) or those after ``offset``.

    The returned ``offset`` is the byte just past the last line returned (a line
    still being written is left for the next call).  An ``offset`` past the end
    (the file was rotated) starts again from the top.
    """
    path = path or log_file()
    if path is None:
        return {"file": None, "offset": 0, "lines": [],
                "note": "this host's standard error is not a file (not a Ray worker, or not Linux)"}
    size = os.path.getsize(path)
    tail = offset is None
    start = max(0, size - _CHUNK) if tail else (offset if offset <= size else 0)
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(_CHUNK)
    end = data.rfind(b"\n") + 1  # whole lines only
    raw = data[:end].splitlines(keepends=True)
    if tail and start > 0 and raw:
        raw = raw[1:]  # the first line read may be the tail of a longer one
    lines: list[dict[str, Any]] = []
    consumed = 0  # bytes of ``raw`` taken, so that the next call starts after the last line returned
    for line in (reversed(raw) if tail else raw):
        if len(lines) == limit:
            break
        consumed += len(line)
        text = line.decode("utf-8", "replace").rstrip("\n")
        if text.strip() and not text.startswith(_RAY_MARKERS):
            lines.append(parse_line(text))
    if tail:
        lines.reverse()
    return {"file": path, "offset": start + end if tail else start + consumed, "lines": lines}
