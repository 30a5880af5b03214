"""What `triage inspect` and `triage files` print: a device description and a file listing.

Plain dicts, JSON-ready, built from the evidence layer (evidence -> volumes -> filesystems);
cli.py only formats them.
"""
from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import Callable, Iterator, Optional, Sequence

from triage.errors import EvidenceError, TriageError
from triage.evidence import Evidence
from triage.filesystems import read_chunks, walk
from triage.records import Coverage, FileRecord, VolumeRef, to_dict
from triage.volumes import discover, partition_table

HASHES = ("md5", "sha1", "sha256")
CSV_FIELDS = ("path", "size", "allocated", "dir", "orphan", "inode", "ads", "volume_offset", "fs_type",
              "type", "ext_mismatch", "md5", "sha1", "sha256", "mtime", "atime", "ctime", "crtime", "error")


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
        "coverage": [to_dict(c) for c in coverage],
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
            out["coverage"].extend(to_dict(c) for c in problems)
        out["volumes"].append(row)
    return out


def examinable(volumes: Sequence[VolumeRef]) -> list[VolumeRef]:
    return [v for v in volumes if v.fs_type and not v.encryption]


def rows(evidence: Evidence, volumes: Sequence[VolumeRef], hashes: Sequence[str] = (),
         include_dirs: bool = True, problems: Optional[list] = None) -> Iterator[dict]:
    """One dict per file of every examinable volume, hashed in one pass over its content."""
    for v in examinable(volumes):
        for rec in walk(evidence, v, problems):
            if rec.is_dir and not include_dirs:
                continue
            yield row(evidence, rec, hashes)


def row(evidence: Evidence, rec: FileRecord, hashes: Sequence[str] = ()) -> dict:
    out = {
        "path": rec.path, "name": rec.name, "size": rec.size, "allocated": rec.allocated,
        "dir": rec.is_dir, "orphan": rec.orphan, "inode": rec.prov.inode, "ads": rec.prov.ads or None,
        "volume_offset": rec.prov.volume_offset, "fs_type": rec.fs_type, "type": rec.type,
        "ext_mismatch": rec.ext_mismatch,
    }
    if hashes and not rec.is_dir:
        hashers = [hashlib.new(h) for h in hashes]
        try:
            for chunk in read_chunks(evidence, rec.prov):
                for h in hashers:
                    h.update(chunk)
            out.update({name: h.hexdigest() for name, h in zip(hashes, hashers)})
        except EvidenceError as exc:
            out.update({name: None for name in hashes})
            out["error"] = str(exc)
    elif hashes:
        out.update({name: None for name in hashes})
    out.update(mtime=iso(rec.mtime), atime=iso(rec.atime), ctime=iso(rec.ctime), crtime=iso(rec.crtime))
    return out


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 1e6 else f"{n:,} B"


def render_inspect(info: dict, console=None) -> None:
    """The human view of `describe`: a header, the partitions, the file systems, the gaps."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    console.print(f"[bold]{info['device']}[/bold]  {info['format']} ({info['reader']}), "
                  f"{_mb(info['media_size'])} ({info['media_size']:,} bytes), "
                  f"{len(info['paths'])} segment(s)")
    for name, value in info["stored_hashes"].items():
        console.print(f"  stored {name}: {value}")
    if info["partitions"]:
        t = Table(title=f"partition table: {info['partition_table']}", title_justify="left", box=box.SIMPLE)
        for col in ("slot", "offset", "length", "description"):
            t.add_column(col, justify="right" if col in ("slot", "offset", "length") else "left")
        for p in info["partitions"]:
            t.add_row(str(p["slot"]), f"{p['offset']:,}", _mb(p["length"]),
                      p["description"] + ("" if p["allocated"] else " [dim](not a volume)[/dim]"))
        console.print(t)
    else:
        console.print("partition table: none")
    t = Table(title="volumes", title_justify="left", box=box.SIMPLE, pad_edge=False, padding=(0, 1))
    for col in ("#", "offset", "size", "fs", "label", "block", "files", "deleted", "ADS"):
        t.add_column(col, justify="left" if col in ("fs", "label") else "right", no_wrap=col != "label")
    for v in info["volumes"]:
        files = v.get("files") or {}
        fs = v["fs_type"] or (f"[red]{v['encryption']}[/red]" if v["encryption"] else "[red]none[/red]")
        t.add_row(str(v["index"]), f"{v['offset']:,}", _mb(v["length"]), fs, v["label"],
                  str(v["block_size"] or ""), str(files.get("allocated", "")), str(files.get("deleted", "")),
                  str(files.get("streams", "")))
    console.print(t)
    if info["coverage"]:
        console.print("[bold red]not examined[/bold red]")
        for c in info["coverage"]:
            console.print(f"  {c['where']}: {c['reason']} ({_mb(c['bytes_not_examined'])})")
    else:
        console.print("coverage: every volume examined")
