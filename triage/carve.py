"""Carving: pictures and videos in a volume's free space and in the disk's unpartitioned space.

Where to look comes from the file system's own allocation map (`triage.filesystems.free_runs`:
ext block bitmaps per group, the FAT, NTFS `$Bitmap`, the exFAT allocation bitmap), never from
a guess, and from the bytes of the disk outside every volume. Those bytes are read through the
evidence layer (mapped views on raw, ordinary reads on E01 and the libyal containers, the
decrypted view of an unlocked BitLocker volume).

Headers are looked for at the start of every 512-byte sector, as PhotoRec does: a file that was
written by a file system starts on a block, and a block starts on a sector. The test is numpy
over the first 16 bytes of each sector of a mapped window (`bench/carve.py` measures it against
`bytes.find` and Hyperscan). Every candidate is then validated by its own structure, and its end
comes from that structure (JPEG markers to EOI, PNG chunks with their CRCs to IEND, GIF blocks to
the trailer, BMP and RIFF sizes, TIFF directories, the ISO-BMFF box tree, EBML, ASF objects, FLV
tags), within the free run it starts in and a size bound. Nothing is written out: a carved item is a byte range,
read again like a file by the scan (`triage.filesystems.read_chunks`).

Not carved: files in more than one piece (the run they start in ends them), and anything in
compressed or encrypted space.
"""
from __future__ import annotations

import re
import time
import zlib
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import numpy as np

from triage import filetype
from triage.errors import EvidenceError
from triage.filesystems import free_runs
from triage.records import (MEDIA_DAMAGED, SCAN_INCOMPLETE, UNALLOCATED, UNALLOCATED_DIR, UNPARTITIONED, UNPARTITIONED_DIR,
                            UNPARTITIONED_OFFSET, Coverage, FileRecord, Provenance, VolumeRef)

SECTOR = 512
WINDOW = 32 * 1024 * 1024           # bytes of free space tested for headers at a time
MAX_PICTURE = 64 * 1024 * 1024      # a picture larger than this is not carved (a bomb or noise)
MAX_VIDEO = 4 * 1024 * 1024 * 1024
MAX_STEPS = 200_000                 # structure elements walked per candidate (hostile input)
READ_AHEAD = 1 << 20
FIRST_READ = 16 * 1024          # a candidate's first read; doubles up to READ_AHEAD


@dataclass(frozen=True)
class Carved:
    """One validated item: `offset` and `length` in the space's own coordinates (the volume's
    bytes for free space, the media's for unpartitioned space)."""

    offset: int
    length: int
    ext: str
    type: str


@dataclass
class CarveReport:
    """What a carve did: bytes tested, items found, and the ranges it could not finish
    (start, length, why), which stay coverage gaps."""

    bytes_scanned: int = 0
    candidates: int = 0
    carved: int = 0
    rejected: int = 0
    known: int = 0                   # carved where a deleted file the walk listed starts
    left: list = field(default_factory=list)   # (offset, length, why, kind or None) not carved
    seconds: float = 0.0


class Space:
    """A readable byte space: a volume (plain or decrypted) or the whole media.

    `read(at, n)` may return fewer bytes at the end; `view` maps where the container allows."""

    def __init__(self, read: Callable[[int, int], bytes], size: int,
                 view: Optional[Callable[[int, int], Optional[memoryview]]] = None,
                 release: Optional[Callable[[int, int], None]] = None):
        self._read, self.size = read, size
        self._view, self._release = view, release

    def read(self, at: int, n: int) -> bytes:
        n = max(0, min(n, self.size - at))
        return bytes(self._read(at, n)) if n else b""

    def window(self, at: int, n: int):
        n = max(0, min(n, self.size - at))
        v = self._view(at, n) if self._view is not None and n else None
        return v if v is not None else self.read(at, n)

    def release(self, at: int, n: int) -> None:
        if self._release is not None:
            self._release(at, n)


def evidence_space(evidence, base: int = 0, size: Optional[int] = None) -> Space:
    """The media from `base` on (a plain volume, or the whole device with base 0)."""
    media = evidence.ref.media_size
    size = media - base if size is None else min(size, media - base)
    return Space(lambda at, n: evidence.read(base + at, n), size,
                 lambda at, n: evidence.view(base + at, n),
                 lambda at, n: evidence.release(base + at, n))


def volume_space(vi) -> Space:
    """A decrypted volume (triage.volumes.VolumeImage, unlocked): read, never mapped."""
    return Space(vi.read, vi.length)


def _le(b: bytes, a: int, n: int) -> int:
    return int.from_bytes(b[a:a + n], "little")


# --- headers at sector starts ----------------------------------------------------------------

def _u32(s: bytes) -> int:
    return int.from_bytes(s, "big")


_W_PNG0, _W_PNG1 = _u32(b"\x89PNG"), _u32(b"\r\n\x1a\n")
_W_GIF, _W_RIFF, _W_FTYP = _u32(b"GIF8"), _u32(b"RIFF"), _u32(b"ftyp")
_W_EBML, _W_ASF, _W_FLV = 0x1A45DFA3, _u32(b"\x30\x26\xb2\x75"), _u32(b"FLV\x01")
_W_TIFF_LE, _W_TIFF_BE = _u32(b"II*\x00"), _u32(b"MM\x00*")


def header_sectors(buf) -> np.ndarray:
    """Indices of the 512-byte sectors of `buf` that start with a carved type's signature."""
    nsec = len(buf) // SECTOR
    if not nsec:
        return np.zeros(0, dtype=np.int64)
    a = np.frombuffer(buf, dtype=np.uint8, count=nsec * SECTOR).reshape(nsec, SECTOR)
    w = np.ascontiguousarray(a[:, :8]).view(">u4")
    w0, w1 = w[:, 0], w[:, 1]
    hit = ((w0 & 0xFFFFFF00) == 0xFFD8FF00) | ((w0 == _W_PNG0) & (w1 == _W_PNG1))
    hit |= (w0 == _W_GIF) | ((w0 >> 16) == 0x424D) | (w0 == _W_RIFF) | (w1 == _W_FTYP)
    hit |= (w0 == _W_EBML) | (w0 == _W_ASF) | (w0 == _W_FLV)
    hit |= (w0 == _W_TIFF_LE) | (w0 == _W_TIFF_BE)
    return np.flatnonzero(hit)


# --- structural validation: where each candidate ends ----------------------------------------

class _Cursor:
    """Reads of one candidate, never past `limit`, through a buffer that is a mapped view of the
    space where it has one (no copy: measured, copying a read-ahead per candidate was most of
    the carver's time on free space) and a read otherwise. The buffer starts small and doubles
    up to READ_AHEAD as the walk goes on, so a false candidate in random fill costs little."""

    def __init__(self, space: Space, limit: int):
        self.space, self.limit = space, limit
        self._at, self._buf, self._ahead = 0, b"", FIRST_READ

    def span(self, at: int, n: int):
        """Up to `n` bytes at `at`, as a view of the buffer where possible (fewer at the limit
        or where the media could not be read)."""
        if at < 0 or at >= self.limit:
            return b""
        n = min(n, self.limit - at)
        if not (self._at <= at and at + n <= self._at + len(self._buf)):
            want = min(max(n, self._ahead), self.limit - at)
            self._ahead = min(self._ahead * 2, READ_AHEAD)
            while True:
                try:
                    self._buf = self.space.window(at, want)
                    break
                except (EvidenceError, OSError):
                    # the read-ahead met damaged media: the bytes before it may still be whole
                    # (callers treat fewer bytes than they need as the end of the item)
                    if want <= SECTOR:
                        raise
                    want //= 2
            self._at = at
            n = min(n, len(self._buf))
        return self._buf[at - self._at:at - self._at + n]

    def get(self, at: int, n: int) -> bytes:
        return bytes(self.span(at, n))


_JPEG_SOF = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def _jpeg(c: _Cursor, off: int) -> Optional[int]:
    p, sof, sos = off + 2, False, False
    for _ in range(MAX_STEPS):
        b = c.get(p, 4)
        if len(b) < 2 or b[0] != 0xFF:
            return None
        m = b[1]
        if m == 0xFF:
            p += 1
            continue
        if m == 0xD9:
            return p + 2 - off if sof and sos else None
        if 0xD0 <= m <= 0xD7 or m == 0x01:
            p += 2
            continue
        if m == 0xD8 or len(b) < 4:
            return None
        seg = int.from_bytes(b[2:4], "big")
        if seg < 2:
            return None
        if m in _JPEG_SOF:
            s = c.get(p + 4, 6)
            if len(s) < 6 or not int.from_bytes(s[1:3], "big") or not int.from_bytes(s[3:5], "big"):
                return None
            sof = True
        p += 2 + seg
        if m == 0xDA:
            if not sof:
                return None
            sos = True
            p = _next_marker(c, p)
            if p is None:
                return None
    return None


def _next_marker(c: _Cursor, p: int) -> Optional[int]:
    """The next marker after entropy-coded data (stuffed 0xFF00 and restarts skipped)."""
    while p < c.limit:
        chunk = c.span(p, READ_AHEAD)
        if len(chunk) < 2:
            return None
        m = _JPEG_MARKER.search(chunk)
        if m is not None:
            return p + m.start()
        p += len(chunk) - 1
    return None


def _png(c: _Cursor, off: int) -> Optional[int]:
    p, first = off + 8, True
    for _ in range(MAX_STEPS):
        h = c.get(p, 8)
        if len(h) < 8:
            return None
        n, typ = int.from_bytes(h[:4], "big"), h[4:8]
        if n > 0x7FFFFFFF or not typ.isalpha() or (first and (typ != b"IHDR" or n != 13)):
            return None
        if p + 12 + n > c.limit:
            return None
        body = c.span(p + 8, n + 4)
        if len(body) < n + 4 or \
                zlib.crc32(body[:n], zlib.crc32(typ)) != int.from_bytes(body[n:], "big"):
            return None
        p += 12 + n
        first = False
        if typ == b"IEND":
            return p - off
    return None


def _gif(c: _Cursor, off: int) -> Optional[int]:
    h = c.get(off, 13)
    if len(h) < 13 or h[:6] not in (b"GIF87a", b"GIF89a"):
        return None
    p = off + 13 + (3 << ((h[10] & 7) + 1) if h[10] & 0x80 else 0)
    images = 0
    for _ in range(MAX_STEPS):
        b = c.get(p, 1)
        if not b:
            return None
        if b[0] == 0x3B:
            return p + 1 - off if images else None
        if b[0] == 0x21:
            p += 2
        elif b[0] == 0x2C:
            d = c.get(p, 10)
            if len(d) < 10:
                return None
            p += 10 + (3 << ((d[9] & 7) + 1) if d[9] & 0x80 else 0) + 1
            images += 1
        else:
            return None
        while True:                                  # data sub-blocks
            n = c.get(p, 1)
            if not n:
                return None
            p += 1 + n[0]
            if n[0] == 0:
                break
            if p > c.limit:
                return None
    return None


_BMP_HEADERS = frozenset((12, 40, 52, 56, 64, 108, 124))


def _bmp(c: _Cursor, off: int) -> Optional[int]:
    h = c.get(off, 54)
    if len(h) < 26 or h[:2] != b"BM" or h[6:10] != b"\0\0\0\0":
        return None
    size, pix, hsz = _le(h, 2, 4), _le(h, 10, 4), _le(h, 14, 4)
    if hsz not in _BMP_HEADERS or not 14 + hsz <= pix < size or off + size > c.limit:
        return None
    if hsz == 12:
        w, ht, planes, bpp, comp = _le(h, 18, 2), _le(h, 20, 2), _le(h, 22, 2), _le(h, 24, 2), 0
    else:
        if len(h) < 54:
            return None
        w = int.from_bytes(h[18:22], "little", signed=True)
        ht = abs(int.from_bytes(h[22:26], "little", signed=True))
        planes, bpp, comp = _le(h, 26, 2), _le(h, 28, 2), _le(h, 30, 4)
    if planes != 1 or bpp not in (1, 4, 8, 16, 24, 32) or w <= 0 or ht <= 0 or comp > 6 \
            or w * ht > 1 << 28:
        return None
    if comp == 0 and size < pix + ((w * bpp + 31) // 32) * 4 * ht:
        return None
    return size


# TIFF: the item ends after the last byte any directory points at (its strips or tiles, the
# directories themselves, their out-of-line values); a directory chain is bounded and acyclic
_TIFF_TYPES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8,
               16: 8, 17: 8, 18: 8}
_TIFF_MAX_IFDS = 64
_TIFF_OFFSETS = {273: 279, 324: 325, 288: 289}     # strips, tiles, free: offsets -> byte counts


def _tiff(c: _Cursor, off: int) -> Optional[int]:
    h = c.get(off, 8)
    if len(h) < 8 or h[:4] not in (b"II*\x00", b"MM\x00*"):
        return None
    order = "little" if h[:2] == b"II" else "big"

    def num(b: bytes) -> int:
        return int.from_bytes(b, order)

    ifd, seen, end, images = num(h[4:8]), set(), 8, 0
    while ifd and len(seen) < _TIFF_MAX_IFDS:
        if ifd in seen or ifd < 8 or off + ifd + 2 > c.limit:
            return None if not seen else end
        seen.add(ifd)
        count = num(c.get(off + ifd, 2))
        if not 1 <= count <= 512:
            return None
        table = c.get(off + ifd + 2, count * 12 + 4)
        if len(table) < count * 12 + 4:
            return None
        end = max(end, ifd + 2 + count * 12 + 4)
        values: dict[int, list[int]] = {}
        for i in range(count):
            e = table[i * 12:(i + 1) * 12]
            tag, typ, n = num(e[:2]), num(e[2:4]), num(e[4:8])
            size = _TIFF_TYPES.get(typ)
            if size is None or n > 1 << 20:
                return None
            nbytes = size * n
            if nbytes > 4:
                at = num(e[8:12])
                end = max(end, at + nbytes)
                if off + at + nbytes > c.limit:
                    return None
            if tag in (256, 257):
                images += 1
            if tag in _TIFF_OFFSETS or tag in _TIFF_OFFSETS.values():
                if typ not in (3, 4) or n > 65536:
                    return None
                raw = e[8:12] if nbytes <= 4 else c.get(off + num(e[8:12]), nbytes)
                if len(raw) < nbytes:
                    return None
                values[tag] = [num(raw[j:j + size]) for j in range(0, nbytes, size)]
        for offs, counts in _TIFF_OFFSETS.items():
            o, n = values.get(offs, []), values.get(counts, [])
            if len(o) != len(n):
                return None
            for a, b in zip(o, n):
                end = max(end, a + b)
        if end > c.limit - off:
            return None
        ifd = num(table[count * 12:count * 12 + 4])
    return end if images else None


_RIFF_FORMS = {b"WEBP": (b"VP8 ", b"VP8L", b"VP8X"), b"AVI ": (b"LIST",)}


def _riff(c: _Cursor, off: int) -> Optional[int]:
    h = c.get(off, 24)
    if len(h) < 24:
        return None
    size, form = _le(h, 4, 4) + 8, h[8:12]
    if form not in _RIFF_FORMS or h[12:16] not in _RIFF_FORMS[form] or size < 20:
        return None
    if off + size > c.limit:
        return None
    if form == b"AVI " and c.get(off + 20, 4) != b"hdrl":
        return None
    p = off + 12
    for _ in range(MAX_STEPS):                       # the top-level chunks fill it exactly
        if p >= off + size - 1:
            return size
        ch = c.get(p, 8)
        if len(ch) < 8 or not all(32 <= x < 127 for x in ch[:4]):
            return None
        p += 8 + _le(ch, 4, 4) + (_le(ch, 4, 4) & 1)
        if p > off + size:
            return None
    return None


_BOXES = frozenset(b.encode() for b in (
    "ftyp", "moov", "mdat", "free", "skip", "wide", "uuid", "meta", "pdin", "moof", "mfra",
    "sidx", "styp", "ssix", "prft", "emsg", "pnot", "jumb", "idat", "iinf"))
_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1", b"avif")


def _bmff(c: _Cursor, off: int) -> Optional[int]:
    h = c.get(off, 12)
    if len(h) < 12:
        return None
    n = int.from_bytes(h[:4], "big")
    if not 12 <= n <= 4096 or not all(32 <= x < 127 for x in h[8:12]):
        return None
    p, seen = off + n, {b"ftyp"}
    for _ in range(MAX_STEPS):
        b = c.get(p, 16)
        if len(b) < 8 or b[4:8] not in _BOXES:
            break
        size = int.from_bytes(b[:4], "big")
        if size == 1:
            if len(b) < 16:
                break
            size = int.from_bytes(b[8:16], "big")
        if size < 8 or p + size > c.limit:
            break                                     # 0 ("to the end") or cut: unbounded
        seen.add(b[4:8])
        p += size
    if b"moov" in seen and b"mdat" in seen or h[8:12] in _HEIF_BRANDS and b"meta" in seen:
        return p - off
    return None


def _vint(c: _Cursor, p: int) -> tuple[Optional[int], int]:
    b = c.get(p, 8)
    if not b or not b[0]:
        return None, 0
    n = 8 - b[0].bit_length() + 1
    if len(b) < n:
        return None, 0
    v = int.from_bytes(b[:n], "big") & ((1 << (7 * n)) - 1)
    return (None if v == (1 << (7 * n)) - 1 else v), n


def _ebml(c: _Cursor, off: int) -> Optional[int]:
    size, n = _vint(c, off + 4)
    if size is None or size > 4096:
        return None
    head = c.get(off + 4 + n, size)
    if b"webm" not in head and b"matroska" not in head:
        return None
    p = off + 4 + n + size
    if c.get(p, 4) != b"\x18\x53\x80\x67":
        return None
    seg, k = _vint(c, p + 4)
    if seg is None or p + 4 + k + seg > c.limit:   # unknown size (a live recording): unbounded
        return None
    return p + 4 + k + seg - off


_ASF_HEADER = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")
_ASF_DATA = bytes.fromhex("3626b2758e66cf11a6d900aa0062ce6c")
_ASF_TOP = frozenset((_ASF_HEADER, _ASF_DATA, bytes.fromhex("90080033b1e5cf1189f400a0c90349cb"),
                      bytes.fromhex("d329e2d6da35d111903400a0c90349be"),
                      bytes.fromhex("f803b1fead12644c840f2a1d2f7ad48c"),
                      bytes.fromhex("d03fb73c4a0c0348953dedf7b6228f0c")))


def _asf(c: _Cursor, off: int) -> Optional[int]:
    if c.get(off, 16) != _ASF_HEADER:
        return None
    p, data = off, False
    for _ in range(64):
        o = c.get(p, 24)
        if len(o) < 24 or o[:16] not in _ASF_TOP:
            break
        size = _le(o, 16, 8)
        if size < 24 or p + size > c.limit:
            return None
        data |= o[:16] == _ASF_DATA
        p += size
    return p - off if data else None


def _flv(c: _Cursor, off: int) -> Optional[int]:
    h = c.get(off, 13)
    if len(h) < 13 or int.from_bytes(h[5:9], "big") != 9 or h[9:13] != b"\0\0\0\0":
        return None
    p, tags = off + 13, 0
    for _ in range(MAX_STEPS):
        t = c.get(p, 11)
        if len(t) < 11 or t[0] not in (8, 9, 18) or t[8:11] != b"\0\0\0":
            break
        n = int.from_bytes(t[1:4], "big")
        if int.from_bytes(c.get(p + 11 + n, 4), "big") != 11 + n:
            break
        p += 15 + n
        tags += 1
    return p - off if tags else None


# first bytes -> (validator, size bound, extension when the sniffed type does not say)
def _kind(head: bytes):
    if head[:3] == b"\xff\xd8\xff":
        return _jpeg, MAX_PICTURE, "jpg"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return _png, MAX_PICTURE, "png"
    if head[:4] == b"GIF8":
        return _gif, MAX_PICTURE, "gif"
    if head[:2] == b"BM":
        return _bmp, MAX_PICTURE, "bmp"
    if head[:4] == b"RIFF":
        return (_riff, MAX_PICTURE, "webp") if head[8:12] == b"WEBP" else (_riff, MAX_VIDEO, "avi")
    if head[4:8] == b"ftyp":
        return _bmff, (MAX_PICTURE if head[8:12] in _HEIF_BRANDS else MAX_VIDEO), "mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return _ebml, MAX_VIDEO, "mkv"
    if head[:4] == _ASF_HEADER[:4]:
        return _asf, MAX_VIDEO, "wmv"
    if head[:4] == b"FLV\x01":
        return _flv, MAX_VIDEO, "flv"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff, MAX_PICTURE, "tif"
    return None


_EXT = {"image/jpeg": "jpg", "image/png": "png", "image/gif": "gif", "image/bmp": "bmp",
        "image/tiff": "tif",
        "image/webp": "webp", "image/heic": "heic", "image/heif": "heif", "image/avif": "avif",
        "video/quicktime": "mov", "video/3gpp": "3gp", "video/mp4": "mp4",
        "video/x-msvideo": "avi", "video/x-matroska": "mkv", "video/webm": "webm",
        "video/x-ms-asf": "wmv", "video/x-flv": "flv"}


def validate(space: Space, off: int, end: int) -> Optional[Carved]:
    """The item starting at `off` if its structure holds and ends by `end`; None otherwise.
    Never raises on content."""
    c = _Cursor(space, end)
    head = c.get(off, filetype.HEAD_BYTES)
    kind = _kind(head)
    if kind is None:
        return None
    check, bound, ext = kind
    c.limit = min(end, off + bound)
    try:
        n = check(c, off)
    except (IndexError, ValueError, OverflowError):
        return None
    if not n or n <= 0:
        return None
    ctype = filetype.sniff(head)
    if head[:4] == b"\x1a\x45\xdf\xa3" and b"webm" in head:
        ctype = "video/webm"
    return Carved(offset=off, length=n, ext=_EXT.get(ctype, ext), type=ctype or "")


GAP = 64 * 1024      # free runs at most this far apart are tested through one window


def _windows(runs, size: int) -> Iterator[list]:
    """The windows `runs` are tested in, each a list of (a, b, end): the whole sectors [a, b)
    of a run that ends at `end`. A run longer than WINDOW gets one window per WINDOW bytes.
    Shorter runs in order, each starting at most GAP after the last one ends, share a window
    of at most WINDOW bytes: fragmented free space (NTFS's single free clusters) is then one
    mapped view and one header test for many runs instead of one each (measured: 130 us a
    run), and the allocated bytes between them are tested and their hits dropped."""
    group: list = []
    for start, length in runs:
        end = min(start + length, size)
        a = start + (-start % SECTOR)
        if a + SECTOR > end:
            continue
        last = end - (end - a) % SECTOR
        if group and (a < group[-1][1] or a - group[-1][1] > GAP or last - group[0][0] > WINDOW):
            yield group
            group = []
        if last - a > WINDOW:
            while a < last:
                b = min(a + WINDOW, last)
                yield [(a, b, end)]
                a = b
            continue
        group.append((a, last, end))
    if group:
        yield group


def _left(spans: list, windows) -> list:
    """(start, length) of every run not carved from `spans` on, one per run."""
    out: list = []
    for group in ([spans], windows):
        for g in group:
            for a, _b, end in g:
                if out and out[-1][1] == end:
                    continue                        # the same run's next window
                out.append((a, end))
    return [(a, end - a) for a, end in out]


def carve(space: Space, runs, report: Optional[CarveReport] = None,
          deadline: Optional[float] = None) -> Iterator[Carved]:
    """Every validated item in `runs` ((start, length) in `space`), in order. What could not be
    read, or was left when `deadline` (time.monotonic) passed, goes to `report.left`."""
    report = report if report is not None else CarveReport()
    t0 = time.monotonic()
    windows = _windows(runs, space.size)
    last = [0, 0]                    # the last item carved: a header inside it is not a start
    try:
        for spans in windows:
            if deadline is not None and time.monotonic() > deadline:
                report.left.extend((a, n, "carving stopped at its time limit", SCAN_INCOMPLETE)
                                   for a, n in _left(spans, windows))
                return
            yield from _window(space, spans, report, last)
    finally:
        report.seconds += time.monotonic() - t0


def _window(space: Space, spans: list, report: CarveReport, last: list) -> Iterator[Carved]:
    w0, w1 = spans[0][0], spans[-1][1]
    try:
        buf = space.window(w0, w1 - w0)
        idx = header_sectors(buf)
    except (EvidenceError, OSError, IOError, ValueError) as exc:
        if len(spans) > 1:           # the bytes between the runs may be what cannot be read
            for one in spans:
                yield from _window(space, [one], report, last)
            return
        report.left.append((w0, w1 - w0, f"read error: {exc}"[:200], MEDIA_DAMAGED))
        return
    report.bytes_scanned += sum(b - a for a, b, _ in spans)
    hits = w0 + idx * SECTOR
    if len(spans) > 1:               # keep the hits inside a run, and say which
        starts = np.array([a for a, _, _ in spans], dtype=np.int64)
        ends = np.array([b for _, b, _ in spans], dtype=np.int64)
        k = np.searchsorted(starts, hits, "right") - 1
        inside = (k >= 0) & (hits < ends[np.maximum(k, 0)])
        hits, k = hits[inside], k[inside]
    else:
        k = np.zeros(len(hits), dtype=np.int64)
    for at, j in zip(hits.tolist(), k.tolist()):
        if last[0] <= at < last[1]:
            continue
        report.candidates += 1
        try:
            item = validate(space, at, spans[j][2])
        except (EvidenceError, OSError, IOError) as exc:
            report.left.append((at, SECTOR, f"read error: {exc}"[:200], MEDIA_DAMAGED))
            item = None
        if item is None:
            report.rejected += 1
            continue
        report.carved += 1
        last[:] = at, at + item.length
        yield item
    del buf
    space.release(w0, w1 - w0)


# --- carved items as files --------------------------------------------------------------------

def carved_record(volume: VolumeRef, item: Carved) -> FileRecord:
    """A carved item as a FileRecord: `$Unallocated/<offset>.<ext>` with the volume as its
    parent (offsets within the volume), or `$Unpartitioned/...` with the device as its parent
    (offsets within the media)."""
    outside = volume.offset == UNPARTITIONED_OFFSET
    name = f"{item.offset}.{item.ext}"
    folder = UNPARTITIONED_DIR if outside else UNALLOCATED_DIR
    prov = Provenance(device_id=volume.device_id, volume_offset=None if outside else volume.offset,
                      path=f"{folder}/{name}", volume_index=None if outside else volume.index,
                      fs_type="" if outside else (volume.fs_type or ""), parent=volume.where,
                      offset=item.offset, length=item.length)
    return FileRecord(prov=prov, name=name, size=item.length, allocated=False,
                      fs_type=prov.fs_type, type=item.type)


def outside_ranges(media_size: int, volumes) -> list[tuple[int, int]]:
    """(start, length) of the media's bytes outside every volume (the partition table's own
    sectors included). A volume inside a volume system (an APFS volume, an LVM logical
    volume) covers its container's bytes from the container's start: all of an APFS
    container; of an LVM physical volume, as many bytes as its largest logical volume, so
    the extents in no logical volume are carved as unpartitioned space."""
    from triage.volumes import nested_of
    spans = []
    for v in volumes:
        nested = nested_of(v.offset)
        start = nested[0] if nested is not None else v.offset
        if start >= 0:
            # only the media's bytes: a volume declared past its end takes nothing from it
            spans.append((min(start, media_size), min(start + v.length, media_size)))
    out, at = [], 0
    for start, end in sorted(spans):
        if start > at:
            out.append((at, start - at))
        at = max(at, end)
    if media_size > at:
        out.append((at, media_size - at))
    return out


def carve_volume(evidence, volume: VolumeRef, problems: list, done: list,
                 ranges: Optional[list] = None, seconds: float = 0.0,
                 report: Optional[CarveReport] = None,
                 known: Optional[frozenset] = None) -> Iterator[FileRecord]:
    """The carved items of a volume's free space (or, for the unpartitioned pseudo-volume,
    of `ranges` of the media), as FileRecords. What could not be carved goes to `problems` as
    coverage with its bytes; `done` gets True once the space was carved through, so the
    caller can drop the gap that said it was not. `known`: where deleted files the walk listed
    start (their content is read through them, not carved again); default: what a walk in
    this process found."""
    from triage.filesystems import resolver
    dev = volume.device_id
    outside = volume.offset == UNPARTITIONED_OFFSET
    kind = UNPARTITIONED if outside else UNALLOCATED
    report = report if report is not None else CarveReport()
    try:
        if outside:
            space, runs = evidence_space(evidence), list(ranges or ())
            known = known or frozenset()
        else:
            res = resolver(evidence)
            if known is None:
                known = res.deleted_starts.get(volume.offset, set())
            vi = res.volume(volume.offset)
            space = volume_space(vi) if vi.unlocked else evidence_space(evidence, volume.offset,
                                                                         volume.length)
            runs = free_runs(evidence, volume.offset, volume.fs_type or "", res.fs(volume.offset),
                             limit=volume.length)
        deadline = time.monotonic() + seconds if seconds else None
        for item in carve(space, runs, report, deadline):
            if item.offset in known:
                # the content of a deleted file the walk already listed, and read through it
                report.known += 1
                continue
            yield carved_record(volume, item)
    except (EvidenceError, ValueError, OSError, IOError, RuntimeError) as exc:
        # the map could not be read: the volume's free-space gap stays as it is
        report.left.append((0, 0, f"allocation map not readable: {exc}"[:200], None))
        return
    # a time limit or a read error is something that failed (tier 2, NOT_EXAMINED); only an
    # unreadable map leaves the space as "not carved" (the volume's gap stays as it was)
    for start, length, why, failed in report.left:
        where = Provenance(device_id=dev, volume_offset=None if outside else volume.offset,
                           volume_index=None if outside else volume.index,
                           fs_type="" if outside else (volume.fs_type or ""),
                           offset=start, length=length)
        problems.append(Coverage(device_id=dev, kind=failed or kind, where=where, reason=why,
                                 bytes_not_examined=length))
    done.append(True)


# --- pictures stored whole inside other content ------------------------------------------------

EMBEDDED_MAX_ITEMS = 4096
_EMBEDDED_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")
# every type free space is carved for; ftyp is found 4 bytes into its box
_ALL_SIGNATURES = _EMBEDDED_SIGNATURES + (b"GIF8", b"BM", b"RIFF", b"\x1a\x45\xdf\xa3",
                                          _ASF_HEADER[:4], b"FLV\x01", b"II*\x00", b"MM\x00*")
_FTYP = b"ftyp"


def embedded(data, start: int = 0, bmp: bool = False, all_types: bool = False,
             end: Optional[int] = None) -> Iterator[Carved]:
    """Pictures stored whole inside other content, at any offset from `start` (each ending by
    `end`, the end of `data` when None): JPEG and PNG
    (a PDF's DCTDecode images, a JPEG's EXIF thumbnail), BMP too when asked (thumbnail
    caches hold them), and with `all_types` every type free space is carved for (files of
    unknown type, browser cache entries). Each is validated and ended by its own structure,
    as in free space; at most EMBEDDED_MAX_ITEMS."""
    size = len(data) if end is None else max(0, min(end, len(data)))
    space = Space(lambda at, n: data[at:at + n], size)
    pos, found = start, 0
    sigs = _ALL_SIGNATURES if all_types else _EMBEDDED_SIGNATURES + ((b"BM",) if bmp else ())

    def find(sig: bytes, at: int) -> int:
        if sig == _FTYP:
            i = data.find(sig, at + 4, size)
            return i - 4 if i >= 4 else -1
        return data.find(sig, at, size)

    if all_types:
        sigs = sigs + (_FTYP,)
    nxt = {sig: find(sig, pos) for sig in sigs}
    while found < EMBEDDED_MAX_ITEMS:
        live = [i for i in nxt.values() if i >= 0]
        if not live:
            return
        at = min(live)
        item = validate(space, at, size)
        pos = at + (item.length if item is not None else 1)
        for sig, i in nxt.items():
            if 0 <= i < pos:
                nxt[sig] = find(sig, pos)
        if item is not None:
            found += 1
            yield item


def embedded_record(parent: FileRecord, item: Carved) -> FileRecord:
    """A picture found inside a file: the file's provenance as parent, with the byte range."""
    p = parent.prov
    name = f"{parent.name}@{item.offset}.{item.ext}"
    # named for people after the file (and the archive member or stream) it was found in
    prov = Provenance(device_id=p.device_id, volume_offset=p.volume_offset,
                      path=f"{p.display()}@{item.offset}.{item.ext}", volume_index=p.volume_index,
                      fs_type=p.fs_type, parent=p, offset=item.offset, length=item.length)
    return FileRecord(prov=prov, name=name, size=item.length, allocated=parent.allocated,
                      fs_type=parent.fs_type, mtime=parent.mtime, atime=parent.atime,
                      ctime=parent.ctime, crtime=parent.crtime, type=item.type)
