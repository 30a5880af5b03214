"""The scan driver's fault handling, on fake devices (tests/scanfakes.py) and a real local Ray.

Crashes, time limits, early stops and interrupts are hard to provoke with real images, so a
fake backend drives them; the same driver runs the real stack in test_scan.py.
"""
from __future__ import annotations

import json
import sys

import pytest

import ray

import scanfakes  # noqa: E402
from scanfakes import FakeBackend, FreeSpaceBackend, md5, sha256, write_device  # noqa: E402
from triage import records
from triage.flags import read_flags_file  # noqa: E402
from triage.store import CaseStore  # noqa: E402
from workers.batch import ScanOptions  # noqa: E402
from workers.scan import INTERRUPTED_REASON, TRIAGE_STOP_REASON, Reporter, run_scan  # noqa: E402
from workers.plan import OTHER_TIER_FACTOR  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    from workers.runtime import quiet_environment
    quiet_environment()
    ray.cloudpickle.register_pickle_by_value(scanfakes)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def hashset_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("hs")
    (root / "alert.json").write_text(json.dumps({
        "md5": {md5("ALERT-1"): "A", md5("ALERT-2"): "B", md5("ALERT-3"): "A"},
        "pdq": {sha256("NEAR-1"): "C"},
    }))
    return root


def _opts(root, **kw):
    base = dict(mode="full", hashsets=((str(root), ()),), batch_files=4)
    base.update(kw)
    return ScanOptions(**base)


FAKESET = {"name": "fakeset", "version": "1", "role": "alert"}


def _scan(case, evidence, opts, **kw):
    return run_scan(case, [str(e) for e in evidence], opts, backend=FakeBackend(), workers=2,
                    hashsets=[FAKESET], **kw)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    d = tmp_path_factory.mktemp("fleet")
    files_a = [{"path": "/home/u/Pictures/a.jpg", "content": "ALERT-1"},
               {"path": "/home/u/deleted.jpg", "content": "ALERT-2", "allocated": False},
               {"path": "/home/u/renamed.dat", "content": "ALERT-3"},
               {"path": "/home/u/near.jpg", "content": "NEAR-1"}]
    files_a += [{"path": f"/home/u/doc{i}.txt", "content": f"text {i}"} for i in range(9)]
    dev_a = write_device(d / "a.img", files_a,
                         volumes=[{"offset": 1048576, "fs_type": "ext4"},
                                  {"offset": 1 << 30, "encryption": "BitLocker", "length": 5000}])
    dev_b = write_device(d / "b.img", [{"path": f"/x/{i}.txt", "content": f"b{i}"} for i in range(7)])
    corrupt = d / "corrupt.img"
    corrupt.write_bytes(b"\x00garbage" * 100)
    return {"a": dev_a, "b": dev_b, "corrupt": corrupt}


@pytest.fixture(scope="module")
def full_scan(tmp_path_factory, fleet, hashset_root):
    case = tmp_path_factory.mktemp("case") / "c"
    summary = _scan(case, [fleet["a"], fleet["b"], fleet["corrupt"]], _opts(hashset_root),
                    verify=True)
    return case, summary


def test_every_device_finishes_and_bad_one_is_recorded(full_scan):
    case, summary = full_scan
    by = {d["device"]: d for d in summary.devices}
    assert by["b.img"]["status"] == "complete"
    assert by["a.img"]["status"] == "partial"           # its BitLocker volume
    assert by["corrupt.img"]["status"] == "failed"
    assert "not a disk image" in by["corrupt.img"]["error"]
    assert any("corrupt.img" in w for w in summary.warnings)
    with CaseStore(case, create=False) as store:
        [cov] = store.coverage("corrupt.img")
        assert cov.kind == records.EVIDENCE_NOT_OPENED and cov.bytes_not_examined == 800
        assert cov.where.scope == "device"
        assert {(c.kind, c.reason) for c in store.coverage("a.img")} == \
            {(records.ENCRYPTED, "encrypted (BitLocker)")}
        assert store.coverage("b.img") == []
        assert store.devices()[0]["verified_hashes"]["md5"] == store.devices()[0]["stored_hashes"]["md5"]


def test_matches_exact_and_near(full_scan):
    case, _ = full_scan
    with CaseStore(case, create=False) as store:
        path = {r.key: r.path for r, _f in store.files("a.img")}
        exact = {(path[m.key], m.category) for m in store.matches("a.img") if m.kind == "exact"}
        near = [m for m in store.matches("a.img") if m.kind == "near"]
        assert exact == {("/home/u/Pictures/a.jpg", "A"), ("/home/u/deleted.jpg", "B"),
                         ("/home/u/renamed.dat", "A")}
        assert [(path[m.key], m.distance) for m in near] == [("/home/u/near.jpg", 7)]
        assert store.matches("b.img") == []
        assert store.counts("a.img")["files"] == 13 and store.counts("b.img")["files"] == 7


def test_flags_written_before_the_device_finished(full_scan):
    case, _ = full_scan
    flags = read_flags_file(case / "flags.jsonl")
    with CaseStore(case, create=False) as store:
        finished = {d["id"]: d["finished"] for d in store.devices()}
        assert len(store.flags()) == len(flags)
    codes = sorted((f.device_id, f.code) for f in flags)
    assert codes.count(("a.img", "KNOWN_MATCH")) == 3
    assert ("a.img", "NEAR_MATCH") in codes and ("a.img", "NOT_EXAMINED") in codes
    assert ("corrupt.img", "NOT_EXAMINED") in codes
    assert not [c for c in codes if c[0] == "b.img"]
    for f in flags:
        assert f.raised_at <= finished[f.device_id]


def test_run_provenance(full_scan):
    case, summary = full_scan
    with CaseStore(case, create=False) as store:
        [run] = store.runs()
    assert run["status"] == "partial" and run["ended"] >= run["started"]
    assert run["hashsets"] == [FAKESET]
    assert run["options"]["mode"] == "full" and run["operator"]


def test_crash_is_retried_once_then_recorded(tmp_path, hashset_root):
    dev = write_device(tmp_path / "crashy.img", [
        {"path": "/home/u/once.jpg", "content": f"CRASHONCE:{tmp_path / 'marker'}"},
        {"path": "/home/u/a.jpg", "content": "ALERT-1"},
        {"path": "/srv/always.bin", "content": "CRASH"},
        {"path": "/home/u/bad.bin", "content": "BADREAD"},
    ] + [{"path": f"/srv/f{i}", "content": f"f{i}"} for i in range(6)])
    summary = _scan(tmp_path / "case", [dev], _opts(hashset_root, batch_files=2))
    assert (tmp_path / "marker").exists()            # the first try did crash
    with CaseStore(tmp_path / "case", create=False) as store:
        keys = {r.path for r, _ in store.files()}
        cov = store.coverage("crashy.img")
    assert "/home/u/once.jpg" in keys and "/home/u/a.jpg" in keys
    assert "/srv/always.bin" not in keys
    # the batch it was in was split until the file that kills its worker was alone: the
    # other files of that batch are stored, and the gap names that one file and its bytes
    assert {f"/srv/f{i}" for i in range(6)} <= keys
    batch_cov = [c for c in cov if c.kind == records.SCAN_INCOMPLETE]
    assert len(batch_cov) == 1 and "worker process crashed" in batch_cov[0].reason
    assert "after 2 tries" in batch_cov[0].reason and batch_cov[0].batch_id
    assert batch_cov[0].where.path == "/srv/always.bin"
    assert batch_cov[0].reason.startswith("1 file of batch v") and "." in batch_cov[0].batch_id
    assert batch_cov[0].bytes_not_examined == len("CRASH")
    file_cov = [c for c in cov if c.where.path == "/home/u/bad.bin"]
    assert file_cov and "read error at sector 1234" in file_cov[0].reason
    assert file_cov[0].kind == records.FILE_NOT_READ
    assert summary.devices[0]["status"] == "partial"


def test_time_limit(tmp_path, hashset_root):
    dev = write_device(tmp_path / "slow.img", [{"path": "/home/u/slow.jpg", "content": "SLEEP:60"},
                                               {"path": "/home/u/ok.jpg", "content": "ok"}])
    opts = _opts(hashset_root, batch_files=1, task_timeout=2.0, min_rate=1e12)
    summary = _scan(tmp_path / "case", [dev], opts)
    assert summary.seconds < 30
    with CaseStore(tmp_path / "case", create=False) as store:
        [cov] = store.coverage("slow.img")
        assert "over its time limit" in cov.reason and cov.bytes_not_examined == len("SLEEP:60")
        assert [r.path for r, _ in store.files()] == ["/home/u/ok.jpg"]


def test_a_file_that_never_ends_costs_only_itself(tmp_path, hashset_root):
    """A batch over its time limit is halved down to the file that hangs: the other files of
    its batch are examined (an alert among them found), and the gap names that one file."""
    files = [{"path": f"/srv/f{i}.bin", "content": f"f{i}"} for i in range(6)]
    files.insert(4, {"path": "/srv/hang.bin", "content": "SLEEP:60"})
    files.insert(2, {"path": "/srv/a.bin", "content": "ALERT-1"})
    dev = write_device(tmp_path / "hang.img", files)
    opts = _opts(hashset_root, batch_files=8, task_timeout=2.0, min_rate=1e12)
    summary = _scan(tmp_path / "case", [dev], opts)
    assert summary.seconds < 45           # 4 limits of 2 s (8 files, 4, 2, 1), and restarts
    with CaseStore(tmp_path / "case", create=False) as store:
        stored = {r.path for r, _ in store.files()}
        [cov] = store.coverage("hang.img")
        matches = store.matches("hang.img")
    assert stored == {f["path"] for f in files} - {"/srv/hang.bin"}
    assert [m.key for m in matches] and all("/srv/a.bin" in m.key for m in matches)
    assert cov.kind == records.SCAN_INCOMPLETE and cov.where.path == "/srv/hang.bin"
    assert "over its time limit" in cov.reason and "(after 1 try)" in cov.reason
    assert cov.reason.startswith("1 file of batch v") and cov.batch_id.count(".") == 3
    assert cov.bytes_not_examined == len("SLEEP:60")
    assert summary.devices[0]["status"] == "partial"


def test_a_half_queued_behind_hanging_files_is_not_timed_out_unstarted(tmp_path, hashset_root):
    """Two files that hang in one batch: as it is halved, a half can wait in the queue while
    both workers hang on the others. Its time limit starts when it can have started, so it is
    examined, and only the two files that hang are gaps. Limits of 4 s, not 2: each hang
    costs a worker, and in one full-suite run on 2 cores a plain file's one-file part ran
    past 2 s (most likely a new worker's start-up on the loaded machine) and became a gap."""
    files = [{"path": f"/srv/f{i}.bin", "content": f"f{i}"} for i in range(8)]
    for i in (1, 6):
        files[i] = {"path": f"/srv/hang{i}.bin", "content": "SLEEP:60"}
    dev = write_device(tmp_path / "hang2.img", files)
    opts = _opts(hashset_root, batch_files=8, task_timeout=4.0, min_rate=1e12)
    _scan(tmp_path / "case", [dev], opts)
    with CaseStore(tmp_path / "case", create=False) as store:
        stored = {r.path for r, _ in store.files()}
        cov = store.coverage("hang2.img")
    assert stored == {f["path"] for f in files} - {"/srv/hang1.bin", "/srv/hang6.bin"}
    assert sorted(c.where.path for c in cov) == ["/srv/hang1.bin", "/srv/hang6.bin"]


def test_a_resume_reads_again_only_the_parts_an_earlier_run_did_not_store(tmp_path,
                                                                          hashset_root):
    """The hanging file was read at each halving (8, 4, 2 and 1 files); a resume sends only the
    part that was not stored, that one file, and the case is what it was."""
    log = tmp_path / "reads.log"
    files = [{"path": f"/srv/f{i}.bin", "content": f"f{i}"} for i in range(7)]
    files.insert(5, {"path": "/srv/hang.bin", "content": f"HANGLOG:{log}"})
    dev = write_device(tmp_path / "hang.img", files)
    opts = _opts(hashset_root, batch_files=8, task_timeout=2.0, min_rate=1e12)
    _scan(tmp_path / "case", [dev], opts)
    assert log.read_text().count("read") == 4

    def case_now():
        with CaseStore(tmp_path / "case", create=False) as store:
            return ({r.path for r, _ in store.files()},
                    [(c.where.path, c.batch_id) for c in store.coverage("hang.img")])
    first = case_now()
    _scan(tmp_path / "case", [dev], opts, resume=True)
    assert log.read_text().count("read") == 5
    assert case_now() == first
    assert first[0] == {f["path"] for f in files} - {"/srv/hang.bin"}
    assert [p for p, _ in first[1]] == ["/srv/hang.bin"]


def test_halvings_for_time_limits_are_bounded_per_device(tmp_path, hashset_root, monkeypatch):
    """Files planted to hang cannot multiply a scan's time: once a device has spent its
    halvings, a batch over its time limit is a gap whole, saying why."""
    import workers.scan as scan_module
    monkeypatch.setattr(scan_module, "MAX_TIMEOUT_SPLITS", 1)
    files = [{"path": f"/srv/f{i}.bin", "content": f"f{i}"} for i in range(7)]
    files.insert(5, {"path": "/srv/hang.bin", "content": "SLEEP:60"})
    dev = write_device(tmp_path / "hang.img", files)
    opts = _opts(hashset_root, batch_files=8, task_timeout=2.0, min_rate=1e12)
    summary = _scan(tmp_path / "case", [dev], opts)
    assert summary.devices[0]["status"] == "partial"          # never "complete" with a gap
    with CaseStore(tmp_path / "case", create=False) as store:
        stored = {r.path for r, _ in store.files()}
        [cov] = store.coverage("hang.img")
    assert stored == {f"/srv/f{i}.bin" for i in range(4)}      # the half without the hang
    assert cov.reason.startswith("4 files of batch v") and cov.batch_id.endswith(".b")
    assert "1 halvings for such batches are spent" in cov.reason
    assert cov.bytes_not_examined == sum(len(f["content"]) for f in files[4:])


def test_walk_crash_becomes_volume_coverage(tmp_path, hashset_root):
    dev = write_device(tmp_path / "walk.img", [{"path": "/a", "walk_crash": True}])
    summary = _scan(tmp_path / "case", [dev], _opts(hashset_root))
    with CaseStore(tmp_path / "case", create=False) as store:
        [cov] = store.coverage("walk.img")
    assert cov.where.volume_offset == 1048576 and cov.where.scope == "volume"
    assert cov.kind == records.SCAN_INCOMPLETE and "file system walk failed twice" in cov.reason
    assert summary.devices[0]["status"] == "partial"


# twenty of the system tier's batches at the test's batch_files=3 (plan.OTHER_TIER_FACTOR)
SYSTEM_FILES = 20 * 3 * OTHER_TIER_FACTOR


def _triage_device(tmp_path):
    # system files enough that a slow picture batch (a retried worker on a loaded machine)
    # cannot let the driver pull them all before the device stops
    files = [{"path": f"/usr/lib/f{i}.so", "content": f"lib {i}"} for i in range(SYSTEM_FILES)]
    files += [{"path": f"/home/u/DCIM/p{i}.jpg", "content": f"pic {i}"} for i in range(6)]
    files += [{"path": "/home/u/DCIM/x.jpg", "content": "ALERT-1"},
              {"path": "/home/u/Downloads/y.jpg", "content": "ALERT-2"},
              {"path": "/srv/z.png", "content": "ALERT-3"}]
    return write_device(tmp_path / "triage.img", files)


def test_triage_mode_stops_after_matches_and_picture_pass(tmp_path, hashset_root):
    dev = _triage_device(tmp_path)
    opts = _opts(hashset_root, mode="triage", stop_after=2, batch_files=3)
    summary = _scan(tmp_path / "case", [dev], opts, max_in_flight=2)
    [d] = summary.devices
    assert d["stopped_early"] and d["status"] == "partial"
    with CaseStore(tmp_path / "case", create=False) as store:
        paths = {r.path for r, _ in store.files()}
        [cov] = store.coverage()
        codes = [f.code for _, f in store.flags()]
    # every picture was read (the picture pass), the system libraries mostly not
    assert {f"/home/u/DCIM/p{i}.jpg" for i in range(6)} <= paths
    assert {"/home/u/DCIM/x.jpg", "/home/u/Downloads/y.jpg", "/srv/z.png"} <= paths
    assert len([p for p in paths if p.startswith("/usr/")]) < SYSTEM_FILES
    assert cov.reason == TRIAGE_STOP_REASON and cov.bytes_not_examined > 0
    assert codes.count("KNOWN_MATCH") == 3 and "NOT_EXAMINED" in codes
    assert d["first_known_match_s"] is not None

    # a full-mode resume reads the rest and drops the triage-mode coverage
    full = _scan(tmp_path / "case", [dev], _opts(hashset_root, batch_files=3), resume=True)
    with CaseStore(tmp_path / "case", create=False) as store:
        assert len(list(store.files())) == SYSTEM_FILES + 9 and store.coverage() == []
    assert full.devices[0]["status"] == "complete"


class _StopAfter(Reporter):
    def __init__(self, n):
        self.n = n

    def batch_done(self, device_id, state):
        self.n -= 1
        if self.n == 0:
            raise KeyboardInterrupt


def _state(case):
    with CaseStore(case, create=False) as store:
        files = [(r, f) for r, f in store.files()]
        return files, store.matches(), store.coverage()


def test_interrupt_then_resume_equals_uninterrupted(tmp_path, fleet, hashset_root):
    opts = _opts(hashset_root, batch_files=2)
    _scan(tmp_path / "whole", [fleet["a"], fleet["b"]], opts)
    with pytest.raises(KeyboardInterrupt):
        _scan(tmp_path / "cut", [fleet["a"], fleet["b"]], opts, reporter=_StopAfter(3))
    with CaseStore(tmp_path / "cut", create=False) as store:
        statuses = {d["id"]: d["status"] for d in store.devices()}
        assert "interrupted" in statuses.values()
        assert any(c.reason == INTERRUPTED_REASON for c in store.coverage())
        assert [r["status"] for r in store.runs()] == ["interrupted"]
        done_before = sum(len(store.done_batches(d)) for d in statuses)
    assert done_before >= 3
    summary = _scan(tmp_path / "cut", [fleet["a"], fleet["b"]], opts, resume=True)
    assert {d["device"]: d["status"] for d in summary.devices} == {"a.img": "partial",
                                                                  "b.img": "complete"}
    assert _state(tmp_path / "cut") == _state(tmp_path / "whole")


def test_resume_refuses_changed_settings(tmp_path, fleet, hashset_root):
    from triage.errors import TriageError
    _scan(tmp_path / "case", [fleet["b"]], _opts(hashset_root))
    with pytest.raises(TriageError, match="changed: pictures"):
        _scan(tmp_path / "case", [fleet["b"]], _opts(hashset_root, pictures=False), resume=True)
    # large videos decoded in one part and a gap in the other: refused; another spool folder
    # decodes them the same
    with pytest.raises(TriageError, match="changed: video_spool"):
        _scan(tmp_path / "case", [fleet["b"]], _opts(hashset_root, video_spool="off"), resume=True)
    summary = _scan(tmp_path / "case", [fleet["b"]], _opts(hashset_root, video_spool=str(tmp_path)),
                    resume=True)
    assert summary.status == "complete"


def test_resume_refuses_a_run_batched_by_the_older_rule(tmp_path, fleet, hashset_root):
    """A run stored before the batching rule had a version cut every tier at batch_files, and
    versions 2 to 4 cut later tiers at 4x, 8x and 16x: their later tiers' batch ids name other
    files now, so resuming any of them would skip files unread."""
    import json
    import sqlite3

    from triage.errors import TriageError
    from triage.store import DB_NAME
    from workers.plan import BATCH_PLAN
    _scan(tmp_path / "case", [fleet["b"]], _opts(hashset_root))
    db = sqlite3.connect(tmp_path / "case" / DB_NAME)
    (options,) = db.execute("SELECT options FROM runs").fetchone()
    db.close()
    assert json.loads(options)["batch_plan"] == BATCH_PLAN == 5
    for older in (None, 2, 3, 4):
        run = json.loads(options)
        run.pop("batch_plan")
        if older is not None:
            run["batch_plan"] = older
        db = sqlite3.connect(tmp_path / "case" / DB_NAME)
        db.execute("UPDATE runs SET options = ?", (json.dumps(run),))
        db.commit()
        db.close()
        with pytest.raises(TriageError, match="changed: batch_plan"):
            _scan(tmp_path / "case", [fleet["b"]], _opts(hashset_root), resume=True)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


def _free_space_device(tmp_path, carve_sleep: float, **extra):
    marks = tmp_path / "marks"
    marks.mkdir()
    files = [{"path": f"/usr/lib/f{i}.so", "content": f"lib {i}", "inode": 1000 + i}
             for i in range(30)]
    files += [{"path": "/home/u/DCIM/x.jpg", "content": "ALERT-2", "inode": 10}]
    files += [{"path": f"{records.UNALLOCATED_DIR}/4096.jpg", "content": "ALERT-1", "inode": 7}]
    return write_device(tmp_path / "free.img", files, marks=str(marks),
                        carve_sleep=carve_sleep, **extra), marks


def _mark(marks, name):
    path = marks / name
    return json.loads(path.read_text()) if path.exists() else None


def test_free_space_is_carved_after_the_walk_while_later_tiers_are_hashed(tmp_path, hashset_root):
    dev, marks = _free_space_device(tmp_path, carve_sleep=3)
    summary = run_scan(tmp_path / "case", [str(dev)], _opts(hashset_root, batch_files=3),
                       backend=FreeSpaceBackend(), workers=2, hashsets=[FAKESET])
    start, end = _mark(marks, "carve-start-1048576"), _mark(marks, "carve-end-1048576")
    assert start["walked"], "the free space was read before the walk ended"
    system_reads = [_mark(marks, f"read-{1000 + i}")["t"] for i in range(30)]
    # the system folders (the last tier) were hashed while the free space was being read
    assert min(system_reads) < end["t"]
    with CaseStore(tmp_path / "case", create=False) as store:
        carved = [r for r, _ in store.files() if r.path.startswith(records.UNALLOCATED_DIR)]
        batches = store.done_batches("free.img")
        assert store.coverage() == []     # carved through: the free-space gap is gone
        codes = [f.code for _, f in store.flags()]
    assert [r.path for r in carved] == [f"{records.UNALLOCATED_DIR}/4096.jpg"]
    # the free space's batches have ids of their own (--resume tells them from the walk's)
    assert any("-u" in b for b in batches) and any("-u" not in b for b in batches)
    assert codes.count("KNOWN_MATCH") == 2
    assert summary.devices[0]["status"] == "complete"


def test_triage_mode_leaves_free_space_still_being_carved_a_gap(tmp_path, hashset_root):
    dev, marks = _free_space_device(tmp_path, carve_sleep=60)
    summary = run_scan(tmp_path / "case", [str(dev)],
                       _opts(hashset_root, mode="triage", stop_after=1, batch_files=3),
                       backend=FreeSpaceBackend(), workers=2, hashsets=[FAKESET])
    [d] = summary.devices
    assert d["stopped_early"] and d["status"] == "partial"
    assert _mark(marks, "carve-end-1048576") is None
    with CaseStore(tmp_path / "case", create=False) as store:
        gaps = [c for c in store.coverage() if c.kind == records.UNALLOCATED]
    assert len(gaps) == 1 and gaps[0].bytes_not_examined == 1 << 16
    assert summary.seconds < 60


def test_carving_that_fails_leaves_the_free_space_a_gap_and_the_device_partial(tmp_path,
                                                                                hashset_root):
    dev, _marks = _free_space_device(tmp_path, carve_sleep=0, carve_crash=True)
    summary = run_scan(tmp_path / "case", [str(dev)], _opts(hashset_root, batch_files=3),
                       backend=FreeSpaceBackend(), workers=2, hashsets=[FAKESET])
    with CaseStore(tmp_path / "case", create=False) as store:
        coverage = store.coverage()
        paths = {r.path for r, _ in store.files()}
    free = [c for c in coverage if c.kind == records.UNALLOCATED]
    assert len(free) == 1 and free[0].bytes_not_examined == 1 << 16
    assert any(c.kind == records.SCAN_INCOMPLETE and "carving of free space failed twice"
               in c.reason for c in coverage)
    assert "/home/u/DCIM/x.jpg" in paths          # the walk's files are all still read
    assert summary.devices[0]["status"] == "partial"
