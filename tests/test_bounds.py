"""No code path loops or waits on a size that comes from evidence (issue 19, item 2): an inode
declaring 7.2e16 bytes is read only as far as its volume goes, becomes a gap, and cannot stretch
a batch's time limit."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from triage.records import FileRecord, Provenance
from workers.batch import ScanOptions
from workers.plan import BatchSpec, plan_volume

BIN = Path(sys.executable).parent
HUGE = 72_000_000_000_000_000


def test_an_inode_declaring_7e16_bytes_is_read_as_far_as_the_volume(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(30):
        (src / f"f{i:02d}.txt").write_bytes(b"synthetic text\n" * (i + 1))
    img = tmp_path / "ext4.raw"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(src), str(img), "4M"],
                   check=True, capture_output=True)
    inode = subprocess.run(["debugfs", "-R", "stat /f07.txt", str(img)], capture_output=True,
                           text=True, check=True).stdout.split("Inode: ")[1].split()[0]
    subprocess.run(["debugfs", "-w", "-R", f"sif <{inode}> size {HUGE}", str(img)],
                   check=True, capture_output=True)
    run = subprocess.run([str(BIN / "triage"), "files", str(img), "--hash", "md5"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stderr
    rows = run.stdout.splitlines()
    assert len(rows) >= 31                              # every file listed, the walk went on
    assert "/f07.txt (file not fully read, " in run.stderr
    assert "larger than the volume" in run.stderr and "Traceback" not in run.stderr


def test_a_declared_size_cannot_stretch_the_time_limit():
    def rec(n, size):
        return FileRecord(prov=Provenance("d", 0, n, f"/f{n}"), name=f"f{n}", size=size,
                          allocated=True, fs_type="ext4")
    records = [rec(1, 10), rec(2, HUGE), rec(3, 20)]
    items = list(plan_volume(records, "d", 0, volume_length=4 << 20))
    specs = [i for i in items if isinstance(i, BatchSpec)]
    assert sum(s.bytes for s in specs) == 10 + (4 << 20) + 20
    opts = ScanOptions()
    assert max(opts.timeout_for(s.bytes) for s in specs) <= opts.timeout_for(sum(s.bytes for s in specs))
    assert opts.timeout_for(sum(s.bytes for s in specs)) < 310            # seconds, not years
    assert BatchSpec("d", "b", 0, 0, (rec(2, HUGE),)).bytes == HUGE      # unknown volume: as declared


# --- one scan per case (issue 19, item 5) -------------------------------------------------------

def test_a_second_scan_of_a_case_fails_at_once_naming_the_first(tmp_path):
    import os

    from triage.store import CaseStore, ScanLock
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "a.txt").write_text("synthetic\n")
    case = tmp_path / "case"
    CaseStore(case, create=True).close()
    held = ScanLock(case)                        # as a running scan holds it
    try:
        run = subprocess.run([str(BIN / "triage"), "scan", "--case", str(case), str(folder)],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 2
        [line] = run.stderr.strip().splitlines()
        assert line.startswith("error: ") and f"being scanned by process {os.getpid()}" in line
        # readers never wait for it
        queue = subprocess.run([str(BIN / "triage"), "queue", "--case", str(case)],
                               capture_output=True, text=True, timeout=60)
        assert queue.returncode == 0, queue.stderr
    finally:
        held.release()
    run = subprocess.run([str(BIN / "triage"), "scan", "--case", str(case), "--json", str(folder)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (case / "scan.lock").read_text() == ""               # released, holder cleared


# --- one error line, never a traceback (issue 19, item 9) ---------------------------------------

def _triage(*args, timeout=120):
    return subprocess.run([str(BIN / "triage"), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def _one_error_line(run, *words):
    assert run.returncode == 2, (run.returncode, run.stderr[-1500:])
    assert "Traceback" not in run.stderr
    [line] = run.stderr.strip().splitlines()
    assert line.startswith("error: ")
    for w in words:
        assert w in line, line


def test_deep_json_and_huge_csv_context_files_are_one_line(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "a.txt").write_text("x")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 10_000 + "]" * 10_000)
    _one_error_line(_triage("scan", "--case", tmp_path / "c1", "--context", deep, folder),
                    "nested too deeply")
    wide = tmp_path / "wide.csv"
    wide.write_text("evidence,notes\nexport,\"" + "n" * 140_000 + "\"\n")
    _one_error_line(_triage("scan", "--case", tmp_path / "c2", "--context", wide, folder),
                    "not a readable CSV file")


def test_an_error_naming_hostile_bytes_stays_one_line(tmp_path):
    bad = tmp_path / "evil\nname\x1b[2J.img"
    bad.write_bytes(b"\x00" * 1000)
    run = _triage("inspect", bad)
    _one_error_line(run, "\\x0a", "\\x1b")


def test_a_damaged_nsrl_database_is_one_line(tmp_path):
    import sqlite3
    db = tmp_path / "nsrl.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE FILE (sha256 TEXT, sha1 TEXT, md5 TEXT, crc32 TEXT, file_name TEXT,"
                " file_size INTEGER, package_id INTEGER)")
    con.executemany("INSERT INTO FILE VALUES (?, ?, ?, '', 'f', 1, 1)",
                    [(f"{i:064x}", f"{i:040x}", f"{i:032x}") for i in range(20_000)])
    con.commit()
    con.close()
    data = bytearray(db.read_bytes())
    for page in range(3, len(data) // 4096, 5):       # scribble over table pages past the first
        data[page * 4096:page * 4096 + 64] = b"\xa5" * 64
    db.write_bytes(bytes(data))
    run = _triage("hashset", "import", db, "--name", "n", "--role", "ignore",
                  "--store", tmp_path / "store")
    _one_error_line(run, "nsrl.db", "damaged SQLite database")
