"""The model's precision: chosen from the CPU's flags, held to the accuracy gate against fp32,
falling back (and saying why) when a precision fails, cached across processes, recorded with
the scan's run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from models import precision as P
from models.registry import resolve
from models.testing import make_toy_torchscript
from triage.errors import ModelError

ROOT = Path(__file__).resolve().parents[1]
ZEN4 = frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"})
SAPPHIRE_RAPIDS = frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile",
                             "amx_int8", "amx_bf16"})
CASCADE_LAKE = frozenset({"avx2", "avx512f", "avx512_vnni"})
ALDER_LAKE = frozenset({"avx2", "avx_vnni"})
HASWELL = frozenset({"avx", "avx2", "fma"})
ARM = frozenset({"fp", "asimd", "aes", "sha2"})


# --- the table ------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, order", [
    (SAPPHIRE_RAPIDS, ["int8", "bf16", "fp32"]),
    (ZEN4, ["int8", "bf16", "fp32"]),
    (CASCADE_LAKE, ["int8", "fp32"]),
    (ALDER_LAKE, ["int8", "fp32"]),
    (HASWELL, ["fp32"]),
    (ARM, ["fp32"]),
    (frozenset(), ["fp32"]),
])
def test_auto_tries_what_the_cpu_flags_allow(flags, order):
    assert P.candidates("auto", "cpu", flags) == order


def test_a_named_precision_comes_first_then_the_next_ones():
    assert P.candidates("int8", "cpu", ZEN4) == ["int8", "bf16", "fp32"]
    assert P.candidates("bf16", "cpu", ZEN4) == ["bf16", "fp32"]
    assert P.candidates("int8", "cpu", HASWELL) == ["int8", "fp32"]     # asked for: tried anyway
    assert P.candidates("fp32", "cpu", SAPPHIRE_RAPIDS) == ["fp32"]
    assert P.candidates("auto", "cuda", ZEN4) == ["bf16", "fp32"]
    with pytest.raises(ModelError, match="one of auto, fp32, bf16, int8"):
        P.candidates("fp16", "cpu", ZEN4)


def test_auto_takes_the_most_exact_precision_within_the_margin_of_the_fastest():
    # the int8 screen faster than bf16 on the pictures it is timed on, as here: bf16
    assert P.auto_order(["int8", "bf16", "fp32"], {"int8": 150, "bf16": 112, "fp32": 45}) == \
        ["bf16", "int8", "fp32"]
    # clearly faster (over AUTO_MARGIN): int8
    assert P.auto_order(["int8", "bf16", "fp32"], {"int8": 200, "bf16": 112, "fp32": 45}) == \
        ["int8", "bf16", "fp32"]
    # fp32 within the margin of bf16 (a GPU, or a CPU emulating bf16): fp32
    assert P.auto_order(["bf16", "fp32"], {"bf16": 50, "fp32": 45})[0] == "fp32"
    assert P.auto_order(["int8", "fp32"], {"int8": 80, "fp32": 45})[0] == "int8"
    assert P.auto_order(["fp32"], {}) == ["fp32"] and P.auto_order([], {}) == []


def test_cpu_flags_are_read_from_cpuinfo():
    text = "processor\t: 0\nmodel name\t: X\nflags\t\t: fpu avx2 avx512_bf16 avx512_vnni\n"
    assert P.cpu_flags(text) == {"fpu", "avx2", "avx512_bf16", "avx512_vnni"}
    assert P.cpu_flags("Features\t: fp asimd\n") == {"fp", "asimd"}
    assert P.cpu_kind(P.cpu_flags(text))[0].startswith("AVX-512 BF16")


# --- the gate on its own ---------------------------------------------------------------------

def _outputs(explicit):
    e = np.asarray(explicit, np.float32)
    return np.stack([1 - e, e], axis=1)


def test_gate_passes_small_differences_and_names_what_fails():
    spec = resolve("default")         # explicit >= 0.8; faces and age from explicit >= 0.3
    names = ["a", "b", "c", "d"]
    ref = _outputs([0.02, 0.29, 0.50, 0.90])
    ok = P.gate(spec, "bf16", ref, _outputs([0.025, 0.285, 0.505, 0.895]), names)
    assert ok.passed and ok.max_delta == pytest.approx(0.005, abs=1e-6) and not ok.flips

    too_far = P.gate(spec, "int8", ref, _outputs([0.02, 0.27, 0.53, 0.90]), names)
    assert not too_far.passed and too_far.max_delta == pytest.approx(0.03, abs=1e-6)
    assert "0.0300 > 0.01" in too_far.reason

    # within 0.01, but two pictures cross a threshold: the face stage's and the spec's
    flipped = P.gate(spec, "int8", _outputs([0.02, 0.298, 0.5, 0.802]),
                     _outputs([0.02, 0.301, 0.5, 0.797]), names)
    assert not flipped.passed and flipped.max_delta < 0.01
    assert "2 picture(s) on the other side of a threshold" in flipped.reason
    assert sorted(flipped.flips) == ["b: explicit 0.2980 -> 0.3010 (threshold 0.3)",
                                     "d: explicit 0.8020 -> 0.7970 (threshold 0.8)"]

    broken = P.gate(spec, "int8", ref, _outputs([0.02, np.nan, 0.5, 0.9]), names)
    assert not broken.passed and "not finite" in broken.reason


def test_the_screen_check_bounds_what_int8_keeps():
    spec = resolve("default")
    limit = P.screen_logit_limit()
    assert P.SCREEN_BAND * np.exp(limit) == pytest.approx(P.MAX_DELTA)
    ref = _outputs([0.001, 0.004, 0.3, 0.9])
    # close in logits: sound; below the band both ends clip, so 0.001 -> 0.004 counts nothing
    logit, why = P.screen_check(spec, ref, _outputs([0.004, 0.0045, 0.33, 0.91]))
    assert not why and 0 < logit < limit
    assert P.screen_check(spec, ref, ref.copy()) == (0.0, "")
    # a picture int8 would keep (0.004) whose fp32 score is 0.012: over the bound, refused
    logit, why = P.screen_check(spec, _outputs([0.012, 0.004, 0.3, 0.9]),
                                _outputs([0.004, 0.004, 0.3, 0.9]))
    assert logit > limit and "not a sound screen" in why
    # 0.9 -> 0.98 is a logit change of 1.7: int8 that far off is no screen, though re-scored
    logit, why = P.screen_check(spec, ref, _outputs([0.001, 0.004, 0.3, 0.98]))
    assert logit > limit and why
    logit, why = P.screen_check(spec, ref, _outputs([0.001, np.nan, 0.3, 0.9]))
    assert logit == float("inf") and "not finite" in why


def test_the_screen_re_scores_only_pictures_inside_its_band():
    import torch

    from models.engine import Screen

    class Fixed(torch.nn.Module):        # the network's outputs are the input's first pixel
        def forward(self, x):
            e = x[:, 0, 0, 0]
            return torch.stack([1 - e, e], dim=1)

    class Exact(torch.nn.Module):        # a different answer, to see where it is used
        def forward(self, x):
            return torch.full((len(x), 2), 0.5, dtype=x.dtype)

    x = torch.zeros((5, 3, 4, 4))
    x[:, 0, 0, 0] = torch.tensor([0.001, 0.005, 0.5, 0.995, 0.999])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)    # TorchScript, as in the engine
        scripted = torch.jit.script(Screen(Fixed(), Exact(), [1], 0.005, "none", True))
    for screen in (Screen(Fixed(), Exact(), [1], 0.005, "none", True), scripted):
        out = screen(x)
        assert out.dtype == torch.float32
        assert out[:, 1].tolist() == pytest.approx([0.001, 0.5, 0.5, 0.5, 0.999])
        assert screen.rescored(x).tolist() == [False, True, True, True, False]
        assert screen.alone(x)[:, 1].tolist() == pytest.approx([0.001, 0.005, 0.5, 0.995, 0.999])


def test_validation_and_calibration_sets_are_fixed_and_apart():
    spec = resolve("open_nsfw")
    names, val = P.pictures(spec, "validation")
    again = P.pictures(spec, "validation")[1]
    cal_names, cal = P.pictures(spec, "calibration")
    assert val.shape == (P.VALIDATION_BAIT + P.VALIDATION_BENIGN, 224, 224, 3) and val.dtype == np.uint8
    assert np.array_equal(val, again)                       # the same pictures every time
    assert sum(n.startswith("bait-") for n in names) == P.VALIDATION_BAIT
    assert not set(names) & set(cal_names)                  # the gate never sees calibration
    assert len(cal) == P.CALIBRATION_BAIT + P.CALIBRATION_BENIGN


# --- the real network: int8, bf16 and the fallback -------------------------------------------

needs_x86 = pytest.mark.skipif(
    "x86" not in __import__("torch").backends.quantized.supported_engines,
    reason="int8 quantization needs an x86 CPU (hardware)")


@pytest.fixture(scope="module")
def nsfw_reference():
    from models.engine import Engine
    spec = resolve("open_nsfw")
    names, inputs = P.pictures(spec, "validation")
    fp32 = Engine(spec, "cpu", 2, "fp32")
    return spec, names, inputs, fp32.raw(inputs)


@needs_x86
def test_a_deliberately_broken_quantization_is_refused(nsfw_reference):
    """int8 calibrated on black pictures only: every real picture's activations clip."""
    from models.engine import Engine
    spec, names, inputs, ref = nsfw_reference
    black = np.zeros((8, 224, 224, 3), np.uint8)
    broken = Engine(spec, "cpu", 2, "int8", calibration=black, screen_band=None)
    assert broken.precision == "int8" and broken.alone(inputs) is None    # int8 alone
    verdict = P.gate(spec, "int8", ref, broken.raw(inputs), names)
    assert not verdict.passed
    assert verdict.max_delta > 0.1 and verdict.flips        # bait falls under 0.8
    assert any(f.startswith("bait-") for f in verdict.flips)
    # the same network calibrated as shipped comes far closer (how close decides the gate)
    proper = Engine(spec, "cpu", 2, "int8", screen_band=None)
    assert P.gate(spec, "int8", ref, proper.raw(inputs), names).max_delta < verdict.max_delta / 3

    # screened, the broken int8 sends every picture to re-scoring, so its outputs are bf16's;
    # the screen check is what refuses it
    screened = Engine(spec, "cpu", 2, "int8", calibration=black, rescore="bf16")
    assert screened.rescored(inputs).all()
    logit, why = P.screen_check(spec, ref, screened.alone(inputs))
    assert logit > 2 * P.screen_logit_limit() and "not a sound screen" in why


@needs_x86
def test_int8_as_a_screen_passes_the_gate_and_records_its_recipe(nsfw_reference, monkeypatch,
                                                                  tmp_path):
    """int8 alone moves open_nsfw's scores by ~0.04 (over MAX_DELTA); with the pictures inside
    the screen's band re-scored in bf16 it passes, and the run says how."""
    from models import engine
    spec, names, inputs, ref = nsfw_reference
    monkeypatch.setenv("TRIAGE_HOME", str(tmp_path))
    chosen, report = engine.select(spec, "cpu", 2, "int8", flags=ZEN4)
    assert chosen.precision == report["precision"] == "int8", report["reason"]
    [int8] = [t for t in report["tried"] if t["precision"] == "int8"]
    assert int8["passed"] and int8["max_delta"] <= P.MAX_DELTA and not int8["flips"]
    recipe = int8["recipe"]
    assert recipe["layers_in_float"] == [] and recipe["rescored_in"] == "bf16"
    assert recipe["screen_band"] == [P.SCREEN_BAND, 1 - P.SCREEN_BAND]
    alone = recipe["int8_alone"]
    assert alone["max_delta"] > int8["max_delta"]                  # the screen is what helps
    assert alone["max_logit_delta"] <= alone["max_logit_delta_allowed"] == pytest.approx(np.log(2), abs=1e-4)
    # every bait picture (0.86-0.96) is re-scored; most benign ones (near 0) keep int8's score
    mask = chosen.rescored(inputs)
    bait = np.array([n.startswith("bait-") for n in names])
    assert mask[bait].all() and mask[~bait].mean() < 0.5
    assert recipe["rescored"] == f"{int(mask.sum())} of {len(names)} validation pictures"
    # where int8 kept its own score, it is that score; elsewhere bf16's
    out, own = chosen.raw(inputs), chosen.alone(inputs)
    assert np.array_equal(out[~mask], own[~mask]) and not np.array_equal(out[mask], own[mask])
    # the pair is one cached artefact: the next start loads it, gates it again, and keeps it
    again, report2 = engine.select(spec, "cpu", 2, "int8", flags=ZEN4)
    [int8_again] = [t for t in report2["tried"] if t["precision"] == "int8"]
    assert int8_again["cached"] and int8_again["passed"] and again.precision == "int8"
    assert int8_again["recipe"] == recipe
    assert np.array_equal(again.rescored(inputs), mask)


def test_bf16_passes_the_gate_on_open_nsfw(nsfw_reference):
    from models.engine import Engine
    spec, names, inputs, ref = nsfw_reference
    bf16 = Engine(spec, "cpu", 2, "bf16")
    verdict = P.gate(spec, "bf16", ref, bf16.raw(inputs), names)
    assert bf16.precision == "bf16" and verdict.passed, verdict.reason
    # the frozen TorchScript network takes any batch size, not only the traced one
    assert np.abs(bf16.raw(inputs[:1]) - bf16.raw(inputs[:5])[:1]).max() < 1e-2


@needs_x86
def test_auto_falls_back_from_a_refused_int8_and_records_why(nsfw_reference, monkeypatch, tmp_path):
    from models import engine
    spec = nsfw_reference[0]
    monkeypatch.setenv("TRIAGE_HOME", str(tmp_path))
    monkeypatch.setattr(engine, "calibration_pictures",
                        lambda spec: np.zeros((8, 224, 224, 3), np.uint8))
    chosen, report = engine.select(spec, "cpu", 2, "auto", flags=ZEN4)
    assert chosen.precision == report["precision"] == "bf16"
    tried = {t["precision"]: t for t in report["tried"]}
    assert list(tried) == ["int8", "bf16", "fp32"]
    # screened, every picture went to bf16, so the outputs passed; int8 alone did not
    assert not tried["int8"]["passed"] and "not a sound screen" in tried["int8"]["reason"]
    assert tried["int8"]["recipe"]["int8_alone"]["max_delta"] > 0.1
    assert tried["int8"]["recipe"]["rescored"] == "48 of 48 validation pictures"
    assert tried["bf16"]["passed"] and tried["bf16"]["max_delta"] <= P.MAX_DELTA
    assert report["reason"].startswith("int8 refused: int8 alone changes a score's logit")
    assert report["cpu"].startswith("AVX-512 BF16") and report["validation_pictures"] == 48
    # nothing refused is kept as an artefact; what passed is
    cache = Path(report["cache"])
    assert not (cache / "int8.pt").exists() and (cache / "bf16.pt").is_file()
    assert json.loads((cache / "int8.json").read_text())["verdict"]["passed"] is False
    # bf16 and fp32, both built now, were timed again in turns: the run and the cache say so
    rate = json.loads((cache / "bf16.json").read_text())["verdict"]["rate"]
    assert rate == tried["bf16"]["rate"] == report["rates"]["bf16"] > 0
    assert tried["fp32"]["rate"] == report["rates"]["fp32"] > 0
    with np.load(cache / "reference.npz") as z:
        assert round(float(z["rate"]), 1) == report["rates"]["fp32"]

    # asked for by name: int8 first, then the next precision down
    chosen, report = engine.select(spec, "cpu", 2, "int8", flags=ZEN4)
    assert report["asked"] == "int8" and chosen.precision == "bf16"
    assert [t["cached"] for t in report["tried"][:2]] == [True, True]


def test_a_cpu_without_vnni_or_bf16_runs_fp32_and_says_so(monkeypatch, tmp_path):
    from models import engine
    monkeypatch.setenv("TRIAGE_HOME", str(tmp_path))
    chosen, report = engine.select(resolve("open_nsfw"), "cpu", 1, "auto", flags=HASWELL)
    assert chosen.precision == report["precision"] == "fp32"
    assert report["reason"] == "fp32: the only precision tried on AVX2 / AVX-512 without VNNI"
    assert not (tmp_path / "cache").exists()          # nothing to build, nothing cached


# --- the cache, across processes -------------------------------------------------------------

CHILD = """
import json, sys
from models.engine import select
from models.registry import resolve
engine, report = select(resolve(sys.argv[1]), "cpu", 1, "bf16", flags={"avx512_bf16", "avx512_vnni"})
print(json.dumps(report))
"""


def _child(spec: Path, home: Path) -> dict:
    env = dict(os.environ, TRIAGE_HOME=str(home), PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", CHILD, str(spec)], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_built_artefact_is_reused_by_the_next_process(tmp_path):
    spec = make_toy_torchscript(tmp_path / "model")
    home = tmp_path / "home"
    first = _child(spec, home)
    [bf16] = [t for t in first["tried"] if t["precision"] == "bf16"]
    assert first["precision"] == "bf16" and bf16["cached"] is False and bf16["artefact_sha256"]
    cache = Path(first["cache"])
    assert cache.parent == home / "cache" / "models"
    stamps = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    assert set(stamps) == {"reference.npz", "bf16.pt", "bf16.json"}

    second = _child(spec, home)
    [again] = [t for t in second["tried"] if t["precision"] == "bf16"]
    assert second["precision"] == "bf16" and again["cached"] is True
    assert again["artefact_sha256"] == bf16["artefact_sha256"] and again["passed"]
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == stamps   # nothing rebuilt

    # a changed artefact is not loaded: the run falls back and the next start builds it again
    (cache / "bf16.pt").write_bytes(b"not the artefact")
    third = _child(spec, home)
    assert third["precision"] == "fp32" and "cached artefact is missing or changed" in third["reason"]
    fourth = _child(spec, home)
    assert fourth["precision"] == "bf16" and fourth["tried"][0]["cached"] is False


def test_the_key_changes_with_torch_cpu_flags_and_weights():
    spec = resolve("open_nsfw")
    key = P.cache_key(spec, ZEN4, "2.13.0+cpu")
    assert key == P.cache_key(spec, set(ZEN4), "2.13.0+cpu")
    assert key != P.cache_key(spec, SAPPHIRE_RAPIDS, "2.13.0+cpu")
    assert key != P.cache_key(spec, ZEN4, "2.14.0+cpu")
    assert key != P.cache_key(replace(spec, sha256="0" * 64), ZEN4, "2.13.0+cpu")
    assert key != P.cache_key(replace(spec, input_size=192), ZEN4, "2.13.0+cpu")


def test_the_key_changes_with_the_int8_recipe(monkeypatch):
    """An artefact or verdict built by another int8 recipe is never taken for this one."""
    spec = resolve("open_nsfw")
    key = P.cache_key(spec, ZEN4, "2.13.0+cpu")
    monkeypatch.setattr(P, "SCREEN_BAND", 0.01)
    assert P.int8_recipe(ZEN4)["screen_band"] == [0.01, 0.99]
    assert P.cache_key(spec, ZEN4, "2.13.0+cpu") != key
    monkeypatch.undo()
    monkeypatch.setattr(P, "CALIBRATION_BENIGN", P.CALIBRATION_BENIGN + 1)
    assert P.cache_key(spec, ZEN4, "2.13.0+cpu") != key
    monkeypatch.undo()
    monkeypatch.setattr(P, "RECIPE", P.RECIPE + "x")
    assert P.cache_key(spec, ZEN4, "2.13.0+cpu") != key
    monkeypatch.undo()
    assert P.cache_key(spec, ZEN4, "2.13.0+cpu") == key
    # where the CPU has no native bf16, the screen re-scores in fp32 (and the key says so)
    assert P.int8_recipe(CASCADE_LAKE)["rescored_in"] == "fp32"
    assert P.int8_recipe(ZEN4)["rescored_in"] == "bf16"


def test_a_damaged_cache_is_built_again_not_trusted(tmp_path, monkeypatch):
    from models import engine
    monkeypatch.setenv("TRIAGE_HOME", str(tmp_path / "home"))
    spec = resolve(str(make_toy_torchscript(tmp_path / "model")))
    _, report = engine.select(spec, "cpu", 1, "bf16", flags=ZEN4)
    cache = Path(report["cache"])
    (cache / "bf16.json").write_text(json.dumps({"verdict": {"passed": True, "max_delta": "x"},
                                                 "artefact": "../../elsewhere.pt"}))
    (cache / "reference.npz").write_bytes(b"not numpy")
    chosen, again = engine.select(spec, "cpu", 1, "bf16", flags=ZEN4)
    assert chosen.precision == "bf16" and again["tried"][0]["cached"] is False
    assert json.loads((cache / "bf16.json").read_text())["artefact"] == "bf16.pt"
    with np.load(cache / "reference.npz") as z:
        assert z["inputs"].shape == (48, 32, 32, 3)
