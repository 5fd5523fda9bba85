"""Replies on the wire: ``[0, value]`` or ``[1, code, message, details]``."""

from __future__ import annotations

from typing import Any

from protocols import WireError

from ._codec import pack, unpack

__all__ = ["decode_reply", "encode_error", "encode_ok"]

OK, ERR = 0, 1


def encode_ok(value: Any) -> bytes:
    return pack([OK, value])


def encode_error(exc: WireError) -> bytes:
    return pack([ERR, *exc.to_wire()])


def decode_reply(raw: bytes) -> tuple[bool, Any]:
    """``(True, value)`` or ``(False, [code, message, details])``."""
    parts = unpack(raw)
    if parts[0] == OK:
        return True, parts[1]
    return False, parts[1:]
