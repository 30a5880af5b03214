"""Benchmark of the scan's video stage against two bare baselines, in the same run.

    .venv/bin/python bench/video.py [--videos 20] [--seconds 60] [--gop 25] [--workers 2]

Fixtures: N synthetic 1280x720 H.264 MP4s of --seconds each (25 fps, keyframe every --gop
frames; 25 = one a second, as phone cameras write; x264's own default is 250), made by Debian's
`ffmpeg` from its `testsrc2` pattern, each with another hue, into a temporary folder.

Routes, each in --workers fresh worker processes (one video per task, as the scan's batches):
  stage   the scan's video stage: the file's bytes decoded by triage.features.video (keyframes
          plus 1 fps samples within the frame cap, each frame hashed from its luma: PDQ with
          quality over the whole frame, pHash of a small grey copy, the review strip), as a
          worker runs it on the bytes it holds;
  stage-k the same with --video-sample-seconds 0 (keyframes only);
  file    everything a scan does with the file: analyse() fed 1 MiB chunks (MD5 and SHA-1,
          which every file gets with or without the video stage, typing, then the stage);
  bare    a bare PyAV loop: open, skip_frame NONKEY, each keyframe converted to the same
          reduced RGB size and hashed with pdqhash, nothing else;
  ffmpeg  `ffmpeg -skip_frame nokey -i FILE` decoding keyframes to raw RGB at the same size on
          a pipe, each frame hashed with pdqhash in Python.
Printed per route: frames hashed, frames/s and videos/s by the wall clock of the pool and per
CPU-second (the workers' own, and the ffmpeg children's for that route: on a shared machine
the wall clock moves with the neighbours' load, and the ffmpeg route's decoder runs in a
process of its own beside each worker), and the peak RSS of its worker processes; then the
ratios the issue sets goals for (stage against bare: >= 0.8; stage against ffmpeg: >= 2) and
whether peak RSS per worker stays under 400 MB. The load average is printed too.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHUNK = 1024 * 1024
RSS_GOAL_MB = 400


def make_video(args: tuple) -> str:
    path, seconds, gop, k = args
    vf = f"testsrc2=size=1280x720:rate=25:duration={seconds},hue=h={(k * 37) % 360}"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", vf,
                    "-c:v", "libx264", "-preset", "ultrafast", "-crf", "23", "-g", str(gop),
                    "-pix_fmt", "yuv420p", "-threads", "1", path], check=True)
    return path


# --- routes: each returns (frames hashed, peak RSS MiB of this worker) -----------------------

def route_stage(path: str, sample_seconds: float = 1.0) -> tuple[int, float]:
    """The video stage proper: the file's bytes (read, as the worker holds them) decoded,
    sampled and hashed by triage.features.video, strip included."""
    from triage.features.video import analyse_video
    from triage.videolimits import VideoLimits

    with open(path, "rb") as f:
        data = f.read()
    r = analyse_video(data, "video/mp4", VideoLimits(sample_seconds=sample_seconds))
    if r.error or not r.frames:
        raise RuntimeError(f"{path}: {r.error}")
    return len(r.frames), _rss()


def route_stage_keyframes(path: str) -> tuple[int, float]:
    return route_stage(path, 0.0)


def route_file(path: str) -> tuple[int, float]:
    """Everything a scan does with a video file: analyse() fed 1 MiB chunks (MD5 and SHA-1,
    typing, the in-memory copy, then the video stage)."""
    from triage.features import FeatureOptions, analyse
    from triage.records import FileRecord, Provenance

    size = os.path.getsize(path)
    rec = FileRecord(prov=Provenance("bench", 0, 1, path), name=os.path.basename(path),
                     size=size, allocated=True, fs_type="ext4")

    def chunks():
        with open(path, "rb") as f:
            while block := f.read(CHUNK):
                yield block

    a = analyse(rec, chunks(), FeatureOptions())
    if a.features.error or not a.features.frames:
        raise RuntimeError(f"{path}: {a.features.error}")
    return len(a.features.frames), _rss()


def route_bare(path: str) -> tuple[int, float]:
    import av
    import pdqhash

    from triage.features.video import work_size

    n = 0
    with av.open(path) as c:
        s = c.streams.video[0]
        s.codec_context.thread_count = 1
        s.codec_context.skip_frame = "NONKEY"
        w, h = work_size(s.codec_context.width, s.codec_context.height)
        for frame in c.decode(s):
            pdqhash.compute(frame.to_ndarray(format="rgb24", width=w, height=h))
            n += 1
    return n, _rss()


def route_ffmpeg(path: str) -> tuple[int, float]:
    import numpy as np
    import pdqhash

    from triage.features.video import work_size

    w, h = work_size(1280, 720)
    proc = subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "error", "-threads", "1",
                             "-skip_frame", "nokey", "-i", path, "-fps_mode", "passthrough",
                             "-s", f"{w}x{h}", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                            stdout=subprocess.PIPE)
    n, size = 0, w * h * 3
    while True:
        buf = proc.stdout.read(size)
        if len(buf) < size:
            break
        pdqhash.compute(np.frombuffer(buf, np.uint8).reshape(h, w, 3))
        n += 1
    proc.wait()
    return n, _rss()


def _rss() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(name: str, path: str) -> tuple[int, float, float]:
    """(frames, peak RSS MiB, CPU seconds of this task, ffmpeg's child included)."""
    before = _cpu()
    n, rss = ROUTES[name](path)
    return n, rss, _cpu() - before


def _cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


ROUTES = {"stage": route_stage, "stage-k": route_stage_keyframes, "file": route_file,
          "bare": route_bare, "ffmpeg": route_ffmpeg}


def _warm(_: int) -> int:
    # imports paid before the clock starts, in every worker, for every route alike
    import av  # noqa: F401
    import pdqhash  # noqa: F401

    import triage.features  # noqa: F401
    import triage.features.video  # noqa: F401
    return os.getpid()


def run_route(name: str, paths: list[str], workers: int) -> dict:
    ctx = mp.get_context("spawn")                   # fresh workers: RSS is this route's own
    with ctx.Pool(workers) as pool:
        pool.map(_warm, range(workers * 4))
        t0 = time.perf_counter()
        results = pool.starmap(_timed, [(name, p) for p in paths], chunksize=1)
        wall = time.perf_counter() - t0
    frames = sum(n for n, _, _ in results)
    cpu = sum(c for _, _, c in results)
    return {"route": name, "frames": frames, "seconds": wall, "fps": frames / wall,
            "vps": len(paths) / wall, "rss": max(r for _, r, _ in results), "cpu": cpu,
            "fpc": frames / cpu, "vpc": len(paths) / cpu}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=int, default=20)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--gop", type=int, default=25, help="frames between keyframes (25 fps)")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--keep", type=Path, default=None, help="make/keep the videos here")
    args = ap.parse_args()
    if not shutil.which("ffmpeg"):
        print("error: Debian's ffmpeg is needed for the fixtures and the baseline "
              "(apt-get install ffmpeg)", file=sys.stderr)
        return 2
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="triage-bench-video-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        jobs = [(str(tmp / f"v{k:02d}-g{args.gop}-{args.seconds}s.mp4"), args.seconds, args.gop, k)
                for k in range(args.videos)]
        todo = [j for j in jobs if not Path(j[0]).exists()]
        t0 = time.perf_counter()
        with mp.get_context("spawn").Pool(args.workers) as pool:
            pool.map(make_video, todo)
        paths = [j[0] for j in jobs]
        mb = sum(os.path.getsize(p) for p in paths) / 2 ** 20
        print(f"{len(paths)} videos, 1280x720 H.264, {args.seconds} s at 25 fps, keyframe every "
              f"{args.gop} frames, {mb:.0f} MiB (made in {time.perf_counter() - t0:.0f} s); "
              f"{args.workers} workers; load average {os.getloadavg()[0]:.2f} on "
              f"{os.cpu_count()} CPUs")
        rows = {}
        for name in ("bare", "stage", "stage-k", "file", "ffmpeg"):
            rows[name] = r = run_route(name, paths, args.workers)
            print(f"  {name:8s} {r['frames']:6d} frames in {r['seconds']:6.1f} s wall, "
                  f"{r['cpu']:6.1f} s CPU: {r['fps']:7.1f} frames/s, {r['vps']:5.2f} videos/s "
                  f"(per CPU-second: {r['fpc']:6.1f} frames, {r['vpc']:5.2f} videos); peak RSS "
                  f"per worker {r['rss']:4.0f} MiB")
        s, b, f = rows["stage"], rows["bare"], rows["ffmpeg"]
        for what, key in (("wall clock", ""), ("per CPU-second", "c")):
            fk, vk = ("fpc", "vpc") if key else ("fps", "vps")
            print(f"{what}: stage / bare: frames/s {s[fk] / b[fk]:.2f}, videos/s "
                  f"{s[vk] / b[vk]:.2f} (goal >= 0.80); stage / ffmpeg: frames/s "
                  f"{s[fk] / f[fk]:.2f}, videos/s {s[vk] / f[vk]:.2f} (goal >= 2.00)")
        k = rows["stage-k"]
        print(f"stage-k (keyframes only) / bare: frames/s {k['fps'] / b['fps']:.2f}, videos/s "
              f"{k['vps'] / b['vps']:.2f}; / ffmpeg: frames/s {k['fps'] / f['fps']:.2f}, "
              f"videos/s {k['vps'] / f['vps']:.2f}")
        w = rows["file"]
        print(f"file (with MD5+SHA-1 of the file) / bare: frames/s {w['fps'] / b['fps']:.2f}, "
              f"videos/s {w['vps'] / b['vps']:.2f}; / ffmpeg: videos/s {w['vps'] / f['vps']:.2f}")
        worst = max(r["rss"] for r in rows.values() if r["route"].startswith("stage"))
        print(f"peak RSS per stage worker: {worst:.0f} MiB (goal < {RSS_GOAL_MB} MiB: "
              f"{'met' if worst < RSS_GOAL_MB else 'NOT met'})")
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
