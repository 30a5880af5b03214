"""VICS 2.0 JSON in the `#Cases` shape, for Griffeye Analyze, Magnet AXIOM and VICS portals.

One Case (the case directory) holds one Media per distinct MD5 among the matched and suspected
pictures, and one MediaFile per place that picture was found (a picture on three devices has
three MediaFiles). Field names and types follow the VICS 2.0 EDMX (`CEModel`):

* Media: MediaID, MD5, SHA1 (upper case), Category (a reviewer's grade from `triage serve`
  when there is one: A/B/C as 1/2/3, non-pertinent as 0, each grade also in MediaMetadata as
  "triage grade"; else the alert set's category; VICS Category
  is an Edm.Byte, so a label such as "A" is written as its scheme's number), MediaSize, IsPrecategorized (true for exact alert matches),
  PrecategorizationSource ("set version"), IsSuspected (near match or model), SelfGenerated
  (camera-original indicators), MimeType, MediaMetadata (provenance and the reasons).
* MediaFile: MD5, MediaFileID, FileName, FilePath, Created/Written/Accessed (UTC), Deleted,
  Unallocated, SourceID (the exhibit reference), and Parent* for archive members.
  PhysicalLocation (a byte offset in the image) is left out: the case store keeps the
  provenance chain (volume offset, inode, stream, member) instead, written to MediaMetadata
  as "triage provenance", which reaches the same bytes with `icat`.

Booleans are JSON booleans (OData v4 JSON); the project's VICS importer reads those and the
"true"/"false" strings some writers emit.
"""
from __future__ import annotations

import json
import uuid
from typing import Optional

from hashsets.model import SCHEMES
from triage import __version__
from triage.exports import iso_utc, private_output
from triage.classify import category_text
from triage.findings import Finding, findings
from triage.rank import category_labels

CONTEXT_URL = "http://github.com/VICSDATAMODEL/ProjectVic/DataModels/2.0.xml/{profile}/$metadata#Cases"


def _byte_category(category: str, labels: Optional[dict[str, str]] = None) -> Optional[int]:
    """VICS Category is an Edm.Byte: numeric categories pass through; a label ("A") becomes
    the number its set's scheme gives it ("1" in UK CAID); anything else goes to metadata."""
    text = (category or "").strip()
    if text.isdigit() and 0 <= int(text) <= 255:
        return int(text)
    for raw, label in (labels or {}).items():
        if raw.isdigit() and label.lower() == text.lower() and int(raw) <= 255:
            return int(raw)
    return None


# A reviewer's CAID grade as a VICS Category (UK): the uk-caid scheme read backwards
# (A -> 1, B -> 2, C -> 3, non-pertinent -> 0).
GRADE_LABELS = {raw: v["label"] for raw, v in SCHEMES["uk-caid"].items() if raw.isdigit()}


def _grades(store) -> dict[str, dict]:
    """file key -> the grade a reviewer gave it in `triage serve` (none before any review)."""
    from triage.review.casereview import open_review

    review = open_review(store.case_dir)
    if review is None:
        return {}
    with review:
        return review.grades()


def _windows_path(path: str) -> str:
    return path.replace("/", "\\")


def _dir_and_name(path: str) -> tuple[str, str]:
    head, _, name = path.rstrip("/").rpartition("/")
    return head + "/", name


def _media_file(f: Finding, media_file_id: int, exhibits: dict, vol_index: dict) -> dict:
    rec, p = f.record, f.record.prov
    part = vol_index.get((f.device_id, p.volume_offset))
    prefix = f"Partition {part}" if part is not None else f"Volume@{p.volume_offset}"
    if p.members:
        # the file, then each archive it sits in: the innermost archive is its parent
        chain = [p.path] + ["/" + m for m in p.members]
        containers = chain[:-1]
        member_dir, name = _dir_and_name(chain[-1])
        parent_dir, parent_name = _dir_and_name(containers[-1])
        outer = "".join(_windows_path(c) for c in containers[:-1])
        file_path = f"{prefix}{outer}{_windows_path(containers[-1])}{_windows_path(member_dir)}"
        parent = {"ParentFileName": parent_name,
                  "ParentFilePath": f"{prefix}{outer}{_windows_path(parent_dir)}"}
    else:
        directory, name = _dir_and_name(p.path)
        file_path = f"{prefix}{_windows_path(directory)}"
        parent = {}
        if p.ads and not name.endswith(":" + p.ads):
            name = f"{name}:{p.ads}"
    out = {
        "MD5": f.features.md5.upper(),
        "MediaFileID": media_file_id,
        "FileName": name,
        "FilePath": file_path,
        "Created": iso_utc(rec.crtime),
        "Written": iso_utc(rec.mtime),
        "Accessed": iso_utc(rec.atime),
        "Deleted": not rec.allocated,
        "Unallocated": not rec.allocated,
        "SourceID": exhibits.get(f.device_id) or f.device_id,
        **parent,
    }
    return {k: v for k, v in out.items() if v is not None}


def _provenance_text(f: Finding) -> str:
    p = f.record.prov
    parts = [f"device {f.device_id}", f"volume offset {p.volume_offset}", f"inode {p.inode}",
             f"path {p.path}"]
    if p.ads:
        parts.append(f"stream {p.ads} (attribute {p.attr_type}-{p.attr_id})")
    if p.members:
        parts.append("member " + " > ".join(p.members))
    if p.parent is not None:
        parts.append(f"bytes {p.offset}-{p.offset + p.length - 1} of {p.parent.display()}")
    if p.cache_entry_hash or p.cache_entry_id:
        parts.append(f"thumbnail cache entry {p.cache_entry_hash}, identifier {p.cache_entry_id}")
    return "; ".join(parts)


def build(store, device_id: Optional[str] = None, profile: str = "UK") -> dict:
    """The VICS document as a dict."""
    devices = store.devices()
    exhibits = {d["id"]: (d.get("context") or {}).get("exhibit", "") for d in devices}
    vol_index = {(d["id"], v.offset): v.index for d in devices for v in store.volumes(d["id"])}
    labels = category_labels(store)
    grades = _grades(store)
    by_md5: dict[str, list[Finding]] = {}
    for f in findings(store, device_id):
        if f.features.md5:
            by_md5.setdefault(f.features.md5.lower(), []).append(f)
    media = []
    media_file_id = 0
    for media_id, (md5, group) in enumerate(sorted(by_md5.items()), start=1):
        best = min(group, key=lambda f: ({"exact": 0, "near": 1, "suspected": 2}[f.kind],
                                         -(f.top.severity if f.top else 0)))
        exact = [m for f in group for m in f.exact]
        top = max(exact, key=lambda m: m.severity) if exact else None
        item = {
            "MediaID": media_id,
            "MD5": md5.upper(),
            "SHA1": best.features.sha1.upper() or None,
            "MediaSize": best.record.size,
            "IsPrecategorized": top is not None,
            "IsSuspected": top is None,
            "SelfGenerated": True if any(f.indicators for f in group) else None,
            "MimeType": best.features.type or best.record.type or None,
        }
        if top is not None:
            category = _byte_category(top.category, labels.get(top.set_name))
            if category is not None:
                item["Category"] = category
            item["PrecategorizationSource"] = f"{top.set_name} {top.set_version}".strip()
        graded = [(grades[f.key], f) for f in group if f.key in grades]
        if graded:
            grade, _f = max(graded, key=lambda gf: gf[0]["time"])
            category = _byte_category(grade["grade"], GRADE_LABELS)
            if category is not None:     # "uncategorised" keeps the alert set's category
                item["Category"] = category
        metadata = []
        for g, f in graded:
            metadata.append({"PropertyName": "triage grade",
                             "PropertyValue": f"{g['grade']} by {g['user']} at {iso_utc(g['time'])}"
                                              f" on {f.device_id} {f.record.path}"
                                              + (f": {g['note']}" if g["note"] else "")})
        for f in group:
            metadata.append({"PropertyName": "triage provenance", "PropertyValue": _provenance_text(f)})
            for m in f.matches:
                metadata.append({"PropertyName": f"triage {m.kind} match",
                                 "PropertyValue": f"{m.set_name} {m.set_version} "
                                                  f"{category_text(labels, m.set_name, m.category) or 'no category'}"
                                                  f" {m.algorithm} {m.value}"
                                                  + (f" distance {m.distance}" if m.kind != "exact" else "")
                                                  + (f"; {m.video_text}" if m.video_text else "")})
            if f.suspected:
                for s in f.scores:
                    values = ", ".join(f"{k}={v}" for k, v in sorted(s.values.items()))
                    metadata.append({"PropertyName": "triage model score (ranking aid, not evidence)",
                                     "PropertyValue": f"{s.model} sha256 {s.model_sha256}: {values}"
                                                      + (f"; frames over the thresholds at "
                                                         f"{f.frame_text}" if f.frames else "")})
        item["MediaMetadata"] = metadata
        files = []
        for f in group:
            media_file_id += 1
            files.append(_media_file(f, media_file_id, exhibits, vol_index))
        item["MediaFiles"] = files
        media.append({k: v for k, v in item.items() if v is not None})
    case_uuid = uuid.uuid5(uuid.NAMESPACE_URL, f"triage:{store.case_dir.resolve()}")
    runs = store.runs()
    case = {
        "CaseID": str(case_uuid),
        "CaseNumber": store.case_ref(),       # --case-ref, else the case folder's name
        "SourceApplicationName": "triage",
        "SourceApplicationVersion": __version__,
        "TotalMediaFiles": media_file_id,
        "TotalPrecategorized": sum(1 for m in media if m["IsPrecategorized"]),
        "Media": media,
    }
    if runs:
        case["CaseMetadata"] = [{"PropertyName": "triage scan run",
                                 "PropertyValue": f"run {r['id']} by {r['operator']} "
                                                  f"from {iso_utc(r['started'])} to "
                                                  f"{iso_utc(r['ended']) or '-'} ({r['status']})"}
                                for r in runs]
    return {"@odata.context": CONTEXT_URL.format(profile=profile), "value": [case]}


def write_vics(store, out, device_id: Optional[str] = None, profile: str = "UK") -> str:
    doc = build(store, device_id, profile)
    with private_output(out) as fh:
        json.dump(doc, fh, indent=1, ensure_ascii=False)
        fh.write("\n")
    case = doc["value"][0]
    return (f"{len(case['Media'])} media ({case['TotalPrecategorized']} precategorized), "
            f"{case['TotalMediaFiles']} media files")
