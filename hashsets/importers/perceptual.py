"""Perceptual hash lists: PDQ and pHash.

PDQ lines come as the hasher writes them, `hash,quality[,name]` (pdq/python/README.md), or as a
ThreatExchange file-exchange line `pdq <64 hex>`, or bare 64 hex with `--format pdq`. Entries
of quality below 50 are left out of the index and counted (they match near-blank pictures).
pHash lines are 16 hex (imagehash's 64-bit default), optionally `phash <hex>` or `hex,name`.
Both are stored lower-case, bit order as written.
"""
from __future__ import annotations

import re
from pathlib import Path

from hashsets.build import SetBuilder
from hashsets.importers import ImportOptions, SourceFacts

_PDQ = re.compile(r"^(?:pdq\s+)?([0-9a-fA-F]{64})\s*(?:,\s*(\d{1,3})\s*)?(?:,.*)?$")
_VPDQ = re.compile(r"^\d+\s*,\s*(\d{1,3})\s*,\s*([0-9a-fA-F]{64})\s*(?:,.*)?$")
_PHASH = re.compile(r"^(?:phash\s+)?([0-9a-fA-F]{16})\s*(?:[,\s].*)?$")
_BATCH = 100_000


def read(path: Path, builder: SetBuilder, options: ImportOptions) -> SourceFacts:
    pdq = options.format == "pdq"
    size = max(1, path.stat().st_size)
    hexes, quality, first = [], [], 1
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8", "replace").strip()
            if not line or line.startswith("#"):
                continue
            if pdq:
                m = _PDQ.match(line)
                if m:
                    h, q = m.group(1), m.group(2)
                else:
                    m = _VPDQ.match(line)          # vPDQ frame lines: frame,quality,hash[,ts]
                    h, q = (m.group(2), m.group(1)) if m else ("", None)
                if not h or (q is not None and int(q) > 100):
                    if not _header(line):
                        builder.reject(f"line {line_no}", line)
                    continue
                hexes.append(h.lower())
                quality.append(int(q) if q is not None else -1)
            else:
                m = _PHASH.match(line)
                if not m:
                    if not _header(line):
                        builder.reject(f"line {line_no}", line)
                    continue
                hexes.append(m.group(1).lower())
            if len(hexes) >= _BATCH:
                builder.add_hex(options.format, hexes, where="line", first=first,
                                quality=quality if pdq else None)
                hexes, quality = [], []
                builder.progress(min(1.0, f.tell() / size))
    builder.add_hex(options.format, hexes, where="line", quality=quality if pdq else None)
    builder.progress(1.0)
    return SourceFacts()


def _header(line: str) -> bool:
    """A column-name line such as `hash,quality,filename`, read past without complaint."""
    low = line.lower()
    return low.startswith(("hash", "pdq,", "phash,", "signal", "frame"))
