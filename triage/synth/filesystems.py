"""Build file-system images without mounting anything: ext4 with `mke2fs -d`, FAT32 with
`mkfs.fat` + mtools, NTFS with `mkntfs` + libntfs-3g (see ntfs.py). Deletions go through the
file system's own tools (debugfs, mdel, ntfs_delete), so the on-disk traces are the ones a
real deletion leaves: the name is marked free, the content stays in unallocated space.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from triage.errors import TriageError

MiB = 1 << 20


@dataclass
class Entry:
    """One file to place in a file system. `data` is bytes, or a path to copy from (large files)."""

    path: str                          # absolute inside the fs, "/" separated
    data: Union[bytes, Path]
    mtime: float
    deleted: bool = False
    streams: dict[str, bytes] = field(default_factory=dict)   # NTFS alternate data streams

    @property
    def size(self) -> int:
        return len(self.data) if isinstance(self.data, bytes) else self.data.stat().st_size


@dataclass(frozen=True)
class TskName:
    """A name as `fls -r -p` prints it."""

    path: str
    inode: str                         # "13" or, on NTFS, "64-128-2"
    allocated: bool
    kind: str                          # "r/r", "d/d", ...

    @property
    def meta(self) -> int:
        return int(self.inode.split("-")[0])


def run(cmd: list[str], env: Optional[dict] = None, stdin: Optional[bytes] = None) -> str:
    """Run a tool, turning a failure into a one-line TriageError with its stderr."""
    if shutil.which(cmd[0]) is None:
        raise TriageError(f"`{cmd[0]}` not found: install the Debian packages listed in the Makefile")
    full_env = dict(os.environ, **(env or {}))
    proc = subprocess.run(cmd, input=stdin, capture_output=True, env=full_env)
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise TriageError(f"{cmd[0]} failed: {msg[-1] if msg else 'exit ' + str(proc.returncode)}")
    return proc.stdout.decode(errors="replace")


def needed_size(entries: list[Entry], fs_type: str, minimum: int) -> int:
    """A generous size: content plus per-file slack plus metadata, rounded to MiB."""
    content = sum(e.size + sum(len(s) for s in e.streams.values()) for e in entries)
    per_file = {"ext4": 4096 + 256, "fat32": 4096 + 64, "ntfs": 4096 + 1024}[fs_type]
    size = int(content * 1.15) + len(entries) * per_file + 8 * MiB
    if fs_type == "ext4":
        size += size // 20            # journal and group descriptors
    size = max(size, minimum)
    return (size + MiB - 1) // MiB * MiB


def _materialise(entries: list[Entry], root: Path) -> None:
    for e in entries:
        dest = root / e.path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(e.data, bytes):
            dest.write_bytes(e.data)
        else:
            try:
                os.link(e.data, dest)       # large fleets: share the bytes, no copy
            except OSError:
                shutil.copyfile(e.data, dest)
        os.utime(dest, (e.mtime, e.mtime))
    # directories get the newest time of what they hold, so the tree looks lived-in
    for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        times = [c.stat().st_mtime for c in d.iterdir()] or [0]
        os.utime(d, (max(times), max(times)))


def _ext4_create(entries: list[Entry], image: Path, size: int, label: str, seed: int, work: Path) -> None:
    src = work / "src"
    _materialise(entries, src)
    fs_uuid = str(uuid.UUID(int=(seed * 0x9E3779B97F4A7C15 + 0xE4) % (1 << 128)))
    image.unlink(missing_ok=True)
    run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(src), "-L", label[:16], "-U", fs_uuid,
         "-E", f"hash_seed={fs_uuid},root_owner=0:0", "-b", "4096", "-I", "256",
         str(image), f"{size // 1024}k"], env=_E2FS_ENV)
    # mke2fs copies each source file's ctime, which is "now" and cannot be set from user space;
    # pin it to the mtime so the same seed gives the same image bytes
    script = []
    for p in sorted(src.rglob("*")):
        rel = "/" + p.relative_to(src).as_posix()
        t = int(p.stat().st_mtime)
        script.append(f'sif "{rel}" ctime @{t}\nsif "{rel}" ctime_extra 0\n')
    if script:
        run(["debugfs", "-w", "-f", "-", str(image)], env=_E2FS_ENV, stdin="".join(script).encode())
    shutil.rmtree(src)


def _ext4_delete(paths: list[str], image: Path) -> None:
    # debugfs removes the name and frees the inode but leaves the extent tree, like an old
    # ext3 deletion: TSK can still read the content (the tests check it with icat)
    script = "".join(f'rm "{p}"\n' for p in paths)
    run(["debugfs", "-w", "-f", "-", str(image)], env=_E2FS_ENV, stdin=script.encode())


# mke2fs and debugfs stamp "now" on the superblock and root; E2FSPROGS_FAKE_TIME pins it
_E2FS_ENV = {"E2FSPROGS_FAKE_TIME": "1700000000"}
_MTOOLS_ENV = {"MTOOLS_SKIP_CHECK": "1"}


def _fat32_create(entries: list[Entry], image: Path, size: int, label: str, seed: int, work: Path) -> None:
    src = work / "src"
    _materialise(entries, src)
    vol_id = f"{(seed * 2654435761 + 0xFA7) & 0xFFFFFFFF:08X}"
    image.unlink(missing_ok=True)
    run(["mkfs.fat", "-F", "32", "--invariant", "-i", vol_id, "-n", label[:11].upper(),
         "-C", str(image), str(size // 1024)])
    tops = sorted(str(p) for p in src.iterdir())
    if tops:
        run(["mcopy", "-s", "-m", "-Q", "-i", str(image), *tops, "::/"], env=_MTOOLS_ENV)
    shutil.rmtree(src)


def _fat32_delete(paths: list[str], image: Path) -> None:
    # mdel marks the entries 0xE5 and frees the chain; contiguous content stays recoverable
    run(["mdel", "-i", str(image), *("::" + p for p in paths)], env=_MTOOLS_ENV)


def _ntfs_create(entries: list[Entry], image: Path, size: int, label: str, seed: int, work: Path) -> None:
    from triage.synth import ntfs    # ctypes over libntfs-3g, only needed for NTFS volumes
    ntfs.create(entries, image, size, label, seed)


def _ntfs_delete(paths: list[str], image: Path) -> None:
    from triage.synth import ntfs
    ntfs.delete(paths, image)


BUILDERS = {"ext4": (_ext4_create, _ext4_delete), "fat32": (_fat32_create, _fat32_delete),
            "ntfs": (_ntfs_create, _ntfs_delete)}


@dataclass(frozen=True)
class Placed:
    """Where TSK finds an entry after the build: its metadata address and name as fls shows it."""

    inode: Optional[str]
    tsk_path: str
    allocated: bool


def build(fs_type: str, entries: list[Entry], image: Path, label: str, seed: int, work: Path,
          minimum: int = 0) -> tuple[int, dict[str, Placed]]:
    """Create `image` holding `entries`, then delete the ones marked deleted.

    Returns the image size and, for every entry, where fls finds it (inode read before the
    deletion, deleted name read after it; empty when sleuthkit is not installed).
    """
    if fs_type == "fat32":
        minimum = max(minimum, 40 * MiB)    # FAT32 needs at least 65525 clusters
    size = needed_size(entries, fs_type, minimum)
    work.mkdir(parents=True, exist_ok=True)
    create, delete = BUILDERS[fs_type]
    create(entries, image, size, label, seed, work)
    before = {n.path: n for n in fls(image)}
    gone = [e.path for e in entries if e.deleted]
    if gone:
        delete(gone, image)
    after = {}
    for n in fls(image) if gone else before.values():
        after.setdefault((n.meta, n.allocated), n)
    placed = {}
    for e in entries:
        for sname in e.streams:      # NTFS alternate data streams: fls lists "path:stream"
            sn = before.get(f"{e.path}:{sname}")
            if sn is not None:
                placed[f"{e.path}:{sname}"] = Placed(sn.inode, sn.path, sn.allocated)
        n = before.get(e.path)
        if n is None:
            continue
        if e.deleted:
            dn = after.get((n.meta, False))
            placed[e.path] = Placed(n.inode, dn.path if dn else "", False)
        else:
            placed[e.path] = Placed(n.inode, n.path, True)
    return image.stat().st_size, placed


_FLS_LINE = re.compile(r"^(\S+/\S+) (\* )?([0-9][0-9-]*)(?:\(realloc\))?:\t(.*)$")


def fls(image: Path, offset_sectors: int = 0) -> list[TskName]:
    """Every name TSK's `fls -r -p` sees (Debian sleuthkit), or [] when fls is absent."""
    if shutil.which("fls") is None:
        return []
    out = run(["fls", "-r", "-p", "-o", str(offset_sectors), str(image)])
    names = []
    for line in out.splitlines():
        m = _FLS_LINE.match(line)
        if m:
            kind, star, inode, path = m.groups()
            names.append(TskName("/" + path, inode, star is None, kind))
    return names
