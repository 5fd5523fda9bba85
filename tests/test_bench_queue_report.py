"""The queue benchmark's result (``benchmarks.queue_throughput.report``): no Ray, rates given."""

from __future__ import annotations

from benchmarks import queue_throughput


def test_each_kind_of_worker_is_reported_with_its_median_ratio_and_whether_it_meets_the_aim():
    queue = {"worker_processes": {2: [24_000.0, 21_000.0, 31_000.0], 4: [19_000.0, 19_900.0, 26_000.0]},
             "driver_threads": {2: [19_800.0, 19_600.0, 24_300.0], 4: [20_500.0, 20_600.0, 20_700.0]}}
    result = queue_throughput.report(100_000, 1000, queue, enqueue=[40_000.0], bare=[50_000.0, 40_000.0, 60_000.0],
                                     asks=[700.0])
    assert set(queue_throughput.KINDS) <= result.keys()
    two, four = result["worker_processes"]["2"], result["worker_processes"]["4"]
    assert (two["queue_items_per_s_median"], two["ratio_queue_to_bare_lmdb"], two["meets_aim"]) == (24_000, 0.48, True)
    assert (four["queue_items_per_s_median"], four["meets_aim"]) == (19_900, False)
    assert result["driver_threads"]["2"]["queue_items_per_s"] == [19_800, 19_600, 24_300]
    assert result["driver_threads"]["4"]["meets_aim"] is True
    assert result["aim"] == {"queue_items_per_s": queue_throughput.AIM} and result["bare_lmdb_items_per_s_median"] == 50_000
