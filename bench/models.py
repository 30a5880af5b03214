"""Model-stage throughput: decode + preprocess, and inference at batch 1/16/64.

Runs standalone: `.venv/bin/python bench/models.py [--quick] [--compile] [--onnx-dir DIR]`.
On CPU it prints torch (fp32, without and with channels_last) against onnxruntime on the same
ONNX file in the same run, and the ratio (goal: torch within 1.5x of onnxruntime). On a GPU it
prints fp32 and bf16 + channels_last. Ends with one summary line and the peak RSS.
"""
from __future__ import annotations

import argparse
import io
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.preprocess import load_for_model, open_picture, preprocess  # noqa: E402
from models.registry import resolve  # noqa: E402


def camera_jpegs(n: int, size=(4000, 3000)) -> list[bytes]:
    """12 MP JPEGs with smooth content and sensor-like noise, like phone photos."""
    rng = np.random.default_rng(0)
    w, h = size
    small = rng.integers(0, 256, (h // 100, w // 100, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(small).resize(size, Image.Resampling.BICUBIC), np.int16)
    out = []
    for i in range(n):
        arr = np.clip(base + rng.normal(0, 4, base.shape).astype(np.int16) + i, 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "JPEG", quality=88)
        out.append(buf.getvalue())
    return out


def rate(fn, items: int, repeat: int = 3) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return items / best


def compare(fns: dict, items: int, rounds: int) -> dict[str, float]:
    """Best-of-`rounds` rate of each contender, interleaved so that load from other processes
    on a shared machine hits all of them alike."""
    for fn in fns.values():
        fn()  # warm-up
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    return {k: items / v for k, v in best.items()}


def bench_preprocess(spec, n: int) -> dict[str, float]:
    jpegs = camera_jpegs(n)
    full = rate(lambda: [preprocess(spec, open_picture(b)) for b in jpegs], n, repeat=2)
    draft = rate(lambda: [load_for_model(spec, b) for b in jpegs], n, repeat=2)
    print(f"decode+preprocess, 12 MP JPEG, 1 core: full decode {full:6.1f} pictures/s, "
          f"draft decode {draft:6.1f} pictures/s ({draft / full:.1f}x)")
    return {"full": full, "draft": draft}


def bench_cpu(spec, batches, threads: int, do_compile: bool) -> dict[int, float]:
    import onnxruntime as ort
    import torch

    from models.engine import Engine

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(spec.weights), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    without = Engine(spec, "cpu", threads)
    without.net = without.net.to(memory_format=torch.contiguous_format)
    without_tensor = without.tensor
    without.tensor = lambda b: without_tensor(b).contiguous()   # plain NCHW: the "without" run
    with_cl = Engine(spec, "cpu", threads)
    bf16 = None
    if torch.backends.mkldnn.is_available() and _has_avx512_bf16():
        bf16 = Engine(spec, "cpu", threads, precision="bf16")
        diff = np.abs(bf16.raw(np.full((1, 224, 224, 3), 128, np.uint8))
                      - with_cl.raw(np.full((1, 224, 224, 3), 128, np.uint8))).max()
        print(f"CPU has avx512_bf16: also timing bf16 (max abs diff vs fp32 on a grey picture {diff:.4f})")
    compiled = None
    if do_compile:
        t0 = time.perf_counter()
        compiled = Engine(spec, "cpu", threads, compile=True)
        compiled.raw(np.zeros((1, 224, 224, 3), np.uint8))
        print(f"torch.compile start-up: {time.perf_counter() - t0:.1f} s")
    rng = np.random.default_rng(1)
    ratios = {}
    print(f"open_nsfw inference on CPU, {threads} threads, pictures/s (best of interleaved rounds):")
    for b in batches:
        batch = rng.integers(0, 256, (b, 224, 224, 3), dtype=np.uint8)
        onnx_in = np.ascontiguousarray(batch[..., ::-1].astype(np.float32) - np.float32(spec.mean))
        fns = {"onnxruntime": lambda: session.run(None, {name: onnx_in}),
               "torch NCHW": lambda: without.raw(batch),
               "torch channels_last": lambda: with_cl.raw(batch)}
        if bf16 is not None:
            fns["torch bf16"] = lambda: bf16.raw(batch)
        if compiled is not None:
            fns["torch compiled"] = lambda: compiled.raw(batch)
        r = compare(fns, b, rounds=max(3, 48 // b))
        ratios[b] = r["onnxruntime"] / r["torch channels_last"]
        print(f"  batch {b:3d}: " + " | ".join(f"{k} {v:6.1f}" for k, v in r.items())
              + f"  (onnxruntime / torch channels_last = {ratios[b]:.2f}x)")
    # parity on this run's inputs, so the numbers above are for the same function
    ref = session.run(None, {name: onnx_in})[0]
    print(f"  max abs diff torch vs onnxruntime: {np.abs(ref - with_cl.raw(batch)).max():.2e}")
    return ratios


def _has_avx512_bf16() -> bool:
    try:
        return "avx512_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def bench_age_cpu(threads: int, onnx_dir: Path | None) -> None:
    import onnxruntime as ort

    from models.engine import Engine

    spec = resolve("dlib_age")
    if onnx_dir:
        spec = spec.with_weights(onnx_dir / "age-v1.onnx")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(spec.weights), opts, providers=["CPUExecutionProvider"])
    engine = Engine(spec, "cpu", threads)
    chips = np.random.default_rng(2).integers(0, 256, (64, 64, 64, 3), dtype=np.uint8)
    x = ((chips.astype(np.float32) - np.float32(spec.mean)) / np.float32(256)).transpose(0, 3, 1, 2).copy()
    r = compare({"ort": lambda: session.run(None, {"images": x}), "torch": lambda: engine.raw(chips)},
                64, rounds=5)
    r_ort, r_t = r["ort"], r["torch"]
    print(f"age model, 64x64 chips, batch 64: onnxruntime {r_ort:7.1f} | torch {r_t:7.1f} chips/s "
          f"(ratio {r_ort / r_t:.2f}x)")


def bench_gpu(spec, batches, do_compile: bool) -> dict[int, float]:
    import torch

    from models.engine import Engine

    print(f"open_nsfw inference on {torch.cuda.get_device_name(0)}, pictures/s:")
    plain = Engine(spec, "cuda", precision="fp32")
    plain.net = plain.net.to(memory_format=torch.contiguous_format)
    plain_tensor = plain.tensor
    plain.tensor = lambda b: plain_tensor(b).contiguous()      # the "without" run: NCHW fp32
    fp32 = Engine(spec, "cuda", precision="fp32")
    bf16 = Engine(spec, "cuda", precision="bf16")
    rng = np.random.default_rng(1)
    best = {}

    def synced(engine, batch):
        engine.raw(batch)          # .cpu() in raw() synchronises
    for b in batches:
        batch = rng.integers(0, 256, (b, 224, 224, 3), dtype=np.uint8)
        r = compare({"plain": lambda: synced(plain, batch), "fp32": lambda: synced(fp32, batch),
                     "bf16": lambda: synced(bf16, batch)}, b, rounds=5)
        diff = np.abs(fp32.raw(batch) - bf16.raw(batch)).max()
        r16 = r["bf16"]
        print(f"  batch {b:4d}: fp32 NCHW {r['plain']:8.1f} | fp32 channels_last {r['fp32']:8.1f} | "
              f"bf16 channels_last {r16:8.1f} "
              f"(max abs diff bf16 vs fp32 {diff:.3f})")
        best[b] = r16
    # the network alone, input already on the GPU (what a saturated actor pool approaches)
    x = bf16.tensor(rng.integers(0, 256, (256, 224, 224, 3), dtype=np.uint8))
    with torch.inference_mode():
        def net_only():
            bf16.net(x)
            torch.cuda.synchronize()
        print(f"  network only, batch 256, bf16: {rate(net_only, 256, repeat=5):8.1f} pictures/s")
    if do_compile:
        t0 = time.perf_counter()
        compiled = Engine(spec, "cuda", precision="bf16", compile=True)
        batch = rng.integers(0, 256, (256, 224, 224, 3), dtype=np.uint8)
        compiled.raw(batch)
        print(f"  torch.compile start-up {time.perf_counter() - t0:.1f} s; batch 256 bf16 compiled "
              f"{rate(lambda: compiled.raw(batch), 256, repeat=5):8.1f} pictures/s")
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer pictures and batch sizes 1/16 only")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (slow start)")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--onnx-dir", type=Path, default=None,
                    help="a folder with open-nsfw.onnx and age-v1.onnx (when the packages are absent)")
    ap.add_argument("--no-preprocess", action="store_true")
    args = ap.parse_args()

    spec = resolve("open_nsfw")
    if args.onnx_dir:
        spec = spec.with_weights(args.onnx_dir / "open-nsfw.onnx")
    batches = (1, 16) if args.quick else (1, 16, 64)
    summary = []
    if not args.no_preprocess:
        pre = bench_preprocess(spec, 4 if args.quick else 12)
        summary.append(f"preprocess {pre['draft']:.0f}/s (draft)")
    import torch
    if torch.cuda.is_available():
        best = bench_gpu(spec, batches + (256,), args.compile)
        summary.append(f"GPU bf16 batch 256 {best[256]:.0f}/s")
    else:
        ratios = bench_cpu(spec, batches, args.threads, args.compile)
        bench_age_cpu(args.threads, args.onnx_dir)
        summary.append("torch/onnxruntime " + ", ".join(f"b{b} {r:.2f}x" for b, r in ratios.items()))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"RESULT models: {'; '.join(summary)}; peak RSS {peak:.0f} MiB")


if __name__ == "__main__":
    main()
