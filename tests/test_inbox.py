"""``runtime._inbox``: refusals, effectively-once replies, pair order and per-message rollback in a batch.

The inbox is wired by hand from its collaborators (the invoker, transaction
and committer on a real LMDB file; no outbox thread, no Ray), as the host
does it, so each rule is checked where it lives.
"""

from __future__ import annotations

import threading

import pytest

from protocols import EncodingError, encode_batch, encode_envelope, error_from_wire, make_envelope
from runtime import AgentNotRunning
from runtime._committer import Committer
from runtime._config import AgentConfig
from runtime._deadletters import list_dead_letters
from runtime._fence import PeerEpochs
from runtime._inbox import Inbox
from runtime._incarnation import start_incarnation
from runtime._invoke import Invoker
from runtime._journal import Shipper
from runtime._lifecycle import AgentState, Lifecycle
from runtime._metrics import AgentMetrics
from runtime._outbox import Dispatcher
from runtime._reply import decode_reply
from runtime._spec import HostSpec
from runtime._state import State
from runtime._transaction import Transaction

from .agents import Add, Append, Boom, Counter, GetCount


class Wired:
    def __init__(self, tmp_path) -> None:
        for d in ("data", "ck"):
            (tmp_path / d).mkdir()
        config = AgentConfig(ship_interval=3600, checkpoint_interval=3600)
        inc = self.inc = start_incarnation(HostSpec("in-1", Counter, str(tmp_path / "data"), str(tmp_path / "ck"),
                                                    config))
        self.lifecycle = Lifecycle(AgentState.RUNNING)
        metrics = AgentMetrics(inc.agent_id)
        state = State(inc.store)
        txn = Transaction(state)
        self.invoker = Invoker(Counter(), agent_id=inc.agent_id, state=state, send=txn.send, lookup=None)
        dispatcher = Dispatcher(inc.store, agent_id=inc.agent_id, config=config, resolve=None,
                                on_error=lambda *a: None, epoch=inc.epoch)
        committer = Committer(agent_id=inc.agent_id, config=config, epoch=inc.epoch, store=inc.store,
                              fence=inc.fence, dispatcher=dispatcher,
                              shipper=Shipper(inc.store, inc.ckstore, inc.agent_id, fence=inc.fence.check,
                                              epoch=inc.epoch),
                              lifecycle=self.lifecycle, metrics=metrics, resolve=None)
        self.fenced: list = []
        self.inbox = Inbox(agent_id=inc.agent_id, config=config, store=inc.store, lifecycle=self.lifecycle,
                           lock=threading.RLock(), txn=txn, invoker=self.invoker, committer=committer,
                           fence=inc.fence, peer_epochs=PeerEpochs(inc.ckstore), metrics=metrics,
                           on_fenced=self.fenced.append)

    def ask(self, msg, **kw):
        env = make_envelope(msg, "in-1", **kw)
        env.reply_to = "caller"
        return self.reply(self.inbox.deliver(encode_envelope(env)))

    @staticmethod
    def reply(raw: bytes):
        ok, value = decode_reply(raw)
        return value if ok else error_from_wire(value)

    def close(self) -> None:
        self.invoker.close()
        self.inc.close()


@pytest.fixture
def wired(tmp_path):
    w = Wired(tmp_path)
    yield w
    w.close()


def _batch(base, items, sender="tx"):
    envs = []
    for seq, msg in items:
        env = make_envelope(msg, "in-1", sender=sender)
        env.seq = seq
        envs.append(encode_envelope(env))
    return encode_batch(base, envs)


def test_bytes_that_are_no_envelope_get_a_typed_error_and_a_dead_letter(wired):
    assert isinstance(wired.reply(wired.inbox.deliver(b"\x93garbage")), EncodingError)
    [letter] = list_dead_letters(wired.inc.store)
    assert letter.reason == "malformed" and letter.envelope == b"\x93garbage"  # kept as received


def test_a_retried_message_gets_its_first_reply_and_runs_once(wired):
    env = make_envelope(Add(n=5), "in-1")
    raw = encode_envelope(env)
    assert wired.reply(wired.inbox.deliver(raw)) == 5
    assert wired.reply(wired.inbox.deliver(raw)) == 5  # the same id again: the reply remembered with the effect
    assert wired.ask(GetCount()) == 5


def test_an_agent_not_running_refuses_with_its_state_and_keeps_a_tell_as_a_dead_letter(wired):
    wired.lifecycle.set(AgentState.QUARANTINED, "quarantined: investigating")
    err = wired.reply(wired.inbox.deliver(encode_envelope(make_envelope(Add(n=1), "in-1"))))
    assert isinstance(err, AgentNotRunning) and "QUARANTINED (quarantined: investigating)" in err.message
    assert [d.reason for d in list_dead_letters(wired.inc.store)] == ["not_running"]


def test_a_batch_skips_what_it_dealt_with_and_stops_at_a_gap(wired):
    assert wired.reply(wired.inbox.deliver_batch(_batch(0, [(1, Add(n=1)), (2, Add(n=1))]))) == [2, []]
    # 1 and 2 again (a resend after a lost reply), then 3, then a gap before 5.
    assert wired.reply(wired.inbox.deliver_batch(
        _batch(0, [(1, Add(n=1)), (2, Add(n=1)), (3, Add(n=1)), (5, Add(n=1))]))) == [3, []]
    assert wired.ask(GetCount()) == 3


def test_a_handler_that_raises_in_a_batch_loses_only_its_own_changes(wired):
    hwm, errors = wired.reply(wired.inbox.deliver_batch(
        _batch(0, [(1, Append(item=1)), (2, Boom()), (3, Append(item=3))])))
    assert hwm == 3 and [(seq, code) for seq, code, _ in errors] == [(2, "HandlerError")]
    assert wired.ask(GetCount()) == 2  # Boom's ``count = -999`` was rolled back, its neighbours kept
    [letter] = list_dead_letters(wired.inc.store)
    assert letter.reason == "handler_error" and letter.seq == 2
