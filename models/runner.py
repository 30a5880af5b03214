"""The model stage: the cascade rule, and a Ray-style callable that scores batches.

Importing this module does not import torch: `preprocess`, `prepare`, `should_skip`,
`graphic_reason` and `first_stage_reason` are for the CPU scan workers. `ModelRunner` loads torch when it is built. It knows nothing of
Ray; `workers/` wraps it in an actor pool (one runner per actor, batches of uint8 pictures
already at the model's input size).

Face detection for the age stage. A picture passes to the age stage when the main model's
gating label (default: `explicit`) reaches the spec's faces threshold. The faces are looked for
in `face_images[i]` when the caller gives one (a <= 640 px version of the picture, from
`models.preprocess.face_image`), else in the model input itself, upsampled once by the HOG
detector (faces must then be about a fifth of the picture's width to be found). The scan passes
larger images only for pictures it already knows pass, or accepts the smaller reach.
"""
from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

import numpy as np
from PIL import Image

from models.preprocess import (face_image, first_stage_reason, graphic_reason,  # noqa: F401
                               preprocess)
from models.spec import ModelSpec, verify
from triage.filetype import PICTURE_TYPES

MIN_SIDE = 64             # pictures smaller than this on either side are thumbnails or icons
ICON_TYPES = frozenset({"image/x-icon", "image/vnd.microsoft.icon", "image/svg+xml"})

# The labels the default cascade adds to the main model's.
FACES = "faces"
MINOR = "minor_likelihood"


def should_skip(features: Any, matches: Iterable[Any] = (),
                picture: Optional[Image.Image | np.ndarray] = None) -> str | None:
    """Why a picture need not go to the model, or None when it should.

    `features` is a triage.records.Features, `matches` its Match records. `picture` (the
    decoded picture, PIL or uint8 array, any size), when the caller has it, allows the
    icon/sprite test (few colours, transparency). Without it no picture is skipped as a graphic.
    """
    matches = list(matches)
    for m in matches:
        if m.kind == "exact" and m.role == "alert":
            return f"exact alert match ({m.set_name})"
    for m in matches:
        if m.kind == "exact" and m.role == "ignore":
            return f"known software ({m.set_name})"
    if features.error:
        return f"not decoded: {features.error}"
    if features.type in ICON_TYPES:
        return "icon"
    if not features.is_picture and features.type not in PICTURE_TYPES:
        return "not a picture"
    w, h = features.width, features.height
    if w and h and min(w, h) < MIN_SIDE:
        return f"too small ({w}x{h} px)"
    if picture is not None:
        return graphic_reason(picture)
    return None


def prepare(spec, img: Image.Image, first_stage: bool = True) -> np.ndarray | str:
    """The model input of a decoded picture, or why it skips the model (icon, sprite, flat
    graphic; with `first_stage`, the spec's first stage: no skin). Runs on the scan's CPU
    workers, where the decoded picture (alpha included) is."""
    why = graphic_reason(img)
    if why:
        return why
    pixels = preprocess(spec, img)
    if first_stage:
        # on what the network would see: the centre crop, after the reference resizing
        why = first_stage_reason(pixels, spec.first_stage_skin)
    return why or pixels


@dataclass(frozen=True)
class Provenance:
    """Everything needed to say which exact weights produced a score."""

    model: str
    version: str
    sha256: str
    age_model: str = ""
    age_sha256: str = ""
    landmarks_sha256: str = ""


class ModelRunner:
    """Scores uint8 batches with one spec's model (and its age cascade, if any).

    ModelRunner(spec, device="auto", num_threads=None, *, precision="auto"). device "auto" uses
    CUDA when torch sees it, else the CPU with `num_threads` intra-op threads (default: Ray's
    OMP_NUM_THREADS, else all CPUs this process may use). precision "auto" tries what the CPU's
    flags allow (int8, bf16) and keeps the fastest that passes the accuracy gate against fp32;
    `precision_report` says which and why (models/engine.select). The sha256 of every file is
    checked before anything is loaded.
    """

    def __init__(self, spec: ModelSpec, device: str = "auto", num_threads: int | None = None, *,
                 precision: str = "auto", compile: bool | None = None):
        verify(spec)
        from models.engine import Engine, select  # torch is loaded here, not at import

        self.spec = spec
        # the precision: from the CPU's flags (or as asked), held to the accuracy gate
        self.engine, self.precision_report = select(spec, device, num_threads, precision,
                                                    compile=compile)
        self.device = str(self.engine.device)
        self._age = None
        self._faces = None
        if spec.faces is not None:
            from models.faces import FaceFinder
            # The age network is tiny; it stays fp32 everywhere so its probabilities are exact.
            self._age = Engine(spec.faces.age, device, self.engine.threads or None, precision="fp32")
            self._faces = FaceFinder(spec.faces.landmarks)
        self._labels = list(spec.labels)
        self.network_seconds = 0.0          # of the last predict call
        self._keep = [self._labels.index(lab) for lab in spec.reported_labels]

    def set_threads(self, num_threads: int) -> None:
        """Intra-op threads from the next call on (a scan's model actor follows the cores its
        decode workers leave idle)."""
        from models.engine import set_threads
        self.engine.threads = set_threads(num_threads)

    # --- what the scan records with every score
    @property
    def input_size(self) -> int:
        return self.spec.input_size

    @property
    def model_name(self) -> str:
        return self.spec.name

    @property
    def model_sha256(self) -> str:
        return self.spec.sha256

    @property
    def labels(self) -> tuple[str, ...]:
        extra = (FACES, MINOR) if self.spec.faces is not None else ()
        return tuple(self.spec.reported_labels) + extra

    @property
    def provenance(self) -> Provenance:
        f = self.spec.faces
        return Provenance(self.spec.name, self.spec.version, self.spec.sha256,
                          f.age.name if f else "", f.age.sha256 if f else "",
                          f.landmarks_sha256 if f else "")

    def preprocess(self, img: Image.Image) -> np.ndarray:
        return preprocess(self.spec, img)

    def over_threshold(self, values: dict[str, Any]) -> list[str]:
        """The labels whose value reaches the spec's threshold for that label."""
        return [k for k, t in self.spec.thresholds.items()
                if values.get(k) is not None and values[k] >= t]

    # --- scoring
    def predict(self, batch: np.ndarray, face_images: Optional[Sequence[Optional[np.ndarray]]] = None
                ) -> list[dict[str, float | int | None]]:
        """One dict per picture: label -> value.

        For a cascade spec, `faces` is the number of faces found and `minor_likelihood` the
        highest P(age < minor_age) over them; both are None where the picture did not pass the
        gate (the face stage did not run), and `minor_likelihood` is None when no face was found.
        """
        t0 = time.perf_counter()
        probs = self.engine.raw(batch)
        # the main network alone (the face stage depends on what the pictures show): what the
        # scan's batch sizing learns from
        self.network_seconds = time.perf_counter() - t0
        results: list[dict[str, Any]] = [
            {self._labels[j]: float(row[j]) for j in self._keep} for row in probs
        ]
        if self.spec.faces is None:
            return results
        stage = self.spec.faces
        gate = self._labels.index(stage.when)
        chips: list[np.ndarray] = []
        owner: list[int] = []
        for i, row in enumerate(probs):
            results[i][FACES] = None
            results[i][MINOR] = None
            if row[gate] < stage.threshold:
                continue
            image = face_images[i] if face_images is not None and face_images[i] is not None else batch[i]
            found = self._faces.chips(np.asarray(image))
            results[i][FACES] = len(found)
            chips += found
            owner += [i] * len(found)
        if chips:
            ages = self._age.raw(np.stack(chips))
            minor = ages[:, :stage.minor_age].sum(axis=1)
            for i, p in zip(owner, minor):
                prev = results[i][MINOR]
                results[i][MINOR] = float(p) if prev is None else max(prev, float(p))
        return results

    def predict_pictures(self, pictures: Sequence[Image.Image]) -> list[dict[str, Any]]:
        """Convenience for small jobs: preprocess PIL pictures here, faces on <= 640 px copies."""
        batch = np.stack([self.preprocess(p) for p in pictures]) if pictures else \
            np.zeros((0, self.input_size, self.input_size, 3), np.uint8)
        faces = [face_image(p) for p in pictures] if self.spec.faces is not None else None
        return self.predict(batch, faces)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Ray Data style: {"pixels": uint8 [N,H,W,3], optional "face_pixels", other columns}
        -> the other columns passed through, plus one float column per label (NaN for None)."""
        pixels = batch["pixels"]
        faces = batch.get("face_pixels")
        rows = self.predict(pixels, list(faces) if faces is not None else None)
        out = {k: v for k, v in batch.items() if k not in ("pixels", "face_pixels")}
        for label in self.labels:
            out[label] = np.array([np.nan if r.get(label) is None else r[label] for r in rows],
                                  dtype=np.float64)
        return out


def input_digest(picture: np.ndarray) -> bytes:
    """sha256 of one model input, its shape and type included: what `InputMemo` keys on."""
    picture = np.ascontiguousarray(picture)
    h = hashlib.sha256(f"{picture.shape}{picture.dtype.str}".encode())
    h.update(memoryview(picture).cast("B"))
    return h.digest()


class InputMemo:
    """The values of model inputs already scored, by the sha256 of the input's bytes.

    A picture whose input to the model is, byte for byte, one already scored (a copy re-saved
    with other metadata, the same photo kept by two apps, a static run of video frames) gets
    that picture's values without running the network again. The cascade (the network, the
    face and age stages) is a function of that input alone, so nothing is lost; the scan
    records how many pictures were answered this way. At most `limit` inputs are kept, the
    least recently used going first.
    """

    def __init__(self, limit: int = 100_000):
        self.limit = max(1, limit)
        self._values: OrderedDict[bytes, dict] = OrderedDict()

    def predict(self, runner: "ModelRunner", batch: np.ndarray) -> tuple[list[dict], int]:
        """(runner.predict's values for every picture of `batch`, how many went through the
        network). `runner.network_seconds` is then the network's time for those alone."""
        batch = np.asarray(batch)
        digests = [input_digest(p) for p in batch]
        got: dict[bytes, dict] = {}
        todo: dict[bytes, int] = {}       # first index of each input not seen before
        for i, d in enumerate(digests):
            if d in got or d in todo:
                continue
            if d in self._values:
                self._values.move_to_end(d)
                got[d] = self._values[d]
            else:
                todo[d] = i
        if todo:
            fresh = runner.predict(batch[list(todo.values())])
            for d, values in zip(todo, fresh):
                got[d] = values
                self._values[d] = values
            while len(self._values) > self.limit:
                self._values.popitem(last=False)
        else:
            runner.network_seconds = 0.0
        return [dict(got[d]) for d in digests], len(todo)
