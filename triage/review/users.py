"""Reviewers: name, role, argon2 password hash and blur preference, in `$TRIAGE_HOME/users.db`.

Roles, least to most trusted:
- investigator: works the queue, grades findings, sees blurred pictures only;
- examiner: also reveals a clear picture, giving a reason each time (audited);
- supervisor: all of that, and reads the audit log.

The same file holds the service's own audit log (logins, failed logins, logouts, user
changes); each case's review file holds what was done to that case. The file is 0600.
"""
from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path
from typing import Optional

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from triage.errors import TriageError
from triage.home import triage_home
from triage.review.audit import AuditLog, private_db

ROLES = ("investigator", "examiner", "supervisor")
CLEAR_ROLES = frozenset({"examiner", "supervisor"})
AUDIT_ROLES = frozenset({"supervisor"})
MIN_PASSWORD = 10
BLUR_DEFAULT, BLUR_MIN, BLUR_MAX = 8, 3, 24
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    hash TEXT NOT NULL,
    created REAL NOT NULL,
    blur INTEGER NOT NULL DEFAULT 8,
    changed REAL NOT NULL DEFAULT 0     -- last password change: older sessions end
);
"""

_hasher = PasswordHasher()
# argon2's default costs 64 MiB per check: at most two checks at once, so a burst of logins
# (or of guesses) waits its turn instead of taking the server's memory (20 at once took 1.3 GB).
_VERIFY_SLOTS = threading.BoundedSemaphore(2)
# verified against when the name is unknown, so a wrong name costs the same time as a wrong password
_DUMMY_HASH = _hasher.hash("not a password of anyone")




def default_users_path() -> Path:
    return triage_home() / "users.db"


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise TriageError("a user name is 1-64 letters, digits and . _ @ -, starting with a "
                          "letter or digit")
    return name


def check_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise TriageError(f"a password needs at least {MIN_PASSWORD} characters")
    return password


class UserDB:
    """The users file. Thread-safe; created 0600 (its folder 0700) on first use."""

    def __init__(self, path: Optional[str | os.PathLike] = None):
        self.path = Path(path) if path is not None else default_users_path()
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = private_db(self.path, _SCHEMA, "users file")
        self.audit = AuditLog(self._db, self._lock)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "UserDB":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- changes (each one an audit event by `actor`) ----------------------------------------

    def add(self, name: str, role: str, password: str, actor: str) -> None:
        check_name(name)
        if role not in ROLES:
            raise TriageError(f"role must be one of {', '.join(ROLES)}")
        check_password(password)
        with self._lock:
            if self.get(name) is not None:
                raise TriageError(f"user {name!r} exists; change the password with "
                                  "`triage users passwd`")
            self._db.execute("INSERT INTO users (name, role, hash, created, blur) VALUES (?, ?, ?, ?, ?)",
                             (name, role, _hasher.hash(password), time.time(), BLUR_DEFAULT))
            self.audit.append(actor, "user add", name, {"role": role})

    def passwd(self, name: str, password: str, actor: str) -> None:
        check_password(password)
        with self._lock:
            self._require(name)
            self._db.execute("UPDATE users SET hash = ?, changed = ? WHERE name = ?",
                             (_hasher.hash(password), time.time(), name))
            self.audit.append(actor, "user passwd", name)

    def remove(self, name: str, actor: str) -> None:
        with self._lock:
            self._require(name)
            self._db.execute("DELETE FROM users WHERE name = ?", (name,))
            self.audit.append(actor, "user remove", name)

    def set_blur(self, name: str, blur: int) -> int:
        blur = max(BLUR_MIN, min(BLUR_MAX, int(blur)))
        with self._lock:
            self._require(name)
            self._db.execute("UPDATE users SET blur = ? WHERE name = ?", (blur, name))
        return blur

    # --- reading --------------------------------------------------------------------------

    def _require(self, name: str) -> dict:
        user = self.get(name)
        if user is None:
            raise TriageError(f"no user {name!r}")
        return user

    def get(self, name: str) -> Optional[dict]:
        with self._lock:
            row = self._db.execute("SELECT name, role, created, blur, changed FROM users "
                                   "WHERE name = ?", (name,)).fetchone()
        return None if row is None else {"name": row[0], "role": row[1], "created": row[2],
                                         "blur": row[3], "changed": row[4]}

    def list(self) -> list[dict]:
        with self._lock:
            rows = self._db.execute("SELECT name, role, created, blur FROM users ORDER BY name").fetchall()
        return [{"name": r[0], "role": r[1], "created": r[2], "blur": r[3]} for r in rows]

    def authenticate(self, name: str, password: str) -> Optional[dict]:
        """The user when the password is right, else None (same cost either way)."""
        with self._lock:
            row = self._db.execute("SELECT hash FROM users WHERE name = ?", (name,)).fetchone()
        stored = row[0] if row else _DUMMY_HASH
        try:
            with _VERIFY_SLOTS:
                _hasher.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if row is None:
            return None
        if _hasher.check_needs_rehash(stored):
            with self._lock:
                self._db.execute("UPDATE users SET hash = ? WHERE name = ?",
                                 (_hasher.hash(password), name))
        return self.get(name)
