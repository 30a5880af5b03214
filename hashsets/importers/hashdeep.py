"""hashdeep / md5deep audit files (docs/formats.md 3.1).

    %%%% HASHDEEP-1.0
    %%%% size,md5,sha256,filename
    ## comment lines
    1024,aabb...,ccdd...,/evidence/file.bin

The first column is always the size and the last the file name, which may itself contain
commas, so each line is split on the first N commas only. Algorithms other than MD5, SHA-1
and SHA-256 (tiger, whirlpool) are read past.
"""
from __future__ import annotations

from pathlib import Path

from hashsets.build import SetBuilder
from hashsets.importers import ImportOptions, SourceFacts
from triage.errors import HashSetError

_KNOWN = {"md5": "md5", "sha1": "sha1", "sha256": "sha256"}
_BATCH = 200_000


def read(path: Path, builder: SetBuilder, options: ImportOptions) -> SourceFacts:
    size = max(1, path.stat().st_size)
    with open(path, "rb") as f:
        first = f.readline().decode("utf-8-sig", "replace").strip()
        if not first.startswith("%%%% HASHDEEP-"):
            raise HashSetError(f"{path.name} is not a hashdeep file (first line {first[:40]!r})")
        second = f.readline().decode("utf-8", "replace").strip()
        if not second.startswith("%%%% size,"):
            raise HashSetError(f"{path.name}: hashdeep header line 2 must start with '%%%% size,' "
                               f"(got {second[:40]!r})")
        columns = [c.strip().lower() for c in second[5:].split(",")]
        if columns[-1] != "filename":
            raise HashSetError(f"{path.name}: hashdeep columns must end with filename ({second!r})")
        wanted = [(i, _KNOWN[c]) for i, c in enumerate(columns) if c in _KNOWN]
        if not wanted:
            raise HashSetError(f"{path.name}: hashdeep file without md5, sha1 or sha256 columns")
        nsplit = len(columns) - 1
        batches = {alg: [] for _, alg in wanted}
        firsts = 3
        for line_no, raw in enumerate(f, 3):
            line = raw.decode("utf-8", "replace").strip()
            if not line or line.startswith("#"):
                for lst in batches.values():
                    lst.append("")
                continue
            cells = line.split(",", nsplit)
            if len(cells) != len(columns) or not cells[0].strip().isdigit():
                builder.reject(f"line {line_no}", line)
                for lst in batches.values():
                    lst.append("")
                continue
            for i, alg in wanted:
                batches[alg].append(cells[i].strip().lower() or "-")
            if len(batches[wanted[0][1]]) >= _BATCH:
                for alg, lst in batches.items():
                    builder.add_hex(alg, lst, where="line", first=firsts)
                    lst.clear()
                firsts = line_no + 1
                builder.progress(min(1.0, f.tell() / size))
        for alg, lst in batches.items():
            builder.add_hex(alg, lst, where="line", first=firsts)
    builder.progress(1.0)
    return SourceFacts(detail={"columns": columns})
