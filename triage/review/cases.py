"""The served cases: each case's store, review file and cached verdicts and findings.

The case is read only through `triage.rank`, `triage.findings`, `triage.views` and `CaseStore`
methods, the same functions `triage queue` and `triage show` call, so the browser and the CLI
agree. Verdicts and findings are cached until the case store changes: a read-only connection
asks SQLite's `PRAGMA data_version`, which moves whenever any other connection (a scan, the
CLI) commits. A scan writing another case leaves this case's cache alone.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from triage import rank, views
from triage.context import deadline_datetime
from triage.errors import TriageError
from triage.output import iso_times
from triage.findings import Finding, findings
from triage.classify import store_thresholds
from triage.review.casereview import CaseReview, finding_id
from triage.store import DB_NAME, CaseStore, is_case


SNAPSHOT_SECONDS = 60.0


@dataclass
class _Snapshot:
    version: int
    ordered: list
    by_device: dict
    devices: dict
    findings: dict = field(default_factory=dict)     # device id -> list[Finding]
    device_json: dict = field(default_factory=dict)  # device id -> (grades version, (dict, bytes))
    made: float = 0.0
    queue: Optional[tuple] = None                    # (grades version, rows)


class _Devices:
    """The snapshot's device records where `rank.find_device` expects a store."""

    def __init__(self, devices: dict):
        self._devices = list(devices.values())

    def devices(self) -> list[dict]:
        return self._devices


class Case:
    def __init__(self, name: str, case_dir: Path):
        self.name = name
        self.dir = Path(case_dir)
        self.store = CaseStore(self.dir, create=False)
        self.review = CaseReview(self.dir)
        self._watch = sqlite3.connect(f"file:{self.dir / DB_NAME}?mode=ro", uri=True,
                                      check_same_thread=False)
        self._lock = threading.RLock()
        self._snap: Optional[_Snapshot] = None
        self._grade_seq = 0
        self.ids: dict[str, tuple[str, str]] = {}     # finding id -> (device id, file key)

    def close(self) -> None:
        self.store.close()
        self.review.close()
        self._watch.close()

    def version(self) -> int:
        with self._lock:
            return self._watch.execute("PRAGMA data_version").fetchone()[0]

    def grades_version(self) -> tuple:
        return (self.review.data_version(), self._grade_seq)

    def snapshot(self) -> _Snapshot:
        """The verdicts in priority order, recomputed when the case store changed, and at
        least every SNAPSHOT_SECONDS (custody-deadline points depend on the time)."""
        with self._lock:
            v = self.version()
            now = time.monotonic()
            snap = self._snap
            if snap is None or snap.version != v or now - snap.made > SNAPSHOT_SECONDS:
                ordered = rank.verdicts(self.store)
                devices = {d["id"]: d for d in self.store.devices()}
                self._snap = _Snapshot(v, ordered, {x.device_id: x for x in ordered}, devices,
                                       made=now)
            return self._snap

    def state(self) -> tuple:
        """Changes whenever the queue of this case may have changed."""
        snap = self.snapshot()
        return (id(snap), snap.version, self.grades_version())

    def queue(self) -> list[dict]:
        snap = self.snapshot()
        gv = self.grades_version()
        with self._lock:
            if snap.queue is None or snap.queue[0] != gv:
                rows = views.queue_rows(snap.ordered, self.review.graded_counts())
                snap.queue = (gv, [dict(r, case=self.name) for r in rows])
            return snap.queue[1]

    def find_device(self, ref: str) -> dict:
        """`rank.find_device` (id, exhibit or evidence name) over the snapshot's devices, so a
        request does not read and parse every device row again."""
        snap = self.snapshot()
        if ref in snap.devices:
            return snap.devices[ref]
        return rank.find_device(_Devices(snap.devices), ref)

    def findings(self, device_id: str) -> list[Finding]:
        snap = self.snapshot()
        with self._lock:
            found = snap.findings.get(device_id)
            if found is None:
                found = findings(self.store, device_id, thresholds=store_thresholds(self.store))
                snap.findings[device_id] = found
                for f in found:
                    self.ids[finding_id(f.key)] = (device_id, f.key)
            return found

    def device_json(self, device: dict) -> tuple[dict, bytes]:
        """`triage show --json` of a device with its case, and that JSON encoded."""
        snap = self.snapshot()
        gv = self.grades_version()
        with self._lock:
            hit = snap.device_json.get(device["id"])
        out = hit[1] if hit is not None and hit[0] == gv else None
        if out is None:
            verdict = snap.by_device.get(device["id"])
            if verdict is None:       # the device arrived after the snapshot
                snap = self.snapshot()
                verdict = snap.by_device[device["id"]]
            found = self.findings(device["id"])
            out = dict(views.device_json(self.store, device, verdict, found,
                                         self.review.grades(device["id"])), case=self.name)
            # the API's JSON is the CLI's: times as ISO-8601 UTC (the page reads the dict)
            out = (out, json.dumps(iso_times(out), default=str).encode())
            with self._lock:      # one entry per device: a grade replaces it, never adds
                snap.device_json[device["id"]] = (gv, out)
        return out

    def lookup(self, fid: str) -> Optional[tuple[str, str]]:
        """(device id, file key) of a finding id, looking through every device once."""
        hit = self.ids.get(fid)
        if hit is None:
            for dev_id in self.snapshot().devices:
                self.findings(dev_id)
            hit = self.ids.get(fid)
        return hit

    def set_grade(self, fid: str, grade: str, note: str, user: str) -> dict:
        dev_id, key = self.lookup(fid)
        out = self.review.set_grade(device_id=dev_id, key=key, grade=grade, note=note, user=user)
        with self._lock:
            self._grade_seq += 1
        return out


class Cases:
    """Every served case, by name (the case folder's name; a clash gets its parent's too)."""

    def __init__(self, dirs: list[Path]):
        self.by_name: dict[str, Case] = {}
        self._lock = threading.Lock()
        self._queue_cache: Optional[tuple] = None
        seen: set[Path] = set()
        for d in dirs:
            d = Path(d).resolve()
            if d in seen:
                continue
            seen.add(d)
            if not is_case(d):
                raise TriageError(f"{d} is not a case directory (no {DB_NAME})")
            name = d.name
            if name in self.by_name:
                name = f"{d.parent.name}/{d.name}"
            self.by_name[name] = Case(name, d)
        if not self.by_name:
            raise TriageError("no case to serve: give --case DIR or --cases ROOT")

    def __iter__(self):
        return iter(self.by_name.values())

    def get(self, name: str) -> Optional[Case]:
        return self.by_name.get(name)

    def close(self) -> None:
        for c in self:
            c.close()

    def queue(self, flag: str = "", case: str = "", deadline_days: Optional[float] = None,
              now: Optional[float] = None) -> list[dict]:
        """Every case's queue, merged by tier and score (one case: exactly `triage queue`'s
        order), filtered by flag code, case name, and custody deadline within N days."""
        import time

        rows: list[dict] = []
        for c in self:
            if case and c.name != case:
                continue
            rows.extend(c.queue())
        if len(self.by_name) > 1:
            rows.sort(key=lambda r: (-r["tier"], -r["score"], r["case"], r["device"]))
        if flag:
            rows = [r for r in rows if flag in r["flags"]]
        if deadline_days is not None:
            now = time.time() if now is None else now
            keep = []
            for r in rows:
                due = deadline_datetime((r.get("context") or {}).get("custody_deadline"))
                if due is not None and due.timestamp() - now <= deadline_days * 86400:
                    keep.append(r)
            rows = keep
        return rows

    def queue_json(self, flag: str = "", case: str = "", deadline_days: Optional[float] = None) -> bytes:
        """`queue` encoded, cached until a case or its grades change (or the minute, when
        filtering by deadline)."""
        key = (tuple(c.state() for c in self), flag, case, deadline_days,
               int(time.time() // 60) if deadline_days is not None else 0)
        with self._lock:
            if self._queue_cache is not None and self._queue_cache[0] == key:
                return self._queue_cache[1]
        body = json.dumps(self.queue(flag, case, deadline_days)).encode()
        with self._lock:
            self._queue_cache = (key, body)
        return body

    def device(self, ref: str, case: str = "") -> tuple[Case, dict]:
        """The case and device record a reference names; TriageError when none or several."""
        hits = []
        for c in self:
            if case and c.name != case:
                continue
            try:
                hits.append((c, c.find_device(ref)))
            except TriageError:
                continue
        if not hits:
            raise LookupError(f"no device {ref!r}")
        if len(hits) > 1:
            raise TriageError(f"{ref!r} is in {len(hits)} cases ({', '.join(c.name for c, _ in hits)});"
                              " add ?case=NAME")
        return hits[0]

    def finding(self, fid: str) -> Optional[tuple[Case, str, str]]:
        for c in self:
            hit = c.lookup(fid)
            if hit is not None:
                return c, hit[0], hit[1]
        return None


def case_dirs(cases: list[str], roots: list[str]) -> list[Path]:
    """--case folders, then every case folder directly under each --cases root."""
    out = [Path(c) for c in cases]
    for root in roots:
        root_path = Path(root)
        if not root_path.is_dir():
            raise TriageError(f"--cases {root}: not a folder")
        out.extend(sorted(p for p in root_path.iterdir() if p.is_dir() and is_case(p)))
    return out
