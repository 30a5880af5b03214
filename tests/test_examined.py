"""Examined means examined (issue 13): whatever triage could not examine is a coverage record
with its bytes, no partial hash passes for a file's own, and such a device is never `complete`
and never ranks with the clean ones.

The damaged images come from tests/damaged.py, each checked there to be damage TSK itself
cannot read past (fls or icat fail, or give fewer bytes than the size).
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import damaged
from cli import main
from triage import records
from triage.evidence import open_evidence
from triage.inventory import rows as inventory_rows
from triage.rank import TIER_NOT_YET, TIER_UNEXAMINED, verdicts
from triage.store import CaseStore
from triage.device import discover

BIN = Path(sys.executable).parent
BUILDERS = [damaged.ext4_root_unreadable, damaged.ext4_truncated, damaged.ext4_bad_extent,
            damaged.fat_cluster_loop, damaged.ntfs_bad_mft_entry, damaged.e01_bad_chunk]
# the gap each damage must leave on its device (besides the free space nothing carves yet)
EXPECTED_KIND = {"ext4_root_unreadable": records.FOLDER_NOT_READ,
                 "ext4_truncated": records.FILE_NOT_READ,
                 "ext4_bad_extent": records.FILE_NOT_READ,
                 "fat_cluster_loop": records.FILE_NOT_READ,
                 "ntfs_bad_mft_entry": records.FILE_NOT_READ,
                 "e01_bad_chunk": records.FILE_NOT_READ}


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> dict[str, damaged.Damaged]:
    out = {}
    for build in BUILDERS:
        work = tmp_path_factory.mktemp(build.__name__)
        out[build.__name__] = build(work)
    return out


@pytest.fixture(scope="module")
def rich(tmp_path_factory) -> damaged.Rich:
    return damaged.rich_ext4(tmp_path_factory.mktemp("rich"))


@pytest.mark.parametrize("name", [b.__name__ for b in BUILDERS])
def test_files_exits_1_names_the_gap_and_prints_no_partial_hash(broken, name):
    d = broken[name]
    result = CliRunner().invoke(main, ["files", str(d.image), "--hash", "md5,sha1"])
    assert result.exit_code == 1, (result.exit_code, result.stderr)
    gaps = [line for line in result.stderr.splitlines() if line.startswith("not examined: ")]
    kind = EXPECTED_KIND[name]
    assert any(line.startswith(f"not examined: {d.path} ({kind}, ") for line in gaps), gaps
    assert "Traceback" not in result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    for row in rows:
        if row["path"] == d.path:
            assert row["md5"] is None and row["sha1"] is None and "not fully read" in row["error"]
    # no hash of what could be read is printed anywhere as if it were the file's
    partial = _partial_md5s(d)
    assert not partial & {row.get("md5") for row in rows}


def _partial_md5s(d: damaged.Damaged) -> set[str]:
    """MD5s of the bytes icat gives for the damaged file (its readable start)."""
    if not d.inode or d.path == "/":
        return set()
    out = subprocess.run(["icat", "-o", str(d.offset // 512), str(d.image), str(d.inode)],
                         capture_output=True, timeout=60).stdout
    return {hashlib.md5(out).hexdigest()} if out else set()


def test_e01_damage_is_a_gap_of_its_own(broken):
    d = broken["e01_bad_chunk"]
    result = CliRunner().invoke(main, ["files", str(d.image), "--hash", "md5"])
    start, length = d.damaged
    assert f"(media damaged, {length:,} bytes): E01 chunk fails its checksum: sectors " \
           f"{start // 512}-{(start + length) // 512 - 1}" in result.stderr


def test_truncated_image_names_the_missing_bytes(broken):
    d = broken["ext4_truncated"]
    with open_evidence(d.image) as ev:
        volumes, coverage = discover(ev)
    [cut] = [c for c in coverage if c.kind == records.MEDIA_DAMAGED]
    assert cut.where.scope == "volume" and "cut short" in cut.reason
    assert cut.bytes_not_examined == 5 * 1024 * 1024 - d.image.stat().st_size


@pytest.mark.parametrize("name", [b.__name__ for b in BUILDERS])
def test_every_file_tsk_cannot_read_in_full_is_a_gap(broken, name):
    """The differential rule: where icat fails or gives fewer bytes than the size, triage has
    a coverage record for that file (the root folder: for the folder)."""
    d = broken[name]
    truth = damaged.tsk_truth(d.image, d.offset, deleted=True)
    with open_evidence(d.image) as ev:
        volumes, _ = discover(ev)
        problems: list = []
        listed = list(inventory_rows(ev, volumes, ("md5",), include_dirs=False, problems=problems))
    gaps = {c.where.path for c in problems if c.kind in (records.FILE_NOT_READ,
                                                         records.FOLDER_NOT_READ)}
    unread = damaged.unread(truth)
    if d.path == "/":
        assert "/" in gaps and not listed       # the folder is the gap; its files are unknown
    elif name == "e01_bad_chunk":
        # TSK reads the chunk as the zeroes libewf returns, without an error; triage asks
        # libewf for its checksum errors and refuses the file (ewfverify agrees)
        assert d.path not in {r.path for r in unread} and d.path in gaps
    else:
        assert d.path in {r.path for r in unread}, "the builder did not damage what it says"
    for r in unread:
        if r.size == 0:
            continue        # nothing to miss: a name with no metadata, an NTFS entry without $DATA
        assert r.path in gaps, (r, sorted(gaps))


# --- a scan of the damaged devices, the rich one, and the queue --------------------------------

@pytest.fixture(scope="module")
def scanned(broken, rich, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("examined_case")
    alert = work / "alert.vics.json"        # one alert item that none of these devices holds
    alert.write_text(json.dumps({"@odata.context": "http://github.com/VICSDATAMODEL/ProjectVic/"
                                 "DataModels/2.0.xml/UK/$metadata#Media",
                                 "value": [{"MediaID": 1, "Category": 1,
                                            "MD5": hashlib.md5(b"not here").hexdigest()}]}))
    case = work / "case"
    evidence = [str(d.image) for d in broken.values()] + [str(rich.image)]
    run = subprocess.run([str(BIN / "triage"), "scan", "--case", str(case), "--mode", "full",
                          "--hashset", str(alert), "--json", *evidence],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return case


def _device(store, image: Path) -> str:
    [dev] = [d["id"] for d in store.devices() if Path(d["paths"][0]).name == image.name]
    return dev


def test_scan_stores_gaps_with_bytes_and_never_calls_a_damaged_device_complete(broken, scanned):
    with CaseStore(scanned, create=False) as store:
        queue = {v.device_id: v for v in verdicts(store)}
        for name, d in broken.items():
            dev = _device(store, d.image)
            gaps = store.coverage(dev)
            mine = [c for c in gaps if c.kind == EXPECTED_KIND[name] and c.where.path == d.path]
            assert mine, (name, [(c.kind, c.where.display()) for c in gaps])
            if name == "ntfs_bad_mft_entry":
                # the MFT entry itself is unreadable: its size is unknown, the gap says why
                assert f"cannot open inode {d.inode}" in mine[0].reason
            elif mine[0].kind == records.FILE_NOT_READ:
                assert mine[0].bytes_expected == d.size
                assert mine[0].bytes_not_examined == d.size - mine[0].bytes_read > 0
            assert store.device(dev)["status"] == "partial", name
            v = queue[dev]
            assert v.coverage != "complete" and v.tier == TIER_UNEXAMINED, (name, v.tier, v.reasons)
            assert any(r.startswith(EXPECTED_KIND[name]) for r in v.reasons), v.reasons
            # no hash is stored for the file that was read short
            files = {r.path: f for r, f in store.files(dev)}
            if d.path in files:
                assert files[d.path].md5 == "" and files[d.path].sha1 == ""


def test_video_thumbcache_pdf_and_free_space_are_examined_so_the_device_is_complete(rich, scanned):
    with CaseStore(scanned, create=False) as store:
        dev = _device(store, rich.image)
        gaps = store.coverage(dev)
        v = {x.device_id: x for x in verdicts(store)}[dev]
    by_path = {c.where.path: c for c in gaps if c.where.scope == "file"}
    video, cache, pdf = (rich.files[k] for k in ("video", "thumbcache", "pdf"))
    # the video's frames were decoded and hashed (issue 15): it leaves no gap
    assert video[0] not in by_path
    with CaseStore(scanned, create=False) as store:
        [(_rec, vfeat)] = [(r, f) for r, f in store.files(dev) if r.path == video[0]]
    assert vfeat.frames and vfeat.examined_seconds > 0
    # the cache's thumbnails and the PDF's JPEG page were examined (stored whole), and the PDF
    # holds no image in another encoding: neither leaves a gap
    assert cache[0] not in by_path and pdf[0] not in by_path
    with CaseStore(scanned, create=False) as store:
        members = {(r.prov.parent.path, r.prov.offset, r.prov.length)
                   for r, f in store.files(dev) if r.prov.scope == "embedded" and f.pdq}
    for path in (cache[0], pdf[0]):
        assert {(path, o, n) for o, n in rich.embedded[path]} <= members
    # free space was carved: no gap is left for it, and the deleted JPEG's bytes were read
    # (as the deleted file the walk lists, or carved where no name is left)
    assert not [c for c in gaps if c.kind == records.UNALLOCATED]
    gone = hashlib.md5(rich.deleted_jpeg).hexdigest()
    with CaseStore(scanned, create=False) as store:
        assert [r for r, f in store.files(dev) if f.md5 == gone and not r.allocated]
    # nothing is left that triage cannot yet examine: the device is complete, not tier 1
    assert v.coverage == "complete" and v.tier != TIER_NOT_YET
    # triage show accounts for the bytes per volume and kind, with no gap left
    shown = CliRunner().invoke(main, ["show", dev, "--case", str(scanned)])
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.split())
    assert "Coverage (examined / total bytes)" in text
    assert records.VIDEO_FRAMES not in text and records.EMBEDDED not in text
    assert records.UNALLOCATED not in text
    as_json = json.loads(CliRunner().invoke(main, ["show", dev, "--case", str(scanned), "--json"]).stdout)
    [vol] = as_json["accounting"]["volumes"]
    kinds = vol["not_examined"]
    assert not {records.VIDEO_FRAMES, records.EMBEDDED, records.UNALLOCATED} & set(kinds)
    assert vol["examined"] == vol["total"] - sum(k["bytes"] for k in kinds.values())


def test_queue_reason_lines_say_what_was_missed(scanned, broken, rich):
    result = CliRunner().invoke(main, ["queue", "--case", str(scanned), "--format", "json"])
    rows = json.loads(result.stdout)
    with CaseStore(scanned, create=False) as store:
        whole = _device(store, rich.image)          # the one device examined in full
    damaged = [r for r in rows if r["device"] != whole]
    assert len(damaged) == len(broken)
    assert all(r["coverage"] != "complete" and r["tier"] >= TIER_NOT_YET for r in damaged)
    assert not any("fully examined" in line for r in damaged for line in r["reasons"])
    [clean] = [r for r in rows if r["device"] == whole]
    assert clean["coverage"] == "complete" and any("fully examined" in line
                                                   for line in clean["reasons"])
    # every volume's free space was carved: no device is left with that gap
    assert not any("unallocated space not carved" in line for r in rows for line in r["reasons"])


# --- settings that leave every device unexamined ---------------------------------------------

def test_scan_without_an_alert_set_leaves_every_device_partial(tmp_path):
    folder = tmp_path / "export"
    (folder / "docs").mkdir(parents=True)
    (folder / "docs" / "note.txt").write_text("synthetic note\n")
    case = tmp_path / "case"
    run = subprocess.run([str(BIN / "triage"), "scan", "--case", str(case), "--mode", "full",
                          "--json", str(folder)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads(run.stdout)
    assert any("no alert hash set" in w for w in summary["warnings"])
    assert summary["status"] == "partial"
    with CaseStore(case, create=False) as store:
        [dev] = store.devices()
        assert dev["status"] == "partial"
        [gap] = store.coverage(dev["id"])
        assert gap.kind == records.NOT_MATCHED and gap.where.scope == "device"
        [v] = verdicts(store)
        flags = [f.code for _i, f in store.flags(dev["id"])]
    assert v.tier == TIER_UNEXAMINED and "NOT_EXAMINED" in flags
    assert any(r.startswith(records.NOT_MATCHED) for r in v.reasons)
    assert not any("nothing suspected" in r for r in v.reasons)


def test_scan_in_which_every_device_failed_exits_non_zero(tmp_path):
    bad = []
    for i in range(2):
        p = tmp_path / f"junk{i}.img"
        p.write_bytes(b"\x00not an image" * 100)
        bad.append(str(p))
    run = subprocess.run([str(BIN / "triage"), "scan", "--case", str(tmp_path / "case"), *bad],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, (run.returncode, run.stderr[-2000:])
    assert "error: no device could be examined" in run.stderr
    assert "Traceback" not in run.stderr
