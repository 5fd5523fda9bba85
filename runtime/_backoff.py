"""The runtime's one retry-delay policy: exponential, capped, optionally jittered.

Used by a ref's ask retries (``_ref``), a driver's search for a missing
agent (``_holding``) and the outbox's redelivery to a peer (``_outbox``);
the supervisors' restart delay (``supervisors._backoff``) and a degraded
agent's retries of its background work (``_degraded.retry_backoff``) compute
through it too.  It is data plus one pure function: the caller passes the attempt number
and (for jitter) a random number, so tests drive it without sleeping and
without a random source.

Why not ``tenacity`` or ``backoff``: those own the retry *loop* (call, catch,
sleep, repeat).  Ours differ in what they do between attempts (follow the
agent to a new host and retry at once, bound the wait by a message's
deadline, wait on the event loop or on a thread, schedule a peer's next
batch rather than sleep), so each keeps its loop and asks this policy only
how long to wait.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True)
class Backoff:
    """How long to wait before retry number ``attempt`` (counting from 0).

    ``delay(attempt, rand) = min(cap, initial * factor ** attempt) * (1 - jitter * rand)``
    with ``rand`` uniform in ``[0, 1)``: ``jitter=0`` is deterministic (``rand``
    is then ignored), ``jitter=1`` is "full jitter" (uniform in ``(0, base]``).
    """

    #: Seconds before the first retry.
    initial: float
    #: Growth per attempt (1 keeps the delay constant).
    factor: float = 2.0
    #: Longest delay, before jitter.
    cap: float = math.inf
    #: Fraction of the delay randomly taken off, spreading many retriers apart.
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.initial < 0 or self.cap < 0:
            raise ValueError("initial and cap are seconds: not negative")
        if self.factor < 1:
            raise ValueError("factor must be at least 1: delays never shrink")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter is a fraction of the delay: in [0, 1]")

    def delay(self, attempt: int, rand: float = 0.0) -> float:
        """Seconds to wait before retry ``attempt`` (>= 0); ``rand`` in [0, 1) (only jitter uses it)."""
        if attempt < 0:
            raise ValueError("attempt counts retries from 0")
        if not 0.0 <= rand < 1.0:
            raise ValueError("rand must be in [0, 1)")
        # Invariant: the exponent is capped, so a long retry loop never overflows a float.
        base = min(self.cap, self.initial * self.factor ** min(attempt, 64))
        return base * (1.0 - self.jitter * rand)
