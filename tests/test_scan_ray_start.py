"""`triage scan --address` against a head started the way the README says (`ray start --head`),
in its own processes. Ray 2.60's `ray start` turns token authentication on whenever a token
exists (a first local scan writes ~/.ray/auth_token), so the scan must present it."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

import ray  # noqa: E402,F401

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def head(tmp_path):
    """A one-CPU head in its own process group and HOME, with token authentication on."""
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text("0123456789abcdef" * 4)
    env = dict(os.environ, HOME=str(home), RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_AUTH_MODE", None)
    env.pop("RAY_ADDRESS", None)
    port = _free_port()
    temp = Path("/tmp") / f"trs-{port}"          # short: Ray's unix socket paths are limited
    proc = subprocess.Popen([str(BIN / "ray"), "start", "--head", "--block", f"--port={port}",
                             "--num-cpus=1", "--include-dashboard=false", "--disable-usage-stats",
                             f"--temp-dir={temp}"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.time() + 90
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if proc.poll() is not None:
            pytest.fail("ray start --head ended: " + proc.stdout.read()[-2000:])
        time.sleep(0.2)
    else:
        pytest.fail("ray start --head did not listen in 90 s")
    time.sleep(2)                                     # the raylet registers after the GCS
    yield f"127.0.0.1:{port}", env
    os.killpg(proc.pid, signal.SIGINT)               # what Ctrl-C on `ray start --block` does
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)           # whatever of the head is left
    except ProcessLookupError:
        pass
    proc.wait()
    shutil.rmtree(temp, ignore_errors=True)


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "export"
    (folder / "docs").mkdir(parents=True)
    for i in range(5):
        (folder / "docs" / f"note{i}.txt").write_text(f"synthetic note {i}\n")
    return folder


def test_scan_joins_a_ray_start_head_that_wants_a_token(tmp_path, head):
    address, env = head
    folder = _folder(tmp_path)
    run = subprocess.run([str(BIN / "triage"), "scan", "--case", str(tmp_path / "case"), "--json",
                          "--mode", "full", "--address", address, str(folder)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads(run.stdout)
    # no alert set was given: every file read, yet nothing matched, so never "complete"
    assert summary["status"] == "partial" and summary["devices"][0]["status"] == "partial"
    assert any("no alert hash set" in w for w in summary["warnings"])
    assert summary["devices"][0]["files"] == 5


def test_without_the_token_the_error_says_what_to_do(tmp_path, head):
    address, env = head
    other = tmp_path / "other_home"
    other.mkdir()
    run = subprocess.run([str(BIN / "triage"), "scan", "--case", str(tmp_path / "case"), "--json",
                          "--address", address, str(_folder(tmp_path))],
                         # Ray retries a refused connection for 20 s by default
                         env=dict(env, HOME=str(other), RAY_gcs_server_port_wait_time_s="3"),
                         capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 2
    lines = [ln for ln in run.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "ray get-auth-token" in lines[0], run.stderr[-2000:]
    assert "Traceback" not in run.stderr
