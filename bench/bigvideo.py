"""A video over the in-memory limit (192 MiB), decoded from the spool, against decoding it
from memory and against ffmpeg, in the same run.

    .venv/bin/python bench/bigvideo.py [--mib 600] [--keep DIR]

Fixture: one 1920x1080 H.264 MP4 of about --mib MiB (lossless, of noise, so it is large for
its length; a keyframe every 2 s), made with PyAV into a temporary folder (or --keep DIR).

Routes, each in a fresh process, the file read in 1 MiB chunks as a scan's worker reads it:
  spool   analyse() with the scan's defaults: MD5 and SHA-1 of every byte, the content written
          as it is hashed to an unnamed file (triage.features.video.VideoSpool), its frames
          decoded from there;
  memory  the same with the in-memory limit raised over the file's size: the whole video held
          in memory and decoded from there (what it would cost without the spool);
  off     the spool off: hashed only, the frames a coverage gap (the floor);
  ffmpeg   `ffmpeg -threads 1 -i FILE -vf fps=1 -f null -`: every frame decoded on one thread
           (as a scan's worker decodes), one a second kept, nothing hashed;
  ffmpeg-k `ffmpeg -skip_frame nokey -i FILE -f null -`: its keyframes alone.
Printed per route: seconds, frames hashed, gaps, and the process's peak RSS; then spool
against memory and against ffmpeg.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MiB = 1 << 20


def make_video(path: Path, mib: int) -> None:
    """Lossless H.264 of noise: about 2.9 MiB a 1080p frame, so `mib` / 2.9 frames."""
    import av
    import numpy as np
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    with av.open(str(path), "w") as out:
        s = out.add_stream("h264", rate=25)
        s.width, s.height, s.pix_fmt = 1920, 1080, "yuv420p"
        s.options = {"crf": "0", "preset": "ultrafast", "g": "50"}
        for i in range(max(50, int(mib / 2.9))):
            img = np.roll(base, i * 7, axis=1) ^ rng.integers(0, 64, base.shape, dtype=np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


def _route(name: str, path: str, spool_dir: str, q) -> None:
    from triage.features import FeatureOptions, analyse
    from triage.features.video import VideoLimits, VideoSpool
    from triage.records import VIDEO_FRAMES, FileRecord, Provenance
    size = os.path.getsize(path)
    opts = {"spool": FeatureOptions(video_spool=VideoSpool(spool_dir)),
            "memory": FeatureOptions(video=VideoLimits(max_bytes=size + MiB)),
            "off": FeatureOptions()}[name]
    rec = FileRecord(prov=Provenance("bench", 0, 7, "/big.mp4"), name="big.mp4", size=size,
                     allocated=True, fs_type="ext4")

    def chunks():
        with open(path, "rb") as fh:
            while True:
                b = fh.read(MiB)
                if not b:
                    return
                yield b
    t = time.perf_counter()
    a = analyse(rec, chunks(), opts)
    q.put({"seconds": time.perf_counter() - t, "frames": len(a.features.frames),
           "gaps": [c.reason[:90] for c in a.coverage if c.kind == VIDEO_FRAMES],
           "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def run(name: str, path: Path, spool_dir: str) -> dict:
    q = mp.get_context("spawn").Queue()
    p = mp.get_context("spawn").Process(target=_route, args=(name, str(path), spool_dir, q))
    p.start()
    got = q.get()
    p.join()
    return got


def ffmpeg(path: Path, *args: str) -> dict:
    t = time.perf_counter()
    proc = subprocess.Popen(["ffmpeg", "-v", "error", *args[:2], "-i", str(path), *args[2:],
                             "-f", "null", "-"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(proc.pid, 0)
    return {"seconds": time.perf_counter() - t, "frames": None, "gaps": [],
            "rss": usage.ru_maxrss / 1024, "rc": os.waitstatus_to_exitcode(status)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=int, default=600, help="size of the video to make (MiB)")
    ap.add_argument("--keep", type=Path, help="folder for the video (kept; reused if there)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="triage-bench-bigvideo-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "big.mp4"
        if not path.exists():
            print(f"making a ~{args.mib} MiB 1080p video ...", flush=True)
            make_video(path, args.mib)
        size = path.stat().st_size
        subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL)     # page cache
        print(f"video: {size / MiB:.0f} MiB; load average {os.getloadavg()[0]:.2f}")
        spool_dir = tempfile.mkdtemp(prefix="spool-", dir=tmp)
        res = {name: run(name, path, spool_dir) for name in ("off", "memory", "spool")}
        res["ffmpeg-k"] = ffmpeg(path, "-skip_frame", "nokey")
        res["ffmpeg"] = ffmpeg(path, "-threads", "1", "-vf", "fps=1")
        for name, r in res.items():
            print(f"{name:<8} {r['seconds']:7.2f} s  frames {str(r['frames']):>4}  peak RSS "
                  f"{r['rss']:7.1f} MB  {'; '.join(r['gaps'])}")
        print(f"spool against memory: {res['spool']['seconds'] / res['memory']['seconds']:.2f}x the "
              f"time, {res['spool']['rss'] / res['memory']['rss']:.2f}x the peak RSS; against "
              f"ffmpeg decoding every frame on one thread: "
              f"{res['spool']['seconds'] / res['ffmpeg']['seconds']:.2f}x the time, its "
              f"keyframes only: {res['spool']['seconds'] / res['ffmpeg-k']['seconds']:.2f}x; "
              f"spool folder left empty: {not os.listdir(spool_dir)}")


if __name__ == "__main__":
    main()
