"""Open seized evidence read-only, whatever container it came in, as one byte-addressable device.

The container is told by its content, never by its extension: an E01 renamed `.bin` is still
an E01, and a raw image called `.E01` is still raw. Every container becomes a `Source` (a
thread-safe `read(offset, size)` over the media), and TSK reads through it by way of a
`pytsk3.Img_Info` subclass, so volumes.py and filesystems.py never know about containers.

Everything here is rebuilt from plain values (the segment paths and a device id): Ray scan
workers reopen the same evidence in their own processes.
"""
from __future__ import annotations

import bisect
import hashlib
import mmap
import os
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Optional, Sequence

import pytsk3

from triage import extractions
from triage.errors import EvidenceError
from triage.extractions import Extraction
from triage.records import MEDIA_DAMAGED, Coverage, EvidenceRef, Provenance

# --- container signatures ---------------------------------------------------------------------
EWF1_MAGIC = b"EVF\x09\x0d\x0a\xff\x00"
EWF2_MAGIC = b"EVF2\x0d\x0a\x81\x00"
LEF_MAGIC = (b"LVF\x09\x0d\x0a\xff\x00", b"LEF2\x0d\x0a\x81\x00")
QCOW_MAGIC = b"QFI\xfb"
VHDX_MAGIC = b"vhdxfile"
VHD_COOKIE = b"conectix"
VMDK_MAGICS = (b"KDMV", b"COWD")
VMDK_DESCRIPTOR = b"# Disk DescriptorFile"

# What a raw device must show somewhere near its start to count as a disk image: a boot
# sector/MBR/GPT, or a file-system or volume superblock TSK or volumes.py knows. A file with
# none of these (random bytes, a document) is refused at open, with a one-line reason.
HEAD = 72 * 1024
# The FVE GUID, on-disk order: at 160 on a Vista/7+ BitLocker volume, at 424 on BitLocker To Go
# (whose boot sector otherwise passes for FAT32, so the OEM id alone misses it).
BITLOCKER_GUID = bytes.fromhex("3bd66749292ed84a8399f6a339e3d001")


def is_bitlocker(head: bytes) -> bool:
    """True for the first sector of a BitLocker volume (fixed or To Go)."""
    return (head[3:11] == b"-FVE-FS-" or head[160:176] == BITLOCKER_GUID
            or head[424:440] == BITLOCKER_GUID)


def _raw_signature(head: bytes) -> Optional[str]:
    def at(off: int, sig: bytes) -> bool:
        return head[off:off + len(sig)] == sig
    if at(0, b"LUKS\xba\xbe"):
        return "LUKS"
    if at(88, b"CS\x01\x00"):                # CoreStorage (FileVault 2) physical volume
        return "CoreStorage"
    if is_bitlocker(head):
        return "BitLocker"
    if at(512, b"EFI PART") or at(4096, b"EFI PART"):
        return "GPT"
    if at(1080, b"\x53\xef"):
        return "ext"
    if at(1024, b"H+\x00\x04") or at(1024, b"HX\x00\x05"):
        return "HFS+"
    if at(32, b"NXSB"):
        return "APFS"
    if at(32769, b"CD001"):
        return "ISO9660"
    if at(0, b"XFSB"):
        return "XFS"
    if at(65600, b"_BHRfS_M"):
        return "btrfs"
    if at(512, b"LABELONE") or at(0, b"LABELONE"):
        return "LVM"
    if at(510, b"\x55\xaa"):
        return "boot sector"
    return None


# --- sources: one read(offset, size) per container ---------------------------------------------
class Source:
    """The media of one device. `read` returns fewer bytes only at the end of the media."""

    size: int = 0
    format: str = ""

    def read(self, offset: int, size: int) -> bytes:  # pragma: no cover - interface
        raise NotImplementedError

    def view(self, offset: int, size: int) -> Optional[memoryview]:
        """The bytes at `offset` without a copy, where the container allows (raw); else None."""
        return None

    def views(self, pieces_of: list) -> list:
        """`view` of every piece of each file of a group (a list of (offset, size) each): the
        file's list of views, or None for a file one of whose pieces `view` does not give."""
        out = []
        for pieces in pieces_of:
            chunks = [self.view(start, n) for start, n in pieces]
            out.append(None if None in chunks else chunks)
        return out

    def mapped(self) -> Optional[memoryview]:
        """The whole media mapped as one buffer, where `view` maps it from a single file (raw
        evidence in one piece); else None. A piece inside it is what `view` gives."""
        return None

    def release(self, offset: int, size: int) -> None:
        """Done with a `view` of these bytes."""

    def release_all(self) -> None:
        """Done with every `view` taken so far."""

    def stored_hashes(self) -> dict:
        return {}

    def close(self) -> None:
        pass


def _read_forward(fd: int) -> None:
    """Tells the kernel this file is read mostly forward: it reads twice as far ahead. A walk
    of a million small files read from disk (each file's first bytes, next to its
    neighbours') spent 10.9 s in the kernel with the default, 6.2 s with this."""
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    except (OSError, AttributeError):       # a file system or platform without it
        pass


class RawSource(Source):
    """One raw file or an ordered list of split-raw segments, read with pread (no shared seek)."""

    def __init__(self, paths: Sequence[str]):
        self.format = "raw" if len(paths) == 1 else "split_raw"
        self._fds: list[int] = []
        self._starts: list[int] = []
        total = 0
        try:
            for p in paths:
                fd = os.open(p, os.O_RDONLY)
                self._fds.append(fd)
                _read_forward(fd)
                self._starts.append(total)
                total += os.fstat(fd).st_size
        except OSError as exc:
            self.close()
            raise EvidenceError(f"{exc.filename}: {exc.strerror}") from None
        self.size = total
        self._paths = tuple(paths)
        self._maps: Optional[list] = None

    def held_path(self, index: int = 0) -> str:
        """A path to the very file segment `index` was opened as (Linux's /proc/self/fd), for
        a reader that must open it again: a file put in its place since, or segments a reader
        would go looking for beside it, are never read instead. The segment's own path where
        /proc is not mounted."""
        held = f"/proc/self/fd/{self._fds[index]}"
        return held if os.path.exists(held) else self._paths[index]

    # No read-ahead here (measured: the page cache already is one, and the extra copies cost
    # more CPU than the overlap saves).
    def read(self, offset: int, size: int) -> bytes:
        if offset >= self.size or size <= 0:
            return b""
        size = min(size, self.size - offset)
        if len(self._fds) == 1:
            return _pread_full(self._fds[0], size, offset, self._paths[0])
        out = []
        while size > 0:
            i = bisect.bisect_right(self._starts, offset) - 1
            end = self._starts[i + 1] if i + 1 < len(self._starts) else self.size
            n = min(size, end - offset)
            out.append(_pread_full(self._fds[i], n, offset - self._starts[i], self._paths[i]))
            offset += n
            size -= n
        return b"".join(out)

    def view(self, offset: int, size: int) -> Optional[memoryview]:
        """The bytes at `offset`, mapped read-only instead of copied (None when they are not in
        one segment). Hashing straight from the page cache skips a copy and the page faults of
        a fresh buffer per read."""
        if offset < 0 or size <= 0 or offset + size > self.size:
            return None
        i = bisect.bisect_right(self._starts, offset) - 1
        start = self._starts[i]
        end = self._starts[i + 1] if i + 1 < len(self._starts) else self.size
        if offset + size > end:
            return None
        if self._maps is None:
            self._maps = [None] * len(self._fds)
        if self._maps[i] is None:
            try:
                self._maps[i] = memoryview(mmap.mmap(self._fds[i], 0, access=mmap.ACCESS_READ))
            except (OSError, ValueError):
                return None
        return self._maps[i][offset - start:offset - start + size]

    def mapped(self) -> Optional[memoryview]:
        if len(self._fds) != 1 or self.view(0, 1) is None:
            return None
        return self._maps[0][:self.size]

    def views(self, pieces_of: list) -> list:
        # one image file (most raw evidence): its map sliced in one pass, `view`'s bounds
        # inlined (a million small files spent a microsecond each in `view`'s calls)
        whole = self.mapped()
        if whole is None:
            return super().views(pieces_of)
        size = self.size
        out = []
        for pieces in pieces_of:
            if len(pieces) == 1:
                (start, n), = pieces
                out.append([whole[start:start + n]] if 0 <= start and 0 < n
                           and start + n <= size else None)
            else:
                chunks = [whole[start:start + n] for start, n in pieces
                          if 0 <= start and 0 < n and start + n <= size]
                out.append(chunks if len(chunks) == len(pieces) else None)
        return out

    def release(self, offset: int, size: int) -> None:
        """Unmaps the pages of a `view` once read: the page cache keeps them, but they stop
        counting in this process's resident set (a later touch maps them again)."""
        if not self._maps or size <= 0:
            return
        i = bisect.bisect_right(self._starts, offset) - 1
        m = self._maps[i] if 0 <= i < len(self._maps) else None
        if m is None:
            return
        start = offset - self._starts[i]
        aligned = start - start % mmap.PAGESIZE
        try:
            m.obj.madvise(mmap.MADV_DONTNEED, aligned, min(start + size, len(m)) - aligned)
        except (OSError, ValueError):
            pass

    def release_all(self) -> None:
        for m in self._maps or ():
            if m is not None:
                try:
                    m.obj.madvise(mmap.MADV_DONTNEED, 0, len(m))
                except (OSError, ValueError):
                    pass

    def close(self) -> None:
        for m in self._maps or ():
            if m is not None:
                try:
                    m.obj.close()
                    m.release()
                except BufferError:      # a slice still in use: the mapping goes with it
                    pass
        self._maps = None
        for fd in self._fds:
            os.close(fd)
        self._fds = []


def _pread_full(fd: int, size: int, offset: int, path: str) -> bytes:
    try:
        data = os.pread(fd, size, offset)
    except OSError as exc:
        raise EvidenceError(f"{path}: read error at {offset}: {exc.strerror}") from None
    if len(data) < size:             # a pipe-like or growing file: finish the read
        parts = [data]
        got = len(data)
        while got < size:
            more = os.pread(fd, size - got, offset + got)
            if not more:
                raise EvidenceError(f"{path}: short read at {offset + got} (file truncated?)")
            parts.append(more)
            got += len(more)
        data = b"".join(parts)
    return data


class EwfSource(Source):
    """An E01/Ex01 segment set. A read that overlaps a chunk failing its checksum raises
    EvidenceError naming the sectors, never returning the zeroes libewf puts there; reads
    elsewhere go on. `damaged_ranges` lists the damaged chunks reads have met so far."""

    def __init__(self, paths: Sequence[str]):
        from triage.ewf import EwfReader
        self.format = "ewf"
        self._reader = EwfReader(paths)
        self.size = self._reader.size
        self.backend = self._reader.backend

    def read(self, offset: int, size: int) -> bytes:
        data = self._reader.read(offset, size)
        hits = self._reader.damage_in(offset, len(data))
        if hits:
            sectors = ", ".join(self.sectors(start, length) for start, length in hits)
            raise EvidenceError(f"{self._reader.paths[0]}: checksum error in sectors {sectors} "
                                f"(E01 chunk damaged)")
        return data

    def sectors(self, start: int, length: int) -> str:
        """A damaged byte range as the sectors ewfverify names: 'first-last'."""
        bps = self._reader.bytes_per_sector
        return f"{start // bps}-{(start + length) // bps - 1}"

    def damaged_ranges(self) -> list[tuple[int, int]]:
        """(byte offset, length) of every damaged region a read has met so far, in order."""
        return list(self._reader.damaged)

    def stored_hashes(self) -> dict:
        return self._reader.stored_hashes()

    def close(self) -> None:
        self._reader.close()


class LibyalSource(Source):
    """VHD/VHDX (libvhdi), VMDK (libvmdk), QCOW (libqcow): the PyPI bindings, one lock each."""

    def __init__(self, path: str, fmt: str):
        self.format = fmt
        self._lock = threading.Lock()
        self._path = path
        try:
            self._handle = _open_libyal(path, fmt)
            self.size = self._handle.get_media_size()
            # A differencing disk without its parent opens but cannot read: fail now.
            if self.size:
                self._handle.read_buffer_at_offset(min(512, self.size), 0)
        except (OSError, IOError) as exc:
            raise EvidenceError(f"{path}: cannot read {fmt} image: {_libyal_reason(exc)}") from None

    def read(self, offset: int, size: int) -> bytes:
        if offset >= self.size or size <= 0:
            return b""
        size = min(size, self.size - offset)
        with self._lock:
            try:
                return self._handle.read_buffer_at_offset(size, offset)
            except (OSError, IOError) as exc:
                raise EvidenceError(f"{self._path}: read error at {offset}: {_libyal_reason(exc)}") from None

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None


def _libyal_reason(exc: BaseException) -> str:
    """libyal errors are a backtrace joined by '. '; the last clause that names a cause wins."""
    text = " ".join(str(exc).split())
    parts = [p.strip() for p in text.split(". ") if p.strip()]
    for p in parts:
        if "missing" in p or "unsupported" in p or "invalid" in p:
            return p.split(": ", 1)[-1]
    return parts[0].split(": ", 1)[-1] if parts else text


def _open_libyal(path: str, fmt: str):
    if fmt == "vhdi":
        import pyvhdi
        h = pyvhdi.file()
        h.open(path)
        if h.get_disk_type() == 4:          # differencing: parents must sit beside it
            parent = h.get_parent_filename() or ""
            name = re.split(r"[\\/]", parent)[-1]
            candidate = os.path.join(os.path.dirname(path), name)
            if not name or not os.path.isfile(candidate):
                raise EvidenceError(f"{path}: differencing VHD whose parent {name or '(unnamed)'} "
                                    f"is not beside it")
            parent_handle = _open_libyal(candidate, "vhdi")
            h.set_parent(parent_handle)
        return h
    if fmt == "vmdk":
        import pyvmdk
        h = pyvmdk.handle()
        h.open(path)
        h.open_extent_data_files()
        parent = h.get_parent_filename()
        if parent:
            candidate = os.path.join(os.path.dirname(path), re.split(r"[\\/]", parent)[-1])
            if not os.path.isfile(candidate):
                raise EvidenceError(f"{path}: VMDK delta whose parent {parent} is not beside it")
            h.set_parent(_open_libyal(candidate, "vmdk"))
        return h
    if fmt == "qcow":
        import pyqcow
        h = pyqcow.file()
        h.open(path)
        backing = h.get_backing_filename()
        if backing:
            candidate = os.path.join(os.path.dirname(path), os.path.basename(backing))
            if not os.path.isfile(candidate):
                raise EvidenceError(f"{path}: QCOW overlay whose backing file {backing} is missing")
            h.set_parent(_open_libyal(candidate, "qcow"))
        return h
    raise ValueError(fmt)


class SourceImg(pytsk3.Img_Info):
    """TSK reads through any Source. TSK caches 64 KiB-aligned reads itself."""

    def __init__(self, source: Source):
        self._source = source
        super().__init__(url="", type=pytsk3.TSK_IMG_TYPE_EXTERNAL)

    def read(self, offset, size):
        return self._source.read(offset, size)

    def get_size(self):
        return self._source.size

    def close(self):
        pass


class OffsetImg(pytsk3.Img_Info):
    """A window of another reader, for a decrypted volume exposed as a whole image to TSK."""

    def __init__(self, read, size: int):
        self._read = read
        self._size = size
        super().__init__(url="", type=pytsk3.TSK_IMG_TYPE_EXTERNAL)

    def read(self, offset, size):
        return self._read(offset, size)

    def get_size(self):
        return self._size

    def close(self):
        pass


# --- evidence ---------------------------------------------------------------------------------
@dataclass
class Evidence:
    """One opened device. `img` is None for a directory of logical files."""

    ref: EvidenceRef
    source: Optional[Source]
    img: Optional[pytsk3.Img_Info]
    root: Optional[str] = None                 # the folder, for directory evidence
    extraction: Optional[Extraction] = None    # a phone extraction: its members are the files

    def __post_init__(self):
        self.lock = threading.Lock()
        self._held = 0
        self._on_close: list = []              # what the layers above opened over this device

    def read(self, offset: int, size: int) -> bytes:
        if self.source is None:
            raise EvidenceError(f"{self.ref.device_id}: a directory has no media to read")
        return self.source.read(offset, size)

    def view(self, offset: int, size: int) -> Optional[memoryview]:
        return self.source.view(offset, size) if self.source is not None else None

    def views(self, pieces_of: list) -> list:
        """Source.views of a group of files' pieces."""
        return self.source.views(pieces_of) if self.source is not None \
            else [None] * len(pieces_of)

    def mapped(self) -> Optional[memoryview]:
        """Source.mapped: the whole media as one mapped buffer, or None."""
        return self.source.mapped() if self.source is not None else None

    def release(self, offset: int, size: int) -> None:
        if self.source is not None and not self._held:
            self.source.release(offset, size)

    @contextmanager
    def held(self) -> Iterator["Evidence"]:
        """Views taken inside the block stay mapped until it ends, then go together. A group of
        files hashed in two passes (MD5 for many at once, then the rest file by file) is
        touched twice; letting each view go after the first pass would map it all again."""
        self._held += 1
        try:
            yield self
        finally:
            self._held -= 1
            if not self._held and self.source is not None:
                self.source.release_all()

    def damage(self) -> list[Coverage]:
        """The media's damaged regions that reads have met so far (E01 chunks failing their
        checksum), each a gap with its byte range."""
        ranges = getattr(self.source, "damaged_ranges", None)
        if ranges is None:
            return []
        return [Coverage(device_id=self.ref.device_id, kind=MEDIA_DAMAGED,
                         where=Provenance(device_id=self.ref.device_id, volume_offset=None,
                                          offset=start, length=length),
                         reason="E01 chunk fails its checksum: sectors "
                                + self.source.sectors(start, length),
                         bytes_not_examined=length)
                for start, length in ranges()]

    def on_close(self, callback) -> None:
        """Run `callback` when the device closes (a resolver lets go of its volumes)."""
        self._on_close.append(callback)

    def close(self) -> None:
        while self._on_close:
            self._on_close.pop()()
        if self.source is not None:
            self.source.close()

    def __enter__(self) -> "Evidence":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def device_id_for(path: str) -> str:
    """A stable id for a device: the name of its first segment or folder (callers de-duplicate)."""
    p = Path(path)
    name = p.name or p.resolve().name
    return name or str(p)


def detect_format(path: str) -> str:
    """ewf, qcow, vhdi, vmdk, raw or directory, from the bytes. Raises EvidenceError."""
    if os.path.isdir(path):
        return "directory"
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(HEAD)
            tail = b""
            if size >= 512:
                fh.seek(size - 512)
                tail = fh.read(512)
    except OSError as exc:
        raise EvidenceError(f"{path}: {exc.strerror or exc}") from None
    if size == 0:
        raise EvidenceError(f"{path}: empty file (0 bytes), not a disk image")
    if head.startswith(EWF1_MAGIC) or head.startswith(EWF2_MAGIC):
        return "ewf"
    if any(head.startswith(m) for m in LEF_MAGIC):
        raise EvidenceError(f"{path}: an L01/Lx01 logical evidence file, not a disk image "
                            f"(export its files to a folder and give the folder)")
    if head.startswith(QCOW_MAGIC):
        return "qcow"
    if head.startswith(VHDX_MAGIC) or tail.startswith(VHD_COOKIE) or head.startswith(VHD_COOKIE):
        return "vhdi"
    if any(head.startswith(m) for m in VMDK_MAGICS) or VMDK_DESCRIPTOR in head[:1024]:
        return "vmdk"
    return "raw"


_NUMBERED = re.compile(r"^(.*)\.(\d{3})$")
_LETTERED = re.compile(r"^(.*?)([a-z]{2})$")


def split_raw_segments(first: str) -> list[str]:
    """The segments of a split raw image named like `x.000`/`x.001`/... or `xaa`/`xab`/...

    Only counts as split when the next segment exists; a lone `disk.001` is a plain raw file.
    """
    m = _NUMBERED.match(first)
    if m:
        stem, num = m.group(1), int(m.group(2))
        segs = [first]
        while os.path.isfile(f"{stem}.{num + len(segs):03d}"):
            segs.append(f"{stem}.{num + len(segs):03d}")
        return segs
    m = _LETTERED.match(first)
    if m and m.group(2) == "aa":
        stem = m.group(1)
        segs = [first]
        a, b = 0, 1
        while True:
            name = f"{stem}{chr(97 + a)}{chr(97 + b)}"
            if not os.path.isfile(name):
                break
            segs.append(name)
            b += 1
            if b == 26:
                a, b = a + 1, 0
        return segs
    return [first]


def open_evidence(paths: str | Sequence[str], device_id: Optional[str] = None) -> Evidence:
    """Open a device read-only. `paths` is the first segment (the others are found) or all of them."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [os.fspath(paths)]
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise EvidenceError("no evidence path given")
    first = paths[0]
    if not os.path.exists(first):
        raise EvidenceError(f"{first}: no such file or folder")
    device_id = device_id or device_id_for(first)
    fmt = detect_format(first)
    if fmt == "directory":
        evidence = _open_directory(first, device_id)
        if extractions.is_itunes_backup(first):
            evidence.extraction = Extraction("itunes", _no_media(first), evidence.ref.media_size,
                                             root=evidence.root)
            evidence.ref = replace(evidence.ref, format="itunes")
        return evidence

    if fmt == "ewf":
        from triage.ewf import glob_segments
        segments = paths if len(paths) > 1 else glob_segments(first)
        source: Source = EwfSource(segments)
    elif fmt in ("qcow", "vhdi", "vmdk"):
        segments = [first]
        source = LibyalSource(first, fmt)
    else:
        segments = paths if len(paths) > 1 else split_raw_segments(first)
        source = RawSource(segments)
        try:
            head = source.read(0, HEAD)
            # an extraction's signatures first: a zip's compressed bytes may hold 55 AA at 510
            extraction = extractions.sniff(head)
            if extraction is not None:
                return _open_extraction(source, extraction, segments, device_id)
            kind = _raw_signature(head)
        except EvidenceError:
            source.close()
            raise
        if kind is None:
            source.close()
            raise EvidenceError(f"{first}: not a recognised disk image: no container, partition "
                                f"table or file-system signature at its start (random-looking "
                                f"data may be whole-disk encryption)")
    if source.size == 0:
        source.close()
        raise EvidenceError(f"{first}: the container holds no media (0 bytes)")
    try:
        hashes = source.stored_hashes()
        img = SourceImg(source)
    except EvidenceError:
        source.close()
        raise
    ref = EvidenceRef(device_id=device_id, paths=tuple(os.path.abspath(p) for p in segments),
                      format=source.format, media_size=source.size, stored_hashes=hashes)
    return Evidence(ref=ref, source=source, img=img)


def _open_extraction(source: Source, kind: str, segments: Sequence[str],
                     device_id: str) -> Evidence:
    """A phone extraction in one file (tar, gzip'd tar, adb backup, zip or UFDR): the file is
    the media, its members the files; TSK has nothing to read (img is None)."""
    extraction = Extraction(kind, source.read, source.size)
    ref = EvidenceRef(device_id=device_id, paths=tuple(os.path.abspath(p) for p in segments),
                      format=extraction.kind, media_size=source.size)
    return Evidence(ref=ref, source=source, img=None, extraction=extraction)


def _no_media(path: str):
    def read(offset: int, size: int) -> bytes:
        raise EvidenceError(f"{path}: a backup folder has no media to read")
    return read


def _open_directory(path: str, device_id: str) -> Evidence:
    # Listing the folder once tells now, in one line, if this process cannot read it.
    try:
        with os.scandir(path) as it:
            next(it, None)
    except OSError as exc:
        raise EvidenceError(f"{path}: cannot read folder: {exc.strerror or exc}") from None
    ref = EvidenceRef(device_id=device_id, paths=(os.path.abspath(path),), format="directory",
                      media_size=_tree_size(path))
    return Evidence(ref=ref, source=None, img=None, root=os.path.abspath(path))


def _tree_size(path: str) -> int:
    """Bytes of regular files under `path` (iterative; unreadable folders count as 0)."""
    total, stack = 0, [path]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                for e in it:
                    try:
                        if e.is_dir(follow_symlinks=False):
                            stack.append(e.path)
                        elif e.is_file(follow_symlinks=False):
                            total += e.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
        except OSError:
            continue
    return total


def media_hashes(evidence: Evidence, chunk_size: int = 1 << 20,
                 algorithms: Sequence[str] = ("md5", "sha1")) -> dict:
    """Hashes of the whole media, read in order (to compare with the hashes an E01 stores).

    Double-buffered: the next chunk is read (for E01, inflated; ctypes drops the GIL) in a
    second thread while this one hashes the current chunk (hashlib drops the GIL too).
    """
    from concurrent.futures import ThreadPoolExecutor

    source = evidence.source
    if source is None:
        raise EvidenceError(f"{evidence.ref.device_id}: a directory has no media hash")
    read = source.read
    hashers = [hashlib.new(a) for a in algorithms]
    size = source.size
    with ThreadPoolExecutor(1, thread_name_prefix="media-read") as pool:
        offset = 0
        pending = pool.submit(read, 0, min(chunk_size, size)) if size else None
        while pending is not None:
            data = pending.result()
            if not data:
                raise EvidenceError(f"{evidence.ref.device_id}: media ends early at {offset}")
            offset += len(data)
            pending = pool.submit(read, offset, min(chunk_size, size - offset)) if offset < size else None
            for h in hashers:
                h.update(data)
    return {a: h.hexdigest() for a, h in zip(algorithms, hashers)}
