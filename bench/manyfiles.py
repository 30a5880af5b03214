"""A million small files: the scan's rate and memory against TSK, in one run.

Runs standalone: `.venv/bin/python bench/manyfiles.py [--files N] [--folders N] [--keep DIR]
[--cold] [--repeat N]`.

Builds an ext4 image of `--files` small files (200 B to 6 KB of random bytes, spread over
`--folders` folders; default 1,000,000 in 10,000) with `mke2fs -d`, and an alert hash set (MD5s
of 100 of them). Then, one after another on the same image:

  triage     `triage scan --no-pictures --workers 2 --nice 0 --hashset SET IMAGE` (hash + match)
  fls        `fls -r IMAGE` (a listing only: the floor for walking the file system)
  TSK way    `tsk_recover -a IMAGE DIR` + `hashdeep -c md5,sha1 -r DIR`

and prints files/s of each, the ratio of triage against the TSK way (goal: at least 5x
faster, and at least 12,000 files/s), and the peak RSS of the scan's driver and of its
planner (the Ray worker running `plan_device_volume`), read from /proc while the scan runs
(goal: both under 300 MB). It also prints the CPU seconds of each: the scan's by role
(driver, planner, raylet, the rest), read from /proc, and the TSK way's from /usr/bin/time; on
a shared machine their ratio moves less than the wall-clock one; and which code listed the
file system (the run's `listers`: the C lister, or pytsk3 where it was not built) and the Python
it ran on (see Makefile's PYTHON). --keep DIR
keeps the image there for another run; --cold (root) drops the page cache before each timed
command, so each reads the image from disk and none runs on what the one before it cached;
--repeat N runs the three ways N times and prints the spread, the ratio of the medians and of
the fastest of each.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench")]
from enumerate import timed  # noqa: E402  (bench/enumerate.py: wall, peak RSS, CPU)

TRIAGE = [sys.executable, "-c", "from cli import run; run()"]


def build_image(work: Path, files: int, folders: int, seed: int = 1) -> tuple[Path, Path, int]:
    """The image, an alert set of 100 of its files' MD5s, and the content bytes."""
    import hashlib
    rng = random.Random(seed)
    src = work / "src"
    total, alerts = 0, []
    pick = set(rng.sample(range(files), min(100, files)))
    blob = rng.randbytes(6000 + 4096)
    for d in range(folders):
        (src / f"d{d:05d}").mkdir(parents=True)
    for i in range(files):
        size = rng.randint(200, 6000)
        start = rng.randrange(4096)
        # a distinct prefix keeps every file's hash distinct at no cost of randomness
        data = i.to_bytes(4, "little") + blob[start:start + size - 4]
        path = src / f"d{i % folders:05d}" / f"f{i:07d}.bin"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, data)
        os.close(fd)
        total += size
        if i in pick:
            alerts.append(hashlib.md5(data).hexdigest())
    image = work / "many.raw"
    blocks = files + total // 4096 + folders + 20_000
    size_mb = int(blocks * 4096 * 1.15 / (1 << 20)) + 64
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-N", str(int(files * 1.05) + folders),
                    "-d", str(src), str(image), f"{size_mb}M"], check=True, capture_output=True)
    shutil.rmtree(src)
    alert = work / "alert.md5"
    alert.write_text("".join(f"{h}  f\n" for h in alerts))
    return image, alert, total


def _hwm(pid: int) -> int:
    """A process's peak resident set (VmHWM), in bytes; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _planner_pids() -> list[int]:
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as fh:
                if b"plan_device_volume" in fh.read(200):
                    out.append(int(p))
        except OSError:
            continue
    return out


_TICK = os.sysconf("SC_CLK_TCK")


def _tree_cpu(root: int, seen: dict) -> None:
    """Records the CPU seconds (user + system) and command line of `root` and every process
    below it in `seen`, keyed by (pid, start time) so a reused pid is another process. The
    scan's Ray processes (GCS, raylet, planner, batch workers) all descend from the driver;
    one that ends between two polls loses its last poll's worth, so the sum is a floor."""
    parent, stats = {}, {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as fh:
                rest = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(p)
        parent[pid] = int(rest[1])
        stats[pid] = (int(rest[19]), (int(rest[11]) + int(rest[12])) / _TICK)
    for pid, (start, cpu) in stats.items():
        node, hops = pid, 0
        while node not in (root, 0, 1) and hops < 64:
            node, hops = parent.get(node, 0), hops + 1
        if node == root:
            known = seen.get((pid, start))
            # the command line is read while the process lives (roles are told after the scan)
            seen[(pid, start)] = (cpu, known[1] if known else _cmdline(pid))


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read(300).replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def drop_caches() -> None:
    """Empties the kernel's page cache (root, Linux), so what runs next reads the image from
    disk, as a first look at seized evidence does."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("3\n")
    except OSError as exc:
        raise SystemExit(f"error: --cold needs root to drop the page cache: {exc}") from None


def scan(image: Path, alert: Path, work: Path) -> dict:
    case = work / "case"
    shutil.rmtree(case, ignore_errors=True)
    # --nice 0: at the baselines' priority (a scan runs at nice 10 by default, which on a
    # shared machine would measure the other users' load rather than the scan)
    cmd = TRIAGE + ["scan", "--case", str(case), "--no-pictures", "--no-carve", "--workers", "2",
                    "--mode", "full", "--nice", "0", "--hashset", str(alert), "--json", str(image)]
    peaks = {"driver": 0, "planner": 0}
    cpu: dict = {}
    planners: set = set()
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    done = threading.Event()

    def watch():
        while not done.is_set():
            peaks["driver"] = max(peaks["driver"], _hwm(proc.pid))
            for pid in _planner_pids():
                peaks["planner"] = max(peaks["planner"], _hwm(pid))
                planners.add(pid)
            _tree_cpu(proc.pid, cpu)
            time.sleep(0.2)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    out, err = proc.communicate()
    wall = time.monotonic() - t0
    done.set()
    t.join()
    if proc.returncode not in (0, 1):
        raise SystemExit(f"triage scan failed ({proc.returncode}): {err[-2000:]}")
    summary = json.loads(out)
    [dev] = summary["devices"]
    # CPU by role: the driver, the planner (the worker process that ran the walk), the
    # raylet, and the rest (batch workers, GCS, Ray's agents)
    roles = {"driver": 0.0, "planner": 0.0, "raylet": 0.0, "others": 0.0}
    for (pid, _), (secs, cmdline) in cpu.items():
        role = "driver" if pid == proc.pid else "planner" if pid in planners else \
            "raylet" if cmdline.split(" ")[0].endswith("/raylet") else "others"
        roles[role] += secs
    return {"wall": wall, "files": dev["files"], "matches": dev["alert_matches"],
            "work_done": summary.get("work_done_s") or wall, "ray_ready": summary.get("ray_ready_s"),
            "cpu": sum(roles.values()), "cpu_roles": roles, "listers": _listers(case), **peaks}


def _listers(case: Path) -> list[str]:
    """Which code listed the file system, as the scan's run recorded it (the C lister, or
    pytsk3 where it was not built): the figures depend on it."""
    with sqlite3.connect(f"file:{case / 'case.sqlite'}?mode=ro", uri=True) as db:
        (options,) = db.execute("SELECT options FROM runs ORDER BY id DESC LIMIT 1").fetchone()
    return json.loads(options).get("listers", [])


def measure(image: Path, alert: Path, work: Path, cold) -> dict:
    """One run of the three ways, one after another: the scan, `fls -r`, and `tsk_recover -a`
    + `hashdeep`."""
    cold()
    s = scan(image, alert, work)
    cold()
    fls_wall, fls_rss, res = timed(["fls", "-r", str(image)], capture_output=True, check=True)
    listed = sum(1 for line in res.stdout.splitlines() if line.lstrip(b"+ ").startswith(b"r/r"))
    out = work / "recovered"
    cold()
    w1, r1, _ = timed(["tsk_recover", "-a", str(image), str(out)], capture_output=True,
                      check=True)
    tsk_cpu = timed.cpu
    w2, r2, res = timed(["hashdeep", "-c", "md5,sha1", "-r", str(out)], capture_output=True,
                        check=True)
    tsk_cpu += timed.cpu
    hashed = sum(1 for line in res.stdout.splitlines() if line[:1] not in (b"%", b"#"))
    shutil.rmtree(out, ignore_errors=True)
    return {"scan": s, "fls": (fls_wall, fls_rss, listed), "tsk": w1 + w2, "tsk_cpu": tsk_cpu,
            "tsk_rss": max(r1, r2), "hashed": hashed}


def _interpreter() -> str:
    """The Python the scan ran on (every process of it: Ray starts its workers with the
    driver's), since the figures depend on its build: Makefile's PYTHON."""
    import platform
    with open("/proc/self/maps") as fh:        # the interpreter itself, or a libpython it loads
        linked = "shared libpython" if "libpython" in fh.read() else "static"
    return f"Python {platform.python_version()} ({os.path.realpath(sys.executable)}, {linked})"


def report(r: dict, cold: bool) -> None:
    s, (fls_wall, fls_rss, listed), tsk, tsk_cpu = r["scan"], r["fls"], r["tsk"], r["tsk_cpu"]
    hashed = r["hashed"]
    n = s["files"]
    if cold:
        print("page cache dropped before each command (--cold)")
    print(f"{'':<34}{'seconds':>10}{'files/s':>12}{'peak RSS':>12}")
    print(f"{'triage scan (whole run)':<34}{s['wall']:>10.1f}{n / s['wall']:>12,.0f}"
          f"{s['driver'] / 2**20:>9.0f} MB  (driver)")
    print(f"{'triage scan (Ray up to stored)':<34}{s['work_done']:>10.1f}"
          f"{n / s['work_done']:>12,.0f}{s['planner'] / 2**20:>9.0f} MB  (planner)")
    print(f"{'fls -r':<34}{fls_wall:>10.1f}{listed / fls_wall:>12,.0f}{fls_rss:>9.0f} MB")
    print(f"{'tsk_recover -a + hashdeep':<34}{tsk:>10.1f}{hashed / tsk:>12,.0f}"
          f"{r['tsk_rss']:>9.0f} MB")
    print(f"files: triage {n:,}, fls {listed:,}, hashdeep {hashed:,}; alert matches "
          f"{s['matches']} (100 planted); listed by {', '.join(s['listers']) or '?'}; "
          f"{_interpreter()}")
    roles = ", ".join(f"{k} {v:.1f}" for k, v in s["cpu_roles"].items())
    print(f"CPU: triage scan {s['cpu']:.1f} core-s ({roles}); TSK way {tsk_cpu:.1f} "
          f"core-s (its processes only; the kernel's write-back of the recovered files is "
          f"not counted); ratio {tsk_cpu / s['cpu']:.2f}x")
    print(f"triage vs the TSK way: {tsk / s['wall']:.2f}x faster whole "
          f"(goal >= 5x); {n / s['wall']:,.0f} files/s (goal >= 12,000); driver "
          f"{s['driver'] / 2**20:.0f} MB, planner {s['planner'] / 2**20:.0f} MB (goal < 300)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--folders", type=int, default=10_000)
    ap.add_argument("--keep", type=Path, default=None, help="keep (or reuse) the image here")
    ap.add_argument("--cold", action="store_true",
                    help="drop the page cache before each timed command (root): every one "
                         "reads the image from disk, none after another has warmed it")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run the three ways this many times, one after another, and print "
                         "each run and the spread (the TSK way's time moves with the kernel's "
                         "write-back of its recovered files)")
    args = ap.parse_args()
    cold = drop_caches if args.cold else (lambda: None)
    work = Path(tempfile.mkdtemp(prefix="bench-many-"))
    try:
        keep = args.keep
        if keep and (keep / "many.raw").exists():
            image, alert = keep / "many.raw", keep / "alert.md5"
            print(f"image: {image} (kept)")
        else:
            t = time.monotonic()
            image, alert, total = build_image(keep or work, args.files, args.folders)
            print(f"image: {args.files:,} files, {total / 1e6:.0f} MB of content, "
                  f"{image.stat().st_size / 1e9:.1f} GB image, built in {time.monotonic() - t:.0f} s")
        runs = []
        for i in range(args.repeat):
            if args.repeat > 1:
                print(f"run {i + 1} of {args.repeat}, {time.strftime('%H:%M:%S')}")
            runs.append(measure(image, alert, work, cold))
            report(runs[-1], args.cold)
        if len(runs) > 1:
            scans = sorted(r["scan"]["wall"] for r in runs)
            tsks = sorted(r["tsk"] for r in runs)
            sm, tm = statistics.median(scans), statistics.median(tsks)
            print(f"over {len(runs)} runs: scan {scans[0]:.1f}-{scans[-1]:.1f} s (median "
                  f"{sm:.1f}), TSK way {tsks[0]:.1f}-{tsks[-1]:.1f} s (median {tm:.1f}); ratio "
                  f"of the medians {tm / sm:.2f}x, of the fastest of each "
                  f"{tsks[0] / scans[0]:.2f}x (goal >= 5x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
