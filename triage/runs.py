"""Scan runs of a device: what each was matched against, and whether a new scan is weaker.

Every scan run's results are kept (the case store archives a device's earlier results when a
fresh scan starts); the queue uses each device's latest complete run (`ranked_run`). A re-scan with weaker settings
than the device's last complete run (an alert set left out, an older version of one, no model
where there was one) would drop what that run found from the queue, so it is refused unless the
user says `--replace`.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Iterable, Optional

from triage.errors import TriageError


def _natural(version: str) -> tuple:
    """'2025.10' > '2025.9'; digits compare as numbers, the rest as text."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p)
                 for p in re.findall(r"\d+|[^\d.\-_ ]+", str(version)))


def alert_sets(hashsets: Iterable[dict]) -> dict[str, str]:
    """name -> version of the alert sets in a run's hash-set provenance."""
    return {str(h.get("name")): str(h.get("version", "")) for h in hashsets or ()
            if isinstance(h, dict) and h.get("role") == "alert"}


def set_label(name: str, version: str) -> str:
    return f"{name} {version}".strip()


def weaker(before_sets: Iterable[dict], before_model: Optional[dict],
           after_sets: Iterable[dict], after_model: Optional[dict]) -> list[str]:
    """How the `after` settings are weaker than `before`, one phrase each; empty when not."""
    before, after = alert_sets(before_sets), alert_sets(after_sets)
    out = []
    for name, version in sorted(before.items()):
        if name not in after:
            out.append(f"alert set {set_label(name, version)} left out")
        elif _natural(after[name]) < _natural(version):
            out.append(f"alert set {name} {after[name]} is older than {version}")
    if before_model and not after_model:
        out.append(f"no model (the earlier run used {before_model.get('name', 'a model')})")
    return out


def latest_complete(runs: list[dict]) -> Optional[dict]:
    """The newest run that ended (complete or with gaps); None when none did."""
    done = [r for r in runs if r.get("status") not in ("scanning", "interrupted", "failed")]
    return done[-1] if done else None


def ranked_run(runs: list[dict], running: Optional[int] = None) -> Optional[dict]:
    """The run whose results stand for a device in the queue, `show`, the exports, the report
    and the review service; `runs` are the device's runs oldest first, `running` the id of the
    scan run in progress. The newest run, while it scans or once it ended; when it was cut
    off (interrupted, failed, or killed: still "scanning" with no scan running), the newest
    run before it that ended, so a stopped re-scan never hides what a complete run found. A
    device with no such run keeps its newest. None when the device has no runs."""
    if not runs:
        return None
    newest = runs[-1]
    status = newest.get("status")
    if status == "scanning" and running is not None and newest.get("run_id") == running:
        return newest
    if status not in ("scanning", "interrupted", "failed"):
        return newest
    return latest_complete(runs) or newest


def superseded_note(runs: list[dict], ranked: Optional[dict]) -> str:
    """What `show` and the queue say when the newest run is not the one ranked: which run
    was cut off, which run the rank uses, and the next step. Empty when the newest is used."""
    if not runs or ranked is None or ranked.get("run_id") == runs[-1].get("run_id"):
        return ""
    newest = runs[-1]
    status = newest.get("status")
    how = "was interrupted" if status in ("interrupted", "scanning") else f"ended {status}"
    return (f"the newest scan run (run {newest['run_id']}) {how}; ranked on run "
            f"{ranked['run_id']} ({ranked.get('status')}), the latest complete one; scan the "
            "device again to bring it up to date")


def check_rescan(store, device_ids: Iterable[str], hashsets: list[dict], model: Optional[dict],
                 replace: bool) -> list[str]:
    """Notes for devices this scan examines again; TriageError for a weaker re-scan without
    `replace`. Earlier runs are archived, never deleted, so the notes say where they stay."""
    notes, refused = [], []
    by_device: dict[str, list[dict]] = {}
    for r in store.device_runs():
        by_device.setdefault(r["device_id"], []).append(r)
    for dev_id in device_ids:
        last = latest_complete(by_device.get(dev_id, []))
        if last is None:
            continue
        why = weaker(last["hashsets"], last["model"], hashsets, model)
        found = last["counts"].get("alert_matches", 0) + last["counts"].get("near_matches", 0)
        if not why:
            notes.append(f"{dev_id}: scanned again; run {last['run_id']} stays in "
                         f"`triage show {dev_id}`")
            continue
        drop = (f"; the queue would no longer show the {found} alert matches run "
                f"{last['run_id']} found" if found else "")
        line = f"{dev_id}: weaker than run {last['run_id']} ({'; '.join(why)}){drop}"
        (notes if replace else refused).append(line)
    if refused:
        raise TriageError("re-scan refused: " + " | ".join(refused) +
                          ". Give the same sets (and model), or add --replace to scan anyway; "
                          "earlier runs stay listed in `triage show`")
    return notes


def version_outliers(store) -> dict[str, str]:
    """device id -> how its latest run's alert-set versions differ from most of the case
    ("caid 1 (case: caid 2)"); devices that agree are left out."""
    latest = {r["device_id"]: r for r in store.device_runs() if r.get("ranked")}
    if len(latest) < 2:
        return {}
    versions = {d: alert_sets(r["hashsets"]) for d, r in latest.items()}
    usual: dict[str, str] = {}
    for name in {n for v in versions.values() for n in v}:
        counts = Counter(v[name] for v in versions.values() if name in v)
        usual[name] = counts.most_common(1)[0][0]
    out = {}
    for dev, sets in versions.items():
        diff = [f"{set_label(n, v)} (case: {usual[n]})" for n, v in sorted(sets.items())
                if v != usual[n]]
        if diff:
            out[dev] = "matched against other set versions: " + ", ".join(diff)
    return out


def device_notes(store) -> dict[str, list[str]]:
    """device id -> the queue's notes about its runs: a newest run that was cut off (the rank
    uses an earlier one), and alert-set versions that differ from the rest of the case."""
    by_device: dict[str, list[dict]] = {}
    for r in store.device_runs():
        by_device.setdefault(r["device_id"], []).append(r)
    out: dict[str, list[str]] = {}
    for dev, runs in by_device.items():
        note = superseded_note(runs, next((r for r in runs if r.get("ranked")), None))
        if note:
            out.setdefault(dev, []).append(note)
    for dev, note in version_outliers(store).items():
        out.setdefault(dev, []).append(note)
    return out
