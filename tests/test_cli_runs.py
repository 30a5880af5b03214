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


def test_an_interrupted_rescan_leaves_the_queue_on_the_last_complete_run(cli_case, tmp_path):
    """A re-scan stopped part-way (SIGTERM, as `kill PID` or Ctrl-C) holds some of dev01's
    files, none of its matches yet: the queue, show, exports and report keep ranking dev01 on
    run 1, and show says the newest run was interrupted and which run the rank uses."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from clirun import ROOT

    case, p = copy_case(cli_case, tmp_path), cli_case["paths"]
    before = {r["device"]: r for r in
              json.loads(triage("queue", "--case", case, "--format", "json").stdout)}
    shown_before = json.loads(triage("show", "dev01.raw", "--case", case, "--format",
                                     "json").stdout)

    def csv_export() -> list[str]:
        got = triage("export", "--case", case, "--format", "csv", "--device", "dev01.raw",
                     "--out", "-")
        assert got.returncode == 0, got.stderr
        return sorted(got.stdout.splitlines())

    csv_before = csv_export()
    scan = subprocess.Popen(
        [sys.executable, "-c", "from cli import run; run()", "scan", "--case", str(case), "-q",
         "--mode", "full", "--workers", "1", "--batch-files", "2",
         "--hashset", str(p["alert_vics"]), "--hashset", str(p["nsrl"]), str(p["dev01"])],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.time() + 180
        while time.time() < deadline and scan.poll() is None:
            try:
                with sqlite3.connect(f"file:{case / 'case.sqlite'}?mode=ro", uri=True,
                                     timeout=1) as db:
                    if db.execute("SELECT COUNT(*) FROM batches b JOIN device_runs r ON "
                                  "r.device_id = b.device_id WHERE r.run_id = 2 AND r.live = 1"
                                  ).fetchone()[0] >= 1:
                        break
            except sqlite3.Error:
                pass
            time.sleep(0.05)
        assert scan.poll() is None, "the re-scan ended before it could be stopped"
        scan.send_signal(signal.SIGTERM)
        _out, err = scan.communicate(timeout=120)
    finally:
        if scan.poll() is None:
            os.killpg(scan.pid, signal.SIGKILL)
    # 143: stopped as Ctrl-C stops it (tests/test_stops.py). Under load Ray's core worker now
    # and then aborts on the signal instead (a check failure in Ray's task manager): the run is
    # then left "scanning" with no scan process, a killed run, which ranks the same way
    assert scan.returncode == 143 or scan.returncode < 0, err
    with sqlite3.connect(case / "case.sqlite") as db:
        newest = db.execute("SELECT status FROM device_runs WHERE run_id = 2 AND "
                            "device_id = 'dev01.raw'").fetchone()[0]
        partial = db.execute("SELECT COUNT(*) FROM files WHERE device_id = 'dev01.raw'"
                             ).fetchone()[0]
    assert newest == ("interrupted" if scan.returncode == 143 else "scanning")
    assert partial > 0                      # the stopped run's own results are in the case

    queue = {r["device"]: r for r in
             json.loads(triage("queue", "--case", case, "--format", "json").stdout)}
    dev01 = queue["dev01.raw"]
    assert dev01["rank"] == before["dev01.raw"]["rank"]
    for field in ("alert_matches", "near_matches", "flags", "coverage", "score"):
        assert dev01[field] == before["dev01.raw"][field], field
    assert any("run 2) was interrupted; ranked on run 1" in r for r in dev01["reasons"])

    shown = json.loads(triage("show", "dev01.raw", "--case", case, "--format", "json").stdout)
    assert {f["key"] for f in shown["findings"]} == {f["key"] for f in shown_before["findings"]}
    assert [f["code"] for f in shown["flag_records"]] == \
        [f["code"] for f in shown_before["flag_records"]]
    assert shown["device_record"]["status"] == shown_before["device_record"]["status"]
    runs = {r["run"]: r for r in shown["runs"]}
    assert runs[1]["ranked"] and not runs[1]["live"]
    assert runs[2]["status"] == newest and not runs[2]["ranked"]
    text = " ".join(triage("show", "dev01.raw", "--case", case).stdout.split())
    assert "run 1 (used by the queue)" in text
    assert "run 2 (cut off: not used by the queue)" in text
    assert "was interrupted; ranked on run 1 (complete)" in text
    assert "scan the device again to bring it up to date" in text

    # the exports and the report read the same run: nothing of run 1 lost
    assert csv_export() == csv_before and len(csv_before) > dev01["alert_matches"]
    report = triage("report", "--case", case, "--out", tmp_path / "report.html")
    assert report.returncode == 0, report.stderr
    html = (tmp_path / "report.html").read_text()
    assert "(run 2) was interrupted; ranked on run 1" in html

    # a fresh re-scan that completes brings the device up to date on its own run
    again = triage("scan", "--case", case, "-q", "--mode", "full", "--hashset", p["alert_vics"],
                   "--hashset", p["nsrl"], p["dev01"])
    assert again.returncode == 0, again.stderr
    shown = json.loads(triage("show", "dev01.raw", "--case", case, "--format", "json").stdout)
    assert [r["run"] for r in shown["runs"] if r["ranked"]] == [3]
    assert not any("was interrupted" in r for r in shown["reasons"])


def test_the_ranked_run_is_the_newest_unless_it_was_cut_off():
    from triage.runs import ranked_run, superseded_note

    def runs(*statuses):
        return [{"run_id": i + 1, "status": s} for i, s in enumerate(statuses)]

    done = runs("complete", "partial")
    assert ranked_run(done)["run_id"] == 2
    for cut in ("interrupted", "failed"):
        rs = runs("complete", "partial", cut)
        assert ranked_run(rs)["run_id"] == 2
        assert superseded_note(rs, ranked_run(rs)).startswith(
            "the newest scan run (run 3) " + ("was interrupted" if cut == "interrupted"
                                              else "ended failed"))
    # still "scanning": the run in progress is used; a killed one (no scan running) is not
    assert ranked_run(runs("complete", "scanning"), running=2)["run_id"] == 2
    assert ranked_run(runs("complete", "scanning"), running=None)["run_id"] == 1
    # no complete run at all: the newest, interrupted, as before
    assert ranked_run(runs("interrupted"))["run_id"] == 1
    assert superseded_note(runs("interrupted"), ranked_run(runs("interrupted"))) == ""
    assert ranked_run([]) is None
