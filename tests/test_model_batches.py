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
    assert batch_mode()[0] == "batch"                  # the default: measured faster so far
    monkeypatch.setenv("TRIAGE_MODEL_BATCH", "auto")
    mode, sizer = batch_mode()
    assert mode == "auto" and sizer.target() == 64 and (sizer.smallest, sizer.largest) == (32, 128)
    gpu = batch_mode(gpus=1)[1]
    assert gpu.target() == 64 and (gpu.smallest, gpu.largest) == (32, 256)
    monkeypatch.setenv("TRIAGE_MODEL_BATCH", "32")
    mode, sizer = batch_mode()
    assert mode == "fixed" and sizer.target() == 32
    monkeypatch.setenv("TRIAGE_MODEL_BATCH", "nonsense")
    assert batch_mode()[0] == "batch"


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


# --- the driver's bookkeeping: pictures of two decode batches in calls that cut across them ---

class _RayError(Exception):
    pass


class _FakeRay:
    """ray.get for the driver: the answers given, or a failed call."""

    class exceptions:
        RayError = _RayError

    def __init__(self):
        self.answers = {}

    def get(self, ref):
        got = self.answers[ref]
        if isinstance(got, Exception):
            raise got
        return got


class _FakePool:
    batching = "auto"
    actors = [object()]

    def __init__(self, size):
        self.size, self.sent, self.learnt = size, [], []

    def target(self, idle_cpus=None):
        return self.size

    def submit(self, keys, pixels, idle_cpus=None):
        self.sent.append(list(keys))
        return f"call{len(self.sent)}"

    def done(self, ref, answer=None):
        self.learnt.append(answer is not None)


class _FakeStore:
    def __init__(self):
        self.done = {}

    def mark_batch_done(self, device_id, batch_id, scores, coverage, files):
        self.done[batch_id] = (sorted(s.key for s in scores), coverage)


def _driver(size: int):
    """The scan driver with fakes around its model bookkeeping: one device, one actor."""
    from types import SimpleNamespace

    from workers.scan import DeviceState, Scan

    scan = Scan.__new__(Scan)
    scan.ray, scan.model_pool, scan.store = _FakeRay(), _FakePool(size=size), _FakeStore()
    scan.model_jobs, scan.model_queue, scan.model_calls = {}, ModelQueue(), {}
    scan.max_model_calls, scan.workers, scan.in_flight = 3, 2, {}
    scan.thresholds, scan.labels = None, {}
    scan.reporter = SimpleNamespace(batch_done=lambda *a: None)
    scan.sink = SimpleNamespace(raise_all=lambda flags: 0)
    dev = DeviceState("d", ("d.raw",), phase="scanning")
    scan.devices = {"d": dev}
    return scan, dev


def test_each_decode_batch_is_done_when_all_its_pictures_are_answered_whatever_the_calls():
    """Three pictures of b1 and two of b2, cut into calls of four and one. The call holding
    b2's second picture fails: b1 is stored whole, b2 with its one score and a NOT_SCORED gap
    for exactly the picture (and bytes) it lost."""
    from types import SimpleNamespace

    from triage import records
    from triage.records import Features, FileRecord, Provenance, Score
    from workers.model_batches import ScoredCall
    from workers.plan import BatchHeader

    scan, dev = _driver(size=4)

    def batch(batch_id, names):
        recs = [FileRecord(Provenance("d", path=f"/{n}"), n, 1000 + i, True, "ext4",
                           type="image/jpeg") for i, n in enumerate(names)]
        items = [(r, Features(key=r.key, size=r.size, type=r.type, is_picture=True))
                 for r in recs]
        return SimpleNamespace(model_inputs=[(r.key, np.zeros((4, 4, 3), np.uint8)) for r in recs],
                               frame_of={}, items=items, matches=[], stored_files=len(recs)), recs

    b1, recs1 = batch("b1", ["a", "b", "c"])
    b2, recs2 = batch("b2", ["d", "e"])
    head = lambda i: BatchHeader("d", i, 0, 0, 3, 3000)   # noqa: E731
    scan._send_to_model(dev, head("b1"), b1)      # 3 < 4 and the actor idle: sent as it is
    assert scan.model_pool.sent == [[r.key for r in recs1]]
    scan._send_to_model(dev, head("b2"), b2)      # the actor busy: b2's two wait to coalesce
    assert len(scan.model_pool.sent) == 1 and len(scan.model_queue) == 2
    assert dev.in_flight == 2

    score = lambda r: Score(r.key, "toy", "0" * 64, {"explicit": 0.1})   # noqa: E731
    scan.ray.answers["call1"] = ScoredCall([score(r) for r in recs1], 0.3, len(recs1))
    scan._scored("call1")                          # b1 complete; the actor idle: b2 goes
    assert scan.store.done == {"b1": (sorted(r.key for r in recs1), [])}
    assert scan.model_pool.sent[1] == [r.key for r in recs2]
    # a call that answers only one of its two pictures: the other is a gap, not lost silently
    scan.ray.answers["call2"] = ScoredCall([score(recs2[0])], 0.1, 1)
    scan._scored("call2")
    keys, coverage = scan.store.done["b2"]
    assert keys == [recs2[0].key]
    [gap] = coverage
    assert gap.kind == records.NOT_SCORED and gap.bytes_not_examined == recs2[1].size
    assert gap.reason == "1 pictures of batch b2 not scored by the model: the model returned no score"
    assert dev.in_flight == 0 and dev.scored == 4 and scan.model_jobs == {}
    assert scan.model_pool.learnt == [True, True]


def test_a_failed_call_leaves_a_gap_for_its_pictures_only():
    from types import SimpleNamespace

    from triage.records import Features, FileRecord, Provenance
    from workers.plan import BatchHeader

    scan, dev = _driver(size=2)
    recs = [FileRecord(Provenance("d", path=f"/{n}"), n, 500, True, "ext4", type="image/jpeg")
            for n in "abcde"]
    result = SimpleNamespace(model_inputs=[(r.key, np.zeros((4, 4, 3), np.uint8)) for r in recs],
                             frame_of={}, matches=[], stored_files=5,
                             items=[(r, Features(key=r.key, size=500, type=r.type, is_picture=True))
                                    for r in recs])
    scan._send_to_model(dev, BatchHeader("d", "b9", 0, 0, 5, 2500), result)
    # a large yield split into calls of the target size; the last one, smaller, waits while
    # the actor is busy, in case more pictures come to fill it
    assert scan.model_pool.sent == [[r.key for r in recs[:2]], [r.key for r in recs[2:4]]]
    from workers.model_batches import ScoredCall
    from triage.records import Score
    scan.ray.answers.update({
        "call1": ScoredCall([Score(r.key, "toy", "0" * 64, {"explicit": 0.2}) for r in recs[:2]], 0.1, 2),
        "call2": _RayError("actor died"),
        "call3": ScoredCall([Score(recs[4].key, "toy", "0" * 64, {"explicit": 0.2})], 0.1, 1)})
    scan._scored("call2")                  # answers in any order
    assert len(scan.model_pool.sent) == 2 and "b9" not in scan.store.done
    scan._scored("call1")                  # the actor idle: what waits goes as it is
    assert scan.model_pool.sent[2] == [recs[4].key]
    scan._scored("call3")
    assert scan.model_pool.learnt == [False, True, True]    # a failed call teaches nothing
    keys, [gap] = scan.store.done["b9"]
    assert len(keys) == 3 and gap.bytes_not_examined == 1000
    assert gap.reason.startswith("2 pictures of batch b9 not scored by the model: ")
    assert dev.in_flight == 0 and dev.scored == 3


class _CountingRunner:
    """Stands in for ModelRunner.predict: values computed from each picture's pixels, and
    every picture that reaches 'the network' counted."""

    def __init__(self):
        self.seen, self.network_seconds = 0, -1.0

    def predict(self, batch):
        self.seen += len(batch)
        self.network_seconds = 0.01 * len(batch)
        return [{"explicit": float(p.mean()) / 255, "faces": None} for p in batch]


def _pictures(*levels, size=8):
    rng = np.random.default_rng(3)
    base = rng.integers(0, 200, size=(size, size, 3), dtype=np.uint8)
    return np.stack([base + np.uint8(v) for v in levels])


def test_an_input_scored_already_is_answered_without_the_network():
    from models.runner import InputMemo
    memo, runner = InputMemo(), _CountingRunner()
    batch = _pictures(1, 2, 1, 3, 2)                 # two inputs repeated within the call
    values, network = memo.predict(runner, batch)
    assert (network, runner.seen) == (3, 3)
    assert values == [_CountingRunner().predict(batch[i:i + 1])[0] for i in range(5)]
    values[0]["explicit"] = -1.0                       # callers own their dicts
    again, network = memo.predict(runner, _pictures(2, 4, 1))    # later calls too
    assert (network, runner.seen) == (1, 4)
    assert again[2]["explicit"] == float(batch[0].mean()) / 255
    assert memo.predict(runner, _pictures(3))[1] == 0 and runner.network_seconds == 0.0


def test_the_memo_keys_on_every_byte_and_the_shape_and_stays_bounded():
    from models.runner import InputMemo, input_digest
    a = _pictures(1)[0]
    b = a.copy()
    b[7, 7, 2] ^= 1                                    # one bit of one pixel
    assert input_digest(a) != input_digest(b)
    assert input_digest(a) != input_digest(a.reshape(4, 16, 3))
    assert input_digest(a) == input_digest(np.asfortranarray(a))    # the values, not the layout
    memo, runner = InputMemo(limit=2), _CountingRunner()
    memo.predict(runner, _pictures(1, 2, 3))         # 1 is pushed out by 3
    memo.predict(runner, _pictures(3, 2))
    assert runner.seen == 3
    memo.predict(runner, _pictures(1))
    assert runner.seen == 4


def test_reuse_is_on_unless_the_environment_turns_it_off(monkeypatch):
    from workers.model_pool import reuse_inputs
    monkeypatch.delenv("TRIAGE_MODEL_REUSE", raising=False)
    assert reuse_inputs()
    for off in ("off", "0", "No"):
        monkeypatch.setenv("TRIAGE_MODEL_REUSE", off)
        assert not reuse_inputs()
