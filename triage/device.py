"""A device's volumes, each examined or a coverage gap: the step above the volume-system and
file-system layers (TSK's image -> volume system -> file system), so neither layer imports the
other.

A volume that cannot be examined is never dropped: it comes back as a `VolumeRef` with
`fs_type=None` and a `Coverage` record that says where, how many bytes and why (BitLocker,
LUKS, unknown or corrupt file system, read error). Each examined volume's free space, and the
disk's bytes outside every volume, are gaps too until a scan has carved them (triage/carve.py;
the scan drops each gap once its space was carved through).
"""
from __future__ import annotations

from typing import Optional

from triage.errors import EvidenceError
from triage.evidence import HEAD, Evidence
from triage.filesystems import fs_label, fs_type_name, resolver, unallocated_bytes
from triage.records import (ENCRYPTED, MEDIA_DAMAGED, UNALLOCATED, UNPARTITIONED,
                            UNREADABLE_VOLUME, UNSUPPORTED_VOLUME, Coverage, VolumeRef,
                            device_where)
from triage.volumes import ENCRYPTED_BITLOCKER, ENCRYPTED_LUKS, encryption_of, partition_table

# a locked volume's reason says how to unlock it
BITLOCKER_LOCKED = (f"{ENCRYPTED_BITLOCKER}: locked; scan again with --recovery-key KEY or "
                    "--password TEXT")


def discover(evidence: Evidence, recovery_key: Optional[str] = None,
             password: Optional[str] = None) -> tuple[list[VolumeRef], list[Coverage]]:
    """Every volume of the device, and a coverage record for each one that cannot be examined.
    The key or password, when given, stays with the device's resolver for its later reads."""
    if recovery_key or password:
        resolver(evidence).secrets = (recovery_key, password)
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
    try:
        fs = resolver(evidence).fs(vol.offset)
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
    """A volume's free space is a gap with its byte count until a scan has carved it."""
    if vol.unallocated < 0:
        return Coverage(device_id=vol.device_id, kind=UNALLOCATED, where=vol.where,
                        reason=f"unallocated space not measured ({vol.fs_type}) and not carved")
    return Coverage(device_id=vol.device_id, kind=UNALLOCATED, where=vol.where,
                    reason=f"free in the {vol.fs_type} allocation map; not carved yet",
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
    res = resolver(evidence)
    encryption = encryption_of(head)
    if encryption == "BitLocker":
        if not (recovery_key or password):
            return gap(BITLOCKER_LOCKED, "BitLocker")
        try:
            res.volume(offset, length)          # unlocked once, kept for the walk and reads
        except EvidenceError as exc:
            return gap(f"{ENCRYPTED_BITLOCKER}: {exc}", "BitLocker")
        desc = f"{desc} [BitLocker, unlocked]"
    elif encryption == "LUKS":
        return gap(ENCRYPTED_LUKS, "LUKS")
    elif head[32:36] == b"NXSB":
        return gap("APFS container: not supported by the pytsk3 build (no pool support)",
                   kind=UNSUPPORTED_VOLUME)
    elif not head.strip(b"\x00"):
        return gap("unknown file system (the volume starts with zeroes: wiped or never formatted)")
    try:
        fs = res.fs(offset)
    except EvidenceError as exc:
        return gap(str(exc))
    fs_type = fs_type_name(fs)
    return VolumeRef(device_id=dev, index=index, offset=offset, length=length, description=desc,
                     fs_type=fs_type, label=fs_label(evidence, offset, fs_type, fs),
                     block_size=int(fs.info.block_size), encryption=None,
                     unallocated=unallocated_bytes(evidence, offset, fs_type, fs)), None


