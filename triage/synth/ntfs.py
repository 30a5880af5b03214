"""Write an unmounted NTFS image through libntfs-3g (ctypes): directories, files, alternate data
streams and deletions, with no FUSE and no loop mount. Only the handful of calls ntfs-3g's own
tools use are bound here; the volume is created by `mkntfs` first.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path, PurePosixPath

from triage.errors import TriageError
from triage.synth.filesystems import Entry, run

AT_DATA = 0x80
S_IFDIR = 0o040000
S_IFREG = 0o100000
NTFS_EPOCH_OFFSET = 11644473600          # seconds from 1601-01-01 to 1970-01-01
CHUNK = 4 << 20

_lib = None


def _load():
    global _lib
    if _lib is not None:
        return _lib
    name = ctypes.util.find_library("ntfs-3g") or "libntfs-3g.so.89"
    lib = ctypes.CDLL(name, use_errno=True)
    vp, cp = ctypes.c_void_p, ctypes.c_char_p
    sig = {
        "ntfs_mount": (vp, [cp, ctypes.c_ulong]),
        "ntfs_umount": (ctypes.c_int, [vp, ctypes.c_int]),
        "ntfs_pathname_to_inode": (vp, [vp, vp, cp]),
        "ntfs_create": (vp, [vp, ctypes.c_uint32, cp, ctypes.c_uint8, ctypes.c_uint32]),
        "ntfs_attr_open": (vp, [vp, ctypes.c_uint32, cp, ctypes.c_uint32]),
        "ntfs_attr_pwrite": (ctypes.c_int64, [vp, ctypes.c_int64, ctypes.c_int64, cp]),
        "ntfs_attr_close": (None, [vp]),
        "ntfs_attr_add": (ctypes.c_int, [vp, ctypes.c_uint32, cp, ctypes.c_uint8, cp, ctypes.c_int64]),
        "ntfs_inode_close": (ctypes.c_int, [vp]),
        "ntfs_inode_set_times": (ctypes.c_int, [vp, cp, ctypes.c_size_t, ctypes.c_int]),
        "ntfs_delete": (ctypes.c_int, [vp, cp, vp, vp, cp, ctypes.c_uint8]),
    }
    for fn, (res, args) in sig.items():
        f = getattr(lib, fn)
        f.restype, f.argtypes = res, args
    _lib = lib
    return lib


def available() -> bool:
    """True when libntfs-3g and mkntfs are installed (Debian package ntfs-3g)."""
    import shutil

    try:
        _load()
    except OSError:
        return False
    return shutil.which("mkntfs") is not None


def _fail(what: str) -> TriageError:
    err = ctypes.get_errno()
    return TriageError(f"libntfs-3g: {what}: {os.strerror(err) if err else 'failed'}")


def _ucs(name: str) -> tuple[bytes, int]:
    data = name.encode("utf-16-le")
    if len(data) // 2 > 255:
        raise TriageError(f"NTFS name too long: {name!r}")
    return data, len(data) // 2


def _ntfs_time(t: float) -> int:
    return int((t + NTFS_EPOCH_OFFSET) * 10_000_000)


class Volume:
    """An NTFS image opened read-write through libntfs-3g; use as a context manager."""

    def __init__(self, image: Path):
        self.lib = _load()
        self.image = image
        self.vol = None

    def __enter__(self) -> "Volume":
        self.vol = self.lib.ntfs_mount(str(self.image).encode(), 0)
        if not self.vol:
            raise _fail(f"cannot open {self.image}")
        return self

    def __exit__(self, *exc) -> None:
        if self.vol and self.lib.ntfs_umount(self.vol, 0) != 0:
            raise _fail("unmount")
        self.vol = None

    def _open(self, path: str):
        return self.lib.ntfs_pathname_to_inode(self.vol, None, path.encode())

    def mkdirs(self, path: str) -> None:
        """Create `path` and its missing parents."""
        parts = PurePosixPath(path).parts[1:]
        for i in range(len(parts)):
            sub = "/" + "/".join(parts[: i + 1])
            ni = self._open(sub)
            if ni:
                self.lib.ntfs_inode_close(ni)
                continue
            parent = self._open("/" + "/".join(parts[:i]))
            if not parent:
                raise _fail(f"open {sub}'s parent")
            name, n = _ucs(parts[i])
            ni = self.lib.ntfs_create(parent, 0, name, n, S_IFDIR)
            self.lib.ntfs_inode_close(parent)
            if not ni:
                raise _fail(f"mkdir {sub}")
            self.lib.ntfs_inode_close(ni)

    def _write_attr(self, ni, data: bytes | Path, what: str) -> None:
        na = self.lib.ntfs_attr_open(ni, AT_DATA, None, 0)
        if not na:
            raise _fail(f"open $DATA of {what}")
        try:
            if isinstance(data, bytes):
                chunks = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]
            else:
                chunks = _file_chunks(data)
            pos = 0
            for chunk in chunks:
                if self.lib.ntfs_attr_pwrite(na, pos, len(chunk), chunk) != len(chunk):
                    raise _fail(f"write {what}")
                pos += len(chunk)
        finally:
            self.lib.ntfs_attr_close(na)

    def write_file(self, e: Entry) -> None:
        parent_path, name = e.path.rsplit("/", 1)
        parent_path = parent_path or "/"
        self.mkdirs(parent_path)
        parent = self._open(parent_path)
        if not parent:
            raise _fail(f"open {parent_path}")
        uname, n = _ucs(name)
        ni = self.lib.ntfs_create(parent, 0, uname, n, S_IFREG)
        self.lib.ntfs_inode_close(parent)
        if not ni:
            raise _fail(f"create {e.path}")
        try:
            if e.size:
                self._write_attr(ni, e.data, e.path)
            for sname, sdata in e.streams.items():
                su, sn = _ucs(sname)
                if self.lib.ntfs_attr_add(ni, AT_DATA, su, sn, sdata, len(sdata)) != 0:
                    raise _fail(f"add stream {e.path}:{sname}")
            self._set_times(ni, e.mtime)
        finally:
            if self.lib.ntfs_inode_close(ni) != 0:
                raise _fail(f"close {e.path}")

    def _set_times(self, ni, when: float) -> None:
        t = _ntfs_time(when)
        times = (ctypes.c_int64 * 3)(t, t, t)     # creation, data change, access
        self.lib.ntfs_inode_set_times(ni, ctypes.cast(times, ctypes.c_char_p), 24, 0)

    def set_dir_time(self, path: str, when: float) -> None:
        ni = self._open(path)
        if not ni:
            raise _fail(f"open {path}")
        try:
            self._set_times(ni, when)
        finally:
            self.lib.ntfs_inode_close(ni)

    def delete(self, path: str) -> None:
        parent_path, name = path.rsplit("/", 1)
        ni = self._open(path)
        dir_ni = self._open(parent_path or "/")
        if not ni or not dir_ni:
            for x in (ni, dir_ni):
                if x:
                    self.lib.ntfs_inode_close(x)
            raise TriageError(f"libntfs-3g: {path} not found for deletion")
        uname, n = _ucs(name)
        # ntfs_delete closes both inodes itself, whatever the outcome
        if self.lib.ntfs_delete(self.vol, path.encode(), ni, dir_ni, uname, n) != 0:
            raise _fail(f"delete {path}")


def _file_chunks(path: Path):
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def create(entries: list[Entry], image: Path, size: int, label: str, seed: int) -> None:
    image.unlink(missing_ok=True)
    with open(image, "wb") as f:
        f.truncate(size)
    run(["mkntfs", "-F", "-f", "-Q", "-q", "-T", "-L", label[:32], "-c", "4096", "-s", "512", str(image)])
    serial = f"{(seed * 0x9E3779B97F4A7C15 + 0x47F5) & 0xFFFFFFFFFFFFFFFF:016X}"
    run(["ntfslabel", f"--new-serial={serial}", str(image)])
    newest: dict[str, float] = {}
    for e in entries:
        for parent in PurePosixPath(e.path).parents:
            if str(parent) != "/":
                newest[str(parent)] = max(newest.get(str(parent), 0.0), e.mtime)
    with Volume(image) as vol:
        for e in sorted(entries, key=lambda e: e.path):
            vol.write_file(e)
        # directories look as old as what they hold, not "now"
        for d, t in sorted(newest.items()):
            vol.set_dir_time(d, t)


def delete(paths: list[str], image: Path) -> None:
    with Volume(image) as vol:
        for p in paths:
            vol.delete(p)
