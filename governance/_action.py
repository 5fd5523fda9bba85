"""Actions as typed data: what an agent asks to do in the world, and what it declares about it.

An action is a :class:`protocols.Message` (registered and versioned like one)
whose class line also declares how it is governed::

    class Refund(Action, name="shop.refund", version=1, capability="payments.refund",
                 risk=lambda a: Risk.HIGH if a.amount > 50 else Risk.MEDIUM,
                 idempotent=False, business_errors=(OutOfStock,), cost=0.0):
        order: str
        amount: float

Declarations (class keywords):

``capability`` (required)
    The capability an agent must be granted to perform it: dot-separated
    segments of letters, digits, ``_`` and ``-`` (``"payments.refund"``).
    See :mod:`governance._risk` for how grants match.
``risk`` (required)
    A :class:`Risk`, its string value, or a function of the action returning
    one (a refund above a threshold is high).
``idempotent`` (default False)
    Performing it twice with the same idempotency key has the effect of once:
    after a crash between intent and outcome it may be called again.
``business_errors`` (default ``()``)
    Exception classes that are outcomes of the business (out of stock), not
    failures: they do not count against a circuit breaker.
``cost`` (default 0.0)
    Estimated cost of one call, a finite number >= 0 or a function of the
    action returning one; budgets check it before the call.

A concrete action that leaves a keyword out inherits it from the nearest
concrete action class it extends; ``abstract=True`` marks an intermediate
base that declares nothing and is never performed.

Invariants:

- Every concrete action class has a validated :class:`ActionDeclaration` in
  its own namespace (``__action__``), plus ``capability``, ``idempotent`` and
  ``business_errors`` as plain class attributes.  They are ordinary class
  attributes on purpose: a class defined in a driver's ``__main__`` reaches
  Ray workers by value, cloudpickle drops the class keywords and sets the
  original class's attributes on a skeleton, and these travel with them.
- Instances are frozen: what was digested (and approved) cannot change
  under a reference to it.
- :func:`argument_digest` depends only on the tag and the field values, not
  on key order, process or Python hash seed.
"""

from __future__ import annotations

import enum
import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import ConfigDict

from protocols import Message, canonical_bytes

from .exceptions import ActionDeclarationError

__all__ = ["Action", "ActionDeclaration", "Risk", "argument_digest"]

#: A capability: dot-separated segments, each of letters, digits, ``_`` or ``-``.
CAPABILITY = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")

#: Set by ``protocols`` in the namespace of a message class rebuilt from a pickle
#: (a skeleton without class keywords): its declarations arrive as attributes.
_REBUILT_MARK = "__message_rebuilt__"


class Risk(str, enum.Enum):
    """How dangerous an action is, ordered ``LOW < MEDIUM < HIGH < PROHIBITED``."""

    LOW = "low"                  # executes
    MEDIUM = "medium"            # executes and is recorded for review (blocks past the unreviewed limit)
    HIGH = "high"                # needs human approval before it executes
    PROHIBITED = "prohibited"    # never executes; no approval unlocks it

    @property
    def rank(self) -> int:
        """0 for LOW up to 3 for PROHIBITED."""
        return _RANKS[self]

    # str already orders by spelling ("high" < "low"), and would answer for a plain
    # string on the other side: every comparison is overridden, and a string is
    # compared as the Risk it names.
    def __lt__(self, other: object) -> bool:
        return self.rank < _rank_of(other)

    def __le__(self, other: object) -> bool:
        return self.rank <= _rank_of(other)

    def __gt__(self, other: object) -> bool:
        return self.rank > _rank_of(other)

    def __ge__(self, other: object) -> bool:
        return self.rank >= _rank_of(other)


_RANKS = {Risk.LOW: 0, Risk.MEDIUM: 1, Risk.HIGH: 2, Risk.PROHIBITED: 3}


def _rank_of(other: object) -> int:
    try:
        return _RANKS[Risk(other)]
    except ValueError:
        raise TypeError(f"a Risk compares with a Risk or its name, not {other!r}") from None


RiskDeclaration = Risk | Callable[["Action"], Risk]
CostDeclaration = float | Callable[["Action"], float]


@dataclass(frozen=True)
class ActionDeclaration:
    """What an action class declares about how it is governed (validated; see the module docstring)."""

    capability: str
    risk: RiskDeclaration
    idempotent: bool
    business_errors: tuple[type[BaseException], ...]
    cost: CostDeclaration


def _check_capability(owner: str, capability: Any) -> str:
    if capability is None:
        raise ActionDeclarationError(f"{owner}: declare the capability it needs (capability='area.verb')")
    if not isinstance(capability, str) or not CAPABILITY.fullmatch(capability):
        raise ActionDeclarationError(
            f"{owner}: capability {capability!r} must be dot-separated segments of letters, digits, '_' or '-'")
    return capability


def _check_risk(owner: str, risk: Any) -> RiskDeclaration:
    if risk is None:
        raise ActionDeclarationError(f"{owner}: declare its risk (low, medium, high, prohibited, or a function)")
    if callable(risk) and not isinstance(risk, (str, Risk)):
        return risk
    try:
        return Risk(risk)
    except ValueError:
        raise ActionDeclarationError(
            f"{owner}: risk {risk!r} is not one of {[r.value for r in Risk]} nor a function of the action") from None


def _check_cost(owner: str, cost: Any) -> CostDeclaration:
    if callable(cost):
        return cost
    return _valid_cost(owner, cost)


def _valid_cost(owner: str, cost: Any) -> float:
    if isinstance(cost, bool) or not isinstance(cost, (int, float)) or not math.isfinite(cost) or cost < 0:
        raise ActionDeclarationError(f"{owner}: cost must be a finite number >= 0, got {cost!r}")
    return float(cost)


def _check_business_errors(owner: str, errors: Any) -> tuple[type[BaseException], ...]:
    if not isinstance(errors, (tuple, list)) or not all(
            isinstance(e, type) and issubclass(e, BaseException) for e in errors):
        raise ActionDeclarationError(f"{owner}: business_errors must be a tuple of exception classes, got {errors!r}")
    return tuple(errors)


def _declare(owner: str, inherited: ActionDeclaration | None, given: dict[str, Any]) -> ActionDeclaration:
    """Validate the class keywords, each missing one taken from ``inherited`` or its default."""
    defaults: dict[str, Any] = {"capability": None, "risk": None, "idempotent": False,
                                "business_errors": (), "cost": 0.0}
    if inherited is not None:
        defaults = {k: getattr(inherited, k) for k in defaults}
    kw = {k: defaults[k] if given.get(k) is None else given[k] for k in defaults}
    if not isinstance(kw["idempotent"], bool):
        raise ActionDeclarationError(f"{owner}: idempotent must be True or False, got {kw['idempotent']!r}")
    return ActionDeclaration(
        capability=_check_capability(owner, kw["capability"]),
        risk=_check_risk(owner, kw["risk"]),
        idempotent=kw["idempotent"],
        business_errors=_check_business_errors(owner, kw["business_errors"]),
        cost=_check_cost(owner, kw["cost"]),
    )


class Action(Message, abstract=True):
    """Base of every governed action: a frozen, registered message with declarations (module docstring).

    The names ``capability``, ``idempotent``, ``business_errors``, ``risk``,
    ``estimated_cost``, ``declaration`` and ``is_business_error`` are taken:
    an action cannot have fields called that.
    """

    model_config = ConfigDict(frozen=True)

    __action__: ClassVar[ActionDeclaration | None] = None
    capability: ClassVar[str] = ""
    idempotent: ClassVar[bool] = False
    business_errors: ClassVar[tuple[type[BaseException], ...]] = ()

    @classmethod
    def __pydantic_init_subclass__(
        cls,
        *,
        capability: str | None = None,
        risk: RiskDeclaration | str | None = None,
        idempotent: bool | None = None,
        business_errors: tuple[type[BaseException], ...] | None = None,
        cost: CostDeclaration | None = None,
        abstract: bool = False,
        **kwargs: Any,
    ) -> None:
        # Validate before registering: a wrongly declared class never reaches the registry.
        if not abstract and not cls.__dict__.get(_REBUILT_MARK):
            given = {"capability": capability, "risk": risk, "idempotent": idempotent,
                     "business_errors": business_errors, "cost": cost}
            decl = _declare(cls.__qualname__, cls.__action__, given)
            cls.__action__ = decl
            cls.capability = decl.capability
            cls.idempotent = decl.idempotent
            cls.business_errors = decl.business_errors
        super().__pydantic_init_subclass__(abstract=abstract, **kwargs)

    @classmethod
    def declaration(cls) -> ActionDeclaration:
        """This class's validated declarations; ActionDeclarationError on an abstract class."""
        decl = cls.__dict__.get("__action__")
        if decl is None:
            raise ActionDeclarationError(f"{cls.__qualname__} is abstract: it declares nothing and is never performed")
        return decl

    @classmethod
    def is_business_error(cls, exc: BaseException) -> bool:
        """True when ``exc`` is one of the declared business outcomes (it does not count as a failure)."""
        return isinstance(exc, cls.business_errors)

    def risk(self) -> Risk:
        """This action's declared risk class (a function of its arguments when so declared)."""
        declared = self.declaration().risk
        if isinstance(declared, Risk):
            return declared
        value = declared(self)
        try:
            return Risk(value)
        except ValueError:
            raise ActionDeclarationError(
                f"{type(self).__qualname__}: its risk function returned {value!r}, not a Risk") from None

    def estimated_cost(self) -> float:
        """This action's declared cost estimate (a function of its arguments when so declared)."""
        declared = self.declaration().cost
        if isinstance(declared, float):
            return declared
        return _valid_cost(f"{type(self).__qualname__}'s cost function", declared(self))


def argument_digest(action: Action, arguments: dict[str, Any] | None = None) -> str:
    """sha256 hex of the action's tag and arguments (``model_dump(mode="json")``, or ``arguments``
    when the caller already has that dump), canonically encoded."""
    args = action.model_dump(mode="json") if arguments is None else arguments
    return hashlib.sha256(canonical_bytes([action.type_tag(), args])).hexdigest()
