"""``runtime._committer``: one commit per transaction, refused once fenced, SYNC gating, at-most-once sends.

In-process on real LMDB files and a real directory checkpoint store; the
shipper is replaced by a fake where a test needs the store to refuse.
"""

from __future__ import annotations

import pytest

from protocols import make_envelope
from runtime import CheckpointError, Fenced, NotDurable
from runtime._committer import Committer
from runtime._config import AgentConfig, Durability
from runtime._deadletters import list_dead_letters
from runtime._incarnation import start_incarnation
from runtime._journal import Shipper
from runtime._lifecycle import AgentState, Lifecycle
from runtime._metrics import AgentMetrics
from runtime._outbox import Dispatcher
from runtime._spec import HostSpec
from runtime._state import Layer
from runtime._store import PUT, Op

from .agents import Add, Counter, Ping


class RefusingShipper:
    """A checkpoint store that refuses every write (disk full)."""

    shipped = 0

    def ship_until(self, seq: int) -> None:
        raise CheckpointError("no space left on device", errno=28, path="/ck")


@pytest.fixture
def opened(tmp_path):
    def build(config: AgentConfig = AgentConfig(), *, refusing: bool = False, lifecycle: Lifecycle | None = None):
        inc = start_incarnation(HostSpec("cm-1", Counter, str(tmp_path / "data"), str(tmp_path / "ck"), config))
        opened.incs.append(inc)
        dispatcher = Dispatcher(inc.store, agent_id=inc.agent_id, config=config, resolve=None,
                                on_error=lambda *a: None, epoch=inc.epoch)
        shipper = RefusingShipper() if refusing else Shipper(inc.store, inc.ckstore, inc.agent_id,
                                                             fence=inc.fence.check, epoch=inc.epoch)
        committer = Committer(agent_id=inc.agent_id, config=config, epoch=inc.epoch, store=inc.store,
                              fence=inc.fence, dispatcher=dispatcher, shipper=shipper,
                              lifecycle=lifecycle or Lifecycle(AgentState.RUNNING),
                              metrics=AgentMetrics(inc.agent_id), resolve=None)
        return inc, committer

    (tmp_path / "ck").mkdir()
    (tmp_path / "data").mkdir()
    opened.incs = []
    yield build
    for inc in opened.incs:
        inc.close()


def _layer(*keys: bytes, sends=()) -> Layer:
    layer = Layer()
    layer.ops.extend(Op("data", PUT, k, b"v") for k in keys)
    layer.sends.extend(sends)
    return layer


def test_a_layer_its_records_and_its_outbox_rows_are_one_commit(opened):
    inc, committer = opened()
    before = inc.store.seq
    seq = committer.commit(_layer(b"a", sends=[("peer", make_envelope(Add(n=1), "peer"))]),
                           [Op("data", PUT, b"r", b"1")], 1.0)
    assert seq == inc.store.seq > before
    assert inc.store.get("data", b"a") == b"v" and inc.store.get("data", b"r") == b"1"
    assert inc.store.count("outbox") == 1


def test_a_replaced_incarnation_commits_nothing(opened):
    inc, committer = opened()
    inc.ckstore.claim_epoch(inc.agent_id, {})  # a later incarnation exists
    before = inc.store.seq
    with pytest.raises(Fenced):
        committer.commit(_layer(b"a"), [], 1.0)
    assert inc.store.seq == before and inc.store.get("data", b"a") is None


def test_an_at_most_once_send_with_no_transport_is_a_dead_letter_not_an_error(opened):
    inc, committer = opened()
    committer.commit(_layer(sends=[("peer", make_envelope(Ping(), "peer"))]), [], 1.0)
    [letter] = list_dead_letters(inc.store)
    assert letter.recipient == "peer" and letter.error == "MailboxFull" and "no transport" in letter.message
    assert inc.store.count("outbox") == 0


def test_a_halted_agents_at_most_once_send_is_kept_as_a_dead_letter(opened):
    inc, committer = opened(lifecycle=Lifecycle(AgentState.HALTED))
    committer.commit(_layer(sends=[("peer", make_envelope(Ping(), "peer"))]), [], 1.0)
    [letter] = list_dead_letters(inc.store)
    assert letter.reason == "not_running" and "is halted" in letter.message


def test_under_sync_a_commit_the_store_refuses_to_ship_stands_and_says_not_durable(opened):
    inc, committer = opened(AgentConfig(durability=Durability.SYNC), refusing=True)
    with pytest.raises(NotDurable) as info:
        committer.commit(_layer(b"a", sends=[("peer", make_envelope(Ping(), "peer"))]), [], 1.0)
    assert "asking again with the same message id is safe" in info.value.message
    assert inc.store.get("data", b"a") == b"v"  # committed: a retry finds it (dedup), nothing is lost
    [letter] = list_dead_letters(inc.store)  # the at-most-once send never left
    assert letter.reason == "not_durable"
