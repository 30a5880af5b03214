"""Issue 18, point 9: live use while a scan runs, through the installed entry point."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from clirun import ROOT, triage
from workers.progress import OPENING, phase_text
from workers.scan import DeviceState


def start(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "from cli import run; run()", *map(str, args)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_queue_lists_a_running_scans_devices_and_follow_says_when_it_ends(cli_case, tmp_path):
    p = cli_case["paths"]
    case = tmp_path / "case"
    devices = [p["dev01"], p["dev03"], p["dev04"], p["dev05"]]
    follow = start("flags", "--case", case, "--follow", "--format", "jsonl", "--interval", "0.2")
    time.sleep(0.5)
    scan = start("scan", "--case", case, "-q", "--workers", "1", "--hashset", p["alert_vics"],
                 *devices)
    seen = []
    while scan.poll() is None:
        got = triage("queue", "--case", case, "--json")
        if got.returncode == 0 and scan.poll() is None:
            seen.append({r["device"]: r["coverage"] for r in json.loads(got.stdout)})
    assert scan.returncode == 0, scan.stderr.read()
    assert seen, "the scan ended before the queue could be read"
    live = {"queued", "opening", "scanning"}
    statuses = {s for snapshot in seen for s in snapshot.values()}
    assert statuses & live, seen
    # the case exists a moment before the scan lists its devices; from then on, all of them
    listed = [snapshot for snapshot in seen if snapshot]
    assert listed, seen
    for snapshot in listed:
        assert len(snapshot) == len(devices), snapshot     # every device of the scan, at once
    # the scan's end ends `flags --follow`, which says so
    out, err = follow.communicate(timeout=60)
    assert follow.returncode == 0
    assert "scan run 1 ended (" in err
    flags = [json.loads(line) for line in out.splitlines()]
    assert {f["device_id"] for f in flags} >= {"dev01.raw", "dev04.E01"}
    final = {r["device"]: r["coverage"] for r in
             json.loads(triage("queue", "--case", case, "--json").stdout)}
    assert not set(final.values()) & live


def test_the_progress_bar_names_the_opening_and_model_phases():
    dev = DeviceState("d", ("/x",))
    dev.phase = "probing"
    assert phase_text(dev, model=True) == OPENING
    dev.phase, dev.total_bytes, dev.bytes, dev.scored = "scanning", 100, 100, 7
    assert phase_text(dev, model=True) == "model: scoring pictures (7 scored)"
    assert phase_text(dev, model=False) == ""


def test_a_scan_with_locked_volumes_is_complete_with_gaps(cli_case):
    # the shared scan: dev04's BitLocker volume stayed locked, every device ran to its end
    out = cli_case["scan"].stdout
    assert "dev04.E01: complete with gaps;" in out.replace("\n", " ")
    assert "scan complete with gaps in" in out and "scan partial" not in out


def test_the_progress_bar_ends_a_device_with_gaps_as_the_summary_does():
    """A device scanned to its end with parts not examined reads "with gaps" on its bar, as
    the summary's "complete with gaps", not a bare "partial"; the line fits 80 columns."""
    from rich.console import Console

    from workers.progress import RichReporter

    console = Console(record=True, width=80, force_terminal=False)
    reporter = RichReporter(console=console)
    dev = DeviceState("dev04.E01", ("/x",))
    dev.status, dev.files, dev.pictures, dev.flags = "partial", 82, 47, 1
    dev.phase = "finished"
    with reporter:
        reporter.device_added(dev.device_id)
        reporter.device_finished(dev.device_id, dev)
    text = console.export_text()
    assert "with gaps" in text and "partial" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
