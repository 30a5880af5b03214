"""Shared fixtures. `synth_fleet` builds the small synthetic fleet once per test session."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

SYNTH_SEED = 7          # the seed `make demo` uses, so test failures reproduce with the demo fleet


@pytest.fixture(scope="session", autouse=True)
def triage_home(tmp_path_factory) -> Path:
    """A $TRIAGE_HOME of the session's own, set before any Ray starts (the model actors inherit
    it): the model precision cache and added models never touch the user's ~/.triage, and the
    cache is built once per session, as once per machine."""
    home = tmp_path_factory.mktemp("triage_home")
    before = os.environ.get("TRIAGE_HOME")
    os.environ["TRIAGE_HOME"] = str(home)
    yield home
    if before is None:
        os.environ.pop("TRIAGE_HOME", None)
    else:
        os.environ["TRIAGE_HOME"] = before


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
