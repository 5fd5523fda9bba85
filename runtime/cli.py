"""The ``garrison`` command line.

    garrison demo [--data-dir DIR] [--tickets N]     run the customer-service demo locally
    garrison agents   [--address A]                  list live agents
    garrison status ID [--address A]                 an agent's lifecycle, sequence numbers, last restore
    garrison checkpoint ID [--address A]             take a checkpoint now
    garrison restores ID [--address A]               restore history of an agent
    garrison deadletters ID [--reason R]             list an agent's dead letters
    garrison replay ID (--id X ... | --reason R)     deliver dead letters again

``garrison kill`` (the kill switch) is added by ``supervisors.cli``, the
console script's entry point.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["main"]


def _system(args: argparse.Namespace) -> Any:
    from ._system import System

    return System(address=args.address)


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:
        from .demo import main as demo_main

        return demo_main(argv[1:])
    parser = argparse.ArgumentParser(prog="garrison", description="Garrison: agents on Ray that survive production.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run the customer-service demo on an embedded local Ray")
    for name, help_ in (
        ("agents", "list live agents"),
        ("status", "show an agent's status"),
        ("checkpoint", "take a checkpoint of an agent now"),
        ("restores", "show an agent's restore history"),
        ("deadletters", "list an agent's dead letters"),
        ("replay", "deliver dead letters again"),
    ):
        p = sub.add_parser(name, help=help_)
        if name != "agents":
            p.add_argument("agent_id")
        p.add_argument("--address", default="auto", help="Ray cluster address (default: auto)")
        if name in ("deadletters", "replay"):
            p.add_argument("--reason", help="only dead letters of this reason (e.g. expired, undeliverable)")
        if name == "deadletters":
            p.add_argument("--limit", type=int, default=100)
        if name == "replay":
            p.add_argument("--id", dest="ids", action="append", help="a dead letter id (repeatable)")
    args = parser.parse_args(argv)

    from .exceptions import GarrisonError

    try:
        system = _system(args)
        if args.command == "agents":
            _print(system.agents())
        elif args.command == "status":
            _print(system.lookup(args.agent_id).status())
        elif args.command == "checkpoint":
            _print(system.lookup(args.agent_id).checkpoint())
        elif args.command == "restores":
            _print(system.lookup(args.agent_id).restore_history())
        elif args.command == "deadletters":
            letters = system.lookup(args.agent_id).dead_letters(reason=args.reason, limit=args.limit)
            _print([{k: v for k, v in d.items() if k != "envelope"} for d in letters])
        elif args.command == "replay":
            if not args.ids and not args.reason:
                parser.error("replay needs --id or --reason")
            _print(system.lookup(args.agent_id).replay_dead_letters(ids=args.ids, reason=args.reason))
    except GarrisonError as exc:
        print(f"garrison: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
