"""The torch side: load a verified spec's network and run uint8 batches through it.

Every network, whatever its format, gets float NCHW input already normalised as its spec says
((pixel - mean) / std in the spec's channel order) and returns one row per picture with one
column per output label. Only this module and models/zoo, models/faces.py (age) and
models/testing.py import torch.
"""
from __future__ import annotations

import io
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from models.precision import PRECISIONS, SCREEN_BAND
from models.spec import ModelSpec
from triage.errors import ModelError

COMPILE_ENV = "TRIAGE_MODEL_COMPILE"   # "1": torch.compile the network (slow start, faster CPU)
# On CPU a large batch runs in chunks of at most this many input pixels (16 pictures at 224²):
# open_nsfw's activations for 64 pictures overflow the caches, and batch 64 ran at 0.75x the
# rate of batch 16 (bench/models.py). Small inputs (64² face chips) get proportionally more.
CPU_CHUNK_PIXELS = 16 * 224 * 224


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ModelError(f"unknown device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError("device cuda was asked for, but torch sees no GPU")
    return dev


def set_threads(num_threads: int | None) -> int:
    """Intra-op threads for CPU inference; returns the number set.

    Default: OMP_NUM_THREADS when set (Ray sets it to the actor's num_cpus), else the CPUs this
    process may run on. One inter-op thread: a batch is one graph, nothing runs beside it.
    """
    if num_threads is None:
        env = os.environ.get("OMP_NUM_THREADS", "")
        num_threads = int(env) if env.isdigit() and int(env) > 0 else len(os.sched_getaffinity(0))
    num_threads = max(1, int(num_threads))
    torch.set_num_threads(num_threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # only settable before the first parallel work in this process
    return num_threads


def load_network(spec: ModelSpec) -> torch.nn.Module:
    """The network of an already verified spec, on CPU, in eval mode."""
    path = Path(spec.weights)
    try:
        if spec.format == "torchscript":
            with warnings.catch_warnings():   # TorchScript is deprecated upstream but still the
                warnings.simplefilter("ignore", DeprecationWarning)   # common export of vendors
                net = torch.jit.load(str(path), map_location="cpu")
        elif spec.format == "export":
            net = torch.export.load(str(path)).module()
        elif spec.format == "state_dict":
            from models import zoo
            net = zoo.build(spec.arch)
            state = torch.load(str(path), map_location="cpu", weights_only=True)
            if isinstance(state, dict) and "state_dict" in state:
                state = state["state_dict"]
            net.load_state_dict(state)
        elif spec.format == "onnx_weights":
            from models import zoo
            net = zoo.build(spec.arch, path)
        else:
            raise ModelError(f"{spec.name}: unknown format {spec.format!r}")
    except ModelError:
        raise
    except Exception as exc:  # torch raises many types for a bad file; all mean "cannot load"
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot load {spec.name} ({spec.format}) from {path}: {msg}") from None
    if hasattr(net, "eval"):
        try:
            net.eval()
        except (NotImplementedError, RuntimeError):
            pass  # exported programs' modules refuse train/eval switching; they are inference-only
    return net


class Engine:
    """One network on one device in one precision, with its input normalisation; call it with
    uint8 NHWC.

    precision: fp32 (the reference), bf16 (weights and activations bfloat16; an op without a
    bf16 kernel makes the whole network fall back to fp32), int8 (torch's x86 static
    quantization, calibrated on `calibration`, uint8 model inputs; default: the generated
    calibration set of models/precision.py; used as a screen: pictures whose int8 score lies
    inside `screen_band`..1-`screen_band` are scored again in `rescore` (default: bf16 where
    the CPU has it, else fp32), models/precision.py: SCREEN_BAND; screen_band=None: int8
    alone), or "auto" (bf16 on a GPU, else fp32; the CPU's own choice, with the accuracy
    gate, is `select`). `net`: an already built network for that precision (a cached
    artefact), used as it is.
    """

    def __init__(self, spec: ModelSpec, device: str = "auto", num_threads: int | None = None,
                 precision: str = "auto", compile: bool | None = None,
                 net: torch.nn.Module | None = None, calibration: np.ndarray | None = None,
                 screen_band: float | None = SCREEN_BAND, rescore: str | None = None):
        self.spec = spec
        self.device = pick_device(device)
        self.threads = set_threads(num_threads) if self.device.type == "cpu" else 0
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" else "fp32"
        if precision not in PRECISIONS:
            raise ModelError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        if precision == "int8" and self.device.type != "cpu":
            raise ModelError("int8 runs on the CPU only")
        self.precision = precision
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        order = [2, 1, 0] if spec.colour == "BGR" else [0, 1, 2]
        self._order = torch.tensor(order, device=self.device)
        self._mean = torch.tensor(spec.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._inv_std = (1.0 / torch.tensor(spec.std, dtype=torch.float32,
                                            device=self.device)).view(1, 3, 1, 1)
        if compile is None:
            compile = os.environ.get(COMPILE_ENV, "") == "1"
        if net is not None:
            self.net = net
            self._check_outputs()
            return
        net = load_network(spec)
        # channels_last: oneDNN and cuDNN both run NHWC convolutions faster, and a uint8 NHWC
        # batch permuted to NCHW is already channels_last in memory, so no copy is made.
        net = net.to(self.device)
        try:
            net = net.to(memory_format=torch.channels_last)
        except (TypeError, RuntimeError):
            pass
        if precision == "int8":
            if calibration is None:
                calibration = calibration_pictures(spec)
            quick = quantize_int8(net, [self.tensor(c) for c in _chunks(calibration, 8)])
            example = self.tensor(calibration[:2])
            if screen_band is None:
                self.net = freeze(quick, example)
            else:
                if rescore is None:
                    from models.precision import cpu_flags, rescore_precision
                    rescore = rescore_precision(cpu_flags())
                if rescore not in ("bf16", "fp32"):
                    raise ModelError(f"int8's screen re-scores in bf16 or fp32, not {rescore!r}")
                exact_dtype = torch.bfloat16 if rescore == "bf16" else torch.float32
                self.net = screened(spec, quick, net.to(exact_dtype), screen_band, exact_dtype,
                                    example)
            self._check_outputs()
            return
        if self.dtype != torch.float32:
            net = net.to(self.dtype)
        if compile:
            import torch._inductor.config as inductor_config
            inductor_config.freezing = True   # folds weights into the graph: conv + post-op fusion
            net = torch.compile(net)
        elif self.dtype == torch.bfloat16 and self.device.type == "cpu":
            # traced and frozen, oneDNN fuses convolution and ReLU: 128 against 111 pictures/s
            # for open_nsfw on 2 cores (fp32 gains nothing from it)
            net = freeze(net, self._example())
        self.net = net
        try:
            self._check_outputs()
        except RuntimeError:
            if self.dtype == torch.float32 or compile:
                raise
            # a user's network with an op that has no bf16 kernel: run it in fp32 instead
            self.dtype = torch.float32
            self.precision = "fp32"
            self.net = load_network(spec).to(self.device)
            self._check_outputs()

    def _example(self) -> torch.Tensor:
        size = self.spec.input_size
        return self.tensor(np.zeros((2, size, size, 3), dtype=np.uint8))

    def _check_outputs(self) -> None:
        """Run one blank picture so a spec whose labels disagree with the network fails now."""
        size = self.spec.input_size
        try:
            out = self.raw(np.zeros((1, size, size, 3), dtype=np.uint8))
        except ModelError:
            raise
        except RuntimeError:
            if self.dtype != torch.float32:
                raise   # the caller retries in fp32
            raise ModelError(f"{self.spec.name}: the network fails on a {size}x{size} picture; "
                             "check input.size in the spec") from None
        if out.ndim != 2 or out.shape[1] != len(self.spec.labels):
            raise ModelError(f"{self.spec.name}: the network returns shape {tuple(out.shape)}, "
                             f"but the spec names {len(self.spec.labels)} labels")

    def tensor(self, batch: np.ndarray) -> torch.Tensor:
        """uint8 [N, H, W, 3] RGB -> normalised float NCHW (channels_last) on the device."""
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[3] != 3:
            raise ModelError(f"{self.spec.name}: batch must be uint8 [N, H, W, 3], "
                             f"got {batch.dtype} {batch.shape}")
        x = torch.from_numpy(np.ascontiguousarray(batch))
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2)
        if self.spec.colour == "BGR":
            x = x.index_select(1, self._order)
        x = (x.float() - self._mean) * self._inv_std
        return x.to(self.dtype).contiguous(memory_format=torch.channels_last)

    def rescored(self, batch: np.ndarray) -> np.ndarray | None:
        """For int8 with its screen: which pictures of `batch` are scored again in the
        rescoring precision (bool per picture); None for a network without a screen."""
        if not hasattr(self.net, "rescored"):
            return None
        with torch.inference_mode():
            return np.concatenate([self.net.rescored(self.tensor(c)).cpu().numpy()
                                   for c in _chunks(batch, RATE_BATCH)] or [np.zeros(0, bool)])

    def alone(self, batch: np.ndarray) -> np.ndarray | None:
        """For int8 with its screen: int8's own outputs (activation applied), none re-scored;
        None for a network without a screen."""
        if not hasattr(self.net, "alone"):
            return None
        with torch.inference_mode():
            return np.concatenate([self._activate(self.net.alone(self.tensor(c))).numpy()
                                   for c in _chunks(batch, RATE_BATCH)]
                                  or [np.zeros((0, len(self.spec.labels)), np.float32)])

    def _activate(self, out: torch.Tensor) -> torch.Tensor:
        return activate(out.float(), self.spec.activation)

    def raw(self, batch: np.ndarray) -> np.ndarray:
        """The network's outputs with the spec's activation applied, float32 [N, labels]."""
        if len(batch) == 0:
            return np.zeros((0, len(self.spec.labels)), dtype=np.float32)
        chunk = max(1, CPU_CHUNK_PIXELS // (batch.shape[1] * batch.shape[2]))
        if self.device.type == "cpu" and len(batch) > chunk:
            return np.concatenate([self.raw(batch[i:i + chunk]) for i in range(0, len(batch), chunk)])
        with torch.inference_mode():
            out = self.net(self.tensor(batch))
            if isinstance(out, (tuple, list)):
                out = out[0]
            return self._activate(out).cpu().numpy()


# --- reduced precision: int8 quantization, freezing, and the choice with its accuracy gate ---

def _chunks(batch: np.ndarray, n: int) -> list[np.ndarray]:
    return [batch[i:i + n] for i in range(0, len(batch), n)]


def calibration_pictures(spec: ModelSpec) -> np.ndarray:
    """uint8 model inputs the int8 activation ranges are measured on (models/precision.py)."""
    from models.precision import pictures
    return pictures(spec, "calibration")[1]


def freeze(net: torch.nn.Module, example: torch.Tensor) -> torch.nn.Module:
    """The network traced and frozen (TorchScript, weights folded in as constants), or the
    network itself when it cannot be traced."""
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = net if isinstance(net, torch.jit.ScriptModule) else torch.jit.trace(net, example)
            return torch.jit.freeze(traced.eval())
    except Exception:  # noqa: BLE001 - tracing fails in many ways; eager still works
        return net


def activate(out: torch.Tensor, activation: str) -> torch.Tensor:
    """The spec's activation on a network's outputs (scriptable: the int8 screen uses it)."""
    if activation == "softmax":
        return torch.softmax(out, dim=1)
    if activation == "sigmoid":
        return torch.sigmoid(out)
    return out


class Screen(torch.nn.Module):
    """int8 first; the pictures whose score on a watched column lies inside [band, 1 - band]
    (where a small logit error is a large score error) are run again through `exact`, and
    its outputs replace int8's for them. Scripted, it is saved and loaded as one artefact."""

    def __init__(self, quick: torch.nn.Module, exact: torch.nn.Module, columns: list[int],
                 band: float, activation: str, exact_bf16: bool):
        super().__init__()
        self.quick = quick
        self.exact = exact
        self.columns = columns
        self.band = band
        self.activation = activation
        self.exact_bf16 = exact_bf16

    def within(self, out: torch.Tensor) -> torch.Tensor:
        watched = activate(out, self.activation)[:, self.columns]
        return ((watched >= self.band) & (watched <= 1.0 - self.band)).any(dim=1)

    @torch.jit.export
    def alone(self, x: torch.Tensor) -> torch.Tensor:
        """int8's own outputs, none re-scored (for the gate's check of the screen)."""
        return self.quick(x).float()

    @torch.jit.export
    def rescored(self, x: torch.Tensor) -> torch.Tensor:
        """Which pictures of `x` the screen sends to `exact` (bool per picture)."""
        return self.within(self.quick(x).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.quick(x).float()
        rows = self.within(out).nonzero().flatten()
        if rows.numel() > 0:
            again = x.index_select(0, rows)
            if self.exact_bf16:
                again = again.to(torch.bfloat16)
            again = again.contiguous(memory_format=torch.channels_last)
            out = out.index_copy(0, rows, self.exact(again).float())
        return out


def screened(spec: ModelSpec, quick: torch.nn.Module, exact: torch.nn.Module, band: float,
             exact_dtype: torch.dtype, example: torch.Tensor) -> torch.nn.Module:
    """int8's `quick` network screened by `exact` (models/precision.py: SCREEN_BAND): both
    traced, the pair scripted and frozen as one TorchScript module (one cached artefact; a
    module frozen on its own cannot be scripted into another), or the eager pair when a part
    cannot be traced."""
    from models.precision import gated_columns
    columns, bf16 = gated_columns(spec), exact_dtype == torch.bfloat16
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pair = Screen(torch.jit.trace(quick, example),
                          torch.jit.trace(exact, example.to(exact_dtype)),
                          columns, float(band), spec.activation, bf16)
            return torch.jit.freeze(torch.jit.script(pair).eval(), preserved_attrs=["rescored", "alone"])
    except Exception:  # noqa: BLE001 - tracing fails in many ways; the eager pair still works
        return Screen(quick, exact, columns, float(band), spec.activation, bf16)


def quantize_int8(net: torch.nn.Module, calibration: list[torch.Tensor]) -> torch.nn.Module:
    """torch's x86 static quantization (FX graph mode, the x86 qconfig: per-channel int8
    weights, histogram-calibrated uint8 activations) of an fp32 network, calibrated on the
    given normalised batches. Raises ModelError when the network cannot be quantized."""
    import copy

    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    from torch.ao.quantization import QConfig, QConfigMapping
    from torch.ao.quantization.observer import HistogramObserver, default_per_channel_weight_observer

    from models.precision import VNNI, cpu_flags

    if "x86" not in torch.backends.quantized.supported_engines:
        raise ModelError("this torch has no x86 quantized engine (not an x86 CPU)")
    torch.backends.quantized.engine = "x86"
    mapping = get_default_qconfig_mapping("x86")
    if cpu_flags() & VNNI:
        # the default's 7-bit activations avoid a 16-bit overflow of AVX2's int8 multiply;
        # VNNI and AMX accumulate in 32 bits, so the 8th bit is free: on open_nsfw the largest
        # score difference against fp32 fell from 0.055 to 0.041 at the same speed
        full = QConfig(activation=HistogramObserver.with_args(reduce_range=False),
                       weight=default_per_channel_weight_observer)
        keep = {k: v for k, v in mapping.object_type_qconfigs.items()
                if v is not None and v.activation is not mapping.global_qconfig.activation}
        mapping = QConfigMapping().set_global(full)
        for k, v in keep.items():        # fixed-range ops (sigmoid, softmax, ...) keep theirs
            mapping.set_object_type(k, v)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # FX quantization is marked deprecated upstream
            prepared = prepare_fx(copy.deepcopy(net).eval(), mapping, (calibration[0],))
            with torch.inference_mode():
                for batch in calibration:
                    prepared(batch)
            return convert_fx(prepared)
    except Exception as exc:  # noqa: BLE001 - FX tracing refuses many user networks
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot quantize this network: {msg[:200]}") from None


def _rate(engine: Engine, batch: np.ndarray) -> float:
    """Pictures/s of one batch, the best of two runs after a warm-up."""
    engine.raw(batch)
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        engine.raw(batch)
        best = min(best, time.perf_counter() - t0)
    return len(batch) / best


def _rates_interleaved(engines: dict[str, "Engine"], batch: np.ndarray,
                       rounds: int = 3) -> dict[str, float]:
    """Pictures/s of each engine on one batch, best of `rounds` taken in turn, so that load
    from other processes on a shared machine hits all of them alike."""
    for engine in engines.values():
        engine.raw(batch)
    best = {p: float("inf") for p in engines}
    for _ in range(rounds):
        for p, engine in engines.items():
            t0 = time.perf_counter()
            engine.raw(batch)
            best[p] = min(best[p], time.perf_counter() - t0)
    return {p: len(batch) / t for p, t in best.items()}


RATE_BATCH = 16


def rate_batch(inputs: np.ndarray) -> np.ndarray:
    """The pictures every precision is timed on: RATE_BATCH spread evenly over the validation
    set, so bait and benign pictures come in its proportions (int8's screen re-scores most
    bait, so a bait-only batch would time the re-scoring, a benign-only one hide it)."""
    return inputs[::max(1, len(inputs) // RATE_BATCH)][:RATE_BATCH]


def _reference(spec: ModelSpec, device: str, threads: int | None, cache: Path | None,
               compile: bool = False):
    """(names, validation inputs, fp32 outputs, fp32 pictures/s, the fp32 Engine or None):
    from the cache when it has them, else made now (and kept there)."""
    from models.precision import pictures
    path = cache / "reference.npz" if cache is not None else None
    if path is not None and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                names, inputs, outputs = [str(n) for n in z["names"]], z["inputs"], z["outputs"]
                rate = float(z["rate"])
            size = spec.input_size
            if (inputs.dtype == np.uint8 and inputs.shape[1:] == (size, size, 3)
                    and outputs.shape == (len(inputs), len(spec.labels)) == (len(names), len(spec.labels))
                    and np.all(np.isfinite(outputs))):
                return names, inputs, outputs.astype(np.float32), rate, None
        except (OSError, ValueError, KeyError, TypeError):
            pass
        # damaged: made again
    fp32 = Engine(spec, device, threads, "fp32", compile)
    names, inputs = pictures(spec, "validation")
    outputs = fp32.raw(inputs)
    rate = _rate(fp32, rate_batch(inputs))
    if path is not None:
        _keep_reference(path, names, inputs, outputs, rate)
    return names, inputs, outputs, rate, fp32


def _keep_reference(path: Path, names: list[str], inputs: np.ndarray, outputs: np.ndarray,
                    rate: float) -> None:
    from models.precision import write_atomic
    buf = io.BytesIO()
    np.savez(buf, names=np.array(names), inputs=inputs, outputs=outputs, rate=np.float64(rate))
    try:
        write_atomic(path, buf.getvalue())
    except OSError:
        pass      # a read-only $TRIAGE_HOME: everything is built again next start


def _save_artefact(engine: Engine, path: Path) -> str | None:
    """Write a TorchScript artefact; its sha256, or None when the network is not TorchScript."""
    from models.precision import sha256_bytes, write_atomic
    if not isinstance(engine.net, torch.jit.ScriptModule):
        return None
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # as in load_network
        torch.jit.save(engine.net, buf)
    data = buf.getvalue()
    try:
        write_atomic(path, data)
    except OSError:
        return None
    return sha256_bytes(data)


def _load_artefact(path: Path, sha256: str) -> torch.nn.Module | None:
    from models.precision import sha256_bytes
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if sha256_bytes(data) != sha256:
        return None
    if "x86" in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = "x86"   # packed int8 weights unpack for this engine
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(io.BytesIO(data), map_location="cpu")
    except Exception:  # noqa: BLE001 - a damaged artefact is built again
        return None


def _hold_screen(spec: ModelSpec, verdict, recipe: dict, reference: np.ndarray,
                 alone: np.ndarray, names: list[str], rescored: np.ndarray):
    """int8's screen is sound only where int8 alone keeps logits close (models/precision.py:
    screen_check): record int8 alone's figures in the recipe, and refuse when it is not."""
    from models import precision as P
    logit, why = P.screen_check(spec, reference, alone)
    recipe["rescored"] = f"{int(rescored.sum())} of {len(rescored)} validation pictures"
    recipe["int8_alone"] = {"max_delta": round(P.gate(spec, "int8", reference, alone, names).max_delta, 6),
                            "max_logit_delta": round(logit, 4),
                            "max_logit_delta_allowed": round(P.screen_logit_limit(), 4)}
    if not why:
        return verdict
    reasons = "; ".join(r for r in (verdict.reason, why) if r)
    return P.Verdict(verdict.precision, False, verdict.max_delta, verdict.flips,
                     verdict.pictures, verdict.rate, reasons)


def _cached_verdict(precision: str, record: dict):
    """The Verdict a cache record holds, or None when the record is not one (damaged)."""
    from models.precision import Verdict
    try:
        v = record["verdict"]
        rate = v.get("rate")
        return Verdict(precision, v["passed"] is True, float(v.get("max_delta") or 0.0),
                       [str(f) for f in v.get("flips") or []], int(v.get("pictures") or 0),
                       None if rate is None else float(rate), str(v.get("reason") or ""))
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def select(spec: ModelSpec, device: str = "auto", num_threads: int | None = None,
           precision: str = "auto", *, flags=None, use_cache: bool = True,
           compile: bool | None = None) -> tuple[Engine, dict]:
    """The Engine to score with, and the report of how its precision was chosen.

    The precisions tried come from the CPU's flags (models/precision.py: PLANS) or from
    `precision` when it names one. Each reduced precision is built (int8: calibrated), run on the
    validation set and held to the accuracy gate against fp32; of those that pass, `auto`
    takes the most exact within AUTO_MARGIN of the fastest measured, a named precision the
    first in fallback order. On the CPU what
    was built is kept under $TRIAGE_HOME/cache/models (key: model sha256, input section, torch
    version, CPU flags), so a later start-up loads it and only re-runs the gate.
    """
    from models import precision as P

    dev = pick_device(device)
    flags = P.cpu_flags() if flags is None else frozenset(flags)
    kind = "GPU" if dev.type == "cuda" else P.cpu_kind(flags)[0]
    order = P.candidates(precision, dev.type, flags)
    report: dict = {"asked": precision, "cpu": kind, "device": str(dev), "tried": [],
                    "max_delta_allowed": P.MAX_DELTA}
    if order == ["fp32"]:
        engine = Engine(spec, device, num_threads, "fp32", compile)
        why = "asked for" if precision == "fp32" else f"the only precision tried on {kind}"
        report.update(precision="fp32", threads=engine.threads, reason=f"fp32: {why}")
        return engine, report

    if compile is None:
        compile = os.environ.get(COMPILE_ENV, "") == "1"
    # a torch.compile'd network cannot be saved, so nothing is cached then
    cache = (P.cache_dir(spec, flags, torch.__version__)
             if use_cache and dev.type == "cpu" and not compile else None)
    report["cache"] = str(cache) if cache is not None else None
    names, inputs, ref_out, ref_rate, fp32 = _reference(spec, device, num_threads, cache, compile)
    rates = {"fp32": ref_rate}
    verdicts: dict[str, P.Verdict] = {}
    engines: dict[str, Engine] = {}
    records: dict[str, dict] = {}
    for p in order:
        if p == "fp32":
            continue
        record = P.read_json(cache / f"{p}.json") if cache is not None else None
        if record is not None and (_cached_verdict(p, record) is None or (
                record["verdict"]["passed"] and record.get("artefact") != f"{p}.pt")):
            record = None      # damaged, or passed but could not be kept: built again
        if record is None:
            t0 = time.perf_counter()
            recipe = P.int8_recipe(flags) if p == "int8" else None
            try:
                engine = Engine(spec, device, num_threads, p, compile,
                                rescore=P.rescore_precision(flags) if p == "int8" else None)
                if engine.precision != p:
                    verdict = P.Verdict(p, False, reason=f"the network has an op without a {p} "
                                                         "kernel (it ran in fp32)")
                else:
                    verdict = P.gate(spec, p, ref_out, engine.raw(inputs), names)
                    verdict.rate = _rate(engine, rate_batch(inputs))
                    if verdict.passed:
                        engines[p] = engine
                    alone = engine.alone(inputs) if recipe is not None else None
                    if alone is not None:
                        verdict = _hold_screen(spec, verdict, recipe, ref_out, alone, names,
                                               engine.rescored(inputs))
                        if not verdict.passed:
                            engines.pop(p, None)
            except Exception as exc:  # noqa: BLE001 - a precision that cannot be built is refused;
                text = str(exc).strip()   # fp32 still scores every picture
                verdict = P.Verdict(p, False, reason=text.splitlines()[0][:300] if text
                                    else type(exc).__name__)
            record = {"verdict": verdict.to_dict(), "built_s": round(time.perf_counter() - t0, 2),
                      "artefact": None, "artefact_sha256": None, "cached": False}
            if recipe is not None:
                record["recipe"] = recipe
            if cache is not None and p in engines:
                sha = _save_artefact(engines[p], cache / f"{p}.pt")
                if sha:
                    record.update(artefact=f"{p}.pt", artefact_sha256=sha)
            if cache is not None:
                try:
                    P.write_json(cache / f"{p}.json", {k: v for k, v in record.items() if k != "cached"})
                except OSError:
                    pass
        else:
            record["cached"] = True
        verdicts[p] = _cached_verdict(p, record)
        records[p] = record
        if verdicts[p].rate is not None:
            rates[p] = float(verdicts[p].rate)

    # what was built now and passed is timed again, in turns: each was first timed alone right
    # after its build, and a load that came or went in between decided `auto` (a scan chose
    # bf16 at 83 against int8's 67 pictures/s; in turns a minute later: 105-118 against 120-150)
    fresh = dict(engines)
    if fp32 is not None:
        fresh["fp32"] = fp32
    if precision == "auto" and len(fresh) > 1:
        for p, r in _rates_interleaved(fresh, rate_batch(inputs)).items():
            rates[p] = r
            if p == "fp32":
                ref_rate = r       # kept too: the next start compares the same figures
                if cache is not None:
                    _keep_reference(cache / "reference.npz", names, inputs, ref_out, r)
                continue
            verdicts[p].rate = r
            records[p]["verdict"]["rate"] = round(r, 1)
            if cache is not None:
                try:
                    P.write_json(cache / f"{p}.json",
                                 {k: v for k, v in records[p].items() if k != "cached"})
                except OSError:
                    pass

    passing = [p for p in order if p == "fp32" or verdicts[p].passed]
    if precision == "auto":
        passing = P.auto_order(passing, rates)
    chosen = None
    for p in passing:
        if p == "fp32":
            chosen = fp32 or Engine(spec, device, num_threads, "fp32", compile)
            break
        engine = engines.get(p)
        if engine is None:        # from the cache: load it and hold it to the gate again
            rec = records[p]
            net = _load_artefact(cache / f"{p}.pt", str(rec.get("artefact_sha256")))
            if net is None:
                verdicts[p] = P.Verdict(p, False, reason="the cached artefact is missing or "
                                        "changed (sha256); it is built again next start")
                try:
                    (cache / f"{p}.json").unlink(missing_ok=True)
                except OSError:
                    pass
                continue
            engine = Engine(spec, device, num_threads, p, net=net)
            again = P.gate(spec, p, ref_out, engine.raw(inputs), names)
            again.rate = verdicts[p].rate
            verdicts[p] = again
            if not again.passed:
                continue
        chosen = engine
        break
    assert chosen is not None     # fp32 is always in the order and always passes
    report["precision"] = chosen.precision
    report["threads"] = chosen.threads
    report["validation_pictures"] = len(names)
    report["rates"] = {p: round(r, 1) for p, r in rates.items()}
    for p in order:
        if p == "fp32":
            report["tried"].append({"precision": "fp32", "passed": True, "reference": True,
                                    "rate": round(ref_rate, 1)})
        else:
            entry = verdicts[p].to_dict()
            entry.update({k: records[p].get(k) for k in ("cached", "artefact_sha256", "built_s")})
            if "recipe" in records[p]:
                entry["recipe"] = records[p]["recipe"]
            report["tried"].append(entry)
    refused = [f"{p} refused: {verdicts[p].reason}" for p in order
               if p != "fp32" and not verdicts[p].passed]
    by_rate = sorted((p for p in passing if p in rates), key=lambda p: -rates[p])
    faster = ", ".join(f"{p} {rates[p]:.0f}/s" for p in by_rate)
    how = ""
    if precision == "auto" and len(by_rate) > 1:
        how = (f", fastest measured ({faster})" if chosen.precision == by_rate[0] else
               f", the most exact within {P.AUTO_MARGIN}x of the fastest measured ({faster})")
    report["reason"] = "; ".join(refused + [f"{chosen.precision}: passed the gate{how}"])
    return chosen, report
