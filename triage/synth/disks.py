"""Whole-disk assembly and evidence containers: MBR/GPT with `sfdisk` on an image file,
file-system images copied in at their partition offsets, a BitLocker-like volume, and the
containers seized media arrive in (raw, split raw, E01 through `ewfacquire`).
"""
from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from triage.synth.filesystems import MiB, run

SECTOR = 512
ALIGN = 2048                    # sectors: the 1 MiB alignment every modern partitioner uses

MBR_TYPES = {"ext4": "83", "fat32": "0c", "ntfs": "07", "bitlocker": "07"}
GPT_TYPES = {
    "ext4": "0FC63DAF-8483-4772-8E79-3D69D8477DE4",        # Linux filesystem
    "fat32": "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",       # Microsoft basic data
    "ntfs": "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
    "bitlocker": "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
}
BITLOCKER_GUID = bytes.fromhex("3bd66749292ed84a8399f6a339e3d001")   # FVE volume GUID, on-disk order


@dataclass
class Part:
    """A volume to place on the disk: a built file-system image, or raw bytes from a maker."""

    kind: str                   # ext4, fat32, ntfs, bitlocker
    image: Path
    name: str = ""
    offset: int = 0             # filled in by `assemble`
    length: int = 0


def _uuid(seed: int, *salt: object) -> str:
    digest = hashlib.sha256("/".join(map(str, (seed, *salt))).encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4)).upper()


def bitlocker_volume(path: Path, size: int, seed: int) -> None:
    """A volume that looks BitLocker-encrypted to a triage tool: an NTFS-like boot jump, the
    `-FVE-FS-` OEM id at offset 3, the FVE GUID at 160 and 0x55AA, random bytes everywhere
    else (ciphertext is indistinguishable from noise). It cannot be unlocked: there is no key."""
    rng = np.random.default_rng([seed, 0xB17])
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 4 * MiB)
            f.write(rng.bytes(n))
            left -= n
        header = bytearray(rng.bytes(SECTOR))
        header[0:3] = b"\xeb\x58\x90"
        header[3:11] = b"-FVE-FS-"
        header[11:13] = SECTOR.to_bytes(2, "little")
        header[13] = 8
        header[160:176] = BITLOCKER_GUID
        header[510:512] = b"\x55\xaa"
        f.seek(0)
        f.write(header)


def _copy_into(src: Path, dst, offset: int) -> None:
    """Copy src into the open file dst at offset, skipping zero blocks so the disk stays sparse."""
    zero = bytes(MiB)
    with open(src, "rb") as f:
        pos = 0
        while True:
            buf = f.read(MiB)
            if not buf:
                break
            if buf != zero[: len(buf)]:
                dst.seek(offset + pos)
                dst.write(buf)
            pos += len(buf)


def assemble(disk: Path, parts: list[Part], table: str, seed: int) -> list[Part]:
    """Write a disk image holding `parts` under an MBR or GPT, or one bare volume (`none`)."""
    disk.unlink(missing_ok=True)
    if table == "none":
        if len(parts) != 1:
            raise ValueError("a bare device holds exactly one volume")
        os.replace(parts[0].image, disk)
        parts[0].offset, parts[0].length = 0, disk.stat().st_size
        return parts
    if table == "mbr_ext":
        return _assemble_extended(disk, parts, seed)
    start = ALIGN
    lines = ["label: gpt" if table == "gpt" else "label: dos", "unit: sectors"]
    if table == "gpt":
        lines.append(f"label-id: {_uuid(seed, 'disk')}")
    else:
        lines.append(f"label-id: 0x{(seed * 40503 + 0x5EED) & 0xFFFFFFFF:08x}")
    for i, p in enumerate(parts):
        sectors = (p.image.stat().st_size + SECTOR - 1) // SECTOR
        sectors = (sectors + ALIGN - 1) // ALIGN * ALIGN
        p.offset, p.length = start * SECTOR, sectors * SECTOR
        if table == "gpt":
            lines.append(f'start={start}, size={sectors}, type={GPT_TYPES[p.kind]}, '
                         f'uuid={_uuid(seed, "part", i)}, name="{p.name or p.kind}"')
        else:
            lines.append(f"start={start}, size={sectors}, type={MBR_TYPES[p.kind]}")
        start += sectors
    total = (start + ALIGN) * SECTOR           # room for the GPT backup header
    with open(disk, "wb") as f:
        f.truncate(total)
    run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", str(disk)], stdin="\n".join(lines).encode() + b"\n")
    with open(disk, "r+b") as f:
        for p in parts:
            _copy_into(p.image, f, p.offset)
    for p in parts:
        p.image.unlink()
    return parts


def _sectors(p: Part) -> int:
    n = (p.image.stat().st_size + SECTOR - 1) // SECTOR
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _assemble_extended(disk: Path, parts: list[Part], seed: int) -> list[Part]:
    """MBR with the first volume primary and every other one a logical partition inside an
    extended partition (each logical one preceded by its EBR), as older Windows installs are."""
    lines = ["label: dos", "unit: sectors", f"label-id: 0x{(seed * 40503 + 0xE87) & 0xFFFFFFFF:08x}"]
    first, rest = parts[0], parts[1:]
    start = ALIGN
    first.offset, first.length = start * SECTOR, _sectors(first) * SECTOR
    lines.append(f"start={start}, size={_sectors(first)}, type={MBR_TYPES[first.kind]}")
    start += _sectors(first)
    ext_start = start
    ext_size = sum(ALIGN + _sectors(p) for p in rest)
    lines.append(f"start={ext_start}, size={ext_size}, type=5")
    for p in rest:
        start += ALIGN                       # room for this logical partition's EBR
        p.offset, p.length = start * SECTOR, _sectors(p) * SECTOR
        lines.append(f"start={start}, size={_sectors(p)}, type={MBR_TYPES[p.kind]}")
        start += _sectors(p)
    with open(disk, "wb") as f:
        f.truncate((ext_start + ext_size + ALIGN) * SECTOR)
    run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", str(disk)], stdin="\n".join(lines).encode() + b"\n")
    with open(disk, "r+b") as f:
        for p in parts:
            _copy_into(p.image, f, p.offset)
    for p in parts:
        p.image.unlink()
    return parts


# ---------------------------------------------------------------- containers

def to_split_raw(raw: Path, segment: int, style: str = "000") -> list[Path]:
    """Split `raw` into `NAME.000, NAME.001…` (style "000") or `NAME.aa, NAME.ab…` ("aa")."""
    out = []
    with open(raw, "rb") as f:
        i = 0
        while True:
            buf = f.read(segment)
            if not buf:
                break
            if style == "000":
                suffix = f"{i:03d}"
            else:
                suffix = chr(ord("a") + i // 26) + chr(ord("a") + i % 26)
            seg = raw.with_name(f"{raw.stem}.{suffix}")
            seg.write_bytes(buf)
            out.append(seg)
            i += 1
    raw.unlink()
    return out


def to_e01(raw: Path, segment: Optional[int], case: str, evidence: str, description: str) -> list[Path]:
    """Acquire `raw` into an EnCase 6 E01 set with MD5 and SHA-1 stored, as a lab would."""
    base = raw.with_suffix("")
    seg = segment or 1536 * MiB
    run(["ewfacquire", "-u", "-q", "-t", str(base), "-f", "encase6", "-c", "fast", "-d", "sha1",
         "-S", str(seg), "-C", case, "-D", description, "-E", evidence, "-e", "triage synth",
         "-N", "synthetic test evidence, no real material", "-m", "fixed", "-M", "physical",
         str(raw)])
    raw.unlink()
    segments = sorted(base.parent.glob(base.name + ".E[0-9][0-9]"))
    if not segments:
        raise ValueError(f"ewfacquire wrote no segments for {raw}")
    return segments
