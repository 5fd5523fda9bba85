"""Exceptions raised by the wire protocol, and the root of every Garrison error.

Every error Garrison raises is a :class:`GarrisonError`: one ``except
GarrisonError`` catches the protocol's, the runtime's and the supervisors'
errors alike (each package keeps one exceptions module whose classes hang
under it).  Every one of them can cross the wire: a receiver that rejects a
message sends the error back as ``[code, message, details]`` and the sender
raises the same class again (:func:`error_from_wire`).

The whole tree, once (each package's module draws its own part)::

    GarrisonError                   root: catch this one
    ├── ProtocolError               the message itself was wrong or late (this module)
    ├── ConfigError, DataDirectoryError, StateError, CheckpointError, RestoreError,
    │   ClusterUnavailable, InternalError, AgentError, FeedbackError, AskTimeout   (runtime.exceptions)
    ├── SupervisorError             (supervisors.exceptions)
    └── AuditError                  the audit log: tampering, bad proofs and signatures (audit.exceptions)

This module's part::

    GarrisonError                   (``WireError`` is its former name, kept as an alias)
    ProtocolError
    ├── EncodingError               bytes are not a well-formed envelope, or a message cannot be encoded into one
    ├── PayloadTooLarge             envelope is bigger than the receiver accepts
    ├── SchemaError
    │   ├── UnknownMessageType      type name or version is not registered
    │   ├── MessageValidationError  body does not validate against its class
    │   └── RegistrationError       a message class or upcaster is declared wrongly
    ├── DeadlineExpired             the message's absolute deadline has passed
    ├── StaleEpoch                  the sender's incarnation has been replaced (fenced)
    └── RemoteError                 the peer answered with an error code we do not know
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "DeadlineExpired",
    "EncodingError",
    "GarrisonError",
    "MessageValidationError",
    "PayloadTooLarge",
    "ProtocolError",
    "RegistrationError",
    "RemoteError",
    "SchemaError",
    "StaleEpoch",
    "UnknownMessageType",
    "WireError",
    "error_from_wire",
]

# code -> class; filled by GarrisonError.__init_subclass__.
_WIRE_CODES: dict[str, type[GarrisonError]] = {}


class GarrisonError(Exception):
    """Root of every error Garrison raises; each can be sent back to a sender.

    ``message`` is the human text, ``details`` holds only msgpack-friendly
    values (str, int, float, bool, None, lists and dicts of those) so the
    error survives the trip intact, and ``code`` names the class on the wire.
    """

    code: ClassVar[str] = "GarrisonError"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Invariant: a code names exactly one class; a subclass that does not
        # set its own code gets its class name, so codes never collide silently.
        if "code" not in cls.__dict__:
            cls.code = cls.__name__
        _WIRE_CODES[cls.code] = cls

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_wire(self) -> list[Any]:
        return [self.code, self.message, self.details]

    def __reduce__(self):  # keep details across pickling (Ray ships exceptions)
        return (_rebuild, (type(self), self.message, self.details))


#: The root's former name: "anything that can travel in a reply" is every Garrison error.
WireError = GarrisonError
_WIRE_CODES[GarrisonError.code] = GarrisonError


def _rebuild(cls: type[WireError], message: str, details: dict[str, Any]) -> WireError:
    return cls(message, **details)


class ProtocolError(GarrisonError):
    """Root of the protocol's errors: the message itself was wrong or late."""


class EncodingError(ProtocolError):
    """The bytes are not a well-formed envelope (random bytes, truncated msgpack, wrong field types),
    or a message's body cannot be encoded into one (data its class cannot dump in JSON mode)."""


class PayloadTooLarge(ProtocolError):
    """The envelope is larger than the receiver's ``max_message_bytes``."""


class SchemaError(ProtocolError):
    """The message does not fit any registered schema."""


class UnknownMessageType(SchemaError):
    """The type name or version is not registered; ``details['known']`` lists what is."""


class MessageValidationError(SchemaError):
    """The body failed validation; ``details['errors']`` holds one entry per bad field path."""


class RegistrationError(SchemaError):
    """A message class or upcaster was declared against the evolution rules."""


class DeadlineExpired(ProtocolError):
    """The absolute deadline passed; ``details`` say which deadline and where it expired."""


class StaleEpoch(ProtocolError):
    """The sending incarnation's epoch is older than one already seen or claimed for that sender.

    A replaced incarnation that wakes up (a hung process, a partitioned node)
    cannot act twice: ``details`` name the sender, its epoch and the newer one.
    """


class RemoteError(ProtocolError):
    """The peer answered with an error code this process does not know."""


def error_from_wire(wire: Any) -> WireError:
    """Rebuild the exception a peer sent as ``[code, message, details]``."""
    try:
        code, message, details = wire
        cls = _WIRE_CODES.get(str(code))
        if cls is None:
            return RemoteError(f"{code}: {message}", remote_code=str(code), **dict(details))
        return cls(str(message), **dict(details))
    except (TypeError, ValueError) as exc:
        return RemoteError(f"unreadable error reply: {wire!r}", cause=str(exc))
