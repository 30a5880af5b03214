"""How the model stage's pictures are cut into calls: a queue across decode batches, and the
call size measured fastest on this machine. No Ray and no torch here (workers/model_pool.py
runs the calls; workers/scan.py feeds them).
"""
from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

# "batch" (one call per decode batch: the default, measured faster so far), "auto" (sized by
# the measured rate) or a fixed size N
BATCH_ENV = "TRIAGE_MODEL_BATCH"


@dataclass
class ScoredCall:
    """One model call's answer: a score per picture, and how long the main network took (in
    the actor: neither the time waiting in its queue nor the face stage is counted)."""

    scores: list
    seconds: float
    network: int           # pictures that went through the network; the rest had an input
                           # already scored (models.runner.InputMemo)


class BatchSizer:
    """How many pictures go to the model in one call: the size measured fastest on this machine.

    Sizes are powers of two from `smallest` to `largest`. Each call's pictures and network
    seconds are kept, per size (a call of n pictures counts for the largest size <= n) and per
    thread count, as a moving average of seconds per picture. The target starts at `start`;
    once a size has `samples` measurements, the next size up is tried, then the next down, and
    the smallest size within `gain` of the fastest per picture is kept (as fast, and its flags
    come sooner). No size is tried whose calls would take more than `max_seconds`, so a flag
    never waits long behind a large call. Everything is forgotten every `refresh` calls, as the
    machine's load changes. `fixed` turns adaptation off.
    """

    def __init__(self, start: int = 16, smallest: int = 4, largest: int = 64, *, samples: int = 3,
                 gain: float = 0.05, max_seconds: float = 2.0, refresh: int = 300,
                 fixed: Optional[int] = None, alpha: float = 0.3):
        self.smallest, self.largest = smallest, max(smallest, largest)
        self.start = self.size_of(start)
        self.samples, self.gain, self.max_seconds = samples, gain, max_seconds
        self.refresh, self.fixed, self.alpha = refresh, fixed, alpha
        self.stats: dict[int, dict[int, list]] = {}     # threads -> size -> [s/picture, calls]
        self.calls = 0

    def size_of(self, n: int) -> int:
        size = self.smallest
        while size * 2 <= min(n, self.largest):
            size *= 2
        return size

    def observe(self, pictures: int, seconds: float, threads: int = 0) -> None:
        if pictures <= 0 or seconds <= 0:
            return
        self.calls += 1
        if self.refresh and self.calls % self.refresh == 0:
            self.stats.clear()
        per = seconds / pictures
        got = self.stats.setdefault(threads, {}).setdefault(self.size_of(pictures), [per, 0])
        got[0] = per if got[1] == 0 else (1 - self.alpha) * got[0] + self.alpha * per
        got[1] += 1

    def target(self, threads: int = 0) -> int:
        if self.fixed:
            return self.fixed
        measured = {s: v[0] for s, v in self.stats.get(threads, {}).items() if v[1] >= self.samples}
        if not measured:
            return self.start
        fastest = min(measured.values())
        best = min(s for s, per in measured.items() if per <= fastest * (1 + self.gain))
        up, down = best * 2, best // 2
        if up <= self.largest and up not in measured and up * measured[best] <= self.max_seconds:
            return up
        if down >= self.smallest and down not in measured:
            return down
        return best

    def report(self) -> dict:
        """The averages measured, for the run record: {threads: {size: pictures/s}}."""
        return {str(t): {str(s): round(1 / v[0], 1) for s, v in sorted(sizes.items()) if v[0] > 0}
                for t, sizes in sorted(self.stats.items())}


@dataclass
class ModelQueue:
    """Pictures waiting for the model, from any number of decode batches, in arrival order;
    `take(n)` cuts the next call: n pictures (or what there is), and how many of them each
    decode batch (`job`, any hashable) gave."""

    items: deque = field(default_factory=deque)     # (job, key, pixels)

    def add(self, job: Any, keys: list[str], pixels: list) -> None:
        self.items.extend((job, k, p) for k, p in zip(keys, pixels))

    def __len__(self) -> int:
        return len(self.items)

    def take(self, n: int) -> tuple[list[str], np.ndarray, list[tuple[Any, list[str]]]]:
        keys, pixels, parts = [], [], []
        for _ in range(min(n, len(self.items))):
            job, key, px = self.items.popleft()
            if not parts or parts[-1][0] != job:
                parts.append((job, []))
            parts[-1][1].append(key)
            keys.append(key)
            pixels.append(np.asarray(px))
        return keys, np.stack(pixels) if pixels else np.zeros((0,), np.uint8), parts

    def clear(self) -> None:
        self.items.clear()


def batch_mode(gpus: int = 0) -> tuple[str, BatchSizer]:
    """("batch" | "auto" | "fixed", its sizer) from TRIAGE_MODEL_BATCH, "batch" by default: on
    the bench device under load, adaptive calls (then 16 to 64, starting at 16) took 1.27x the
    model-off scan against 1.11x for one call per decode batch, in both rounds (README, (h)).
    In that run calls of 64 or more scored 29 pictures/s against 11 for calls of 16-31, so
    adaptive CPU calls now start at 64 and stay between 32 and 128; a GPU: 32 to 256."""
    wanted = os.environ.get(BATCH_ENV, "batch").strip().lower()
    smallest, start, largest = (32, 64, 256) if gpus else (32, 64, 128)
    if wanted == "auto":
        return "auto", BatchSizer(start, smallest, largest)
    if wanted.isdigit() and int(wanted) > 0:
        return "fixed", BatchSizer(start, smallest, largest, fixed=int(wanted))
    return "batch", BatchSizer(start, smallest, largest)
