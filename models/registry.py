"""Which models exist: the bundled ones, and the ones a user added to $TRIAGE_HOME/models.

`resolve(name)` is what `triage scan --model NAME` calls. "default" is the bundled open_nsfw +
apparent-age cascade; "none" (no model stage) is the caller's business. A NAME may also be the
path of a spec file. No torch here.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from models.spec import RESERVED_NAMES, ModelSpec, load_spec, sha256_file, verify
from triage.errors import ModelError
from triage.home import triage_home

BUILTIN_DIR = Path(__file__).resolve().parent / "specs"
BUILTINS = {"default": "default.toml", "open_nsfw": "open_nsfw.toml", "dlib_age": "age.toml"}


def models_home(models_dir: Path | None = None) -> Path:
    return Path(models_dir) if models_dir is not None else triage_home() / "models"


def resolve(name: str, models_dir: Path | None = None) -> ModelSpec:
    """The spec for a model name (or spec path). Does not hash the weights: call verify()."""
    if name in BUILTINS:
        return load_spec(BUILTIN_DIR / BUILTINS[name])
    user = models_home(models_dir) / name / "model.toml"
    if user.is_file():
        return load_spec(user)
    if name.endswith(".toml") and Path(name).is_file():
        return load_spec(Path(name))
    known = ", ".join(n for n, _ in list_models(models_dir))
    raise ModelError(f"unknown model {name!r}; known: {known} (add one with `triage models add SPEC`)")


def list_models(models_dir: Path | None = None) -> list[tuple[str, Optional[ModelSpec]]]:
    """(name, spec) for every model, bundled first; spec is None where the spec is unreadable."""
    out: list[tuple[str, Optional[ModelSpec]]] = []
    for name, file in BUILTINS.items():
        out.append((name, load_spec(BUILTIN_DIR / file)))
    home = models_home(models_dir)
    if home.is_dir():
        for d in sorted(p for p in home.iterdir() if (p / "model.toml").is_file()):
            try:
                out.append((d.name, load_spec(d / "model.toml")))
            except ModelError:
                out.append((d.name, None))
    return out


@dataclass(frozen=True)
class Added:
    name: str
    path: Path
    sha256: str


def add_model(spec_path: Path, models_dir: Path | None = None, *, force: bool = False,
              check_load: bool = True) -> Added:
    """Register a spec: check its sha256, optionally load it once, copy spec + weights in.

    The copy under $TRIAGE_HOME/models/NAME/ is what scans use, so moving or editing the
    original later changes nothing.
    """
    spec = load_spec(Path(spec_path))
    if spec.name in RESERVED_NAMES or spec.name in BUILTINS:
        raise ModelError(f"model name {spec.name!r} is taken by a bundled model; rename it in the spec")
    if spec.faces is not None:
        raise ModelError(f"{spec_path}: a [faces] stage is only supported in bundled specs for now")
    verify(spec)
    if check_load:
        from models.runner import ModelRunner
        # loads and runs one blank picture; the precision is chosen when a scan first runs it
        ModelRunner(spec, device="cpu", num_threads=1, precision="fp32")
    dest = models_home(models_dir) / spec.name
    if dest.exists() and not force:
        raise ModelError(f"model {spec.name!r} is already added ({dest}); use --force to replace it")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weights_name = "weights" + "".join(Path(spec.weights).suffixes[-1:])
    shutil.copyfile(spec.weights, tmp / weights_name)
    if sha256_file(tmp / weights_name) != spec.sha256:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelError(f"sha256 mismatch for {spec.name} after copying; the weights changed while reading")
    text = Path(spec_path).read_text(encoding="utf-8")
    (tmp / "model.toml").write_text(_rewrite_weights(text, weights_name), encoding="utf-8")
    load_spec(tmp / "model.toml")  # the rewritten spec must still parse
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    return Added(spec.name, dest, spec.sha256)


def _rewrite_weights(text: str, weights_name: str) -> str:
    """The spec text with its top-level `weights = ...` pointing at the copied file."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("["):
            break
        if stripped.split("=")[0].strip() == "weights":
            lines[i] = f'weights = "{weights_name}"'
            return "\n".join(lines) + "\n"
    raise ModelError("model spec has no top-level weights = ... line")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    message: str


def verify_models(names: list[str] | None = None, models_dir: Path | None = None) -> list[Check]:
    """sha256 of every file of the named models (all when names is empty)."""
    checks = []
    if names:
        targets = [(n, None) for n in names]
    else:
        targets = list_models(models_dir)
    for name, spec in targets:
        try:
            spec = spec or resolve(name, models_dir)
            verify(spec)
            checks.append(Check(name, True, f"ok {spec.sha256}"))
        except ModelError as exc:
            checks.append(Check(name, False, str(exc)))
    return checks


def for_scan(model: str, precision: str = "auto", first_stage: str = "on") -> Optional[dict]:
    """What a scan records and ships to its workers for `--model`: the model's provenance
    (name, version, sha256, input size, thresholds, the precision asked for, whether the spec's
    first stage rules pictures out) after checking its weights' sha256; None for --model none."""
    if model in (None, "", "none"):
        return None
    from models.precision import CHOICES
    from models.spec import describe
    if precision not in CHOICES:
        raise ModelError(f"model precision must be one of {', '.join(CHOICES)}, not {precision!r}")
    spec = resolve(model)
    verify(spec)          # ModelError (a TriageError) on a wrong sha256, before any scan work
    info = describe(spec)
    info["spec"] = model
    info["precision"] = precision
    if first_stage not in ("on", "off"):
        raise ModelError(f"model first stage must be on or off, not {first_stage!r}")
    if first_stage == "off":      # else describe's {"skin_share": ...}, when the spec has one
        info["first_stage"] = "off"
    return info
