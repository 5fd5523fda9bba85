"""The ``garrison`` command: one click tree, the runtime's commands plus the operators' switches.

    garrison kill       --who W [--key K] --why TEXT (--agent ID [--supervisor S] | --supervisor S | --all)
    garrison unhalt     --who W [--key K] --why TEXT (--agent ID [--supervisor S] | --supervisor S | --all)
    garrison quarantine --who W [--key K] --why TEXT --agent ID [--supervisor S]
    garrison release    --who W [--key K] --why TEXT (--agent ID [--supervisor S] | --supervisor S)

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

import logging
from collections.abc import Callable
from typing import Any

import click

from runtime.cli import address_option, commands, emit, identity_options, operator, reports_errors, run_group

__all__ = ["garrison", "main"]


@click.group(name="garrison", context_settings={"help_option_names": ["-h", "--help"]})
def garrison() -> None:
    """Garrison: agents on Ray that survive production."""


for _command in commands.commands.values():
    garrison.add_command(_command)


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
    from runtime import System

    System(address=address)


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
