"""Shared fixtures. `synth_fleet` builds the small synthetic fleet once per test session."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

SYNTH_SEED = 7          # the seed `make demo` uses, so test failures reproduce with the demo fleet


@pytest.fixture(scope="session")
def synth_fleet(tmp_path_factory) -> Path:
    """Folder of a six-device small fleet (`triage synth --devices 6 --seed 7`): devices/,
    alert.vics.json, nsrl.db, alert.pdq.txt, alert.phash.txt, context.csv, truth.json."""
    from triage.synth import build_fleet

    out = tmp_path_factory.mktemp("synth_fleet")
    build_fleet(out, devices=6, seed=SYNTH_SEED, size="small")
    return out


@pytest.fixture(scope="session")
def synth_truth(synth_fleet) -> dict:
    """truth.json of `synth_fleet`, parsed."""
    return json.loads((synth_fleet / "truth.json").read_text())
