"""How the cascade's first stage is measured: what it rules out of a generated picture set, and
whether anything it rules out mattered to the full network.

The bar (issue 20): every bait picture the full network puts over the threshold is still sent
on (recall of SUSPECTED_NEW 100 %), and no picture it rules out would have reached any of the
spec's thresholds or the face stage's. What it rules out of the benign pictures is its gain.
No torch here: the scores come from the caller (bench/models.py runs the network).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from models.preprocess import first_stage_reason
from models.spec import ModelSpec

SEED = 20_000         # apart from the accuracy gate's validation (0) and calibration (1000) seeds


def pictures(spec: ModelSpec, bait: int, benign: int, seed: int = SEED
             ) -> tuple[list[str], np.ndarray]:
    """(names, uint8 model inputs): `bait` bait pictures (JPEG 90, as checked in
    triage/synth/bait.py) and `benign` benign ones (JPEG 88, as the fleet writes them), in turn
    a landscape or abstract, a camera frame, an alert stand-in (coloured shapes and a label)
    and a black-and-white copy of a landscape or abstract (grey pictures must never be ruled
    out: the skin test cannot see skin in them)."""
    from models import precision as P
    from models.precision import _jpeg, bait_inputs
    from models.preprocess import preprocess
    from triage.synth.pictures import JPEG_QUALITY, alert_picture, benign_picture, camera_frame

    names, arrays = bait_inputs(spec, seed, bait)
    for i in range(benign):
        w, h = P.BENIGN_SIZES[i % len(P.BENIGN_SIZES)]
        kind = i % 4
        if kind == 1:
            img, name = camera_frame(seed + i, "cascade", w, h), "camera_frame"
        elif kind == 2:
            img, name = alert_picture(seed + i, i, w, h), "alert_stand_in"
        elif kind == 3:
            img, name = benign_picture(seed + i, "cascade", w, h).convert("L").convert("RGB"), "grey"
        else:
            img, name = benign_picture(seed + i, "cascade", w, h), "benign_picture"
        names.append(f"{name}-{seed + i}")
        arrays.append(preprocess(spec, _jpeg(img, JPEG_QUALITY)))
    return names, np.stack(arrays) if arrays else np.zeros((0, spec.input_size, spec.input_size, 3), np.uint8)


@dataclass
class Figures:
    """What the first stage did to one picture set, against the full network's scores."""

    bait: int = 0
    bait_over: int = 0                 # bait the full network puts over the threshold
    bait_over_sent: int = 0            # ... of which the first stage still sends on
    benign: int = 0
    benign_ruled_out: int = 0
    lost: list = field(default_factory=list)   # ruled out, yet over a threshold: (name, score)
    max_ruled_out_score: float = 0.0
    rate: float = 0.0                  # first-stage decisions per second, one core
    by_kind: dict = field(default_factory=dict)   # benign kind -> (ruled out, of)

    @property
    def recall(self) -> float:
        return self.bait_over_sent / self.bait_over if self.bait_over else 1.0

    @property
    def benign_share(self) -> float:
        return self.benign_ruled_out / self.benign if self.benign else 0.0

    @property
    def keeps_everything(self) -> bool:
        """The bar: recall 100 % and nothing ruled out that any threshold would have caught."""
        return self.recall == 1.0 and not self.lost


def measure(spec: ModelSpec, names: list[str], inputs: np.ndarray, scores: np.ndarray,
            label: str = "explicit") -> Figures:
    """The first stage's decisions on `inputs` against the full network's `scores` (one value
    of `label` per picture)."""
    t0 = time.perf_counter()
    ruled = [first_stage_reason(x, spec.first_stage_skin) is not None for x in inputs]
    seconds = time.perf_counter() - t0
    threshold = spec.thresholds.get(label, 0.5)
    lowest = min([threshold] + ([spec.faces.threshold] if spec.faces else []))
    f = Figures(rate=len(inputs) / seconds if seconds > 0 else 0.0)
    for name, out, score in zip(names, ruled, scores):
        score = float(score)
        kind = name.rsplit("-", 1)[0]
        if kind == "bait":
            f.bait += 1
            if score >= threshold:
                f.bait_over += 1
                f.bait_over_sent += not out
        else:
            f.benign += 1
            f.benign_ruled_out += out
            got, of = f.by_kind.get(kind, (0, 0))
            f.by_kind[kind] = (got + out, of + 1)
        if out:
            f.max_ruled_out_score = max(f.max_ruled_out_score, score)
            if score >= lowest:
                f.lost.append((name, score))
    return f
