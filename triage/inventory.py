"""What `triage inspect` and `triage files` print: a device description and a file listing.

Plain dicts, JSON-ready, built from the evidence layer (evidence -> volumes -> filesystems);
cli.py only formats them.
"""
from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import Callable, Iterable, Iterator, Optional, Sequence

from triage import records
from triage.errors import EvidenceError, ShortRead, TriageError
from triage.evidence import Evidence
from triage.filesystems import read_chunks, walk
from triage.records import SYMLINK, Coverage, FileRecord, VolumeRef, to_dict
from triage.units import human_bytes, terminal_safe, volume_name
from triage.device import discover
from triage.volumes import partition_table

# Gaps where something could not be read at all (as opposed to space nothing looks at yet):
# `triage files` exits 1 for these, as `fls` and `icat` fail on them.
READ_FAILURES = frozenset({records.EVIDENCE_NOT_OPENED, records.ENCRYPTED,
                           records.UNREADABLE_VOLUME, records.UNSUPPORTED_VOLUME,
                           records.FOLDER_NOT_READ, records.FILE_NOT_READ,
                           records.MEDIA_DAMAGED, records.SCAN_INCOMPLETE})

HASHES = ("md5", "sha1", "sha256")
CSV_FIELDS = ("path", "size", "allocated", "dir", "orphan", "inode", "ads", "volume_offset", "fs_type",
              "type", "link_target", "ext_mismatch", "md5", "sha1", "sha256", "mtime", "atime", "ctime", "crtime", "error")


def iso(t: Optional[float]) -> Optional[str]:
    """POSIX seconds as ISO-8601 UTC ('...Z'), or None."""
    if t is None:
        return None
    try:
        return datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return None


def parse_hashes(spec: str) -> tuple[str, ...]:
    names = tuple(h.strip().lower() for h in spec.split(",") if h.strip()) if spec else ()
    bad = [h for h in names if h not in HASHES]
    if bad:
        raise TriageError(f"unknown hash {', '.join(bad)}: choose from {', '.join(HASHES)}")
    return tuple(dict.fromkeys(names))


def describe(evidence: Evidence, recovery_key: Optional[str] = None, password: Optional[str] = None,
             count_files: bool = True, progress: Optional[Callable[[str], None]] = None) -> dict:
    """Format, size, stored hashes, partition table, volumes (with file counts) and coverage."""
    volumes, coverage = discover(evidence, recovery_key=recovery_key, password=password)
    table, slots = partition_table(evidence)
    out = {
        "device": evidence.ref.device_id,
        "format": evidence.ref.format,
        "reader": getattr(evidence.source, "backend", None) or evidence.ref.format,
        "paths": list(evidence.ref.paths),
        "media_size": evidence.ref.media_size,
        "stored_hashes": dict(evidence.ref.stored_hashes),
        "partition_table": table,
        "partitions": [{"slot": s, "offset": off, "length": ln, "description": desc, "allocated": alloc}
                       for s, off, ln, desc, alloc in slots],
        "volumes": [],
        "coverage": [c.to_dict() for c in coverage],
    }
    for v in volumes:
        row = to_dict(v)
        if count_files and v.fs_type:
            if progress:
                progress(f"counting files of volume {v.index} ({v.fs_type})")
            problems: list[Coverage] = []
            alloc = deleted = folders = streams = 0
            for rec in walk(evidence, v, problems):
                if rec.is_dir:
                    folders += 1
                elif rec.prov.ads:
                    streams += 1
                elif rec.allocated:
                    alloc += 1
                else:
                    deleted += 1
            row["files"] = {"allocated": alloc, "deleted": deleted, "folders": folders, "streams": streams}
            out["coverage"].extend(c.to_dict() for c in problems)
        out["volumes"].append(row)
    return out


def examinable(volumes: Sequence[VolumeRef]) -> list[VolumeRef]:
    return [v for v in volumes if v.fs_type and not v.encryption]


def listable(evidence: Evidence, recovery_key: Optional[str] = None,
             password: Optional[str] = None) -> tuple[list[VolumeRef], list[Coverage]]:
    """The volumes and gaps of a device to list (`triage files`); EvidenceError when nothing
    of it can be examined, with each gap's reason."""
    from triage.device import discover
    from triage.errors import EvidenceError

    volumes, coverage = discover(evidence, recovery_key=recovery_key, password=password)
    if not examinable(volumes):
        reasons = "; ".join(f"{c.where.display()}: {c.reason}" for c in coverage) or "no volumes"
        raise EvidenceError(f"{evidence.ref.device_id}: nothing could be examined ({reasons})")
    return list(volumes), list(coverage)


def gap_line(c: Coverage, volumes: Sequence[VolumeRef]) -> str:
    """A gap for people: where (a whole volume by its one name), kind, bytes and why; escaped."""
    vol = next((v for v in volumes if v.offset == c.where.volume_offset), None) \
        if c.where.scope == "volume" else None
    where = vol.name if vol is not None else c.where.display()
    return (f"{terminal_safe(where)} ({c.kind}, {c.bytes_not_examined:,} bytes): "
            f"{terminal_safe(c.reason)}")


def read_failed(gaps: Iterable[Coverage]) -> bool:
    """Something could not be read (as fls and icat report it with exit status 1)."""
    return any(c.kind in READ_FAILURES for c in gaps)


def rows(evidence: Evidence, volumes: Sequence[VolumeRef], hashes: Sequence[str] = (),
         include_dirs: bool = True, problems: Optional[list] = None) -> Iterator[dict]:
    """One dict per file of every examinable volume, hashed in one pass over its content."""
    for v in examinable(volumes):
        for rec in walk(evidence, v, problems):
            if rec.is_dir and not include_dirs:
                continue
            yield row(evidence, rec, hashes, problems)


def row(evidence: Evidence, rec: FileRecord, hashes: Sequence[str] = (),
        problems: Optional[list] = None) -> dict:
    """One file's listing row; a file whose content cannot be read to its size has no hash
    (a partial one would pass for the file's) and, in `problems`, a coverage record."""
    out = {
        "path": rec.path, "name": rec.name, "size": rec.size, "allocated": rec.allocated,
        "dir": rec.is_dir, "orphan": rec.orphan, "inode": rec.prov.inode, "ads": rec.prov.ads or None,
        "volume_offset": rec.prov.volume_offset, "fs_type": rec.fs_type, "type": rec.type,
        "ext_mismatch": rec.ext_mismatch,
    }
    if rec.type == SYMLINK:        # listed as a link with its target, never followed
        out["link_target"] = rec.link_target
    if hashes and not rec.is_dir and rec.type != SYMLINK:
        hashers = [hashlib.new(h) for h in hashes]
        got = 0
        try:
            for chunk in read_chunks(evidence, rec.prov):
                got += len(chunk)
                for h in hashers:
                    h.update(chunk)
            if got < rec.size:
                raise ShortRead(f"content ends after {got:,} of {rec.size:,} bytes", rec.size, got)
            out.update({name: h.hexdigest() for name, h in zip(hashes, hashers)})
        except ShortRead as exc:
            if exc.gap:
                _unread(out, rec, hashes, got, exc, problems)
            else:                       # all there is: hashed as icat gives it
                out.update({name: h.hexdigest() for name, h in zip(hashes, hashers)})
        except EvidenceError as exc:
            _unread(out, rec, hashes, got, exc, problems)
    elif hashes:
        out.update({name: None for name in hashes})
    out.update(mtime=iso(rec.mtime), atime=iso(rec.atime), ctime=iso(rec.ctime), crtime=iso(rec.crtime))
    return out


def _unread(out: dict, rec: FileRecord, hashes: Sequence[str], got: int, exc: Exception,
            problems: Optional[list]) -> None:
    """A file read short: no hash, the error, and a coverage record."""
    out.update({name: None for name in hashes})
    out["error"] = f"not fully read ({got:,} of {rec.size:,} bytes): {exc}"
    if problems is not None:
        problems.append(Coverage(device_id=rec.prov.device_id, kind=records.FILE_NOT_READ,
                                 where=rec.prov, reason=f"file not fully read: {exc}",
                                 bytes_not_examined=max(0, rec.size - got),
                                 bytes_expected=rec.size, bytes_read=got))


def render_inspect(info: dict, console=None) -> None:
    """The human view of `describe`: a header, the partitions, the file systems, the gaps."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    def safe(text) -> Text:      # labels, descriptions and names come from the evidence
        return Text(terminal_safe(str(text)))

    console = console or Console()
    head = Text(terminal_safe(info["device"]), style="bold")
    head.append(f"  {info['format']} ({info['reader']}), {human_bytes(info['media_size'])} "
                f"({info['media_size']:,} bytes), {len(info['paths'])} segment(s)")
    console.print(head)
    for name, value in info["stored_hashes"].items():
        console.print(safe(f"  stored {name}: {value}"))
    if info["partitions"]:
        t = Table(title=f"partition table: {info['partition_table']}", title_justify="left", box=box.SIMPLE)
        for col in ("slot", "offset", "length", "description"):
            t.add_column(col, justify="right" if col in ("slot", "offset", "length") else "left")
        for p in info["partitions"]:
            desc = safe(p["description"])
            if not p["allocated"]:
                desc.append(" (not a volume)", style="dim")
            t.add_row(str(p["slot"]), f"{p['offset']:,}", human_bytes(p["length"]), desc)
        console.print(t)
    else:
        console.print("partition table: none")
    t = Table(title="volumes", title_justify="left", box=box.SIMPLE, pad_edge=False, padding=(0, 1))
    for col in ("#", "offset", "size", "fs", "label", "block", "files", "deleted", "ADS"):
        t.add_column(col, justify="left" if col in ("fs", "label") else "right", no_wrap=col != "label")
    for v in info["volumes"]:
        files = v.get("files") or {}
        fs = Text(v["fs_type"]) if v["fs_type"] else Text(v["encryption"] or "none", style="red")
        t.add_row(str(v["index"]), f"{v['offset']:,}", human_bytes(v["length"]), fs, safe(v["label"]),
                  str(v["block_size"] or ""), str(files.get("allocated", "")), str(files.get("deleted", "")),
                  str(files.get("streams", "")))
    console.print(t)
    if info["coverage"]:
        console.print("[bold red]not examined[/bold red]")
        names = {v["offset"]: volume_name(v["index"], v["encryption"] or v["fs_type"],
                                          v["length"], v["offset"]) for v in info["volumes"]}
        for c in info["coverage"]:
            w = c["where"]        # a whole volume is named by its volume; anything else as is
            whole = not (w.get("path") or w.get("inode") is not None or w.get("length"))
            where = names.get(w.get("volume_offset"), c["display"]) if whole else c["display"]
            console.print(safe(f"  {where}: {c['kind']}: {c['reason']} "
                               f"({human_bytes(c['bytes_not_examined'])})"))
    else:
        console.print("coverage: every volume examined")
