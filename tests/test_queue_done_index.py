"""The work queue's done index (``ResultLog``): completion numbers in pages, queues written before pages, and
forgetting done items.

Pure logic over a dict (``MemoryKV``) and a fake clock: no Ray, no sleeping.
"""

from __future__ import annotations

import pytest

from runtime._queue_logic import DONE_PAGE, MemoryKV, QueueLogic, ResultLog

from .test_queue_logic import Clock as ManualClock  # moves only when told: forgetting goes by completion time


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 0.5  # every operation a moment later: the oldest done item is told apart
        return self.now


class CountingPuts(MemoryKV):
    def __init__(self) -> None:
        super().__init__()
        self.puts: list[str] = []

    def put(self, key, value):
        self.puts.append(key)
        super().put(key, value)


def complete(q: QueueLogic, keys: list[str]) -> list[int]:
    """Enqueue, claim and complete ``keys`` in that order; their completion numbers."""
    q.enqueue({"key": k} for k in keys)
    claimed = q.claim("w", limit=len(keys))
    assert [c["id"] for c in claimed] == keys
    outcomes = q.complete_many((c["id"], c["token"], {"k": c["id"]}) for c in claimed)
    assert all(o["status"] == "completed" for o in outcomes), outcomes
    return [o["seq"] for o in outcomes]


def read_all(q: QueueLogic, page: int) -> list[tuple[int, str]]:
    out, cursor = [], 0
    while True:
        got = q.results(after=cursor, limit=page)
        if not got["items"]:
            return out
        out.extend((i["seq"], i["id"]) for i in got["items"])
        cursor = got["cursor"]


def listed_done(q: QueueLogic, page: int) -> list[str]:
    out, cursor = [], None
    while True:
        got = q.items("done", after=cursor, limit=page)
        out.extend(i["id"] for i in got["items"])
        if not got["more"]:
            return out
        cursor = got["cursor"]


def test_a_batch_of_completions_writes_each_page_of_the_done_index_once():
    kv = CountingPuts()
    q = QueueLogic(kv, Clock())
    keys = [f"k{i:04d}" for i in range(1000)]
    q.enqueue({"key": k} for k in keys)
    claimed = q.claim("w", limit=1000)
    kv.puts.clear()
    q.complete_many((c["id"], c["token"], None) for c in claimed)
    pages = [k for k in kv.puts if k.startswith("dp/")]
    assert pages == [f"dp/{p:012d}" for p in range(1000 // DONE_PAGE)], "each page once, in order"
    assert sum(k.startswith("i/") for k in kv.puts) == 1000
    assert len(kv.puts) < 1000 + 1000 // DONE_PAGE + 5, "no key per completion beside the item's own"


def test_numbers_results_listing_and_acks_run_across_pages_filled_by_several_batches():
    q = QueueLogic(MemoryKV(), Clock())
    keys = [f"k{i:03d}" for i in range(250)]
    seqs = []
    for start in range(0, 250, 7):  # batches that end mid-page: a page is added to by several operations
        seqs += complete(q, keys[start:start + 7])
    assert seqs == list(range(1, 251))
    assert read_all(q, 33) == list(zip(range(1, 251), keys, strict=True))
    assert q.results(after=95, limit=10)["items"][0]["seq"] == 96
    assert [i["id"] for i in q.results(after=95, limit=10)["items"]] == keys[95:105]
    assert listed_done(q, 40) == keys
    assert q.ack(150) == {"acked": 150, "dropped": 150}
    assert q.item(keys[149])["result"] is None and q.item(keys[150])["result"] == {"k": keys[150]}
    assert [i["seq"] for i in q.results(after=0, limit=3)["items"]] == [151, 152, 153]
    stats = q.stats()
    assert stats["done"]["count"] == 250 and stats["results_acked"] == 150
    assert stats["done"]["oldest_age"] == q.clock() - 0.5 - q.item(keys[150])["since"]


def to_pre_page_layout(kv: MemoryKV) -> int:
    """Rewrite ``kv``'s done index as a queue written before pages did (``d/<n>`` per number, no
    ``done_paged``); how many numbers it holds."""
    meta = kv.data["q/meta"]
    numbered = list(ResultLog(kv, meta).ids(1, meta["done"]))
    for key in [k for k in kv.data if k.startswith("dp/")]:
        del kv.data[key]
    for n, item_id in numbered:
        kv.data[f"d/{n:012d}"] = item_id
    del meta["done_paged"]
    return len(numbered)


def test_a_queue_written_before_pages_keeps_its_numbers_and_numbers_new_completions_in_pages():
    kv = MemoryKV()
    q = QueueLogic(kv, Clock())
    keys = [f"k{i:03d}" for i in range(260)]
    complete(q, keys[:130])
    q.ack(20)
    assert to_pre_page_layout(kv) == 130
    assert read_all(q, 25)[:3] == [(21, "k020"), (22, "k021"), (23, "k022")], "the old keys are read"

    assert complete(q, keys[130:200]) + complete(q, keys[200:]) == list(range(131, 261))
    assert sorted(k for k in kv.data if k.startswith("d/")) == [f"d/{n:012d}" for n in range(1, 131)], "kept as is"
    assert kv.data["q/meta"]["done_paged"] == 131
    assert kv.data[f"dp/{1:012d}"]["first"] == 131, "the first page starts where the old keys end"
    assert read_all(q, 40) == list(zip(range(21, 261), keys[20:], strict=True))
    assert listed_done(q, 45) == keys
    assert q.ack(140) == {"acked": 140, "dropped": 120}, "acks cross from the old keys into the pages"
    assert q.results(after=0, limit=1)["items"][0]["id"] == "k140"
    assert q.stats()["done"]["oldest_age"] is not None
    assert q.complete("k000", q.item("k000")["attempts"])["status"] == "already_completed"


def test_done_items_acked_and_older_than_forget_after_are_forgotten_and_their_keys_are_new_again():
    clock, kv = ManualClock(), MemoryKV()
    q = QueueLogic(kv, clock, forget_after=60.0)
    complete(q, ["a", "b", "c"])
    q.ack(2)
    clock.now += 59.0
    q.ack(2)
    assert q.stats()["forgotten"] == 0 and q.item("a")["state"] == "done", "not yet due"
    clock.now += 2.0
    q.ack(2)
    assert q.stats()["forgotten"] == 2 and "i/a" not in kv.data and "i/b" not in kv.data
    assert q.item("c")["result"] == {"k": "c"}, "not acked: kept, however old"
    stats = q.stats()
    assert stats["done"]["count"] == 3 and stats["results_acked"] == 2, "forgotten items still count as done"
    assert listed_done(q, 10) == ["c"] and read_all(q, 10) == [(3, "c")]
    again = q.enqueue([{"key": "a"}])[0]
    assert again["duplicate"] is False and again["state"] == "pending", "a forgotten key is new work"
    assert q.enqueue([{"key": "c"}])[0]["duplicate"] is True
    assert complete(q, ["a"]) == [4], "numbered after the forgotten ones"
    assert [i["seq"] for i in q.results(after=0)["items"]] == [3, 4]


def test_forgetting_deletes_whole_pages_a_bounded_number_at_a_time_and_keeps_up_with_completions():
    clock, kv = ManualClock(), MemoryKV()
    q = QueueLogic(kv, clock, keep_results=False, forget_after=10.0)
    keys = [f"k{i:03d}" for i in range(450)]
    complete(q, keys[:300])
    assert q.stats()["forgotten"] == 0 and sum(k.startswith("dp/") for k in kv.data) == 3
    clock.now += 11.0
    complete(q, keys[300:350])  # 50 completions forget up to max(a page, twice 50) = 100 numbers
    assert q.stats()["forgotten"] == 100
    assert sorted(k for k in kv.data if k.startswith("dp/")) == [f"dp/{p:012d}" for p in (1, 2, 3)], "page 0 gone"
    assert all(f"i/{k}" not in kv.data for k in keys[:100]) and f"i/{keys[100]}" in kv.data
    complete(q, keys[350:450])  # 100 more forget 200: up to 300, all older than 10 s; the rest are not due
    assert q.stats()["forgotten"] == 300 and sum(k.startswith("i/") for k in kv.data) == 150
    assert sorted(k for k in kv.data if k.startswith("dp/")) == [f"dp/{p:012d}" for p in (3, 4)]
    assert listed_done(q, 1000) == keys[300:], "the listing starts after the forgotten numbers"


def test_forgetting_reaches_into_a_queue_written_before_pages():
    clock, kv = ManualClock(), MemoryKV()
    q = QueueLogic(kv, clock)
    keys = [f"k{i:03d}" for i in range(230)]
    complete(q, keys[:130])
    assert to_pre_page_layout(kv) == 130
    complete(q, keys[130:])
    q.ack(230)
    clock.now += 100.0
    q.forget_after = 50.0
    assert q.ack(230) == {"acked": 230, "dropped": 0}
    assert q.stats()["forgotten"] == 100 and sum(k.startswith("d/") for k in kv.data) == 30
    q.ack(230)
    q.ack(230)
    assert q.stats()["forgotten"] == 230
    # Left: the page still being filled (numbers 201-300), which goes once its last number does.
    assert [k for k in kv.data if k.startswith(("d/", "dp/", "i/"))] == [f"dp/{2:012d}"]
    assert complete(q, [f"n{i:02d}" for i in range(70)])[-1] == 300 and q.ack(300)["acked"] == 300
    clock.now += 100.0
    q.ack(300)
    assert [k for k in kv.data if k.startswith(("d/", "dp/", "i/"))] == []
    assert q.enqueue([{"key": "k000"}])[0]["duplicate"] is False


def test_forget_after_must_be_positive():
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match="forget_after"):
            QueueLogic(MemoryKV(), ManualClock(), forget_after=bad)
