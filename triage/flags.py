"""Safeguarding flags: the rules that raise them, and the sink that records each one once.

Flags are raised while a device is still being scanned, so an officer can act before the scan
ends. Each flag names the device, the file (or the part not examined), the time it was raised,
a message, and the provenance needed to reach the same bytes again.

Codes and severities (higher is worse; CHILD_ACCESS is always the highest):

| code          | severity | raised when                                                        |
|---------------|---------:|--------------------------------------------------------------------|
| CHILD_ACCESS  | 100      | once per device, as an escalation naming the findings it covers     |
|               |          | (any flag below except NOT_EXAMINED), when the device's suspect    |
|               |          | has access to children (lives_with, works_with, other)              |
| SELF_PRODUCED | 80       | a matched or suspected picture with camera-original indicators     |
| KNOWN_MATCH   | 70       | an exact hash match against an alert set                           |
| SUSPECTED_NEW | 50       | model scores over threshold and no hash match: possibly new        |
|               |          | material, a child who may not yet be identified                    |
| NEAR_MATCH    | 40       | a perceptual (PDQ/pHash) alert match within threshold, no exact one |
| NOT_EXAMINED  | 20       | a part of the device could not be examined (NOT_EXAMINED_KINDS)    |

Camera-original indicators: EXIF make and model both present, and either a camera-roll path
(DCIM, Camera Roll, ...) or an original capture date in the EXIF. Pictures re-shared online
usually lose that EXIF, so its presence suggests the picture was taken on or near this device.

Model scores are a ranking aid, not evidence: SUSPECTED_NEW asks for a human look, nothing more.
"""
from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Iterator, Optional

from triage import records
from triage.classify import category_text, classify, frames_over, score_text
from triage.context import ACCESS_PHRASES, CHILD_ACCESS_LEVELS
from triage.records import (Coverage, Features, FileRecord, Flag, Match, Provenance, Score,
                            frame_list)
from triage.units import terminal_safe

KNOWN_MATCH = "KNOWN_MATCH"
NEAR_MATCH = "NEAR_MATCH"
SUSPECTED_NEW = "SUSPECTED_NEW"
SELF_PRODUCED = "SELF_PRODUCED"
CHILD_ACCESS = "CHILD_ACCESS"
NOT_EXAMINED = "NOT_EXAMINED"

SEVERITY = {
    CHILD_ACCESS: 100,
    SELF_PRODUCED: 80,
    KNOWN_MATCH: 70,
    SUSPECTED_NEW: 50,
    NEAR_MATCH: 40,
    NOT_EXAMINED: 20,
}
CODES = tuple(sorted(SEVERITY, key=SEVERITY.get, reverse=True))

# Gaps that block examination of a whole part of the device raise NOT_EXAMINED at once; gaps
# in single files and free space (videos, PDFs, unallocated space, files read short) are
# counted in the device's reasons instead, or a scan would print one flag per video.
NOT_EXAMINED_KINDS = (frozenset(records.COVERAGE_KINDS) - records.NOT_YET_EXAMINED
                      - {records.FILE_NOT_READ, records.ARCHIVE, records.PICTURE})

FLAGS_FILE = "flags.jsonl"
ESCALATION_KEY = "device"     # CHILD_ACCESS's key: one per device, not one per file

_CAMERA_PATH = re.compile(
    r"(^|[/\\])(dcim|camera roll|camera uploads|cameraroll)([/\\]|$)",
    re.IGNORECASE)


def is_camera_path(path: str) -> bool:
    """True for DCIM and camera-roll folders, where phones and cameras write originals."""
    return bool(_CAMERA_PATH.search(path or ""))


def camera_indicators(record: FileRecord, features: Features) -> list[str]:
    """Why a picture looks camera-original; empty when it does not."""
    exif = features.exif
    if exif is None or not (exif.make.strip() and exif.model.strip()):
        return []
    make, model = exif.make.strip(), exif.model.strip()
    camera = model if model.lower().startswith(make.lower()) else f"{make} {model}"
    found = [f"camera EXIF {camera}"]
    if is_camera_path(record.path):
        found.append("camera-roll path")
    if exif.datetime_original:
        found.append(f"taken {exif.datetime_original}")
    if exif.gps:
        found.append("GPS position")
    # Make and model alone survive some re-encodes; ask for a second indicator.
    return found if len(found) > 1 else []


def file_provenance(record: Optional[FileRecord], features: Optional[Features]) -> dict:
    """The provenance of a file as plain values: enough to re-read it with icat."""
    prov: dict = {}
    if record is not None:
        p = record.prov
        prov.update(path=p.path, inode=p.inode, volume_offset=p.volume_offset, ads=p.ads,
                    member=p.member, allocated=record.allocated, size=record.size,
                    provenance=p.to_dict())
    if features is not None:
        prov["hashes"] = {k: v for k, v in (("md5", features.md5), ("sha1", features.sha1),
                                            ("sha256", features.sha256)) if v}
    return prov


def _match_prov(match: Match) -> dict:
    d = {"set_name": match.set_name, "set_version": match.set_version,
         "category": match.category, "algorithm": match.algorithm, "value": match.value,
         "distance": match.distance, "kind": match.kind}
    if match.frames:                  # a video's match: the frames behind it
        d["frames"] = [{"frame": n, "seconds": t} for n, t in match.frames]
    if match.algorithm == "vpdq":
        d.update(known_video=match.value, query_share=match.query_share,
                 known_share=match.known_share)
    return d


def display_path(prov: Provenance, member: bool = True) -> str:
    """A file's path for people (Provenance.display)."""
    return prov.display(member)


def _label(record: Optional[FileRecord], key: str) -> str:
    return "(file not in this batch)" if record is None else record.prov.display()


def rules_for_batch(device_id: str, context: Optional[dict],
                    items: list[tuple[FileRecord, Features]], matches: list[Match],
                    scores: list[Score], coverage: list[Coverage], now: float,
                    thresholds: Optional[dict] = None,
                    labels: Optional[dict] = None,
                    volume_names: Optional[dict] = None) -> list[Flag]:
    """Every flag one batch of results raises. Pure: the sink dedupes across batches.
    `labels`: set name -> raw category -> label (classify.category_labels_of);
    `volume_names`: volume offset -> VolumeRef.name, so a gap names its volume one way."""
    by_key = {rec.key: (rec, feat) for rec, feat in items}
    found = classify(matches, scores, thresholds)
    flags: list[Flag] = []
    raised: list[tuple[str, Flag]] = []   # (file key, flag) of file flags, for CHILD_ACCESS

    def add(code: str, key: str, message: str, provenance: dict) -> Flag:
        flag = Flag(code=code, severity=SEVERITY[code], device_id=device_id, key=key,
                    raised_at=now, message=message, provenance=provenance)
        flags.append(flag)
        return flag

    def base(key: str) -> dict:
        rec, feat = by_key.get(key, (None, None))
        return file_provenance(rec, feat)

    for key, ms in found.exact.items():
        ms = sorted((m for m in ms if m.kind == "exact"),
                    key=lambda m: (-m.severity, m.set_name, m.algorithm))
        top = ms[0]
        rec = by_key.get(key, (None, None))[0]
        sets = ", ".join(sorted({f"{m.set_name}" + (f" {category_text(labels, m.set_name, m.category)}"
                                                     if m.category else "") for m in ms}))
        deleted = " (deleted)" if rec is not None and not rec.allocated else ""
        prov = dict(base(key), matches=[_match_prov(m) for m in ms])
        raised.append((key, add(KNOWN_MATCH, key,
                                f"exact {top.algorithm.upper()} match in {sets}: "
                                f"{_label(rec, key)}{deleted}", prov)))
    for key, ms in found.near.items():
        ms = sorted(ms, key=lambda m: (m.distance, m.set_name))
        top = ms[0]
        rec = by_key.get(key, (None, None))[0]
        cat = f" {category_text(labels, top.set_name, top.category)}" if top.category else ""
        prov = dict(base(key), matches=[_match_prov(m) for m in ms])
        video = f", {top.video_text}" if top.video_text else ""
        raised.append((key, add(NEAR_MATCH, key,
                                f"near {top.algorithm} match (distance {top.distance}{video}) in "
                                f"{top.set_name}{cat}: {_label(rec, key)}", prov)))
    for key in sorted(found.suspected):
        s = found.suspected[key][0]
        rec = by_key.get(key, (None, None))[0]
        values = score_text(s.values)
        prov = dict(base(key), model=s.model, model_sha256=s.model_sha256, scores=dict(s.values))
        over = frames_over(s, thresholds) if s.frames else []
        if over:                      # a video: the frames over the thresholds
            prov["frames"] = [{"frame": n, "seconds": t, "scores": v} for n, t, v in over]
            values += f"; {len(over)} of {len(s.frames)} frames over, at {frame_list(over)}"
        raised.append((key, add(SUSPECTED_NEW, key,
                                f"possibly new material, no hash match ({s.model}: {values}): "
                                f"{_label(rec, key)}", prov)))
    for key in list(found.exact) + list(found.near) + sorted(found.suspected):
        rec, feat = by_key.get(key, (None, None))
        if rec is None or feat is None:
            continue
        why = camera_indicators(rec, feat)
        if why:
            prov = dict(base(key), indicators=why)
            raised.append((key, add(SELF_PRODUCED, key,
                                    f"possibly self-produced ({'; '.join(why)}): "
                                    f"{_label(rec, key)}", prov)))
    access = (context or {}).get("access_to_children")
    if access in CHILD_ACCESS_LEVELS and raised:
        worst: dict[str, Flag] = {}
        for key, flag in raised:
            if key not in worst or flag.severity > worst[key].severity:
                worst[key] = flag
        covers = [{"key": key, "code": f.code, "path": f.provenance.get("path", "")}
                  for key, f in worst.items()]
        # one per device: the sink merges what later batches cover into the same flag
        add(CHILD_ACCESS, ESCALATION_KEY, escalation_message(access, covers),
            {"access_to_children": access, "covers": covers})
    for c in coverage:
        if c.kind not in NOT_EXAMINED_KINDS:
            continue
        where = ((volume_names or {}).get(c.where.volume_offset) if c.where.scope == "volume"
                 else None) or c.where.display()
        add(NOT_EXAMINED, c.key, f"{where} not examined ({c.kind}): {c.reason}", c.to_dict())
    return flags


def escalation_message(access: str, covers: list[dict]) -> str:
    """CHILD_ACCESS's message: who, and how many findings of which kinds it escalates."""
    counts: dict[str, int] = {}
    for c in covers:
        counts[c["code"]] = counts.get(c["code"], 0) + 1
    kinds = ", ".join(f"{code} {counts[code]}" for code in
                      sorted(counts, key=lambda c: -SEVERITY.get(c, 0)))
    n = len(covers)
    return (f"suspect {ACCESS_PHRASES.get(access, access)}: escalates {n} finding"
            f"{'s' if n != 1 else ''} of this device ({kinds})")


def merge_escalation(old: Flag, new: Flag) -> Flag:
    """One device's CHILD_ACCESS covering the findings of both (worst code per file kept)."""
    by_key = {c["key"]: c for c in old.provenance.get("covers", [])}
    for c in new.provenance.get("covers", []):
        have = by_key.get(c["key"])
        if have is None or SEVERITY.get(c["code"], 0) > SEVERITY.get(have["code"], 0):
            by_key[c["key"]] = c
    covers = sorted(by_key.values(), key=lambda c: c["key"])
    access = old.provenance.get("access_to_children") or new.provenance.get("access_to_children")
    return Flag(code=old.code, severity=old.severity, device_id=old.device_id, key=old.key,
                raised_at=old.raised_at, message=escalation_message(access, covers),
                provenance=dict(old.provenance, covers=covers))


def flag_to_dict(flag: Flag) -> dict:
    """A flag as the JSON object written to flags.jsonl."""
    return asdict(flag)


def flag_from_dict(data: dict) -> Flag:
    return Flag(code=data["code"], severity=int(data["severity"]), device_id=data["device_id"],
                key=data["key"], raised_at=float(data["raised_at"]), message=data["message"],
                provenance=dict(data.get("provenance") or {}))


_STYLE = {CHILD_ACCESS: "bold white on red", SELF_PRODUCED: "bold red", KNOWN_MATCH: "red",
          SUSPECTED_NEW: "magenta", NEAR_MATCH: "yellow", NOT_EXAMINED: "cyan"}


class FlagSink:
    """Records each flag once: the store first (it dedupes), then flags.jsonl, then the console.

    flags.jsonl is appended one line per flag and fsync'd at once, so a flag survives a crash
    of the scan a moment later. It holds paths of possibly illicit files: mode 0600.
    """

    def __init__(self, case_dir, store, console=None):
        self.path = Path(case_dir) / FLAGS_FILE
        self.store = store
        self.console = console
        self._lock = threading.Lock()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.fchmod(fd, 0o600)
        self._file = os.fdopen(fd, "a", encoding="utf-8")

    def raise_(self, flag: Flag) -> bool:
        """Record a flag; False when it was already raised (nothing else is done then)."""
        with self._lock:
            if not self.store.add_flag(flag):
                if flag.code == CHILD_ACCESS:     # the device's escalation covers more now
                    old = self.store.flag(flag.code, flag.device_id, flag.key)
                    if old is not None:
                        merged = merge_escalation(old, flag)
                        if merged != old:
                            self.store.update_flag(merged)
                            self._log(merged)     # a later line for the same flag supersedes
                return False
            self._log(flag)
        if self.console is not None:
            self.console.print(format_flag_line(flag), style=_STYLE.get(flag.code), highlight=False,
                               markup=False, soft_wrap=True)
        return True

    def _log(self, flag: Flag) -> None:
        self._file.write(json.dumps(flag_to_dict(flag), sort_keys=True) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def raise_all(self, flags: Iterable[Flag]) -> int:
        """Record many flags, worst first; returns how many were new."""
        return sum(self.raise_(f) for f in sorted(flags, key=lambda f: -f.severity))

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def format_flag_line(flag: Flag) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(flag.raised_at))
    # flag messages carry file names from the evidence: shown inert on a terminal
    return f"{stamp} {flag.code:<13} {terminal_safe(flag.device_id)}: {terminal_safe(flag.message)}"


def read_flags_file(path) -> list[Flag]:
    """Every flag in a flags.jsonl; a torn last line (a crash mid-write) is skipped, and a
    later line for the same flag (a device's escalation covering more) replaces the earlier."""
    flags: dict = {}
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.endswith("\n"):
                    try:
                        f = flag_from_dict(json.loads(line))
                    except (ValueError, KeyError):
                        continue
                    flags[(f.code, f.device_id, f.key)] = f
    except FileNotFoundError:
        pass
    return list(flags.values())


def follow_flags_file(path, poll: float = 0.5, stop=None) -> Iterator[Flag]:
    """Yield flags from flags.jsonl as they are appended (tail -f). Ends when stop() is true."""
    offset = 0
    pending = ""
    while True:
        try:
            with open(path, encoding="utf-8") as fh:
                fh.seek(offset)
                chunk = fh.read()
                offset = fh.tell()
        except FileNotFoundError:
            chunk = ""
        pending += chunk
        *lines, pending = pending.split("\n")
        for line in lines:
            if line.strip():
                try:
                    yield flag_from_dict(json.loads(line))
                except (ValueError, KeyError):
                    continue
        if stop is not None and stop():
            return
        time.sleep(poll)


class FlagFollower:
    """Follows the flags a scan raises as they land in the case store, one look at a time:
    `poll()` gives ("flags", [(id, Flag), ...]) for the flags new since the last look, then
    ("ended", run) once the scan it follows has ended (its last flags first). It follows the
    scan running now, else the next run after `after_run` (default: the newest run when it
    starts); after an end it goes on to the next run, so a long-lived follower (the review
    service) reports every scan's end. `flags --follow` (follow_store) and the review
    service's live feed both look through it."""

    def __init__(self, store, device_id: Optional[str] = None, after_id: int = 0,
                 since: Optional[float] = None, codes: Iterable[str] = (),
                 after_run: Optional[int] = None):
        self.store, self.device_id, self.after_id = store, device_id, after_id
        self.since, self.codes = since, set(codes)
        if after_run is None:
            running = store.running_run()
            runs = store.runs()
            after_run = running["id"] - 1 if running else (runs[-1]["id"] if runs else 0)
        self.after_run = after_run

    def _fresh(self) -> list:
        batch = self.store.flags(self.device_id, after_id=self.after_id)
        if batch:
            self.after_id = batch[-1][0]
        return [(i, f) for i, f in batch if (not self.codes or f.code in self.codes)
                and (self.since is None or f.raised_at >= self.since)]

    def poll(self) -> list[tuple[str, object]]:
        out: list[tuple[str, object]] = []
        batch = self._fresh()
        if batch:
            out.append(("flags", batch))
        followed = [r for r in self.store.runs() if r["id"] > self.after_run]
        # ended: its end is recorded, or its scan process is gone (killed: no end recorded)
        if followed and (followed[-1]["ended"] is not None or self.store.running_run() is None):
            batch = self._fresh()
            if batch:
                out.append(("flags", batch))
            out.append(("ended", followed[-1]))
            self.after_run = followed[-1]["id"]
        return out


def ended_text(run: Optional[dict]) -> str:
    """What a follower says when the scan it followed has ended (`flags --follow`, the review
    service's live feed)."""
    run = run or {}
    how = run.get("status") if run.get("ended") is not None else "stopped with no end recorded"
    return f"scan run {run.get('id', '?')} ended ({how}); no more flags will come from it"


def follow_store(store, device_id: Optional[str] = None, after_id: int = 0,
                 interval: float = 0.5, since: Optional[float] = None,
                 codes: Iterable[str] = (), after_run: Optional[int] = None,
                 sleep=time.sleep) -> Iterator[tuple[str, object]]:
    """The flags a scan raises, as they land in the case store: ("flags", [(id, Flag), ...])
    for each new batch, then ("ended", run) once the scan it follows has ended; a blocking
    loop over FlagFollower.poll, for `flags --follow`."""
    follower = FlagFollower(store, device_id, after_id, since, codes, after_run)
    while True:
        for what, item in follower.poll():
            yield what, item
            if what == "ended":
                return
        sleep(interval)
