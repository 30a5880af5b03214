"""Walk a file system and stream out one FileRecord per file, deleted ones included; read any
file's content again from its provenance.

The walk is the one `fls -r -p` does, done in Python over pytsk3: names allocated and not
(deleted), orphan files under `/$OrphanFiles`, and NTFS alternate data streams as their own
records (`/path:stream`). It keeps an explicit stack of directories, never recursion, and a set
of visited directory addresses so a looping directory structure (corruption, or an attack on
the tool) ends the walk of that branch instead of the process. Memory grows with the number of
directories waiting on the stack, not with the number of files.
"""
from __future__ import annotations

import os
import stat
from typing import Iterator, Optional

import pytsk3

from triage import filetype
from triage.errors import EvidenceError
from triage.evidence import Evidence, is_bitlocker
from triage.records import Coverage, FileRecord, Provenance, VolumeRef

ORPHAN_DIR = "/$OrphanFiles"
NTFS_DATA = int(pytsk3.TSK_FS_ATTR_TYPE_NTFS_DATA)        # 128, the $DATA attribute
_DIR_TYPES = (pytsk3.TSK_FS_META_TYPE_DIR, pytsk3.TSK_FS_META_TYPE_VIRT_DIR)
_NAME_DIR_TYPES = (pytsk3.TSK_FS_NAME_TYPE_DIR, pytsk3.TSK_FS_NAME_TYPE_VIRT_DIR)
FS_CACHE = 8                                               # FS_Info objects kept per evidence


def open_fs(evidence: Evidence, volume_offset: int) -> pytsk3.FS_Info:
    """The file system at `volume_offset`, opened once per evidence (a small cache)."""
    with evidence.lock:
        fs = evidence.fs_cache.get(volume_offset)
        if fs is not None:
            return fs
        if evidence.img is None:
            raise EvidenceError(f"{evidence.ref.device_id}: a folder has no file-system image")
        unlocked = evidence.unlocked.get(volume_offset)
        try:
            if unlocked is not None:
                fs = pytsk3.FS_Info(unlocked, offset=0)
            else:
                if is_bitlocker(evidence.read(volume_offset, 512)):
                    fs = pytsk3.FS_Info(_unlock(evidence, volume_offset), offset=0)
                else:
                    fs = pytsk3.FS_Info(evidence.img, offset=volume_offset)
        except (IOError, OSError, RuntimeError) as exc:
            raise EvidenceError(f"unknown or corrupt file system: {_tsk_reason(exc)}") from None
        if len(evidence.fs_cache) >= FS_CACHE:
            evidence.fs_cache.pop(next(iter(evidence.fs_cache)))
        evidence.fs_cache[volume_offset] = fs
        return fs


def _unlock(evidence: Evidence, volume_offset: int):
    """The decrypted BitLocker volume at `volume_offset`, with the keys the evidence was given.
    A scan's workers each open the evidence themselves, so each unlocks what it reads."""
    if not any(evidence.keys):
        raise EvidenceError("encrypted (BitLocker): locked; give --recovery-key or --password")
    from triage.volumes import unlock_bitlocker
    img = unlock_bitlocker(evidence, volume_offset, evidence.ref.media_size - volume_offset,
                           *evidence.keys)
    evidence.unlocked[volume_offset] = img
    return img


def _tsk_reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
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


def walk(evidence: Evidence, volume: VolumeRef, problems: Optional[list] = None) -> Iterator[FileRecord]:
    """Every file (and folder) of one volume, as `fls -r -p` lists them. Never "." or "..".

    `problems`, when given, collects a Coverage record for each folder that could not be
    read; the walk goes on past it.
    """
    if evidence.img is None:
        yield from _walk_directory(evidence, volume, problems)
        return
    fs = open_fs(evidence, volume.offset)
    fs_type = volume.fs_type or ""
    dev = evidence.ref.device_id
    root = int(fs.info.root_inum)
    stack: list[tuple[int, str]] = [(root, "")]
    visited = {root}
    while stack:
        inum, dir_path = stack.pop()
        try:
            directory = fs.open_dir(inode=inum)
        except (IOError, OSError, RuntimeError) as exc:
            if problems is not None and dir_path:
                problems.append(Coverage(device_id=dev, where=f"{dev}|{volume.offset}|{inum}|{dir_path}",
                                         reason=f"folder not readable: {_tsk_reason(exc)}",
                                         volume_offset=volume.offset))
            continue
        children: list[tuple[int, str]] = []
        for entry in directory:
            info = entry.info
            name = _name(info.name.name)
            if name in (".", ".."):
                continue
            path = f"{dir_path}/{name}"
            meta = info.meta
            addr = int(info.name.meta_addr)
            name_alloc = bool(int(info.name.flags) & int(pytsk3.TSK_FS_NAME_FLAG_ALLOC))
            if meta is None and addr and not name_alloc:
                entry, meta = _unclaimed_meta(fs, entry, addr)
            if meta is not None:
                is_dir = meta.type in _DIR_TYPES
            else:
                is_dir = info.name.type in _NAME_DIR_TYPES
            record = _record(entry, meta, dev, volume.offset, fs_type, path, name, addr, name_alloc, is_dir)
            yield record
            if fs_type == "ntfs" and meta is not None:
                yield from _streams(entry, record)
            if is_dir and meta is not None and addr not in visited:
                meta_alloc = bool(int(meta.flags) & int(pytsk3.TSK_FS_META_FLAG_ALLOC))
                # TSK's rule: a deleted folder whose entry now belongs to another file is not
                # walked (its listing would be the new owner's).
                if name_alloc or not meta_alloc:
                    visited.add(addr)
                    children.append((addr, path))
        # pop order: alphabetical-ish, like fls
        stack.extend(reversed(children))


def _unclaimed_meta(fs, entry, addr: int):
    """The metadata of a deleted name that TSK 4.15 did not attach (NTFS: the MFT entry's
    sequence number moved on at deletion), provided no other file has claimed the entry since.

    Debian's TSK 4.11 `fls` attaches it, and the content is still recoverable; an entry now
    allocated to another file is left alone, its bytes are not this name's.
    """
    try:
        f = fs.open_meta(inode=addr)
    except (IOError, OSError, RuntimeError):
        return entry, None
    meta = f.info.meta
    if meta is None or int(meta.flags) & int(pytsk3.TSK_FS_META_FLAG_ALLOC):
        return entry, None
    return f, meta


def _record(entry, meta, dev: str, offset: int, fs_type: str, path: str, name: str, addr: int,
            allocated: bool, is_dir: bool) -> FileRecord:
    size = int(meta.size) if meta is not None else 0
    ctype, mismatch = "", False
    if not is_dir and meta is not None:
        if size == 0:
            ctype = "empty"
        else:
            try:
                head = entry.read_random(0, min(size, filetype.HEAD_BYTES))
            except (IOError, OSError, RuntimeError):
                head = b""
            ctype = filetype.sniff(head) if head else ""
            mismatch = filetype.ext_mismatch(name, ctype)
    times = {}
    if meta is not None:
        times = dict(mtime=_time(meta.mtime, getattr(meta, "mtime_nano", 0)),
                     atime=_time(meta.atime, getattr(meta, "atime_nano", 0)),
                     ctime=_time(meta.ctime, getattr(meta, "ctime_nano", 0)),
                     crtime=_time(meta.crtime, getattr(meta, "crtime_nano", 0)))
    prov = Provenance(device_id=dev, volume_offset=offset, inode=addr, path=path)
    return FileRecord(prov=prov, name=name, size=size, allocated=allocated, fs_type=fs_type,
                      is_dir=is_dir, orphan=path.startswith(ORPHAN_DIR + "/"),
                      type=ctype, ext_mismatch=mismatch, **times)


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
            except (IOError, OSError, RuntimeError):
                head = b""
        ctype = "empty" if size == 0 else (filetype.sniff(head) if head else "")
        prov = Provenance(device_id=parent.prov.device_id, volume_offset=parent.prov.volume_offset,
                          inode=parent.prov.inode, path=f"{parent.path}:{sname}", ads=sname,
                          attr_type=NTFS_DATA, attr_id=int(ainfo.id))
        yield FileRecord(prov=prov, name=f"{parent.name}:{sname}", size=size, allocated=parent.allocated,
                         fs_type=parent.fs_type, is_dir=False, orphan=parent.orphan,
                         mtime=parent.mtime, atime=parent.atime, ctime=parent.ctime, crtime=parent.crtime,
                         type=ctype, ext_mismatch=filetype.ext_mismatch(sname, ctype))


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
                problems.append(Coverage(device_id=dev, where=f"{dev}|0|None|{rel or '/'}",
                                         reason=f"folder not readable: {exc.strerror or exc}",
                                         volume_offset=0))
            continue
        children = []
        for e in entries:
            path = f"{rel}/{e.name}"
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            is_dir = stat.S_ISDIR(st.st_mode)
            ctype, mismatch = "", False
            if stat.S_ISLNK(st.st_mode):
                ctype = "inode/symlink"
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
            prov = Provenance(device_id=dev, volume_offset=0, inode=int(st.st_ino), path=path)
            yield FileRecord(prov=prov, name=e.name, size=0 if is_dir or stat.S_ISLNK(st.st_mode) else st.st_size,
                             allocated=True, fs_type="directory", is_dir=is_dir,
                             mtime=st.st_mtime, atime=st.st_atime, ctime=st.st_ctime,
                             crtime=getattr(st, "st_birthtime", None), type=ctype, ext_mismatch=mismatch)
            if is_dir and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                children.append((e.path, path))
        stack.extend(reversed(children))


def read_chunks(evidence: Evidence, prov: Provenance, chunk_size: int = 1 << 20) -> Iterator[bytes]:
    """The content of the file `prov` names, in chunks of at most `chunk_size` bytes.

    A deleted file whose blocks TSK cannot follow any more stops early rather than failing:
    what could be read is what there is.
    """
    if evidence.img is None:
        yield from _read_logical(evidence, prov, chunk_size)
        return
    fs = open_fs(evidence, prov.volume_offset)
    if not prov.inode and int(fs.info.ftype) != int(pytsk3.TSK_FS_TYPE_NTFS):
        return          # a deleted name whose metadata is gone (address 0): no content left
    try:
        f = fs.open_meta(inode=prov.inode)
    except (IOError, OSError, RuntimeError) as exc:
        raise EvidenceError(f"{prov.path}: cannot open inode {prov.inode}: {_tsk_reason(exc)}") from None
    meta = f.info.meta
    direct = None if prov.attr_type else _direct_ranges(evidence, fs, f, meta, prov.volume_offset)
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
    offset = 0
    while offset < size:
        n = min(chunk_size, size - offset)
        try:
            data = f.read_random(offset, n, *args)
        except (IOError, OSError, RuntimeError) as exc:
            if offset == 0 and n and (meta is None or int(meta.flags) & int(pytsk3.TSK_FS_META_FLAG_ALLOC)):
                raise EvidenceError(f"{prov.path}: read error: {_tsk_reason(exc)}") from None
            return
        if not data:
            return
        yield data
        offset += len(data)


# File systems whose block runs are the whole truth about a live file's content: no
# compression, no initialised-size cut-off (NTFS and exFAT have one, which pytsk3 does not show).
_DIRECT_FS = frozenset(int(getattr(pytsk3, f"TSK_FS_TYPE_{n}"))
                       for n in ("EXT2", "EXT3", "EXT4", "FAT12", "FAT16", "FAT32"))
_NOT_PLAIN = int(pytsk3.TSK_FS_ATTR_COMP) | int(pytsk3.TSK_FS_ATTR_ENC) | \
    int(pytsk3.TSK_FS_ATTR_SPARSE) | int(pytsk3.TSK_FS_ATTR_RES)


def _direct_ranges(evidence: Evidence, fs, f, meta, volume_offset: int) -> Optional[list]:
    """(image offset, length) pieces that hold a file's content in order, when reading them
    straight from the image gives exactly what TSK's read would: an allocated file on ext or
    FAT, one plain non-resident data attribute, every block run allocated and in the image.
    Anything else (deleted, sparse, compressed, encrypted, resident, NTFS, containers other
    than raw) returns None and is read through TSK."""
    if meta is None or evidence.unlocked.get(volume_offset) is not None:
        return None
    if int(fs.info.ftype) not in _DIRECT_FS or not int(meta.flags) & int(pytsk3.TSK_FS_META_FLAG_ALLOC):
        return None
    size = int(meta.size)
    if size <= 0 or evidence.view(0, 1) is None:
        return None
    attrs = [a for a in f if int(a.info.type) == int(pytsk3.TSK_FS_ATTR_TYPE_DEFAULT)]
    if len(attrs) != 1:
        return None
    attr = attrs[0]
    if int(attr.info.flags) & _NOT_PLAIN or not int(attr.info.flags) & int(pytsk3.TSK_FS_ATTR_NONRES) \
            or int(attr.info.size) != size:
        return None
    block = int(fs.info.block_size)
    media = evidence.ref.media_size or evidence.source.size
    pieces, expected, left = [], 0, size
    for run in attr:
        if left <= 0:
            break
        if int(run.flags) or int(run.offset) != expected or int(run.len) <= 0:
            return None
        n = min(int(run.len) * block, left)
        start = volume_offset + int(run.addr) * block
        if start + n > media:
            return None
        pieces.append((start, n))
        expected += int(run.len)
        left -= n
    return pieces if left == 0 else None


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


def _read_logical(evidence: Evidence, prov: Provenance, chunk_size: int) -> Iterator[bytes]:
    path = os.path.join(evidence.root, prov.path.lstrip("/"))
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise EvidenceError(f"{prov.path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb", buffering=0) as fh:
        while True:
            data = fh.read(chunk_size)
            if not data:
                return
            yield data
