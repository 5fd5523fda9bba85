"""The base of every policy record: frozen, strict, failing with :class:`SpecError`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from .exceptions import SpecError

__all__ = ["Frozen", "spec_error"]


class Frozen(BaseModel):
    """Frozen, unknown fields refused, and raising :class:`SpecError` instead of pydantic's error."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise spec_error(type(self).__name__, exc) from exc


def spec_error(what: str, exc: ValidationError) -> SpecError:
    """pydantic's validation error, as ours, listing every field at fault."""
    errors = [{"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"]} for e in exc.errors()]
    return SpecError(
        f"invalid {what}: " + "; ".join(f"{e['loc'] or '<root>'}: {e['msg']}" for e in errors),
        errors=errors,
    )
