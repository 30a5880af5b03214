"""Flag rules and the sink that records each flag once."""
from __future__ import annotations

import io
import json
import os
import stat
import threading
import time
from dataclasses import replace

import pytest
from rich.console import Console

from casebuild import exact, near, picture, score
from triage.flags import (CHILD_ACCESS, KNOWN_MATCH, NEAR_MATCH, NOT_EXAMINED, SELF_PRODUCED,
                          SEVERITY, SUSPECTED_NEW, FlagSink, camera_indicators, follow_flags_file,
                          read_flags_file, rules_for_batch)
from triage import records
from triage.records import Coverage, Exif
from triage.store import CaseStore

NOW = 1_800_000_000.0
CAM = Exif(make="Synthcam", model="S1", datetime_original="2026:01:02 03:04:05")


def codes(flags):
    return sorted(f.code for f in flags)


def test_known_match_once_per_file_with_provenance():
    x = picture("d", 1, allocated=False)
    sha1 = replace(exact(x, "A"), algorithm="sha1", value=x[1].sha1)
    flags = rules_for_batch("d", None, [x], [exact(x, "A"), sha1, near(x, 0)], [], [], NOW)
    assert codes(flags) == [KNOWN_MATCH]       # the near match adds nothing to an exact one
    (f,) = flags
    assert (f.device_id, f.key, f.raised_at, f.severity) == ("d", x[0].key, NOW, SEVERITY[KNOWN_MATCH])
    p = f.provenance
    assert (p["path"], p["inode"], p["volume_offset"]) == (x[0].path, 101, x[0].prov.volume_offset)
    assert p["hashes"] == {"md5": x[1].md5, "sha1": x[1].sha1}
    assert {(m["set_name"], m["set_version"], m["algorithm"]) for m in p["matches"]} == {
        ("caid", "2026-11", "md5"), ("caid", "2026-11", "sha1")}
    assert "deleted" in f.message and "Category A" in f.message


def test_near_match_and_ignore_sets():
    x, y = picture("d", 1), picture("d", 2)
    ignored = replace(exact(y), role="ignore", set_name="nsrl")
    flags = rules_for_batch("d", None, [x, y], [near(x, 9), ignored], [], [], NOW)
    assert codes(flags) == [NEAR_MATCH]
    assert "distance 9" in flags[0].message and flags[0].provenance["matches"][0]["distance"] == 9


def test_suspected_new_needs_threshold_and_no_hash_match():
    hi, lo, matched = picture("d", 1), picture("d", 2), picture("d", 3)
    items = [hi, lo, matched]
    scores = [score(hi, 0.95, 0.9), score(lo, 0.95, 0.1), score(matched, 0.99, 0.99)]
    flags = rules_for_batch("d", None, items, [exact(matched)], scores, [], NOW)
    suspected = [f for f in flags if f.code == SUSPECTED_NEW]
    assert [f.key for f in suspected] == [hi[0].key]
    assert suspected[0].provenance["model_sha256"] == "e" * 64
    # a stricter threshold passed in turns it off; a looser one turns the other on
    strict = rules_for_batch("d", None, items, [], scores, [], NOW, thresholds={"explicit": 0.99})
    assert [f.key for f in strict if f.code == SUSPECTED_NEW] == [matched[0].key]
    loose = rules_for_batch("d", None, items, [], scores, [], NOW,
                            thresholds={"minor_likelihood": 0.05})
    assert len([f for f in loose if f.code == SUSPECTED_NEW]) == 3


def test_self_produced_needs_camera_original_indicators():
    dcim = picture("d", 1, "/DCIM/Camera/IMG_1.jpg", exif=Exif(make="Synthcam", model="S1"))
    dated = picture("d", 2, exif=CAM)
    bare = picture("d", 3, "/DCIM/Camera/IMG_3.jpg", exif=Exif(make="Synthcam"))
    plain = picture("d", 4, exif=Exif(make="Synthcam", model="S1"))
    unmatched = picture("d", 5, "/DCIM/Camera/IMG_5.jpg", exif=CAM)
    items = [dcim, dated, bare, plain, unmatched]
    flags = rules_for_batch("d", None, items, [exact(x) for x in items[:4]], [], [], NOW)
    selfp = sorted(f.key for f in flags if f.code == SELF_PRODUCED)
    assert selfp == sorted([dcim[0].key, dated[0].key])
    assert camera_indicators(*unmatched) and not camera_indicators(*plain)


@pytest.mark.parametrize("access,raised", [("lives_with", True), ("works_with", True),
                                           ("other", True), ("unknown", False), ("none", False)])
def test_child_access_on_any_finding(access, raised):
    x, y = picture("d", 1, "/DCIM/Camera/a.jpg", exif=CAM), picture("d", 2)
    cov = Coverage("d", records.ENCRYPTED, records.volume_where("d", 2), "encrypted (BitLocker)", 10)
    ctx = {"access_to_children": access}
    flags = rules_for_batch("d", ctx, [x, y], [exact(x), near(y)], [], [cov], NOW)
    child = [f for f in flags if f.code == CHILD_ACCESS]
    if not raised:
        assert not child
        return
    (escalation,) = child                       # one per device, naming what it covers
    assert escalation.severity == max(SEVERITY.values())
    covers = {c["key"]: c["code"] for c in escalation.provenance["covers"]}
    assert covers == {x[0].key: SELF_PRODUCED, y[0].key: NEAR_MATCH}   # not NOT_EXAMINED
    assert "escalates 2 findings" in escalation.message


def test_not_examined_per_coverage_record():
    """Whole parts that could not be examined raise NOT_EXAMINED at once; gaps in single
    files and free space are counted in the device's reasons instead."""
    vol = records.volume_where("d", 2, 1)
    covs = [Coverage("d", records.ENCRYPTED, vol, "encrypted (BitLocker)", 10),
            Coverage("d", records.SCAN_INCOMPLETE, vol, "batch 7: worker crashed twice", 0),
            Coverage("d", records.UNALLOCATED, vol, "unallocated space not carved", 5),
            Coverage("d", records.VIDEO_FRAMES, picture("d", 3)[0].prov, "video frames", 9)]
    flags = rules_for_batch("d", {"access_to_children": "lives_with"}, [], [], [], covs, NOW)
    assert codes(flags) == [NOT_EXAMINED, NOT_EXAMINED]
    assert {f.key for f in flags} == {covs[0].key, covs[1].key}
    enc = [f for f in flags if f.key == covs[0].key][0]
    assert enc.provenance["reason"] == "encrypted (BitLocker)"
    assert enc.provenance["kind"] == records.ENCRYPTED
    assert enc.provenance["where"]["volume_offset"] == 2 and enc.provenance["bytes_not_examined"] == 10


def test_sink_writes_each_flag_once_and_flushes(tmp_path, monkeypatch):
    store = CaseStore(tmp_path / "case", create=True)
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    out = io.StringIO()
    sink = FlagSink(tmp_path / "case", store, Console(file=out, width=200))
    x = picture("d", 1)
    flags = rules_for_batch("d", None, [x], [exact(x)], [], [], NOW)
    assert sink.raise_(flags[0]) is True
    path = tmp_path / "case" / "flags.jsonl"
    # on disk before close: another process tailing the file sees it at once
    lines = path.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["code"] == KNOWN_MATCH
    assert len(synced) == 1
    assert sink.raise_(replace(flags[0], raised_at=NOW + 5)) is False   # same code, device, key
    assert len(path.read_text().splitlines()) == 1 and len(synced) == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert KNOWN_MATCH in out.getvalue() and x[0].path in out.getvalue()
    assert [f.code for _i, f in store.flags("d")] == [KNOWN_MATCH]
    sink.close()
    # a second sink (a resumed scan) appends, never duplicates
    with FlagSink(tmp_path / "case", store) as again:
        assert again.raise_all(flags) == 0
    assert read_flags_file(path) == flags


def test_read_skips_a_torn_last_line(tmp_path):
    store = CaseStore(tmp_path / "case", create=True)
    x = picture("d", 1)
    with FlagSink(tmp_path / "case", store) as sink:
        sink.raise_all(rules_for_batch("d", None, [x], [exact(x)], [], [], NOW))
    with open(tmp_path / "case" / "flags.jsonl", "a") as fh:
        fh.write('{"code": "KNOWN_MA')
    assert len(read_flags_file(tmp_path / "case" / "flags.jsonl")) == 1


def test_follow_yields_flags_as_they_are_appended(tmp_path):
    store = CaseStore(tmp_path / "case", create=True)
    sink = FlagSink(tmp_path / "case", store)
    items = [picture("d", i) for i in range(3)]
    flags = rules_for_batch("d", None, items, [exact(x) for x in items], [], [], NOW)
    seen, done = [], threading.Event()

    def writer():
        for f in flags:
            time.sleep(0.05)
            sink.raise_(f)
        time.sleep(0.1)
        done.set()

    t = threading.Thread(target=writer)
    t.start()
    for f in follow_flags_file(tmp_path / "case" / "flags.jsonl", poll=0.02, stop=done.is_set):
        seen.append(f)
    t.join()
    assert sorted(f.key for f in seen) == sorted(f.key for f in flags)


def test_unassessed_labels_neither_pass_nor_fail():
    from triage.classify import suspected
    from triage.records import Score
    mk = lambda **v: Score(key="k", model="m", model_sha256="s", values=v)   # noqa: E731
    assert suspected(mk(explicit=0.9, faces=0, minor_likelihood=None))          # no face found
    assert not suspected(mk(explicit=0.9, faces=1, minor_likelihood=0.1))       # adult face
    assert suspected(mk(explicit=0.9, faces=1, minor_likelihood=0.7))
    assert not suspected(mk(explicit=0.5, minor_likelihood=None))
    assert not suspected(mk(explicit=float("nan")))                             # Ray's None
    assert not suspected(mk(other=0.99))                                        # nothing thresholded


def test_not_examined_file_reads_as_its_path():
    x = picture("d", 1, "/home/a/secret.zip")
    gap = Coverage("d", records.FOLDER_NOT_READ, x[0].prov, "folder not readable: bad block")
    flags = rules_for_batch("d", None, [], [], [], [gap], NOW)
    assert flags[0].key == gap.key
    assert flags[0].message == ("/home/a/secret.zip not examined (folder not readable): "
                                "folder not readable: bad block")
    assert records.Provenance.from_dict(flags[0].provenance["where"]) == x[0].prov


def test_child_access_escalation_grows_across_batches(tmp_path):
    """Batches raise flags one after another: the device's one CHILD_ACCESS covers them all."""
    from triage.flags import FlagSink
    from triage.store import CaseStore

    x, y = picture("d", 1), picture("d", 2)
    ctx = {"access_to_children": "works_with"}
    with CaseStore(tmp_path / "case") as store, FlagSink(tmp_path / "case", store) as sink:
        sink.raise_all(rules_for_batch("d", ctx, [x], [exact(x)], [], [], NOW))
        sink.raise_all(rules_for_batch("d", ctx, [y], [near(y)], [], [], NOW + 1))
        (child,) = [f for _i, f in store.flags("d") if f.code == CHILD_ACCESS]
    assert {c["key"]: c["code"] for c in child.provenance["covers"]} == {
        x[0].key: KNOWN_MATCH, y[0].key: NEAR_MATCH}
    assert child.message == ("suspect works with children: escalates 2 findings of this device "
                             "(KNOWN_MATCH 1, NEAR_MATCH 1)")
