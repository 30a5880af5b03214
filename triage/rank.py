"""Device verdicts and the priority queue: which seized device to examine first, and why.

The order is decided in two steps, so that no weight can break the rules that matter most.

**1. Tier** (structural; a higher tier always ranks first, whatever the points):

| tier | the device has                                                   |
|-----:|------------------------------------------------------------------|
| 5    | exact alert matches                                              |
| 4    | near (perceptual) alert matches, no exact ones                   |
| 3    | SUSPECTED_NEW pictures only (the model's view, a ranking aid)    |
| 2    | nothing found, and a part could not be examined: an encrypted or |
|      | unreadable volume, a folder or file that could not be read, a    |
|      | refused archive or picture, no alert set, a failed batch         |
| 1    | nothing found, but space or content nothing examines yet         |
|      | (records.NOT_YET_EXAMINED: unallocated and unpartitioned space   |
|      | not carved, video frames not decoded, content inside files not   |
|      | decoded: a PDF's JPX images, an Office file's WMF pictures, ...) |
| 0    | nothing found, fully examined                                    |

So a device with exact matches always precedes one with only near matches, a near match to
known material outweighs any number of model suspicions, and a device that could not be fully
examined (encrypted volume, corrupt image, unfinished scan) can never rank below one that was
examined and found clean. Tier 0 is reached only by a device with no coverage record at all:
its free space carved, and nothing left that triage cannot yet open (a video it could not
decode, a PDF's JPX images, an Office document's WMF pictures).

**2. Points** (within a tier, higher first; ties go by device id). Each rule adds points and a
reason line; `triage show` lists the breakdown.

| rule                | points                                                          |
|---------------------|-----------------------------------------------------------------|
| exact_matches       | 100 x the category weight, per distinct matched file            |
|                     | (weight = the alert set's severity for that category, at least 1)|
| near_matches        | 30 per file with a near match and no exact match                |
| suspected_new       | 15 per SUSPECTED_NEW picture (model: a ranking aid, not evidence)|
| self_produced       | 40 per matched/suspected picture with camera-original indicators |
| same_camera         | 60 when one camera (EXIF make+model) took 2+ matched/suspected   |
| device_camera       | 60 when a matched/suspected picture's camera also took 10+ of    |
|                     | the device's other pictures (the device is probably that camera) |
| access_to_children  | lives_with 150, works_with 150, other 100, unknown 40, none 0    |
| custody_deadline    | 50 if passed or within 2 days, 25 if within 7 days              |
| coverage            | partial 20, failed 40                                           |

"unknown" access to children scores above "none": it is a reason to ask the officer in the
case, not a reason to wait.
"""
from __future__ import annotations

import datetime as _dt
import time
from collections import Counter, defaultdict
from typing import Iterable, Optional

from triage import records
from triage.classify import category_label, classify, store_thresholds
from triage.context import ACCESS_PHRASES, deadline_datetime
from triage.flags import camera_indicators
from triage.records import Coverage, DeviceVerdict, FileRecord, Features, Match, Score, VolumeRef
from triage.units import human_bytes

TIER_EXACT, TIER_NEAR, TIER_SUSPECTED, TIER_UNEXAMINED, TIER_NOT_YET, TIER_CLEAN = 5, 4, 3, 2, 1, 0

EXACT_POINTS = 100
NEAR_POINTS = 30
SUSPECTED_POINTS = 15
SELF_PRODUCED_POINTS = 40
SAME_CAMERA_POINTS = 60
DEVICE_CAMERA_POINTS = 60
DEVICE_CAMERA_MIN_PICTURES = 10
ACCESS_POINTS = {"lives_with": 150, "works_with": 150, "other": 100, "unknown": 40, "none": 0}
DEADLINE_SOON_POINTS, DEADLINE_WEEK_POINTS = 50, 25
# a device a running scan has not reached yet (queued), is opening, or is scanning: the queue
# says so instead of calling it partial; they weigh as partial until the scan ends
LIVE_STATUSES = ("queued", "opening", "scanning")
COVERAGE_POINTS = {"complete": 0, "partial": 20, "failed": 40, **{s: 20 for s in LIVE_STATUSES}}

FINISHED_STATUSES = frozenset({"complete", "partial", "completed", "done", "finished", "ok"})
FAILED_STATUSES = frozenset({"failed", "error", "corrupt"})


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def category_weight(match: Match) -> int:
    """How much one exact match of this category weighs: the set's severity, at least 1."""
    return max(1, int(match.severity or 0))


def category_labels(store) -> dict[str, dict[str, str]]:
    """set name -> raw category -> the scheme's label ("1" -> "A" for UK CAID).

    Read from the hash-set provenance the scan runs recorded: the set's own category map when
    recorded, else its scheme's (hashsets.model.SCHEMES). Unknown sets keep raw categories.
    """
    from triage.classify import category_labels_of

    return category_labels_of(hs for run in store.runs() for hs in run.get("hashsets") or [])


def status_unfinished(device: dict) -> bool:
    """The device's scan has not finished (or failed): what it did not reach is unknown."""
    return (device.get("status") or "").lower() not in FINISHED_STATUSES


def coverage_state(device: dict, volumes: list[VolumeRef], coverage: list[Coverage]) -> str:
    """complete, partial or failed; queued, opening or scanning while a scan runs.

    failed: the scan failed, or no volume of the device could be read at all; partial: some
    coverage record exists, or the scan never finished; complete otherwise.
    """
    status = (device.get("status") or "").lower()
    if status in FAILED_STATUSES:
        return "failed"
    if status in LIVE_STATUSES:
        return status
    if volumes and all(v.fs_type is None for v in volumes) and coverage:
        return "failed"
    if not volumes and coverage and device.get("status") not in FINISHED_STATUSES:
        return "failed"
    if coverage or status not in FINISHED_STATUSES:
        return "partial"
    return "complete"


# Coverage kinds of whole volumes: one reason line each. Every other kind is one line with a
# count and bytes ("3 files not fully read: 1.2 MiB").
_VOLUME_KINDS = (records.ENCRYPTED, records.UNREADABLE_VOLUME, records.UNSUPPORTED_VOLUME)
_NOUNS = {records.FOLDER_NOT_READ: "folder", records.FILE_NOT_READ: "file",
          records.VIDEO_FRAMES: "video", records.EMBEDDED: "container",
          records.ARCHIVE: "archive member", records.PICTURE: "picture",
          records.UNALLOCATED: "volume", records.MEDIA_DAMAGED: "damaged region",
          records.SCAN_INCOMPLETE: "part"}


def coverage_summary(coverage: Iterable[Coverage]) -> dict[str, dict]:
    """kind -> {"count", "bytes"}: what a device's gaps add up to, per kind."""
    out: dict[str, dict] = {}
    for c in coverage:
        row = out.setdefault(c.kind, {"count": 0, "bytes": 0})
        row["count"] += 1
        row["bytes"] += int(c.bytes_not_examined)
    return {k: out[k] for k in records.COVERAGE_KINDS if k in out} | \
        {k: v for k, v in out.items() if k not in records.COVERAGE_KINDS}


def coverage_accounting(device: dict, volumes: list[VolumeRef],
                        coverage: list[Coverage]) -> dict:
    """Examined and not-examined bytes of a device, per volume and per coverage kind.

    Each volume's bytes are its length; the gaps inside it (unallocated space, files read short,
    videos whose frames were not looked at, ...) are subtracted by kind, and what is left was
    examined (allocated files, and the file-system metadata the walk read). Gaps outside any
    volume (unpartitioned space, a device that could not be opened, no alert set) are listed
    at device level.
    """
    vols = []
    claimed: set[int] = set()
    for v in volumes:
        inside = [c for c in coverage if c.where.volume_offset == v.offset
                  and c.where.scope != "device"]
        claimed.update(id(c) for c in inside)
        kinds = coverage_summary(inside)
        missing = min(v.length, sum(k["bytes"] for k in kinds.values()))
        vols.append({"index": v.index, "offset": v.offset, "fs_type": v.fs_type,
                     "encryption": v.encryption, "total": v.length,
                     "examined": v.length - missing, "unallocated": v.unallocated,
                     "not_examined": kinds})
    device_level = coverage_summary(c for c in coverage if id(c) not in claimed)
    total = int(device.get("media_size") or 0)
    missing = sum(v["total"] - v["examined"] for v in vols) + \
        sum(k["bytes"] for kind, k in device_level.items()
            if kind in (records.UNPARTITIONED, records.EVIDENCE_NOT_OPENED))
    return {"total": total, "examined": max(0, total - missing), "volumes": vols,
            "device": device_level, "kinds": coverage_summary(coverage)}


def _coverage_reasons(volumes: list[VolumeRef], coverage: list[Coverage],
                      device: dict) -> list[str]:
    """What was not examined, in bytes and counts, one line per whole volume or per kind."""
    by_offset = {v.offset: v for v in volumes}
    lines: list[str] = []
    rest: list[Coverage] = []
    for c in coverage:
        vol = by_offset.get(c.volume_offset) if c.volume_offset is not None else None
        if c.kind in _VOLUME_KINDS and c.where.scope == "volume":
            name = vol.name if vol is not None else c.where.display()
            lines.append(f"{name} not examined: {c.reason}")
        else:
            rest.append(c)
    for kind, total in coverage_summary(rest).items():
        items = [c for c in rest if c.kind == kind]
        size = f": {human_bytes(total['bytes'])}" if total["bytes"] else ""
        if kind in (records.NOT_MATCHED, records.NOT_SCORED):
            lines.append(f"{kind}: {items[0].reason}")
        elif kind == records.UNALLOCATED:
            vols = len(items)
            lines.append(f"{kind}{size} in {vols} volume{'s' if vols != 1 else ''}")
        elif kind == records.UNPARTITIONED:
            lines.append(f"{kind}{size}")
        elif len(items) == 1:
            c = items[0]
            vol = by_offset.get(c.volume_offset) if c.where.scope == "volume" else None
            lines.append(f"{kind}: {vol.name if vol else c.where.display()}{size} ({c.reason})")
        else:
            noun = _NOUNS.get(kind, "part")
            lines.append(f"{kind}: {total['count']} {noun}s{size}")
    status = (device.get("status") or "").lower()
    if status and status not in FINISHED_STATUSES and status not in FAILED_STATUSES:
        lines.append(f"scan not finished (status {status})")
    elif status in FAILED_STATUSES:
        lines.append(f"scan of the device failed (status {status})")
    return lines


def _camera(feat: Optional[Features]) -> str:
    if feat is None or feat.exif is None:
        return ""
    make, model = feat.exif.make.strip(), feat.exif.model.strip()
    if not (make and model):
        return ""
    return model if model.lower().startswith(make.lower()) else f"{make} {model}"


def _deadline_points(deadline: Optional[str], now: float) -> tuple[int, str]:
    due = deadline_datetime(deadline)
    if due is None:
        return 0, ""
    left = due - _dt.datetime.fromtimestamp(now, _dt.timezone.utc)
    days = left.total_seconds() / 86400
    if days < 0:
        return DEADLINE_SOON_POINTS, f"custody deadline {deadline} has passed"
    if days <= 2:
        hours = int(left.total_seconds() // 3600)
        return DEADLINE_SOON_POINTS, f"custody deadline {deadline} (in {_plural(hours, 'hour')})"
    if days <= 7:
        return DEADLINE_WEEK_POINTS, f"custody deadline {deadline} (in {_plural(int(days), 'day')})"
    return 0, f"custody deadline {deadline}"


def verdict_for_device(device: dict, volumes: list[VolumeRef], coverage: list[Coverage],
                       matches: list[Match], scores: list[Score],
                       files: dict[str, tuple[FileRecord, Features]], flag_codes: Iterable[str],
                       camera_census: Optional[Counter] = None, now: Optional[float] = None,
                       thresholds: Optional[dict] = None,
                       labels: Optional[dict[str, dict[str, str]]] = None) -> DeviceVerdict:
    """One device's verdict from its stored results (rank is filled in by `verdicts`).

    `files` holds the matched and scored files; `camera_census` counts the device's pictures
    per camera (EXIF make+model) and is only needed when a matched picture has camera EXIF.
    """
    now = time.time() if now is None else now
    context = dict(device.get("context") or {})
    points: dict[str, int] = {}
    reasons: list[str] = []

    found = classify(matches, scores, thresholds)
    exact = {k: [m for m in ms if m.kind == "exact"] for k, ms in found.exact.items()}
    near_only = found.near

    # exact matches, reasons per alert set: "3 exact CAID matches (Category A: 1, B: 2), 1 deleted"
    if exact:
        total = 0
        per_set: dict[str, dict[str, Match]] = defaultdict(dict)
        for key, ms in exact.items():
            worst = max(ms, key=category_weight)
            total += EXACT_POINTS * category_weight(worst)
            for m in ms:
                best = per_set[m.set_name].get(key)
                if best is None or category_weight(m) > category_weight(best):
                    per_set[m.set_name][key] = m
        points["exact_matches"] = total
        for set_name, by_key in sorted(per_set.items()):
            cats = Counter(category_label(labels, set_name, m.category) for m in by_key.values()
                           if m.category)
            weight = {category_label(labels, set_name, m.category): category_weight(m)
                      for m in by_key.values()}
            cat_text = ""
            if cats:
                order = sorted(cats, key=lambda c: (-weight[c], c))
                cat_text = " (Category " + ", ".join(f"{c}: {cats[c]}" for c in order) + ")"
            extras = []
            carved = sum(1 for k in by_key if k in files and files[k][0].prov.carved)
            deleted = sum(1 for k in by_key if k in files and not files[k][0].allocated) - carved
            archived = sum(1 for k in by_key if k in files and files[k][0].prov.member)
            if deleted:
                extras.append(f"{deleted} deleted")
            if carved:
                extras.append(f"{carved} carved from free space")
            inside = sum(1 for k in by_key if k in files and files[k][0].prov.scope == "embedded"
                         and not files[k][0].prov.carved)
            if inside:
                extras.append(f"{inside} inside other files (thumbnail caches, PDFs, EXIF "
                              "thumbnails)")
            if archived:
                extras.append(f"{archived} in archives")
            n = len(by_key)
            reasons.append(f"{n} exact {set_name} match{'es' if n != 1 else ''}{cat_text}"
                           + (", " + ", ".join(extras) if extras else ""))
    if near_only:
        points["near_matches"] = NEAR_POINTS * len(near_only)
        closest = min(m.distance for ms in near_only.values() for m in ms)
        algos = sorted({{"pdq": "PDQ", "phash": "pHash"}.get(m.algorithm, m.algorithm)
                        for ms in near_only.values() for m in ms})
        sets = sorted({m.set_name for ms in near_only.values() for m in ms})
        n = len(near_only)
        reasons.append(f"{n} near match{'es' if n != 1 else ''} in {', '.join(sets)} "
                       f"({'/'.join(algos)}, closest distance {closest}): review by eye")

    suspect_keys = sorted(found.suspected)
    if suspect_keys:
        points["suspected_new"] = SUSPECTED_POINTS * len(suspect_keys)
        models = sorted({s.model for ss in found.suspected.values() for s in ss})
        n = len(suspect_keys)
        reasons.append(f"{n} picture{'s' if n != 1 else ''} suspected new material by "
                       f"{', '.join(models)} (a ranking aid, not evidence)")

    # self-production: camera-original matched or suspected pictures
    found_keys = list(exact) + list(near_only) + suspect_keys
    self_produced = [k for k in found_keys if k in files and camera_indicators(*files[k])]
    if self_produced:
        points["self_produced"] = SELF_PRODUCED_POINTS * len(self_produced)
        in_dcim = sum(1 for k in self_produced if "camera-roll path" in camera_indicators(*files[k]))
        n = len(self_produced)
        reasons.append(f"{n} matched or suspected picture{'s' if n != 1 else ''} look"
                       f"{'s' if n == 1 else ''} camera-original"
                       + (f" ({in_dcim} in camera-roll folders)" if in_dcim else "")
                       + ": possible contact abuse")
    cameras = Counter(_camera(files[k][1]) for k in found_keys if k in files)
    cameras.pop("", None)
    if cameras:
        name, count = cameras.most_common(1)[0]
        if count >= 2:
            points["same_camera"] = SAME_CAMERA_POINTS
            reasons.append(f"the same camera ({name}) took {count} matched or suspected pictures")
        if camera_census:
            own = [(c, camera_census.get(c, 0)) for c in cameras]
            c, total = max(own, key=lambda t: t[1])
            others = total - cameras[c]
            if others >= DEVICE_CAMERA_MIN_PICTURES:
                points["device_camera"] = DEVICE_CAMERA_POINTS
                reasons.append(f"camera {c} also took {others} other pictures on this device: "
                               "it is probably this device's own camera")

    access = context.get("access_to_children") or "unknown"
    if access in ACCESS_POINTS:
        if ACCESS_POINTS[access]:
            points["access_to_children"] = ACCESS_POINTS[access]
        if access == "unknown":
            reasons.append("access to children unknown: ask the officer in the case")
        elif access != "none":
            reasons.append(f"suspect {ACCESS_PHRASES[access]}")
    dl_points, dl_reason = _deadline_points(context.get("custody_deadline"), now)
    if dl_points:
        points["custody_deadline"] = dl_points
    if dl_reason:
        reasons.append(dl_reason)

    state = coverage_state(device, volumes, coverage)
    if COVERAGE_POINTS[state]:
        points["coverage"] = COVERAGE_POINTS[state]
    reasons.extend(_coverage_reasons(volumes, coverage, device))

    if exact:
        tier = TIER_EXACT
    elif near_only:
        tier = TIER_NEAR
    elif suspect_keys:
        tier = TIER_SUSPECTED
    elif state == "failed" or status_unfinished(device) or any(
            c.kind not in records.NOT_YET_EXAMINED for c in coverage):
        tier = TIER_UNEXAMINED
    elif state != "complete":
        tier = TIER_NOT_YET
    else:
        tier = TIER_CLEAN
        reasons.insert(0, "no alert matches and nothing suspected; fully examined")

    codes = sorted(set(flag_codes))
    return DeviceVerdict(
        device_id=device["id"], score=float(sum(points.values())), coverage=state,
        alert_matches=len(exact), near_matches=len(near_only), suspected_new=len(suspect_keys),
        flags=tuple(codes), reasons=tuple(reasons), context=context, tier=tier,
        exhibit=context.get("exhibit", ""), evidence=tuple(device.get("paths") or ()),
        points=points)


def sort_key(v: DeviceVerdict) -> tuple:
    """Tier first (structural), then points, then device id so the order is stable."""
    return (-v.tier, -v.score, v.device_id)


def order(verdicts: Iterable[DeviceVerdict]) -> list[DeviceVerdict]:
    """Verdicts in priority order with `rank` filled in (1 = examine first)."""
    from dataclasses import replace
    return [replace(v, rank=i) for i, v in enumerate(sorted(verdicts, key=sort_key), start=1)]


def camera_census(store, device_id: str) -> Counter:
    """How many of a device's pictures each camera (EXIF make+model) took. Streams the files."""
    census: Counter = Counter()
    for _rec, feat in store.files(device_id):
        cam = _camera(feat) if feat.is_picture else ""
        if cam:
            census[cam] += 1
    return census


def device_verdict(store, device: dict, now: Optional[float] = None,
                   thresholds: Optional[dict] = None,
                   labels: Optional[dict[str, dict[str, str]]] = None) -> DeviceVerdict:
    """One device's verdict read from the case store."""
    device_id = device["id"]
    matches = store.matches(device_id)
    scores = store.scores(device_id)
    keys = set(classify(matches, scores, thresholds).keys())
    files = {rec.key: (rec, feat) for rec, feat in store.files(device_id, keys=keys)} if keys else {}
    census = None
    if any(_camera(feat) for _rec, feat in files.values()):
        census = camera_census(store, device_id)
    codes = {flag.code for _id, flag in store.flags(device_id)}
    return verdict_for_device(device, store.volumes(device_id), store.coverage(device_id),
                              matches, scores, files, codes, census, now, thresholds,
                              labels if labels is not None else category_labels(store))


def verdicts(store, now: Optional[float] = None,
             thresholds: Optional[dict] = None) -> list[DeviceVerdict]:
    """Every device of the case, in priority order (rank 1 first).

    `thresholds` default to those of the model the latest scan used (see flags.store_thresholds).
    """
    if thresholds is None:
        thresholds = store_thresholds(store)
    labels = category_labels(store)
    devices = store.devices()
    if hasattr(store, "running_run") and store.running_run() is None:
        # no scan runs now: a device left queued, opening or scanning was cut off (killed)
        devices = [dict(d, status="interrupted") if d.get("status") in LIVE_STATUSES else d
                   for d in devices]
    verdicts_ = [device_verdict(store, d, now, thresholds, labels) for d in devices]
    if hasattr(store, "device_runs"):
        import dataclasses

        from triage.runs import device_notes

        notes = device_notes(store)
        verdicts_ = [dataclasses.replace(v, reasons=v.reasons + tuple(notes[v.device_id]))
                     if v.device_id in notes else v for v in verdicts_]
    return order(verdicts_)


def select(ordered: list[DeviceVerdict], flags: Iterable[str] = (), statuses: Iterable[str] = (),
           deadline_before: Optional[str] = None, limit: Optional[int] = None
           ) -> list[DeviceVerdict]:
    """The queue's filters (`triage queue --flag --status --deadline-before --limit`), keeping
    each device's rank: any of `flags`; any of `statuses` (the verdict's coverage state);
    a custody deadline before the date; the first `limit`."""
    flags = {f.upper() for f in flags}
    statuses = {s.lower() for s in statuses}
    from triage.errors import TriageError
    from triage.output import parse_time

    before = parse_time(deadline_before) if deadline_before else None
    out = []
    for v in ordered:
        if flags and not flags & set(v.flags):
            continue
        if statuses and v.coverage.lower() not in statuses:
            continue
        if before is not None:
            deadline = (v.context or {}).get("custody_deadline") or ""
            try:
                if not deadline or parse_time(deadline) >= before:
                    continue
            except TriageError:      # an unreadable deadline is before no date
                continue
        out.append(v)
    return out[:limit] if limit else out


def verdict_dict(v: DeviceVerdict) -> dict:
    """The queue's JSON element for one device."""
    return {
        "rank": v.rank, "device": v.device_id, "exhibit": v.exhibit,
        "evidence": list(v.evidence), "score": v.score, "tier": v.tier,
        "alert_matches": v.alert_matches, "near_matches": v.near_matches,
        "suspected_new": v.suspected_new, "flags": list(v.flags), "coverage": v.coverage,
        "reasons": list(v.reasons), "context": v.context, "points": dict(v.points),
    }


def find_device(store, ref: str) -> dict:
    """A device of the case by id, exhibit reference, or evidence file name or path."""
    import os

    from triage.errors import TriageError

    devices = store.devices()
    low = ref.casefold()         # exhibit references are typed as people write them
    for match in (
        lambda d: d["id"] == ref,
        lambda d: (d.get("context") or {}).get("exhibit") == ref,
        lambda d: ref in d["paths"] or ref in [os.path.basename(p) for p in d["paths"]],
        lambda d: d["id"].casefold() == low,
        lambda d: str((d.get("context") or {}).get("exhibit") or "").casefold() == low,
        lambda d: low in [os.path.basename(p).casefold() for p in d["paths"]],
    ):
        hits = [d for d in devices if match(d)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise TriageError(f"{ref!r} names {len(hits)} devices; use the device id")
    known = ", ".join(d["id"] for d in devices[:8]) or "none"
    raise TriageError(f"no device {ref!r} in this case (devices: {known})")
