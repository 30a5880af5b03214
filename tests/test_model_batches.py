"""How the scan cuts pictures into model calls (workers/model_batches.py): the call size follows
the rate measured with fake timings, bounded so flags stay prompt; the queue coalesces small
decode batches and splits large ones. The scan-level check (same results with and without
adaptive batching) is in test_scan_model.py."""
from __future__ import annotations

import numpy as np
import pytest

from workers.model_batches import BatchSizer, ModelQueue, batch_mode


def run(sizer: BatchSizer, per_picture, calls: int = 60, overhead: float = 0.0,
        threads: int = 0) -> list[int]:
    """Drive the sizer with fake timings: a call of n pictures takes overhead + n *
    per_picture(n) seconds. Returns the targets it chose, call by call."""
    chosen = []
    for _ in range(calls):
        n = sizer.target(threads)
        chosen.append(n)
        sizer.observe(n, overhead + n * per_picture(n), threads)
    return chosen


def test_it_grows_while_larger_calls_are_faster_per_picture():
    # a fixed cost per call (Ray, the transfer): larger calls win until the latency bound
    sizer = BatchSizer(start=16, largest=64, max_seconds=10)
    chosen = run(sizer, lambda n: 0.01, overhead=0.2)
    assert chosen[:3] == [16, 16, 16]              # measured first
    assert chosen[3:6] == [32, 32, 32]             # then the next size up is tried
    assert chosen[-10:] == [64] * 10               # and the largest kept: fastest per picture


def test_it_keeps_the_smallest_size_as_fast_as_the_fastest():
    # no cost per call: every size is as fast, so the smallest comes first (flags sooner)
    sizer = BatchSizer(start=16, smallest=4, largest=64)
    chosen = run(sizer, lambda n: 0.02)
    assert set(chosen[:12]) == {16, 32, 8, 4}      # up once, then down to the smallest
    assert chosen[-10:] == [4] * 10


def test_it_shrinks_when_larger_calls_are_slower():
    # per picture time grows past 16 (caches overflow): 16 stays, 32 was tried and dropped
    sizer = BatchSizer(start=16, smallest=4, largest=64)
    chosen = run(sizer, lambda n: 0.01 if n <= 16 else 0.02, overhead=0.05)
    assert 32 in chosen and 64 not in chosen
    assert chosen[-10:] == [16] * 10


def test_calls_never_exceed_the_latency_bound():
    # 0.1 s a picture and 0.1 s a call: 16 (1.7 s) is tried and kept; a call of 32 would
    # take about 3.4 s, over the 2 s bound, so it is never tried
    sizer = BatchSizer(start=8, largest=64, max_seconds=2.0)
    chosen = run(sizer, lambda n: 0.1, overhead=0.1)
    assert max(chosen) == 16 and chosen[-5:] == [16] * 5


def test_each_thread_count_is_measured_on_its_own():
    sizer = BatchSizer(start=16, largest=64, max_seconds=10)
    run(sizer, lambda n: 0.01, overhead=0.2, threads=2)
    assert sizer.target(2) == 64
    assert sizer.target(1) == 16                   # nothing measured with one thread yet
    assert set(sizer.report()) == {"2"}
    assert sizer.report()["2"]["64"] == pytest.approx(64 / (0.2 + 0.64), rel=1e-3)


def test_it_forgets_and_measures_again_as_load_changes():
    sizer = BatchSizer(start=16, largest=64, max_seconds=10, refresh=30)
    run(sizer, lambda n: 0.01, overhead=0.2, calls=29)
    assert sizer.target() == 64
    sizer.observe(64, 0.84)                        # the 30th call: averages dropped first
    assert sizer.stats == {0: {64: [pytest.approx(0.84 / 64), 1]}} and sizer.target() == 16


def test_a_fixed_size_does_not_adapt_and_odd_calls_are_ignored():
    sizer = BatchSizer(fixed=24)
    run(sizer, lambda n: 0.01, overhead=1.0)
    assert sizer.target() == 24
    free = BatchSizer()
    free.observe(0, 1.0)
    free.observe(5, 0.0)
    assert free.stats == {} and free.size_of(5) == 4 and free.size_of(1000) == 64


def test_the_mode_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("TRIAGE_MODEL_BATCH", raising=False)
    mode, sizer = batch_mode()
    assert mode == "auto" and sizer.target() == 16 and (sizer.smallest, sizer.largest) == (16, 64)
    gpu = batch_mode(gpus=1)[1]
    assert gpu.target() == 64 and (gpu.smallest, gpu.largest) == (32, 256)
    monkeypatch.setenv("TRIAGE_MODEL_BATCH", "batch")
    assert batch_mode()[0] == "batch"
    monkeypatch.setenv("TRIAGE_MODEL_BATCH", "32")
    mode, sizer = batch_mode()
    assert mode == "fixed" and sizer.target() == 32
    monkeypatch.setenv("TRIAGE_MODEL_BATCH", "nonsense")
    assert batch_mode()[0] == "auto"


def test_the_queue_coalesces_small_batches_and_splits_large_ones():
    q = ModelQueue()
    px = lambda n, v: [np.full((4, 4, 3), v, np.uint8)] * n   # noqa: E731
    q.add("b1", ["a1", "a2"], px(2, 1))
    q.add("b2", ["c1"], px(1, 2))
    q.add("b3", [f"d{i}" for i in range(7)], px(7, 3))
    keys, pixels, parts = q.take(4)                            # two batches and part of a third
    assert keys == ["a1", "a2", "c1", "d0"] and pixels.shape == (4, 4, 4, 3)
    assert [int(p[0, 0, 0]) for p in pixels] == [1, 1, 2, 3]
    assert parts == [("b1", ["a1", "a2"]), ("b2", ["c1"]), ("b3", ["d0"])]
    keys, _, parts = q.take(4)
    assert parts == [("b3", ["d1", "d2", "d3", "d4"])]
    keys, _, parts = q.take(4)                                 # what is left
    assert keys == ["d5", "d6"] and len(q) == 0
    assert q.take(4)[0] == []
