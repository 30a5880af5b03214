"""One importer per hash-set format, and format detection from content.

Every importer is a module with `read(path, builder, options) -> SourceFacts`: it streams the
file into a `hashsets.build.SetBuilder`, rejects (counts, never raises on) malformed records,
and raises `HashSetError` only when the file is not a hash set of its format at all.
"""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from triage.errors import HashSetError

FORMATS = ("vics", "nsrl-rdsv3", "nsrl-txt", "hashdeep", "plain", "encase", "pdq", "phash",
           "vpdq")
_MODULES = {"vics": "vics", "nsrl-rdsv3": "nsrl", "nsrl-txt": "nsrl", "hashdeep": "hashdeep",
            "plain": "plain", "encase": "encase", "pdq": "perceptual", "phash": "perceptual",
            "vpdq": "vpdq"}

SQLITE_MAGIC = b"SQLite format 3\x00"
ENCASE_MAGIC = b"HASH\r\n\xff\x00"
_HEX_LINE = re.compile(rb"^\s*(?:(?:MD5|SHA1|SHA256)\s*\(.*\)\s*=\s*)?([0-9a-fA-F]{32}|[0-9a-fA-F]{40}|[0-9a-fA-F]{64})\b")
_PDQ_LINE = re.compile(rb"^\s*(?:pdq\s+[0-9a-fA-F]{64}\s*$|[0-9a-fA-F]{64}\s*,\s*\d{1,3}\s*(?:,|$))")
# vPDQ frame lines: frame,hash,quality,seconds (ThreatExchange), or frame,quality,hash[,seconds]
_VPDQ_LINE = re.compile(rb"^\s*\d+\s*,\s*(?:[0-9a-fA-F]{64}\s*,\s*\d{1,3}\s*,\s*\d|\d{1,3}\s*,\s*[0-9a-fA-F]{64}\s*(?:,|$))")
_PHASH_LINE = re.compile(rb"^\s*(?:phash\s+)?[0-9a-fA-F]{16}\s*(?:[,\s].*)?$")


@dataclass
class ImportOptions:
    format: str
    role: str
    profile: Optional[str] = None         # VICS profile override (UK, US, ...)


@dataclass
class SourceFacts:
    """What an importer learnt about its source beyond the hashes."""

    version: str = ""                     # the source's own version string, when it has one
    source_date: str = ""
    profile: str = ""                     # VICS profile from the context URL
    detail: dict = field(default_factory=dict)


def importer(fmt: str):
    if fmt not in _MODULES:
        raise HashSetError(f"unknown hash-set format {fmt!r}; known: {', '.join(FORMATS)}")
    return importlib.import_module(f"hashsets.importers.{_MODULES[fmt]}")


def detect(path: Path) -> str:
    """The format of `path`, from its content. HashSetError when it is no hash set we know."""
    try:
        with open(path, "rb") as f:
            head = f.read(65536)
    except IsADirectoryError:
        raise HashSetError(f"{path} is a directory, not a hash-set file") from None
    if head.startswith(SQLITE_MAGIC):
        return "nsrl-rdsv3"
    if head.startswith(ENCASE_MAGIC):
        return "encase"
    text = head[3:] if head.startswith(b"\xef\xbb\xbf") else head
    stripped = text.lstrip()
    if stripped[:1] in (b"{", b"["):
        return "vics"
    if b"\x00" in head:
        raise HashSetError(f"{path.name} is not a hash set (binary content of no known format)")
    if re.search(rb"^\s*(INSERT|UPDATE|DELETE)\s.*\b(FILE|METADATA|PACKAGE_OBJECT)\b", head, re.I | re.M):
        raise HashSetError(f"{path.name} looks like an NSRL RDSv3 delta (SQL): apply it to the "
                           "matching RDS database with `sqlite3 RDS.db '.read FILE'` and import "
                           "the database again")
    lines = [ln for ln in stripped.splitlines()[:200] if ln.strip() and not ln.lstrip().startswith(b"#")]
    if not lines:
        raise HashSetError(f"{path.name} is not a hash set (no hash lines)")
    if lines[0].startswith(b"%%%% HASHDEEP-"):
        return "hashdeep"
    first = lines[0].replace(b" ", b"").upper()
    if first.startswith(b'"SHA-1","') or first.startswith(b'"SHA-1",'):
        return "nsrl-txt"
    sample = lines[:50]
    if any(_VPDQ_LINE.match(ln) for ln in sample):
        return "vpdq"
    if any(_PDQ_LINE.match(ln) for ln in sample):
        return "pdq"
    hashy = sum(1 for ln in sample if _HEX_LINE.match(ln) or _csv_hash(ln))
    if hashy:
        return "plain"
    if sum(1 for ln in sample if _PHASH_LINE.match(ln)) >= max(1, len(sample) // 2):
        return "phash"
    raise HashSetError(f"{path.name} is not a hash set (no MD5, SHA-1, SHA-256, PDQ or pHash "
                       "values in its first lines; use --format to force one)")


def _csv_hash(line: bytes) -> bool:
    return any(re.fullmatch(rb'\s*"?([0-9a-fA-F]{32}|[0-9a-fA-F]{40}|[0-9a-fA-F]{64})"?\s*', cell)
               for cell in line.split(b","))
