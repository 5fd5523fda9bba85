"""Time-ordered unique message ids.

An id is 16 bytes: 6 bytes of milliseconds since the epoch (big-endian), then
10 bytes whose first 2 are a per-process counter and last 8 are random per
process.  Invariant: ids made by one process sort in creation order, and two
processes collide only if their 64-bit random suffixes do.
"""

from __future__ import annotations

import os
import threading
import time

__all__ = ["new_id", "id_time"]

_lock = threading.Lock()
_last_ms = 0
_seq = 0
_suffix = os.urandom(8)


def new_id() -> bytes:
    global _last_ms, _seq, _suffix
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            ms = _last_ms
            _seq += 1
            if _seq > 0xFFFF:  # more than 65,536 ids in one ms: borrow the next ms
                ms += 1
                _seq = 0
        else:
            _seq = 0
        _last_ms = ms
        return ms.to_bytes(6, "big") + _seq.to_bytes(2, "big") + _suffix


def id_time(message_id: bytes) -> float:
    """Seconds since the epoch at which ``message_id`` was made."""
    return int.from_bytes(message_id[:6], "big") / 1000.0


def _reseed_after_fork() -> None:
    global _suffix
    _suffix = os.urandom(8)


os.register_at_fork(after_in_child=_reseed_after_fork)
