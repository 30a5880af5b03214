"""Read-only E01/Ex01 access through Debian's libewf2 (ctypes), falling back to the pyewf wheel.

Why ctypes over `libewf.so.2` and not the PyPI `libewf-python` wheel: the wheel's libewf is
compiled without zlib (its strings say so) and inflates every chunk with libewf's own slow
inflater, 24-50 MB/s, which made an E01 walk 30x slower than the same walk on the raw image
(shared/docs/baselines.md). Debian's libewf2 is linked to zlib: the same reads run at the
speed of `ewfverify`. The Debian Python binding (`python3-libewf`) is built for the system
Python, not the venv's, so a ~150-line ctypes layer over the stable C API is the smallest
thing that works in the venv, needs no compiler, and is installed by `apt-get install libewf2`
(Makefile APT_PACKAGES). ctypes drops the GIL around every foreign call, so reads in threads
overlap. The wheel stays as a fallback (with a warning) for machines without libewf2 and for
Ex01 files the 2014 Debian library cannot open.

Only this module, evidence.py, volumes.py and filesystems.py touch libyal/TSK libraries.
"""
from __future__ import annotations

import bisect
import ctypes
import ctypes.util
import os
import threading
import warnings
from typing import Optional, Sequence

from triage.errors import EvidenceError

_LIB_NAMES = ("/usr/lib/x86_64-linux-gnu/libewf.so.2", "libewf.so.2", "libewf.so")
_ACCESS_READ = 0x01            # LIBEWF_ACCESS_FLAG_READ
_FORMAT_UNKNOWN = 0            # LIBEWF_FORMAT_UNKNOWN: let libewf_glob find any EWF naming

# No cache of our own in front of libewf. Measured on a 693 MB E01 (bench/enumerate.py): TSK
# already reads through its own 64 KiB cache and libewf keeps the chunks it inflated, so 64 KiB
# reads straight through cost 0.35 s of CPU for the whole media, the same as 256 KiB reads. A
# 256 KiB block cache with read-ahead in a background thread was tried: it overlapped inflation
# with hashing only when a core was idle, and cost 6-15 % more CPU (one more copy of every
# byte) -- a loss in a scan, where Ray workers keep every core busy.


def _load() -> Optional[ctypes.CDLL]:
    found = ctypes.util.find_library("ewf")
    for name in _LIB_NAMES + ((found,) if found else ()):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        if not hasattr(lib, "libewf_handle_open"):
            continue
        _declare(lib)
        return lib
    return None


def _declare(lib: ctypes.CDLL) -> None:
    vp, vpp = ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)
    lib.libewf_get_version.restype = ctypes.c_char_p
    lib.libewf_error_sprint.argtypes = [vp, ctypes.c_char_p, ctypes.c_size_t]
    lib.libewf_error_backtrace_sprint.argtypes = [vp, ctypes.c_char_p, ctypes.c_size_t]
    lib.libewf_error_free.argtypes = [vpp]
    lib.libewf_glob.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint8,
                                ctypes.POINTER(ctypes.POINTER(ctypes.c_char_p)),
                                ctypes.POINTER(ctypes.c_int), vpp]
    lib.libewf_glob_free.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, vpp]
    lib.libewf_handle_initialize.argtypes = [vpp, vpp]
    lib.libewf_handle_open.argtypes = [vp, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int,
                                       ctypes.c_int, vpp]
    lib.libewf_handle_close.argtypes = [vp, vpp]
    lib.libewf_handle_free.argtypes = [vpp, vpp]
    lib.libewf_handle_get_media_size.argtypes = [vp, ctypes.POINTER(ctypes.c_uint64), vpp]
    lib.libewf_handle_get_bytes_per_sector.argtypes = [vp, ctypes.POINTER(ctypes.c_uint32), vpp]
    lib.libewf_handle_get_sectors_per_chunk.argtypes = [vp, ctypes.POINTER(ctypes.c_uint32), vpp]
    lib.libewf_handle_segment_files_corrupted.argtypes = [vp, vpp]
    lib.libewf_handle_get_utf8_hash_value.argtypes = [vp, ctypes.c_char_p, ctypes.c_size_t,
                                                      ctypes.c_char_p, ctypes.c_size_t, vpp]
    lib.libewf_handle_get_number_of_checksum_errors.argtypes = [vp, ctypes.POINTER(ctypes.c_uint32), vpp]
    lib.libewf_handle_get_checksum_error.argtypes = [vp, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint64),
                                                     ctypes.POINTER(ctypes.c_uint64), vpp]
    # The 2014 library (Debian 12) has read_random; newer ones read_buffer_at_offset.
    read = getattr(lib, "libewf_handle_read_buffer_at_offset", None) or lib.libewf_handle_read_random
    read.argtypes = [vp, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int64, vpp]
    read.restype = ctypes.c_ssize_t
    lib.triage_read = read


_LIB: Optional[ctypes.CDLL] = None
_LIB_TRIED = False


def library() -> Optional[ctypes.CDLL]:
    """The loaded libewf, or None when the shared library is missing."""
    global _LIB, _LIB_TRIED
    if not _LIB_TRIED:
        _LIB_TRIED = True
        _LIB = _load()
    return _LIB


def backend_name() -> str:
    lib = library()
    if lib is None:
        return "pyewf (PyPI wheel, no zlib: slow)"
    return f"libewf {lib.libewf_get_version().decode()} (ctypes)"


def _message(lib: ctypes.CDLL, err: ctypes.c_void_p, what: str) -> str:
    """libewf's innermost error, on one line (the backtrace's last frame says what went wrong)."""
    text = ""
    if err:
        buf = ctypes.create_string_buffer(4096)
        if lib.libewf_error_backtrace_sprint(err, buf, len(buf)) > 0:
            lines = [ln.strip() for ln in buf.value.decode("utf-8", "replace").splitlines() if ln.strip()]
            text = lines[-1] if lines else ""
        lib.libewf_error_free(ctypes.byref(err))
    return f"{what}: {text}" if text else what


class EwfReader:
    """A read-only view of the media inside an EWF segment set.

    `read(offset, size)` is thread-safe (one lock: libewf keeps one chunk cache per handle).

    Damaged chunks: when a chunk fails its checksum (Adler-32, or a deflate stream that does
    not inflate), libewf 20140814's read still succeeds, with the chunk's bytes zeroed (its
    default; with `set_read_zero_chunk_on_error(0)`, whatever inflated), and adds the chunk's
    sectors to a list of checksum errors. `read` asks for that list's length after every
    read, under the same lock, so `damaged` holds every damaged range a read has returned
    before that read returns; callers must not trust bytes that overlap it (`damage_in`).
    The list is a range list that merges neighbours: a second damaged chunk next to a known
    one grows that range without adding an entry, so the list is read again whenever its
    length changes or a read touched the chunk on either side of a known range. Nothing is
    read twice. The pyewf fallback exposes no such list: damage there goes unseen.
    """

    def __init__(self, paths: Sequence[str]):
        self.paths = tuple(str(p) for p in paths)
        check_segments(self.paths)
        self._lock = threading.Lock()
        self._handle = ctypes.c_void_p()
        self._pyewf = None
        self.damaged: list[tuple[int, int]] = []      # (byte offset, length), sorted
        self._errors = ctypes.c_uint32()
        self._errors_seen = 0
        self.bytes_per_sector = 512
        lib = library()
        if lib is None:
            warnings.warn("libewf.so.2 not found (apt-get install libewf2): falling back to the "
                          "pyewf wheel, which has no zlib and reads E01 about 10x slower", stacklevel=2)
            self._open_pyewf()
            return
        try:
            self._open_native(lib)
        except EvidenceError as native_error:
            # Ex01 (EWF2) postdates the 2014 Debian library: let the newer wheel try.
            if not _is_ewf2(self.paths[0]):
                raise
            try:
                self._open_pyewf()
            except EvidenceError:
                raise native_error from None

    # --- opening ---------------------------------------------------------------------------
    def _open_native(self, lib: ctypes.CDLL) -> None:
        self._lib = lib
        err = ctypes.c_void_p()
        names = (ctypes.c_char_p * len(self.paths))(*[os.fsencode(p) for p in self.paths])
        if lib.libewf_handle_initialize(ctypes.byref(self._handle), ctypes.byref(err)) != 1:
            raise EvidenceError(_message(lib, err, "libewf could not start"))
        if lib.libewf_handle_open(self._handle, names, len(self.paths), _ACCESS_READ, ctypes.byref(err)) != 1:
            msg = _message(lib, err, f"{self.paths[0]}: not a readable EWF segment set")
            self._free()
            raise EvidenceError(msg)
        size = ctypes.c_uint64()
        if lib.libewf_handle_get_media_size(self._handle, ctypes.byref(size), ctypes.byref(err)) != 1:
            msg = _message(lib, err, f"{self.paths[0]}: no media size")
            self.close()
            raise EvidenceError(msg)
        self.size = size.value
        bps, spc = ctypes.c_uint32(), ctypes.c_uint32()
        lib.libewf_handle_get_bytes_per_sector(self._handle, ctypes.byref(bps), ctypes.byref(err))
        lib.libewf_handle_get_sectors_per_chunk(self._handle, ctypes.byref(spc), ctypes.byref(err))
        self.bytes_per_sector = bps.value or 512
        self.chunk_size = self.bytes_per_sector * (spc.value or 64)
        self.backend = "libewf"
        # A segment set with a cut-off last segment opens, but its table ends early: a read of
        # the last sector tells, now, rather than as a short file deep inside a scan.
        if self.size:
            last = min(self.size, 512)
            self.read(self.size - last, last)

    def _open_pyewf(self) -> None:
        try:
            import pyewf
        except ImportError as exc:
            raise EvidenceError(f"no EWF reader: install libewf2 ({exc})") from None
        handle = pyewf.handle()
        try:
            handle.open(list(self.paths))
        except (OSError, IOError) as exc:
            raise EvidenceError(f"{self.paths[0]}: not a readable EWF segment set: "
                                f"{str(exc).splitlines()[0]}") from None
        self._pyewf = handle
        self.size = handle.get_media_size()
        self.chunk_size = 32768
        self.backend = "pyewf"

    # --- reading ---------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> bytes:
        """Up to `size` bytes of media at `offset` (fewer only at the end). Thread-safe."""
        if offset >= self.size or size <= 0:
            return b""
        size = min(size, self.size - offset)
        if self._pyewf is not None:
            with self._lock:
                try:
                    return self._pyewf.read_buffer_at_offset(size, offset)
                except (OSError, IOError) as exc:
                    raise EvidenceError(f"{self.paths[0]}: read error at {offset}: "
                                        f"{str(exc).splitlines()[0]}") from None
        # libewf writes straight into a new bytes object nobody else has seen yet: no zero-fill
        # of a ctypes buffer and no copy out of it (two passes over every byte saved).
        buf = bytes(size)
        err = ctypes.c_void_p()
        with self._lock:
            if not self._handle:
                raise EvidenceError(f"{self.paths[0]}: read after close")
            got = self._lib.triage_read(self._handle, buf, size, offset, ctypes.byref(err))
            if got >= 0:
                self._note_checksum_errors(offset, got)
        if got < 0:
            raise EvidenceError(_message(self._lib, err, f"{self.paths[0]}: read error at offset {offset}"))
        return buf[:got] if got != size else buf

    def _note_checksum_errors(self, offset: int, size: int) -> None:
        """Bring `damaged` up to date after a read of [offset, offset+size). Under the lock.
        One foreign call on a sound image."""
        err = ctypes.c_void_p()
        lib = self._lib
        if lib.libewf_handle_get_number_of_checksum_errors(self._handle, ctypes.byref(self._errors),
                                                           ctypes.byref(err)) != 1:
            raise EvidenceError(_message(lib, err, f"{self.paths[0]}: cannot ask libewf for checksum errors"))
        count = self._errors.value
        if count == self._errors_seen and not (count and self._overlaps(
                offset - self.chunk_size, size + 2 * self.chunk_size)):
            return
        start, sectors, ranges = ctypes.c_uint64(), ctypes.c_uint64(), []
        for i in range(count):
            if lib.libewf_handle_get_checksum_error(self._handle, i, ctypes.byref(start),
                                                    ctypes.byref(sectors), ctypes.byref(err)) != 1:
                raise EvidenceError(_message(lib, err, f"{self.paths[0]}: cannot read checksum error {i}"))
            ranges.append((start.value * self.bytes_per_sector, sectors.value * self.bytes_per_sector))
        self.damaged = sorted(ranges)
        self._errors_seen = count

    def _overlaps(self, offset: int, size: int) -> list[tuple[int, int]]:
        damaged = self.damaged
        i = max(bisect.bisect_right(damaged, (offset,)) - 1, 0)
        hits = []
        for start, length in damaged[i:]:
            if start >= offset + size:
                break
            if start + length > offset:
                hits.append((start, length))
        return hits

    def damage_in(self, offset: int, size: int) -> list[tuple[int, int]]:
        """The damaged ranges (byte offset, length) that [offset, offset+size) overlaps, among
        those reads have met so far."""
        if not self.damaged or size <= 0:
            return []
        return self._overlaps(offset, size)

    def stored_hashes(self) -> dict:
        """The MD5/SHA-1 the acquisition tool stored in the segments (lower-case hex)."""
        out = {}
        if self._pyewf is not None:
            for key in ("MD5", "SHA1"):
                try:
                    value = self._pyewf.get_hash_value(key)
                except (OSError, IOError, AttributeError):
                    value = None
                if value:
                    out[key.lower()] = value.lower()
            return out
        for key in ("MD5", "SHA1"):
            buf = ctypes.create_string_buffer(128)
            err = ctypes.c_void_p()
            with self._lock:
                rc = self._lib.libewf_handle_get_utf8_hash_value(
                    self._handle, key.encode(), len(key), buf, len(buf), ctypes.byref(err))
            if rc == 1 and buf.value:
                out[key.lower()] = buf.value.decode().lower()
            elif err:
                self._lib.libewf_error_free(ctypes.byref(err))
        return out

    def close(self) -> None:
        if self._pyewf is not None:
            self._pyewf.close()
            self._pyewf = None
            return
        with self._lock:
            if self._handle:
                err = ctypes.c_void_p()
                self._lib.libewf_handle_close(self._handle, ctypes.byref(err))
                if err:
                    self._lib.libewf_error_free(ctypes.byref(err))
                self._free()

    def _free(self) -> None:
        err = ctypes.c_void_p()
        self._lib.libewf_handle_free(ctypes.byref(self._handle), ctypes.byref(err))
        if err:
            self._lib.libewf_error_free(ctypes.byref(err))
        self._handle = ctypes.c_void_p()


def check_segments(paths: Sequence[str]) -> None:
    """Refuse a segment set with a gap or a cut-off segment, naming what is wrong.

    The 2014 libewf opens E01+E03 without E02, or a last segment cut short, and then reads
    zeroes or garbage where the missing data should be: a listing of a damaged device that
    looks whole. EWF1 segments say who they are (segment number at offset 9) and chain their
    sections (`next` offsets) to a final `next` (more segments follow) or `done` (the last).
    Walking that chain costs one 76-byte read per section. EWF2 (Ex01) is left to the library.
    """
    import struct

    for i, path in enumerate(paths):
        try:
            size = os.path.getsize(path)
            with open(path, "rb") as fh:
                head = fh.read(13)
                if not head.startswith(b"EVF\x09\x0d\x0a\xff\x00"):
                    return
                number = struct.unpack_from("<H", head, 9)[0]
                name = os.path.basename(path)
                if number != i + 1:
                    raise EvidenceError(f"{paths[0]}: EWF segment {i + 1} is missing "
                                        f"({name} is segment {number})")
                offset, last = 13, ""
                while True:
                    fh.seek(offset)
                    desc = fh.read(76)
                    if len(desc) < 76:
                        raise EvidenceError(f"{paths[0]}: EWF segment {name} is truncated "
                                            f"({size} bytes; a section should start at {offset})")
                    last = desc[:16].rstrip(b"\x00").decode("ascii", "replace")
                    nxt, sect_size = struct.unpack_from("<QQ", desc, 16)
                    if last in ("next", "done"):
                        break
                    if nxt <= offset or nxt > size:
                        raise EvidenceError(f"{paths[0]}: EWF segment {name} is truncated "
                                            f"({size} bytes; its '{last}' section runs to {nxt})")
                    offset = nxt
        except OSError as exc:
            raise EvidenceError(f"{path}: {exc.strerror or exc}") from None
        final = i == len(paths) - 1
        if final and last != "done":
            raise EvidenceError(f"{paths[0]}: EWF segment set incomplete: {name} is not the last "
                                f"segment (segment {number + 1} is missing)")
        if not final and last == "done":
            raise EvidenceError(f"{paths[0]}: {name} ends the EWF set, but more segments were given")


def _is_ewf2(path: str) -> bool:
    with open(path, "rb") as fh:
        return fh.read(5) == b"EVF2\r"


def glob_segments(first: str) -> list[str]:
    """Every segment of the set `first` belongs to (E01, E02 ... EAA ...; Ex01 ...), in order."""
    lib = library()
    if lib is None:
        import pyewf
        try:
            return list(pyewf.glob(first))
        except (OSError, IOError) as exc:
            raise EvidenceError(f"{first}: {str(exc).splitlines()[0]}") from None
    names = ctypes.POINTER(ctypes.c_char_p)()
    count = ctypes.c_int()
    err = ctypes.c_void_p()
    raw = os.fsencode(first)
    if lib.libewf_glob(raw, len(raw), _FORMAT_UNKNOWN, ctypes.byref(names), ctypes.byref(count),
                       ctypes.byref(err)) != 1:
        raise EvidenceError(_message(lib, err, f"{first}: cannot find its EWF segments"))
    try:
        return [os.fsdecode(names[i]) for i in range(count.value)]
    finally:
        lib.libewf_glob_free(names, count, ctypes.byref(err))
