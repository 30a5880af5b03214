"""Find the volumes of a device and decide, for each, whether its file system can be examined.

A volume that cannot be examined is never dropped: it comes back as a `VolumeRef` with
`fs_type=None` and a `Coverage` record that says where, how many bytes and why (BitLocker,
LUKS, unknown or corrupt file system, read error). Unallocated gaps and partition-table
slots (MBR/GPT metadata, extended containers) are not volumes and not coverage.
"""
from __future__ import annotations

import struct
from typing import Optional

import pytsk3

from triage.errors import EvidenceError
from triage.evidence import HEAD, Evidence, OffsetImg, _libyal_reason, is_bitlocker
from triage.records import (ENCRYPTED, MEDIA_DAMAGED, UNALLOCATED, UNPARTITIONED, UNREADABLE_VOLUME,
                            UNSUPPORTED_VOLUME, Coverage, VolumeRef, device_where)

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
VS_NAMES = {pytsk3.TSK_VS_TYPE_DOS: "mbr", pytsk3.TSK_VS_TYPE_GPT: "gpt",
            pytsk3.TSK_VS_TYPE_MAC: "mac", pytsk3.TSK_VS_TYPE_BSD: "bsd",
            pytsk3.TSK_VS_TYPE_SUN: "sun"}

ENCRYPTED_BITLOCKER = "encrypted (BitLocker)"
ENCRYPTED_LUKS = "encrypted (LUKS)"


def partition_table(evidence: Evidence) -> tuple[str, list[tuple[int, int, int, str, bool]]]:
    """('mbr'|'gpt'|...|'none', [(slot, offset, length, description, allocated)]) for `inspect`."""
    if evidence.img is None:
        return "none", []
    try:
        vs = pytsk3.Volume_Info(evidence.img)
    except (IOError, OSError, RuntimeError):
        return "none", []
    bs = vs.info.block_size
    rows = [(int(p.addr), int(p.start) * bs, int(p.len) * bs, _text(p.desc),
             bool(p.flags & pytsk3.TSK_VS_PART_FLAG_ALLOC)) for p in vs]
    return VS_NAMES.get(int(vs.info.vstype), str(int(vs.info.vstype))), rows


def discover(evidence: Evidence, recovery_key: Optional[str] = None,
             password: Optional[str] = None) -> tuple[list[VolumeRef], list[Coverage]]:
    """Every volume of the device, and a coverage record for each one that cannot be examined."""
    dev = evidence.ref.device_id
    if evidence.img is None:       # a folder of logical files: one "volume", the folder itself
        return [VolumeRef(device_id=dev, index=0, offset=0, length=evidence.ref.media_size,
                          description="folder of logical files", fs_type="directory")], []
    table, rows = partition_table(evidence)
    slots = [(i, off, ln, desc) for i, off, ln, desc, alloc in rows if alloc]
    if table == "none" or not slots:
        slots = [(0, 0, evidence.ref.media_size, "no partition table (bare file system)")]
    volumes: list[VolumeRef] = []
    coverage: list[Coverage] = []
    for index, offset, length, desc in slots:
        declared = length
        length = max(0, min(length, evidence.ref.media_size - offset))
        vol, cov = _examine(evidence, index, offset, length, desc, recovery_key, password)
        volumes.append(vol)
        if cov is not None:
            coverage.append(cov)
            continue
        if vol.unallocated != 0:
            coverage.append(_unallocated_gap(vol))
        cut = _past_the_end(evidence, vol, declared)
        if cut is not None:
            coverage.append(cut)
    outside = evidence.ref.media_size - sum(v.length for v in volumes)
    if outside > 0:
        # gaps between and around partitions (the partition table's own sectors included):
        # nothing reads them until they are carved
        coverage.append(Coverage(device_id=dev, kind=UNPARTITIONED, where=device_where(dev),
                                 reason=f"{outside:,} bytes outside every volume not carved",
                                 bytes_not_examined=outside))
    return volumes, coverage


def _past_the_end(evidence: Evidence, vol: VolumeRef, declared: int) -> Optional[Coverage]:
    """A file system (or partition) larger than what the image holds: a truncated image. The
    missing bytes were never acquired, whatever files they held."""
    from triage.filesystems import open_fs
    try:
        fs = open_fs(evidence, vol.offset)
        fs_bytes = int(fs.info.block_count) * int(fs.info.block_size)
    except (EvidenceError, OSError, RuntimeError):
        return None
    missing = max(fs_bytes, declared) - vol.length
    if missing <= 0:
        return None
    return Coverage(device_id=vol.device_id, kind=MEDIA_DAMAGED, where=vol.where,
                    reason=f"the {vol.fs_type} file system is {missing:,} bytes larger than "
                           "what the image holds: the image is cut short",
                    bytes_not_examined=missing)


def _unallocated_gap(vol: VolumeRef) -> Coverage:
    """Until carving exists, a volume's free space is a gap with its byte count."""
    if vol.unallocated < 0:
        return Coverage(device_id=vol.device_id, kind=UNALLOCATED, where=vol.where,
                        reason=f"unallocated space not measured ({vol.fs_type}) and not carved")
    return Coverage(device_id=vol.device_id, kind=UNALLOCATED, where=vol.where,
                    reason=f"free in the {vol.fs_type} allocation map; nothing carves it yet",
                    bytes_not_examined=vol.unallocated)


def _examine(evidence: Evidence, index: int, offset: int, length: int, desc: str,
             recovery_key: Optional[str], password: Optional[str]) -> tuple[VolumeRef, Optional[Coverage]]:
    dev = evidence.ref.device_id

    def gap(reason: str, encryption: Optional[str] = None,
            kind: str = UNREADABLE_VOLUME) -> tuple[VolumeRef, Coverage]:
        vol = VolumeRef(device_id=dev, index=index, offset=offset, length=length,
                        description=desc, fs_type=None, encryption=encryption)
        return vol, Coverage(device_id=dev, kind=ENCRYPTED if encryption else kind,
                             where=vol.where, reason=reason, bytes_not_examined=length)

    if offset >= evidence.ref.media_size or length == 0:
        return gap("read error: the partition lies beyond the end of the media")
    try:
        head = evidence.read(offset, min(length, HEAD))
    except EvidenceError as exc:
        return gap(f"read error: {exc}")
    if is_bitlocker(head):
        if not (recovery_key or password):
            return gap(ENCRYPTED_BITLOCKER, "BitLocker")
        try:
            img = unlock_bitlocker(evidence, offset, length, recovery_key, password)
        except EvidenceError as exc:
            return gap(f"{ENCRYPTED_BITLOCKER}: {exc}", "BitLocker")
        evidence.unlocked[offset] = img
        desc = f"{desc} [BitLocker, unlocked]"
    elif head.startswith(b"LUKS\xba\xbe"):
        return gap(ENCRYPTED_LUKS, "LUKS")
    elif head[32:36] == b"NXSB":
        return gap("APFS container: not supported by the pytsk3 build (no pool support)",
                   kind=UNSUPPORTED_VOLUME)
    elif not head.strip(b"\x00"):
        return gap("unknown file system (the volume starts with zeroes: wiped or never formatted)")
    from triage.filesystems import open_fs, unallocated_bytes
    try:
        fs = open_fs(evidence, offset)
    except EvidenceError as exc:
        return gap(str(exc))
    fs_type = FS_NAMES.get(int(fs.info.ftype), f"tsk-{int(fs.info.ftype)}")
    return VolumeRef(device_id=dev, index=index, offset=offset, length=length, description=desc,
                     fs_type=fs_type, label=fs_label(evidence, offset, fs_type, fs),
                     block_size=int(fs.info.block_size), encryption=None,
                     unallocated=unallocated_bytes(evidence, offset, fs_type, fs)), None


def unlock_bitlocker(evidence: Evidence, offset: int, length: int, recovery_key: Optional[str],
                     password: Optional[str]) -> OffsetImg:
    """The decrypted BitLocker volume at `offset`, as an image TSK can open at offset 0."""
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


def fs_label(evidence: Evidence, offset: int, fs_type: str, fs=None) -> str:
    """The volume label, read from the structure each file system keeps it in ('' when none)."""
    try:
        if fs_type.startswith("ext"):
            sb = _volume_read(evidence, offset, 1024, 1024)
            return _text(sb[120:136])
        if fs_type == "fat32":
            return _fat_label(_volume_read(evidence, offset, 0, 512)[71:82])
        if fs_type in ("fat12", "fat16"):
            return _fat_label(_volume_read(evidence, offset, 0, 512)[43:54])
        if fs_type == "ntfs" and fs is not None:
            f = fs.open_meta(inode=3)               # $Volume; $VOLUME_NAME is attribute 0x60
            for attr in f:
                if int(attr.info.type) == 0x60:
                    raw = f.read_random(0, int(attr.info.size), 0x60, int(attr.info.id))
                    return raw.decode("utf-16-le", "replace").rstrip("\x00")
    except (IOError, OSError, EvidenceError, struct.error):
        return ""
    return ""


def _volume_read(evidence: Evidence, offset: int, at: int, size: int) -> bytes:
    img = evidence.unlocked.get(offset)
    if img is not None:
        return img.read(at, size)
    return evidence.read(offset + at, size)


def _fat_label(raw: bytes) -> str:
    label = _text(raw).strip()
    return "" if label.upper() == "NO NAME" else label


def _text(raw) -> str:
    if isinstance(raw, bytes):
        return raw.split(b"\x00", 1)[0].decode("utf-8", "replace").strip()
    return str(raw)
