"""Pictures inside other files that carving alone cannot see (triage/features/inside.py): a PDF's
Flate-encoded images, SQLite blobs, and files of unknown type or browser-cache entries carved
for every type. Each picture is a member with provenance back to its bytes; what cannot be
decoded stays a gap with its bytes. Fixtures are generated here (Pillow, sqlite3)."""
from __future__ import annotations

import hashlib
import io
import random
import sqlite3
import struct
import time
import zlib

import numpy as np
import pdqhash
import pytest
from PIL import Image

from triage import records
from triage.features import FeatureOptions, analyse
from triage.features.inside import Undecoded, pdf_images, sqlite_blobs
from triage.records import FileRecord, Provenance
from triage.synth.containers import THUMBCACHE_VERSIONS, pdf_with_images, thumbcache


def picture(seed: int, w: int = 96, h: int = 72) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(h // 8, w // 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def pdq_of(img: Image.Image) -> np.ndarray:
    return pdqhash.compute(np.asarray(img.convert("RGB")))[0]


def record(name: str, data: bytes) -> FileRecord:
    return FileRecord(prov=Provenance("dev1", 1048576, 42, f"/home/u/{name}"), name=name,
                      size=len(data), allocated=True, fs_type="ext4")


def run(name: str, data: bytes, opts: FeatureOptions = FeatureOptions()):
    return analyse(record(name, data), iter([data]), opts)


@pytest.mark.parametrize("enc", ["flate", "flate-png"])
def test_a_pdfs_flate_image_is_decoded_to_its_exact_pixels(enc):
    img = picture(1)
    pdf, [(at, n)] = pdf_with_images([(enc, img.tobytes(), img.width, img.height)])
    a = run("scan.pdf", pdf)
    [m] = a.members
    p = m.record.prov
    # the encoded bytes are where the provenance says, and the filter that decodes them
    assert (p.parent, p.offset, p.length, p.decoded) == (a.record.prov, at, n, "FlateDecode")
    assert p.scope == "embedded" and not p.carved and m.record.path == f"/home/u/scan.pdf@{at}.png"
    raw = zlib.decompress(pdf[at:at + n])
    assert raw == img.tobytes() or enc == "flate-png"
    with Image.open(io.BytesIO(_member_bytes(pdf, m))) as got:
        assert got.tobytes() == img.tobytes()           # the pixels, exactly
    assert m.features.is_picture and m.features.width == img.width and m.features.pdq
    assert a.coverage == ()                              # the PDF is examined whole
    assert a.record.prov.key != p.key


def _member_bytes(pdf: bytes, member) -> bytes:
    # what the scan hashed: the decoded picture; its MD5 is the member's
    from triage.features.inside import Undecoded as U, pdf_images as images
    [item] = [i for i in images(pdf, U({})) if i.offset == member.record.prov.offset]
    assert hashlib.md5(item.data).hexdigest() == member.features.md5
    return item.data


def test_pdf_images_in_other_encodings_stay_gaps_with_their_bytes():
    img = picture(2)
    jpeg = encode(img, "JPEG", quality=85)
    jpx = b"\x00\x00\x00\x0cjP  \r\n\x87\n" + bytes(300)
    pdf, where = pdf_with_images([("dct", jpeg, 96, 72), ("jpx", jpx, 96, 72),
                                  ("flate", img.tobytes(), 96, 72)])
    a = run("mixed.pdf", pdf)
    kinds = sorted((m.record.prov.decoded, m.record.type) for m in a.members)
    assert kinds == [("", "image/jpeg"), ("FlateDecode", "image/png")]
    [gap] = a.coverage
    assert gap.kind == records.EMBEDDED and "JPXDecode images not decoded" in gap.reason
    assert gap.bytes_not_examined == where[1][1]


def test_an_encrypted_pdf_and_inline_images_are_gaps():
    img = picture(3)
    pdf, _ = pdf_with_images([("flate", img.tobytes(), 96, 72)], encrypt=True)
    a = run("locked.pdf", pdf)
    assert a.members == ()
    [gap] = a.coverage
    assert "encrypted" in gap.reason and gap.bytes_not_examined == len(pdf)
    inline = b"\nBI /W 4 /H 4 /CS /RGB /BPC 8 ID " + bytes(48) + b" EI"
    pdf, _ = pdf_with_images([("dct", encode(img, "JPEG"), 96, 72)], content=inline)
    a = run("inline.pdf", pdf)
    [gap] = a.coverage
    assert "inline images" in gap.reason and len(a.members) == 1


def test_a_flate_image_bomb_is_refused_not_decoded():
    d = zlib.compress(bytes(1024))
    pdf = (b"%PDF-1.4\n1 0 obj\n<< /Subtype /Image /Width 60000 /Height 60000 /ColorSpace "
           b"/DeviceRGB /BitsPerComponent 8 /Filter /FlateDecode /Length "
           + str(len(d)).encode() + b" >>\nstream\n" + d + b"\nendstream\nendobj\n")
    t = time.monotonic()
    a = run("bomb.pdf", pdf)
    assert time.monotonic() - t < 2 and a.members == ()
    [gap] = a.coverage
    assert "pixel limit" in gap.reason and gap.bytes_not_examined == len(d)


def test_pictures_in_sqlite_blobs_are_members_matched_exactly(tmp_path):
    jpeg = encode(picture(4), "JPEG", quality=80)
    png = encode(picture(5, 300, 200), "PNG")         # larger than a page: overflow pages
    db = tmp_path / "msgstore.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, text TEXT, thumb BLOB)")
    con.execute("CREATE TABLE \"odd \"\"name\" (media BLOB)")
    con.executemany("INSERT INTO messages (id, text, thumb) VALUES (?, ?, ?)",
                    [(7, "hi", jpeg), (8, "plain", b"not a picture"), (9, "none", None)])
    con.execute("INSERT INTO \"odd \"\"name\" (rowid, media) VALUES (3, ?)", (png,))
    con.commit()
    con.close()
    data = db.read_bytes()
    assert data.find(png) < 0                           # split over pages: carving cannot see it
    a = run("msgstore.db", data)
    got = {m.record.prov.members: m for m in a.members}
    assert set(got) == {("messages.thumb[rowid=7]",), ('odd "name.media[rowid=3]',)}
    m = got[("messages.thumb[rowid=7]",)]
    assert m.features.md5 == hashlib.md5(jpeg).hexdigest() and m.features.pdq
    assert got[('odd "name.media[rowid=3]',)].features.md5 == hashlib.md5(png).hexdigest()
    assert a.coverage == ()


def test_a_damaged_database_is_a_gap_never_an_error():
    a = run("broken.db", b"SQLite format 3\x00" + bytes(range(256)) * 40)
    assert a.members == ()
    [gap] = a.coverage
    assert gap.kind == records.EMBEDDED and "SQLite" in gap.reason


def test_files_of_unknown_type_and_browser_cache_entries_are_carved_for_every_type():
    gif = encode(picture(6), "GIF")
    png = encode(picture(7), "PNG")
    rnd = random.Random(1)
    noise = bytes(rnd.getrandbits(8) for _ in range(70_000))
    blob = b"\x01\x02" + noise[:1001] + gif + noise[:333] + png + noise
    a = run("pagefile.bin", blob)
    found = sorted((m.record.prov.offset, m.record.type) for m in a.members)
    assert found == [(1003, "image/gif"), (1003 + len(gif) + 333, "image/png")]
    # one too large to hold whole is not searched: a gap with its bytes
    big = run("hiberfil.sys", blob, FeatureOptions(carve_unknown_max=len(blob) - 1))
    [gap] = big.coverage
    assert big.members == () and gap.kind == records.EMBEDDED
    assert gap.bytes_not_examined == len(blob) and "file of unknown type not searched" in gap.reason
    # a small unknown file is left alone: no member, no gap
    small = run("small.bin", blob[:4096])
    assert small.members == () and small.coverage == ()
    # Chrome's simple cache: header, URL key, then the body as downloaded
    jpeg = encode(picture(8), "JPEG")
    entry = (b"\x30\x5c\x72\xa7\x1b\x6d\xfb\xfc" + bytes(12) + b"1/0/_dk_https://example.invalid"
             + jpeg + bytes(40))
    a = run("4f2a9b1c0d3e5f60_0", entry)
    [m] = a.members
    assert a.record.type == "application/x-chrome-cache-entry"
    assert m.features.md5 == hashlib.md5(jpeg).hexdigest()


def test_mutated_containers_never_raise_or_hang():
    """Seeded byte flips and cuts of each container the parsers read: a result or a gap."""
    img = picture(9)
    pdf, _ = pdf_with_images([("flate", img.tobytes(), 96, 72),
                              ("flate-png", img.tobytes(), 96, 72)])
    con = sqlite3.connect(":memory:")
    con.execute("CREATE TABLE t (b BLOB)")
    con.execute("INSERT INTO t VALUES (?)", (encode(img, "PNG"),))
    con.commit()
    db = con.serialize()
    con.close()
    from triage.features.inside import ole_streams
    from triage.synth.containers import ole_file
    ole, _ = ole_file({"Catalog": bytes(64), "1": bytes(12) + encode(img, "JPEG")})
    rnd = random.Random(19)
    t0 = time.monotonic()
    for source, parse in ((pdf, pdf_images), (bytes(db), sqlite_blobs), (ole, _streams(ole_streams))):
        for i in range(40):
            data = bytearray(source)
            for _ in range(rnd.randint(1, 12)):
                data[rnd.randrange(len(data))] = rnd.getrandbits(8)
            if i % 5 == 0:
                data = data[:rnd.randrange(len(data))]
            und = Undecoded({})
            items = list(parse(bytes(data), und))
            assert all(it.data for it in items)
            assert und.nbytes >= 0
    assert time.monotonic() - t0 < 60


def _streams(parse):
    """ole_streams yields (name, bytes): as Decoded-like items for the mutation loop."""
    from types import SimpleNamespace

    def items(data, und):
        for name, blob in parse(data, und):
            yield SimpleNamespace(data=blob or b"-", name=name)
    return items


def test_show_says_how_to_reach_a_decoded_pictures_bytes():
    from types import SimpleNamespace

    from triage.views import _icat_hint
    img = picture(10)
    pdf, [(at, n)] = pdf_with_images([("flate", img.tobytes(), 96, 72)])
    [m] = run("scan.pdf", pdf).members
    hint = _icat_hint(SimpleNamespace(record=m.record))
    assert hint == (f"icat -o 2048 IMAGE 42 | dd iflag=skip_bytes,count_bytes bs=1M skip={at} "
                    f"count={n}  (then FlateDecode)")


def test_thumbs_db_pictures_are_found_in_its_streams():
    from triage.synth.containers import ole_file
    jpegs = [encode(picture(20 + i), "JPEG", quality=80) for i in range(3)]
    # XP: a Catalog stream, then one stream per thumbnail: a 12-byte header and the JPEG
    streams = {"Catalog": b"\x10\x00\x07\x00" + bytes(60)}
    for i, j in enumerate(jpegs):
        streams[str(i + 1)[::-1]] = bytes([12, 0, 0, 0, i + 1, 0, 0, 0]) + len(j).to_bytes(4, "little") + j
    data, offsets = ole_file(streams)
    a = run("Thumbs.db", data)
    assert a.record.type == "application/x-ole-storage"
    got = {m.record.prov.parent.members: m for m in a.members}
    assert set(got) == {("1",), ("2",), ("3",)}
    for i, j in enumerate(jpegs):
        m = got[(str(i + 1),)]
        p = m.record.prov
        assert (p.offset, p.length) == (12, len(j)) and p.parent.path == "/home/u/Thumbs.db"
        assert m.features.md5 == hashlib.md5(j).hexdigest() and m.features.pdq
        assert m.record.path == f"/home/u/Thumbs.db!{i + 1}@12.jpg"
        # the stream is stored contiguously here, so the bytes are at its offset in the file
        assert data[offsets[str(i + 1)] + 12:offsets[str(i + 1)] + 12 + len(j)] == j
    assert a.coverage == ()                          # a Thumbs.db holds nothing else


def test_an_office_documents_streams_without_pictures_stay_a_gap():
    from triage.synth.containers import ole_file
    jpeg = encode(picture(30), "JPEG")
    data, _ = ole_file({"WordDocument": b"\xec\xa5" + bytes(6000), "Data": bytes(64) + jpeg})
    a = run("letter.doc", data)
    [m] = a.members
    assert m.features.md5 == hashlib.md5(jpeg).hexdigest()
    [gap] = a.coverage
    assert gap.kind == records.EMBEDDED and "WMF/EMF" in gap.reason
    assert gap.bytes_not_examined == 6002
    broken = run("broken.doc", data[:700])
    [gap] = broken.coverage
    assert broken.members == () and "olefile" in gap.reason


# --- Windows thumbnail caches (thumbcache_*.db) ---------------------------------------------

def _thumbs() -> list[bytes]:
    return [encode(picture(30), "JPEG", quality=80), encode(picture(31, 32, 32), "BMP"),
            encode(picture(32), "PNG")]


@pytest.mark.parametrize("version", THUMBCACHE_VERSIONS)
def test_each_thumbcache_entry_is_a_member_with_its_hash_and_identifier(version):
    """Vista (20), 7 (21), the three Windows 8 layouts (26, 28, 30), 8.1 (31) and 10/11 (32):
    each entry's thumbnail is a member of the cache with the entry's hash and identifier as
    fields of its provenance, and its exact bytes; the "first available" entry that ends the
    file holds nothing and leaves no gap."""
    thumbs = _thumbs()
    cache, entries = thumbcache(thumbs, version=version, free=512)
    # the layout as the format notes give it, read here by hand: entry hash at +8, identifier
    # at +48 (Windows 7) or +56, the data right after the identifier and its padding
    first = struct.unpack_from("<I", cache, 12 if version in (20, 21, 26) else 16)[0]
    assert cache[:4] == b"CMMM" and struct.unpack_from("<I", cache, 4)[0] == version
    pos = first
    for e in entries:
        size, key = struct.unpack_from("<IQ", cache, pos + 4)
        fixed = 48 if version == 21 else 56
        ident, pad, dsize = struct.unpack_from("<III", cache, pos + (24 if version == 20 else 16))
        assert cache[pos:pos + 4] == b"CMMM" and f"{key:016x}" == e.entry_hash
        assert cache[pos + fixed:pos + fixed + ident].decode("utf-16-le") == e.identifier
        assert (pos + fixed + ident + pad, dsize) == (e.offset, e.length)
        pos += size
    a = run("thumbcache_256.db", cache)
    assert a.coverage == ()
    got = [(m.record.prov.offset, m.record.prov.length, m.record.prov.cache_entry_hash,
            m.record.prov.cache_entry_id) for m in a.members]
    assert got == [tuple(e) for e in entries]
    for m, data in zip(a.members, thumbs):
        p = m.record.prov
        assert m.features.md5 == hashlib.md5(data).hexdigest() and m.features.is_picture
        assert p.parent == a.record.prov and p.scope == "embedded" and not p.carved
        assert p.display().endswith(f"(cache entry {p.cache_entry_hash}, identifier "
                                    f"{p.cache_entry_id})")
        assert Provenance.from_dict(p.to_dict()) == p and p.cache_entry_hash in p.key


def test_a_thumbnail_left_in_a_caches_free_space_is_carved_without_an_entry():
    """Removed entries leave their thumbnails in the cache's available space: the bytes
    outside every entry are carved, and what is found there names no entry."""
    jpeg, old = encode(picture(33), "JPEG", quality=80), encode(picture(34), "JPEG", quality=70)
    cache, [e] = thumbcache([jpeg], version=32, free=len(old) + 4096)
    free_at = e.offset + e.length
    cache = cache[:free_at + 64] + old + cache[free_at + 64 + len(old):]
    a = run("thumbcache_256.db", cache)
    assert a.coverage == ()
    assert [(m.record.prov.offset, m.record.prov.cache_entry_hash) for m in a.members] == [
        (e.offset, e.entry_hash), (free_at + 64, "")]
    assert a.members[1].features.md5 == hashlib.md5(old).hexdigest()


def _damage(cache: bytes, second: int, how: str) -> bytes:
    b = bytearray(cache)
    if how == "size past the end":
        b[second + 4:second + 8] = struct.pack("<I", 0xFFFFFFF0)
    elif how == "size under its header":
        b[second + 4:second + 8] = struct.pack("<I", 8)
    elif how == "data over the entry":
        b[second + 24:second + 28] = struct.pack("<I", 0x7FFFFFFF)
    elif how == "identifier over the limit":
        b[second + 16:second + 20] = struct.pack("<I", 0x10000)
    elif how == "signature lost":
        b[second:second + 4] = b"XXXX"
    elif how == "unknown version":
        b[4:8] = struct.pack("<I", 99)
    elif how == "first entry past the end":
        b[12:16] = struct.pack("<I", len(b) + 4096)
    return bytes(b)


@pytest.mark.parametrize("how", ["size past the end", "size under its header",
                                 "data over the entry", "identifier over the limit",
                                 "signature lost", "unknown version", "first entry past the end"])
def test_a_damaged_thumbcache_keeps_what_it_can_and_the_rest_is_a_gap_with_its_bytes(how):
    """Every declared size is checked: entries before the damage keep their hash and
    identifier; from the damage on, nothing is read as an entry (a gap with those bytes), but
    the pictures stored whole there are still carved and examined."""
    thumbs = [encode(picture(40 + i), "JPEG", quality=80) for i in range(3)]
    cache, entries = thumbcache(thumbs, version=21)
    second = entries[0].offset + entries[0].length          # Windows 7: no padding
    bad = _damage(cache, second, how)
    a = run("thumbcache_256.db", bad)
    [gap] = a.coverage
    assert gap.kind == records.EMBEDDED and "thumbnail cache entries not read" in gap.reason
    whole = how in ("unknown version", "first entry past the end")
    assert gap.bytes_not_examined == len(bad) - (24 if how == "unknown version" else
                                                 0 if whole else second)
    assert {m.features.md5 for m in a.members} == {hashlib.md5(t).hexdigest() for t in thumbs}
    named = [m.record.prov.cache_entry_hash for m in a.members if m.record.prov.cache_entry_hash]
    assert named == ([] if whole else [entries[0].entry_hash])


def test_mutated_thumbcaches_never_raise_or_hang():
    """Seeded flips of a cache's header and entry fields, and cuts, in every version: members
    lie inside the file, gaps count no more bytes than it has, nothing raises."""
    rnd = random.Random(14)
    thumbs = _thumbs()
    t0 = time.monotonic()
    for i in range(120):
        version = THUMBCACHE_VERSIONS[i % len(THUMBCACHE_VERSIONS)]
        data = bytearray(thumbcache(thumbs, version=version, free=256)[0])
        for _ in range(rnd.randint(1, 8)):
            at = rnd.randrange(96) if rnd.random() < 0.7 else rnd.randrange(len(data))
            data[at] = rnd.getrandbits(8)
        if i % 4 == 0:
            data = data[:rnd.randrange(len(data))]
        a = run("thumbcache_256.db", bytes(data))
        assert all(0 <= m.record.prov.offset and m.record.prov.offset + m.record.prov.length
                   <= len(data) for m in a.members)
        assert sum(c.bytes_not_examined for c in a.coverage) <= len(data)
    assert time.monotonic() - t0 < 60


def test_show_and_every_export_name_the_entry_escaped(tmp_path):
    """The entry's hash and identifier reach `show` (terminal and JSON), the CSV (two
    columns), the HTML report, DFXML, CASE/UCO and VICS; an identifier is evidence, so a
    hostile one is shown inert on the terminal and escaped in HTML."""
    import csv as csvlib
    import dataclasses
    import json
    import xml.etree.ElementTree as ET

    from click.testing import CliRunner

    from casebuild import add_device, exact, picture as case_picture
    from cli import main
    from triage.exports import export
    from triage.exports.report_html import write_report
    from triage.store import CaseStore
    ident = "\x1b[2J<script>x</script>\u202e"
    rec, feat = case_picture("tc.dd", 1, "/Users/s/AppData/Local/Microsoft/Windows/Explorer/"
                             "thumbcache_256.db")
    prov = Provenance(device_id="tc.dd", volume_offset=rec.prov.volume_offset,
                      path=f"{rec.prov.path}@4096.jpg", parent=rec.prov, offset=4096,
                      length=rec.size, cache_entry_hash="5eed00000000002a", cache_entry_id=ident)
    rec = dataclasses.replace(rec, prov=prov, name="thumbcache_256.db@4096.jpg")
    item = (rec, dataclasses.replace(feat, key=rec.key))
    case = tmp_path / "case"
    with CaseStore(case, create=True) as store:
        add_device(store, None, "tc.dd", items=[item], matches=[exact(item)])
    shown = CliRunner().invoke(main, ["show", "tc.dd", "--case", str(case)])
    assert shown.exit_code == 0, shown.output
    assert "\x1b" not in shown.stdout and "\u202e" not in shown.stdout
    cells = "".join(line.split("│")[2].replace(" ", "")          # the provenance column
                    for line in shown.stdout.splitlines() if line.startswith("│"))
    assert "(cacheentry5eed00000000002a,identifier\\x1b[2J<script>x</script>\\u202e)" in cells
    data = json.loads(CliRunner().invoke(main, ["show", "tc.dd", "--case", str(case),
                                                "--json"]).stdout)
    [f] = data["findings"]
    assert (f["provenance"]["provenance"]["cache_entry_hash"],
            f["provenance"]["provenance"]["cache_entry_id"]) == ("5eed00000000002a", ident)
    with CaseStore(case, create=False) as store:
        for fmt, name in (("csv", "out.csv"), ("dfxml", "out.xml"), ("case", "case.jsonld"),
                          ("vics", "vics.json")):
            export(store, fmt, tmp_path / name)
        write_report(store, tmp_path / "report.html")
    with open(tmp_path / "out.csv", newline="", encoding="utf-8") as fh:
        [row] = list(csvlib.DictReader(fh))
    assert (row["cache_entry_hash"], row["cache_entry_id"]) == ("5eed00000000002a", ident)
    html = (tmp_path / "report.html").read_text()
    assert "cache entry 5eed00000000002a" in html and "<script>x" not in html
    assert "&lt;script&gt;x" in html
    [name] = [e.text for e in ET.parse(tmp_path / "out.xml").getroot().iter()
              if e.tag.endswith("}filename")]
    assert "cache entry 5eed00000000002a" in name
    assert "cache entry 5eed00000000002a" in (tmp_path / "case.jsonld").read_text()
    assert "thumbnail cache entry 5eed00000000002a" in (tmp_path / "vics.json").read_text()
