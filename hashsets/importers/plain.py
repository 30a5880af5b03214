"""Plain hash lists: one MD5, SHA-1 or SHA-256 per line, in the shapes people actually send.

    d41d8cd98f00b204e9800998ecf8427e                     bare (the algorithm from the length)
    d41d8cd98f00b204e9800998ecf8427e  empty.txt          md5sum / sha1sum / sha256sum
    MD5 (empty.txt) = d41d8cd98f00b204e9800998ecf8427e   BSD style
    d41d8cd98f00b204e9800998ecf8427e,empty.txt           hash,filename CSV
    "md5","sha1","filename" then rows                    a CSV with a header naming its columns
                                                         (HashKeeper's `hash` column included)

An optional first line naming the hash type (X-Ways' `MD5` / `SHA-1`) or the columns is read
past; `#` lines are comments. Anything else is counted as rejected.
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

from hashsets.build import SetBuilder
from hashsets.importers import ImportOptions, SourceFacts

_WIDTH_ALG = {32: "md5", 40: "sha1", 64: "sha256"}
_COLUMN_ALG = {"md5": "md5", "sha1": "sha1", "sha-1": "sha1", "sha256": "sha256",
               "sha-256": "sha256", "sha2_256": "sha256", "hash": "*", "hashvalue": "*",
               "hash_value": "*", "value": "*"}
_LEAD = re.compile(r"^([0-9a-fA-F]{64}|[0-9a-fA-F]{40}|[0-9a-fA-F]{32})(?:$|[\s,;|*])")
_BSD = re.compile(r"^(?:MD5|SHA1|SHA256|SHA-1|SHA-256)\s*\(.*\)\s*=\s*([0-9a-fA-F]+)$", re.I)
_HEX = re.compile(r"[0-9a-fA-F]{32}|[0-9a-fA-F]{40}|[0-9a-fA-F]{64}")
_BATCH = 200_000


def read(path: Path, builder: SetBuilder, options: ImportOptions) -> SourceFacts:
    size = max(1, path.stat().st_size)
    out = {alg: [] for alg in _WIDTH_ALG.values()}
    lines = {alg: [] for alg in _WIDTH_ALG.values()}     # each hash's line, for rejections
    columns: dict[int, str] | None = None
    seen_data = False
    header = ""
    pending = 0
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8", "replace").strip()
            if not line or line.startswith("#"):
                continue
            found = _hashes(line, columns)
            if found is None and not seen_data and not header:
                cols = _header_columns(line)
                if cols is not None:
                    header, columns = line, (cols or None)
                    continue
            builder.source_records += 1
            if not found:
                builder.reject(f"line {line_no}", line)
                continue
            seen_data = True
            for h in found:
                alg = _WIDTH_ALG.get(len(h))
                if alg:
                    out[alg].append(h.lower())
                    lines[alg].append(line_no)
                    pending += 1
            if pending >= _BATCH:
                _flush(builder, out, lines)
                pending = 0
                builder.progress(min(1.0, f.tell() / size))
    _flush(builder, out, lines)
    builder.progress(1.0)
    return SourceFacts(detail={"header": header} if header else {})


def _flush(builder: SetBuilder, out: dict, lines: dict) -> None:
    for alg, lst in out.items():
        builder.add_hex(alg, lst, where="line", numbers=lines[alg])
        lst.clear()
        lines[alg].clear()


def _hashes(line: str, columns: dict[int, str] | None) -> list[str] | None:
    if columns:
        cells = next(csv.reader([line]), [])
        got = []
        for i, alg in columns.items():
            if i < len(cells):
                v = cells[i].strip()
                if _HEX.fullmatch(v) and (alg == "*" or _WIDTH_ALG[len(v)] == alg):
                    got.append(v)
        return got or None
    m = _LEAD.match(line)
    if m:
        return [m.group(1)]
    m = _BSD.match(line)
    if m and len(m.group(1)) in _WIDTH_ALG:
        return [m.group(1)]
    if line.startswith('"'):
        cells = next(csv.reader([line]), [])
        got = [c.strip() for c in cells if _HEX.fullmatch(c.strip())]
        return got or None
    return None


def _header_columns(line: str) -> dict[int, str] | None:
    """Column index -> algorithm ("*" = by length) for a header line; {} for a bare type line
    such as `MD5`; None when the line is no header."""
    cells = [c.strip().strip('"').strip().lower() for c in next(csv.reader([line]), [])]
    if len(cells) == 1 and cells[0] in _COLUMN_ALG:
        return {}
    cols = {i: _COLUMN_ALG[c] for i, c in enumerate(cells) if c in _COLUMN_ALG}
    if cols:
        return cols
    return None
