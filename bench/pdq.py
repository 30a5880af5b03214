"""PDQ near matching: 1M alert hashes, 10k queries of which 1k are planted within distance 31.

    .venv/bin/python bench/pdq.py                       # about 2 minutes on 2 cores
    .venv/bin/python bench/pdq.py --alerts 200000 --queries 2000 --no-multihash   # quick

Imports the alert list through the store (`hash,quality` lines, as the PDQ hasher writes them),
then answers the queries with `HashSetStore.lookup_perceptual` (the index the store chose by
size) and, for comparison, a faiss multi-hash index built on the same codes. Prints queries/s,
the recall of the planted near hashes (must be 100%), and peak RSS. Baseline in the same run: a
brute-force numpy popcount scan over a sample of the queries, whose answers must agree.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hashsets import perceptual  # noqa: E402
from hashsets.store import HashSetStore  # noqa: E402

SEED = 31


def peak_rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def planted(rng, codes: np.ndarray, n_queries: int, n_planted: int):
    """Queries: n_planted copies of random alerts with 0..31 bits flipped, the rest random."""
    targets = rng.choice(len(codes), n_planted, replace=False)
    bits = np.unpackbits(codes[targets], axis=1)
    for row, k in zip(bits, rng.integers(0, 32, n_planted)):
        row[rng.choice(256, k, replace=False)] ^= 1
    near = np.packbits(bits, axis=1)
    queries = np.concatenate([near, rng.integers(0, 256, (n_queries - n_planted, 32), dtype=np.uint8)])
    return queries, targets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alerts", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--planted", type=int, default=1_000)
    ap.add_argument("--brute-sample", type=int, default=300, help="queries the numpy baseline answers")
    ap.add_argument("--no-multihash", action="store_true", help="skip the multi-hash comparison")
    ap.add_argument("--work", default="/tmp/triage-bench-pdq")
    args = ap.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rng = np.random.default_rng(SEED)
    codes = rng.integers(0, 256, (args.alerts, 32), dtype=np.uint8)
    hx = codes.tobytes().hex()
    src = work / "alerts.pdq.txt"
    with open(src, "w") as f:
        f.writelines(f"{hx[i * 64:(i + 1) * 64]},100\n" for i in range(args.alerts))
    del hx
    queries, targets = planted(rng, codes, args.queries, args.planted)
    qhex = [q.tobytes().hex() for q in queries]

    store = HashSetStore(work / "store")
    t0 = time.perf_counter()
    info = store.import_file(src, "pdq-alert", "alert", format="pdq")
    import_s = time.perf_counter() - t0
    kind = perceptual.index_kind(perceptual.load_index(next((work / "store" / "pdq-alert").glob("b-*/pdq.faiss"))))
    store.lookup_perceptual("pdq", qhex[:10])                  # load the index
    t0 = time.perf_counter()
    results = store.lookup_perceptual("pdq", qhex)
    store_s = time.perf_counter() - t0
    found = sum(1 for i, t in enumerate(targets)
                if any(h.value == codes[t].tobytes().hex() for h in results[i]))
    print(f"== PDQ: {args.alerts:,} alert hashes, {args.queries:,} queries, {args.planted:,} planted within 31 ==")
    print(f"import (hash,quality lines)   {import_s:6.1f} s  {info.records / import_s:,.0f} records/s")
    print(f"store lookup_perceptual       {args.queries / store_s:8,.0f} queries/s  index {kind:9s} "
          f"recall {found}/{args.planted} = {100 * found / args.planted:.1f}%  peak RSS {peak_rss_mb():.0f} MB")

    # Baseline: brute-force numpy over a sample (the planted ones first), answers must agree.
    sample = np.concatenate([np.arange(min(args.brute_sample // 2, args.planted)),
                             np.arange(args.planted, args.planted + args.brute_sample // 2)])
    t0 = time.perf_counter()
    oracle = perceptual.brute_force(codes, queries[sample], 31)
    brute_s = time.perf_counter() - t0
    agree = all(sorted(codes[o].tobytes().hex() for o in want) == sorted(h.value for h in results[i])
                for i, want in zip(sample, oracle))
    brute_qps = len(sample) / brute_s
    print(f"baseline numpy brute force    {brute_qps:8,.0f} queries/s  (over {len(sample)} queries; "
          f"answers agree: {'yes' if agree else 'NO'})  -> store x{args.queries / store_s / brute_qps:.1f}")

    if not args.no_multihash:
        t0 = time.perf_counter()
        index = perceptual.make_index(codes, "multihash")
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        lims, _, ids = perceptual.range_search(index, queries, 31)
        mh_s = time.perf_counter() - t0
        mh_found = sum(1 for i, t in enumerate(targets) if t in ids[lims[i]:lims[i + 1]])
        print(f"faiss multi-hash (16 x 16 bit) {args.queries / mh_s:7,.0f} queries/s  build {build_s:.1f} s  "
              f"recall {mh_found}/{args.planted} = {100 * mh_found / args.planted:.1f}%  peak RSS {peak_rss_mb():.0f} MB")
    shutil.rmtree(work, ignore_errors=True)
    if found != args.planted:
        sys.exit("recall below 100%")


if __name__ == "__main__":
    main()
