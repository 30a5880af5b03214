"""Archives (zip, tar): walk the members of an archive held in memory, with limits.

Members are read as streams of chunks, so a member is never expanded into memory unless it is
itself a picture or an archive (the same rule as for files). One `Budget` is shared by the
whole tree of archives under one file: it bounds the total expanded bytes and the number of
members, whatever the nesting. Everything refused (encrypted members, bombs, corrupt archives,
limits reached) becomes a Coverage record; nothing is dropped silently.

The zip reader trusts a member's declared size as an upper bound: Python's zipfile stops
decompressing at the declared size and checks the CRC, so a member cannot expand past what
its header says. That makes the declared size a safe thing to budget before reading.
"""
from __future__ import annotations

import gzip
import io
import posixpath
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Iterator, Optional

from triage.features.hashing import ReadAborted
from triage.units import human_bytes
from triage.records import ARCHIVE, Coverage, FileRecord, Provenance

CHUNK = 1024 * 1024
# zipfile parses the whole central directory into ZipInfo objects (~0.5 KiB each) before the
# first member can be read; past this many declared entries the zip is not opened at all.
ZIP_MAX_ENTRIES = 250_000
# Errors an archive library raises on hostile or damaged bytes.
ARCHIVE_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, zlib.error,
                  EOFError, OSError, ValueError, KeyError, IndexError, NotImplementedError,
                  RuntimeError, OverflowError, UnicodeDecodeError, LookupError)


class Budget:
    """Expanded bytes and members left for one file's whole archive tree."""

    def __init__(self, max_bytes: int, max_members: int):
        self.max_bytes = max_bytes
        self.max_members = max_members
        self.bytes_left = max_bytes
        self.members_left = max_members

    def metered(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        """Pass chunks through, stopping the read (ReadAborted) when the bytes run out."""
        for chunk in chunks:
            self.bytes_left -= len(chunk)
            if self.bytes_left < 0:
                raise ReadAborted(
                    f"archive expansion limit ({human_bytes(self.max_bytes)}) reached")
            yield chunk


@dataclass(frozen=True)
class Member:
    """One regular-file member, not yet read."""

    name: str
    size: int                    # declared (zip: an upper bound the reader enforces)
    compressed_size: int
    encrypted: bool
    mtime: Optional[float]
    open: Callable[[], Iterator[bytes]]
    method: str = ""             # compression method, for messages
    size_known: bool = True      # False for gzip: ISIZE is modulo 4 GiB and of the last member


def member_record(parent: FileRecord, m: Member) -> FileRecord:
    """A FileRecord for a member: the archive's provenance plus the member path."""
    base = posixpath.basename(m.name.rstrip("/")) or m.name
    return FileRecord(prov=parent.prov.member_of(m.name), name=base,
                      size=m.size if m.size_known else 0,   # 0: filled in once read
                      allocated=parent.allocated, fs_type=parent.fs_type,
                      orphan=parent.orphan, mtime=m.mtime)


# --- readers ---------------------------------------------------------------------------------

def _stream(fileobj_factory) -> Iterator[bytes]:
    with fileobj_factory() as f:
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                return
            yield chunk


def _zip_time(date_time) -> Optional[float]:
    # zip stores local time without a zone; it is reported as if it were UTC
    try:
        return datetime(*date_time, tzinfo=timezone.utc).timestamp()
    except (TypeError, ValueError):
        return None


_ZIP_METHODS = {0: "stored", 8: "deflate", 9: "deflate64", 12: "bzip2", 14: "lzma",
                93: "zstd", 98: "ppmd", 99: "aes"}


class TooManyEntries(ValueError):
    """A zip whose central directory declares more entries than a worker should parse."""


def zip_entry_count(data: bytes) -> Optional[int]:
    """Entries declared by the zip's end-of-central-directory record (zip64 too); None when
    there is no end record (zipfile then reports the damage)."""
    pos = data.rfind(b"PK\x05\x06", max(0, len(data) - (22 + 65535)))
    if pos < 0 or pos + 22 > len(data):
        return None
    total = struct.unpack_from("<H", data, pos + 10)[0]
    loc = pos - 20
    if total == 0xFFFF and loc >= 0 and data[loc:loc + 4] == b"PK\x06\x07":
        off = struct.unpack_from("<Q", data, loc + 8)[0]
        if off + 56 <= len(data) and data[off:off + 4] == b"PK\x06\x06":
            total = struct.unpack_from("<Q", data, off + 32)[0]
    return total


def zip_members(data: bytes, name: str = "") -> tuple[int, Iterator[Member]]:
    """(member count, members) of a zip; raises one of ARCHIVE_ERRORS when it is corrupt."""
    declared = zip_entry_count(data)
    if declared is not None and declared > ZIP_MAX_ENTRIES:
        raise TooManyEntries(f"central directory declares {declared} entries, over the "
                             f"{ZIP_MAX_ENTRIES} a worker parses")
    zf = zipfile.ZipFile(io.BytesIO(data))
    infos = [i for i in zf.infolist() if not i.is_dir()]

    def gen() -> Iterator[Member]:
        for info in infos:
            yield Member(name=info.filename, size=info.file_size,
                         compressed_size=info.compress_size,
                         # bit 0: traditional or AES encryption; method 99 is WinZip AES
                         encrypted=bool(info.flag_bits & 0x1) or info.compress_type == 99,
                         mtime=_zip_time(info.date_time),
                         open=lambda info=info: _stream(lambda: zf.open(info)),
                         method=_ZIP_METHODS.get(info.compress_type, str(info.compress_type)))
    return len(infos), gen()


def tar_members(data: bytes, name: str = "") -> tuple[int, Iterator[Member]]:
    """(-1: unknown count, members) of an uncompressed tar; headers are parsed lazily."""
    tf = tarfile.open(fileobj=io.BytesIO(data), mode="r:")

    def gen() -> Iterator[Member]:
        for ti in tf:
            if not ti.isreg():
                continue
            yield Member(name=ti.name, size=ti.size, compressed_size=ti.size, encrypted=False,
                         mtime=float(ti.mtime) if ti.mtime else None,
                         open=lambda ti=ti: _stream(lambda: tf.extractfile(ti)), method="tar")
    return -1, gen()


def _gzip_header_name(data: bytes) -> str:
    """The original file name stored in a gzip header (FNAME), "" when absent."""
    if len(data) < 10 or not data[3] & 0x08:
        return ""
    pos = 10
    if data[3] & 0x04:                                    # FEXTRA: 2-byte length, then data
        pos += 2 + struct.unpack_from("<H", data, pos)[0]
    end = data.find(b"\x00", pos, pos + 4096)
    return data[pos:end].decode("latin-1") if end > pos else ""


class NotAnArchive(ValueError):
    """Bytes that carry an archive's signature but are not one (random data, a fragment)."""


def _check_gzip(data: bytes) -> None:
    """Random bytes beginning 1f 8b carry a random trailer, whose ISIZE would then read as a
    bomb: the stream must decode before its declared size is believed."""
    if len(data) < 18:
        raise NotAnArchive("not a valid gzip stream: shorter than a gzip header and trailer")
    if data[2] != 8 or data[3] & 0xE0:
        raise NotAnArchive(f"not a valid gzip stream: compression method {data[2]}, flags "
                           f"{data[3]:#04x} (gzip has deflate, 8, and no reserved flags)")
    try:
        zlib.decompressobj(wbits=31).decompress(data[:65536], 65536)
    except zlib.error as exc:
        raise NotAnArchive(f"not a valid gzip stream: {exc}") from None


def gzip_members(data: bytes, name: str = "") -> tuple[int, Iterator[Member]]:
    """The one member of a gzip file (concatenated gzip members read as one stream).

    Its name is the one stored in the header, else the file's name less `.gz` (`.tgz` ->
    `.tar`). The declared size is the trailer's ISIZE (modulo 4 GiB, and forgeable), so the
    shared budget, which meters the bytes actually produced, is what really bounds it.
    """
    _check_gzip(data)
    base = posixpath.basename(name)
    stem = base[:-4] + ".tar" if base.lower().endswith(".tgz") else \
        base[:-3] if base.lower().endswith(".gz") else base + ".out"
    inner = _gzip_header_name(data) or stem
    isize = struct.unpack_from("<I", data, len(data) - 4)[0] if len(data) >= 18 else 0
    mtime = struct.unpack_from("<I", data, 4)[0] if len(data) >= 10 else 0
    member = Member(name=inner, size=isize, compressed_size=len(data), encrypted=False,
                    mtime=float(mtime) or None,
                    open=lambda: _stream(lambda: gzip.GzipFile(fileobj=io.BytesIO(data))),
                    method="gzip", size_known=False)
    return 1, iter((member,))


READERS = {"application/zip": zip_members, "application/x-tar": tar_members,
           "application/gzip": gzip_members}
KINDS = {"application/zip": "zip", "application/x-tar": "tar", "application/gzip": "gzip"}
OPENABLE = frozenset(READERS)


# --- the walk --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Limits:
    max_ratio: float              # declared / compressed size above which a big member is a bomb
    ratio_min_bytes: int          # ... but only members at least this large


def expand(record: FileRecord, data: bytes, content_type: str, budget: Budget, limits: Limits,
           analyse_member: Callable[[FileRecord, Iterator[bytes]], object]
           ) -> tuple[list, list[Coverage]]:
    """Analyse every member of the archive `data` (the content of `record`).

    Returns (member analyses, coverage). `analyse_member(member_record, chunks)` is the caller's
    analysis of one member (recursion into nested archives happens there).
    """
    prov = record.prov
    coverage: list[Coverage] = []

    def cover(where: Provenance, reason: str, nbytes: int = 0) -> None:
        coverage.append(Coverage(device_id=prov.device_id, kind=ARCHIVE, where=where,
                                 reason=reason, bytes_not_examined=max(0, nbytes)))

    analyses: list = []
    kind = KINDS[content_type]
    try:
        count, members = READERS[content_type](data, record.name)
        seen = 0
        for m in members:
            seen += 1
            mrec = member_record(record, m)
            if budget.members_left <= 0:
                rest = f"{count - seen + 1} of {count}" if count >= 0 else "the remaining"
                cover(record.prov, f"archive member limit ({budget.max_members}) reached: "
                                  f"{rest} members of this {kind} not examined")
                break
            if m.encrypted:
                cover(mrec.prov, f"encrypted {kind} member not examined "
                                f"({human_bytes(m.size)} declared)", m.size)
                budget.members_left -= 1
                continue
            ratio = m.size / max(1, m.compressed_size)
            if m.size >= limits.ratio_min_bytes and ratio > limits.max_ratio:
                cover(mrec.prov, f"{kind} bomb refused: member declares {human_bytes(m.size)} "
                                f"from {human_bytes(m.compressed_size)} ({ratio:.0f}:1, "
                                f"limit {limits.max_ratio:g}:1)", m.size)
                budget.members_left -= 1
                continue
            if m.size > budget.bytes_left:
                cover(mrec.prov, f"{kind} bomb refused: member declares {human_bytes(m.size)}, "
                                f"over what is left of the {human_bytes(budget.max_bytes)} "
                                f"expansion limit", m.size)
                budget.members_left -= 1
                continue
            budget.members_left -= 1
            try:
                analyses.append(analyse_member(mrec, budget.metered(m.open())))
            except NotImplementedError as exc:
                cover(mrec.prov, f"{kind} member not examined: unsupported compression "
                                f"({m.method}): {exc}", m.size)
            except ARCHIVE_ERRORS as exc:
                cover(mrec.prov, f"corrupt {kind} member: {_one_line(exc)}", m.size)
    except TooManyEntries as exc:
        cover(record.prov, f"{kind} not opened: {exc}", len(data))
    except NotAnArchive as exc:
        cover(record.prov, str(exc), len(data))
    except ARCHIVE_ERRORS as exc:
        cover(record.prov, f"corrupt {kind} archive: {_one_line(exc)}",
              len(data) if not analyses else 0)
    return analyses, coverage


def _one_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:240]
