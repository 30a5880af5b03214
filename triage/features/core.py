"""`analyse`: one file's content, read once, to a Features record (and its archive members).

Pure: bytes in, records out. No Ray, no TSK; the scan calls it from Ray workers with the chunks
the evidence layer reads.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np

from triage.carve import embedded, embedded_record
from triage.features import archives, inside, pictures, video
from triage.errors import ShortRead
from triage.features.hashing import Digests, ReadAborted, head_of, read_once
from triage.units import human_bytes
from triage.filetype import (BOMB_MIN_BYTES, BOMB_RATIO, EMBEDDING_TYPES, PICTURE_TYPES,
                             VIDEO_TYPES, ext_mismatch, sniff)
from triage.records import (ARCHIVE, EMBEDDED, FILE_NOT_READ, PICTURE, VIDEO_FRAMES, Coverage,
                            Features, FileRecord, built)

ARCHIVE_TYPES = archives.OPENABLE        # zip, tar, gzip (a .tar.gz is two levels)
# What each container is searched with for the pictures inside it. carve: pictures stored
# whole, found by their structure (a PDF's DCTDecode images, a browser cache entry's body);
# thumbcache: each entry read with its hash and identifier, and the bytes outside every entry
# carved; pdf: also its Flate-encoded images, decoded; sqlite: blobs;
# ole: each stream of a compound file, read whole through olefile, then carved. A file of
# unknown type at least `carve_unknown_min` long is carved for every type, as free space is.
INSIDE = {"application/x-windows-thumbcache": "thumbcache", "application/pdf": "pdf",
          "application/x-chrome-cache-entry": "carve-all",
          "application/x-chrome-cache-block": "carve-all",
          "application/vnd.sqlite3": "sqlite", "application/x-ole-storage": "ole"}
CARVED_INSIDE = frozenset(INSIDE)
MiB = 1024 * 1024
GiB = 1024 * MiB


@dataclass(frozen=True)
class FeatureOptions:
    """What to compute, and the limits that keep hostile content from exhausting a worker."""

    sha256: bool = False
    pictures: bool = True                    # decode pictures: PDQ, pHash, EXIF, size
    thumbnails: bool = True                  # a small JPEG for review (needs pictures)
    thumb_size: int = 128
    archives: bool = True                    # open zip, tar and gzip, recursively
    archive_gzip: bool = True                # gzip too (.tar.gz, and every man page .gz)
    archive_max_depth: int = 3               # levels of archives opened (outer.zip is level 1)
    archive_max_members: int = 10_000        # members analysed under one file, all levels
    archive_max_total_bytes: int = 2 * GiB   # expanded bytes read under one file, all levels
    archive_max_bytes: int = 512 * MiB       # an archive larger than this is hashed, not opened
    archive_max_ratio: float = BOMB_RATIO    # a member expanding more than this is a bomb ...
    archive_ratio_min_bytes: int = BOMB_MIN_BYTES  # ... when it is also at least this large
    picture_max_bytes: int = 256 * MiB       # a picture file larger than this is hashed only
    carve_unknown_min: int = 64 * 1024       # files of unknown type this large are carved ...
    carve_unknown_max: int = 64 * MiB        # ... held whole up to this (larger: a gap)
    max_image_pixels: int = 89_478_485       # Pillow's MAX_IMAGE_PIXELS: larger is a bomb
    model_input_size: Optional[int] = None   # also give a size x size uint8 RGB array
    model_prep: Optional[Callable[[Any], Any]] = None   # or: picture -> model array, or why it skips the model
    # videos: sampled frames decoded and hashed (needs pictures); None leaves every video's
    # frames a coverage gap (matched whole only)
    video: Optional[video.VideoLimits] = video.DEFAULT_LIMITS
    # a video over video.max_bytes: size -> a file to write it to as it is hashed, so it is
    # decoded from there (video.VideoSpool); None leaves its frames a coverage gap
    video_spool: Optional[Callable[[int], Any]] = None


DEFAULT_OPTIONS = FeatureOptions()


@dataclass(frozen=True)
class Analysis:
    """One file (or archive member) analysed: its typed record, features, members, coverage."""

    record: FileRecord                       # `type` and `ext_mismatch` filled from magic bytes
    features: Features
    members: tuple["Analysis", ...] = ()     # archive members, nested members inside theirs
    coverage: tuple[Coverage, ...] = ()      # what was refused or could not be examined
    # a picture's model array (or why it skips the model); a video's [(VideoFrame, array or why)]
    model_input: Optional[np.ndarray | str | list] = field(default=None, compare=False, repr=False)

    def walk(self) -> Iterator["Analysis"]:
        """This analysis and every member's, depth first."""
        yield self
        for m in self.members:
            yield from m.walk()

    def all_coverage(self) -> list[Coverage]:
        return [c for a in self.walk() for c in a.coverage]


def analyse(record: FileRecord, chunks: Iterable[bytes],
            opts: FeatureOptions = DEFAULT_OPTIONS, known: Optional[Digests] = None) -> Analysis:
    """Read `chunks` (the content of `record`) once and analyse it.

    Never raises for bad content: decode failures are `features.error`, refusals and damaged
    archives are coverage records. Exceptions from `chunks` itself (read errors) propagate.
    `known`: the content's MD5 and SHA-1 when the caller already took them (`hash_many`).
    """
    if known is not None and isinstance(chunks, list):
        quick = _hashed_only(record, chunks, opts, known)
        if quick is not None:
            return quick
    budget = archives.Budget(opts.archive_max_total_bytes, opts.archive_max_members)
    return _analyse(record, chunks, opts, 0, budget, known)


# Types whose content `_analyse` looks into (or records a gap for) beyond its hashes.
_LOOKED_INTO = PICTURE_TYPES | VIDEO_TYPES | ARCHIVE_TYPES | CARVED_INSIDE | frozenset(EMBEDDING_TYPES)


def _hashed_only(record: FileRecord, chunks: list, opts: FeatureOptions,
                 known: Digests) -> Optional[Analysis]:
    """The analysis of a file already read whole and hashed (`hash_many`) whose type needs
    nothing but its hashes: what `_analyse` gives it, without a second pass over its bytes
    (most files of a million-file device are such files). None when the full path is needed:
    SHA-256 asked for, content not exactly the declared size, or a type looked into."""
    n = 0
    for c in chunks:
        n += len(c)
    if n != record.size:
        return None
    typed = hashes_only(record.name, n, head_of(chunks), opts)
    return None if typed is None else hashed_analysis(record, n, known, *typed)


def hashes_only(name: str, size: int, head: bytes, opts: FeatureOptions) -> Optional[tuple]:
    """(content type, extension mismatch) of content of `size` bytes starting with `head`
    when its hashes are all the analysis it gets; None when `_analyse` must read it (SHA-256
    asked for, no bytes, or a type looked into). The one rule for both ways a plain file is
    analysed: `_hashed_only` here, and the workers' packed-row path (workers/batch.py), which
    stores such a file as a row without making its records."""
    if opts.sha256 or size == 0:
        return None
    return typed_only(name, size, sniff(head), opts)


def typed_only(name: str, size: int, ctype: str, opts: FeatureOptions) -> Optional[tuple]:
    """hashes_only of content already sniffed as `ctype` (the workers' C path for small files
    sniffs as it hashes, by filetype.SNIFF_RULES)."""
    if opts.sha256 or size == 0 or ctype in _LOOKED_INTO or \
            (opts.pictures and _unknown(ctype, size, opts)):
        return None
    return ctype, ext_mismatch(name, ctype)


def hashed_analysis(record: FileRecord, size: int, known: Digests, ctype: str,
                    mismatch: bool) -> Analysis:
    """The analysis of a file that `hashes_only` passed: its record with the sniffed type, and
    its hashes."""
    rec = record if (record.type, record.ext_mismatch) == (ctype, mismatch) \
        else replace(record, type=ctype, ext_mismatch=mismatch)
    return built(Analysis, record=rec,
                 features=built(Features, key=rec.key, size=size, md5=known.md5,
                                sha1=known.sha1, type=ctype, ext_mismatch=mismatch))


def _opens(ctype: str, opts: FeatureOptions) -> bool:
    """Whether an archive of this type is opened."""
    return opts.archives and ctype in ARCHIVE_TYPES and (
        opts.archive_gzip or ctype != "application/gzip")


def _analyse(record: FileRecord, chunks: Iterable[bytes], opts: FeatureOptions, depth: int,
             budget: archives.Budget, known: Optional[Digests] = None) -> Analysis:
    sniffed: list[str] = []

    def keep(head: bytes) -> int:
        ctype = sniff(head)
        sniffed.append(ctype)
        if opts.pictures and ctype in PICTURE_TYPES:
            return opts.picture_max_bytes
        if _opens(ctype, opts) and depth < opts.archive_max_depth:
            return opts.archive_max_bytes
        if opts.pictures and ctype in CARVED_INSIDE:
            return opts.archive_max_bytes     # read whole to find the pictures inside
        if opts.pictures and _unknown(ctype, record.size, opts):
            return opts.carve_unknown_max
        if opts.pictures and opts.video is not None and ctype in VIDEO_TYPES:
            return opts.video.max_bytes       # decoded from memory (larger: from a spool file)
        return 0

    short: list[ShortRead] = []

    def guarded(source: Iterable[bytes]) -> Iterator[bytes]:
        # the evidence layer says where a file's content broke off; the read stops there
        try:
            yield from source
        except ShortRead as exc:
            short.append(exc)
            if exc.gap:
                raise ReadAborted(exc.reason) from None

    def spill(head: bytes, size: int):
        # only a video is worth a file on disk: its frames are decoded from there (read_once
        # asks only for content over a limit `keep` gave, so the type is sniffed by then)
        return opts.video_spool(size) if sniffed[0] in VIDEO_TYPES else None

    spools = opts.video_spool is not None and opts.pictures and opts.video is not None
    rr = read_once(guarded(chunks), sha256=opts.sha256, keep=keep, size_hint=record.size,
                   known=known, spill=spill if spools else None)
    try:
        return _analysed(record, rr, sniffed, short, opts, depth, budget)
    finally:
        if rr.spilled is not None:
            rr.spilled.close()


def _analysed(record: FileRecord, rr, sniffed: list, short: list, opts: FeatureOptions,
              depth: int, budget: archives.Budget) -> Analysis:
    """`_analyse` once the content is read: its type, hashes, features and gaps."""
    ctype = sniffed[0] if sniffed else sniff(rr.head)     # read_once asks `keep` once at most
    size = record.size or (0 if rr.aborted else rr.size)
    mismatch = ext_mismatch(record.name, ctype)
    if (record.type, record.size, record.ext_mismatch) == (ctype, size, mismatch):
        rec = record        # the walk sniffed the same bytes (the usual case): no copy
    else:
        rec = replace(record, type=ctype, ext_mismatch=mismatch, size=size)
    prov = rec.prov
    coverage: list[Coverage] = []

    def cover(kind: str, reason: str, nbytes: int = 0, **read) -> None:
        coverage.append(Coverage(device_id=prov.device_id, kind=kind, where=prov, reason=reason,
                                 bytes_not_examined=max(0, nbytes), **read))

    is_picture = ctype in PICTURE_TYPES
    ended = any(not s.gap for s in short)       # the file system says the content ends there
    cut = rr.aborted or (f"content ends after {rr.size:,} of {rec.size:,} bytes"
                         if rec.size and rr.size < rec.size and not ended else "")
    if cut:
        # A partial hash would be shown, stored and matched as the file's own: none is kept,
        # and the bytes not read are a gap. (A member cut short by the archive budget too.)
        if short or not rr.aborted:
            cover(FILE_NOT_READ, f"file not fully read: {cut}", rec.size - rr.size,
                  bytes_expected=rec.size, bytes_read=rr.size)
        else:
            cover(ARCHIVE, f"archive member not fully read: {cut}", max(0, rec.size - rr.size),
                  bytes_expected=rec.size, bytes_read=rr.size)
        feats = Features(key=rec.key, size=rr.size, type=ctype, ext_mismatch=rec.ext_mismatch,
                         is_picture=is_picture,
                         error=f"not fully read ({rr.size} of {rec.size or '?'} bytes): {cut}")
        return Analysis(rec, feats, (), tuple(coverage))

    d = rr.digests
    base = dict(key=rec.key, size=rr.size, md5=d.md5, sha1=d.sha1, sha256=d.sha256, type=ctype,
                ext_mismatch=rec.ext_mismatch, is_picture=is_picture)
    error = ""
    members: tuple[Analysis, ...] = ()
    model_input = None
    pic: dict = {}

    if is_picture and opts.pictures:
        if rr.data is None:
            why = f"picture not decoded: {human_bytes(rr.size)}, {rr.not_kept}"
            error = error or why
            cover(PICTURE, why, rr.size)
        else:
            pr = pictures.analyse_picture(
                rr.data, ctype, thumbnails=opts.thumbnails, thumb_size=opts.thumb_size,
                max_image_pixels=opts.max_image_pixels, model_input_size=opts.model_input_size,
                model_prep=opts.model_prep)
            pic = dict(width=pr.width, height=pr.height, pdq=pr.pdq, pdq_quality=pr.pdq_quality,
                       phash=pr.phash, exif=pr.exif, thumbnail=pr.thumbnail)
            model_input = pr.model_input
            if pr.error:
                error = pr.error if not error else f"{error}; {pr.error}"
            if pr.refused:
                cover(PICTURE, f"picture refused: {pr.refused}", rr.size)
            elif not pr.pdq and not pr.phash:
                # nothing perceptual to match and nothing for the model: not examined
                cover(PICTURE, f"picture not decoded: {pr.error or 'no perceptual hash'}",
                      rr.size)
            if ctype == "image/jpeg" and depth < opts.archive_max_depth:
                # the EXIF thumbnail (and any other picture stored inside): it can show the
                # picture before it was cropped or edited
                members = _inside(rec, rr.data, 2, opts, depth, budget, cover)

    elif _opens(ctype, opts):
        if depth >= opts.archive_max_depth:
            cover(ARCHIVE, f"nested archive not opened: deeper than {opts.archive_max_depth} "
                  "levels", rr.size)
        elif rr.data is None:
            cover(ARCHIVE, f"archive not opened: {human_bytes(rr.size)}, {rr.not_kept}", rr.size)
        else:
            limits = archives.Limits(opts.archive_max_ratio, opts.archive_ratio_min_bytes)
            found, more = archives.expand(
                rec, rr.data, ctype, budget, limits,
                lambda mrec, mchunks: _analyse_member(mrec, mchunks, opts, depth + 1, budget))
            members = tuple(found)
            coverage.extend(more)

    elif ctype in VIDEO_TYPES:
        if not opts.pictures or opts.video is None:
            # matched whole (exact hashes) only: no frame was decoded, hashed or scored
            cover(VIDEO_FRAMES, f"{ctype}: no frame decoded (the video stage is off); only the "
                  "whole file's hashes were matched", rr.size)
        elif rr.data is None and rr.spilled is None:
            why = rr.not_kept + ("" if opts.video_spool is not None else
                                 "; not spooled to disk (scan --video-spool off)")
            cover(VIDEO_FRAMES, f"video not decoded: {human_bytes(rr.size)}, {why}; only "
                  "the whole file's hashes were matched", rr.size)
        else:
            content = rr.data if rr.data is not None else rr.spilled
            vr = video.analyse_video(content, ctype, opts.video, thumbnails=opts.thumbnails,
                                     thumb_size=opts.thumb_size, model_prep=opts.model_prep,
                                     model_input_size=opts.model_input_size)
            pic = dict(width=vr.width, height=vr.height, thumbnail=vr.strip,
                       duration=round(vr.duration, 3), examined_seconds=round(vr.examined, 3),
                       frames=vr.frames)
            error = vr.error or vr.note
            if vr.model_inputs:
                model_input = vr.model_inputs
            if vr.gap:
                # the bytes not examined, in proportion to the seconds not examined
                part = (1 - min(1.0, vr.examined / vr.duration)) if vr.duration and vr.frames \
                    else 1.0
                cover(VIDEO_FRAMES, vr.gap, int(rr.size * part))
    elif opts.pictures and (ctype in CARVED_INSIDE or _unknown(ctype, rr.size, opts)):
        how = INSIDE.get(ctype, "carve-all")
        what = EMBEDDING_TYPES.get(ctype) or ("file of unknown type" if not ctype else ctype)
        if rr.data is None:
            cover(EMBEDDED, f"{what} not searched for pictures inside: {human_bytes(rr.size)}, "
                  f"{rr.not_kept}", rr.size)
        elif depth >= opts.archive_max_depth:
            cover(EMBEDDED, f"{what} not searched for pictures inside: deeper than "
                  f"{opts.archive_max_depth} levels", rr.size)
        else:
            undecoded = inside.Undecoded({})
            found: list = []
            if how.startswith("carve") or how == "pdf":
                found += _inside(rec, rr.data, 0, opts, depth, budget, cover,
                                 bmp=how == "carve-bmp", all_types=how == "carve-all")
            if how == "pdf":
                found += _decoded(rec, inside.pdf_images(rr.data, undecoded), opts, depth,
                                  budget, cover)
            elif how == "sqlite":
                found += _decoded(rec, inside.sqlite_blobs(rr.data, undecoded), opts, depth,
                                  budget, cover)
            elif how == "ole":
                found += _ole(rec, rr.data, undecoded, opts, depth, budget, cover)
            elif how == "thumbcache":
                found += _thumbcache(rec, rr.data, undecoded, opts, depth, budget, cover)
            members = tuple(found)
            if undecoded.reasons:
                cover(EMBEDDED, f"{what}: pictures inside not all examined: "
                      f"{undecoded.text()}", min(rr.size, undecoded.nbytes or rr.size))
    elif ctype in EMBEDDING_TYPES:
        cover(EMBEDDED, f"{EMBEDDING_TYPES[ctype]} not opened: the pictures inside it were not "
              "examined", rr.size)

    feats = Features(**base, **pic, error=error)
    return Analysis(rec, feats, members, tuple(coverage), model_input)


def _unknown(ctype: str, size: int, opts: FeatureOptions) -> bool:
    """A file of unknown type large enough to be carved for pictures, as free space is."""
    return ctype == "" and size >= opts.carve_unknown_min


def _inside(rec: FileRecord, data, start: int, opts: FeatureOptions, depth: int,
            budget: archives.Budget, cover: Callable, bmp: bool = False,
            all_types: bool = False, end: Optional[int] = None) -> tuple[Analysis, ...]:
    """The pictures stored whole inside `data` from `start` (to `end`; triage.carve.embedded),
    each analysed as a member of `rec` with its byte range, within the archives' member
    budget (past it, the rest is an EMBEDDED gap)."""
    out = []
    for item in embedded(data, start, bmp=bmp, all_types=all_types, end=end):
        if budget.members_left <= 0 or budget.bytes_left < item.length:
            cover(EMBEDDED, f"pictures inside not all examined: the member limit was reached "
                  f"after {len(out)}", len(data) - item.offset)
            break
        budget.members_left -= 1
        budget.bytes_left -= item.length
        mrec = embedded_record(rec, item)
        out.append(_analyse_member(mrec, iter([bytes(data[item.offset:item.offset + item.length])]),
                                   opts, depth + 1, budget))
    return tuple(out)


def _ole(rec: FileRecord, data, undecoded: "inside.Undecoded", opts: FeatureOptions,
         depth: int, budget: archives.Budget, cover: Callable) -> list[Analysis]:
    """The pictures stored whole in each stream of an OLE compound file. A Thumbs.db holds
    nothing else; any other compound file (an Office 97 document) may also keep pictures in
    encodings not decoded here (WMF/EMF, compressed blips): its streams without a picture
    stay a gap with their bytes."""
    out: list[Analysis] = []
    names, bare = [], 0
    for name, blob in inside.ole_streams(data, undecoded):
        names.append(name)
        srec = replace(rec, prov=rec.prov.member_of(name), name=name, size=len(blob), type="")
        found = _inside(srec, blob, 0, opts, depth, budget, cover, bmp=True)
        out += found
        if not found:
            bare += len(blob)
    if bare and not inside.is_thumbs_db(names):
        undecoded.add("streams without a picture stored whole (pictures in WMF/EMF or "
                      "compressed are not decoded)", bare)
    return out


def _thumbcache(rec: FileRecord, data, undecoded: "inside.Undecoded", opts: FeatureOptions,
                depth: int, budget: archives.Budget, cover: Callable) -> list[Analysis]:
    """A Windows thumbnail cache: each entry's thumbnail as a member with the entry's hash and
    identifier; then the bytes outside every entry read (the space of removed entries keeps
    old thumbnails) carved for pictures stored whole. Entries past a damaged one (or every
    entry, in a format version not known) are not read as entries: carved, and a gap."""
    walk = inside.thumbcache_entries(data)
    out = _decoded(rec, walk.entries, opts, depth, budget, cover)
    at = 0
    for e in walk.entries + [inside.Decoded(b"", "", offset=len(data))]:
        if e.offset > at:
            out += _inside(rec, data, at, opts, depth, budget, cover, bmp=True, end=e.offset)
        at = e.offset + e.length
    if walk.rest is not None:
        undecoded.add(f"thumbnail cache entries not read ({walk.why}): carved for pictures "
                      "stored whole instead", len(data) - walk.rest)
    return out


def _decoded(rec: FileRecord, items, opts: FeatureOptions, depth: int,
             budget: archives.Budget, cover: Callable) -> list[Analysis]:
    """Pictures decoded from inside `rec` (triage.features.inside), each analysed as a member,
    within the same budget as carved ones."""
    out = []
    for item in items:
        if budget.members_left <= 0 or budget.bytes_left < len(item.data):
            cover(EMBEDDED, f"pictures inside not all examined: the member limit was reached "
                  f"after {len(out)}", rec.size)
            break
        budget.members_left -= 1
        budget.bytes_left -= len(item.data)
        out.append(_analyse_member(inside.decoded_record(rec, item), iter([item.data]), opts,
                                   depth + 1, budget))
    return out


def _analyse_member(record: FileRecord, chunks: Iterable[bytes], opts: FeatureOptions,
                    depth: int, budget: archives.Budget) -> Analysis:
    """A member whose bytes turn out damaged mid-read still gets a record, with the error."""
    try:
        return _analyse(record, chunks, opts, depth, budget)
    except NotImplementedError:
        raise                                   # unsupported method: expand() words it
    except archives.ARCHIVE_ERRORS as exc:
        reason = f"corrupt archive member: {archives._one_line(exc)}"
        cov = Coverage(device_id=record.prov.device_id, kind=ARCHIVE, where=record.prov,
                       reason=reason, bytes_not_examined=record.size)
        feats = Features(key=record.key, size=record.size, error=reason)
        return Analysis(record, feats, (), (cov,))
