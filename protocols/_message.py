"""The base class of every message: a pydantic model with a registered type tag."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict
from pydantic._internal._model_construction import ModelMetaclass

from ._delivery import Delivery
from ._registry import Registry, default_registry, split_tag
from .exceptions import RegistrationError

__all__ = ["Message"]

#: Set in the namespace of a class that is being rebuilt from a pickle rather
#: than defined by a class statement (see ``_MessageMeta``).
_REBUILT = "__message_rebuilt__"


class _MessageMeta(ModelMetaclass):
    """Keeps a message class's registered tag when the class travels by value.

    A class defined in a driver's ``__main__`` reaches Ray workers by value:
    cloudpickle rebuilds it as an empty skeleton (``type(name, bases,
    {"__module__": ...})``, no class keywords, so ``name=``/``version=`` are
    lost) and then sets the original class's attributes on it one by one.

    Invariants:
    - A class statement's namespace always holds ``__qualname__``; a
      skeleton's does not.  A skeleton is never registered under the default
      tag its bare class name would give (that tag may be another class's).
    - A skeleton is registered when its real tag is set on it, under that
      tag, so a receiver resolves ``counter.get@1`` to the class the sender
      meant, whichever way the class arrived.
    """

    def __new__(mcs, cls_name: str, bases: tuple[type, ...], namespace: dict[str, Any], **kwargs: Any) -> type:
        if bases and "__qualname__" not in namespace and not kwargs:
            namespace[_REBUILT] = True
        return super().__new__(mcs, cls_name, bases, namespace, **kwargs)

    def __setattr__(cls, attr: str, value: Any) -> None:
        super().__setattr__(attr, value)
        if attr == "__message_tag__" and value and cls.__dict__.get(_REBUILT):
            name, version = split_tag(value)
            type.__setattr__(cls, "__message_name__", name)
            type.__setattr__(cls, "__message_version__", version)
            default_registry.register(cls)


class Message(BaseModel, metaclass=_MessageMeta):
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
        if abstract or cls.__dict__.get(_REBUILT):
            return  # a skeleton registers when its tag is set (see _MessageMeta)
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
