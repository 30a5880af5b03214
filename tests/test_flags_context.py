"""Case context files: CSV and JSON, checked, matched to devices."""
from __future__ import annotations

import json

import pytest

from triage.context import load_context, match_context
from triage.errors import TriageError

CSV = """evidence,exhibit,suspect,access_to_children,custody_deadline,notes
/mnt/seized/laptop.E01,JB/1,Suspect One,lives_with,2026-12-01,stepfather
phone.dd,JB/2,Suspect Two,,,
usb.raw,JB/3,Suspect Three,Works With,2026-12-01T09:30:00Z,teacher
"""


def test_csv_rows_normalised_and_keyed_by_file_name(tmp_path):
    path = tmp_path / "context.csv"
    path.write_text(CSV)
    ctx = load_context(path)
    assert sorted(ctx) == ["laptop.E01", "phone.dd", "usb.raw"]
    assert ctx["laptop.E01"] == {"evidence": "/mnt/seized/laptop.E01", "exhibit": "JB/1",
                                 "suspect": "Suspect One", "access_to_children": "lives_with",
                                 "custody_deadline": "2026-12-01", "notes": "stepfather"}
    assert ctx["phone.dd"]["access_to_children"] == "unknown"       # blank is unknown, not none
    assert ctx["phone.dd"]["custody_deadline"] is None
    assert ctx["usb.raw"]["access_to_children"] == "works_with"
    assert ctx["usb.raw"]["custody_deadline"].startswith("2026-12-01T09:30:00")


@pytest.mark.parametrize("shape", ["list", "devices", "keyed"])
def test_json_shapes(tmp_path, shape):
    rows = [{"evidence": "a.dd", "exhibit": "X/1", "access_to_children": "other"},
            {"evidence": "b.dd", "exhibit": "X/2"}]
    data = {"list": rows, "devices": {"devices": rows},
            "keyed": {r["evidence"]: {k: v for k, v in r.items() if k != "evidence"} for r in rows}}
    path = tmp_path / "context.json"
    path.write_text(json.dumps(data[shape]))
    ctx = load_context(path)
    assert ctx["a.dd"]["access_to_children"] == "other" and ctx["a.dd"]["exhibit"] == "X/1"
    assert ctx["b.dd"]["access_to_children"] == "unknown" and ctx["b.dd"]["suspect"] == ""


@pytest.mark.parametrize("text,words", [
    ("evidence,access_to_children\na.dd,sometimes\n", "access_to_children 'sometimes'"),
    ("evidence,custody_deadline\na.dd,next tuesday\n", "custody_deadline 'next tuesday'"),
    ("evidence,exhibit\na.dd,1\na.dd,2\n", "appears twice"),
    ("exhibit,suspect\nX,Y\n", "'evidence' column"),
    ("[1, 2]", "list of objects"),
    ("{not json", "not valid JSON"),
])
def test_bad_context_is_one_line_error(tmp_path, text, words):
    path = tmp_path / "context.csv"
    path.write_text(text)
    with pytest.raises(TriageError) as exc:
        load_context(path)
    assert words in str(exc.value) and "\n" not in str(exc.value)


def test_missing_file(tmp_path):
    with pytest.raises(TriageError, match="not found"):
        load_context(tmp_path / "nope.csv")


def test_match_by_path_or_name(tmp_path):
    path = tmp_path / "context.csv"
    path.write_text(CSV)
    ctx = load_context(path)
    assert match_context(ctx, ["/mnt/seized/laptop.E01", "/mnt/seized/laptop.E02"])["exhibit"] == "JB/1"
    assert match_context(ctx, ["/elsewhere/phone.dd"])["exhibit"] == "JB/2"
    assert match_context(ctx, ["/elsewhere/tablet.dd"]) is None
    assert match_context({}, ["/x/phone.dd"]) is None
