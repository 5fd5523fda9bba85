"""``runtime._invoke``: handlers and hooks, sync and async, run with the message's context; errors returned."""

from __future__ import annotations

import threading

import pytest

from protocols import Message, make_envelope
from runtime import Agent, HandlerError, NoHandler, UnencodableReply, handler
from runtime._agent import current_deadline, current_stage
from runtime._invoke import Invoker
from runtime._state import State
from runtime._store import LmdbStore

from .agents import Add, Unhandled


class Look(Message, name="test.invoke.look"):
    pass


class Seen(Agent):
    """Each handler reports what it sees while it runs."""

    def __init__(self) -> None:
        self.invoker: Invoker | None = None

    @handler
    def add(self, msg: Add) -> dict:
        return {"stage": current_stage.get(), "deadline": current_deadline.get(), "id": self.context.message_id,
                "running_for": self.invoker.running_for(), "thread": threading.current_thread().name}

    @handler
    async def look(self, msg: Look) -> dict:
        return {"stage": current_stage.get(), "deadline": current_deadline.get(),
                "thread": threading.current_thread().name}


@pytest.fixture
def invoker(tmp_path):
    store = LmdbStore(tmp_path / "db", agent_id="inv", map_size=1 << 24, sync=False)
    staged = []
    agent = Seen()
    inv = Invoker(agent, agent_id="inv", state=State(store), send=lambda to, env: staged.append(to), lookup=None)
    agent.invoker = inv
    yield inv
    inv.close()
    store.close()


def test_a_sync_handler_runs_on_the_calling_thread_with_the_stage_deadline_and_context(invoker):
    env = make_envelope(Add(n=1), "inv", deadline=1e12)
    msg, method = invoker.resolve(env)
    ok, seen = invoker.handle(env, msg, method)
    assert ok
    assert seen["stage"] is not None and seen["deadline"] == 1e12 and seen["id"] == env.id
    assert seen["running_for"] is not None and seen["running_for"] >= 0
    assert seen["thread"] == threading.current_thread().name
    # Afterwards: nothing running, context variables and the message context reset.
    assert invoker.running_for() is None
    assert current_stage.get() is None and current_deadline.get() is None
    assert invoker.agent.context is None


def test_an_async_handler_runs_on_the_loop_thread_with_the_same_context(invoker):
    env = make_envelope(Look(), "inv", deadline=2e12)
    ok, seen = invoker.handle(env, *invoker.resolve(env))
    assert ok and seen["deadline"] == 2e12 and seen["stage"] is not None
    assert seen["thread"].startswith("garrison-loop-inv")


def test_what_user_code_raises_is_returned_not_raised(invoker):
    def hook() -> None:
        raise KeyError("gone")

    ok, exc = invoker.call(hook, (), None)
    assert not ok and isinstance(exc, KeyError)
    err = invoker.handler_error("on_start", exc)
    assert isinstance(err, HandlerError) and "Seen.on_start raised KeyError" in err.message
    assert invoker.running_for() is None


def test_an_unhandled_type_names_what_the_agent_handles(invoker):
    with pytest.raises(NoHandler) as info:
        invoker.resolve(make_envelope(Unhandled(), "inv"))
    assert "test.add@1" in info.value.message and "test.invoke.look@1" in info.value.message


def test_an_unencodable_reply_says_which_handler_and_type(invoker):
    err = invoker.unencodable("add", {1, 2}, TypeError("can not serialize 'set' object"))
    assert isinstance(err, UnencodableReply) and "Seen.add returned a set" in err.message
