"""Delivery guarantees a message class (or a single send) can ask for."""

from __future__ import annotations

import enum

__all__ = ["Delivery"]


class Delivery(enum.Enum):
    """How hard the runtime tries, and what the receiver remembers.

    AT_MOST_ONCE      sent once, never redelivered, no receiver record.
    AT_LEAST_ONCE     retried until acknowledged (the ack follows the receiver's
                      state commit); a retry may run the handler again.
    EFFECTIVELY_ONCE  retried like AT_LEAST_ONCE, and the receiver records the
                      message id in the same LMDB transaction as the handler's
                      state changes, so a redelivery has no second effect and
                      gets the first reply back.
    """

    AT_MOST_ONCE = "at_most_once"
    AT_LEAST_ONCE = "at_least_once"
    EFFECTIVELY_ONCE = "effectively_once"
