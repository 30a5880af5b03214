"""The small typed records that pass between stages.

Data flows one way: Evidence -> Volume -> FileRecord -> Features -> Match/Score -> Flag ->
DeviceVerdict. Every record is a frozen dataclass made of plain values, so it pickles cheaply
into Ray and serialises to JSON with `to_dict`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from triage import __version__ as TOOL_VERSION  # noqa: F401  (re-exported for provenance)


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


@dataclass(frozen=True)
class Provenance:
    """How to reach the same bytes again, the dfvfs path-spec idea.

    `icat -o {offset // 512} IMAGE {inode}` (or `inode-128-{ads}` for a stream) gives the
    content; `member` is the path inside an archive when the bytes came out of one.
    """

    device_id: str
    volume_offset: int
    inode: Optional[int]
    path: str
    ads: str = ""                  # NTFS alternate data stream name
    attr_type: int = 0             # TSK attribute type of the stream read (0 = default)
    attr_id: int = 0
    member: str = ""               # archive member path, "a.zip!/b/c.jpg" style for nesting

    @property
    def key(self) -> str:
        """A stable string key, unique within a case."""
        parts = [self.device_id, str(self.volume_offset), str(self.inode), self.path]
        if self.ads:
            parts.append(":" + self.ads)
        if self.member:
            parts.append("!" + self.member)
        return "|".join(parts)


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

    @property
    def path(self) -> str:
        return self.prov.path

    @property
    def key(self) -> str:
        return self.prov.key


@dataclass(frozen=True)
class Coverage:
    """A part of a device that was not examined, and why. Never silently dropped."""

    device_id: str
    where: str                     # "volume@1048576", "batch 12", a file key
    reason: str                    # "encrypted (BitLocker)", "unknown file system", "read error: ..."
    bytes_not_examined: int = 0
    volume_offset: Optional[int] = None


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
    thumbnail: bytes = b""         # small JPEG for review
    error: str = ""                # decode error or refusal (e.g. decompression bomb)


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


@dataclass(frozen=True)
class Score:
    key: str
    model: str
    model_sha256: str
    values: dict                   # label -> value, e.g. {"explicit": 0.91, "minor_likelihood": 0.4}


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
