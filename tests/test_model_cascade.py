"""The cascade's first stage (models/preprocess.first_stage_reason, models/cascade.py): it rules
colourful pictures with no skin-coloured pixel out before the network, never a bait picture and
never a grey one, and it can be switched off. No torch: the network is not needed to say what
the first stage sends on (bench/models.py measures it against the network's scores)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from models import cascade
from models.preprocess import first_stage_reason, skin_share
from models.registry import resolve
from models.runner import prepare
from models.spec import load_spec
from models.testing import SPEC_TEMPLATE
from triage.errors import ModelError


def _photo(rgb, seed=0, size=(320, 240), noise=30) -> Image.Image:
    """Photograph-like noise (hundreds of colours, so not a graphic) around one colour."""
    rng = np.random.default_rng(seed)
    px = np.array(rgb, np.int16) + rng.integers(-noise, noise + 1, (size[1], size[0], 3), dtype=np.int16)
    return Image.fromarray(np.clip(px, 0, 255).astype(np.uint8))


def test_every_bait_picture_is_sent_on():
    """Recall on the bait set: the bait pictures are what the full network puts over the
    threshold (triage/synth/bait.py: 120 of 120 scored 0.82-0.97); the first stage must send
    every one of them on, so SUSPECTED_NEW loses nothing."""
    spec = resolve("default")
    assert spec.first_stage_skin == pytest.approx(0.01)     # on for the bundled model
    names, inputs = cascade.pictures(spec, bait=6, benign=0, seed=7)   # all six layouts
    assert len(names) == 6
    for name, x in zip(names, inputs):
        assert first_stage_reason(x, spec.first_stage_skin) is None, name
        assert skin_share(x) > 0.9


def test_a_colourful_picture_without_skin_is_ruled_out_with_its_reason():
    spec = resolve("default")
    why = prepare(spec, _photo((40, 110, 210)))          # blue and photographic: not a graphic
    assert why == "ruled out by first stage (skin share 0.0%)"
    green = prepare(spec, _photo((60, 170, 70), seed=1))
    assert isinstance(green, str) and green.startswith("ruled out by first stage")
    # what the network would see counts: skin-toned in the centre crop is sent on
    px = np.asarray(_photo((40, 110, 210), size=(400, 400))).copy()
    px[150:250, 150:250] = np.asarray(_photo((224, 172, 140), size=(100, 100)))
    assert isinstance(prepare(spec, Image.fromarray(px)), np.ndarray)


@pytest.mark.parametrize("picture", [
    _photo((40, 110, 210)).convert("L").convert("RGB"),      # black and white: no colour to judge
    _photo((10, 14, 30), noise=8),                            # too dark to tell a colour
    _photo((224, 172, 140)),                                  # skin-toned
    _photo((150, 40, 30)),                                    # skin under red light
])
def test_pictures_that_could_show_skin_are_sent_on(picture):
    assert isinstance(prepare(resolve("default"), picture), np.ndarray)


def test_the_first_stage_can_be_switched_off_and_is_off_without_a_spec_section(tmp_path):
    spec = resolve("default")
    blue = _photo((40, 110, 210))
    assert isinstance(prepare(spec, blue, first_stage=False), np.ndarray)
    path = tmp_path / "toy.toml"
    path.write_text(SPEC_TEMPLATE.format(name="toy", weights="toy.pt", format="torchscript",
                                         sha256="0" * 64))
    toy = load_spec(path)
    assert toy.first_stage_skin == 0 and isinstance(prepare(toy, blue), np.ndarray)
    from models.registry import for_scan
    assert for_scan("default")["first_stage"] == {"skin_share": 0.01}       # recorded with the run
    assert for_scan("default", first_stage="off")["first_stage"] == "off"


@pytest.mark.parametrize("value", ["0.5", "1.0", "-0.1", "true", '"some"'])
def test_a_bad_first_stage_in_a_spec_is_refused(tmp_path, value):
    path = tmp_path / "toy.toml"
    path.write_text(SPEC_TEMPLATE.format(name="toy", weights="toy.pt", format="torchscript",
                                         sha256="0" * 64) + f"\n[first_stage]\nskin_share = {value}\n")
    if value == "0.5":
        assert load_spec(path).first_stage_skin == 0.5
        return
    with pytest.raises(ModelError, match="first_stage.skin_share"):
        load_spec(path)


def test_the_measure_reports_a_ruled_out_picture_the_network_would_have_caught():
    """The bar can fail: a skinless picture the network scored high counts as lost."""
    spec = resolve("default")
    blue = np.asarray(_photo((40, 110, 210), size=(224, 224)))
    skin = np.asarray(_photo((224, 172, 140), size=(224, 224)))
    names = ["bait-1", "bait-2", "benign_picture-3", "grey-4", "benign_picture-5"]
    inputs = np.stack([skin, blue, blue, skin, skin])
    f = cascade.measure(spec, names, inputs, np.array([0.95, 0.91, 0.02, 0.01, 0.4]))
    assert (f.bait, f.bait_over, f.bait_over_sent) == (2, 2, 1)
    assert f.recall == 0.5 and f.lost == [("bait-2", pytest.approx(0.91))]
    assert f.benign_ruled_out == 1 and f.benign_share == pytest.approx(1 / 3)
    assert f.by_kind == {"benign_picture": (1, 2), "grey": (0, 1)}
    assert not f.keeps_everything and f.rate > 0
    ok = cascade.measure(spec, names[2:], inputs[2:], np.array([0.02, 0.01, 0.4]))
    assert ok.keeps_everything and ok.recall == 1.0
