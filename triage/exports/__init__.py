"""Exports of a case for other tools: VICS 2.0, CASE/UCO JSON-LD, CSV, DFXML, vPDQ, and the HTML
report.

Every export reads the case store only, and is written 0600 through a temporary file renamed
into place, so a half-written export never looks like a whole one.
"""
from __future__ import annotations

import datetime as _dt
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

from triage.errors import TriageError

FORMATS = ("vics", "case", "csv", "dfxml", "vpdq")


@contextmanager
def private_output(path, mode: str = "w", encoding: Optional[str] = "utf-8"):
    """Open a temporary 0600 file beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise TriageError(f"output folder {parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, mode, encoding=encoding if "b" not in mode else None,
                       **({"newline": ""} if "b" not in mode else {})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def iso_utc(t: Optional[float]) -> Optional[str]:
    """POSIX seconds as an ISO 8601 UTC time ending in Z (None stays None)."""
    if t is None:
        return None
    t = float(t)
    if t.is_integer() and 0 <= t < 253402300800:    # the common case, without datetime
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
    moment = _dt.datetime.fromtimestamp(t, _dt.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def export(store, fmt: str, out, device_id: Optional[str] = None) -> str:
    """Write one export; returns a one-line summary of what was written."""
    if fmt == "vics":
        from triage.exports.vics import write_vics as write
    elif fmt == "case":
        from triage.exports.case_uco import write_case as write
    elif fmt == "csv":
        from triage.exports.csv import write_csv as write
    elif fmt == "dfxml":
        from triage.exports.dfxml import write_dfxml as write
    elif fmt == "vpdq":
        from triage.exports.vpdq import write_vpdq as write
    else:
        raise TriageError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return write(store, out, device_id=device_id)
