"""The runtime's ``garrison`` commands (a click group; ``supervisors.cli`` adds the operators' switches).

    garrison demo [--data-dir DIR] [--tickets N]     run the customer-service demo locally
    garrison agents [--address A]                    list live agents
    garrison top [--interval S] [--once]             a live table: state, rate, latency, outbox, errors
    garrison inspect ID [--transitions N]            summary, config, recent transitions, restore history
    garrison logs ID [--follow] [--level L]          the agent's log lines (its host reads Ray's worker log)
    garrison status ID [--address A]                 an agent's lifecycle, sequence numbers, last restore
    garrison checkpoint ID [--address A]             take a checkpoint now
    garrison restores ID [--address A]               restore history of an agent
    garrison actions ID [--limit N]                  an agent's operator log: who did what, why, when
    garrison deadletters ID [--reason R] [--limit N] list an agent's dead letters
    garrison replay ID (--id X ... | --reason R)     deliver dead letters again
    garrison decisions ID [--trace T] [--since S]    an agent's recorded decisions, from its audit log
    garrison versions ID [--address A]               the agent versions (manifests) an agent ran under
    garrison feedback add|export ID ...              annotate decisions; export them as JSONL with provenance
    garrison approvals list|show|approve|deny ...    people's side of an approval queue (--queue Q)
    garrison audit verify|show|prove|keygen ...      check an audit log directory offline (no cluster)
    garrison operators keygen|check ...              operators' keys and the operators file (roles)
    garrison metrics grafana|alerts                  the Grafana dashboard and Prometheus alert rules
    garrison queue stats|item|items|replay QUEUE ... a work queue: depth by state, an item, a page of items,
                                                     dead items back to pending

The console script is ``supervisors.cli:main``: this group plus ``kill``,
``unhalt``, ``quarantine``, ``release``, ``deploy``, ``rollback`` and ``tree``,
which reach supervisors (the runtime never imports them).  Every command
prints tables for people (``_console``, ``_views``) and, given ``--json`` (or
``GARRISON_JSON=1``), the same result as JSON.  A command that fails with one
of Garrison's errors prints ``garrison: <ErrorType>: <message>`` on stderr and
exits 2.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from ._console import plain
from ._feedback import LABELS
from ._views import forest_view

__all__ = ["address_option", "commands", "connect", "emit", "forest_view", "identity_options", "json_everywhere",
           "json_option", "main", "operator", "reports_errors", "run_group", "wants_json"]

#: Every command that talks to a cluster takes ``--address``.
address_option = click.option("--address", default="auto", show_default=True, help="Ray cluster address.")


#: Where ``--json`` leaves its mark for :func:`emit` (``ctx.meta`` is shared by a command and its groups).
_JSON = "garrison.json"


def _json_mode(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta[_JSON] = True


def json_option() -> click.Option:
    """``--json`` (or ``GARRISON_JSON=1``): print the command's result as JSON, for scripts, not as tables."""
    return click.Option(["--json", "as_json"], is_flag=True, expose_value=False, envvar="GARRISON_JSON",
                        callback=_json_mode, help="Print the result as JSON (for scripts) instead of tables.")


def json_everywhere(group: click.Group) -> click.Group:
    """Give every command under ``group`` (groups' commands too) the ``--json`` option; ``group`` itself."""
    for command in group.commands.values():
        if isinstance(command, click.Group):
            json_everywhere(command)
        elif not any(p.name == "as_json" for p in command.params):
            command.params.append(json_option())
    return group


def wants_json() -> bool:
    """Whether the running command was given ``--json`` (False outside a command)."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.meta.get(_JSON))


def emit(value: Any, *, title: str | None = None, human: Callable[[Any], Any] | None = None) -> None:
    """Print a command's result: as JSON with ``--json``, else as tables (``human(value)``, or ``_console.render``)."""
    from ._console import console, render, to_json

    if wants_json():
        click.echo(to_json(value))
        return
    console().print(human(value) if human is not None else render(value, title=title))


def reports_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a GarrisonError into ``garrison: <ErrorType>: <message>`` on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from .exceptions import GarrisonError

        try:
            return fn(*args, **kwargs)
        except GarrisonError as exc:
            click.echo(f"garrison: {type(exc).__name__}: {exc}", err=True)
            raise click.exceptions.Exit(2) from exc

    return wrapper


#: How a command joins the cluster: Ray says nothing below an error, and workers' output is not relayed.
QUIET_RAY = {"logging_level": logging.ERROR, "log_to_driver": False}
#: ``replay --reason``: every dead letter of the reason, replayed this many at a time.
REPLAY_ALL, REPLAY_CHUNK = 1_000_000, 200
#: ``logs --follow``: seconds between looks, and at most this many lines per look.
LOG_POLL, LOG_PAGE = 1.0, 1000
#: Log levels by rank; a line without a level (not one of Garrison's) always passes ``--level``.
LOG_LEVELS = {"debug": 0, "info": 1, "warning": 2, "error": 3, "critical": 4}


def progress_bar(what: str, total: int) -> Any:
    """A context manager giving ``advance(n)``: a progress bar on stderr when it is a terminal, else nothing."""
    from ._console import progress

    return progress(what, total)


def connect(address: str) -> Any:
    """A ``System`` joined to the cluster at ``address``, Ray quiet (what every command that reaches one uses)."""
    from ._system import System

    # A command's output is its result: Ray's own start-up lines and workers' output stay out of it.
    return System(address=address, ray_init=QUIET_RAY)


def identity_options(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--who NAME`` and ``--key FILE``: an operator's identity; the command gets ``who`` (see :func:`operator`)."""
    def options(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn = click.option("--key", envvar="GARRISON_OPERATOR_KEY", type=click.Path(dir_okay=False, exists=True),
                          help="Your operator key (garrison operators keygen), signing the call; required where "
                               "an operators file is set. Default: $GARRISON_OPERATOR_KEY.")(fn)
        return click.option("--who", required=True, help=f"Your name, recorded with {what}.")(fn)
    return options


def operator(who: str, key: str | None) -> Any:
    """The ``who`` an operator's call takes: ``who``'s key read from ``key``, or the bare name."""
    if key is None:
        return who
    from audit import OperatorKey

    return OperatorKey.load(key, who)


@click.group(name="garrison", context_settings={"help_option_names": ["-h", "--help"]})
def commands() -> None:
    """Garrison: agents on Ray that survive production."""


@commands.command()
@address_option
@reports_errors
def agents(address: str) -> None:
    """List live agents (and the namespace's other named actors: supervisors)."""
    emit(connect(address).agents())


@commands.command()
@address_option
@reports_errors
def hosts(address: str) -> None:
    """List the packed hosts: agents placed, open and passive on each, activations, passivations."""
    emit(connect(address).packed_hosts(), title="packed hosts")


@commands.command()
@click.option("--interval", type=float, default=2.0, show_default=True,
              help="Seconds between refreshes (rates and latencies are over this window).")
@click.option("--once", is_flag=True, help="Print one table after one interval and exit (--json implies it).")
@address_option
@reports_errors
def top(interval: float, once: bool, address: str) -> None:
    """A live table of the agents: state, message rate, handling latency (p50, p99), outbox depth, errors.

    Refreshes every --interval seconds until Ctrl-C.  Rates and latencies are
    over the last interval; counts are since each agent's incarnation began.
    """
    from ._top import Sample, agent_refs, row, take_all, unreachable
    from ._views import top_view

    if interval <= 0:
        raise click.BadParameter("give a positive number of seconds", param_hint="--interval")
    system = connect(address)
    import ray

    address = ray.get_runtime_context().gcs_address  # for the title: which cluster "auto" found
    before: dict[str, Any] = {}

    def refresh() -> list[dict[str, Any]]:
        rows = []
        for agent_id, now in take_all(agent_refs(system)).items():  # every agent at once
            if not isinstance(now, Sample):
                rows.append(unreachable(agent_id, f"{type(now).__name__}: {now}"))
                before.pop(agent_id, None)
                continue
            rows.append(row(agent_id, before.get(agent_id), now))
            before[agent_id] = now
        return rows

    refresh()  # the first look: rates need two
    if once or wants_json():
        time.sleep(interval)
        emit(refresh(), human=lambda rows: top_view(rows, interval=interval, address=address))
        return
    from rich.live import Live

    from ._console import console

    with Live(top_view([], interval=interval, address=address), console=console(), auto_refresh=False) as live:
        try:
            while True:
                time.sleep(interval)
                live.update(top_view(refresh(), interval=interval, address=address), refresh=True)
        except KeyboardInterrupt:
            pass


@commands.command()
@click.argument("agent_id")
@click.option("--transitions", type=int, default=20, show_default=True, help="How many recent state transitions.")
@address_option
@reports_errors
def inspect(agent_id: str, transitions: int, address: str) -> None:
    """One agent in depth: summary, config, recent state transitions, restore history."""
    from ._views import inspection_view

    emit(connect(address).lookup(agent_id).admin.inspect(max(0, transitions)), human=inspection_view)


@commands.command()
@click.argument("agent_id")
@click.option("--limit", type=int, default=200, show_default=True, help="The last this many lines.")
@click.option("--level", type=click.Choice(["debug", "info", "warning", "error"]),
              help="Only Garrison's lines at this level or above (other lines are kept).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until Ctrl-C (across restarts).")
@address_option
@reports_errors
def logs(agent_id: str, limit: int, level: str | None, follow: bool, address: str) -> None:
    """An agent's log: its host's lines (JSON lines parsed), read by the host from Ray's worker log.

    With --json, one JSON object per line (what the agent wrote, parsed).
    """
    from ._views import logs_view
    from .exceptions import AgentUnavailable

    ref = connect(address).lookup(agent_id)
    page = ref.admin.logs(None, max(1, limit))
    show = _log_printer(level, logs_view)
    show(page["lines"])
    while follow:
        try:
            time.sleep(LOG_POLL)
            try:
                nxt = ref.admin.logs(page["offset"], LOG_PAGE)
            except AgentUnavailable:
                continue  # restarting: the next look finds the new host
            if nxt["file"] != page["file"]:  # a new incarnation, a new process: its file from the top
                nxt = ref.admin.logs(0, LOG_PAGE)
            show(nxt["lines"])
            page = nxt
        except KeyboardInterrupt:
            return


def _log_printer(level: str | None, view: Callable[[list[dict[str, Any]]], Any]) -> Callable[[list[dict[str, Any]]], None]:
    """Prints pages of log lines (as JSON lines with --json), keeping those at ``level`` or above."""
    from ._console import console

    floor = LOG_LEVELS[level] if level else 0

    def show(lines: list[dict[str, Any]]) -> None:
        kept = [ln for ln in lines if LOG_LEVELS.get(ln.get("level"), floor) >= floor]
        if wants_json():
            for ln in kept:
                click.echo(json.dumps(ln, default=str))
        elif kept:
            console().print(view(kept))

    return show


@commands.command()
@click.argument("agent_id")
@address_option
@reports_errors
def status(agent_id: str, address: str) -> None:
    """Show an agent's status."""
    emit(connect(address).lookup(agent_id).admin.status())


@commands.command()
@click.argument("agent_id")
@address_option
@reports_errors
def checkpoint(agent_id: str, address: str) -> None:
    """Take a checkpoint of an agent now."""
    emit(connect(address).lookup(agent_id).admin.checkpoint())


@commands.command()
@click.argument("agent_id")
@address_option
@reports_errors
def restores(agent_id: str, address: str) -> None:
    """Show an agent's restore history."""
    emit(connect(address).lookup(agent_id).admin.restore_history())


@commands.command()
@click.argument("agent_id")
@click.option("--limit", type=int, default=100, show_default=True, help="The newest this many.")
@address_option
@reports_errors
def actions(agent_id: str, limit: int, address: str) -> None:
    """Show an agent's operator log.

    Each quarantine, release, halt and unhalt with who did it, why, and when.
    """
    emit(connect(address).lookup(agent_id).admin.operator_log(limit))


@commands.command()
@click.argument("agent_id")
@click.option("--reason", help="Only dead letters of this reason (e.g. expired, undeliverable).")
@click.option("--limit", type=int, default=100, show_default=True)
@address_option
@reports_errors
def deadletters(agent_id: str, reason: str | None, limit: int, address: str) -> None:
    """List an agent's dead letters."""
    letters = connect(address).lookup(agent_id).admin.dead_letters(reason=reason, limit=limit)
    emit([{k: v for k, v in d.items() if k != "envelope"} for d in letters])


@commands.command()
@click.argument("agent_id")
@click.option("--id", "ids", multiple=True, help="A dead letter id (repeatable).")
@click.option("--reason", help="Every dead letter of this reason.")
@address_option
@reports_errors
def replay(agent_id: str, ids: tuple[str, ...], reason: str | None, address: str) -> None:
    """Deliver dead letters again (a progress bar on a terminal when there are many)."""
    if not ids and not reason:
        raise click.UsageError("replay needs --id or --reason")
    admin = connect(address).lookup(agent_id).admin
    chosen = list(ids) or [d["id"] for d in admin.dead_letters(reason=reason, limit=REPLAY_ALL)]
    done: list[dict[str, Any]] = []
    with progress_bar(f"replaying {agent_id}'s dead letters", len(chosen)) as advance:
        for start in range(0, len(chosen), REPLAY_CHUNK):
            chunk = chosen[start:start + REPLAY_CHUNK]
            done.extend(admin.replay_dead_letters(ids=chunk))
            advance(len(chunk))
    emit(done, title=f"replayed ({sum(1 for d in done if d.get('ok'))} of {len(done)} ok)")


@commands.command()
@click.argument("agent_id")
@click.option("--tag", help="Only this action type (e.g. shop.refund@1).")
@click.option("--in-doubt", is_flag=True, help="Only intents without an outcome (in flight, or cut by a crash).")
@click.option("--limit", type=int, default=100, show_default=True, help="The newest this many.")
@address_option
@reports_errors
def ledger(agent_id: str, tag: str | None, in_doubt: bool, limit: int, address: str) -> None:
    """Show an agent's governed actions: each intent with its outcome."""
    emit(connect(address).lookup(agent_id).admin.ledger(limit=limit, tag=tag, in_doubt=in_doubt))


@commands.command()
@click.argument("agent_id")
@click.option("--trace", help="Only decisions of this trace (a traceparent, or its trace id), in every agent it reached.")
@click.option("--since", type=float, help="Only decisions at or after this Unix time.")
@click.option("--until", type=float, help="Only decisions before this Unix time.")
@click.option("--limit", type=int, default=100, show_default=True, help="The newest this many.")
@address_option
@reports_errors
def decisions(agent_id: str, trace: str | None, since: float | None, until: float | None, limit: int,
              address: str) -> None:
    """Show an agent's recorded decisions (Agent.decide): choice, options, rationale, context digest, trace."""
    emit(connect(address).lookup(agent_id).admin.decisions(trace=trace, since=since, until=until, limit=limit))


@commands.command()
@click.argument("agent_id")
@address_option
@reports_errors
def versions(agent_id: str, address: str) -> None:
    """The agent versions an agent ran under, oldest first: each manifest (class, code, config, tools,
    prompts, models) with its hash, the incarnation that started under it, and when."""
    emit(connect(address).lookup(agent_id).admin.versions())


@commands.group()
def feedback() -> None:
    """People's annotations of an agent's decisions: add one, export them with their provenance."""


@feedback.command(name="add")
@click.argument("agent_id")
@click.argument("decision_id")
@click.option("--label", required=True, type=click.Choice(LABELS), help="What you think of the decision.")
@click.option("--note", default="", help="Why, in your words.")
@identity_options("the annotation")
@address_option
@reports_errors
def feedback_add(agent_id: str, decision_id: str, label: str, note: str, who: str, key: str | None,
                 address: str) -> None:
    """Annotate one recorded decision (its id, from `garrison decisions`); kept in the audit log."""
    emit(connect(address).lookup(agent_id).admin.annotate(decision_id, label, who=operator(who, key), note=note))


@feedback.command(name="export")
@click.argument("agent_id")
@click.option("--out", type=click.File("w"), default="-", show_default=True, help="The JSONL file to write.")
@click.option("--limit", type=int, default=0, show_default=True, help="The newest this many (0: all).")
@address_option
@reports_errors
def feedback_export(agent_id: str, out: Any, limit: int, address: str) -> None:
    """Write the annotations as JSONL, one per line, each with its decision's provenance."""
    for row in connect(address).lookup(agent_id).admin.feedback(limit=limit):
        out.write(json.dumps(plain(row), sort_keys=True) + "\n")


@commands.command(name="reset-breaker")
@click.argument("agent_id")
@click.argument("breaker")
@identity_options("the agent's operator log")
@address_option
@reports_errors
def reset_breaker(agent_id: str, breaker: str, who: str, key: str | None, address: str) -> None:
    """Close an agent's breaker: `agent`, an action tag, or `drift`."""
    emit(connect(address).lookup(agent_id).admin.reset_breaker(breaker, operator(who, key)))


@commands.command()
@click.argument("agent_id")
@identity_options("the agent's operator log")
@click.option("--count", type=int, help="How many flagged actions you reviewed (default: all).")
@address_option
@reports_errors
def review(agent_id: str, who: str, key: str | None, count: int | None, address: str) -> None:
    """Mark an agent's flagged medium-risk actions reviewed (they block past the policy's limit)."""
    emit(connect(address).lookup(agent_id).admin.review_actions(operator(who, key), count))


@commands.group()
def approvals() -> None:
    """People's side of an approval queue: list, show, approve, deny."""


queue_option = click.option("--queue", default="approvals", show_default=True, help="The approval queue's agent id.")


def _approvals(address: str, queue: str) -> Any:
    from ._approvals import Approvals

    return Approvals(connect(address), queue)


@approvals.command(name="list")
@click.option("--state", default="pending", show_default=True,
              type=click.Choice(["pending", "approved", "denied", "expired", "all"]))
@click.option("--limit", type=int, default=100, show_default=True)
@queue_option
@address_option
@reports_errors
def approvals_list(state: str, limit: int, queue: str, address: str) -> None:
    """List approval requests (pending ones by default), oldest first."""
    emit(_approvals(address, queue).list(None if state == "all" else state, limit))


@approvals.command(name="show")
@click.argument("approval_id")
@queue_option
@address_option
@reports_errors
def approvals_show(approval_id: str, queue: str, address: str) -> None:
    """One request: the action, its arguments, the agent, the context, who decided what and when."""
    emit(_approvals(address, queue).show(approval_id))


@approvals.command(name="approve")
@click.argument("approval_id")
@identity_options("the approval")
@queue_option
@address_option
@reports_errors
def approvals_approve(approval_id: str, who: str, key: str | None, queue: str, address: str) -> None:
    """Approve a request; once it has enough approvers its agent executes the action."""
    emit(_approvals(address, queue).approve(approval_id, who=operator(who, key)))


@approvals.command(name="deny")
@click.argument("approval_id")
@identity_options("the denial")
@click.option("--why", required=True, help="Why: the agent gets it with the denial.")
@queue_option
@address_option
@reports_errors
def approvals_deny(approval_id: str, who: str, key: str | None, why: str, queue: str, address: str) -> None:
    """Deny a request; its agent gets a ``denied`` outcome."""
    emit(_approvals(address, queue).deny(approval_id, who=operator(who, key), why=why))


@commands.group()
def audit() -> None:
    """Check an audit log directory offline: verify, show, prove; keygen for a signing key."""


def _verifier_keys(keys: tuple[str, ...]) -> list[Any]:
    """Each ``--key``: a file holding a verifier key, or a vkey line ``name+hex+base64`` itself."""
    import os

    from audit import VerifierKey, read_verifier_key

    return [read_verifier_key(k) if os.path.isfile(k) else VerifierKey.parse(k) for k in keys]


@audit.command(name="verify")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--key", "keys", multiple=True, required=True,
              help="A trusted verifier key: a vkey line or a file holding one (repeatable).")
@click.option("--origin", help="The log's name its checkpoints must carry (default: the first checkpoint's).")
@reports_errors
def audit_verify(directory: str, keys: tuple[str, ...], origin: str | None) -> None:
    """Check every record and checkpoint; exit 1 naming the first bad index and why, 0 when the log is intact."""
    from audit import verify_log

    report = verify_log(directory, _verifier_keys(keys), origin=origin)
    emit(report.to_json())
    if not report.ok:
        click.echo(f"garrison: audit log {directory}: {report.reason} at index {report.index}: {report.detail}",
                   err=True)
        raise click.exceptions.Exit(1)


@audit.command(name="show")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--from", "start", type=int, default=0, show_default=True, help="The first record's index.")
@click.option("--limit", type=int, default=100, show_default=True, help="At most this many records.")
@reports_errors
def audit_show(directory: str, start: int, limit: int) -> None:
    """Print records as JSON (bytes as hex); this checks nothing: run verify for that."""
    from audit import read_log

    emit(read_log(directory, start, limit))


@audit.command(name="prove")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--index", type=int, help="Inclusion: this record is in the tree.")
@click.option("--size", type=int, help="Inclusion: of this size (default: the whole log).")
@click.option("--from-size", type=int, help="Consistency: the tree of this size ...")
@click.option("--to-size", type=int, help="... is a prefix of the tree of this size (default: the whole log).")
@reports_errors
def audit_prove(directory: str, index: int | None, size: int | None, from_size: int | None,
                to_size: int | None) -> None:
    """An inclusion proof (--index [--size]) or a consistency proof (--from-size [--to-size]), as hex."""
    from audit import prove_consistency, prove_inclusion

    if (index is None) == (from_size is None) or (index is None and size is not None) or \
            (from_size is None and to_size is not None):
        raise click.UsageError("prove needs either --index [--size] or --from-size [--to-size]")
    emit(prove_inclusion(directory, index, size) if index is not None else
         prove_consistency(directory, from_size, to_size))


@audit.command(name="keygen")
@click.argument("name")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The new signing key file (mode 0600).")
@reports_errors
def audit_keygen(name: str, out: str) -> None:
    """Write a new Ed25519 signing key NAME to --out (never over a file); print its verifier key line."""
    from audit import SigningKey, write_signing_key

    key = SigningKey.generate(name)
    write_signing_key(out, key)
    _say({"name": name, "out": out, "verifier": str(key.verifier)}, "verifier")


@commands.group()
def operators() -> None:
    """Operators' identities: a key for each person, and the operators file that lists them with roles."""


@operators.command(name="keygen")
@click.argument("name")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The new key file (mode 0600).")
@click.option("--role", "roles", multiple=True, required=True,
              type=click.Choice(["viewer", "operator", "approver", "admin"]), help="A role (repeat for more).")
@reports_errors
def operators_keygen(name: str, out: str, roles: tuple[str, ...]) -> None:
    """Write operator NAME's new Ed25519 key to --out (never over a file); print their operators-file entry.

    The key stays with the person (their --key); the entry goes into the operators file.
    """
    from audit import SigningKey, write_signing_key

    key = SigningKey.generate(name)
    write_signing_key(out, key)
    entry = f'[operators.{name}]\nroles = {json.dumps(sorted(set(roles)))}\nkey = "{key.verifier}"'
    _say({"name": name, "out": out, "roles": sorted(set(roles)), "key": str(key.verifier), "entry": entry}, "entry")


def _say(result: dict[str, Any], field: str) -> None:
    """Print ``result[field]`` as it is (a line to paste somewhere), or all of ``result`` with --json."""
    if wants_json():
        emit(result)
    else:
        click.echo(result[field])


@operators.command(name="check")
@click.argument("path", type=click.Path(dir_okay=False))
@reports_errors
def operators_check(path: str) -> None:
    """Read an operators file as the runtime will; print each operator's roles and what they may do."""
    from audit import GRANTS, Roster

    roster = Roster.read(path)
    emit({name: {"roles": sorted(r.value for r in op.roles), "key_id": op.key.key_id.hex(),
                 "may": sorted(set().union(*(GRANTS[r] for r in op.roles)))}
          for name, op in sorted(roster.operators.items())})


@commands.group()
def queue() -> None:
    """Work queues (``WorkQueue`` agents): their depth by state, an item, a page of items, dead items replayed."""


@queue.command(name="stats")
@click.argument("queue_id")
@address_option
@reports_errors
def queue_stats(queue_id: str, address: str) -> None:
    """Count and oldest age of the queue's items per state (pending, leased, done, dead), and its depth."""
    from .queue import QueueStats

    emit(connect(address).lookup(queue_id).ask(QueueStats()), title=f"queue {queue_id}")


@queue.command(name="item")
@click.argument("queue_id")
@click.argument("item_id")
@address_option
@reports_errors
def queue_item(queue_id: str, item_id: str, address: str) -> None:
    """One item's record: state, attempts, lease, result or the reason it failed."""
    from .queue import GetItem

    emit(connect(address).lookup(queue_id).ask(GetItem(item=item_id)), title=f"{queue_id} / {item_id}")


@queue.command(name="items")
@click.argument("queue_id")
@click.option("--state", type=click.Choice(["pending", "leased", "dead", "done"]),
              help="Only items in this state (default: every state: pending, leased, dead, then done).")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True, help="At most this many.")
@click.option("--after", help="Start after this cursor (the `cursor` of the page before).")
@address_option
@reports_errors
def queue_items(queue_id: str, state: str | None, limit: int, after: str | None, address: str) -> None:
    """A page of the queue's items: state, priority, attempts, session, lease holder, ages (seconds), reason."""
    from .queue import Items

    page = connect(address).lookup(queue_id).ask(Items(state=state, after=after, limit=limit))
    emit(page, human=lambda p: _items_view(p, f"{queue_id}: {state or 'all'} items"))


def _items_view(page: dict[str, Any], title: str) -> Any:
    from rich.console import Group
    from rich.text import Text

    from ._console import render

    parts = [render(page["items"], title=title)]
    if page["more"]:
        parts.append(Text(f"more: --after '{page['cursor']}'"))
    return Group(*parts)


def _login() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@queue.command(name="replay")
@click.argument("queue_id")
@click.argument("items", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Every dead item, those that died first first (see --limit).")
@click.option("--limit", type=click.IntRange(min=1),
              help="With --all: at most this many (default: as many as are dead when the command starts).")
@click.option("--who", default=_login, show_default="your login", help="Your name, recorded in each replayed item.")
@address_option
@reports_errors
def queue_replay(queue_id: str, items: tuple[str, ...], every: bool, limit: int | None, who: str,
                 address: str) -> None:
    """Move dead (poison) items back to pending, their attempts from 0: ITEM... by id, or --all.

    Only dead items: naming one in another state (or unknown) refuses the whole request.
    """
    from .queue import QueueStats, Replay

    if bool(items) == every:
        raise click.UsageError("name the ITEMs to replay, or give --all (not both)")
    if limit is not None and not every:
        raise click.UsageError("--limit goes with --all")
    ref = connect(address).lookup(queue_id)
    if items:
        answer = ref.ask(Replay(items=list(items), who=who))
    else:
        dead = ref.ask(QueueStats())["dead"]["count"]
        want = dead if limit is None else limit
        answer = {"replayed": [], "dead": dead}
        with progress_bar(f"replaying {queue_id}'s dead items", want) as advance:
            while len(answer["replayed"]) < want:
                got = ref.ask(Replay(all=True, limit=min(REPLAY_CHUNK, want - len(answer["replayed"])), who=who))
                answer = {"replayed": answer["replayed"] + got["replayed"], "dead": got["dead"]}
                advance(len(got["replayed"]))
                if not got["replayed"]:
                    break
    emit(answer, human=lambda a: _replay_view(a["replayed"], f"{queue_id}: replayed {len(a['replayed'])}, "
                                                            f"{a['dead']} dead left"))


def _replay_view(rows: list[dict[str, Any]], title: str) -> Any:
    from ._console import render

    return render(rows, title=title)


@commands.group()
def metrics() -> None:
    """What a Prometheus and a Grafana need for Garrison's metrics (README, Metrics)."""


@metrics.command(name="grafana")
def metrics_grafana() -> None:
    """Print the Grafana dashboard (JSON, to import beside Ray's): agents, throughput, latency, restarts."""
    click.echo(asset("garrison-dashboard.json"), nl=False)  # JSON either way: --json changes nothing


@metrics.command(name="alerts")
def metrics_alerts() -> None:
    """Print the Prometheus alerting rules (YAML, for rule_files; with --json, the same rules as JSON)."""
    text = asset("garrison-alerts.yml")
    if wants_json():
        import yaml  # PyYAML: Ray's dependency

        emit(yaml.safe_load(text))
    else:
        click.echo(text, nl=False)


def asset(name: str) -> str:
    """A file shipped in ``runtime/assets`` (the dashboard, the alert rules)."""
    from importlib.resources import files

    return (files("runtime") / "assets" / name).read_text(encoding="utf-8")


def run_group(group: click.Group, argv: list[str] | None) -> int:
    """Run ``group`` on ``argv`` (default: the process's arguments); its exit status."""
    try:
        group.main(args=list(sys.argv[1:] if argv is None else argv), prog_name="garrison", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


json_everywhere(commands)


def main(argv: list[str] | None = None) -> int:
    """The runtime's commands alone (``python -m runtime.cli``)."""
    return run_group(commands, argv)


if __name__ == "__main__":
    raise SystemExit(main())
