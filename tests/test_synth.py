"""`triage synth`: the fleet is what truth.json says it is, checked with independent tools
(Debian's sleuthkit, ewfverify, pdqhash), and it is reproducible."""
from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import subprocess
import zipfile
from pathlib import Path

from click.testing import CliRunner

from triage.synth import build_fleet
from triage.synth import pictures as pics



def _device(truth: dict, role: str) -> dict:
    return next(d for d in truth["devices"] if d["role"] == role)


def _tsk_args(fleet: Path, dev: dict) -> list[str]:
    kind = {"raw": "raw", "split_raw": "raw", "ewf": "ewf"}[dev["format"]]
    return ["-i", kind, *(str(fleet / s) for s in dev["segments"])]


def _fls(fleet: Path, dev: dict, offset: int) -> dict[str, tuple[str, bool]]:
    """inode -> (path, allocated) as Debian's fls sees the volume at `offset`."""
    out = subprocess.run(["fls", "-r", "-p", "-o", str(offset // 512), *_tsk_args(fleet, dev)],
                         capture_output=True, text=True, check=True).stdout
    seen = {}
    for line in out.splitlines():
        head, _, path = line.partition(":\t")
        parts = head.split()
        deleted = parts[1] == "*"
        inode = parts[-1].removesuffix("(realloc)")
        seen[inode] = ("/" + path, not deleted)
    return seen


def _icat(fleet: Path, dev: dict, offset: int, inode: str) -> bytes:
    return subprocess.run(["icat", "-o", str(offset // 512), *_tsk_args(fleet, dev), inode],
                          capture_output=True, check=True).stdout


# ---------------------------------------------------------------- layout and hash sets

def test_fleet_has_every_role_and_container(synth_fleet, synth_truth):
    devices = synth_truth["devices"]
    assert len(devices) == 6
    assert {d["role"] for d in devices} == {"exact", "near_only", "encrypted", "clean", "model_bait"}
    assert {d["format"] for d in devices} >= {"raw", "split_raw", "ewf"}
    assert {d["partition_table"] for d in devices} >= {"mbr", "mbr_ext", "gpt", "none"}
    fs_types = {v["fs_type"] for d in devices for v in d["volumes"]}
    assert {"ext4", "fat32"} <= fs_types
    listed = (synth_fleet / "evidence.txt").read_text().split()
    assert len(listed) == 6
    for d, path in zip(devices, listed):
        assert Path(path) == (synth_fleet / d["evidence"]).resolve()
        for seg in d["segments"]:
            assert (synth_fleet / seg).is_file()
    assert any(len(d["segments"]) > 1 and d["format"] == "ewf" for d in devices), "a split E01 set"
    assert any(len(d["segments"]) > 1 and d["format"] == "split_raw" for d in devices)


def test_alert_set_is_vics_uk_media_with_mixed_categories(synth_fleet, synth_truth):
    vics = json.loads((synth_fleet / "alert.vics.json").read_text(encoding="utf-8"))
    assert vics["@odata.context"].endswith("/2.0.xml/UK/$metadata#Media")
    media = vics["value"]
    assert {m["Category"] for m in media} == {1, 2, 3}
    by_md5 = {a["md5"].upper(): a for a in synth_truth["alerts"]}
    for m in media:
        a = by_md5[m["MD5"]]
        assert m["SHA1"] == a["sha1"].upper() and m["MediaSize"] == a["size"]
        assert m["Category"] == a["category"] and m["IsPrecategorized"] is True
    pdq_lines = (synth_fleet / "alert.pdq.txt").read_text().splitlines()
    assert len(pdq_lines) == len(media)
    for line, a in zip(pdq_lines, synth_truth["alerts"]):
        h, q, name = line.split(",")
        assert (h, int(q), name) == (a["pdq"], a["pdq_quality"], a["name"]) and int(q) >= 50
    phashes = (synth_fleet / "alert.phash.txt").read_text().split()
    assert phashes == [a["phash"] for a in synth_truth["alerts"]]
    assert all(len(p) == 16 for p in phashes)


def test_nsrl_minimal_layout_covers_the_system_files(synth_fleet, synth_truth):
    con = sqlite3.connect(synth_fleet / "nsrl.db")
    views = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='view'")}
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "DISTINCT_HASH" in views and {"FILE", "MFG", "OS", "PKG", "VERSION"} <= tables
    cols = [r[1] for r in con.execute("PRAGMA table_info(FILE)")]
    assert cols == ["sha256", "sha1", "md5", "crc32", "file_name", "file_size", "package_id"]
    n = con.execute("SELECT COUNT(*) FROM DISTINCT_HASH").fetchone()[0]
    assert n == synth_truth["nsrl_files"] > 0
    # upper-case hex, as NIST publishes it
    md5 = con.execute("SELECT md5 FROM FILE LIMIT 1").fetchone()[0]
    assert md5 == md5.upper() and len(md5) == 32


def test_context_file_and_rank_constraints(synth_fleet, synth_truth):
    import csv

    rows = list(csv.DictReader((synth_fleet / "context.csv").open()))
    assert list(rows[0]) == ["evidence", "exhibit", "suspect", "access_to_children", "custody_deadline", "notes"]
    access = {r["evidence"]: r["access_to_children"] for r in rows}
    exact = [d for d in synth_truth["devices"] if d["role"] == "exact"]
    assert sorted(access[Path(d["evidence"]).name] for d in exact) == ["lives_with", "none"]
    rules = {(r["above"], r["below"]) for r in synth_truth["rank_order"]}
    ids = {d["role"]: [x["id"] for x in synth_truth["devices"] if x["role"] == d["role"]]
           for d in synth_truth["devices"]}
    for hi, lo in (("exact", "near_only"), ("near_only", "encrypted"), ("encrypted", "clean")):
        for a in ids[hi]:
            for b in ids[lo]:
                assert (a, b) in rules
    lives = next(d["id"] for d in exact if access[Path(d["evidence"]).name] == "lives_with")
    none = next(d["id"] for d in exact if access[Path(d["evidence"]).name] == "none")
    assert (lives, none) in rules


def test_planted_variety(synth_truth):
    planted = [p for d in synth_truth["devices"] for p in d["planted"]]
    exact = [p for p in planted if p["kind"] == "exact"]
    assert any(p["deleted"] for p in exact)
    assert any(p["in_archive"] for p in exact)
    assert any(p["renamed"] and not p["path"].lower().endswith((".jpg", ".png")) for p in exact)
    assert any(p.get("camera") and "/DCIM/" in p["path"] for p in exact)
    deleted_on = {(p["fs_type"]) for p in planted if p["deleted"]}
    assert {"fat32", "ext4"} <= deleted_on
    if any(v["fs_type"] == "ntfs" for d in synth_truth["devices"] for v in d["volumes"]):
        assert "ntfs" in deleted_on
        assert any(p["ads"] for p in exact), "an alert picture hidden in an NTFS stream"
    near = [p for p in planted if p["kind"] == "near"]
    assert {p["transform"] for p in near} >= {"recompress", "crop", "to_png", "to_webp"}
    bait = _device(synth_truth, "model_bait")["model_bait"]
    assert len(bait) >= 3


# ---------------------------------------------------------------- independent checks

def test_fls_sees_planted_items_at_recorded_offsets(synth_fleet, synth_truth):
    checked = 0
    for dev in synth_truth["devices"]:
        by_offset: dict[int, dict] = {}
        for p in dev["planted"] + dev["model_bait"]:
            seen = by_offset.setdefault(p["volume_offset"], _fls(synth_fleet, dev, p["volume_offset"]))
            path, allocated = seen[p["inode"]]
            assert allocated == (not p.get("deleted", False)), p
            if allocated:
                assert path == p["path"] + (f":{p['ads']}" if p.get("ads") else "")
            else:   # FAT overwrites a deleted short name's first byte
                assert path.rsplit("/", 1)[0] == p["path"].rsplit("/", 1)[0]
            checked += 1
    assert checked >= 15


def test_planted_content_is_readable_with_icat_deleted_included(synth_fleet, synth_truth):
    for dev in synth_truth["devices"]:
        for p in dev["planted"]:
            data = _icat(synth_fleet, dev, p["volume_offset"], p["inode"])
            if p["in_archive"]:
                assert hashlib.md5(data).hexdigest() == p["in_archive"]["archive_md5"]
                data = zipfile.ZipFile(io.BytesIO(data)).read(p["in_archive"]["member"])
            assert hashlib.md5(data).hexdigest() == p["md5"], (dev["id"], p["path"])
            assert hashlib.sha1(data).hexdigest() == p["sha1"]


def test_pictures_inside_files_and_in_free_space_are_where_truth_says(synth_fleet, synth_truth):
    """icat of each container gives the recorded picture at the recorded offset; dd of the
    media gives each free-space plant, and no file system names those blocks."""
    inside = free = 0
    for dev in synth_truth["devices"]:
        for p in dev["embedded"]:
            data = _icat(synth_fleet, dev, p["volume_offset"], p["inode"])
            blob = data[p["offset"]:p["offset"] + p["length"]]
            assert hashlib.md5(blob).hexdigest() == p["md5"], p["path"]
            inside += 1
        if dev["format"] != "raw":
            continue
        for p in dev["unallocated"]:
            with open(synth_fleet / dev["evidence"], "rb") as fh:
                fh.seek(p["media_offset"])
                assert hashlib.md5(fh.read(p["length"])).hexdigest() == p["md5"]
            ifind = subprocess.run(["ifind", "-o", str(p["volume_offset"] // 512), "-d",
                                    str(p["offset"] // 4096), *_tsk_args(synth_fleet, dev)],
                                   capture_output=True, text=True)
            assert "not found" in (ifind.stdout + ifind.stderr).lower(), ifind.stdout
            free += 1
    assert inside >= 6 and free >= 3


def test_near_duplicates_are_within_pdq_threshold(synth_fleet, synth_truth):
    alerts = {a["id"]: a for a in synth_truth["alerts"]}
    near = 0
    for dev in synth_truth["devices"]:
        for p in dev["planted"]:
            if p["kind"] != "near":
                continue
            data = _icat(synth_fleet, dev, p["volume_offset"], p["inode"])
            h, quality, _ = pics.perceptual(data)
            dist = pics.hamming(h, alerts[p["near_dup_of"]]["pdq"])
            assert dist == p["pdq_distance"] <= synth_truth["pdq_match_threshold"]
            assert quality >= 50
            assert hashlib.md5(data).hexdigest() not in {a["md5"] for a in alerts.values()}
            near += 1
    assert near >= 5


def test_clean_device_holds_no_alert_hash_and_no_near_picture(synth_fleet, synth_truth, tmp_path):
    dev = _device(synth_truth, "clean")
    assert dev["clean"] and not dev["planted"]
    alert_md5 = {a["md5"] for a in synth_truth["alerts"]}
    alert_pdq = [a["pdq"] for a in synth_truth["alerts"]]
    pictures = 0
    for vol in dev["volumes"]:
        out = tmp_path / str(vol["offset"])
        subprocess.run(["tsk_recover", "-a", "-o", str(vol["offset"] // 512), *_tsk_args(synth_fleet, dev),
                        str(out)], check=True, capture_output=True)
        for f in out.rglob("*"):
            if not f.is_file():
                continue
            data = f.read_bytes()
            assert hashlib.md5(data).hexdigest() not in alert_md5, f
            if f.suffix.lower() in (".jpg", ".png", ".gif", ".webp"):
                h = pics.perceptual(data)[0]
                assert min(pics.hamming(h, a) for a in alert_pdq) > synth_truth["pdq_match_threshold"], f
                pictures += 1
    assert pictures >= 20


def test_e01_sets_verify(synth_fleet, synth_truth):
    e01 = [d for d in synth_truth["devices"] if d["format"] == "ewf"]
    assert e01
    for dev in e01:
        out = subprocess.run(["ewfverify", "-q", str(synth_fleet / dev["evidence"])],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr
        assert dev["media_md5"] in out.stdout


def test_encrypted_volume_has_bitlocker_signature(synth_fleet, synth_truth, tmp_path):
    dev = _device(synth_truth, "encrypted")
    assert dev["encrypted_volumes"] and dev["expect"]["coverage"] == "partial"
    if dev["format"] == "ewf":
        subprocess.run(["ewfexport", "-u", "-q", "-f", "raw", "-t", str(tmp_path / "disk"),
                        str(synth_fleet / dev["evidence"])], check=True, capture_output=True)
        raw = next(tmp_path.glob("disk*"))
    else:
        raw = synth_fleet / dev["evidence"]
    with open(raw, "rb") as f:
        for off in dev["encrypted_volumes"]:
            f.seek(off)
            head = f.read(512)
            assert head[3:11] == b"-FVE-FS-" and head[510:] == b"\x55\xaa"
        benign = [v for v in dev["volumes"] if v["fs_type"]]
        assert benign, "the encrypted device also has a readable volume"


# ---------------------------------------------------------------- reproducibility and CLI

def _stable(truth: dict) -> dict:
    """Truth without what legitimately varies between builds (fs timestamps change image bytes)."""
    t = json.loads(json.dumps(truth))
    for d in t["devices"]:
        d.pop("media_md5")
    return t


def test_same_seed_same_truth_and_alerts(synth_fleet, synth_truth, tmp_path):
    again = build_fleet(tmp_path / "again", devices=6, seed=synth_truth["seed"], size="small")
    assert _stable(again) == _stable(synth_truth)
    # ext4 and FAT32 builds pin every timestamp, so those disks are byte-identical too
    # (libntfs-3g stamps "now" on MFT changes, so NTFS disks are not)
    pinned = [(a, b) for a, b in zip(again["devices"], synth_truth["devices"])
              if all(v["fs_type"] != "ntfs" for v in a["volumes"])]
    assert len(pinned) >= 3
    for a, b in pinned:
        assert a["media_md5"] == b["media_md5"], a["id"]
    for name in ("alert.vics.json", "alert.pdq.txt", "alert.phash.txt", "context.csv"):
        assert (tmp_path / "again" / name).read_bytes() == (synth_fleet / name).read_bytes(), name


def test_other_seed_other_pictures(synth_truth, tmp_path):
    other = build_fleet(tmp_path / "other", devices=1, seed=synth_truth["seed"] + 1, size="small")
    assert not {a["md5"] for a in other["alerts"]} & {a["md5"] for a in synth_truth["alerts"]}


def test_cli_json_summary_and_bad_input(tmp_path):
    from cli import main

    res = CliRunner().invoke(main, ["synth", "--out", str(tmp_path / "f"), "--devices", "1", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    truth = json.loads((tmp_path / "f" / "truth.json").read_text())
    dev = truth["devices"][0]
    planted = dev["planted"] + dev["unallocated"] + dev["embedded"]
    assert summary["devices"][0]["exact"] == sum(p["kind"] == "exact" for p in planted) >= 8
    assert summary["devices"][0]["role"] == "exact"
    res = CliRunner().invoke(main, ["synth", "--out", str(tmp_path / "g"), "--size", "huge"])
    assert res.exit_code == 2
