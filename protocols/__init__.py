"""Garrison's wire protocol: typed messages, envelopes, the schema registry.

This package depends on nothing else of Garrison's.
"""

from ._batch import decode_batch, encode_batch
from ._canonical import canonical_bytes
from ._delivery import Delivery
from ._envelope import Envelope, decode_envelope, encode_envelope, encode_envelopes, make_envelope
from ._ids import id_time, new_id
from ._message import Message
from ._registry import Registry, default_registry
from ._schema import field_errors, parse_message
from .exceptions import (
    DeadlineExpired,
    EncodingError,
    GarrisonError,
    MessageValidationError,
    PayloadTooLarge,
    ProtocolError,
    RegistrationError,
    RemoteError,
    SchemaError,
    StaleEpoch,
    UnknownMessageType,
    WireError,
    error_from_wire,
)

__all__ = [
    "DeadlineExpired",
    "Delivery",
    "EncodingError",
    "Envelope",
    "GarrisonError",
    "Message",
    "MessageValidationError",
    "PayloadTooLarge",
    "ProtocolError",
    "RegistrationError",
    "Registry",
    "RemoteError",
    "SchemaError",
    "StaleEpoch",
    "UnknownMessageType",
    "WireError",
    "canonical_bytes",
    "decode_batch",
    "decode_envelope",
    "default_registry",
    "encode_batch",
    "encode_envelope",
    "encode_envelopes",
    "error_from_wire",
    "field_errors",
    "id_time",
    "make_envelope",
    "new_id",
    "parse_message",
]
