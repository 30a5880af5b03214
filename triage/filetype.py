"""Content type from magic bytes, and whether it disagrees with the file name's extension.

A picture renamed `.dat` is still a picture: every later stage trusts `sniff`, never the name.
"""
from __future__ import annotations

import os

HEAD_BYTES = 64  # enough for every signature below
# A compressed member that expands more than BOMB_RATIO times its stored size, and to at least
# BOMB_MIN_BYTES, is a decompression bomb: refused (a coverage gap), whether it is an archive
# inside a file (features/archives.py) or a member of a phone extraction (extractions.py).
BOMB_RATIO = 100.0
BOMB_MIN_BYTES = 64 * 1024 * 1024

# (offset, signature, mime type); checked in order, so longer/more specific ones come first
_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (0, b"BM", "image/bmp"),
    (0, b"II*\x00", "image/tiff"),
    (0, b"MM\x00*", "image/tiff"),
    (0, b"PK\x03\x04", "application/zip"),
    (0, b"PK\x05\x06", "application/zip"),
    (0, b"%PDF-", "application/pdf"),
    (0, b"\x1f\x8b", "application/gzip"),
    (0, b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
    (0, b"Rar!\x1a\x07", "application/vnd.rar"),
    (0, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "application/x-ole-storage"),
    (0, b"CMMM", "application/x-windows-thumbcache"),
    # Chrome's disk cache: a simple-cache entry (its body is the file as downloaded) and a
    # block file (data_1..data_3: small bodies in blocks)
    (0, b"\x30\x5c\x72\xa7\x1b\x6d\xfb\xfc", "application/x-chrome-cache-entry"),
    (0, b"\xc3\xca\x04\xc1", "application/x-chrome-cache-block"),
    (0, b"FLV\x01", "video/x-flv"),
    (0, b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", "video/x-ms-asf"),
    (0, b"\x00\x00\x01\xba", "video/mpeg"),
    (0, b"SQLite format 3\x00", "application/vnd.sqlite3"),
    (0, b"\x7fELF", "application/x-elf"),
    (0, b"MZ", "application/x-msdownload"),
    (0, b"\x1aE\xdf\xa3", "video/x-matroska"),
    (0, b"OggS", "audio/ogg"),
    (0, b"ID3", "audio/mpeg"),
    (0, b"{\\rtf", "application/rtf"),
    (257, b"ustar", "application/x-tar"),
)

_FTYP_BRANDS = {
    b"heic": "image/heic", b"heix": "image/heic", b"hevc": "image/heic", b"heim": "image/heic",
    b"heis": "image/heic", b"mif1": "image/heif", b"msf1": "image/heif", b"avif": "image/avif",
    b"qt  ": "video/quicktime", b"M4A ": "audio/mp4", b"3gp4": "video/3gpp", b"3gp5": "video/3gpp",
    b"3g2a": "video/3gpp", b"3gp6": "video/3gpp", b"3gp7": "video/3gpp",
}

PICTURE_TYPES = frozenset({
    "image/jpeg", "image/png", "image/gif", "image/bmp", "image/tiff", "image/webp",
    "image/heic", "image/heif",
})
VIDEO_TYPES = frozenset({"video/mp4", "video/quicktime", "video/x-msvideo", "video/x-matroska",
                         "video/x-flv", "video/x-ms-asf", "video/mpeg", "video/3gpp",
                         "video/mp2t"})
# Containers that carry pictures inside them, which nothing opens yet: each is a coverage gap.
EMBEDDING_TYPES = {"application/pdf": "PDF", "application/x-ole-storage": "OLE compound file",
                   "application/x-windows-thumbcache": "Windows thumbnail cache"}
ARCHIVE_TYPES = frozenset({"application/zip", "application/x-tar"})

# extension -> the types it may honestly hold
_EXTENSIONS: dict[str, frozenset[str]] = {
    ".jpg": frozenset({"image/jpeg"}), ".jpeg": frozenset({"image/jpeg"}),
    ".jpe": frozenset({"image/jpeg"}), ".jfif": frozenset({"image/jpeg"}),
    ".png": frozenset({"image/png"}), ".gif": frozenset({"image/gif"}),
    ".bmp": frozenset({"image/bmp"}), ".tif": frozenset({"image/tiff"}),
    ".tiff": frozenset({"image/tiff"}), ".webp": frozenset({"image/webp"}),
    ".heic": frozenset({"image/heic", "image/heif"}), ".heif": frozenset({"image/heic", "image/heif"}),
    ".zip": frozenset({"application/zip"}), ".docx": frozenset({"application/zip"}),
    ".xlsx": frozenset({"application/zip"}), ".pptx": frozenset({"application/zip"}),
    ".odt": frozenset({"application/zip"}), ".jar": frozenset({"application/zip"}),
    ".apk": frozenset({"application/zip"}), ".pdf": frozenset({"application/pdf"}),
    ".gz": frozenset({"application/gzip"}), ".tgz": frozenset({"application/gzip"}),
    ".tar": frozenset({"application/x-tar"}), ".7z": frozenset({"application/x-7z-compressed"}),
    ".rar": frozenset({"application/vnd.rar"}), ".mp4": frozenset({"video/mp4"}),
    ".m4v": frozenset({"video/mp4"}), ".mov": frozenset({"video/quicktime", "video/mp4"}),
    ".avi": frozenset({"video/x-msvideo"}), ".mkv": frozenset({"video/x-matroska"}),
    ".webm": frozenset({"video/x-matroska"}), ".3gp": frozenset({"video/3gpp", "video/mp4"}),
    ".wmv": frozenset({"video/x-ms-asf"}), ".asf": frozenset({"video/x-ms-asf"}),
    ".flv": frozenset({"video/x-flv"}), ".ts": frozenset({"video/mp2t"}),
    ".mts": frozenset({"video/mp2t"}), ".m2ts": frozenset({"video/mp2t"}),
    ".mpg": frozenset({"video/mpeg"}), ".mpeg": frozenset({"video/mpeg"}),
    ".vob": frozenset({"video/mpeg"}), ".exe": frozenset({"application/x-msdownload"}),
    ".dll": frozenset({"application/x-msdownload"}), ".sys": frozenset({"application/x-msdownload"}),
    ".doc": frozenset({"application/x-ole-storage"}), ".xls": frozenset({"application/x-ole-storage"}),
    ".db": frozenset({"application/vnd.sqlite3", "application/x-ole-storage"}),
    ".sqlite": frozenset({"application/vnd.sqlite3"}),
}


# The whole content-type rule as one table: (mime, ((offset, bytes), ...)) each, in order; the
# first rule all of whose parts match the head of the content names its type. `sniff` reads it
# here, and the workers' C path for small files (features/_mbhash.c, small_files) reads the
# same table, so the two cannot disagree on a rule (tests/test_small_files.py checks both).
def _rules() -> tuple[tuple[str, tuple[tuple[int, bytes], ...]], ...]:
    rules = [(mime, ((offset, sig),)) for offset, sig, mime in _SIGNATURES]
    rules += [("image/webp", ((0, b"RIFF"), (8, b"WEBP"))),
              ("video/x-msvideo", ((0, b"RIFF"), (8, b"AVI ")))]
    rules += [(mime, ((4, b"ftyp"), (8, brand))) for brand, mime in _FTYP_BRANDS.items()]
    rules.append(("video/mp4", ((4, b"ftyp"),)))
    # MPEG transport stream: a 0x47 sync byte every 188 bytes (192 in a Blu-ray/AVCHD .m2ts,
    # after a 4-byte time code); three in a row, so it needs the first 512 bytes
    rules += [("video/mp2t", tuple((first + k * size, b"\x47") for k in range(3)))
              for first, size in ((0, 188), (4, 192))]
    return tuple(rules)


SNIFF_RULES = _rules()


def _anchored(rules) -> tuple:
    """The rules as (offset, bytes, ((mime, other parts), ...)) anchors: each run of rules that
    share a first part, checked once for the run (sixteen ftyp brands, one "ftyp")."""
    out: list = []
    for mime, (first, *rest) in rules:
        if out and out[-1][:2] == first:
            out[-1][2].append((mime, tuple(rest)))
        else:
            out.append((*first, [(mime, tuple(rest))]))
    return tuple((offset, sig, tuple(group)) for offset, sig, group in out)


# The anchors a head may match, by its first byte: one at offset 0 only under its own first
# byte, the others under every byte, in the table's order (most random or text content then
# tries three or four anchors, not forty rules).
_BY_FIRST: tuple[tuple, ...] = tuple(
    tuple(a for a in _anchored(SNIFF_RULES) if a[0] != 0 or a[1][0] == b) for b in range(256))


def sniff(head: bytes) -> str:
    """The content type of bytes starting with `head`; "" when unknown, "empty" for no bytes."""
    if not head:
        return "empty"
    for offset, sig, group in _BY_FIRST[head[0]]:
        # (a slice past the end is shorter than the signature, so it does not match)
        if head[offset:offset + len(sig)] == sig:
            for mime, rest in group:
                for at, more in rest:
                    if head[at:at + len(more)] != more:
                        break
                else:
                    return mime
    return ""


def ext_mismatch(name: str, content_type: str) -> bool:
    """True when the name's extension claims one known type and the bytes are another.

    Only extensions we know are judged, and only when the content type is known, so an
    unknown pairing never raises a false alarm.
    """
    if content_type in ("", "empty"):
        return False
    ext = os.path.splitext(name)[1].lower()
    expected = _EXTENSIONS.get(ext)
    if expected is None:
        # a picture or archive hiding behind an unknown or misleading extension
        return content_type in PICTURE_TYPES or content_type in ARCHIVE_TYPES
    return content_type not in expected


def is_picture(content_type: str) -> bool:
    return content_type in PICTURE_TYPES
