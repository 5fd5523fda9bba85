"""Turning an envelope's body into a validated message instance."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ._envelope import Envelope
from ._message import Message
from ._registry import Registry, default_registry
from .exceptions import MessageValidationError

__all__ = ["field_errors", "parse_message"]


def field_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """pydantic's errors as msgpack-friendly dicts with dotted field paths."""
    return [
        {"loc": ".".join(str(p) for p in err["loc"]), "msg": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]


def parse_message(env: Envelope, registry: Registry = default_registry) -> Message:
    """Resolve ``env.type`` (upcasting older versions) and validate the body.

    Raises UnknownMessageType or MessageValidationError; never a pydantic error.
    """
    cls, body = registry.resolve(env.type, env.body)
    try:
        # The class's validator directly: what ``model_validate`` calls,
        # without its keyword-argument plumbing (half the cost of a small body).
        return cls.__pydantic_validator__.validate_python(body)
    except ValidationError as exc:
        errors = field_errors(exc)
        paths = ", ".join(e["loc"] or "<body>" for e in errors)
        raise MessageValidationError(
            f"{env.type} failed validation at {paths}: {errors[0]['msg']}",
            tag=env.type,
            errors=errors,
        ) from exc
