"""Device verdicts and the priority order, from case stores built record by record."""
from __future__ import annotations

import time

import pytest

from casebuild import (FLEET_ORDER, VOL, add_device, build_fleet, context, exact, near, picture,
                       score)
from triage import records
from triage.records import Coverage, Exif, VolumeRef
from triage.rank import (TIER_CLEAN, TIER_EXACT, TIER_NEAR, TIER_SUSPECTED, TIER_UNEXAMINED,
                         coverage_state, verdict_dict, verdicts)
from triage.store import CaseStore

NOW = time.time()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    store = build_fleet(tmp_path_factory.mktemp("case"), now=NOW)
    yield store, {v.device_id: v for v in verdicts(store, now=NOW)}, verdicts(store, now=NOW)
    store.close()


def test_fleet_order_exact_near_unexamined_clean(fleet):
    _store, _by_id, ordered = fleet
    assert [v.device_id for v in ordered] == FLEET_ORDER
    assert [v.rank for v in ordered] == list(range(1, len(FLEET_ORDER) + 1))
    tiers = [v.tier for v in ordered]
    assert tiers == sorted(tiers, reverse=True)


def test_counts_flags_and_coverage(fleet):
    _store, by_id, _ = fleet
    v = by_id["exact_none.dd"]
    assert (v.alert_matches, v.near_matches, v.suspected_new) == (3, 0, 0)
    assert v.coverage == "complete" and v.tier == TIER_EXACT
    assert "KNOWN_MATCH" in v.flags and "SELF_PRODUCED" in v.flags
    assert "CHILD_ACCESS" not in v.flags
    assert "CHILD_ACCESS" in by_id["exact_lives.dd"].flags
    assert by_id["near_only.dd"].tier == TIER_NEAR and by_id["near_only.dd"].near_matches == 1
    assert by_id["suspected_only.dd"].suspected_new == 1
    assert by_id["suspected_only.dd"].tier == TIER_SUSPECTED
    enc = by_id["encrypted.dd"]
    assert (enc.tier, enc.coverage) == (TIER_UNEXAMINED, "partial")
    assert "NOT_EXAMINED" in enc.flags
    assert by_id["clean_none.dd"].tier == TIER_CLEAN and by_id["clean_none.dd"].flags == ()


def test_reasons_read_like_the_examples(fleet):
    _store, by_id, _ = fleet
    reasons = by_id["exact_lives.dd"].reasons
    assert "3 exact caid matches (Category A: 1, B: 2), 1 deleted, 1 in archives" in reasons
    assert "suspect lives with children" in reasons
    assert any("camera-original" in r for r in reasons)
    assert ("volume 2 (BitLocker, 40 MiB at 4,194,304) not examined: encrypted (BitLocker)"
            in by_id["encrypted.dd"].reasons)
    assert any("ask the officer" in r for r in by_id["clean_unknown.dd"].reasons)
    assert any("not evidence" in r for r in by_id["suspected_only.dd"].reasons)
    assert by_id["clean_none.dd"].reasons[0].startswith("no alert matches")


def test_points_explain_the_score(fleet):
    _store, by_id, _ = fleet
    for v in by_id.values():
        assert v.score == sum(v.points.values())
    lives, none = by_id["exact_lives.dd"], by_id["exact_none.dd"]
    assert lives.points["exact_matches"] == none.points["exact_matches"] == 100 * (3 + 2 + 2)
    assert lives.points["access_to_children"] == 150 and "access_to_children" not in none.points


def test_queue_json_has_the_documented_fields(fleet):
    _store, by_id, _ = fleet
    d = verdict_dict(by_id["exact_lives.dd"])
    for field in ("rank", "device", "exhibit", "evidence", "score", "alert_matches",
                  "near_matches", "suspected_new", "flags", "coverage", "reasons", "context"):
        assert field in d
    assert d["exhibit"] == "EX/exact" and d["evidence"] == ["/evidence/exact_lives.dd"]


def _one_device_store(tmp_path, name, **kw):
    store = CaseStore(tmp_path / name, create=True)
    add_device(store, None, name, **kw)
    return store


def test_unexamined_never_below_clean_whatever_the_points(tmp_path):
    # the clean device has every context point available; the unexamined one has none
    store = CaseStore(tmp_path / "c", create=True)
    add_device(store, None, "clean.dd", items=[picture("clean.dd", 1)],
               context=context("lives_with", "C/1", deadline="2000-01-01"))
    add_device(store, None, "failed.dd", volumes=[], status="failed",
               coverage=[Coverage("failed.dd", records.EVIDENCE_NOT_OPENED,
                                  records.device_where("failed.dd"), "read error: truncated image")],
               context=context("none", "F/1"))
    add_device(store, None, "unfinished.dd", items=[picture("unfinished.dd", 1)],
               status="interrupted", context=context("none", "U/1"))
    ordered = verdicts(store, now=NOW)
    assert [v.device_id for v in ordered][-1] == "clean.dd"
    by_id = {v.device_id: v for v in ordered}
    assert by_id["clean.dd"].score > by_id["failed.dd"].score
    assert by_id["failed.dd"].coverage == "failed"
    assert by_id["unfinished.dd"].coverage == "partial"
    assert any("not finished" in r for r in by_id["unfinished.dd"].reasons)


def test_exact_beats_many_near_and_lives_with(tmp_path):
    store = CaseStore(tmp_path / "c", create=True)
    e = picture("e.dd", 1)
    add_device(store, None, "e.dd", items=[e], matches=[exact(e, "C")],
               context=context("none", "E"))
    nears = [picture("n.dd", i) for i in range(40)]
    add_device(store, None, "n.dd", items=nears, matches=[near(x) for x in nears],
               context=context("lives_with", "N", deadline="2000-01-01"))
    ordered = verdicts(store, now=NOW)
    assert [v.device_id for v in ordered] == ["e.dd", "n.dd"]
    assert ordered[1].score > ordered[0].score   # the tier, not the points, decided


def test_one_near_match_outranks_many_model_suspicions(tmp_path):
    store = CaseStore(tmp_path / "c", create=True)
    n = picture("n.dd", 1)
    add_device(store, None, "n.dd", items=[n], matches=[near(n)], context=context("none", "N"))
    bait = [picture("bait.dd", i) for i in range(20)]
    add_device(store, None, "bait.dd", items=bait, scores=[score(x, 0.9, 0.9) for x in bait],
               context=context("lives_with", "B"))
    ordered = verdicts(store, now=NOW)
    assert [v.device_id for v in ordered] == ["n.dd", "bait.dd"]
    assert ordered[1].suspected_new == 20


def test_category_severity_and_count_weigh(tmp_path):
    store = CaseStore(tmp_path / "c", create=True)
    a = picture("a.dd", 1)
    add_device(store, None, "a.dd", items=[a], matches=[exact(a, "A")], context=context("none", "A"))
    cs = [picture("c.dd", i) for i in range(2)]
    add_device(store, None, "c.dd", items=cs, matches=[exact(x, "C") for x in cs],
               context=context("none", "C"))
    cs4 = [picture("c4.dd", i) for i in range(4)]
    add_device(store, None, "c4.dd", items=cs4, matches=[exact(x, "C") for x in cs4],
               context=context("none", "C4"))
    assert [v.device_id for v in verdicts(store, now=NOW)] == ["c4.dd", "a.dd", "c.dd"]


def test_access_order_and_deadline(tmp_path):
    store = CaseStore(tmp_path / "c", create=True)
    soon = time.strftime("%Y-%m-%d", time.gmtime(NOW + 86400))
    for dev, access, deadline in (("none.dd", "none", None), ("other.dd", "other", None),
                                  ("works.dd", "works_with", None), ("unk.dd", "unknown", None),
                                  ("none_soon.dd", "none", soon)):
        x = picture(dev, 1)
        add_device(store, None, dev, items=[x], matches=[exact(x, "B")],
                   context=context(access, dev, deadline))
    ordered = [v.device_id for v in verdicts(store, now=NOW)]
    assert ordered == ["works.dd", "other.dd", "none_soon.dd", "unk.dd", "none.dd"]
    soon_v = [v for v in verdicts(store, now=NOW) if v.device_id == "none_soon.dd"][0]
    assert any(r.startswith(f"custody deadline {soon}") for r in soon_v.reasons)


def test_same_camera_and_device_camera(tmp_path):
    store = CaseStore(tmp_path / "c", create=True)
    cam = Exif(make="Synthcam", model="S1", datetime_original="2026:01:02 03:04:05")
    matched = [picture("cam.dd", i, f"/DCIM/100SYN/IMG_{i}.jpg", exif=cam) for i in range(2)]
    own = [picture("cam.dd", 10 + i, f"/DCIM/100SYN/IMG_1{i}.jpg", exif=cam) for i in range(12)]
    add_device(store, None, "cam.dd", items=matched + own, matches=[exact(x, "C") for x in matched],
               context=context("none", "CAM"))
    plain = [picture("plain.dd", i) for i in range(2)]
    add_device(store, None, "plain.dd", items=plain, matches=[exact(x, "C") for x in plain],
               context=context("none", "PLAIN"))
    by_id = {v.device_id: v for v in verdicts(store, now=NOW)}
    cam_v = by_id["cam.dd"]
    assert {"self_produced", "same_camera", "device_camera"} <= set(cam_v.points)
    assert any("Synthcam S1" in r and "2 matched" in r for r in cam_v.reasons)
    assert any("12 other pictures" in r for r in cam_v.reasons)
    assert not {"self_produced", "same_camera", "device_camera"} & set(by_id["plain.dd"].points)
    assert cam_v.rank == 1


def test_ignore_set_matches_do_not_count(tmp_path):
    store = CaseStore(tmp_path / "c", create=True)
    x = picture("nsrl.dd", 1)
    from dataclasses import replace
    add_device(store, None, "nsrl.dd", items=[x],
               matches=[replace(exact(x), role="ignore", set_name="nsrl", category="")],
               context=context("none", "N"))
    (v,) = verdicts(store, now=NOW)
    assert v.alert_matches == 0 and v.tier == TIER_CLEAN


def test_coverage_state_rules():
    dev = {"id": "d", "status": "complete"}
    ok = [VolumeRef("d", 0, VOL, 10, "NTFS", "ntfs")]
    locked = [VolumeRef("d", 0, VOL, 10, "data", None, encryption="BitLocker")]
    gap = [Coverage("d", records.ENCRYPTED, records.volume_where("d", VOL), "encrypted (BitLocker)", 10)]
    assert coverage_state(dev, ok, []) == "complete"
    assert coverage_state(dev, ok + locked, gap) == "partial"
    assert coverage_state(dev, locked, gap) == "failed"
    for live in ("queued", "opening", "scanning"):      # while a scan runs: said, not partial
        assert coverage_state({"id": "d", "status": live}, ok, []) == live
    assert coverage_state({"id": "d", "status": "interrupted"}, ok, []) == "partial"
    assert coverage_state({"id": "d", "status": "failed"}, ok, []) == "failed"


def test_partial_scan_status_is_finished_not_running(tmp_path):
    store = CaseStore(tmp_path / "c", create=True)
    add_device(store, None, "p.dd", items=[picture("p.dd", 1)], status="partial",
               coverage=[Coverage("p.dd", records.SCAN_INCOMPLETE, records.volume_where("p.dd", VOL),
                                  "batch 3: worker crashed twice", 4096)],
               context=context("none", "P"))
    (v,) = verdicts(store, now=NOW)
    assert v.coverage == "partial" and v.tier == TIER_UNEXAMINED
    assert (f"scan incomplete: volume 0 (ntfs, 60 MiB at {VOL:,}): 4 KiB (batch 3: worker "
            "crashed twice)") in v.reasons
    assert not any("not finished" in r for r in v.reasons)


def test_coverage_reasons_name_volumes_and_files():
    from triage.rank import _coverage_reasons
    vols = [VolumeRef("d", 1, VOL, 10 * 2**20, "Linux", "ext4"),
            VolumeRef("d", 2, 8 * VOL, 10, "data", None),
            VolumeRef("d", 3, 16 * VOL, 10, "data", None, encryption="BitLocker")]
    def file(inode, path):
        return records.Provenance("d", VOL, inode, path, volume_index=1)

    covs = [Coverage("d", records.SCAN_INCOMPLETE, vols[0].where, "not examined (triage mode)",
                     5 * 2**20),
            Coverage("d", records.UNREADABLE_VOLUME, vols[1].where, "unknown file system", 10),
            Coverage("d", records.ENCRYPTED, vols[2].where, "encrypted (BitLocker)", 10),
            Coverage("d", records.ARCHIVE, file(12, "/home/a/secret.zip"), "encrypted archive", 100),
            Coverage("d", records.PICTURE, file(13, "/home/a/x.jpg"), "bomb refused", 2048),
            Coverage("d", records.PICTURE, file(14, "/home/a/y.jpg"), "bomb refused", 1024),
            Coverage("d", records.UNALLOCATED, vols[0].where, "unallocated space not carved", 3 * 2**20),
            Coverage("d", records.FILE_NOT_READ, file(15, "/home/a/v.mp4"), "read error", 512)]
    lines = _coverage_reasons(vols, covs, {"status": "partial"})
    # one name for a volume everywhere: index, kind, size and offset
    assert lines == ["volume 2 (not readable, 10 bytes at 8,388,608) not examined: unknown file system",
                     "volume 3 (BitLocker, 10 bytes at 16,777,216) not examined: encrypted (BitLocker)",
                     "file not fully read: /home/a/v.mp4: 512 bytes (read error)",
                     "unallocated space not carved: 3 MiB in 1 volume",
                     "archive content not examined: /home/a/secret.zip: 100 bytes (encrypted archive)",
                     "picture not decoded: 2 pictures: 3 KiB",
                     "scan incomplete: volume 1 (ext4, 10 MiB at 1,048,576): 5 MiB (not examined "
                     "(triage mode))"]


def test_raw_categories_read_with_the_sets_scheme(tmp_path):
    store = CaseStore(tmp_path / "c", create=True)
    xs = [picture("v.dd", i) for i in range(3)]
    add_device(store, None, "v.dd", items=xs,
               matches=[exact(xs[0], "1"), exact(xs[1], "2"), exact(xs[2], "2")],
               context=context("none", "V"))
    (v,) = verdicts(store, now=NOW)
    assert v.reasons[0] == "3 exact caid matches (Category 1: 1, 2: 2)"   # no run: raw
    run = store.begin_run(tool_version="t", operator="o", options={}, model=None,
                          hashsets=[{"name": "caid", "version": "2026-11", "role": "alert",
                                     "scheme": "uk-caid"}])
    store.end_run(run, "complete")
    (v,) = verdicts(store, now=NOW)
    assert v.reasons[0] == "3 exact caid matches (Category A: 1, B: 2)"
