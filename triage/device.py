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

from dataclasses import replace
from typing import Optional

from triage.errors import EvidenceError
from triage.evidence import HEAD, Evidence
from triage.filesystems import fs_label, fs_type_name, resolver, unallocated_bytes
from triage.records import (ENCRYPTED, MEDIA_DAMAGED, UNALLOCATED, UNPARTITIONED,
                            UNREADABLE_VOLUME, UNSUPPORTED_VOLUME, Coverage, VolumeRef,
                            device_where)
from triage.apfs import volume_refs as apfs_volume_refs
from triage.carve import outside_ranges
from triage.volumes import (ENCRYPTED_BITLOCKER, ENCRYPTED_FVDE, ENCRYPTED_LUKS, encryption_of,
                            is_apfs, is_lvm, lvm_volumes, nested_offset, partition_table)

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
    if evidence.extraction is not None:     # a phone extraction: one "volume", its members
        return [evidence.extraction.volume(dev)], evidence.extraction.gaps(dev)
    if evidence.img is None:       # a folder of logical files: one "volume", the folder itself
        return [VolumeRef(device_id=dev, index=0, offset=0, length=evidence.ref.media_size,
                          description="folder of logical files", fs_type="directory")], []
    table, rows = partition_table(evidence)
    slots = [(i, off, ln, desc) for i, off, ln, desc, alloc in rows if alloc]
    if table == "none" or not slots:
        slots = [(0, 0, evidence.ref.media_size, "no partition table (bare file system)")]
    volumes: list[VolumeRef] = []
    coverage: list[Coverage] = []
    beyond = [slot for slot in slots if 0 < evidence.ref.media_size <= slot[1]]
    if beyond:
        # entries that place their partition past the end of the media (a damaged table may
        # say 2**73 bytes): nothing of them was acquired, so they are one gap of the device,
        # not volumes at offsets no reader can seek to (nor the case store hold)
        listed = "; ".join(f"partition {i} ({desc or 'no description'}) at byte {off:,}"
                           for i, off, _, desc in beyond[:8])
        more = f"; and {len(beyond) - 8} more" if len(beyond) > 8 else ""
        coverage.append(Coverage(
            device_id=dev, kind=UNREADABLE_VOLUME, where=device_where(dev),
            reason=f"read error: the partition table places {listed}{more}, beyond the end of "
                   f"the media ({evidence.ref.media_size:,} bytes)"))
        slots = [slot for slot in slots if slot not in beyond]
    for index, offset, length, desc in slots:
        declared = length
        length = max(0, min(length, evidence.ref.media_size - offset))
        for vol, cov in _examine(evidence, index, offset, length, desc, recovery_key, password):
            volumes.append(vol)
            if cov is not None:
                coverage.append(cov)
                continue
            if vol.unallocated != 0:
                coverage.append(_unallocated_gap(vol))
            if vol.offset == offset:   # a volume inside a volume system has no declared length
                cut = _past_the_end(evidence, vol, declared)
                if cut is not None:
                    coverage.append(cut)
    # the one rule of what lies outside every volume: the carver reads the same ranges
    outside = sum(n for _s, n in outside_ranges(evidence.ref.media_size, volumes))
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


Examined = list[tuple[VolumeRef, Optional[Coverage]]]


def _examine(evidence: Evidence, index: int, offset: int, length: int, desc: str,
             recovery_key: Optional[str], password: Optional[str]) -> Examined:
    """The volumes of one slot (a partition, or the whole media): one, or each volume of an
    APFS container or an LVM physical volume; each with the coverage record that says why it
    cannot be examined, or None."""
    dev = evidence.ref.device_id

    def gap(reason: str, encryption: Optional[str] = None,
            kind: str = UNREADABLE_VOLUME) -> Examined:
        vol = VolumeRef(device_id=dev, index=index, offset=offset, length=length,
                        description=desc, fs_type=None, encryption=encryption)
        return [(vol, Coverage(device_id=dev, kind=ENCRYPTED if encryption else kind,
                               where=vol.where, reason=reason, bytes_not_examined=length))]

    if offset >= evidence.ref.media_size or length == 0:
        return gap("read error: the partition lies beyond the end of the media")
    try:
        head = evidence.read(offset, min(length, HEAD))
    except EvidenceError as exc:
        return gap(f"read error: {exc}")
    res = resolver(evidence)
    encryption = encryption_of(head)
    if encryption is not None:
        label = {"BitLocker": ENCRYPTED_BITLOCKER, "LUKS": ENCRYPTED_LUKS}.get(
            encryption, ENCRYPTED_FVDE)
        if not (recovery_key or password):
            if encryption == "BitLocker":
                return gap(BITLOCKER_LOCKED, encryption)
            return gap(f"{label}: locked; scan again with --password TEXT", encryption)
        try:
            res.volume(offset, length)          # unlocked once, kept for the walk and reads
        except EvidenceError as exc:
            return gap(f"{label}: {exc}" if not str(exc).startswith(label) else str(exc),
                       encryption)
        desc = f"{desc} [{encryption}, unlocked]"
    elif is_apfs(head):
        return _apfs_volumes(evidence, index, offset, length, desc, gap)
    elif is_lvm(head):
        return _lvm_volumes(evidence, index, offset, length, desc, gap)
    elif not head.strip(b"\x00"):
        return gap("unknown file system (the volume starts with zeroes: wiped or never formatted)")
    vol, why = _tsk_volume(evidence, index, offset, length, desc)
    return gap(why) if vol is None else [(vol, None)]


def _tsk_volume(evidence: Evidence, index: int, offset: int, length: int,
                desc: str) -> tuple[Optional[VolumeRef], str]:
    """The volume at `offset` as TSK's file-system layer reads it, or None and why not."""
    try:
        fs = resolver(evidence).fs(offset)
    except EvidenceError as exc:
        return None, str(exc)
    fs_type = fs_type_name(fs)
    return VolumeRef(device_id=evidence.ref.device_id, index=index, offset=offset, length=length,
                     description=desc, fs_type=fs_type,
                     label=fs_label(evidence, offset, fs_type, fs),
                     block_size=int(fs.info.block_size), encryption=None,
                     unallocated=unallocated_bytes(evidence, offset, fs_type, fs)), ""


def _apfs_volumes(evidence: Evidence, index: int, offset: int, length: int, desc: str,
                  gap) -> Examined:
    """Each volume of an APFS container (libfsapfs); an encrypted one is unlocked with the
    resolver's secrets, or is a gap."""
    res = resolver(evidence)
    try:
        container = res.apfs(offset, length)
        refs = apfs_volume_refs(container, evidence.ref.device_id, index, desc, length)
    except EvidenceError as exc:
        return gap(str(exc))
    out: Examined = []
    for i, (vol, locked) in enumerate(refs):
        if locked:
            try:
                container.volume(i, res.secrets)
                vol = replace(vol, description=vol.description + " [encrypted, unlocked]")
            except EvidenceError as exc:
                vol = replace(vol, fs_type=None, encryption="APFS")
                out.append((vol, Coverage(device_id=vol.device_id, kind=ENCRYPTED, where=vol.where,
                                          reason=str(exc), bytes_not_examined=length)))
                continue
        out.append((vol, None))
    return out or gap("APFS container without volumes")


def _lvm_volumes(evidence: Evidence, index: int, offset: int, length: int, desc: str,
                 gap) -> Examined:
    """Each logical volume of an LVM physical volume (libvslvm), its file system read by TSK;
    one libvslvm cannot read (thin, snapshot, extents elsewhere) is a gap."""
    try:
        group, lvs = lvm_volumes(evidence, offset, length)
    except EvidenceError as exc:
        return gap(str(exc), kind=UNSUPPORTED_VOLUME)
    out: Examined = []
    for i, name, size, why in lvs:
        lv_desc = f"{desc} [LVM {group}/{name}]"
        try:
            lv_offset = nested_offset(offset, i)
        except EvidenceError as exc:
            why = str(exc)
            lv_offset = offset
        vol = VolumeRef(device_id=evidence.ref.device_id, index=index, offset=lv_offset,
                        length=size, description=lv_desc)
        if not why:
            found, why = _tsk_volume(evidence, index, lv_offset, size, lv_desc)
            if found is not None:
                out.append((found, None))
                continue
        out.append((vol, Coverage(device_id=vol.device_id, kind=UNSUPPORTED_VOLUME
                                  if "libvslvm" in why else UNREADABLE_VOLUME,
                                  where=vol.where, reason=why, bytes_not_examined=size)))
    return out or gap("LVM physical volume without logical volumes", kind=UNSUPPORTED_VOLUME)
