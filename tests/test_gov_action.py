"""Actions as typed data: declarations validated, risk and cost as functions, digests, travel by value."""

from __future__ import annotations

import gc
import pickle
import types
import weakref

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import Field, ValidationError

from governance import Action, ActionDeclarationError, Risk, argument_digest
from protocols import Message, UnknownMessageType, default_registry


class OutOfStock(Exception):
    pass


class SoldOut(OutOfStock):
    pass


def _refund_risk(action: Refund) -> Risk:
    return Risk.HIGH if action.amount > 50 else Risk.MEDIUM


class Refund(Action, name="gov_test.action.refund", version=1, capability="payments.refund",
             risk=_refund_risk, business_errors=(OutOfStock,), cost=lambda a: a.amount / 100):
    order: str
    amount: float


class Lookup(Action, name="gov_test.action.lookup", capability="orders.read", risk="low", idempotent=True):
    order: str
    fields: dict[str, int] = Field(default_factory=dict)


def test_declarations_are_exposed_on_the_class():
    assert (Refund.capability, Refund.idempotent, Refund.business_errors) == ("payments.refund", False, (OutOfStock,))
    assert (Lookup.capability, Lookup.idempotent, Lookup.business_errors) == ("orders.read", True, ())
    assert Lookup.declaration().risk is Risk.LOW and Lookup.declaration().cost == 0.0
    assert Refund.type_tag() == "gov_test.action.refund@1"


def test_an_action_is_registered_like_a_message():
    assert issubclass(Refund, Message)
    assert default_registry.resolve("gov_test.action.refund@1", {"order": "A1", "amount": 3})[0] is Refund


def test_risk_and_cost_can_be_functions_of_the_arguments():
    small, large = Refund(order="A1", amount=20), Refund(order="A1", amount=80)
    assert (small.risk(), large.risk()) == (Risk.MEDIUM, Risk.HIGH)
    assert (small.estimated_cost(), large.estimated_cost()) == (0.2, 0.8)
    assert Lookup(order="A1").risk() is Risk.LOW and Lookup(order="A1").estimated_cost() == 0.0


def test_business_errors_include_their_subclasses_and_nothing_else():
    assert Refund.is_business_error(OutOfStock()) and Refund.is_business_error(SoldOut())
    assert not Refund.is_business_error(ValueError()) and not Lookup.is_business_error(OutOfStock())


def test_action_instances_are_frozen():
    refund = Refund(order="A1", amount=80)
    with pytest.raises(ValidationError):
        refund.amount = 1  # type: ignore[misc]


@pytest.mark.parametrize(("keywords", "match"), [
    ({"risk": "low"}, "declare the capability"),
    ({"capability": "payments..refund", "risk": "low"}, "capability"),
    ({"capability": "payments.*", "risk": "low"}, "capability"),
    ({"capability": 7, "risk": "low"}, "capability"),
    ({"capability": "a.b"}, "declare its risk"),
    ({"capability": "a.b", "risk": "extreme"}, "not one of"),
    ({"capability": "a.b", "risk": "low", "cost": -1}, "cost"),
    ({"capability": "a.b", "risk": "low", "cost": float("nan")}, "cost"),
    ({"capability": "a.b", "risk": "low", "cost": True}, "cost"),
    ({"capability": "a.b", "risk": "low", "cost": "1"}, "cost"),
    ({"capability": "a.b", "risk": "low", "business_errors": OutOfStock}, "business_errors"),
    ({"capability": "a.b", "risk": "low", "business_errors": (OutOfStock, "x")}, "business_errors"),
    ({"capability": "a.b", "risk": "low", "business_errors": (int,)}, "business_errors"),
    ({"capability": "a.b", "risk": "low", "idempotent": "yes"}, "idempotent"),
])
def test_a_wrong_declaration_is_refused_and_never_registered(keywords, match):
    with pytest.raises(ActionDeclarationError, match=match):
        class Bad(Action, name="gov_test.action.bad", **keywords):
            x: int = 0
    with pytest.raises(UnknownMessageType):
        default_registry.resolve("gov_test.action.bad@1", {})


def test_a_risk_or_cost_function_returning_nonsense_is_a_declaration_error():
    class Odd(Action, name="gov_test.action.odd", capability="a.b", risk=lambda a: "extreme", cost=lambda a: -a.x):
        x: int

    with pytest.raises(ActionDeclarationError, match="risk function returned 'extreme'"):
        Odd(x=1).risk()
    with pytest.raises(ActionDeclarationError, match="cost"):
        Odd(x=1).estimated_cost()
    assert Odd(x=0).estimated_cost() == 0.0


def test_a_new_version_inherits_the_declarations_it_does_not_repeat():
    class RefundV2(Refund, name="gov_test.action.refund", version=2, idempotent=True):
        reason: str = ""

    assert (RefundV2.capability, RefundV2.idempotent, RefundV2.business_errors) == ("payments.refund", True,
                                                                                   (OutOfStock,))
    assert RefundV2(order="A1", amount=80).risk() is Risk.HIGH
    assert Refund.idempotent is False, "the parent's declarations are untouched"


def test_an_abstract_action_declares_nothing():
    class Base(Action, abstract=True):
        pass

    class Concrete(Base, name="gov_test.action.concrete", capability="a.b", risk=Risk.MEDIUM):
        pass

    with pytest.raises(ActionDeclarationError, match="abstract"):
        Base.declaration()
    assert Concrete().risk() is Risk.MEDIUM


def test_risks_are_ordered_by_danger_not_by_spelling():
    assert Risk.LOW < Risk.MEDIUM < Risk.HIGH < Risk.PROHIBITED
    assert sorted([Risk.PROHIBITED, Risk.LOW, Risk.HIGH, Risk.MEDIUM]) == list(Risk)
    assert max(Risk.HIGH, Risk.LOW) is Risk.HIGH and Risk.HIGH >= Risk.HIGH and not Risk.HIGH > Risk.PROHIBITED
    # A plain string is compared as the risk it names, never by spelling ("high" < "low").
    assert Risk.HIGH > "low" and not Risk.HIGH < "low" and "low" < Risk.HIGH
    for other in ("extreme", 3, None):
        with pytest.raises(TypeError, match="compares with a Risk"):
            Risk.HIGH < other  # noqa: B015


def test_the_argument_digest_is_pinned_across_processes_and_versions():
    # Recomputing this value in another process or on another machine must give the same hex.
    assert argument_digest(Lookup(order="A1", fields={"b": 2, "a": 1})) == \
        "5ef51d31838d4dc1451caef746fcb3b7a094b3cb8ad6fb18d76ef8b12109c735"


def test_the_argument_digest_depends_on_the_tag_and_every_argument():
    base = argument_digest(Refund(order="A1", amount=80))
    assert argument_digest(Refund(order="A1", amount=80)) == base
    assert argument_digest(Refund(order="A1", amount=80.5)) != base
    assert argument_digest(Refund(order="A2", amount=80)) != base

    class Refund2(Action, name="gov_test.action.refund_other", capability="payments.refund", risk="high"):
        order: str
        amount: float

    assert argument_digest(Refund2(order="A1", amount=80)) != base, "same arguments, another action"


def test_any_int_pydantic_accepts_can_be_digested():
    big, bigger = Lookup(order="A", fields={"n": 2**64}), Lookup(order="A", fields={"n": 2**64 + 1})
    assert argument_digest(big) != argument_digest(bigger)
    assert argument_digest(Lookup(order="A", fields={"n": -2**63 - 1})) != argument_digest(big)


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.text(max_size=6), st.integers(), max_size=6), st.randoms(use_true_random=False))
def test_the_argument_digest_ignores_key_order(fields, rnd):
    items = list(fields.items())
    rnd.shuffle(items)
    assert argument_digest(Lookup(order="A", fields=dict(items))) == argument_digest(Lookup(order="A", fields=fields))


# A driver script's action: defined in a module nothing can import, so cloudpickle
# ships the class by value and rebuilds it as a keyword-less skeleton on load.
DRIVER = '''
from governance import Action, Risk

class Discard:
    """A registry that keeps nothing, so the class can be collected before it is loaded again."""
    def register(self, cls):
        pass

class Gone(Exception):
    pass

def risk_of(a):
    return Risk.HIGH if a.amount > 50 else Risk.MEDIUM

class ShippedRefund(Action, name="gov_test.action.by_value", version=3, capability="payments.refund",
                    risk=risk_of, idempotent=True, business_errors=(Gone,), cost=lambda a: a.amount / 100,
                    registry=Discard()):
    order: str
    amount: float
'''


def _driver_class_blob() -> tuple[bytes, weakref.ref]:
    from ray import cloudpickle  # the pickler Ray uses; importing it starts nothing

    module = types.ModuleType("a_governed_driver_script")
    exec(DRIVER, module.__dict__)
    return cloudpickle.dumps(module.ShippedRefund), weakref.ref(module.ShippedRefund)


def test_declarations_and_tag_survive_the_class_travelling_by_value():
    blob, original = _driver_class_blob()
    gc.collect()
    # Invariant of the test: the original is gone, so loading rebuilds the class from the bytes
    # (cloudpickle would otherwise hand back the live class it tracks).
    assert original() is None
    cls = pickle.loads(blob)
    assert cls.__dict__.get("__message_rebuilt__"), "a skeleton rebuilt from the pickle"
    assert cls.type_tag() == "gov_test.action.by_value@3"
    assert (cls.capability, cls.idempotent, [e.__name__ for e in cls.business_errors]) == (
        "payments.refund", True, ["Gone"])
    big = cls(order="A1", amount=80)
    assert (big.risk(), cls(order="A1", amount=5).risk(), big.estimated_cost()) == (Risk.HIGH, Risk.MEDIUM, 0.8)
    assert cls.is_business_error(cls.business_errors[0]()) and not cls.is_business_error(KeyError())
    assert default_registry.resolve("gov_test.action.by_value@3", {"order": "A", "amount": 1})[0] is cls
    assert argument_digest(big) == argument_digest(big.model_copy())
