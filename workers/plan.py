"""The scan plan: which files of a volume are read, in which order, in which batches.

Pure functions (no Ray), so the ordering and batching are testable alone. The planner runs in
a worker process (the file-system walk may crash in TSK), spools the walk to per-tier temporary
files so no process holds a whole volume's file list, and yields a `VolumePlan` header followed
by `BatchSpec`s, most likely yield first.

Batch ids are deterministic (volume offset, tier, sequence), so a resumed scan cuts the same
batches as an uninterrupted one and can skip those already stored.
"""
from __future__ import annotations

import dataclasses
import marshal
import operator
import os
import pickle
import re
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Optional

from triage.filetype import VIDEO_TYPES
from triage.records import PLAIN_AT, Coverage, FileRecord, Provenance, plain_record

# Tiers, most likely yield first. Pictures, videos and archives (which may hold pictures) in
# user, camera, download, browser-cache and P2P folders come first, then the same kinds of file
# anywhere but system folders ("the picture pass"), then other user files, then the rest.
TIER_NAMES = (
    "pictures and videos in user, camera, download, cache and P2P folders, and deleted ones",
    "other pictures, videos and archives",
    "other files in user folders",
    "other files",
    "system folders",
)
PICTURE_TIERS = frozenset({0, 1})   # the "one full pass over picture files" of triage mode

DEFAULT_BATCH_FILES = 256
DEFAULT_BATCH_BYTES = 64 * 1024 * 1024
# Tiers after the picture pass take this many times the files per batch: their files are
# mostly hashed and matched only (tens of microseconds each), so each batch's own costs (a Ray
# task, a store transaction) dominated them: 1M small files took 3,900 batches at 256; at 4x
# the raylet alone still spent 3.4 s of CPU on their 980 tasks (2.0 s at 8x, 1.6 s at 16x,
# where the driver spent 1.4 s less than at 8x; at 64x, 16,384 files, the whole scan of 1M
# spent 45.1 core-seconds against 47.1 at 16x, the driver 9.1 against 10.6, but the planner,
# which holds a batch of each tier as it cuts, peaked at 220 MB against 150; 32x peaked at
# 176 MB, and interleaved with 16x spent 38.4 and 39.6 core-seconds against 40.0 and 41.3, the
# driver 8.3-8.6 against 9.1-9.4). A batch that kills its worker is split down to the file
# that does, so a bigger batch makes no bigger gap.
OTHER_TIER_FACTOR = 32
# The batching rule's version, kept with each run: a resume must cut the batches the
# interrupted run cut (version 1: every tier at max_files; 2: later tiers at 4x; 3: at 8x;
# 4: at 16x; 5: at 32x).
BATCH_PLAN = 5

MEDIA_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".bmp", ".dib", ".tif", ".tiff", ".webp",
    ".heic", ".heif", ".avif",
    ".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".wmv", ".mpg", ".mpeg", ".3gp", ".flv",
    ".zip", ".tar",
})
MEDIA_TYPE_PREFIXES = ("image/", "video/")
MEDIA_TYPES = frozenset({"application/zip", "application/x-tar"})

# Folders where people keep, receive and take pictures (matched on a whole path component).
_YIELD_NAMES = (
    "users", "home", "documents and settings", "dcim", "camera", "camera roll", "pictures",
    "photos", "my pictures", "downloads", "download", "desktop", "documents", "whatsapp",
    "telegram", "snapchat", "$recycle.bin", "recycler", ".trash", "trash",
    "cache", "cache2", "inetcache", "temporary internet files", "thumbnails",
    "emule", "incoming", "bittorrent", "utorrent", "qbittorrent", "torrents", "limewire",
    "shareaza", "frostwire", "gigatribe", "ares", "vuze")
# Operating-system and application folders (the first component of a path, or two): read last.
_SYSTEM_NAMES = (
    "windows", "winnt", "program files", "program files (x86)", "programdata", "$extend",
    "system", "library", "system volume information", "usr", "lib", "lib32", "lib64", "bin",
    "sbin", "boot", "etc", "opt", "proc", "sys", "snap", "var/lib", "applications")


def _either(names) -> str:
    return "|".join(re.escape(n) for n in names)


_YIELD = re.compile(rf"(^|/)({_either(_YIELD_NAMES)})(/|$)", re.IGNORECASE)
_SYSTEM = re.compile(rf"^/?({_either(_SYSTEM_NAMES)})(/|$)", re.IGNORECASE)
# tier_of's shortcut (the answer for each folder, once): the longest path that can be a system
# name whole ("/var/lib"), and of a file name that can be a yield folder's
_SYSTEM_WHOLE = 2 + max(map(len, _SYSTEM_NAMES))       # "/" before, "\n" after
_YIELD_LONGEST = 1 + max(map(len, _YIELD_NAMES))        # "\n" after
_YIELD_SET = frozenset(_YIELD_NAMES)
_SYSTEM_SET = frozenset(_SYSTEM_NAMES)
_FOLDERS: dict[str, tuple[bool, bool]] = {}
_FOLDERS_KEPT = 10_000


def is_media(record: FileRecord) -> bool:
    """A picture, video or archive by its (sniffed, when the walk knew it) type or its name."""
    return _media(record.type, record.name)


def _media(ctype: str, name: str) -> bool:
    if ctype and (ctype.startswith(MEDIA_TYPE_PREFIXES) or ctype in MEDIA_TYPES):
        return True
    return _extension(name).lower() in MEDIA_EXTENSIONS


def _extension(name: str) -> str:
    """os.path.splitext(name)[1], its common case without the call (a third of tier_of)."""
    dot = name.rfind(".")
    if dot > 0 and name[dot - 1] != "." and "/" not in name:
        return name[dot:]
    return os.path.splitext(name)[1]


def tier_of(record: FileRecord) -> int:
    """The reading tier of a file: 0 is read first (the planner's walk tiers a plain file's
    tuple by `_tier` straight)."""
    return _tier(record.path, record.name, record.type, record.allocated, record.orphan)


def _tier(path: str, name: str, ctype: str, allocated: bool, orphan: bool) -> int:
    if "\\" in path:
        path = path.replace("\\", "/")
    system, yielding = _path_tests(path)
    if system:
        return 4
    likely = yielding or not allocated or orphan
    if _media(ctype, name):
        return 0 if likely else 1
    return 2 if likely else 3


# The two path tests of tier_of, as `_SYSTEM.search(path)` and `_YIELD.search(path)` answer
# them, with each folder's answer found once: the regexes were a tenth of the planner's time
# on a million small files, 100 to a folder (tests/test_scan_plan.py checks the two ways agree).
def _folder(folder: str) -> tuple[bool, bool]:
    known = _FOLDERS.get(folder)
    if known is None:
        if len(_FOLDERS) >= _FOLDERS_KEPT:
            _FOLDERS.clear()
        known = _FOLDERS[folder] = (bool(_SYSTEM.search(folder + "/")),
                                    bool(_YIELD.search(folder + "/")))
    return known


def _path_tests(path: str) -> tuple[bool, bool]:
    """(_SYSTEM.search(path), _YIELD.search(path)) as booleans, the path split once. A match
    ends at a "/" of the folder, or at the end of a path that is a system name whole (or of a
    last component that is a yield folder's name)."""
    folder, _, name = path.rpartition("/")
    known = _FOLDERS.get(folder)            # _folder's, its common case without the call
    system, yielding = known if known is not None else _folder(folder)
    if not system and len(path) <= _SYSTEM_WHOLE:
        whole = path[1:] if path[:1] == "/" else path
        system = _listed(whole, _SYSTEM_SET) if whole.isascii() else bool(_SYSTEM.search(path))
    if not yielding and len(name) <= _YIELD_LONGEST:
        yielding = _listed(name, _YIELD_SET) if name.isascii() \
            else bool(_YIELD.search("/" + name))
    return system, yielding


def _is_system(path: str) -> bool:
    return _path_tests(path)[0]


def _in_yield_folder(path: str) -> bool:
    return _path_tests(path)[1]


def _listed(text: str, names: frozenset) -> bool:
    """Whether an ASCII `text` is one of `names` as the regexes match a last component: case
    ignored (IGNORECASE's other equivalents, such as the Kelvin sign for "k", are not ASCII),
    and a newline after it allowed (their `$` matches before a final newline)."""
    low = text.lower()
    return low in names or (low[-1:] == "\n" and low[:-1] in names)


@dataclass(frozen=True)
class BatchHeader:
    """What the driver needs to know of a batch: the records themselves go from the planner
    to a worker without the driver unpacking them."""

    device_id: str
    batch_id: str
    volume_offset: int
    tier: int
    files: int
    bytes: int
    videos: int = 0                 # videos among the files (each may use the video time limit)


class BatchSpec:
    """A batch of files to read together in one task.

    Its records travel as one block (`pack`): the planner spools each batch so as it is cut
    and hands the block on without unpacking it, Ray copies a byte string instead of walking
    every record with its own pickler, and the worker unpacks the records once, when it first
    asks for them (or reads its plain files' fields straight from the block)."""

    __slots__ = ("device_id", "batch_id", "volume_offset", "tier", "volume_length", "_records",
                 "_packed", "_counts")

    def __init__(self, device_id: str, batch_id: str, volume_offset: int, tier: int,
                 records: tuple = (), volume_length: int = 0):
        self.device_id, self.batch_id = device_id, batch_id
        self.volume_offset, self.tier = volume_offset, tier
        self.volume_length = volume_length          # what the volume holds (0: unknown)
        self._records: Optional[tuple] = tuple(records)
        self._packed: Optional[bytes] = None
        self._counts: Optional[tuple[int, int, int]] = None

    @classmethod
    def packed(cls, device_id: str, batch_id: str, volume_offset: int, tier: int, block: bytes,
               counts: tuple[int, int, int], volume_length: int = 0) -> "BatchSpec":
        """A batch from its packed block (`pack`) and its (files, bytes, videos)."""
        spec = cls(device_id, batch_id, volume_offset, tier, (), volume_length)
        spec._records, spec._packed, spec._counts = None, block, tuple(counts)
        return spec

    @property
    def records(self) -> tuple[FileRecord, ...]:
        if self._records is None:
            self._records = unpack(self._packed)
        return self._records

    def __reduce__(self):
        block = self._packed if self._packed is not None else pack(self._records)
        return (BatchSpec.packed, (self.device_id, self.batch_id, self.volume_offset, self.tier,
                                   block, self.counts, self.volume_length))

    @property
    def counts(self) -> tuple[int, int, int]:
        """(files, bytes, videos): the batch's size and time-limit figures."""
        if self._counts is None:
            self._counts = batch_counts(self._records, self.volume_length)
        return self._counts

    @property
    def bytes(self) -> int:
        """The bytes the batch can read: a file's declared size counts only as far as its
        volume goes, so hostile metadata (a 7e16-byte inode) cannot stretch the time limit."""
        return self.counts[1]

    @property
    def files(self) -> int:
        return self.counts[0]

    @property
    def videos(self) -> int:
        return self.counts[2]

    @property
    def header(self) -> BatchHeader:
        return BatchHeader(self.device_id, self.batch_id, self.volume_offset, self.tier,
                           self.files, self.bytes, self.videos)


# A batch's records cross from the planner to a worker as one block (b"S"): its volume's
# fields (records.plain_common) once, then each file in batch order, a plain file as the tuple
# of its fields (records.PLAIN_FIELDS: how the walk gives most of a volume's files) and any
# other record (a stream, a member, carved content) pickled alone, all marshalled. A plain
# file so costs a tenth of pickling its record, and the worker reads its fields straight from
# the tuple. A batch holding a value marshal cannot take goes pickled whole (b"P").
_PROV_FIELDS = tuple(f.name for f in dataclasses.fields(Provenance))
# A provenance is a plain file's when every field but these is at its default: no stream,
# member, snapshot, parent, byte range or frame (its key is then records.file_key's).
_FILE_PROV = ("device_id", "volume_offset", "inode", "path", "volume_index", "fs_type")
_OTHER_PROV = operator.itemgetter(*(n for n in _PROV_FIELDS if n not in _FILE_PROV))
_OTHER_PROV_DEFAULTS = tuple(f.default for f in dataclasses.fields(Provenance)
                             if f.name not in _FILE_PROV)
_VOLUME_OF = operator.itemgetter("device_id", "volume_offset", "volume_index", "fs_type")
_INT_OR_NONE = (int, type(None))
_P_SIZE, _P_TYPE = PLAIN_AT["size"], PLAIN_AT["type"]
_P_PATH, _P_NAME = PLAIN_AT["path"], PLAIN_AT["name"]
_P_ALLOC, _P_ORPHAN = PLAIN_AT["allocated"], PLAIN_AT["orphan"]


def plain_row(rec, volume: tuple) -> Optional[tuple]:
    """A record's fields as a plain file of `volume` (records.PLAIN_FIELDS; plain_record
    makes the same record of them), or None when it is not one: another kind of record or
    provenance, a provenance naming more than a file, another volume, a folder or a link."""
    if type(rec) is not FileRecord or type(rec.prov) is not Provenance:
        return None
    prov, r = rec.prov.__dict__, rec.__dict__
    if _OTHER_PROV(prov) != _OTHER_PROV_DEFAULTS or _VOLUME_OF(prov) != volume \
            or type(prov["volume_offset"]) not in _INT_OR_NONE \
            or type(prov["inode"]) not in _INT_OR_NONE or r["is_dir"] or r["link_target"] \
            or r["fs_type"] != prov["fs_type"] or type(r["pieces"]) is not tuple:
        return None
    return (prov["inode"], prov["path"], r["name"], r["size"], r["allocated"], r["orphan"],
            r["mtime"], r["atime"], r["ctime"], r["crtime"], r["type"], r["ext_mismatch"],
            r["pieces"])


def pack(records, volume: Optional[tuple] = None) -> bytes:
    """The block of a batch of records and plain files (tuples of `volume`'s files; without
    `volume`, the first record's provenance names it). A batch without a plain file (carved
    content, whose records share their parents' provenances) is pickled whole."""
    items: list = []
    others: list = []               # where the records that are not plain go in `items`
    for rec in records:
        if type(rec) is not tuple:
            if volume is None and type(rec) is FileRecord and type(rec.prov) is Provenance:
                volume = _VOLUME_OF(rec.prov.__dict__)
            row = plain_row(rec, volume) if volume is not None else None
            if row is None:
                others.append(len(items))
            rec = row if row is not None else rec
        items.append(rec)
    if len(others) < len(items):
        for i in others:
            items[i] = pickle.dumps(items[i], protocol=pickle.HIGHEST_PROTOCOL)
        try:
            return b"S" + marshal.dumps((volume, items))
        except ValueError:      # a field holding what marshal cannot (no walk gives one today)
            pass
    recs = tuple(plain_record(volume, r) if type(r) is tuple else r for r in records)
    return b"P" + pickle.dumps(recs, protocol=pickle.HIGHEST_PROTOCOL)


def unpack(block: bytes) -> tuple[FileRecord, ...]:
    if block[:1] == b"P":
        return pickle.loads(block[1:])
    volume, items = plain_items(block)
    return tuple(plain_record(volume, it) if type(it) is tuple else it for it in items)


def plain_items(block: bytes) -> tuple[Optional[tuple], list]:
    """(volume, items) of an b"S" block: each plain file as its tuple, any other record made."""
    volume, items = marshal.loads(block[1:])
    return volume, [pickle.loads(it) if type(it) is bytes else it for it in items]


def packed_items(spec: "BatchSpec") -> Optional[tuple[Optional[tuple], list]]:
    """plain_items of a batch that crossed packed; None for one made here from its records, or
    pickled whole."""
    block = spec._packed
    if block is None or block[:1] != b"S":
        return None
    return plain_items(block)


def batch_counts(records, volume_length: int = 0) -> tuple[int, int, int]:
    """(files, bytes, videos) of a batch's records and plain files; bytes bounded by the
    volume."""
    nbytes = videos = 0
    for r in records:
        if type(r) is tuple:
            size, ctype = r[_P_SIZE], r[_P_TYPE]
        else:
            size, ctype = r.size, r.type
        nbytes += bounded(size, volume_length)
        if ctype in VIDEO_TYPES:
            videos += 1
    return len(records), nbytes, videos


@dataclass(frozen=True)
class TierTotals:
    files: int = 0
    bytes: int = 0
    batches: int = 0


@dataclass(frozen=True)
class VolumePlan:
    """What the walk found on one volume, sent before its batches (totals drive ETA and
    triage-mode bookkeeping)."""

    device_id: str
    volume_offset: int
    tiers: dict = field(default_factory=dict)        # tier -> TierTotals
    coverage: tuple[Coverage, ...] = ()              # walk problems (unreadable directories, ...)
    carved: bool = False                             # its free space was carved through
    # where the walk's deleted files start: carving the free space skips their content
    deleted_starts: frozenset = frozenset()
    listed_by: str = ""                              # which code listed the files (provenance)

    @property
    def files(self) -> int:
        return sum(t.files for t in self.tiers.values())

    @property
    def bytes(self) -> int:
        return sum(t.bytes for t in self.tiers.values())

    @property
    def batches(self) -> int:
        return sum(t.batches for t in self.tiers.values())


def batch_id(volume_offset: int, tier: int, seq: int, free_space: bool = False) -> str:
    """Deterministic, so --resume skips what an earlier run stored. A volume's free space is
    planned apart from its files (after the walk, see tasks.plan_device_volume), so its
    batches have ids of their own ("u")."""
    return f"v{volume_offset}-t{tier}-{'u' if free_space else ''}{seq:05d}"


def halves(batch: str, records: tuple) -> tuple[tuple[str, tuple], tuple[str, tuple]]:
    """A failed batch's two halves, (id, records) each: the scan splits a batch whose worker
    dies on both tries, or that runs over its time limit, down to the one file that kills its
    worker or hangs, and a resume cuts the parts it did not store the same way. Batch ids hold
    no other dots."""
    mid = len(records) // 2
    return (f"{batch}.a", records[:mid]), (f"{batch}.b", records[mid:])


def is_half(batch: str) -> bool:
    return "." in batch


def tier_of_batch(batch: str) -> int:
    """The tier encoded in a batch id."""
    return int(batch.split("-t", 1)[1].split("-", 1)[0])


# The first batches of the first tier are smaller, so the likeliest files report back (and
# raise their flags) within seconds, and every worker has work before the big batches come.
RAMP = (8, 4, 2)
HASH_LANES = 16            # files the multi-buffer kernel hashes side by side (features/_mbhash.c)


class _Cutter:
    """The batching rule, one record at a time, so the planner can count batches while it
    spools the walk and cut the same batches afterwards."""

    def __init__(self, max_files: int, max_bytes: int, ramp: tuple[int, ...] = ()):
        self._max = (max_files, max_bytes)
        self._ramp = ramp
        self.seq = 0
        self.files = 0
        self.size = 0
        self._caps = self._limits(0)

    def _limits(self, seq: int) -> tuple[int, int]:
        if seq < len(self._ramp):
            return max(1, self._max[0] // self._ramp[seq]), max(1, self._max[1] // self._ramp[seq])
        return self._max

    def add(self, size: int) -> bool:
        """Takes a record of `size` bytes; True when it starts a new batch (not the first)."""
        files, nbytes = self._caps
        new = bool(self.files) and (
            self.files >= files or self.size + size > nbytes
            # a whole number of hashing lanes once the batch is mostly full: 16 big files
            # and then 3 more cost two passes of the 16-lane kernel, 16 files one
            or (self.files % HASH_LANES == 0 and self.size >= nbytes * 3 // 4))
        if new:
            self.seq += 1
            self._caps = self._limits(self.seq)
            self.files, self.size = 0, 0
        self.files += 1
        self.size += size
        return new

    @property
    def batches(self) -> int:
        return self.seq + 1 if self.files else 0


def cut_batches(records: Iterable[FileRecord], max_files: int, max_bytes: int,
                ramp: tuple[int, ...] = (), volume_length: int = 0) -> Iterator[list[FileRecord]]:
    """Consecutive batches of at most `max_files` files and about `max_bytes` bytes (a file
    bigger than `max_bytes` gets a batch of its own); a batch at least 3/4 full is cut at a
    multiple of HASH_LANES files. Batch i < len(ramp) gets 1/ramp[i] of both limits."""
    cutter = _Cutter(max_files, max_bytes, ramp)
    batch: list[FileRecord] = []
    for rec in records:
        if cutter.add(bounded(rec.size, volume_length)):
            yield batch
            batch = []
        batch.append(rec)
    if batch:
        yield batch


def bounded(size: int, volume_length: int) -> int:
    return min(size, volume_length) if volume_length > 0 else size


def unlisted_bytes(volume_length: int, listed: int) -> int:
    """What a walk that stopped leaves not examined: the volume's bytes less those of the
    files it listed (bounded), for want of knowing what the unlisted files hold."""
    return max(0, volume_length - listed)


FIRST_TIER = 0


def plan_volume(records: Iterable[FileRecord], device_id: str, volume_offset: int, *,
                max_files: int = DEFAULT_BATCH_FILES, max_bytes: int = DEFAULT_BATCH_BYTES,
                other_max_files: Optional[int] = None,
                coverage: Iterable[Coverage] = (), spool_dir: Optional[str] = None,
                volume_length: int = 0,
                carved: Optional[list] = None,
                free_space: bool = False,
                deleted_starts: Optional[set] = None,
                plain: Optional[tuple] = None) -> Iterator[VolumePlan | BatchSpec]:
    """Yields every `BatchSpec` of the volume, most likely yield first, and one `VolumePlan`
    (the totals) as soon as the walk ends.

    The walk runs in a thread of its own and never waits for the consumer: it cuts each tier's
    files into batches (the same batches, with the same ids, that cutting after the walk
    gives) and spools each batch to its tier's temporary file as it is cut, so memory holds a
    batch or so per tier however many files the volume has. While the walk goes on, each
    batch handed out is the most likely one cut so far (the first tier's as soon as one is
    full), so the likeliest files are read while the rest of the volume is listed, and the
    workers are not idle through the walk of a volume whose files are all of later tiers
    (a million small files). After the walk come the totals, then every batch left, in tier
    order. Within a tier the walk's own order is kept, which is deterministic for an image.
    `carved` (a list the records' source fills) says the volume's free space was carved through;
    `free_space`: the records are what was carved there (batch ids of their own).
    `deleted_starts` (a set the walk fills) goes into the VolumePlan, for the carving after it.
    `other_max_files`: files per batch in the tiers after the picture pass (default
    `max_files` * OTHER_TIER_FACTOR).
    `plain`: the volume's fields (records.plain_common), when `records` may hold plain files
    as tuples (records.PLAIN_FIELDS) beside FileRecords.
    """
    tiers = range(len(TIER_NAMES))
    spools = {t: tempfile.TemporaryFile(dir=spool_dir, prefix="triage-plan-") for t in tiers}
    counts = {t: [0, 0] for t in tiers}                      # files, bytes
    other = other_max_files or max_files * OTHER_TIER_FACTOR
    cutters = {t: _Cutter(max_files if t in PICTURE_TIERS else other, max_bytes, _ramp(t))
               for t in tiers}
    cut = {t: 0 for t in tiers}          # batches spooled (by the walk)
    taken = {t: 0 for t in tiers}        # batches handed out (by the generator)
    where = {t: 0 for t in tiers}        # read offset in each spool
    state = threading.Condition()
    stop = threading.Event()
    failed: list[BaseException] = []
    walked: list[bool] = []

    def spool(tier: int, recs: list, publish: bool = True) -> None:
        # one block per batch, pickled once: read back, it goes to the worker as it is
        entry = pickle.dumps((batch_counts(recs, volume_length), pack(recs, plain)),
                             protocol=pickle.HIGHEST_PROTOCOL)
        fh = spools[tier]
        fh.write(len(entry).to_bytes(8, "little"))
        fh.write(entry)
        fh.flush()
        if publish:
            with state:
                cut[tier] += 1
                state.notify()

    def walk() -> None:
        pending: dict[int, list] = {t: [] for t in tiers}
        try:
            for rec in records:
                if stop.is_set():
                    return
                if type(rec) is tuple:          # a plain file: tier_of's, inline
                    t = _tier(rec[_P_PATH], rec[_P_NAME], rec[_P_TYPE], rec[_P_ALLOC],
                              rec[_P_ORPHAN])
                    size = rec[_P_SIZE]
                elif rec.is_dir:                # no content of its own
                    continue
                else:
                    t = tier_of(rec)
                    size = rec.size
                if 0 < volume_length < size:    # bounded()
                    size = volume_length
                counts[t][0] += 1
                counts[t][1] += size
                if cutters[t].add(size):
                    spool(t, pending[t])
                    pending[t] = []
                pending[t].append(rec)
            # the last batch of each tier is known only now: they follow the totals
            tails = [t for t, recs in pending.items() if recs]
            for t in tails:
                spool(t, pending[t], publish=False)
            with state:
                for t in tails:
                    cut[t] += 1
        except BaseException as exc:      # noqa: BLE001 - handed to the generator, raised there
            failed.append(exc)
        finally:
            with state:
                walked.append(True)
                state.notify()

    def take(tier: int) -> BatchSpec:
        fh = spools[tier].fileno()
        n = int.from_bytes(os.pread(fh, 8, where[tier]), "little")
        nums, block = pickle.loads(os.pread(fh, n, where[tier] + 8))
        where[tier] += 8 + n
        seq = taken[tier]
        taken[tier] += 1
        return BatchSpec.packed(device_id, batch_id(volume_offset, tier, seq, free_space),
                                volume_offset, tier, block, nums, volume_length)

    walker = threading.Thread(target=walk, name="triage-walk", daemon=True)
    walker.start()
    try:
        while True:             # during the walk: the most likely batch cut so far
            with state:
                while not walked and all(cut[t] == taken[t] for t in tiers):
                    state.wait()
                ready = [t for t in tiers if cut[t] > taken[t]]
                if walked:
                    break
            yield take(ready[0])
        walker.join()
        if failed:
            raise failed[0]
        # walk problems were collected while iterating `records` (the caller's list)
        yield VolumePlan(device_id=device_id, volume_offset=volume_offset,
                         tiers={t: TierTotals(c[0], c[1], cutters[t].batches)
                                for t, c in counts.items() if c[0]},
                         coverage=tuple(coverage), carved=bool(carved),
                         deleted_starts=frozenset(deleted_starts or ()))
        for t in tiers:
            while taken[t] < cut[t]:
                yield take(t)
    finally:
        stop.set()
        walker.join(timeout=5)
        for fh in spools.values():
            fh.close()


def _ramp(tier: int) -> tuple[int, ...]:
    return RAMP if tier == 0 else ()
