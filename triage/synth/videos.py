"""Synthetic videos: generated pictures shown as scenes, encoded with PyAV at synth time.

Each scene is one picture held for a few seconds with a slow brightness drift and fresh noise
in every frame, so frames differ as a real video's do while every frame of a scene stays near
its picture in PDQ.
Containers and codecs are those phones and the web use: H.264 in MP4, MJPEG in AVI (old
cameras), VP9 in WEBM. PyAV's wheels bundle FFmpeg's encoders, so no `ffmpeg` binary is needed
(bench/video.py uses Debian's `ffmpeg` for its baseline only).

Alert stand-ins in videos are the project's synthetic alert pictures and model bait
(triage/synth/pictures.py, bait.py): never real material.
"""
from __future__ import annotations

import io
import os
import tempfile
from typing import Iterable, Iterator, Optional

import numpy as np
from PIL import Image

# kind -> (container format, encoder, pixel format, file extension)
KINDS = {
    "h264": ("mp4", "libx264", "yuv420p", "mp4"),
    "mjpeg": ("avi", "mjpeg", "yuvj420p", "avi"),
    "vp9": ("webm", "libvpx-vp9", "yuv420p", "webm"),
}


def scenes(pictures: Iterable[Image.Image], seconds: Iterable[float], size: tuple[int, int],
           fps: int, seed: int = 0) -> Iterator[np.ndarray]:
    """RGB frames: each picture fitted to `size` and held `seconds`, with a slow brightness
    drift and fresh sensor-like noise in every frame, so no two frames are the same."""
    rng = np.random.default_rng(seed)
    w, h = size
    for img, secs in zip(pictures, seconds):
        base = np.asarray(img.convert("RGB").resize((w, h), Image.Resampling.BILINEAR),
                          dtype=np.int16)
        n = max(1, round(secs * fps))
        for k in range(n):
            drift = int(round(6 * k / n)) - 3
            noise = rng.integers(-3, 4, (h, w, 1), dtype=np.int16)
            yield np.clip(base + drift + noise, 0, 255).astype(np.uint8)


def encode(frames: Iterable[np.ndarray], size: tuple[int, int], fps: int, kind: str = "h264",
           gop: Optional[int] = None, quality: str = "", faststart: bool = False) -> bytes:
    """A video file's bytes. `gop`: frames between keyframes (default one second's worth);
    `quality`: the encoder's own (crf for H.264/VP9, q for MJPEG); `faststart`: MP4 index
    first, so a copy cut short still says how long the video was."""
    import av

    fmt, codec, pix, _ = KINDS[kind]
    opts = {"movflags": "+faststart"} if faststart and fmt == "mp4" else {}
    if opts:
        # moving the index to the front rereads the file by name: a temporary file, not memory
        with tempfile.TemporaryDirectory(prefix="triage-synth-") as tmp:
            path = os.path.join(tmp, "video." + fmt)
            _encode(av, path, fmt, codec, pix, opts, frames, size, fps, kind, gop, quality)
            with open(path, "rb") as f:
                return f.read()
    buf = io.BytesIO()
    _encode(av, buf, fmt, codec, pix, opts, frames, size, fps, kind, gop, quality)
    return buf.getvalue()


def _encode(av, target, fmt, codec, pix, opts, frames, size, fps, kind, gop, quality) -> None:
    with av.open(target, mode="w", format=fmt, options=opts) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = pix
        eopts = {"g": str(gop or fps)}
        if kind == "h264":
            eopts.update(preset="veryfast", crf=quality or "23", tune="stillimage")
        elif kind == "vp9":
            eopts.update(crf=quality or "32", deadline="realtime", **{"cpu-used": "8"})
            stream.bit_rate = 0
        elif kind == "mjpeg":
            eopts.update(q=quality or "4")
        stream.options = eopts
        for arr in frames:
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def truncate(data: bytes, share: float) -> bytes:
    """The first `share` of a video's bytes: a copy cut short (a partial download, a carved
    fragment)."""
    return data[:max(1, int(len(data) * share))]
