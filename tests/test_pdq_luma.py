"""PDQ from a frame's luma (triage/features/_pdq.c, the video stage's per-frame hash): it must
give pdqhash's answer on the same luma, read a plane however it lies in memory (stride, limited
range), make the small grey picture pHash and the strip use, refuse what does not fit, and keep
the video stage's frames within a few bits of the hashes other systems compute from the full
RGB frame (ThreatExchange's vpdq-hash-video)."""
from __future__ import annotations

import io

import av
import numpy as np
import pdqhash
import pytest
from PIL import Image

from triage.features import pictures
from triage.features.pictures import hamming_hex, pdq_hex, pdq_luma, phash
from triage.features.video import _reformatter, frame_hashes
from triage.synth import bait
from triage.synth import pictures as pics
from triage.synth import videos as sv

# `make deps` builds the kernel (gcc is installed with it): a missing build fails here.
from triage.features import _pdq  # noqa: E402


def _reference(luma: np.ndarray) -> tuple[str, int]:
    """pdqhash on the luma as an RGB picture with R = G = B (its luma is the grey value)."""
    vector, quality = pdqhash.compute(np.ascontiguousarray(np.repeat(luma[:, :, None], 3, 2)))
    return pdq_hex(vector), int(quality)


def _pictures() -> list[np.ndarray]:
    rng = np.random.default_rng(64)
    out = []
    for k, (w, h) in enumerate([(1280, 720), (640, 480), (454, 256), (320, 240), (1920, 1080),
                                (257, 300), (1000, 200)]):
        out.append(np.asarray(pics.landscape(pics.rng_for(9, "l", k), w, h).convert("L")))
        out.append(np.asarray(pics.abstract(pics.rng_for(9, "a", k), w, h).convert("L")))
        out.append(np.asarray(pics.alert_picture(9, k, w, h).convert("L")))
    out.append(np.asarray(bait.make_bait_picture(3).convert("L")))
    for rows, cols in ((5, 5), (5, 200), (64, 64), (65, 63), (127, 129), (31, 700)):
        out.append(rng.integers(0, 256, (rows, cols), dtype=np.uint8))
    return out


def test_the_kernel_gives_pdqhashs_answer_on_the_same_luma():
    pics_ = _pictures()
    same = 0
    for luma in pics_:
        rows, cols = luma.shape
        want = _reference(luma)
        got, quality, _, _, _ = _pdq.luma_hashes(luma, rows, cols, cols, False, 0)
        # the filter summed in another order: a coefficient at the median may fall either way
        assert hamming_hex(got, want[0]) <= 2 and abs(quality - want[1]) <= 1, luma.shape
        same += (got, quality) == want
    assert same >= 0.9 * len(pics_)
    assert pictures._pdq_kernel() is _pdq             # the self-test on import passes


def test_a_padded_limited_range_plane_reads_as_its_full_range_luma():
    luma = np.asarray(pics.landscape(pics.rng_for(3, "p"), 640, 360).convert("L"))
    rows, cols = luma.shape
    # limited range as a decoder gives it (16-235), in lines of 704 bytes (stride > width)
    limited = np.round(16 + luma.astype(np.float64) * 219 / 255).astype(np.uint8)
    plane = np.full((rows, 704), 99, np.uint8)
    plane[:, :cols] = limited
    got, quality, _, _, _ = _pdq.luma_hashes(plane.tobytes(), rows, cols, 704, True, 0)
    want = _reference(luma)
    assert hamming_hex(got, want[0]) <= 4 and abs(quality - want[1]) <= 2
    # the padding is never read as picture
    plane[:, cols:] = 0
    assert _pdq.luma_hashes(plane.tobytes(), rows, cols, 704, True, 0)[:2] == (got, quality)
    # out-of-range values (below 16, above 235) are black and white, as in the frame's RGB
    spiky = limited.copy()
    spiky[::7, ::5] = np.where(spiky[::7, ::5] > 128, 255, 0)
    clipped = np.clip(spiky, 16, 235)
    assert (_pdq.luma_hashes(spiky, rows, cols, cols, True, 0)[:2]
            == _pdq.luma_hashes(clipped, rows, cols, cols, True, 0)[:2])


def test_the_small_grey_picture_is_the_block_average():
    rng = np.random.default_rng(5)
    luma = rng.integers(0, 256, (100, 130), dtype=np.uint8)
    _, _, small, srows, scols = _pdq.luma_hashes(luma, 100, 130, 130, False, 4)
    assert (srows, scols) == (25, 32) and len(small) == 25 * 32
    want = luma[:100, :128].astype(np.float64).reshape(25, 4, 32, 4).mean(axis=(1, 3))
    got = np.frombuffer(small, np.uint8).reshape(25, 32)
    assert np.abs(got - np.floor(want + 0.5)).max() <= 1
    # limited range: the average scaled to full range
    _, _, small_l, _, _ = _pdq.luma_hashes(np.full((8, 8), 235, np.uint8), 8, 8, 8, True, 2)
    assert set(small_l) == {255}
    assert _pdq.luma_hashes(luma, 100, 130, 130, False, 0)[2:] == (b"", 0, 0)


def test_odd_and_hostile_sizes_never_crash():
    tiny = np.zeros((4, 9), np.uint8)
    assert _pdq.luma_hashes(tiny, 4, 9, 9, False, 2)[:2] == ("0" * 64, 0)   # PDQ's own answer
    assert _pdq.luma_hashes(np.zeros((1, 1), np.uint8), 1, 1, 1, True, 1)[1] == 0
    for args in ((b"\0" * 99, 10, 10, 10), (b"\0" * 100, 10, 10, 9), (b"\0" * 100, 0, 10, 10),
                 (b"\0" * 100, 10, -1, 10), (b"", 1, 1, 1)):
        with pytest.raises(ValueError):
            _pdq.luma_hashes(*args, False, 0)
    with pytest.raises(ValueError):
        _pdq.luma_hashes(b"\0" * 100, 10, 10, 10, False, -1)
    with pytest.raises(TypeError):
        _pdq.luma_hashes("text", 1, 1, 1, False, 0)


def test_without_the_kernel_pdqhash_gives_the_same_answers(monkeypatch):
    luma = np.asarray(pics.alert_picture(4, 1, 480, 360).convert("L"))
    plane = np.round(16 + luma.astype(np.float64) * 219 / 255).astype(np.uint8)
    fast = pdq_luma(plane.tobytes(), 360, 480, 480, True, 3)
    monkeypatch.setenv("TRIAGE_PDQ_C", "0")
    pictures._pdq_kernel.cache_clear()
    try:
        assert pictures._pdq_kernel() is None
        slow = pdq_luma(plane.tobytes(), 360, 480, 480, True, 3)
    finally:
        monkeypatch.delenv("TRIAGE_PDQ_C")
        pictures._pdq_kernel.cache_clear()
    assert hamming_hex(fast[0], slow[0]) <= 2 and abs(fast[1] - slow[1]) <= 1
    assert fast[2].shape == slow[2].shape == (120, 160)
    assert np.abs(fast[2].astype(int) - slow[2]).max() <= 1


def _frames(kind: str, size=(640, 360), pix: str = "") -> list:
    imgs = [pics.alert_picture(21, 0, *size), pics.landscape(pics.rng_for(21, "f"), *size),
            bait.make_bait_picture(5).resize(size)]
    data = sv.encode(sv.scenes(imgs, [1.0] * 3, size, 5, seed=2), size, 5, kind)
    with av.open(io.BytesIO(data)) as c:
        out = list(c.decode(video=0))
    return [f.reformat(format=pix) for f in out] if pix else out


@pytest.mark.parametrize("kind,pix", [("h264", ""), ("mjpeg", ""), ("vp9", ""),
                                      ("h264", "yuv420p10le"), ("h264", "rgb24")])
def test_frames_hash_as_vpdq_hash_video_hashes_the_full_rgb_frame(kind, pix):
    """Each frame's PDQ against pdqhash on the full-size frame as RGB (swscale's default BT.601
    matrix, as vpdq-hash-video makes it): a few bits apart at most, quality on the same side of
    the matching floor; pHash against imagehash's on that RGB frame. Formats whose first plane is
    not 8-bit luma (10-bit, RGB) go through swscale's grey instead."""
    sws = _reformatter()
    frames = _frames(kind, pix=pix)
    assert len(frames) >= 12
    bits = []
    for frame in frames:
        full = frame.reformat(format="rgb24", src_colorspace="ITU601").to_ndarray()
        vector, quality = pdqhash.compute(np.ascontiguousarray(full))
        got, got_q, small = frame_hashes(frame, sws)
        bits.append(hamming_hex(got, pdq_hex(vector)))
        assert abs(got_q - int(quality)) <= 3 and (got_q >= 50) == (quality >= 50)
        assert min(small.shape) >= min(128, frame.height) and small.dtype == np.uint8
        assert hamming_hex(phash(Image.fromarray(small)), phash(Image.fromarray(full))) <= 6
    # the whole frame's luma, not a reduced copy: the reduced route was 10-24 bits away
    assert max(bits) <= 8 and sorted(bits)[len(bits) // 2] <= 4, bits
