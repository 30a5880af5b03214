"""APFS through libfsapfs (pyfsapfs): the pytsk3 wheel has no pool support, so an APFS
container's volumes are listed, walked and read here, over the evidence layer's reader.

Each APFS volume is a volume of its own (its offset: volumes.nested_offset of the container).
An encrypted volume is unlocked with the scan's --password or --recovery-key, else it is a
coverage gap. Files come with their times, sizes and inode numbers (APFS object ids, the
numbers `fls -P apfs` prints); an extended attribute that holds content (a resource fork) is a
stream of its own, `path:com.apple.ResourceFork`, as NTFS alternate data streams are.
"""
from __future__ import annotations

import stat
import threading
from typing import Iterator, Optional

from triage import filetype
from triage.errors import EvidenceError, ShortRead
from triage.evidence import Evidence, _libyal_reason
from triage.records import FOLDER_NOT_READ, Coverage, FileRecord, Provenance, VolumeRef
from triage.volumes import media_file, nested_offset

RESOURCE_FORK = "com.apple.ResourceFork"
ENCRYPTED_APFS = "encrypted (APFS volume)"


class Container:
    """One opened APFS container; its volumes unlocked once, with the secrets given."""

    def __init__(self, evidence: Evidence, offset: int, length: int):
        import pyfsapfs
        self.offset = offset
        self.lock = threading.RLock()         # libfsapfs handles are not shared across threads
        self._window = media_file(evidence, offset, length)
        self._c = pyfsapfs.container()
        self._volumes: dict[int, object] = {}
        try:
            self._c.open_file_object(self._window)
        except (OSError, IOError) as exc:
            raise EvidenceError(f"APFS container not readable: {_libyal_reason(exc)}") from None

    def volumes(self) -> list[tuple[int, str, bool]]:
        """(index, name, locked) of every volume."""
        with self.lock:
            out = []
            for i in range(self._c.number_of_volumes):
                try:
                    v = self._get(i)
                    out.append((i, v.name or f"volume {i}", bool(v.is_locked())))
                except (OSError, IOError) as exc:
                    raise EvidenceError(f"APFS volume {i}: {_libyal_reason(exc)}") from None
            return out

    def _get(self, index: int):
        return self._c.get_volume(index)

    def volume(self, index: int, secrets: tuple = ()):
        """The volume, unlocked with (recovery key, password) when it is encrypted."""
        with self.lock:
            v = self._volumes.get(index)
            if v is not None:
                return v
            try:
                v = self._get(index)
                if v.is_locked():
                    key, password = (tuple(secrets) + (None, None))[:2]
                    if not (key or password):
                        raise EvidenceError(f"{ENCRYPTED_APFS}: locked; give --password or "
                                            "--recovery-key")
                    if password:
                        v.set_password(password)
                    if key:
                        v.set_recovery_password(key)
                    if not v.unlock():
                        raise EvidenceError(f"{ENCRYPTED_APFS}: the key or password does not "
                                            "unlock it")
            except (OSError, IOError) as exc:
                raise EvidenceError(f"{ENCRYPTED_APFS}: {_libyal_reason(exc)}") from None
            self._volumes[index] = v
            return v

    def close(self) -> None:
        with self.lock:
            self._volumes.clear()
            try:
                self._c.close()
            except (OSError, IOError):
                pass


def volume_refs(container: Container, device_id: str, slot: int, desc: str,
                length: int) -> list[tuple[VolumeRef, Optional[str]]]:
    """A VolumeRef per APFS volume, with why it cannot be examined (locked) or None."""
    out = []
    for i, name, locked in container.volumes():
        label = name.replace("\x00", "")
        ref = VolumeRef(device_id=device_id, index=slot, offset=nested_offset(container.offset, i),
                        length=length if i == 0 else 0,
                        description=f"{desc} [APFS volume {i}: {label}]", fs_type="apfs",
                        label=label, block_size=4096)
        out.append((ref, ENCRYPTED_APFS if locked else None))
    return out


def _ns(value) -> Optional[float]:
    return value / 1e9 if value else None


def _times(entry) -> dict:
    out = {}
    for key, getter in (("mtime", "get_modification_time_as_integer"),
                        ("atime", "get_access_time_as_integer"),
                        ("ctime", "get_inode_change_time_as_integer"),
                        ("crtime", "get_creation_time_as_integer")):
        try:
            out[key] = _ns(getattr(entry, getter)())
        except (OSError, IOError, AttributeError):
            out[key] = None
    return out


def walk(container: Container, volume: VolumeRef, index: int, secrets: tuple,
         problems: Optional[list]) -> Iterator[FileRecord]:
    """Every file and folder of APFS volume `index`, as `fls -r -p -P apfs` lists them."""
    dev = volume.device_id
    with container.lock:
        v = container.volume(index, secrets)
        root = v.get_root_directory()
    stack: list = [(root, "")]
    seen = {int(root.identifier)}
    while stack:
        folder, folder_path = stack.pop()
        children = []
        try:
            with container.lock:
                entries = [folder.get_sub_file_entry(i)
                           for i in range(folder.number_of_sub_file_entries)]
        except (OSError, IOError) as exc:
            if problems is not None:
                where = Provenance(device_id=dev, volume_offset=volume.offset,
                                   inode=int(folder.identifier), path=folder_path or "/",
                                   volume_index=volume.index, fs_type="apfs")
                problems.append(Coverage(device_id=dev, kind=FOLDER_NOT_READ, where=where,
                                         reason=f"folder not readable: {_libyal_reason(exc)}"))
            continue
        for entry in entries:
            with container.lock:
                rec, forks = _record(entry, volume, folder_path)
            yield rec
            yield from forks
            inode = rec.prov.inode
            if rec.is_dir and inode not in seen:
                seen.add(inode)
                children.append((entry, rec.path))
        stack.extend(reversed(children))


def _record(entry, volume: VolumeRef, folder_path: str) -> tuple[FileRecord, list]:
    name = (entry.name or "").replace("\x00", "")
    path = f"{folder_path}/{name}"
    mode = int(entry.file_mode or 0)
    is_dir = stat.S_ISDIR(mode)
    size = 0 if is_dir or stat.S_ISLNK(mode) else int(entry.size or 0)
    prov = Provenance(device_id=volume.device_id, volume_offset=volume.offset,
                      inode=int(entry.identifier), path=path, volume_index=volume.index,
                      fs_type="apfs")
    ctype = ""
    if stat.S_ISLNK(mode):
        ctype = "inode/symlink"
    elif not is_dir:
        ctype = "empty" if size == 0 else filetype.sniff(_head(entry, size))
    times = _times(entry)
    rec = FileRecord(prov=prov, name=name, size=size, allocated=True, fs_type="apfs",
                     is_dir=is_dir, type=ctype,
                     ext_mismatch=filetype.ext_mismatch(name, ctype) if ctype else False, **times)
    forks = []
    try:
        if not is_dir and entry.has_extended_attribute_by_name(RESOURCE_FORK):
            fork = entry.get_extended_attribute_by_name(RESOURCE_FORK)
            fsize = int(fork.size or 0)
            fprov = Provenance(device_id=volume.device_id, volume_offset=volume.offset,
                               inode=prov.inode, path=f"{path}:{RESOURCE_FORK}", ads=RESOURCE_FORK,
                               volume_index=volume.index, fs_type="apfs")
            fhead = fork.read_buffer_at_offset(min(fsize, filetype.HEAD_BYTES), 0) if fsize else b""
            ftype = filetype.sniff(fhead) if fsize else "empty"
            forks.append(FileRecord(prov=fprov, name=f"{name}:{RESOURCE_FORK}", size=fsize,
                                    allocated=True, fs_type="apfs", type=ftype, **times))
    except (OSError, IOError):
        pass
    return rec, forks


def _head(entry, size: int) -> bytes:
    try:
        return entry.read_buffer_at_offset(min(size, filetype.HEAD_BYTES), 0)
    except (OSError, IOError):
        return b""


def read(container: Container, index: int, secrets: tuple, prov: Provenance,
         chunk_size: int) -> Iterator[bytes]:
    """The content of the file (or resource fork) `prov` names, in chunks; ShortRead when it
    ends before its size."""
    with container.lock:
        v = container.volume(index, secrets)
        try:
            entry = v.get_file_entry_by_identifier(prov.inode)
            if prov.ads:
                entry = entry.get_extended_attribute_by_name(prov.ads)
            size = int(entry.size or 0)
        except (OSError, IOError) as exc:
            raise EvidenceError(f"{prov.path}: cannot open APFS inode {prov.inode}: "
                                f"{_libyal_reason(exc)}") from None
    done = 0
    while done < size:
        with container.lock:
            try:
                data = entry.read_buffer_at_offset(min(chunk_size, size - done), done)
            except (OSError, IOError) as exc:
                raise ShortRead(f"read error at byte {done:,}: {_libyal_reason(exc)}", size,
                                done) from None
        if not data:
            raise ShortRead(f"no content past byte {done:,}", size, done)
        done += len(data)
        yield data
