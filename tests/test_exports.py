"""Exports: CASE/UCO passes case_validate, VICS shape, CSV rows, DFXML listing."""
from __future__ import annotations

import csv
import json
import shutil
import stat
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from casebuild import build_fleet
from triage.errors import TriageError
from triage.exports import export

NOW = time.time()
DFXML = "{http://www.forensicswiki.org/wiki/Category:Digital_Forensics_XML}"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    case = tmp_path_factory.mktemp("case")
    s = build_fleet(case, now=NOW)
    run = s.begin_run(tool_version="0.1.0", operator="examiner1", options={"mode": "full"},
                      hashsets=[{"name": "caid", "version": "2026-11", "role": "alert"}],
                      model={"name": "open_nsfw+age", "version": "1.1", "sha256": "e" * 64})
    s.end_run(run, "complete")
    yield s
    s.close()


def _case_validate() -> str | None:
    exe = Path(sys.executable).with_name("case_validate")
    return str(exe) if exe.exists() else shutil.which("case_validate")


def test_case_uco_passes_case_validate(store, tmp_path):
    exe = _case_validate()
    assert exe is not None, "case_validate (PyPI case-utils, a test dependency) is missing"
    out = tmp_path / "case.jsonld"
    summary = export(store, "case", out)
    assert "7 devices, 8 files, 8 analytic results" == summary
    proc = subprocess.run([exe, str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Conforms: True" in proc.stdout
    graph = json.loads(out.read_text())["@graph"]
    types = [n["@type"] for n in graph]
    assert types.count("case-investigation:InvestigativeAction") == 7
    tool = [n for n in graph if "uco-tool:AnalyticTool" in n["@type"]][0]
    entries = tool["uco-configuration:usesConfiguration"]["uco-configuration:configurationEntry"]
    assert {e["uco-configuration:itemName"] for e in entries} == {"hashset", "model"}
    hashes = {n["uco-types:hashValue"]["@value"] for n in graph
              for f in n.get("uco-core:hasFacet", []) for n in f.get("uco-observable:hash", [])}
    from triage.findings import findings
    expected = {f.features.md5 for f in findings(store)} | {f.features.sha1 for f in findings(store)}
    assert len(expected) == 10 and expected <= hashes
    classes = [c["uco-analysis:class"] for n in graph if n["@type"] == "uco-analysis:AnalyticResult"
               for f in n["uco-core:hasFacet"] for c in f["uco-analysis:classification"]]
    assert sum("Category A (exact md5)" in c for c in classes) == 2
    assert any("not evidence" in c for c in classes)
    # exporting twice gives the same graph: identifiers come from the case's keys
    again = tmp_path / "again.jsonld"
    export(store, "case", again)
    assert again.read_text() == out.read_text()


def test_case_uco_invalid_graph_is_caught(tmp_path):
    """The validator really checks: a Hash whose value is not hexBinary fails."""
    exe = _case_validate()
    assert exe is not None, "case_validate (PyPI case-utils, a test dependency) is missing"
    from triage.exports.case_uco import CONTEXT
    bad = {"@context": CONTEXT, "@graph": [{"@id": "kb:Hash-1", "@type": "uco-types:Hash",
                                            "uco-types:hashMethod": "MD5",
                                            "uco-types:hashValue": "not-hex"}]}
    path = tmp_path / "bad.jsonld"
    path.write_text(json.dumps(bad))
    proc = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "Conforms: False" in proc.stdout


def test_vics_cases_shape(store, tmp_path):
    out = tmp_path / "vics.json"
    export(store, "vics", out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    doc = json.loads(out.read_text())
    assert doc["@odata.context"].endswith("/$metadata#Cases")
    (case,) = doc["value"]
    media = {m["MD5"]: m for m in case["Media"]}
    # 3 alert pictures (shared by the two exact devices), 1 near, 1 suspected
    assert len(media) == 5 and case["TotalPrecategorized"] == 3 and case["TotalMediaFiles"] == 8
    for m in media.values():
        assert m["MD5"] == m["MD5"].upper() and len(m["MD5"]) == 32 and len(m["SHA1"]) == 40
        assert m["MediaSize"] > 0 and m["MediaFiles"]
        for mf in m["MediaFiles"]:
            assert mf["MD5"] == m["MD5"] and mf["SourceID"].startswith("EX/")
            assert mf["Written"].endswith("Z") and isinstance(mf["Deleted"], bool)
    deleted = [mf for m in media.values() for mf in m["MediaFiles"] if mf["Deleted"]]
    assert len(deleted) == 2 and all(mf["FileName"] == "img_0002.jpg" for mf in deleted)
    member = [mf for m in media.values() for mf in m["MediaFiles"] if "ParentFileName" in mf]
    assert member and member[0]["ParentFileName"] == "pics.zip"
    assert member[0]["FilePath"].endswith("\\Downloads\\pics.zip\\x\\")
    selfgen = [m for m in media.values() if m.get("SelfGenerated")]
    assert len(selfgen) == 1
    suspected = [m for m in media.values() if m["IsSuspected"] and not m["IsPrecategorized"]]
    assert len(suspected) == 2 and all("Category" not in m for m in suspected)
    prov = [p["PropertyValue"] for m in media.values() for p in m["MediaMetadata"]
            if p["PropertyName"] == "triage provenance"]
    assert any("inode 102" in p and "volume offset 1048576" in p for p in prov)


def test_vics_numeric_category_is_a_byte(tmp_path):
    from casebuild import add_device, context, exact, picture
    from triage.store import CaseStore
    s = CaseStore(tmp_path / "c", create=True)
    x = picture("d.dd", 1, content=b"cat-1")
    add_device(s, None, "d.dd", items=[x], matches=[exact(x, "1")], context=context("none", "D/1"))
    export(s, "vics", tmp_path / "v.json")
    (m,) = json.loads((tmp_path / "v.json").read_text())["value"][0]["Media"]
    assert m["Category"] == 1 and m["IsPrecategorized"] is True
    assert m["PrecategorizationSource"] == "caid 2026-11"


def test_csv_has_one_row_per_match(store, tmp_path):
    out = tmp_path / "m.csv"
    assert export(store, "csv", out) == "8 rows"
    rows = list(csv.DictReader(out.open()))
    kinds = sorted(r["kind"] for r in rows)
    assert kinds == ["exact"] * 6 + ["near", "suspected"]
    deleted = [r for r in rows if r["deleted"] == "yes"]
    assert len(deleted) == 2 and all(r["inode"] == "102" for r in deleted)
    assert [r for r in rows if r["kind"] == "suspected"][0]["model_sha256"] == "e" * 64
    assert all(r["exhibit"] for r in rows)


def test_dfxml_lists_every_file(store, tmp_path):
    out = tmp_path / "files.xml"
    summary = export(store, "dfxml", out)
    root = ET.parse(out).getroot()
    assert root.tag == f"{DFXML}dfxml" and root.get("version")
    files = root.findall(f".//{DFXML}fileobject")
    n_files = sum(1 for _ in store.files())
    assert len(files) == n_files and summary.startswith(f"{n_files} file objects")
    by_name = {f.findtext(f"{DFXML}filename"): f for f in files}
    member = by_name["/Users/s/Downloads/pics.zip!x/3.jpg"]
    assert member.findtext(f"{DFXML}alloc") == "1"
    deleted = [f for f in files if f.findtext(f"{DFXML}alloc") == "0"]
    assert len(deleted) == 2
    digests = {d.get("type"): d.text for d in member.findall(f"{DFXML}hashdigest")}
    assert set(digests) == {"md5", "sha1"} and len(digests["md5"]) == 32
    assert member.findtext(f"{DFXML}mtime").endswith("Z")
    # schema order inside a fileobject: filename first, hashdigest last
    tags = [c.tag.replace(DFXML, "") for c in member]
    assert tags[0] == "filename" and tags[-1] == "hashdigest"
    assert tags.index("filesize") < tags.index("alloc") < tags.index("inode") < tags.index("mtime")
    volumes = root.findall(f"{DFXML}volume")
    assert {v.get("{https://github.com/triage/triage/dfxml}device") for v in volumes} >= {
        "encrypted.dd", "clean_none.dd"}


def test_device_filter_and_bad_format(store, tmp_path):
    out = tmp_path / "one.csv"
    export(store, "csv", out, device_id="near_only.dd")
    rows = list(csv.DictReader(out.open()))
    assert [r["device"] for r in rows] == ["near_only.dd"]
    with pytest.raises(TriageError):
        export(store, "pdf", tmp_path / "x")
    with pytest.raises(TriageError, match="does not exist"):
        export(store, "csv", tmp_path / "nope" / "x.csv")


def test_vics_round_trips_through_our_importer(tmp_path):
    """Export, import as a hash set: the same hashes come back with the same categories."""
    from casebuild import add_device, context, exact, near, picture, score
    from hashsets.store import HashSetStore
    from triage.store import CaseStore
    s = CaseStore(tmp_path / "c", create=True)
    run = s.begin_run(tool_version="t", operator="o", options={}, model=None,
                      hashsets=[{"name": "caid", "version": "2026-11", "role": "alert",
                                 "scheme": "uk-caid"}])
    s.end_run(run, "complete")
    items = [picture("a.dd", i, content=f"alert-{i}".encode()) for i in range(4)]
    cats = ["1", "2", "3", "A"]        # raw numbers, and a label the scheme maps to 1
    n, q = picture("a.dd", 10, content=b"near"), picture("a.dd", 11, content=b"suspect")
    add_device(s, None, "a.dd", items=items + [n, q],
               matches=[exact(x, c) for x, c in zip(items, cats)] + [near(n, 8, "2")],
               scores=[score(q, 0.97, 0.8)], context=context("lives_with", "A/1"))
    # the same picture on a second device: one Media, two MediaFiles
    dup = picture("b.dd", 1, "/home/b/copy.jpg", content=b"alert-0")
    add_device(s, None, "b.dd", items=[dup], matches=[exact(dup, "1")], context=context("none", "B/1"))
    out = tmp_path / "export.vics.json"
    export(s, "vics", out)
    hs = HashSetStore(tmp_path / "hashsets")
    info = hs.import_file(out, "roundtrip", "alert")
    assert info.rejected == 0 and info.profile == "UK" and info.scheme == "uk-caid"
    want = {x[1].md5: c for x, c in zip(items, ["1", "2", "3", "1"])}
    want.update({n[1].md5: "", q[1].md5: ""})        # near and suspected: uncategorised
    md5s = sorted(want)
    for m, hits in zip(md5s, hs.lookup("md5", md5s)):
        assert len(hits) == 1, m
        assert hits[0].category == want[m] and hits[0].role == "alert"
    sha1s = {x[1].md5: x[1].sha1 for x in items + [n, q]}
    for m, hits in zip(md5s, hs.lookup("sha1", [sha1s[m] for m in md5s])):
        assert len(hits) == 1 and hits[0].category == want[m]
    assert info.counts == {"md5": 6, "sha1": 6}
    doc = json.loads(out.read_text())
    (dup_media,) = [m for m in doc["value"][0]["Media"] if m["MD5"] == items[0][1].md5.upper()]
    assert sorted(mf["SourceID"] for mf in dup_media["MediaFiles"]) == ["A/1", "B/1"]
