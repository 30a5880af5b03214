"""The small typed records that pass between stages.

Data flows one way: Evidence -> Volume -> FileRecord -> Features -> Match/Score -> Flag ->
DeviceVerdict. Every record is a frozen dataclass made of plain values, so it pickles cheaply
into Ray and serialises to JSON with `to_dict`.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Optional

from triage import __version__ as TOOL_VERSION  # noqa: F401  (re-exported for provenance)

# Provenance.key's fast path: json.dumps' own encoder of a str (ensure_ascii=False), and
# the number types it writes as repr() does (bool is no such type: json writes "true")
_json_str = json.encoder.encode_basestring
_PLAIN_NUMBER = (int, type(None))


def _json_num(value: Optional[int]) -> str:
    return "null" if value is None else int.__repr__(value)


def file_key(device_id: str, volume_offset: Optional[int], inode: Optional[int], path: str) -> str:
    """Provenance.key of a file named by these four fields alone (no stream, member, snapshot
    or parent; the offset and inode ints or None): the JSON text json.dumps gives, written by
    its own string encoder without building a list (file_keys writes the same key for the
    workers' plain files, its first half once a volume)."""
    return file_keys(device_id, volume_offset)(inode, path)


def file_keys(device_id: str, volume_offset: Optional[int]):
    """file_key for the files of one volume, as a function of (inode, path): the device and
    offset are written once (a worker keys a million small files with it)."""
    head = f"[{_json_str(device_id)},{_json_num(volume_offset)},"

    def key(inode: Optional[int], path: str) -> str:
        return f"{head}{_json_num(inode)},{_json_str(path)}]"
    return key


def device_keys(device_id: str) -> tuple[str, str]:
    """The range [low, high) that holds every key of a device and no other device's. A key
    is the JSON of a list whose first item is the device id (Provenance.key), so a device's
    keys all begin `["<id>",`, and a key in the range must: after the id's closing quote
    comes "," (0x2c) and the range ends at "-" (0x2d). The store finds a device's files by
    this range on its key index instead of keeping a second index of (device, key), which
    cost every insert of a million small files 1.6 us."""
    low = f"[{_json_str(device_id)},"
    return low, low[:-1] + "-"


class _computed_once:
    """functools.cached_property without its lock: Python 3.11's takes an RLock on every first
    access, a third of the cost of a million small files' keys in the workers. A record is
    immutable, so two threads that both compute the value store the same one."""

    def __init__(self, func):
        self.func = func
        self.name = func.__name__
        self.__doc__ = func.__doc__

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        # stored under its own name: later reads find it in the instance and skip this
        value = obj.__dict__[self.name] = self.func(obj)
        return value


MEMBER_SEP = "!/"            # display only: "outer.zip" + "!/" + "inner.zip" + "!/" + "a.jpg"


def to_dict(record: Any) -> dict:
    """A JSON-ready dict of a record (nested records included)."""
    return dataclasses.asdict(record)


@dataclass(frozen=True)
class EvidenceRef:
    """One seized device as the tool saw it: all its segments form one device."""

    device_id: str                 # stable id: the first segment's file name, made unique by the caller
    paths: tuple[str, ...]         # every segment, in order
    format: str                    # raw, split_raw, ewf, vhdi, vmdk, qcow, directory
    media_size: int
    stored_hashes: dict = field(default_factory=dict)   # e.g. {"md5": "...", "sha1": "..."} from E01


@dataclass(frozen=True)
class VolumeRef:
    """A partition or a bare file system. `fs_type` is None when it could not be examined."""

    device_id: str
    index: int                     # position in the volume system (0 for a bare file system)
    offset: int                    # bytes from the start of the media
    length: int
    description: str
    fs_type: Optional[str] = None  # ntfs, fat32, ext4, ... as TSK names it
    label: str = ""
    block_size: int = 0
    encryption: Optional[str] = None   # "BitLocker", "LUKS" when detected
    unallocated: int = -1          # bytes the file system's allocation map marks free (-1: unknown)

    @property
    def name(self) -> str:
        """ "volume 6 (BitLocker, 16 MiB at 44,040,192)": the one way a volume is named."""
        from triage.units import volume_name
        return volume_name(self.index, self.encryption or self.fs_type or "", self.length,
                           self.offset)

    @property
    def where(self) -> "Provenance":
        if self.offset == UNPARTITIONED_OFFSET:
            return device_where(self.device_id)
        return volume_where(self.device_id, self.offset, self.index, self.fs_type or "")


# The space of a disk outside every volume, as the scan plans it (it is carved like a volume's
# free space, but belongs to the device): a VolumeRef with this offset, never stored as a volume.
UNPARTITIONED_OFFSET = -1
UNALLOCATED_DIR = "$Unallocated"
UNPARTITIONED_DIR = "$Unpartitioned"


@dataclass(frozen=True)
class Provenance:
    """How to reach the same bytes again: The Sleuth Kit's layers as a dfvfs-style path spec.

    evidence (`device_id`) -> volume (`volume_index`, `volume_offset`, `snapshot`) -> file
    system (`fs_type`) -> metadata (`inode`, NTFS attribute `attr_type`/`attr_id`, stream name
    `ads`) -> name (`path`) -> archive members (`members`, outermost first). Content found
    inside other content (a carved picture in unallocated space, a picture inside a PDF) has a
    `parent` and the byte range (`offset`, `length`) it came from.

    A provenance with no inode and no path names a whole volume (or, with `volume_offset`
    None, the whole device). A volume inside a volume system inside a partition (an APFS
    volume, an LVM logical volume) has the offset volumes.nested_offset gives; `snapshot`
    names a volume shadow copy (`vss1:{GUID}`). In a phone extraction (triage/extractions.py)
    `path` is the device path and `inode` locates the member in the archive. `icat -o {volume_offset // 512} IMAGE {inode}` gives a file's
    content (`inode-128-{attr_id}` for a stream). Nothing here is ever parsed back out of a
    string: `key` is an opaque id, `display()` is for people.
    """

    device_id: str
    volume_offset: Optional[int] = 0
    inode: Optional[int] = None
    path: str = ""
    ads: str = ""                  # NTFS alternate data stream name
    attr_type: int = 0             # TSK attribute type of the stream read (0 = default)
    attr_id: int = 0
    members: tuple[str, ...] = ()  # archive member chain: ("a.zip", "inner/b.jpg") etc.
    volume_index: Optional[int] = None
    snapshot: str = ""             # a volume shadow copy or APFS snapshot, when not the live one
    fs_type: str = ""
    parent: Optional["Provenance"] = None   # content found inside other content
    offset: int = 0                # byte offset in the parent (or volume, for unallocated space)
    length: int = 0
    decoded: str = ""              # the filter that turns that range into this content
                                   # (a PDF's FlateDecode); "" when the range is the content
    # the entry of a cache that kept this content: a Windows thumbcache entry's cache-entry
    # hash (16 hex digits) and identifier string as stored (from evidence: escape on output)
    cache_entry_hash: str = ""
    cache_entry_id: str = ""
    # one frame of a video: its decode order number and presentation time (seconds); -1 and
    # None on everything that is not a frame. A frame is its video's provenance plus these.
    frame: int = -1
    frame_time: Optional[float] = None

    @_computed_once
    def key(self) -> str:
        """A stable id, unique within a case; never split apart (use the fields)."""
        if type(self.volume_offset) in _PLAIN_NUMBER and type(self.inode) in _PLAIN_NUMBER \
                and not self._has_extra():
            # a file's key, the common case (a million per device)
            return file_key(self.device_id, self.volume_offset, self.inode, self.path)
        return json.dumps(self._key_parts(), separators=(",", ":"), ensure_ascii=False)

    def _has_extra(self) -> bool:
        """Whether the key holds more than device, volume offset, inode and path."""
        return bool(self.ads or self.attr_type or self.members or self.snapshot
                    or self.parent is not None or self.length or self.decoded
                    or self.frame >= 0)

    def _key_parts(self) -> list:
        parts: list = [self.device_id, self.volume_offset, self.inode, self.path]
        extra = {k: v for k, v in (("ads", self.ads), ("attr", [self.attr_type, self.attr_id]
                                                          if self.attr_type else None),
                                   ("members", list(self.members)), ("snapshot", self.snapshot),
                                   ("range", [self.offset, self.length]
                                    if self.parent or self.length else None),
                                   ("decoded", self.decoded),
                                   ("cache_entry", [self.cache_entry_hash, self.cache_entry_id]
                                    if self.cache_entry_hash or self.cache_entry_id else None))
                 if v}
        if self.parent is not None:
            extra["parent"] = self.parent._key_parts()
        if self.frame >= 0:
            extra["frame"] = [self.frame, self.frame_time]
        if extra:
            parts.append(extra)
        return parts

    @property
    def carved(self) -> bool:
        """Carved from a volume's free space or the disk's unpartitioned space: a byte range
        of the volume (or the media) that no file system names."""
        return self.parent is not None and self.inode is None and self.parent.scope in (
            "volume", "device")

    @property
    def member(self) -> str:
        """The member chain for people, `a.zip!/b/c.jpg` (display only; use `members`)."""
        return MEMBER_SEP.join(self.members)

    @property
    def scope(self) -> str:
        """device, volume, range (bytes of either), file, member, or embedded (content with a
        parent: carved from free space, or found inside another file)."""
        if self.parent is not None:
            return "embedded"
        if self.members:
            return "member"
        if self.path or self.inode is not None:
            return "file"
        if self.length:
            return "range"
        return "volume" if self.volume_offset is not None else "device"

    def display(self, member: bool = True) -> str:
        """Where this is, for people: the path with its NTFS stream (`file:stream`, once) and,
        when asked, its archive member (`archive.zip!/member`); a volume or the device by name.
        A frame is its video's place and ` @ 0:01:23.400 (frame 12)`."""
        if self.frame >= 0:
            video = dataclasses.replace(self, frame=-1, frame_time=None).display(member)
            return f"{video} @ {frame_clock(self.frame_time)} (frame {self.frame})"
        if self.parent is not None:             # its own name ($Unallocated/...), or where in
            where = self.path or (f"{self.parent.display(member)} bytes {self.offset}-"  # the parent
                                  f"{self.offset + self.length - 1}")
            if self.cache_entry_hash or self.cache_entry_id:
                where += (f" (cache entry {self.cache_entry_hash or '-'}, identifier "
                          f"{self.cache_entry_id or '-'})")
            return where
        if not self.path and self.inode is None:
            if self.length:                     # a byte range of the media or a volume
                where = (f"device {self.device_id}" if self.volume_offset is None
                         else f"volume at {self.volume_offset}")
                return f"{where} bytes {self.offset}-{self.offset + self.length - 1}"
            if self.volume_offset is None:
                return f"device {self.device_id}"
            idx = f" {self.volume_index}" if self.volume_index is not None else ""
            return f"volume{idx} at {self.volume_offset:,}"
        path = self.path or f"inode {self.inode}"
        if self.ads and not path.endswith(":" + self.ads):
            path += ":" + self.ads
        return path + (MEMBER_SEP[0] + self.member if member and self.members else "")

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["members"] = list(self.members)
        d["parent"] = self.parent.to_dict() if self.parent is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Provenance":
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw["members"] = tuple(kw.get("members") or ())
        if kw.get("parent") is not None:
            kw["parent"] = cls.from_dict(kw["parent"])
        return cls(**kw)

    def at_frame(self, number: int, seconds: Optional[float]) -> "Provenance":
        """The provenance of one frame of the video this names."""
        return dataclasses.replace(self, frame=int(number), frame_time=seconds)

    @property
    def video(self) -> "Provenance":
        """The video a frame belongs to (itself when this is no frame)."""
        return self if self.frame < 0 else dataclasses.replace(self, frame=-1, frame_time=None)

    def member_of(self, name: str) -> "Provenance":
        """The provenance of member `name` of the archive this names."""
        return dataclasses.replace(self, members=self.members + (name,))


def frame_clock(seconds: Optional[float]) -> str:
    """A frame time for people: `0:01:23.400` ("?" when unknown)."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    ms = int(round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    return f"{h}:{m:02d}:{rest // 1000:02d}.{rest % 1000:03d}"


def frame_list(frames, most: int = 6) -> str:
    """Frame times for people, from ((number, seconds, ...), ...): `0:00:03.000, 0:00:04.000
    and 3 more`."""
    times = [frame_clock(f[1]) for f in frames]
    shown = ", ".join(times[:most])
    return shown + (f" and {len(times) - most} more" if len(times) > most else "")


def device_where(device_id: str) -> Provenance:
    """The provenance of a whole device (coverage of the device, not of one volume)."""
    return Provenance(device_id=device_id, volume_offset=None)


def volume_where(device_id: str, offset: int, index: Optional[int] = None,
                 fs_type: str = "") -> Provenance:
    """The provenance of a whole volume."""
    return Provenance(device_id=device_id, volume_offset=offset, volume_index=index,
                      fs_type=fs_type)


@dataclass(frozen=True)
class FileRecord:
    prov: Provenance
    name: str
    size: int
    allocated: bool
    fs_type: str
    is_dir: bool = False
    orphan: bool = False
    mtime: Optional[float] = None  # POSIX seconds, UTC
    atime: Optional[float] = None
    ctime: Optional[float] = None
    crtime: Optional[float] = None
    type: str = ""                 # content type from magic bytes, e.g. "image/jpeg"
    ext_mismatch: bool = False
    link_target: str = ""          # a symbolic link's target (type SYMLINK): never followed
    # Where the content lies, as (image offset, length) pieces in order, when the walk found it
    # can be read straight from the image (filesystems.file_pieces); () otherwise. A hint for
    # the reader, so a worker need not open the file through TSK again: not part of what the
    # record says (not compared, not stored), and `prov` still reaches the bytes alone.
    pieces: tuple = field(default=(), compare=False, repr=False)

    @property
    def path(self) -> str:
        return self.prov.path

    @property
    def key(self) -> str:
        return self.prov.key


def built(cls, **values):
    """A record (Provenance, FileRecord, Features, an Analysis) from its fields' values (the
    rest take their defaults), without the dataclass __init__: a frozen class sets each of its
    fields through object.__setattr__, which cost the walk of a million small files 3 us a
    file. Callers name every field literally (tests/test_small_files.py makes the walk's
    records both ways and compares them), so no check is paid per record."""
    defaults = _DEFAULTS.get(cls)
    if defaults is None:
        # a dataclass whose __init__ only stores its fields: no __post_init__, no factories
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)) or \
                hasattr(cls, "__post_init__") or \
                any(f.default_factory is not dataclasses.MISSING for f in dataclasses.fields(cls)):
            raise TypeError(f"built() does not make {getattr(cls, '__name__', cls)!r}")
        defaults = _DEFAULTS[cls] = {f.name: f.default for f in dataclasses.fields(cls)
                                     if f.default is not dataclasses.MISSING}
    obj = object.__new__(cls)
    state = obj.__dict__
    state.update(defaults)
    state.update(values)
    return obj


_DEFAULTS: dict = {}


# A plain file as one tuple of these fields, in this order: a file of a volume's live file
# system (no stream, member, snapshot or parent), with metadata, not a folder, its content
# read straight from the image by its pieces. Its volume's fields (`plain_common`) are
# shared by every such file of the volume. The walk gives plain files in this form to the
# scan's planner, and they cross to the workers so: a Provenance and a FileRecord made for
# each name, then taken apart again to cross, were half the planner's time on a million small
# files. `plain_record` makes the FileRecord the walk would have given.
PLAIN_FIELDS = ("inode", "path", "name", "size", "allocated", "orphan", "mtime", "atime",
                "ctime", "crtime", "type", "ext_mismatch", "pieces")
PLAIN_AT = {name: i for i, name in enumerate(PLAIN_FIELDS)}


def plain_common(volume: "VolumeRef") -> tuple:
    """(device id, volume offset, volume index, file-system type): what a volume's plain
    files share."""
    return (volume.device_id, volume.offset, volume.index, volume.fs_type or "")


def plain_record(volume: tuple, row: tuple) -> FileRecord:
    """The FileRecord of a plain file (PLAIN_FIELDS) of a volume (`plain_common`)."""
    device_id, offset, index, fs_type = volume
    inode, path, name, size, allocated, orphan, mtime, atime, ctime, crtime, ctype, \
        mismatch, pieces = row
    prov = built(Provenance, device_id=device_id, volume_offset=offset, inode=inode, path=path,
                 volume_index=index, fs_type=fs_type)
    return built(FileRecord, prov=prov, name=name, size=size, allocated=allocated,
                 fs_type=fs_type, orphan=orphan, mtime=mtime, atime=atime, ctime=ctime,
                 crtime=crtime, type=ctype, ext_mismatch=mismatch, pieces=pieces)


SYMLINK = "inode/symlink"          # FileRecord.type of a symbolic link: listed, no content


# Coverage kinds: every way a part of a device can go unexamined. Decided here, once; the
# rank, flags, `show`, `files` and the exports all word and count gaps by these.
ENCRYPTED = "encrypted"
UNREADABLE_VOLUME = "volume not readable"          # unknown or corrupt file system, read error
UNSUPPORTED_VOLUME = "volume system not supported"  # LVM thin volumes and snapshots, ...
FOLDER_NOT_READ = "folder not readable"
FILE_NOT_READ = "file not fully read"              # bytes expected vs bytes read
MEDIA_DAMAGED = "media damaged"                    # E01 chunk checksum errors, unreadable sectors
UNALLOCATED = "unallocated space not carved"
UNPARTITIONED = "unpartitioned space not carved"
VIDEO_FRAMES = "video frames not examined"          # undecodable, cut short, over a limit
EMBEDDED = "embedded content not examined"         # thumbnail caches, PDFs, OLE documents
ARCHIVE = "archive content not examined"           # refused, encrypted, bombs, too deep
PICTURE = "picture not decoded"
NOT_MATCHED = "not matched against any alert set"
NOT_SCORED = "not scored by the model"
SCAN_INCOMPLETE = "scan incomplete"                # batch failed, interrupted, stopped early
EVIDENCE_NOT_OPENED = "evidence could not be opened"
# Space and content not examined yet: free and unpartitioned space until the scan has carved
# it (triage/carve.py), video frames when the scan runs without the video stage
# (--no-video), content inside files that carving their bytes does not reach. A video the
# stage could not decode, or decoded only in part, is also VIDEO_FRAMES: it keeps the
# rank's "not yet examined" band, and its reason says how many seconds were examined. Every other kind means something specific was refused or failed, which
# ranks a device higher (triage/rank.py) and raises NOT_EXAMINED.
NOT_YET_EXAMINED = frozenset({UNALLOCATED, UNPARTITIONED, VIDEO_FRAMES, EMBEDDED})
COVERAGE_KINDS = (EVIDENCE_NOT_OPENED, ENCRYPTED, UNREADABLE_VOLUME, UNSUPPORTED_VOLUME, FOLDER_NOT_READ,
                  FILE_NOT_READ, MEDIA_DAMAGED, UNALLOCATED, UNPARTITIONED, VIDEO_FRAMES,
                  EMBEDDED, ARCHIVE, PICTURE, NOT_MATCHED, NOT_SCORED, SCAN_INCOMPLETE)


@dataclass(frozen=True)
class Coverage:
    """A part of a device that was not examined, and why. Never silently dropped.

    `where` reaches the bytes again (a whole device, a volume, a file, a member, a byte range);
    `kind` is one of COVERAGE_KINDS and is what callers branch on, never `reason`'s words.
    For a file read short, `bytes_expected` is its size and `bytes_read` what was read.
    """

    device_id: str
    kind: str
    where: Provenance
    reason: str
    bytes_not_examined: int = 0
    bytes_expected: int = 0
    bytes_read: int = 0
    batch_id: str = ""             # the scan batch that gave up on these bytes (a resume retries it)

    @property
    def volume_offset(self) -> Optional[int]:
        return self.where.volume_offset

    @property
    def key(self) -> str:
        """The id of this gap within a case (one per kind and place)."""
        return json.dumps([self.kind, self.where._key_parts()], separators=(",", ":"),
                          ensure_ascii=False)

    def to_dict(self) -> dict:
        return {"device_id": self.device_id, "kind": self.kind, "where": self.where.to_dict(),
                "display": self.where.display(), "reason": self.reason,
                "bytes_not_examined": self.bytes_not_examined,
                "bytes_expected": self.bytes_expected, "bytes_read": self.bytes_read,
                "batch_id": self.batch_id}

    @classmethod
    def from_dict(cls, d: dict) -> "Coverage":
        return cls(device_id=d["device_id"], kind=d["kind"], where=Provenance.from_dict(d["where"]),
                   reason=d["reason"], bytes_not_examined=int(d.get("bytes_not_examined") or 0),
                   bytes_expected=int(d.get("bytes_expected") or 0),
                   bytes_read=int(d.get("bytes_read") or 0), batch_id=d.get("batch_id") or "")


@dataclass(frozen=True)
class Exif:
    make: str = ""
    model: str = ""
    datetime_original: str = ""
    gps: Optional[tuple[float, float]] = None   # (lat, lon) in decimal degrees


@dataclass(frozen=True)
class Features:
    key: str                       # FileRecord.key
    size: int
    md5: str = ""
    sha1: str = ""
    sha256: str = ""
    type: str = ""
    ext_mismatch: bool = False
    is_picture: bool = False
    width: int = 0
    height: int = 0
    pdq: str = ""                  # 64 hex
    pdq_quality: int = 0
    phash: str = ""                # 16 hex
    exif: Optional[Exif] = None
    thumbnail: bytes = b""         # small JPEG for review (a video: a strip of 4 frames)
    error: str = ""                # decode error or refusal (e.g. decompression bomb)
    # a video (triage/features/video.py): its length and what of it was examined, and its
    # vPDQ record, one VideoFrame per frame hashed
    duration: float = 0.0          # seconds, as the container states it (0: unknown)
    examined_seconds: float = 0.0  # up to the last frame decoded
    frames: tuple = ()             # VideoFrame, in time order


class VideoFrame(NamedTuple):
    """One hashed frame of a video: a line of its vPDQ record (plus pHash). A tuple, so the
    store keeps it as a JSON list and reads it back with `VideoFrame(*row)`."""

    number: int                    # frame number in decode order
    seconds: float                 # presentation time
    pdq: str                       # 64 hex
    quality: int                   # PDQ quality 0-100
    phash: str = ""
    keyframe: bool = False


@dataclass(frozen=True)
class Match:
    key: str
    kind: str                      # "exact" or "near"
    algorithm: str                 # md5, sha1, sha256, pdq, phash
    value: str                     # the hash that matched
    set_name: str
    set_version: str
    role: str                      # alert, ignore, watch
    category: str = ""
    severity: int = 0
    distance: int = 0
    # video matches: the frames that matched ((frame number, seconds), ...) and, for a vPDQ
    # match (algorithm "vpdq", value = the known video's name), the shares of the query's
    # and of the known video's frames matched, in percent
    frames: tuple = ()
    query_share: float = 0.0
    known_share: float = 0.0

    @property
    def video_text(self) -> str:
        """For people: what a video's match rests on ("" for any other match)."""
        parts = []
        if self.algorithm == "vpdq":
            parts.append(f"known video {self.value!r} ({self.query_share:.0f}% of this video's "
                         f"frames and {self.known_share:.0f}% of the known video's matched)")
        if self.frames:
            parts.append("frames at " + frame_list(self.frames))
        return "; ".join(parts)


@dataclass(frozen=True)
class Score:
    key: str
    model: str
    model_sha256: str
    values: dict                   # label -> value, e.g. {"explicit": 0.91, "minor_likelihood": 0.4}
    # a video: the highest value per label over its frames is `values`; each scored frame is
    # here as (frame number, seconds, {label: value}), so the classifier can count frames
    frames: tuple = ()


@dataclass(frozen=True)
class Flag:
    code: str                      # KNOWN_MATCH, NEAR_MATCH, SUSPECTED_NEW, SELF_PRODUCED, CHILD_ACCESS, NOT_EXAMINED
    severity: int                  # higher is worse
    device_id: str
    key: str                       # file key, or coverage "where"
    raised_at: float
    message: str
    provenance: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DeviceVerdict:
    device_id: str
    score: float
    coverage: str                  # complete, partial, failed
    alert_matches: int
    near_matches: int
    suspected_new: int
    flags: tuple[str, ...]
    reasons: tuple[str, ...]
    context: dict = field(default_factory=dict)
    rank: int = 0                  # 1 = examine first
    tier: int = 0                  # structural band of the sort (see triage/rank.py)
    exhibit: str = ""
    evidence: tuple[str, ...] = ()
    points: dict = field(default_factory=dict)   # rule -> points, the score's breakdown
