"""The scan plan: triage order, batch cutting, deterministic batch ids, and matching rules."""
from __future__ import annotations

import pytest

from scanfakes import Hit
from triage.records import Features, FileRecord, Provenance
from workers.matching import PDQ_MIN_QUALITY, match_items
from workers.plan import (OTHER_TIER_FACTOR, PICTURE_TIERS, BatchSpec, VolumePlan, cut_batches,
                          plan_volume, tier_of, tier_of_batch)


def rec(path: str, size: int = 10, allocated: bool = True, inode: int = 1, is_dir=False) -> FileRecord:
    return FileRecord(prov=Provenance("d", 0, inode, path), name=path.rsplit("/", 1)[-1],
                      size=size, allocated=allocated, fs_type="ntfs", is_dir=is_dir)


def test_tiers_put_likely_pictures_first_and_system_last():
    assert tier_of(rec("/Users/bob/Pictures/a.jpg")) == 0
    assert tier_of(rec("/DCIM/100CANON/IMG_1.JPG")) == 0
    assert tier_of(rec("/home/bob/Downloads/x.zip")) == 0
    assert tier_of(rec("/srv/old/photo.png")) == 1
    assert tier_of(rec("/srv/old/deleted.bin", allocated=False)) == 2   # deleted: likely place
    assert tier_of(rec("/srv/old/deleted.jpg", allocated=False)) == 0
    assert tier_of(rec("/Users/bob/notes.txt")) == 2
    assert tier_of(rec("/srv/data.bin")) == 3
    assert tier_of(rec("/Windows/System32/icon.png")) == 4
    assert tier_of(rec("/usr/lib/x.so")) == 4
    # a picture renamed .dat is found by its sniffed type when the walk knows it
    typed = FileRecord(prov=Provenance("d", 0, 2, "/srv/f_00a3c1.dat"), name="f_00a3c1.dat",
                       size=5, allocated=True, fs_type="ext4", type="image/jpeg")
    assert tier_of(typed) == 1
    assert PICTURE_TIERS == {0, 1}


def test_mostly_full_batches_end_on_a_whole_number_of_hashing_lanes():
    # 3.4 MB camera pictures under a 64 MiB limit: 18 would fit, but 16 fill the kernel's
    # lanes once and 18 would take a second, nearly empty pass
    recs = [rec(f"/DCIM/{i:03d}.jpg", 3_400_000) for i in range(40)]
    sizes = [len(b) for b in cut_batches(recs, max_files=256, max_bytes=64 << 20)]
    assert sizes == [16, 16, 8]
    # under 3/4 full at 16 files (48 of 64 MiB): the byte limit alone decides, at 22 files
    other = [rec(f"/f{i:03d}", 3_000_000) for i in range(40)]
    assert [len(b) for b in cut_batches(other, max_files=256, max_bytes=64 << 20)] == [22, 18]


def test_cut_batches_limits_and_ramp():
    recs = [rec(f"/f{i}", size=10, inode=i) for i in range(40)]
    plain = list(cut_batches(recs, max_files=8, max_bytes=10**9))
    assert [len(b) for b in plain] == [8] * 5
    ramped = list(cut_batches(recs, max_files=8, max_bytes=10**9, ramp=(8, 4, 2)))
    assert [len(b) for b in ramped] == [1, 2, 4, 8, 8, 8, 8, 1]
    big = [rec("/a", 50), rec("/b", 500), rec("/c", 50), rec("/d", 50)]
    assert [[r.path for r in b] for b in cut_batches(big, 100, 120)] == [["/a"], ["/b"], ["/c", "/d"]]
    assert sum(len(b) for b in ramped) == 40


def test_plan_volume_header_counts_match_batches_and_ids_are_stable():
    recs = [rec(f"/Users/u/Pictures/p{i}.jpg", 1000, inode=i) for i in range(30)]
    recs += [rec(f"/usr/lib/l{i}.so", 10, inode=100 + i) for i in range(25)]
    recs += [rec("/Users/u", 0, inode=999, is_dir=True)]
    out = list(plan_volume(iter(recs), "d", 1048576, max_files=8, max_bytes=10**9))
    headers = [i for i, o in enumerate(out) if isinstance(o, VolumePlan)]
    assert len(headers) == 1
    header = out[headers[0]]
    batches = [o for o in out if not isinstance(o, VolumePlan)]
    assert all(isinstance(b, BatchSpec) for b in batches)
    assert header.files == 55 and header.bytes == 30 * 1000 + 25 * 10
    assert header.batches == len(batches)
    for tier, totals in header.tiers.items():
        mine = [b for b in batches if b.tier == tier]
        assert totals.batches == len(mine) and totals.files == sum(len(b.records) for b in mine)
        # the same batches as cutting the tier's files, in walk order, after the walk
        ramp = (8, 4, 2) if tier == 0 else ()
        # the tiers after the picture pass take OTHER_TIER_FACTOR times the files
        cap = 8 if tier in PICTURE_TIERS else 8 * OTHER_TIER_FACTOR
        want = list(cut_batches([r for r in recs if not r.is_dir and tier_of(r) == tier], cap,
                                10**9, ramp))
        assert [list(b.records) for b in mine] == want
    # what was not handed out during the walk follows the totals, in tier order
    after = [b.tier for b in out[headers[0] + 1:]]
    assert after == sorted(after)
    assert all(tier_of_batch(b.batch_id) == b.tier for b in batches)
    again = [o for o in plan_volume(iter(recs), "d", 1048576, max_files=8, max_bytes=10**9)
             if isinstance(o, BatchSpec)]
    # the same batches with the same ids (the order they leave in depends on the walk's pace)
    assert sorted((b.batch_id, b.records) for b in again) == \
        sorted((b.batch_id, b.records) for b in batches)
    assert len({b.batch_id for b in batches}) == len(batches)


def test_batches_leave_while_the_walk_goes_on_most_likely_first():
    """The walk runs on while batches go out: whatever is cut is handed out at once, the
    first tier's before the others', and the totals come only when the walk ends."""
    import threading
    reached, gate, walked = threading.Event(), threading.Event(), []

    def walk():
        for i in range(16):                       # tier 3: batch 0 cut at the 9th file
            walked.append(i)
            yield rec(f"/srv/f{i:02d}.bin", 10, inode=100 + i)
        for i in range(8):                        # tier 0, ramp 8/4/2: batches of 1, 2, 4 cut
            walked.append(200 + i)
            yield rec(f"/DCIM/IMG_{i}.JPG", 10, inode=i)
        reached.set()
        assert gate.wait(30)
        for i in range(8):
            walked.append(300 + i)
            yield rec(f"/Users/u/Documents/d{i}.txt", 10, inode=300 + i)

    gen = plan_volume(walk(), "d", 0, max_files=8, max_bytes=10**9, other_max_files=8)
    early = [next(gen)]
    assert reached.wait(30)
    early += [next(gen) for _ in range(3)]
    assert len(walked) == 24 and not gate.is_set()          # the walk is held, not finished
    assert all(isinstance(o, BatchSpec) for o in early)
    assert sorted(o.batch_id for o in early) == ["v0-t0-00000", "v0-t0-00001", "v0-t0-00002",
                                                 "v0-t3-00000"]
    assert [o.tier for o in early[1:]] == sorted(o.tier for o in early[1:])   # likeliest first
    assert [len(o.records) for o in early if o.tier == 0] == [1, 2, 4]
    gate.set()
    rest = list(gen)
    assert isinstance(rest[0], VolumePlan) and rest[0].files == 32
    assert [(o.tier, o.batch_id) for o in rest[1:]] == [
        (0, "v0-t0-00003"), (2, "v0-t2-00000"), (3, "v0-t3-00001")]


def test_a_walk_that_fails_fails_the_plan_and_a_closed_plan_stops_the_walk():
    import threading

    def broken():
        yield rec("/srv/a.bin", 10, inode=1)
        raise RuntimeError("TSK gave up")

    with pytest.raises(RuntimeError, match="TSK gave up"):
        list(plan_volume(broken(), "d", 0, max_files=8, max_bytes=10**9))
    walked = []

    def endless():
        i = 0
        while True:
            i += 1
            walked.append(i)
            yield rec(f"/srv/f{i}.bin", 10, inode=i)

    gen = plan_volume(endless(), "d", 0, max_files=8, max_bytes=10**9)
    assert isinstance(next(gen), BatchSpec)
    gen.close()                                  # the driver cancelled the planner
    n = len(walked)
    assert not any(t.name == "triage-walk" and t.is_alive() for t in threading.enumerate())
    assert len(walked) == n


class _Sets:
    def __init__(self, exact: dict, near: dict):
        self.exact, self.near = exact, near
        self.perceptual_queries: list = []

    def lookup(self, algorithm, hashes):
        return [[Hit("s", "1", *self.exact[h], algorithm, h)] if h in self.exact else []
                for h in hashes]

    def lookup_perceptual(self, algorithm, hashes, max_distance=None):
        self.perceptual_queries += list(hashes)
        return [[Hit("s", "1", "alert", "B", 2, algorithm, h, 5)] if h in self.near else []
                for h in hashes]


def _item(n: int, md5: str, pdq: str = "", quality: int = 100):
    r = rec(f"/p{n}.jpg", inode=n)
    return r, Features(key=r.key, size=10, md5=md5, pdq=pdq, pdq_quality=quality,
                       is_picture=bool(pdq))


def test_matching_exact_ignore_and_perceptual_rules():
    items = [_item(1, "a" * 32, "1" * 64),            # exact alert: no perceptual lookup
             _item(2, "b" * 32, "2" * 64),            # known software: skipped later
             _item(3, "c" * 32, "3" * 64),            # near match
             _item(4, "d" * 32, "3" * 64, quality=PDQ_MIN_QUALITY - 1)]   # too flat to match
    sets = _Sets({"a" * 32: ("alert", "A", 3), "b" * 32: ("ignore", "", 0)}, {"3" * 64})
    matches, ignored = match_items([sets], items)
    path = {r.key: r.path for r, _f in items}
    kinds = sorted((path[m.key], m.kind, m.role) for m in matches)
    assert kinds == [("/p1.jpg", "exact", "alert"), ("/p2.jpg", "exact", "ignore"),
                     ("/p3.jpg", "near", "alert")]
    assert ignored == {items[1][0].key}
    assert sets.perceptual_queries == ["3" * 64]
    near = [m for m in matches if m.kind == "near"][0]
    assert near.distance == 5 and near.category == "B"


def test_planning_memory_does_not_grow_with_the_number_of_files():
    """The walk is spooled to disk: planning 20k files holds about one batch in memory."""
    import tracemalloc

    def walk(n):
        for i in range(n):
            yield rec(f"/Users/u/{'Pictures' if i % 3 else 'Documents'}/f{i:06d}.jpg", 100, inode=i)

    def peak(n):
        tracemalloc.start()
        batches = 0
        for item in plan_volume(walk(n), "d", 0, max_files=256, max_bytes=10**9):
            batches += isinstance(item, BatchSpec)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top, batches

    small, _ = peak(2_000)
    big, batches = peak(20_000)
    assert batches >= 20_000 // 256
    # 20k FileRecords held at once would take over 10 MB; the spooled plan stays near the small one
    assert big < small * 2 + 1_000_000, (small, big)


def test_plan_volume_spools_in_blocks_and_counts_every_batch():
    recs = [rec(f"/Users/a/{i:05d}.jpg", size=1000 + i, inode=i) for i in range(3 * 512 + 7)]
    out = list(plan_volume(iter(recs), "dev", 0, max_files=100, max_bytes=10**9))
    header = [o for o in out if isinstance(o, VolumePlan)][0]
    batches = [o for o in out if isinstance(o, BatchSpec)]
    assert header.batches == len(batches)
    assert [r.path for b in batches for r in b.records] == [r.path for r in recs]


def test_batch_result_for_the_driver_ships_rows_and_only_referenced_records():
    from triage.records import Match
    from triage.store import file_rows
    from workers.batch import BatchResult

    def item(i, picture=False):
        rec = FileRecord(prov=Provenance(device_id="d", volume_offset=0, inode=i, path=f"/f{i}"),
                         name=f"f{i}", size=i, allocated=True, fs_type="ext4")
        return rec, Features(key=rec.key, size=i, md5=f"{i:032x}", sha1=f"{i:040x}",
                             is_picture=picture)

    items = [item(1, True), item(2, True), item(3), item(4, True)]
    matched, modelled = items[0][0].key, items[3][0].key
    full = BatchResult(device_id="d", batch_id="b7", tier=0, items=list(items), files=4,
                       matches=[Match(key=matched, kind="exact", algorithm="md5",
                                      value=items[0][1].md5, set_name="a", set_version="1",
                                      role="alert")],
                       model_inputs=[(modelled, "pixels")])
    shipped = full.for_driver()
    assert shipped.rows == file_rows("d", "b7", items)            # every file, as a row
    assert [r.key for r, _ in shipped.items] == [matched, modelled]
    assert shipped.pictures == full.pictures == 3
    assert shipped.stored_files == full.stored_files == 4
    assert (shipped.matches, shipped.model_inputs, shipped.files) == \
        (full.matches, full.model_inputs, full.files)


def test_tier_path_tests_answer_as_the_regexes_do_on_any_path():
    """tier_of finds each folder's answer once; for any path (any case, Unicode case
    equivalents, backslashes, empty components, a whole path that is a system name) it is the
    answer the two regexes give on the whole path."""
    import os
    import random

    import workers.plan as plan
    rng = random.Random(19)
    words = list(plan._YIELD_NAMES + plan._SYSTEM_NAMES) + [
        "", "x", "d00001", "f0001.bin", "ſnap", "\u212aeep", "lıb", "İ", "BIN", "Var", "lib\n",
        "usr.", "cache3", "trash ", "DownLoads", "é", "\x00", "a" * 40, "Temporary Internet Files",
        "trash\n", "Downloads\n", "bin\n", "\nbin", "var/lib\n", "bin\n\n", "ſnap\n"]
    plan._FOLDERS.clear()
    kept, plan._FOLDERS_KEPT = plan._FOLDERS_KEPT, 50       # and the cache is emptied as it fills
    try:
        for i in range(20000):
            parts = [rng.choice(words) for _ in range(rng.randrange(1, 5))]
            parts = [p.swapcase() if rng.random() < 0.3 else p for p in parts]
            path = rng.choice(["/", "", "//"]) + "/".join(parts) + rng.choice(["", "", "/"])
            assert plan._is_system(path) == bool(plan._SYSTEM.search(path)), path
            assert plan._in_yield_folder(path) == bool(plan._YIELD.search(path)), path
            assert len(plan._FOLDERS) <= 50
            name = rng.choice(["", ".", "..", "x"]) + rng.choice(parts) + \
                rng.choice(["", ".", ".JPG", "..jpg", "a.b", "/.png", ".tar/x"])
            assert plan._extension(name) == os.path.splitext(name)[1], name
    finally:
        plan._FOLDERS_KEPT = kept
        plan._FOLDERS.clear()
    assert tier_of(rec("/bin")) == 4 and tier_of(rec("/var/lib")) == 4
    assert tier_of(rec("/var/libx")) == 3 and tier_of(rec("/srv/ſnap/a.bin")) == 3
    assert tier_of(rec("/srv/DownLoads")) == 2 and tier_of(rec("/srv/\u212aeep/Trash")) == 2
    # the regexes' "$" matches before a final newline, and so does the shortcut
    assert tier_of(rec("/srv/trash\n")) == 2 and tier_of(rec("/bin\n")) == 4
    assert tier_of(rec("/srv/trash\n\n")) == 3 and tier_of(rec("/bin\n\n")) == 3
