"""Benchmark of the review service (`triage serve`): queue and device JSON under concurrent load.

    .venv/bin/python bench/serve.py [--devices 200] [--files 1000000] [--clients 20]
                                    [--requests 2000] [--seconds 120] [--think 0] [--work DIR] [--quick]

1. Builds a case of --devices devices and --files file rows (records written through the case
   store's own API, as a scan stores them) with synthetic findings: per device 0-6 exact alert
   matches, 0-2 near matches, 0-3 model-suspected pictures, their flags, thumbnails (generated
   gradients), context with custody deadlines. Kept in --work and reused when it is there.
2. Starts `triage serve` on 127.0.0.1 (uvicorn, the real entry point) and logs --clients users
   in (argon2, not timed).
3. Baseline, in the same run: what one queue request costs without the service's cache
   (`rank.verdicts` over the whole case, as `triage queue` computes it), in this process.
4. A cold pass (one client: the queue, then each device once) warms the per-device cache and
   is reported on its own. Phase "quiet": --clients concurrent clients (asyncio + httpx, one connection each), a bounded
   loop of --requests requests in all (or --seconds, whichever ends first), alternating
   GET /api/queue and GET /api/devices/{a random device}.
5. Phase "scan": the same load while `triage scan` scans the small synthetic fleet into another
   case, over and over, on the same machine.
Prints per phase and endpoint: requests, p50/p95/p99 latency, requests/s; the goal (p95 under
100 ms for both JSON endpoints while a scan runs); the server's peak RSS (VmHWM) and this
process's. Loopback only.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from triage.flags import FlagSink, rules_for_batch  # noqa: E402
from triage.records import (EvidenceRef, Features, FileRecord, Match, Provenance,  # noqa: E402
                            Score, VolumeRef)
from triage.store import CaseStore, file_rows, is_case  # noqa: E402

VOL = 1048576
PASSWORD = "bench-password-1"
SET = {"name": "caid-bench", "version": "2026-12", "role": "alert", "scheme": "uk-caid"}
SEVERITY = {"1": 3, "2": 2, "3": 1}


def _thumbs(n: int = 8) -> list[bytes]:
    """Small JPEG stand-ins: Pillow's radial gradient, turned and tinted per seed."""
    from PIL import Image, ImageOps

    out = []
    for seed in range(n):
        grey = Image.radial_gradient("L").rotate(seed * 40).resize((96, 72))
        img = ImageOps.colorize(grey, (seed * 30 % 256, 40, 90), (250, 200, seed * 50 % 256))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=75)
        out.append(buf.getvalue())
    return out


def build_case(case: Path, devices: int, files: int, seed: int = 1) -> float:
    """The synthetic case; returns seconds taken."""
    import hashlib

    t0 = time.monotonic()
    rng = random.Random(seed)
    per_device = files // devices
    thumbs = _thumbs()
    store = CaseStore(case, create=True)
    run = store.begin_run(tool_version="bench", hashsets=[SET], model=None, operator="bench",
                          options={"bench": True})
    sink = FlagSink(case, store)
    now = time.time()
    for d in range(devices):
        dev = f"bench{d:03d}.raw"
        ref = EvidenceRef(device_id=dev, paths=(f"/evidence/{dev}",), format="raw",
                          media_size=64 * 2**30, stored_hashes={})
        deadline = time.strftime("%Y-%m-%d", time.gmtime(now + rng.randint(-2, 30) * 86400))
        context = {"evidence": dev, "exhibit": f"EX/{d:03d}", "suspect": f"S{d}",
                   "access_to_children": rng.choice(["none", "lives_with", "unknown", "works_with"]),
                   "custody_deadline": deadline, "notes": ""}
        store.upsert_device(ref, context=context)
        store.device_started(dev, now)
        store.add_volumes([VolumeRef(dev, 0, VOL, 60 * 2**30, "NTFS", "ntfs", block_size=4096)])
        n_exact, n_near, n_susp = d % 7, d % 3, d % 4
        n_pics = n_exact + n_near + n_susp + 30
        items, matches, scores = [], [], []
        for i in range(per_device):
            picture = i < n_pics
            path = (f"/Users/u{d}/Pictures/IMG_{i:05d}.jpg" if picture
                    else f"/Users/u{d}/Documents/{i // 500:03d}/doc_{i:05d}.txt")
            rec = FileRecord(prov=Provenance(device_id=dev, volume_offset=VOL, inode=64 + i, path=path),
                             name=path.rsplit("/", 1)[1], size=1000 + i, allocated=i % 17 != 0,
                             fs_type="ntfs", mtime=1.7e9 + i, atime=1.7e9 + i, ctime=1.7e9 + i,
                             crtime=1.7e9, type="image/jpeg" if picture else "text/plain")
            digest = hashlib.md5(f"{dev}/{i}".encode()).hexdigest()
            feat = Features(key=rec.key, size=rec.size, md5=digest,
                            sha1=hashlib.sha1(digest.encode()).hexdigest(), type=rec.type,
                            is_picture=picture, width=640 if picture else 0,
                            height=480 if picture else 0,
                            pdq="ab" * 32 if picture else "", pdq_quality=90 if picture else 0,
                            thumbnail=thumbs[i % len(thumbs)] if picture else b"")
            items.append((rec, feat))
            if i < n_exact:
                cat = str(1 + i % 3)
                matches.append(Match(rec.key, "exact", "md5", digest, SET["name"], SET["version"],
                                     "alert", cat, SEVERITY[cat]))
            elif i < n_exact + n_near:
                matches.append(Match(rec.key, "near", "pdq", feat.pdq, SET["name"], SET["version"],
                                     "alert", "2", 2, distance=10 + i % 20))
            elif i < n_exact + n_near + n_susp:
                scores.append(Score(rec.key, "bench-model", "e" * 64,
                                    {"explicit": 0.95, "minor_likelihood": 0.9}))
        keyed = [it for it in items if it[1].is_picture]
        store.add_batch(dev, "b0", keyed, matches, scores, [], rows=file_rows(dev, "b0", items))
        sink.raise_all(rules_for_batch(dev, context, keyed, matches, scores, [], now))
        store.device_finished(dev, now + 1, "complete")
    store.end_run(run, "complete")
    sink.close()
    store.close()
    return time.monotonic() - t0


def triage(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-c", "from cli import run; run()", *args], cwd=ROOT,
                          env={**os.environ, **(env or {})}, **kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vmhwm_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(base: str, names: list[str], devices: list[str], total: int, seconds: float,
               clients: int, think: float = 0.0, server_pid: int = 0) -> dict[str, list[float]]:
    import httpx

    lat: dict[str, list[float]] = {"queue": [], "device": [], "errors": [], "reconnects": []}
    left = [total]

    async def login(name: str):
        c = httpx.AsyncClient(base_url=base, timeout=60, limits=httpx.Limits(max_connections=1))
        r = await c.post("/api/login", json={"username": name, "password": PASSWORD})
        r.raise_for_status()
        return c

    async def client(c, seed: int):
        rng = random.Random(seed)
        turn = seed % 2
        while left[0] > 0 and time.monotonic() < stop_at:
            left[0] -= 1
            turn ^= 1
            url = "/api/queue" if turn else f"/api/devices/{rng.choice(devices)}"
            t = time.perf_counter()
            try:
                r = await c.get(url)
            except httpx.RemoteProtocolError:    # a kept-alive connection the server closed
                lat["reconnects"].append(1)
                t = time.perf_counter()
                r = await c.get(url)
            dt = time.perf_counter() - t
            if r.status_code != 200:
                lat["errors"].append(r.status_code)
                continue
            if seed == 0:            # one client checks the bodies; parsing all costs the server's CPU
                r.json()
            lat["queue" if turn else "device"].append(dt)
            if think:
                await asyncio.sleep(think * rng.uniform(0.5, 1.5))

    # every client logs in first (argon2 is meant to be slow), then all start together
    sessions = await asyncio.gather(*(login(names[i]) for i in range(clients)))
    stop_at = time.monotonic() + seconds
    t0 = time.monotonic()
    cpu0 = cpu_seconds(server_pid) if server_pid else 0.0
    await asyncio.gather(*(client(c, i) for i, c in enumerate(sessions)))
    lat["wall"] = [time.monotonic() - t0]
    lat["server_cpu"] = [cpu_seconds(server_pid) - cpu0] if server_pid else []
    for c in sessions:
        await c.aclose()
    return lat


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def report(label: str, lat: dict) -> dict:
    wall = lat["wall"][0]
    n = len(lat["queue"]) + len(lat["device"])
    out = {"label": label, "requests": n, "rps": n / wall, "errors": len(lat["errors"])}
    cpu = (f", server CPU {lat['server_cpu'][0] / max(n, 1) * 1000:.2f} ms per request"
           if lat.get("server_cpu") else "")
    print(f"{label}: {n} requests in {wall:.1f} s = {n / wall:.1f} req/s, {len(lat['errors'])} errors, "
          f"{len(lat['reconnects'])} reconnects{cpu}")
    for ep in ("queue", "device"):
        v = lat[ep]
        p50, p95, p99 = (pct(v, p) * 1000 for p in (50, 95, 99))
        out[ep] = p95 / 1000
        print(f"  {ep:<6} {len(v):>5} requests  p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  "
              f"p99 {p99:7.1f} ms  max {max(v) * 1000 if v else float('nan'):7.1f} ms")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--requests", type=int, default=2000, help="requests per phase, all clients")
    ap.add_argument("--seconds", type=float, default=120, help="time limit per phase")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "triage-bench-serve")
    ap.add_argument("--quick", action="store_true", help="20 devices, 50k files, 400 requests")
    ap.add_argument("--no-scan", action="store_true", help="skip the phase with a scan running")
    ap.add_argument("--scan-nice", type=int, default=None,
                    help="the scan's --nice (default: the scan's own default, 10)")
    ap.add_argument("--think", type=float, default=0.0,
                    help="seconds each client waits between requests (0: back to back)")
    args = ap.parse_args()
    if args.quick:
        args.devices, args.files, args.requests = 20, 50_000, 400
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    case = work / f"case-{args.devices}-{args.files}"
    if not is_case(case):
        shutil.rmtree(case, ignore_errors=True)
        secs = build_case(case, args.devices, args.files)
        print(f"built {case}: {args.devices} devices, {args.files:,} file rows in {secs:.1f} s "
              f"({(case / 'case.sqlite').stat().st_size / 2**20:.0f} MB)")
    else:
        print(f"reusing {case}")
    shutil.rmtree(case / "review.sqlite", ignore_errors=True)
    for side in ("", "-wal", "-shm"):
        try:
            os.unlink(str(case / "review.sqlite") + side)
        except FileNotFoundError:
            pass

    # baseline in this process: one uncached queue, as `triage queue` computes it
    from triage import rank
    with CaseStore(case, create=False) as store:
        t = time.perf_counter()
        ordered = rank.verdicts(store)
        baseline = time.perf_counter() - t
        devices = [v.device_id for v in ordered]
    print(f"baseline: rank.verdicts over the whole case (uncached queue) {baseline * 1000:.0f} ms")

    home = work / "home"
    shutil.rmtree(home, ignore_errors=True)
    names = [f"reviewer{i:02d}" for i in range(args.clients)]
    for n in names:
        triage("users", "add", n, "--role", "investigator", "--password-stdin",
               env={"TRIAGE_HOME": str(home)}, input=PASSWORD + "\n", text=True,
               capture_output=True, check=True)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", "from cli import run; run()", "serve",
                               "--case", str(case), "--port", str(port)], cwd=ROOT,
                              env={**os.environ, "TRIAGE_HOME": str(home)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(f"server did not start: {server.stderr.read()}")
            time.sleep(0.2)
    base = f"http://127.0.0.1:{port}"
    results = []
    try:
        # cold pass: the first view of each device computes its findings (then cached until
        # the case changes); timed on its own, not in the phases
        import httpx
        with httpx.Client(base_url=base, timeout=60) as c:
            c.post("/api/login", json={"username": names[0], "password": PASSWORD}).raise_for_status()
            t = time.perf_counter()
            c.get("/api/queue").raise_for_status()
            for dev in devices:
                c.get(f"/api/devices/{dev}").raise_for_status()
            cold = time.perf_counter() - t
        print(f"cold pass: queue + {len(devices)} devices, one client, {cold:.1f} s "
              f"({cold / (len(devices) + 1) * 1000:.0f} ms per request)")
        results.append(report("quiet", asyncio.run(load(base, names, devices, args.requests,
                                                        args.seconds, args.clients, args.think,
                                                        server.pid))))
        if not args.no_scan:
            fleet = work / "fleet"
            if not (fleet / "truth.json").is_file():
                triage("synth", "--out", str(fleet), "--devices", "6", "--seed", "7", "--json",
                       capture_output=True, check=True)
            import json
            truth = json.loads((fleet / "truth.json").read_text())
            hs = truth["hashsets"]
            scan_args = ["--json", "--model", "none"]
            if args.scan_nice is not None:
                scan_args += ["--nice", str(args.scan_nice)]
            for k in ("alert_vics", "nsrl", "alert_pdq", "alert_phash"):
                scan_args += ["--hashset", str(fleet / hs[k])]
            scan_args += [str(fleet / d["evidence"]) for d in truth["devices"]]
            scans = {"n": 0}

            def start_scan():
                other = work / f"other-{scans['n']}"
                shutil.rmtree(other, ignore_errors=True)
                scans["n"] += 1
                return subprocess.Popen([sys.executable, "-c", "from cli import run; run()", "scan",
                                         "--case", str(other), *scan_args], cwd=ROOT,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

            scan = [start_scan()]

            async def with_scan():
                async def keep_scanning(done):
                    while not done.is_set():
                        if scan[0].poll() is not None:
                            scan[0] = start_scan()
                        await asyncio.sleep(0.5)

                # let the scan start its workers and begin writing before timing
                await asyncio.sleep(12)
                done = asyncio.Event()
                keeper = asyncio.create_task(keep_scanning(done))
                lat = await load(base, names, devices, args.requests, args.seconds, args.clients,
                                 args.think, server.pid)
                done.set()
                await keeper
                return lat

            lat = asyncio.run(with_scan())
            writing = scan[0].poll() is None
            scan[0].terminate()
            scan[0].wait(30)
            results.append(report(f"scan (another case being scanned at nice "
                                  f"{10 if args.scan_nice is None else args.scan_nice}; {scans['n']} scan run(s) "
                                  f"started, {'still writing at the end' if writing else 'ended'})", lat))
        server_peak = vmhwm_mb(server.pid)
    finally:
        server.terminate()
        server.wait(30)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"server peak RSS {server_peak:.0f} MB; this process {own:.0f} MB")
    last = results[-1]
    for ep in ("queue", "device"):
        p95 = last[ep] * 1000
        print(f"goal p95 {ep} < 100 ms while scanning: {p95:.1f} ms "
              f"({'met' if p95 < 100 else 'NOT met'})")
    print(f"cached queue p95 / uncached baseline: {last['queue'] / baseline:.2f}x")
    if len(results) == 2:
        print(f"scan / quiet: p95 queue {results[1]['queue'] / results[0]['queue']:.2f}x, "
              f"device {results[1]['device'] / results[0]['device']:.2f}x, "
              f"req/s {results[1]['rps'] / results[0]['rps']:.2f}x")


if __name__ == "__main__":
    main()
