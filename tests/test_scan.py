"""`triage scan` on the synthetic fleet, the real stack end to end, checked against truth.json.

One full scan of the whole fleet (plus a corrupt image) serves most assertions. A second
scan is SIGKILLed part-way and resumed; its matches must equal the uninterrupted scan's.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import ray

from triage.flags import read_flags_file  # noqa: E402
from triage.store import CaseStore  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def hashset_files(fleet: Path, truth: dict) -> list[Path]:
    hs = truth["hashsets"]
    return [fleet / hs[k] for k in ("alert_vics", "nsrl", "alert_pdq", "alert_phash", "alert_vpdq")]


def evidence_paths(fleet: Path, truth: dict) -> list[Path]:
    return [fleet / d["evidence"] for d in truth["devices"]]


def scan_args(case: Path, fleet: Path, truth: dict, *extra: str) -> list[str]:
    args = ["scan", "--case", str(case), "--json"]
    for h in hashset_files(fleet, truth):
        args += ["--hashset", str(h)]
    return args + list(extra)


@pytest.fixture(scope="module")
def local_ray():
    from workers.runtime import quiet_environment
    quiet_environment()
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def corrupt_image(tmp_path_factory, synth_fleet, synth_truth) -> Path:
    """An E01 cut short after its first 64 KiB: the kind of image a failed copy leaves."""
    e01 = next(synth_fleet / d["evidence"] for d in synth_truth["devices"] if d["format"] == "ewf")
    bad = tmp_path_factory.mktemp("corrupt") / "broken.E01"
    bad.write_bytes(e01.read_bytes()[:65536])
    return bad


@pytest.fixture(scope="module")
def full_scan(tmp_path_factory, local_ray, synth_fleet, synth_truth, corrupt_image):
    case = tmp_path_factory.mktemp("scan") / "case"
    args = scan_args(case, synth_fleet, synth_truth, "--mode", "full", "--verify", "--context",
                     str(synth_fleet / "context.csv"))
    args += [str(p) for p in evidence_paths(synth_fleet, synth_truth)] + [str(corrupt_image)]
    result = CliRunner().invoke(__import__("cli").main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    return case, summary


def device_ids(case: Path) -> dict[str, str]:
    """evidence file name -> device id in the store."""
    with CaseStore(case, create=False) as store:
        return {Path(d["paths"][0]).name: d["id"] for d in store.devices()}


def dev_id(case: Path, device: dict) -> str:
    return device_ids(case)[Path(device["evidence"]).name]


def _files_by_key(store: CaseStore, device_id: str) -> dict:
    return {r.key: (r, f) for r, f in store.files(device_id)}


def planted_where(p: dict) -> tuple[str, str, str]:
    """(path as TSK lists it, ADS name, archive member) of a planted item. An NTFS stream's
    path is `file:stream`, as `fls` prints it."""
    if p["in_archive"]:
        return p["in_archive"]["archive"], "", p["in_archive"]["member"]
    return p.get("tsk_path") or p["path"], p.get("ads") or "", ""


def test_every_planted_exact_item_is_found(full_scan, synth_truth):
    case, _ = full_scan
    checked = {"deleted": 0, "in_archive": 0, "renamed": 0, "ads": 0}
    with CaseStore(case, create=False) as store:
        for device in synth_truth["devices"]:
            exact = [p for p in device["planted"] if p["kind"] == "exact"]
            if not exact:
                continue
            did = dev_id(case, device)
            files = _files_by_key(store, did)
            matches = [m for m in store.matches(did) if m.kind == "exact" and m.role == "alert"]
            found = {}
            for m in matches:
                rec, feat = files[m.key]
                found[(rec.path, rec.prov.ads, rec.prov.member)] = (rec, feat, m)
            for p in exact:
                where = planted_where(p)
                assert where in found, f"{device['id']}: planted {p['id']} {where} not matched"
                rec, feat, m = found[where]
                assert feat.md5 == p["md5"] and feat.sha1 == p["sha1"]
                assert m.category in ("A", "B", "C", "1", "2", "3")
                if p["deleted"]:
                    assert not rec.allocated
                    checked["deleted"] += 1
                if p["in_archive"]:
                    checked["in_archive"] += 1
                if p.get("ads"):
                    checked["ads"] += 1
                if p["renamed"]:
                    assert rec.ext_mismatch and feat.is_picture and feat.type == "image/jpeg"
                    checked["renamed"] += 1
            assert len({m.key for m in matches}) == device["expect"]["exact_matches"]
    assert all(checked.values()), checked


def test_every_near_duplicate_is_a_near_match(full_scan, synth_truth):
    case, _ = full_scan
    threshold = synth_truth["pdq_match_threshold"]
    with CaseStore(case, create=False) as store:
        for device in synth_truth["devices"]:
            near = [p for p in device["planted"] if p["kind"] == "near"]
            did = dev_id(case, device)
            files = _files_by_key(store, did)
            got = {}
            for m in store.matches(did):
                if m.kind == "near" and m.role == "alert":
                    rec = files[m.key][0]
                    got.setdefault((rec.path, rec.prov.ads, rec.prov.member), []).append(m)
            for p in near:
                where = planted_where(p)
                assert where in got, f"{device['id']}: near item {where} not found"
                assert any(m.algorithm in ("pdq", "phash") for m in got[where])
                assert all(m.distance <= threshold for m in got[where] if m.algorithm == "pdq")
            assert len(got) == device["expect"]["near_matches"]


def _device_view(case: Path, did: str) -> tuple[dict, dict, dict, dict]:
    """(files by path, alert matches by key, flags by key, `show --json`) of one device."""
    with CaseStore(case, create=False) as store:
        files = {r.path: (r, f) for r, f in store.files(did)}
        matches: dict = {}
        for m in store.matches(did):
            if m.role == "alert":
                matches.setdefault(m.key, []).append(m)
        flagged = {f.key: f for _, f in store.flags(did)}
    shown = CliRunner().invoke(__import__("cli").main, ["show", did, "--case", str(case), "--json"])
    return files, matches, flagged, json.loads(shown.stdout)


def _image_bytes(fleet: Path, device: dict, offset: int, length: int) -> bytes:
    """What `triage show` says reaches a carved item: dd on a raw image, img_cat | dd on the
    rest (split raw, E01)."""
    if device["format"] == "raw":
        cmd = (f"dd if={fleet / device['evidence']} iflag=skip_bytes,count_bytes bs=1M "
               f"skip={offset} count={length}")
    else:
        segs = " ".join(str(fleet / s) for s in device["segments"])
        cmd = (f"img_cat {segs} | dd iflag=skip_bytes,count_bytes,fullblock bs=1M "
               f"skip={offset} count={length}")
    # (img_cat ends on SIGPIPE once dd has its bytes: only dd's output is checked)
    return subprocess.run(["bash", "-c", cmd], capture_output=True,
                          check=True).stdout


def test_pictures_only_in_free_space_are_carved_matched_and_reachable(full_scan, synth_fleet,
                                                                      synth_truth, tmp_path):
    """The exact and the resized near stand-in that only free space holds (no name, no inode)
    are carved, matched and flagged with their provenance, in the queue, in `show` with a
    command that reaches their bytes, and in every export; the benign control matches nothing."""
    case, _ = full_scan
    runner = CliRunner()
    main = __import__("cli").main
    exports = {}
    for fmt in ("vics", "case", "csv", "dfxml"):
        out = tmp_path / f"export.{fmt}"
        r = runner.invoke(main, ["export", "--case", str(case), "--format", fmt, "--out", str(out)])
        assert r.exit_code == 0, r.output
        exports[fmt] = out.read_text()
    checked = {"exact": 0, "near": 0, "control": 0}
    for device in synth_truth["devices"]:
        if not device["unallocated"]:
            continue
        did = dev_id(case, device)
        files, matches, flagged, shown = _device_view(case, did)
        findings = {f["path"]: f for f in shown["findings"]}
        text = runner.invoke(main, ["show", did, "--case", str(case)]).output
        queue = json.loads(runner.invoke(main, ["queue", "--case", str(case), "--format", "json"]).stdout)
        [row] = [r for r in queue if r["device"] == did]
        for p in device["unallocated"]:
            assert p["path"] in files, f"{device['id']}: {p['path']} not carved"
            rec, feat = files[p["path"]]
            # provenance: the volume, the byte offset in it and the length; no inode, no name
            assert rec.prov.carved and rec.prov.inode is None and not rec.allocated
            assert (rec.prov.parent.volume_offset, rec.prov.offset, rec.prov.length) == \
                (p["volume_offset"], p["offset"], p["length"])
            assert (feat.md5, feat.sha1, rec.size) == (p["md5"], p["sha1"], p["size"])
            data = _image_bytes(synth_fleet, device, p["volume_offset"] + p["offset"], p["length"])
            assert hashlib.md5(data).hexdigest() == p["md5"]
            got = matches.get(rec.key, [])
            if p["kind"] == "control":
                assert got == [] and p["path"] not in findings and rec.key not in flagged
                checked["control"] += 1
                continue
            assert {m.kind for m in got} == {p["kind"]}
            assert flagged[rec.key].code == ("KNOWN_MATCH" if p["kind"] == "exact" else "NEAR_MATCH")
            hint = findings[p["path"]]["icat"]
            assert f"skip={p['media_offset']} count={p['length']}" in hint
            assert f"skip={p['media_offset']}" in text and "CARVED" in text
            assert findings[p["path"]]["provenance"]["provenance"]["offset"] == p["offset"]
            if p["kind"] == "exact":
                assert any("1 carved from free space" in line for line in row["reasons"]), row
                for fmt in ("vics", "case", "csv"):
                    assert p["path"] in exports[fmt], fmt
            assert p["path"] in exports["dfxml"]
            checked[p["kind"]] += 1
    assert all(checked.values()), checked


def test_pictures_inside_files_are_found_matched_and_placed(full_scan, synth_truth, tmp_path):
    """The exact stand-in inside a PDF, the near one in thumbcache_256.db and the exact one in
    a JPEG's EXIF thumbnail are members of their file (its provenance as parent, their byte
    range; a thumbnail its cache entry's hash and identifier), matched, flagged, shown and
    exported; the benign control in each matches nothing."""
    case, _ = full_scan
    runner = CliRunner()
    main = __import__("cli").main
    out = tmp_path / "export.csv"
    assert runner.invoke(main, ["export", "--case", str(case), "--format", "csv", "--out",
                                str(out)]).exit_code == 0
    exported = out.read_text()
    seen = set()
    for device in synth_truth["devices"]:
        if not device["embedded"]:
            continue
        did = dev_id(case, device)
        files, matches, flagged, shown = _device_view(case, did)
        findings = {f["path"] for f in shown["findings"]}
        for p in device["embedded"]:
            rec, feat = files[p["path"]]
            assert rec.prov.scope == "embedded" and not rec.prov.carved
            assert (rec.prov.parent.path, rec.prov.offset, rec.prov.length) == \
                (p["container"], p["offset"], p["length"])
            assert rec.prov.parent.inode == int(p["inode"].split("-")[0])
            assert (feat.md5, rec.size) == (p["md5"], p["size"]) and feat.pdq
            if p["in"] == "thumbcache":         # the entry that holds it, Windows 10's format
                assert (rec.prov.cache_entry_hash, rec.prov.cache_entry_id) == \
                    (p["cache_entry_hash"], p["cache_entry_id"]) and p["cache_entry_id"]
            got = matches.get(rec.key, [])
            if p["kind"] == "control":
                assert got == [] and rec.key not in flagged and p["path"] not in findings
            else:
                assert {m.kind for m in got} == {p["kind"]}, p
                assert rec.key in flagged and p["path"] in findings
                assert p["path"] in exported
            seen.add((p["in"], p["kind"]))
    assert {("pdf", "exact"), ("thumbcache", "near"), ("exif", "exact"), ("pdf", "control"),
            ("thumbcache", "control"), ("exif", "control")} <= seen


def test_clean_devices_have_no_matches(full_scan, synth_truth):
    case, _ = full_scan
    with CaseStore(case, create=False) as store:
        for device in synth_truth["devices"]:
            if device["expect"]["exact_matches"] or device["expect"]["near_matches"]:
                continue
            did = dev_id(case, device)
            assert [m for m in store.matches(did) if m.role == "alert"] == []
            assert store.counts(did)["files"] > 0


def test_encrypted_volume_is_flagged_not_examined(full_scan, synth_truth):
    case, summary = full_scan
    encrypted = [d for d in synth_truth["devices"] if d["encrypted_volumes"]]
    assert encrypted
    with CaseStore(case, create=False) as store:
        for device in encrypted:
            did = dev_id(case, device)
            cov = store.coverage(did)
            for offset in device["encrypted_volumes"]:
                assert any(c.volume_offset == offset and "encrypt" in c.reason.lower() for c in cov)
            flags = [f for _, f in store.flags(did) if f.code == "NOT_EXAMINED"]
            assert flags and any("encrypt" in f.message.lower() for f in flags)
            assert store.device(did)["status"] == "partial"


def test_corrupt_image_is_recorded_and_the_others_complete(full_scan, synth_truth, corrupt_image):
    case, summary = full_scan
    by = {Path(d["evidence"][0]).name: d for d in summary["devices"]}
    bad = by[corrupt_image.name]
    assert bad["status"] == "failed" and bad["error"]
    assert any(corrupt_image.name in w for w in summary["warnings"])
    with CaseStore(case, create=False) as store:
        [cov] = store.coverage(bad["device"])
        assert cov.reason.startswith("evidence could not be opened")
        for device in synth_truth["devices"]:
            want = device["expect"]["coverage"]
            assert by[Path(device["evidence"]).name]["status"] == want, device["id"]


def test_flags_are_stored_and_logged_before_each_device_ends(full_scan):
    case, _ = full_scan
    logged = read_flags_file(case / "flags.jsonl")
    with CaseStore(case, create=False) as store:
        stored = [f for _, f in store.flags()]
        finished = {d["id"]: d["finished"] for d in store.devices()}
    assert sorted(map(repr, logged)) == sorted(map(repr, stored))
    codes = {f.code for f in stored}
    assert {"KNOWN_MATCH", "NEAR_MATCH", "NOT_EXAMINED"} <= codes
    for f in stored:
        assert f.raised_at <= finished[f.device_id]


def test_case_is_private_and_has_provenance(full_scan, synth_truth):
    case, summary = full_scan
    assert stat.S_IMODE(os.stat(case).st_mode) == 0o700
    for p in case.rglob("*"):
        if p.is_file():
            assert stat.S_IMODE(os.stat(p).st_mode) & 0o077 == 0, p
    with CaseStore(case, create=False) as store:
        [run] = store.runs()
        devices = store.devices()
    assert run["tool_version"] and run["operator"] and run["ended"] >= run["started"]
    assert len(run["hashsets"]) >= 4 and all(h.get("name") for h in run["hashsets"])
    assert all(h.get("version") not in (None, "") for h in run["hashsets"])
    assert run["options"]["mode"] == "full"
    from triage.features.hashing import hash_engine
    assert run["options"]["hash_engines"] == [hash_engine()]   # which code took the hashes
    # which code listed the file systems: the C lister for raw ext and FAT, pytsk3 for the rest
    from triage import _tskwalk
    from triage.filesystems import lister_name
    assert run["options"]["listers"] == sorted({lister_name(True), lister_name(False)})
    assert lister_name(True) == f"libtsk {_tskwalk.tsk_version()} (C API)"
    ewf = [d for d in devices if d["format"] == "ewf"]
    assert ewf and all(d["stored_hashes"].get("md5") for d in ewf)
    # --verify: the media hash read through the container equals the hash of the media made
    for device in synth_truth["devices"]:
        stored = next(d for d in devices if d["id"] == dev_id(case, device))
        assert stored["verified_hashes"]["md5"] == device["media_md5"], device["id"]
    with_context = [d for d in devices if d["context"]]
    assert {d["context"]["exhibit"] for d in with_context} >= {"SYN/7/01"}


def test_sigkill_then_resume_gives_the_same_matches(tmp_path, local_ray, full_scan, synth_fleet,
                                                    synth_truth):
    full_case, _ = full_scan
    devices = [d for d in synth_truth["devices"] if d["expect"]["exact_matches"]][:1]
    devices += [d for d in synth_truth["devices"] if d["expect"]["near_matches"]
                and not d["expect"]["exact_matches"]][:1]
    evidence = [str(synth_fleet / d["evidence"]) for d in devices]
    case = tmp_path / "case"
    args = scan_args(case, synth_fleet, synth_truth, "--mode", "full", "--workers", "1",
                     "--batch-files", "3")
    proc = subprocess.Popen([str(ROOT / ".venv/bin/triage"), *args, *evidence],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    db = case / "case.sqlite"
    deadline = time.time() + 120
    done = 0
    try:
        while time.time() < deadline and proc.poll() is None:
            if db.exists():
                try:
                    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
                    done = con.execute("SELECT COUNT(*) FROM batches").fetchone()[0]
                    con.close()
                except sqlite3.Error:
                    done = 0
                if done >= 3:
                    break
            time.sleep(0.05)
    finally:
        still_running = proc.poll() is None
        os.killpg(proc.pid, signal.SIGKILL)      # the driver and its Ray processes, at once
        proc.wait()
    assert still_running and done >= 3, "the scan ended before it could be killed"
    with CaseStore(case, create=False) as store:
        assert any(d["finished"] is None for d in store.devices())
    result = CliRunner().invoke(__import__("cli").main,
                                args + ["--resume"] + evidence, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    # the resumed run's summary counts the device as a whole, not the rescanned part twice
    _, whole_summary = full_scan
    whole_by_name = {Path(d["evidence"][0]).name: d for d in whole_summary["devices"]}
    for d in json.loads(result.stdout)["devices"]:
        want = whole_by_name[Path(d["evidence"][0]).name]
        assert (d["files"], d["pictures"], d["alert_matches"], d["near_matches"]) == \
            (want["files"], want["pictures"], want["alert_matches"], want["near_matches"])

    def key(m):
        return (m.key, m.kind, m.algorithm, m.set_name, m.value, m.distance)

    with CaseStore(case, create=False) as resumed, CaseStore(full_case, create=False) as whole:
        for ev in evidence:
            did = device_ids(case)[Path(ev).name]
            assert sorted(map(key, resumed.matches(did))) == sorted(map(key, whole.matches(did)))
            assert ([(r.key, f.md5) for r, f in resumed.files(did)]
                    == [(r.key, f.md5) for r, f in whole.files(did)])
            # finished as the uninterrupted scan did, with the same gaps and no "interrupted"
            want = next(d["expect"]["coverage"] for d in devices
                        if Path(d["evidence"]).name == Path(ev).name)
            assert resumed.device(did)["status"] == whole.device(did)["status"] == want
            assert sorted(c.key for c in resumed.coverage(did)) == \
                sorted(c.key for c in whole.coverage(did))


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


def test_every_planted_video_is_found_with_its_frames(full_scan, synth_truth, tmp_path):
    """Issue 15: each planted video is found with the right kind of match and frame times, no
    benign video matches, the video cut short is a partial-coverage record, every other video
    leaves no video gap, and `export --format vpdq` reads back as a vPDQ set."""
    from hashsets.importers import detect
    from triage.exports import export
    from triage.records import VIDEO_FRAMES

    case, _ = full_scan
    checked = 0
    for device in synth_truth["devices"]:
        did = dev_id(case, device)
        files, matches, flags, shown = _device_view(case, did)
        with CaseStore(case, create=False) as store:
            gaps = {c.where.path: c for c in store.coverage(did) if c.kind == VIDEO_FRAMES}
        shown_video = {f["path"]: f for f in shown["findings"] if "video" in f}
        for v in device["videos"]:
            rec, feat = files[v["path"]]
            got = matches.get(rec.key, [])
            assert feat.md5 == v["md5"] and feat.type.startswith("video/")
            if v["kind"] == "near":
                m = [m for m in got if m.algorithm == "pdq"]
                assert m and m[0].kind == "near", (v["path"], got)
                lo, hi = v["frames_between"]
                assert m[0].frames and all(lo <= t < hi for _, t in m[0].frames)
                assert "frames at 0:00:0" in flags[rec.key].message
                assert shown_video[v["path"]]["video"]["frames"][0]["seconds"] >= lo
            elif v["kind"] == "vpdq":
                [m] = [m for m in got if m.algorithm == "vpdq"]
                assert m.value == v["known_video"] and m.query_share >= 80.0 and m.frames
                assert v["known_video"] in flags[rec.key].message
                [sm] = shown_video[v["path"]]["matches"]
                assert sm["known_video"] == v["known_video"] and sm["query_share"] >= 80.0
            else:
                assert not got, (v["path"], got)         # benign, bait, truncated: no match
            if v["kind"] == "truncated":
                gap = gaps[v["path"]]
                assert "of 12.0 s examined" in gap.reason
                assert 0 < feat.examined_seconds <= v["examined_at_most"]
            else:
                assert v["path"] not in gaps, gaps.get(v["path"])
                assert feat.frames and feat.duration == pytest.approx(v["duration"], abs=0.3)
            checked += 1
    assert checked >= 8
    with CaseStore(case, create=False) as store:
        summary = export(store, "vpdq", tmp_path / "found.vpdq.txt")
    assert summary.startswith("2 videos")
    assert detect(tmp_path / "found.vpdq.txt") == "vpdq"
    text = (tmp_path / "found.vpdq.txt").read_text()
    assert text.count("# video: ") == 2 and "holiday_clip.mp4" in text and "vid_0412.avi" in text
