"""How far the video stage's frame hashes are from the reference route's, frame by frame.

    .venv/bin/python bench/video_hashes.py [--seconds 6] [--out hashes.csv]

The stage hashes each frame from its decoder's luma (the Y plane, full size) with PDQ computed
by triage/features/_pdq.c, and pHash from a small grey picture of it. Other systems hash the
full-size RGB frame (ThreatExchange's vpdq-hash-video: each frame converted to RGB24 by swscale
with its default, BT.601, matrix, then PDQ of its luma). This decodes every frame of synthetic
videos of varied content, sizes, codecs and colour tagging and, for each, compares the routes:
  reference  vpdq-hash-video's: the full-size frame as RGB (BT.601), pdqhash on it, and pHash
             (imagehash's) of it;
  tag-aware  the same, the RGB made with the frame's own colour tags (BT.709 where tagged);
  rgb-small  the stage's route before the luma path: RGB at the work size (shorter side 256,
             swscale AREA), pdqhash and pHash on that;
  stage      what triage.features.video computes now (frame_hashes, then phash).
Printed: the distribution of PDQ Hamming distances, the largest, how far PDQ quality moves
(and whether it stays on the same side of 50, the matching floor), and the same for pHash; the
match threshold is 31 bits for PDQ. Nothing here is timed.

Content (each a few seconds, 2-5 scenes, all generated): landscapes, abstract pictures, alert
stand-ins, model-bait pictures, camera-like noisy frames and ffmpeg's testsrc2, at 1280x720,
1920x1080, 640x480 and 320x240; H.264 (limited range, untagged and tagged BT.709), MJPEG
(full range) and VP9.
"""
from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FPS = 5


def _pictures(kind: str, seed: int, n: int, w: int, h: int) -> list:
    from triage.synth import bait
    from triage.synth import pictures as pics
    out = []
    for k in range(n):
        if kind == "landscape":
            out.append(pics.landscape(pics.rng_for(seed, "vh", k), w, h))
        elif kind == "abstract":
            out.append(pics.abstract(pics.rng_for(seed, "vh", k), w, h))
        elif kind == "alert":
            out.append(pics.alert_picture(seed, k, w, h))
        elif kind == "bait":
            out.append(bait.make_bait_picture(seed * 7 + k).resize((w, h)))
        elif kind == "camera":
            out.append(pics.camera_frame(seed, f"vh{k}", w, h))
    return out


def _encode_tagged(frames: list, size: tuple[int, int]) -> bytes:
    """H.264 tagged BT.709 (as HD cameras write): the RGB -> YUV matrix and the tags both 709."""
    w, h = size
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/v.mp4"
        proc = subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "rawvideo",
             "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(FPS), "-i", "pipe:0",
             "-vf", "scale=out_color_matrix=bt709:out_range=tv", "-c:v", "libx264",
             "-preset", "veryfast", "-crf", "23", "-g", str(FPS), "-pix_fmt", "yuv420p",
             "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709",
             "-color_range", "tv", path], stdin=subprocess.PIPE)
        for arr in frames:
            proc.stdin.write(np.ascontiguousarray(arr, np.uint8).tobytes())
        proc.stdin.close()
        if proc.wait() != 0:
            raise RuntimeError("ffmpeg failed")
        return Path(path).read_bytes()


def _testsrc(size: tuple[int, int], seconds: int) -> bytes:
    w, h = size
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/t.mp4"
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        f"testsrc2=size={w}x{h}:rate={FPS}:duration={seconds}", "-c:v", "libx264",
                        "-preset", "ultrafast", "-crf", "23", "-g", str(FPS), "-pix_fmt",
                        "yuv420p", path], check=True)
        return Path(path).read_bytes()


def videos(seconds: int):
    from triage.synth import videos as sv
    plan = [("landscape", (1280, 720), "h264"), ("abstract", (1280, 720), "h264"),
            ("alert", (1280, 720), "h264"), ("bait", (640, 480), "h264"),
            ("camera", (1920, 1080), "h264"), ("landscape", (640, 480), "mjpeg"),
            ("alert", (640, 480), "mjpeg"), ("abstract", (320, 240), "vp9"),
            ("alert", (1280, 720), "vp9"), ("landscape", (320, 240), "h264"),
            ("landscape", (1280, 720), "h264-709"), ("alert", (1920, 1080), "h264-709"),
            ("bait", (1280, 720), "mjpeg")]
    for i, (content, size, kind) in enumerate(plan):
        n = 3
        imgs = _pictures(content, 100 + i, n, *size)
        frames = list(sv.scenes(imgs, [seconds / n] * n, size, FPS, seed=i))
        data = (_encode_tagged(frames, size) if kind == "h264-709"
                else sv.encode(frames, size, FPS, kind))
        yield f"{content} {size[0]}x{size[1]} {kind}", data
    yield "testsrc2 1280x720 h264", _testsrc((1280, 720), seconds)


def main() -> int:
    import av
    import pdqhash
    from PIL import Image

    from triage.features.pictures import _pdq_kernel, hamming_hex, pdq_hex, phash
    from triage.features.video import _reformatter, frame_hashes, work_size

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=6)
    ap.add_argument("--out", type=Path, default=None, help="write every frame's figures (CSV)")
    args = ap.parse_args()
    print(f"PDQ kernel: {'triage.features._pdq' if _pdq_kernel() else 'pdqhash (no C kernel)'}")
    rows = []
    for name, data in videos(args.seconds):
        sws = _reformatter()
        with av.open(io.BytesIO(data)) as c:
            for frame in c.decode(video=0):
                # vpdq-hash-video's RGB: swscale's default (BT.601) matrix whatever the tags
                full = frame.reformat(format="rgb24", src_colorspace="ITU601").to_ndarray()
                ref_v, ref_q = pdqhash.compute(np.ascontiguousarray(full))
                ref = pdq_hex(ref_v)
                tagged_v, _ = pdqhash.compute(np.ascontiguousarray(frame.to_ndarray(format="rgb24")))
                w, h = work_size(frame.width, frame.height)
                small = frame.to_ndarray(format="rgb24", width=w, height=h, interpolation="AREA")
                old_v, old_q = pdqhash.compute(np.ascontiguousarray(small))
                old = pdq_hex(old_v)
                new, new_q, grey = frame_hashes(frame, sws)
                ph_ref = phash(Image.fromarray(full))
                rows.append(dict(video=name, t=float(frame.time or 0), ref_q=int(ref_q),
                                 old_q=int(old_q), new_q=new_q,
                                 new_ref=hamming_hex(new, ref), old_ref=hamming_hex(old, ref),
                                 new_tagged=hamming_hex(new, pdq_hex(tagged_v)),
                                 old_tagged=hamming_hex(old, pdq_hex(tagged_v)),
                                 new_old=hamming_hex(new, old),
                                 ph_new_ref=hamming_hex(phash(Image.fromarray(grey)), ph_ref),
                                 ph_old_ref=hamming_hex(phash(Image.fromarray(small)), ph_ref)))
        got = [r for r in rows if r["video"] == name]
        print(f"  {name:28s} {len(got):3d} frames: PDQ bits from the reference, max: stage "
              f"{max(r['new_ref'] for r in got):2d}, rgb-small {max(r['old_ref'] for r in got):2d}; "
              f"quality {min(r['ref_q'] for r in got)}-{max(r['ref_q'] for r in got)}")
    print(f"{len(rows)} frames of {len({r['video'] for r in rows})} videos")

    def dist(key: str) -> str:
        vals = sorted(r[key] for r in rows)
        pct = lambda p: vals[min(len(vals) - 1, int(p * len(vals)))]  # noqa: E731
        hist = Counter(min(v, 16) for v in vals)
        top = ", ".join(f"{k if k < 16 else '16+'}: {hist[k]}" for k in sorted(hist))
        return (f"median {pct(0.5)}, p90 {pct(0.9)}, p99 {pct(0.99)}, max {vals[-1]}, "
                f"mean {sum(vals) / len(vals):.2f}  [{top}]")

    print("PDQ bits, stage against reference:          ", dist("new_ref"))
    print("PDQ bits, rgb-small against reference:      ", dist("old_ref"))
    print("PDQ bits, stage against tag-aware reference:", dist("new_tagged"))
    print("PDQ bits, rgb-small against tag-aware ref.: ", dist("old_tagged"))
    print("PDQ bits, stage against rgb-small:          ", dist("new_old"))
    dq_new = [r["new_q"] - r["ref_q"] for r in rows]
    dq_old = [r["old_q"] - r["ref_q"] for r in rows]
    print(f"PDQ quality, stage - reference: {min(dq_new)} to {max(dq_new)} (mean "
          f"{sum(dq_new) / len(dq_new):.2f}); rgb-small - reference: {min(dq_old)} to "
          f"{max(dq_old)} (mean {sum(dq_old) / len(dq_old):.2f})")
    for key in ("new_q", "old_q"):
        both = sum((r[key] >= 50) == (r["ref_q"] >= 50) for r in rows)
        print(f"PDQ quality ({'stage' if key == 'new_q' else 'rgb-small'}) on the same side "
              f"of 50 as the reference's: {both} of {len(rows)}")
    print("pHash bits, stage against reference:        ", dist("ph_new_ref"))
    print("pHash bits, rgb-small against reference:    ", dist("ph_old_ref"))
    if args.out:
        import csv
        with open(args.out, "w", newline="") as f:
            wr = csv.DictWriter(f, fieldnames=list(rows[0]))
            wr.writeheader()
            wr.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
