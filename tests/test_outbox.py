"""The outbox dispatcher (``runtime/_outbox.py``) in this process, against a fake receiver.

No Ray: the receiver is a fake whose ``deliver_batch.remote(batch)`` returns a
call the test answers (acknowledge up to a seq, refuse with an error, or lose
it as a dead actor), and the dispatcher waits for those calls through fake
:class:`~runtime._outbox.Replies`.  Most tests drive the dispatcher a round at
a time with :meth:`Dispatcher.step` and a fake clock; the lifecycle tests run
its thread.  The store is a real LMDB file in ``tmp_path``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from ray.exceptions import RayActorError

from protocols import decode_batch, decode_envelope, make_envelope
from runtime import AgentNotRunning, NotDurable
from runtime._codec import pack
from runtime._config import AgentConfig
from runtime._deadletters import list_dead_letters
from runtime._outbox import Dispatcher, outbox_key
from runtime._store import LmdbStore

from .agents import Append
from .waiting import wait_for

CONFIG = AgentConfig(window=5, max_batch=2, max_attempts=3, retry_backoff=0.5, retry_backoff_max=1.0)


class Call:
    """One ``deliver_batch`` call: what was sent, and its answer once the test gives one."""

    def __init__(self, blob: bytes, done: threading.Condition) -> None:
        self.base, envelopes, self.epoch = decode_batch(blob)
        self.seqs = [decode_envelope(e).seq for e in envelopes]
        self._done = done
        self.reply: bytes | None = None
        self.error: BaseException | None = None

    @property
    def finished(self) -> bool:
        return self.reply is not None or self.error is not None

    def _finish(self, reply: bytes | None = None, error: BaseException | None = None) -> None:
        with self._done:
            self.reply, self.error = reply, error
            self._done.notify_all()

    def ack(self, hwm: int | None = None, errors: list[Any] = ()) -> None:
        """The receiver dealt with everything up to ``hwm`` (default: the whole batch)."""
        self._finish(pack([0, [self.seqs[-1] if hwm is None else hwm, list(errors)]]))

    def refuse(self, exc: Exception) -> None:
        """The receiver answered with an error (it took none of the batch)."""
        self._finish(pack([1, *exc.to_wire()]))

    def lose(self) -> None:
        """The receiver's actor died before answering."""
        self._finish(error=RayActorError())


class Receiver:
    """A fake actor handle: ``deliver_batch.remote(blob)`` records a :class:`Call`."""

    def __init__(self, done: threading.Condition, *, auto_ack: bool = False) -> None:
        self.calls: list[Call] = []
        self._done = done
        self.auto_ack = auto_ack
        self.deliver_batch = self

    def remote(self, blob: bytes) -> Call:
        call = Call(blob, self._done)
        self.calls.append(call)
        if self.auto_ack:
            call.ack()
        return call

    def seqs(self) -> list[list[int]]:
        return [c.seqs for c in self.calls]


class FakeReplies:
    """The dispatcher's :class:`~runtime._outbox.Replies` for :class:`Call` s."""

    def __init__(self, done: threading.Condition) -> None:
        self._done = done

    def wait(self, calls: list[Call], timeout: float) -> list[Call]:
        with self._done:
            self._done.wait_for(lambda: any(c.finished for c in calls), timeout)
            return [c for c in calls if c.finished]

    def result(self, call: Call) -> bytes:
        if call.error is not None:
            raise call.error
        return call.reply  # type: ignore[return-value]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Rig:
    """A store, a receiver ``rx``, and a dispatcher of agent ``tx`` wired to them."""

    def __init__(self, path, config: AgentConfig = CONFIG, *, auto_ack: bool = False,
                 resolve: Any = None, held_until: int | None = None, clock: Any = None) -> None:
        self.path, self.config = path, config
        self.done = threading.Condition()
        self.rx = Receiver(self.done, auto_ack=auto_ack)
        self.resolved: list[str] = []
        self.errors: list[tuple[str, list[Any]]] = []
        self.clock = clock or Clock()
        self.store = LmdbStore(path, agent_id="tx", map_size=64 << 20, sync=False)
        self.dispatcher = self.new_dispatcher(resolve=resolve, held_until=held_until)

    def new_dispatcher(self, *, resolve: Any = None, held_until: int | None = None) -> Dispatcher:
        return Dispatcher(self.store, agent_id="tx", config=self.config, resolve=resolve or self.resolve,
                          on_error=lambda name, errs: self.errors.append((name, errs)), epoch=7,
                          held_until=held_until, replies=FakeReplies(self.done), clock=self.clock)

    def resolve(self, name: str) -> Receiver:
        self.resolved.append(name)
        return self.rx

    def send(self, count: int, to: str = "rx", *, sync: bool = False) -> int:
        """Commit ``count`` sends as one handler's commit would; the commit's store seq."""
        ops, seqs = self.dispatcher.stage([(to, make_envelope(Append(item=i), to, sender="tx"))
                                           for i in range(count)], now=0.0)
        seq = self.store.commit(ops)
        self.dispatcher.published(seqs, at=seq if sync else None)
        return seq

    def step(self) -> None:
        self.dispatcher.step(timeout=0)

    def outbox(self, to: str = "rx") -> list[int]:
        return [int.from_bytes(k[-8:], "big") for k, _ in self.store.scan("outbox", to.encode() + b"\x00")]


@pytest.fixture
def rig(tmp_path):
    rig = Rig(tmp_path / "tx")
    yield rig
    rig.dispatcher.stop()
    rig.store.close()


# -- staging ---------------------------------------------------------------------------------------


def test_staging_numbers_each_recipients_sends_on_from_its_last_seq_and_stamps_the_epoch(rig):
    sends = [(to, make_envelope(Append(item=i), to, sender="tx")) for i, to in enumerate(["a", "b", "a"])]
    ops, seqs = rig.dispatcher.stage(sends, now=0.0)
    assert seqs == {"a": 2, "b": 1}
    assert [(env.seq, env.epoch) for _, env in sends] == [(1, 7), (1, 7), (2, 7)]
    assert sorted(op[2] for op in ops if op[0] == "outbox") == [outbox_key("a", 1), outbox_key("a", 2),
                                                                outbox_key("b", 1)]
    assert {op[2] for op in ops if op[0] == "outseq"} == {b"a", b"b"}
    rig.store.commit(ops)
    rig.dispatcher.published(seqs)
    _, more = rig.dispatcher.stage([("a", make_envelope(Append(item=3), "a", sender="tx"))], now=0.0)
    assert more == {"a": 3}


def test_a_send_stays_unnumbered_for_others_until_its_commit_is_published(rig):
    ops, seqs = rig.dispatcher.stage([("rx", make_envelope(Append(item=0), "rx", sender="tx"))], now=0.0)
    rig.store.commit(ops)
    rig.step()
    assert rig.rx.calls == [] and rig.dispatcher.ready == {}
    rig.dispatcher.published(seqs)
    rig.step()
    assert rig.rx.seqs() == [[1]]


def test_a_new_dispatcher_numbers_on_from_the_recipients_last_seq_in_the_store(rig):
    rig.send(3)
    again = rig.new_dispatcher()
    assert again.last_seq == {"rx": 3}
    _, seqs = again.stage([("rx", make_envelope(Append(item=9), "rx", sender="tx"))], now=0.0)
    assert seqs == {"rx": 4}


# -- windowing and acknowledgement ---------------------------------------------------------------


def test_batches_hold_at_most_max_batch_and_at_most_window_messages_are_in_flight(rig):
    rig.send(12)
    rig.step()
    assert rig.rx.seqs() == [[1, 2], [3, 4], [5]]  # window 5, max_batch 2
    assert [c.base for c in rig.rx.calls] == [0, 0, 0] and {c.epoch for c in rig.rx.calls} == {7}
    assert rig.dispatcher.in_memory() == 5
    rig.step()
    assert len(rig.rx.calls) == 3, "no room in the window until an acknowledgement"
    assert rig.resolved == ["rx"], "the handle is resolved once and kept"


def test_an_acknowledgement_deletes_the_outbox_up_to_its_hwm_and_opens_the_window(rig):
    rig.send(12)
    rig.step()
    rig.rx.calls[0].ack()
    rig.step()  # settles the acknowledgement
    assert rig.outbox() == list(range(3, 13))
    assert rig.dispatcher.delivered == 2 and rig.dispatcher.pending() == {"rx": 10}
    rig.step()
    assert rig.rx.seqs()[3:] == [[6, 7]] and rig.rx.calls[3].base == 2


def test_one_acknowledgement_covers_every_earlier_batch(rig):
    rig.send(5)
    rig.step()
    rig.rx.calls[2].ack()  # hwm 5: the receiver dealt with 1..5
    rig.step()
    assert rig.outbox() == [] and rig.dispatcher.pending() == {} and rig.dispatcher.delivered == 5


def test_a_receiver_that_stops_short_gets_the_rest_again_in_order(rig):
    rig.send(4)
    rig.step()
    rig.rx.calls[0].ack(hwm=1)  # a gap after seq 1: it dealt with 1 only
    rig.step()
    assert rig.outbox() == [2, 3, 4]
    rig.step()
    assert rig.rx.seqs()[2:] == [[2, 3], [4]] and rig.rx.calls[2].base == 1


def test_the_receivers_per_message_errors_go_to_on_error_and_the_batch_is_still_acknowledged(rig):
    rig.send(2)
    rig.step()
    rig.rx.calls[0].ack(errors=[[2, "NoHandler", "no handler"]])
    rig.step()
    assert rig.errors == [("rx", [[2, "NoHandler", "no handler"]])]
    assert rig.outbox() == []


# -- failures and retries --------------------------------------------------------------------------


def test_a_lost_call_is_retried_from_the_oldest_unacknowledged_message_after_a_backoff(rig):
    rig.send(3)
    rig.step()
    rig.rx.calls[0].lose()
    rig.step()
    assert rig.outbox() == [1, 2, 3] and rig.dispatcher.pending() == {"rx": 3}
    rig.step()
    assert len(rig.rx.calls) == 2, "still backing off"
    rig.clock.now += CONFIG.retry_backoff_max
    rig.step()
    assert rig.rx.seqs()[2:] == [[1, 2], [3]] and rig.rx.calls[2].base == 0
    assert rig.resolved == ["rx", "rx"], "re-resolved: the receiver may live elsewhere now"


def test_a_refused_batch_is_retried_and_the_failures_reset_on_an_acknowledgement(rig):
    rig.send(1)
    for attempt in range(CONFIG.max_attempts - 1):
        rig.step()
        rig.rx.calls[-1].refuse(AgentNotRunning("restarting"))
        rig.step()
        rig.clock.now += CONFIG.retry_backoff_max
    rig.step()
    assert len(rig.rx.calls) == CONFIG.max_attempts
    rig.rx.calls[-1].ack()
    rig.step()
    assert rig.outbox() == [] and rig.dispatcher.dead_lettered == 0
    rig.send(1)  # a fresh run of failures starts from zero
    for _ in range(CONFIG.max_attempts - 1):
        rig.step()
        rig.rx.calls[-1].refuse(AgentNotRunning("restarting"))
        rig.step()
        rig.clock.now += CONFIG.retry_backoff_max
    assert rig.dispatcher.dead_lettered == 0 and rig.outbox() == [2]


def test_after_max_attempts_failures_in_a_row_the_pending_messages_become_dead_letters(rig):
    rig.send(3)
    for _ in range(CONFIG.max_attempts):
        rig.step()
        for call in rig.rx.calls:
            if not call.finished:
                call.refuse(AgentNotRunning("gone for good"))
        rig.step()
        rig.clock.now += CONFIG.retry_backoff_max
    assert rig.dispatcher.dead_lettered == 3
    assert rig.outbox() == [] and rig.dispatcher.pending() == {}
    letters = list_dead_letters(rig.store)
    assert [(d.reason, d.recipient, d.seq, d.attempts) for d in letters] == [("undeliverable", "rx", s, 3)
                                                                              for s in (1, 2, 3)]
    assert "gone for good" in letters[0].message
    rig.send(1)  # later sends go on numbering after them
    rig.clock.now += CONFIG.retry_backoff_max
    rig.step()
    assert rig.rx.seqs()[-1] == [4] and rig.rx.calls[-1].base == 3


def test_a_receiver_that_committed_but_cannot_ship_is_retried_past_max_attempts(rig):
    rig.send(2)
    for _ in range(CONFIG.max_attempts + 2):
        rig.step()
        rig.rx.calls[-1].refuse(NotDurable("store down"))
        rig.step()
        rig.clock.now += CONFIG.retry_backoff_max
    assert rig.dispatcher.dead_lettered == 0 and rig.outbox() == [1, 2]
    rig.step()
    rig.rx.calls[-1].ack()
    rig.step()
    assert rig.outbox() == [] and rig.dispatcher.delivered == 2


def test_a_recipient_that_cannot_be_resolved_is_a_failed_attempt(tmp_path):
    lookups = []

    def resolve(name):
        lookups.append(name)
        if len(lookups) == 1:
            raise LookupError("not registered yet")
        return rig.rx

    rig = Rig(tmp_path / "tx", resolve=resolve)
    rig.send(1)
    rig.step()
    assert rig.rx.calls == [] and rig.dispatcher.pending() == {"rx": 1}
    rig.clock.now += CONFIG.retry_backoff_max
    rig.step()
    assert rig.rx.seqs() == [[1]] and lookups == ["rx", "rx"]
    rig.store.close()


def test_with_max_attempts_zero_a_sender_never_gives_up(tmp_path):
    rig = Rig(tmp_path / "tx", CONFIG.model_copy(update={"max_attempts": 0}))
    rig.send(1)
    for _ in range(6):
        rig.step()
        rig.rx.calls[-1].lose()
        rig.step()
        rig.clock.now += CONFIG.retry_backoff_max
    assert rig.dispatcher.dead_lettered == 0 and rig.outbox() == [1]
    rig.store.close()


# -- SYNC durability: held until shipped ------------------------------------------------------------


def test_a_sync_commits_sends_leave_only_once_the_journal_is_shipped_up_to_it(rig):
    first = rig.send(2, sync=True)
    second = rig.send(1, sync=True)
    rig.step()
    assert rig.rx.calls == [] and rig.dispatcher.ready == {}
    rig.dispatcher.shipped(first - 1)
    assert rig.dispatcher.ready == {}
    rig.dispatcher.shipped(first)
    assert rig.dispatcher.ready == {"rx": 2}
    rig.step()
    assert rig.rx.seqs() == [[1, 2]]
    rig.dispatcher.shipped(second + 10)  # shipped past it: released too
    assert rig.dispatcher.ready == {"rx": 3}


def test_one_shipment_releases_every_held_commit_up_to_it_in_commit_order(rig):
    for _ in range(3):
        last = rig.send(1, sync=True)
    rig.dispatcher.shipped(last)
    assert rig.dispatcher.ready == {"rx": 3}


def test_a_restarted_dispatcher_holds_the_old_outbox_until_shipped_up_to_held_until(tmp_path):
    rig = Rig(tmp_path / "tx")
    seq = rig.send(2)
    again = rig.new_dispatcher(held_until=seq)
    assert again.ready == {}
    again.shipped(seq)
    assert again.ready == {"rx": 2}
    rig.store.close()


# -- the thread: start, stop, resume ----------------------------------------------------------------


def _dispatcher_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "garrison-out-tx"]


def test_a_started_dispatcher_delivers_what_is_published_until_stopped_and_again_once_resumed(tmp_path):
    rig = Rig(tmp_path / "tx", auto_ack=True, clock=time.monotonic)
    d = rig.dispatcher
    d.start()
    rig.send(7)
    wait_for(lambda: rig.outbox() == [] and d.delivered == 7, timeout=10, describe=rig.rx.seqs)
    d.stop()
    assert _dispatcher_threads() == []
    calls = len(rig.rx.calls)
    rig.send(3)
    assert d.pending() == {"rx": 3} and len(rig.rx.calls) == calls, "nobody sends while stopped"
    d.resume()
    wait_for(lambda: rig.outbox() == [] and d.delivered == 10, timeout=10, describe=rig.rx.seqs)
    assert [s for c in rig.rx.calls for s in c.seqs] == list(range(1, 11)), "each once, in order"
    d.stop()
    rig.store.close()


def test_a_restart_offers_the_unacknowledged_outbox_again_from_its_oldest_entry(tmp_path):
    rig = Rig(tmp_path / "tx", clock=time.monotonic)
    rig.send(5)
    rig.step()
    rig.rx.calls[0].ack()  # 1, 2 acknowledged; 3..5 were in flight when the sender went down
    rig.step()
    again = rig.new_dispatcher()
    rig.rx.auto_ack = True
    again.start()
    wait_for(lambda: rig.outbox() == [], timeout=10, describe=rig.rx.seqs)
    resent = rig.rx.calls[3:]
    assert [s for c in resent for s in c.seqs] == [3, 4, 5] and resent[0].base == 2
    again.stop()
    assert _dispatcher_threads() == []
    rig.store.close()


def test_a_dispatcher_without_resolve_never_starts_a_thread(tmp_path):
    store = LmdbStore(tmp_path / "tx", agent_id="tx", map_size=64 << 20, sync=False)
    dispatcher = Dispatcher(store, agent_id="tx", config=CONFIG, resolve=None)
    dispatcher.start()
    assert _dispatcher_threads() == []
    dispatcher.stop()
    store.close()
