"""The evidence layer on public test images (dfvfs test data, vendored in tests/data/dfvfs) and on a
folder of logical files: every container opens by signature, lists the expected files with the
expected SHA-256, and encrypted volumes become coverage, not empty devices."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import main
from triage import records
from triage.evidence import detect_format, device_id_for, media_hashes, open_evidence, split_raw_segments
from triage.filesystems import read_chunks, walk
from triage.inventory import row as inventory_row
from triage.device import discover
from triage.device import BITLOCKER_LOCKED
from triage.volumes import ENCRYPTED_BITLOCKER

TESTDATA = Path(__file__).resolve().parent / "data" / "dfvfs"   # vendored, Apache-2.0

END_TO_END = ["ext2.E01", "ext2.vhd", "ext2.vmdk", "ext2.qcow2", "image.qcow2", "image.vmdk"]
FORMATS = {"ext2.E01": "ewf", "ext2.vhd": "vhdi", "ext2.vmdk": "vmdk", "ext2.qcow2": "qcow",
           "image.qcow2": "qcow", "image.vmdk": "vmdk"}


def listing(path, **kw) -> list:
    with open_evidence(path) as ev:
        volumes, coverage = discover(ev, **kw)
        out = []
        for v in volumes:
            if v.fs_type:
                for r in walk(ev, v):
                    sha = None if r.is_dir else inventory_row(ev, r, ("sha256",))["sha256"]
                    out.append((r, sha))
        return out


def expected(name: str) -> tuple[set, dict]:
    paths = set((TESTDATA / "end_to_end" / f"{name}.paths").read_text().split("\n")) - {""}
    hashes = {}
    for line in (TESTDATA / "end_to_end" / f"{name}.hashes").read_text().splitlines():
        if line.strip():
            digest, path = line.split("\t", 1)
            hashes[path] = digest
    return paths, hashes


@pytest.mark.parametrize("name", END_TO_END)
def test_end_to_end_paths_and_sha256(name):
    with open_evidence(TESTDATA / name) as ev:
        assert ev.ref.format == FORMATS[name]
    want_paths, want_hashes = expected(name)
    rows = listing(TESTDATA / name)
    allocated = {r.path for r, _ in rows if r.allocated and not r.orphan}
    # the expected lists hold allocated entries only, and the root "/" that is not a file
    assert allocated == want_paths - {"/"}
    got_hashes = {r.path: sha for r, sha in rows if r.allocated and not r.is_dir and sha}
    for path, digest in want_hashes.items():
        assert got_hashes[path] == digest, path


def test_image_qcow2_lists_the_deleted_swap_and_backup_files_too():
    rows = listing(TESTDATA / "image.qcow2")
    deleted = {r.path for r, _ in rows if not r.allocated}
    assert {"/passwords.txt~", "/a_directory/.another_file.swp", "/a_directory/another_file~"} <= deleted


@pytest.mark.parametrize("first,count", [("ext2.split.E01", 2), ("ext2.splitraw.000", 2),
                                         ("more/image-split.E01", 2)])
def test_split_sets_open_whole(first, count):
    with open_evidence(TESTDATA / first) as ev:
        assert len(ev.ref.paths) == count
        assert ev.ref.format in ("ewf", "split_raw")
        digest = media_hashes(ev)
        if ev.ref.stored_hashes:
            assert digest["md5"] == ev.ref.stored_hashes["md5"]
    if first.startswith("ext2."):
        want, _ = expected("ext2.E01")
        assert {r.path for r, _ in listing(TESTDATA / first) if r.allocated} == want - {"/"}


def test_split_ewf_and_single_ewf_are_the_same_media():
    with open_evidence(TESTDATA / "ext2.E01") as one, open_evidence(TESTDATA / "ext2.split.E01") as two:
        assert one.ref.media_size == two.ref.media_size == 4194304
        assert media_hashes(one) == media_hashes(two)
        assert one.ref.stored_hashes["md5"] == media_hashes(one)["md5"]


def test_bitlocker_to_go_is_a_coverage_gap_not_an_empty_device():
    with open_evidence(TESTDATA / "bdetogo.raw") as ev:
        volumes, coverage = discover(ev)
    assert [v.encryption for v in volumes] == ["BitLocker"]
    assert volumes[0].fs_type is None          # its boot sector passes for FAT32; it is not
    assert [c.reason for c in coverage] == [BITLOCKER_LOCKED]    # says how to unlock it
    assert coverage[0].bytes_not_examined == ev.ref.media_size
    result = CliRunner().invoke(main, ["inspect", str(TESTDATA / "bdetogo.raw"), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["coverage"][0]["reason"] == BITLOCKER_LOCKED


def test_mbr_with_extended_partitions():
    with open_evidence(TESTDATA / "more" / "mbr.raw") as ev:
        volumes, coverage = discover(ev)
    # two Linux partitions, the second inside the extended one; the first holds no file system
    assert [(v.offset, v.fs_type) for v in volumes] == [(512, None), (180224, "ext2")]
    assert [(c.kind, c.where.volume_offset, c.where.scope) for c in coverage] == [
        (records.UNREADABLE_VOLUME, 512, "volume"), (records.UNALLOCATED, 180224, "volume"),
        (records.UNPARTITIONED, None, "device")]
    # every byte of the disk is in a volume or the unpartitioned gap
    assert sum(v.length for v in volumes) + coverage[2].bytes_not_examined == ev.ref.media_size
    # ext2's free-block count, as TSK's fsstat reads it from the superblock
    fsstat = subprocess.run(["fsstat", "-o", "352", str(TESTDATA / "more" / "mbr.raw")],
                            capture_output=True, text=True, check=True).stdout
    free = int(re.search(r"Free Blocks: (\d+)", fsstat).group(1))
    assert coverage[1].bytes_not_examined == free * volumes[1].block_size


@pytest.mark.parametrize("name,fs", [("hfsplus.raw", "hfs+"), ("iso9660.raw", "iso9660"),
                                     ("windows_volume.qcow2", "ntfs")])
def test_other_file_systems(name, fs):
    rows = listing(TESTDATA / "more" / name)
    assert rows and {r.fs_type for r, _ in rows} == {fs}


def test_apfs_and_lvm_are_examined_now():
    """Issue 16: no longer gaps (their listings against TSK: tests/test_volume_systems.py)."""
    for name, fs in (("apfs.raw", "apfs"), ("lvm.qcow2", "ext2")):
        with open_evidence(TESTDATA / "more" / name) as ev:
            volumes, coverage = discover(ev)
        assert [v.fs_type for v in volumes] == [fs]
        assert not [c for c in coverage if c.kind in (records.UNSUPPORTED_VOLUME,
                                                      records.UNREADABLE_VOLUME)]


def test_signature_not_extension(tmp_path):
    disguised = tmp_path / "holiday.jpg"
    shutil.copy(TESTDATA / "ext2.qcow2", disguised)
    assert detect_format(str(disguised)) == "qcow"
    raw_named_e01 = tmp_path / "disk.E01"
    shutil.copy(TESTDATA / "more" / "image.dd", raw_named_e01)
    with open_evidence(raw_named_e01) as ev:
        assert ev.ref.format == "raw"


def test_split_raw_naming(tmp_path):
    for name in ("d.000", "d.001", "d.002", "x.aa", "x.ab"):
        (tmp_path / name).write_bytes(b"\0")
    assert [Path(p).name for p in split_raw_segments(str(tmp_path / "d.000"))] == ["d.000", "d.001", "d.002"]
    assert [Path(p).name for p in split_raw_segments(str(tmp_path / "x.aa"))] == ["x.aa", "x.ab"]
    assert [Path(p).name for p in split_raw_segments(str(tmp_path / "d.001"))] == ["d.001", "d.002"]
    (tmp_path / "lone.001").write_bytes(b"\0")
    assert split_raw_segments(str(tmp_path / "lone.001")) == [str(tmp_path / "lone.001")]
    assert device_id_for(str(tmp_path / "d.000")) == "d.000"


def test_directory_evidence(tmp_path):
    root = tmp_path / "phone_export"
    (root / "DCIM" / "Camera").mkdir(parents=True)
    (root / "DCIM" / "Camera" / "IMG_0001.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"x" * 100)
    (root / "notes.txt").write_bytes(b"\x89PNG\r\n\x1a\n" + b"y" * 50)     # a picture in disguise
    (root / "empty").write_bytes(b"")
    os.symlink("/etc/passwd", root / "link")                                 # never followed
    with open_evidence(root) as ev:
        assert ev.ref.format == "directory" and ev.img is None
        volumes, coverage = discover(ev)
        assert [v.fs_type for v in volumes] == ["directory"] and coverage == []
        rows = {r.path: r for r in walk(ev, volumes[0])}
        assert set(rows) == {"/DCIM", "/DCIM/Camera", "/DCIM/Camera/IMG_0001.jpg", "/notes.txt", "/empty", "/link"}
        assert rows["/notes.txt"].type == "image/png" and rows["/notes.txt"].ext_mismatch
        assert rows["/DCIM/Camera/IMG_0001.jpg"].type == "image/jpeg"
        data = b"".join(read_chunks(ev, rows["/DCIM/Camera/IMG_0001.jpg"].prov, chunk_size=16))
        assert data == (root / "DCIM" / "Camera" / "IMG_0001.jpg").read_bytes()
        from triage.errors import EvidenceError
        with pytest.raises(EvidenceError):
            list(read_chunks(ev, rows["/link"].prov))


def test_walk_is_a_generator_with_flat_memory(tmp_path):
    """Thousands of files stream out one at a time; the walk holds folders, not files."""
    import tracemalloc
    root = tmp_path / "many"
    for d in range(20):
        sub = root / f"d{d}"
        sub.mkdir(parents=True)
        for i in range(150):
            (sub / f"f{i}.txt").write_bytes(b"x")
    with open_evidence(root) as ev:
        (volume,), _ = discover(ev)
        gen = walk(ev, volume)
        assert iter(gen) is gen
        tracemalloc.start()
        first = None
        n = 0
        for n, _ in enumerate(gen, 1):
            if n == 200:
                first = tracemalloc.get_traced_memory()[0]
        last = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    assert n == 20 + 20 * 150
    # 2,800 more files later the walk holds (about) what it held after 200
    assert last - first < 256 * 1024, (first, last)


def test_files_command_jsonl_and_csv():
    runner = CliRunner()
    result = runner.invoke(main, ["files", str(TESTDATA / "image.qcow2"), "--hash", "md5,sha256"])
    assert result.exit_code == 0, result.output        # free space is reported, not a failure
    assert "unallocated space not carved" in result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    want_keys = {"path", "size", "allocated", "inode", "volume_offset", "fs_type", "type", "ext_mismatch",
                 "md5", "sha256", "mtime", "atime", "ctime", "crtime"}
    assert all(want_keys <= set(r) for r in rows)
    assert all("sha1" not in r for r in rows)
    by_path = {r["path"]: r for r in rows}
    _, hashes = expected("image.qcow2")
    for path, digest in hashes.items():
        assert by_path[path]["sha256"] == digest
    assert by_path["/passwords.txt"]["mtime"].endswith("Z")
    assert by_path["/passwords.txt~"]["allocated"] is False
    result = runner.invoke(main, ["files", str(TESTDATA / "ext2.vmdk"), "--format", "csv", "--files-only"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].startswith("path,size,allocated")
    assert sum(1 for line in lines if line.startswith("path,")) == 1             # header once
    # three files and a symbolic link; no folders
    assert sorted(line.split(",")[0] for line in lines[1:]) == [
        "/a_directory/a_file", "/a_directory/another_file", "/a_link", "/passwords.txt"]
    # booleans as JSON writes them, the same in every CSV the project writes
    import csv
    listed = list(csv.DictReader(lines))
    assert {r["allocated"] for r in listed} == {"true"} and {r["dir"] for r in listed} == {"false"}
    result = runner.invoke(main, ["files", str(TESTDATA / "ext2.vmdk"), "--hash", "crc32"])
    assert result.exit_code == 2 and "unknown hash crc32" in result.output


def test_inspect_reports_container_volumes_and_counts():
    result = CliRunner().invoke(main, ["inspect", str(TESTDATA / "ext2.split.E01"), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["format"] == "ewf" and len(info["paths"]) == 2
    assert info["stored_hashes"]["md5"] == "196066add11fb71c4c49cf1bb50d6d24"
    (vol,) = info["volumes"]
    assert vol["fs_type"] == "ext2" and vol["label"] == "ext2_test" and vol["block_size"] == 1024
    # a_file, another_file, passwords.txt and the symbolic link a_link
    assert vol["files"]["allocated"] == 4 and vol["files"]["deleted"] == 0
    human = CliRunner().invoke(main, ["inspect", str(TESTDATA / "image.qcow2")])
    assert human.exit_code == 0 and "ext2" in human.output



def test_bitlocker_key_that_does_not_unlock_stays_a_gap_with_the_reason():
    with open_evidence(TESTDATA / "bdetogo.raw") as ev:
        volumes, coverage = discover(ev, password="not-the-password")
    assert volumes[0].fs_type is None and volumes[0].encryption == "BitLocker"
    assert coverage[0].reason.startswith(ENCRYPTED_BITLOCKER + ": ")
    assert "\n" not in coverage[0].reason
    result = CliRunner().invoke(main, ["files", str(TESTDATA / "bdetogo.raw"), "--password", "x"])
    assert result.exit_code == 2 and "encrypted (BitLocker)" in result.output


def _rss_file_kib() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    pytest.skip("no RssFile in /proc/self/status")


def test_mapped_reads_give_the_bytes_and_do_not_pile_up_in_memory(tmp_path):
    """Views of a raw image are its bytes; released views leave the resident set (the page
    cache keeps them), so hashing a large device does not look like a large process."""
    from triage.evidence import RawSource

    size = 96 * (1 << 20)
    img = tmp_path / "disk.raw"
    with open(img, "wb") as fh:
        for i in range(size // (1 << 20)):
            fh.write(bytes([i % 251]) * (1 << 20))
    src = RawSource([str(img)])
    try:
        assert bytes(src.view(5 * (1 << 20) - 3, 6)) == bytes([4]) * 3 + bytes([5]) * 3
        assert src.view(size - 2, 4) is None            # past the end: not a view
        before = _rss_file_kib()
        for off in range(0, size // 2, 1 << 20):       # touched, released
            view = src.view(off, 1 << 20)
            assert view[0] == (off >> 20) % 251
            hashlib.md5(view).digest()
            src.release(off, 1 << 20)
        released = _rss_file_kib() - before
        for off in range(size // 2, size, 1 << 20):    # touched, kept mapped
            hashlib.md5(src.view(off, 1 << 20)).digest()
        kept = _rss_file_kib() - before - released
        assert released < 16 * 1024, released
        assert kept > 32 * 1024, kept                 # so the measure can tell the difference
    finally:
        src.close()


def test_raw_evidence_is_read_forward_and_opens_where_the_hint_is_refused(tmp_path, monkeypatch):
    """Each segment of a raw image is opened with the kernel told it is read forward (twice the
    read-ahead: a walk of a million small files read from disk spent 40 % less time in the
    kernel); a file system that refuses the hint still opens and reads the same bytes."""
    from triage import evidence as ev_mod
    seg = [tmp_path / "d.001", tmp_path / "d.002"]
    seg[0].write_bytes(b"a" * 4096)
    seg[1].write_bytes(b"b" * 4096)
    advised = []
    real = os.posix_fadvise
    monkeypatch.setattr(os, "posix_fadvise",
                        lambda fd, off, n, how: (advised.append((off, n, how)), real(fd, off, n, how)))
    src = ev_mod.RawSource([str(p) for p in seg])
    try:
        assert advised == [(0, 0, os.POSIX_FADV_SEQUENTIAL)] * 2
        assert src.read(4090, 12) == b"a" * 6 + b"b" * 6
    finally:
        src.close()

    def refuse(*_):
        raise OSError(95, "Operation not supported")
    monkeypatch.setattr(os, "posix_fadvise", refuse)
    src = ev_mod.RawSource([str(p) for p in seg])
    try:
        assert src.size == 8192 and src.read(4090, 12) == b"a" * 6 + b"b" * 6
    finally:
        src.close()


def test_views_of_a_group_are_each_pieces_view(tmp_path):
    """Evidence.views (one pass over a single raw file's map) gives what `view` gives piece by
    piece, and None for a file one of whose pieces lies even partly outside the image; a split
    image gives the same through `view` itself."""
    import random

    data = bytearray(random.Random(11).randbytes(200_000))
    data[510:512] = b"\x55\xaa"                 # an MBR's mark: the image opens as a disk
    data = bytes(data)
    single = tmp_path / "one.raw"
    single.write_bytes(data)
    for i, cut in enumerate((0, 70_000, 140_000)):
        (tmp_path / f"two.{i + 1:03d}").write_bytes(data[cut:cut + 70_000])
    rng = random.Random(12)
    edges = [0, 1, 69_999, 70_000, 199_999, 200_000, 200_001, -1, 10**12]
    pieces_of = []
    for _ in range(400):
        pieces_of.append(tuple((rng.choice(edges + [rng.randrange(200_000)]),
                                rng.choice([0, 1, 4096, 70_000, rng.randrange(9000)]))
                               for _ in range(rng.choice([1, 1, 1, 2, 3]))))
    for path in (single, tmp_path / "two.001"):
        with open_evidence(str(path)) as ev:
            got = ev.views(pieces_of)
            assert len(got) == len(pieces_of)
            for pieces, chunks in zip(pieces_of, got):
                each = [ev.view(start, n) for start, n in pieces]
                if None in each:
                    assert chunks is None, pieces
                else:
                    assert [bytes(c) for c in chunks] == [data[a:a + n] for a, n in pieces]
            assert sum(c is not None for c in got) > 50 and None in got
            # a worker's read of a group: mapped where it can be, read piece by piece where
            # not (pieces across the split image's segments, or past its end), hashed alike
            from workers.batch import Backend
            group = [p for p in pieces_of if all(a >= 0 for a, _ in p)]
            for pieces, (chunks, digests) in zip(group, Backend().read_small(ev, group)):
                want = b"".join(data[a:a + n] for a, n in pieces)
                assert b"".join(bytes(c) for c in chunks) == want
                assert digests.md5 == hashlib.md5(want).hexdigest()
