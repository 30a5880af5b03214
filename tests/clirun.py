"""The installed `triage` entry point (cli:run) in a child process, as an officer runs it, and
the small scanned case the CLI-convention tests share."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def triage(*args, env: dict | None = None, stdin: str | None = None, timeout: float = 300,
           cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`triage ARGS...` through cli:run, the function the installed script calls."""
    return subprocess.run([sys.executable, "-c", "from cli import run; run()", *map(str, args)],
                          cwd=cwd or ROOT, capture_output=True, text=True, input=stdin,
                          timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def fleet_paths(fleet: Path, truth: dict) -> dict:
    """device id (dev01...) -> evidence path, plus the fleet's hash-set files."""
    out = {d["id"]: fleet / d["evidence"] for d in truth["devices"]}
    out.update({k: fleet / v for k, v in truth["hashsets"].items()
                if isinstance(v, str) and (fleet / v).is_file()})
    return out


def copy_case(cli_case: dict, dest: Path) -> Path:
    """A copy of the shared case to change (re-scan, migrate) without touching the original."""
    import shutil

    case = dest / "case"
    shutil.copytree(cli_case["case"], case, ignore=shutil.ignore_patterns("scan.lock"))
    return case
