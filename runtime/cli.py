"""The ``garrison`` command line.

    garrison demo [--data-dir DIR] [--tickets N]     run the customer-service demo locally
    garrison agents   [--address A]                  list live agents
    garrison status ID [--address A]                 an agent's lifecycle, sequence numbers, last restore
    garrison checkpoint ID [--address A]             take a checkpoint now
    garrison restores ID [--address A]               restore history of an agent
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
    ):
        p = sub.add_parser(name, help=help_)
        if name != "agents":
            p.add_argument("agent_id")
        p.add_argument("--address", default="auto", help="Ray cluster address (default: auto)")
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
    except GarrisonError as exc:
        print(f"garrison: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
