"""Issue 18: one convention for every command, through the installed entry point.

Output formats, `--out -`, ISO-8601 UTC times in JSON, dates with a zone in tables, a closed
pipe, and errors: a user's mistake is one `error:` line and exit 2, a bug is one line, a logged
traceback and exit 70."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import subprocess
import sys

import pytest

from clirun import ROOT, triage

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def one_error_line(result, *words):
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert "Traceback" not in result.stderr
    return lines[0]


# --- point 4: output options ------------------------------------------------------------

@pytest.mark.parametrize("command", [
    ("queue",), ("show", "dev01.raw"), ("flags",), ("context", "show"), ("hashset", "list"),
    ("users", "list"), ("models", "list"), ("audit", "verify")])
def test_json_alias_and_format_json_give_the_same_document(cli_case, command):
    case = ("--case", cli_case["case"]) if command[0] in ("queue", "show", "flags", "context") \
        else ()
    a = triage(*command, *case, "--json")
    b = triage(*command, *case, "--format", "json")
    assert a.returncode == 0 and b.returncode == 0, (a.stderr, b.stderr)
    json.loads(a.stdout)
    if command[0] not in ("audit",):          # the audit log grows with each read of a case
        assert a.stdout == b.stdout


def test_json_times_are_iso_utc_everywhere(cli_case):
    case = cli_case["case"]
    shown = json.loads(triage("show", "dev01.raw", "--case", case, "--format", "json").stdout)
    assert ISO_UTC.match(shown["flag_records"][0]["raised_at"])
    assert ISO_UTC.match(shown["device_record"]["started"])
    assert ISO_UTC.match(shown["runs"][0]["started"]) and ISO_UTC.match(shown["runs"][0]["finished"])
    flags = [json.loads(line) for line in
             triage("flags", "--case", case, "--format", "jsonl").stdout.splitlines()]
    assert flags and all(ISO_UTC.match(f["raised_at"]) for f in flags)
    summary = json.loads(cli_case["scan"].stdout or "{}") if cli_case["scan"].stdout.startswith("{") else None
    assert summary is None          # the shared scan ran with -q: a summary table, not JSON


def test_tables_show_date_time_and_zone(cli_case):
    case = cli_case["case"]
    flags = triage("flags", "--case", case, "--code", "KNOWN_MATCH").stdout
    assert "UTC time" in flags and re.search(r"\d{4}-\d\d-\d\d", flags)
    shown = triage("show", "dev05.raw", "--case", case).stdout
    assert re.search(r"scanned\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", shown)


def test_jsonl_and_csv_queue(cli_case):
    case = cli_case["case"]
    lines = triage("queue", "--case", case, "--format", "jsonl").stdout.splitlines()
    doc = json.loads(triage("queue", "--case", case, "--format", "json").stdout)
    assert [json.loads(line) for line in lines] == doc
    rows = list(csv.DictReader(io.StringIO(triage("queue", "--case", case, "--format", "csv").stdout)))
    assert [r["device"] for r in rows] == [r["device"] for r in doc]


def test_out_dash_is_standard_output(cli_case):
    case = cli_case["case"]
    exported = triage("export", "--case", case, "--format", "csv", "--out", "-")
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert rows and {r["device"] for r in rows} >= {"dev01.raw", "dev02.E01"}
    assert not (case / "-").exists() and "wrote standard output" in exported.stderr
    report = triage("report", "--case", case, "--out", "-", "--no-thumbnails")
    assert report.returncode == 0 and report.stdout.lstrip().lower().startswith("<!doctype html")
    assert not [p for p in case.iterdir() if p.name.startswith(".out-")]


@pytest.mark.parametrize("command", [
    ("queue",), ("show", "dev01.raw"), ("flags",), ("queue", "--format", "json")])
def test_a_closed_pipe_ends_quietly(cli_case, command):
    # the reader is gone before the first write, as `triage queue | head -0` would leave it
    proc = subprocess.Popen([sys.executable, "-c", "from cli import run; run()", *command,
                             "--case", str(cli_case["case"])], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and err == ""


# --- point 13: errors -------------------------------------------------------------------

def test_user_mistakes_are_one_error_line_and_exit_2(cli_case, tmp_path):
    case = cli_case["case"]
    one_error_line(triage("inspect", tmp_path / "nope.E01"), "no such file", "nope.E01")
    one_error_line(triage("queue", "--case", case, "--deadline-before", "next tuesday"),
                   "not a date or time")
    one_error_line(triage("show", "nothing-like-it", "--case", case), "no device")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "case.sqlite").write_bytes(b"this is not SQLite" * 100)
    one_error_line(triage("queue", "--case", corrupt))
    # click's own usage errors: one line too, naming the help to read
    one_error_line(triage("queue", "--case", case, "--limit", "0"), "'--limit'",
                   "see `triage queue --help`")
    one_error_line(triage("flags", "--case", case, "--code", "BOGUS"), "'BOGUS'",
                   "see `triage flags --help`")
    one_error_line(triage("queue", "--case", case, "--bogus"), "'--bogus'")
    one_error_line(triage("queue"), "Missing option '--case'")
    one_error_line(triage("context", "show", "--case", case, "--format", "xml"),
                   "see `triage context show --help`")
    one_error_line(triage("bogus"), "No such command 'bogus'", "see `triage --help`")


def test_a_bug_is_an_internal_error_with_a_logged_traceback(cli_case, tmp_path):
    # a defect planted in the library for this process only: no user input causes it
    code = ("import sys, triage.rank as r\n"
            "def broken(*a, **k):\n"
            "    raise ValueError('planted defect')\n"
            "r.verdicts = broken\n"
            "from cli import run; run()\n")
    case = tmp_path / "case"
    import shutil
    shutil.copytree(cli_case["case"], case)
    result = subprocess.run([sys.executable, "-c", code, "queue", "--case", str(case)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 70, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("internal error") and "ValueError: planted defect" in line
    (log,) = (case / "logs").glob("internal-error-*.log")
    assert str(log) in line
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "planted defect" in text
    assert oct(log.stat().st_mode & 0o777) == "0o600"


def test_an_internal_error_without_a_case_logs_in_triage_home(tmp_path):
    code = ("import hashsets.store as s\n"
            "def broken(*a, **k):\n"
            "    raise KeyError('planted')\n"
            "s.HashSetStore.sets = broken\n"
            "from cli import run; run()\n")
    home = tmp_path / "home"
    result = subprocess.run([sys.executable, "-c", code, "hashset", "list", "--store",
                             str(tmp_path / "store")], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT),
                                              "TRIAGE_HOME": str(home)})
    assert result.returncode == 70
    assert list((home / "logs").glob("internal-error-*.log"))


# --- point 2: hash-set files given to scan ----------------------------------------------

def test_scan_hashset_file_that_does_not_exist(cli_case, tmp_path):
    missing = tmp_path / "caid_2026.json"
    line = one_error_line(triage("scan", "--case", tmp_path / "c", "--hashset", missing,
                                 cli_case["paths"]["dev05"]), f"no such file: {missing}")
    assert "no hash set named" not in line
    one_error_line(triage("scan", "--case", tmp_path / "c", "--hashset", "caid.json",
                          cli_case["paths"]["dev05"]), "no such file: caid.json")


def test_scan_prints_each_hashset_files_rejected_lines(cli_case, tmp_path):
    bad = tmp_path / "agency.md5.txt"
    bad.write_text("d41d8cd98f00b204e9800998ecf8427e\nnot a hash at all\n"
                   "0123456789abcdef0123456789abcdef\nzz-also-bad\n")
    result = triage("scan", "--case", tmp_path / "c", "-q", "--hashset", bad,
                    cli_case["paths"]["dev05"])
    assert result.returncode == 0, result.stderr
    assert "agency.md5.txt: rejected 2 records, e.g.:" in result.stderr
    assert "not a hash at all" in result.stderr and "zz-also-bad" in result.stderr


# --- point 3: symbolic links in a folder extraction ------------------------------------

def test_symbolic_links_are_listed_with_their_target_not_read_errors(cli_case, tmp_path):
    folder = tmp_path / "extraction"
    (folder / "DCIM").mkdir(parents=True)
    (folder / "notes.txt").write_text("hello\n")
    os.symlink("notes.txt", folder / "inside")
    os.symlink("/etc/passwd", folder / "outside")
    os.symlink("missing", folder / "dangling")
    os.symlink("DCIM", folder / "folder_link")
    listing = [json.loads(line) for line in
               triage("files", folder, "--hash", "md5").stdout.splitlines()]
    links = {r["name"]: r for r in listing if r["type"] == "inode/symlink"}
    assert {n: r["link_target"] for n, r in links.items()} == {
        "inside": "notes.txt", "outside": "/etc/passwd", "dangling": "missing",
        "folder_link": "DCIM"}
    assert all(r["md5"] is None and "error" not in r for r in links.values())
    case = tmp_path / "case"
    scanned = triage("scan", "--case", case, "-q", "--hashset", cli_case["paths"]["alert_vics"],
                     folder)
    assert scanned.returncode == 0, scanned.stderr
    assert "extraction: complete;" in scanned.stdout
    shown = json.loads(triage("show", "extraction", "--case", case, "--json").stdout)
    assert shown["coverage"] == "complete" and shown["coverage_records"] == []


# --- point 7: flags ---------------------------------------------------------------------

def test_child_access_is_one_escalation_per_device(cli_case):
    case = cli_case["case"]
    flags = [json.loads(line) for line in
             triage("flags", "--case", case, "--format", "jsonl").stdout.splitlines()]
    dev01 = [f for f in flags if f["device_id"] == "dev01.raw"]
    dev02 = [f for f in flags if f["device_id"] == "dev02.E01"]
    # the same content: dev01's suspect lives with children, dev02's has no access
    (child,) = [f for f in dev01 if f["code"] == "CHILD_ACCESS"]
    assert len(dev01) == len(dev02) + 1
    covered = {c["key"] for c in child["provenance"]["covers"]}
    findings = {f["key"] for f in dev01 if f["code"] in ("KNOWN_MATCH", "NEAR_MATCH",
                                                          "SUSPECTED_NEW", "SELF_PRODUCED")}
    assert covered == findings and f"escalates {len(findings)} findings" in child["message"]
    only = json.loads(triage("flags", "--case", case, "--code", "child_access", "--json").stdout)
    assert [f["code"] for f in only] == ["CHILD_ACCESS"]


def test_one_category_vocabulary_in_flags_queue_and_show(cli_case):
    case = cli_case["case"]
    known = [json.loads(line)["message"] for line in
             triage("flags", "--case", case, "--code", "KNOWN_MATCH", "--device", "dev02.E01",
                    "--format", "jsonl").stdout.splitlines()]
    assert known and all(re.search(r"in alert Category [ABC]:", m) for m in known)
    assert not any("category 1" in m or "category 2" in m for m in known)
    queue = json.loads(triage("queue", "--case", case, "--json").stdout)
    reasons = " ".join(r for row in queue for r in row["reasons"])
    assert re.search(r"\(Category A: \d+, B: \d+", reasons)
    assert "Category A" in triage("show", "dev02.E01", "--case", case).stdout


def test_a_custom_category_map_reaches_the_queue_and_every_export(cli_case, tmp_path):
    p = cli_case["paths"]
    store = tmp_path / "sets"
    imported = triage("hashset", "import", p["alert_vics"], "--name", "agency", "--store", store,
                      "--category-map", "1=Indecent-1:3,2=Indecent-2:2,3=Indecent-3:1")
    assert imported.returncode == 0, imported.stderr
    case = tmp_path / "case"
    scan = triage("scan", "--case", case, "-q", "--store", store, "--hashset", "agency", p["dev02"])
    assert scan.returncode == 0, scan.stderr
    (row,) = json.loads(triage("queue", "--case", case, "--json").stdout)
    assert any("(Category Indecent-1: " in r for r in row["reasons"]), row["reasons"]
    flags = triage("flags", "--case", case, "--code", "KNOWN_MATCH", "--format", "jsonl").stdout
    assert "agency Category Indecent-" in flags
    # one vocabulary wherever a person reads a category; raw numbers only in machine fields
    raw_number = re.compile(r"[Cc]ategory [0-9]")

    def text(*args) -> str:
        got = triage(*args, "--case", case)
        assert got.returncode == 0, got.stderr
        return " ".join(got.stdout.split())      # wrapped at 80 columns: words rejoined

    shown = json.loads(text("show", "dev02.E01", "--format", "json"))
    assert shown["findings"]
    for f in shown["findings"]:
        if f["matches"]:
            assert f["category"] in ("1", "2", "3")
            assert f["category_label"] == f"Indecent-{f['category']}"
            assert all(m["category_label"] == f"Indecent-{m['category']}" for m in f["matches"])
    outputs = {
        "show": text("show", "dev02.E01"),
        "queue": text("queue"),
        "queue csv": text("queue", "--format", "csv"),
        "flags": text("flags"),
        "csv": text("export", "--format", "csv", "--out", "-"),
        "vics": text("export", "--format", "vics", "--out", "-"),
        "case": text("export", "--format", "case", "--out", "-"),
        "report": text("report", "--out", "-"),
    }
    for name, out in outputs.items():
        assert "Indecent-" in out, name
        assert not raw_number.search(out), (name, raw_number.search(out))
    rows = list(csv.DictReader(io.StringIO(
        triage("export", "--case", case, "--format", "csv", "--out", "-").stdout)))
    matched = [r for r in rows if r["kind"] in ("exact", "near")]
    assert matched and all(r["category_label"] == f"Indecent-{r['category']}" for r in matched)
    vics = json.loads(outputs["vics"])
    media = vics["value"][0]["Media"] if "value" in vics else vics["Media"]
    numbers = {m["Category"] for m in media if "Category" in m}
    assert numbers and numbers <= {1, 2, 3}                   # VICS Category: an Edm.Byte


# --- point 5: filters -------------------------------------------------------------------

def test_queue_filters(cli_case):
    case = cli_case["case"]

    def devices(*args):
        result = triage("queue", "--case", case, "--json", *args)
        assert result.returncode == 0, result.stderr
        return [r["device"] for r in json.loads(result.stdout)]

    everything = devices()
    coverage = {r["device"]: r["coverage"] for r in
                json.loads(triage("queue", "--case", case, "--json").stdout)}
    assert devices("--flag", "CHILD_ACCESS") == ["dev01.raw"]
    assert devices("--flag", "not_examined") == ["dev04.E01"]
    complete = devices("--status", "complete")
    assert complete == [d for d in everything if coverage[d] == "complete"]
    assert "dev05.raw" in complete and "dev04.E01" not in complete      # its locked volume
    assert devices("--status", "partial") == ["dev04.E01"]
    assert devices("--limit", "2") == everything[:2]
    # the fleet's deadlines: dev01 and dev02 2026-12-18, dev05 2027-01-05
    assert set(devices("--deadline-before", "2026-12-20")) == {"dev01.raw", "dev02.E01"}
    assert devices("--deadline-before", "2026-12-01") == []
    ranks = {r["device"]: r["rank"] for r in
             json.loads(triage("queue", "--case", case, "--json").stdout)}
    (only,) = json.loads(triage("queue", "--case", case, "--json", "--flag", "NOT_EXAMINED").stdout)
    assert only["rank"] == ranks["dev04.E01"]          # a filter keeps each device's rank


def test_flags_filters(cli_case):
    case = cli_case["case"]
    every = json.loads(triage("flags", "--case", case, "--json").stdout)
    known = json.loads(triage("flags", "--case", case, "--json", "--code", "KNOWN_MATCH",
                              "--device", "SYN/7/02").stdout)
    assert known and {(f["code"], f["device_id"]) for f in known} == {("KNOWN_MATCH", "dev02.E01")}
    assert len(known) == sum(1 for f in every if f["code"] == "KNOWN_MATCH"
                             and f["device_id"] == "dev02.E01")
    assert json.loads(triage("flags", "--case", case, "--json", "--since",
                             "2000-01-01T00:00Z").stdout) == every
    assert json.loads(triage("flags", "--case", case, "--json", "--since", "2999-01-01").stdout) == []
    assert triage("flags", "--case", case, "--since", "2999-01-01").stdout.strip() == \
        "no flags raised that match"


# --- point 10: the case reference ------------------------------------------------------

def test_case_ref_names_the_report_vics_and_case_exports(cli_case, tmp_path):
    case = cli_case["case"]          # scanned with --case-ref OP-ELM/42
    vics = json.loads(triage("export", "--case", case, "--format", "vics", "--out", "-").stdout)
    assert vics["value"][0]["CaseNumber"] == "OP-ELM/42"
    uco = json.loads(triage("export", "--case", case, "--format", "case", "--out", "-").stdout)
    names = [n.get("uco-core:name") for n in uco["@graph"]
             if n.get("@type") == "case-investigation:Investigation"]
    assert names == ["OP-ELM/42"]
    report = triage("report", "--case", case, "--out", "-", "--no-thumbnails").stdout
    assert re.search(r"<title>[^<]*OP-ELM/42", report)
    # and `context set --case-ref` changes it afterwards
    from clirun import copy_case
    other = copy_case(cli_case, tmp_path)
    done = triage("context", "set", "--case", other, "--case-ref", "OP-OAK/7")
    assert done.returncode == 0 and "case reference: OP-OAK/7" in done.stdout
    vics = json.loads(triage("export", "--case", other, "--format", "vics", "--out", "-").stdout)
    assert vics["value"][0]["CaseNumber"] == "OP-OAK/7"
    assert json.loads(triage("context", "show", "--case", other, "--json").stdout)["case_ref"] \
        == "OP-OAK/7"
    table = triage("context", "show", "--case", other)
    assert table.returncode == 0 and "case reference: OP-OAK/7" in table.stdout
    assert "dev01.raw" in table.stdout and "exhibit" in table.stdout


# --- point 11: show's icat line ---------------------------------------------------------

def test_show_icat_line_names_the_real_evidence_and_offset(cli_case, synth_truth):
    case = cli_case["case"]
    shown = json.loads(triage("show", "dev01.raw", "--case", case, "--json").stdout)
    image = str(cli_case["paths"]["dev01"])
    lines = [f["icat"] for f in shown["findings"] if f["icat"].startswith("icat")]
    assert lines and all(f" {image} " in line and "IMAGE" not in line for line in lines)
    # the line works: TSK's icat gives the bytes whose MD5 the finding has
    import hashlib
    for finding in shown["findings"]:
        line = finding["icat"]
        if not line.startswith("icat") or finding["provenance"].get("member"):
            continue
        argv = line.split("  (")[0].split()
        data = subprocess.run(argv, capture_output=True, check=True).stdout
        assert hashlib.md5(data).hexdigest() == finding["provenance"]["hashes"]["md5"]
        break
    else:
        raise AssertionError("no finding with an inode to check")
    assert image in triage("show", "dev01.raw", "--case", case).stdout.replace("\n", "")


# --- point 14: hash-set accounting ------------------------------------------------------

def test_vics_records_and_rejections_are_counted_per_record(tmp_path):
    def md5(i):
        return hashlib.md5(str(i).encode()).hexdigest()

    def sha1(i):
        return hashlib.sha1(str(i).encode()).hexdigest()

    media = [{"MD5": md5(i), "SHA1": sha1(i), "Category": 1} for i in range(303)]
    media[150] = {"MD5": "not-hex-at-all-but-32-characters", "SHA1": "z" * 40, "Category": 1}
    media[200] = {"MD5": md5(200)[:-1] + "g", "SHA1": sha1(200), "Category": 2}   # bad MD5
    media[250] = {"MD5": "", "SHA1": "", "Category": 3}                             # no hash
    path = tmp_path / "vics.json"
    path.write_text(json.dumps({"odata.metadata": "http://github.com/VICSDATAMODEL/ProjectVic/"
                                "DataModels/2.0.xml/UK/$metadata#Media", "value": media}))
    result = triage("hashset", "import", path, "--name", "v", "--store", tmp_path / "s", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["records"] == 303 and info["rejected"] == 3
    assert info["counts"] == {"md5": 300, "sha1": 301}
    # each example names the record it came from (1-based Media numbers)
    examples = info["rejected_examples"]
    assert any(e.startswith("media 151: md5 'not-hex") for e in examples), examples
    assert any(e.startswith("media 151: sha1 'zzz") for e in examples), examples
    assert any(e.startswith("media 201: md5") for e in examples), examples
    assert any(e.startswith("media 251: no valid") for e in examples), examples
    text = triage("hashset", "import", path, "--name", "w", "--store", tmp_path / "s")
    assert "303 records (300 md5, 301 sha1), 3 rejected" in text.stdout


def test_plain_list_rejections_name_their_lines(tmp_path):
    path = tmp_path / "list.txt"
    lines = [hashlib.md5(str(i).encode()).hexdigest() for i in range(1200)]
    lines[1100] = "0" * 31 + "g"            # a bad hex of the right length, late in the file
    path.write_text("\n".join(lines) + "\n")
    info = json.loads(triage("hashset", "import", path, "--name", "p", "--store",
                             tmp_path / "s", "--json").stdout)
    assert info["records"] == 1200 and info["rejected"] == 1
    assert info["rejected_examples"][0].startswith("line 1101:")


def test_file_times_in_show_json_are_iso_utc(cli_case):
    shown = json.loads(triage("show", "dev01.raw", "--case", cli_case["case"], "--json").stdout)
    times = [t for f in shown["findings"] for t in f["times"].values() if t is not None]
    assert times and all(ISO_UTC.match(t) for t in times)
