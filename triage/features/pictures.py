"""Picture features: a small decode, PDQ with quality, pHash, EXIF summary, review thumbnail.

A 12 MP camera JPEG is never fully decoded: `Image.draft` asks libjpeg for DCT scaling (1/2,
1/4, 1/8), which gives a ~500 px image in about a third of the time of a full decode. PDQ
and pHash are computed from that small image; both downscale far further themselves (64x64
and 32x32), so nothing they use is lost. Formats without DCT scaling (PNG, WEBP, HEIC, TIFF)
decode fully once and are box-reduced before anything else touches them.

Perceptual hashes are written the way their reference tools write them, so they can be
compared with hashes from other tools:
- PDQ: 64 lower-case hex, the C++ reference's `Hash256::format` order (word 15 first).
- pHash: 16 hex, imagehash's `phash` (32x32 greyscale, DCT-II, top-left 8x8 > median,
  row-major, first bit most significant).
"""
from __future__ import annotations

import io
import os
import re
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Optional

import numpy as np
import pdqhash
from PIL import Image, ImageOps

from triage.records import Exif

try:  # phones store HEIC; registered once per process, when this module is imported
    import pillow_heif
    pillow_heif.register_heif_opener()
    # one decode thread: a scan runs one worker per core already, so libheif's default of
    # four threads would only contend with the neighbouring workers
    pillow_heif.options.DECODE_THREADS = 1
    HEIF_AVAILABLE = True
except ImportError:  # pragma: no cover - pillow-heif is a pinned dependency
    HEIF_AVAILABLE = False

WORK_SIZE = 256           # draft target: the smallest side stays >= this (a 12 MP JPEG -> 500x375)
WORK_MAX = 1024           # a banner-shaped picture is reduced until its longer side is < 4 x this
THUMB_QUALITY = 70        # review thumbnails: small JPEGs, a few KiB each
PDQ_QUALITY_THRESHOLD = 50   # PdqSignal.QUALITY_THRESHOLD: hashes below are unreliable
PDQ_MAX = 512             # longest side PDQ is computed on (a drafted 12 MP JPEG is 500x375)

# content type (triage.filetype) -> the Pillow formats allowed to open it. Naming the format
# stops Pillow probing every plugin on hostile bytes.
PIL_FORMATS: dict[str, tuple[str, ...]] = {
    "image/jpeg": ("JPEG", "MPO"),
    "image/png": ("PNG",),
    "image/gif": ("GIF",),
    "image/webp": ("WEBP",),
    "image/bmp": ("BMP",),
    "image/tiff": ("TIFF",),
    "image/heic": ("HEIF",),
    "image/heif": ("HEIF",),
}

# EXIF tags (TIFF/EXIF 2.3 numbering)
_MAKE, _MODEL, _ORIENTATION = 0x010F, 0x0110, 0x0112
_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825
_DATETIME_ORIGINAL = 0x9003
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+>")
_GPS_LAT_REF, _GPS_LAT, _GPS_LON_REF, _GPS_LON = 1, 2, 3, 4

# pHash DCT-II basis, only the 8 low-frequency rows are needed: D = C X C^T, C is 8x32
_N = 32
_DCT8 = np.cos(np.pi * np.arange(8)[:, None] * (2 * np.arange(_N)[None, :] + 1) / (2 * _N))


# The limit below is ours (FeatureOptions.max_image_pixels); Pillow's warning for pictures between
# its limit and twice it would only be noise. A process-wide filter: catch_warnings is not
# thread-safe.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
# Damaged metadata in seized pictures is common and Pillow warns about each kind ("Corrupt EXIF
# data", "Tag data larger than file"); in a scan that is log noise, not news.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")


class PictureRefused(Exception):
    """A picture deliberately not decoded (decompression bomb); the message says why."""

    def __init__(self, message: str, size: tuple[int, int] = (0, 0)):
        super().__init__(message)
        self.size = size


@dataclass(frozen=True)
class PictureResult:
    width: int = 0
    height: int = 0
    pdq: str = ""
    pdq_quality: int = 0
    phash: str = ""
    exif: Optional[Exif] = None
    thumbnail: bytes = b""
    error: str = ""              # decode error ("" when decoded)
    refused: str = ""            # a deliberate refusal, e.g. a decompression bomb
    model_input: Optional[np.ndarray | str] = None   # str: why the picture skips the model


# --- perceptual hashes -------------------------------------------------------------------------

def phash(img: Image.Image) -> str:
    """64-bit DCT pHash as 16 hex characters (imagehash-compatible)."""
    grey = img.convert("L").resize((_N, _N), Image.Resampling.LANCZOS)
    pixels = np.asarray(grey, dtype=np.float64)
    low = _DCT8 @ pixels @ _DCT8.T                       # the top-left 8x8 of the 2-D DCT
    bits = (low > np.median(low)).ravel()
    return np.packbits(bits).tobytes().hex()


def pdq(img: Image.Image) -> tuple[str, int]:
    """PDQ hash (64 hex, reference order) and its quality (0-100) of a picture.

    A picture longer than PDQ_MAX px is box-downsampled to fit first, as PDQ hashers commonly
    do: PDQ reduces to 64x64 anyway, and its cost grows with the pixels it is given (a
    1000-px PNG costs 10 ms, a full 12 MP picture 0.4-1.2 s).
    """
    if max(img.size) > PDQ_MAX:
        scale = PDQ_MAX / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.Resampling.BOX)
    rgb = img if img.mode == "RGB" else img.convert("RGB")
    arr = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))
    vector, quality = pdqhash.compute(arr)
    return pdq_hex(vector), int(quality)


def pdq_luma(plane, rows: int, cols: int, stride: int, limited: bool = False,
             k: int = 0) -> tuple[str, int, np.ndarray]:
    """PDQ hash (64 hex, reference order) and quality of an 8-bit luma plane (`rows` lines of
    `cols` bytes, `stride` bytes apart: a decoded frame's Y plane as it lies in memory), and
    the plane averaged over k x k blocks as a small grey picture (empty when k is 0).

    `limited`: the plane is limited range (16-235, most video), scaled to 0-255 first, so the
    luma is what PDQ would take from the frame as RGB. Computed by triage/features/_pdq.c where
    it is built and agrees with pdqhash on a self-test (the filter evaluated only where PDQ keeps
    it: a 720p frame in about 0.3 ms, pdqhash on it takes 21), else by pdqhash itself.
    """
    kernel = _pdq_kernel()
    if kernel is not None:
        hex_, quality, small, srows, scols = kernel.luma_hashes(plane, rows, cols, stride,
                                                                limited, k)
        return hex_, quality, np.frombuffer(small, np.uint8).reshape(srows, scols)
    luma = np.frombuffer(plane, np.uint8, count=(rows - 1) * stride + cols)
    luma = np.lib.stride_tricks.as_strided(luma, (rows, cols), (stride, 1))
    if limited:
        luma = _LIMITED[luma]
    vector, quality = pdqhash.compute(np.ascontiguousarray(np.repeat(luma[:, :, None], 3, 2)))
    small = np.zeros((0, 0), np.uint8)
    if k and rows // k and cols // k:
        sr, sc = rows // k, cols // k
        blocks = luma[:sr * k, :sc * k].astype(np.float32).reshape(sr, k, sc, k)
        small = (blocks.mean(axis=(1, 3)) + 0.5).astype(np.uint8)
    return pdq_hex(vector), int(quality), small


# limited-range luma (16-235) to full range, as the decoder's RGB would carry it
_LIMITED = np.clip(np.round((np.arange(256) - 16) * 255 / 219), 0, 255).astype(np.uint8)


@lru_cache(maxsize=1)
def _pdq_kernel():
    """triage.features._pdq when it is built and agrees with pdqhash on a self-test (at most
    2 bits and 1 point of quality apart on pictures of several sizes and kinds: the kernel
    sums in another order, so a coefficient right at the median can fall the other way);
    None otherwise, and always with TRIAGE_PDQ_C=0."""
    if os.environ.get("TRIAGE_PDQ_C", "1") == "0":
        return None
    try:
        from triage.features import _pdq
    except ImportError:
        return None
    for grey in _self_test_pictures():
        rows, cols = grey.shape
        vector, quality = pdqhash.compute(np.ascontiguousarray(np.repeat(grey[:, :, None], 3, 2)))
        got, got_q, _, _, _ = _pdq.luma_hashes(grey, rows, cols, cols, False, 0)
        if hamming_hex(got, pdq_hex(vector)) > 2 or abs(got_q - int(quality)) > 1:
            return None
    return _pdq


def _self_test_pictures() -> list:
    """Grey pictures with structure at several scales, sizes round PDQ's window steps."""
    rng = np.random.default_rng(2017)
    out = []
    # small: every worker runs it once, and pdqhash on a 720p picture alone takes 15 ms
    for rows, cols in ((5, 5), (64, 64), (63, 129), (130, 255), (180, 320)):
        y, x = np.mgrid[0:rows, 0:cols]
        wave = np.sin(x / (cols / 7 + 1)) * np.cos(y / (rows / 5 + 1)) * 90 + 128
        blocks = rng.integers(0, 60, (rows // 4 + 1, cols // 4 + 1)).repeat(4, 0).repeat(4, 1)
        out.append(np.clip(wave + blocks[:rows, :cols] - 30, 0, 255).astype(np.uint8))
    return out


def pdq_hex(vector) -> str:
    """pdqhash's 256-element bit vector -> the reference hex string.

    pdqhash returns bit 255 first (its `hash_to_vector` reverses bit k = word k//16, bit k%16),
    and the C++ reference prints words 15..0 as %04x, so reading the vector most significant
    bit first is exactly the reference string (as ThreatExchange's pdq_hasher does).
    """
    return np.packbits(np.asarray(vector, dtype=np.uint8)).tobytes().hex()


def hamming_hex(a: str, b: str) -> int:
    """Bits that differ between two hex hashes of the same length."""
    if len(a) != len(b):
        raise ValueError(f"hashes of different lengths ({len(a)} and {len(b)} hex characters)")
    return (int(a, 16) ^ int(b, 16)).bit_count()


# --- decoding --------------------------------------------------------------------------------

def _open(data: bytes, content_type: str, max_image_pixels: int) -> Image.Image:
    """Open (header only) and refuse pictures whose pixel count is a decompression bomb."""
    formats = PIL_FORMATS.get(content_type)
    try:
        img = Image.open(io.BytesIO(data), formats=formats)
    except Image.DecompressionBombError as exc:   # over twice Pillow's own MAX_IMAGE_PIXELS
        raise PictureRefused(f"decompression bomb refused: {exc}") from None
    w, h = img.size
    if max_image_pixels and w * h > max_image_pixels:
        err = Image.DecompressionBombError(
            f"{w}x{h} = {w * h} pixels, over the {max_image_pixels}-pixel limit")
        raise PictureRefused(f"decompression bomb refused: {err}", (w, h))
    return img


def _small(img: Image.Image, min_side: int) -> Image.Image:
    """Decode to a small RGB picture whose shorter side stays >= min_side where possible."""
    if img.format in ("JPEG", "MPO"):
        img.draft("RGB", (min_side, min_side))    # DCT scaling: decode at 1/2, 1/4 or 1/8
    img.load()                                    # GIF/TIFF/WEBP: the first frame
    shorter, longer = min(img.size), max(img.size)
    # Every format to the working scale a JPEG draft gives: integer-reduced while the shorter
    # side stays >= min_side. Decoding PNG/GIF/WEBP cannot be scaled, but everything after it
    # (PDQ, pHash, thumbnail, model input) costs by the pixel. A banner-shaped picture
    # (160x30000) is bounded too.
    factor = max(shorter // min_side, -(-longer // (4 * WORK_MAX)))
    if factor > 1:
        if img.mode in ("P", "1"):                # reduce() works on real colours only
            img = img.convert("RGB")
        img = img.reduce(factor)
    return _to_rgb(img)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        # 16-bit and float pictures (TIFF, PNG): scale to 8 bits instead of clipping at 255
        arr = np.asarray(img, dtype=np.float32)
        top = float(arr.max()) or 1.0
        return Image.fromarray((arr * (255.0 / top)).clip(0, 255).astype(np.uint8)).convert("RGB")
    return img.convert("RGB")


def decode_for_model(data: bytes, size: int) -> Optional[Image.Image]:
    """An RGB picture at least `size` px on its shorter side (JPEG draft decode), or None
    when the bytes are not a picture Pillow can decode or are a decompression bomb."""
    try:
        img = _open(data, "", Image.MAX_IMAGE_PIXELS or 0)
        return _small(img, size)
    except Exception:  # noqa: BLE001 - hostile input: any decoder failure means "no picture"
        return None


# --- EXIF ------------------------------------------------------------------------------------

def _text(value) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value).strip("\x00 ").strip() if value is not None else ""


def _degrees(dms, ref) -> Optional[float]:
    try:
        d, m, s = (float(x) for x in dms)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    value = d + m / 60.0 + s / 3600.0
    if _text(ref).upper() in ("S", "W"):
        value = -value
    return round(value, 7)


def read_exif(img: Image.Image) -> Optional[Exif]:
    """Make, model, DateTimeOriginal and GPS (decimal degrees); None when there is none."""
    try:
        exif = img.getexif()
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose the picture
        return None
    if not exif:
        return None
    make, model = _text(exif.get(_MAKE)), _text(exif.get(_MODEL))
    try:
        when = _text(exif.get_ifd(_EXIF_IFD).get(_DATETIME_ORIGINAL))
    except Exception:  # noqa: BLE001
        when = ""
    gps = None
    try:
        g = exif.get_ifd(_GPS_IFD)
        if _GPS_LAT in g and _GPS_LON in g:
            lat = _degrees(g[_GPS_LAT], g.get(_GPS_LAT_REF))
            lon = _degrees(g[_GPS_LON], g.get(_GPS_LON_REF))
            if lat is not None and lon is not None and abs(lat) <= 90 and abs(lon) <= 180:
                gps = (lat, lon)
    except Exception:  # noqa: BLE001
        gps = None
    if not (make or model or when or gps):
        return None
    return Exif(make=make, model=model, datetime_original=when, gps=gps)


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(_ORIENTATION, 1))
    except Exception:  # noqa: BLE001
        return 1


def _thumbnail(small: Image.Image, size: int, orientation: int) -> bytes:
    thumb = small.copy()
    thumb.thumbnail((size, size), Image.Resampling.BILINEAR)
    if orientation != 1:
        # upright for the reviewer; the hashes keep the stored pixel order as other tools do
        thumb.getexif()[_ORIENTATION] = orientation
        thumb = ImageOps.exif_transpose(thumb)
    buf = io.BytesIO()
    thumb.save(buf, format="JPEG", quality=THUMB_QUALITY)
    return buf.getvalue()


def analyse_picture(data: bytes, content_type: str, *, thumbnails: bool = True,
                    thumb_size: int = 128, max_image_pixels: int = 0,
                    model_input_size: Optional[int] = None,
                    model_prep: Optional[Callable[[Image.Image], np.ndarray | str]] = None
                    ) -> PictureResult:
    """Every picture feature of one picture's bytes. Never raises on bad bytes: a decode
    failure is `error`, a decompression bomb is `refused`."""
    width = height = 0
    try:
        img = _open(data, content_type, max_image_pixels)
        width, height = img.size
        exif = read_exif(img)
        orientation = _orientation(img) if thumbnails else 1
        min_side = max(WORK_SIZE, model_input_size or 0)
        small = _small(img, min_side)
        pdq_value, quality = pdq(small)
        ph = phash(small)
        thumb = _thumbnail(small, thumb_size, orientation) if thumbnails else b""
    except PictureRefused as exc:
        width, height = exc.size if exc.size != (0, 0) else (width, height)
        return PictureResult(width=width, height=height, refused=str(exc), error=str(exc))
    except Exception as exc:  # noqa: BLE001 - hostile input: every decoder failure is data
        # without object addresses (PIL names the BytesIO it read: `<... object at 0x7f..>`),
        # so one file's stored error is the same text in every run
        msg = _ADDRESS.sub(">", f"{type(exc).__name__}: {exc}".splitlines()[0])[:200]
        return PictureResult(width=width, height=height, error=f"decode error: {msg}")
    model_input, error = None, ""
    if model_input_size or model_prep:
        try:  # apart from the decode: a failing model preparation must not lose the hashes
            if model_prep is not None:
                model_input = model_prep(small)
            else:
                side = int(model_input_size)
                model_input = np.asarray(small.resize((side, side), Image.Resampling.BILINEAR),
                                         dtype=np.uint8)
        except Exception as exc:  # noqa: BLE001
            error = f"model input not prepared: {type(exc).__name__}: {exc}".splitlines()[0][:200]
    return PictureResult(width=width, height=height, pdq=pdq_value, pdq_quality=quality,
                         phash=ph, exif=exif, thumbnail=thumb, model_input=model_input,
                         error=error)
