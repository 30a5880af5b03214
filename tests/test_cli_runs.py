"""Issue 18, point 1: every scan run's results are kept; a weaker re-scan needs --replace."""
from __future__ import annotations

import json
import sqlite3

from clirun import copy_case, triage


def test_weaker_rescan_is_refused_and_replace_keeps_earlier_run(cli_case, tmp_path):
    case, p = copy_case(cli_case, tmp_path), cli_case["paths"]
    refused = triage("scan", "--case", case, "-q", "--hashset", p["nsrl"], p["dev01"])
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: re-scan refused: dev01.raw: weaker than run 1")
    assert "left out" in refused.stderr and "--replace" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    # nothing changed: the queue still ranks dev01 first on its matches
    queue = json.loads(triage("queue", "--case", case, "--format", "json").stdout)
    assert queue[0]["device"] == "dev01.raw" and queue[0]["alert_matches"] == 10

    replaced = triage("scan", "--case", case, "-q", "--replace", "--hashset", p["nsrl"], p["dev01"])
    assert replaced.returncode == 0, replaced.stderr
    assert "would no longer show the 10 alert matches run 1 found" in replaced.stderr
    queue = {r["device"]: r for r in
             json.loads(triage("queue", "--case", case, "--format", "json").stdout)}
    assert queue["dev01.raw"]["alert_matches"] == 0         # the latest run is the one used
    shown = json.loads(triage("show", "dev01.raw", "--case", case, "--format", "json").stdout)
    runs = {r["run"]: r for r in shown["runs"]}
    assert set(runs) == {1, 2}
    assert runs[1]["counts"]["alert_matches"] == 10 and not runs[1]["live"]
    assert {h["name"] for h in runs[1]["hashsets"]} == {"alert", "nsrl"}
    assert runs[2]["live"] and [h["name"] for h in runs[2]["hashsets"]] == ["nsrl"]
    assert runs[2]["counts"]["alert_matches"] == 0
    text = triage("show", "dev01.raw", "--case", case).stdout
    assert "run 1 (archived)" in text and "run 2 (used by the queue)" in text
    # the archived run's matches are still in the case, with the run that found them
    with sqlite3.connect(case / "case.sqlite") as db:
        kept = db.execute("SELECT COUNT(DISTINCT key) FROM archived_matches WHERE run_id = 1 AND "
                          "device_id = 'dev01.raw' AND role = 'alert'").fetchone()[0]
    assert kept >= 10


def test_same_settings_rescan_is_allowed_and_other_versions_are_marked(cli_case, tmp_path):
    case, p = copy_case(cli_case, tmp_path), cli_case["paths"]
    again = triage("scan", "--case", case, "-q", "--hashset", p["alert_vics"], "--hashset",
                   p["nsrl"], p["dev05"])
    assert again.returncode == 0, again.stderr
    assert "dev05.raw: scanned again; run 1 stays in `triage show dev05.raw`" in again.stderr
    # pretend dev05's latest run used another version of the alert set: the queue says so
    with sqlite3.connect(case / "case.sqlite") as db:
        db.execute("UPDATE runs SET hashsets = json_replace(hashsets, '$[0].version', 'v0') "
                   "WHERE id = 2")
    queue = {r["device"]: r for r in
             json.loads(triage("queue", "--case", case, "--format", "json").stdout)}
    marked = [r for r in queue["dev05.raw"]["reasons"] if "other set versions" in r]
    assert marked and "alert v0 (case: " in marked[0]
    assert not any("other set versions" in r for r in queue["dev01.raw"]["reasons"])


def test_schema_2_case_is_migrated(cli_case, tmp_path):
    case = copy_case(cli_case, tmp_path)
    with sqlite3.connect(case / "case.sqlite") as db:
        db.execute("DROP TABLE device_runs")
        for t in ("files", "matches", "scores", "model_skips", "coverage", "volumes", "flags",
                  "batches"):
            db.execute(f"DROP TABLE archived_{t}")
        db.execute("PRAGMA user_version=2")
    shown = triage("show", "dev02.E01", "--case", case, "--format", "json")
    assert shown.returncode == 0, shown.stderr
    assert [r["run"] for r in json.loads(shown.stdout)["runs"]] == [1]
    with sqlite3.connect(case / "case.sqlite") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 3


def test_a_result_column_added_later_reaches_the_archive(cli_case, tmp_path):
    """Result tables grow additive columns (video frames did); archiving copies by name."""
    case, p = copy_case(cli_case, tmp_path), cli_case["paths"]
    with sqlite3.connect(case / "case.sqlite") as db:
        db.execute("ALTER TABLE matches ADD COLUMN later TEXT NOT NULL DEFAULT 'kept'")
    again = triage("scan", "--case", case, "-q", "--hashset", p["alert_vics"], "--hashset",
                   p["nsrl"], p["dev02"])
    assert again.returncode == 0, again.stderr
    with sqlite3.connect(case / "case.sqlite") as db:
        kept = db.execute("SELECT COUNT(*) FROM archived_matches WHERE device_id = 'dev02.E01' "
                          "AND later = 'kept'").fetchone()[0]
    assert kept >= 10
