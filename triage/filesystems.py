"""Walk a file system and stream out one FileRecord per file, deleted ones included; read any
file's content again from its provenance.

The walk is the one `fls -r -p` does, over TSK: names allocated and not
(deleted), orphan files under `/$OrphanFiles`, and NTFS alternate data streams as their own
records (`/path:stream`). It keeps an explicit stack of directories, never recursion, and a set
of visited directory addresses so a looping directory structure (corruption, or an attack on
the tool) ends the walk of that branch instead of the process. Memory grows with the number of
directories waiting on the stack, not with the number of files. Each folder is listed through
pytsk3, or, for a file system of a single raw image, through TSK's C API (triage/_tskwalk.c,
a third of the cost a name); the records are built from either by one function.
"""
from __future__ import annotations

import importlib.metadata
import os
import re
import stat
import struct
import threading
from collections import OrderedDict
from dataclasses import replace
from typing import Iterator, Optional

import numpy as np
import pytsk3

from triage import apfs as apfs_reader
from triage import filetype
from triage.errors import EvidenceError, ShortRead
from triage import localfile
from triage.evidence import Evidence
from triage.records import (FOLDER_NOT_READ, PLAIN_FIELDS, SYMLINK, UNREADABLE_VOLUME, Coverage,
                            FileRecord, Provenance, VolumeRef, built)
from triage import volumes
from triage.volumes import VolumeImage, c_text, plain_volume

try:        # built by `make deps` from triage/_tskwalk.c; without it pytsk3 lists every folder
    from triage import _tskwalk
except ImportError:     # pragma: no cover - a build without libtsk-dev
    _tskwalk = None

ORPHAN_DIR = "/$OrphanFiles"
NTFS_DATA = int(pytsk3.TSK_FS_ATTR_TYPE_NTFS_DATA)        # 128, the $DATA attribute
_DIR_TYPES = (pytsk3.TSK_FS_META_TYPE_DIR, pytsk3.TSK_FS_META_TYPE_VIRT_DIR)
_NAME_DIR_TYPES = (pytsk3.TSK_FS_NAME_TYPE_DIR, pytsk3.TSK_FS_NAME_TYPE_VIRT_DIR)
FS_CACHE = 8                                               # FS_Info objects kept per device
# What pytsk3 raises on damaged structures; SystemError and OverflowError come from sizes that
# corrupt metadata makes negative or huge ("Negative size passed to PyBytes_FromStringAndSize").
TSK_ERRORS = (IOError, OSError, RuntimeError, SystemError, OverflowError)
MAP_SLICE = 1 << 20             # bytes of an allocation bitmap read at a time
# TSK's file-system type numbers -> the short names used everywhere else
FS_NAMES = {
    pytsk3.TSK_FS_TYPE_NTFS: "ntfs", pytsk3.TSK_FS_TYPE_FAT12: "fat12",
    pytsk3.TSK_FS_TYPE_FAT16: "fat16", pytsk3.TSK_FS_TYPE_FAT32: "fat32",
    pytsk3.TSK_FS_TYPE_EXFAT: "exfat", pytsk3.TSK_FS_TYPE_EXT2: "ext2",
    pytsk3.TSK_FS_TYPE_EXT3: "ext3", pytsk3.TSK_FS_TYPE_EXT4: "ext4",
    pytsk3.TSK_FS_TYPE_HFS: "hfs+", pytsk3.TSK_FS_TYPE_ISO9660: "iso9660",
    pytsk3.TSK_FS_TYPE_APFS: "apfs", pytsk3.TSK_FS_TYPE_FFS1: "ufs1",
    pytsk3.TSK_FS_TYPE_FFS1B: "ufs1b", pytsk3.TSK_FS_TYPE_FFS2: "ufs2",
    pytsk3.TSK_FS_TYPE_YAFFS2: "yaffs2", pytsk3.TSK_FS_TYPE_SWAP: "swap",
}


def fs_type_name(fs: pytsk3.FS_Info) -> str:
    return FS_NAMES.get(int(fs.info.ftype), f"tsk-{int(fs.info.ftype)}")


class Resolver:
    """The per-process context of one open device, after dfvfs's resolver context: its volumes'
    images (decrypted where a key unlocks them), its open file systems (a small cache) and the
    secrets that unlock them. The Evidence itself stays a plain reader: nothing is cached on it.

    A scan's workers each open the device themselves, so each resolver unlocks what its worker
    reads, with the secrets the scan handed on (`secrets`: recovery key, password).
    """

    def __init__(self, evidence: Evidence, secrets: tuple = ()):
        self.evidence = evidence
        self.secrets = tuple(secrets)
        self._volumes: dict[int, VolumeImage] = {}
        self._apfs: dict[int, apfs_reader.Container] = {}
        self._snapshots: dict[tuple, VolumeImage] = {}
        # volume offset -> which code listed its files (provenance: run options' "listers")
        self.listed_by: dict[int, str] = {}
        self._fs: OrderedDict[tuple, pytsk3.FS_Info] = OrderedDict()
        self._lock = threading.RLock()
        # volume offset -> byte offsets (in the volume) where the walk's deleted files start:
        # carving the same bytes again would count one picture twice
        self.deleted_starts: dict[int, set] = {}

    def volume(self, offset: int, length: Optional[int] = None) -> VolumeImage:
        """The image TSK reads for the volume at `offset`: the media itself, or the volume
        decrypted with `secrets` when it is BitLocker (an error says what is missing)."""
        with self._lock:
            vi = self._volumes.get(offset)
            if vi is not None:
                return vi
            ev = self.evidence
            if ev.img is None:
                raise EvidenceError(f"{ev.ref.device_id}: a folder has no file-system image")
            nested = volumes.nested_of(offset)
            if nested is not None:
                # an LVM logical volume (APFS volumes are read through libfsapfs: see apfs())
                container, index = nested
                head = ev.read(container, 4096)
                if not volumes.is_lvm(head):
                    raise EvidenceError(f"no LVM physical volume at {container}")
                vi = volumes.lvm_volume(ev, container, ev.ref.media_size - container, index)
                self._volumes[offset] = vi
                return vi
            length = ev.ref.media_size - offset if length is None else length
            kind = volumes.encryption_of(ev.read(offset, 512))
            if kind is not None:
                key, password = (tuple(self.secrets) + (None, None))[:2]
                vi = volumes.unlock(ev, offset, length, key, password, kind)
            else:
                vi = plain_volume(ev, offset, length)
            self._volumes[offset] = vi
            return vi

    def apfs(self, container: int, length: Optional[int] = None) -> "apfs_reader.Container":
        """The APFS container at `container` (its volumes are unlocked with `secrets`)."""
        with self._lock:
            found = self._apfs.get(container)
            if found is None:
                ev = self.evidence
                length = ev.ref.media_size - container if length is None else length
                found = self._apfs[container] = apfs_reader.Container(ev, container, length)
            return found

    def fs(self, offset: int, snapshot: str = "") -> pytsk3.FS_Info:
        """The file system of the volume at `offset` (or of its shadow copy `snapshot`),
        opened once (FS_CACHE kept)."""
        key = (offset, snapshot)
        with self._lock:
            fs = self._fs.get(key)
            if fs is not None:
                self._fs.move_to_end(key)
                return fs
            vi = self.volume(offset)
            if snapshot:
                vi = self._snapshots.get(key)
                if vi is None:
                    vi = self._snapshots[key] = volumes.shadow_copy(
                        self.volume(offset), volumes.snapshot_index(snapshot))
            fs = open_fs(vi)
            self._fs[key] = fs
            while len(self._fs) > FS_CACHE:
                self._fs.popitem(last=False)
            return fs

    def close(self) -> None:
        with self._lock:
            self._fs.clear()
            for vi in self._volumes.values():
                vi.close()
            self._volumes.clear()
            for container in self._apfs.values():
                container.close()
            self._apfs.clear()
            for vi in self._snapshots.values():
                vi.close()
            self._snapshots.clear()


_RESOLVERS: dict[int, Resolver] = {}


def resolver(source: "Evidence | Resolver") -> Resolver:
    """The resolver of an open device (made on first use, dropped when the device closes)."""
    if isinstance(source, Resolver):
        return source
    found = _RESOLVERS.get(id(source))
    if found is None or found.evidence is not source:
        key = id(source)
        found = _RESOLVERS[key] = Resolver(source)

        def forget() -> None:
            _RESOLVERS.pop(key, None)
            found.close()
        source.on_close(forget)
    return found


def open_fs(volume: VolumeImage) -> pytsk3.FS_Info:
    """The file system in a volume's image (TSK's file-system layer over the volume layer)."""
    try:
        return pytsk3.FS_Info(volume.img, offset=volume.offset)
    except TSK_ERRORS as exc:
        raise EvidenceError(f"unknown or corrupt file system: {_tsk_reason(exc)}") from None


def _tsk_reason(exc: BaseException) -> str:
    inner = exc.args[0] if len(exc.args) == 1 and isinstance(exc.args[0], Exception) else None
    if inner is not None:       # our own reader's error, wrapped by pytsk3's read callback
        return str(inner)[:200]
    text = " ".join(str(exc).split())
    wrapped = re.match(r"^[A-Za-z]*Error\('(.*)'\)", text)
    if wrapped:
        return wrapped.group(1)[:200]
    if "with error: " in text:
        text = text.split("with error: ", 1)[1]
    elif ") " in text[:60]:
        text = text.split(") ", 1)[1]
    return text[:200] or type(exc).__name__


def _name(raw) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def _time(sec, nano=0) -> Optional[float]:
    if not sec:
        return None
    return float(sec) + (nano or 0) / 1e9


def walk(source: "Evidence | Resolver", volume: VolumeRef,
         problems: Optional[list] = None, plain: bool = False) -> Iterator[FileRecord | tuple]:
    """Every file (and folder) of one volume, as `fls -r -p` lists them. Never "." or "..".

    `problems`, when given, collects a Coverage record for each folder that could not be
    read; the walk goes on past it. `plain`: plain files (records.PLAIN_FIELDS) that the C
    lister lists come as such tuples, not as FileRecords (records.plain_record makes the
    same record of one).
    """
    res = resolver(source)
    evidence = res.evidence
    if evidence.extraction is not None:
        yield from evidence.extraction.walk(volume, problems, res.secrets)
        return
    if evidence.img is None:
        yield from _walk_directory(evidence, volume, problems)
        return
    apfs_volume = _apfs_volume(volume.fs_type, volume.offset)
    if apfs_volume is not None:
        container, index = apfs_volume
        yield from apfs_reader.walk(res.apfs(container), volume, index, res.secrets, problems)
        return
    if volume.fs_type != "ntfs":
        yield from _walk_fs(res, res.fs(volume.offset), volume, problems, plain=plain)
        return
    # NTFS: the live volume, then each volume shadow copy's files that differ from it
    known: set[int] = set()
    for rec in _walk_fs(res, res.fs(volume.offset), volume, problems):
        if not rec.is_dir:
            known.add(_sameness(rec))
        yield rec
    yield from _shadow_copies(res, volume, known, problems)


def _sameness(rec: FileRecord) -> int:
    """What makes a shadow copy's file the same as one already listed: MFT entry, stream,
    path, size and times (one 64-bit hash each, so a million live files cost little)."""
    return hash((rec.prov.inode, rec.prov.attr_id, rec.path, rec.size, rec.mtime, rec.ctime,
                 rec.crtime, rec.allocated))


def _shadow_copies(res: "Resolver", volume: VolumeRef, known: set,
                   problems: Optional[list]) -> Iterator[FileRecord]:
    """Files of each volume shadow copy, oldest first, that are absent from the live volume
    or differ from it (size or times), with the snapshot in their provenance; one that an
    earlier copy already gave is not read again. Unreadable copies are gaps."""
    dev = volume.device_id
    try:
        snapshots = volumes.shadow_copies(res.volume(volume.offset))
    except EvidenceError as exc:
        if problems is not None:
            problems.append(Coverage(device_id=dev, kind=UNREADABLE_VOLUME, where=volume.where,
                                     reason=str(exc)))
        return
    for snap in snapshots:
        try:
            fs = res.fs(volume.offset, snap.name)
        except EvidenceError as exc:
            if problems is not None:
                problems.append(Coverage(device_id=dev, kind=UNREADABLE_VOLUME,
                                         where=replace(volume.where, snapshot=snap.name),
                                         reason=f"shadow copy {snap.name}: {exc}"))
            continue
        for rec in _walk_fs(res, fs, volume, problems, snap.name):
            same = _sameness(rec)
            if not rec.is_dir and same not in known:
                known.add(same)
                yield rec


def _walk_fs(res: "Resolver", fs, volume: VolumeRef, problems: Optional[list],
             snapshot: str = "", plain: bool = False) -> Iterator[FileRecord | tuple]:
    """One file system's names (the live volume's, or a shadow copy's with `snapshot`); with
    `plain`, the C lister's plain files as tuples (see walk)."""
    evidence = res.evidence
    fs_type = volume.fs_type or ""
    dev = evidence.ref.device_id
    root = int(fs.info.root_inum)
    # deleted files of the live volume: carving its free space skips their content
    deleted_starts = res.deleted_starts.setdefault(volume.offset, set()) if not snapshot \
        else set()
    # the live volume's plain files are read straight from the image: their pieces go with
    # the records (pytsk3's lister reads their first bytes through TSK, where a 64-byte pread
    # from Python cost more than TSK's 64 KiB cache; the C lister preads them)
    direct = (evidence, fs, volume.offset) if not snapshot and \
        _direct_volume(evidence, res.volume(volume.offset), fs) else None
    native = _native_lister(evidence, fs, volume.offset) if direct is not None else None
    block = int(fs.info.block_size)
    if not snapshot:
        res.listed_by[volume.offset] = lister_name(native is not None)
    plain = plain and native is not None and not snapshot
    stack: list[tuple[int, str]] = [(root, "")]
    visited = {root}
    try:
        while stack:
            inum, dir_path = stack.pop()
            try:
                listing = _tsk_listing(fs, inum, direct) if native is None else \
                    native(inum, f"{dir_path}/" if plain else None)
            except TSK_ERRORS as exc:
                # the root too: an unreadable root hides the whole file system's names
                if problems is not None:
                    where = Provenance(device_id=dev, volume_offset=volume.offset, inode=inum,
                                       path=dir_path or "/", volume_index=volume.index,
                                       fs_type=fs_type, snapshot=snapshot)
                    problems.append(Coverage(device_id=dev, kind=FOLDER_NOT_READ, where=where,
                                             reason=f"folder not readable: {_tsk_reason(exc)}"))
                continue
            children: list[tuple[int, str]] = []
            for item in listing:
                if len(item) == _PLAIN_WIDTH:      # a plain file, made by the C lister
                    yield item
                    continue
                name, addr, name_alloc, is_dir, facts, head, pieces, first, entry = item
                path = f"{dir_path}/{name}"
                if plain and not is_dir and facts is not None and pieces is not None \
                        and first is None and entry is None:
                    # _record's fields, as records.PLAIN_FIELDS
                    size = facts[0]
                    ctype, mismatch = _content_type(name, size, head)
                    yield (addr, path, name, size, name_alloc, path.startswith(_ORPHANS),
                           facts[2], facts[3], facts[4], facts[5], ctype, mismatch, pieces)
                    continue
                record = _record(volume, fs_type, path, name, addr, name_alloc, is_dir, facts,
                                 head, pieces, snapshot)
                if first is not None:
                    deleted_starts.add(first * block)
                yield record
                if fs_type == "ntfs" and facts is not None and entry is not None:
                    yield from _streams(entry, record)
                if is_dir and facts is not None and addr not in visited:
                    # TSK's rule: a deleted folder whose entry now belongs to another file is
                    # not walked (its listing would be the new owner's).
                    if name_alloc or not facts[1]:
                        visited.add(addr)
                        children.append((addr, path))
            # pop order: alphabetical-ish, like fls
            stack.extend(reversed(children))
    finally:
        if native is not None:
            native.close()


# What one name of a folder gives the walk, from either lister: (name, meta address, name
# allocated, folder, facts, first bytes, pieces, deleted content's first block, pytsk3 entry).
# facts: (size, metadata allocated, mtime, atime, ctime, crtime), None without metadata; first
# bytes: None unless a file with content; pieces: None unless read straight from the image;
# the entry: None from the C lister (which never serves NTFS, the one that needs it).


def lister_name(native: bool) -> str:
    """Which code lists a volume's files, as the run's provenance records it."""
    if native:
        return f"libtsk {_tskwalk.tsk_version()} (C API)"
    return f"pytsk3 {_PYTSK3_VERSION} (TSK {pytsk3.TSK_VERSION_STR})"


def _installed(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:     # pragma: no cover - run from a tree
        return "unknown"


_PYTSK3_VERSION = _installed("pytsk3")


def _tsk_listing(fs, inum: int, direct) -> Iterator[tuple]:
    """A folder's names through pytsk3 (opened now, so a folder that cannot be opened raises
    here; a name that cannot be read raises while iterating, as pytsk3 does)."""
    directory = fs.open_dir(inode=inum)
    return _tsk_names(fs, directory, direct)


def _tsk_names(fs, directory, direct) -> Iterator[tuple]:
    for entry in directory:
        info = entry.info
        name = _name(info.name.name)
        if name in (".", ".."):
            continue
        meta = info.meta
        addr = int(info.name.meta_addr)
        name_alloc = bool(int(info.name.flags) & int(pytsk3.TSK_FS_NAME_FLAG_ALLOC))
        if meta is None and addr and not name_alloc:
            entry, meta = _unclaimed_meta(fs, entry, addr)
        if meta is None:
            yield (name, addr, name_alloc, info.name.type in _NAME_DIR_TYPES, None, None, None,
                   None, entry)
            continue
        is_dir = meta.type in _DIR_TYPES
        size = int(meta.size)
        facts = (size, bool(int(meta.flags) & int(pytsk3.TSK_FS_META_FLAG_ALLOC)),
                 _time(meta.mtime, getattr(meta, "mtime_nano", 0)),
                 _time(meta.atime, getattr(meta, "atime_nano", 0)),
                 _time(meta.ctime, getattr(meta, "ctime_nano", 0)),
                 _time(meta.crtime, getattr(meta, "crtime_nano", 0)))
        head = pieces = first = None
        if not is_dir and size != 0:
            if direct is not None:
                pieces = file_pieces(direct[0], direct[1], entry, meta, direct[2])
            try:
                head = entry.read_random(0, min(size, filetype.HEAD_BYTES))
            except TSK_ERRORS:
                head = b""
            if not name_alloc:
                first = _first_block(entry)
        yield name, addr, name_alloc, is_dir, facts, head, pieces, first, entry


def _native_lister(evidence: Evidence, fs, volume_offset: int):
    """The C lister (triage/_tskwalk.c) for a volume of a single raw file, as a callable
    inum -> names with a close(); None where it does not apply or is not built (pytsk3 then
    lists every folder)."""
    if _tskwalk is None or getattr(evidence.source, "format", "") != "raw":
        return None
    try:
        # the file the evidence holds open, not its name again: nothing put in its place
        # since, and no split segments TSK's raw reader would look for beside it
        walker = _tskwalk.Walker(evidence.source.held_path(0), volume_offset, int(fs.info.ftype),
                                 _media_size(evidence), filetype.HEAD_BYTES, MAX_PIECES)
    except (OSError, ValueError):
        return None     # TSK's raw reader refused what pytsk3 opened: pytsk3 lists it

    def listing(inum: int, prefix: Optional[str] = None) -> Iterator[tuple]:
        """The folder's names; with `prefix` (its path and "/"), a plain file whose first
        bytes no content type matches comes as its PLAIN_FIELDS (_walk_fs's tuple, made in
        C: the type "" by filetype.SNIFF_RULES, which then has no extension mismatch)."""
        walker.opendir(inum)        # raises here, as pytsk3's open_dir does
        if prefix is None:
            return _read_folder(walker.read)
        return _read_folder(lambda n: walker.read_plain(n, prefix, _ORPHANS,
                                                        filetype.SNIFF_RULES))

    listing.close = walker.close
    return listing


FOLDER_STEP = 4096      # names the C lister hands over at a time (a folder may hold millions)


def _read_folder(read) -> Iterator[tuple]:
    """The open folder's names (`read(n)`: the C lister's next n), then the error that stopped
    its listing (pytsk3's order)."""
    while True:
        names, error, done = read(FOLDER_STEP)
        yield from names
        if error is not None:
            raise OSError(error)
        if done:
            return


def _first_block(entry) -> Optional[int]:
    """Where a (deleted) file's content starts in its volume: its first non-resident data
    run's block."""
    try:
        for attr in entry:
            t = int(attr.info.type)
            if t not in (int(pytsk3.TSK_FS_ATTR_TYPE_DEFAULT), NTFS_DATA) or \
                    (t == NTFS_DATA and attr.info.name) or \
                    not int(attr.info.flags) & int(pytsk3.TSK_FS_ATTR_NONRES):
                continue
            for run in attr:
                if int(run.len) > 0 and not int(run.flags) & int(pytsk3.TSK_FS_ATTR_RUN_FLAG_SPARSE):
                    return int(run.addr)
                return None
    except TSK_ERRORS:
        return None
    return None


def _unclaimed_meta(fs, entry, addr: int):
    """The metadata of a deleted name that TSK 4.15 did not attach (NTFS: the MFT entry's
    sequence number moved on at deletion), provided no other file has claimed the entry since.

    Debian's TSK 4.11 `fls` attaches it, and the content is still recoverable; an entry now
    allocated to another file is left alone, its bytes are not this name's.
    """
    try:
        f = fs.open_meta(inode=addr)
    except TSK_ERRORS:
        return entry, None
    meta = f.info.meta
    if meta is None or int(meta.flags) & int(pytsk3.TSK_FS_META_FLAG_ALLOC):
        return entry, None
    return f, meta


def _record(volume: VolumeRef, fs_type: str, path: str, name: str, addr: int,
            allocated: bool, is_dir: bool, facts: Optional[tuple], head: Optional[bytes],
            pieces: Optional[tuple], snapshot: str = "") -> FileRecord:
    """One name's record, from what either lister gives (_tsk_listing, _native_lister)."""
    size, ctype, mismatch, times = 0, "", False, _NO_TIMES
    if facts is not None:
        size = facts[0]
        times = facts[2:]
        if not is_dir:
            ctype, mismatch = _content_type(name, size, head)
    # built(): one per name of the volume, where the dataclass __init__ was a tenth of the walk
    prov = built(Provenance, device_id=volume.device_id, volume_offset=volume.offset,
                 inode=addr, path=path, volume_index=volume.index, fs_type=fs_type,
                 snapshot=snapshot)
    return built(FileRecord, prov=prov, name=name, size=size, allocated=allocated,
                 fs_type=fs_type, is_dir=is_dir, orphan=path.startswith(_ORPHANS),
                 type=ctype, ext_mismatch=mismatch, pieces=tuple(pieces or ()), mtime=times[0],
                 atime=times[1], ctime=times[2], crtime=times[3])


_NO_TIMES = (None, None, None, None)
_ORPHANS = ORPHAN_DIR + "/"
_PLAIN_WIDTH = len(PLAIN_FIELDS)        # a listing's plain file (a name's tuple is shorter)


def _content_type(name: str, size: int, head: Optional[bytes]) -> tuple[str, bool]:
    """(content type, extension mismatch) of a file of `size` bytes from its first bytes."""
    if size == 0:
        return "empty", False
    ctype = filetype.sniff(head) if head else ""
    return ctype, filetype.ext_mismatch(name, ctype)


def _streams(entry, parent: FileRecord) -> Iterator[FileRecord]:
    """NTFS alternate data streams: every named $DATA attribute, one record each."""
    for attr in entry:
        ainfo = attr.info
        if int(ainfo.type) != NTFS_DATA or not ainfo.name:
            continue
        sname = _name(ainfo.name)
        if not sname or sname == "$I30":
            continue
        size = int(ainfo.size)
        head = b""
        if size:
            try:
                head = entry.read_random(0, min(size, filetype.HEAD_BYTES), NTFS_DATA, int(ainfo.id))
            except TSK_ERRORS:
                head = b""
        ctype = "empty" if size == 0 else (filetype.sniff(head) if head else "")
        prov = replace(parent.prov, path=f"{parent.path}:{sname}", ads=sname,
                       attr_type=NTFS_DATA, attr_id=int(ainfo.id))
        yield FileRecord(prov=prov, name=f"{parent.name}:{sname}", size=size, allocated=parent.allocated,
                         fs_type=parent.fs_type, is_dir=False, orphan=parent.orphan,
                         mtime=parent.mtime, atime=parent.atime, ctime=parent.ctime, crtime=parent.crtime,
                         type=ctype, ext_mismatch=filetype.ext_mismatch(sname, ctype))


def _apfs_volume(fs_type: Optional[str], offset: Optional[int]) -> Optional[tuple[int, int]]:
    """(container offset, volume index) when this is an APFS volume read through libfsapfs."""
    return volumes.nested_of(offset) if fs_type == "apfs" else None


def _walk_directory(evidence: Evidence, volume: VolumeRef, problems: Optional[list]) -> Iterator[FileRecord]:
    """A folder of logical files (a phone extraction): every entry, symlinks not followed."""
    root = evidence.root
    dev = evidence.ref.device_id
    stack = [(root, "")]
    seen: set[tuple[int, int]] = set()
    while stack:
        folder, rel = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            if problems is not None:
                where = Provenance(device_id=dev, volume_offset=0, path=rel or "/",
                                   volume_index=0, fs_type="directory")
                problems.append(Coverage(device_id=dev, kind=FOLDER_NOT_READ, where=where,
                                         reason=f"folder not readable: {exc.strerror or exc}"))
            continue
        children = []
        for e in entries:
            path = f"{rel}/{e.name}"
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            is_dir = stat.S_ISDIR(st.st_mode)
            ctype, mismatch, target = "", False, ""
            if stat.S_ISLNK(st.st_mode):
                ctype = SYMLINK
                try:
                    target = os.readlink(e.path)
                except OSError:
                    target = ""
            elif stat.S_ISREG(st.st_mode):
                if st.st_size == 0:
                    ctype = "empty"
                else:
                    try:
                        with open(e.path, "rb") as fh:
                            ctype = filetype.sniff(fh.read(filetype.HEAD_BYTES))
                    except OSError:
                        ctype = ""
                    mismatch = filetype.ext_mismatch(e.name, ctype)
            prov = Provenance(device_id=dev, volume_offset=0, inode=int(st.st_ino), path=path,
                              volume_index=0, fs_type="directory")
            yield FileRecord(prov=prov, name=e.name, size=0 if is_dir or stat.S_ISLNK(st.st_mode) else st.st_size,
                             allocated=True, fs_type="directory", is_dir=is_dir,
                             mtime=st.st_mtime, atime=st.st_atime, ctime=st.st_ctime,
                             crtime=getattr(st, "st_birthtime", None), type=ctype, ext_mismatch=mismatch,
                             link_target=target)
            if is_dir and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                children.append((e.path, path))
        stack.extend(reversed(children))


def read_chunks(source: "Evidence | Resolver", prov: Provenance,
                chunk_size: int = 1 << 20) -> Iterator[bytes]:
    """The content of the file `prov` names, in chunks of at most `chunk_size` bytes.

    Content that ends before the file's size (a read error mid-file, a truncated image, a
    deleted file whose blocks TSK cannot follow any more) raises ShortRead after the bytes
    that could be read, so the reader can record the gap and never mistake a partial hash for
    the file's. A declared size larger than the volume is read only as far as the volume goes.
    """
    res = resolver(source)
    evidence = res.evidence
    if evidence.extraction is not None:
        # a member stored as is is read straight from the evidence file (no copy)
        pieces = evidence.extraction.pieces(prov)
        if pieces is not None:
            yield from _read_direct(evidence, pieces, chunk_size)
        else:
            yield from evidence.extraction.read(prov, chunk_size, res.secrets)
        return
    if evidence.img is None:
        yield from _read_logical(evidence, prov, chunk_size)
        return
    apfs_volume = _apfs_volume(prov.fs_type, prov.volume_offset)
    if apfs_volume is not None and not prov.carved:
        container, index = apfs_volume
        yield from apfs_reader.read(res.apfs(container), index, res.secrets, prov, chunk_size)
        return
    if prov.carved:
        yield from _read_range(res, prov, chunk_size)
        return
    fs = res.fs(prov.volume_offset, prov.snapshot)
    if not prov.inode and int(fs.info.ftype) != int(pytsk3.TSK_FS_TYPE_NTFS):
        return          # a deleted name whose metadata is gone (address 0): no content left
    try:
        f = fs.open_meta(inode=prov.inode)
    except TSK_ERRORS as exc:
        raise EvidenceError(f"{prov.path}: cannot open inode {prov.inode}: {_tsk_reason(exc)}") from None
    meta = f.info.meta
    direct = None if prov.attr_type or prov.snapshot else _direct_ranges(evidence, res.volume(prov.volume_offset),
                                                        fs, f, meta, prov.volume_offset)
    if direct is not None:
        yield from _read_direct(evidence, direct, chunk_size)
        return
    if prov.attr_type:
        size = None
        for attr in f:
            if int(attr.info.type) == prov.attr_type and int(attr.info.id) == prov.attr_id:
                size = int(attr.info.size)
                break
        if size is None:
            raise EvidenceError(f"{prov.path}: stream {prov.attr_type}-{prov.attr_id} not found")
        args: tuple = (prov.attr_type, prov.attr_id)
    else:
        size = int(meta.size) if meta is not None else 0
        args = ()
    if size < 0:
        raise ShortRead(f"declared size {size:,} bytes: damaged metadata", 0, 0)
    # Hostile metadata can declare any size (7e16 bytes): no loop runs on it past the volume.
    room = max(0, _media_size(evidence) - (prov.volume_offset or 0))
    end = min(size, room)
    offset = 0
    while offset < end:
        n = min(chunk_size, end - offset)
        try:
            data = f.read_random(offset, n, *args)
        except TSK_ERRORS as exc:
            raise ShortRead(f"read error at byte {offset:,}: {_tsk_reason(exc)}", size,
                            offset) from None
        if not data:
            init = _ntfs_initialised(res, fs, prov) if _is_ntfs(fs) else None
            if init is not None and offset >= init:
                # NTFS stores nothing past an attribute's initialised size ($BadClus:$Bad
                # is all of it); icat stops there too
                raise ShortRead(f"content ends at the NTFS initialised size ({init:,} of "
                                f"{size:,} bytes)", size, offset, gap=False)
            raise ShortRead(f"no content past byte {offset:,}", size, offset)
        yield data
        offset += len(data)
    if end < size:
        raise ShortRead(f"declared size {size:,} bytes is larger than the volume "
                        f"({room:,} bytes from its start)", size, offset)


# File systems whose block runs are the whole truth about a live file's content: no
# compression, no initialised-size cut-off (NTFS and exFAT have one, which pytsk3 does not show).
_DIRECT_FS = frozenset(int(getattr(pytsk3, f"TSK_FS_TYPE_{n}"))
                       for n in ("EXT2", "EXT3", "EXT4", "FAT12", "FAT16", "FAT32"))
_META_ALLOC = int(pytsk3.TSK_FS_META_FLAG_ALLOC)
_ATTR_DEFAULT = int(pytsk3.TSK_FS_ATTR_TYPE_DEFAULT)
_ATTR_NONRES = int(pytsk3.TSK_FS_ATTR_NONRES)
_NOT_PLAIN = int(pytsk3.TSK_FS_ATTR_COMP) | int(pytsk3.TSK_FS_ATTR_ENC) | \
    int(pytsk3.TSK_FS_ATTR_SPARSE) | int(pytsk3.TSK_FS_ATTR_RES)


def _direct_ranges(evidence: Evidence, vi: VolumeImage, fs, f, meta,
                   volume_offset: int) -> Optional[list]:
    """(image offset, length) pieces that hold a file's content in order, when reading them
    straight from the image gives exactly what TSK's read would (_direct_volume, file_pieces);
    None otherwise (the file is read through TSK)."""
    if meta is None or not _direct_volume(evidence, vi, fs):
        return None
    return file_pieces(evidence, fs, f, meta, volume_offset)


def _direct_volume(evidence: Evidence, vi: VolumeImage, fs) -> bool:
    """Whether a volume's files can be read straight from the image: ext or FAT (no
    compression, no initialised-size cut-off), not unlocked (its bytes are not the image's),
    in a container the image maps (raw)."""
    return not vi.unlocked and int(fs.info.ftype) in _DIRECT_FS and evidence.view(0, 1) is not None


def _media_size(evidence: Evidence) -> int:
    """The bytes of the media: no read, piece or loop goes past them."""
    return evidence.ref.media_size or evidence.source.size


# A file in more block runs than this is read through TSK: its pieces travel with its record
# (to the batch, to the worker), and a hostile extent tree can make millions.
MAX_PIECES = 4096


def file_pieces(evidence: Evidence, fs, f, meta, volume_offset: int) -> Optional[list]:
    """A file's content as (image offset, length) pieces in order, on a volume
    `_direct_volume` allows: an allocated file with one plain non-resident data attribute,
    every block run allocated, in order and inside the image. None for anything else
    (deleted, sparse, compressed, encrypted, resident), which is read through TSK."""
    if not int(meta.flags) & _META_ALLOC:
        return None
    size = int(meta.size)
    if size <= 0:
        return None
    attr = None
    for a in f:
        ainfo = a.info
        if int(ainfo.type) == _ATTR_DEFAULT:
            if attr is not None:
                return None
            attr, flags, asize = a, int(ainfo.flags), int(ainfo.size)
    if attr is None or flags & _NOT_PLAIN or not flags & _ATTR_NONRES or asize != size:
        return None
    block = int(fs.info.block_size)
    media = _media_size(evidence)
    pieces, expected, left = [], 0, size
    for run in attr:
        if left <= 0:
            break
        if len(pieces) == MAX_PIECES:
            return None
        length = int(run.len)
        if int(run.flags) or int(run.offset) != expected or length <= 0:
            return None
        n = min(length * block, left)
        start = volume_offset + int(run.addr) * block
        if start + n > media:
            return None
        pieces.append((start, n))
        expected += length
        left -= n
    return pieces if left == 0 else None


def read_pieces(source: "Evidence | Resolver", pieces, chunk_size: int) -> Iterator[bytes]:
    """A file's content from the pieces the walk found (FileRecord.pieces), straight from the
    image."""
    return _read_direct(resolver(source).evidence, pieces, chunk_size)


def small_reader(source: "Evidence | Resolver"):
    """A function that reads the content of a file at most a chunk long from its pieces:
    what `read_pieces` yields for it (a chunk a piece), as a list, without its generators (a
    million small files). Made once for a group of files, so the device is looked up once."""
    evidence = resolver(source).evidence
    view, read = evidence.view, evidence.read

    def read_small(pieces) -> list:
        return [view(start, n) or read(start, n) for start, n in pieces]
    return read_small


def small_views(source: "Evidence | Resolver", pieces_of: list) -> list:
    """What `small_reader` reads of each of a group of files, for the files whose every piece
    is mapped straight from the image (Evidence.views, in one pass); None for the others."""
    return resolver(source).evidence.views(pieces_of)


def small_mapped(source: "Evidence | Resolver"):
    """The buffer that the pieces `small_reader` reads index, where the whole image is mapped
    as one (Evidence.mapped); else None."""
    return resolver(source).evidence.mapped()


def _read_direct(evidence: Evidence, pieces: list, chunk_size: int) -> Iterator[memoryview]:
    for start, n in pieces:
        done = 0
        while done < n:
            k = min(chunk_size, n - done)
            view = evidence.view(start + done, k)
            if view is None:          # across split-raw segments: an ordinary read
                yield evidence.read(start + done, k)
            else:
                yield view
                # hashed by now: keep the worker's resident set to about a chunk
                evidence.release(start + done, k)
            done += k


def _read_range(res: Resolver, prov: Provenance, chunk_size: int) -> Iterator[bytes]:
    """A byte range of a volume (free space: decrypted when the volume was unlocked) or of the
    media (unpartitioned space): what a carved item is."""
    evidence = res.evidence
    base = prov.parent.volume_offset
    if base is None:
        room = evidence.ref.media_size - prov.offset
    else:
        vi = res.volume(base)
        room = vi.length - prov.offset
        if vi.unlocked:
            done, end = 0, min(prov.length, max(0, room))
            while done < end:
                data = vi.read(prov.offset + done, min(chunk_size, end - done))
                if not data:
                    break
                yield data
                done += len(data)
            if done < prov.length:
                raise ShortRead(f"range ends at byte {done:,}", prov.length, done)
            return
    if room < prov.length:
        raise ShortRead(f"range runs {prov.length - max(0, room):,} bytes past the end of the "
                        "image", prov.length, 0)
    yield from _read_direct(evidence, [((base or 0) + prov.offset, prov.length)], chunk_size)


def _read_logical(evidence: Evidence, prov: Provenance, chunk_size: int) -> Iterator[bytes]:
    yield from localfile.read_chunks(os.path.join(evidence.root, prov.path.lstrip("/")),
                                     prov.path, chunk_size)


def _is_ntfs(fs) -> bool:
    return int(fs.info.ftype) == int(pytsk3.TSK_FS_TYPE_NTFS)


def _ntfs_initialised(res: Resolver, fs, prov: Provenance) -> Optional[int]:
    """The initialised size of the NTFS attribute `prov` reads, from its MFT entry (pytsk3
    does not show it); None when it cannot be found (an attribute list, a damaged entry)."""
    try:
        boot = res.volume(prov.volume_offset).read(0, 512)
        cluster = int.from_bytes(boot[11:13], "little") * boot[13]
        per = int.from_bytes(boot[0x40:0x41], "little", signed=True)
        entry_size = cluster * per if per > 0 else 1 << -per
        if not 256 <= entry_size <= 65536:
            return None
        rec = bytearray(fs.open_meta(inode=0).read_random(prov.inode * entry_size, entry_size))
        if len(rec) < entry_size or rec[:4] != b"FILE":
            return None
        usa, count = int.from_bytes(rec[4:6], "little"), int.from_bytes(rec[6:8], "little")
        for i in range(1, count):                     # undo the update-sequence fixups
            end = i * 512
            if end > entry_size or usa + 2 * i + 2 > entry_size:
                return None
            rec[end - 2:end] = rec[usa + 2 * i:usa + 2 * i + 2]
        pos = int.from_bytes(rec[0x14:0x16], "little")
        want_type = prov.attr_type or NTFS_DATA
        while pos + 16 <= entry_size:
            atype = int.from_bytes(rec[pos:pos + 4], "little")
            length = int.from_bytes(rec[pos + 4:pos + 8], "little")
            if atype == 0xFFFFFFFF or length < 16:
                return None
            nonres, name_len = rec[pos + 8], rec[pos + 9]
            aid = int.from_bytes(rec[pos + 14:pos + 16], "little")
            if atype == want_type and nonres and (
                    aid == prov.attr_id if prov.attr_type else name_len == 0):
                return int.from_bytes(rec[pos + 0x38:pos + 0x40], "little")
            pos += length
    except (*TSK_ERRORS, EvidenceError, ValueError):
        return None
    return None


# --- the allocation map: free runs and free bytes ------------------------------------------

def _mask_runs(free: np.ndarray) -> Iterator[tuple[int, int]]:
    """(first index, count) of each run of True in a boolean array."""
    if not free.size:
        return
    edges = np.diff(np.concatenate(([0], free.astype(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    for s, e in zip(starts.tolist(), ends.tolist()):
        yield s, e - s


def _merged(runs: Iterator[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """Adjacent runs joined (the map is read in slices; a run may cross a slice's edge)."""
    cur: Optional[list] = None
    for s, n in runs:
        if n <= 0:
            continue
        if cur is not None and cur[0] + cur[1] == s:
            cur[1] += n
            continue
        if cur is not None:
            yield cur[0], cur[1]
        cur = [s, n]
    if cur is not None:
        yield cur[0], cur[1]


def free_runs(source, volume_offset: int, fs_type: str, fs=None,
              limit: Optional[int] = None) -> Iterator[tuple[int, int]]:
    """(start, length) in bytes from the volume's start, of every run its file system's own
    allocation map marks free, in order. Memory holds one slice of the map at a time. Raises
    ValueError (or EvidenceError) when the map cannot be read; an unsupported file system
    raises ValueError too, so its free space stays a gap."""
    vi = resolver(source).volume(volume_offset)
    length = vi.length if limit is None else limit
    if fs_type.startswith("ext"):
        runs = _ext_runs(vi)
    elif fs_type in ("fat12", "fat16", "fat32"):
        runs = _fat_runs(vi, fs_type)
    elif fs_type == "ntfs" and fs is not None:
        runs = _bitmap_runs(fs, 6, int(fs.info.block_count), int(fs.info.block_size), 0)
    elif fs_type == "exfat" and fs is not None:
        runs = _exfat_runs(vi, fs)
    elif fs_type == "hfs+" and fs is not None:
        runs = _hfs_runs(vi, fs)
    else:
        raise ValueError(f"the {fs_type or 'unknown'} allocation map is not read")
    for s, n in _merged(runs):
        if s >= length:
            return
        yield s, min(n, length - s)


def _le(b: bytes, a: int, n: int) -> int:
    return int.from_bytes(b[a:a + n], "little")


def _ext_runs(vi) -> Iterator[tuple[int, int]]:
    sb = vi.read(1024, 1024)
    if len(sb) < 1024 or _le(sb, 56, 2) != 0xEF53:
        raise ValueError("no ext superblock")
    block = 1024 << _le(sb, 24, 4) if _le(sb, 24, 4) < 7 else 0
    incompat, ro = _le(sb, 0x60, 4), _le(sb, 0x64, 4)
    is64 = bool(incompat & 0x80)
    blocks = _le(sb, 4, 4) | ((_le(sb, 0x150, 4) << 32) if is64 else 0)
    first, bpg, ipg = _le(sb, 20, 4), _le(sb, 32, 4), _le(sb, 40, 4)
    if not block or not 0 < bpg <= 8 * block or blocks * block > vi.length * 2 + block:
        raise ValueError("implausible ext superblock")
    desc = max(32, _le(sb, 0xFE, 2)) if is64 else 32
    inode_size = _le(sb, 88, 2) if _le(sb, 76, 4) >= 1 else 128
    groups = (blocks - first + bpg - 1) // bpg
    gdt = vi.read((first + 1) * block, groups * desc)
    if len(gdt) < groups * desc:
        raise ValueError("ext group descriptors cut short")
    sparse = bool(ro & 1)
    reserved_gdt = _le(sb, 0xCE, 2)
    gdt_blocks = (groups * desc + block - 1) // block
    table_blocks = (ipg * inode_size + block - 1) // block
    meta: list[tuple[int, int]] = []           # (block, count) of bitmaps and inode tables
    bitmaps = []
    for g in range(groups):
        d = gdt[g * desc:(g + 1) * desc]
        hi = desc >= 64
        bb = _le(d, 0, 4) | ((_le(d, 0x20, 4) << 32) if hi else 0)
        ib = _le(d, 4, 4) | ((_le(d, 0x24, 4) << 32) if hi else 0)
        it = _le(d, 8, 4) | ((_le(d, 0x28, 4) << 32) if hi else 0)
        bitmaps.append((bb, _le(d, 0x12, 2)))
        meta += [(bb, 1), (ib, 1), (it, table_blocks)]

    def has_backup(g: int) -> bool:
        if g <= 1 or not sparse:
            return True
        for p in (3, 5, 7):
            n = p
            while n < g:
                n *= p
            if n == g:
                return True
        return False

    for g, (bb, flags) in enumerate(bitmaps):
        start = first + g * bpg
        count = min(bpg, blocks - start)
        if count <= 0:
            break
        if flags & 0x2:                          # BLOCK_UNINIT: the kernel's own rule
            used = np.zeros(count, dtype=bool)
            if has_backup(g):
                used[:min(count, 1 + gdt_blocks + reserved_gdt)] = True
            for b, n in meta:
                lo, hi_ = max(b, start), min(b + n, start + count)
                if lo < hi_:
                    used[lo - start:hi_ - start] = True
            free = ~used
        else:
            raw = vi.read(bb * block, (count + 7) // 8)
            if len(raw) < (count + 7) // 8:
                raise ValueError(f"ext group {g}: block bitmap cut short")
            free = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")[:count] == 0
        for s, n in _mask_runs(free):
            yield (start + s) * block, n * block


def _fat_runs(vi, fs_type: str) -> Iterator[tuple[int, int]]:
    bs = vi.read(0, 512)
    sector = _le(bs, 11, 2)
    per_cluster, reserved, fats = bs[13], _le(bs, 14, 2), bs[16]
    root_entries = _le(bs, 17, 2)
    total = _le(bs, 19, 2) or _le(bs, 32, 4)
    fat_sectors = _le(bs, 22, 2) or _le(bs, 36, 4)
    if not (sector and per_cluster and fats):
        raise ValueError("not a FAT boot sector")
    root_sectors = (root_entries * 32 + sector - 1) // sector
    data_sectors = total - reserved - fats * fat_sectors - root_sectors
    clusters = max(0, data_sectors // per_cluster)
    data_start = (reserved + fats * fat_sectors + root_sectors) * sector
    cl = per_cluster * sector
    width = {"fat32": 4, "fat16": 2}.get(fs_type, 1.5)
    slice_entries = 1 << 20
    at = 2
    while at < clusters + 2:
        n = min(slice_entries, clusters + 2 - at)
        if width == 1.5:                         # FAT12 (small: read whole)
            raw = vi.read(reserved * sector, fat_sectors * sector)
            tri = np.frombuffer(raw[:len(raw) // 3 * 3], dtype=np.uint8).reshape(-1, 3).astype(np.uint16)
            entries = np.empty(tri.shape[0] * 2, dtype=np.uint16)
            entries[0::2] = tri[:, 0] | ((tri[:, 1] & 0x0F) << 8)
            entries[1::2] = (tri[:, 1] >> 4) | (tri[:, 2] << 4)
            part = entries[2:2 + clusters]
            n = clusters
        else:
            w = int(width)
            raw = vi.read(reserved * sector + at * w, n * w)
            part = np.frombuffer(raw[:len(raw) // w * w], dtype="<u4" if w == 4 else "<u2")
            if w == 4:
                part = part & 0x0FFFFFFF
        if len(part) < n:
            raise ValueError("FAT cut short")
        for s, k in _mask_runs(part[:n] == 0):
            yield data_start + (at - 2 + s) * cl, k * cl
        at += n
    tail = (data_sectors - clusters * per_cluster) * sector
    if tail > 0:
        yield data_start + clusters * cl, tail


def _bitmap_runs(fs, inode: int, clusters: int, cluster_size: int, base: int,
                 first_cluster: int = 0, bitorder: str = "little") -> Iterator[tuple[int, int]]:
    """Runs of a bitmap file (NTFS $Bitmap, exFAT's allocation bitmap, HFS+'s allocation file,
    whose bits run from the most significant), read a slice at a time; cluster i +
    first_cluster of the bitmap lies at base + i * cluster_size."""
    f = fs.open_meta(inode=inode)
    step = MAP_SLICE                             # bytes of bitmap: 8M clusters a slice
    done = 0
    nbytes = (clusters + 7) // 8
    while done < nbytes:
        k = min(step, nbytes - done)
        try:
            raw = f.read_random(done, k)
        except TSK_ERRORS as exc:
            raise ValueError(f"allocation bitmap unreadable: {exc}") from None
        if len(raw) < k:
            raise ValueError("allocation bitmap shorter than the volume")
        bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder=bitorder)
        bits = bits[:max(0, clusters - done * 8)]
        for s, n in _mask_runs(bits == 0):
            yield base + (done * 8 + s) * cluster_size, n * cluster_size
        done += k


def _exfat_runs(vi, fs) -> Iterator[tuple[int, int]]:
    bs = vi.read(0, 512)
    clusters = _le(bs, 92, 4)
    sector = 1 << bs[108]
    cluster_size = 1 << (bs[108] + bs[109])
    heap = _le(bs, 88, 4) * sector
    root = fs.open_dir(inode=int(fs.info.root_inum))
    for entry in root:
        if _name(entry.info.name.name) == "$ALLOC_BITMAP" and entry.info.meta is not None:
            yield from _bitmap_runs(fs, int(entry.info.meta.addr), clusters, cluster_size, heap)
            return
    raise ValueError("exFAT allocation bitmap not found")


HFS_ALLOCATION_FILE = 6                 # the allocation file's catalog node id (TSK's inode)


def _hfs_runs(vi, fs) -> Iterator[tuple[int, int]]:
    vh = vi.read(1024, 512)
    if len(vh) < 0x34 or vh[:2] not in (b"H+", b"HX"):
        raise ValueError("no HFS+ volume header")
    block, total = int.from_bytes(vh[0x28:0x2C], "big"), int.from_bytes(vh[0x2C:0x30], "big")
    if block < 512 or block & (block - 1) or total * block > vi.length * 2 + block:
        raise ValueError("implausible HFS+ volume header")
    yield from _bitmap_runs(fs, HFS_ALLOCATION_FILE, total, block, 0, bitorder="big")


def unallocated_bytes(source: "Evidence | Resolver", volume_offset: int, fs_type: str,
                      fs=None) -> int:
    """Bytes of the volume that its file system's own allocation map marks free (the sum of
    `free_runs`, the runs the carver reads), -1 when this file system's map is not read here.
    ISO 9660 is written once, nothing is free."""
    try:
        if fs_type == "iso9660":
            return 0
        return sum(n for _s, n in free_runs(source, volume_offset, fs_type, fs))
    except (*TSK_ERRORS, EvidenceError, ValueError, IndexError):
        return -1


# --- labels ---------------------------------------------------------------------------------

def fs_label(source: "Evidence | Resolver", offset: int, fs_type: str, fs=None) -> str:
    """The volume label, read from the structure each file system keeps it in ('' when none)."""
    try:
        if fs_type.startswith("ext"):
            sb = resolver(source).volume(offset).read(1024, 1024)
            return c_text(sb[120:136])
        if fs_type == "fat32":
            return _fat_label(resolver(source).volume(offset).read(0, 512)[71:82])
        if fs_type in ("fat12", "fat16"):
            return _fat_label(resolver(source).volume(offset).read(0, 512)[43:54])
        if fs_type == "ntfs" and fs is not None:
            f = fs.open_meta(inode=3)               # $Volume; $VOLUME_NAME is attribute 0x60
            for attr in f:
                if int(attr.info.type) == 0x60:
                    raw = f.read_random(0, int(attr.info.size), 0x60, int(attr.info.id))
                    return raw.decode("utf-16-le", "replace").rstrip("\x00")
    except (IOError, OSError, EvidenceError, struct.error):
        return ""
    return ""


def _fat_label(raw: bytes) -> str:
    label = c_text(raw).strip()
    return "" if label.upper() == "NO NAME" else label
