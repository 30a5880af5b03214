"""Build small case stores record by record, for the rank, flags, export and report tests.

No Ray, no images: the records a scan would have stored, written straight into a CaseStore.
Pictures are synthetic gradients; nothing here resembles real material.
"""
from __future__ import annotations

import hashlib
import io
import time
from typing import Optional

from triage.flags import FlagSink, rules_for_batch
from triage import records
from triage.records import (Coverage, EvidenceRef, Exif, Features, FileRecord, Match, Provenance,
                            Score, VolumeRef)
from triage.store import CaseStore

VOL = 1048576
SET_NAME, SET_VERSION = "caid", "2026-11"
SEVERITY = {"A": 3, "B": 2, "C": 1, "1": 3, "2": 2, "3": 1}   # the UK CAID scheme


def thumbnail(seed: int) -> bytes:
    """A small synthetic JPEG: a colour gradient that differs per seed."""
    from PIL import Image
    img = Image.new("RGB", (64, 48))
    px = img.load()
    for x in range(64):
        for y in range(48):
            px[x, y] = ((x * 4 + seed * 37) % 256, (y * 5 + seed * 11) % 256, (seed * 53) % 256)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=80)
    return buf.getvalue()


def picture(device_id: str, n: int, path: Optional[str] = None, *, allocated: bool = True,
            exif: Optional[Exif] = None, member: str = "", content: Optional[bytes] = None,
            mtime: float = 1_700_000_000.0) -> tuple[FileRecord, Features]:
    """One picture's FileRecord and Features; hashes come from `content` (or a per-file seed)."""
    path = path or f"/Users/s/Pictures/img_{n:04d}.jpg"
    prov = Provenance(device_id=device_id, volume_offset=VOL, inode=100 + n, path=path,
                      members=(member,) if member else ())
    data = content if content is not None else f"{device_id}/{n}".encode()
    rec = FileRecord(prov=prov, name=path.rsplit("/", 1)[-1], size=len(data) * 100,
                     allocated=allocated, fs_type="ntfs", mtime=mtime, atime=mtime + 60,
                     ctime=mtime + 120, crtime=mtime - 3600, type="image/jpeg")
    feat = Features(key=rec.key, size=rec.size, md5=hashlib.md5(data).hexdigest(),
                    sha1=hashlib.sha1(data).hexdigest(), type="image/jpeg", is_picture=True,
                    width=640, height=480, pdq="ab" * 32, pdq_quality=90, phash="cd" * 8,
                    exif=exif, thumbnail=thumbnail(n))
    return rec, feat


def exact(item, category: str = "A", set_name: str = SET_NAME) -> Match:
    rec, feat = item
    return Match(key=rec.key, kind="exact", algorithm="md5", value=feat.md5, set_name=set_name,
                 set_version=SET_VERSION, role="alert", category=category,
                 severity=SEVERITY.get(category, 1))


def near(item, distance: int = 12, category: str = "B") -> Match:
    rec, feat = item
    return Match(key=rec.key, kind="near", algorithm="pdq", value=feat.pdq, set_name=SET_NAME,
                 set_version=SET_VERSION, role="alert", category=category,
                 severity=SEVERITY.get(category, 1), distance=distance)


def score(item, explicit: float, minor: float) -> Score:
    return Score(key=item[0].key, model="open_nsfw+age", model_sha256="e" * 64,
                 values={"explicit": explicit, "minor_likelihood": minor})


def add_device(store: CaseStore, sink: Optional[FlagSink], device_id: str, *,
               items=(), matches=(), scores=(), coverage=(), volumes=None,
               context: Optional[dict] = None, status: str = "complete",
               now: Optional[float] = None) -> None:
    """Store one device as a finished scan would have, raising its flags through `sink`."""
    now = time.time() if now is None else now
    ref = EvidenceRef(device_id=device_id, paths=(f"/evidence/{device_id}",), format="raw",
                      media_size=64 * 2**20, stored_hashes={})
    store.upsert_device(ref, context=context)
    store.device_started(device_id, now)
    if volumes is None:
        volumes = [VolumeRef(device_id=device_id, index=0, offset=VOL, length=60 * 2**20,
                             description="NTFS", fs_type="ntfs", block_size=4096)]
    store.add_volumes(list(volumes))
    items, matches, scores, coverage = list(items), list(matches), list(scores), list(coverage)
    store.add_batch(device_id, "b0", items, matches, scores, coverage)
    if sink is not None:
        sink.raise_all(rules_for_batch(device_id, context, items, matches, scores, coverage, now))
    store.device_finished(device_id, now + 1, status)


def context(access: str, exhibit: str, deadline: Optional[str] = None) -> dict:
    return {"evidence": "", "exhibit": exhibit, "suspect": "S", "access_to_children": access,
            "custody_deadline": deadline, "notes": ""}


def build_fleet(case_dir, now: Optional[float] = None) -> CaseStore:
    """Six devices whose correct order is known: the rank, export and report tests share it.

    exact_lives > exact_none (equal but for context) > near_only > suspected_only > encrypted >
    clean_unknown > clean_none.
    """
    now = time.time() if now is None else now
    store = CaseStore(case_dir, create=True)
    sink = FlagSink(case_dir, store)
    phone = Exif(make="Synthcam", model="S1", datetime_original="2026:01:02 03:04:05")
    for dev, access in (("exact_lives.dd", "lives_with"), ("exact_none.dd", "none")):
        a = picture(dev, 1, "/DCIM/Camera/IMG_0001.jpg", exif=phone, content=b"alert-1")
        b = picture(dev, 2, allocated=False, content=b"alert-2")
        c = picture(dev, 3, "/Users/s/Downloads/pics.zip", member="x/3.jpg", content=b"alert-3")
        clean = [picture(dev, 10 + i) for i in range(3)]
        add_device(store, sink, dev, items=[a, b, c, *clean],
                   matches=[exact(a, "A"), exact(b, "B"), exact(c, "B")],
                   context=context(access, "EX/" + dev[:5]), now=now)
    n = picture("near_only.dd", 1, content=b"near-1")
    add_device(store, sink, "near_only.dd", items=[n, picture("near_only.dd", 2)],
               matches=[near(n)], context=context("none", "EX/near"), now=now)
    s = picture("suspected_only.dd", 1)
    add_device(store, sink, "suspected_only.dd", items=[s], scores=[score(s, 0.95, 0.9)],
               context=context("none", "EX/susp"), now=now)
    add_device(store, sink, "encrypted.dd", items=[picture("encrypted.dd", 1)],
               volumes=[VolumeRef("encrypted.dd", 0, VOL, 2**20, "NTFS", "ntfs"),
                        VolumeRef("encrypted.dd", 2, 4 * VOL, 40 * 2**20, "Basic data", None,
                                  encryption="BitLocker")],
               coverage=[Coverage("encrypted.dd", records.ENCRYPTED,
                                  records.volume_where("encrypted.dd", 4 * VOL, 2),
                                  "encrypted (BitLocker)", 40 * 2**20)],
               context=context("none", "EX/enc"), now=now)
    for dev, access in (("clean_unknown.dd", "unknown"), ("clean_none.dd", "none")):
        add_device(store, sink, dev, items=[picture(dev, i) for i in range(3)],
                   context=context(access, "EX/" + dev[:7]), now=now)
    sink.close()
    return store


FLEET_ORDER = ["exact_lives.dd", "exact_none.dd", "near_only.dd", "suspected_only.dd",
               "encrypted.dd", "clean_unknown.dd", "clean_none.dd"]
