"""Phone extractions as evidence: a tar (plain, gzip'd, or inside an Android `adb backup`), a
zip (a Cellebrite UFDR when it holds `report.xml`), or an iTunes/Finder backup folder.

Recognised by content, never by name (`sniff`). The extraction is the device: its members are
its files, walked in archive order and read straight from the evidence file, never extracted
to disk. A member's provenance is the device path (the member name with a leading `/`, or the
phone's own path where the format records one: UFDR's `report.xml`, iTunes' `Manifest.db`) and
an `inode` that locates its bytes again: a plain tar's data offset, a zip's central-directory
entry, a compressed tar's data offset in the inflated stream. A UFDR member keeps its name in
the UFDR as `members`, so both paths are shown.

Names from evidence are names only: `../x` or `/etc/passwd` is listed as that path and read
from the archive like any member; nothing is ever written under it.

Memory stays flat however many members: the zip's central directory and the tar's headers are
read a block at a time (tarfile's own member list is emptied as it goes), and UFDR's path map
is spooled to a temporary SQLite file.
"""
from __future__ import annotations

import bz2
import hashlib
import os
import plistlib
import sqlite3
import stat
import struct
import tarfile
import tempfile
import threading
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Iterator, Optional
from xml.etree.ElementTree import XMLPullParser, ParseError

from triage import filetype
from triage.errors import EvidenceError, ShortRead
from triage.filetype import BOMB_MIN_BYTES, BOMB_RATIO
from triage.localfile import read_chunks
from triage.records import (ARCHIVE, ENCRYPTED, MEDIA_DAMAGED, Coverage, FileRecord, Provenance,
                            VolumeRef)
from triage.units import human_bytes

ADB_MAGIC = b"ANDROID BACKUP\n"
ZIP_LOCAL = b"PK\x03\x04"
ZIP_CENTRAL = b"PK\x01\x02"
ZIP_END = b"PK\x05\x06"
ZIP64_LOCATOR = b"PK\x06\x07"
ZIP64_END = b"PK\x06\x06"
BLOCK = 1 << 20
# what each kind is called in `inspect`, `show` and the volume's fs_type
FS_TYPES = {"tar": "tar", "tar.gz": "tar.gz", "adb": "android-backup", "zip": "zip",
            "ufdr": "ufdr", "itunes": "itunes-backup"}
DESCRIPTIONS = {"tar": "phone extraction (tar)", "tar.gz": "phone extraction (gzip'd tar)",
                "adb": "Android adb backup", "zip": "phone extraction (zip)",
                "ufdr": "Cellebrite UFDR", "itunes": "iTunes/Finder backup"}
ENCRYPTED_BACKUP = "encrypted backup"
BACKUP_DIR = "/$Backup"          # an iTunes backup's own files, as the folder holds them


class Bomb(EvidenceError):
    """Compressed content that expands past the bomb bounds (filetype.BOMB_RATIO)."""


def _is_tar(head: bytes) -> bool:
    return head[257:262] == b"ustar"


def _inflate_head(data: bytes, wbits: int) -> bytes:
    try:
        return zlib.decompressobj(wbits).decompress(data, 1024)
    except zlib.error:
        return b""


def sniff(head: bytes) -> Optional[str]:
    """'tar', 'tar.gz', 'adb' or 'zip' from a file's first bytes (`HEAD` of them); None when
    it is none of them (a zip's UFDR-ness is told from its central directory, later)."""
    if _is_tar(head):
        return "tar"
    if head[:2] == b"\x1f\x8b" and _is_tar(_inflate_head(head, 31)):
        return "tar.gz"
    if head.startswith(ADB_MAGIC):
        return "adb"
    if head.startswith(ZIP_LOCAL) or head.startswith(ZIP_END):
        return "zip"
    return None


def is_itunes_backup(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, "Manifest.db")) or \
        os.path.isfile(os.path.join(folder, "Manifest.plist"))


def device_path(name: str) -> str:
    """A member name as the device path it stands for: one leading `/`, no `./` prefix (what
    `tar -C dir .` writes) and no trailing `/`. Nothing else is cleaned up: `../` stays as a
    name, and never leads anywhere (nothing is written)."""
    name = name.lstrip("/")
    while name.startswith("./"):
        name = name[2:].lstrip("/")
    name = name.rstrip("/")
    return "/" + ("" if name == "." else name)


def _time(value) -> Optional[float]:
    try:
        return float(value) if value else None
    except (TypeError, ValueError):
        return None


def _dos_time(t: int, d: int) -> Optional[float]:
    # zip stores local time without a zone; it is reported as if it were UTC
    try:
        return datetime(1980 + (d >> 9), (d >> 5) & 15, d & 31, t >> 11, (t >> 5) & 63,
                        (t & 31) * 2, tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


# --- reading the evidence file ----------------------------------------------------------------

class _File:
    """A file-like view of the evidence from `base` on (tarfile reads through it)."""

    def __init__(self, read: Callable[[int, int], bytes], size: int, base: int = 0):
        self._read, self._size, self._base, self._pos = read, size, base, 0

    def read(self, n: int = -1) -> bytes:
        left = self._size - self._base - self._pos
        n = left if n is None or n < 0 else max(0, min(n, left))
        data = self._read(self._base + self._pos, n) if n else b""
        self._pos += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        self._pos = {0: offset, 1: self._pos + offset, 2: self._size - self._base + offset}[whence]
        return self._pos

    def tell(self) -> int:
        return self._pos


class _Inflated:
    """A gzip or zlib stream of the evidence, inflated as it is read, forward only. Counts
    what it produces against the bomb bounds: more than BOMB_RATIO times the compressed bytes
    consumed (and at least BOMB_MIN_BYTES) raises Bomb."""

    def __init__(self, read: Callable[[int, int], bytes], size: int, start: int, wbits: int):
        self._read, self._size, self._in = read, size, start
        self._start, self._wbits = start, wbits
        self._d = zlib.decompressobj(wbits)
        self._buf = bytearray()
        self.pos = 0                  # bytes produced and handed out so far
        self._made = 0
        self.ended = False            # the compressed stream ended properly
        self.cut = False              # the file ended inside the compressed stream

    def _fill(self, want: int) -> None:
        while len(self._buf) < want and not (self.ended or self.cut):
            if self._d.unconsumed_tail:
                data = self._d.unconsumed_tail
            else:
                data = self._read(self._in, BLOCK) if self._in < self._size else b""
                self._in += len(data)
                if not data:
                    self.cut = True
                    break
            try:
                out = self._d.decompress(data, min(4 * BLOCK, max(BLOCK, want - len(self._buf))))
            except zlib.error as exc:
                raise EvidenceError(f"compressed stream damaged at byte {self._in:,}: {exc}") from None
            self._made += len(out)
            self._buf += out
            consumed = self._in - self._start
            if self._made > BOMB_MIN_BYTES and self._made > BOMB_RATIO * max(1, consumed):
                raise Bomb(f"decompression bomb: {human_bytes(self._made)} inflated from "
                           f"{human_bytes(consumed)} (over {BOMB_RATIO:g}:1)")
            if self._d.eof:
                rest = self._d.unused_data
                if self._wbits == 31 or self._wbits == 47:
                    # concatenated gzip members are one stream; trailing zeros end it
                    if rest.strip(b"\x00") or (not rest and self._in < self._size and
                                               self._read(self._in, 512).strip(b"\x00")):
                        self._in -= len(rest)
                        self._d = zlib.decompressobj(self._wbits)
                        continue
                self.ended = True

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = 1 << 62
        self._fill(min(n, 1 << 30))
        out = bytes(self._buf[:n])
        del self._buf[:n]
        self.pos += len(out)
        return out

    def skip_to(self, pos: int) -> None:
        while self.pos < pos:
            if not self.read(min(BLOCK, pos - self.pos)):
                raise ShortRead(f"the compressed stream ends at byte {self.pos:,}", pos, self.pos)


# --- the extraction ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _ZipEntry:
    at: int                 # where its central-directory entry is (the member's "inode")
    name: str
    flags: int
    method: int
    csize: int
    usize: int
    local: int              # local header offset (before the prefix shift)
    mtime: Optional[float]
    mode: int
    crc: int = 0
    dos_time: int = 0

    @property
    def is_dir(self) -> bool:
        return self.name.endswith("/") or stat.S_ISDIR(self.mode)

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & 1) or self.method == 99

    @property
    def zipcrypto(self) -> bool:
        """Traditional PKWARE encryption, which --password opens (not AES, not 'strong')."""
        return self.encrypted and self.method != 99 and not self.flags & 0x40

    @property
    def check_byte(self) -> int:
        """What the 12th decrypted header byte must be when the password is right."""
        return (self.dos_time >> 8) & 0xFF if self.flags & 0x8 else self.crc >> 24


CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")     # a central-directory entry's fixed part


def _central(buf: bytes, rel: int, at: int) -> tuple[_ZipEntry, int]:
    """The entry whose fixed part starts at `rel` in `buf` (at byte `at` of the file), and its
    whole length; `buf` must hold the name and extra field too (see `_central_length`)."""
    (_, _, _, flags, method, t, d, crc, csize, usize, nlen, elen, clen, _, _, eattr,
     local) = CENTRAL.unpack_from(buf, rel)
    raw = buf[rel + 46:rel + 46 + nlen]
    name = raw.decode("utf-8", "replace") if flags & 0x800 else raw.decode("cp437")
    usize, csize, local = _zip64(buf[rel + 46 + nlen:rel + 46 + nlen + elen], usize, csize, local)
    return _ZipEntry(at=at, name=name, flags=flags, method=method, csize=csize, usize=usize,
                     local=local, mtime=_dos_time(t, d), mode=eattr >> 16, crc=crc,
                     dos_time=t), 46 + nlen + elen + clen


def _central_length(buf: bytes, rel: int) -> int:
    nlen, elen, clen = struct.unpack_from("<HHH", buf, rel + 28)
    return 46 + nlen + elen + clen


class _ZipCrypto:
    """Traditional PKWARE zip decryption (APPNOTE 6.1), keyed by the password."""

    def __init__(self, password: bytes):
        self.k = [0x12345678, 0x23456789, 0x34567890]
        for b in password:
            self._update(b)

    @staticmethod
    def _crc(crc: int, b: int) -> int:
        return ~zlib.crc32(bytes((b,)), ~crc & 0xFFFFFFFF) & 0xFFFFFFFF

    def _update(self, b: int) -> None:
        k = self.k
        k[0] = self._crc(k[0], b)
        k[1] = ((k[1] + (k[0] & 0xFF)) * 134775813 + 1) & 0xFFFFFFFF
        k[2] = self._crc(k[2], k[1] >> 24)

    def decrypt(self, data: bytes) -> bytes:
        out = bytearray(len(data))
        for i, c in enumerate(data):
            t = (self.k[2] | 2) & 0xFFFF
            p = c ^ (((t * (t ^ 1)) >> 8) & 0xFF)
            self._update(p)
            out[i] = p
        return bytes(out)


class Extraction:
    """One opened extraction. `read` is the evidence file's reader (`Source.read`)."""

    def __init__(self, kind: str, read: Callable[[int, int], bytes], size: int,
                 root: Optional[str] = None):
        self.kind = kind
        self._read, self.size, self.root = read, size, root
        self._lock = threading.Lock()
        self._stream: Optional[_Inflated] = None      # the last compressed stream read
        self._zip_end: Optional[tuple[int, int, int]] = None
        self._ufdr: Optional[bool] = None
        self.body = 0                                  # where the tar starts (adb: after the header)
        self.codec = None                              # None, 'gzip' or 'zlib'
        self.locked = ""                               # why the whole extraction cannot be read
        if kind == "tar.gz":
            self.codec = "gzip"
        elif kind == "adb":
            self._adb_header()
        elif kind == "zip" and self.is_ufdr():
            self.kind = "ufdr"
        elif kind == "itunes":
            self._itunes_open()

    # --- what it is ---------------------------------------------------------------------
    @property
    def fs_type(self) -> str:
        return FS_TYPES[self.kind]

    @property
    def description(self) -> str:
        return DESCRIPTIONS[self.kind]

    def volume(self, device_id: str) -> VolumeRef:
        return VolumeRef(device_id=device_id, index=0, offset=0, length=self.size,
                         description=self.description, fs_type=None if self.locked else self.fs_type,
                         encryption=self.description if self.locked else None)

    def gaps(self, device_id: str) -> list[Coverage]:
        """What stops the whole extraction from being read (an encrypted backup), as coverage."""
        if not self.locked:
            return []
        vol = self.volume(device_id)
        return [Coverage(device_id=device_id, kind=ENCRYPTED, where=vol.where, reason=self.locked,
                         bytes_not_examined=self.size)]

    def _adb_header(self) -> None:
        head = self._read(0, 1024)
        lines = head.split(b"\n", 4)
        if len(lines) < 5 or lines[0] + b"\n" != ADB_MAGIC:
            raise EvidenceError("Android backup header cut short")
        version, compressed, encryption = (x.decode("ascii", "replace") for x in lines[1:4])
        if encryption.strip() != "none":
            self.locked = (f"{ENCRYPTED_BACKUP}: Android backup encrypted with {encryption[:20]!r}; "
                           "its files were not examined")
            return
        self.body = len(head) - len(lines[4])
        self.codec = "zlib" if compressed.strip() == "1" else None
        self.adb_version = version[:10]

    # --- walking ------------------------------------------------------------------------
    def walk(self, volume: VolumeRef, problems: Optional[list] = None,
             secrets: tuple = ()) -> Iterator[FileRecord]:
        """Every member, in archive order; `secrets` (recovery key, password): the password
        opens password-protected zip and UFDR members."""
        problems = problems if problems is not None else []
        if self.locked:
            return
        if self.kind in ("tar", "tar.gz", "adb"):
            yield from self._walk_tar(volume, problems)
        elif self.kind in ("zip", "ufdr"):
            yield from self._walk_zip(volume, problems, _password(secrets))
        elif self.kind == "itunes":
            yield from self._walk_itunes(volume, problems)

    def _gap(self, problems: list, volume: VolumeRef, kind: str, reason: str, nbytes: int = 0,
             where: Optional[Provenance] = None) -> None:
        problems.append(Coverage(device_id=volume.device_id, kind=kind,
                                 where=where or volume.where, reason=reason,
                                 bytes_not_examined=max(0, nbytes)))

    def _prov(self, volume: VolumeRef, path: str, inode: Optional[int],
              members: tuple = ()) -> Provenance:
        return Provenance(device_id=volume.device_id, volume_offset=volume.offset, inode=inode,
                          path=path, members=members, volume_index=volume.index,
                          fs_type=volume.fs_type or "")

    def _record(self, volume: VolumeRef, path: str, inode: Optional[int], size: int,
                mtime: Optional[float], is_dir: bool = False, head: bytes = b"",
                allocated: bool = True, members: tuple = (), ctype: str = "") -> FileRecord:
        name = path.rstrip("/").rsplit("/", 1)[-1] or path
        if not is_dir and not ctype:
            ctype = "empty" if size == 0 else (filetype.sniff(head) if head else "")
        return FileRecord(prov=self._prov(volume, path, inode, members), name=name, size=size,
                          allocated=allocated, fs_type=volume.fs_type or "", is_dir=is_dir,
                          mtime=mtime, type=ctype,
                          ext_mismatch=filetype.ext_mismatch(name, ctype) if ctype else False)

    def _tar_file(self):
        """(file object, stream or None) positioned at the tar's first header."""
        if self.codec is None:
            return _File(self._read, self.size, self.body), None
        stream = _Inflated(self._read, self.size, self.body, 31 if self.codec == "gzip" else 15)
        return stream, stream

    def _walk_tar(self, volume: VolumeRef, problems: list) -> Iterator[FileRecord]:
        fobj, stream = self._tar_file()
        last: Optional[tarfile.TarInfo] = None
        cut = False
        try:
            tf = tarfile.open(fileobj=fobj, mode="r:" if stream is None else "r|")
            while True:
                ti = tf.next()
                tf.members.clear()        # tarfile keeps every header: memory would grow
                if ti is None:
                    break
                last = ti
                path = device_path(ti.name)
                if path == "/":
                    continue            # the archive's own root folder
                if ti.isdir():
                    yield self._record(volume, path, ti.offset_data, 0, _time(ti.mtime), True)
                    continue
                if not ti.isreg():
                    kind = "inode/symlink" if ti.issym() or ti.islnk() else "inode/special"
                    yield self._record(volume, path, ti.offset_data, 0, _time(ti.mtime),
                                       ctype=kind)
                    continue
                head = b""
                if ti.size and stream is None:
                    head = self._read(self.body + ti.offset_data, min(ti.size, filetype.HEAD_BYTES))
                elif ti.size:           # stream mode: the member's first bytes, read in passing
                    head = tf.extractfile(ti).read(filetype.HEAD_BYTES)
                if stream is None and self.body + ti.offset_data + ti.size > self.size:
                    have = max(0, self.size - self.body - ti.offset_data)
                    cut = True
                    self._gap(problems, volume, MEDIA_DAMAGED,
                              f"the tar is cut short inside {path!r}: {have:,} of its "
                              f"{ti.size:,} bytes are in the file; anything after it is lost")
                yield self._record(volume, path, ti.offset_data, ti.size, _time(ti.mtime),
                                   head=head)
            if stream is not None and stream.cut:
                self._gap(problems, volume, MEDIA_DAMAGED,
                          f"the compressed tar is cut short at {stream.pos:,} inflated bytes: "
                          "members after it, if any, are lost")
        except Bomb as exc:
            self._gap(problems, volume, ARCHIVE, f"{exc}; the members after "
                      f"{device_path(last.name) if last else 'the start'} were not listed",
                      self.size)
        except (tarfile.TarError, EOFError, EvidenceError, zlib.error, OSError, ValueError,
                UnicodeDecodeError, OverflowError) as exc:
            if cut:
                return          # the cut-short member already said so
            after = f"after {device_path(last.name)!r}" if last else "at its start"
            self._gap(problems, volume, MEDIA_DAMAGED,
                      f"the tar is damaged or cut short {after}: {_one_line(exc)}; "
                      "members after it, if any, are lost")

    # --- zip ----------------------------------------------------------------------------
    def _end(self) -> tuple[int, int, int]:
        """(central directory offset, its size, prefix shift) from the end records."""
        if self._zip_end is not None:
            return self._zip_end
        tail_start = max(0, self.size - (22 + 65535))
        tail = self._read(tail_start, self.size - tail_start)
        pos = tail.rfind(ZIP_END)
        if pos < 0 or pos + 22 > len(tail):
            raise EvidenceError("no end of central directory: the zip is cut short or damaged")
        _, _, _, total, cd_size, cd_off, _ = struct.unpack_from("<4HIIH", tail, pos + 4)
        end_at = tail_start + pos
        loc = tail[pos - 20:pos] if pos >= 20 else b""
        # the zip64 records sit between the central directory and the end record whenever a
        # writer put them there, saturated fields or not
        if 0xFFFFFFFF in (cd_size, cd_off) or total == 0xFFFF or loc[:4] == ZIP64_LOCATOR:
            if loc[:4] != ZIP64_LOCATOR:
                raise EvidenceError("zip64 end record missing: the zip is damaged")
            off64 = struct.unpack_from("<Q", loc, 8)[0]
            rec = self._read(off64, 56)
            if rec[:4] != ZIP64_END:
                # a prefix (self-extractor) moves everything: look just before the locator
                off64 = end_at - 20 - 56
                rec = self._read(off64, 56)
                if rec[:4] != ZIP64_END:
                    raise EvidenceError("zip64 end record not found: the zip is damaged")
            cd_size, cd_off = struct.unpack_from("<QQ", rec, 40)
            end_at = off64
        shift = end_at - cd_size - cd_off          # bytes prepended to the zip, usually 0
        if shift < 0 or cd_off + shift > self.size:
            raise EvidenceError("the central directory lies outside the file: the zip is damaged")
        self._zip_end = (cd_off, cd_size, shift)
        return self._zip_end

    def _entries(self) -> Iterator[_ZipEntry]:
        cd_off, cd_size, shift = self._end()
        pos, end = cd_off + shift, cd_off + shift + cd_size
        buf, bstart = b"", pos
        while pos < end:
            if pos + 46 > bstart + len(buf):
                buf, bstart = self._read(pos, min(BLOCK, end - pos) if end - pos > 46 else 46), pos
            rel = pos - bstart
            if buf[rel:rel + 4] != ZIP_CENTRAL:
                raise EvidenceError(f"central directory entry damaged at byte {pos:,}")
            total = _central_length(buf, rel)
            if pos + total > bstart + len(buf):
                buf, bstart = self._read(pos, max(total, min(BLOCK, end - pos))), pos
                rel = 0
                if len(buf) < total:
                    raise EvidenceError("central directory cut short")
            entry, total = _central(buf, rel, pos)
            yield entry
            pos += total

    def is_ufdr(self) -> bool:
        """A zip whose root holds report.xml: a Cellebrite UFDR."""
        if self._ufdr is None:
            self._ufdr = False
            try:
                self._ufdr = any(e.name.lower() == "report.xml" for e in self._entries())
            except EvidenceError:
                pass
        return self._ufdr

    def _walk_zip(self, volume: VolumeRef, problems: list,
                  password: Optional[bytes]) -> Iterator[FileRecord]:
        mapping = _UfdrMap(self, password) if self.kind == "ufdr" else None
        locked: dict[str, list] = {}       # why -> [members, bytes, first paths]
        try:
            if mapping is not None:
                for problem in mapping.problems:
                    self._gap(problems, volume, ARCHIVE, problem)
            for e in self._entries():
                path, allocated, members = device_path(e.name), True, ()
                if mapping is not None:
                    found = mapping.get(e.name)
                    if found is not None:
                        path, allocated, members = found[0], not found[1], (e.name,)
                if e.is_dir:
                    yield self._record(volume, path, e.at, 0, e.mtime, True, members=members)
                    continue
                prov = self._prov(volume, path, e.at, members)
                why = self._still_locked(e, password) if e.encrypted else ""
                if why:
                    group = locked.setdefault(why, [0, 0, []])
                    group[0] += 1
                    group[1] += e.usize
                    if len(group[2]) < 3:
                        group[2].append(path)
                    continue
                if e.usize >= BOMB_MIN_BYTES and e.usize > BOMB_RATIO * max(1, e.csize):
                    self._gap(problems, volume, ARCHIVE,
                              f"zip bomb refused: member declares {human_bytes(e.usize)} from "
                              f"{human_bytes(e.csize)} ({e.usize / max(1, e.csize):.0f}:1, limit "
                              f"{BOMB_RATIO:g}:1)", e.usize, where=prov)
                    continue
                if stat.S_ISLNK(e.mode):
                    yield self._record(volume, path, e.at, 0, e.mtime, ctype="inode/symlink",
                                       members=members)
                    continue
                try:
                    head = self._zip_head(e, password) if e.usize else b""
                except EvidenceError:
                    head = b""            # the read says why, with the bytes it could not get
                yield self._record(volume, path, e.at, e.usize, e.mtime, head=head,
                                   allocated=allocated, members=members)
        except EvidenceError as exc:
            self._gap(problems, volume, MEDIA_DAMAGED,
                      f"the zip cannot be listed: {_one_line(exc)}", self.size)
        finally:
            if mapping is not None:
                mapping.close()
            # one gap per reason, not one per member: a UFDR may hold a million of them
            what = "UFDR" if self.kind == "ufdr" else "zip"
            for why, (count, nbytes, first) in locked.items():
                names = ", ".join(repr(p) for p in first) + (", ..." if count > len(first) else "")
                self._gap(problems, volume, ENCRYPTED,
                          f"{count:,} password-protected {what} member(s) ({human_bytes(nbytes)}) "
                          f"not examined: {why} ({names})", nbytes)

    def _entry_at(self, at: int) -> _ZipEntry:
        raw = self._read(at, 46)
        if len(raw) < 46 or raw[:4] != ZIP_CENTRAL:
            raise EvidenceError(f"no zip central-directory entry at byte {at:,}")
        return _central(raw + self._read(at + 46, _central_length(raw, 0) - 46), 0, at)[0]

    def _data_start(self, e: _ZipEntry) -> int:
        shift = self._end()[2]
        lh = self._read(e.local + shift, 30)
        if len(lh) < 30 or lh[:4] != ZIP_LOCAL:
            raise EvidenceError(f"{e.name}: local header missing at byte {e.local + shift:,}")
        nlen, elen = struct.unpack_from("<HH", lh, 26)
        return e.local + shift + 30 + nlen + elen

    def _still_locked(self, e: _ZipEntry, password: Optional[bytes]) -> str:
        """Why a password-protected member stays closed ('' when the password opens it)."""
        if not e.zipcrypto:
            return "AES or strong encryption is not opened yet"
        if not password:
            return "give --password to open them"
        try:
            self._decrypter(e, password)
        except EvidenceError as exc:
            return str(exc)
        return ""

    def _decrypter(self, e: _ZipEntry, password: bytes) -> _ZipCrypto:
        """The member's decrypter, past its 12-byte encryption header; EvidenceError when the
        password is wrong (the header's check byte)."""
        crypt = _ZipCrypto(password)
        header = crypt.decrypt(self._read(self._data_start(e), 12))
        if len(header) < 12 or header[11] != e.check_byte:
            raise EvidenceError("the password does not open it")
        return crypt

    def _zip_head(self, e: _ZipEntry, password: Optional[bytes] = None) -> bytes:
        # a few KiB of compressed bytes give the first 64: the walk never reads a member twice
        for chunk in self._zip_chunks(e, filetype.HEAD_BYTES, password, block=4096):
            return bytes(chunk[:filetype.HEAD_BYTES])
        return b""

    def _zip_pieces(self, e: _ZipEntry) -> Optional[list]:
        """(offset, length) of a stored member's bytes in the file, or None when compressed."""
        if e.method != 0 or e.encrypted:
            return None
        start = self._data_start(e)
        if e.csize != e.usize:
            raise EvidenceError(f"{e.name}: stored member whose sizes disagree")
        if start + e.usize > self.size:
            raise ShortRead(f"the zip is cut short: {max(0, self.size - start):,} of "
                            f"{e.usize:,} bytes are in the file", e.usize, 0)
        return [(start, e.usize)]

    def _zip_chunks(self, e: _ZipEntry, chunk_size: int, password: Optional[bytes] = None,
                    block: int = BLOCK) -> Iterator[bytes]:
        start = self._data_start(e)
        end = start + e.csize
        crypt = None
        if e.encrypted:
            why = self._still_locked(e, password)
            if why:
                raise EvidenceError(f"password-protected member not read: {why}")
            crypt = self._decrypter(e, password)
            start += 12                   # the encryption header
        if e.method == 0:
            d = None
        elif e.method == 8:
            d = zlib.decompressobj(-15)
        elif e.method == 12:
            d = bz2.BZ2Decompressor()
        else:
            raise EvidenceError(f"{e.name}: compression method {e.method} is not read")
        pos, made = start, 0
        while pos < end and made < e.usize:
            data = self._read(pos, min(block, end - pos))
            if not data:
                raise ShortRead(f"the zip is cut short inside this member ({made:,} of "
                                f"{e.usize:,} bytes)", e.usize, made)
            pos += len(data)
            if crypt is not None:
                data = crypt.decrypt(data)
            for out in _inflated(d, data, e.usize, made):
                if made + len(out) > e.usize:
                    # never more than declared: what the bomb bounds checked
                    raise ShortRead(f"member inflates past its declared {e.usize:,} bytes",
                                    e.usize, made)
                made += len(out)
                for i in range(0, len(out), chunk_size):
                    yield out[i:i + chunk_size]
        if made < e.usize:
            raise ShortRead(f"member holds {made:,} of its declared {e.usize:,} bytes",
                            e.usize, made)

    # --- iTunes / Finder backups ------------------------------------------------------------
    def _itunes_open(self) -> None:
        info = os.path.join(self.root, "Manifest.plist")
        try:
            with open(info, "rb") as fh:
                manifest = plistlib.loads(fh.read(16 << 20))
        except (OSError, plistlib.InvalidFileException, ValueError, TypeError, KeyError,
                OverflowError):
            manifest = {}
        # iOS 10.2+ encrypts Manifest.db too; Manifest.plist says so in the clear
        encrypted = bool(manifest.get("IsEncrypted")) if isinstance(manifest, dict) else False
        if encrypted:
            count, nbytes = _tree_count(self.root)
            self.locked = (f"{ENCRYPTED_BACKUP}: iTunes/Finder backup encrypted (Manifest.plist "
                           f"IsEncrypted); {count:,} files ({human_bytes(nbytes)}) not examined "
                           "(decrypting backups is not supported yet)")

    def _manifest(self) -> sqlite3.Connection:
        path = os.path.abspath(os.path.join(self.root, "Manifest.db"))
        # immutable: read-only, and no -wal or -shm file is made beside the evidence
        return sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)

    def _walk_itunes(self, volume: VolumeRef, problems: list) -> Iterator[FileRecord]:
        con = None
        try:
            con = self._manifest()
            rows = con.execute("SELECT fileID, domain, relativePath, flags, file FROM Files "
                               "ORDER BY domain, relativePath")
            for file_id, domain, rel, flags, blob in rows:
                domain, rel = str(domain or ""), str(rel or "")
                path = f"/{domain}/{rel}" if rel else f"/{domain}"
                meta = _itunes_meta(blob)
                if flags == 2:
                    yield self._record(volume, path, None, 0, meta.get("mtime"), True)
                    continue
                if flags != 1:
                    yield self._record(volume, path, None, 0, meta.get("mtime"),
                                       ctype="inode/symlink" if flags == 4 else "inode/special")
                    continue
                where = self._itunes_file(str(file_id))
                if where is None:
                    self._gap(problems, volume, MEDIA_DAMAGED,
                              f"Manifest.db lists it but the backup holds no file {file_id}",
                              meta.get("size", 0), where=self._prov(volume, path, None))
                    continue
                try:
                    size = os.stat(where).st_size
                    with open(where, "rb") as fh:
                        head = fh.read(filetype.HEAD_BYTES)
                except OSError:
                    size, head = meta.get("size", 0), b""
                yield self._record(volume, path, None, size, meta.get("mtime"), head=head)
        except sqlite3.DatabaseError as exc:
            # the files are still there: hashed and matched under their stored names
            self._gap(problems, volume, MEDIA_DAMAGED,
                      f"Manifest.db cannot be read ({_one_line(exc)}): the backup's files are "
                      f"listed by their stored names under {BACKUP_DIR}, without their paths")
            if con is not None:
                con.close()
            con = None
        # the backup's own files (Info.plist, Manifest.db, ...) and any file Manifest.db does
        # not list: examined too, under /$Backup with their names in the folder
        for rel, size, head in self._unlisted(con):
            yield self._record(volume, f"{BACKUP_DIR}/{rel}", None, size, None, head=head)
        if con is not None:
            con.close()

    def _unlisted(self, con: Optional[sqlite3.Connection]) -> Iterator[tuple[str, int, bytes]]:
        stack = [""]
        while stack:
            rel_dir = stack.pop()
            try:
                with os.scandir(os.path.join(self.root, rel_dir)) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError:
                continue
            for e in entries:
                rel = f"{rel_dir}/{e.name}" if rel_dir else e.name
                if e.is_dir(follow_symlinks=False):
                    stack.append(rel)
                    continue
                if not e.is_file(follow_symlinks=False):
                    continue
                if con is not None and len(e.name) == 40 and con.execute(
                        "SELECT 1 FROM Files WHERE fileID = ?", (e.name,)).fetchone():
                    continue
                try:
                    with open(e.path, "rb") as fh:
                        head = fh.read(filetype.HEAD_BYTES)
                    yield rel, e.stat(follow_symlinks=False).st_size, head
                except OSError:
                    continue

    def _itunes_file(self, file_id: str) -> Optional[str]:
        if not file_id or any(c not in "0123456789abcdef" for c in file_id.lower()):
            return None
        for rel in (os.path.join(file_id[:2], file_id), file_id):   # iOS 10+, then older
            p = os.path.join(self.root, rel)
            if os.path.isfile(p):
                return p
        return None

    # --- reading ------------------------------------------------------------------------
    def pieces(self, prov: Provenance) -> Optional[list]:
        """(offset, length) of a member's bytes in the evidence file, where they are stored
        as is (plain tar, stored zip member): read straight, without a copy. None otherwise."""
        if self.kind in ("tar", "adb") and self.codec is None and prov.inode is not None:
            size = self._declared_tar_size(prov)
            start = self.body + prov.inode
            if start + size > self.size:
                raise ShortRead(f"the tar is cut short: {max(0, self.size - start):,} of "
                                f"{size:,} bytes are in the file", size, 0)
            return [(start, size)]
        if self.kind in ("zip", "ufdr") and prov.inode is not None:
            return self._zip_pieces(self._entry_at(prov.inode))
        return None

    def _declared_tar_size(self, prov: Provenance) -> int:
        return _header_size(self._read(self.body + prov.inode - 512, 512)
                            if prov.inode >= 512 else b"")

    def read(self, prov: Provenance, chunk_size: int, secrets: tuple = ()) -> Iterator[bytes]:
        """A member's content, where `pieces` gave None."""
        if self.locked:
            raise EvidenceError(self.locked)
        if self.kind in ("zip", "ufdr"):
            yield from self._zip_chunks(self._entry_at(prov.inode), chunk_size,
                                        _password(secrets))
            return
        if self.kind == "itunes":
            yield from self._read_itunes(prov, chunk_size)
            return
        yield from self._read_stream(prov.inode, chunk_size)

    def _read_stream(self, at: int, chunk_size: int) -> Iterator[bytes]:
        """A compressed tar's member: the stream inflated forward from where the last read
        left it (batches read members in archive order), or from the start. Its size is the
        one its header declares (the 512 bytes before its data)."""
        with self._lock:
            stream = self._stream
            if stream is None or stream.pos > at - 512:
                stream = self._tar_file()[1]
            self._stream = None          # held by this read until it ends
        stream.skip_to(at - 512)
        size = _header_size(stream.read(512))
        done = 0
        try:
            while done < size:
                data = stream.read(min(chunk_size, size - done))
                if not data:
                    raise ShortRead(f"the compressed tar ends {size - done:,} bytes into this "
                                    "member", size, done)
                done += len(data)
                yield data
        finally:
            with self._lock:
                if self._stream is None or self._stream.pos < stream.pos:
                    self._stream = stream

    def _read_itunes(self, prov: Provenance, chunk_size: int) -> Iterator[bytes]:
        domain, _, rel = prov.path[1:].partition("/")
        if "/" + domain == BACKUP_DIR:
            where = os.path.realpath(os.path.join(self.root, rel))
            if not where.startswith(os.path.realpath(self.root) + os.sep):
                # a name from Manifest.db posing as the backup's own file: never outside it
                raise EvidenceError(f"{prov.path}: not a file of the backup folder")
        else:
            file_id = hashlib.sha1(f"{domain}-{rel}".encode("utf-8", "surrogateescape")).hexdigest()
            where = self._itunes_file(file_id)
            if where is None:
                raise EvidenceError(f"{prov.path}: the backup holds no file {file_id}")
        yield from read_chunks(where, prov.path, chunk_size)


def _inflated(d, data: bytes, declared: int, made: int) -> Iterator[bytes]:
    """What `data` inflates to (as is when `d` is None), at most 4 MiB at a time, so a highly
    compressed block never sits whole in memory."""
    if d is None:
        yield data
        return
    try:
        yield d.decompress(data, 4 * BLOCK)
        while True:
            if isinstance(d, bz2.BZ2Decompressor):
                if d.needs_input or d.eof:
                    return
                yield d.decompress(b"", 4 * BLOCK)
            elif d.unconsumed_tail:
                yield d.decompress(d.unconsumed_tail, 4 * BLOCK)
            else:
                return
    except (zlib.error, OSError, EOFError, ValueError) as exc:
        raise ShortRead(f"damaged compressed data: {_one_line(exc)}", declared, made) from None


def _password(secrets: tuple) -> Optional[bytes]:
    password = (tuple(secrets) + (None, None))[1]
    return password.encode("utf-8") if password else None


def reach_hint(prov: Provenance, size: Optional[int] = None) -> Optional[str]:
    """How an examiner reaches a member's bytes with standard tools (None: not a member of an
    extraction). Archive members inside the member follow as `then open member ...`; without
    `size`, a tar member's bytes run on to the end (for a pipe that takes a range of them)."""
    kind = {v: k for k, v in FS_TYPES.items()}.get(prov.fs_type)
    if kind is None or prov.parent is not None:
        return None
    inner = prov.members[1:] if kind == "ufdr" and prov.members else prov.members
    count = f" count={size}" if size is not None else ""
    span = f"iflag=skip_bytes,count_bytes,fullblock skip={prov.inode}{count}"
    if kind == "tar":
        hint = f"dd if=IMAGE {span}"
    elif kind == "tar.gz":
        hint = f"gzip -dc IMAGE | dd {span}"
    elif kind == "adb":
        hint = f"tail -c +25 IMAGE | zlib-flate -uncompress | dd {span}"
    elif kind in ("zip", "ufdr"):
        name = prov.members[0] if kind == "ufdr" and prov.members else prov.path.lstrip("/")
        hint = f"unzip -p IMAGE {_shell_quote(name)}"
    else:
        domain, _, rel = prov.path[1:].partition("/")
        if "/" + domain == BACKUP_DIR:
            hint = f"cat BACKUP/{_shell_quote(rel)}"
        else:
            fid = hashlib.sha1(f"{domain}-{rel}".encode("utf-8", "surrogateescape")).hexdigest()
            hint = f"cat BACKUP/{fid[:2]}/{fid}"
    return hint + (f"  (then open member {'!/'.join(inner)})" if inner else "")


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _header_size(hdr: bytes) -> int:
    """The size a tar header declares: the header right before a member's data is always its
    own (long-name and pax headers come before it)."""
    try:
        return tarfile.TarInfo.frombuf(hdr, "utf-8", "surrogateescape").size
    except (tarfile.TarError, ValueError) as exc:
        raise EvidenceError(f"no tar header before this member's data: {_one_line(exc)}") from None


def _zip64(extra: bytes, usize: int, csize: int, local: int) -> tuple[int, int, int]:
    """Sizes and offset from a zip64 extra field, where the 32-bit fields are saturated."""
    pos = 0
    while pos + 4 <= len(extra):
        hid, ln = struct.unpack_from("<HH", extra, pos)
        if hid == 1:
            body, at = extra[pos + 4:pos + 4 + ln], 0
            vals = []
            for v in (usize, csize, local):
                if v == 0xFFFFFFFF and at + 8 <= len(body):
                    vals.append(struct.unpack_from("<Q", body, at)[0])
                    at += 8
                else:
                    vals.append(v)
            return vals[0], vals[1], vals[2]
        pos += 4 + ln
    return usize, csize, local


def _itunes_meta(blob) -> dict:
    """Size and modification time from a Files row's `file` (an NSKeyedArchiver plist)."""
    if not isinstance(blob, (bytes, bytearray)) or len(blob) > (1 << 20):
        return {}
    try:
        data = plistlib.loads(bytes(blob))
        objects = data.get("$objects", [])
        for obj in objects:
            if isinstance(obj, dict) and "Size" in obj:
                return {"size": int(obj.get("Size") or 0), "mtime": _time(obj.get("LastModified"))}
    except (plistlib.InvalidFileException, ValueError, TypeError, AttributeError, OverflowError):
        pass
    return {}


def _tree_count(root: str) -> tuple[int, int]:
    count = total = 0
    for folder, _dirs, files in os.walk(root):
        for f in files:
            try:
                total += os.lstat(os.path.join(folder, f)).st_size
                count += 1
            except OSError:
                continue
    return count, total


def _one_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:240]


# --- UFDR: report.xml's map from a member to the phone's path ------------------------------------

REPORT_MAX = 4 << 30          # report.xml read at most (a large phone's report is ~1 GB)


class _UfdrMap:
    """UFDR member name -> (phone path, deleted), from report.xml's taggedFiles, spooled to
    a temporary SQLite file so a million files cost no memory. Hostile XML: no DOCTYPE or
    entity is accepted (the parse stops there and says so)."""

    def __init__(self, ext: Extraction, password: Optional[bytes] = None):
        self.problems: list[str] = []
        self._password = password
        self._dir = tempfile.TemporaryDirectory(prefix="triage-ufdr-")
        self._db = sqlite3.connect(os.path.join(self._dir.name, "map.db"))
        self._db.execute("CREATE TABLE m (local TEXT PRIMARY KEY, path TEXT, deleted INT)")
        try:
            self._load(ext)
        except (EvidenceError, ParseError, ValueError) as exc:
            self.problems.append(f"report.xml not fully read ({_one_line(exc)}): members "
                                 "after the damage keep their UFDR names as paths")
        self._db.commit()

    def _load(self, ext: Extraction) -> None:
        entry = next((e for e in ext._entries() if e.name.lower() == "report.xml"), None)
        if entry is None or (entry.encrypted and ext._still_locked(entry, self._password)):
            return          # a locked report.xml is a gap of its own, as a member
        parser = XMLPullParser(events=("start", "end"))
        rows: list = []
        current: Optional[dict] = None
        item_name = None
        fed = 0
        tail = b""
        for chunk in ext._zip_chunks(entry, BLOCK, self._password):
            fed += len(chunk)
            seam, tail = tail + chunk[:16], chunk[-16:]
            if any(b in piece for piece in (chunk, seam) for b in (b"<!DOCTYPE", b"<!ENTITY")):
                raise ValueError("report.xml declares a DOCTYPE or entities (refused)")
            if fed > REPORT_MAX:
                raise ValueError(f"report.xml is larger than {human_bytes(REPORT_MAX)}")
            parser.feed(chunk)
            for event, el in parser.read_events():
                tag = el.tag.rsplit("}", 1)[-1]
                if event == "start":
                    if tag == "file":
                        current = {"path": el.get("path") or "", "deleted":
                                   (el.get("deleted") or "").lower() == "deleted"}
                    elif tag == "item" and current is not None:
                        item_name = el.get("name")
                    continue
                if tag == "item" and current is not None and item_name == "Local Path":
                    current["local"] = (el.text or "").strip()
                elif tag == "file" and current is not None:
                    local = _local_name(current.get("local", ""))
                    if local and current["path"]:
                        rows.append((local, current["path"], int(current["deleted"])))
                    current = None
                    if len(rows) >= 10_000:
                        self._flush(rows)
                    el.clear()
                if tag in ("model", "file", "taggedFiles", "decodedData"):
                    el.clear()
        self._flush(rows)

    def _flush(self, rows: list) -> None:
        self._db.executemany("INSERT OR IGNORE INTO m VALUES (?, ?, ?)", rows)
        rows.clear()

    def get(self, member: str) -> Optional[tuple[str, bool]]:
        row = self._db.execute("SELECT path, deleted FROM m WHERE local = ?",
                               (_local_name(member),)).fetchone()
        return (device_path(row[0]), bool(row[1])) if row else None

    def close(self) -> None:
        self._db.close()
        self._dir.cleanup()


def _local_name(name: str) -> str:
    return name.replace("\\", "/").lstrip("./").lstrip("/")
