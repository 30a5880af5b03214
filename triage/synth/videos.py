"""Synthetic videos: generated pictures shown as scenes, encoded with PyAV at synth time.

Each scene is one picture held for a few seconds with a slow brightness drift and fresh noise
in every frame, so frames differ as a real video's do while every frame of a scene stays near
its picture in PDQ.
Containers and codecs are those phones and the web use: H.264 in MP4, MJPEG in AVI (old
cameras), VP9 in WEBM, encoded by Debian's `ffmpeg` at synth time only (a scan never runs it:
it decodes with PyAV).

Alert stand-ins in videos are the project's synthetic alert pictures and model bait
(triage/synth/pictures.py, bait.py): never real material.
"""
from __future__ import annotations

import os
import subprocess
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
    """A video file's bytes, encoded by Debian's `ffmpeg` from raw RGB frames on its stdin.
    `gop`: frames between keyframes (default one second's worth); `quality`: the encoder's own
    (crf for H.264/VP9, q for MJPEG); `faststart`: MP4 index first, so a copy cut short still
    says how long the video was. One thread and bit-exact flags: the same seed gives the same
    bytes (an in-process PyAV encode did not, run to run)."""
    fmt, codec, pix, ext = KINDS[kind]
    w, h = size
    args = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps), "-i", "pipe:0",
            "-threads", "1", "-fflags", "+bitexact", "-flags:v", "+bitexact",
            "-c:v", codec, "-pix_fmt", pix, "-g", str(gop or fps)]
    if kind == "h264":
        args += ["-preset", "veryfast", "-crf", quality or "23"]
    elif kind == "vp9":
        args += ["-crf", quality or "32", "-b:v", "0", "-deadline", "good", "-cpu-used", "8",
                 "-row-mt", "0"]
    elif kind == "mjpeg":
        args += ["-q:v", quality or "4"]
    if faststart and fmt == "mp4":
        args += ["-movflags", "+faststart"]
    with tempfile.TemporaryDirectory(prefix="triage-synth-") as tmp:
        path = os.path.join(tmp, "video." + ext)
        proc = subprocess.Popen(args + ["-f", fmt, path], stdin=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        try:
            for arr in frames:
                proc.stdin.write(np.ascontiguousarray(arr, np.uint8).tobytes())
        finally:
            proc.stdin.close()
        err = proc.stderr.read().decode("utf-8", "replace")
        if proc.wait() != 0:
            raise RuntimeError(f"ffmpeg could not encode a synthetic {kind} video: {err[-300:]}")
        with open(path, "rb") as f:
            return f.read()


def truncate(data: bytes, share: float) -> bytes:
    """The first `share` of a video's bytes: a copy cut short (a partial download, a carved
    fragment)."""
    return data[:max(1, int(len(data) * share))]
