"""Issue 18, point 4 of the follow-up: a new user's first command, `triage synth`, tells them
the scan to run next, and that scan, run as printed, uses every alert set of the fleet."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from clirun import ROOT, triage


def test_synth_prints_the_scan_to_run_next_and_it_works_as_printed(tmp_path):
    made = triage("synth", "--out", "fleet", "--devices", "1", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    lines = made.stdout.splitlines()
    # the table fits 80 columns, folded, never cut short; the hint is one line, to copy whole
    assert max(len(line) for line in lines if not line.startswith("next: ")) <= 80
    assert "…" not in made.stdout
    assert "MiB" in made.stdout                      # the one byte formatter, binary units
    (hint,) = [line for line in lines if line.startswith("next: ")]
    command = hint[len("next: "):]
    for name in ("alert.vics.json", "nsrl.db", "alert.pdq.txt", "alert.phash.txt",
                 "alert.vpdq.txt", "context.csv", "evidence.txt"):
        assert f"fleet/{name}" in command, name
    assert command.startswith("triage scan --case case ")
    # as printed, with `triage` the entry point this test runs
    entry = f"{sys.executable} -c 'from cli import run; run()'"
    ran = subprocess.run(["bash", "-c", entry + command[len("triage"):] + " -q"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert ran.returncode == 0, ran.stderr
    shown = json.loads(triage("show", "dev01.raw", "--case", tmp_path / "case", "--json").stdout)
    (run,) = shown["runs"]
    # VICS, PDQ, pHash and vPDQ alert sets (named alert, alert-2, ... by their files) and NSRL
    roles = sorted(h["role"] for h in run["hashsets"])
    assert roles == ["alert"] * 4 + ["ignore"], run["hashsets"]
    # the synth help's example names the same sets
    helped = triage("synth", "--help").stdout
    assert "--hashset fleet/alert.pdq.txt" in helped and "alert.vpdq.txt" in helped


def test_hashset_list_and_lookup_speak_as_the_queue_does(synth_fleet, synth_truth, tmp_path):
    """`hashset lookup` names a category as the queue and flags do ("Category A", the raw
    number in --json); `hashset list` shows its import time with date, time and zone."""
    import re

    from clirun import fleet_paths

    p = fleet_paths(synth_fleet, synth_truth)
    store = tmp_path / "sets"
    assert triage("hashset", "import", p["alert_vics"], "--name", "caid", "--store",
                  store).returncode == 0
    listed = triage("hashset", "list", "--store", store).stdout
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", listed), listed
    md5 = json.loads(triage("hashset", "list", "--store", store, "--json").stdout)
    assert md5[0]["imported_at"].endswith("Z")                    # JSON: ISO-8601 UTC
    alert = next(a for a in synth_truth["alerts"] if a.get("md5"))
    text = triage("hashset", "lookup", alert["md5"], "--store", store).stdout
    assert re.search(r" Category [ABC] severity", text) and "category 1" not in text, text
    (hit,) = json.loads(triage("hashset", "lookup", alert["md5"], "--store", store,
                               "--json").stdout)[0]["hits"]
    assert hit["category"] in ("1", "2", "3") and hit["category_label"] in ("A", "B", "C")
    assert f"Category {hit['category_label']} " in text
