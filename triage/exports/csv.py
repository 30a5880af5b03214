"""CSV of the matches (and suspected pictures) of a case, one line per match, with provenance."""
from __future__ import annotations

import json
from typing import Optional

from triage.classify import category_label
from triage.exports import iso_utc, private_output
from triage.findings import findings
from triage.rank import category_labels
from triage.units import SafeDictWriter

FIELDS = ("device", "exhibit", "kind", "set_name", "set_version", "category", "category_label",
          "severity",
          "algorithm", "value", "distance", "model", "model_sha256", "scores", "path", "member",
          "ads", "deleted", "size", "type", "md5", "sha1", "sha256", "volume_offset", "inode",
          "mtime", "atime", "ctime", "crtime", "camera_indicators", "provenance",
          # videos: the frames behind the row (`number@seconds; ...`) and a vPDQ match's shares
          "frames", "query_share", "known_share",
          # a thumbnail found in a Windows thumbcache: its entry's hash and identifier
          "cache_entry_hash", "cache_entry_id")


def _frames(frames) -> str:
    return "; ".join(f"{int(f[0])}@{float(f[1]):.3f}" for f in frames)


def rows(store, device_id: Optional[str] = None):
    """One dict per alert match, and one per suspected picture (kind "suspected")."""
    exhibits = {d["id"]: (d.get("context") or {}).get("exhibit", "") for d in store.devices()}
    labels = category_labels(store)
    for f in findings(store, device_id):
        rec, feat, p = f.record, f.features, f.record.prov
        base = {
            "device": f.device_id, "exhibit": exhibits.get(f.device_id, ""), "path": rec.path,
            "member": p.member, "ads": p.ads, "deleted": "yes" if f.deleted else "no",
            "size": rec.size, "type": feat.type or rec.type, "md5": feat.md5, "sha1": feat.sha1,
            "sha256": feat.sha256, "volume_offset": p.volume_offset,
            "inode": "" if p.inode is None else p.inode,
            **{k: iso_utc(getattr(rec, k)) or "" for k in ("mtime", "atime", "ctime", "crtime")},
            "camera_indicators": "; ".join(f.indicators),
            "cache_entry_hash": p.cache_entry_hash, "cache_entry_id": p.cache_entry_id,
            # the whole chain (members, parent and byte range) that reaches the bytes again
            "provenance": json.dumps(p.to_dict(), sort_keys=True, ensure_ascii=False),
        }
        for m in f.matches:
            yield dict(base, kind=m.kind, set_name=m.set_name, set_version=m.set_version,
                       category=m.category,
                       category_label=category_label(labels, m.set_name, m.category),
                       severity=m.severity, algorithm=m.algorithm,
                       value=m.value, distance=m.distance if m.kind != "exact" else "",
                       frames=_frames(m.frames),
                       query_share=m.query_share if m.algorithm == "vpdq" else "",
                       known_share=m.known_share if m.algorithm == "vpdq" else "")
        if f.suspected:
            for s in f.scores:
                values = "; ".join(f"{k}={v}" for k, v in sorted(s.values.items()))
                yield dict(base, kind="suspected", model=s.model, model_sha256=s.model_sha256,
                           scores=values, frames=_frames(f.frames))


def write_csv(store, out, device_id: Optional[str] = None) -> str:
    n = 0
    with private_output(out) as fh:
        writer = SafeDictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        for row in rows(store, device_id):
            writer.writerow(row)
            n += 1
    return f"{n} rows"
