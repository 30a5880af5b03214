"""Hostile evidence made on purpose: seeded mutants of the project's own synthetic images, for
the standing fuzz campaign (tests/test_fuzz.py inside the suite, bench/fuzz.py for long runs).

A mutant is an image with bytes flipped where parsers look (partition tables, boot sectors,
superblocks, FATs, MFT entries, inode tables, EWF sections), or cut short. Each is judged the
same way (`judge`): it must end within a bound, exit 0, 1 or 2, print no traceback, and when it
exits 0 with no gap its content must be what The Sleuth Kit's `icat` reads from the same mutant.
"""
from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

STRUCTURES = 64 * 1024          # the first bytes of a volume hold what its parsers read first


@dataclass(frozen=True)
class Mutant:
    path: Path
    source: str                  # the image it was made from
    how: str                     # "flip 3 bytes at 1049600, 1049731, ..." or "cut at 812345"


@dataclass
class Outcome:
    mutant: Mutant
    verdict: str                 # ok, gap, refused, hang, crash, traceback, silently-wrong
    exit_code: Optional[int]
    seconds: float
    detail: str = ""
    files: int = 0
    wrong: list = field(default_factory=list)


def hot_regions(size: int, volume_offsets: list[int]) -> list[tuple[int, int]]:
    """Where parsers read first: the partition table (MBR and GPT header and entries) and the
    start of every volume (boot sector, superblock, FAT, first MFT entries, group descriptors)."""
    regions = [(0, min(size, 34 * 512))]
    for off in volume_offsets:
        if off < size:
            regions.append((off, min(STRUCTURES, size - off)))
    return regions


def mutate(data: bytes, rng: random.Random, regions: list[tuple[int, int]]) -> tuple[bytes, str]:
    """One mutant of `data`: bytes flipped in a hot region (usually) or anywhere, or a cut."""
    roll = rng.random()
    if roll < 0.15:
        cut = rng.randrange(512, max(513, len(data)))
        return data[:cut], f"cut at {cut}"
    buf = bytearray(data)
    if roll < 0.85:
        start, length = rng.choice(regions)
    else:
        start, length = 0, len(buf)
    spots = sorted(start + rng.randrange(max(1, length)) for _ in range(rng.randint(1, 8)))
    for pos in spots:
        buf[pos] ^= rng.randrange(1, 256)
    return bytes(buf), "flip bytes at " + ", ".join(map(str, spots))


def write_mutants(segments: list[Path], out: Path, count: int, seed: int,
                  volume_offsets: list[int]) -> list[Mutant]:
    """`count` mutants of the image `segments` (one file, or a split or E01 set: one segment is
    mutated, the others copied), each in its own folder under `out`; the same ones for the same
    seed. The hot regions are those of the first segment (the start of the media)."""
    rng = random.Random(f"{seed}:{segments[0].name}")
    first = segments[0].read_bytes()
    regions = hot_regions(len(first), volume_offsets)
    mutants = []
    for i in range(count):
        folder = out / f"{segments[0].stem}.m{i:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        which = 0 if len(segments) == 1 or rng.random() < 0.7 else rng.randrange(len(segments))
        for j, seg in enumerate(segments):
            data = first if j == 0 else seg.read_bytes()
            if j == which:
                data, how = mutate(data, rng, regions if j == 0 else [(0, len(data))])
                how = f"{seg.name}: {how}"
            (folder / seg.name).write_bytes(data)
        mutants.append(Mutant(folder / segments[0].name, segments[0].name, how))
    return mutants


def _icat_md5(image: Path, offset: int, inode: str, timeout: float) -> Optional[str]:
    try:
        res = subprocess.run(["icat", "-o", str(offset // 512), str(image), inode],
                             capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    return hashlib.md5(res.stdout).hexdigest() if res.returncode == 0 and not res.stderr else None


_CLI = [sys.executable, "-c", "from cli import run; run()"]


def _ran(cmd: list[str], timeout: float) -> tuple:
    """(verdict when the run alone decides it: hang, traceback, crash or refused, else None;
    exit code; detail; the finished process; its seconds) of one judged command."""
    t0 = time.monotonic()
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "hang", None, f"over {timeout:.0f} s", None, time.monotonic() - t0
    took = time.monotonic() - t0
    if "Traceback" in res.stderr:
        return "traceback", res.returncode, res.stderr.strip()[-300:], res, took
    if res.returncode not in (0, 1, 2):
        return "crash", res.returncode, res.stderr.strip()[-300:], res, took
    if res.returncode == 2:
        return "refused", 2, res.stderr.strip()[:200], res, took
    return None, res.returncode, "", res, took


def _run(mutant: Mutant, cmd: list[str], timeout: float) -> tuple:
    """(the mutant's outcome when the run alone decides it, else None; the finished process;
    its seconds)."""
    verdict, code, detail, res, took = _ran(cmd, timeout)
    return (Outcome(mutant, verdict, code, took, detail) if verdict else None), res, took


def judge(mutant: Mutant, timeout: float = 60.0, check_content: bool = True,
          triage: Optional[list[str]] = None) -> Outcome:
    """Run `triage files --hash md5` on a mutant and classify what it did."""
    ended, res, took = _run(mutant, (triage or _CLI) + ["files", str(mutant.path), "--hash",
                                                         "md5"], timeout)
    if ended is not None:
        return ended
    rows = []
    for line in res.stdout.splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            return Outcome(mutant, "crash", res.returncode, took, f"not JSON: {line[:80]!r}")
    if res.returncode == 1:
        return Outcome(mutant, "gap", 1, took, files=len(rows))
    return _as_icat(mutant, rows, took, check_content)


def _as_icat(mutant: Mutant, rows: list[dict], took: float, check: bool = True) -> Outcome:
    """The outcome of a run that ended clean with no gap: ok, or silently wrong where a file's
    MD5 is not what `icat` reads (`check` False: ok, unchecked)."""
    wrong = _not_as_icat(mutant, rows) if check else []
    return Outcome(mutant, "silently-wrong" if wrong else "ok", 0, took, files=len(rows),
                   wrong=wrong)


def _not_as_icat(mutant: Mutant, rows: list[dict]) -> list[str]:
    """The paths of allocated files whose MD5 is not what TSK's `icat` reads from the mutant
    (rows as `triage files --format json` writes them)."""
    wrong: list[str] = []
    if mutant.path.suffix.lower() in (".e01",):
        return wrong
    for row in rows:
        # NTFS system files ($Secure, $UpCase, ...): TSK 4.11's icat and the wheel's 4.15
        # pick different default attributes for some of them; they hold no user content
        if row.get("dir") or not row.get("md5") or row.get("inode") in (None, 0) \
                or not row.get("allocated") or row.get("ads") or row.get("member") or \
                (row.get("fs_type") == "ntfs" and row["path"].startswith("/$")):
            continue
        want = _icat_md5(mutant.path, row["volume_offset"], str(row["inode"]), 20)
        if want is not None and want != row["md5"]:
            wrong.append(row["path"])
    return wrong


def judge_scan(mutant: Mutant, case_dir: Path, timeout: float = 120.0,
               triage: Optional[list[str]] = None) -> Outcome:
    """Run `triage scan` (Ray, the planner and the batch workers: the scan's own way to the
    files, where `judge` takes `triage files`') on a mutant and classify what it did: a device
    not `complete`, or any coverage record, is a gap; otherwise every allocated file's stored
    MD5 must be what `icat` reads."""
    import sqlite3

    from triage.store import DB_NAME
    # an alert set (one hash no file has), so that no gap says "not matched" of a whole device
    alert = Path(case_dir).with_name(Path(case_dir).name + ".alert.md5")
    alert.write_text(hashlib.md5(b"no file holds this").hexdigest() + "\n")
    ended, res, took = _run(mutant, (triage or _CLI) + [
        "scan", "--case", str(case_dir), "--hashset", str(alert), "--mode", "full",
        "--workers", "1", "--nice", "0", "--json", str(mutant.path)], timeout)
    if ended is not None:
        return ended
    try:
        statuses = [d["status"] for d in json.loads(res.stdout)["devices"]]
        db = sqlite3.connect(f"file:{Path(case_dir) / DB_NAME}?mode=ro", uri=True)
        try:
            gaps = db.execute("SELECT count(*) FROM coverage").fetchone()[0]
            rows = [dict(zip(("volume_offset", "inode", "path", "md5", "allocated", "dir",
                              "ads", "fs_type", "member"), r))
                    for r in db.execute("SELECT volume_offset, inode, path, md5, allocated, "
                                        "is_dir, ads, fs_type, member FROM files")]
        finally:
            db.close()
    except (ValueError, KeyError, TypeError, sqlite3.Error) as exc:
        return Outcome(mutant, "crash", res.returncode, took, f"no case to read: {exc}")
    if gaps or any(s != "complete" for s in statuses):
        return Outcome(mutant, "gap", res.returncode, took, files=len(rows))
    return _as_icat(mutant, rows, took)


def mutate_text_file(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """A mutant of a hash set or context file: flipped bytes, a cut, a line repeated, a field
    blown up (a number of 5,000 digits, a 200,000-character cell), deep nesting, or NULs."""
    roll = rng.random()
    if roll < 0.3:
        return mutate(data, rng, [(0, len(data))])
    if roll < 0.45:
        cut = rng.randrange(0, max(1, len(data)))
        return data[:cut], f"cut at {cut}"
    pos = rng.randrange(0, max(1, len(data)))
    insert = rng.choice([b"9" * 5000, b"\"" + b"x" * 200_000 + b"\"", b"[" * 5000,
                         b"\x00" * 64, b"\r=1+1\r", b"\xff\xfe", b"{\"a\":" * 3000])
    return data[:pos] + insert + data[pos:], f"{len(insert)} bytes inserted at {pos}"


def judge_command(cmd: list[str], timeout: float = 60.0) -> tuple[str, Optional[int], str]:
    """(verdict, exit code, detail) of one command on a mutant: ok, refused, gap, hang, crash
    or traceback (anything but exit 0, 1 or 2 with a clean stderr)."""
    verdict, code, detail, _, _ = _ran(cmd, timeout)
    return verdict or {0: "ok", 1: "gap"}[code], code, detail
