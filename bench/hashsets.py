"""Hash-set import and exact lookup at 1M and 10M entries, against a Python set and TSK hfind.

    .venv/bin/python bench/hashsets.py --sizes 1000000            # about 2 minutes
    .venv/bin/python bench/hashsets.py --sizes 1000000,10000000   # about 15 minutes, 3 GB of disk

For each size N it writes N random (MD5, SHA-1, SHA-256) entries as an NSRL RDSv3 minimal
SQLite database and as a VICS 2.0 #Media JSON file, then runs each measured step in its own
process (so each peak RSS is that step's alone):
  * import of each file into a store (records/s, peak RSS, on-disk size);
  * lookup of 1M SHA-1 and 1M MD5 queries, half of them hits, with the vectorised
    `match_digests` and with the string API `lookup` (hashes/s, peak RSS);
  * baselines: a Python `set` of the same SHA-1 digests (build time, lookups/s, RSS) and TSK
    `hfind` with an index from `hfind -i md5sum` (index time, lookups/s over 100k queries).
Goals (issue 3): 10M imported in < 2 min, >= 1M lookups/s, lookup RSS < 300 MB at 10M.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHUNK = 1_000_000
STRING_BATCH = 10_000
SEED = 20251126


def chunks(n: int):
    """Deterministic random entries, 1M at a time: (md5 (k,16), sha1 (k,20), sha256 (k,32))."""
    for start in range(0, n, CHUNK):
        k = min(CHUNK, n - start)
        rng = np.random.default_rng([SEED, start])
        raw = rng.integers(0, 256, (k, 68), dtype=np.uint8)
        yield start, raw[:, :16], raw[:, 16:36], raw[:, 36:68]


def hexes(a: np.ndarray) -> list[str]:
    h = a.tobytes().hex().upper()
    w = a.shape[1] * 2
    return [h[i:i + w] for i in range(0, len(h), w)]


def rss_now_mb() -> dict:
    """Current resident memory split: anonymous (this process's own) and file-backed (mapped
    set files: page cache, shared by every worker mapping them, reclaimable by the kernel)."""
    out = {}
    for line in open("/proc/self/status"):
        if line.startswith(("RssAnon:", "RssFile:")):
            out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return {"anon_mb": out.get("RssAnon", 0.0), "file_mb": out.get("RssFile", 0.0)}


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so
    a child would report its parent's peak."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------ fixtures (not timed)

def write_rdsv3(path: Path, n: int) -> None:
    path.unlink(missing_ok=True)
    con = sqlite3.connect(path)
    con.executescript("""
        PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;
        CREATE TABLE FILE (sha256 VARCHAR NOT NULL, sha1 VARCHAR NOT NULL, md5 VARCHAR NOT NULL,
          crc32 VARCHAR NOT NULL, file_name VARCHAR NOT NULL, file_size INTEGER NOT NULL,
          package_id INTEGER NOT NULL);
        CREATE TABLE VERSION (version VARCHAR UNIQUE NOT NULL, build_set VARCHAR NOT NULL,
          build_date TIMESTAMP, release_date TIMESTAMP NOT NULL, description VARCHAR NOT NULL);
        CREATE VIEW DISTINCT_HASH AS SELECT DISTINCT sha256, sha1, md5, crc32 FROM FILE;
        INSERT INTO VERSION VALUES ('bench', 'modern', NULL, '2025-03-01', 'synthetic');
    """)
    for start, md5, sha1, sha256 in chunks(n):
        con.executemany("INSERT INTO FILE VALUES (?,?,?,'00000000','f.bin',1,1)",
                        zip(hexes(sha256), hexes(sha1), hexes(md5)))
    con.commit()
    con.close()


def write_vics(path: Path, n: int) -> None:
    with open(path, "w") as f:
        f.write('{"@odata.context":"http://github.com/VICSDATAMODEL/ProjectVic/DataModels/2.0.xml/'
                'UK/$metadata#Media","value":[')
        for start, md5, sha1, _ in chunks(n):
            f.write(",".join(
                f'{{"MediaID":{start + i + 1},"Category":{1 + (start + i) % 3},"MD5":"{m}",'
                f'"SHA1":"{s}","MediaSize":{1000 + i},"IsPrecategorized":"true"}}'
                for i, (m, s) in enumerate(zip(hexes(md5), hexes(sha1)))))
            if start + CHUNK < n:
                f.write(",")
        f.write("]}\n")


def write_md5sum(path: Path, n: int) -> None:
    with open(path, "w") as f:
        for _, md5, _, _ in chunks(n):
            f.write("".join(f"{h.lower()}  f.bin\n" for h in hexes(md5)))


def write_queries(path: Path, n: int, q: int) -> None:
    """q queries per algorithm: q/2 entries of the set, q/2 random misses, shuffled."""
    rng = np.random.default_rng(SEED + 1)
    want = np.sort(rng.choice(n, q // 2, replace=False))
    md5s, sha1s = [], []
    for start, md5, sha1, _ in chunks(n):
        sel = want[(want >= start) & (want < start + len(md5))] - start
        md5s.append(md5[sel])
        sha1s.append(sha1[sel])
    md5q = np.concatenate(md5s + [rng.integers(0, 256, (q - q // 2, 16), dtype=np.uint8)])
    sha1q = np.concatenate(sha1s + [rng.integers(0, 256, (q - q // 2, 20), dtype=np.uint8)])
    order = rng.permutation(q)
    np.savez(path, md5=md5q[order], sha1=sha1q[order], hit=(order < q // 2))


# ------------------------------------------------------------------ measured steps (children)

def child_import(store: str, src: str, name: str, role: str) -> dict:
    from hashsets.store import HashSetStore

    t0 = time.perf_counter()
    info = HashSetStore(store).import_file(src, name, role)
    dt = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in (Path(store) / name).rglob("*") if p.is_file())
    return {"seconds": dt, "records_read": max(info.counts.values()), "entries": info.records,
            "records_per_s": max(info.counts.values()) / dt, "rss_mb": peak_rss_mb(),
            "disk_mb": size / 1e6, "source_mb": Path(src).stat().st_size / 1e6}


def child_lookup(store: str, queries: str, api: str, alg: str) -> dict:
    """One algorithm per process, so each peak RSS is what looking up that algorithm costs."""
    from hashsets.store import HashSetStore

    qs = np.load(queries)
    hit = qs["hit"]
    s = HashSetStore(store)
    out = {}
    for alg in (alg,):
        digests = np.ascontiguousarray(qs[alg])
        if api == "vector":
            times = []
            for _ in range(3):        # the first pass faults the mapped pages in: "cold"
                t0 = time.perf_counter()
                found = s.match_digests(alg, digests)
                times.append(time.perf_counter() - t0)
            got = np.zeros(len(digests), bool)
            got[found.query_index] = True
            dt = min(times)
            extra = {"cold_hashes_per_s": len(digests) / times[0]}
        else:
            # As a scan calls it: hex strings in batches, Hit objects out, results dropped.
            s.match_digests(alg, digests)                          # warm the pages
            got = np.zeros(len(digests), bool)
            dt = 0.0
            for start in range(0, len(digests), STRING_BATCH):
                strings = hexes(digests[start:start + STRING_BATCH])
                t0 = time.perf_counter()
                res = s.lookup(alg, strings)
                dt += time.perf_counter() - t0
                got[start:start + len(res)] = [bool(r) for r in res]
            extra = {"batch": STRING_BATCH}
        assert (got == hit).all(), "lookup disagrees with the planted hits"
        out[alg] = {"hashes_per_s": len(digests) / dt, "seconds": dt, "hits": int(got.sum()), **extra}
    out.update(rss_mb=peak_rss_mb(), **rss_now_mb())
    return out


def child_pyset(n: int, queries: str) -> dict:
    t0 = time.perf_counter()
    s = set()
    for _, _, sha1, _ in chunks(n):
        s.update(bytes(r) for r in sha1)
    build = time.perf_counter() - t0
    q = [bytes(r) for r in np.load(queries)["sha1"]]
    t0 = time.perf_counter()
    hits = sum(1 for x in q if x in s)
    dt = time.perf_counter() - t0
    return {"build_seconds": build, "hashes_per_s": len(q) / dt, "hits": hits, "rss_mb": peak_rss_mb()}


def child(argv: list[str]) -> None:
    kind, *args = argv
    fn = {"import": child_import, "lookup": child_lookup, "pyset": child_pyset}[kind]
    if kind == "pyset":
        args[0] = int(args[0])
    print(json.dumps(fn(*args)))


def run_child(*args) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *map(str, args)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def hfind_baseline(work: Path, n: int, queries: Path, nq: int) -> dict | None:
    if not shutil.which("hfind"):
        return None
    db = work / "md5sum.txt"
    write_md5sum(db, n)
    t0 = time.perf_counter()
    subprocess.run(["hfind", "-i", "md5sum", str(db)], check=True, capture_output=True)
    index_s = time.perf_counter() - t0
    q = np.load(queries)["md5"][:nq]
    qfile = work / "hfind-queries.txt"
    qfile.write_text("".join(h.lower() + "\n" for h in hexes(q)))
    t0 = time.perf_counter()
    r = subprocess.run(["hfind", "-f", str(qfile), str(db)], capture_output=True, text=True)
    dt = time.perf_counter() - t0
    hits = sum(1 for line in r.stdout.splitlines() if "Hash Not Found" not in line)
    return {"index_seconds": index_s, "index_records_per_s": n / index_s,
            "hashes_per_s": nq / dt, "queries": nq, "hits": hits}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000000", help="comma-separated entry counts")
    ap.add_argument("--queries", type=int, default=1_000_000)
    ap.add_argument("--hfind-queries", type=int, default=100_000)
    ap.add_argument("--work", default="/tmp/triage-bench-hashsets")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--lookup-only", action="store_true",
                    help="only the RDSv3 import and the lookups (no VICS, Python set, hfind)")
    ap.add_argument("--no-baselines", action="store_true", help="skip the Python set and hfind")
    args = ap.parse_args()
    results = []
    for n in (int(x) for x in args.sizes.split(",")):
        work = Path(args.work) / str(n)
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        t0 = time.perf_counter()
        write_rdsv3(work / "rds_minimal.db", n)
        if not args.lookup_only:
            write_vics(work / "vics.json", n)
        write_queries(work / "queries.npz", n, args.queries)
        gen = time.perf_counter() - t0
        r = {"entries": n, "fixture_seconds": gen}
        r["import_rdsv3"] = run_child("import", work / "store", work / "rds_minimal.db", "nsrl", "ignore")
        if not args.lookup_only:
            r["import_vics"] = run_child("import", work / "store-vics", work / "vics.json", "vics", "alert")
        for api in ("vector", "strings"):
            for alg in ("sha1", "md5"):
                r.setdefault(f"lookup_{api}", {})[alg] = run_child(
                    "lookup", work / "store", work / "queries.npz", api, alg)
        if not (args.lookup_only or args.no_baselines):
            r["python_set"] = run_child("pyset", n, work / "queries.npz")
            r["hfind"] = hfind_baseline(work, n, work / "queries.npz", args.hfind_queries)
        results.append(r)
        report(r)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=1))


def report(r: dict) -> None:
    n = r["entries"]
    print(f"\n== {n:,} entries (MD5+SHA-1+SHA-256 each) ==")
    for key, label in (("import_rdsv3", "RDSv3 minimal SQLite"), ("import_vics", "VICS 2.0 JSON")):
        if key not in r:
            continue
        i = r[key]
        print(f"import {label:22s} {i['seconds']:7.1f} s  {i['records_per_s']:>11,.0f} records/s  "
              f"peak RSS {i['rss_mb']:6.0f} MB  store {i['disk_mb']:6.0f} MB (source {i['source_mb']:.0f} MB)")
    for key, label in (("lookup_vector", "match_digests (numpy)"), ("lookup_strings", "lookup (hex->Hit, 10k)")):
        for alg in ("sha1", "md5"):
            lk = r[key][alg]
            cold = (f"  first pass (pages cold) {lk[alg]['cold_hashes_per_s']:,.0f}/s"
                    if "cold_hashes_per_s" in lk[alg] else "")
            print(f"lookup {label:22s} {alg:4s} {lk[alg]['hashes_per_s']:>11,.0f}/s  peak RSS "
                  f"{lk['rss_mb']:5.0f} MB (own {lk['anon_mb']:.0f} MB + mapped set {lk['file_mb']:.0f} MB){cold}")
    ours = {alg: dict(r["lookup_vector"][alg][alg], rss_mb=r["lookup_vector"][alg]["rss_mb"])
            for alg in ("sha1", "md5")}
    ps = r.get("python_set")
    if ps:
        print(f"baseline Python set (sha1)     build {ps['build_seconds']:.1f} s  {ps['hashes_per_s']:>11,.0f}/s  "
              f"peak RSS {ps['rss_mb']:6.0f} MB  -> ours: x{ours['sha1']['hashes_per_s'] / ps['hashes_per_s']:.2f} "
              f"lookups/s, x{ps['rss_mb'] / ours['sha1']['rss_mb']:.1f} less memory")
    hf = r.get("hfind")
    if hf:
        print(f"baseline hfind -i md5sum       index {hf['index_seconds']:.1f} s ({hf['index_records_per_s']:,.0f}/s)  "
              f"lookup {hf['hashes_per_s']:,.0f}/s over {hf['queries']:,}  -> ours: import x"
              f"{r['import_rdsv3']['records_per_s'] / hf['index_records_per_s']:.1f}, lookup x"
              f"{ours['md5']['hashes_per_s'] / hf['hashes_per_s']:.0f}")
    elif "hfind" in r:
        print("baseline hfind: not installed")
    goals = (r["import_rdsv3"]["seconds"] * 1e7 / n < 120, ours["sha1"]["hashes_per_s"] >= 1e6,
             max(ours["sha1"]["rss_mb"], ours["md5"]["rss_mb"]) < 300)
    print("goals: import < 2 min per 10M (linear from this size) %s, >= 1M lookups/s %s, lookup RSS < 300 MB %s"
          % tuple("yes" if g else "NO" for g in goals))


if __name__ == "__main__":
    main()
