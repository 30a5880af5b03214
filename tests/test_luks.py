"""LUKS volumes unlock with --password through libluksde (issue 16, part 4). The LUKS1 volume
is built here, byte for byte to the LUKS1 on-disk format (header, one key slot with PBKDF2-SHA1
and the anti-forensic split of the master key, payload), with `aes-ecb` so that Debian's
openssl can do the AES; the payload is a FAT file system made by mkfs.fat and mtools."""
from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from triage.device import discover
from triage.evidence import open_evidence
from triage.filesystems import read_chunks, walk
from triage.records import ENCRYPTED

PASSWORD = "correct horse battery staple"
NOTE = b"a note inside the encrypted volume\n" * 40
SECTOR = 512


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b))


def _diffuse(buf: bytes) -> bytes:
    """LUKS1's AF diffusion with SHA-1: each 20-byte block hashed with its index in front."""
    out = b""
    for j in range(0, len(buf), 20):
        block = buf[j:j + 20]
        out += hashlib.sha1(struct.pack(">I", j // 20) + block).digest()[:len(block)]
    return out


def _af_split(key: bytes, stripes: int) -> bytes:
    d, out = bytes(len(key)), b""
    for _ in range(stripes - 1):
        s = os.urandom(len(key))
        out += s
        d = _diffuse(_xor(d, s))
    return out + _xor(d, key)


def _aes_ecb(key: bytes, data: bytes) -> bytes:
    return subprocess.run(["openssl", "enc", "-aes-256-ecb", "-nopad", "-K", key.hex()],
                          input=data, capture_output=True, check=True).stdout


def build_luks1(path: Path, payload: bytes, password: str, iterations: int = 1000) -> Path:
    master = os.urandom(32)
    mk_salt, slot_salt = os.urandom(32), os.urandom(32)
    digest = hashlib.pbkdf2_hmac("sha1", master, mk_salt, iterations, 20)
    stripes = 4000
    material = _af_split(master, stripes)
    km_sectors = -(-len(material) // SECTOR)
    material = material.ljust(km_sectors * SECTOR, b"\0")
    slot_key = hashlib.pbkdf2_hmac("sha1", password.encode(), slot_salt, iterations, 32)
    km_offset, payload_offset = 8, 512
    header = struct.pack(">6sH32s32s32sII20s32sI40s", b"LUKS\xba\xbe", 1, b"aes", b"ecb",
                         b"sha1", payload_offset, 32, digest, mk_salt, iterations,
                         str(uuid.UUID(int=7)).encode())
    header += struct.pack(">II32sII", 0x00AC71F3, iterations, slot_salt, km_offset, stripes)
    for i in range(1, 8):
        header += struct.pack(">II32sII", 0x0000DEAD, 0, bytes(32), km_offset + i * 264, stripes)
    image = bytearray(payload_offset * SECTOR + len(payload))
    image[:len(header)] = header
    image[km_offset * SECTOR:km_offset * SECTOR + len(material)] = _aes_ecb(slot_key, material)
    image[payload_offset * SECTOR:] = _aes_ecb(master, payload)
    path.write_bytes(bytes(image))
    return path


@pytest.fixture(scope="module")
def luks(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("luks")
    fat = work / "plain.img"
    subprocess.run(["mkfs.fat", "-C", str(fat), "1024"], check=True, capture_output=True)
    (work / "note.txt").write_bytes(NOTE)
    subprocess.run(["mcopy", "-i", str(fat), str(work / "note.txt"), "::/note.txt"],
                   check=True, capture_output=True)
    return build_luks1(work / "laptop.raw", fat.read_bytes(), PASSWORD)


def test_locked_luks_volume_is_a_gap(luks):
    with open_evidence(luks) as ev:
        vols, cov = discover(ev)
    assert [v.encryption for v in vols] == ["LUKS"] and vols[0].fs_type is None
    [gap] = cov
    assert gap.kind == ENCRYPTED and gap.reason == "encrypted (LUKS): locked; scan again with --password TEXT"
    assert gap.bytes_not_examined == luks.stat().st_size


def test_wrong_password_is_one_line(luks):
    with open_evidence(luks) as ev:
        vols, cov = discover(ev, password="not it")
    [gap] = cov
    assert gap.kind == ENCRYPTED and "\n" not in gap.reason
    assert gap.reason == "encrypted (LUKS): the key or password does not unlock it"
    from cli import main
    r = CliRunner().invoke(main, ["inspect", str(luks), "--password", "not it", "--json"])
    assert r.exit_code == 0 and "Traceback" not in r.output
    assert "does not unlock it" in json.loads(r.output)["coverage"][0]["reason"]


def test_right_password_unlocks_and_tsk_reads_the_volume(luks):
    with open_evidence(luks) as ev:
        vols, cov = discover(ev, password=PASSWORD)
        [vol] = vols
        assert vol.fs_type == "fat12" and "LUKS, unlocked" in vol.description
        assert not [c for c in cov if c.kind == ENCRYPTED]
        [note] = [r for r in walk(ev, vol) if r.path == "/NOTE.TXT" or r.path == "/note.txt"]
        assert b"".join(bytes(c) for c in read_chunks(ev, note.prov)) == NOTE


def test_a_scan_worker_unlocks_with_the_scans_password(luks):
    """Workers open the device themselves: the password handed to scan_batch unlocks it there."""
    from workers.batch import Backend, ScanOptions, WorkerContext, scan_batch
    from workers.plan import BatchSpec
    with open_evidence(luks) as ev:
        [vol] = discover(ev, password=PASSWORD)[0]
        [note] = [r for r in walk(ev, vol) if r.path.lower() == "/note.txt"]
    spec = BatchSpec(device_id="laptop.raw", batch_id="b", volume_offset=vol.offset, tier=0,
                     records=(note,))
    opts = ScanOptions(pictures=False)
    locked = scan_batch(WorkerContext(Backend()), (str(luks),), spec, opts)
    assert locked.coverage and "locked" in locked.coverage[0].reason
    done = scan_batch(WorkerContext(Backend()), (str(luks),), spec, opts, keys=(None, PASSWORD))
    [(rec, feats)] = done.items
    assert not done.coverage and feats.md5 == hashlib.md5(NOTE).hexdigest()


def test_filevault_corestorage_is_detected_and_a_gap_without_a_key(tmp_path):
    """A CoreStorage physical volume (FileVault 2): its header says so ('CS', version 1 at 88);
    without a key it is an 'encrypted' gap with its bytes; with a password that libfvde cannot
    use (this header is a stand-in: no public FileVault image is small enough to vendor) the
    reason is one line, never a traceback."""
    head = bytearray(os.urandom(512 * 1024))
    head[88:92] = b"CS\x01\x00"
    image = tmp_path / "mac.raw"
    image.write_bytes(bytes(head))
    with open_evidence(image) as ev:
        vols, cov = discover(ev)
    assert [v.encryption for v in vols] == ["FileVault"]
    [gap] = cov
    assert gap.kind == ENCRYPTED and gap.reason == ("encrypted (FileVault 2 / CoreStorage): locked; scan again with "
                                             "--password TEXT")
    assert gap.bytes_not_examined == len(head)
    with open_evidence(image) as ev:
        vols, cov = discover(ev, password="guess")
    [gap] = cov
    assert gap.kind == ENCRYPTED and gap.reason.startswith("encrypted (FileVault 2 / CoreStorage): ")
    assert "\n" not in gap.reason
