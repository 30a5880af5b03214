"""The case store: one SQLite file per case, `CASE_DIR/case.sqlite`, in WAL mode.

It holds everything a scan found (devices, volumes, coverage, files with their features,
matches, scores, flags) and the scan runs that produced it. Every write is idempotent, keyed by
the record keys, so a resumed scan writes the same rows as an uninterrupted one. A batch's
results land in one transaction together with the batch's "done" mark: after a crash a batch is
either wholly stored or will be scanned again.

The case directory holds derivatives of possibly illicit material (thumbnails, paths), so it is
created 0700 and its files 0600.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import operator
import os
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

from triage.errors import TriageError
from triage.records import (
    Coverage,
    EvidenceRef,
    Exif,
    Features,
    FileRecord,
    Flag,
    Match,
    Provenance,
    UNPARTITIONED_OFFSET,
    Score,
    VideoFrame,
    VolumeRef,
    device_keys,
)

DB_NAME = "case.sqlite"
SCHEMA_VERSION = 3     # 2: structured provenance and coverage (kind, where, bytes)
                       # 3: every scan run's results kept per device (device_runs, archived_*)
_KEY_CHUNK = 500          # keys per IN (...) query, below SQLite's variable limit

_RUNS_SCHEMA = """
CREATE TABLE IF NOT EXISTS device_runs (  -- which scan runs examined which device
    run_id INTEGER NOT NULL,
    device_id TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'scanning',
    started REAL,
    finished REAL,
    counts TEXT NOT NULL DEFAULT '{}',      -- JSON of CaseStore.counts when the device ended
    live INTEGER NOT NULL DEFAULT 1,        -- 1: results in the result tables, 0: archived_*
    PRIMARY KEY (run_id, device_id)
);
CREATE TABLE IF NOT EXISTS case_info (    -- the case reference and other case-wide facts
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tool_version TEXT NOT NULL,
    hashsets TEXT NOT NULL,          -- JSON list of {name, version, role, ...}
    model TEXT,                      -- JSON {name, version, sha256} or NULL
    operator TEXT NOT NULL,
    options TEXT NOT NULL,           -- JSON of the scan options
    started REAL NOT NULL,
    ended REAL,
    status TEXT NOT NULL DEFAULT 'running'
);
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY,
    paths TEXT NOT NULL,             -- JSON list, every segment in order
    format TEXT NOT NULL,
    media_size INTEGER NOT NULL,
    stored_hashes TEXT NOT NULL DEFAULT '{}',
    verified_hashes TEXT NOT NULL DEFAULT '{}',
    context TEXT NOT NULL DEFAULT '{}',
    started REAL,
    finished REAL,
    status TEXT NOT NULL DEFAULT 'pending'
);
CREATE TABLE IF NOT EXISTS volumes (
    device_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    length INTEGER NOT NULL,
    description TEXT NOT NULL,
    fs_type TEXT,
    label TEXT NOT NULL DEFAULT '',
    block_size INTEGER NOT NULL DEFAULT 0,
    encryption TEXT,
    unallocated INTEGER NOT NULL DEFAULT -1,   -- bytes free by the allocation map, -1 unknown
    PRIMARY KEY (device_id, offset, idx)
);
CREATE TABLE IF NOT EXISTS coverage (
    device_id TEXT NOT NULL,
    key TEXT NOT NULL,               -- Coverage.key: kind + where
    kind TEXT NOT NULL,              -- one of triage.records.COVERAGE_KINDS
    "where" TEXT NOT NULL,           -- JSON of the Provenance that reaches the bytes
    reason TEXT NOT NULL,
    bytes_not_examined INTEGER NOT NULL DEFAULT 0,
    bytes_expected INTEGER NOT NULL DEFAULT 0,
    bytes_read INTEGER NOT NULL DEFAULT 0,
    volume_offset INTEGER,
    batch_id TEXT NOT NULL DEFAULT '',  -- the scan batch that gave up, when one did
    PRIMARY KEY (device_id, key, reason)
);
CREATE TABLE IF NOT EXISTS files (
    key TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    batch_id TEXT NOT NULL DEFAULT '',
    volume_offset INTEGER NOT NULL,
    volume_index INTEGER,
    inode INTEGER,
    path TEXT NOT NULL,
    name TEXT NOT NULL,
    ads TEXT NOT NULL DEFAULT '',
    attr_type INTEGER NOT NULL DEFAULT 0,
    attr_id INTEGER NOT NULL DEFAULT 0,
    member TEXT NOT NULL DEFAULT '', -- for people and queries (`prov` holds the member chain)
    prov TEXT,                       -- JSON of the whole Provenance, where the columns cannot
                                     -- hold it (a member chain, a parent and range, a snapshot)
    size INTEGER NOT NULL,
    allocated INTEGER NOT NULL,
    fs_type TEXT NOT NULL DEFAULT '',
    is_dir INTEGER NOT NULL DEFAULT 0,
    orphan INTEGER NOT NULL DEFAULT 0,
    mtime REAL, atime REAL, ctime REAL, crtime REAL,
    type TEXT NOT NULL DEFAULT '',
    ext_mismatch INTEGER NOT NULL DEFAULT 0,
    md5 TEXT NOT NULL DEFAULT '',
    sha1 TEXT NOT NULL DEFAULT '',
    sha256 TEXT NOT NULL DEFAULT '',
    is_picture INTEGER NOT NULL DEFAULT 0,
    width INTEGER NOT NULL DEFAULT 0,
    height INTEGER NOT NULL DEFAULT 0,
    pdq TEXT NOT NULL DEFAULT '',
    pdq_quality INTEGER NOT NULL DEFAULT 0,
    phash TEXT NOT NULL DEFAULT '',
    exif TEXT,                       -- JSON {make, model, datetime_original, gps} or NULL
    thumbnail BLOB,
    error TEXT NOT NULL DEFAULT '',
    extra TEXT NOT NULL DEFAULT '{}' -- JSON of record fields added after this schema
);
-- a device's files are a range of keys (records.device_keys): no index of (device, key)
CREATE TABLE IF NOT EXISTS matches (
    key TEXT NOT NULL,
    device_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    value TEXT NOT NULL,
    set_name TEXT NOT NULL,
    set_version TEXT NOT NULL,
    role TEXT NOT NULL,
    category TEXT NOT NULL DEFAULT '',
    severity INTEGER NOT NULL DEFAULT 0,
    distance INTEGER NOT NULL DEFAULT 0,
    detail TEXT NOT NULL DEFAULT '{}', -- JSON: a video match's frames and vPDQ shares
    PRIMARY KEY (key, kind, algorithm, set_name, value)
);
CREATE INDEX IF NOT EXISTS matches_device ON matches (device_id);
CREATE TABLE IF NOT EXISTS scores (
    key TEXT NOT NULL,
    device_id TEXT NOT NULL,
    model TEXT NOT NULL,
    model_sha256 TEXT NOT NULL,
    "values" TEXT NOT NULL,
    frames TEXT NOT NULL DEFAULT '[]', -- JSON: a video's scored frames [number, seconds, values]
    PRIMARY KEY (key, model)
);
CREATE INDEX IF NOT EXISTS scores_device ON scores (device_id);
CREATE TABLE IF NOT EXISTS model_skips (  -- pictures the model cascade did not send, and why
    key TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS model_skips_device ON model_skips (device_id);
CREATE TABLE IF NOT EXISTS flags (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    code TEXT NOT NULL,
    severity INTEGER NOT NULL,
    device_id TEXT NOT NULL,
    key TEXT NOT NULL,
    raised_at REAL NOT NULL,
    message TEXT NOT NULL,
    provenance TEXT NOT NULL DEFAULT '{}',
    UNIQUE (code, device_id, key)
);
CREATE TABLE IF NOT EXISTS batches (
    device_id TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    files INTEGER NOT NULL DEFAULT 0,
    done_at REAL NOT NULL,
    PRIMARY KEY (device_id, batch_id)
);
""" + _RUNS_SCHEMA

# The results of one device, per table. A fresh scan of a device moves its earlier results to
# the archived_* copies of these tables (with the run that found them), never deletes them.
RESULT_TABLES = ("files", "matches", "scores", "model_skips", "coverage", "volumes", "flags",
                 "batches")


# FileRecord/Provenance/Features fields that have their own column; anything added to the
# records later goes into `extra` so the store never drops a field.
_PROV_COLS = ("device_id", "volume_offset", "volume_index", "inode", "path", "ads", "attr_type",
              "attr_id", "member", "prov")
_RECORD_COLS = ("name", "size", "allocated", "fs_type", "is_dir", "orphan", "mtime", "atime",
                "ctime", "crtime", "type", "ext_mismatch")
_FEATURE_COLS = ("md5", "sha1", "sha256", "is_picture", "width", "height", "pdq", "pdq_quality",
                 "phash", "exif", "thumbnail", "error")
_FILE_COLS = ("key", "batch_id") + _PROV_COLS + _RECORD_COLS + _FEATURE_COLS + ("extra",)
# A plain file (no stream, member or nested provenance; no SHA-256, picture features or
# error) has these columns at the schema's defaults: its row leaves them out and SQLite fills
# them in. Binding 16 fewer values a row was a third of the driver's inserts on a million
# small files. Three runs of columns, as (first, values); tests/test_store.py checks each
# value against the schema's DEFAULT.
_PLAIN_RUNS = ((_FILE_COLS.index("ads"), ("", 0, 0, "", None)),
               (_FILE_COLS.index("sha256"), ("", 0, 0, 0, "", 0, "", None, None, "")),
               (_FILE_COLS.index("extra"), ("{}",)))
_PLAIN_COLS = tuple(c for i, c in enumerate(_FILE_COLS)
                    if not any(a <= i < a + len(v) for a, v in _PLAIN_RUNS))
# a plain file's row (plain_file_row) by column name
PLAIN_ROW_AT = {c: i for i, c in enumerate(_PLAIN_COLS)}
_BOOL_COLS = frozenset({"allocated", "is_dir", "orphan", "ext_mismatch", "is_picture"})


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _private_file(path: Path) -> None:
    """Create `path` empty with mode 0600 if missing, and force 0600 if present."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


def is_case(case_dir: str | os.PathLike) -> bool:
    return (Path(case_dir) / DB_NAME).is_file()


WAL_CHECKPOINT_PAGES = 10_000
# Indexes for looking a hash up across a case ("where else is this file?"). Built when a scan
# run ends, not kept up to date row by row: random MD5/SHA-1 keys made every batch's inserts
# twice as slow (0.43 -> 0.22 s of the driver per 26k files; the build after is 0.06 s).
HASH_INDEXES = ("CREATE INDEX IF NOT EXISTS files_md5 ON files (md5)",
                "CREATE INDEX IF NOT EXISTS files_sha1 ON files (sha1)")


def _build_hash_indexes(db) -> None:
    # the sorts on helper threads: the scan's other processes are done by now, and on a
    # million files the two builds took 1.07 s of wall time instead of 1.51
    db.execute(f"PRAGMA threads={min(8, os.cpu_count() or 1)}")
    for statement in HASH_INDEXES:
        db.execute(statement)
    db.execute("PRAGMA threads=0")


def scan_holder(case_dir: str | os.PathLike) -> Optional[int]:
    """The process id of the scan holding the case's lock, if that process is alive."""
    try:
        text = (Path(case_dir) / ScanLock.NAME).read_text(errors="replace").split()
        pid = int(text[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:      # alive, another user's
        pass
    return pid


class ScanLock:
    """An exclusive lock on a case for the whole of one scan (`CASE_DIR/scan.lock`, flock): a
    second scan of the same case fails at once, naming the holder. Readers (queue, show,
    report, serve) never take it. The kernel drops it when the holder dies, even by SIGKILL,
    so a crash leaves no stale lock."""

    NAME = "scan.lock"

    def __init__(self, case_dir: str | os.PathLike):
        import fcntl
        path = Path(case_dir) / self.NAME
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(self._fd, 200, 0).decode("utf-8", "replace").split()
            os.close(self._fd)
            self._fd = -1
            who = (f"process {holder[0]}, started {holder[1]}" if len(holder) >= 2
                   else "another process")
            raise TriageError(f"{case_dir} is being scanned by {who}; wait for it to end, or "
                              "scan into another case directory") from None
        os.ftruncate(self._fd, 0)
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        os.pwrite(self._fd, f"{os.getpid()} {started}\n".encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            import fcntl
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1


def _create_archives(db: sqlite3.Connection) -> None:
    """archived_X: the columns of X with the run that found the rows first."""
    for table in RESULT_TABLES:
        db.execute(f"CREATE TABLE IF NOT EXISTS archived_{table} AS "
                   f"SELECT 0 AS run_id, * FROM {table} WHERE 0")
        db.execute(f"CREATE INDEX IF NOT EXISTS archived_{table}_run "
                   f"ON archived_{table} (device_id, run_id)")


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in db.execute(f"PRAGMA table_info({table})")]


def _archive_rows(db: sqlite3.Connection, table: str, run_id: int, device_id: str) -> None:
    """Copies a device's rows of `table` to archived_`table` by column name; a column added to
    the results after the archive was made is added to it first, so no value is dropped."""
    cols = _columns(db, table)
    have = set(_columns(db, f"archived_{table}"))
    for col in cols:
        if col not in have:
            db.execute(f'ALTER TABLE archived_{table} ADD COLUMN "{col}"')
    names = ", ".join(f'"{c}"' for c in cols)
    db.execute(f"INSERT INTO archived_{table} (run_id, {names}) SELECT ?, {names} FROM {table} "
               "WHERE device_id = ?", (run_id, device_id))


def _migrate_2_to_3(db: sqlite3.Connection) -> None:
    """Schema 2 kept one set of results per device. Each device's results are credited to the
    last run that began before the device finished, so `show` lists it and a re-scan keeps it."""
    for stmt in _RUNS_SCHEMA.split(";"):
        if stmt.strip():
            db.execute(stmt)
    _create_archives(db)
    devices = db.execute("SELECT id, started, finished, status FROM devices").fetchall()
    for dev_id, started, finished, status in devices:
        row = db.execute("SELECT MAX(id) FROM runs WHERE started <= ?",
                         (finished if finished is not None else time.time(),)).fetchone()
        if row[0] is None:
            continue
        db.execute("INSERT OR IGNORE INTO device_runs (run_id, device_id, status, started, "
                   "finished) VALUES (?, ?, ?, ?, ?)", (row[0], dev_id, status, started, finished))
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


def _literal(text: str) -> str:
    """A string as an SQLite literal (quotes doubled: SQLite has no other escape)."""
    return "'" + str(text).replace("'", "''") + "'"


class CaseStore:
    """The SQLite case store of one case directory. Thread-safe; one connection per instance.

    `results`: "ranked" (readers: the queue, show, exports, report, review service) reads each
    device's results from the run that stands for it (triage.runs.ranked_run: after a re-scan
    that was cut off, the earlier complete run's archived results); "live" (the scan itself,
    which resumes and extends the result tables) reads the result tables as they are."""

    def __init__(self, case_dir: str | os.PathLike, create: bool = True,
                 results: str = "ranked"):
        if results not in ("ranked", "live"):
            raise ValueError(f"results must be ranked or live, not {results!r}")
        self.results = results
        self.case_dir = Path(case_dir)
        self.path = self.case_dir / DB_NAME
        if not self.path.is_file():
            if not create:
                raise TriageError(f"{self.case_dir} is not a case directory (no {DB_NAME}); "
                                  "run `triage scan --case DIR ...` first")
            if self.case_dir.exists() and not self.case_dir.is_dir():
                raise TriageError(f"case path {self.case_dir} exists and is not a directory")
            self.case_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if create:
            os.chmod(self.case_dir, 0o700)
            _private_file(self.path)
        self._lock = threading.RLock()
        self._indexer: Optional[threading.Thread] = None    # start_hash_indexes' build
        try:
            self._db = sqlite3.connect(str(self.path), timeout=60, check_same_thread=False,
                                       isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            # Checkpoint every 40 MB of log, not every 4 MB: a scan commits each batch, and the
            # default made the driver copy its writes into the database ten times as often
            # (0.2 s of every 20k-file device). Committed batches are as safe either way.
            self._db.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
            self._db.execute("PRAGMA foreign_keys=ON")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise TriageError(f"{self.path} is not a triage case store: {exc}") from exc
        if version > SCHEMA_VERSION:
            raise TriageError(f"{self.path} has schema version {version}; this triage knows "
                              f"{SCHEMA_VERSION} or older, so upgrade triage")
        if 0 < version < 2:
            # schema 1 joined provenance into strings; its rows cannot be read back exactly
            raise TriageError(f"{self.path} was written by an older triage (schema {version}); "
                              "scan the evidence again into a new case directory")
        if version == 0:
            with self._tx():
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        self._db.execute(stmt)
                _create_archives(self._db)
                self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        else:
            self._add_video_columns()   # additive columns first: the archives copy them
            self._drop_device_key_index()
            if version == 2:
                with self._tx():
                    _migrate_2_to_3(self._db)
        for side in ("-wal", "-shm"):
            p = Path(str(self.path) + side)
            if p.exists():
                try:
                    os.chmod(p, 0o600)
                except PermissionError:
                    pass

    # --- plumbing -------------------------------------------------------------------------

    def _add_video_columns(self) -> None:
        """Cases written before the video stage lack two columns that default to "none": added
        in place (additive, so the schema version stays)."""
        with self._tx() as db:
            for table, column, ddl in (("matches", "detail", "detail TEXT NOT NULL DEFAULT '{}'"),
                                       ("scores", "frames", "frames TEXT NOT NULL DEFAULT '[]'")):
                for name in (table, f"archived_{table}"):      # (no archive before schema 3)
                    have = {r[1] for r in db.execute(f"PRAGMA table_info({name})")}
                    if have and column not in have:
                        db.execute(f"ALTER TABLE {name} ADD COLUMN {ddl}")

    def _drop_device_key_index(self) -> None:
        """Cases written before device_keys kept an index of (device, key) that every insert
        paid for and no query uses now: dropped (looked for first, so a reader writes
        nothing once it is gone)."""
        if self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'index' AND "
                            "name = 'files_device_key'").fetchone():
            with self._tx() as db:
                db.execute("DROP INDEX IF EXISTS files_device_key")

    def _tx(self):
        store = self

        class _Tx:
            def __enter__(self_inner):
                store._indexes_done()
                store._lock.acquire()
                store._db.execute("BEGIN IMMEDIATE")
                return store._db

            def __exit__(self_inner, exc_type, exc, tb):
                try:
                    store._db.execute("ROLLBACK" if exc_type else "COMMIT")
                finally:
                    store._lock.release()
                return False

        return _Tx()

    def _query(self, sql: str, params: Iterable | dict = ()) -> list[dict]:
        with self._lock:
            cur = self._db.execute(sql, params if isinstance(params, dict) else tuple(params))
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, row)) for row in cur.fetchall()]

    def close(self) -> None:
        self._indexes_done()
        with self._lock:
            self._db.close()

    def __enter__(self) -> "CaseStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _archived_ranked(self) -> dict[str, int]:
        """device id -> the archived run whose results stand for it (see `results`); devices
        whose result-table rows stand for them are absent. Empty for a "live" store."""
        if self.results == "live":
            return {}
        from triage.runs import ranked_run

        rows = self._query("SELECT run_id, device_id, status, live FROM device_runs "
                           "ORDER BY device_id, run_id")
        by_device: dict[str, list[dict]] = {}
        for r in rows:
            by_device.setdefault(r["device_id"], []).append(r)
        running = None
        if any(runs[-1]["status"] == "scanning" for runs in by_device.values()):
            current = self.running_run()
            running = current["id"] if current else None
        out = {}
        for dev, runs in by_device.items():
            chosen = ranked_run(runs, running)
            if chosen is not None and not chosen["live"]:
                out[dev] = int(chosen["run_id"])
        return out

    def _source(self, table: str, device_id: Optional[str] = None,
                archived: Optional[dict[str, int]] = None) -> str:
        """What to read a result table from: the table itself, or (for a ranked store with a
        device ranked on an archived run) a sub-select of the same columns that takes that
        device's rows from archived_`table` under the run. Values are inlined as literals, so
        the caller's parameters keep their places."""
        archived = self._archived_ranked() if archived is None else archived
        if device_id is not None:
            archived = {device_id: archived[device_id]} if device_id in archived else {}
        if not archived:
            return table
        with self._lock:
            cols = _columns(self._db, table)
            have = set(_columns(self._db, f"archived_{table}"))
        names = ", ".join(f'"{c}"' for c in cols)
        old = ", ".join(f'"{c}"' if c in have else f'NULL AS "{c}"' for c in cols)
        picks = " OR ".join(f"(device_id = {_literal(d)} AND run_id = {int(r)})"
                            for d, r in sorted(archived.items()))
        sql = f"SELECT {old} FROM archived_{table} WHERE {picks}"
        if device_id is None:
            others = ", ".join(_literal(d) for d in sorted(archived))
            sql = (f"SELECT {names} FROM {table} WHERE device_id NOT IN ({others}) "
                   f"UNION ALL {sql}")
        return f"({sql})"

    # --- runs -------------------------------------------------------------------------------

    def begin_run(self, *, tool_version: str, hashsets: list[dict], model: dict | None,
                  operator: str, options: dict) -> int:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO runs (tool_version, hashsets, model, operator, options, started) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (tool_version, _json(hashsets), None if model is None else _json(model),
                 operator, _json(options), time.time()))
            return int(cur.lastrowid)

    def end_run(self, run_id: int, status: str, hash_engines: Sequence[str] = (),
                model_runtime: dict | None = None, listers: Sequence[str] = ()) -> None:
        """Closes a run; `hash_engines` (which code took MD5 and SHA-1, as the workers
        reported) and `listers` (which code listed the file systems, as the planners
        reported) join the run's options, `model_runtime` (the model's device and precision,
        with the accuracy gate's figures) its model as `runtime`."""
        with self._tx() as db:
            db.execute("UPDATE runs SET ended = ?, status = ? WHERE id = ?",
                       (time.time(), status, run_id))
            for name, values in (("hash_engines", hash_engines), ("listers", listers)):
                if values:
                    db.execute(f"UPDATE runs SET options = json_set(options, '$.{name}', json(?)) "
                               "WHERE id = ?", (_json(list(values)), run_id))
            if model_runtime:
                db.execute("UPDATE runs SET model = json_set(model, '$.runtime', json(?)) "
                           "WHERE id = ? AND model IS NOT NULL", (_json(model_runtime), run_id))
            _build_hash_indexes(db)      # here when start_hash_indexes did not build them

    def start_hash_indexes(self) -> None:
        """Builds the hash indexes (end_run's) on a connection of their own, in a thread, so
        the last device's counts are read meanwhile: a scan calls it once every batch is
        stored. Every write of this store waits for it first (a write of the other
        connection's would wait on SQLite's lock instead); should it fail, end_run builds
        them again."""
        if self._indexer is not None:
            return
        path = str(self.path)

        def build() -> None:
            try:
                db = sqlite3.connect(path, timeout=60, isolation_level=None)
                try:
                    db.execute("PRAGMA synchronous=NORMAL")
                    db.execute("BEGIN IMMEDIATE")
                    _build_hash_indexes(db)
                    db.execute("COMMIT")
                finally:
                    db.close()
            except Exception:         # noqa: BLE001 - end_run builds them, and says why if it cannot
                pass

        indexer = threading.Thread(target=build, name="triage-hash-indexes", daemon=True)
        indexer.start()
        self._indexer = indexer

    def _indexes_done(self) -> None:
        indexer = self._indexer
        if indexer is not None:
            indexer.join()
            self._indexer = None

    def running_run(self) -> Optional[dict]:
        """The scan run in progress in this case: the newest run not ended, while its scan
        process still holds the case's scan lock; None otherwise (a killed scan never ends its
        run, so the lock's process decides)."""
        rows = self._query("SELECT id, started FROM runs WHERE ended IS NULL ORDER BY id DESC "
                           "LIMIT 1")
        if not rows or scan_holder(self.case_dir) is None:
            return None
        return rows[0]

    def run(self, run_id: int) -> Optional[dict]:
        for r in self.runs():
            if r["id"] == run_id:
                return r
        return None

    def case_ref(self) -> str:
        """The case reference (`--case-ref`); the case folder's name when none was set."""
        rows = self._query("SELECT value FROM case_info WHERE key = 'case_ref'")
        return rows[0]["value"] if rows else self.case_dir.resolve().name

    def set_case_ref(self, ref: str) -> None:
        ref = str(ref).strip()
        if not ref:
            raise TriageError("the case reference is empty")
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO case_info VALUES ('case_ref', ?)", (ref,))

    def runs(self) -> list[dict]:
        out = []
        for r in self._query("SELECT * FROM runs ORDER BY id"):
            r["hashsets"] = json.loads(r["hashsets"])
            r["model"] = None if r["model"] is None else json.loads(r["model"])
            r["options"] = json.loads(r["options"])
            out.append(r)
        return out

    # --- devices ----------------------------------------------------------------------------

    def upsert_device(self, ref: EvidenceRef, context: dict | None = None,
                      verified_hashes: dict | None = None) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO devices (id, paths, format, media_size, stored_hashes) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET paths = excluded.paths, "
                "format = excluded.format, media_size = excluded.media_size, "
                "stored_hashes = excluded.stored_hashes",
                (ref.device_id, _json(list(ref.paths)), ref.format, int(ref.media_size),
                 _json(dict(ref.stored_hashes or {}))))
            if context is not None:
                db.execute("UPDATE devices SET context = ? WHERE id = ?",
                           (_json(context), ref.device_id))
            if verified_hashes is not None:
                db.execute("UPDATE devices SET verified_hashes = ? WHERE id = ?",
                           (_json(verified_hashes), ref.device_id))

    def set_context(self, device_id: str, context: dict) -> None:
        with self._tx() as db:
            cur = db.execute("UPDATE devices SET context = ? WHERE id = ?",
                             (_json(context), device_id))
            if cur.rowcount == 0:
                raise TriageError(f"no device {device_id!r} in this case")

    def set_verified_hashes(self, device_id: str, hashes: dict) -> None:
        with self._tx() as db:
            db.execute("UPDATE devices SET verified_hashes = ? WHERE id = ?",
                       (_json(hashes), device_id))

    def device_started(self, device_id: str, t: float, run_id: Optional[int] = None,
                       fresh: bool = False) -> None:
        """Marks a device as being scanned; keeps the first start time across resumes.

        With `run_id`, the run is recorded as one of the device's runs; `fresh` (a scan that is
        not a resume) first moves the device's earlier results to the archive, kept with the
        run that found them, so the new run starts clean and nothing found before is lost."""
        if fresh:
            self.archive_device(device_id)
        with self._tx() as db:
            db.execute("UPDATE devices SET started = COALESCE(started, ?), finished = NULL, "
                       "status = 'scanning' WHERE id = ?", (t, device_id))
            if run_id is not None:
                db.execute("INSERT OR REPLACE INTO device_runs (run_id, device_id, status, "
                           "started, live) VALUES (?, ?, 'scanning', ?, 1)",
                           (run_id, device_id, t))

    def queue_devices(self, devices: Iterable[tuple[str, Sequence[str]]]) -> None:
        """A scan run's devices before it opens them: listed as `queued` (a device new to the
        case gets a placeholder row: its format and size come when it is opened)."""
        with self._tx() as db:
            for device_id, paths in devices:
                db.execute("INSERT OR IGNORE INTO devices (id, paths, format, media_size) "
                           "VALUES (?, ?, 'unknown', 0)", (device_id, _json(list(paths))))
                db.execute("UPDATE devices SET status = 'queued' WHERE id = ?", (device_id,))

    def set_device_status(self, device_id: str, status: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE devices SET status = ? WHERE id = ?", (status, device_id))

    def restore_status(self, device_id: str) -> None:
        """A device a run queued but never opened (interrupted first): the status of its last
        run again, whose results it still has; `interrupted` when it has none."""
        with self._tx() as db:
            db.execute("UPDATE devices SET status = COALESCE((SELECT status FROM device_runs "
                       "WHERE device_id = ? AND live = 1 ORDER BY run_id DESC LIMIT 1), "
                       "'interrupted'), finished = COALESCE(finished, ?) WHERE id = ?",
                       (device_id, time.time(), device_id))

    def device_finished(self, device_id: str, t: float, status: str) -> None:
        counts = self.counts(device_id)
        with self._tx() as db:
            db.execute("UPDATE devices SET finished = ?, status = ? WHERE id = ?",
                       (t, status, device_id))
            db.execute("UPDATE device_runs SET finished = ?, status = ?, counts = ? "
                       "WHERE device_id = ? AND live = 1 AND run_id = (SELECT MAX(run_id) "
                       "FROM device_runs WHERE device_id = ?)",
                       (t, status, _json(counts), device_id, device_id))

    def archive_device(self, device_id: str) -> None:
        """Moves a device's results to the archived_* tables under the run that found them
        (the newest of its live runs: a resumed run continues the same results)."""
        live = self._query("SELECT MAX(run_id) AS r FROM device_runs WHERE device_id = ? "
                           "AND live = 1", (device_id,))[0]["r"]
        with self._tx() as db:
            if live is not None:
                for table in RESULT_TABLES:
                    _archive_rows(db, table, live, device_id)
                db.execute("UPDATE device_runs SET live = 0 WHERE device_id = ?", (device_id,))
        self.reset_device(device_id)

    def device_runs(self, device_id: Optional[str] = None) -> list[dict]:
        """The scan runs of a device (or of every device), oldest first: the run's hash sets,
        model, tool version and operator, the device's status and counts in that run, and
        `live` (its results are in the result tables, not archived) and `ranked` (its results
        are the ones the queue uses: triage.runs.ranked_run)."""
        from triage.runs import ranked_run

        sql = ("SELECT d.*, r.hashsets, r.model, r.tool_version, r.operator, r.options "
               "FROM device_runs d JOIN runs r ON r.id = d.run_id")
        params: tuple = ()
        if device_id is not None:
            sql, params = sql + " WHERE d.device_id = ?", (device_id,)
        out = []
        for r in self._query(sql + " ORDER BY d.device_id, d.run_id", params):
            r["hashsets"] = json.loads(r["hashsets"])
            r["model"] = None if r["model"] is None else json.loads(r["model"])
            r["options"] = json.loads(r["options"])
            r["counts"] = json.loads(r["counts"] or "{}")
            r["live"] = bool(r["live"])
            out.append(r)
        by_device: dict[str, list[dict]] = {}
        for r in out:
            by_device.setdefault(r["device_id"], []).append(r)
        current = self.running_run() if any(r["status"] == "scanning" for r in out) else None
        for runs in by_device.values():
            chosen = ranked_run(runs, current["id"] if current else None)
            for r in runs:
                r["ranked"] = r is chosen
        return out

    def devices(self) -> list[dict]:
        """Every device; one ranked on an archived run (`results`) carries that run's status,
        start and end, unless a scan running now has it queued or opening."""
        archived = self._archived_ranked()
        ran = {}
        if archived:
            running = self.running_run() is not None
            for r in self._query("SELECT device_id, run_id, status, started, finished "
                                 "FROM device_runs"):
                if archived.get(r["device_id"]) == r["run_id"]:
                    ran[r["device_id"]] = r
        out = []
        for r in self._query("SELECT * FROM devices ORDER BY id"):
            for k in ("paths", "stored_hashes", "verified_hashes", "context"):
                r[k] = json.loads(r[k])
            got = ran.get(r["id"])
            if got and not (running and r["status"] in ("queued", "opening")):
                r.update(status=got["status"], started=got["started"], finished=got["finished"])
            out.append(r)
        return out

    def device(self, device_id: str) -> dict:
        for d in self.devices():
            if d["id"] == device_id:
                return d
        raise TriageError(f"no device {device_id!r} in this case")

    # --- volumes and coverage ---------------------------------------------------------------

    def add_volumes(self, volumes: list[VolumeRef]) -> None:
        with self._tx() as db:
            db.executemany(
                "INSERT OR REPLACE INTO volumes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(v.device_id, v.index, v.offset, v.length, v.description, v.fs_type, v.label,
                  v.block_size, v.encryption, int(v.unallocated)) for v in volumes])

    def volumes(self, device_id: str) -> list[VolumeRef]:
        rows = self._query(f"SELECT * FROM {self._source('volumes', device_id)} "
                           "WHERE device_id = ? ORDER BY offset, idx", (device_id,))
        return [VolumeRef(device_id=r["device_id"], index=r["idx"], offset=r["offset"],
                          length=r["length"], description=r["description"], fs_type=r["fs_type"],
                          label=r["label"], block_size=r["block_size"],
                          encryption=r["encryption"], unallocated=r["unallocated"]) for r in rows]

    def add_coverage(self, items: list[Coverage]) -> None:
        with self._tx() as db:
            self._insert_coverage(db, items)

    @staticmethod
    def _insert_coverage(db: sqlite3.Connection, items: Iterable[Coverage]) -> None:
        db.executemany(
            'INSERT OR IGNORE INTO coverage (device_id, key, kind, "where", reason, '
            "bytes_not_examined, bytes_expected, bytes_read, volume_offset, batch_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(c.device_id, c.key, c.kind, _json(c.where.to_dict()), c.reason,
              _count(c.bytes_not_examined), _count(c.bytes_expected), _count(c.bytes_read),
              c.volume_offset, c.batch_id) for c in items])

    def coverage(self, device_id: str | None = None) -> list[Coverage]:
        sql = f"SELECT * FROM {self._source('coverage', device_id)}"
        params: tuple = ()
        if device_id is not None:
            sql += " WHERE device_id = ?"
            params = (device_id,)
        rows = self._query(sql + " ORDER BY device_id, key, reason", params)
        return [Coverage(device_id=r["device_id"], kind=r["kind"],
                         where=Provenance.from_dict(json.loads(r["where"])), reason=r["reason"],
                         bytes_not_examined=r["bytes_not_examined"],
                         bytes_expected=r["bytes_expected"], bytes_read=r["bytes_read"],
                         batch_id=r["batch_id"]) for r in rows]

    def remove_coverage(self, coverage: Coverage) -> None:
        """Drops a coverage record that a later, successful pass made obsolete (resume)."""
        with self._tx() as db:
            db.execute("DELETE FROM coverage WHERE device_id = ? AND key = ? AND reason = ?",
                       (coverage.device_id, coverage.key, coverage.reason))

    def remove_batch_coverage(self, device_id: str, batch_id: str) -> None:
        """Drops what a failed batch (or a part of it, "<id>.a.b") recorded, once a later run
        has scanned that batch."""
        with self._tx() as db:
            db.execute("DELETE FROM coverage WHERE device_id = ? AND (batch_id = ? OR "
                       "substr(batch_id, 1, ?) = ?)",
                       (device_id, batch_id, len(batch_id) + 1, batch_id + "."))

    def remove_coverage_kind(self, device_id: str, kind: str) -> None:
        """Drops a device's gaps of one kind, when a later pass examined what they named."""
        with self._tx() as db:
            db.execute("DELETE FROM coverage WHERE device_id = ? AND kind = ?", (device_id, kind))

    # --- batches of results -----------------------------------------------------------------

    def add_batch(self, device_id: str, batch_id: str,
                  items: list[tuple[FileRecord, Features]], matches: list[Match],
                  scores: list[Score], coverage: list[Coverage], done: bool = True,
                  model_skips: Iterable[tuple[str, str]] = (),
                  rows: Optional[list[tuple]] = None) -> None:
        """Stores one batch's results and marks the batch done, in one transaction.

        `rows`, when given, are the batch's `files` rows made by `file_rows` where the batch
        ran; `items` then need only hold the files that matches refer to.
        `done=False` leaves the batch unfinished (its model scores are still to come): a resume
        then scans it again, and `mark_batch_done` finishes it with the scores."""
        stored = rows if rows is not None else file_rows(device_id, batch_id, items)
        with self._tx() as db:
            # plain rows (_PLAIN_COLS) and whole ones, each run of one shape in its own call,
            # in the batch's order
            for width, run in itertools.groupby(stored, len):
                _insert_rows(db, _PLAIN_COLS if width == len(_PLAIN_COLS) else _FILE_COLS,
                             list(run))
            self._insert_matches(db, device_id, matches)
            self._insert_scores(db, device_id, scores)
            db.executemany("INSERT OR REPLACE INTO model_skips VALUES (?, ?, ?)",
                           [(key, device_id, why) for key, why in model_skips])
            self._insert_coverage(db, coverage)
            if done:
                db.execute("INSERT OR REPLACE INTO batches VALUES (?, ?, ?, ?)",
                           (device_id, batch_id, len(stored), time.time()))

    def mark_batch_done(self, device_id: str, batch_id: str, scores: list[Score] = (),
                        coverage: list[Coverage] = (), files: int = 0) -> None:
        """Finishes a batch stored with `done=False`, adding its late results."""
        with self._tx() as db:
            self._insert_scores(db, device_id, scores)
            self._insert_coverage(db, coverage)
            db.execute("INSERT OR REPLACE INTO batches VALUES (?, ?, ?, ?)",
                       (device_id, batch_id, files, time.time()))

    def add_matches(self, device_id: str, matches: list[Match]) -> None:
        with self._tx() as db:
            self._insert_matches(db, device_id, matches)

    def add_scores(self, device_id: str, scores: list[Score]) -> None:
        """Scores that arrive after their batch (the model runs in its own actor pool)."""
        with self._tx() as db:
            self._insert_scores(db, device_id, scores)

    @staticmethod
    def _insert_matches(db: sqlite3.Connection, device_id: str, matches: Iterable[Match]) -> None:
        db.executemany(
            "INSERT OR IGNORE INTO matches (key, device_id, kind, algorithm, value, set_name, "
            "set_version, role, category, severity, distance, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(m.key, device_id, m.kind, m.algorithm, m.value, m.set_name, m.set_version, m.role,
              m.category, int(m.severity), int(m.distance), _match_detail(m)) for m in matches])

    @staticmethod
    def _insert_scores(db: sqlite3.Connection, device_id: str, scores: Iterable[Score]) -> None:
        db.executemany(
            "INSERT OR REPLACE INTO scores (key, device_id, model, model_sha256, \"values\", "
            "frames) VALUES (?, ?, ?, ?, ?, ?)",
            [(s.key, device_id, s.model, s.model_sha256, _json(s.values),
              _json([list(f) for f in s.frames]) if s.frames else "[]") for s in scores])

    def done_batches(self, device_id: str) -> set[str]:
        return {r["batch_id"] for r in
                self._query("SELECT batch_id FROM batches WHERE device_id = ?", (device_id,))}

    def reset_device(self, device_id: str) -> None:
        """Drops every result of a device, so a fresh (not resumed) scan starts clean.
        The device row itself and flags.jsonl (an append-only log) stay."""
        with self._tx() as db:
            db.execute("DELETE FROM files WHERE key >= ? AND key < ?", device_keys(device_id))
            for table in ("matches", "scores", "model_skips", "coverage", "batches", "volumes",
                          "flags"):
                db.execute(f"DELETE FROM {table} WHERE device_id = ?", (device_id,))
            db.execute("UPDATE devices SET started = NULL, finished = NULL, status = 'pending' "
                       "WHERE id = ?", (device_id,))

    def forget_batches(self, device_id: str) -> None:
        """Makes the next `--resume` rescan this device from the start."""
        with self._tx() as db:
            db.execute("DELETE FROM batches WHERE device_id = ?", (device_id,))

    # --- reading results --------------------------------------------------------------------

    def files(self, device_id: str | None = None,
              keys: Iterable[str] | None = None) -> Iterator[tuple[FileRecord, Features]]:
        """Files with their features, in key order. Streams: memory stays flat on big cases."""
        source = self._source("files", device_id)
        if keys is not None:
            keys = sorted(set(keys))
            for i in range(0, len(keys), _KEY_CHUNK):
                chunk = keys[i:i + _KEY_CHUNK]
                sql = f"SELECT * FROM {source} WHERE key IN ({', '.join('?' * len(chunk))})"
                params: list = list(chunk)
                if device_id is not None:
                    sql += " AND device_id = ?"
                    params.append(device_id)
                for row in self._query(sql + " ORDER BY key", params):
                    yield _file_from_row(row)
            return
        sql, params = f"SELECT * FROM {source}", ()
        last = ""
        if device_id is not None:
            # from the range's low end, which no key equals (every key goes on after it)
            low, high = device_keys(device_id)
            sql, params, last = sql + " WHERE device_id = ? AND key < ?", (device_id, high), low
        # page through by key so no cursor stays open across the caller's own writes
        while True:
            where = " AND key > ?" if device_id is not None else " WHERE key > ?"
            rows = self._query(sql + where + " ORDER BY key LIMIT 1000", params + (last,))
            if not rows:
                return
            for row in rows:
                yield _file_from_row(row)
            last = rows[-1]["key"]

    def file(self, key: str) -> Optional[tuple[FileRecord, Features]]:
        for item in self.files(keys=[key]):
            return item
        return None

    def matches(self, device_id: str | None = None) -> list[Match]:
        sql, params = f"SELECT * FROM {self._source('matches', device_id)}", ()
        if device_id is not None:
            sql, params = sql + " WHERE device_id = ?", (device_id,)
        rows = self._query(sql + " ORDER BY key, kind, algorithm, set_name, value", params)
        return [Match(key=r["key"], kind=r["kind"], algorithm=r["algorithm"], value=r["value"],
                      set_name=r["set_name"], set_version=r["set_version"], role=r["role"],
                      category=r["category"], severity=r["severity"], distance=r["distance"],
                      **_match_detail_fields(r.get("detail")))
                for r in rows]

    def model_skips(self, device_id: str) -> dict[str, int]:
        """How many of a device's pictures the model cascade skipped, by kind of reason
        ("few colours", "too small", "exact alert match", ...)."""
        counts: dict[str, int] = {}
        for row in self._query(f"SELECT reason FROM {self._source('model_skips', device_id)} "
                               "WHERE device_id = ?", (device_id,)):
            kind = re.split(r"[(:]", row["reason"], maxsplit=1)[0].strip()
            counts[kind] = counts.get(kind, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def scores(self, device_id: str | None = None) -> list[Score]:
        sql, params = f"SELECT * FROM {self._source('scores', device_id)}", ()
        if device_id is not None:
            sql, params = sql + " WHERE device_id = ?", (device_id,)
        rows = self._query(sql + " ORDER BY key, model", params)
        return [Score(key=r["key"], model=r["model"], model_sha256=r["model_sha256"],
                      values=json.loads(r["values"]),
                      frames=tuple((int(n), float(t), dict(v))
                                   for n, t, v in json.loads(r.get("frames") or "[]")))
                for r in rows]

    # --- flags ------------------------------------------------------------------------------

    def add_flag(self, flag: Flag) -> bool:
        """Stores a flag; False when the same (code, device, key) was already raised."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO flags (code, severity, device_id, key, raised_at, message, "
                "provenance) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (flag.code, int(flag.severity), flag.device_id, flag.key, float(flag.raised_at),
                 flag.message, _json(flag.provenance)))
            return cur.rowcount == 1

    def flag(self, code: str, device_id: str, key: str) -> Optional[Flag]:
        for _i, f in self._flags("SELECT * FROM flags WHERE code = ? AND device_id = ? AND "
                                 "key = ?", (code, device_id, key)):
            return f
        return None

    def update_flag(self, flag: Flag) -> None:
        """A flag's message and provenance changed (an escalation covering more findings)."""
        with self._tx() as db:
            db.execute("UPDATE flags SET message = ?, provenance = ? WHERE code = ? AND "
                       "device_id = ? AND key = ?", (flag.message, _json(flag.provenance),
                                                     flag.code, flag.device_id, flag.key))

    def _flags(self, sql: str, params) -> list[tuple[int, Flag]]:
        return [(r["id"], Flag(code=r["code"], severity=r["severity"], device_id=r["device_id"],
                               key=r["key"], raised_at=r["raised_at"], message=r["message"],
                               provenance=json.loads(r["provenance"])))
                for r in self._query(sql, params)]

    def flags(self, device_id: str | None = None, after_id: int = 0) -> list[tuple[int, Flag]]:
        sql, params = f"SELECT * FROM {self._source('flags', device_id)} WHERE id > ?", [after_id]
        if device_id is not None:
            sql += " AND device_id = ?"
            params.append(device_id)
        return self._flags(sql + " ORDER BY id", params)

    # --- summaries --------------------------------------------------------------------------

    def counts(self, device_id: str) -> dict:
        """Files, bytes, pictures, model scores and skips, matches and flags stored for a device
        (progress, summaries). Files and bytes are the device's own, as the scan counts them
        (archive members and pictures found inside files are in `pictures` only), and only
        finished batches count: a resumed scan does the rest again."""
        archived = self._archived_ranked()
        t = {name: self._source(name, device_id, archived)
             for name in ("files", "batches", "scores", "model_skips", "matches", "flags")}
        done = f"batch_id IN (SELECT batch_id FROM {t['batches']} WHERE device_id = :d)"
        low, high = device_keys(device_id)
        # a picture found inside a file (an EXIF thumbnail, a PDF's image) is content of that
        # file, as a member is: it has a file as its parent, where a picture carved from free
        # space has the volume or the device (no inode, no path), and is a file of its batch
        # (a plain file's row has no `prov`: that test first, the JSON read only for the others,
        # a fifth of the time of a million files' counts)
        own = ("(CASE WHEN prov IS NULL THEN member = '' ELSE "
               "(member = '' AND (json_extract(prov, '$.parent') IS NULL OR "
               "(json_extract(prov, '$.parent.inode') IS NULL AND "
               "COALESCE(json_extract(prov, '$.parent.path'), '') = ''))) END)")
        f = self._query(f"SELECT COALESCE(SUM({own}), 0) AS files, "
                        f"COALESCE(SUM(CASE WHEN {own} THEN size END), 0) AS bytes, "
                        f"COALESCE(SUM(is_picture), 0) AS pictures FROM {t['files']} "
                        f"WHERE device_id = :d AND key >= :low AND key < :high AND {done}",
                        {"d": device_id, "low": low, "high": high})[0]
        model = self._query(
            f"SELECT (SELECT COUNT(*) FROM {t['scores']} WHERE device_id = :d) AS scored, "
            f"(SELECT COUNT(*) FROM {t['model_skips']} s JOIN {t['files']} f ON f.key = s.key "
            f"WHERE s.device_id = :d AND f.{done}) AS skipped", {"d": device_id})[0]
        m = self._query("SELECT "
                        "COUNT(DISTINCT CASE WHEN kind = 'exact' AND role = 'alert' THEN key END) AS exact, "
                        "COUNT(DISTINCT CASE WHEN kind = 'near' AND role = 'alert' THEN key END) AS near "
                        f"FROM {t['matches']} WHERE device_id = ?", (device_id,))[0]
        fl = self._query(f"SELECT COUNT(*) AS n FROM {t['flags']} WHERE device_id = ?",
                         (device_id,))[0]
        return {"files": f["files"], "bytes": f["bytes"], "pictures": f["pictures"],
                "scored": model["scored"], "model_skipped": model["skipped"],
                "alert_matches": m["exact"], "near_matches": m["near"], "flags": fl["n"]}


# --- row <-> record ---------------------------------------------------------------------------

def _exif_to_json(exif: Optional[Exif]) -> Optional[str]:
    if exif is None:
        return None
    return _json(dataclasses.asdict(exif))


def _exif_from_json(text: Optional[str]) -> Optional[Exif]:
    if text is None:
        return None
    d = json.loads(text)
    if d.get("gps") is not None:
        d["gps"] = tuple(d["gps"])
    known = {f.name for f in dataclasses.fields(Exif)}
    return Exif(**{k: v for k, v in d.items() if k in known})


_EXTRA_NAMES: dict[type, tuple[tuple[str, Any], ...]] = {}


def _extra_fields(obj: Any, known: set[str]) -> dict:
    # field lists are looked up once per record class: this runs for every stored file
    names = _EXTRA_NAMES.get(type(obj))
    if names is None:
        names = tuple((f.name, f.default) for f in dataclasses.fields(obj) if f.name not in known)
        _EXTRA_NAMES[type(obj)] = names
    # fields at their default are left out: a picture's row carries no empty video fields
    return {n: v for n, d in names if (v := getattr(obj, n)) != d} if names else {}


_REC_KNOWN = set(_RECORD_COLS) | {"prov", "pieces"}     # pieces: a read hint, not a finding
_PROV_KNOWN = set(_PROV_COLS) | {f.name for f in dataclasses.fields(Provenance)}
_FEAT_KNOWN = set(_FEATURE_COLS) | {"key", "size", "type", "ext_mismatch"}


def file_rows(device_id: str, batch_id: str,
              items: Iterable[tuple[FileRecord, Features]]) -> list[tuple]:
    """The `files` rows of a batch's (record, features) items, ready for `add_batch(rows=)`.
    Plain tuples: a worker makes them, and they cross to the driver far cheaper than records."""
    out = []
    for rec, feat in items:
        row = _plain_row(device_id, batch_id, rec, feat)
        out.append(_plain(_file_row(device_id, batch_id, rec, feat)) if row is None else row)
    return out


def _rest(cls, known: set[str]) -> tuple:
    """(getter, defaults) of the fields of `cls` outside `known`: one C call that takes them
    all, and what they hold when the record is plain."""
    rest = [f for f in dataclasses.fields(cls) if f.name not in known]
    defaults = tuple(f.default if f.default is not dataclasses.MISSING else f.default_factory()
                     for f in rest)
    # attrgetter of one name gives the value itself, not a 1-tuple
    return operator.attrgetter(*(f.name for f in rest)), \
        defaults[0] if len(defaults) == 1 else defaults


# What makes a row plain (_PLAIN_COLS): every field without a column of its own in the plain
# row at its default, so no stream, member chain, snapshot, parent, SHA-256, picture feature,
# error or extra field. tests/test_store.py checks that _plain_row gives what
# _plain(_file_row(...)) gives, for a plain record and for each variant of it with one field
# of its record, provenance or features changed.
_PLAIN_PROV = _rest(Provenance, {"device_id", "volume_offset", "inode", "path", "volume_index",
                                 "fs_type"})
_PLAIN_REC = _rest(FileRecord, set(_RECORD_COLS) | {"prov", "pieces"})
_PLAIN_FEAT = _rest(Features, {"key", "size", "type", "ext_mismatch", "md5", "sha1"})


def _plain_row(device_id: str, batch_id: str, rec: FileRecord, feat: Features) -> Optional[tuple]:
    """A plain file's row in _PLAIN_COLS order, built straight (a third of the time of
    `_plain(_file_row(...))`, which runs for every file of a million-file device); None for
    any other file, whose row `_file_row` makes."""
    p = rec.prov
    key = rec.key
    if feat.key != key or p.device_id != device_id or p.volume_offset is None or \
            p.fs_type != rec.fs_type or \
            _PLAIN_PROV[0](p) != _PLAIN_PROV[1] or _PLAIN_REC[0](rec) != _PLAIN_REC[1] or \
            _PLAIN_FEAT[0](feat) != _PLAIN_FEAT[1]:
        return None
    return plain_file_row(key, batch_id, device_id, p.volume_offset, p.volume_index, p.inode,
                          p.path, rec.name, rec.size, rec.allocated, rec.fs_type, rec.is_dir,
                          rec.orphan, rec.mtime, rec.atime, rec.ctime, rec.crtime,
                          feat.type or rec.type, rec.ext_mismatch or feat.ext_mismatch,
                          feat.md5, feat.sha1)


def plain_file_row(key: str, batch_id: str, device_id: str, volume_offset: int,
                   volume_index: Optional[int], inode: Optional[int], path: str, name: str,
                   size: int, allocated: bool, fs_type: str, is_dir: bool, orphan: bool,
                   mtime, atime, ctime, crtime, ctype: str, mismatch: bool, md5: str,
                   sha1: str) -> tuple:
    """A plain file's row (_PLAIN_COLS order) from its fields: `_plain_row` calls it with a
    record's, and the workers' packed-row path (workers/batch.py), which makes no records,
    with the fields as the planner packed them."""
    return (key, batch_id, device_id, volume_offset, volume_index, inode, path, name, size,
            int(allocated), fs_type, int(is_dir), int(orphan), mtime, atime, ctime, crtime,
            ctype, int(mismatch), md5, sha1)


_PLAIN_A, _PLAIN_B, _PLAIN_C = ((a, a + len(v), v) for a, v in _PLAIN_RUNS)


def _plain(row: tuple) -> tuple:
    """A plain file's row without its default columns (_PLAIN_COLS order); any other row
    whole."""
    (a0, a1, av), (b0, b1, bv), (c0, c1, cv) = _PLAIN_A, _PLAIN_B, _PLAIN_C
    if row[a0:a1] == av and row[b0:b1] == bv and row[c0:c1] == cv:
        return row[:a0] + row[a1:b0] + row[b1:c0] + row[c1:]
    return row


# SQLite's largest integer. A byte count that damaged metadata declares past it (a partition's
# length or a file system's block count, multiplied out: a GPT may say 2**73 bytes) is stored
# as this; the gap's reason keeps the exact figure.
SQLITE_MAX_INT = 2 ** 63 - 1


def _count(n: int) -> int:
    return min(int(n), SQLITE_MAX_INT)


# Rows a `files` insert takes at a time: one statement's step per row cost a million small
# files' driver 0.3 us a row more (the GIL let go and taken again, a VM program begun and
# reset); kept under SQLite's oldest limit of 999 bound values.
ROWS_PER_INSERT = 32


def _insert_rows(db, cols: tuple, rows: list) -> None:
    """INSERT OR REPLACE `rows` (each in `cols` order) into `files`, in order: several to a
    statement, each replacing as it would alone."""
    one = f"({', '.join('?' * len(cols))})"
    k = max(1, min(ROWS_PER_INSERT, 999 // len(cols)))
    full = len(rows) - len(rows) % k
    head = f"INSERT OR REPLACE INTO files ({', '.join(cols)}) VALUES "
    if full:
        chain = itertools.chain.from_iterable
        db.executemany(head + ", ".join([one] * k),
                       [tuple(chain(rows[i:i + k])) for i in range(0, full, k)])
    if full < len(rows):
        db.executemany(head + one, rows[full:])


def _file_row(device_id: str, batch_id: str, rec: FileRecord, feat: Features) -> tuple:
    """One `files` row, in _FILE_COLS order (runs for every file and member stored)."""
    key = rec.key
    if feat.key != key:
        raise ValueError(f"features key {feat.key!r} does not match record key {key!r}")
    p = rec.prov
    if p.device_id != device_id:     # a device's rows are its range of keys (device_keys)
        raise ValueError(f"record of device {p.device_id!r} stored under {device_id!r}")
    extra = {}
    for name, obj, known in (("record", rec, _REC_KNOWN), ("prov", p, _PROV_KNOWN),
                             ("features", feat, _FEAT_KNOWN)):
        fields = _extra_fields(obj, known)
        if fields:
            extra[name] = fields
    return (
        key, batch_id,
        # _PROV_COLS
        # content carved from outside every volume belongs to the device: the column (for
        # queries) says so with the unpartitioned pseudo-volume's offset; `prov` has None
        device_id, UNPARTITIONED_OFFSET if p.volume_offset is None else p.volume_offset,
        p.volume_index, p.inode, p.path, p.ads, p.attr_type, p.attr_id, p.member, _prov_json(p, rec.fs_type),
        # _RECORD_COLS; a content type found by the feature stage wins over the walk's
        rec.name, rec.size, int(rec.allocated), rec.fs_type, int(rec.is_dir), int(rec.orphan),
        rec.mtime, rec.atime, rec.ctime, rec.crtime, feat.type or rec.type,
        int(rec.ext_mismatch or feat.ext_mismatch),
        # _FEATURE_COLS
        feat.md5, feat.sha1, feat.sha256, int(feat.is_picture), feat.width, feat.height,
        feat.pdq, feat.pdq_quality, feat.phash, _exif_to_json(feat.exif),
        feat.thumbnail or None, feat.error,
        _json(extra) if extra else "{}",
    )


def _match_detail(m: Match) -> str:
    """A video match's frames and vPDQ shares as JSON ("{}" for every other match)."""
    if not (m.frames or m.query_share or m.known_share):
        return "{}"
    return _json({"frames": [list(f) for f in m.frames], "query_share": m.query_share,
                  "known_share": m.known_share})


def _match_detail_fields(text: Optional[str]) -> dict:
    d = json.loads(text or "{}")
    if not d:
        return {}
    return {"frames": tuple((int(n), float(t)) for n, t in d.get("frames") or ()),
            "query_share": float(d.get("query_share") or 0.0),
            "known_share": float(d.get("known_share") or 0.0)}


def _prov_json(p: Provenance, fs_type: str) -> Optional[str]:
    """The whole provenance, only where the columns cannot say it all (members, a parent, a
    snapshot): most rows store none and are read from the columns (a JSON encode per file was
    the driver's and workers' cost for nothing)."""
    if not (p.members or p.parent is not None or p.snapshot or p.fs_type != fs_type):
        return None
    return _json(p.to_dict())


def _file_from_row(r: dict) -> tuple[FileRecord, Features]:
    extra = json.loads(r.get("extra") or "{}")
    if r.get("prov"):
        prov = Provenance.from_dict(json.loads(r["prov"]))
    else:
        prov = Provenance(device_id=r["device_id"], volume_offset=r["volume_offset"],
                          inode=r["inode"], path=r["path"], ads=r["ads"],
                          attr_type=r["attr_type"], attr_id=r["attr_id"],
                          volume_index=r["volume_index"], fs_type=r["fs_type"])
    rec = FileRecord(prov=prov, name=r["name"], size=r["size"], allocated=bool(r["allocated"]),
                     fs_type=r["fs_type"], is_dir=bool(r["is_dir"]), orphan=bool(r["orphan"]),
                     mtime=r["mtime"], atime=r["atime"], ctime=r["ctime"], crtime=r["crtime"],
                     type=r["type"], ext_mismatch=bool(r["ext_mismatch"]),
                     **_known(FileRecord, extra.get("record", {})))
    fextra = _known(Features, extra.get("features", {}))
    if fextra.get("frames"):
        fextra["frames"] = tuple(VideoFrame(*f) for f in fextra["frames"])
    feat = Features(key=r["key"], size=r["size"], md5=r["md5"], sha1=r["sha1"],
                    sha256=r["sha256"], type=r["type"], ext_mismatch=bool(r["ext_mismatch"]),
                    is_picture=bool(r["is_picture"]), width=r["width"], height=r["height"],
                    pdq=r["pdq"], pdq_quality=r["pdq_quality"], phash=r["phash"],
                    exif=_exif_from_json(r["exif"]), thumbnail=r["thumbnail"] or b"",
                    error=r["error"], **fextra)
    return rec, feat


def _known(cls, fields: dict) -> dict:
    """Only the extra fields the running version's record still has."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in fields.items() if k in names}
