"""Case context: what the investigation knows about each device's owner.

A context file has one row per device, as CSV (with a header) or JSON (a list of objects, an
object with a "devices" list, or an object keyed by evidence name). Columns:

| column              | meaning                                                              |
|---------------------|----------------------------------------------------------------------|
| evidence            | evidence file name or path (required; how a row finds its device)    |
| exhibit             | exhibit reference, e.g. "JB/1"                                       |
| suspect             | suspect's name or reference                                          |
| access_to_children  | none, lives_with, works_with, other, unknown (blank means unknown)   |
| custody_deadline    | ISO date or date-time the suspect must be charged or released by     |
| notes               | free text                                                            |

"unknown" is a reason to ask, never the same as "none": rank treats it as such.
"""
from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
from pathlib import Path
from typing import Iterable, Optional

from triage.errors import TriageError

ACCESS_LEVELS = ("none", "lives_with", "works_with", "other", "unknown")
# Suspects with these kinds of access to children raise CHILD_ACCESS flags.
CHILD_ACCESS_LEVELS = frozenset({"lives_with", "works_with", "other"})
# How each level reads in a reason or a flag message ("suspect lives with children").
ACCESS_PHRASES = {
    "lives_with": "lives with children",
    "works_with": "works with children",
    "other": "has other access to children",
    "unknown": "access to children unknown",
    "none": "no known access to children",
}
FIELDS = ("evidence", "exhibit", "suspect", "access_to_children", "custody_deadline", "notes")

# Common spellings people type in a spreadsheet, mapped to the canonical level.
_ACCESS_ALIASES = {
    "lives with": "lives_with", "lives-with": "lives_with", "liveswith": "lives_with",
    "works with": "works_with", "works-with": "works_with", "workswith": "works_with",
    "no": "none", "n/a": "unknown", "?": "unknown",
}


def parse_access(value, where: str = "") -> str:
    """The canonical access level; blank or missing means unknown, anything else is an error."""
    text = "" if value is None else str(value).strip().lower()
    if not text:
        return "unknown"
    text = _ACCESS_ALIASES.get(text, text)
    if text not in ACCESS_LEVELS:
        raise TriageError(
            f"{where}access_to_children {value!r} is not one of {', '.join(ACCESS_LEVELS)}")
    return text


def parse_deadline(value, where: str = "") -> Optional[str]:
    """An ISO date (or date-time) normalised to its ISO text, or None when blank."""
    text = "" if value is None else str(value).strip()
    if not text:
        return None
    try:
        if len(text) == 10:
            return _dt.date.fromisoformat(text).isoformat()
        return _dt.datetime.fromisoformat(text.replace("Z", "+00:00")).isoformat()
    except ValueError:
        raise TriageError(
            f"{where}custody_deadline {value!r} is not an ISO date (YYYY-MM-DD)") from None


def deadline_datetime(deadline: Optional[str]) -> Optional[_dt.datetime]:
    """A deadline as an aware UTC datetime (a bare date means the end of that day, UTC)."""
    if not deadline:
        return None
    if len(deadline) == 10:
        day = _dt.date.fromisoformat(deadline)
        return _dt.datetime.combine(day, _dt.time(23, 59, 59), tzinfo=_dt.timezone.utc)
    moment = _dt.datetime.fromisoformat(deadline)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    return moment


def normalise_row(row: dict, where: str = "") -> dict:
    """One context row with every field present and checked."""
    lowered = {str(k).strip().lower(): v for k, v in row.items() if k is not None}
    evidence = str(lowered.get("evidence") or "").strip()
    if not evidence:
        raise TriageError(f"{where}row has no evidence")
    where = f"{where}{evidence}: "
    return {
        "evidence": evidence,
        "exhibit": str(lowered.get("exhibit") or "").strip(),
        "suspect": str(lowered.get("suspect") or "").strip(),
        "access_to_children": parse_access(lowered.get("access_to_children"), where),
        "custody_deadline": parse_deadline(lowered.get("custody_deadline"), where),
        "notes": str(lowered.get("notes") or "").strip(),
    }


def _rows_from_json(data) -> list[dict]:
    if isinstance(data, dict) and isinstance(data.get("devices"), list):
        data = data["devices"]
    elif isinstance(data, dict):
        data = [dict(v, evidence=v.get("evidence") or k) for k, v in data.items()
                if isinstance(v, dict)]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise TriageError("context JSON must be a list of objects, one per device")
    return data


def load_context(path) -> dict[str, dict]:
    """Read a context file; keys are evidence file names (basenames), values normalised rows."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise TriageError(f"context file not found: {path}") from None
    except UnicodeDecodeError:
        raise TriageError(f"context file is not UTF-8 text: {path}") from None
    where = f"{path.name}: "
    if text.lstrip().startswith(("[", "{")):
        try:
            rows = _rows_from_json(json.loads(text))
        except json.JSONDecodeError as exc:
            raise TriageError(f"{where}not valid JSON ({exc.msg} at line {exc.lineno})") from None
        except RecursionError:
            raise TriageError(f"{where}JSON nested too deeply to be a context file") from None
    else:
        reader = csv.DictReader(io.StringIO(text))
        try:
            if not reader.fieldnames or "evidence" not in [f.strip().lower() for f in reader.fieldnames]:
                raise TriageError(f"{where}CSV needs a header row with an 'evidence' column")
            rows = [r for r in reader
                    if any((v or "").strip() for v in r.values() if isinstance(v, str))]
        except csv.Error as exc:        # a field over the csv module's limit, a NUL byte, ...
            raise TriageError(f"{where}not a readable CSV file (line {reader.line_num}: "
                              f"{exc})") from None
    contexts: dict[str, dict] = {}
    for row in rows:
        clean = normalise_row(row, where)
        name = os.path.basename(clean["evidence"].rstrip("/\\")) or clean["evidence"]
        if name in contexts:
            raise TriageError(f"{where}evidence {name!r} appears twice")
        contexts[name] = clean
    return contexts


def match_context(contexts: dict[str, dict], evidence_paths: Iterable[str]) -> Optional[dict]:
    """The context row for a device, matched by full path first, then by file name."""
    paths = [str(p) for p in evidence_paths]
    if not contexts or not paths:
        return None
    resolved = {os.path.realpath(p) for p in paths}
    for row in contexts.values():
        ev = row["evidence"]
        if os.sep in ev or "/" in ev:
            if ev in paths or os.path.realpath(ev) in resolved:
                return row
    for p in paths:
        name = os.path.basename(p.rstrip("/\\"))
        if name in contexts:
            return contexts[name]
    return None


def attach_context(store, contexts: dict[str, dict]) -> dict:
    """Sets each device's context from the rows that match it (by evidence path or name, then
    by device id). Returns {"matched": {device: exhibit}, "devices_without_context": [...],
    "rows_without_device": [...]}: the CLI's `context set` and the review service share it."""
    matched, used = {}, set()
    devices = store.devices()
    for dev in devices:
        row = match_context(contexts, dev["paths"] or [dev["id"]]) or contexts.get(dev["id"])
        if row is not None:
            store.set_context(dev["id"], row)
            matched[dev["id"]] = row.get("exhibit", "")
            used.add(row["evidence"])
    return {"matched": matched,
            "devices_without_context": [d["id"] for d in devices if d["id"] not in matched],
            "rows_without_device": sorted(r["evidence"] for r in contexts.values()
                                          if r["evidence"] not in used)}
