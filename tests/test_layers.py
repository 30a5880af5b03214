"""Data flows one way (issue 13, part 5): each layer imports only those below it."""
from __future__ import annotations

import subprocess
import sys

import pytest

# module -> modules it must never pull in, directly or through anything it imports
RULES = {
    "triage.evidence": ("triage.volumes", "triage.filesystems", "triage.device", "workers", "models"),
    "triage.volumes": ("triage.filesystems", "triage.device", "workers", "models"),
    "triage.extractions": ("triage.volumes", "triage.filesystems", "triage.device", "triage.features",
                           "workers", "models"),
    "triage.apfs": ("triage.filesystems", "triage.device", "workers", "models"),
    "triage.filesystems": ("triage.device", "workers", "models"),
    "triage.device": ("workers", "models", "triage.rank", "triage.flags"),
    "triage.synth": ("models", "workers"),
    "triage.synth.fleet": ("models", "workers"),
    "triage.classify": ("triage.flags", "triage.rank", "triage.findings", "workers"),
    "triage.rank": ("workers", "triage.review"),
    "hashsets.store": ("workers", "triage.rank"),
}


@pytest.mark.parametrize("module", sorted(RULES))
def test_a_layer_does_not_reach_upwards(module):
    code = ("import sys, importlib; importlib.import_module(%r); "
            "print('\\n'.join(sorted(sys.modules)))" % module)
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=120).stdout.split()
    bad = [m for m in loaded for banned in RULES[module]
           if m == banned or m.startswith(banned + ".")]
    assert not bad, f"{module} pulls in {bad}"
