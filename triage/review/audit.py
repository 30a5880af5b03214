"""An append-only, hash-chained audit log in SQLite.

Each event is (id, time, user, action, target, detail) plus `prev`, the SHA-256 of the event
before it (64 zeros for the first), and `hash`, the SHA-256 of the event's own canonical JSON
including `prev`. Changing, inserting or removing any event breaks the chain from that point,
and `verify` says where. Triggers refuse UPDATE and DELETE, so only someone who drops them on
purpose can edit the log, and then `triage audit verify` shows it. Removing the newest events
leaves a shorter chain that is still whole: note the head hash (`verify` prints it) in the case
file to pin the log's end.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from triage.errors import TriageError

GENESIS = "0" * 64

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    user TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '{}',
    prev TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""


def private_db(path: Path, schema: str, what: str) -> sqlite3.Connection:
    """A 0600 SQLite file in WAL mode with `schema` applied (the review and users files);
    autocommit, usable from any thread under the caller's lock."""
    # Never open and close a file descriptor of a database another connection of this process
    # may hold: closing any descriptor drops every POSIX lock the process has on the file, and
    # SQLite would then delete the write-ahead log under that connection.
    if not path.exists():
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
        except FileExistsError:
            pass
    os.chmod(path, 0o600)
    try:
        db = sqlite3.connect(str(path), timeout=30, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        # As the case store: a commit is in the log at once, on disk by the next checkpoint.
        # FULL made every device view wait for an fsync (the queue stalled behind them under
        # load); a power cut can lose the last events, never break the chain.
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(schema)
    except sqlite3.DatabaseError as exc:
        raise TriageError(f"{path} is not a triage {what}: {exc}") from exc
    for side in ("-wal", "-shm"):
        p = Path(str(path) + side)
        if p.exists():
            os.chmod(p, 0o600)
    return db


@dataclass(frozen=True)
class Event:
    id: int
    time: float
    user: str
    action: str
    target: str
    detail: dict
    prev: str
    hash: str

    def to_dict(self) -> dict:
        return {"id": self.id, "time": self.time,
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.time)),
                "user": self.user, "action": self.action, "target": self.target,
                "detail": self.detail, "prev": self.prev, "hash": self.hash}


def event_hash(id_: int, t: float, user: str, action: str, target: str, detail: str,
               prev: str) -> str:
    """SHA-256 of the event's canonical JSON. `detail` is hashed as stored (its JSON text)."""
    body = json.dumps([id_, repr(float(t)), user, action, target, detail, prev],
                      ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(body.encode("ascii")).hexdigest()


class AuditLog:
    """The `audit` table of one SQLite file (shared with other tables of that file)."""

    def __init__(self, db: sqlite3.Connection, lock: Optional[threading.RLock] = None):
        self._db = db
        self._lock = lock or threading.RLock()
        with self._lock:
            self._db.executescript(SCHEMA)

    def append(self, user: str, action: str, target: str = "", detail: Optional[dict] = None,
               now: Optional[float] = None) -> Event:
        detail_text = json.dumps(detail or {}, sort_keys=True, ensure_ascii=False, default=str)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                last = self._db.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
                id_, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
                t = time.time() if now is None else float(now)
                h = event_hash(id_, t, user, action, target, detail_text, prev)
                self._db.execute("INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                 (id_, t, user, action, target, detail_text, prev, h))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return Event(id_, t, user, action, target, detail or {}, prev, h)

    def events(self, after_id: int = 0, limit: Optional[int] = None,
               newest_first: bool = False) -> list[Event]:
        sql = "SELECT * FROM audit WHERE id > ? ORDER BY id" + (" DESC" if newest_first else "")
        params: tuple = (after_id,)
        if limit is not None:
            sql += " LIMIT ?"
            params += (int(limit),)
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        out = []
        for r in rows:
            try:
                detail = json.loads(r[5])
            except ValueError:
                detail = {"unreadable": r[5]}
            out.append(Event(r[0], r[1], r[2], r[3], r[4], detail if isinstance(detail, dict)
                             else {"value": detail}, r[6], r[7]))
        return out

    def verify(self) -> tuple[int, str, list[str]]:
        """Walks the chain: (events checked, head hash, problems). No problems: the log is whole."""
        problems: list[str] = []
        prev, expect_id, n = GENESIS, 1, 0
        with self._lock:
            cur = self._db.execute("SELECT id, time, user, action, target, detail, prev, hash "
                                   "FROM audit ORDER BY id")
            for id_, t, user, action, target, detail, stored_prev, stored_hash in cur:
                n += 1
                if id_ != expect_id:
                    problems.append(f"event {id_}: expected event {expect_id} (events missing)")
                if stored_prev != prev:
                    problems.append(f"event {id_}: does not follow the event before it "
                                    "(prev hash differs)")
                try:
                    actual = event_hash(id_, t, str(user), str(action), str(target), str(detail),
                                        str(stored_prev))
                except (TypeError, ValueError):
                    actual = ""
                if actual != stored_hash:
                    problems.append(f"event {id_}: content changed after it was written "
                                    "(hash differs)")
                prev, expect_id = stored_hash, id_ + 1
        return n, prev, problems
