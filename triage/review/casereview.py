"""What reviewers did to a case: grades and the case's audit log, in `CASE_DIR/review.sqlite`.

A file of its own beside `case.sqlite`, not tables in it: a scan holds the case store's write
lock for each batch, and a reviewer's grade must never wait on (or be rolled back with) a scan;
the case store's schema also belongs to the scan and is versioned with it. The review file is
0600 like the rest of the case (it names possibly illicit files).

A finding's id is stable: the first 32 hex digits of SHA-256 of its file key (device, volume,
inode, attribute, path, member), so the same file has the same id in every scan and export.
"""
from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Optional

from triage.errors import TriageError
from triage.review.audit import AuditLog, private_db

DB_NAME = "review.sqlite"
# CAID grades a reviewer can give; `uncategorised` means seen and not yet decided.
GRADES = ("A", "B", "C", "non-pertinent", "uncategorised")
MAX_NOTE = 2000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS grades (
    finding_id TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    key TEXT NOT NULL,
    grade TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    user TEXT NOT NULL,
    time REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS grades_device ON grades (device_id);
"""


def finding_id(key: str) -> str:
    """The stable id of the finding on the file with this key."""
    return hashlib.sha256(("triage finding\0" + key).encode("utf-8", "surrogatepass")).hexdigest()[:32]


class CaseReview:
    """Grades and audit events of one case. Thread-safe; one connection."""

    def __init__(self, case_dir: str | os.PathLike):
        self.case_dir = Path(case_dir)
        if not self.case_dir.is_dir():
            raise TriageError(f"{self.case_dir} is not a case directory")
        self.path = self.case_dir / DB_NAME
        self._lock = threading.RLock()
        self._db = private_db(self.path, _SCHEMA, "review file")
        self.audit = AuditLog(self._db, self._lock)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "CaseReview":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def data_version(self) -> int:
        """Changes whenever another connection (another server, the CLI) commits to this file."""
        with self._lock:
            return self._db.execute("PRAGMA data_version").fetchone()[0]

    def set_grade(self, *, device_id: str, key: str, grade: str, note: str, user: str,
                  now: Optional[float] = None) -> dict:
        """Stores a grade (replacing an earlier one) and its audit event."""
        if grade not in GRADES:
            raise ValueError(f"grade must be one of {', '.join(GRADES)}")
        note = (note or "")[:MAX_NOTE]
        fid = finding_id(key)
        t = time.time() if now is None else now
        with self._lock:
            before = self.grade(fid)
            self._db.execute("INSERT OR REPLACE INTO grades VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (fid, device_id, key, grade, note, user, t))
            self.audit.append(user, "grade", f"{device_id} {fid}",
                              {"grade": grade, "note": note, "before": before and before["grade"],
                               "key": key}, now=t)
        return {"id": fid, "grade": grade, "note": note, "user": user, "time": t}

    def grade(self, fid: str) -> Optional[dict]:
        with self._lock:
            row = self._db.execute("SELECT grade, note, user, time FROM grades WHERE finding_id = ?",
                                   (fid,)).fetchone()
        return None if row is None else {"grade": row[0], "note": row[1], "user": row[2],
                                         "time": row[3]}

    def grades(self, device_id: Optional[str] = None) -> dict[str, dict]:
        """file key -> {grade, note, user, time, id}."""
        sql, params = "SELECT finding_id, key, grade, note, user, time FROM grades", ()
        if device_id is not None:
            sql, params = sql + " WHERE device_id = ?", (device_id,)
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return {r[1]: {"id": r[0], "grade": r[2], "note": r[3], "user": r[4], "time": r[5]}
                for r in rows}

    def graded_counts(self) -> dict[str, int]:
        """device id -> number of graded findings."""
        with self._lock:
            rows = self._db.execute("SELECT device_id, COUNT(*) FROM grades GROUP BY device_id").fetchall()
        return {r[0]: r[1] for r in rows}


def open_review(case_dir) -> Optional[CaseReview]:
    """The case's review file when it exists (reading a case never creates one)."""
    if not (Path(case_dir) / DB_NAME).is_file():
        return None
    return CaseReview(case_dir)
