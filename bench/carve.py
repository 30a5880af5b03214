"""Benchmark of the carver (triage/carve.py) on synthetic free space, against baselines run in
the same process on the same bytes.

Builds one raw file of random fill (incompressible, like used-then-freed space) with a few
hundred synthetic pictures (JPEG, PNG) written at sector starts: most contiguous, some in two
pieces with foreign bytes between them. Then prints:
  (a) triage's carve rate (MB/s of free space, the file read through the evidence layer's raw
      reader as a scan reads a raw device) and recall (contiguous, fragmented), and peak RSS;
      medians of --repeat runs interleaved with (c), wall and CPU (user + sys) seconds: on a
      shared machine the CPU seconds move less with the load than the wall ones;
  (b) the header search alone, three ways over the same mapped windows: triage's numpy test of
      each sector's first bytes, `bytes.find` for every signature at any offset, and Hyperscan
      (the PyPI `hyperscan` binding, when importable: pass --hyperscan-path to a folder it is
      installed in; it is not a dependency of triage) with the same signatures;
  (c) foremost, scalpel and photorec (Debian packages) on the same file, where installed: time
      (wall and CPU) and recall on the same types, each as a ratio to triage.

With --device, on the large bench device instead (bench/scan.py's, `triage synth --size large`,
built into fixtures/bench-large when missing): a copy of it gets --pictures pictures written
into its ext4 volume's free blocks (some in two pieces) and then
  (d) `triage scan --mode full` with and without `--no-carve`, one after the other: the time
      carving adds (goal: at most 30%), recall of the planted pictures, and the peak RSS of
      the scan's workers (goal: flat, the same with carving as without);
  (e) the carving engines alone, --repeat times each, interleaved, medians: triage's carver on
      the volume's free runs as a scan reads them (`carve_volume`: the allocation map, the
      evidence layer's mapped views), and on the same bytes as one file (`blkls` of the volume);
      foremost, scalpel and photorec on that file, time and recall, as ratios to triage's.
      --skip-scan leaves out (d).

Usage:
  .venv/bin/python bench/carve.py [--size-mb 512] [--pictures 300] [--repeat 5]
                                   [--hyperscan-path DIR]
  .venv/bin/python bench/carve.py --device [--pictures 300] [--fragmented 30] [--repeat 5]
                                   [--skip-scan]
"""
from __future__ import annotations

import argparse
import hashlib
import mmap
import os
import random
import resource
import statistics
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from triage import carve  # noqa: E402
from triage.carve import CarveReport, Space, header_sectors  # noqa: E402

SECTOR = 512
SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8", b"BM", b"RIFF", b"ftyp",
              b"\x1a\x45\xdf\xa3", b"\x30\x26\xb2\x75", b"FLV\x01")


def make_fill(path: Path, size: int, pictures: int, fragmented: int, seed: int):
    """The free space: random bytes, pictures at sector starts. Returns (contiguous, fragmented)
    lists of (offset, md5)."""
    from triage.synth import pictures as pics
    rng = random.Random(seed)
    gen = np.random.default_rng(seed)
    with open(path, "wb") as fh:
        left = size
        while left:
            n = min(left, 64 << 20)
            fh.write(gen.integers(0, 256, n, dtype=np.uint8).tobytes())
            left -= n
    slots = sorted(rng.sample(range(64, size // SECTOR - 4096, 97), pictures + fragmented))
    whole, split = [], []
    with open(path, "r+b") as fh:
        for k, slot in enumerate(slots):
            img = pics.benign_picture(seed * 1000 + k, "carve", 320 + 8 * (k % 20), 240)
            data = pics.encode(img, "png" if k % 5 == 0 else "jpeg")
            at = slot * SECTOR
            if k < pictures:
                fh.seek(at)
                fh.write(data)
                whole.append((at, hashlib.md5(data).hexdigest()))
            else:       # two pieces, 64 KiB of foreign bytes between them
                cut = (len(data) // 2) // SECTOR * SECTOR
                fh.seek(at)
                fh.write(data[:cut])
                fh.seek(at + cut + 65536)
                fh.write(data[cut:])
                split.append((at, hashlib.md5(data).hexdigest()))
    return whole, split


def triage_carve(path: Path):
    """(found {offset: md5}, wall seconds, report, CPU seconds) of triage's carver on a file as
    one free run, read through the evidence layer's raw reader (mapped windows, released
    after each) as a scan reads a raw device; the hashing of what it found is not timed."""
    from triage.evidence import RawSource
    src = RawSource([str(path)])
    try:
        space = Space(src.read, src.size, src.view, src.release)
        report = CarveReport()
        t0, c0 = time.perf_counter(), time.process_time()
        items = list(carve.carve(space, [(0, src.size)], report))
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        found = {c.offset: hashlib.md5(src.read(c.offset, c.length)).hexdigest() for c in items}
    finally:
        src.close()
    return found, secs, report, cpu


def header_search(path: Path, hyperscan_path: str | None):
    """Seconds for each header search over the same 32 MiB mapped windows."""
    out = {}
    with open(path, "rb") as fh:
        m = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        size = len(m)
        win = carve.WINDOW

        def windows():
            for at in range(0, size - size % SECTOR, win):
                yield memoryview(m)[at:at + min(win, size - at)]

        for _ in windows():          # warm the page cache for every method alike
            pass
        t0 = time.perf_counter()
        hits = sum(len(header_sectors(w)) for w in windows())
        out["numpy, sector starts (triage)"] = (time.perf_counter() - t0, hits)
        t0 = time.perf_counter()
        hits = 0
        for at in range(0, size, win):          # mmap.find: bytes.find on the mapping, no copy
            end = min(size, at + win)
            for sig in SIGNATURES:
                i = m.find(sig, at, end)
                while i >= 0:
                    hits += 1
                    i = m.find(sig, i + 1, end)
        out["bytes.find (mmap.find), any offset"] = (time.perf_counter() - t0, hits)
        if hyperscan_path:
            sys.path.insert(0, hyperscan_path)
            try:
                import hyperscan
            except ImportError as exc:
                out["hyperscan"] = (None, f"not importable: {exc}")
            else:
                db = hyperscan.Database()
                db.compile(expressions=[b"".join(b"\\x%02x" % c for c in s) for s in SIGNATURES],
                           ids=list(range(len(SIGNATURES))),
                           flags=[0] * len(SIGNATURES))
                count = [0]

                def on(_id, _frm, _to, _flags, _ctx):
                    count[0] += 1
                    return None
                t0 = time.perf_counter()
                for w in windows():
                    db.scan(bytes(w), match_event_handler=on)      # the binding takes bytes
                out["hyperscan (copy per window included), any offset"] = (time.perf_counter() - t0, count[0])
    return out          # the mapping goes with its last view


def baseline(tool: str, path: Path, work: Path):
    """(seconds, carved md5s, CPU seconds) of one Debian carver on the file, or None when not
    installed."""
    exe = shutil.which(tool)
    if exe is None:
        return None
    out = work / tool
    if tool == "foremost":
        cmd = [exe, "-q", "-t", "jpg,png", "-o", str(out), "-i", str(path)]
    elif tool == "scalpel":
        conf = work / "scalpel.conf"
        conf.write_text("jpg y 20000000 \\xff\\xd8\\xff \\xff\\xd9\n"
                        "png y 20000000 \\x89PNG\\x0d\\x0a\\x1a\\x0a IEND\\xae\\x42\\x60\\x82\n")
        cmd = [exe, "-c", str(conf), "-o", str(out), str(path)]
    else:
        cmd = [exe, "/log", "/d", str(out), "/cmd", str(path),
               "partition_none,fileopt,everything,disable,jpg,enable,png,enable,search"]
    t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, capture_output=True, timeout=3600, cwd=work)
    secs, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    md5s = set()
    for p in work.rglob("*"):          # photorec adds ".1" etc. to the folder it is given
        if p.is_file() and str(p).startswith(str(out)) and p.suffix.lower() in (".jpg", ".png"):
            md5s.add(hashlib.md5(p.read_bytes()).hexdigest())
    return secs, md5s, cpu


def plant_in_free_space(raw: Path, pictures: int, fragmented: int, seed: int):
    """Writes pictures into the free blocks of `raw`'s volumes (block starts, each inside one
    free run; a two-piece one has 64 KiB of the run between its halves). Returns (contiguous,
    fragmented) lists of md5s, and the volumes' (offset, fs_type) that hold them."""
    from triage.device import discover
    from triage.evidence import open_evidence
    from triage.filesystems import free_runs, resolver
    from triage.synth import pictures as pics
    rng = random.Random(seed)
    gen = np.random.default_rng(seed)
    slots, runs = [], []
    with open_evidence([str(raw)]) as ev:
        vols, _ = discover(ev)
        for v in vols:
            if not v.fs_type:
                continue
            for start, n in free_runs(ev, v.offset, v.fs_type, resolver(ev).fs(v.offset)):
                runs.append((v.offset + start, n))
                slots += [(v.offset + start + k, v.offset, v.fs_type)
                          for k in range(0, n - 1024 * 1024, 1024 * 1024)]
    # freed space holds what was there before, not zeros: random fill, as on a used disk
    with open(raw, "r+b") as fh:
        for at, n in runs:
            for k in range(0, n, 64 << 20):
                fh.seek(at + k)
                fh.write(gen.integers(0, 256, min(64 << 20, n - k), dtype=np.uint8).tobytes())
    chosen = rng.sample(slots, min(len(slots), pictures + fragmented))
    whole, split, vols_used = [], [], set()
    with open(raw, "r+b") as fh:
        for k, (at, voff, fs) in enumerate(chosen):
            img = pics.benign_picture(seed * 1000 + k, "carve", 320 + 8 * (k % 20), 240)
            data = pics.encode(img, "png" if k % 5 == 0 else "jpeg")
            vols_used.add((voff, fs))
            if k < pictures:
                fh.seek(at)
                fh.write(data)
                whole.append(hashlib.md5(data).hexdigest())
            else:
                cut = (len(data) // 2) // 4096 * 4096 or len(data) // 2
                fh.seek(at)
                fh.write(data[:cut])
                fh.seek(at + cut + 65536)
                fh.write(data[cut:])
                split.append(hashlib.md5(data).hexdigest())
    return whole, split, sorted(vols_used)


def carve_device(raw: Path, vols):
    """(seconds, md5s, CPU seconds) of triage's carver on the volumes' free space as a scan
    carves it: the allocation map's free runs, read through the evidence layer."""
    from triage.carve import carve_volume
    from triage.device import discover
    from triage.evidence import open_evidence
    from triage.filesystems import read_chunks
    with open_evidence([str(raw)]) as ev:
        found = []
        targets = [v for v in discover(ev)[0] if (v.offset, v.fs_type) in set(map(tuple, vols))]
        t0, c0 = time.perf_counter(), time.process_time()
        for v in targets:
            found += list(carve_volume(ev, v, [], []))
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        md5s = set()
        for rec in found:
            h = hashlib.md5()
            for chunk in read_chunks(ev, rec.prov):
                h.update(chunk)
            md5s.add(h.hexdigest())
    return secs, md5s, cpu


def scan_mode(args, work: Path, raw: Path, alert: Path, whole, split, free_mb: float) -> None:
    """(d): `triage scan --mode full` with and without carving, interleaved, twice each."""
    from manyfiles import _hwm
    from scan import TRIAGE

    def scan(carving: bool):
        case = work / f"case-{'carve' if carving else 'nocarve'}"
        shutil.rmtree(case, ignore_errors=True)
        cmd = TRIAGE + ["scan", "--case", str(case), "--mode", "full", "--workers", "2",
                        "--hashset", str(alert), "--json", str(raw)]
        if not carving:
            cmd.append("--no-carve")
        peak = [0, 0]      # VmHWM (mapped evidence pages included), and RssAnon sampled
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        t0 = time.perf_counter()
        while proc.poll() is None:
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    try:
                        with open(f"/proc/{pid}/cmdline", "rb") as fh:
                            if not fh.read(40).startswith(b"ray::"):
                                continue
                        peak[0] = max(peak[0], _hwm(int(pid)))
                        with open(f"/proc/{pid}/status") as fh:
                            for line in fh:
                                if line.startswith("RssAnon:"):
                                    peak[1] = max(peak[1], int(line.split()[1]) * 1024)
                    except OSError:
                        pass
            time.sleep(0.1)
        secs = time.perf_counter() - t0
        proc.communicate()
        from triage.store import CaseStore
        with CaseStore(case, create=False) as store:
            md5s = {f.md5 for _, f in store.files() if f.md5}
        return secs, md5s, peak

    # interleaved, twice each: the faster of each counts (machine load moves both alike)
    runs_off, runs_on = [], []
    for _ in range(2):
        runs_off.append(scan(False))
        runs_on.append(scan(True))
    t_off, md5_off, rss_off = min(runs_off, key=lambda r: r[0])
    t_on, md5_on, rss_on = min(runs_on, key=lambda r: r[0])
    rss_off = [max(r[2][i] for r in runs_off) for i in (0, 1)]
    rss_on = [max(r[2][i] for r in runs_on) for i in (0, 1)]
    added = t_on - t_off
    rw = sum(1 for h in whole if h in md5_on) / max(1, len(whole))
    rs = sum(1 for h in split if h in md5_on) / max(1, len(split))
    rate = f"{free_mb / added:.0f} MB/s of free space" if added > 0.5 else "within noise"
    print(f"(d) scan --mode full, fastest of 2 interleaved: {t_off:.1f} s without carving "
          f"{[round(r[0], 1) for r in runs_off]}, {t_on:.1f} s with {[round(r[0], 1) for r in runs_on]}: "
          f"carving adds {added:.1f} s = {100 * added / t_off:.0f}% (goal <= 30%), {rate}; recall contiguous {rw:.3f}, two-piece {rs:.3f}; workers' peak "
          f"RSS {rss_off[0] / 2**20:.0f} MiB without, {rss_on[0] / 2**20:.0f} MiB with (mapped "
          f"evidence pages included); anonymous {rss_off[1] / 2**20:.0f} MiB without, "
          f"{rss_on[1] / 2**20:.0f} MiB with")


def device_mode(args) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from scan import ensure_fleet
    fleet = ROOT / "fixtures" / "bench-large"
    truth = ensure_fleet(fleet)
    src = fleet / truth["devices"][0]["evidence"]
    work = Path(args.work or tempfile.mkdtemp(prefix="carve-device-"))
    work.mkdir(parents=True, exist_ok=True)
    raw = work / "device.raw"
    subprocess.run(["cp", "--sparse=always", str(src), str(raw)], check=True)
    whole, split, vols = plant_in_free_space(raw, args.pictures, args.fragmented, args.seed)
    alert = fleet / truth["hashsets"]["alert_vics"]
    subprocess.run(["cat", str(raw)], stdout=subprocess.DEVNULL)       # page cache, for all alike

    free = work / "free.bin"
    t0 = time.perf_counter()
    with open(free, "wb") as out:
        for voff, _fs in vols:
            # written 64 MiB at a time, as an imaging tool writes: blkls's own 4 KiB writes
            # leave the file in the page cache as small folios, and mapping those took triage
            # 30 times the page faults (7,205 against 234) and 2.5 times the CPU; foremost
            # reads with read() and is the same either way
            proc = subprocess.Popen(["blkls", "-o", str(voff // SECTOR), str(raw)],
                                    stdout=subprocess.PIPE)
            while chunk := proc.stdout.read(64 << 20):
                out.write(chunk)
            if proc.wait() != 0:
                raise SystemExit("blkls failed")
    t_blkls = time.perf_counter() - t0
    free_mb = free.stat().st_size / 1e6
    print(f"device: {src.name} copy, {len(whole)} contiguous + {len(split)} two-piece pictures "
          f"planted in {free_mb:.0f} MB of free space; load average {os.getloadavg()[0]:.2f}")
    if not args.skip_scan:
        scan_mode(args, work, raw, alert, whole, split, free_mb)
    # the carving engines alone: triage's as a scan carves (the volume's free runs through the
    # evidence layer), and every engine on the same bytes as one file (blkls of the volume)
    subprocess.run(["cat", str(free)], stdout=subprocess.DEVNULL)
    tools = [t for t in ("foremost", "scalpel", "photorec") if shutil.which(t)]
    times: dict = {k: [] for k in ["volume", "file"] + tools}
    cpus: dict = {k: [] for k in times}
    got: dict = {}
    for _ in range(args.repeat):
        secs, got["volume"], cpu = carve_device(raw, vols)
        times["volume"].append(secs)
        cpus["volume"].append(cpu)
        found, secs, _report, cpu = triage_carve(free)
        times["file"].append(secs)
        cpus["file"].append(cpu)
        got["file"] = set(found.values())
        run_baselines(tools, free, work, times, cpus, got)
    med = {k: statistics.median(v) for k, v in times.items()}
    mcpu = {k: statistics.median(v) for k, v in cpus.items()}

    def recall(md5s):
        return (sum(1 for h in whole if h in md5s) / max(1, len(whole)),
                sum(1 for h in split if h in md5s) / max(1, len(split)))

    print(f"(e) the carving engines alone, median of {args.repeat} interleaved runs (wall; CPU "
          f"user+sys), load average {os.getloadavg()[0]:.2f} after (blkls {t_blkls:.1f} s):")
    for key, label in (("volume", "triage, the volume's free runs (carve_volume, as a scan)"),
                       ("file", "triage, the blkls file (the raw reader)")):
        rw, rs = recall(got[key])
        print(f"    {label}: {med[key]:.3f} s ({free_mb / med[key]:.0f} MB/s) "
              f"{[round(t, 3) for t in times[key]]}; CPU {mcpu[key]:.3f} s; recall contiguous "
              f"{rw:.3f}, two-piece {rs:.3f}")
    for tool in ("foremost", "scalpel", "photorec"):
        if tool not in tools:
            print(f"    {tool}: not installed (make bench-carve installs it)")
            continue
        rw, rs = recall(got[tool])
        print(f"    {tool}: {med[tool]:.3f} s {[round(t, 3) for t in times[tool]]}; CPU "
              f"{mcpu[tool]:.3f} s; recall contiguous {rw:.3f}, two-piece {rs:.3f}; "
              f"{med[tool] / med['volume']:.1f}x triage's time on the volume "
              f"({mcpu[tool] / mcpu['volume']:.1f}x its CPU), {med[tool] / med['file']:.1f}x on "
              f"the file ({mcpu[tool] / mcpu['file']:.1f}x)"
              + (" (goal >= 3x)" if tool == "foremost" else ""))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


def run_baselines(tools, path: Path, work: Path, times: dict, cpus: dict, got: dict) -> None:
    """One run of each baseline tool on `path`: its wall and CPU seconds appended, what it
    carved (MD5s) in `got`; each writes into a folder of its own, removed after."""
    for tool in tools:
        out = Path(tempfile.mkdtemp(prefix=f"{tool}-", dir=work))
        secs, got[tool], cpu = baseline(tool, path, out)
        times[tool].append(secs)
        cpus[tool].append(cpu)
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mb", type=int, default=512)
    ap.add_argument("--pictures", type=int, default=300)
    ap.add_argument("--fragmented", type=int, default=30)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--hyperscan-path", default=None)
    ap.add_argument("--work", default=None)
    ap.add_argument("--device", action="store_true", help="on the large bench device (see above)")
    ap.add_argument("--repeat", type=int, default=5, help="runs of each engine in (e); medians")
    ap.add_argument("--skip-scan", action="store_true", help="with --device: (e) only, no (d)")
    args = ap.parse_args()
    if args.device:
        device_mode(args)
        return
    work = Path(args.work or tempfile.mkdtemp(prefix="carve-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    path = work / "free.raw"
    size = args.size_mb << 20
    whole, split = make_fill(path, size, args.pictures, args.fragmented, args.seed)
    tools = [t for t in ("foremost", "scalpel", "photorec") if shutil.which(t)]
    times: dict = {k: [] for k in ["triage"] + tools}
    cpus: dict = {k: [] for k in times}
    got_tool: dict = {}
    for _ in range(args.repeat):            # interleaved: machine load moves all alike
        found, t, report, cpu = triage_carve(path)
        times["triage"].append(t)
        cpus["triage"].append(cpu)
        run_baselines(tools, path, work, times, cpus, got_tool)
    med = {k: statistics.median(v) for k, v in times.items()}
    mcpu = {k: statistics.median(v) for k, v in cpus.items()}
    secs = med["triage"]
    mb = size / 1e6
    got = set(found.items())
    rec_whole = sum(1 for x in whole if x in got) / max(1, len(whole))
    rec_split = sum(1 for x in split if x in got) / max(1, len(split))
    print(f"free space: {args.size_mb} MiB random fill, {len(whole)} contiguous + {len(split)} "
          f"two-piece pictures (JPEG, PNG)")
    print(f"(a) triage, median of {args.repeat}: {secs:.3f} s {[round(x, 3) for x in times['triage']]}, "
          f"CPU {mcpu['triage']:.3f} s, {mb / secs:.0f} MB/s, recall contiguous {rec_whole:.3f}, "
          f"two-piece {rec_split:.3f}; {report.candidates} candidates, {report.carved} carved; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    print("(b) header search over the same mapped windows:")
    searches = header_search(path, args.hyperscan_path)
    base = searches["numpy, sector starts (triage)"][0]
    for name, (t, hits) in searches.items():
        if t is None:
            print(f"    {name}: {hits}")
        else:
            print(f"    {name}: {t:.2f} s ({mb / t:.0f} MB/s, {hits} hits), {t / base:.1f}x triage's")
    print(f"(c) Debian carvers on the same file (JPEG, PNG), medians of {args.repeat} "
          f"interleaved with (a); load average {os.getloadavg()[0]:.2f}:")
    for tool in ("foremost", "scalpel", "photorec"):
        if tool not in tools:
            print(f"    {tool}: not installed (apt-get install {'testdisk' if tool == 'photorec' else tool})")
            continue
        t, md5s = med[tool], got_tool[tool]
        rw = sum(1 for _, h in whole if h in md5s) / max(1, len(whole))
        rs = sum(1 for _, h in split if h in md5s) / max(1, len(split))
        print(f"    {tool}: {t:.3f} s ({mb / t:.0f} MB/s, {t / secs:.1f}x triage's time; CPU "
              f"{mcpu[tool]:.3f} s, {mcpu[tool] / mcpu['triage']:.1f}x), recall contiguous "
              f"{rw:.3f}, two-piece {rs:.3f}")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
