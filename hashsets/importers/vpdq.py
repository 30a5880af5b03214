"""vPDQ (ThreatExchange video PDQ) files: the frames of known videos, grouped per video.

A line is one frame as `vpdq-hash-video` and the vpdq Python binding write it,
`frame_number,pdq_hex,quality,timestamp_seconds`; the older column order
`frame_number,quality,pdq_hex,timestamp` is read too. A file is one video, named by the file
(its stem); a file of several videos starts each with a line `# video: NAME`, or gives the name
as a fifth column. `triage export --format vpdq` writes that form, so an export imports back.

Every frame goes in as a PDQ entry of the set (frames of quality below 50 are left out and
counted, as for PDQ lists), tagged with its video, so a scan can apply the vPDQ rule per known
video (hashsets/vpdq.py) and a single frame can still be found as a picture.
"""
from __future__ import annotations

import re
from pathlib import Path

from hashsets.build import SetBuilder
from hashsets.importers import ImportOptions, SourceFacts

_HEX = r"([0-9a-fA-F]{64})"
_NUM = r"(\d{1,9})"
_TS = r"(\d+(?:\.\d*)?)"
_LINE = re.compile(rf"^{_NUM}\s*,\s*{_HEX}\s*,\s*(\d{{1,3}})\s*,\s*{_TS}\s*(?:,(.*))?$")
_OLD = re.compile(rf"^{_NUM}\s*,\s*(\d{{1,3}})\s*,\s*{_HEX}\s*(?:,\s*{_TS}\s*)?(?:,(.*))?$")
_VIDEO = re.compile(r"^#\s*video\s*:\s*(.+?)\s*$", re.I)
_BATCH = 100_000


def parse_line(line: str) -> tuple[str, int, str] | None:
    """(pdq hex, quality, video name or "") of one frame line; None when it is not one."""
    m = _LINE.match(line)
    if m:
        return m.group(2).lower(), int(m.group(3)), (m.group(5) or "").strip()
    m = _OLD.match(line)
    if m:
        return m.group(3).lower(), int(m.group(2)), (m.group(5) or "").strip()
    return None


def read(path: Path, builder: SetBuilder, options: ImportOptions) -> SourceFacts:
    size = max(1, path.stat().st_size)
    default = path.name.split(".")[0] or path.name
    current = default
    hexes: list[str] = []
    quality: list[int] = []
    vids: list[int] = []

    def flush() -> None:
        builder.add_hex("pdq", hexes, where="line", quality=quality, video=vids)
        hexes.clear(), quality.clear(), vids.clear()

    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8", "replace").strip()
            if not line:
                continue
            named = _VIDEO.match(line)
            if named:
                current = named.group(1)[:200]
                continue
            if line.startswith("#"):
                continue
            got = parse_line(line)
            if got is None or got[1] > 100:
                if not line.lower().startswith(("frame", "hash")):
                    builder.reject(f"line {line_no}", line)
                continue
            h, q, name = got
            hexes.append(h)
            quality.append(q)
            vids.append(builder.video_id(name[:200] or current))
            if len(hexes) >= _BATCH:
                flush()
                builder.progress(min(1.0, f.tell() / size))
    flush()
    builder.progress(1.0)
    return SourceFacts(detail={"videos": len(builder.videos)})
