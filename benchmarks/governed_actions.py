"""The gateway's cost: a low-risk action through ``self.act`` beside calling its tool directly.

In-process, without Ray: one ``AgentCore`` (real LMDB) handles an ``ActMany``
message whose async handler performs ``count`` lookups, either through the
gateway (grants, risk policy, both breakers, the side-effect ledger's intent
and outcome commits) or by calling the same tool function directly.  The two
alternate, best of ``rounds`` each, so both see the same machine.  Reported:
the gateway's overhead per action (governed minus direct, per action), the
governed actions per second one agent sustains, and their ratio.

    python -m benchmarks.governed_actions [--count N] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["run"]


def _core(root: Path) -> Any:
    from runtime._config import AgentConfig
    from runtime._core import AgentCore
    from runtime._spec import HostSpec

    from ._agents import Clerk

    for d in ("data", "ck"):
        (root / d).mkdir()
    cfg = AgentConfig(checkpoint_interval=3600, ship_interval=3600, grants=("crm.read",))
    core = AgentCore(HostSpec("bench-clerk", Clerk, str(root / "data"), str(root / "ck"), cfg))
    core.ensure_started()
    return core


def _timed(core: Any, count: int, start: int, governed: bool) -> float:
    from protocols import encode_envelope, make_envelope
    from runtime._reply import decode_reply

    from ._agents import ActMany

    blob = encode_envelope(make_envelope(ActMany(count=count, start=start, governed=governed), "bench-clerk"))
    t0 = time.perf_counter()
    ok, value = decode_reply(core.deliver(blob))
    elapsed = time.perf_counter() - t0
    assert ok and value == count, value
    return elapsed


def run(quick: bool = False, *, count: int | None = None, rounds: int = 5, profile: bool = False) -> dict[str, Any]:
    n = count or (2_000 if quick else 10_000)
    prof = cProfile.Profile() if profile else None
    with tempfile.TemporaryDirectory(prefix="garrison-gov-") as tmp:
        core = _core(Path(tmp))
        try:
            _timed(core, 500, 0, True)  # warm up: imports, caches, LMDB pages
            _timed(core, 500, 0, False)
            governed, direct, start = [], [], 1_000
            for _ in range(rounds):
                if prof is not None:
                    prof.enable()
                governed.append(_timed(core, n, start, True))
                if prof is not None:
                    prof.disable()
                direct.append(_timed(core, n, start, False))
                start += n
            ledger_entries = core.store.count("ledger")
        finally:
            core.stop()
    if prof is not None:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(30)
    g, d = min(governed), min(direct)
    return {
        "actions_per_round": n,
        "governed_us_per_action": round(g / n * 1e6, 2),
        "direct_us_per_action": round(d / n * 1e6, 2),
        "overhead_us_per_action": round((g - d) / n * 1e6, 2),
        "governed_actions_per_s": round(n / g),
        "governed_over_direct": round(g / d, 1),
        "ledger_records": ledger_entries,
        "aim": "overhead under 100 us per action; at least 10,000 governed actions/s per agent",
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=None)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    print(run(count=args.count, profile=args.profile))
