"""The model stage as a pool of Ray actors, each holding one `models.runner.ModelRunner`.

CPU workers decode and pre-size pictures (the features stage's `model_input`); the actors
only run the network. An actor asks for a GPU when the cluster has one; otherwise it runs on
CPU with a thread count that leaves the scan's other workers their cores.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import ray

from triage.records import Score


@ray.remote(max_restarts=1, max_task_retries=1)
class ModelActor:
    def __init__(self, model: dict, num_threads: Optional[int] = None):
        from models.registry import resolve
        from models.runner import ModelRunner
        spec = resolve(model["spec"] if model.get("spec") else model["name"])
        self.runner = ModelRunner(spec, device="auto", num_threads=num_threads)
        self.name = self.runner.model_name
        self.sha256 = self.runner.model_sha256

    def describe(self) -> dict:
        return {"name": self.name, "sha256": self.sha256, "device": self.runner.device}

    def score(self, keys: list[str], pixels: np.ndarray) -> list[Score]:
        values = self.runner.predict(np.asarray(pixels))
        return [Score(key=k, model=self.name, model_sha256=self.sha256, values=v)
                for k, v in zip(keys, values)]


class ModelPool:
    """`size` actors; calls go to the actor with the fewest calls outstanding."""

    def __init__(self, model: dict, size: int, gpus: int = 0, cpu_threads: Optional[int] = None):
        options = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": 1}
        self.actors = [ModelActor.options(**options).remote(model, cpu_threads)
                       for _ in range(max(1, size))]
        self.load = [0] * len(self.actors)
        self.owner: dict = {}

    def submit(self, keys: list[str], pixels) -> "ray.ObjectRef":
        i = min(range(len(self.actors)), key=self.load.__getitem__)
        ref = self.actors[i].score.remote(keys, pixels)
        self.load[i] += 1
        self.owner[ref] = i
        return ref

    def done(self, ref) -> None:
        i = self.owner.pop(ref, None)
        if i is not None:
            self.load[i] -= 1

    def describe(self) -> dict:
        return ray.get(self.actors[0].describe.remote())

    def close(self) -> None:
        for a in self.actors:
            ray.kill(a)
