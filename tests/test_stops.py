"""How a scan ends when it is stopped: SIGTERM as Ctrl-C, a killed driver's leftovers reaped,
and the entry point's prompt exit losing nothing it wrote.

Each stop is sent to a real `triage scan` of the synthetic fleet part-way through (one worker,
small batches, so it is still running when the signal lands).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from triage.store import CaseStore

import reviewcase as rc

ROOT = Path(__file__).resolve().parents[1]


def _start_scan(case: Path, fleet: Path, truth: dict) -> subprocess.Popen:
    evidence = [str(fleet / d["evidence"]) for d in truth["devices"]]
    args = ["scan", "--case", str(case), "--mode", "full", "--workers", "1", "--batch-files",
            "3", *rc.hashset_args(fleet, truth), *evidence]
    return subprocess.Popen([sys.executable, "-c", "from cli import run; run()", *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _wait_for_batches(proc: subprocess.Popen, case: Path, n: int, timeout: float = 120) -> None:
    db = case / "case.sqlite"
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
                try:
                    if con.execute("SELECT COUNT(*) FROM batches").fetchone()[0] >= n:
                        return
                finally:
                    con.close()
            except sqlite3.Error:
                pass
        time.sleep(0.05)
    raise AssertionError("the scan ended before it could be stopped")


def _private_dir_of(pid: int) -> Path:
    import tempfile

    from workers.runtime import OWNER_FILE, PRIVATE_PREFIX
    for p in Path(tempfile.gettempdir()).glob(PRIVATE_PREFIX + "*"):
        try:
            if json.loads((p / OWNER_FILE).read_text())["pid"] == pid:
                return p
        except (OSError, ValueError, KeyError):
            continue
    raise AssertionError(f"no private Ray directory owned by {pid}")


def test_sigterm_stops_a_scan_as_ctrl_c_does(tmp_path, synth_fleet, synth_truth):
    case = tmp_path / "case"
    proc = _start_scan(case, synth_fleet, synth_truth)
    try:
        _wait_for_batches(proc, case, 3)
        private = _private_dir_of(proc.pid)
        proc.send_signal(signal.SIGTERM)            # the driver alone, as `kill PID` does
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, err
    # one line saying what happened; no Ray C++ stack, no traceback
    assert "interrupted: everything found so far is in" in err
    for noise in ("SIGTERM received", "PC: @", "Traceback", "logging.cc"):
        assert noise not in err, err
    with CaseStore(case, create=False) as store:
        devices = store.devices()
    opened = [d for d in devices if d["format"] != "unknown"]
    # every device is in the case: those it opened end (interrupted where it was mid-way),
    # those it never reached are listed, not examined, for the queue to show
    assert len(devices) == len(synth_truth["devices"])
    assert opened and all(d["finished"] is not None for d in opened)
    assert "interrupted" in {d["status"] for d in devices}
    assert all(d["status"] in ("interrupted", "queued") for d in devices if d not in opened)
    assert not private.exists()                     # cleaned up as after Ctrl-C


def test_a_sigterm_that_ray_turns_into_a_plain_interrupt_still_exits_143():
    """Ray's waits raise a KeyboardInterrupt of their own for whatever a signal handler
    raised; a scan stopped by SIGTERM while the driver waited on Ray exited 130 (Ctrl-C's
    code) under load."""
    from workers.runtime import _terminate_like_interrupt, interrupt_exit_code
    previous = _terminate_like_interrupt()
    try:
        try:
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            except KeyboardInterrupt:
                raise KeyboardInterrupt() from None    # what Ray's check_status raises
        except KeyboardInterrupt as exc:
            assert type(exc) is KeyboardInterrupt
            assert interrupt_exit_code(exc) == 143
        _terminate_like_interrupt()             # the next scan in this process: Ctrl-C
        assert interrupt_exit_code(KeyboardInterrupt()) == 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_killed_drivers_leftovers_are_reaped_by_the_next_run(tmp_path, synth_fleet,
                                                               synth_truth):
    from workers.runtime import _instance_processes, reap_stale

    case = tmp_path / "case"
    proc = _start_scan(case, synth_fleet, synth_truth)
    try:
        _wait_for_batches(proc, case, 3)
        private = _private_dir_of(proc.pid)
        proc.kill()                                 # the driver alone: its agents live on
        proc.communicate(timeout=30)
        time.sleep(1)
        left = [pid for pid, _ in _instance_processes(private)]
        assert private.exists()
        assert str(private) in reap_stale()          # what the next scan does first
        deadline = time.time() + 5
        while time.time() < deadline and any(_alive(p) for p in left):
            time.sleep(0.05)
        assert not [p for p in left if _alive(p)]
        assert not private.exists()
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_the_prompt_exit_flushes_every_file_and_closes_the_database(tmp_path, review_case):
    """The installed entry point runs the exit handlers and then os._exit (skipping the
    interpreter's teardown). What each writing command leaves must be byte for byte what the
    same command leaves through a normal interpreter exit, and the databases must be closed
    (no write-ahead log left) and sound."""
    case = review_case["case"]

    def normal(*args):
        # `python cli.py ...`: main() and the interpreter's full teardown
        return subprocess.run([sys.executable, "cli.py", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=300, env={**os.environ})

    outputs = {}
    for how, runner in (("prompt", rc.triage), ("normal", normal)):
        # the same paths for both (exports name the case's folder); moved aside afterwards
        out = tmp_path / "work"
        out.mkdir()
        # a copy of the case (the shared one is not ours to change), then writes to its database
        copy = out / "case"
        shutil.copytree(case, copy)
        done = [
            runner("context", "set", "--case", str(copy), str(review_case["context"])),
            runner("users", "add", "someone", "--role", "investigator", "--password-stdin",
                   env={"TRIAGE_HOME": str(out / "home")}, stdin="a-long-password-1\n")
            if runner is rc.triage else
            subprocess.run([sys.executable, "cli.py", "users", "add", "someone", "--role",
                            "investigator", "--password-stdin"], cwd=ROOT, capture_output=True,
                           text=True, timeout=300, input="a-long-password-1\n",
                           env={**os.environ, "TRIAGE_HOME": str(out / "home")}),
            runner("export", "--case", str(copy), "--format", "csv", "--out", str(out / "f.csv")),
            runner("export", "--case", str(copy), "--format", "dfxml", "--out", str(out / "f.xml")),
            runner("export", "--case", str(copy), "--format", "vics", "--out", str(out / "f.json")),
            runner("report", "--case", str(copy), "--out", str(out / "r.html")),
            runner("hashset", "import", str(review_case["fleet"] / review_case["truth"]
                                            ["hashsets"]["alert_vics"]),
                   "--store", str(out / "store"), "--name", "alert"),
        ]
        for result in done:
            assert result.returncode == 0, result.stderr
        outputs[how] = out.rename(tmp_path / how)
    prompt, normal_out = outputs["prompt"], outputs["normal"]
    for name in ("f.csv", "f.json"):
        a, b = (prompt / name).read_bytes(), (normal_out / name).read_bytes()
        assert a and a == b, name
    # DFXML and the report carry their own time of writing; all else must match
    for name, end in (("f.xml", "</dfxml>"), ("r.html", "</html>")):
        a, b = (_untimed((d / name).read_text()) for d in (prompt, normal_out))
        assert a.rstrip().endswith(end) and a == b, name
    for out in (prompt, normal_out):
        dbs = [out / "case" / "case.sqlite"] + list((out / "home").rglob("*.sqlite")) + \
            list((out / "home").rglob("*.db"))
        assert len(dbs) >= 2
        for db in dbs:
            assert not Path(f"{db}-wal").exists() and not Path(f"{db}-journal").exists()
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            con.close()
    for sub in ("store", "case", "home"):
        assert _digest_tree(prompt / sub) == _digest_tree(normal_out / sub), sub
    with CaseStore(prompt / "case", create=False) as store:       # the write is there
        assert any(d["context"] for d in store.devices())


def _untimed(text: str) -> str:
    return re.sub(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:?\d\d| UTC)?",
                  "TIME", text)


def _digest_tree(root: Path) -> dict:
    """Each data file's rows (SQLite) or bytes (others): import times aside, equal content."""
    out = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        # build folders are named by their time of import
        rel = re.sub(r"b-\d{8}T\d{6}-[0-9a-f]+", "b-BUILD", str(p.relative_to(root)))
        if p.name == "CURRENT":
            out[rel] = re.sub(r"b-\d{8}T\d{6}-[0-9a-f]+", "b-BUILD", p.read_text())
        elif p.suffix in (".sqlite", ".db"):
            con = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
            tables = [r[0] for r in con.execute(
                "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
            out[rel] = {t: con.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0]
                        for t in tables}
            con.close()
        elif p.suffix == ".json":
            out[rel] = sorted(json.loads(p.read_text()))
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out
