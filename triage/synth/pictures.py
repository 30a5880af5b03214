"""Procedural pictures for the synthetic fleet: benign photos, camera frames, alert stand-ins
and their near-duplicates (the skin-toned "model bait" comes from triage/synth/bait.py). Everything
is drawn from a seed with numpy and Pillow, so the same seed gives byte-identical files.
Nothing here depicts people; the alert stand-ins are coloured shapes labelled
"ALERT STAND-IN n".
"""
from __future__ import annotations

import hashlib
import io
import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from triage.features import pictures as _features
from triage.filetype import HEAD_BYTES, sniff

PDQ_MATCH = 31          # ThreatExchange's confident-match distance
JPEG_QUALITY = 88


def rng_for(*parts: object) -> np.random.Generator:
    """A generator whose stream depends only on `parts`: stable across runs and Python versions."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "big"))


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _colour(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(lo, hi, 3))


# ---------------------------------------------------------------- drawing

def landscape(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """Sky gradient, a sun, two mountain ridges and grass noise: looks like a holiday snap."""
    y = np.linspace(0.0, 1.0, h)[:, None, None]
    top = np.array(_colour(rng, 40, 140), float)
    bottom = np.array(_colour(rng, 150, 255), float)
    sky = (top * (1 - y) + bottom * y) * np.ones((1, w, 1))
    img = Image.fromarray(sky.astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    r = int(rng.integers(h // 16, h // 7))
    cx, cy = int(rng.integers(r, w - r)), int(rng.integers(r, h // 3))
    d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=_colour(rng, 200, 256))
    for layer, base in enumerate((0.45, 0.6)):
        xs = np.linspace(0, w, 12)
        ys = h * (base + rng.uniform(-0.12, 0.12, xs.size))
        poly = [(0, h)] + [(float(a), float(b)) for a, b in zip(xs, ys)] + [(w, h)]
        d.polygon(poly, fill=_colour(rng, 20 + 30 * layer, 110 + 30 * layer))
    arr = np.asarray(img).astype(np.int16)
    noise = rng.integers(-12, 13, (h, w, 1), dtype=np.int16)
    arr[int(h * 0.7):] += noise[int(h * 0.7):]
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def abstract(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """Diagonal gradient with random rectangles, ellipses and lines: screenshots, art, memes."""
    gx = np.linspace(0, 1, w)[None, :, None]
    gy = np.linspace(0, 1, h)[:, None, None]
    a, b = np.array(_colour(rng), float), np.array(_colour(rng), float)
    t = (gx + gy) / 2
    img = Image.fromarray((a * (1 - t) + b * t).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 12))):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(8, w // 2)), y0 + int(rng.integers(8, h // 2))
        kind = int(rng.integers(0, 3))
        if kind == 0:
            d.rectangle((x0, y0, x1, y1), fill=_colour(rng))
        elif kind == 1:
            d.ellipse((x0, y0, x1, y1), fill=_colour(rng), outline=_colour(rng))
        else:
            d.line((x0, y0, x1, y1), fill=_colour(rng), width=int(rng.integers(1, 8)))
    return img


def benign_picture(seed: int, name: str, w: int, h: int) -> Image.Image:
    rng = rng_for(seed, "benign", name)
    return landscape(rng, w, h) if rng.random() < 0.5 else abstract(rng, w, h)


def alert_picture(seed: int, index: int, w: int = 480, h: int = 360) -> Image.Image:
    """A distinctive stand-in: bold random polygons on a two-tone field plus its label.

    High-contrast structure gives PDQ quality near 100, so near-duplicates stay matchable and
    unrelated pictures land far away (about 128 bits on average).
    """
    rng = rng_for(seed, "alert", index)
    img = Image.new("RGB", (w, h), _colour(rng, 0, 90))
    d = ImageDraw.Draw(img)
    split = int(rng.integers(w // 4, 3 * w // 4))
    d.rectangle((split, 0, w, h), fill=_colour(rng, 120, 256))
    for _ in range(7):
        pts = [(int(rng.integers(0, w)), int(rng.integers(0, h))) for _ in range(int(rng.integers(3, 6)))]
        d.polygon(pts, fill=_colour(rng), outline=(0, 0, 0))
    label = f"ALERT STAND-IN {index}"
    d.rectangle((8, h - 44, 16 + 13 * len(label), h - 8), fill=(255, 255, 255))
    d.text((12, h - 40), label, fill=(200, 0, 0), font=_font(24))
    return img


# ---------------------------------------------------------------- encoding

@dataclass(frozen=True)
class Camera:
    make: str
    model: str
    lat: float
    lon: float


CAMERAS = (
    Camera("Canon", "Canon EOS 200D", 51.5072, -0.1276),
    Camera("Apple", "iPhone 12", 53.4808, -2.2426),
    Camera("samsung", "SM-G991B", 52.4862, -1.8904),
    Camera("NIKON CORPORATION", "NIKON D3500", 55.9533, -3.1883),
    Camera("Google", "Pixel 7", 51.4545, -2.5879),
)


def _dms(value: float) -> tuple[float, float, float]:
    value = abs(value)
    deg = int(value)
    minutes = int((value - deg) * 60)
    seconds = round((value - deg - minutes / 60) * 3600, 2)
    return (float(deg), float(minutes), seconds)


def camera_exif(cam: Camera, when: str, unique: str = "") -> Image.Exif:
    """EXIF as a phone or camera writes it: make, model, DateTimeOriginal, GPS."""
    exif = Image.Exif()
    exif[0x010F] = cam.make
    exif[0x0110] = cam.model
    exif[0x0132] = when
    sub = exif.get_ifd(0x8769)
    sub[0x9003] = when
    sub[0x9004] = when
    if unique:
        sub[0xA420] = unique          # ImageUniqueID: makes re-used frames hash differently
    gps = exif.get_ifd(0x8825)
    gps[0] = b"\x02\x02\x00\x00"
    gps[1] = "N" if cam.lat >= 0 else "S"
    gps[2] = _dms(cam.lat)
    gps[3] = "E" if cam.lon >= 0 else "W"
    gps[4] = _dms(cam.lon)
    return exif


def encode(img: Image.Image, fmt: str, quality: int = JPEG_QUALITY, exif: Image.Exif | None = None) -> bytes:
    """Deterministic bytes for `img` in `fmt` (jpeg, png, gif, webp)."""
    buf = io.BytesIO()
    fmt = fmt.lower()
    if fmt in ("jpg", "jpeg"):
        kw = {"quality": quality}
        if exif is not None:
            kw["exif"] = exif
        img.convert("RGB").save(buf, "JPEG", **kw)
    elif fmt == "png":
        img.save(buf, "PNG", optimize=False)
    elif fmt == "gif":
        img.convert("P", palette=Image.Palette.ADAPTIVE, colors=128).save(buf, "GIF")
    elif fmt == "webp":
        img.convert("RGB").save(buf, "WEBP", quality=quality, method=4)
    else:
        raise ValueError(f"unknown picture format {fmt!r}")
    return buf.getvalue()


def restamp_jpeg(data: bytes, tag: bytes) -> bytes:
    """A copy of a JPEG with a different COM segment right after SOI: a new file (new MD5/SHA-1)
    with the same pixels, far cheaper than re-encoding a 12 MP frame."""
    assert data[:2] == b"\xff\xd8"
    body = b"synth:" + tag
    seg = b"\xff\xfe" + (len(body) + 2).to_bytes(2, "big") + body
    return data[:2] + seg + data[2:]


# ---------------------------------------------------------------- perceptual hashes

def decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        im.seek(0)
        return im.convert("RGB")


def pdq(img: Image.Image) -> tuple[str, int]:
    """PDQ (64 hex, reference order) and quality: the scanner's own function."""
    return _features.pdq(img)


def phash(img: Image.Image) -> str:
    """64-bit DCT pHash, 16 hex: the scanner's own function (imagehash's recipe)."""
    return _features.phash(img)


def hamming(a: str, b: str) -> int:
    return _features.hamming_hex(a, b)


def perceptual(data: bytes) -> tuple[str, int, str]:
    """(pdq, quality, phash) of picture bytes exactly as `triage scan` computes them (same
    draft decode and reduction), so the distances in truth.json are the ones the scan sees."""
    res = _features.analyse_picture(data, sniff(data[:HEAD_BYTES]), thumbnails=False)
    if res.error:
        raise ValueError(f"synthetic picture did not decode: {res.error}")
    return res.pdq, res.pdq_quality, res.phash


# ---------------------------------------------------------------- near-duplicates

NEAR_TRANSFORMS = ("resize", "recompress", "crop", "to_png", "to_webp")
NEAR_LIMIT = 24         # keep a margin under PDQ_MATCH for decoder differences between tools


def near_duplicate(original: Image.Image, transform: str, level: int = 0) -> tuple[bytes, str]:
    """Bytes of a near-duplicate of `original` and the extension they want. Higher `level`
    means a milder change (used when the first try lands too far away)."""
    w, h = original.size
    crop_div = (50, 80, 120, 200, 400)[min(level, 4)]
    if transform == "resize":
        f = (0.6, 0.75, 0.9)[min(level, 2)]
        return encode(original.resize((int(w * f), int(h * f)), Image.Resampling.BICUBIC), "jpeg", 85), "jpg"
    if transform == "recompress":
        return encode(original, "jpeg", (45, 60, 75)[min(level, 2)]), "jpg"
    if transform == "crop":
        dx, dy = max(1, w // crop_div), max(1, h // crop_div)
        return encode(original.crop((dx, dy, w - dx, h - dy)), "jpeg", 80), "jpg"
    if transform == "to_png":
        return encode(original.resize((w * 3 // 4, h * 3 // 4), Image.Resampling.LANCZOS), "png"), "png"
    if transform == "to_webp":
        return encode(original, "webp", 70), "webp"
    raise ValueError(f"unknown transform {transform!r}")


def near_duplicate_within(original: Image.Image, original_pdq: str, transform: str,
                          limit: int = NEAR_LIMIT) -> tuple[bytes, str, int]:
    """The strongest level of `transform` whose PDQ stays within `limit` bits of the original:
    (bytes, extension, distance). Raises ValueError when even the mildest is too far."""
    best = None
    for level in range(5):
        data, ext = near_duplicate(original, transform, level)
        dist = hamming(original_pdq, perceptual(data)[0])
        if dist <= limit:
            return data, ext, dist
        best = dist if best is None else min(best, dist)
    raise ValueError(f"{transform}: no level within {limit} bits (closest {best})")


def crc32_hex(data: bytes) -> str:
    return f"{zlib.crc32(data) & 0xFFFFFFFF:08X}"


def camera_frame(seed: int, name: str, w: int, h: int) -> Image.Image:
    """A landscape with sensor-like noise everywhere, so a 12 MP JPEG is camera-sized (MBs)."""
    rng = rng_for(seed, "frame", name)
    img = landscape(rng, w, h)
    arr = np.asarray(img).astype(np.int16)
    arr += rng.integers(-7, 8, (h, w, 1), dtype=np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def splice_exif(jpeg: bytes, exif: Image.Exif) -> bytes:
    """`jpeg` with an APP1 EXIF segment inserted after SOI: camera metadata without a re-encode."""
    body = exif.tobytes()
    if not body.startswith(b"Exif\x00\x00"):
        body = b"Exif\x00\x00" + body
    return jpeg[:2] + b"\xff\xe1" + (len(body) + 2).to_bytes(2, "big") + body + jpeg[2:]
