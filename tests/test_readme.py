"""Every example in the README runs as shown (issue 18): each ```sh block, in order, in one
folder, against the synthetic fleet its first block builds, through the `triage` entry point."""
from __future__ import annotations

import os
import re
import subprocess
import sys

from clirun import ROOT

BLOCK = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)


def sh_blocks() -> list[str]:
    return BLOCK.findall((ROOT / "README.md").read_text())


def test_the_readme_has_runnable_examples_and_an_output_convention():
    text = (ROOT / "README.md").read_text()
    assert "## Output convention (every command)" in text
    blocks = sh_blocks()
    assert len(blocks) >= 10 and blocks[0].startswith("triage synth --out fleet")
    # every fenced block says what it is: run (sh), or usage, output and setup (text, toml)
    openers = [m for i, m in enumerate(re.findall(r"^```(\S*)$", text, re.M)) if i % 2 == 0]
    assert all(openers), "a code block without a language: mark it sh (runs) or text"


def test_every_readme_example_runs_as_shown(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "triage"          # what `make demo` installs on PATH
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -c "
                       f"'from cli import run; run()' \"$@\"\n")
    wrapper.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "TRIAGE_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT)}
    for i, block in enumerate(sh_blocks()):
        result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block], cwd=work, env=env,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, (i, block, result.stderr[-2000:])
        assert "Traceback" not in result.stderr and "internal error" not in result.stderr, \
            (i, block, result.stderr[-2000:])
        if i == 0:
            assert "next: triage queue --case case" in result.stdout
