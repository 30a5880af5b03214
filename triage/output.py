"""The output convention of every command, decided once (README, "Output convention").

- `--format table` (people), `json` (one document), `jsonl` (one object per line), `csv`.
- JSON times are ISO-8601 UTC strings ("2026-12-03T12:21:11Z"); tables show date, time, zone.
- `--out -` is standard output.
"""
from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone
from typing import Any, Iterable, Optional

# keys whose numbers are seconds since the epoch in the store and the records
TIME_KEYS = frozenset({"raised_at", "started", "finished", "ended", "created", "done_at",
                       "time", "mtime", "atime", "ctime", "crtime"})


def iso_time(t: Optional[float]) -> Optional[str]:
    """Seconds since the epoch as ISO-8601 UTC; None stays None."""
    if t is None:
        return None
    return datetime.fromtimestamp(float(t), timezone.utc).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


def table_time(t: Optional[float], seconds: bool = True) -> str:
    """A time for tables: date, time and zone ("2026-12-03 12:21:11 UTC"); '-' when unknown."""
    if not t:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC",
                         time.gmtime(float(t)))


def iso_times(obj: Any) -> Any:
    """`obj` with every epoch number under a TIME_KEYS key made ISO-8601 UTC, recursively."""
    if isinstance(obj, dict):
        return {k: (iso_time(v) if k in TIME_KEYS and isinstance(v, (int, float))
                    and not isinstance(v, bool) else iso_times(v)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [iso_times(v) for v in obj]
    return obj


def dumps(obj: Any, indent: Optional[int] = 2) -> str:
    return json.dumps(iso_times(obj), indent=indent, default=str)


def write_json(obj: Any, fh=None) -> None:
    (fh or sys.stdout).write(dumps(obj) + "\n")


def write_jsonl(rows: Iterable[Any], fh=None) -> None:
    fh = fh or sys.stdout
    for row in rows:
        fh.write(dumps(row, indent=None) + "\n")


def parse_time(text: str) -> float:
    """A date or date and time given by the user ("2026-12-03", "2026-12-03T12:00",
    "2026-12-03 12:00:00Z", "...+01:00"), as seconds since the epoch; naive times are UTC."""
    from triage.errors import TriageError

    raw = str(text).strip()
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise TriageError(f"not a date or time: {raw!r} (use 2026-12-03 or "
                          "2026-12-03T12:00:00Z)") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()
