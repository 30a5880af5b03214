"""Hash-set importers, the compiled store and lookups, on small files the tests write."""
from __future__ import annotations

import hashlib
import json
import pickle
import sqlite3
import struct
import subprocess
import sys

import numpy as np
import pytest

from hashsets import perceptual
from hashsets.importers import detect
from hashsets.store import HashSetStore, open_sets, resolve_hashsets
from triage.errors import HashSetError


def md5(s: str) -> str:
    return hashlib.md5(s.encode()).hexdigest()


def sha1(s: str) -> str:
    return hashlib.sha1(s.encode()).hexdigest()


def sha256(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


@pytest.fixture
def store(tmp_path):
    return HashSetStore(tmp_path / "store")


def hit_sets(hits):
    return sorted((h.set_name, h.role, h.category) for h in hits)


# ------------------------------------------------------------------ VICS

UK_MEDIA = "http://github.com/VICSDATAMODEL/ProjectVic/DataModels/2.0.xml/UK/$metadata#Media"
US_CASES = "http://github.com/VICSDATAMODEL/ProjectVic/DataModels/2.0.xml/US/$metadata#Cases"


def test_vics_media_shape_bom_upper_case_string_booleans(store, tmp_path):
    doc = {"@odata.context": UK_MEDIA, "value": [
        {"MediaID": 1, "Category": 1, "MD5": md5("a").upper(), "SHA1": sha1("a").upper(),
         "VictimIdentified": "true", "IsDistributed": "False", "Series": "S-1",
         "MediaSize": "2835", "IsPrecategorized": "true", "PhotoDNA": "QUJD" * 48,
         "DateUpdated": "2024-01-02T03:04:05.678Z"},
        {"MediaID": 2, "Category": "3", "MD5": md5("b"), "odata.id": "Media(\"x\")"},
        {"MediaID": 3, "Category": 0, "MD5": md5("c")},
        {"MediaID": 4, "Category": 2, "MD5": "not-a-hash"},
    ]}
    path = tmp_path / "caid.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(doc).encode())
    assert detect(path) == "vics"
    info = store.import_file(path, "caid", "alert")
    assert (info.format, info.profile, info.scheme) == ("vics", "UK", "uk-caid")
    assert info.counts == {"md5": 3, "sha1": 1}
    assert info.rejected == 1 and "media 4" in info.rejected_examples[0]
    assert info.source_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info.version == "2024-01-02." + info.source_sha256[:8]     # newest DateUpdated + sha
    a, b, c, none = store.lookup("md5", [md5("a"), md5("b").upper(), md5("c"), md5("zzz")])
    assert len(a) == 1 and a[0].category == "1" and a[0].category_label == "A"
    assert a[0].severity == 3 and a[0].role == "alert" and a[0].series == "S-1"
    assert a[0].victim_identified is True and a[0].is_distributed is False
    assert b[0].category_label == "C" and b[0].severity == 1 and b[0].value == md5("b")
    assert c[0].role == "ignore" and c[0].severity == 0          # non-pertinent category
    assert none == []
    [[s]] = store.lookup("sha1", [sha1("a")])
    assert s.category == "1" and s.set_version == info.version


def test_vics_cases_shape_us_profile_nested_media(store, tmp_path):
    doc = {"@odata.context": US_CASES, "value": [
        {"CaseID": "{0A1B2C3D}", "CaseNumber": "123-17", "SourceApplicationName": "X",
         "Media": [{"MediaID": 1, "Category": 1, "MD5": md5("x"), "SHA1": sha1("x"),
                    "MediaFiles": [{"MD5": md5("x"), "FileName": "a.jpg", "Deleted": "true"}]},
                   {"MediaID": 2, "Category": 2, "MD5": md5("y")}]},
        {"CaseID": "{2}", "Media": [{"MediaID": 1, "Category": 3, "MD5": md5("z")}]}]}
    path = tmp_path / "vic.json"
    path.write_text(json.dumps(doc, indent=1))
    info = store.import_file(path, "vic", "alert")
    assert (info.profile, info.scheme) == ("US", "us-projectvic")
    assert info.counts["md5"] == 3 and info.rejected == 0
    x, y, z = store.lookup("md5", [md5("x"), md5("y"), md5("z")])
    assert (x[0].category_label, x[0].severity, x[0].role) == ("CSAM", 3, "alert")
    assert (y[0].category_label, y[0].severity) == ("child exploitive", 2)
    assert z[0].role == "ignore"


def test_vics_1x_odata_metadata_alternative_hashes(store, tmp_path):
    m = md5("old")
    doc = {"odata.metadata": "http://github.com/ICMEC/ProjectVic/DataModels/1.3.xml#Cases",
           "value": [{"CaseNumber": "7", "Media": [
               {"odata.id": f"Media(\"{m}\")", "MD5": m, "MediaID": 1, "Category": 1,
                "MediaSize": "100",
                "MediaFiles@odata.navigationLinkUrl": f"/Media({m})/MediaFiles",
                "AlternativeHashes": [{"MD5": m, "HashName": "SHA1", "HashValue": sha1("old")}]}]}]}
    path = tmp_path / "v13.json"
    path.write_text(json.dumps(doc))
    info = store.import_file(path, "v13", "alert", profile="UK")
    assert info.profile == "UK" and info.counts == {"md5": 1, "sha1": 1}
    [[h]] = store.lookup("sha1", [sha1("old")])
    assert h.category_label == "A"


def test_vics_truncated_file_keeps_what_was_read(store, tmp_path):
    doc = {"@odata.context": UK_MEDIA, "value": [{"MD5": md5(str(i)), "Category": 2}
                                                  for i in range(10)]}
    text = json.dumps(doc)
    path = tmp_path / "cut.json"
    path.write_text(text[: text.index(md5("8"))])
    info = store.import_file(path, "cut", "alert")
    assert info.counts["md5"] == 8 and info.rejected == 1
    assert "JSON error" in info.rejected_examples[0]


def test_json_that_is_not_vics_is_refused(store, tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"users": [{"name": "a"}], "value": [{"x": 1}]}))
    with pytest.raises(HashSetError, match="not a VICS hash set"):
        store.import_file(path, "x", "alert")


def test_custom_category_map(store, tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"value": [{"MD5": md5("q"), "Category": 5}]}))
    info = store.import_file(path, "c", "alert", category_map="5=grade five:2")
    assert info.scheme == "custom" and info.category_map["5"]["severity"] == 2
    [[h]] = store.lookup("md5", [md5("q")])
    assert (h.category_label, h.severity) == ("grade five", 2)


# ------------------------------------------------------------------ NSRL

MINIMAL_SCHEMA = """
CREATE TABLE FILE (sha256 VARCHAR NOT NULL, sha1 VARCHAR NOT NULL, md5 VARCHAR NOT NULL,
  crc32 VARCHAR NOT NULL, file_name VARCHAR NOT NULL, file_size INTEGER NOT NULL,
  package_id INTEGER NOT NULL);
CREATE TABLE VERSION (version VARCHAR UNIQUE NOT NULL, build_set VARCHAR NOT NULL,
  build_date TIMESTAMP, release_date TIMESTAMP NOT NULL, description VARCHAR NOT NULL);
CREATE VIEW DISTINCT_HASH AS SELECT DISTINCT sha256, sha1, md5, crc32 FROM FILE;
"""

FULL_SCHEMA = """
CREATE TABLE METADATA (metadata_id INTEGER PRIMARY KEY, object_id INTEGER, file_name VARCHAR,
  extension VARCHAR, bytes INTEGER, crc32 VARCHAR, md5 VARCHAR, sha1 VARCHAR, sha256 VARCHAR);
CREATE TABLE PACKAGE_OBJECT (package_object_id INTEGER PRIMARY KEY, package_id INTEGER, object_id INTEGER);
CREATE TABLE PACKAGE (package_id INTEGER PRIMARY KEY, name VARCHAR, version VARCHAR);
CREATE TABLE VERSION (version VARCHAR UNIQUE NOT NULL, build_set VARCHAR NOT NULL,
  build_date TIMESTAMP, release_date TIMESTAMP NOT NULL, description VARCHAR NOT NULL);
CREATE VIEW FILE AS SELECT UPPER(m.sha256) AS sha256, UPPER(m.sha1) AS sha1, UPPER(m.md5) AS md5,
  m.file_name || '.' || m.extension AS file_name, m.bytes AS file_size, p.package_id AS package_id
  FROM METADATA m JOIN PACKAGE_OBJECT p ON p.object_id = m.object_id;
CREATE VIEW PKG AS SELECT package_id, name, version, 0 AS operating_system_id,
  0 AS manufacturer_id, 'English' AS language, 'OS' AS application_type FROM PACKAGE;
CREATE VIEW OS AS SELECT 1 AS operating_system_id, 'Windows' AS name, '10' AS version, 1 AS manufacturer_id;
CREATE VIEW MFG AS SELECT 1 AS manufacturer_id, 'Synthetic' AS name;
"""


def write_minimal(path, names):
    con = sqlite3.connect(path)
    con.executescript(MINIMAL_SCHEMA)
    con.execute("INSERT INTO VERSION VALUES ('2025.03.1', 'modern', NULL, '2025-03-01', 'test')")
    for n in names:   # each twice: NSRL repeats a hash for every package holding the file
        for pkg in (1, 2):
            con.execute("INSERT INTO FILE VALUES (?,?,?,?,?,?,?)",
                        (sha256(n).upper(), sha1(n).upper(), md5(n).upper(), "00000000", n, 1, pkg))
    con.execute("INSERT INTO FILE VALUES ('', 'XYZ', 'nothex', '0', 'bad', 1, 1)")
    con.commit()
    con.close()


def write_full(path, names):
    con = sqlite3.connect(path)
    con.executescript(FULL_SCHEMA)
    con.execute("INSERT INTO VERSION VALUES ('2024.12.1', 'legacy', NULL, '2024-12-01', 'full')")
    con.execute("INSERT INTO PACKAGE VALUES (1, 'Base', '1')")
    for i, n in enumerate(names):
        con.execute("INSERT INTO METADATA VALUES (?,?,?,?,?,?,?,?,?)",
                    (i, i, n, "dll", 1, "0", md5(n), sha1(n), sha256(n)))
        con.execute("INSERT INTO PACKAGE_OBJECT VALUES (?,?,?)", (i, 1, i))
    con.commit()
    con.close()


def test_nsrl_rdsv3_minimal_layout(store, tmp_path):
    (tmp_path / "src").mkdir()
    db = tmp_path / "src" / "RDS_2025.03.1_modern_minimal.db"
    write_minimal(db, ["k1", "k2", "k3"])
    before = sorted(p.name for p in db.parent.iterdir())
    info = store.import_file(db, "nsrl", "ignore")
    assert info.format == "nsrl-rdsv3" and info.version == "2025.03.1"
    assert info.counts == {"md5": 3, "sha1": 3, "sha256": 3}      # duplicates folded
    assert info.rejected == 1                  # one bad row (its md5 and sha1): one record
    assert sorted(p.name for p in db.parent.iterdir()) == before  # read-only: no -wal/-journal
    for alg, f in (("md5", md5), ("sha1", sha1), ("sha256", sha256)):
        hits = store.lookup(alg, [f("k2"), f("nope")])
        assert [h.role for h in hits[0]] == ["ignore"] and hits[1] == []
        assert hits[0][0].severity == 0


def test_nsrl_rdsv3_full_layout(store, tmp_path):
    db = tmp_path / "RDS_2024.12.1_legacy.db"
    write_full(db, ["f1", "f2"])
    info = store.import_file(db, "nsrl-full", "ignore")
    assert info.version == "2024.12.1" and info.counts["sha1"] == 2
    assert store.lookup("md5", [md5("f2")])[0][0].set_name == "nsrl-full"


def test_nsrl_as_alert_is_refused(store, tmp_path):
    db = tmp_path / "nsrl.db"
    write_minimal(db, ["k"])
    with pytest.raises(HashSetError, match="may only be imported with --role ignore"):
        store.import_file(db, "nsrl", "alert")
    assert store.sets() == []


def test_sqlite_that_is_not_nsrl(store, tmp_path):
    db = tmp_path / "other.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (x)")
    con.close()
    with pytest.raises(HashSetError, match="not an NSRL RDSv3"):
        store.import_file(db, "o", "ignore")


def test_nsrl_txt_rds2(store, tmp_path):
    path = tmp_path / "NSRLFile.txt"
    rows = ['"SHA-1","MD5","CRC32","FileName","FileSize","ProductCode","OpSystemCode","SpecialCode"']
    for n in ("t1", "t2"):
        rows.append(f'"{sha1(n).upper()}","{md5(n).upper()}","7516A25F","a, b.dll",33,219181,"362",""')
    rows.append('"garbage"')
    path.write_bytes(("\r\n".join(rows) + "\r\n").encode())
    assert detect(path) == "nsrl-txt"
    info = store.import_file(path, "nsrl2", "ignore")
    assert info.counts == {"sha1": 2, "md5": 2} and info.rejected == 1
    assert store.lookup("sha1", [sha1("t2")])[0][0].role == "ignore"


def test_nsrl_txt_v1_column_order(store, tmp_path):
    path = tmp_path / "NSRLFile.txt"
    path.write_text('"SHA-1","FileName","FileSize","ProductCode","OpSystemCode","MD4","MD5","CRC32","SpecialCode"\n'
                    f'"{sha1("v1").upper()}","x, y.exe",10,1,"WIN","{"0" * 32}","{md5("v1").upper()}","0",""\n')
    info = store.import_file(path, "nsrl-v1", "ignore")
    assert info.counts == {"sha1": 1, "md5": 1}
    assert store.lookup("md5", [md5("v1")])[0][0].set_name == "nsrl-v1"


# ------------------------------------------------------------------ other formats

def test_hashdeep(store, tmp_path):
    path = tmp_path / "known.hashdeep"
    path.write_text("%%%% HASHDEEP-1.0\n%%%% size,md5,sha256,filename\n"
                    "## Invoked from: /evidence\n## $ hashdeep -r /evidence\n##\n"
                    f"1024,{md5('h1')},{sha256('h1')},/evidence/a,b,c.bin\n"
                    f"12,{md5('h2')},{sha256('h2')},/evidence/x.bin\n"
                    "not,a,line\n")
    assert detect(path) == "hashdeep"
    info = store.import_file(path, "hd", "alert")
    assert info.counts == {"md5": 2, "sha256": 2} and info.rejected == 1
    assert store.lookup("sha256", [sha256("h1")])[0][0].role == "alert"


def test_plain_lists_every_shape(store, tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("MD5\n# agency list\n"
                    f"{md5('p1')}\n"
                    f"{md5('p2').upper()}  file two.jpg\n"
                    f"MD5 (three.jpg) = {md5('p3')}\n"
                    f"{sha1('p4')} *four.jpg\n"
                    f"{sha256('p5')},five.jpg\n"
                    "this is not a hash\n"
                    f"{md5('p6')[:-1]}\n")
    assert detect(path) == "plain"
    info = store.import_file(path, "plain", "watch")
    assert info.counts == {"md5": 3, "sha1": 1, "sha256": 1}
    assert info.rejected == 2
    assert store.lookup("md5", [md5("p2")])[0][0].role == "watch"
    assert store.lookup("sha256", [sha256("p5")])[0][0].set_name == "plain"


def test_csv_with_header_columns(store, tmp_path):
    path = tmp_path / "list.csv"
    path.write_text('"md5","sha1","filename"\n'
                    f'"{md5("c1")}","{sha1("c1")}","one.jpg"\n'
                    f'"{md5("c2")}","","two.jpg"\n')
    info = store.import_file(path, "csv", "alert")
    assert info.counts == {"md5": 2, "sha1": 1} and info.rejected == 0


def test_encase_hash_file(store, tmp_path):
    digests = [hashlib.md5(f"e{i}".encode()).digest() for i in range(3)]
    head = bytearray(0x480)
    head[:8] = b"HASH\r\n\xff\x00"
    struct.pack_into("<I", head, 0x10, 3)
    name = "Agency set".encode("utf-16-le")
    head[1032:1032 + len(name)] = name
    path = tmp_path / "agency.hash"
    path.write_bytes(bytes(head) + b"".join(d + b"\x00\x00" for d in digests))
    assert detect(path) == "encase"
    info = store.import_file(path, "encase", "alert")
    assert info.counts == {"md5": 3} and info.rejected == 0
    assert len(store.lookup("md5", [hashlib.md5(b"e2").hexdigest()])[0]) == 1


def random_pdq(rng, n):
    return rng.integers(0, 256, (n, 32), dtype=np.uint8)


def flip(code: np.ndarray, bits: int, rng) -> np.ndarray:
    b = np.unpackbits(code)
    b[rng.choice(len(b), bits, replace=False)] ^= 1
    return np.packbits(b)


def test_pdq_lines_both_forms_and_quality_gate(store, tmp_path):
    rng = np.random.default_rng(3)
    codes = [c.tobytes().hex() for c in random_pdq(rng, 4)]
    path = tmp_path / "alert.pdq.txt"
    path.write_text("hash,quality,filename\n"
                    f"{codes[0]},100,a.jpg\n"
                    f"{codes[1]},49,flat.jpg\n"
                    f"pdq {codes[2].upper()}\n"
                    f"{codes[3]},90\n"
                    "pdq 1234\n")
    assert detect(path) == "pdq"
    info = store.import_file(path, "pdq", "alert")
    assert info.counts == {"pdq": 3} and info.skipped_low_quality == 1 and info.rejected == 1
    near = flip(np.frombuffer(bytes.fromhex(codes[0]), np.uint8), 31, rng).tobytes().hex()
    far = flip(np.frombuffer(bytes.fromhex(codes[0]), np.uint8), 32, rng).tobytes().hex()
    got = store.lookup_perceptual("pdq", [near, far, codes[1], codes[2]])
    assert [(h.value, h.distance) for h in got[0]] == [(codes[0], 31)]
    assert got[1] == [] and got[2] == []
    assert got[3][0].distance == 0 and got[3][0].role == "alert"
    assert store.lookup_perceptual("pdq", [far], max_distance=32)[0][0].distance == 32


def test_phash_list(store, tmp_path):
    path = tmp_path / "alert.phash.txt"
    path.write_text("# phash\nd1c4a0b8f0e0c0f1\nphash ffffffff00000000\nzz\n")
    assert detect(path) == "phash"
    info = store.import_file(path, "ph", "alert")
    assert info.counts == {"phash": 2} and info.rejected == 1
    [hits] = store.lookup_perceptual("phash", ["ffffffff00000003"])
    assert hits[0].distance == 2 and hits[0].value == "ffffffff00000000"


def test_bare_64_hex_is_sha256_unless_told_pdq(store, tmp_path):
    path = tmp_path / "list.txt"
    path.write_text(sha256("s") + "\n")
    assert store.import_file(path, "s", "alert").counts == {"sha256": 1}
    assert store.import_file(path, "p", "alert", format="pdq").counts == {"pdq": 1}


def test_nsrl_sql_delta_gets_advice(store, tmp_path):
    path = tmp_path / "RDS_2025.06.1_modern_delta.sql"
    path.write_text("BEGIN;\nINSERT INTO FILE VALUES ('AA','BB','CC','0','f',1,1);\nCOMMIT;\n")
    with pytest.raises(HashSetError, match="apply it to the matching RDS database"):
        store.import_file(path, "d", "ignore")


@pytest.mark.parametrize("content", [b"hello world\njust text\n", b"\x00\x01binary\xff" * 20, b""])
def test_not_a_hash_set(store, tmp_path, content):
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    with pytest.raises(HashSetError, match="not a hash set"):
        store.import_file(path, "n", "alert")


# ------------------------------------------------------------------ store behaviour

@pytest.fixture
def three_sets(store, tmp_path):
    shared = "shared-file"
    vics = tmp_path / "caid.json"
    vics.write_text(json.dumps({"@odata.context": UK_MEDIA, "value": [
        {"MD5": md5(shared), "Category": 2}, {"MD5": md5("only-caid"), "Category": 1}]}))
    plain = tmp_path / "agency.txt"
    plain.write_text(f"{md5(shared)}\n{md5('only-agency')}\n")
    db = tmp_path / "nsrl.db"
    write_minimal(db, [shared])
    store.import_file(vics, "caid", "alert")
    store.import_file(plain, "agency", "watch")
    store.import_file(db, "nsrl", "ignore")
    return store


def test_lookup_across_sets(three_sets):
    shared, caid_only, agency_only, none = three_sets.lookup(
        "md5", [md5("shared-file"), md5("only-caid"), md5("only-agency"), md5("no")])
    assert hit_sets(shared) == [("agency", "watch", ""), ("caid", "alert", "2"), ("nsrl", "ignore", "")]
    assert hit_sets(caid_only) == [("caid", "alert", "1")]
    assert hit_sets(agency_only) == [("agency", "watch", "")]
    assert none == []
    assert [i.name for i in three_sets.sets()] == ["agency", "caid", "nsrl"]


def test_vectorised_lookup_matches_string_lookup(three_sets):
    queries = [md5("shared-file"), md5("x"), md5("only-caid")]
    digests = np.frombuffer(bytes.fromhex("".join(queries)), np.uint8).reshape(-1, 16)
    found = three_sets.match_digests("md5", digests)
    pairs = sorted((int(q), found.names[s]) for q, s in zip(found.query_index, found.set_index))
    assert pairs == [(0, "agency"), (0, "caid"), (0, "nsrl"), (2, "caid")]


def test_open_sets_restricts_and_checks_names(three_sets):
    view = open_sets(three_sets.root, ["caid"])
    assert hit_sets(view.lookup("md5", [md5("shared-file")])[0]) == [("caid", "alert", "2")]
    with pytest.raises(HashSetError, match="no hash set named missing"):
        open_sets(three_sets.root, ["caid", "missing"])


def test_store_pickles_as_its_root(three_sets):
    three_sets.lookup("md5", [md5("x")])                      # maps the files
    clone = pickle.loads(pickle.dumps(three_sets))
    assert len(pickle.dumps(three_sets)) < 300
    assert hit_sets(clone.lookup("md5", [md5("only-caid")])[0]) == [("caid", "alert", "1")]


def test_delta_adds_entries_and_keeps_provenance(three_sets, tmp_path):
    before = three_sets.info("caid")
    delta = tmp_path / "caid_delta.json"
    delta.write_text(json.dumps({"@odata.context": UK_MEDIA, "value": [
        {"MD5": md5("new-one"), "Category": 3}, {"MD5": "bad"}]}))
    reader = HashSetStore(three_sets.root)
    reader.lookup("md5", [md5("only-caid")])                  # a reader with the old build open
    info = three_sets.add_delta("caid", delta)
    assert info.version == before.version + "+delta1"
    assert info.counts["md5"] == 3 and info.deltas[0]["source_name"] == "caid_delta.json"
    assert info.deltas[0]["rejected"] == 1
    new, old = three_sets.lookup("md5", [md5("new-one"), md5("only-caid")])
    assert (new[0].category_label, old[0].category_label) == ("C", "A")
    assert reader.lookup("md5", [md5("only-caid")])[0][0].set_version == before.version
    with pytest.raises(HashSetError, match="may only go into an ignore set"):
        db = tmp_path / "n2.db"
        write_minimal(db, ["q"])
        three_sets.add_delta("caid", db)


def test_remove(three_sets):
    three_sets.remove("agency")
    assert [i.name for i in three_sets.sets()] == ["caid", "nsrl"]
    assert hit_sets(three_sets.lookup("md5", [md5("only-agency")])[0]) == []
    with pytest.raises(HashSetError, match="no hash set named 'agency'"):
        three_sets.remove("agency")


def test_import_refuses_existing_name_and_bad_role(three_sets, tmp_path):
    path = tmp_path / "l.txt"
    path.write_text(md5("l") + "\n")
    with pytest.raises(HashSetError, match="exists"):
        three_sets.import_file(path, "caid", "alert")
    with pytest.raises(HashSetError, match="role"):
        three_sets.import_file(path, "l", "bad")
    with pytest.raises(HashSetError, match="name"):
        three_sets.import_file(path, "../x", "alert")
    assert three_sets.import_file(path, "caid", "alert", replace=True).counts == {"md5": 1}


def test_resolve_hashsets_imports_files_and_reuses_them(tmp_path):
    root = tmp_path / "case-sets"
    vics = tmp_path / "alert.vics.json"
    vics.write_text(json.dumps({"@odata.context": UK_MEDIA, "value": [{"MD5": md5("r")}]}))
    db = tmp_path / "nsrl.db"
    write_minimal(db, ["r"])
    names = resolve_hashsets(root, [str(vics), str(db)])
    assert names == ["alert", "nsrl"]
    store = HashSetStore(root)
    assert [(i.name, i.role) for i in store.sets()] == [("alert", "alert"), ("nsrl", "ignore")]
    assert resolve_hashsets(root, [str(vics), "nsrl"]) == ["alert", "nsrl"]     # reused, by name
    other = tmp_path / "sub"
    other.mkdir()
    (other / "alert.vics.json").write_text(json.dumps({"value": [{"MD5": md5("s")}]}))
    assert resolve_hashsets(root, [str(other / "alert.vics.json")]) == ["alert-2"]
    with pytest.raises(HashSetError, match="no hash set named 'nope'"):
        resolve_hashsets(root, ["nope"])


# ------------------------------------------------------------------ perceptual index

@pytest.mark.parametrize("kind", ["flat", "multihash"])
def test_perceptual_recall_is_complete(kind):
    rng = np.random.default_rng(11)
    codes = random_pdq(rng, 5000)
    index = perceptual.make_index(codes, kind)
    assert perceptual.index_kind(index) == kind
    targets = rng.choice(len(codes), 200, replace=False)
    queries = np.stack([flip(codes[t], int(rng.integers(0, 32)), rng) for t in targets]
                       + list(random_pdq(rng, 50)))
    lims, dist, ids = perceptual.range_search(index, queries, 31)
    oracle = perceptual.brute_force(codes, queries, 31)
    for i, want in enumerate(oracle):
        assert sorted(ids[lims[i]:lims[i + 1]].tolist()) == sorted(want.tolist())
    for i, t in enumerate(targets):
        assert t in ids[lims[i]:lims[i + 1]]


def test_synth_fleet_sets_match_the_truth(synth_fleet, synth_truth, tmp_path):
    names = resolve_hashsets(tmp_path / "s", [str(synth_fleet / "alert.vics.json"),
                                              str(synth_fleet / "nsrl.db")])
    store = HashSetStore(tmp_path / "s")
    pdq = store.import_file(synth_fleet / "alert.pdq.txt", "alert-pdq", "alert")
    assert pdq.format == "pdq"
    alerts = synth_truth["alerts"]
    hits = store.lookup("md5", [a["md5"] for a in alerts])
    for a, hs in zip(alerts, hits):
        assert [(h.set_name, h.category_label) for h in hs] == [(names[0], a["caid_grade"])]
    near = store.lookup_perceptual("pdq", [a["pdq"] for a in alerts if a["pdq_quality"] >= 50])
    assert all(any(h.distance == 0 for h in hs) for hs in near)


def test_fast_hits_behave_like_dataclass_hits(three_sets):
    from dataclasses import FrozenInstanceError, asdict

    from hashsets.model import Hit

    [[hit]] = three_sets.lookup("md5", [md5("only-caid")])
    same = Hit(**asdict(hit))
    assert hit == same and hash(hit) == hash(same)
    assert pickle.loads(pickle.dumps(hit)) == same
    with pytest.raises(FrozenInstanceError):
        hit.role = "ignore"


def test_vpdq_frame_lines_are_pdq(store, tmp_path):
    # the older column order (frame,quality,hash,seconds): still a vPDQ file, frames as PDQ
    rng = np.random.default_rng(5)
    frames = [c.tobytes().hex() for c in random_pdq(rng, 3)]
    path = tmp_path / "video.vpdq.txt"
    path.write_text(f"0,100,{frames[0]},0.000\n1,20,{frames[1]},0.033\n2,90,{frames[2]},0.066\n")
    assert detect(path) == "vpdq"
    info = store.import_file(path, "vpdq", "alert")
    assert info.counts == {"pdq": 2} and info.skipped_low_quality == 1
    assert store.lookup_perceptual("pdq", [frames[2]])[0][0].distance == 0


def test_failed_import_leaves_no_partial_build(store, tmp_path, monkeypatch):
    from hashsets import build

    path = tmp_path / "l.txt"
    path.write_text(md5("l") + "\n")

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(build, "_write_exact", boom)
    with pytest.raises(OSError, match="disk full"):
        store.import_file(path, "l", "alert")
    assert store.sets() == []
    assert not list((store.root / "l").glob("*b-*"))


def test_chunked_lookup_gives_the_same_answer(three_sets, monkeypatch):
    from hashsets import store as store_mod

    queries = [md5(x) for x in ("shared-file", "a", "only-caid", "b", "only-agency", "c", "d")]
    whole = three_sets.lookup("md5", queries)
    monkeypatch.setattr(store_mod, "LOOKUP_CHUNK", 2)
    assert three_sets.lookup("md5", queries) == whole
    assert sum(map(len, whole)) == 5


# ------------------------------------------------------------------ hostile VICS (issue 19)

def test_vics_huge_numbers_and_wrong_types_are_counted_rejects_not_crashes(tmp_path):
    """A 4,301-digit Category killed the process (SIGSEGV in ijson's C backend); a list where
    a scalar belongs raised 'unhashable type'. Now: counted rejects, the rest imported. Run in a
    subprocess, so a regression cannot take the test runner down with it."""
    good = [{"MediaID": i, "Category": 1, "MD5": md5(f"ok{i}")} for i in range(3)]
    bad = [{"MediaID": 10, "Category": 9, "MD5": md5("x"), "MediaSize": 0},
           {"MediaID": 11, "Category": ["not", "a", "scalar"], "MD5": md5("list")},
           {"MediaID": 12, "Category": 2, "MD5": md5("series"), "Series": "7" * 5000}]
    text = json.dumps({"@odata.context": UK_MEDIA, "value": good + bad})
    # numbers too long for any field: one short of a chunk boundary, and spanning several
    text = text.replace('"MediaSize": 0', '"MediaSize": ' + "9" * 4301)
    text = text.replace('"MediaID": 10,', '"MediaID": ' + "8" * 200_000 + ",")
    path = tmp_path / "hostile.json"
    path.write_text(text)
    run = subprocess.run([sys.executable, "-c", "from cli import run; run()", "hashset", "import",
                          str(path), "--name", "hostile", "--role", "alert", "--store",
                          str(tmp_path / "store"), "--json"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, (run.returncode, run.stderr[-2000:])
    info = json.loads(run.stdout)
    assert info["rejected"] == 1 and "more than 1000 digits" in json.dumps(info)
    store = HashSetStore(tmp_path / "store")
    hits = store.lookup("md5", [md5("ok0"), md5("x"), md5("list"), md5("series")])
    assert [bool(h) for h in hits] == [True, False, True, True]   # the list is kept as text


def test_number_guard_keeps_digits_inside_strings_and_short_numbers():
    import io

    from hashsets.importers.vics import _NumberGuard
    raw = b'{"a": 12, "b": "' + b"5" * 3000 + b'", "c": [' + b"1" * 1500 + b', 3]}'
    out = b""
    g = _NumberGuard(io.BytesIO(raw))
    while chunk := g.read(64):                      # tiny reads: every boundary case
        out += chunk
    doc = json.loads(out)
    assert doc["a"] == 12 and doc["b"] == "5" * 3000
    assert doc["c"] == ["(number too long)", 3]
