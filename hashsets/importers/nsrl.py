"""NIST NSRL: RDSv3 SQLite (minimal and full layouts) and the legacy RDS 2.x `NSRLFile.txt`.

NSRL is known *software*, not known *good* (it holds hacking tools and some pictures), so the
store refuses to import it with any role but `ignore`.

RDSv3 layouts (docs/formats.md 2.2): minimal has a FILE table and a DISTINCT_HASH view; full has
FILE, PKG, OS and MFG as views over normalised tables. Both answer `SELECT md5, sha1, sha256 FROM
FILE`, which is read in large batches and deduplicated by the compiler rather than through the
DISTINCT_HASH view (SQLite's DISTINCT over tens of millions of rows sorts on disk). The database
is opened read-only and immutable, so no journal or WAL file is ever written next to it.
"""
from __future__ import annotations

import csv
import sqlite3
from pathlib import Path
from urllib.parse import quote

from hashsets.build import SetBuilder
from hashsets.importers import ImportOptions, SourceFacts
from triage.errors import HashSetError

_FETCH = 100_000


def read(path: Path, builder: SetBuilder, options: ImportOptions) -> SourceFacts:
    if options.format == "nsrl-txt":
        return read_txt(path, builder)
    return read_rdsv3(path, builder)


def _connect(path: Path) -> sqlite3.Connection:
    uri = f"file:{quote(str(path.resolve()))}?mode=ro&immutable=1"
    return sqlite3.connect(uri, uri=True)


def read_rdsv3(path: Path, builder: SetBuilder) -> SourceFacts:
    """An NSRL RDSv3 SQLite database; a damaged one (corrupt pages met part-way) is one error
    naming the file, never a traceback."""
    try:
        return _read_rdsv3(path, builder)
    except sqlite3.DatabaseError as exc:
        raise HashSetError(f"{path.name}: damaged SQLite database ({exc})") from None


def _read_rdsv3(path: Path, builder: SetBuilder) -> SourceFacts:
    try:
        con = _connect(path)
        objects = {(r[0].upper(), r[1]) for r in con.execute("SELECT name, type FROM sqlite_master")}
    except sqlite3.DatabaseError as exc:
        raise HashSetError(f"{path.name}: not a readable SQLite database ({exc})") from None
    names = {n for n, _ in objects}
    if ("DISTINCT_HASH", "view") in objects:
        layout = "minimal"
    elif ("FILE", "view") in objects:
        layout = "full"
    elif "FILE" in names:
        layout = "minimal"          # a minimal DB whose DISTINCT_HASH view was dropped
    else:
        raise HashSetError(f"{path.name} is an SQLite database but not an NSRL RDSv3 "
                           "(no FILE table or view)")
    cols = {r[1].lower() for r in con.execute("PRAGMA table_info(FILE)")}
    algs = [a for a in ("md5", "sha1", "sha256") if a in cols]
    if not algs:
        raise HashSetError(f"{path.name}: NSRL FILE has no md5, sha1 or sha256 column")
    total = None
    if layout == "minimal":
        total = con.execute("SELECT max(rowid) FROM FILE").fetchone()[0] or 0
    widths = {"md5": 32, "sha1": 40, "sha256": 64}
    good = " AND ".join(f"length({a}) = {widths[a]}" for a in algs)
    row_no = 0
    # Fast path: one concatenated string per well-formed row, so Python handles one object per
    # row and one bytes.fromhex per batch. Rows with a missing or odd-length hash come after.
    cur = con.execute(f"SELECT {' || '.join(algs)} FROM FILE WHERE {good}")
    while True:
        rows = cur.fetchmany(_FETCH)
        if not rows:
            break
        row_no += len(rows)
        _add_rows(builder, algs, [r[0] for r in rows], widths)
        builder.progress(min(1.0, row_no / total) if total else None)
    cur = con.execute(f"SELECT rowid, {', '.join(algs)} FROM FILE WHERE NOT ({good})")
    while True:
        rows = cur.fetchmany(_FETCH)
        if not rows:
            break
        for row in rows:
            for alg, value in zip(algs, row[1:]):
                if value:
                    builder.add_hex(alg, [value], 0, where="row", first=row[0])
    version, detail = "", {"layout": layout}
    if "VERSION" in names:
        try:
            row = con.execute("SELECT version, build_set, release_date FROM VERSION").fetchone()
            if row:
                version = str(row[0])
                detail.update(build_set=str(row[1]), release_date=str(row[2]))
        except sqlite3.DatabaseError:
            pass
    con.close()
    return SourceFacts(version=version, source_date=detail.get("release_date", ""), detail=detail)


def _add_rows(builder: SetBuilder, algs: list[str], joined: list[str], widths: dict) -> None:
    import numpy as np

    from hashsets.build import hex_to_digests

    total = sum(widths[a] for a in algs) // 2
    arr, bad = hex_to_digests(joined, total)
    if bad:                      # non-hex characters somewhere: one hash at a time for those
        for i in bad:
            pos = 0
            for alg in algs:
                builder.add_hex(alg, [joined[i][pos:pos + widths[alg]]], where="row", first=i)
                pos += widths[alg]
    pos = 0
    for alg in algs:
        w = widths[alg] // 2
        builder.add_digests(alg, np.ascontiguousarray(arr[:, pos:pos + w]))
        pos += w


def read_txt(path: Path, builder: SetBuilder) -> SourceFacts:
    """RDS 2.x NSRLFile.txt: quoted CSV with a header; v2 ("SHA-1","MD5",...) or v1 (with MD4)."""
    size = max(1, path.stat().st_size)
    with open(path, "r", encoding="utf-8-sig", errors="replace", newline="") as f:
        reader = csv.reader(f)
        header = [h.strip().upper() for h in next(reader, [])]
        if "SHA-1" not in header or "MD5" not in header:
            raise HashSetError(f"{path.name} is not an NSRLFile.txt (header {header[:4]})")
        i_sha1, i_md5 = header.index("SHA-1"), header.index("MD5")
        need = max(i_sha1, i_md5)
        sha1s, md5s = [], []
        first = line = 2
        for line, row in enumerate(reader, 2):
            if len(row) <= need:
                if row:
                    builder.reject(f"line {line}", ",".join(row))
                sha1s.append("")
                md5s.append("")
                continue
            sha1s.append(row[i_sha1].strip().lower())
            md5s.append(row[i_md5].strip().lower())
            if len(sha1s) >= _FETCH:
                builder.add_hex("sha1", sha1s, where="line", first=first)
                builder.add_hex("md5", md5s, where="line", first=first)
                sha1s, md5s, first = [], [], line + 1
                builder.progress(min(1.0, f.buffer.tell() / size))
        builder.add_hex("sha1", sha1s, where="line", first=first)
        builder.add_hex("md5", md5s, where="line", first=first)
    builder.progress(1.0)
    return SourceFacts(detail={"layout": "rds2-txt", "columns": header})
