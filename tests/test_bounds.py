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
