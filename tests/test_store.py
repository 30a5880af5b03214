"""The case store: round trips, idempotent writes, resume state, permissions, schema checks."""
from __future__ import annotations

import json

import os
import sqlite3
import stat

import pytest

from triage.errors import TriageError
from triage import records
from triage.records import (Coverage, EvidenceRef, Exif, Features, FileRecord, Flag, Match,
                            Provenance, Score, VolumeRef)
from triage.store import CaseStore


def _item(device: str, inode: int, path: str, *, md5: str = "", member: str = "",
          picture: bool = False, allocated: bool = True) -> tuple[FileRecord, Features]:
    prov = Provenance(device_id=device, volume_offset=1048576, inode=inode, path=path,
                      members=(member,) if member else ())
    rec = FileRecord(prov=prov, name=path.rsplit("/", 1)[-1], size=100 + inode,
                     allocated=allocated, fs_type="ext4", mtime=1.5e9 + inode, crtime=None,
                     type="image/jpeg" if picture else "text/plain", ext_mismatch=path.endswith(".dat"))
    feat = Features(key=rec.key, size=rec.size, md5=md5 or f"{inode:032x}", sha1=f"{inode:040x}",
                    type=rec.type, ext_mismatch=rec.ext_mismatch, is_picture=picture, width=640 if picture else 0,
                    height=480 if picture else 0, pdq="ab" * 32 if picture else "",
                    pdq_quality=90 if picture else 0, phash="cd" * 8 if picture else "",
                    exif=Exif(make="Canon", model="EOS", gps=(51.5, -0.12)) if picture else None,
                    thumbnail=b"\xff\xd8thumb" if picture else b"")
    return rec, feat


REF = EvidenceRef(device_id="dev1.E01", paths=("/ev/dev1.E01", "/ev/dev1.E02"), format="ewf",
                  media_size=4096, stored_hashes={"md5": "0" * 32})


@pytest.fixture()
def store(tmp_path):
    s = CaseStore(tmp_path / "case")
    yield s
    s.close()


def test_case_dir_and_files_are_private(tmp_path):
    case = tmp_path / "case"
    with CaseStore(case) as s:
        s.upsert_device(REF)
    assert stat.S_IMODE(os.stat(case).st_mode) == 0o700
    for p in case.iterdir():
        assert stat.S_IMODE(os.stat(p).st_mode) & 0o077 == 0, p


def test_open_existing_only(tmp_path):
    with pytest.raises(TriageError, match="not a case directory"):
        CaseStore(tmp_path / "nothing", create=False)
    CaseStore(tmp_path / "case").close()
    CaseStore(tmp_path / "case", create=False).close()


def test_refuses_newer_schema_and_foreign_file(tmp_path):
    case = tmp_path / "case"
    CaseStore(case).close()
    db = sqlite3.connect(case / "case.sqlite")
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(TriageError, match="schema version 99"):
        CaseStore(case)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "case.sqlite").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(TriageError, match="not a triage case store"):
        CaseStore(bad)


def test_hash_indexes_come_when_a_run_ends(store):
    def indexes():
        return {r["name"] for r in store._query(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'files'")}
    run = store.begin_run(tool_version="t", hashsets=[], model=None, operator="o", options={})
    assert not {"files_md5", "files_sha1"} & indexes()      # not kept up row by row
    store.end_run(run, "complete")
    assert {"files_md5", "files_sha1"} <= indexes()
    plan = store._query("EXPLAIN QUERY PLAN SELECT key FROM files WHERE md5 = 'x'")
    assert any("files_md5" in r["detail"] for r in plan)


def test_hash_indexes_built_in_the_background_come_before_any_write(store):
    """start_hash_indexes sorts on a connection of its own while this one reads; the next
    write waits for it, and end_run finds them built."""
    from triage.store import plain_file_row
    run = store.begin_run(tool_version="t", hashsets=[], model=None, operator="o", options={})
    rows = [plain_file_row(f'["d",0,{i},"/f{i}"]', "b", "d", 0, 0, i, f"/f{i}", f"f{i}", i,
                           True, "ext4", False, False, None, None, None, None, "", False,
                           f"{i:032x}", f"{i:040x}") for i in range(60_000)]
    store.add_batch("d", "b", [], [], [], [], rows=rows)
    indexes = "SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'files_%'"
    assert not store._query(indexes)
    store.start_hash_indexes()
    store.start_hash_indexes()                      # once
    assert store.counts("d")["files"] == 60_000     # read while they are sorted
    store.add_batch("d", "b2", [], [], [], [], rows=[])
    assert {r["name"] for r in store._query(indexes)} >= {"files_md5", "files_sha1"}
    store.end_run(run, "complete")
    plan = store._query(f"EXPLAIN QUERY PLAN SELECT key FROM files WHERE sha1 = '{7:040x}'")
    assert any("files_sha1" in r["detail"] for r in plan)
    assert store._query(f"SELECT key FROM files WHERE md5 = '{7:032x}'") == \
        [{"key": '["d",0,7,"/f7"]'}]


def test_wal_mode(store):
    assert store._query("PRAGMA journal_mode")[0]["journal_mode"] == "wal"
    # committed batches are durable; the log is copied back in 40 MB steps, not 4 MB ones
    assert store._query("PRAGMA synchronous")[0]["synchronous"] == 1          # NORMAL
    assert store._query("PRAGMA wal_autocheckpoint")[0]["wal_autocheckpoint"] == 10_000


def test_device_round_trip(store):
    store.upsert_device(REF, context={"exhibit": "AB/1"})
    store.upsert_device(REF)   # an update without context keeps the context
    store.set_verified_hashes("dev1.E01", {"md5": "0" * 32})
    store.device_started("dev1.E01", 10.0)
    store.device_started("dev1.E01", 20.0)   # a resume keeps the first start
    store.device_finished("dev1.E01", 30.0, "complete")
    [d] = store.devices()
    assert d["id"] == "dev1.E01"
    assert d["paths"] == ["/ev/dev1.E01", "/ev/dev1.E02"]
    assert d["format"] == "ewf" and d["media_size"] == 4096
    assert d["stored_hashes"] == {"md5": "0" * 32}
    assert d["verified_hashes"] == {"md5": "0" * 32}
    assert d["context"] == {"exhibit": "AB/1"}
    assert (d["started"], d["finished"], d["status"]) == (10.0, 30.0, "complete")
    store.set_context("dev1.E01", {"exhibit": "AB/2"})
    assert store.device("dev1.E01")["context"] == {"exhibit": "AB/2"}
    with pytest.raises(TriageError):
        store.set_context("nope", {})


def test_volumes_and_coverage(store):
    vols = [VolumeRef("d", 0, 1048576, 10**6, "Linux", "ext4", "root", 4096),
            VolumeRef("d", 1, 2**21, 10**6, "Basic data", None, encryption="BitLocker")]
    store.add_volumes(vols)
    store.add_volumes(vols)
    assert store.volumes("d") == vols
    cov = [Coverage("d", records.ENCRYPTED, vols[1].where, "encrypted (BitLocker)", 10**6),
           Coverage("d", records.FILE_NOT_READ,
                    Provenance("d", 1048576, 12, "/a|b!/c.jpg", members=("x.zip", "y/z.jpg")),
                    "file not fully read: read error", 900, bytes_expected=1000, bytes_read=100)]
    store.add_coverage(cov)
    store.add_coverage(cov)
    assert sorted(store.coverage("d"), key=lambda c: c.key) == sorted(cov, key=lambda c: c.key)
    assert store.coverage("other") == []
    store.remove_coverage(cov[0])
    assert store.coverage() == cov[1:]
    store.remove_coverage_kind("d", records.FILE_NOT_READ)
    assert store.coverage() == []


def test_a_batch_scanned_again_drops_the_gaps_of_its_parts_only(store):
    """A crashed batch is split ("<id>.a", "<id>.a.b", ...); once a later run stores the batch
    whole, the gaps its parts recorded go, and no other batch's (ids sharing a prefix)."""
    def gap(batch, inode):
        return Coverage("d", records.SCAN_INCOMPLETE, Provenance("d", 0, inode, f"/f{inode}"),
                        f"1 file of batch {batch} not examined", 10, batch_id=batch)
    store.add_coverage([gap("v0-t3-00001.a.b", 1), gap("v0-t3-00001", 2),
                        gap("v0-t3-000011", 3), gap("v0-t3-00002.a", 4)])
    store.remove_batch_coverage("d", "v0-t3-00001")
    assert sorted(c.batch_id for c in store.coverage("d")) == ["v0-t3-000011", "v0-t3-00002.a"]


def test_batch_round_trip_and_idempotence(store):
    items = [_item("d", 12, "/home/a/x.jpg", picture=True),
             _item("d", 13, "/home/a/y.dat", allocated=False),
             _item("d", 14, "/home/a/z.zip", member="inner/p.jpg", picture=True)]
    matches = [Match(items[0][0].key, "exact", "md5", items[0][1].md5, "caid", "2024-01",
                     "alert", "A", 3),
               Match(items[2][0].key, "near", "pdq", "ab" * 32, "caid", "2024-01", "alert",
                     "B", 2, distance=12)]
    scores = [Score(items[0][0].key, "toy", "f" * 64, {"explicit": 0.5})]
    cov = [Coverage("d", records.ARCHIVE, Provenance("d", 1048576, 99, "/bomb.zip"),
                    "archive bomb refused")]
    for _ in range(2):
        store.add_batch("d", "v1048576-b0000", items, matches, scores, cov)
    got = list(store.files("d"))
    assert got == sorted(items, key=lambda it: it[0].key)
    assert store.matches("d") == sorted(matches, key=lambda m: (m.key, m.kind))
    assert store.scores() == scores
    assert store.coverage("d") == cov
    assert store.done_batches("d") == {"v1048576-b0000"}
    assert store.done_batches("other") == set()
    counts = store.counts("d")
    own = [rec for rec, _f in items if not rec.prov.member]      # archive members are not files
    assert len(own) == 2
    assert counts == {"files": 2, "bytes": sum(r.size for r in own), "pictures": 2,
                      "scored": 1, "model_skipped": 0,
                      "alert_matches": 1, "near_matches": 1, "flags": 0}
    # a batch still waiting for its model scores does not count: a resume scans it again
    waiting = _item("d", 15, "/home/a/icon.png", picture=True)
    store.add_batch("d", "v1048576-b0001", [waiting], [], [], [], done=False,
                    model_skips=[(waiting[0].key, "too small (40x30 px)")])
    assert store.counts("d") == counts
    assert store.model_skips("d") == {"too small": 1}
    assert store.file(items[1][0].key) == items[1]
    assert [k for k, _ in [(r.key, f) for r, f in store.files(keys=[items[2][0].key, "x"])]] \
        == [items[2][0].key]
    store.forget_batches("d")
    assert store.done_batches("d") == set()


def test_files_streams_past_one_page(store):
    items = [_item("d", i, f"/f{i:05d}") for i in range(2300)]
    store.add_batch("d", "b0", items, [], [], [])
    store.add_batch("e", "b0", [_item("e", 1, "/other")], [], [], [])
    keys = [r.key for r, _ in store.files("d")]
    assert keys == sorted(r.key for r, _ in items)
    assert len(list(store.files())) == 2301
    assert len(list(store.files(keys=keys[:1200]))) == 1200


def test_a_device_is_its_range_of_keys_whatever_its_id(store):
    """Devices whose ids are prefixes of each other, or hold a quote, a backslash, a comma or
    characters beyond ASCII: each reads, counts and resets exactly its own files, through the
    key index (no second index of device and key, no scan of the whole table)."""
    ids = ["d", "d0", "d,", "d-", 'd"q', "d\\b", "d\u00e9", "d\U0001f600", "", "d\x00"]
    for n, dev in enumerate(ids):
        items = [_item(dev, i, f"/f{n}-{i}") for i in range(3 + n)]
        store.add_batch(dev, "b0", items, [], [], [])
    for n, dev in enumerate(ids):
        low, high = records.device_keys(dev)
        got = [r for r, _ in store.files(dev)]
        assert [r.prov.device_id for r in got] == [dev] * (3 + n)
        assert all(low < r.key < high for r in got)
        assert store.counts(dev)["files"] == 3 + n
    assert len(list(store.files())) == sum(3 + n for n in range(len(ids)))
    store.reset_device("d")
    assert list(store.files("d")) == []
    assert [len(list(store.files(dev))) for dev in ids[1:]] == [3 + n for n in range(1, len(ids))]
    indexes = {r["name"] for r in store._query(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'files'")}
    assert "files_device_key" not in indexes
    low, high = records.device_keys("d0")
    for sql, params in (("SELECT * FROM files WHERE device_id = ? AND key < ? AND key > ? "
                         "ORDER BY key LIMIT 1000", ("d0", high, low)),
                        ("DELETE FROM files WHERE key >= ? AND key < ?", (low, high))):
        plan = " ".join(r["detail"] for r in store._query("EXPLAIN QUERY PLAN " + sql, params))
        assert "USING INDEX sqlite_autoindex_files_1" in plan, plan


def test_a_record_of_another_device_is_refused(store):
    rec, feat = _item("d", 12, "/a")
    with pytest.raises(ValueError, match="stored under"):
        store.add_batch("e", "b0", [(rec, feat)], [], [], [])
    assert list(store.files()) == []


def test_an_older_cases_device_key_index_is_dropped(tmp_path):
    s = CaseStore(tmp_path / "case")
    s.add_batch("d", "b0", [_item("d", 1, "/a")], [], [], [])
    s._db.execute("CREATE INDEX files_device_key ON files (device_id, key)")
    s.close()
    again = CaseStore(tmp_path / "case")
    try:
        assert not again._query("SELECT name FROM sqlite_master WHERE name = 'files_device_key'")
        assert [r.path for r, _ in again.files("d")] == ["/a"]
    finally:
        again.close()


def test_rows_made_where_the_batch_ran_store_the_same_as_records(tmp_path):
    from triage.store import file_rows
    items = [_item("d", 1, "/a.jpg", picture=True), _item("d", 2, "/b.txt"),
             _item("d", 3, "/c.zip", member="x.jpg", picture=True)]
    match = Match(key=items[0][0].key, kind="exact", algorithm="md5", value=items[0][1].md5,
                  set_name="alert", set_version="1", role="alert", category="1", severity=90)
    dumps = []
    for name, kwargs in (("records", {}), ("rows", {"rows": file_rows("d", "b0", items)})):
        with CaseStore(tmp_path / name) as s:
            # with rows, the records passed are only those a match refers to
            s.add_batch("d", "b0", items if not kwargs else items[:1], [match], [], [], **kwargs)
            dumps.append(([(r, f) for r, f in s.files("d")], s.matches("d"), s.done_batches("d"),
                          s.counts("d")))
    assert dumps[0] == dumps[1]
    assert len(dumps[0][0]) == 3 and len(dumps[0][1]) == 1 and dumps[0][2] == {"b0"}


def test_rows_go_several_to_a_statement_as_they_would_one_by_one(tmp_path, monkeypatch):
    """add_batch inserts ROWS_PER_INSERT rows to a statement: runs of either shape of every
    length around that, and keys met again in the same statement, in the next, and in another
    batch, store what inserting each row alone stores (the last row of a key wins, in batch
    order)."""
    from triage import store as store_mod
    from triage.store import file_rows, plain_file_row
    k = store_mod.ROWS_PER_INSERT
    rows = []
    for i in range(3 * k + 5):
        inode = i % 45 + 1
        if i % 7 == 0:         # a whole row
            rows += file_rows("d", "b0", [_item("d", inode, f"/f{inode}", md5=f"{i:032x}",
                                                picture=True)])
        else:                  # a plain file's
            rows.append(plain_file_row(records.file_key("d", 1048576, inode, f"/f{inode}"),
                                       "b0", "d", 1048576, 0, inode, f"/f{inode}", f"f{inode}",
                                       i, True, "ext4", False, False, 1.5e9, None, None, None,
                                       "", False, f"{i:032x}", f"{i:040x}"))
    assert len({len(r) for r in rows}) == 2          # both shapes, interleaved
    batches = [("b0", rows), ("b1", rows[:k + 1]), ("b2", rows[5:6])]
    dumps = []
    for per in (k, 1):
        monkeypatch.setattr(store_mod, "ROWS_PER_INSERT", per)
        with CaseStore(tmp_path / f"per{per}") as s:
            for batch, some in batches:
                s.add_batch("d", batch, [], [], [], [], rows=some)
            dumps.append((s._query("SELECT * FROM files ORDER BY rowid"), s.counts("d")))
    assert dumps[0] == dumps[1]
    assert len(dumps[0][0]) == 45 and dumps[0][1]["files"] == 45


def test_plain_rows_leave_out_only_columns_at_the_schemas_defaults(tmp_path):
    """A plain file's row leaves out its default columns (fewer values to bind); stored, it
    reads back exactly as its whole row does, among rows of the other shape, in batch order."""
    from triage.store import _FILE_COLS, _PLAIN_COLS, _PLAIN_RUNS, _file_row, file_rows
    from dataclasses import replace

    def walked(rec, feat):          # a walk gives the provenance its file system's type
        rec = replace(rec, prov=replace(rec.prov, fs_type=rec.fs_type))
        return rec, replace(feat, key=rec.key)
    items = [walked(*_item("d", 1, "/a.txt")), walked(*_item("d", 2, "/b.txt")),
             walked(*_item("d", 3, "/c.jpg", picture=True)),
             walked(*_item("d", 4, "/d.zip", member="x.txt")), walked(*_item("d", 5, "/e.dat"))]
    rows = file_rows("d", "b0", items)
    assert [len(r) for r in rows] == [len(_PLAIN_COLS)] * 2 + [len(_FILE_COLS)] * 2 + [len(_PLAIN_COLS)]
    whole = [_file_row("d", "b0", r, f) for r, f in items]
    dumps = []
    for name, stored in (("plain", rows), ("whole", whole)):
        with CaseStore(tmp_path / name) as s:
            s.add_batch("d", "b0", [], [], [], [], rows=stored)
        db = sqlite3.connect(tmp_path / name / "case.sqlite")
        dumps.append(db.execute(f"SELECT {', '.join(_FILE_COLS)} FROM files ORDER BY rowid").fetchall())
        defaults = {r[1]: r[4] for r in db.execute("PRAGMA table_info(files)")}
        db.close()
    assert dumps[0] == dumps[1] == [tuple(r) for r in whole]
    for first, values in _PLAIN_RUNS:
        for col, value in zip(_FILE_COLS[first:], values):
            schema = defaults[col]
            assert (None if schema is None else sqlite3.connect(":memory:").execute(
                f"SELECT {schema}").fetchone()[0]) == value, col


def test_the_straight_plain_row_is_the_general_one_field_by_field():
    """file_rows builds a plain file's row straight (_plain_row) and any other through
    _file_row: for a plain file and for each of its variants with one field of its record,
    provenance or features changed from its default, both ways give the same row, and the
    plain file takes the straight way."""
    import dataclasses

    from triage.store import _PLAIN_COLS, _file_row, _plain, _plain_row, file_rows

    def changed(obj, f):
        d = getattr(obj, f.name)
        special = {"parent": Provenance(device_id="d", path="/p.img"), "exif": Exif(make="M"),
                   "volume_offset": None, "inode": None, "frames": ()}
        if f.name in special and special[f.name] != d:
            return special[f.name]
        for kind, value in ((bool, not d), (int, 7), (float, 1.5), (str, "x"), (bytes, b"x"),
                            (tuple, ("x",))):
            if type(d) is kind:
                return value
        return 2.5                               # None: an optional number (times, index)

    prov = Provenance(device_id="d", volume_offset=0, inode=12, path="/a/b.bin", fs_type="ext4")
    rec = FileRecord(prov=prov, name="b.bin", size=3, allocated=True, fs_type="ext4",
                     mtime=1.7e9, type="application/octet-stream", pieces=((4096, 3),))
    feat = Features(key=rec.key, size=3, md5="a" * 32, sha1="b" * 40, type=rec.type)
    assert _plain_row("d", "b0", rec, feat) == _plain(_file_row("d", "b0", rec, feat))
    assert len(_plain_row("d", "b0", rec, feat)) == len(_PLAIN_COLS)
    variants = 0
    for which, obj in (("prov", prov), ("rec", rec), ("feat", feat)):
        for f in dataclasses.fields(obj):
            if f.name in ("key", "prov", "device_id"):
                continue
            other = dataclasses.replace(obj, **{f.name: changed(obj, f)})
            r, ft = ((dataclasses.replace(rec, prov=other), None) if which == "prov" else
                     (other, None) if which == "rec" else (rec, other))
            ft = ft if ft is not None else dataclasses.replace(feat, key=r.key)
            want = _plain(_file_row("d", "b0", r, ft))
            assert file_rows("d", "b0", [(r, ft)]) == [want], (which, f.name)
            straight = _plain_row("d", "b0", r, ft)
            assert straight is None or straight == want, (which, f.name)
            variants += 1
    assert variants > 40


def test_failed_batch_is_not_marked_done(store):
    rec, feat = _item("d", 1, "/a")
    bad = Features(key="wrong-key", size=1)
    with pytest.raises(ValueError):
        store.add_batch("d", "b1", [(rec, feat), (rec, bad)], [], [], [])
    assert store.done_batches("d") == set()
    assert list(store.files()) == []


def test_flags_dedupe_and_follow(store):
    f1 = Flag("KNOWN_MATCH", 90, "d", "d|1|2|/x.jpg", 100.0, "exact match", {"path": "/x.jpg"})
    assert store.add_flag(f1) is True
    assert store.add_flag(f1) is False
    f2 = Flag("NOT_EXAMINED", 50, "e", "volume@0", 101.0, "encrypted")
    assert store.add_flag(f2) is True
    all_flags = store.flags()
    assert [f for _, f in all_flags] == [f1, f2]
    first_id = all_flags[0][0]
    assert [f for _, f in store.flags(after_id=first_id)] == [f2]
    assert [f for _, f in store.flags("d")] == [f1]
    assert store.counts("d")["flags"] == 1


def test_runs(store):
    run = store.begin_run(tool_version="0.1.0", hashsets=[{"name": "caid", "version": "1"}],
                          model=None, operator="alice", options={"mode": "full"})
    store.end_run(run, "complete")
    [r] = store.runs()
    assert r["id"] == run and r["operator"] == "alice" and r["status"] == "complete"
    assert r["hashsets"] == [{"name": "caid", "version": "1"}] and r["model"] is None
    assert r["options"] == {"mode": "full"} and r["ended"] >= r["started"]


def test_second_connection_sees_committed_writes(tmp_path):
    """`triage flags --follow` reads while a scan writes: WAL lets both proceed."""
    a = CaseStore(tmp_path / "case")
    b = CaseStore(tmp_path / "case", create=False)
    a.add_flag(Flag("NEAR_MATCH", 60, "d", "k", 1.0, "near"))
    assert len(b.flags()) == 1
    a.close()
    b.close()


def test_file_row_puts_every_value_in_its_column():
    from triage.records import Exif, Features, FileRecord, Provenance
    from triage.store import _FILE_COLS, _file_row
    prov = Provenance("devX", 1048576, 42, "/a/b.jpg", ads="s", attr_type=128, attr_id=3,
                      members=("in.zip", "c.jpg"))
    rec = FileRecord(prov=prov, name="b.jpg", size=99, allocated=False, fs_type="ntfs",
                     is_dir=False, orphan=True, mtime=1.5, atime=2.5, ctime=3.5, crtime=4.5,
                     type="", ext_mismatch=False)
    feat = Features(key=rec.key, size=99, md5="m" * 32, sha1="s" * 40, sha256="h" * 64,
                    type="image/png", ext_mismatch=True, is_picture=True, width=640, height=480,
                    pdq="p" * 64, pdq_quality=77, phash="f" * 16, exif=Exif(make="Canon"),
                    thumbnail=b"thumb", error="oops")
    row = dict(zip(_FILE_COLS, _file_row("devX", "v0-t0-00001", rec, feat)))
    assert len(row) == len(_FILE_COLS)
    assert row["key"] == rec.key and row["batch_id"] == "v0-t0-00001"
    assert (row["device_id"], row["volume_offset"], row["inode"], row["path"], row["ads"],
            row["attr_type"], row["attr_id"], row["member"]) == \
        ("devX", 1048576, 42, "/a/b.jpg", "s", 128, 3, "in.zip!/c.jpg")
    assert (row["name"], row["size"], row["allocated"], row["fs_type"], row["is_dir"],
            row["orphan"]) == ("b.jpg", 99, 0, "ntfs", 0, 1)
    assert (row["mtime"], row["atime"], row["ctime"], row["crtime"]) == (1.5, 2.5, 3.5, 4.5)
    assert row["type"] == "image/png" and row["ext_mismatch"] == 1
    assert (row["md5"], row["sha1"], row["sha256"]) == ("m" * 32, "s" * 40, "h" * 64)
    assert (row["is_picture"], row["width"], row["height"], row["pdq"], row["pdq_quality"],
            row["phash"]) == (1, 640, 480, "p" * 64, 77, "f" * 16)
    assert '"make": "Canon"' in row["exif"] and row["thumbnail"] == b"thumb"
    assert row["error"] == "oops" and row["extra"] == "{}"
    # the member chain is structured in `prov`, never split back out of the display string
    assert Provenance.from_dict(json.loads(row["prov"])) == prov


def test_provenance_round_trips_with_a_parent_and_keys_never_collide():
    """Names with the characters the old joined keys used ('|', '!', ':') cannot collide, and a
    carved or embedded item's chain (parent + byte range) survives the store's JSON."""
    vol = records.volume_where("d", 1048576, 2, "ext4")
    carved = Provenance("d", 1048576, None, "$Unallocated/4096.jpg", volume_index=2,
                        parent=vol, offset=4096, length=512)
    inner = Provenance("d", 1048576, 12, "/a.pdf", members=("x.zip",),
                       parent=Provenance("d", 1048576, 11, "/x.zip"), offset=10, length=99)
    for p in (carved, inner):
        assert Provenance.from_dict(json.loads(json.dumps(p.to_dict()))) == p
        assert Provenance.from_dict(p.to_dict()).key == p.key
    a = Provenance("d", 0, 1, "/a|0|2|/b")
    b = Provenance("d", 0, 1, "/a", members=("0|2|/b",))
    c = Provenance("d", 0, 1, "/a!/b")
    d = Provenance("d", 0, 1, "/a", members=("b",))
    assert len({a.key, b.key, c.key, d.key}) == 4
    assert carved.display() == "$Unallocated/4096.jpg" and carved.scope == "embedded"
    assert inner.display().startswith("/a.pdf")
