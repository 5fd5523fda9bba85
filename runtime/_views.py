"""People's views of the commands whose results have a shape of their own: top, inspect, logs, tree.

Each view takes the data the command prints with ``--json`` and returns
something rich prints; what is generic (any list of mappings, any mapping)
is ``_console.render``.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from ._console import cell, render

__all__ = ["forest_view", "inspection_view", "log_line", "logs_view", "top_view"]

#: The status fields ``garrison inspect`` shows first (``garrison status ID`` has them all).
SUMMARY = ("agent_id", "agent_class", "state", "incarnation", "epoch", "pid", "version", "seq",
           "last_checkpoint_time", "checkpoints_taken", "outbox_pending", "dead_letters", "degraded",
           "background_error", "failure")
#: ``top``'s columns: (field of ``_top.row``, heading, right-aligned).
TOP_COLUMNS = (("agent", "agent", False), ("state", "state", False), ("incarnation", "inc", True),
               ("handled", "handled", True), ("rate_per_s", "msg/s", True), ("p50_ms", "p50 ms", True),
               ("p99_ms", "p99 ms", True), ("outbox", "outbox", True), ("dead_letters", "dead", True),
               ("errors", "errors", True))
_STATE_STYLE = {"running": "green", "halted": "red", "quarantined": "yellow", "failed": "red",
                "unreachable": "red", "stopped": "dim", "restarting": "yellow"}
_LEVEL_STYLE = {"debug": "dim", "warning": "yellow", "error": "red", "critical": "bold red"}


def top_view(rows: list[dict[str, Any]], *, interval: float, address: str) -> Table:
    """``garrison top``'s table: one row per agent (``_top.row``), states coloured."""
    stamp = time.strftime("%H:%M:%S")
    table = Table(title=f"garrison top - {len(rows)} agents at {address} - {stamp}, rates over {interval:g}s",
                  title_justify="left", header_style="bold")
    for _, heading, right in TOP_COLUMNS:
        table.add_column(heading, justify="right" if right else "left", no_wrap=True)
    for row in rows:
        cells = [Text(cell(row.get(name), name)) for name, _, _ in TOP_COLUMNS]
        cells[1].stylize(_STATE_STYLE.get(str(row.get("state")), ""))
        if row.get("errors"):
            cells[-1].stylize("red")
        table.add_row(*cells)
    if not rows:
        table.caption = "no agents in this namespace"
    return table


def inspection_view(data: dict[str, Any]) -> RenderableType:
    """``garrison inspect``: the summary, then config, recent transitions and restores, each a table."""
    status = data.get("status", {})
    summary = {k: status.get(k) for k in SUMMARY if k in status}
    restore = status.get("restore") or {}
    summary["restored_from"] = restore.get("source")
    parts: list[RenderableType] = [render(summary, title=f"agent {status.get('agent_id', '?')}")]
    parts.append(render(data.get("config", {}), title="config"))
    transitions = data.get("transitions") or []
    parts.append(render(transitions, title=f"recent transitions ({len(transitions)})") if transitions
                 else Text("recent transitions: (none)"))
    restores = data.get("restores") or []
    parts.append(render(restores, title=f"restore history ({len(restores)})") if restores
                 else Text("restore history: (none)"))
    return Group(*parts)


def log_line(line: dict[str, Any]) -> Text:
    """One log line: ``time level logger [agent#incarnation trace] message`` (a plain line as it was)."""
    if set(line) == {"message"}:
        return Text(str(line["message"]))
    level = str(line.get("level", ""))
    when = cell(line.get("time"), "time")
    where = f"{line.get('agent', '-')}#{line.get('incarnation', '-')}"
    if line.get("trace_id"):
        where += f" {line['trace_id'][:16]}"
    text = Text(f"{when} ")
    text.append(f"{level:<7}", style=_LEVEL_STYLE.get(level, ""))
    text.append(f" {line.get('logger', '')} [{where}] {line.get('message', '')}")
    if line.get("exception"):
        text.append("\n" + str(line["exception"]), style="dim")
    return text


def logs_view(lines: list[dict[str, Any]]) -> RenderableType:
    """Log lines, one after the other."""
    return Group(*(log_line(line) for line in lines)) if lines else Text("(no log lines)")


def forest_view(forest: list[dict[str, Any]]) -> Tree:
    """``garrison tree``: nodes (``id``, ``kind``, ``state``, ``children``...) as one rich tree, states coloured."""

    def label(node: dict[str, Any]) -> Text:
        state = str(node.get("state"))
        text = Text(f"{node['id']} ", style="bold" if node.get("children") is not None else "")
        text.append(f"[{node.get('kind')}] ", style="dim")
        text.append(state, style=_STATE_STYLE.get(state, ""))
        extras = [f"{k}={node[k]}" for k in ("strategy", "incarnation", "restarts", "pid") if node.get(k) is not None]
        if node.get("last_failure"):
            extras.append(f"last failure: {node['last_failure']}")
        if extras:
            text.append("  " + "  ".join(extras), style="dim")
        return text

    def grow(branch: Tree, node: dict[str, Any]) -> None:
        for child in node.get("children") or []:
            grow(branch.add(label(child)), child)

    top = Tree(Text("supervision tree", style="bold"))
    for node in forest:
        grow(top.add(label(node)), node)
    if not forest:
        top.add(Text("(no supervisors or agents in this namespace)", style="dim"))
    return top
