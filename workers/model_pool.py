"""The model stage as a pool of Ray actors, each holding one `models.runner.ModelRunner`.

CPU workers decode and pre-size pictures (the features stage's `model_input`); the actors
only run the network. An actor asks for a GPU when the cluster has one; otherwise it runs on
CPU beside the decode workers (see `cpu_layout`). The pictures of many decode batches wait in a
`ModelQueue` and go to the actors in calls of the size `BatchSizer` finds fastest here. Each
actor answers an input it has scored already from memory (`models.runner.InputMemo`).
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np
import ray

from triage.records import Score
from workers.model_batches import ScoredCall, batch_mode

LAYOUT_ENV = "TRIAGE_MODEL_LAYOUT"    # "ACTORSxTHREADS", e.g. "2x1": for bench/scan.py's (h)
# "off": every picture through the network, even one whose input was scored already (for
# bench/scan.py's (h), which times the network itself)
REUSE_ENV = "TRIAGE_MODEL_REUSE"


def reuse_inputs() -> bool:
    """Whether the actors answer a picture whose model input they have scored already from
    what they remember (models.runner.InputMemo); `TRIAGE_MODEL_REUSE=off` sends every
    picture through the network. Read in the driver, so a cluster's actors follow it too."""
    return os.environ.get(REUSE_ENV, "").strip().lower() not in ("off", "0", "no")


@ray.remote(max_restarts=1, max_task_retries=1)
class ModelActor:
    def __init__(self, model: dict, num_threads: Optional[int] = None, reuse: bool = True):
        from models.registry import resolve
        from models.runner import InputMemo, ModelRunner
        spec = resolve(model["spec"] if model.get("spec") else model["name"])
        self.runner = ModelRunner(spec, device="auto", num_threads=num_threads,
                                  precision=model.get("precision") or "auto")
        self.name = self.runner.model_name
        self.sha256 = self.runner.model_sha256
        self.memo = InputMemo() if reuse else None

    def describe(self) -> dict:
        return {"name": self.name, "sha256": self.sha256, "device": self.runner.device,
                "precision": self.runner.precision_report}

    def score(self, keys: list[str], pixels: np.ndarray, threads: Optional[int] = None) -> ScoredCall:
        if threads and self.runner.device == "cpu":
            self.runner.set_threads(threads)
        if self.memo is not None:
            values, network = self.memo.predict(self.runner, pixels)
        else:
            values, network = self.runner.predict(np.asarray(pixels)), len(keys)
        return ScoredCall([Score(key=k, model=self.name, model_sha256=self.sha256, values=v)
                           for k, v in zip(keys, values)], self.runner.network_seconds, network)


def cpu_layout(workers: int) -> tuple[int, int]:
    """(actors, threads each; 0: as many as the decode workers leave idle, call by call) for a
    CPU-only scan with `workers` decode workers.

    The actors take no CPU slot from Ray (num_cpus=0): they run beside the decode workers and
    the OS shares the cores, so no core idles while one side waits for the other. With a
    thread count that follows the decode workers (`ModelPool.submit`'s `idle_cpus`) the model
    takes every core once decoding pauses, and one core while both decode workers run: an
    OpenMP team larger than the idle cores waits at every barrier for whichever thread the OS
    paused. Measured in bench/scan.py (h); `TRIAGE_MODEL_LAYOUT=AxT` sets a fixed layout.
    """
    wanted = os.environ.get(LAYOUT_ENV, "")
    actors, _, threads = wanted.partition("x")
    if actors.isdigit() and int(actors) > 0 and (threads.isdigit() or threads == "auto"):
        return int(actors), int(threads) if threads.isdigit() else 0
    return 1, 0


class ModelPool:
    """`size` actors; calls go to the actor with the fewest calls outstanding.

    On a GPU each actor holds a GPU and a CPU slot; on CPU (`cpus=0`) none, so the decode
    workers keep every slot and the actors share the cores with them."""

    def __init__(self, model: dict, size: int, gpus: int = 0, cpu_threads: Optional[int] = None,
                 cpus: float = 1, max_threads: Optional[int] = None):
        options = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": cpus}
        # cpu_threads 0: adaptive, between 1 and max_threads (the decode workers' cores)
        self.adaptive = not gpus and cpu_threads == 0
        self.max_threads = max(1, max_threads or 1)
        start = self.max_threads if self.adaptive else cpu_threads
        self.reuse = reuse_inputs()
        self.actors = [ModelActor.options(**options).remote(model, start, self.reuse)
                       for _ in range(max(1, size))]
        self.load = [0] * len(self.actors)
        self.owner: dict = {}
        self.batching, self.sizer = batch_mode(gpus)
        self.calls = self.pictures = self.reused = 0
        # asked now, answered once the first actor has chosen its precision
        self._described = self.actors[0].describe.remote()

    def threads_for(self, idle_cpus: Optional[int]) -> Optional[int]:
        """The threads an adaptive pool gives one call when `idle_cpus` cores are idle (None:
        the actor keeps what it has)."""
        if self.adaptive and idle_cpus is not None:
            return max(1, min(self.max_threads, idle_cpus // len(self.actors)))
        return None

    def target(self, idle_cpus: Optional[int] = None) -> int:
        """The pictures the next call should carry (BatchSizer), for the threads it will get."""
        return self.sizer.target(self.threads_for(idle_cpus) or 0)

    def submit(self, keys: list[str], pixels, idle_cpus: Optional[int] = None) -> "ray.ObjectRef":
        """Score a batch; `idle_cpus` (the cores no decode worker is using now) sets the
        threads of an adaptive pool for this call, shared among its actors."""
        i = min(range(len(self.actors)), key=self.load.__getitem__)
        threads = self.threads_for(idle_cpus)
        ref = self.actors[i].score.remote(keys, pixels, threads)
        self.calls += 1
        self.pictures += len(keys)
        self.load[i] += 1
        self.owner[ref] = (i, threads or 0)
        return ref

    def done(self, ref, answer: Optional[ScoredCall] = None) -> None:
        """A call came back (`answer`: its scores and timing, which the sizer learns from)."""
        i, threads = self.owner.pop(ref, (None, 0))
        if i is not None:
            self.load[i] -= 1
        if answer is not None:      # learnt per thread count: what target() is asked with
            self.reused += len(answer.scores) - answer.network
            # per picture of the call, reused ones included: the sizer picks call sizes
            self.sizer.observe(len(answer.scores), answer.seconds, threads)

    def batching_report(self) -> dict:
        """How the pictures were cut into calls, for the run record."""
        return {"mode": self.batching, "calls": self.calls, "pictures": self.pictures,
                "measured": self.sizer.report(),
                # pictures answered without the network: their input was scored already
                "reuse": "on" if self.reuse else "off", "reused": self.reused}

    def describe(self, timeout: Optional[float] = None) -> dict:
        """The first actor's model, device and precision report; {} when it is not ready
        within `timeout` or failed to start."""
        try:
            return ray.get(self._described, timeout=timeout)
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayError):
            return {}

    def close(self) -> None:
        for a in self.actors:
            ray.kill(a)
