"""Time-ordered unique message ids.

An id is 16 bytes: 6 bytes of milliseconds since the epoch (big-endian), 2
bytes of a per-process counter, then 8 random bytes fixed per process.
Invariants: ids from one process are unique (the counter would have to wrap,
65,536 ids within one millisecond, to repeat one) and sort by creation time
to the millisecond; two processes collide only if their 64-bit random
suffixes do.  No lock: ``next()`` on an ``itertools.count`` is atomic.
"""

from __future__ import annotations

import itertools
import os
import time

__all__ = ["id_time", "new_id"]

_counter = itertools.count()
_suffix = os.urandom(8)


def new_id() -> bytes:
    # Milliseconds in the high 48 bits, the counter in the low 16: one to_bytes.
    return ((time.time_ns() // 1_000_000) << 16 | (next(_counter) & 0xFFFF)).to_bytes(8, "big") + _suffix


def id_time(message_id: bytes) -> float:
    """Seconds since the epoch at which ``message_id`` was made."""
    return int.from_bytes(message_id[:6], "big") / 1000.0


def _reseed_after_fork() -> None:
    global _suffix
    _suffix = os.urandom(8)


os.register_at_fork(after_in_child=_reseed_after_fork)
