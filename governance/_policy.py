"""The base of governance's policy models: frozen, strict, and invalid data is a PolicyError.

Invariant: constructing (or ``model_validate``-ing) a policy from bad data raises :class:`PolicyError`
(with pydantic's field errors in ``details["errors"]``), never pydantic's own
error; a policy nested in another model (an ``AgentConfig``) is validated by
that model, whose own translation applies.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from protocols import field_errors

from .exceptions import PolicyError

__all__ = ["Policy"]


class Policy(BaseModel):
    """Frozen policy data (see module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _policy_error(type(self), exc) from exc

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """As pydantic's, with invalid data a PolicyError (module docstring)."""
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as exc:
            raise _policy_error(cls, exc) from exc


def _policy_error(cls: type, exc: ValidationError) -> PolicyError:
    errors = field_errors(exc)
    return PolicyError(f"invalid {cls.__name__}: " + "; ".join(f"{e['loc'] or '<root>'}: {e['msg']}" for e in errors),
                       errors=errors)
