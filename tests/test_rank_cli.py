"""The queue, show, flags, context and export commands."""
from __future__ import annotations

import csv
import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from casebuild import FLEET_ORDER, build_fleet, exact, picture
from cli import main
from triage.flags import FlagSink, rules_for_batch
from triage.store import CaseStore


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    case_dir = tmp_path_factory.mktemp("case")
    build_fleet(case_dir).close()
    return case_dir


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_queue_json_in_priority_order(case):
    result = run("queue", "--case", case, "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["device"] for r in rows] == FLEET_ORDER
    assert [r["rank"] for r in rows] == list(range(1, 8))
    top = rows[0]
    assert top["flags"] == ["CHILD_ACCESS", "KNOWN_MATCH", "SELF_PRODUCED"]
    assert top["context"]["access_to_children"] == "lives_with" and top["alert_matches"] == 3


def test_queue_table_fits_80_columns(case):
    result = run("queue", "--case", case)
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80
    assert "exact_lives.dd" in result.output and "volume 2 (BitLocker, 40 MiB at" in result.output


def test_queue_csv(case):
    result = run("queue", "--case", case, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert [r["device"] for r in rows] == FLEET_ORDER
    assert rows[0]["access_to_children"] == "lives_with"


def test_show_by_exhibit_and_json(case):
    result = run("show", "EX/near", "--case", case, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["device"] == "near_only.dd" and data["near_matches"] == 1
    (finding,) = data["findings"]
    assert finding["kind"] == "near" and finding["provenance"]["inode"] == 101
    assert finding["icat"] == "icat -o 2048 /evidence/near_only.dd 101"    # the real evidence
    text = run("show", "exact_lives.dd", "--case", case)
    assert text.exit_code == 0 and "DELETED" in text.output and "camera-original" in text.output


def test_show_unknown_device_is_one_line_error(case):
    result = run("show", "nope.dd", "--case", case)
    assert result.exit_code == 2
    assert result.output.startswith("error: no device 'nope.dd'") and len(result.output.splitlines()) == 1


def test_bad_case_dir_exit_2(tmp_path):
    for cmd in (["queue"], ["flags"], ["show", "x"], ["export", "--format", "csv", "--out", tmp_path / "o"]):
        result = run(*cmd, "--case", tmp_path / "missing")
        assert result.exit_code == 2 and result.output.startswith("error:"), cmd


def test_flags_json_lines(case):
    result = run("flags", "--case", case, "--format", "jsonl")
    lines = [json.loads(line) for line in result.output.splitlines()]
    with CaseStore(case, create=False) as store:
        assert len(lines) == len(store.flags())
    assert {"code", "severity", "device_id", "key", "raised_at", "message", "provenance"} <= set(lines[0])
    assert lines[0]["raised_at"].endswith("Z")        # ISO-8601 UTC, as every JSON time
    assert json.loads(run("flags", "--case", case, "--json").output) == lines


def _as_from_a_shell():
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_flags_follow_prints_new_flags_until_ctrl_c(tmp_path):
    case_dir = tmp_path / "live"
    exe = Path(sys.executable).with_name("triage")
    # started before the scan has created the case: it waits for it
    # started as a shell starts a command, so Ctrl-C reaches it: earlier tests in this process
    # left SIGINT blocked in the full suite (the follower then never saw Ctrl-C), and a
    # blocked or ignored signal stays so in every process started from here
    proc = subprocess.Popen([str(exe), "flags", "--case", str(case_dir), "--follow", "--format",
                             "json", "--interval", "0.1"], stdout=subprocess.PIPE, text=True,
                            preexec_fn=_as_from_a_shell)
    try:
        time.sleep(1.0)
        store = CaseStore(case_dir, create=True)
        time.sleep(0.5)
        x = picture("d.dd", 1)
        with FlagSink(case_dir, store) as sink:
            sink.raise_all(rules_for_batch("d.dd", None, [x], [exact(x)], [], [], time.time()))
        store.close()       # as a scan does when it ends: nothing of ours holds the case
        line = proc.stdout.readline()
        assert json.loads(line)["code"] == "KNOWN_MATCH"
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=20)
    assert rc == 0


def test_context_set_matches_devices_by_name(tmp_path):
    case_dir = tmp_path / "case"
    build_fleet(case_dir).close()
    ctx = tmp_path / "ctx.csv"
    ctx.write_text("evidence,exhibit,suspect,access_to_children,custody_deadline,notes\n"
                   "/mnt/x/clean_none.dd,NEW/1,A,works_with,2030-01-01,\n"
                   "tablet.dd,NEW/2,B,none,,\n")
    result = CliRunner().invoke(main, ["context", "set", "--case", str(case_dir), str(ctx)])
    assert result.exit_code == 0, result.output
    assert "clean_none.dd: context set (NEW/1)" in result.output
    assert "context row tablet.dd matches no device" in result.output
    rows = json.loads(run("queue", "--case", case_dir, "--format", "json").output)
    clean = [r for r in rows if r["device"] == "clean_none.dd"][0]
    assert clean["exhibit"] == "NEW/1" and "suspect works with children" in clean["reasons"]
    # clean_none now outranks clean_unknown (works_with 150 > unknown 40), still below encrypted
    order = [r["device"] for r in rows]
    assert order.index("encrypted.dd") < order.index("clean_none.dd") < order.index("clean_unknown.dd")
    bad = tmp_path / "bad.csv"
    bad.write_text("evidence,access_to_children\nclean_none.dd,neighbour\n")
    result = CliRunner().invoke(main, ["context", "set", "--case", str(case_dir), str(bad)])
    assert result.exit_code == 2 and "access_to_children 'neighbour'" in result.output


def test_export_command_writes_private_file(case, tmp_path):
    out = tmp_path / "v.json"
    result = run("export", "--case", case, "--format", "vics", "--out", out)
    assert result.exit_code == 0, result.output
    assert "5 media" in result.output and oct(out.stat().st_mode & 0o777) == "0o600"
