"""The volume-system layer (TSK's second): the partitions of a device, which of them are
encrypted, and the image TSK reads for each volume: the media itself, or the volume decrypted
when a key unlocks it. Volumes own unlocking: one function, given the volume's own length.

Nothing here knows file systems; `triage/device.py` sits above this layer and
`triage/filesystems.py` to decide what each volume holds.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Optional

import pytsk3

from triage.errors import EvidenceError
from triage.evidence import Evidence, OffsetImg, _libyal_reason, is_bitlocker

VS_NAMES = {pytsk3.TSK_VS_TYPE_DOS: "mbr", pytsk3.TSK_VS_TYPE_GPT: "gpt",
            pytsk3.TSK_VS_TYPE_MAC: "mac", pytsk3.TSK_VS_TYPE_BSD: "bsd",
            pytsk3.TSK_VS_TYPE_SUN: "sun"}

ENCRYPTED_BITLOCKER = "encrypted (BitLocker)"
ENCRYPTED_LUKS = "encrypted (LUKS)"
ENCRYPTED_FVDE = "encrypted (FileVault 2 / CoreStorage)"
LVM_LABEL = b"LABELONE"
APFS_MAGIC = b"NXSB"

# Volumes inside a volume system that is itself inside a partition (an APFS container's
# volumes, an LVM physical volume's logical volumes) are not byte ranges of the media, so they
# get an offset of their own: the container's (always a multiple of 512: a partition or the
# media's start) plus 1 + their index. `nested_of` gives the container and index back; a
# volume system holds at most NESTED_MAX of them.
NESTED_MAX = 511


def nested_offset(container: int, index: int) -> int:
    if not 0 <= index < NESTED_MAX:
        raise EvidenceError(f"more than {NESTED_MAX} volumes in one volume system")
    return container + 1 + index


def nested_of(offset: Optional[int]) -> Optional[tuple[int, int]]:
    """(container offset, index) of a nested volume's offset; None for a plain volume."""
    if offset is None or offset < 0 or offset % 512 == 0:
        return None
    k = offset % 512
    return offset - k, k - 1


@dataclass
class VolumeImage:
    """What TSK reads for one volume: `img` from byte `offset` on (the media, or a decrypted
    view at 0). `unlocked` views are not the media's bytes, so nothing reads them mapped."""

    img: pytsk3.Img_Info
    offset: int
    length: int
    unlocked: bool = False

    def read(self, at: int, size: int) -> bytes:
        """`size` bytes from `at` within the volume."""
        return self.img.read(self.offset + at, size)

    def close(self) -> None:
        release = getattr(self.img, "release", None) if self.unlocked else None
        if release:
            release()


def plain_volume(evidence: Evidence, offset: int, length: int) -> VolumeImage:
    return VolumeImage(evidence.img, offset, length)


def encryption_of(head: bytes) -> Optional[str]:
    """'BitLocker', 'LUKS' or 'FileVault' from a volume's first bytes; None otherwise."""
    if is_bitlocker(head):
        return "BitLocker"
    if head.startswith(b"LUKS\xba\xbe"):
        return "LUKS"
    if is_corestorage(head):
        return "FileVault"
    return None


def is_lvm(head: bytes) -> bool:
    """An LVM2 physical volume: its label in one of the first four sectors."""
    return any(head[i * 512:i * 512 + 8] == LVM_LABEL for i in range(4))


def is_apfs(head: bytes) -> bool:
    return head[32:36] == APFS_MAGIC


def is_corestorage(head: bytes) -> bool:
    """A CoreStorage physical volume (FileVault 2 on macOS 10.7-10.12): 'CS' at 88 and
    version 1 at 90 of its first block, what libfvde checks."""
    return head[88:90] == b"CS" and head[90:92] == b"\x01\x00"


def partition_table(evidence: Evidence) -> tuple[str, list[tuple[int, int, int, str, bool]]]:
    """('mbr'|'gpt'|...|'none', [(slot, offset, length, description, allocated)]) for `inspect`."""
    if evidence.img is None:
        return "none", []
    try:
        vs = pytsk3.Volume_Info(evidence.img)
    except (IOError, OSError, RuntimeError):
        return "none", []
    bs = vs.info.block_size
    rows = [(int(p.addr), int(p.start) * bs, int(p.len) * bs, c_text(p.desc),
             bool(p.flags & pytsk3.TSK_VS_PART_FLAG_ALLOC)) for p in vs]
    return VS_NAMES.get(int(vs.info.vstype), str(int(vs.info.vstype))), rows


def unlock(evidence: Evidence, offset: int, length: int, recovery_key: Optional[str],
           password: Optional[str], kind: str = "BitLocker") -> VolumeImage:
    """The decrypted volume at `offset` (of `length` bytes): the one way every caller unlocks
    (`kind`: BitLocker, LUKS or FileVault). Raises EvidenceError saying why when it stays
    locked; a wrong password is one line, never a traceback."""
    label = {"LUKS": ENCRYPTED_LUKS, "FileVault": ENCRYPTED_FVDE}.get(kind, ENCRYPTED_BITLOCKER)
    if not (recovery_key or password):
        raise EvidenceError(f"{label}: locked; give --recovery-key or --password")
    if kind == "LUKS":
        img = _unlock_luks(evidence, offset, length, password, label)
    elif kind == "FileVault":
        img = _unlock_fvde(evidence, offset, length, recovery_key, password, label)
    else:
        img = unlock_bitlocker(evidence, offset, length, recovery_key, password)
    return VolumeImage(img, 0, img.get_size(), unlocked=True)


def _unlock_luks(evidence: Evidence, offset: int, length: int, password: Optional[str],
                 label: str) -> OffsetImg:
    """A LUKS volume decrypted by libluksde, as an image TSK reads."""
    import pyluksde
    volume = pyluksde.volume()
    if password:
        volume.set_password(password)
    try:
        volume.open_file_object(media_file(evidence, offset, length))
    except (OSError, IOError) as exc:
        if "unlock" not in str(exc):
            raise EvidenceError(f"{label}: {_libyal_reason(exc)}") from None
        volume = None               # libluksde tries the password while opening
    try:
        if volume is None or (volume.is_locked() and not volume.unlock()):
            raise EvidenceError(f"{label}: the key or password does not unlock it")
    except (OSError, IOError):
        raise EvidenceError(f"{label}: the key or password does not unlock it") from None
    return _libyal_img(volume, volume.get_size(), volume.close)


def _unlock_fvde(evidence: Evidence, offset: int, length: int, recovery_key: Optional[str],
                 password: Optional[str], label: str) -> OffsetImg:
    """The first logical volume of a CoreStorage volume group (FileVault 2), decrypted by
    libfvde with the password or the recovery key."""
    import pyfvde
    volume = pyfvde.volume()
    window = media_file(evidence, offset, length)
    try:
        volume.open_file_object(window)
        volume.open_physical_volume_files_as_file_objects([window])
        group = volume.get_volume_group()
        if not group.number_of_logical_volumes:
            raise EvidenceError(f"{label}: no logical volume in the CoreStorage volume group")
        lv = group.get_logical_volume(0)
    except (OSError, IOError) as exc:
        raise EvidenceError(f"{label}: {_libyal_reason(exc)}") from None
    try:
        if password:
            lv.set_password(password)
        if recovery_key:
            lv.set_recovery_password(recovery_key)
        if lv.is_locked() and not lv.unlock():
            raise EvidenceError(f"{label}: the key or password does not unlock it")
    except (OSError, IOError):
        raise EvidenceError(f"{label}: the key or password does not unlock it") from None
    return _libyal_img(lv, int(lv.size), volume.close)


def _libyal_img(handle, size: int, release) -> OffsetImg:
    lock = threading.Lock()

    def read(off: int, n: int) -> bytes:
        n = min(n, size - off)
        if n <= 0:
            return b""
        with lock:
            try:
                return handle.read_buffer_at_offset(n, off)
            except (OSError, IOError) as exc:
                raise EvidenceError(f"read error at {off}: {_libyal_reason(exc)}") from None
    img = OffsetImg(read, size)
    img.release = release
    return img


# --- volume shadow copies ---------------------------------------------------------------------

@dataclass(frozen=True)
class Snapshot:
    """One volume shadow copy of an NTFS volume. `name` is what provenance carries."""

    index: int
    identifier: str
    created: Optional[float]

    @property
    def name(self) -> str:
        return f"vss{self.index + 1}:{{{self.identifier}}}"


def snapshot_index(name: str) -> int:
    """The store index a provenance's `snapshot` names (see Snapshot.name)."""
    try:
        return int(name.split(":", 1)[0][3:]) - 1
    except ValueError:
        raise EvidenceError(f"not a shadow-copy name: {name!r}") from None


def shadow_copies(vi: VolumeImage) -> list[Snapshot]:
    """The volume shadow copies of an NTFS volume (libvshadow), oldest first; [] when it has
    none. Raises EvidenceError when the copies are there but cannot be read."""
    volume = _vshadow(vi)
    if volume is None:
        return []
    try:
        out = []
        for i in range(volume.number_of_stores):
            store = volume.get_store(i)
            created = store.get_creation_time()
            out.append(Snapshot(i, str(store.identifier),
                                created.timestamp() if created is not None else None))
        return out
    except (OSError, IOError) as exc:
        raise EvidenceError(f"volume shadow copies not readable: {_libyal_reason(exc)}") from None
    finally:
        volume.close()


def shadow_copy(vi: VolumeImage, index: int) -> VolumeImage:
    """Shadow copy `index` of the volume, as an image TSK reads (the volume as it was)."""
    volume = _vshadow(vi)
    if volume is None:
        raise EvidenceError("the volume has no shadow copies")
    try:
        store = volume.get_store(index)
        size = int(store.volume_size)
    except (OSError, IOError) as exc:
        volume.close()
        raise EvidenceError(f"shadow copy {index + 1}: {_libyal_reason(exc)}") from None
    return VolumeImage(_libyal_img(store, size, volume.close), 0, size, unlocked=True)


def _vshadow(vi: VolumeImage):
    import pyvshadow
    window = _VolumeFile(vi)
    try:
        if not pyvshadow.check_volume_signature_file_object(window):
            return None
        volume = pyvshadow.volume()
        volume.open_file_object(window)
    except (OSError, IOError) as exc:
        raise EvidenceError(f"volume shadow copies not readable: {_libyal_reason(exc)}") from None
    return volume


# --- LVM ------------------------------------------------------------------------------------

def lvm_volumes(evidence: Evidence, offset: int, length: int) -> tuple[str, list]:
    """(volume group name, [(index, name, size, why not readable or '')]) of the LVM physical
    volume at `offset`. A logical volume libvslvm cannot read (thin, a snapshot, one whose
    extents lie on another physical volume) says why."""
    handle, window = _lvm_open(evidence, offset, length)
    try:
        vg = handle.get_volume_group()
        out = []
        for i in range(vg.number_of_logical_volumes):
            try:
                lv = vg.get_logical_volume(i)
                name, size = c_text(lv.name or f"lv{i}"), int(lv.size)
            except (OSError, IOError) as exc:
                out.append((i, f"lv{i}", 0, _libyal_reason(exc)))
                continue
            why = ""
            try:
                if size <= 0:
                    why = "the logical volume has no size (thin or unsupported layout)"
                else:
                    lv.read_buffer_at_offset(min(512, size), 0)
            except (OSError, IOError) as exc:
                why = f"libvslvm cannot read it (thin volume, snapshot or missing extents): " \
                      f"{_libyal_reason(exc)}"
            out.append((i, name, size, why))
        return c_text(vg.name or ""), out
    finally:
        handle.close()


def lvm_volume(evidence: Evidence, offset: int, length: int, index: int) -> VolumeImage:
    """Logical volume `index` of the physical volume at `offset`, as an image TSK reads."""
    handle, _window = _lvm_open(evidence, offset, length)
    try:
        lv = handle.get_volume_group().get_logical_volume(index)
        size = int(lv.size)
    except (OSError, IOError) as exc:
        handle.close()
        raise EvidenceError(f"LVM logical volume {index}: {_libyal_reason(exc)}") from None
    img = _libyal_img(lv, size, handle.close)
    return VolumeImage(img, 0, size, unlocked=True)


def _lvm_open(evidence: Evidence, offset: int, length: int):
    try:
        import pyvslvm
    except ImportError as exc:
        raise EvidenceError(f"libvslvm-python is not installed ({exc})") from None
    window = media_file(evidence, offset, length)
    handle = pyvslvm.handle()
    try:
        handle.open_file_object(window)
        handle.open_physical_volume_files_as_file_objects([window])
    except (OSError, IOError) as exc:
        raise EvidenceError(f"LVM physical volume not readable: {_libyal_reason(exc)}") from None
    return handle, window


def unlock_bitlocker(evidence: Evidence, offset: int, length: int, recovery_key: Optional[str],
                     password: Optional[str]) -> OffsetImg:
    """The decrypted BitLocker volume at `offset`, as an image TSK can open at offset 0
    (libbde-python over a window of the media; `unlock` is what callers use)."""
    try:
        import pybde
    except ImportError as exc:
        raise EvidenceError(f"libbde-python is not installed ({exc})") from None
    volume = pybde.volume()
    if recovery_key:
        volume.set_recovery_password(recovery_key)
    if password:
        volume.set_password(password)
    try:
        volume.open_file_object(media_file(evidence, offset, length))
        if volume.is_locked() and not volume.unlock():
            raise EvidenceError("the key or password does not unlock it")
    except (OSError, IOError) as exc:
        raise EvidenceError(_libyal_reason(exc)) from None
    size = volume.get_size()

    def read(off: int, n: int) -> bytes:
        n = min(n, size - off)
        return volume.read_buffer_at_offset(n, off) if n > 0 else b""
    img = OffsetImg(read, size)
    img.release = volume.close
    return img


class _VolumeFile:
    """A file-like view of a volume's image (the media's bytes or a decrypted view), for the
    libyal bindings' file-object opens."""

    def __init__(self, vi: VolumeImage):
        self._vi, self._pos = vi, 0

    def read(self, size: int = -1) -> bytes:
        left = self._vi.length - self._pos
        size = left if size is None or size < 0 else max(0, min(size, left))
        data = self._vi.read(self._pos, size) if size else b""
        self._pos += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        self._pos = {0: offset, 1: self._pos + offset, 2: self._vi.length + offset}[whence]
        return self._pos

    def tell(self) -> int:
        return self._pos

    def get_size(self) -> int:
        return self._vi.length


def media_file(evidence: Evidence, offset: int, length: int) -> _VolumeFile:
    """[offset, offset+length) of the media as a file object."""
    return _VolumeFile(VolumeImage(_EvidenceReader(evidence), offset, length))


class _EvidenceReader:
    def __init__(self, evidence: Evidence):
        self.read = evidence.read


def c_text(raw) -> str:
    """A NUL-terminated on-disk name or label as text (TSK hands some back as bytes)."""
    if isinstance(raw, bytes):
        return raw.split(b"\x00", 1)[0].decode("utf-8", "replace").strip()
    return str(raw)
