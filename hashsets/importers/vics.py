"""VICS JSON (Project VIC, UK CAID), versions 1.x (`odata.metadata`) and 2.0 (`@odata.context`).

Two shapes (docs/formats.md 1.3): a hash-set distribution, `value` = flat list of Media, and a
case export, `value` = Cases each holding `Media`. Vendors get the `#Media`/`#Cases` URL
fragment wrong, so the shape is read from the structure. The file is streamed with ijson's C
backend: memory holds one Media record at a time, never the file.

Lenient on purpose: booleans and sizes may be strings, hashes upper or lower case, the file may
start with a UTF-8 BOM, SHA-1 may sit in 1.x `AlternativeHashes`. PhotoDNA is kept as given
(it cannot be computed without the licensed library).
"""
from __future__ import annotations

import re
from pathlib import Path

import ijson

from hashsets.build import SetBuilder
from hashsets.importers import ImportOptions, SourceFacts
from triage.errors import HashSetError

_PROFILE = re.compile(r"/DataModels/[^/]+\.xml/([A-Za-z]+)/", re.I)
_MEDIA_KEYS = {"MD5", "SHA1", "MediaID", "Category", "PhotoDNA", "MediaSize", "md5", "sha1"}
_PEEK_EVENTS = 200_000
_BATCH = 50_000


def profile_from_context(url: str) -> str:
    m = _PROFILE.search(url or "")
    return m.group(1).upper() if m else ""


def _open(path: Path):
    f = open(path, "rb")
    if f.read(3) != b"\xef\xbb\xbf":
        f.seek(0)
    return _NumberGuard(f)


MAX_DIGITS = 1000       # no VICS field holds a number this long; Python refuses past 4,300
_LONG = re.compile(rb"([:,\[]\s*-?)[0-9]{%d,}" % (MAX_DIGITS + 1))
_TRAILING = re.compile(rb"([:,\[]\s*-?)?([0-9]+)\Z")
_TOO_LONG_TEXT = "(number too long)"
TOO_LONG = b'"' + _TOO_LONG_TEXT.encode() + b'"'


class _NumberGuard:
    """The file as ijson reads it, with every number of more than MAX_DIGITS digits replaced by
    a string, so its record is rejected and counted. ijson's C backend converts integers with
    Python's int(), which refuses more than 4,300 digits; the error went unhandled in C and a
    hash set with one such number killed the process (SIGSEGV). Memory stays a chunk."""

    def __init__(self, f):
        self._f = f
        self._tail = b""
        self._skipping = False          # inside a number already replaced: drop its digits

    def read(self, n: int = -1) -> bytes:
        if n == 0:                      # ijson probes the stream's type with read(0)
            return b""
        while True:
            chunk = self._f.read(n if n and n > 0 else 65536)
            if self._skipping:
                rest = chunk.lstrip(b"0123456789")
                if chunk and not rest:
                    continue
                self._skipping, chunk = False, rest
            data, self._tail = self._tail + chunk, b""
            if not chunk:
                return _LONG.sub(rb"\1" + TOO_LONG, data)
            m = _TRAILING.search(data)
            if m:
                if len(m.group(2)) > MAX_DIGITS:
                    if m.group(1) is not None:          # a number token: cut it here
                        self._skipping = True
                        data = data[:m.start()] + m.group(1) + TOO_LONG
                    # else digits inside a string: they go through as they are
                else:                                   # may go on in the next chunk
                    data, self._tail = data[:m.start()], data[m.start():]
            if data:
                return _LONG.sub(rb"\1" + TOO_LONG, data)

    def tell(self) -> int:
        return self._f.tell()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def _shape(path: Path) -> tuple[str, str]:
    """(ijson prefix of the Media records, context URL)."""
    context = ""
    with _open(path) as f:
        try:
            for n, (prefix, event, value) in enumerate(ijson.parse(f)):
                if event == "string" and prefix in ("@odata.context", "odata.metadata"):
                    context = value
                elif event == "map_key":
                    if prefix == "value.item":
                        if value == "Media":
                            return "value.item.Media.item", context
                        if value in _MEDIA_KEYS:
                            return "value.item", context
                    elif prefix == "" and value == "Media":
                        return "Media.item", context
                    elif prefix == "item" and value in _MEDIA_KEYS:
                        return "item", context           # a bare JSON array of Media records
                if n > _PEEK_EVENTS:
                    break
        except ijson.JSONError as exc:
            raise HashSetError(f"{path.name} is not a VICS hash set (not valid JSON: "
                               f"{str(exc).splitlines()[0][:80]})") from None
    raise HashSetError(f"{path.name} is not a VICS hash set (JSON without Media records "
                       "under `value`)")


def _scalar(v):
    """A field as a plain value: a list or object where a scalar belongs (hostile or broken
    input) becomes its text, and is then judged like any other bad value."""
    return v if v is None or isinstance(v, (str, int, float, bool)) else str(v)[:100]


def _bool(v):
    if v is None or v == "":
        return None
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("true", "1", "yes"):
        return True
    if s in ("false", "0", "no"):
        return False
    return None


def _category(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v).strip()


def _alternative(alts, sha1, sha256):
    """SHA-1 / SHA-256 from VICS 1.x AlternativeHashes when the record has none of its own."""
    for alt in alts or ():
        if isinstance(alt, dict):
            name = str(alt.get("HashName", "")).upper().replace("-", "")
            if name == "SHA1" and not sha1:
                sha1 = alt.get("HashValue") or ""
            elif name == "SHA256" and not sha256:
                sha256 = alt.get("HashValue") or ""
    return sha1, sha256


def read(path: Path, builder: SetBuilder, options: ImportOptions) -> SourceFacts:
    prefix, context = _shape(path)
    size = max(1, path.stat().st_size)
    md5s, md5_meta, sha1s, sha1_meta, sha256s, sha256_meta = [], [], [], [], [], []
    md5_n, sha1_n, sha256_n = [], [], []     # each hash's Media record number, for rejections
    latest = ""
    n = 0
    metas: dict[tuple, int] = {}          # raw (Category, Series, ...) -> side-table row

    def flush():
        builder.add_hex("md5", md5s, md5_meta, where="media", numbers=md5_n)
        builder.add_hex("sha1", sha1s, sha1_meta, where="media", numbers=sha1_n)
        builder.add_hex("sha256", sha256s, sha256_meta, where="media", numbers=sha256_n)
        for lst in (md5s, md5_meta, sha1s, sha1_meta, sha256s, sha256_meta, md5_n, sha1_n,
                    sha256_n):
            lst.clear()

    with _open(path) as f:
        try:
            for media in ijson.items(f, prefix, use_float=True):
                n += 1
                if not isinstance(media, dict):
                    builder.reject(f"media {n}", repr(media))
                    continue
                if any(v == _TOO_LONG_TEXT for v in media.values()):
                    builder.reject(f"media {n}", f"a number of more than {MAX_DIGITS} digits")
                    continue
                get = media.get
                md5 = get("MD5") or get("md5") or ""
                sha1 = get("SHA1") or get("sha1") or ""
                sha256 = get("SHA256") or ""
                if "AlternativeHashes" in media:
                    sha1, sha256 = _alternative(media["AlternativeHashes"], sha1, sha256)
                # Fast path: well-formed strings go straight in (fromhex takes either case).
                if type(md5) is not str or len(md5) != 32:
                    md5 = str(md5).strip()
                if type(sha1) is not str or len(sha1) != 40:
                    sha1 = str(sha1).strip()
                if sha256:
                    sha256 = str(sha256).strip()
                if len(md5) != 32 and len(sha1) != 40 and len(sha256) != 64:
                    builder.reject(f"media {n}", f"no valid MD5/SHA1 in {str(media)[:100]}")
                    continue
                raw = tuple(_scalar(get(k)) for k in ("Category", "Series", "VictimIdentified",
                                                      "IsDistributed"))
                meta = metas.get(raw)
                if meta is None:
                    meta = metas[raw] = builder.meta_id(_category(raw[0]), str(raw[1] or ""),
                                                        _bool(raw[2]), _bool(raw[3]))
                if md5:
                    if len(md5) == 32:
                        md5s.append(md5)
                        md5_meta.append(meta)
                        md5_n.append(n)
                    else:
                        builder.reject(f"media {n}", f"md5 {md5!r}")
                if sha1:
                    if len(sha1) == 40:
                        sha1s.append(sha1)
                        sha1_meta.append(meta)
                        sha1_n.append(n)
                    else:
                        builder.reject(f"media {n}", f"sha1 {sha1!r}")
                if sha256:
                    if len(sha256) == 64:
                        sha256s.append(sha256)
                        sha256_meta.append(meta)
                        sha256_n.append(n)
                    else:
                        builder.reject(f"media {n}", f"sha256 {sha256!r}")
                pdna = get("PhotoDNA")
                if pdna and len(md5) == 32:
                    builder.photodna.append((md5.lower(), str(pdna)))
                updated = get("DateUpdated")
                if isinstance(updated, str) and updated > latest:
                    latest = updated
                if n % _BATCH == 0:
                    flush()
                    builder.progress(f.tell() / size)
        except ijson.JSONError as exc:
            # A truncated or damaged tail: keep what was read, report the break as a rejection.
            builder.reject(f"after media {n}", f"JSON error: {str(exc).splitlines()[0][:80]}")
    flush()
    builder.source_records += n
    builder.progress(1.0)
    profile = (options.profile or profile_from_context(context)).upper()
    return SourceFacts(source_date=latest, profile=profile,
                       detail={"context": context, "shape": "cases" if "Media" in prefix else "media",
                               "vics_version": "1.x" if "ICMEC" in context or not context.count("2.0")
                               else "2.0"})
