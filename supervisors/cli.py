"""The ``garrison`` command: one click tree, the runtime's commands plus the operators' switches.

    garrison kill       --who W [--key K] --why TEXT (--agent ID [--supervisor S] | --supervisor S | --all)
    garrison unhalt     --who W [--key K] --why TEXT (--agent ID [--supervisor S] | --supervisor S | --all)
    garrison quarantine --who W [--key K] --why TEXT --agent ID [--supervisor S]
    garrison release    --who W [--key K] --why TEXT (--agent ID [--supervisor S] | --supervisor S)
    garrison deploy     --who W [--key K] --why TEXT --supervisor S --agent ID [--class M:C] [--config JSON] [--init JSON]
    garrison rollback   --who W [--key K] --why TEXT --supervisor S --agent ID [--to HASH]
    garrison tree                                     the supervision tree with each node's state
    garrison pool NAME                                a worker pool: its workers, its scaler's looks and changes
    garrison pipeline status|where|escalations|resolve  a pipeline's progress, a ticket, the desk's escalations

each with ``[--address A]``.  Every switch is recorded with who and why (in
the agent's operator log, ``garrison actions ID``; as a supervisor event when
it goes through one) and sent to the notifiers (the log).  With
``--supervisor``, the supervisor acts for its child (it then never restarts a
halted child, nor probes a quarantined one); ``--agent`` alone goes straight
to the agent's host.  The runtime's commands (``demo``, ``agents``, ``status``
...) are ``runtime.cli``'s group, added here: this module sits on top because
the switches reach supervisors, and the runtime never imports them.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import Any

import click

from runtime.cli import (
    address_option,
    commands,
    connect,
    emit,
    forest_view,
    identity_options,
    json_everywhere,
    operator,
    reports_errors,
    run_group,
    wants_json,
)

__all__ = ["garrison", "main"]


@click.group(name="garrison", context_settings={"help_option_names": ["-h", "--help"]})
def garrison() -> None:
    """Garrison: agents on Ray that survive production."""


for _command in commands.commands.values():
    garrison.add_command(_command)


@garrison.command()
@click.option("--data-dir", default="./garrison-data", show_default=True, help="Where the demo keeps its state.")
@click.option("--tickets", type=int, default=40, show_default=True, help="How many support tickets to run.")
@click.option("--dashboard", is_flag=True, help="Start Ray's dashboard too, print its URL, keep the agents up after.")
@click.option("--hold", type=float, default=None, help="With --dashboard: seconds to keep them up (default: until Ctrl-C).")
def demo(data_dir: str, tickets: int, dashboard: bool, hold: float | None) -> None:
    """Run the customer-service demo on an embedded local Ray (with --json: its story on stderr, results on stdout)."""
    from .demo import run

    result = run(data_dir, tickets, out=sys.stderr if wants_json() else None, dashboard=dashboard, hold=hold)
    if wants_json():
        emit(result)
    raise click.exceptions.Exit(0 if result["ok"] else 1)


def _who_why(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--why", required=True, help="Why (recorded and notified).")(fn)
    return identity_options("the action (and notified)")(fn)


def _switch_targets(supervisor_help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The kill switch's targets: --agent, --supervisor, --all (checked by :func:`_one_target`)."""
    def options(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn = click.option("--all", "everything", is_flag=True, help="Every agent and supervisor in the namespace.")(fn)
        fn = click.option("--supervisor", help=supervisor_help)(fn)
        return click.option("--agent", help="One agent (with --supervisor: through that supervisor).")(fn)
    return options


def _connect(address: str) -> None:
    """Connect to the cluster; called once the arguments were checked, so a bad call touches no cluster."""
    connect(address)


def _one_target(agent: str | None, supervisor: str | None, everything: bool) -> None:
    """The switches' targets, checked before connecting (``_killswitch`` checks them again)."""
    if everything == bool(agent or supervisor):
        raise click.UsageError("give exactly one target: --agent (optionally with --supervisor), --supervisor or --all")


@garrison.command()
@_switch_targets("A supervisor and its whole subtree.")
@_who_why
@address_option
@reports_errors
def kill(agent: str | None, supervisor: str | None, everything: bool, who: str, key: str | None, why: str,
         address: str) -> None:
    """Pull the kill switch (lasts until unhalt).

    Halted agents handle and send nothing from now on, take a final
    checkpoint and keep their state; a restart comes back halted.
    """
    from ._killswitch import halt

    _one_target(agent, supervisor, everything)
    _connect(address)
    emit(halt(operator(who, key), why, agent=agent, supervisor=supervisor, everything=everything))


@garrison.command()
@_switch_targets("A halted supervisor and its whole subtree.")
@_who_why
@address_option
@reports_errors
def unhalt(agent: str | None, supervisor: str | None, everything: bool, who: str, key: str | None, why: str,
           address: str) -> None:
    """Lift the kill switch; agents resume from their state."""
    from ._killswitch import unhalt as unhalt_

    _one_target(agent, supervisor, everything)
    _connect(address)
    emit(unhalt_(operator(who, key), why, agent=agent, supervisor=supervisor, everything=everything))


@garrison.command()
@click.option("--agent", required=True, help="The agent to quarantine.")
@click.option("--supervisor", help="Its supervisor, which then stops probing and restarting it.")
@_who_why
@address_option
@reports_errors
def quarantine(agent: str, supervisor: str | None, who: str, key: str | None, why: str, address: str) -> None:
    """Quarantine an agent (lasts until release).

    It refuses messages (kept as dead letters) and keeps its state; a restart
    comes back quarantined.
    """
    from ._killswitch import quarantine as quarantine_

    _connect(address)
    emit(quarantine_(operator(who, key), why, agent=agent, supervisor=supervisor))


@garrison.command()
@click.option("--agent", help="The quarantined agent (with --supervisor: through that supervisor).")
@click.option("--supervisor", help="A quarantined supervisor (alone), or the agent's supervisor.")
@_who_why
@address_option
@reports_errors
def release(agent: str | None, supervisor: str | None, who: str, key: str | None, why: str, address: str) -> None:
    """Lift a quarantine; the agent (or supervisor) resumes."""
    from ._killswitch import release as release_

    if not (agent or supervisor):
        raise click.UsageError("release needs --agent or --supervisor")
    _connect(address)
    emit(release_(operator(who, key), why, agent=agent, supervisor=supervisor))


def _load_class(path: str) -> type:
    """``module:QualName`` (or ``module.QualName``), imported with the current directory on the path."""
    import importlib
    import os
    import sys

    module, _, name = path.partition(":") if ":" in path else path.rpartition(".")
    if not module or not name:
        raise click.BadParameter(f"{path!r}: give the class as module:ClassName")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        value: Any = importlib.import_module(module)
        for part in name.split("."):
            value = getattr(value, part)
    except (ImportError, AttributeError) as exc:
        raise click.BadParameter(f"cannot import {path!r}: {exc}") from exc
    return value


def _json_object(value: str | None) -> dict[str, Any] | None:
    import json

    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise click.BadParameter("give a JSON object")
    return parsed


@garrison.command()
@click.option("--supervisor", required=True, help="The agent's supervisor.")
@click.option("--agent", required=True, help="The agent child to deploy a new version of.")
@click.option("--class", "class_path", help="The new agent class, module:ClassName (importable here and on the nodes).")
@click.option("--config", help='Config fields to change, as a JSON object (e.g. \'{"config_version": "2"}\').')
@click.option("--init", help="New constructor arguments, as a JSON object.")
@_who_why
@address_option
@reports_errors
def deploy(supervisor: str, agent: str, class_path: str | None, config: str | None, init: str | None, who: str,
           key: str | None, why: str, address: str) -> None:
    """Run an agent under a new version through its supervisor (graceful stop, start; state kept)."""
    from ._ref import SupervisorRef

    cls = _load_class(class_path) if class_path else None
    changes = {"agent": cls, "config": _json_object(config), "init": _json_object(init)}
    if not any(v is not None for v in changes.values()):
        raise click.UsageError("give what changes: --class, --config or --init")
    _connect(address)
    emit(SupervisorRef.lookup(supervisor).deploy(agent, who=operator(who, key), why=why, **changes))


@garrison.command()
@click.option("--supervisor", required=True, help="The agent's supervisor.")
@click.option("--agent", required=True, help="The agent child to roll back.")
@click.option("--to", help="The version (its hash, or a prefix of it) to go back to; default: the one before.")
@_who_why
@address_option
@reports_errors
def rollback(supervisor: str, agent: str, to: str | None, who: str, key: str | None, why: str, address: str) -> None:
    """Run an agent again under an earlier version (its state is kept, not rolled back)."""
    from ._ref import SupervisorRef

    _connect(address)
    emit(SupervisorRef.lookup(supervisor).rollback(agent, who=operator(who, key), why=why, to=to))


@garrison.command()
@address_option
@reports_errors
def tree(address: str) -> None:
    """The supervision tree: each supervisor (state, strategy) and its children (state, restarts, pid)."""
    from ._tree import look

    _connect(address)
    emit(look(), human=forest_view)


@garrison.command()
@click.argument("name")
@address_option
@reports_errors
def pool(name: str, address: str) -> None:
    """A worker pool (``start_pool``): its workers' states, its scaler's last look and recent size changes."""
    from ._pool import PoolStatus
    from ._ref import SupervisorRef

    system = connect(address)
    status = system.lookup(f"{name}-scaler").ask(PoolStatus())
    workers = SupervisorRef.lookup(f"{name}-workers").which_children()
    emit({"pool": name, "queue": status["queue"], "last_look": status["last"],
          "workers": [{k: w.get(k) for k in ("id", "state", "incarnation", "restarts", "pid")} for w in workers],
          "changes": status["changes"][-10:]}, title=f"pool {name}")


@garrison.group()
def pipeline() -> None:
    """Pipelines (``start_pipeline``): progress per stage and end to end, where a ticket is, the desk's escalations."""


@pipeline.command(name="status")
@click.argument("name")
@click.option("--tickets", type=click.IntRange(min=0), default=20, show_default=True,
              help="How many in-flight tickets to list, with their stage (0: none).")
@address_option
@reports_errors
def pipeline_status(name: str, tickets: int, address: str) -> None:
    """Each stage's queue (pending, leased, done, dead, oldest wait), the end-to-end progress and latency, and the
    tickets in flight with the stage each is at."""
    from runtime import Pipeline

    emit(Pipeline(name, connect(address).lookup).status(tickets=tickets), title=f"pipeline {name}")


@pipeline.command(name="where")
@click.argument("name")
@click.argument("key")
@address_option
@reports_errors
def pipeline_where(name: str, key: str, address: str) -> None:
    """Where ticket KEY is: the furthest stage that has it, and its item at each stage."""
    from runtime import Pipeline

    emit(Pipeline(name, connect(address).lookup).where(key), title=f"ticket {key}")


@pipeline.command(name="escalations")
@click.argument("name")
@click.option("--all", "everything", is_flag=True, help="Resolved ones too (default: open ones only).")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@address_option
@reports_errors
def pipeline_escalations(name: str, everything: bool, limit: int, address: str) -> None:
    """Tickets a stage gave up on, waiting for a person (``resolve`` them); --json: with each ticket's trail."""
    from runtime import Pipeline

    found = Pipeline(name, connect(address).lookup).escalations(open_only=not everything, limit=limit)
    shown = found if wants_json() else [  # a person reads the data; a script gets the tickets with their trail
        {k: e.get(k) for k in ("item", "stage", "attempts", "error", "state", "at")} | {"data": e["ticket"]["data"]}
        for e in found]
    emit(shown, title=f"pipeline {name}: escalations")


@pipeline.command(name="resolve")
@click.argument("name")
@click.argument("item")
@click.argument("action", type=click.Choice(["retry", "drop"]))
@click.option("--who", required=True, help="Your name, recorded with the decision.")
@click.option("--why", default="", help="Why (recorded).")
@click.option("--data", "data", default=None, help="retry: the ticket's data to use instead (JSON).")
@address_option
@reports_errors
def pipeline_resolve(name: str, item: str, action: str, who: str, why: str, data: str | None, address: str) -> None:
    """Decide escalation ITEM: retry it at its stage (optionally with new --data) or drop it."""
    from runtime import Pipeline

    if data is not None and action != "retry":
        raise click.UsageError("--data goes with retry")
    try:
        replacement = None if data is None else json.loads(data)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--data") from exc
    emit(Pipeline(name, connect(address).lookup).resolve(item, action, who=who, why=why, data=replacement,
                                                           replace_data=data is not None))


json_everywhere(garrison)


def main(argv: list[str] | None = None) -> int:
    """The ``garrison`` console script; the operators' events (notifications) go to stderr, one JSON line each."""
    events = logging.getLogger("garrison.supervisor.events")
    if not events.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        events.addHandler(handler)
        events.setLevel(logging.INFO)
    return run_group(garrison, argv)


if __name__ == "__main__":
    raise SystemExit(main())
