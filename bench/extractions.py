"""Hash and match every member of a phone extraction (tar, zip) against `tar -xO | md5sum`.

Runs standalone: `.venv/bin/python bench/extractions.py [--size-mb 2048] [--rounds 2]`.

Builds a phone-like tree of --size-mb MB (camera-roll sizes; half incompressible "pictures",
half text), packs it as a tar (`tar -cf`) and as a zip (`zip -1`: Info-ZIP stores what does not
compress and deflates the rest, as phone extractors do), then times, best of --rounds,
interleaved so machine load hits all alike:

  baseline tar   `tar -xOf X.tar | md5sum`: every member's bytes, once, through MD5
  baseline zip   `unzip -p X.zip | md5sum`
  triage tar     the scan's own path in one process, no Ray: walk the extraction, plan the
                 batches (plan_volume), read, hash (MD5 + SHA-1) and match each batch against
                 an alert set (workers.batch.scan_batch), pictures off
  triage zip     the same on the zip

Each runs as its own process under /usr/bin/time: wall time, CPU time and peak RSS per command.
Prints MB/s and the ratios triage/baseline (goal: at most 1.2x). The machine's load average
is printed with the figures: on a shared machine the ratio, measured in the same run, is
the figure to read.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from enumerate import PY, ROOT, build_tree, timed  # noqa: E402  (bench/enumerate.py)

MiB = 1 << 20

TRIAGE = r"""
import json, sys
from triage.device import discover
from triage.evidence import open_evidence
from triage.filesystems import walk
from workers.batch import Backend, ScanOptions, WorkerContext, scan_batch
from workers.plan import BatchSpec, plan_volume

path, store = sys.argv[1], sys.argv[2]
opts = ScanOptions(mode="full", pictures=False, archives=False, hashsets=((store, ()),),
                   perceptual=False)
ctx = WorkerContext(Backend())
files = size = matches = 0
with open_evidence(path) as ev:
    [vol] = discover(ev)[0]
    for item in plan_volume(walk(ev, vol), vol.device_id, vol.offset,
                            max_files=opts.batch_files, max_bytes=opts.batch_bytes):
        if isinstance(item, BatchSpec):
            res = scan_batch(ctx, (path,), item, opts)
            files += res.files
            size += res.bytes_read
            matches += len(res.matches)
            engine = res.hash_engine
ctx.close()
print(json.dumps({"files": files, "bytes": size, "matches": matches, "engine": engine}))
"""


def build(work: Path, size_mb: int) -> tuple[Path, Path, Path, int]:
    """(tar, zip, alert-set file, files) of a tree of about `size_mb` MB."""
    src = work / "phone"
    mean_kb = 300
    files = max(1, size_mb * 1000 // mean_kb)
    build_tree(src / "DCIM", files, mean_kb)
    tar = work / "phone.tar"
    zipped = work / "phone.zip"
    subprocess.run(["tar", "-cf", str(tar), "-C", str(src), "."], check=True)
    subprocess.run(["zip", "-1", "-q", "-r", str(zipped), "."], cwd=src, check=True)
    # an alert set: a thousand unrelated MD5s and one of the tree's files
    import hashlib
    first = sorted((src / "DCIM").rglob("*.jpg"))[0]
    hashes = [hashlib.md5(str(i).encode()).hexdigest() for i in range(1000)]
    hashes.append(hashlib.md5(first.read_bytes()).hexdigest())
    alert = work / "alert.md5.txt"
    alert.write_text("\n".join(hashes) + "\n")
    shutil.rmtree(src)
    return tar, zipped, alert, files


def import_set(alert: Path, store: Path) -> None:
    subprocess.run([PY, "-c", "from cli import main; main()", "hashset", "import", str(alert),
                    "--name", "bench-alert", "--role", "alert", "--store", str(store)],
                   cwd=ROOT, check=True, capture_output=True)


def baseline(kind: str, path: Path) -> tuple[float, float]:
    cmd = f"tar -xOf {path} | md5sum" if kind == "tar" else f"unzip -p {path} | md5sum"
    wall, rss, _ = timed(["sh", "-c", cmd], capture_output=True, check=True)
    return wall, rss


def triage(path: Path, store: Path) -> tuple[float, float, dict]:
    wall, rss, res = timed([PY, "-c", TRIAGE, str(path), str(store)], cwd=ROOT,
                           capture_output=True, text=True, check=True,
                           env=dict(os.environ, PYTHONPATH=str(ROOT)))
    return wall, rss, json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mb", type=int, default=2048, help="size of the tree (default 2 GB)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--work", type=Path, default=None, help="folder for the extractions")
    args = ap.parse_args()
    for tool in ("tar", "zip", "unzip", "md5sum"):
        if shutil.which(tool) is None:
            sys.exit(f"bench needs {tool}")
    work = Path(tempfile.mkdtemp(prefix="bench_extractions_", dir=args.work))
    try:
        tar, zipped, alert, files = build(work, args.size_mb)
        store = work / "store"
        import_set(alert, store)
        content = tar.stat().st_size
        print(f"tree: {files} files; tar {tar.stat().st_size / MiB:.0f} MiB, "
              f"zip {zipped.stat().st_size / MiB:.0f} MiB; load average {os.getloadavg()[0]:.2f} "
              f"on {os.cpu_count()} CPUs")
        best: dict = {}
        for _ in range(args.rounds):
            for kind, path in (("tar", tar), ("zip", zipped)):
                for who in ("baseline", "triage"):
                    if who == "baseline":
                        wall, rss = baseline(kind, path)
                        info = {}
                    else:
                        wall, rss, info = triage(path, store)
                        assert info["files"] == files and info["matches"] >= 1, info
                    key = (who, kind)
                    if key not in best or wall < best[key][0]:
                        best[key] = (wall, rss, timed.cpu, info)
        for kind in ("tar", "zip"):
            bw, brss, bcpu, _ = best[("baseline", kind)]
            tw, trss, tcpu, info = best[("triage", kind)]
            print(f"{kind}: baseline {bw:.2f} s ({content / MiB / bw:.0f} MB/s, cpu {bcpu:.2f} s, "
                  f"{brss:.0f} MiB)  triage {tw:.2f} s ({content / MiB / tw:.0f} MB/s, cpu "
                  f"{tcpu:.2f} s, peak RSS {trss:.0f} MiB, {info['files']} files, "
                  f"{info['bytes'] / MiB:.0f} MiB hashed, {info['matches']} match, "
                  f"{info['engine']})  ratio {tw / bw:.2f}x (goal <= 1.2x)")
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
