"""Which numeric precision the model runs in, and the accuracy gate every precision must pass.

No torch here: the CLI and the tests read the table and the gate without loading a framework;
models/engine.py builds the networks and calls these.

The CPU's flags decide which precisions are tried (PLANS, first match wins). Each one other
than fp32 must pass the gate before it is used: on a fixed validation set (the bait pictures of
triage/synth/bait.py plus benign synthetic pictures of triage/synth/pictures.py, none of them seen
in calibration), every reported score within MAX_DELTA of fp32's, and no picture on the other
side of any threshold (the spec's thresholds, and the face stage's gate). Of the precisions
that pass, the fastest measured one is used; fp32 is the reference and always passes.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from models.spec import ModelSpec
from triage.errors import ModelError

PRECISIONS = ("fp32", "bf16", "int8")
CHOICES = ("auto",) + PRECISIONS
MAX_DELTA = 0.01
# Bumped whenever calibration, the validation set or the artefact format changes: the cache
# key includes it (and int8_recipe()), so an old artefact is never taken for a new recipe.
RECIPE = "2"

# int8 is a screen: every picture runs through the int8 network, and a picture whose int8
# score on a gated label lies inside [SCREEN_BAND, 1 - SCREEN_BAND] is scored again in the
# rescoring precision (bf16 where the CPU has it, else fp32), whose score is the one reported.
# Why: static int8 alone moves open_nsfw's logits by up to ~0.4 (noise spread over every
# layer; keeping the most sensitive layers in float did not help: README, Models), which is
# up to 0.07 in score where the softmax is steep (scores 0.1-0.9, the bait) but under
# p(1-p) x 0.4 near 0 and 1. On 344 generated pictures the kept int8 scores moved at most
# 0.0038 at this band (0.0070 at 0.01). The gate holds the combined outputs to MAX_DELTA.
SCREEN_BAND = 0.005

# CPU kind -> the flags that mark it (any of) -> precisions tried, fastest expected first.
# int8 is torch's x86 static quantization (fbgemm/oneDNN): worth it with VNNI or AMX, whose
# instructions multiply int8 at 4x the fp32 rate. bf16 needs native bf16 (avx512_bf16, AMX).
PLANS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("AMX (Sapphire Rapids and later)", ("amx_int8", "amx_bf16"), ("int8", "bf16", "fp32")),
    ("AVX-512 BF16 + VNNI (Cooper Lake, Zen 4 and later)", ("avx512_bf16",), ("int8", "bf16", "fp32")),
    ("AVX-512 VNNI (Cascade Lake, Ice Lake)", ("avx512_vnni",), ("int8", "fp32")),
    ("AVX-VNNI (Alder Lake and later, Zen 5 client)", ("avx_vnni",), ("int8", "fp32")),
    ("AVX2 / AVX-512 without VNNI", ("avx2", "avx512f"), ("fp32",)),
    ("other (not x86, or no AVX2)", (), ("fp32",)),
)
GPU_PLAN = ("GPU", ("bf16", "fp32"))
VNNI = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})   # int8 multiplies, 32-bit sums


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU's feature flags (x86 `flags`, ARM `Features`), from /proc/cpuinfo."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_kind(flags: Iterable[str]) -> tuple[str, tuple[str, ...]]:
    """(kind, precisions to try) for a CPU with these flags."""
    flags = set(flags)
    for kind, marks, order in PLANS:
        if not marks or flags & set(marks):
            if "int8" in order and not flags & VNNI:
                order = tuple(p for p in order if p != "int8")   # bf16 without VNNI: none known
            return kind, order
    raise AssertionError("the last plan matches every CPU")


def candidates(asked: str, device_type: str = "cpu", flags: Iterable[str] = ()) -> list[str]:
    """The precisions to try, in order: for `auto` the plan of this CPU (or GPU); for a named
    precision that one first, then the plan's precisions after it (fp32 always last)."""
    if asked not in CHOICES:
        raise ModelError(f"model precision must be one of {', '.join(CHOICES)}, not {asked!r}")
    plan = GPU_PLAN[1] if device_type == "cuda" else cpu_kind(flags)[1]
    if asked == "auto":
        return list(plan)
    # the next precisions after a refused one: int8 -> bf16 -> fp32, as far as the plan has them
    order = [asked] + [p for p in plan if PRECISIONS.index(p) < PRECISIONS.index(asked)]
    return order if "fp32" in order else order + ["fp32"]


# --- the gate -----------------------------------------------------------------------------

@dataclass
class Verdict:
    """What the gate found for one precision, as recorded with the run."""

    precision: str
    passed: bool
    max_delta: float = 0.0
    flips: list[str] = field(default_factory=list)    # "picture: label 0.79 -> 0.81 (t 0.8)"
    pictures: int = 0
    rate: Optional[float] = None      # pictures/s measured at build time (batch of 16)
    reason: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["max_delta"] = round(self.max_delta, 6)
        if self.rate is not None:
            d["rate"] = round(self.rate, 1)
        return d


# `auto` takes the most exact precision within this factor of the fastest one measured. The
# int8 screen's speed depends on the share of pictures inside its band: 37 % of the pictures it
# is timed on, but 58 % of those scored on the bench device (bf16 scores, 497 pictures). With
# 1/230 s for every picture plus 1/110 s for those inside, that is 1.18x bf16 on the former and
# 0.95x on the latter (measured on the former: 1.07-1.3x in turns under load). A margin under
# that spread and the noise would pick the screen for a gain the scan does not see.
AUTO_MARGIN = 1.5


def auto_order(passing: Sequence[str], rates: dict[str, float],
               margin: float = AUTO_MARGIN) -> list[str]:
    """The passing precisions in the order `auto` tries them: first the most exact one whose
    measured rate is within `margin` of the fastest, then the rest, fastest first."""
    by_rate = sorted(passing, key=lambda p: -rates.get(p, 0.0))
    if not by_rate:
        return by_rate
    top = rates.get(by_rate[0], 0.0)
    pick = min((p for p in by_rate if rates.get(p, 0.0) * margin >= top), key=PRECISIONS.index)
    return [pick] + [p for p in by_rate if p != pick]


def rescore_precision(flags: Iterable[str]) -> str:
    """What int8's screen re-scores the pictures inside its band in: bf16 where this CPU's plan
    has it (native bf16), else fp32."""
    return "bf16" if "bf16" in cpu_kind(flags)[1] else "fp32"


def int8_recipe(flags: Iterable[str]) -> dict:
    """How int8 is built and used, as recorded with the run and hashed into the cache key."""
    return {"quantization": "x86 static (FX), per-channel int8 weights, histogram uint8 "
                            "activations" + (", 8-bit range" if set(flags) & VNNI else ", 7-bit range"),
            "calibration": f"{CALIBRATION_BAIT} bait + {CALIBRATION_BENIGN} benign generated pictures",
            "screen_band": [SCREEN_BAND, round(1 - SCREEN_BAND, 6)],
            "rescored_in": rescore_precision(flags),
            "layers_in_float": []}


def thresholds_of(spec: ModelSpec) -> dict[str, list[float]]:
    """Every threshold a score of the main network is compared with: the spec's own, and the
    face stage's gate (a flip there changes whether faces and age are looked at)."""
    out: dict[str, list[float]] = {}
    for label, t in spec.thresholds.items():
        if label in spec.labels:
            out.setdefault(label, []).append(t)
    if spec.faces is not None:
        out.setdefault(spec.faces.when, []).append(spec.faces.threshold)
    return out


def gated_columns(spec: ModelSpec) -> list[int]:
    """The output columns the gate compares (and int8's screen watches): the reported labels
    and every label with a threshold."""
    cols = [spec.labels.index(lab) for lab in spec.reported_labels]
    for label in thresholds_of(spec):
        if spec.labels.index(label) not in cols:
            cols.append(spec.labels.index(label))
    return cols


def gate(spec: ModelSpec, precision: str, reference: np.ndarray, candidate: np.ndarray,
         names: Sequence[str], max_delta: float = MAX_DELTA) -> Verdict:
    """Compare a precision's outputs with fp32's on the validation set.

    `reference` and `candidate` are the network's outputs ([pictures, labels], the spec's
    activation applied), row for row the pictures `names`.
    """
    if reference.shape != candidate.shape:
        return Verdict(precision, False, reason=f"output shape {candidate.shape} is not fp32's "
                                                f"{reference.shape}")
    if not np.all(np.isfinite(candidate)):
        return Verdict(precision, False, float("inf"), pictures=len(names),
                       reason="outputs that are not finite numbers")
    cols = gated_columns(spec)
    delta = float(np.abs(candidate[:, cols] - reference[:, cols]).max()) if len(names) else 0.0
    flips = []
    for label, ts in thresholds_of(spec).items():
        j = spec.labels.index(label)
        for t in ts:
            moved = np.nonzero((reference[:, j] >= t) != (candidate[:, j] >= t))[0]
            flips += [f"{names[i]}: {label} {reference[i, j]:.4f} -> {candidate[i, j]:.4f} "
                      f"(threshold {t})" for i in moved]
    reasons = []
    if delta > max_delta:
        reasons.append(f"max |score difference| {delta:.4f} > {max_delta}")
    if flips:
        reasons.append(f"{len(flips)} picture(s) on the other side of a threshold")
    return Verdict(precision, not reasons, delta, flips, len(names), reason="; ".join(reasons))


def screen_logit_limit(band: float = SCREEN_BAND, max_delta: float = MAX_DELTA) -> float:
    """The largest logit change int8 alone may make for its screen to be sound: a picture int8
    scores under `band` then scores at most band * e^limit = max_delta in fp32."""
    return float(np.log(max_delta / band))


def screen_check(spec: ModelSpec, reference: np.ndarray, alone: np.ndarray,
                 band: float = SCREEN_BAND, max_delta: float = MAX_DELTA) -> tuple[float, str]:
    """(int8 alone's largest logit change on a watched column, why it is not a sound screen or
    ""). Scores are clipped to the band first: beyond its edges int8's score is kept, and the
    gate holds those to max_delta directly. A broken quantization that sends every picture to
    re-scoring passes the gate on the re-scored outputs; this refuses it."""
    if reference.shape != alone.shape or not np.all(np.isfinite(alone)):
        return float("inf"), "int8 alone gives outputs of another shape or not finite numbers"
    cols = gated_columns(spec)

    def logit(p: np.ndarray) -> np.ndarray:
        p = np.clip(p[:, cols].astype(np.float64), band, 1 - band)
        return np.log(p / (1 - p))

    change = float(np.abs(logit(alone) - logit(reference)).max()) if len(alone) else 0.0
    limit = screen_logit_limit(band, max_delta)
    if change > limit:
        return change, (f"int8 alone changes a score's logit by up to {change:.2f} > {limit:.2f}: "
                        "not a sound screen")
    return change, ""


# --- the pictures: validation (the gate) and calibration (int8) ---------------------------

VALIDATION_BAIT = 12          # two of each bait layout
VALIDATION_BENIGN = 36
CALIBRATION_BAIT = 12
CALIBRATION_BENIGN = 20
BENIGN_SIZES = ((640, 480), (480, 640), (800, 600), (1024, 768))


def _jpeg(img, quality: int):
    from PIL import Image
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    buf.seek(0)
    out = Image.open(buf)
    out.load()
    return out


def bait_inputs(spec: ModelSpec, seed: int, n: int) -> tuple[list[str], list[np.ndarray]]:
    """(names, model inputs) of `n` bait pictures from `seed` on, saved as JPEG at the quality
    triage/synth/bait.py checked them at."""
    from models.preprocess import preprocess
    from triage.synth.bait import JPEG_QUALITY, make_bait_picture
    return ([f"bait-{seed + i}" for i in range(n)],
            [preprocess(spec, _jpeg(make_bait_picture(seed + i), JPEG_QUALITY)) for i in range(n)])


def pictures(spec: ModelSpec, part: str) -> tuple[list[str], np.ndarray]:
    """(names, uint8 model inputs) of the validation or calibration set, made here from seeds.

    Bait (triage/synth/bait.py, JPEG quality 90 as checked there) and benign landscapes, abstracts
    and camera frames (triage/synth/pictures.py, JPEG quality 88 as the fleet writes them).
    The two parts use different seeds, so the gate never sees a calibration picture.
    """
    from models.preprocess import preprocess
    from triage.synth.pictures import JPEG_QUALITY, benign_picture, camera_frame

    if part == "validation":
        seeds, n_bait, n_benign = 0, VALIDATION_BAIT, VALIDATION_BENIGN
    elif part == "calibration":
        seeds, n_bait, n_benign = 1000, CALIBRATION_BAIT, CALIBRATION_BENIGN
    else:
        raise ValueError(part)
    names, arrays = bait_inputs(spec, seeds, n_bait)
    for i in range(n_benign):
        w, h = BENIGN_SIZES[i % len(BENIGN_SIZES)]
        make = camera_frame if i % 3 == 2 else benign_picture
        names.append(f"{make.__name__}-{seeds + i}")
        arrays.append(preprocess(spec, _jpeg(make(seeds + i, f"gate-{part}", w, h), JPEG_QUALITY)))
    return names, np.stack(arrays)


# --- the cache: $TRIAGE_HOME/cache/models/KEY/ ---------------------------------------------

def cache_root() -> Path:
    from triage.home import triage_home
    return triage_home() / "cache" / "models"


def cache_key(spec: ModelSpec, flags: Iterable[str], torch_version: str) -> str:
    """What a built artefact depends on: the weights (sha256), how pictures reach them (the
    spec's input section), torch's version, every CPU flag, and this module's recipe."""
    flags = frozenset(flags)
    parts = {
        "model_sha256": spec.sha256, "format": spec.format, "arch": spec.arch,
        "input": [spec.input_size, spec.resize, list(spec.mean), list(spec.std), spec.colour,
                  spec.jpeg_reencode], "labels": list(spec.labels), "activation": spec.activation,
        "torch": torch_version, "cpu_flags": sorted(flags), "recipe": RECIPE,
        "int8": int8_recipe(flags),
    }
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]
    return f"{spec.name}-{digest}"


def cache_dir(spec: ModelSpec, flags: Iterable[str], torch_version: str) -> Path:
    return cache_root() / cache_key(spec, flags, torch_version)


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename: two actors building at once never leave a
    half-written artefact for a third to load."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Optional[dict]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None            # absent, or damaged: built again
    return value if isinstance(value, dict) else None


def write_json(path: Path, value: dict) -> None:
    write_atomic(path, json.dumps(value, indent=1, sort_keys=True).encode())


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
