"""The work queue's done index (``ResultLog``): completion numbers in pages, and queues written before pages.

Pure logic over a dict (``MemoryKV``) and a fake clock: no Ray, no sleeping.
"""

from __future__ import annotations

from runtime._queue_logic import DONE_PAGE, MemoryKV, QueueLogic, ResultLog


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
