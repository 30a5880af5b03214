"""The case the review-service tests share: the synthetic fleet plus two small ext4 images
built here, scanned for real by `triage scan` (Ray), served by `triage serve`.

- hostile.raw: copies of alert stand-ins under file and folder names that are markup
  (<script>, an <img onerror>, rich and ANSI markup), and a context row whose exhibit and notes
  are markup too. Every one must render as text.
- late.raw: one alert stand-in among many small files; the live-update test scans it into the
  case while a browser has the queue open.

Pictures are the fleet's generated stand-ins; nothing here resembles real material.
"""
from __future__ import annotations

import csv
import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PASSWORDS = {"boss": "supervisor-pass-1", "exa": "examiner-pass-1", "inv": "investigator-pass-1"}
ROLES = {"boss": "supervisor", "exa": "examiner", "inv": "investigator"}
HOSTILE_DIR = "<b onmouseover=alert(3)>pics"
HOSTILE_NAMES = (
    "<script>alert(1)</script>.jpg",
    '"><img src=x onerror=alert(2)>.jpg',
    "[bold red]rich[blink] [link=https:\\\\example.invalid]x :warning:.jpg",
    "\x1b[31mansi\x1b[0m\x07.jpg",
)
HOSTILE_EXHIBIT = "EX/<i>9</i>"
HOSTILE_NOTES = "<script>alert(4)</script> [red]notes[/red]"


def triage(*args: str, env: dict | None = None, stdin: str | None = None,
           timeout: float = 300) -> subprocess.CompletedProcess:
    """The installed entry point (cli:run) in a child process, as an officer runs it."""
    return subprocess.run([sys.executable, "-c", "from cli import run; run()", *args], cwd=ROOT,
                          capture_output=True, text=True, input=stdin, timeout=timeout,
                          env={**os.environ, **(env or {})})


def ext4_image(path: Path, files: dict[str, bytes], size: str = "16M") -> Path:
    """An ext4 image holding `files` (relative path -> content), built with `mke2fs -d`."""
    src = path.parent / (path.name + ".src")
    for rel, data in files.items():
        p = src / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-b", "1024", "-E", "root_owner=0:0",
                    "-d", str(src), str(path), size], check=True, capture_output=True)
    return path


def alert_pictures(seed: int) -> list[bytes]:
    from triage.synth.fleet import make_alert_set

    return [a.data for a in make_alert_set(seed)]


def build_images(work: Path, seed: int) -> tuple[Path, Path]:
    alerts = alert_pictures(seed)
    hostile = {f"{HOSTILE_DIR}/{name}": alerts[i % len(alerts)]
               for i, name in enumerate(HOSTILE_NAMES)}
    hostile["docs/readme.txt"] = b"nothing to see\n"
    late = {f"docs/note{i:04d}.txt": f"note {i}\n".encode() * 20 for i in range(600)}
    late["Pictures/holiday.jpg"] = alerts[0]
    return ext4_image(work / "hostile.raw", hostile), ext4_image(work / "late.raw", late, "24M")


def context_file(fleet: Path, out: Path, extra: list[dict]) -> Path:
    rows = list(csv.DictReader(io.StringIO((fleet / "context.csv").read_text())))
    fields = list(rows[0])
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows + extra)
    return out


def hashset_args(fleet: Path, truth: dict) -> list[str]:
    hs = truth["hashsets"]
    out = []
    for k in ("alert_vics", "nsrl", "alert_pdq", "alert_phash", "alert_vpdq"):
        out += ["--hashset", str(fleet / hs[k])]
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(case: Path, home: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", "from cli import run; run()", "serve", "--case",
                             str(case), "--port", str(port)], cwd=ROOT,
                            env={**os.environ, "TRIAGE_HOME": str(home)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"triage serve exited: {proc.stderr.read()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("triage serve did not start listening in 60 s")


def stop_server(proc: subprocess.Popen, timeout: float = 10) -> tuple[int, str]:
    """SIGTERM, then the exit code and stderr (kills it if it does not stop in time)."""
    proc.send_signal(signal.SIGTERM)
    try:
        _out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _out, err = proc.communicate()
        return -9, err
    return proc.returncode, err
