"""Model-stage throughput: decode + preprocess, and inference at batch 1/16/64.

Runs standalone: `.venv/bin/python bench/models.py [--quick] [--compile] [--onnx-dir DIR]`.
On CPU it prints, in one run, torch fp32, bf16 and int8 (int8's screen, and int8 alone; bf16 +
torch.compile with --compile) against onnxruntime on the same ONNX file, interleaved, at batch
1/16/64 of the validation pictures the gate times, and each precision's accuracy gate against fp32 on the validation set (models/precision.py). On a GPU it
prints fp32 and bf16 + channels_last. Then the cascade's first stage (models/cascade.py) on
generated bait and benign pictures against the full network's fp32 scores: the bait recall,
the share of benign pictures it rules out (its gain), anything it ruled out that a threshold
would have caught, and its own rate. Ends with one summary line and the peak RSS.
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


def bench_cpu(spec, batches, threads: int, do_compile: bool) -> dict:
    """Every precision (and the compiled path) against onnxruntime, interleaved, and each
    precision's accuracy gate on the validation set (models/precision.py)."""
    import onnxruntime as ort
    import torch

    from models import precision as P
    from models.engine import Engine

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(spec.weights), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    flags = P.cpu_flags()
    kind, plan = P.cpu_kind(flags)
    print(f"CPU: {kind}; auto tries {', '.join(plan)}")
    engines = {"torch fp32": Engine(spec, "cpu", threads, "fp32")}
    for label, prec, extra in (("torch bf16", "bf16", {}), ("torch int8", "int8", {}),
                               ("torch int8 alone", "int8", {"screen_band": None})):
        t0 = time.perf_counter()
        try:
            engines[label] = Engine(spec, "cpu", threads, prec, **extra)
        except Exception as exc:   # noqa: BLE001 - int8 needs an x86 CPU
            print(f"  {label}: not available here ({str(exc).splitlines()[0]})")
            continue
        print(f"  {label}: built in {time.perf_counter() - t0:.1f} s"
              + ("" if engines[label].precision == prec else f" (fell back to {engines[label].precision})"))
    if do_compile:
        t0 = time.perf_counter()
        engines["torch bf16 compiled"] = Engine(spec, "cpu", threads, "bf16", compile=True)
        engines["torch bf16 compiled"].raw(np.zeros((16, 224, 224, 3), np.uint8))
        print(f"  torch.compile (bf16) start-up: {time.perf_counter() - t0:.1f} s")

    names, inputs = P.pictures(spec, "validation")
    ref = engines["torch fp32"].raw(inputs)
    gates = {}
    print(f"accuracy gate: {len(names)} validation pictures, max |score difference| <= "
          f"{P.MAX_DELTA} against fp32 and no picture across a threshold")
    for label, engine in engines.items():
        if label == "torch fp32":
            continue
        v = P.gate(spec, engine.precision, ref, engine.raw(inputs), names)
        alone = engine.alone(inputs)
        if alone is not None:           # int8's screen: held to the screen check as select does
            logit, why = P.screen_check(spec, ref, alone)
            if why:
                v = P.Verdict(v.precision, False, v.max_delta, v.flips, v.pictures, v.rate,
                              "; ".join(r for r in (v.reason, why) if r))
        gates[label] = v
        print(f"  {label:<22} {'passes' if v.passed else 'REFUSED'}: max |d| {v.max_delta:.4f}, "
              f"{len(v.flips)} across a threshold{'; ' + v.reason if v.reason else ''}")
        if alone is not None:
            print(f"  {'':<22} screen: {int(engine.rescored(inputs).sum())} of {len(names)} "
                  f"pictures re-scored in {P.rescore_precision(flags)} (band {P.SCREEN_BAND}); "
                  f"int8 alone's largest logit change {logit:.3f} (at most "
                  f"{P.screen_logit_limit():.3f})")

    from models.engine import rate_batch
    mix = rate_batch(inputs)
    rates: dict = {}
    print(f"open_nsfw inference on CPU, {threads} threads, pictures/s (best of interleaved rounds), "
          f"on the validation pictures the gate times ({len(mix)}: bait and benign as in the set, "
          "repeated to fill a batch):")
    for b in batches:
        batch = np.resize(mix, (b,) + mix.shape[1:])
        onnx_in = np.ascontiguousarray(batch[..., ::-1].astype(np.float32) - np.float32(spec.mean))
        fns = {"onnxruntime": lambda: session.run(None, {name: onnx_in})}
        fns.update({k: (lambda e=e: e.raw(batch)) for k, e in engines.items()})
        r = compare(fns, b, rounds=max(3, 48 // b))
        rates[b] = r
        print(f"  batch {b:3d}: " + " | ".join(f"{k} {v:6.1f}" for k, v in r.items()))
    # parity on this run's inputs, so the numbers above are for the same function
    out = session.run(None, {name: onnx_in})[0]
    print(f"  max abs diff torch fp32 vs onnxruntime: {np.abs(out - engines['torch fp32'].raw(batch)).max():.2e}")
    return {"rates": rates, "gates": gates, "fp32": engines["torch fp32"]}


def bench_cascade(spec, engine, n_bait: int, n_benign: int) -> "object":
    """The first stage against the full network on generated pictures (models/cascade.py)."""
    from models import cascade

    t0 = time.perf_counter()
    names, inputs = cascade.pictures(spec, n_bait, n_benign)
    made = time.perf_counter() - t0
    t0 = time.perf_counter()
    col = list(spec.labels).index("explicit")
    scores = np.concatenate([engine.raw(inputs[i:i + 16]) for i in range(0, len(inputs), 16)])[:, col]
    network = len(inputs) / (time.perf_counter() - t0)
    f = cascade.measure(spec, names, inputs, scores)
    lowest = sorted({spec.thresholds.get("explicit", 0.5)} | ({spec.faces.threshold} if spec.faces else set()))
    print(f"cascade first stage (fewer than {spec.first_stage_skin:.0%} of the model input's pixels "
          f"could be skin: ruled out), {f.bait} bait + {f.benign} benign generated pictures "
          f"(seed {cascade.SEED}, made in {made:.0f} s):")
    print(f"  bait the full network (fp32) puts over {spec.thresholds.get('explicit')}: {f.bait_over} "
          f"of {f.bait}; still sent on: {f.bait_over_sent} (recall {f.recall:.1%})")
    print(f"  benign ruled out: {f.benign_ruled_out} of {f.benign} ({f.benign_share:.1%}): "
          + ", ".join(f"{k} {got}/{of}" for k, (got, of) in sorted(f.by_kind.items())))
    print(f"  ruled out yet at or over a threshold ({', '.join(map(str, lowest))}): {len(f.lost)}"
          f"{' ' + str(f.lost[:5]) if f.lost else ''}; highest score ruled out "
          f"{f.max_ruled_out_score:.4f}")
    print(f"  first stage {f.rate:7.0f} pictures/s on one core; the full network here "
          f"{network:6.1f} pictures/s (fp32, batch 16)")
    print(f"  verdict: {'meets the bar (nothing lost): on by default' if f.keeps_everything else 'FAILS the bar: must be off by default'}")
    return f


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
    ap.add_argument("--cascade-bait", type=int, default=120, help="bait pictures for the cascade")
    ap.add_argument("--cascade-benign", type=int, default=400, help="benign pictures for the cascade")
    ap.add_argument("--only-cascade", action="store_true", help="the cascade's first stage only")
    args = ap.parse_args()

    spec = resolve("open_nsfw")
    if args.onnx_dir:
        spec = spec.with_weights(args.onnx_dir / "open-nsfw.onnx")
    batches = (1, 16) if args.quick else (1, 16, 64)
    cascade_set = (30, 80) if args.quick else (args.cascade_bait, args.cascade_benign)
    summary = []
    if not args.no_preprocess and not args.only_cascade:
        pre = bench_preprocess(spec, 4 if args.quick else 12)
        summary.append(f"preprocess {pre['draft']:.0f}/s (draft)")
    import torch

    from models.engine import Engine
    if args.only_cascade:
        fp32 = Engine(spec, "cuda" if torch.cuda.is_available() else "cpu", args.threads, "fp32")
    elif torch.cuda.is_available():
        best = bench_gpu(spec, batches + (256,), args.compile)
        summary.append(f"GPU bf16 batch 256 {best[256]:.0f}/s")
        fp32 = Engine(spec, "cuda", precision="fp32")
    else:
        got = bench_cpu(spec, batches, args.threads, args.compile)
        bench_age_cpu(args.threads, args.onnx_dir)
        b = 16 if 16 in got["rates"] else batches[-1]
        r = got["rates"][b]
        summary.append(f"batch {b}: " + ", ".join(
            f"{k.replace('torch ', '')} {v:.0f}/s ({v / r['torch fp32']:.2f}x fp32)" for k, v in r.items()))
        summary.append("gate: " + ", ".join(
            f"{k.replace('torch ', '')} {'pass' if v.passed else 'refused'} (max |d| {v.max_delta:.4f})"
            for k, v in got["gates"].items()))
        fp32 = got["fp32"]
    # the default cascade's spec: the same network, and the face stage's 0.3 is a threshold too
    f = bench_cascade(resolve("default").with_weights(spec.weights), fp32, *cascade_set)
    summary.append(f"first stage: bait recall {f.recall:.0%}, {f.benign_share:.1%} of benign ruled "
                   f"out, {len(f.lost)} lost, {f.rate:.0f} pictures/s")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"RESULT models: {'; '.join(summary)}; peak RSS {peak:.0f} MiB")


if __name__ == "__main__":
    main()
