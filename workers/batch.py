"""What one worker does with one batch: read each file once, analyse it, match it.

No Ray here: `workers/tasks.py` wraps these functions in Ray tasks, and tests call them
directly. The layers below (evidence, file systems, features, hash sets) are reached through a
`Backend`, one small object that names the functions a scan uses, so orchestration can be
tested with fakes and the real stack is one import away.
"""
from __future__ import annotations

import contextlib
import marshal
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Optional

from triage.errors import TriageError
from triage.records import (FILE_NOT_READ, PLAIN_AT, PLAIN_FIELDS, SYMLINK, Coverage, Features,
                            FileRecord, Match, VolumeRef, plain_record)
from triage.store import PLAIN_ROW_AT
from workers.matching import match_items
from workers.plan import BATCH_PLAN, BatchSpec, packed_items

CHUNK_SIZE = 1024 * 1024
EVIDENCE_CACHE = 2          # open devices kept per worker process (an EWF handle holds caches)
# Files read together for one multi-buffer hashing pass: held in memory (or mapped) at once, so
# bounded; a bigger file streams through hashlib alone, never held whole.
GROUP_FILE_MAX = 16 * 1024 * 1024
GROUP_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ScanOptions:
    """Everything a worker needs to know about the scan; plain values, cheap to ship."""

    mode: str = "triage"                     # triage | full
    stop_after: int = 10                     # triage mode: exact alert matches before stopping
    pictures: bool = True                    # picture features (decode, PDQ, pHash, EXIF, thumbnail)
    archives: bool = True
    sha256: bool = False
    # hash-set stores to open in each worker: (root, set names); no names means every set
    hashsets: tuple[tuple[str, tuple[str, ...]], ...] = ()
    perceptual: bool = True
    batch_files: int = 256                   # per batch in the picture pass (see plan.OTHER_TIER_FACTOR)
    batch_bytes: int = 64 * 1024 * 1024
    batch_plan: int = BATCH_PLAN             # the batching rule (a resume must cut the same)
    chunk_size: int = CHUNK_SIZE
    task_timeout: float = 300.0              # seconds per batch, plus bytes / min_rate
    min_rate: float = 2 * 1024 * 1024        # bytes/s a batch may not fall below
    model: Optional[dict] = None             # {"name": ..., ...} when a model stage runs
    carve: bool = True                       # carve free and unpartitioned space for pictures
    carve_seconds: float = 0.0               # per volume; 0: no limit (what is left is a gap)
    # the video stage (needs pictures): sampled frames decoded, hashed, matched and scored;
    # `video_limits` and `vpdq` override fields of triage.videolimits.VideoLimits and
    # hashsets.vpdq.VpdqRule, as (name, value) pairs
    video: bool = True
    video_limits: tuple[tuple[str, Any], ...] = ()
    vpdq: tuple[tuple[str, Any], ...] = ()
    # where a video too large to decode from memory is spooled ("": $TRIAGE_HOME/spool on
    # each worker's machine; "off": such a video's frames stay a gap)
    video_spool: str = ""

    def timeout_for(self, nbytes: int, videos: int = 0) -> float:
        return self.task_timeout + nbytes / self.min_rate + videos * self.video_seconds

    @property
    def video_seconds(self) -> float:
        """The wall-clock limit one video may take."""
        from triage.videolimits import DEFAULT_LIMITS
        return float(dict(self.video_limits).get("seconds", DEFAULT_LIMITS.seconds)) \
            if self.video and self.pictures else 0.0

    def vpdq_rule(self):
        from hashsets.vpdq import VpdqRule
        return VpdqRule(**dict(self.vpdq))


@dataclass
class BatchResult:
    device_id: str
    batch_id: str
    tier: int
    items: list = field(default_factory=list)          # (FileRecord, Features), members included
    matches: list = field(default_factory=list)        # Match
    coverage: list = field(default_factory=list)       # Coverage
    ignored: int = 0                                   # files in ignore sets (known software)
    bytes_read: int = 0
    files: int = 0                                     # files of the batch (not members)
    seconds: float = 0.0
    model_inputs: list = field(default_factory=list)   # (key, preprocessed picture) for the model
    model_skips: list = field(default_factory=list)    # (key, why) of pictures the model skips
    # a video frame sent to the model: its key (Provenance.at_frame) -> (video key, frame
    # number, seconds), so the driver can make the frames' scores the video's
    frame_of: dict = field(default_factory=dict)
    rows: Optional[list] = None         # the files' store rows, once `for_driver` made them
    # plain files stored as rows without records (_scan_packed): (how many items came before
    # it, its row), in batch order; and each one's fields (records.PLAIN_FIELDS) of
    # `plain_volume`, in the same order, so `for_driver` can make the records of those a
    # match names (their digests, type and mismatch are in their rows)
    plain: list = field(default_factory=list)
    plain_fields: list = field(default_factory=list)
    plain_volume: Optional[tuple] = None
    picture_count: Optional[int] = None
    hash_engine: str = ""               # which code took MD5 and SHA-1 (hashing.hash_engine)

    @property
    def pictures(self) -> int:
        # a plain file (self.plain) is never a picture: pictures are looked into
        if self.picture_count is not None:
            return self.picture_count
        return sum(1 for _, f in self.items if f.is_picture)

    # The store rows cross to the driver marshalled, not pickled: a million small files' rows
    # cost the worker half and the driver a sixth less to turn into bytes and back (a row
    # holding a value marshal cannot take crosses pickled).
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if state["rows"]:
            try:
                state["rows"] = marshal.dumps(state["rows"])
            except ValueError:
                pass
        return state

    def __setstate__(self, state: dict) -> None:
        if type(state.get("rows")) is bytes:
            state["rows"] = marshal.loads(state["rows"])
        self.__dict__.update(state)

    @property
    def stored_files(self) -> int:
        """Files and members this batch stores."""
        return len(self.rows) if self.rows is not None else len(self.items) + len(self.plain)

    def for_driver(self) -> "BatchResult":
        """What crosses back to the driver: every file as a ready-made store row, in batch
        order, and records only for the files that a match or the model refers to (flags and
        the model need those). Unpickling 26k records cost the driver 0.45 s per large
        device; rows, 0.03 s."""
        from triage.features.core import hashed_analysis
        from triage.features.hashing import Digests
        from triage.store import file_rows
        needed = ({m.key for m in self.matches} | {k for k, _ in self.model_inputs}
                  | {v for v, _, _ in self.frame_of.values()})
        rows = file_rows(self.device_id, self.batch_id, self.items)
        if self.plain:
            merged, done = [], 0
            for before, row in self.plain:
                merged.extend(rows[done:before])
                merged.append(row)
                done = before
            rows = merged + rows[done:]
        items = [(r, f) for r, f in self.items if r.key in needed]
        if needed:
            for (_, row), plain in zip(self.plain, self.plain_fields):
                if row[_ROW_KEY] in needed:
                    made = hashed_analysis(plain_record(self.plain_volume, plain), plain[_SIZE],
                                           Digests(row[_ROW_MD5], row[_ROW_SHA1]),
                                           row[_ROW_TYPE], bool(row[_ROW_MISMATCH]))
                    items.append((made.record, made.features))
        return replace(self, rows=rows, picture_count=self.pictures, items=items, plain=[],
                       plain_fields=[])

    def plain_hashes(self) -> dict[str, tuple[list, list]]:
        """{algorithm: (keys, hex digests)} of the plain files, for match_items."""
        if not self.plain:
            return {}
        keys = [row[_ROW_KEY] for _, row in self.plain]
        return {"md5": (keys, [row[_ROW_MD5] for _, row in self.plain]),
                "sha1": (keys, [row[_ROW_SHA1] for _, row in self.plain])}


class Backend:
    """The functions of the layers below that a scan calls. Picklable (no state)."""

    def device_id_for(self, path: str) -> str:
        from triage.evidence import device_id_for
        return device_id_for(path)

    def open_evidence(self, paths: tuple[str, ...], device_id: str):
        from triage.evidence import open_evidence
        return open_evidence(list(paths), device_id=device_id)

    def discover(self, evidence, recovery_key=None, password=None):
        from triage.device import discover
        return discover(evidence, recovery_key=recovery_key, password=password)

    def walk(self, evidence, volume: VolumeRef, problems: Optional[list] = None,
             plain: bool = False) -> Iterator[FileRecord | tuple]:
        """Files of a volume; folders that cannot be read go to `problems` as coverage.
        `plain`: plain files may come as tuples (records.PLAIN_FIELDS)."""
        from triage.filesystems import walk
        return walk(evidence, volume, problems, plain)

    def listed_by(self, evidence, volume: VolumeRef) -> str:
        """Which code listed the volume's files (once its walk has ended); "" where no TSK
        walk did (APFS, extractions, folders, free space)."""
        from triage.filesystems import resolver
        return resolver(evidence).listed_by.get(volume.offset, "")

    def deleted_starts(self, evidence, volume: VolumeRef) -> set:
        """The set the walk of `volume` fills with its deleted files' first bytes (read once
        the walk has ended)."""
        from triage.filesystems import resolver
        return resolver(evidence).deleted_starts.setdefault(volume.offset, set())

    def carve(self, evidence, volume: VolumeRef, problems: list, done: list,
              seconds: float = 0.0, known: Optional[frozenset] = None) -> Iterator[FileRecord]:
        """Pictures and videos carved from a volume's free space (or the unpartitioned space,
        for the pseudo-volume at UNPARTITIONED_OFFSET); `done` gets True once carved through.
        `known`: the deleted files' first bytes the walk found (see deleted_starts)."""
        from triage.carve import carve_volume, outside_ranges
        from triage.records import UNPARTITIONED_OFFSET
        ranges = None
        if volume.offset == UNPARTITIONED_OFFSET:
            volumes, _ = self.discover(evidence)
            ranges = outside_ranges(evidence.ref.media_size, volumes)
        return carve_volume(evidence, volume, problems, done, ranges=ranges, seconds=seconds,
                            known=known)

    def read_chunks(self, evidence, prov, chunk_size: int) -> Iterator[bytes]:
        from triage.filesystems import read_chunks
        return read_chunks(evidence, prov, chunk_size)

    def read_record(self, evidence, rec: FileRecord, chunk_size: int) -> Iterator[bytes]:
        """A file's content: from the pieces the walk found, straight from the image (no TSK
        in the worker), or through `read_chunks`."""
        if rec.pieces:
            from triage.filesystems import read_pieces
            return read_pieces(evidence, rec.pieces, chunk_size)
        return self.read_chunks(evidence, rec.prov, chunk_size)

    def read_small(self, evidence, pieces_of: list) -> list:
        """(chunks, Digests) of each of a group's small files, given by their pieces (each
        file at most a chunk, so holding it costs what streaming it would), hashed in one pass
        on any hash engine; None for a file whose read failed."""
        if not pieces_of:
            return []
        from triage.filesystems import small_reader, small_views
        mapped = small_views(evidence, pieces_of)
        if None not in mapped:
            return _read_and_hash(None, mapped)
        read = small_reader(evidence)
        return _read_and_hash(read, [pieces if chunks is None else chunks
                                     for pieces, chunks in zip(pieces_of, mapped)],
                              [chunks is not None for chunks in mapped])

    def small_digests(self, evidence, pieces_of: list, sizes: list) -> Optional[list]:
        """(MD5 hex, SHA-1 hex, content type) of each of a group's small files, read straight
        from the mapped image in one C pass (hashing.hash_small); None for a file that pass
        cannot read. None for the whole group where the image is not mapped as one buffer or
        no checked kernel runs (read_small then reads them)."""
        from triage.features.hashing import hash_small
        from triage.filesystems import small_mapped
        whole = small_mapped(evidence)
        return None if whole is None else hash_small(whole, pieces_of, sizes)

    def small_views(self, evidence, pieces: list) -> Optional[list]:
        """A small file's content as views of the mapped image (None where not mapped)."""
        from triage.filesystems import small_views
        return small_views(evidence, [pieces])[0]

    def feature_options(self, opts: ScanOptions):
        from triage.features import FeatureOptions
        prep = None
        if opts.model and opts.pictures:
            # the model's own preprocessing, run here on the CPU workers while the picture is
            # decoded anyway, so the model actors only run the network
            from functools import partial

            from models.registry import resolve
            from models.runner import prepare
            prep = partial(prepare, resolve(opts.model.get("spec") or opts.model["name"]),
                           first_stage=opts.model.get("first_stage") != "off")
        video = spool = None
        if opts.video and opts.pictures:
            from triage.features.video import VideoSpool
            from triage.videolimits import VideoLimits
            video = VideoLimits(**dict(opts.video_limits))
            if opts.video_spool != "off":
                spool = VideoSpool(opts.video_spool or None)
        return FeatureOptions(sha256=opts.sha256, pictures=opts.pictures,
                              thumbnails=opts.pictures, archives=opts.archives, model_prep=prep,
                              video=video, video_spool=spool)

    def read_group(self, evidence, records: list, chunk_size: int) -> list:
        """(chunks, Digests) for each file of a group, MD5 and SHA-1 taken for many files in
        one pass; None for a file whose read failed (the file-by-file path reads it again and
        says why). All None on hashlib alone: streaming then costs the same and holds less."""
        from triage.features.hashing import hash_engine
        if hash_engine() == "hashlib":
            return [None] * len(records)
        return _read_and_hash(lambda rec: list(self.read_record(evidence, rec, chunk_size)),
                              records)

    def analyse(self, record: FileRecord, chunks, feature_options, known=None):
        """`known`: the content's Digests (MD5, SHA-1) when `read_group` took them."""
        # from the module, not the package: a package's `from` import runs importlib's
        # _handle_fromlist in Python, for every file
        from triage.features.core import analyse
        return analyse(record, chunks, feature_options, known=known)

    def open_hashsets(self, root: str, names: tuple[str, ...] = ()):
        from hashsets.store import HashSetStore
        return HashSetStore(root, names or None)

    def hash_engine(self) -> str:
        from triage.features.hashing import hash_engine
        return hash_engine()

    def warm(self) -> None:
        """Imports what a batch needs, so a worker's first batch does not pay for it."""
        import hashsets.store  # noqa: F401
        import triage.features  # noqa: F401
        import triage.filesystems  # noqa: F401

    def media_hashes(self, evidence) -> dict:
        """md5 and sha1 of the whole media, read sequentially (for --verify)."""
        from triage.evidence import media_hashes
        return media_hashes(evidence)


def _read_and_hash(read, items, already: Optional[list] = None) -> list:
    """(chunks, Digests) of each item's content (`read(item)`, a list of chunks), MD5 and
    SHA-1 taken for all in one `hash_many` pass; None for an item whose read failed. `read`
    None: every item is its chunks already; `already[i]`: item i is."""
    from triage.features.hashing import hash_many
    if read is None:
        contents: list = items
    else:
        contents = []
        for i, item in enumerate(items):
            if already is not None and already[i]:
                contents.append(item)
                continue
            try:
                contents.append(read(item))
            except (TriageError, OSError, IOError, ValueError, MemoryError):
                contents.append(None)
    digests = iter(hash_many([c for c in contents if c is not None]))
    return [None if c is None else (c, next(digests)) for c in contents]


class WorkerContext:
    """Per-process state of a worker: open evidence (a small LRU) and hash-set stores.

    Made once per worker process and reused by every task that process runs, so a device's
    E01 handle and a hash set's mmap are opened once per process, not once per batch.
    """

    def __init__(self, backend: Backend):
        self.backend = backend
        self._evidence: OrderedDict[tuple, Any] = OrderedDict()
        self._hashsets: dict[tuple, Any] = {}
        self._feature_options: dict[str, Any] = {}

    def evidence(self, paths: tuple[str, ...], device_id: str, keys: tuple = ()):
        """The open device; `keys` (recovery key, password) unlock its BitLocker volumes."""
        key = (tuple(paths), device_id)
        if key in self._evidence:
            self._evidence.move_to_end(key)
            ev = self._evidence[key]
        else:
            ev = self._evidence[key] = self.backend.open_evidence(tuple(paths), device_id)
            while len(self._evidence) > EVIDENCE_CACHE:
                _, old = self._evidence.popitem(last=False)
                close = getattr(old, "close", None)
                if close:
                    close()
        if any(keys):
            from triage.filesystems import resolver
            resolver(ev).secrets = tuple(keys)
        return ev

    def hashsets(self, wanted: tuple[tuple[str, tuple[str, ...]], ...]) -> list:
        stores = []
        for root, names in wanted:
            key = (root, tuple(names))
            if key not in self._hashsets:
                self._hashsets[key] = self.backend.open_hashsets(root, tuple(names))
            stores.append(self._hashsets[key])
        return stores

    def feature_options(self, opts: ScanOptions):
        key = repr(opts)          # ScanOptions holds a dict (the model), so it is not hashable
        if key not in self._feature_options:
            self._feature_options[key] = self.backend.feature_options(opts)
        return self._feature_options[key]

    def close(self) -> None:
        for ev in self._evidence.values():
            close = getattr(ev, "close", None)
            if close:
                close()
        self._evidence.clear()


def flatten(analysis) -> Iterator[tuple[FileRecord, Features, list, Any]]:
    """(record, features, coverage, model input) of a file and of every archive member in it."""
    yield (analysis.record, analysis.features, list(getattr(analysis, "coverage", ()) or ()),
           getattr(analysis, "model_input", None))
    for member in getattr(analysis, "members", ()) or ():
        if hasattr(member, "features"):
            yield from flatten(member)
        else:                                   # a plain (record, features) pair
            rec, feat = member
            yield rec, feat, [], None


def _error_features(rec: FileRecord, reason: str) -> Features:
    return Features(key=rec.key, size=rec.size, type=rec.type, ext_mismatch=rec.ext_mismatch,
                    error=reason)


def scan_batch(ctx: WorkerContext, paths: tuple[str, ...], spec: BatchSpec,
               opts: ScanOptions, keys: tuple = ()) -> BatchResult:
    """Reads, analyses and matches every file of `spec`. A file that cannot be read becomes a
    coverage record and the batch goes on; only a failure to open the device fails the batch."""
    t0 = time.monotonic()
    backend = ctx.backend
    evidence = ctx.evidence(paths, spec.device_id, keys)
    fopts = ctx.feature_options(opts)
    result = BatchResult(device_id=spec.device_id, batch_id=spec.batch_id, tier=spec.tier,
                         files=spec.files, hash_engine=backend.hash_engine())
    model_inputs: dict[str, Any] = {}
    packed = packed_items(spec)
    if packed is not None:
        _scan_packed(backend, evidence, spec.batch_id, *packed, fopts, opts, result,
                     model_inputs)
    else:
        for group in _groups(spec.records):
            _scan_group(backend, evidence, group, fopts, opts, result, model_inputs)
    damage = getattr(evidence, "damage", None)
    if damage is not None:          # E01 chunks failing their checksum, met by these reads
        result.coverage.extend(damage())
    if opts.hashsets:
        matches, ignored = match_items(ctx.hashsets(opts.hashsets), result.items,
                                       perceptual=opts.perceptual, vpdq_rule=opts.vpdq_rule(),
                                       hashed=result.plain_hashes())
        result.matches = matches
        result.ignored = len(ignored)
    if opts.model and opts.pictures:
        result.model_inputs, result.model_skips, result.frame_of = _model_queue(result,
                                                                                model_inputs)
    result.seconds = time.monotonic() - t0
    return result


def _scan_group(backend: Backend, evidence, group: list[FileRecord], fopts, opts: ScanOptions,
                result: BatchResult, model_inputs: dict, pre: Optional[list] = None) -> None:
    """A group's files in order, their content read and hashed together first (`pre`: what
    the caller already read, None for each file still to read)."""
    with _held(evidence):
        if pre is None:
            pre = backend.read_group(evidence, group, opts.chunk_size) if len(group) > 1 \
                else [None]
        for i, rec in enumerate(group):
            got, pre[i] = pre[i], None        # each file's bytes go once it is done
            _scan_file(backend, evidence, rec, got, fopts, opts, result, model_inputs)


# a plain file's store row's columns (store.plain_file_row), and its fields as the planner
# packs it (records.PLAIN_FIELDS)
_ROW_KEY, _ROW_TYPE, _ROW_MISMATCH, _ROW_MD5, _ROW_SHA1 = (
    PLAIN_ROW_AT[n] for n in ("key", "type", "ext_mismatch", "md5", "sha1"))
_INODE, _PATH, _NAME, _SIZE, _ALLOC, _ORPHAN, _MTIME, _ATIME, _CTIME, _CRTIME, _TYPE, _MISMATCH, \
    _PIECES = (PLAIN_AT[n] for n in PLAIN_FIELDS)


def _size_of(item) -> int:
    return item[_SIZE] if type(item) is tuple else item.size


def _scan_packed(backend: Backend, evidence, batch_id: str, volume: Optional[tuple],
                 items: list, fopts, opts: ScanOptions, result: BatchResult,
                 model_inputs: dict) -> None:
    """A batch that crossed packed (workers.plan.packed_items): plain files as tuples of their
    fields (records.PLAIN_FIELDS) of `volume`, other files as records. A small plain file
    whose type needs nothing but its hashes (features.core.hashes_only), which is most files
    of a large device, becomes its store row straight from its fields: no records are made
    for it unless a match needs them (BatchResult.plain). Every other file is made a record
    and scanned as any batch's, in the same order, so both ways store the same rows
    (tests/test_small_files.py)."""
    from triage.features.core import hashes_only, typed_only
    from triage.features.hashing import Digests, head_of
    from triage.records import file_keys, plain_record
    from triage.store import plain_file_row
    if volume is not None:
        device_id, offset, index, fs_type = volume
        key_of = file_keys(device_id, offset)
    result.plain_volume = volume
    plain, plain_fields, made = result.plain, result.plain_fields, result.items
    nbytes = 0
    for group in _groups(items, _size_of):
        small = [i for i, it in enumerate(group)
                 if type(it) is tuple and 0 < it[_SIZE] <= opts.chunk_size and it[_PIECES]
                 and it[_TYPE] != SYMLINK]
        rest = {}                           # the others, as records
        if len(small) < len(group):
            chosen = set(small)
            rest = {i: plain_record(volume, it) if type(it) is tuple else it
                    for i, it in enumerate(group) if i not in chosen}
        with _held(evidence):
            pre: list = [None] * len(group)
            # most small files: hashed and sniffed in one C pass over the mapped image
            quick = backend.small_digests(evidence, [group[i][_PIECES] for i in small],
                                          [group[i][_SIZE] for i in small]) if small else None
            if quick is not None:
                quick = dict(zip(small, quick))
            else:
                for i, got in zip(small, backend.read_small(evidence, [group[i][_PIECES]
                                                                       for i in small])):
                    pre[i] = got
            if len(rest) > 1:       # the others, as any batch's group (hashed together)
                for i, got in zip(rest, backend.read_group(evidence, list(rest.values()),
                                                           opts.chunk_size)):
                    pre[i] = got
            for i, it in enumerate(group):
                got, pre[i] = pre[i], None
                typed = None
                if quick is not None and i in quick:
                    q = quick[i]             # (md5, sha1, type), or None: not read here
                    if q is not None:
                        md5, sha1 = q[0], q[1]
                        typed = typed_only(it[_NAME], it[_SIZE], q[2], fopts)
                        if typed is None:    # looked into: its content, its hashes known
                            chunks = backend.small_views(evidence, it[_PIECES])
                            got = None if chunks is None else (chunks, Digests(md5, sha1))
                elif got is not None and i not in rest:
                    chunks, known = got
                    md5, sha1 = known.md5, known.sha1
                    typed = hashes_only(it[_NAME], it[_SIZE], head_of(chunks), fopts) \
                        if sum(map(len, chunks)) == it[_SIZE] else None
                if typed is not None:
                    size = it[_SIZE]
                    plain.append((len(made), plain_file_row(
                        key_of(it[_INODE], it[_PATH]), batch_id, device_id, offset, index,
                        it[_INODE], it[_PATH], it[_NAME], size, it[_ALLOC], fs_type, False,
                        it[_ORPHAN], it[_MTIME], it[_ATIME], it[_CTIME], it[_CRTIME],
                        typed[0], typed[1], md5, sha1)))
                    plain_fields.append(it)
                    nbytes += size
                    continue
                _scan_file(backend, evidence, rest[i] if i in rest else plain_record(volume, it),
                           got, fopts, opts, result, model_inputs)
    result.bytes_read += nbytes


def _groups(items, size_of=lambda rec: rec.size) -> Iterator[list]:
    """Consecutive files read together, in batch order: small ones up to GROUP_BYTES, each
    big one alone."""
    group: list = []
    size = 0
    for item in items:
        n = size_of(item)
        if n > GROUP_FILE_MAX:
            if group:
                yield group
                group, size = [], 0
            yield [item]
            continue
        if group and size + n > GROUP_BYTES:
            yield group
            group, size = [], 0
        group.append(item)
        size += n
    if group:
        yield group


def _held(evidence):
    held = getattr(evidence, "held", None)
    return held() if held is not None else contextlib.nullcontext()


def _scan_file(backend: Backend, evidence, rec: FileRecord, got: Optional[tuple], fopts,
               opts: ScanOptions, result: BatchResult, model_inputs: dict) -> None:
    """One file: its content (already read, with its hashes, or read now), analysed into
    `result`; a read error becomes a coverage record. A symbolic link is listed with its
    target and never followed: it has no content of its own, so it is no read error."""
    if rec.type == SYMLINK:
        result.items.append((rec, Features(key=rec.key, size=0, type=rec.type)))
        return
    try:
        if got is not None:
            chunks, known = got
            # the list itself: a file read whole lets analyse skip a second pass
            analysis = backend.analyse(rec, chunks, fopts, known=known)
        else:
            analysis = backend.analyse(rec, backend.read_record(evidence, rec, opts.chunk_size),
                                       fopts)
    except (TriageError, OSError, IOError, ValueError, MemoryError) as exc:
        reason = f"read error: {exc}".splitlines()[0][:300]
        result.items.append((rec, _error_features(rec, reason)))
        result.coverage.append(Coverage(device_id=result.device_id, kind=FILE_NOT_READ,
                                        where=rec.prov, reason=reason, bytes_not_examined=rec.size,
                                        bytes_expected=rec.size, bytes_read=0))
        return
    result.bytes_read += rec.size
    for r, f, cov, model_input in flatten(analysis):
        result.items.append((r, f))
        result.coverage.extend(cov)
        if model_input is not None:
            model_inputs[r.key] = model_input


def _model_queue(result: BatchResult, inputs: dict[str, Any]) -> tuple[list, list, dict]:
    """(queue, skips, frames): the pictures and video frames the model should see, why each
    other picture or video does not (exact alert match, known software, icon, too small, flat
    graphic, not decoded), so the case can say what the model never saw, and the video of
    each frame queued (BatchResult.frame_of)."""
    from models.runner import should_skip
    by_key: dict[str, list[Match]] = {}
    for m in result.matches:
        by_key.setdefault(m.key, []).append(m)
    queue, skips = [], []
    frame_of: dict[str, tuple] = {}
    for rec, feat in result.items:
        given = inputs.get(rec.key)
        if isinstance(given, list):           # a video: its sampled frames
            _queue_frames(rec, feat, given, by_key.get(rec.key, []), queue, skips, frame_of)
            continue
        if not feat.is_picture and given is None:
            continue
        why = should_skip(feat, by_key.get(rec.key, []))     # matches: alert, known software
        if why is None and isinstance(given, str):
            why = given                        # the workers' graphic test
        if why is None and given is None:
            why = "no model input: " + (feat.error or "not decoded")
        if why:
            skips.append((rec.key, why))
        else:
            queue.append((rec.key, given))
    return queue, skips, frame_of


def _queue_frames(rec: FileRecord, feat: Features, frames: list, matches: list, queue: list,
                  skips: list, frame_of: dict) -> None:
    """A video's frames for the model, each keyed by its own provenance (the video's plus the
    frame); the video is skipped whole when an exact match already says what it is, and is
    a skip when no frame is left (every one a flat graphic)."""
    for m in matches:
        if m.kind == "exact" and m.role in ("alert", "ignore"):
            why = "exact alert match" if m.role == "alert" else "known software"
            skips.append((rec.key, f"{why} ({m.set_name})"))
            return
    sent = 0
    for vf, given in frames:
        if isinstance(given, str) or given is None:
            continue
        key = rec.prov.at_frame(vf.number, vf.seconds).key
        frame_of[key] = (rec.key, vf.number, vf.seconds)
        queue.append((key, given))
        sent += 1
    if not sent:
        skips.append((rec.key, "no video frame for the model: "
                      + next((g for _, g in frames if isinstance(g, str)), "none decoded")))
