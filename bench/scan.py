"""Benchmark of `triage scan` on a large synthetic device, raw and E01, against baselines run in
the same process on the same machine.

Prints, in one run:
  (a) wall time, MB/s and files/s of hashing + exact matching alone (--no-pictures) and of
      --mode full with picture features, raw and E01 (Ray start-up included);
  (b) peak RSS of every process of each scan (driver, Ray's own, each worker);
  (c) ratio of (a) to `md5sum IMAGE` (raw) and `ewfverify` (E01), for the whole command and for
      the pipeline alone (Ray ready -> last result stored, from the scan's JSON summary);
  (d) ratio of (a) to tsk_recover -a + hashdeep -c md5,sha1 -r + hashdeep -M alert, the same two
      ways;
  (e) pictures/s of --mode full against a bare Pillow draft + PDQ + pHash loop, same pictures,
      same number of processes;
  (f) speed-up from 1 to 2 workers;
  (g) time to the first KNOWN_MATCH flag in --mode triage against the end of --mode full;
  and (c), (d) again for a scan that joins an already running Ray (`ray start --head`, then
  `triage scan --address`), as a unit scanning all day would run it;
  (h) --mode full --model default against --mode full --model none, interleaved, with the
      model stage's pictures/s, the precision the run chose and why, for each CPU layout of the
      model actors in --model-layouts (ACTORSxTHREADS; the first is the default's) and each
      way of cutting pictures into model calls in --model-batching (batch, the scan's
      default; auto).

Usage:
  .venv/bin/python bench/scan.py [--fleet fixtures/bench-large] [--workers 2] [--no-e01]
  .venv/bin/python bench/scan.py --only-h [--model-layouts 1x1,2x1,1x2] [--model-precision auto]
                                          [--model-batching batch,auto]

The fleet is built with `triage synth --devices 1 --size large --seed 7` when missing.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from multiprocessing import Pool
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRIAGE = [sys.executable, "-m", "cli"] if not (ROOT / ".venv/bin/triage").exists() else [str(ROOT / ".venv/bin/triage")]


# --- process RSS sampling -----------------------------------------------------------------

def _children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            out.append(int(d))
    return out


def _tree(pid: int) -> list[int]:
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo.extend(_children(p))
    return seen


def _peak(pid: int) -> tuple[str, int]:
    name, hwm = "?", 0
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) * 1024
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmd = fh.read().split(b"\0")
        name = _role(cmd)
    except OSError:
        pass
    return name, hwm


def _role(cmd: list[bytes]) -> str:
    text = b" ".join(cmd).decode(errors="replace")
    for key, role in (("gcs_server", "ray gcs_server"), ("raylet", "ray raylet"),
                      ("dashboard", "ray dashboard"), ("log_monitor", "ray log_monitor"),
                      ("default_worker", "ray worker"), ("runtime_env", "ray runtime_env agent"),
                      ("ray::", "ray worker"), ("triage", "driver (triage scan)")):
        if key in text:
            return role
    return os.path.basename(cmd[0].decode(errors="replace")) if cmd and cmd[0] else "?"


class RssSampler(threading.Thread):
    """Samples VmHWM (the kernel's peak RSS) of a process tree until stopped."""

    def __init__(self, pid: int, every: float = 0.25):
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.peaks: dict[int, tuple[str, int]] = {}
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            for p in _tree(self.pid):
                name, hwm = _peak(p)
                if hwm and hwm >= self.peaks.get(p, ("", 0))[1]:
                    self.peaks[p] = (name, hwm)
            self._halt.wait(self.every)

    def stop(self) -> dict[str, list[int]]:
        self._halt.set()
        self.join()
        by_role: dict[str, list[int]] = {}
        for name, hwm in self.peaks.values():
            by_role.setdefault(name, []).append(hwm)
        return {k: sorted(v, reverse=True) for k, v in sorted(by_role.items())}


# --- runs ---------------------------------------------------------------------------------

def timed(cmd: list[str], **kw) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    return time.perf_counter() - t, proc


def scan(evidence: Path, hashsets: list[Path], workers: int, *extra: str, watch_flags: bool = False,
         env: dict | None = None) -> dict:
    case = Path(tempfile.mkdtemp(prefix="bench-case-"))
    cmd = TRIAGE + ["scan", "--case", str(case / "c"), "--json", "--workers", str(workers)]
    for h in hashsets:
        cmd += ["--hashset", str(h)]
    cmd += list(extra) + [str(evidence)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=None if env is None else dict(os.environ, **env))
    sampler = RssSampler(proc.pid)
    sampler.start()
    first_flag = None
    flags_file = case / "c" / "flags.jsonl"
    while proc.poll() is None:
        if watch_flags and first_flag is None and flags_file.exists():
            for line in flags_file.read_text().splitlines():
                if '"KNOWN_MATCH"' in line:
                    first_flag = time.perf_counter() - t0
                    break
        time.sleep(0.02)
    wall = time.perf_counter() - t0
    rss = sampler.stop()
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"scan failed ({proc.returncode}): {' '.join(cmd)}\n{err[-3000:]}")
    summary = json.loads(out)
    shutil.rmtree(case, ignore_errors=True)
    dev = summary["devices"][0]
    return {"wall": wall, "summary": summary, "rss": rss, "first_flag_watch": first_flag,
            "bytes": dev["bytes"], "files": dev["files"], "pictures": dev["pictures"],
            "alerts": dev["alert_matches"], "scored": dev.get("scored", 0),
            "model_skipped": dev.get("model_skipped", 0), "flags": dev.get("flags", 0)}


@contextmanager
def running_ray(cpus: int):
    """A Ray head started the README's way, in its own process group; yields its address."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp = Path("/tmp") / f"bench-ray-{port}"
    proc = subprocess.Popen([str(ROOT / ".venv/bin/ray"), "start", "--head", "--block",
                             f"--port={port}", f"--num-cpus={cpus}", "--include-dashboard=false",
                             "--disable-usage-stats", f"--temp-dir={temp}"],
                            env=dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_worker_niceness="0"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        time.sleep(2)
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        shutil.rmtree(temp, ignore_errors=True)


def mb(n: float) -> float:
    return n / 1e6


def work(r: dict) -> float:
    """Seconds from Ray ready to the last result stored: the pipeline, without Ray's own
    start-up and shut-down (and the interpreter's)."""
    s = r["summary"]
    if s.get("work_done_s") is None or s.get("ray_ready_s") is None:
        return r["wall"]
    return s["work_done_s"] - s["ray_ready_s"]


def line(label: str, r: dict) -> str:
    ready = r["summary"].get("ray_ready_s") or 0.0
    return (f"{label:<44} {r['wall']:7.1f} s  {mb(r['bytes']) / r['wall']:7.1f} MB/s  "
            f"{r['files'] / r['wall']:7.0f} files/s  ({r['files']} files, {r['pictures']} pictures, "
            f"{r['alerts']} alert matches; Ray ready after {ready:.1f} s, pipeline "
            f"{work(r):.1f} s = {mb(r['bytes']) / max(work(r), 1e-9):.0f} MB/s)")


def rss_lines(label: str, r: dict) -> list[str]:
    out = [f"  peak RSS, {label}:"]
    for role, peaks in r["rss"].items():
        shown = ", ".join(f"{p / 2**20:.0f}" for p in peaks[:6])
        more = f" (+{len(peaks) - 6} more)" if len(peaks) > 6 else ""
        out.append(f"    {role:<24} {len(peaks):2d} process(es): {shown}{more} MiB")
    return out


# --- baselines ----------------------------------------------------------------------------

def partitions(image: Path) -> list[int]:
    """Sector offsets of the file-system partitions (mmls), or [0] for a bare file system."""
    proc = subprocess.run(["mmls", "-a", str(image)], capture_output=True, text=True)
    if proc.returncode != 0:
        return [0]
    offs = []
    for ln in proc.stdout.splitlines():
        parts = ln.split()
        if len(parts) >= 5 and parts[0].rstrip(":").isdigit() and parts[2].isdigit():
            offs.append(int(parts[2]))
    return offs or [0]


def open_source_way(image: Path, alerts: list[tuple[int, str]], workers: int) -> dict:
    """tsk_recover -a, then hashdeep md5+sha1 over what it recovered, then hashdeep -M."""
    work = Path(tempfile.mkdtemp(prefix="bench-tsk-"))
    out = work / "recovered"
    t_rec = 0.0
    for i, off in enumerate(partitions(image)):
        dest = out / f"p{i}"
        dest.mkdir(parents=True)
        t, proc = timed(["tsk_recover", "-a", "-o", str(off), str(image), str(dest)])
        t_rec += t
    known = work / "alert.hashdeep"
    with open(known, "w") as fh:
        fh.write("%%%% HASHDEEP-1.0\n%%%% size,md5,filename\n## bench alert list\n##\n")
        for size, h in alerts:
            fh.write(f"{size},{h},alert\n")
    t_hash, _ = timed(["bash", "-c", f"hashdeep -c md5,sha1 -r -j{workers} {out} > /dev/null"])
    # hashdeep -M exits 1 whether or not anything matched
    t_match, _ = timed(["bash", "-c", f"hashdeep -c md5 -r -j{workers} -M -k {known} {out} "
                                      f"> {work}/hits.txt; true"])
    hits = len([ln for ln in (work / "hits.txt").read_text().splitlines() if ln.strip()])
    pictures = [p for p in out.rglob("*") if p.is_file() and _is_picture(p)]
    return {"recover": t_rec, "hash": t_hash, "match": t_match, "total": t_rec + t_hash + t_match,
            "hits": hits, "work": work, "pictures": pictures}


def _is_picture(path: Path) -> bool:
    from triage.filetype import is_picture, sniff
    try:
        with open(path, "rb") as fh:
            return is_picture(sniff(fh.read(64)))
    except OSError:
        return False


def _bare_one(path: str) -> int:
    """Pillow draft decode + PDQ + pHash of one picture, nothing else: the bare loop."""
    from PIL import Image

    from triage.features.pictures import pdq, phash
    with Image.open(path) as img:
        if img.format == "JPEG":
            img.draft("RGB", (256, 256))
        img = img.convert("RGB")
        pdq(img)
        phash(img)
    return 1


def bare_loop(pictures: list[Path], workers: int) -> float:
    t = time.perf_counter()
    with Pool(workers) as pool:
        n = sum(pool.imap_unordered(_bare_one, [str(p) for p in pictures], chunksize=8))
    return n / (time.perf_counter() - t)


# --- (h): the model stage -----------------------------------------------------------------

def walls(runs: list[dict]) -> str:
    return ", ".join(f"{r['wall']:.1f}" for r in runs)


def model_on_off(raw: Path, hs: list[Path], workers: int, layouts: list[str], precision: str,
                 repeat: int, batching: tuple[str, ...] = ("auto",),
                 reuse: tuple[str, ...] = ("on",)) -> None:
    """(h) --model default against --model none, interleaved, for each layout of the model
    actors, each way of cutting pictures into model calls (TRIAGE_MODEL_BATCH: auto, or
    batch, one call per decode batch as before) and with reuse of inputs scored already on
    and off (TRIAGE_MODEL_REUSE; off: every picture through the network, which times the
    network itself). The first model-on scan of a machine builds the precision cache; a
    warm-up scan does that first, so every timed one starts as a unit's second scan would."""
    from workers.model_batches import BATCH_ENV
    from workers.model_pool import LAYOUT_ENV, REUSE_ENV
    full = ("--mode", "full")
    model = ("--model", "default", "--model-precision", precision)
    contenders = [(lay, b, r) for lay in layouts for b in batching for r in reuse]
    name = {c: ", ".join([c[0]] + ([f"calls {c[1]}"] if len(batching) > 1 else [])
                         + [f"reuse {c[2]}"]) for c in contenders}
    warm = scan(raw, hs, workers, *full, *model, env={LAYOUT_ENV: layouts[0]})
    runtime = warm["summary"].get("model_runtime") or {}
    prec = runtime.get("precision") or {}
    print(f"(h) warm-up scan {warm['wall']:.1f} s; precision {prec.get('precision')} on "
          f"{prec.get('cpu')}: {prec.get('reason')}")
    for t in prec.get("tried", []):
        print(f"      {t['precision']:<5} passed={t.get('passed')} max|d|={t.get('max_delta', 0):.4f} "
              f"flips={len(t.get('flips') or [])} rate={t.get('rate')}/s "
              f"{'(cached)' if t.get('cached') else ''} {t.get('reason') or ''}")
    off_runs, on_runs = [], {c: [] for c in contenders}
    for _ in range(repeat):
        off_runs.append(scan(raw, hs, workers, *full, "--model", "none"))
        for c in contenders:
            on_runs[c].append(scan(raw, hs, workers, *full, *model,
                                   env={LAYOUT_ENV: c[0], BATCH_ENV: c[1], REUSE_ENV: c[2]}))
    off = min(off_runs, key=lambda r: r["wall"])
    print(line(f"(h) raw, --mode full --model none, {workers} workers", off))
    for c in contenders:
        on = min(on_runs[c], key=lambda r: r["wall"])
        extra = on["wall"] - off["wall"]
        rate = on["scored"] / extra if extra > 0 else float("inf")
        cut = (on["summary"].get("model_runtime") or {}).get("batching") or {}
        reused = cut.get("reused") or 0
        network = on["scored"] - reused
        net_rate = network / extra if extra > 0 else float("inf")
        print(line(f"(h) raw, --model default, actors x threads {name[c]}", on))
        print(f"(h) {name[c]}: model on / off = {on['wall'] / off['wall']:.2f}x the time (goal <= 2x; "
              f"runs {walls(on_runs[c])} s against {walls(off_runs)} s); {on['scored']} pictures "
              f"scored, {on['model_skipped']} skipped, in {extra:.1f} s over model-off = "
              f"{rate:.1f} pictures/s for the model stage (goal >= 72); {reused} answered "
              f"from inputs scored already, {network} through the network = {net_rate:.1f}/s; "
              f"{on['flags']} flags against {off['flags']}; {cut.get('calls')} model calls "
              f"({cut.get('mode')}), measured pictures/s by threads and size {cut.get('measured')}")


# --- main ---------------------------------------------------------------------------------

def split(values: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in values.split(",") if v.strip())


def ensure_fleet(fleet: Path) -> dict:
    if not (fleet / "truth.json").exists():
        print(f"building the large synthetic device in {fleet} (minutes) ...", flush=True)
        subprocess.run(TRIAGE + ["synth", "--out", str(fleet), "--devices", "1", "--size", "large",
                                 "--seed", "7", "--json"], check=True, stdout=subprocess.DEVNULL)
    return json.loads((fleet / "truth.json").read_text())


def ensure_e01(raw: Path, fleet: Path) -> Path:
    target = fleet / "e01" / raw.stem
    e01 = target.with_suffix(".E01")
    if not e01.exists():
        target.parent.mkdir(exist_ok=True)
        print("writing the E01 copy with ewfacquire ...", flush=True)
        subprocess.run(["ewfacquire", "-u", "-q", "-t", str(target), "-c", "deflate:fast",
                        "-f", "encase6", "-S", "1.4GiB", "-d", "sha1", str(raw)],
                       check=True, stdout=subprocess.DEVNULL)
    return e01


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fleet", type=Path, default=ROOT / "fixtures" / "bench-large")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-e01", action="store_true")
    ap.add_argument("--repeat", type=int, default=2,
                    help="hash-only runs (1 and N workers, interleaved) repeated; the fastest counts")
    ap.add_argument("--only-h", action="store_true", help="run only (h), the model stage")
    ap.add_argument("--model-layouts", default="1x1",
                    help="(h): model actor layouts ACTORSxTHREADS to time, comma-separated")
    ap.add_argument("--model-precision", default="auto", help="(h): --model-precision to pass")
    ap.add_argument("--model-batching", default="batch",
                    help="(h): TRIAGE_MODEL_BATCH values to time, comma-separated (batch: one "
                         "call per decode batch, the scan's default; auto: sized by the "
                         "measured rate)")
    ap.add_argument("--model-reuse", default="on,off",
                    help="(h): TRIAGE_MODEL_REUSE values to time, comma-separated (on, the "
                         "scan's default: a picture whose model input was scored already is "
                         "not sent again; off: every picture through the network)")
    args = ap.parse_args()
    w = args.workers
    truth = ensure_fleet(args.fleet)
    dev = truth["devices"][0]
    raw = args.fleet / dev["evidence"]
    if dev["format"] != "raw":
        raise SystemExit(f"the benchmark needs a raw first device, got {dev['format']}")
    alerts = [args.fleet / truth["hashsets"]["alert_vics"]]
    hs = alerts + [args.fleet / truth["hashsets"]["nsrl"]]
    alert_md5s = [(a["size"], a["md5"]) for a in truth["alerts"]]
    size = raw.stat().st_size
    print(f"device: {raw} ({size / 1e9:.2f} GB, {dev['files']} files planned), workers={w}, "
          f"cpus={os.cpu_count()}")
    layouts = [lay.strip() for lay in args.model_layouts.split(",") if lay.strip()]
    if args.only_h:
        subprocess.run(["cat", str(raw)], stdout=subprocess.DEVNULL)
        model_on_off(raw, hs, w, layouts, args.model_precision, max(1, args.repeat - 1),
                     split(args.model_batching), split(args.model_reuse))
        return

    # warm the page cache once so every contender reads from memory
    subprocess.run(["cat", str(raw)], stdout=subprocess.DEVNULL)
    t_md5 = min(timed(["md5sum", str(raw)])[0] for _ in range(2))
    print(f"md5sum IMAGE                                  {t_md5:7.1f} s  {mb(size) / t_md5:7.1f} MB/s")

    results = {}
    # the short hash-only runs alternate 1 and N workers, so load from other processes on a
    # shared machine hits both alike; the fastest of each counts
    pairs = [(scan(raw, hs, w, "--mode", "full", "--no-pictures"),
              scan(raw, hs, 1, "--mode", "full", "--no-pictures")) for _ in range(args.repeat)]
    results["hash_w"] = min((p[0] for p in pairs), key=lambda r: r["wall"])
    results["hash_1"] = min((p[1] for p in pairs), key=lambda r: r["wall"])
    print(line(f"(a) raw, hash+match only, {w} workers", results["hash_w"]))
    results["full_w"] = scan(raw, hs, w, "--mode", "full")
    print(line(f"(a) raw, --mode full + pictures, {w} workers", results["full_w"]))
    print(line("(f) raw, hash+match only, 1 worker", results["hash_1"]))
    results["full_1"] = scan(raw, hs, 1, "--mode", "full")
    print(line("(f) raw, --mode full + pictures, 1 worker", results["full_1"]))
    # the device holds 5 exact alert items: --stop-after 5 lets triage mode stop after the
    # picture pass, as it would on a device with 10 or more
    results["triage_w"] = scan(raw, hs, w, "--mode", "triage", "--stop-after",
                               str(min(10, max(1, truth["devices"][0]["expect"]["exact_matches"]))),
                               watch_flags=True)
    print(line(f"(g) raw, --mode triage, {w} workers", results["triage_w"])
          + (" stopped early" if results["triage_w"]["summary"]["devices"][0]["stopped_early"] else ""))

    print("(b) peak RSS per process")
    for key in ("hash_w", "full_w"):
        for ln in rss_lines(key, results[key]):
            print(ln)

    print(f"(c) hash+match / md5sum: {results['hash_w']['wall'] / t_md5:.2f}x the time with a "
          f"fresh Ray started and stopped (goal <= 1.2x); pipeline alone (Ray ready -> results "
          f"stored) {work(results['hash_w']) / t_md5:.2f}x; "
          f"full / md5sum: {results['full_w']['wall'] / t_md5:.2f}x")

    # the fastest of as many runs as the scan had, so neither side gains from noise
    runs = [open_source_way(raw, alert_md5s, w) for _ in range(args.repeat)]
    oss = min(runs, key=lambda r: r["total"])
    for r in runs:
        if r is not oss:
            shutil.rmtree(r["work"], ignore_errors=True)
    totals = ", ".join(f"{r['total']:.1f}" for r in runs)
    print(f"(d) tsk_recover -a {oss['recover']:.1f} s + hashdeep md5,sha1 {oss['hash']:.1f} s + "
          f"hashdeep -M {oss['match']:.1f} s = {oss['total']:.1f} s ({oss['hits']} hits; fastest "
          f"of {len(runs)}: {totals} s); "
          f"triage hash+match is {oss['total'] / results['hash_w']['wall']:.2f}x faster (goal >= 3x) "
          f"with a fresh Ray, {oss['total'] / work(results['hash_w']):.2f}x for the pipeline alone; "
          f"full {oss['total'] / results['full_w']['wall']:.2f}x")

    pics = oss["pictures"]
    bare = bare_loop(pics, w)
    n_pics = results["full_w"]["pictures"]
    extra = results["full_w"]["wall"] - results["hash_w"]["wall"]
    pipe_rate = n_pics / extra if extra > 0 else float("inf")
    print(f"(e) bare loop (draft + PDQ + pHash, {w} processes): {bare:.1f} pictures/s on "
          f"{len(pics)} pictures; scan picture stage: {n_pics} pictures in {extra:.1f} s over "
          f"hash-only = {pipe_rate:.1f} pictures/s = {pipe_rate / bare:.0%} of the bare loop "
          f"(goal >= 80%)")
    shutil.rmtree(oss["work"], ignore_errors=True)

    with running_ray(w) as address:
        warm = min((scan(raw, hs, w, "--mode", "full", "--no-pictures", "--address", address)
                    for _ in range(args.repeat)), key=lambda r: r["wall"])
    print(line(f"(a) raw, hash+match only, running Ray ({w} CPUs)", warm))
    print(f"(c) with a running Ray: hash+match / md5sum {warm['wall'] / t_md5:.2f}x the time "
          f"(goal <= 1.2x), pipeline alone {work(warm) / t_md5:.2f}x; (d) "
          f"{oss['total'] / warm['wall']:.2f}x faster than the open-source way (goal >= 3x), "
          f"pipeline alone {oss['total'] / work(warm):.2f}x")

    print(f"(f) 1 -> {w} workers: hash+match {results['hash_1']['wall'] / results['hash_w']['wall']:.2f}x, "
          f"full {results['full_1']['wall'] / results['full_w']['wall']:.2f}x (goal >= 1.6x)")

    ff = results["triage_w"]["first_flag_watch"]
    if ff is None:
        print("(g) no KNOWN_MATCH flag seen in triage mode")
    else:
        print(f"(g) first KNOWN_MATCH flag after {ff:.1f} s (Ray start-up included) = "
              f"{ff / results['full_w']['wall']:.0%} of the --mode full scan "
              f"({results['full_w']['wall']:.1f} s) (goal < 10%)")

    model_on_off(raw, hs, w, layouts, args.model_precision, 1, split(args.model_batching),
                 split(args.model_reuse))

    if not args.no_e01:
        e01 = ensure_e01(raw, args.fleet)
        t_ewf, _ = timed(["ewfverify", "-q", str(e01)])
        print(f"ewfverify E01                                 {t_ewf:7.1f} s")
        results["e01_hash"] = scan(e01, hs, w, "--mode", "full", "--no-pictures")
        print(line(f"(a) E01, hash+match only, {w} workers", results["e01_hash"]))
        results["e01_full"] = scan(e01, hs, w, "--mode", "full")
        print(line(f"(a) E01, --mode full + pictures, {w} workers", results["e01_full"]))
        for ln in rss_lines("E01 hash", results["e01_hash"]):
            print(ln)
        print(f"(c) E01 hash+match / ewfverify: {results['e01_hash']['wall'] / t_ewf:.2f}x the time "
              f"(goal <= 1.25x); pipeline alone {work(results['e01_hash']) / t_ewf:.2f}x")


if __name__ == "__main__":
    main()
