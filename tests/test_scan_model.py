"""The model stage inside a real scan: a toy TorchScript model plugged in through its spec file,
its scores reaching the case store, and the cascade's skips recorded with their reasons (the
toy's spec has the skin first stage, which rules the blue picture out). The same folder is
scanned with adaptive model calls and again with the first stage off and one model call per
decode batch (the default), to show what the switch changes and that the calls change nothing.

The bundled default model on the synthetic fleet is checked in test_rank_e2e.py, whose scan
runs with `--model default`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from PIL.PngImagePlugin import PngInfo

import ray

from models.spec import sha256_file  # noqa: E402
from models.testing import make_toy_torchscript  # noqa: E402
from triage.features import pdq  # noqa: E402
from triage.flags import NEAR_MATCH, SUSPECTED_NEW  # noqa: E402
from triage.store import CaseStore  # noqa: E402


def _noise(rng: np.random.Generator, red: int, blue: int, size=(160, 120)) -> Image.Image:
    """A photograph-like picture (hundreds of colours) with chosen mean red and blue."""
    h, w = size[1], size[0]
    px = np.empty((h, w, 3), dtype=np.int16)
    px[..., 0] = red
    px[..., 1] = 120
    px[..., 2] = blue
    px += rng.integers(-40, 41, size=(h, w, 3), dtype=np.int16)
    return Image.fromarray(np.clip(px, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def toy_scan(tmp_path_factory):
    from workers.runtime import quiet_environment

    quiet_environment()
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    root = tmp_path_factory.mktemp("toy_model")
    spec = make_toy_torchscript(root / "model")
    spec.write_text(spec.read_text() + "\n[first_stage]\nskin_share = 0.01\n")
    phone = root / "phone_export"
    (phone / "DCIM").mkdir(parents=True)
    rng = np.random.default_rng(5)
    red = _noise(rng, red=210, blue=40)
    red.save(phone / "DCIM" / "red.png")
    # the same pixels re-saved with a comment: new bytes, the same model input
    note = PngInfo()
    note.add_text("Comment", "sent again")
    red.save(phone / "DCIM" / "red_copy.png", pnginfo=note)
    _noise(rng, red=40, blue=210).save(phone / "DCIM" / "blue.png")     # no skin-coloured pixel
    _noise(rng, red=120, blue=120).convert("L").save(phone / "DCIM" / "grey.png")   # b/w: sent on
    # renamed: the content type, not the name, makes it a picture for the model
    _noise(rng, red=200, blue=60).save(phone / "DCIM" / "notes.dat", format="PNG")
    Image.new("RGB", (200, 200), (230, 30, 30)).save(phone / "flat_red.png")       # a graphic
    _noise(rng, red=220, blue=20, size=(40, 30)).save(phone / "tiny_red.png")     # an icon's size
    (phone / "readme.txt").write_text("not a picture\n")
    # red too, but a perceptual match of an alert item: NEAR_MATCH says more than the model
    near = _noise(rng, red=215, blue=35)
    near.save(phone / "DCIM" / "near_red.png")
    alert_pdq = root / "alert.pdq.txt"
    alert_pdq.write_text(f"{pdq(near)[0]},100,alert-near.png\n")
    runs = {}
    # decode batches of two files: small yields for the adaptive run to coalesce
    for name, extra, batching, reuse in (("case", [], "auto", "on"),
                                         ("case_off", ["--model-first-stage", "off"], "batch", "off")):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("TRIAGE_MODEL_BATCH", batching)
            mp.setenv("TRIAGE_MODEL_REUSE", reuse)
            result = CliRunner().invoke(__import__("cli").main,
                                        ["scan", "--case", str(root / name), "--json", "--mode",
                                         "full", "--batch-files", "2", "--hashset", str(alert_pdq),
                                         "--model", str(spec), *extra, str(phone)],
                                        catch_exceptions=False)
        assert result.exit_code == 0, result.output
        runs[name] = json.loads(result.stdout)
    yield root / "case", spec, runs["case"], (root / "case_off", runs["case_off"])
    ray.shutdown()


def _by_name(store: CaseStore) -> dict:
    return {rec.name: rec for rec, _feat in store.files()}


def test_toy_model_scores_reach_the_case_store(toy_scan):
    case, spec, summary, _off = toy_scan
    weights_sha = sha256_file(spec.with_suffix(".pt"))
    with CaseStore(case, create=False) as store:
        files = _by_name(store)
        scores = {s.key: s for s in store.scores()}
        run = store.runs()[-1]
    by_name = {f.name: scores.get(f.key) for f in files.values()}
    assert set(n for n, s in by_name.items() if s is not None) == {
        "red.png", "red_copy.png", "grey.png", "notes.dat", "near_red.png"}
    for s in scores.values():
        assert s.model == "toy_redness"
        assert s.model_sha256 == weights_sha
    assert by_name["red.png"].values["explicit"] > 0.95
    assert by_name["notes.dat"].values["explicit"] > 0.95
    assert 0.4 < by_name["grey.png"].values["explicit"] < 0.6
    assert by_name["near_red.png"].values["explicit"] > 0.95
    assert summary["devices"][0]["scored"] == 5
    assert weights_sha in json.dumps(run, default=str)      # the run's provenance names the weights


def test_toy_threshold_raises_suspected_new_for_red_pictures_only(toy_scan):
    case, _spec, _summary, _off = toy_scan
    with CaseStore(case, create=False) as store:
        names = {rec.key: rec.name for rec, _feat in store.files()}
        suspected = [f for _i, f in store.flags() if f.code == SUSPECTED_NEW]
        near = [f for _i, f in store.flags() if f.code == NEAR_MATCH]
    # near_red.png scores as red as the others, but is a near match, not new material
    assert [names[f.key] for f in near] == ["near_red.png"]
    assert sorted(names[f.key] for f in suspected) == ["notes.dat", "red.png", "red_copy.png"]
    for f in suspected:
        assert f.provenance["model"] == "toy_redness"
        assert f.provenance["scores"]["explicit"] >= 0.7


def test_cascade_skips_are_recorded_with_reasons(toy_scan):
    case, _spec, summary, _off = toy_scan
    expected = {"few colours": 1, "ruled out by first stage": 1, "too small": 1}
    with CaseStore(case, create=False) as store:
        device = summary["devices"][0]["device"]
        skipped = store.model_skips(device)
        names = {rec.key: rec.name for rec, _feat in store.files()}
    assert skipped == expected
    assert summary["devices"][0]["model_skipped"] == 3
    # each skip keeps its full reason: the first stage says what it measured
    assert _skip_reasons(case, names)["blue.png"] == "ruled out by first stage (skin share 0.0%)"
    out = CliRunner().invoke(__import__("cli").main, ["show", device, "--case", str(case), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["model"] == {"scored": 5, "skipped": expected}


def _skip_reasons(case: Path, names: dict) -> dict:
    import sqlite3
    with sqlite3.connect(case / "case.sqlite") as db:
        return {names[k]: why for k, why in db.execute("SELECT key, reason FROM model_skips")}


def _results(case: Path) -> dict:
    with CaseStore(case, create=False) as store:
        names = {rec.key: rec.name for rec, _feat in store.files()}
        return {"scores": {names[s.key]: s.values for s in store.scores()},
                "flags": sorted((f.code, names.get(f.key, "")) for _i, f in store.flags()),
                "skips": _skip_reasons(case, names), "run": store.runs()[-1]}


def test_the_first_stage_switched_off_scores_every_picture_and_changes_nothing_else(toy_scan):
    case, _spec, _summary, (case_off, _summary_off) = toy_scan
    on, off = _results(case), _results(case_off)
    assert on["run"]["model"]["first_stage"] == {"skin_share": 0.01}     # the run says which
    assert off["run"]["model"]["first_stage"] == "off"
    assert "blue.png" in off["scores"] and "blue.png" not in off["skips"]
    assert set(off["scores"]) == set(on["scores"]) | {"blue.png"}
    # what it ruled out scores far under the threshold: the first stage lost nothing here
    assert off["scores"]["blue.png"]["explicit"] < 0.05
    # adaptive calls, or one call per decode batch: the same scores and the same flags
    assert {n: off["scores"][n] for n in on["scores"]} == on["scores"]
    assert off["flags"] == on["flags"]


def test_the_run_records_how_pictures_were_cut_into_model_calls(toy_scan):
    _case, _spec, summary, (_case_off, summary_off) = toy_scan
    on, off = summary["model_runtime"]["batching"], summary_off["model_runtime"]["batching"]
    assert on["mode"] == "auto" and off["mode"] == "batch"
    assert (on["pictures"], off["pictures"]) == (5, 6)
    # one call per decode batch with a picture for the model; the adaptive run makes no more
    assert off["calls"] >= 3 and 1 <= on["calls"] <= off["calls"]
    assert on["measured"] and all(rate > 0 for sizes in on["measured"].values()
                                  for rate in sizes.values())


def test_a_picture_whose_model_input_was_scored_already_reuses_its_values(toy_scan):
    """red_copy.png has red.png's pixels in other bytes: with reuse on (the default) the actor
    answers it from its memo, once; with reuse off it goes through the network, which gives
    the very same values."""
    case, _spec, summary, (case_off, summary_off) = toy_scan
    on, off = _results(case), _results(case_off)
    assert on["scores"]["red_copy.png"] == on["scores"]["red.png"]
    assert off["scores"]["red_copy.png"] == on["scores"]["red_copy.png"]
    assert summary["model_runtime"]["batching"]["reuse"] == "on"
    assert summary["model_runtime"]["batching"]["reused"] == 1
    assert summary_off["model_runtime"]["batching"]["reuse"] == "off"
    assert summary_off["model_runtime"]["batching"]["reused"] == 0


def test_the_run_records_the_precision_chosen_and_why(toy_scan):
    case, _spec, summary, _off = toy_scan
    with CaseStore(case, create=False) as store:
        run = store.runs()[-1]
    assert run["model"]["precision"] == "auto"                    # what was asked for
    report = run["model"]["runtime"]["precision"]                 # what the actor chose
    assert report == summary["model_runtime"]["precision"]
    assert report["asked"] == "auto" and report["precision"] in ("fp32", "bf16", "int8")
    assert report["reason"] and report["cpu"]
    assert report["precision"] in [t["precision"] for t in report["tried"] if t["passed"]] \
        or report["tried"] == []
    # the toy is TorchScript, which torch's FX quantization cannot trace: int8 says so
    int8 = [t for t in report["tried"] if t["precision"] == "int8"]
    assert all(not t["passed"] and "cannot quantize" in t["reason"] for t in int8)


def test_an_unknown_precision_is_refused_before_any_work(tmp_path):
    out = CliRunner().invoke(__import__("cli").main,
                             ["scan", "--case", str(tmp_path / "c"), "--model", "default",
                              "--model-precision", "fp16", str(tmp_path)])
    assert out.exit_code == 2 and "'fp16' is not one of 'auto', 'fp32', 'bf16', 'int8'" in out.output
    assert not (tmp_path / "c").exists()
