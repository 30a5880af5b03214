"""`triage scan` on phone extractions end to end (issue 16): an alert stand-in deep inside a
tar, a tgz (inside a nested zip there), a zip, a UFDR, an iTunes backup and an adb backup is
found, matched and flagged where the phone had it; encrypted backups and bad extractions are
coverage with their bytes, never a traceback. One scan of every device (Ray starts once)."""
from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest
import ray
from click.testing import CliRunner

from extraction_builders import (DEEP, bait_jpeg, md5, phone_tree, write_adb, write_itunes,
                                 write_tar, write_ufdr, write_zip, write_zip_bomb)
from triage.records import ARCHIVE, ENCRYPTED, FILE_NOT_READ, MEDIA_DAMAGED
from triage.store import CaseStore

IMAGES = Path(__file__).resolve().parent / "data" / "dfvfs" / "more"   # vendored, Apache-2.0
UFDR_PHONE_PATH = "/private/var/mobile/Media/DCIM/100APPLE/IMG_0007.JPG"
UFDR_DELETED_PATH = "/private/var/mobile/Media/PhotoData/Thumbnails/gone.jpg"
ITUNES = ("CameraRollDomain", "Media/DCIM/100APPLE/IMG_0042.JPG")
ADB = "apps/com.example.gallery/f/cache/IMG_0099.jpg"


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    from cli import main
    from workers.runtime import quiet_environment

    work = tmp_path_factory.mktemp("extractions_scan")
    bait = bait_jpeg(21)
    tree = phone_tree(bait)
    nested = io.BytesIO()                     # the tgz holds the bait inside a zip inside it
    with zipfile.ZipFile(nested, "w") as z:
        z.writestr("shared/2026/IMG_0005.jpg", bait)
    tgz_tree = {k: v for k, v in tree.items() if k != DEEP}
    tgz_tree["data/media/0/WhatsApp/Media/backup.zip"] = nested.getvalue()
    hostile = work / "hostile.bin"
    with tarfile.open(hostile, "w") as tf:
        for name, data in (("../../../etc/cron.d/x", b"* * * * * nothing\n"), ("/abs/IMG.jpg", bait)):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    whole = write_tar(work / "whole.tar", tree).read_bytes()
    (work / "cut.tar").write_bytes(whole[:len(whole) - 30_000])
    devices = {
        "tar": write_tar(work / "android.tar", tree),
        "tgz": write_tar(work / "android.tgz", tgz_tree, compress=True),
        "zip": write_zip(work / "graykey.zip", tree),
        "ufdr": write_ufdr(work / "phone.ufdr", {
            "files/Image/IMG_0007.JPG": (UFDR_PHONE_PATH, bait, False),
            "files/Image/gone.jpg": (UFDR_DELETED_PATH, bait_jpeg(22), True),
            "files/Text/notes.txt": ("/private/var/mobile/Library/Notes/n.txt", b"hello\n", False)}),
        "itunes": write_itunes(work / "itunes-backup", {
            ITUNES: bait, ("HomeDomain", "Library/SMS/sms.db"): b"SQLite format 3\x00" + bytes(500)}),
        "itunes-encrypted": write_itunes(work / "itunes-encrypted", {ITUNES: bait}, encrypted=True),
        "adb": write_adb(work / "backup.ab", {ADB: bait, "apps/com.example.gallery/db/g.db": b"x" * 99}),
        "adb-encrypted": write_adb(work / "locked.ab", {ADB: bait}, encrypted=True),
        "bomb": write_zip_bomb(work / "bomb.zip"),
        "hostile": hostile,
        "cut": work / "cut.tar",
        # the volume systems of issue 16 go through the same scan
        "apfs": IMAGES / "apfs.raw",
        "lvm": IMAGES / "lvm.qcow2",
    }
    alerts = work / "alerts.json"
    alerts.write_text(json.dumps({
        "@odata.context": "http://github.com/VICSDATAMODEL/ProjectVic/DataModels/2.0.xml/UK/$metadata#Media",
        "value": [{"MD5": md5(bait), "Category": 1}, {"MD5": md5(bait_jpeg(22)), "Category": 1}]}))
    quiet_environment()
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    case = work / "case"
    args = ["scan", "--case", str(case), "--json", "--hashset", str(alerts), "--mode", "full",
            "--batch-files", "4"] + [str(p) for p in devices.values()]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    with CaseStore(case, create=False) as store:
        ids = {Path(d["paths"][0]).name: d["id"] for d in store.devices()}
    yield case, {k: ids[p.name] for k, p in devices.items()}, bait
    ray.shutdown()


def _view(case: Path, did: str):
    with CaseStore(case, create=False) as store:
        files = {r.key: (r, f) for r, f in store.files(did)}
        alerts = [m for m in store.matches(did) if m.role == "alert"]
        flags = [f for _, f in store.flags(did)]
        coverage = store.coverage(did)
    return files, alerts, flags, coverage


@pytest.mark.parametrize("kind,where,member", [
    ("tar", "/" + DEEP, ""),
    ("tgz", "/data/media/0/WhatsApp/Media/backup.zip", "shared/2026/IMG_0005.jpg"),
    ("zip", "/" + DEEP, ""),
    ("ufdr", UFDR_PHONE_PATH, "files/Image/IMG_0007.JPG"),
    ("itunes", "/" + "/".join(ITUNES), ""),
    ("adb", "/" + ADB, ""),
    ("hostile", "/abs/IMG.jpg", ""),
])
def test_the_alert_stand_in_is_found_where_the_phone_had_it(scanned, kind, where, member):
    case, ids, bait = scanned
    files, alerts, flags, _ = _view(case, ids[kind])
    hit = {(files[m.key][0].path, files[m.key][0].prov.member) for m in alerts}
    assert (where, member) in hit, hit
    assert {m.value for m in alerts} >= {md5(bait)}
    assert "KNOWN_MATCH" in {f.code for f in flags}


def test_ufdr_maps_paths_and_deletion_and_show_prints_them(scanned):
    from cli import main
    case, ids, _ = scanned
    files, alerts, _, _ = _view(case, ids["ufdr"])
    by_path = {r.path: r for r, _ in files.values()}
    assert not by_path[UFDR_DELETED_PATH].allocated and by_path[UFDR_PHONE_PATH].allocated
    assert "/private/var/mobile/Library/Notes/n.txt" in by_path and "/report.xml" in by_path
    shown = json.loads(CliRunner().invoke(main, ["show", ids["ufdr"], "--case", str(case),
                                                  "--json"]).stdout)
    found = {f["path"]: f for f in shown["findings"]}
    assert set(found) == {UFDR_PHONE_PATH, UFDR_DELETED_PATH}
    assert found[UFDR_DELETED_PATH]["deleted"] is True
    assert found[UFDR_PHONE_PATH]["provenance"]["member"] == "files/Image/IMG_0007.JPG"
    import shlex
    with CaseStore(case, create=False) as store:
        evidence = shlex.quote(store.device(ids["ufdr"])["paths"][0])   # the real path, quoted
    assert found[UFDR_PHONE_PATH]["icat"] == f"unzip -p {evidence} 'files/Image/IMG_0007.JPG'"
    text = CliRunner().invoke(main, ["show", ids["ufdr"], "--case", str(case)]).output
    assert "/private/var/mobile/Media/DCIM/100APPLE/IMG" in text     # the table folds long paths
    assert len({m.key for m in alerts}) == 2      # the deleted one is matched too


def test_show_says_how_to_reach_a_members_bytes(scanned, tmp_path):
    """The hint `show` gives for a tar member really gives its bytes (dd on the evidence)."""
    import shlex
    import subprocess
    from cli import main
    case, ids, bait = scanned
    with CaseStore(case, create=False) as store:
        evidence = store.device(ids["tar"])["paths"][0]
    shown = json.loads(CliRunner().invoke(main, ["show", ids["tar"], "--case", str(case),
                                                 "--json"]).stdout)
    [finding] = shown["findings"]
    cmd = finding["icat"].replace("IMAGE", shlex.quote(str(evidence)))
    assert cmd.startswith("dd if=")
    out = subprocess.run(cmd, shell=True, capture_output=True, check=True).stdout
    assert md5(out) == md5(bait)


def test_itunes_backup_maps_hashed_names_to_domain_paths(scanned):
    case, ids, _ = scanned
    files, _, _, coverage = _view(case, ids["itunes"])
    paths = {r.path for r, _ in files.values()}
    assert {"/HomeDomain/Library/SMS/sms.db", "/$Backup/Manifest.db", "/$Backup/Info.plist"} <= paths
    assert not any(len(p.rsplit("/", 1)[-1]) == 40 for p in paths)   # no hashed name left
    assert not [c for c in coverage if c.kind in (ENCRYPTED, FILE_NOT_READ, MEDIA_DAMAGED)]


@pytest.mark.parametrize("kind", ["itunes-encrypted", "adb-encrypted"])
def test_encrypted_backup_is_a_gap_naming_what_was_not_examined(scanned, kind):
    case, ids, _ = scanned
    files, alerts, flags, coverage = _view(case, ids[kind])
    [gap] = [c for c in coverage if c.kind == ENCRYPTED]
    assert "encrypted backup" in gap.reason and gap.bytes_not_examined > 0
    assert not alerts and "NOT_EXAMINED" in {f.code for f in flags}


def test_bad_extractions_are_coverage(scanned):
    case, ids, _ = scanned
    _, _, flags, coverage = _view(case, ids["bomb"])
    assert any(c.kind == ARCHIVE and "bomb" in c.reason and c.where.path == "/sdcard/DCIM/huge.bin"
               for c in coverage)
    from triage.rank import verdicts
    with CaseStore(case, create=False) as store:
        by_id = {v.device_id: v for v in verdicts(store)}
    # a refused member is counted in the device's reasons (one flag per bomb would drown them)
    assert by_id[ids["bomb"]].coverage == "partial"
    assert any("archive" in r for r in by_id[ids["bomb"]].reasons), by_id[ids["bomb"]].reasons
    files, _, _, coverage = _view(case, ids["cut"])
    assert any(c.kind == MEDIA_DAMAGED and "cut short" in c.reason for c in coverage)
    assert any(c.kind == FILE_NOT_READ for c in coverage)
    files, _, _, _ = _view(case, ids["hostile"])
    assert "/../../../etc/cron.d/x" in {r.path for r, _ in files.values()}


@pytest.mark.parametrize("kind", ["apfs", "lvm"])
def test_apfs_and_lvm_volumes_are_scanned(scanned, kind):
    case, ids, _ = scanned
    files, _, _, coverage = _view(case, ids[kind])
    by_path = {r.path: (r, f) for r, f in files.values()}
    rec, feats = by_path["/passwords.txt"]
    assert feats.md5 == "39cb097008d17660abd0539891a672af" and rec.size == 116
    assert rec.fs_type == ("apfs" if kind == "apfs" else "ext2")
    assert not [c for c in coverage if c.kind in (FILE_NOT_READ, MEDIA_DAMAGED, ENCRYPTED)]
