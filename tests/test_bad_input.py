"""Bad evidence gives one line on stderr and exit code 2, never a traceback.

The CLI runs in a subprocess, as an officer would run it, so what is checked is exactly what
reaches the terminal.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

TESTDATA = Path(__file__).resolve().parent / "data" / "dfvfs"   # vendored, Apache-2.0
MiB = 1 << 20
ROOT = Path(__file__).resolve().parents[1]


def triage(*args: str, prefix: tuple = ()) -> subprocess.CompletedProcess:
    # the installed `triage` entry point (cli:run), so exit codes are what an officer sees
    cmd = [*prefix, sys.executable, "-c", "from cli import run; run()", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def ext4_image(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("bad_input")
    src = work / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"some text\n" * 1000)
    (src / "b.bin").write_bytes(os.urandom(300_000))
    img = work / "ext4.raw"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(src), str(img), "4M"], check=True,
                   capture_output=True)
    return img


@pytest.fixture(scope="module")
def e01_set(ext4_image, tmp_path_factory) -> list[Path]:
    work = tmp_path_factory.mktemp("e01")
    subprocess.run(["ewfacquire", "-u", "-q", "-t", str(work / "disk"), "-f", "encase6", "-c", "none",
                    "-S", "1MiB", "-d", "sha1", "-C", "c", "-D", "d", "-E", "e", "-e", "x", "-N", "n",
                    "-m", "fixed", "-M", "physical", str(ext4_image)], check=True, capture_output=True)
    segments = sorted(work.glob("disk.E0*"))
    assert len(segments) >= 3
    return segments


def copy_set(segments: list[Path], dest: Path) -> list[Path]:
    dest.mkdir()
    return [Path(shutil.copy(s, dest / s.name)) for s in segments]


def test_the_good_e01_set_lists(e01_set):
    result = triage("files", str(e01_set[0]), "--hash", "md5")
    assert result.returncode == 0, result.stderr
    assert '"/a.txt"' in result.stdout


def test_truncated_last_segment(e01_set, tmp_path):
    segs = copy_set(e01_set, tmp_path / "t")
    data = segs[-1].read_bytes()
    segs[-1].write_bytes(data[: len(data) // 3])
    for cmd in ("files", "inspect"):
        assert_one_line_error(triage(cmd, str(segs[0])), "truncated", segs[-1].name)


def test_truncated_single_segment(ext4_image, tmp_path):
    subprocess.run(["ewfacquire", "-u", "-q", "-t", str(tmp_path / "one"), "-f", "encase6", "-c", "fast",
                    "-d", "sha1", "-C", "c", "-D", "d", "-E", "e", "-e", "x", "-N", "n", "-m", "fixed",
                    "-M", "physical", str(ext4_image)], check=True, capture_output=True)
    e01 = tmp_path / "one.E01"
    data = e01.read_bytes()
    e01.write_bytes(data[: len(data) // 2])
    assert_one_line_error(triage("files", str(e01)), "truncated")


def test_missing_middle_segment(e01_set, tmp_path):
    segs = copy_set(e01_set, tmp_path / "m")
    segs[1].unlink()
    assert_one_line_error(triage("files", str(segs[0])), "missing")
    # given explicitly, the gap is still seen
    from triage.errors import EvidenceError
    from triage.evidence import open_evidence
    with pytest.raises(EvidenceError, match="segment 2 is missing"):
        open_evidence([str(segs[0]), str(segs[2])])


def test_missing_last_segment(e01_set, tmp_path):
    segs = copy_set(e01_set, tmp_path / "l")
    segs[-1].unlink()
    assert_one_line_error(triage("inspect", str(segs[0])), "missing")


def test_random_bytes(tmp_path):
    f = tmp_path / "random.E01"       # the name claims EWF; the bytes decide
    f.write_bytes(os.urandom(10 * MiB))
    assert_one_line_error(triage("files", str(f)), "not a recognised disk image")


def test_zero_length_file(tmp_path):
    f = tmp_path / "empty.dd"
    f.write_bytes(b"")
    assert_one_line_error(triage("inspect", str(f)), "empty file")


def test_missing_path(tmp_path):
    assert_one_line_error(triage("files", str(tmp_path / "nope.E01")), "no such file")


def _without_root_override() -> tuple:
    """A command prefix that takes away root's power to read anything (CAP_DAC_*), when root.

    Root reads a mode-000 folder regardless of its bits, so as root the test drops those two
    capabilities with setpriv for the one command; as another user the bits alone suffice.
    """
    if os.geteuid() != 0:
        return ()
    assert shutil.which("setpriv"), "setpriv (util-linux) is missing"
    drop = "-dac_override,-dac_read_search"
    return ("setpriv", f"--inh-caps={drop}", f"--bounding-set={drop}")


def test_folder_without_read_permission(tmp_path):
    locked = tmp_path / "export"
    locked.mkdir()
    (locked / "a.jpg").write_bytes(b"\xff\xd8\xff")
    locked.chmod(0)
    try:
        prefix = _without_root_override()
        probe = subprocess.run([*prefix, "true"], capture_output=True)
        assert probe.returncode == 0, f"setpriv cannot drop capabilities: {probe.stderr.strip()}"
        for cmd in ("files", "inspect"):
            assert_one_line_error(triage(cmd, str(locked), prefix=prefix), "cannot read folder",
                                  "Permission denied")
    finally:
        locked.chmod(0o755)


def test_corrupt_superblock_bare(ext4_image, tmp_path):
    """A bare file system whose superblock is gone: nothing says it is a disk image any more."""
    img = tmp_path / "corrupt.raw"
    data = bytearray(ext4_image.read_bytes())
    data[1024:2048] = bytes(1024)
    img.write_bytes(bytes(data))
    assert_one_line_error(triage("files", str(img)), "not a recognised disk image")


def test_corrupt_superblock_fields(ext4_image, tmp_path):
    """The ext magic survives but the geometry is garbage: TSK refuses, `files` exits 2 (there
    is nothing to list) and `inspect` shows the volume as a coverage gap."""
    img = tmp_path / "garbled.raw"
    data = bytearray(ext4_image.read_bytes())
    data[1024:1024 + 56] = b"\xff" * 56          # counts, block size, blocks per group; magic at +56 kept
    img.write_bytes(bytes(data))
    assert_one_line_error(triage("files", str(img)), "nothing could be examined", "corrupt file system")
    result = triage("inspect", str(img), "--json")
    assert result.returncode == 0, result.stderr
    import json
    info = json.loads(result.stdout)
    assert info["volumes"][0]["fs_type"] is None
    assert "corrupt file system" in info["coverage"][0]["reason"]


def test_corrupt_partition_among_good_ones_is_coverage(ext4_image, tmp_path):
    """One unreadable partition beside a good one: the good one is listed, the bad one is
    reported on stderr as not examined, and the command exits 1, as fls does when part of
    an image cannot be read."""
    disk = tmp_path / "disk.raw"
    size = ext4_image.stat().st_size
    with open(disk, "wb") as fh:
        fh.truncate(MiB + 2 * size + MiB)
    script = f"label: dos\nstart=2048, size={size // 512}, type=83\nstart={(MiB + size) // 512}, size={size // 512}, type=83\n"
    subprocess.run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", str(disk)], input=script.encode(),
                   check=True, capture_output=True)
    good = ext4_image.read_bytes()
    bad = bytearray(good)
    bad[1024:1024 + 56] = b"\xff" * 56
    with open(disk, "r+b") as fh:
        fh.seek(MiB)
        fh.write(good)
        fh.write(bytes(bad))
    result = triage("files", str(disk))
    assert result.returncode == 1, result.stderr
    assert '"/a.txt"' in result.stdout
    assert "Traceback" not in result.stderr
    from triage.units import human_bytes
    assert (f"not examined: volume 3 (not readable, {human_bytes(size)} at {MiB + size:,}) "
            f"(volume not readable, {size:,} bytes)") \
        in result.stderr


def test_partitions_past_the_end_of_the_media_are_one_gap_not_volumes(ext4_image, tmp_path,
                                                                        monkeypatch):
    """A partition table whose entries start past the end of the media (TSK lists a damaged
    GPT's entry at byte 2**73, more than SQLite's integers hold): one gap of the device naming
    them, no volume at those offsets, the good partition still found, and the space outside
    every volume counted within the media only; the case store takes them all. A fuzz mutant
    of the synth GPT device crashed the scan's store with this (seed 61)."""
    from triage import device
    from triage.device import discover
    from triage.evidence import open_evidence
    from triage.rank import coverage_state
    from triage.records import UNPARTITIONED, UNREADABLE_VOLUME
    from triage.store import CaseStore
    disk = _one_partition_disk(ext4_image, tmp_path)
    size = ext4_image.stat().st_size
    media = disk.stat().st_size
    real = device.partition_table

    def far(evidence):
        table, rows = real(evidence)
        return table, rows + [(9, 3 * 2 ** 73, 4096, "far", True), (10, 2 ** 63, 0, "", True),
                              (11, media, 512, "at the end", True)]
    monkeypatch.setattr(device, "partition_table", far)
    with open_evidence(str(disk)) as ev:
        volumes, coverage = discover(ev)
    assert [v.offset for v in volumes] == [MiB] and volumes[0].fs_type == "ext4"
    [beyond] = [c for c in coverage if c.kind == UNREADABLE_VOLUME]
    assert beyond.where.volume_offset is None and "partition 9 (far)" in beyond.reason
    assert f"{2 ** 63:,}" in beyond.reason and "partition 11 (at the end)" in beyond.reason
    [outside] = [c for c in coverage if c.kind == UNPARTITIONED]
    assert outside.bytes_not_examined == media - size
    with CaseStore(tmp_path / "case", create=True) as store:
        store.add_volumes(volumes)
        store.add_coverage(coverage)
        assert sorted(c.key for c in store.coverage()) == sorted(c.key for c in coverage)
    assert coverage_state({"status": "complete"}, volumes, coverage) == "partial"


def test_a_partition_declared_longer_than_sqlite_counts_is_a_stored_gap(ext4_image, tmp_path,
                                                                         monkeypatch):
    """A partition whose table entry declares 2**73 bytes: the bytes the image lacks are a
    damaged-media gap with the exact figure in its reason, and the case store holds the gap
    (its count at SQLite's largest integer) instead of crashing; the device is not complete."""
    from triage import device
    from triage.device import discover
    from triage.evidence import open_evidence
    from triage.rank import coverage_state
    from triage.records import MEDIA_DAMAGED
    from triage.store import SQLITE_MAX_INT, CaseStore
    disk = _one_partition_disk(ext4_image, tmp_path)
    real = device.partition_table

    def long(evidence):
        table, rows = real(evidence)
        return table, [(i, off, 2 ** 73, desc, alloc) for i, off, _, desc, alloc in rows]
    monkeypatch.setattr(device, "partition_table", long)
    with open_evidence(str(disk)) as ev:
        volumes, coverage = discover(ev)
    [cut] = [c for c in coverage if c.kind == MEDIA_DAMAGED]
    missing = 2 ** 73 - volumes[0].length
    assert cut.bytes_not_examined == missing and f"{missing:,}" in cut.reason
    with CaseStore(tmp_path / "case", create=True) as store:
        store.add_volumes(volumes)
        store.add_coverage(coverage)
        [stored] = [c for c in store.coverage() if c.kind == MEDIA_DAMAGED]
    assert stored.bytes_not_examined == SQLITE_MAX_INT and stored.reason == cut.reason
    assert coverage_state({"status": "complete"}, volumes, coverage) == "partial"


def _one_partition_disk(ext4_image: Path, tmp_path: Path) -> Path:
    """An MBR disk of one partition holding `ext4_image`, with a MiB free after it."""
    disk = tmp_path / "disk.raw"
    size = ext4_image.stat().st_size
    with open(disk, "wb") as fh:
        fh.truncate(MiB + size + MiB)
    subprocess.run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", str(disk)],
                   input=f"label: dos\nstart=2048, size={size // 512}, type=83\n".encode(),
                   check=True, capture_output=True)
    with open(disk, "r+b") as fh:
        fh.seek(MiB)
        fh.write(ext4_image.read_bytes())
    return disk


def test_differencing_vhd_without_parent():
    vhd = TESTDATA / "more" / "fat-differential.vhd"
    assert_one_line_error(triage("files", str(vhd)), "parent")


def test_not_a_disk_image():
    bogus = TESTDATA / "bogus.001"
    assert_one_line_error(triage("inspect", str(bogus)), "not a recognised disk image")


def test_unreadable_subfolder_is_coverage_not_an_abort(tmp_path):
    """One locked folder inside a logical export: the rest is listed, the folder is reported."""
    root = tmp_path / "export"
    (root / "open").mkdir(parents=True)
    (root / "open" / "a.txt").write_bytes(b"a")
    (root / "locked").mkdir()
    (root / "locked" / "b.txt").write_bytes(b"b")
    (root / "locked").chmod(0)
    try:
        prefix = _without_root_override()
        assert subprocess.run([*prefix, "true"], capture_output=True).returncode == 0
        result = triage("files", str(root), "--hash", "md5", prefix=prefix)
        assert result.returncode == 1, result.stderr
        assert '"/open/a.txt"' in result.stdout and "b.txt" not in result.stdout
        assert "Traceback" not in result.stderr
        assert "not examined:" in result.stderr and "/locked" in result.stderr
        assert "folder not readable" in result.stderr
    finally:
        (root / "locked").chmod(0o755)


def test_the_entry_point_exits_promptly_after_cleanup_and_flushed_output(tmp_path):
    # run() skips only the interpreter's module teardown: exit handlers still run, output is
    # flushed even when nothing ends the line, and the exit code is the command's
    code = ("import atexit, os, sys\n"
            "atexit.register(lambda: open(os.environ['MARKER'], 'w').write('cleaned'))\n"
            "sys.stdout.write('partial line, not flushed')\n"
            "from cli import run\n"
            "run()\n")
    marker = tmp_path / "marker"
    env = dict(os.environ, MARKER=str(marker))
    ok = subprocess.run([sys.executable, "-c", code, "--version"], env=env,
                        capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert ok.returncode == 0 and marker.read_text() == "cleaned"
    assert ok.stdout.startswith("partial line, not flushed") and "version" in ok.stdout
    marker.unlink()
    bad = subprocess.run([sys.executable, "-c", code, "scan", "--case", str(tmp_path / "c"),
                          str(tmp_path / "missing.E01")], env=env,
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert bad.returncode == 2 and marker.read_text() == "cleaned"


def test_an_address_where_nothing_listens_is_one_line(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "note.txt").write_text("synthetic\n")
    with socket.socket() as s:                  # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = triage("scan", "--case", str(tmp_path / "case"), "--address", f"127.0.0.1:{port}",
                    str(folder))
    assert_one_line_error(result, "cannot join the Ray cluster", "nothing answers there")
