"""The volume-system layer (TSK's second): the partitions of a device, which of them are
encrypted, and the image TSK reads for each volume: the media itself, or the volume decrypted
when a key unlocks it. Volumes own unlocking: one function, given the volume's own length.

Nothing here knows file systems; `triage/device.py` sits above this layer and
`triage/filesystems.py` to decide what each volume holds.
"""
from __future__ import annotations

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
    """'BitLocker' or 'LUKS' from a volume's first bytes; None for anything else."""
    if is_bitlocker(head):
        return "BitLocker"
    if head.startswith(b"LUKS\xba\xbe"):
        return "LUKS"
    return None


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
           password: Optional[str]) -> VolumeImage:
    """The decrypted volume at `offset` (of `length` bytes): the one way every caller unlocks.
    Raises EvidenceError saying why when it stays locked."""
    if not (recovery_key or password):
        raise EvidenceError(f"{ENCRYPTED_BITLOCKER}: locked; give --recovery-key or --password")
    img = unlock_bitlocker(evidence, offset, length, recovery_key, password)
    return VolumeImage(img, 0, img.get_size(), unlocked=True)


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
        volume.open_file_object(_Window(evidence, offset, length))
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


class _Window:
    """A file-like view of [offset, offset+length) of the media, for libbde's file-object open."""

    def __init__(self, evidence: Evidence, offset: int, length: int):
        self._ev, self._base, self._len, self._pos = evidence, offset, length, 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self._len - self._pos
        size = max(0, min(size, self._len - self._pos))
        data = self._ev.read(self._base + self._pos, size)
        self._pos += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        self._pos = {0: offset, 1: self._pos + offset, 2: self._len + offset}[whence]
        return self._pos

    def tell(self) -> int:
        return self._pos

    def get_size(self) -> int:
        return self._len


def c_text(raw) -> str:
    """A NUL-terminated on-disk name or label as text (TSK hands some back as bytes)."""
    if isinstance(raw, bytes):
        return raw.split(b"\x00", 1)[0].decode("utf-8", "replace").strip()
    return str(raw)
