"""Benchmark of triage.features, the scan's hot path, against bare baselines in the same run.

    .venv/bin/python bench/pictures.py [--pictures 40] [--hash-mb 1024] [--size 4000x3000]

Pictures: N camera-sized JPEGs (4000x3000, with camera EXIF) are generated into a temporary
directory by a child process, then timed on one core:
  - bare loop: read the file, Pillow draft decode, PDQ (pdqhash) and a numpy pHash, nothing else;
  - bare loop + MD5/SHA-1 of the file: the same work as the scan has to do;
  - analyse(): what the scan runs (one-pass MD5+SHA-1, typing, draft decode, PDQ, pHash, EXIF,
    thumbnail), fed 1 MiB chunks as the evidence layer gives them.
Hashing: a temporary file of --hash-mb MiB, `md5sum FILE` against analyse() over the same file
(MD5+SHA-1 in one pass), both from the page cache; and the same bytes as 4 MiB files (views of
the mapped file, as a scan batch reads them) through the multi-buffer kernel (hash_many),
checked against hashlib.
Rates are per CPU-second of this process (md5sum: of the child), so that other work on a
shared machine does not skew the ratios; wall times are printed beside them. Peak RSS of this process (the generator runs in a child, so its memory is not counted).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import mmap
import multiprocessing as mp
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pdqhash
from PIL import Image

from triage.features import FeatureOptions, analyse
from triage.features.hashing import hash_engine, hash_many
from triage.records import FileRecord, Provenance

CHUNK = 1024 * 1024


# --- fixtures --------------------------------------------------------------------------------

def _texture(w: int, h: int, seed: int) -> np.ndarray:
    """A multi-octave colour field with sensor-like grain (uint8, h x w x 3)."""
    rng = np.random.default_rng(seed)
    acc = np.zeros((h, w, 3), dtype=np.float32)
    for cells, amp in ((4, 1.0), (16, 0.5), (64, 0.3), (256, 0.2)):
        coarse = rng.uniform(-1, 1, size=(cells * h // w + 2, cells + 1, 3)).astype(np.float32)
        for c in range(3):
            acc[..., c] += amp * np.asarray(Image.fromarray(coarse[..., c], mode="F").resize(
                (w, h), Image.Resampling.BICUBIC))
    acc *= 55.0
    acc += 128.0
    acc += rng.normal(0, 4, size=(h, w, 1)).astype(np.float32)   # grain
    return acc.clip(0, 255).astype(np.uint8)


def _generate(out: str, n: int, w: int, h: int) -> None:
    base = _texture(w + 64 * 8, h + 48 * 8, seed=11)
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon", "Canon EOS 80D"
    exif.get_ifd(0x8769)[0x9003] = "2024:05:06 07:08:09"
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "N", (51.0, 30.0, 12.0), "W", (0.0, 7.0, 30.0)
    for i in range(n):
        dx, dy = (i * 37) % (64 * 8), (i * 53) % (48 * 8)
        crop = base[dy:dy + h, dx:dx + w]
        if i % 2:
            crop = crop[:, ::-1]
        img = Image.fromarray(np.ascontiguousarray(crop))
        img.save(os.path.join(out, f"IMG_{i:04d}.JPG"), format="JPEG", quality=92, exif=exif)


# --- the loops -------------------------------------------------------------------------------

_N = 32
_DCT8 = np.cos(np.pi * np.arange(8)[:, None] * (2 * np.arange(_N)[None, :] + 1) / (2 * _N))


def bare_one(data: bytes) -> tuple:
    img = Image.open(io.BytesIO(data))
    img.draft("RGB", (256, 256))
    img = img.convert("RGB")
    bits, quality = pdqhash.compute(np.asarray(img))
    grey = np.asarray(img.convert("L").resize((_N, _N), Image.Resampling.LANCZOS), np.float64)
    low = _DCT8 @ grey @ _DCT8.T
    return bits, quality, low > np.median(low)


def read_file(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def chunks_of(path: Path):
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def record_for(path: Path) -> FileRecord:
    return FileRecord(prov=Provenance("bench", 0, None, str(path)), name=path.name,
                      size=path.stat().st_size, allocated=True, fs_type="ext4")


def interleaved(loops: dict, files: list[Path], rounds: int) -> dict:
    """CPU seconds and wall seconds per loop, running the loops file by file in turn, so a
    noisy neighbour on a shared machine hits every loop alike. CPU time is the fair measure
    there; wall time is shown too."""
    cpu = {k: 0.0 for k in loops}
    wall = {k: 0.0 for k in loops}
    for _ in range(rounds):
        for p in files:
            for name, fn in loops.items():
                w0, c0 = time.perf_counter(), time.process_time()
                fn(p)
                cpu[name] += time.process_time() - c0
                wall[name] += time.perf_counter() - w0
    n = len(files) * rounds
    for name in loops:
        print(f"  {name:<42} {n / cpu[name]:6.1f} pictures per CPU-s "
              f"({cpu[name] * 1000 / n:5.1f} ms CPU, {wall[name] * 1000 / n:6.1f} ms wall)")
    return {k: n / v for k, v in cpu.items()}


def _child_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pictures", type=int, default=40)
    ap.add_argument("--size", default="4000x3000")
    ap.add_argument("--hash-mb", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of each loop")
    ap.add_argument("--hash-only", action="store_true")
    args = ap.parse_args()
    w, h = (int(x) for x in args.size.lower().split("x"))
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})   # one core, as a worker
    if args.hash_only:
        hash_bench(args.hash_mb)
        return 0
    with tempfile.TemporaryDirectory(prefix="triage-bench-") as tmp:
        t0 = time.perf_counter()
        child = mp.get_context("spawn").Process(target=_generate, args=(tmp, args.pictures, w, h))
        child.start()
        child.join()
        files = sorted(Path(tmp).glob("*.JPG"))
        mb = sum(p.stat().st_size for p in files) / 1e6
        print(f"pictures: {len(files)} JPEGs {w}x{h}, {mb / len(files):.1f} MB each "
              f"(generated in {time.perf_counter() - t0:.1f} s), one core")
        opts = FeatureOptions()
        rates = interleaved({
            "bare: draft decode + PDQ + pHash": lambda p: bare_one(read_file(p)),
            "bare + MD5 + SHA-1": lambda p: _hash_and_bare(read_file(p)),
            "analyse() (+ typing, EXIF, thumbnail)":
                lambda p: analyse(record_for(p), chunks_of(p), opts),
        }, files, args.rounds)
        bare, hashed, full = rates.values()
        feats = analyse(record_for(files[0]), chunks_of(files[0]), opts).features
        assert feats.pdq and feats.exif and not feats.error, feats.error
        print(f"ratio analyse / bare loop:        {full / bare:.2f}")
        print(f"ratio analyse / bare loop + hash: {full / hashed:.2f}")
        print(f"peak RSS (this process): {peak_rss_mib():.0f} MiB")

    if args.hash_mb:
        hash_bench(args.hash_mb)
    return 0


def _hash_and_bare(data: bytes) -> tuple:
    hashlib.md5(data).digest()
    hashlib.sha1(data).digest()
    return bare_one(data)


def hash_bench(size_mb: int) -> None:
    with tempfile.NamedTemporaryFile(prefix="triage-bench-", suffix=".bin") as f:
        block = np.random.default_rng(5).bytes(16 * CHUNK)
        for _ in range(max(1, size_mb // 16)):
            f.write(block)
        f.flush()
        path = Path(f.name)
        size = path.stat().st_size
        subprocess.run(["cat", f.name], stdout=subprocess.DEVNULL, check=True)   # page cache
        c0, w0 = _child_cpu(), time.perf_counter()
        subprocess.run(["md5sum", f.name], stdout=subprocess.DEVNULL, check=True)
        t_md5sum, w_md5sum = _child_cpu() - c0, time.perf_counter() - w0
        c0, w0 = time.process_time(), time.perf_counter()
        md5, sha1 = hashlib.md5(), hashlib.sha1()
        for chunk in chunks_of(path):
            md5.update(chunk)
            sha1.update(chunk)
        t_bare, w_bare = time.process_time() - c0, time.perf_counter() - w0
        c0, w0 = time.process_time(), time.perf_counter()
        a = analyse(record_for(path), chunks_of(path), FeatureOptions())
        t_ours, w_ours = time.process_time() - c0, time.perf_counter() - w0
        assert a.features.md5 == md5.hexdigest()
        assert a.features.size == size
        t_mb, w_mb = _multi_buffer(path)
        print(f"hashing {size / 2**20:.0f} MiB from the page cache, one core (MB per CPU-s):")
        rows = [("md5sum (MD5 only)", t_md5sum, w_md5sum),
                ("bare hashlib MD5 + SHA-1 loop", t_bare, w_bare),
                ("analyse() (MD5 + SHA-1, 1 pass)", t_ours, w_ours)]
        if t_mb is not None:
            rows.append((f"hash_many, 4 MiB files ({hash_engine()})", t_mb, w_mb))
        for label, t, w in rows:
            print(f"  {label:<44} {size / t / 1e6:6.0f} MB/s  ({t:.2f} s CPU, {w:.2f} s wall)")
        print(f"  CPU-time ratio analyse / md5sum:    {t_ours / t_md5sum:.2f}")
        print(f"  CPU-time ratio analyse / bare loop: {t_ours / t_bare:.2f}")
        if t_mb is not None:
            print(f"  CPU-time ratio hash_many (MD5 + SHA-1) / md5sum (MD5): {t_mb / t_md5sum:.2f}")
        print(f"peak RSS (this process): {peak_rss_mib():.0f} MiB")


def _multi_buffer(path: Path) -> tuple:
    """(CPU s, wall s) of MD5 + SHA-1 of the file cut into 4 MiB files, many per pass, or
    (None, None) where hashlib is all there is (no kernel, no AVX-512)."""
    if hash_engine() == "hashlib":
        return None, None
    piece = 4 * CHUNK
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as m:
        view = memoryview(m)
        files = [[view[i:i + piece]] for i in range(0, len(view), piece)]
        c0, w0 = time.process_time(), time.perf_counter()
        got = []
        for i in range(0, len(files), 16):      # 64 MiB groups, as a scan batch hashes them
            got += hash_many(files[i:i + 16])
            m.madvise(mmap.MADV_DONTNEED, i * piece, min(16 * piece, len(view) - i * piece))
        t, w = time.process_time() - c0, time.perf_counter() - w0
        for k in (0, len(files) - 1):
            data = bytes(files[k][0])
            assert (got[k].md5, got[k].sha1) == (hashlib.md5(data).hexdigest(),
                                                 hashlib.sha1(data).hexdigest())
        del files, view
    return t, w


if __name__ == "__main__":
    sys.exit(main())
