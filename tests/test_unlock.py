"""A scan's workers open the evidence themselves, so the BitLocker keys given to `triage scan`
must reach them. No BitLocker image can be made on Linux, and the public one (bdetogo.raw) is
cut short, so libbde's decryption is stood in for: the "decrypted volume" is a plain FAT image,
behind a first sector that carries the BitLocker signature.
"""
from __future__ import annotations

import hashlib
import subprocess

import pytest
import pytsk3

from triage.errors import EvidenceError
from triage.records import VolumeRef
from workers.batch import Backend, ScanOptions, WorkerContext, scan_batch
from workers.plan import BatchSpec

CONTENT = b"synthetic note inside an encrypted volume\n" * 50



@pytest.fixture
def locked(tmp_path, monkeypatch):
    plain = tmp_path / "decrypted.img"
    subprocess.run(["mkfs.fat", "-C", str(plain), "2048"], check=True, capture_output=True)
    (tmp_path / "note.txt").write_bytes(CONTENT)
    subprocess.run(["mcopy", "-i", str(plain), str(tmp_path / "note.txt"), "::/note.txt"],
                   check=True, capture_output=True)
    data = bytearray(plain.read_bytes())
    data[3:11] = b"-FVE-FS-"          # what the volume's first sector looks like when encrypted
    image = tmp_path / "locked.raw"
    image.write_bytes(bytes(data))
    calls = []

    def fake_unlock(evidence, offset, length, recovery_key, password):
        calls.append((offset, recovery_key, password))
        if recovery_key != "111111-222222":
            raise EvidenceError("the key or password does not unlock it")
        return pytsk3.Img_Info(str(plain))

    monkeypatch.setattr("triage.volumes.unlock_bitlocker", fake_unlock)
    return image, calls


def test_worker_without_keys_records_the_volume_as_locked(locked):
    image, calls = locked
    ctx = WorkerContext(Backend())
    ev = ctx.evidence((str(image),), "dev")
    volume = VolumeRef(device_id="dev", index=0, offset=0, length=image.stat().st_size,
                       description="bare", fs_type="fat12")
    with pytest.raises(EvidenceError, match="locked"):
        list(Backend().walk(ev, volume))
    assert calls == []


def test_worker_with_the_scans_keys_walks_and_reads_the_unlocked_volume(locked):
    image, calls = locked
    ctx = WorkerContext(Backend())
    keys = ("111111-222222", None)
    ev = ctx.evidence((str(image),), "dev", keys)
    volume = VolumeRef(device_id="dev", index=0, offset=0, length=image.stat().st_size,
                       description="bare", fs_type="fat12")
    records = [r for r in Backend().walk(ev, volume) if not r.is_dir]
    note = [r for r in records if r.name == "note.txt"]
    assert note and note[0].prov.path == "/note.txt"
    spec = BatchSpec(device_id="dev", batch_id="v0-b0", volume_offset=0, tier=0,
                     records=tuple(note))
    result = scan_batch(ctx, (str(image),), spec, ScanOptions(pictures=False), keys)
    (_rec, feat), = result.items
    assert feat.md5 == hashlib.md5(CONTENT).hexdigest() and not result.coverage
    assert calls == [(0, "111111-222222", None)]          # unlocked once, then reused


def test_a_wrong_key_is_a_clear_error(locked):
    image, _calls = locked
    ev = WorkerContext(Backend()).evidence((str(image),), "dev", ("000000-000000", None))
    volume = VolumeRef(device_id="dev", index=0, offset=0, length=image.stat().st_size,
                       description="bare", fs_type="fat12")
    with pytest.raises(EvidenceError, match="does not unlock"):
        list(Backend().walk(ev, volume))
