"""Test helpers other suites reuse: a toy model written to disk with its spec.

The toy "classifier" scores redness: explicit = sigmoid(8 * (mean red - mean blue)), so a red
picture scores about 1.0, a blue one about 0.0 and a grey one 0.5. It is small, exact, and
needs no weights from anywhere.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from models.spec import sha256_file


class Redness(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = x[:, 0].mean(dim=(1, 2))
        b = x[:, 2].mean(dim=(1, 2))
        red = torch.sigmoid(8.0 * (r - b))
        return torch.stack([red, 1.0 - red], dim=1)


SPEC_TEMPLATE = """\
name = "{name}"
version = "1"
licence = "CC0-1.0 (test toy)"
description = "redness toy model for tests"
weights = "{weights}"
sha256 = "{sha256}"
format = "{format}"

[input]
size = 32
colour = "RGB"
mean = [0.0, 0.0, 0.0]
std = [255.0, 255.0, 255.0]

[output]
labels = ["explicit", "other"]
report = ["explicit"]
activation = "none"

[thresholds]
explicit = 0.7
"""


def _write_spec(directory: Path, name: str, weights: Path, fmt: str, sha256: str | None) -> Path:
    spec = directory / f"{name}.toml"
    spec.write_text(SPEC_TEMPLATE.format(name=name, weights=weights.name, format=fmt,
                                         sha256=sha256 or sha256_file(weights)), encoding="utf-8")
    return spec


def make_toy_torchscript(directory: Path, name: str = "toy_redness", sha256: str | None = None) -> Path:
    """Write a TorchScript toy model and its spec into `directory`; returns the spec path.

    Pass `sha256` to write a (wrong) digest on purpose.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / f"{name}.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(Redness()).save(str(weights))
    return _write_spec(directory, name, weights, "torchscript", sha256)


def make_toy_export(directory: Path, name: str = "toy_redness_export") -> Path:
    """The same toy as a torch.export program (.pt2) with a dynamic batch dimension."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / f"{name}.pt2"
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(Redness(), (torch.zeros(2, 3, 32, 32),),
                                  dynamic_shapes=({0: batch},))
    torch.export.save(program, str(weights))
    return _write_spec(directory, name, weights, "export", None)
