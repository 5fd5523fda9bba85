"""The base class of every message: a pydantic model with a registered type tag."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from ._delivery import Delivery
from ._registry import Registry, default_registry
from .exceptions import RegistrationError

__all__ = ["Message"]


class Message(BaseModel):
    """A typed message.  Subclass it and name the type in the class line::

        class Refund(Message, name="billing.refund", version=2, delivery=Delivery.AT_LEAST_ONCE):
            order_id: str
            cents: int
            reason: str = ""      # added in v2: new fields need a default

    ``name`` defaults to the class name and ``version`` to 1.  ``delivery``
    defaults to EFFECTIVELY_ONCE and can be overridden per send.  The class is
    registered in the default registry when it is defined; pass
    ``registry=...`` to use another, or ``abstract=True`` for an intermediate
    base that is never sent.
    """

    model_config = ConfigDict(extra="forbid")

    __message_name__: ClassVar[str] = ""
    __message_version__: ClassVar[int] = 0
    __message_delivery__: ClassVar[Delivery] = Delivery.EFFECTIVELY_ONCE
    __message_tag__: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # The keyword arguments are ours; pydantic hands them to
        # __pydantic_init_subclass__ once the model is complete.
        super().__init_subclass__()

    @classmethod
    def __pydantic_init_subclass__(
        cls,
        *,
        name: str | None = None,
        version: int = 1,
        delivery: Delivery | None = None,
        registry: Registry | None = None,
        abstract: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if abstract:
            return
        if not isinstance(version, int) or version < 1:
            raise RegistrationError(f"{cls.__qualname__}: version must be an int >= 1, got {version!r}")
        name = name or cls.__name__
        if "@" in name:
            raise RegistrationError(f"{cls.__qualname__}: message name {name!r} must not contain '@'")
        cls.__message_name__ = name
        cls.__message_version__ = version
        cls.__message_tag__ = f"{name}@{version}"
        if delivery is not None:
            cls.__message_delivery__ = Delivery(delivery)
        (registry or default_registry).register(cls)

    @classmethod
    def type_tag(cls) -> str:
        """``"name@version"``, the tag this class travels under."""
        return cls.__message_tag__
