"""Built-in architectures, by the name a spec's `arch` uses.

Each entry builds an untrained network and can load weights from an ONNX file's initializers
(format `onnx_weights`); a torch state dict (format `state_dict`) loads into the same network.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from triage.errors import ModelError


def _open_nsfw():
    from models.zoo import open_nsfw
    return open_nsfw.OpenNSFW, open_nsfw.load_from_onnx


def _age():
    from models.zoo import age
    return age.AgeResNet10, age.load_from_onnx


ARCHS: dict[str, Callable] = {"open_nsfw": _open_nsfw, "dlib_age_resnet10": _age}


def build(arch: str, onnx_path: Path | None = None):
    """The network for `arch`, with weights from `onnx_path` when given."""
    if arch not in ARCHS:
        raise ModelError(f"unknown architecture {arch!r}; built-in: {', '.join(sorted(ARCHS))}")
    cls, from_onnx = ARCHS[arch]()
    return from_onnx(onnx_path) if onnx_path is not None else cls()
