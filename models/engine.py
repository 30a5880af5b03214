"""The torch side: load a verified spec's network and run uint8 batches through it.

Every network, whatever its format, gets float NCHW input already normalised as its spec says
((pixel - mean) / std in the spec's channel order) and returns one row per picture with one
column per output label. Only this module and models/zoo, models/faces.py (age) and
models/testing.py import torch.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

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
    """One network on one device, with its input normalisation; call it with uint8 NHWC."""

    def __init__(self, spec: ModelSpec, device: str = "auto", num_threads: int | None = None,
                 precision: str = "auto", compile: bool | None = None):
        self.spec = spec
        self.device = pick_device(device)
        self.threads = set_threads(num_threads) if self.device.type == "cpu" else 0
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" else "fp32"
        if precision not in ("fp32", "bf16"):
            raise ModelError(f"precision must be fp32 or bf16, not {precision!r}")
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        net = load_network(spec)
        # channels_last: oneDNN and cuDNN both run NHWC convolutions faster, and a uint8 NHWC
        # batch permuted to NCHW is already channels_last in memory, so no copy is made.
        net = net.to(self.device)
        try:
            net = net.to(memory_format=torch.channels_last)
        except (TypeError, RuntimeError):
            pass
        if self.dtype != torch.float32:
            net = net.to(self.dtype)
        if compile is None:
            compile = os.environ.get(COMPILE_ENV, "") == "1"
        if compile:
            import torch._inductor.config as inductor_config
            inductor_config.freezing = True   # folds weights into the graph: conv + post-op fusion
            net = torch.compile(net)
        self.net = net
        order = [2, 1, 0] if spec.colour == "BGR" else [0, 1, 2]
        self._order = torch.tensor(order, device=self.device)
        self._mean = torch.tensor(spec.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._inv_std = (1.0 / torch.tensor(spec.std, dtype=torch.float32,
                                            device=self.device)).view(1, 3, 1, 1)
        try:
            self._check_outputs()
        except RuntimeError:
            if self.dtype == torch.float32 or compile:
                raise
            # a user's network with an op that has no bf16 kernel: run it in fp32 instead
            self.dtype = torch.float32
            self.net = self.net.float()
            self._check_outputs()

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
            out = out.float()
            if self.spec.activation == "softmax":
                out = torch.softmax(out, dim=1)
            elif self.spec.activation == "sigmoid":
                out = torch.sigmoid(out)
            return out.cpu().numpy()
