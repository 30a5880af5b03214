"""`triage hashset import|list|lookup|remove` through click's CliRunner."""
from __future__ import annotations

import hashlib
import json
import sqlite3

import pytest
from click.testing import CliRunner

from cli import main


def md5(s: str) -> str:
    return hashlib.md5(s.encode()).hexdigest()


@pytest.fixture
def run(tmp_path):
    store = str(tmp_path / "store")

    def invoke(*args):
        return CliRunner().invoke(main, ["hashset", *args, "--store", store])
    return invoke


@pytest.fixture
def vics(tmp_path):
    path = tmp_path / "caid.json"
    path.write_text(json.dumps({
        "@odata.context": "http://github.com/VICSDATAMODEL/ProjectVic/DataModels/2.0.xml/UK/$metadata#Media",
        "value": [{"MD5": md5("a").upper(), "Category": 1}, {"MD5": md5("b"), "Category": 3},
                  {"MD5": "broken"}]}))
    return path


def test_import_list_lookup_remove(run, vics, tmp_path):
    r = run("import", str(vics), "--name", "caid", "--role", "alert")
    assert r.exit_code == 0, r.output
    assert "caid: alert, vics" in r.output and "2 md5" in r.output and "records/s" in r.output
    assert "rejected 1 records" in r.output and "media 3" in r.output

    r = run("list", "--json")
    [info] = json.loads(r.output)
    # records: the Media entries read (one broken), rejected: the broken one
    assert (info["name"], info["role"], info["records"], info["rejected"]) == ("caid", "alert", 3, 1)
    assert info["profile"] == "UK" and info["source_name"] == "caid.json"

    r = run("lookup", md5("a"), md5("zz"), "--format", "jsonl")
    assert r.exit_code == 0, r.output
    first, second = (json.loads(line) for line in r.output.splitlines())
    assert first["hits"][0]["set_name"] == "caid" and first["hits"][0]["category_label"] == "A"
    assert second["hits"] == []

    r = run("lookup", md5("b"))
    assert "alert: caid" in r.output and " Category C " in r.output    # the queue's words

    table = run("list").output
    assert "caid" in table and "alert" in table and "uk-caid" in table

    r = CliRunner().invoke(main, ["hashset", "lookup", "-", "--format", "jsonl", "--store",
                                  str(tmp_path / "store")], input=f"{md5('b')}\n\n{md5('q')}\n")
    assert [bool(json.loads(line)["hits"]) for line in r.output.splitlines()] == [True, False]

    plain = tmp_path / "more.txt"
    plain.write_text(md5("c") + "\n")
    r = run("import", str(plain), "--name", "caid", "--delta")
    assert r.exit_code == 0, r.output
    assert "+delta1" in r.output
    assert "alert: caid" in run("lookup", md5("c")).output

    r = run("remove", "caid")
    assert r.exit_code == 0 and "removed caid" in r.output
    assert "no hash sets" in run("list").output


def test_not_a_hash_set_is_one_line_and_exit_2(run, tmp_path):
    path = tmp_path / "letter.txt"
    path.write_text("Dear examiner,\nthis is a letter.\n")
    r = run("import", str(path), "--name", "x")
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: letter.txt is not a hash set")
    assert "Traceback" not in r.output


def test_nsrl_as_alert_is_refused_on_the_command_line(run, tmp_path):
    db = tmp_path / "nsrl.db"
    con = sqlite3.connect(db)
    con.executescript("CREATE TABLE FILE (sha256, sha1, md5, crc32, file_name, file_size, package_id);"
                      "CREATE VIEW DISTINCT_HASH AS SELECT DISTINCT sha256, sha1, md5, crc32 FROM FILE;")
    con.execute("INSERT INTO FILE VALUES ('', '', ?, '', 'f', 1, 1)", (md5("n").upper(),))
    con.commit()
    con.close()
    r = run("import", str(db), "--name", "nsrl", "--role", "alert")
    assert r.exit_code == 2 and "--role ignore" in r.output
    r = run("import", str(db), "--name", "nsrl", "--role", "ignore")
    assert r.exit_code == 0, r.output
    assert "ignore: nsrl" in run("lookup", md5("n")).output


def test_lookup_rejects_non_hashes_and_unknown_sets(run, vics):
    run("import", str(vics), "--name", "caid")
    r = run("lookup", "xyz")
    assert r.exit_code == 2 and "not an MD5" in r.output
    r = run("lookup", md5("a"), "--set", "nope")
    assert r.exit_code == 2 and "no hash set named nope" in r.output
