"""Conformance with The Sleuth Kit: `walk` lists what `fls -r -p -m` lists, and every file's
content hashes as `icat | md5sum` does.

The reference is Debian's TSK 4.11 command-line tools; the walk runs on the pytsk3 wheel's TSK
4.15 and, for E01 and split raw, on triage's own container readers. Every place the two are
known to differ is said here, and the comparison is exact everywhere else, so a new
disagreement fails the test rather than hiding:

- NTFS deleted names: TSK 4.15 (the wheel) does not attach the MFT entry to a deleted name
  once the entry's sequence number has moved on (libntfs-3g bumps it at deletion); TSK 4.11's
  fls does, and lists the file's size and content. triage follows 4.11 where the entry is
  still unallocated (nobody else's bytes) — see filesystems._unclaimed_meta — so the two agree
  again; without that, `/gone.txt` on NTFS would be size 0 here and 1040 in fls.
- fls -m's extra lines (NTFS $FILE_NAME times, $INDEX_ALLOCATION streams) are not files; see
  `reference`.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from evidence_images import build_all, fls_body, icat, missing_tools
from triage.records import FILE_NOT_READ, UNALLOCATED, UNPARTITIONED
from triage.inventory import row as inventory_row
from triage.evidence import open_evidence
from triage.filesystems import NTFS_DATA, read_chunks, walk
from triage.device import discover

# The Debian tools are hard dependencies (the Makefile installs them): missing ones fail.
assert not missing_tools(), f"missing tools: {missing_tools()}"


@pytest.fixture(scope="session")
def tsk_images(tmp_path_factory):
    return build_all(tmp_path_factory.mktemp("tsk_images"))


def reference(image, offset: int) -> tuple[set, set, dict]:
    """From fls: the (path, meta address, size, allocated) set of every line that names
    content, the set of every path, and path -> the inode argument icat takes.

    fls -m prints one line per attribute, so three kinds of line are not files as triage
    counts them:
    - "path ($FILE_NAME)": the times of NTFS's $FILE_NAME attribute, a second line per file.
      Its path still counts as a name (a file whose only data is named streams, such as
      $Secure, has no other line), but its size is the name attribute's, not the file's.
    - NTFS named $INDEX_ALLOCATION attributes ("$Secure:$SDH", "$Quota:$O", type 144): index
      structures fls prints like streams. triage lists $DATA streams only (type 128), the
      alternate data streams that hold content.
    """
    keys, paths, inodes = set(), set(), {}
    for line in fls_body(image, offset):
        if line.path.endswith(" ($FILE_NAME)"):
            paths.add(line.path[: -len(" ($FILE_NAME)")])
            continue
        parts = line.inode.split("-")
        if len(parts) == 3 and ":" in line.path.rsplit("/", 1)[-1] and int(parts[1]) != NTFS_DATA:
            continue
        keys.add((line.path, int(parts[0]), line.size, line.allocated))
        paths.add(line.path)
        inodes[line.path] = line.inode
    return keys, paths, inodes


def printable(path: str) -> str:
    """A path as fls prints it: TSK shows control characters as '^' (HFS+ names its private
    folder ".HFS+ Private Directory Data\r"). triage keeps the real name; only the printing differs."""
    return re.sub(r"[\x00-\x1f]", "^", path)


def ours(evidence, offset: int):
    volumes, _ = discover(evidence)
    (volume,) = [v for v in volumes if v.offset == offset]
    return volume, list(walk(evidence, volume))


def assert_conforms(evidence_path, tsk_image, offset: int, expect_fs: str) -> list:
    with open_evidence(evidence_path) as ev:
        volume, records = ours(ev, offset)
        assert volume.fs_type == expect_fs
        want, want_paths, icat_inodes = reference(tsk_image, offset)
        got_paths = {printable(r.path) for r in records}
        assert got_paths == want_paths, (f"only triage: {sorted(got_paths - want_paths)[:10]}; "
                                         f"only fls: {sorted(want_paths - got_paths)[:10]}")
        got = {(printable(r.path), r.prov.inode, r.size, r.allocated) for r in records
               if printable(r.path) in icat_inodes}
        assert got == want, (f"only triage: {sorted(got - want)[:10]}; only fls: {sorted(want - got)[:10]}")
        # NTFS streams: the attribute id triage reads is the one fls names
        for r in records:
            if r.prov.ads:
                assert icat_inodes[printable(r.path)] == f"{r.prov.inode}-{NTFS_DATA}-{r.prov.attr_id}"
        # every content, byte for byte as icat gives it; and the differential rule of "examined
        # means examined": where icat fails or gives fewer bytes than the file's size, triage
        # has a coverage record and no hash for it
        for r in records:
            if r.is_dir or printable(r.path) not in icat_inodes:
                continue
            want_md5, icat_ok, icat_bytes = icat(tsk_image, offset, icat_inodes[printable(r.path)])
            problems: list = []
            row = inventory_row(ev, r, ("md5",), problems)
            # a size-0 file has no bytes to miss: icat refuses a deleted name whose metadata is
            # gone (inode 0) and an NTFS entry with no $DATA (the reserved entries 16-23)
            icat_short = (not icat_ok or icat_bytes < r.size) and r.size > 0
            if problems:
                # both TSKs refuse the same files (exFAT's virtual $FAT1 has a cluster address
                # past the end: "Starting cluster address too large"); triage says so per file
                assert icat_short, f"{r.path}: triage reports a gap where icat reads it all"
                assert row["md5"] is None and [c.kind for c in problems] == [FILE_NOT_READ]
                assert problems[0].where == r.prov and problems[0].bytes_expected == r.size
                continue
            assert row["md5"] == want_md5, r.path
            if icat_short:
                # the one allowed case: NTFS stores nothing past a stream's initialised size
                # ($BadClus:$Bad); triage read exactly what icat wrote, and knows why it ended
                assert r.fs_type == "ntfs" and icat_ok, f"{r.path}: icat read it short, no gap"
        return records


CASES = [
    # image, volume index, file system
    ("ext4", 0, "ext4"),
    ("ext4_split", 0, "ext4"),
    ("exfat", 0, "exfat"),
    ("fat12", 0, "fat12"),
    ("fat16", 0, "fat16"),
    ("mbr", 0, "fat32"),
    ("mbr", 1, "ntfs"),
    ("gpt", 0, "ext4"),
    ("gpt", 1, "fat32"),
    ("gpt_e01", 0, "ext4"),
    ("gpt_e01", 1, "fat32"),
]


@pytest.mark.parametrize("name,vol,fs", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_walk_matches_fls_and_icat(tsk_images, name, vol, fs):
    assert name in tsk_images, f"no {name} image (mkfs.exfat comes with exfatprogs)"
    image = tsk_images[name]
    records = assert_conforms(image.path, image.raw, image.offsets[vol], fs)
    # the planted deletion is found, as deleted, with its name (FAT keeps all but the first letter)
    deleted = [r for r in records if not r.allocated and not r.orphan and not r.is_dir]
    if image.deleted:
        assert any(r.path.endswith("one.txt") for r in deleted), [r.path for r in deleted]


def test_ntfs_stream_and_renamed_picture(tsk_images):
    image = tsk_images["mbr"]
    with open_evidence(image.path) as ev:
        _, records = ours(ev, image.offsets[1])
    by_path = {r.path: r for r in records}
    ads = by_path["/readme.txt:hidden"]
    assert ads.prov.ads == "hidden" and ads.prov.attr_type == NTFS_DATA
    assert ads.type == "image/png" and ads.ext_mismatch       # a picture with no picture name
    assert by_path["/renamed.txt"].type == "image/jpeg" and by_path["/renamed.txt"].ext_mismatch
    assert by_path["/readme.txt"].type == "" and not by_path["/readme.txt"].ext_mismatch


@pytest.mark.parametrize("name,vol,direct", [("ext4", 0, True), ("ext4_split", 0, True),
                                              ("fat16", 0, True), ("gpt", 1, True),
                                              ("mbr", 1, False), ("gpt_e01", 0, False)])
def test_live_files_on_raw_ext_and_fat_are_read_straight_from_the_image(tsk_images, monkeypatch,
                                                                         name, vol, direct):
    """Live ext and FAT files of a raw image are hashed from the mapped image, not through
    TSK's read; the bytes are TSK's (and so icat's, above). NTFS and E01 always go through
    TSK (NTFS's initialised size is not visible to pytsk3; E01 has no mapping)."""
    import triage.filesystems as fsmod

    image = tsk_images[name]
    with open_evidence(image.path) as ev:
        _, records = ours(ev, image.offsets[vol])
        files = [r for r in records if not r.is_dir and r.size and r.allocated and not r.prov.ads]
        assert files
        mapped = {}
        for r in files:
            chunks = list(read_chunks(ev, r.prov, 4096))
            mapped[r.path] = (hashlib.md5(b"".join(chunks)).hexdigest(),
                              any(isinstance(c, memoryview) for c in chunks))
        monkeypatch.setattr(fsmod, "_direct_ranges", lambda *a: None)
        for r in files:
            through_tsk = hashlib.md5(b"".join(read_chunks(ev, r.prov, 4096))).hexdigest()
            assert mapped[r.path][0] == through_tsk, r.path
    used = sum(1 for _, m in mapped.values() if m)
    assert (used == len(files)) if direct else used == 0, (used, len(files))


def test_e01_and_split_raw_read_the_same_media(tsk_images):
    with open_evidence(tsk_images["gpt_e01"].path) as e01, open_evidence(tsk_images["gpt"].path) as raw:
        assert e01.ref.format == "ewf" and len(e01.ref.paths) >= 2
        assert e01.ref.media_size == raw.ref.media_size
        size = raw.ref.media_size
        assert hashlib.md5(e01.read(0, size)).hexdigest() == hashlib.md5(raw.read(0, size)).hexdigest()
        assert e01.ref.stored_hashes["md5"] == hashlib.md5(raw.read(0, size)).hexdigest()
        assert e01.ref.stored_hashes["sha1"] == hashlib.sha1(raw.read(0, size)).hexdigest()
        # reads across a chunk boundary and at the very end
        assert e01.read(32768 - 7, 20) == raw.read(32768 - 7, 20)
        assert e01.read(size - 5, 100) == raw.read(size - 5, 5)
    with open_evidence(tsk_images["ext4_split"].path) as split:
        assert split.ref.format == "split_raw" and len(split.ref.paths) == 3
        raw = tsk_images["ext4"].raw.read_bytes()
        assert split.read(3 * (1 << 20) - 10, 20) == raw[3 * (1 << 20) - 10: 3 * (1 << 20) + 10]


def test_volumes_of_partitioned_images(tsk_images):
    with open_evidence(tsk_images["mbr"].path) as ev:
        volumes, coverage = discover(ev)
    assert [(v.offset, v.fs_type, v.label) for v in volumes] == [
        (tsk_images["mbr"].offsets[0], "fat32", "FATVOL"), (tsk_images["mbr"].offsets[1], "ntfs", "NTFSVOL")]
    # nothing unreadable: only the space nothing carves yet, with its bytes
    assert sorted(c.kind for c in coverage) == [UNALLOCATED, UNALLOCATED, UNPARTITIONED]
    assert all(c.bytes_not_examined > 0 for c in coverage)
    with open_evidence(tsk_images["gpt"].path) as ev:
        volumes, coverage = discover(ev)
    assert [(v.fs_type, v.label) for v in volumes] == [("ext4", "EXTVOL"), ("fat32", "FATVOL")]


# --- the synthetic fleet: every file system and container `triage synth` makes ----------------

def _synth_cases(truth: dict) -> list:
    cases = []
    for d in truth["devices"]:
        for v in d["volumes"]:
            if v["fs_type"]:
                cases.append((d, v))
    return cases


def test_synth_fleet_conforms(synth_fleet, synth_truth):
    seen_formats, seen_fs = set(), set()
    for device, vol in _synth_cases(synth_truth):
        segments = [str(synth_fleet / s) for s in device["segments"]]
        records = assert_conforms(segments[0], segments, vol["offset"], vol["fs_type"])
        assert records, device["id"]
        seen_formats.add(device["format"])
        seen_fs.add(vol["fs_type"])
    assert {"raw", "ewf", "split_raw"} <= seen_formats
    assert {"ext4", "fat32", "ntfs"} <= seen_fs


# --- the public test images TSK's command-line tools can read directly ---------------------------

TESTDATA = Path(__file__).resolve().parent / "data" / "dfvfs"   # vendored, Apache-2.0
PUBLIC = [
    ("more/hfsplus.raw", 0, "hfs+"),
    ("more/iso9660.raw", 0, "iso9660"),
    ("more/image.dd", 0, "ext2"),
    ("more/mbr.raw", 180224, "ext2"),          # the logical partition inside the extended one
    ("image.vhd", None, "ext2"),               # VHD read by triage, raw media by TSK (see below)
]


@pytest.mark.parametrize("name,offset,fs", PUBLIC, ids=[p[0] for p in PUBLIC])
def test_public_images_conform(name, offset, fs, tmp_path):
    path = TESTDATA / name
    tsk_image = path
    if offset is None:
        # Debian's TSK has no VHD support: give it the media triage reads, as a raw file
        with open_evidence(path) as ev:
            (tmp_path / "media.raw").write_bytes(ev.read(0, ev.ref.media_size))
        tsk_image, offset = tmp_path / "media.raw", 0
    assert_conforms(path, tsk_image, offset, fs)
