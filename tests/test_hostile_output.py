"""Strings from evidence are shown inert on a terminal (issue 19, item 3): file names, archive
members, set names, context fields and evidence names carrying ESC sequences, bidi overrides,
newlines or rich markup are printed with those characters escaped, and never interpreted.
JSON keeps the exact strings.
"""
from __future__ import annotations

import io
import json

import pytest
from click.testing import CliRunner
from rich.console import Console

from casebuild import add_device, exact, picture
from cli import main
from triage.flags import FlagSink, format_flag_line, rules_for_batch
from triage.records import Exif
from triage.store import CaseStore
from triage.units import terminal_safe

CLEAR = "\x1b[2J"
TITLE = "\x1b]0;owned\x07"
RLO = "\u202e"
HOSTILE_PATH = f"/Users/s/{CLEAR}{TITLE}evil{RLO}gpj.exe\nforged line [red]markup[/red].jpg"
HOSTILE_DEVICE = f"disk{CLEAR}[bold]x[/bold].dd"
RAW = ("\x1b", "\x07", RLO)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    case_dir = tmp_path_factory.mktemp("hostile") / "case"
    store = CaseStore(case_dir, create=True)
    sink = FlagSink(case_dir, store)
    item = picture(HOSTILE_DEVICE, 1, HOSTILE_PATH, member=f"inner{RLO}.zip/{CLEAR}a.jpg",
                   exif=Exif(make=f"Cam{CLEAR}", model=f"X{RLO}1", datetime_original="2026:01:01"))
    add_device(store, sink, HOSTILE_DEVICE, items=[item], matches=[exact(item)],
               context={"evidence": "", "exhibit": f"EX{CLEAR}/1", "suspect": f"S{RLO}",
                        "access_to_children": "lives_with", "custody_deadline": None,
                        "notes": ""})
    sink.close()
    store.close()
    return case_dir


def test_terminal_safe_escapes_controls_and_bidi_and_keeps_text():
    assert terminal_safe("a\x1b[2Jb\u202ec\nd\te\x7f") == "a\\x1b[2Jb\\u202ec\\x0ad\\x09e\\x7f"
    assert terminal_safe("Ünïcødé 写真.jpg") == "Ünïcødé 写真.jpg"


@pytest.mark.parametrize("args", [["queue"], ["show", HOSTILE_DEVICE], ["flags"], ["context", "show"]])
def test_console_output_is_inert(case, args):
    result = CliRunner().invoke(main, args + ["--case", str(case)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    for ch in RAW:
        assert ch not in out, (args, repr(ch))
    assert "\\x1b" in out
    assert "\\u202e" in out or args == ["queue"]          # the queue shows no file names
    # rich markup in a name is shown as text, not applied
    assert "[bold]" in out or "[red]" in out


def test_json_keeps_the_exact_strings(case):
    result = CliRunner().invoke(main, ["show", HOSTILE_DEVICE, "--case", str(case), "--json"])
    data = json.loads(result.stdout)
    [finding] = data["findings"]
    assert finding["path"] == HOSTILE_PATH and data["device"] == HOSTILE_DEVICE


def test_scan_flag_lines_are_inert():
    item = picture("d", 1, HOSTILE_PATH)
    [flag] = rules_for_batch("d", None, [item], [exact(item)], [], [], 1.0)
    line = format_flag_line(flag)
    assert not any(ch in line for ch in RAW) and "\n" not in line
    buf = io.StringIO()
    Console(file=buf, width=200).print(line, markup=False, highlight=False)
    assert not any(ch in buf.getvalue() for ch in RAW)


# --- CSV: formula cells neutralised, rows never forged (issue 19, item 4) ------------------------

FORMULAS = ["=HYPERLINK(\"http://x\",\"y\")", "+1+1", "-2+3", "@SUM(A1)", "\ttab", "\r=2+2.jpg"]


def test_csv_cells_are_neutralised_and_rows_cannot_be_forged(tmp_path):
    import csv as csvlib

    from triage.exports import export
    case_dir = tmp_path / "case"
    store = CaseStore(case_dir, create=True)
    items = [picture("f.dd", i, "/x/a.zip", member=name) for i, name in enumerate(FORMULAS)]
    add_device(store, None, "f.dd", items=items, matches=[exact(i) for i in items],
               context={"evidence": "", "exhibit": "=cmd|'/c calc'!A1", "suspect": "S",
                        "access_to_children": "none", "custody_deadline": None, "notes": ""})
    export(store, "csv", tmp_path / "out.csv")
    store.close()
    raw = (tmp_path / "out.csv").read_bytes()
    assert raw.count(b"\r\n") == len(FORMULAS) + 1          # header + one line per match
    with open(tmp_path / "out.csv", newline="", encoding="utf-8") as fh:
        rows = list(csvlib.DictReader(fh))
    assert len(rows) == len(FORMULAS)
    assert sorted(r["member"] for r in rows) == sorted("'" + n for n in FORMULAS)
    assert all(not r["exhibit"].startswith("=") for r in rows)
    queue = CliRunner().invoke(main, ["queue", "--case", str(case_dir), "--format", "csv"])
    [row] = list(csvlib.DictReader(io.StringIO(queue.stdout, newline="")))
    assert row["exhibit"] == "'=cmd|'/c calc'!A1"
    # JSON keeps the exact value
    data = json.loads(CliRunner().invoke(main, ["queue", "--case", str(case_dir),
                                                "--format", "json"]).stdout)
    assert data[0]["exhibit"] == "=cmd|'/c calc'!A1"


def test_csv_safe_leaves_numbers_and_plain_text():
    from triage.units import csv_safe
    assert csv_safe(-3) == -3 and csv_safe("plain") == "plain" and csv_safe("=1") == "'=1"
    assert csv_safe(True) == "true" and csv_safe(False) == "false" and csv_safe(1) == 1
    assert csv_safe("\r=2") == "'\r=2"


def test_safe_csv_writer_neutralises_cells_written_by_writerows_too():
    import io

    from triage.units import SafeDictWriter
    buf = io.StringIO()
    writer = SafeDictWriter(buf, fieldnames=["name", "ok"])
    writer.writerows([{"name": "=HYPERLINK(1)", "ok": True}, {"name": "\r=2+2", "ok": False}])
    writer.writerow({"name": "@x", "ok": True})
    assert buf.getvalue() == ("'=HYPERLINK(1),true\r\n\"'\r=2+2\",false\r\n'@x,true\r\n")


# --- DFXML stays well-formed whatever the names hold (issue 19, item 10) ------------------------

def test_dfxml_is_well_formed_with_control_characters(case, tmp_path):
    import xml.etree.ElementTree as ET

    from triage.exports import export
    out = tmp_path / "listing.xml"
    with CaseStore(case, create=False) as store:
        export(store, "dfxml", out)
    root = ET.parse(out).getroot()                        # raises on a not-well-formed file
    names = [e.text for e in root.iter("{http://www.forensicswiki.org/wiki/Category:Digital_Forensics_XML}filename")]
    [name] = names
    assert "\\x1b[2J" in name and "\u202e" in name and "\n" in name   # escaped where XML cannot hold it
    assert name.startswith("/Users/s/")
