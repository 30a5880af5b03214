"""EnCase legacy `.hash` (v3/v4) files (docs/formats.md 3.2).

A 0x480-byte header (magic `HASH\\r\\n\\xff\\x00`, NumHashes at 0x10, the set name in UTF-16LE at
1032) then 18-byte records: a raw MD5 and 2 bytes of padding. No file names are stored. EnCase
7+ hash libraries are a different, folder-based format and are not read here.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from hashsets.build import SetBuilder
from hashsets.importers import ENCASE_MAGIC, ImportOptions, SourceFacts
from triage.errors import HashSetError

HEADER = 0x480
RECORD = 18


def read(path: Path, builder: SetBuilder, options: ImportOptions) -> SourceFacts:
    data = np.memmap(path, np.uint8, mode="r") if path.stat().st_size else np.zeros(0, np.uint8)
    if len(data) < HEADER or bytes(data[:8]) != ENCASE_MAGIC:
        raise HashSetError(f"{path.name} is not an EnCase .hash file (no HASH header)")
    declared = struct.unpack_from("<I", bytes(data[0x10:0x14]))[0]
    set_name = bytes(data[1032:1032 + 78]).decode("utf-16-le", "replace").split("\x00")[0]
    body = len(data) - HEADER
    count = body // RECORD
    if body % RECORD:
        builder.reject("tail", f"{body % RECORD} trailing bytes after {count} records")
    if declared != count:
        builder.reject("header", f"header says {declared} hashes, file holds {count}")
    records = np.asarray(data[HEADER:HEADER + count * RECORD]).reshape(count, RECORD)[:, :16]
    zero = ~records.any(1)                       # all-zero slots are padding, not hashes
    if zero.any():
        records = records[~zero]
    builder.add_digests("md5", np.ascontiguousarray(records))
    builder.progress(1.0)
    return SourceFacts(detail={"encase_set_name": set_name, "declared": declared})
