"""Pictures kept inside other files in forms that carving cannot see, or not with what the
container says about them: a PDF's Flate-encoded image XObjects, the pictures a SQLite
database keeps in its blobs, the streams of an OLE file, and a Windows thumbnail cache's
entries with their cache-entry hash and identifier.

Pictures stored whole (a PDF's DCTDecode JPEGs, the bytes of a thumbnail cache outside its
entries) are found by carving the container's bytes (`triage.carve.embedded`). What is here
must be decoded or walked first: a Flate image is raw pixels, a blob larger than a database
page is split over overflow pages, a thumbnail's entry names it. Every parser is bounded (items, bytes, SQLite steps) and treats the bytes as hostile:
anything it cannot decode is reported with its bytes, so the caller can keep it a gap.
"""
from __future__ import annotations

import io
import re
import sqlite3
import struct
import zlib
from dataclasses import dataclass, field
from typing import Iterator, Optional

from triage.filetype import PICTURE_TYPES, sniff
from triage.records import FileRecord, Provenance

MAX_ITEMS = 4096


@dataclass(frozen=True)
class Decoded:
    """A picture decoded from inside a container.

    `offset`/`length`: the encoded bytes in the container (a PDF stream's data), or 0/0 when
    the picture has no single byte range there (a SQLite blob over overflow pages); `member`
    then names it in the container's own terms. `data` is the picture as a file: the blob as
    stored, or a PNG holding a Flate image's pixels exactly."""

    data: bytes
    content_type: str
    decoded: str = ""            # the filter that produced `data` from the range, if any
    offset: int = 0
    length: int = 0
    member: str = ""
    cache_entry_hash: str = ""   # a thumbnail cache entry's hash and identifier
    cache_entry_id: str = ""


@dataclass
class Undecoded:
    """What a container held that could not be examined: counts by reason, and the bytes."""

    reasons: dict
    nbytes: int = 0

    def add(self, reason: str, nbytes: int) -> None:
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        self.nbytes += max(0, nbytes)

    def text(self) -> str:
        return "; ".join(f"{n} {why}" for why, n in sorted(self.reasons.items()))


# --- PDF ------------------------------------------------------------------------------------

_STREAM = re.compile(rb"(?<!end)stream\r?\n")
_OBJ = re.compile(rb"\d+\s+\d+\s+obj\b")
_NAME = rb"\s*/([A-Za-z0-9]+)"
_FILTERS = re.compile(rb"/Filter\s*(\[[^\]]{0,200}\]|/[A-Za-z0-9]+)")
_INLINE_IMAGE = re.compile(rb"(?:^|\s)BI\s*/")
_PDF_MAX_PIXELS = 89_478_485           # Pillow's MAX_IMAGE_PIXELS, as for picture files
_PDF_MAX_DECODED = 256 * 1024 * 1024


def _int(d: bytes, key: bytes) -> Optional[int]:
    m = re.search(rb"/" + key + rb"\s+(\d{1,9})(?!\s+\d+\s+R)", d)
    return int(m.group(1)) if m else None


def _dictionary(data, at: int) -> bytes:
    """The object dictionary before the `stream` keyword at `at` (from its `N G obj`)."""
    lo = max(0, at - 4096)
    head = bytes(data[lo:at])
    objs = list(_OBJ.finditer(head))
    return head[objs[-1].end():] if objs else head


def _stream_end(data: bytes, start: int, declared: Optional[int]) -> int:
    if declared is not None and start + declared <= len(data):
        tail = data[start + declared:start + declared + 32].lstrip(b"\r\n ")
        if tail.startswith(b"endstream"):
            return start + declared
    end = data.find(b"endstream", start)
    if end < 0:
        return len(data)
    while end > start and data[end - 1] in (10, 13):
        end -= 1
    return end


def _inflate(raw: bytes, limit: int) -> bytes:
    d = zlib.decompressobj()
    out = d.decompress(raw, limit)
    if d.unconsumed_tail:
        raise ValueError(f"decodes to more than {limit:,} bytes")
    return out


def _png(width: int, height: int, colours: int, bpc: int, idat: bytes) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    colour_type = {1: 0, 3: 2, 4: 6}[colours]       # 4: CMYK is never PNG; see caller
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bpc,
                                                              colour_type, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def _flate_image(d: bytes, raw: bytes) -> tuple[Optional[bytes], str]:
    """A Flate image XObject's pixels as a PNG file, or (None, why not)."""
    width, height = _int(d, b"Width"), _int(d, b"Height")
    bpc = _int(d, b"BitsPerComponent") or 8
    if not width or not height:
        return None, "Flate images without a direct width and height"
    if width * height > _PDF_MAX_PIXELS:
        return None, "Flate images over the pixel limit (a bomb)"
    if bpc != 8:
        return None, f"Flate images of {bpc} bits per component"
    space = re.search(rb"/ColorSpace" + _NAME, d)
    colours = {b"DeviceGray": 1, b"CalGray": 1, b"DeviceRGB": 3, b"CalRGB": 3,
               b"DeviceCMYK": 4}.get(space.group(1) if space else b"", 0)
    predictor = _int(d, b"Predictor") or 1
    need = width * height
    try:
        pixels = _inflate(raw, min(_PDF_MAX_DECODED, need * 4 + height + 1))
    except (zlib.error, ValueError) as exc:
        return None, f"Flate images that do not decode ({str(exc)[:60]})"
    if not colours:                 # an indexed or ICC-based space: the data says how many
        rows = len(pixels) - (height if predictor >= 10 else 0)
        colours = rows // need if rows > 0 and rows % need == 0 else 0
        if colours not in (1, 3, 4):
            return None, "Flate images in colour spaces not decoded (indexed, separation)"
    from PIL import Image

    mode = {1: "L", 3: "RGB", 4: "CMYK"}[colours]
    try:
        if predictor >= 10 and colours != 4:
            # PNG predictors: the Flate data is a PNG image's IDAT as it stands
            png = _png(width, height, colours, 8, raw)
            with Image.open(io.BytesIO(png)) as im:
                im.load()                       # decodes it, checking every row
            return png, ""
        if predictor >= 10:
            return None, "Flate CMYK images with PNG predictors"
        if predictor != 1:
            return None, f"Flate images with predictor {predictor}"
        if len(pixels) < need * colours:
            return None, "Flate images shorter than their size"
        im = Image.frombytes(mode, (width, height), pixels[:need * colours])
        if mode == "CMYK":
            im = im.convert("RGB")
        out = io.BytesIO()
        im.save(out, "PNG", compress_level=1)
        return out.getvalue(), ""
    except (OSError, ValueError, SyntaxError, MemoryError) as exc:
        return None, f"Flate images that do not decode ({str(exc)[:60]})"


def pdf_images(data, undecoded: Undecoded) -> Iterator[Decoded]:
    """Every image XObject that is not stored whole: Flate-encoded ones decoded to PNG (and
    Flate-wrapped JPEGs unwrapped). Images in other encodings (JPX, JBIG2, CCITT, LZW), inline
    images in content streams and an encrypted PDF's streams go to `undecoded`. DCTDecode
    images are left to carving (they are JPEG files as they stand)."""
    view = bytes(data)
    if re.search(rb"/Encrypt\s+\d+\s+\d+\s+R|/Encrypt\s*<<", view):
        undecoded.add("PDF streams encrypted (pictures inside not decoded)", len(view))
        return
    found, pos = 0, 0
    while True:
        m = _STREAM.search(view, pos)
        if m is None:
            return
        if found >= MAX_ITEMS:
            undecoded.add(f"streams past the first {MAX_ITEMS} images", len(view) - m.start())
            return
        d = _dictionary(view, m.start())
        start = m.end()
        end = _stream_end(view, start, _int(d, b"Length"))
        pos = max(end, start)           # a stream's bytes may hold anything, "stream" too
        raw = view[start:end]
        fm = _FILTERS.search(d)
        filters = re.findall(rb"/([A-Za-z0-9]+)", fm.group(1)) if fm else []
        if not re.search(rb"/Subtype\s*/Image\b", d):
            # a content stream may draw inline images (BI ... ID ... EI): not decoded
            if filters in ([b"FlateDecode"], [b"Fl"]):
                try:
                    text = _inflate(raw, 16 * 1024 * 1024)
                except (zlib.error, ValueError):
                    continue
            elif not filters:
                text = raw
            else:
                continue
            if _INLINE_IMAGE.search(text) and b"ID" in text:
                undecoded.add("content streams with inline images", len(raw))
            continue
        if filters in ([b"DCTDecode"], [b"DCT"]):
            continue                            # a JPEG as it stands: carving finds it
        if filters and filters[0] in (b"FlateDecode", b"Fl"):
            if filters[1:] in ([b"DCTDecode"], [b"DCT"]):
                try:
                    jpeg = _inflate(raw, _PDF_MAX_DECODED)
                except (zlib.error, ValueError):
                    undecoded.add("Flate-wrapped JPEG images that do not decode", len(raw))
                    continue
                if sniff(jpeg[:64]) != "image/jpeg":
                    undecoded.add("Flate-wrapped JPEG images that are not JPEG", len(raw))
                    continue
                found += 1
                yield Decoded(jpeg, "image/jpeg", "FlateDecode", start, len(raw))
                continue
            if len(filters) > 1:
                undecoded.add("images with filter chains not decoded", len(raw))
                continue
            png, why = _flate_image(d, raw)
            if png is None:
                undecoded.add(why, len(raw))
                continue
            found += 1
            yield Decoded(png, "image/png", "FlateDecode", start, len(raw))
            continue
        name = (filters[0].decode("ascii", "replace") if filters else "unfiltered")
        if not filters:
            png, why = _flate_image(d, zlib.compress(raw, 1))
            if png is not None:
                found += 1
                yield Decoded(png, "image/png", "", start, len(raw))
                continue
            undecoded.add(why, len(raw))
            continue
        undecoded.add(f"{name} images not decoded", len(raw))


# --- SQLite ---------------------------------------------------------------------------------

SQLITE_MAX_STEPS = 20_000_000           # virtual machine steps per database (hostile input)
_PICTURE_PREFIXES = ("ffd8ff", "89504e47", "47494638", "52494646", "424d", "49492a00",
                     "4d4d002a")
_HEIF = "00000018667479706865", "0000001c667479706865", "00000020667479706865"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sqlite_blobs(data: bytes, undecoded: Undecoded) -> Iterator[Decoded]:
    """Pictures kept in a SQLite database's blobs (chat apps keep thumbnails and media so).

    The database is opened from memory, read-only, with a bound on SQLite's work; a blob is a
    member named `table.column[rowid=N]`. Tables without rowid, and a database SQLite cannot
    read, are reported undecoded."""
    con = sqlite3.connect(":memory:")
    steps = [0]

    def progress() -> int:
        steps[0] += 1
        return 1 if steps[0] * 1000 > SQLITE_MAX_STEPS else 0

    try:
        con.deserialize(bytes(data))
        con.execute("PRAGMA query_only = 1")
        con.set_progress_handler(progress, 1000)
        tables = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        found = 0
        for table in tables:
            try:
                cols = [r[1] for r in con.execute(f"PRAGMA table_info({_quote(table)})")]
            except sqlite3.DatabaseError:
                undecoded.add("tables SQLite cannot read", len(data))
                continue
            for col in cols:
                prefixes = " OR ".join(f"hex(substr({_quote(col)}, 1, {len(p) // 2})) = '{p.upper()}'"
                                       for p in _PICTURE_PREFIXES + _HEIF)
                sql = (f"SELECT rowid, {_quote(col)} FROM {_quote(table)} "
                       f"WHERE typeof({_quote(col)}) = 'blob' AND ({prefixes})")
                try:
                    rows = con.execute(sql)
                    for rowid, blob in rows:
                        ctype = sniff(bytes(blob[:64]))
                        if ctype not in PICTURE_TYPES:
                            continue
                        if found >= MAX_ITEMS:
                            undecoded.add(f"blobs past the first {MAX_ITEMS} pictures",
                                          len(data))
                            return
                        found += 1
                        yield Decoded(bytes(blob), ctype, member=f"{table}.{col}[rowid={rowid}]")
                except sqlite3.OperationalError as exc:
                    if "interrupted" in str(exc):
                        undecoded.add("database over the SQLite work limit", len(data))
                        return
                    undecoded.add("columns without rowid or unreadable", len(data))
                except sqlite3.DatabaseError:
                    undecoded.add("database pages SQLite cannot read", len(data))
    except sqlite3.OperationalError as exc:
        why = ("database over the SQLite work limit" if "interrupted" in str(exc)
               else "database SQLite cannot open")
        undecoded.add(why, len(data))
    except (sqlite3.DatabaseError, ValueError, OverflowError, MemoryError):
        undecoded.add("database SQLite cannot open", len(data))
    finally:
        con.close()


def decoded_record(parent: FileRecord, item: Decoded) -> FileRecord:
    """A FileRecord for a picture decoded from inside `parent`: a blob is a member of the
    database; a decoded PDF image has the PDF as parent, the encoded range and its filter."""
    p = parent.prov
    ext = _EXT.get(item.content_type, "bin")
    if item.member:
        prov, name = p.member_of(item.member), item.member
    else:
        prov = Provenance(device_id=p.device_id, volume_offset=p.volume_offset,
                          path=f"{p.path}@{item.offset}.{ext}", volume_index=p.volume_index,
                          fs_type=p.fs_type, parent=p, offset=item.offset, length=item.length,
                          decoded=item.decoded, cache_entry_hash=item.cache_entry_hash,
                          cache_entry_id=item.cache_entry_id)
        name = f"{parent.name}@{item.offset}.{ext}"
    return FileRecord(prov=prov, name=name, size=len(item.data), allocated=parent.allocated,
                      fs_type=parent.fs_type, mtime=parent.mtime, atime=parent.atime,
                      ctime=parent.ctime, crtime=parent.crtime, type=item.content_type)


_EXT = {"image/jpeg": "jpg", "image/png": "png", "image/gif": "gif", "image/bmp": "bmp",
        "image/webp": "webp", "image/tiff": "tif", "image/heic": "heic", "image/heif": "heif"}


# --- Windows thumbnail caches (thumbcache_*.db) -----------------------------------------------

# format version -> (entry header size, where the file header keeps the first entry's offset).
# Layouts from libyal's "Windows Explorer Thumbnail Cache database format" and Thumbcache
# Viewer's notes: 20 Vista (the entry has a file extension), 21 Windows 7, 26/28/30 Windows 8
# (28 has one more header field), 31 Windows 8.1, 32 Windows 10 and 11 (8 and later: the
# thumbnail's width and height in the entry).
_THUMBCACHE = {20: (56, 12), 21: (48, 12), 26: (56, 12), 28: (56, 16), 30: (56, 16),
               31: (56, 16), 32: (56, 16)}
THUMBCACHE_MAX_ID = 2048                # bytes of identifier (Windows writes 16 hex digits)
THUMBCACHE_MAX_ENTRIES = 1_000_000      # entries walked, with data or not (hostile input)


@dataclass
class CacheWalk:
    """A thumbnail cache read entry by entry: the entries with data, and `rest`, the offset
    where the walk stopped short of the file's end (a damaged entry, an unknown version), or
    None when it read every entry; `why` says why it stopped."""

    entries: list = field(default_factory=list)
    rest: Optional[int] = None
    why: str = ""


def thumbcache_entries(data) -> CacheWalk:
    """The entries of a Windows thumbcache_*.db (Vista to 11), each entry with data as a
    Decoded: its data range, the cache-entry hash (16 hex digits) and the identifier (UTF-16,
    decoded with replacement characters). Every declared size is checked against the entry
    and the file; entry checksums (a CRC-64 of unpublished polynomial) are not checked. The
    walk always moves forward by at least one entry header, so it ends."""
    walk = CacheWalk()
    size = len(data)
    if size < 24 or bytes(data[:4]) != b"CMMM":
        walk.rest, walk.why = 0, "no thumbnail cache header"
        return walk
    version = struct.unpack_from("<I", data, 4)[0]
    layout = _THUMBCACHE.get(version)
    if layout is None:
        walk.rest, walk.why = 24, f"thumbnail cache format version {version} not known"
        return walk
    fixed, first_at = layout
    pos = struct.unpack_from("<I", data, first_at)[0] if first_at + 4 <= size else 0
    if pos == 0:                # "not set": an empty cache, unless an entry follows the header
        pos = 28 if version == 28 else 24
        if bytes(data[pos:pos + 4]) != b"CMMM":
            return walk
    if pos > size:
        walk.rest, walk.why = 0, f"a first entry offset ({pos}) past the end of the file"
        return walk
    walked = 0
    while pos < size:
        if walked >= THUMBCACHE_MAX_ENTRIES:
            walk.rest, walk.why = pos, f"entries past the first {THUMBCACHE_MAX_ENTRIES:,}"
            return walk
        walked += 1
        if bytes(data[pos:pos + 4]) != b"CMMM" or pos + fixed > size:
            if not _zeros(data, pos):          # zeros after the last entry end the file
                walk.rest, walk.why = pos, f"a damaged entry at offset {pos}"
            return walk
        esize, = struct.unpack_from("<I", data, pos + 4)
        h, = struct.unpack_from("<Q", data, pos + 8)
        at = pos + (24 if version == 20 else 16)
        ident, pad, dsize = struct.unpack_from("<III", data, at)
        body = fixed + ident + pad + dsize
        if esize < fixed or pos + esize > size or body > esize or ident > THUMBCACHE_MAX_ID:
            walk.rest, walk.why = pos, f"an entry at offset {pos} whose sizes do not fit"
            return walk
        if dsize:
            start = pos + fixed + ident + pad
            name = bytes(data[pos + fixed:pos + fixed + ident]).decode("utf-16-le", "replace")
            blob = bytes(data[start:start + dsize])
            walk.entries.append(Decoded(blob, sniff(blob[:64]) or "", offset=start,
                                        length=dsize, cache_entry_hash=f"{h:016x}",
                                        cache_entry_id=name))
        pos += esize
    return walk


def _zeros(data, at: int) -> bool:
    import numpy as np
    return not np.frombuffer(data, dtype=np.uint8, offset=at).any() if at < len(data) else True


# --- OLE compound files ---------------------------------------------------------------------

OLE_MAX_STREAMS = 10_000


def ole_streams(data: bytes, undecoded: Undecoded) -> Iterator[tuple[str, bytes]]:
    """Every stream of an OLE2 compound file (Thumbs.db, Office 97 documents), by its path
    in the file (`storage/stream`), read through olefile. Sectors that chain badly, and a file
    olefile cannot parse, go to `undecoded`."""
    import olefile

    try:
        ole = olefile.OleFileIO(io.BytesIO(bytes(data)))
    except Exception as exc:   # noqa: BLE001 - olefile raises many kinds on hostile input
        undecoded.add(f"OLE files olefile cannot open ({type(exc).__name__})", len(data))
        return
    try:
        entries = ole.listdir(streams=True, storages=False)
        if len(entries) > OLE_MAX_STREAMS:
            undecoded.add(f"streams past the first {OLE_MAX_STREAMS}", len(data))
            entries = entries[:OLE_MAX_STREAMS]
        for parts in entries:
            name = "/".join(parts)
            try:
                if ole.get_size(parts) > len(data):
                    raise ValueError("declares more bytes than the file holds")
                blob = ole.openstream(parts).read()
            except Exception as exc:   # noqa: BLE001 - a broken chain, a loop, a bad size
                undecoded.add(f"streams olefile cannot read ({type(exc).__name__})",
                              min(len(data), max(0, _ole_size(ole, parts))))
                continue
            yield name, blob
    finally:
        ole.close()


def _ole_size(ole, parts) -> int:
    try:
        return int(ole.get_size(parts))
    except Exception:   # noqa: BLE001
        return 0


def is_thumbs_db(names: list[str]) -> bool:
    """Windows' Thumbs.db: a Catalog stream (XP) or 256_/96_... streams (Vista and later),
    whose every stream is a thumbnail stored whole after a small header."""
    return "Catalog" in names or any(re.fullmatch(r"\d+_[0-9a-f]+", n) for n in names)
