"""A small fake of the layers below the scan (evidence, walk, features, hash sets), to test the
orchestration's fault handling: worker crashes, time limits, early stops, interrupts.

A fake device is a JSON file: volumes, and files whose content drives the fake's behaviour
("CRASH" kills the worker process on read, "CRASHONCE:<marker>" kills it only the first time,
"SLEEP:<s>" hangs, "HANGLOG:<log>" adds a line to <log> and hangs for a minute, "BADREAD"
raises an I/O error). The real stack is tested in test_scan.py.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from triage.errors import EvidenceError
from triage import records
from triage.records import Coverage, EvidenceRef, Features, FileRecord, Provenance, VolumeRef
from workers.batch import Backend

PICTURE_EXTS = (".jpg", ".png", ".gif")


@dataclass(frozen=True)
class Hit:
    set_name: str
    set_version: str
    role: str
    category: str
    severity: int
    algorithm: str
    value: str
    distance: int = 0


@dataclass
class FakeAnalysis:
    record: FileRecord
    features: Features
    members: list = field(default_factory=list)
    coverage: list = field(default_factory=list)


class FakeEvidence:
    def __init__(self, path: str, device_id: str):
        try:
            self.data = json.loads(Path(path).read_text())
        except (ValueError, UnicodeDecodeError):
            raise EvidenceError(f"{Path(path).name}: not a disk image (no known signature)") from None
        self.ref = EvidenceRef(device_id=device_id, paths=(path,), format="fake",
                               media_size=os.path.getsize(path),
                               stored_hashes={"md5": hashlib.md5(Path(path).read_bytes()).hexdigest()})
        self.path = path

    def close(self):
        pass


def _content(spec: dict) -> bytes:
    return spec.get("content", spec["path"]).encode()


class FakeBackend(Backend):
    def device_id_for(self, path):
        return os.path.basename(path)

    def open_evidence(self, paths, device_id):
        return FakeEvidence(paths[0], device_id)

    def discover(self, evidence, recovery_key=None, password=None):
        vols, cov = [], []
        for i, v in enumerate(evidence.data["volumes"]):
            vol = VolumeRef(device_id=evidence.ref.device_id, index=i, offset=v["offset"],
                            length=v.get("length", 1 << 20), description=v.get("description", "fake"),
                            fs_type=v.get("fs_type"), encryption=v.get("encryption"))
            vols.append(vol)
            if vol.encryption:
                cov.append(Coverage(vol.device_id, records.ENCRYPTED, vol.where,
                                    f"encrypted ({vol.encryption})", vol.length))
        return vols, cov

    def walk(self, evidence, volume, problems=None, plain=False):
        for i, f in enumerate(evidence.data["files"]):
            if f.get("volume", evidence.data["volumes"][0]["offset"]) != volume.offset:
                continue
            if f.get("walk_crash"):
                os._exit(3)
            prov = Provenance(device_id=volume.device_id, volume_offset=volume.offset,
                              inode=f.get("inode", 100 + i), path=f["path"])
            yield FileRecord(prov=prov, name=f["path"].rsplit("/", 1)[-1], size=len(_content(f)),
                             allocated=f.get("allocated", True), fs_type=volume.fs_type or "")

    def deleted_starts(self, evidence, volume):
        return set()

    def listed_by(self, evidence, volume):
        return ""           # no file system: the run records no lister

    def carve(self, evidence, volume, problems, done, seconds=0.0, known=None):
        # fake devices have no free space (discover gives them no unallocated gap)
        done.append(True)
        return iter(())

    def read_chunks(self, evidence, prov, chunk_size):
        spec = next(f for i, f in enumerate(evidence.data["files"])
                    if f["path"] == prov.path and f.get("inode", 100 + i) == prov.inode)
        content = _content(spec)
        if content.startswith(b"CRASHONCE:"):
            marker = Path(content.split(b":", 1)[1].decode())
            if not marker.exists():
                marker.write_text("crashed")
                os._exit(1)
        elif content.startswith(b"CRASH"):
            os._exit(1)
        elif content.startswith(b"SLEEP:"):
            time.sleep(float(content.split(b":", 1)[1]))
        elif content.startswith(b"HANGLOG:"):
            with open(content.split(b":", 1)[1].decode(), "a") as log:
                log.write("read\n")
            time.sleep(60)
        elif content.startswith(b"BADREAD"):
            raise OSError("read error at sector 1234")
        yield content

    def feature_options(self, opts):
        return {"pictures": opts.pictures}

    def analyse(self, record, chunks, opts, known=None):
        data = b"".join(chunks)
        if known is not None and (known.md5, known.sha1) != (hashlib.md5(data).hexdigest(),
                                                               hashlib.sha1(data).hexdigest()):
            raise AssertionError(f"{record.path}: hashes from the group pass are not the content's")
        picture = record.name.endswith(PICTURE_EXTS)
        feat = Features(key=record.key, size=len(data), md5=hashlib.md5(data).hexdigest(),
                        sha1=hashlib.sha1(data).hexdigest(),
                        type="image/jpeg" if picture else "text/plain", is_picture=picture,
                        pdq=(hashlib.sha256(data).hexdigest() if picture and opts["pictures"] else ""),
                        pdq_quality=100 if picture else 0)
        return FakeAnalysis(record, feat)

    def open_hashsets(self, root, names=()):
        return FakeHashSets(root)

    def media_hashes(self, evidence):
        return {"md5": hashlib.md5(Path(evidence.path).read_bytes()).hexdigest()}


class FakeHashSets:
    """alert.json in the root: {"md5": {hash: category}, "pdq": {hash: category}}."""

    def __init__(self, root):
        self.data = json.loads((Path(root) / "alert.json").read_text())

    def lookup(self, algorithm, hashes):
        table = self.data.get(algorithm, {})
        return [[Hit("fakeset", "1", "alert", table[h], 3, algorithm, h)] if h in table else []
                for h in hashes]

    def lookup_perceptual(self, algorithm, hashes, max_distance: Optional[int] = None):
        table = self.data.get(algorithm, {})
        return [[Hit("fakeset", "1", "alert", table[h], 2, algorithm, h, 7)] if h in table else []
                for h in hashes]


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def write_device(path: Path, files: list[dict], volumes: Optional[list[dict]] = None,
                 **extra) -> Path:
    path.write_text(json.dumps({"volumes": volumes or [{"offset": 1048576, "fs_type": "ext4"}],
                                "files": files, **extra}))
    return path


class FreeSpaceBackend(FakeBackend):
    """A fake whose volumes have free space: files under $Unallocated are not walked but carved
    (after "carve_sleep" seconds), and every step leaves a timestamped mark in the device's
    "marks" folder, so a test can see what ran while what else ran."""

    @staticmethod
    def _mark(evidence, name: str, **extra) -> None:
        marks = Path(evidence.data["marks"])
        (marks / name).write_text(json.dumps({"t": time.time(), **extra}))

    def discover(self, evidence, recovery_key=None, password=None):
        vols, cov = super().discover(evidence, recovery_key, password)
        return vols, cov + [Coverage(v.device_id, records.UNALLOCATED, v.where,
                                     "free in the fake allocation map; not carved yet", 1 << 16)
                            for v in vols if not v.encryption]

    def walk(self, evidence, volume, problems=None, plain=False):
        for rec in super().walk(evidence, volume, problems):
            if not rec.path.startswith(records.UNALLOCATED_DIR):
                yield rec
        self._mark(evidence, f"walked-{volume.offset}")

    def carve(self, evidence, volume, problems, done, seconds=0.0, known=None):
        marks = Path(evidence.data["marks"])
        self._mark(evidence, f"carve-start-{volume.offset}",
                   walked=(marks / f"walked-{volume.offset}").exists())
        if evidence.data.get("carve_crash"):
            os._exit(3)             # the worker dies as on a segfault in a container library
        time.sleep(evidence.data.get("carve_sleep", 0))
        for i, f in enumerate(evidence.data["files"]):
            if f["path"].startswith(records.UNALLOCATED_DIR):
                prov = Provenance(device_id=volume.device_id, volume_offset=volume.offset,
                                  inode=f.get("inode", 100 + i), path=f["path"])
                yield FileRecord(prov=prov, name=f["path"].rsplit("/", 1)[-1],
                                 size=len(_content(f)), allocated=False,
                                 fs_type=volume.fs_type or "")
        self._mark(evidence, f"carve-end-{volume.offset}")
        done.append(True)

    def read_chunks(self, evidence, prov, chunk_size):
        self._mark(evidence, f"read-{prov.inode}")
        return super().read_chunks(evidence, prov, chunk_size)
