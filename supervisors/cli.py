"""The ``garrison`` command: the runtime's commands, plus the kill switch.

    garrison kill --who W --why TEXT (--agent ID | --supervisor ID | --all) [--address A]

Everything else is ``runtime.cli``; this module sits on top because the kill
switch reaches supervisors, and the runtime never imports them.
"""

from __future__ import annotations

import argparse
import json
import sys

from runtime.cli import main as runtime_main

__all__ = ["main"]


def _kill(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="garrison kill", description="Pull the kill switch.")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--agent", help="one agent")
    target.add_argument("--supervisor", help="a supervisor and its whole subtree")
    target.add_argument("--all", action="store_true", help="every agent and supervisor in the namespace")
    parser.add_argument("--who", required=True, help="who pulls it (recorded and notified)")
    parser.add_argument("--why", required=True, help="why (recorded and notified)")
    parser.add_argument("--address", default="auto", help="Ray cluster address (default: auto)")
    args = parser.parse_args(argv)

    from runtime import GarrisonError, System

    from ._killswitch import halt

    try:
        System(address=args.address)
        result = halt(args.who, args.why, agent=args.agent, supervisor=args.supervisor, everything=args.all)
    except GarrisonError as exc:
        print(f"garrison: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["kill"]:
        return _kill(argv[1:])
    return runtime_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
