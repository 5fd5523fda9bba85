"""CPU per message on the effectively-once hot path, in-process, without Ray.

Two ``AgentCore``s in this process: an ``Emitter`` handles a ``Burst`` ask
(it stages that many ticks into its outbox, one commit), then the outbox is
moved to a ``Counter`` in ``max_batch`` batches exactly as the dispatcher
does (scan, ``encode_batch``, ``deliver_batch``, acknowledge), minus the Ray
call.  Reported is the calling thread's CPU time per message, split into:

``send_us``      the sender's handler and commit (build, validate, envelope, outbox)
``dispatch_us``  the sender's dispatcher work (outbox scan, batch encode, ack commit)
``receive_us``   the receiver's ``deliver_batch`` (decode, validate, handle, group commit)
``ship_us``      both sides' journal shipping (normally a background thread)

Thread CPU time, so it is steady on a shared machine; best of ``rounds``.
Shipping is called here once per round instead of by the background thread.
The garbage collector is set up as ``AgentHost`` sets it up in a host process.

    python -m benchmarks.hotpath_cpu [--profile send|dispatch|receive|ship] [--messages N]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["run"]


def _cores(root: Path) -> tuple[Any, Any]:
    from runtime._config import AgentConfig
    from runtime._core import AgentCore
    from runtime._spec import HostSpec

    from ._agents import Counter, Emitter

    for d in ("data", "ck"):
        (root / d).mkdir()
    # Long intervals: no checkpoint or shipment competes inside the measurement.
    cfg = AgentConfig(checkpoint_interval=3600, ship_interval=3600)
    src = AgentCore(HostSpec("hp-src", Emitter, str(root / "data"), str(root / "ck"), cfg))
    sink = AgentCore(HostSpec("hp-sink", Counter, str(root / "data"), str(root / "ck"), cfg))
    src.ensure_started()
    sink.ensure_started()
    return src, sink


def _burst_blob(start: int, count: int) -> bytes:
    from protocols import encode_envelope, make_envelope

    from ._agents import Burst

    return encode_envelope(make_envelope(Burst(to="hp-sink", start=start, count=count), "hp-src", sender="driver:hp"))


class _Round:
    """One round: send ``n`` ticks, then move them across in batches."""

    def __init__(self, src: Any, sink: Any, start: int, n: int) -> None:
        self.src, self.sink, self.start, self.n = src, sink, start, n
        self.acked = src.dispatcher.last_seq.get("hp-sink", 0)

    def send(self) -> None:
        reply = self.src.deliver(_burst_blob(self.start, self.n))
        assert reply[:1] == b"\x92" and reply[1:2] == b"\x00", reply

    def pump(self, on_batch: Any) -> None:
        """Dispatch the outbox to the sink; ``on_batch(side, fn)`` runs each side's step."""
        from protocols import encode_batch
        from runtime._codec import unpack
        from runtime._outbox import _Peer, outbox_key

        d = self.src.dispatcher
        peer = _Peer("hp-sink", acked=self.acked, sent=self.acked)
        last = d.last_seq["hp-sink"]
        while peer.acked < last:
            box: dict[str, Any] = {}

            # ``box`` bound at definition: each step works on this batch's (they all run in this iteration).
            def offer(box: dict[str, Any] = box) -> None:
                rows = d.store.scan("outbox", b"hp-sink\x00", start=outbox_key("hp-sink", peer.acked + 1),
                                    limit=d.config.max_batch)
                box["blob"] = encode_batch(peer.acked, [v for _, v in rows])

            def receive(box: dict[str, Any] = box) -> None:
                box["reply"] = self.sink.deliver_batch(box["blob"])

            def settle(box: dict[str, Any] = box) -> None:
                ok, (hwm, errors) = unpack(box["reply"])
                assert ok == 0 and not errors, errors
                d._acknowledge(peer, hwm)

            on_batch("dispatch", offer)
            on_batch("receive", receive)
            on_batch("dispatch", settle)
        self.acked = peer.acked


def run(
    quick: bool = False, *, messages: int | None = None, rounds: int = 5, profile: str | None = None
) -> dict[str, Any]:
    n = messages or (10_000 if quick else 20_000)
    best: dict[str, float] = {}
    prof = cProfile.Profile() if profile else None
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)  # as in AgentHost
    with tempfile.TemporaryDirectory(prefix="garrison-hotpath-") as tmp:
        src, sink = _cores(Path(tmp))
        try:
            warm = _Round(src, sink, 0, 2000)  # warm up: imports, caches, LMDB pages
            warm.send()
            warm.pump(lambda side, fn: fn())
            src.shipper.ship()
            sink.shipper.ship()
            start = 2000
            for _ in range(rounds):
                spent = {"send": 0.0, "dispatch": 0.0, "receive": 0.0, "ship": 0.0}

                def timed(side: str, fn: Any, spent: dict[str, float] = spent) -> None:  # this round's
                    if prof is not None and side == profile:
                        prof.enable()
                    t0 = time.thread_time()
                    fn()
                    spent[side] += time.thread_time() - t0
                    if prof is not None and side == profile:
                        prof.disable()

                rnd = _Round(src, sink, start, n)
                timed("send", rnd.send)
                rnd.pump(timed)
                timed("ship", src.shipper.ship)
                timed("ship", sink.shipper.ship)
                start += n
                for side, secs in spent.items():
                    us = secs / n * 1e6
                    best[side] = min(best.get(side, us), us)
            assert sink.state.get("count") == start, (sink.state.get("count"), start)
        finally:
            src.stop()
            sink.stop()
            gc.set_threshold(*thresholds)
            gc.unfreeze()
    if prof is not None:
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
        pstats.Stats(prof).sort_stats("cumulative").print_stats(40)
    out = {f"{side}_us": round(us, 2) for side, us in best.items()}
    out["sender_total_us"] = round(best["send"] + best["dispatch"], 2)
    out["messages_per_round"] = n
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hotpath_cpu", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=["send", "dispatch", "receive", "ship"])
    parser.add_argument("--messages", type=int)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(run(messages=args.messages, rounds=args.rounds, profile=args.profile))


if __name__ == "__main__":
    main()
