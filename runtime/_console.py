"""What the ``garrison`` commands print for people: tables, nested key/value tables and trees (rich).

The commands compute plain data (dicts, lists, scalars: what ``--json``
prints); this module only turns that data into something to read.  The
rules, so that every command's output looks alike:

- a list of mappings is a table, one row each, the columns the union of
  their keys in order of first appearance;
- a mapping is a two-column table (field, value); a nested mapping or list of
  mappings is a nested table in its value cell;
- ``None`` is ``-``, booleans ``yes``/``no``, a Unix time in a field named
  like one (``time``, ``*_time``, ``*_at``, ``since``, ``until``, ``at``) a
  UTC date and time, bytes as text when they are printable UTF-8 (a state
  key), else their hex (``--json`` always gives hex);
- an empty list is ``(none)``.

Nothing here reaches a cluster; everything is a pure function of the data.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from rich.console import Console, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

__all__ = ["as_text", "cell", "console", "plain", "progress", "render", "to_json"]

#: Field names whose numbers are Unix times (seconds), shown as UTC dates.
_TIME_NAMES = frozenset({"time", "at", "since", "until", "created", "started", "stopped", "decided", "expires"})
#: Unix times before this are durations or counters, never dates (2001-09-09).
_EPOCH_FLOOR = 1e9
#: A list of scalars longer than this is shown by its length and first items.
_LIST_PREVIEW = 8
#: Width used when stdout is not a terminal (a pipe, a file, a test): wide enough that tables do not wrap.
_PIPE_WIDTH = 160


def console(*, stderr: bool = False) -> Console:
    """A rich console on stdout (or stderr); a fixed wide width when it is not a terminal."""
    stream = sys.stderr if stderr else sys.stdout
    tty = stream.isatty()
    return Console(file=stream, width=None if tty else _PIPE_WIDTH, soft_wrap=False,
                   highlight=False, emoji=False)


def to_json(value: Any) -> str:
    """``value`` as indented JSON (what ``--json`` prints); bytes as hex, anything else by ``str``."""
    return json.dumps(plain(value), indent=2, default=str)


def plain(value: Any) -> Any:
    """``value`` as JSON can hold it: bytes as hex, mapping keys as strings, tuples as lists."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Mapping):
        return {str(plain(k)): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def _is_time_field(key: str) -> bool:
    key = key.lower()
    return key in _TIME_NAMES or key.endswith(("_time", "_at", "_since", "_until"))


def cell(value: Any, key: str = "") -> str:
    """One value as table text (see the module's rules); ``key`` is its field name, for times."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float) and _is_time_field(key) and value >= _EPOCH_FLOOR:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(value)) + "Z"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, bytes):
        return _bytes(value)
    if isinstance(value, Mapping):
        return json.dumps(plain(value), default=str, separators=(", ", ": "))
    if isinstance(value, list | tuple):
        if not value:
            return "(none)"
        shown = ", ".join(cell(v) for v in value[:_LIST_PREVIEW])
        return shown if len(value) <= _LIST_PREVIEW else f"{shown}, ... ({len(value)} in all)"
    return str(value)


def _bytes(value: bytes) -> str:
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return value.hex()
    return text if text.isprintable() else value.hex()


def _is_rows(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes) and bool(value) \
        and all(isinstance(v, Mapping) for v in value)


def _value(value: Any, key: str) -> RenderableType:
    """A value cell: nested mappings and lists of mappings as nested tables, the rest as text."""
    if isinstance(value, Mapping) and value:
        return _mapping(value, None)
    if _is_rows(value):
        return _rows(value, None)
    return Text(cell(value, key))


def _rows(rows: Sequence[Mapping[str, Any]], title: str | None) -> Table:
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(map(str, row)))
    table = Table(title=title, title_justify="left", header_style="bold")
    for name in columns:
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*(_value(row.get(name), name) for name in columns))
    return table


def _mapping(value: Mapping[str, Any], title: str | None) -> Table:
    table = Table(title=title, title_justify="left", show_header=False, box=None, padding=(0, 1))
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key, item in value.items():
        table.add_row(str(key), _value(item, str(key)))
    return table


def render(value: Any, *, title: str | None = None) -> RenderableType:
    """``value`` as something rich prints: a table, a key/value table, or text (the module's rules)."""
    if _is_rows(value):
        return _rows(value, title)
    if isinstance(value, Mapping):
        return _mapping(value, title) if value else Text("(empty)")
    if isinstance(value, list | tuple) and not value:
        return Text("(none)")
    if isinstance(value, list | tuple):
        return Text("\n".join(cell(v) for v in value))
    return Text(cell(value))


def as_text(renderable: RenderableType, *, width: int = _PIPE_WIDTH) -> str:
    """What ``renderable`` prints, as plain text (no colour codes): for tests and logs."""
    out = Console(width=width, file=io.StringIO(), color_system=None, soft_wrap=False)
    out.print(renderable)
    return out.file.getvalue()  # type: ignore[attr-defined]


@contextlib.contextmanager
def progress(what: str, total: int) -> Iterator[Callable[[int], None]]:
    """``advance(n)`` for ``total`` steps of ``what``: a bar on stderr when a person watches, else silent.

    A person watches when stdout and stderr are both a terminal; while the bar
    shows, what is printed to ``sys.stdout`` appears above it.  The bar goes
    when the work is done (transient): a piped stdout carries only the result.
    """
    err = console(stderr=True)
    if not (err.is_terminal and sys.stdout.isatty()) or total <= 0:
        yield lambda n: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(what, total=total)
        yield lambda n: bar.advance(task, n)
