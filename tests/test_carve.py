"""Carving (triage/carve.py): free runs from each file system's allocation map, checked byte for
byte against Debian TSK's `blkls`; every carved type found at its offset with its exact length
among random bytes; damaged, overlapping and hostile candidates rejected or left as coverage,
never raising or hanging; the whole path from free space to a matched, reachable file on an
ext4 image with a picture that has no name or inode left."""
from __future__ import annotations

import hashlib
import io
import json
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from damaged import _jpeg, mjpeg_avi, rich_ext4
from evidence_images import build_all
from triage import carve, records
from triage.carve import CarveReport, Space, carve as carve_space, validate
from triage.filesystems import free_runs
from triage.device import discover
from triage.errors import EvidenceError
from triage.evidence import open_evidence
from triage.features import analyse
from triage.filesystems import read_chunks, resolver
from triage.records import VolumeRef
from triage.store import CaseStore

SECTOR = 512


# --- free runs: the allocation map, as blkls reads it -----------------------------------------

@pytest.fixture(scope="module")
def images(tmp_path_factory):
    work = tmp_path_factory.mktemp("carve_images")
    return build_all(work)


def _blkls(raw: Path, offset: int) -> bytes:
    return subprocess.run(["blkls", "-o", str(offset // SECTOR), str(raw)], capture_output=True,
                          check=True).stdout


def test_free_runs_are_the_bytes_blkls_gives(images):
    """ext4 (bitmaps per group), FAT12/16/32, NTFS $Bitmap and exFAT's bitmap, raw, split raw
    and E01: the free runs' bytes, in order, are exactly what `blkls` writes."""
    seen = set()
    for img in images.values():
        with open_evidence([str(img.path)]) as ev:
            vols, _ = discover(ev)
            for v in vols:
                fs = resolver(ev).fs(v.offset)
                runs = list(free_runs(ev, v.offset, v.fs_type, fs))
                assert sum(n for _, n in runs) == v.unallocated
                got = b"".join(ev.read(v.offset + s, n) for s, n in runs)
                want = _blkls(img.raw, v.offset)
                assert hashlib.md5(got).digest() == hashlib.md5(want).digest(), (img.name, v.fs_type)
                assert all(a + n <= b for (a, n), (b, _) in zip(runs, runs[1:])), "ordered, apart"
                seen.add(v.fs_type)
    assert {"ext4", "fat12", "fat16", "fat32", "ntfs", "exfat"} <= seen


def test_hfs_plus_free_runs_are_the_bytes_blkls_gives():
    """HFS+'s allocation file (bits from the most significant) read through TSK: the public
    dfvfs image's free runs are what blkls writes, and their sum the volume header's count."""
    raw = Path(__file__).parent / "data" / "dfvfs" / "more" / "hfsplus.raw"
    with open_evidence([str(raw)]) as ev:
        [vol], _ = discover(ev)
        assert vol.fs_type == "hfs+"
        runs = list(free_runs(ev, vol.offset, vol.fs_type, resolver(ev).fs(vol.offset)))
        got = b"".join(ev.read(vol.offset + s, n) for s, n in runs)
        vh = ev.read(1024, 512)
    assert got == _blkls(raw, 0) and len(runs) > 1
    assert len(got) == int.from_bytes(vh[0x28:0x2C], "big") * int.from_bytes(vh[0x30:0x34], "big")
    assert vol.unallocated == len(got)


# --- the carver on a byte space ------------------------------------------------------------------

def _space(data: bytes, fail: tuple[int, int] | None = None) -> Space:
    def read(at: int, n: int) -> bytes:
        if fail and at < fail[1] and at + n > fail[0]:
            raise EvidenceError(f"read error at {at}")
        return data[at:at + n]
    return Space(read, len(data))


def _mapped(data: bytes) -> Space:
    """The bytes as a raw device's are: windows and candidates read as views, not copies."""
    mv = memoryview(data)
    return Space(lambda at, n: mv[at:at + n], len(data), lambda at, n: mv[at:at + n])


def _png(w=40, h=30, color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, "PNG")
    return buf.getvalue()


def _pil(fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img = Image.radial_gradient("L").convert("RGB").resize((60, 45))
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", 8 + len(body)) + kind + body


def _mp4(brand: bytes = b"isom") -> bytes:
    """ftyp, moov (mvhd only) and mdat: the box tree a camera's MP4 has at its top level."""
    mvhd = _box(b"mvhd", bytes(100))
    return (_box(b"ftyp", brand + b"\0\0\2\0" + brand + b"mp41") + _box(b"moov", mvhd)
            + _box(b"mdat", random.Random(5).randbytes(3000)))


def _ebml_el(eid: bytes, body: bytes) -> bytes:
    n = len(body)
    return eid + bytes([0x01]) + n.to_bytes(7, "big") + body     # 8-byte size vint


def _mkv(doctype: bytes = b"matroska") -> bytes:
    head = _ebml_el(b"\x1a\x45\xdf\xa3", _ebml_el(b"\x42\x82", doctype))
    return head + _ebml_el(b"\x18\x53\x80\x67", random.Random(6).randbytes(2000))


_ASF_H = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")
_ASF_D = bytes.fromhex("3626b2758e66cf11a6d900aa0062ce6c")


def _asf() -> bytes:
    header = _ASF_H + struct.pack("<Q", 30 + 24) + struct.pack("<IBB", 0, 1, 2) + bytes(24)
    data = _ASF_D + struct.pack("<Q", 24 + 1000) + random.Random(7).randbytes(1000)
    return header + data


def _flv() -> bytes:
    out = b"FLV\x01\x01" + struct.pack(">I", 9) + struct.pack(">I", 0)
    for i in range(3):
        body = random.Random(i).randbytes(200 + i)
        out += bytes([9]) + len(body).to_bytes(3, "big") + bytes(4) + bytes(3) + body
        out += struct.pack(">I", 11 + len(body))
    return out


def _webp() -> bytes:
    return _pil("WEBP", quality=80)


def samples() -> dict[str, bytes]:
    avi, _ = mjpeg_avi([_jpeg(31, False, 64, 48), _jpeg(32, False, 64, 48)], 64, 48)
    return {"jpg": _jpeg(30, True, 120, 90), "png": _png(), "gif": _pil("GIF"),
            "bmp": _pil("BMP"), "webp": _webp(), "avi": avi, "mp4": _mp4(), "mov": _mp4(b"qt  "),
            "heic": _box(b"ftyp", b"heic\0\0\0\0mif1heic") + _box(b"meta", bytes(200)),
            "mkv": _mkv(), "webm": _mkv(b"webm"), "wmv": _asf(), "flv": _flv(),
            "tif": _pil("TIFF", compression="tiff_lzw")}


def _disk(items: list[bytes], seed: int = 1, gap: int = 3) -> tuple[bytes, list[int]]:
    """Random bytes with each item at a sector start, `gap` random sectors between them."""
    rng = random.Random(seed)
    out = bytearray(rng.randbytes(SECTOR * 4))
    offsets = []
    for data in items:
        offsets.append(len(out))
        out += data
        out += rng.randbytes(-len(out) % SECTOR + gap * SECTOR)
    return bytes(out), offsets


def test_every_type_is_carved_at_its_offset_with_its_own_length():
    items = samples()
    data, offsets = _disk(list(items.values()))
    report = CarveReport()
    got = {c.offset: c for c in carve_space(_space(data), [(0, len(data))], report)}
    for (ext, blob), off in zip(items.items(), offsets):
        assert off in got, ext
        assert (got[off].length, got[off].ext) == (len(blob), ext), (ext, got[off])
        assert data[off:off + got[off].length] == blob
    assert len(got) == len(items), "random bytes carved as something"
    assert report.bytes_scanned == len(data) // SECTOR * SECTOR and not report.left
    assert list(carve_space(_mapped(data), [(0, len(data))])) == list(got.values())


def test_fragmented_free_space_is_carved_as_each_run_alone_would_be():
    """Many small free runs share one window (one view, one header test), but only headers
    inside a run are candidates: a picture in the allocated bytes between runs is not carved,
    each picture in a run is, and an unreadable stretch between runs costs nothing free."""
    jpg = _jpeg(40, True, 64, 48)
    pieces = -(-len(jpg) // 4096) * 4096          # a run holds one picture, in whole blocks
    rng = random.Random(40)
    data, runs, inside, between = bytearray(), [], [], []
    for i in range(40):
        at = len(data)
        blob = jpg if i % 3 == 0 else rng.randbytes(64)
        data += blob + rng.randbytes(pieces - len(blob))
        if i % 3 == 0:
            (inside if i % 2 == 0 else between).append(at)
        if i % 2 == 0:
            runs.append((at, pieces))             # free; the odd pieces are allocated
    data = bytes(data)
    report, each = CarveReport(), CarveReport()
    whole = [(c.offset, c.length) for c in carve_space(_space(data), runs, report)]
    alone = [(c.offset, c.length) for r in runs for c in carve_space(_space(data), [r], each)]
    assert whole == alone == [(at, len(jpg)) for at in inside] and between
    assert report.candidates == each.candidates      # no header between runs is tried
    bad = (runs[3][0] + runs[3][1], runs[4][0])   # the allocated piece between two runs
    report = CarveReport()
    assert [c.offset for c in carve_space(_space(data, fail=bad), runs, report)] == inside
    assert report.left == [] and report.bytes_scanned == sum(n for _, n in runs)
    report = CarveReport()
    assert list(carve_space(_space(data), runs, report, deadline=0.0)) == []
    assert [(a, n) for a, n, _, _ in report.left] == runs


def test_a_false_candidate_in_random_fill_costs_a_small_read():
    """Free space of used disks is mostly old random-looking bytes, where headers occur by
    chance: each is rejected after reading a little, not a full read-ahead (on E01 and the
    other containers that are read, not mapped, every byte read is a copy or a decompression)."""
    rng = random.Random(77)
    data = bytearray(rng.randbytes(4 << 20))
    heads = [b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", b"RIFF", b"\0\0\0\x18ftyp", b"BM"]
    for i, at in enumerate(range(0, len(data), 256 * SECTOR)):
        data[at:at + len(heads[i % 5])] = heads[i % 5]
    data = bytes(data)
    wanted = []

    def read(at: int, n: int) -> bytes:
        wanted.append(n)
        return data[at:at + n]
    report = CarveReport()
    carve.WINDOW, saved = 1 << 20, carve.WINDOW
    try:
        assert list(carve_space(Space(read, len(data)), [(0, len(data))], report)) == []
    finally:
        carve.WINDOW = saved
    assert report.candidates >= len(data) // (256 * SECTOR) and report.rejected == report.candidates
    # the windows read the space once; all the candidates together add a quarter of that at
    # most (a full read-ahead each would be 8 times it)
    assert sum(wanted) - len(data) <= len(data) // 4


def test_an_item_ends_with_the_free_run_it_starts_in():
    """A file that runs past its free run continues in blocks another file owns (or in another
    fragment): it is not carved from the wrong bytes."""
    jpg = _jpeg(33, True, 200, 150)
    data, [off] = _disk([jpg])
    assert [c.length for c in carve_space(_space(data), [(0, len(data))])] == [len(jpg)]
    assert list(carve_space(_space(data), [(0, off + len(jpg) - 100)])) == []


# --- damaged and hostile candidates ------------------------------------------------------------

def _bomb_jpeg() -> bytes:
    """A small valid JPEG whose frame header declares 60000 x 60000 pixels."""
    jpg = bytearray(_jpeg(34, False, 64, 48))
    sof = jpg.index(b"\xff\xc0")
    jpg[sof + 5:sof + 9] = struct.pack(">HH", 60000, 60000)
    return bytes(jpg)


def test_damaged_candidates_are_rejected_and_the_good_one_beside_them_found():
    good = _jpeg(35, True, 100, 80)
    png = bytearray(_png())
    png[40] ^= 0xFF                                  # IDAT no longer matches its CRC
    truncated = good[:len(good) // 2]                # no EOI before random bytes
    mp4_open = _box(b"ftyp", b"isom\0\0\0\0isom") + b"\0\0\0\0mdat" + bytes(1000)  # mdat "to the end"
    mkv_live = _ebml_el(b"\x1a\x45\xdf\xa3", _ebml_el(b"\x42\x82", b"webm")) + \
        b"\x18\x53\x80\x67\x01\xff\xff\xff\xff\xff\xff\xff" + bytes(500)    # unknown size
    riff_huge = b"RIFF" + struct.pack("<I", 0x7FFFFFF0) + b"WEBPVP8 " + bytes(600)
    gif_loop = b"GIF89a" + bytes(7) + b"\x21\xf9" + b"\x04" * 4000    # never reaches a trailer
    data, offsets = _disk([bytes(png), truncated, mp4_open, mkv_live, riff_huge, gif_loop, good])
    found = list(carve_space(_space(data), [(0, len(data))]))
    assert [(c.offset, c.length) for c in found] == [(offsets[-1], len(good))]


def test_overlapping_candidates_give_the_outer_item_once():
    """A JPEG whose data holds another JPEG header at a sector start (an embedded thumbnail,
    a file copied into another): one item, the outer one; the inner header is not re-carved."""
    inner = _jpeg(36, False, 48, 32)
    outer = bytearray(_jpeg(37, True, 320, 240))
    app = b"\xff\xe1" + struct.pack(">H", 2 + 1024 + len(inner)) + bytes(1024 - 4) + inner
    pad = (-(2 + 4) % SECTOR)       # the inner header lands on a sector start
    app = b"\xff\xe1" + struct.pack(">H", 2 + pad + len(inner)) + bytes(pad) + inner
    outer[2:2] = app
    data, [off] = _disk([bytes(outer)])
    assert data[off + 6 + pad:off + 9 + pad] == b"\xff\xd8\xff"
    found = list(carve_space(_space(data), [(0, len(data))]))
    assert [(c.offset, c.length) for c in found] == [(off, len(outer))]


def test_a_jpeg_bomb_is_carved_but_never_decoded_whole(tmp_path):
    """60000 x 60000 declared: structurally a JPEG, so carved; the decoder refuses it and the
    refusal is a coverage record, not an exception or a 10 GB allocation."""
    bomb = _bomb_jpeg()
    data, [off] = _disk([bomb])
    [item] = carve_space(_space(data), [(0, len(data))])
    assert (item.offset, item.length) == (off, len(bomb))
    vol = VolumeRef("d", 0, 0, len(data), "test", fs_type="ext4")
    rec = carve.carved_record(vol, item)
    result = analyse(rec, iter([data[off:off + item.length]]))
    assert result.features.md5 == hashlib.md5(bomb).hexdigest()
    assert not result.features.width and result.features.error
    assert [c.kind for c in result.coverage] == [records.PICTURE]


def test_a_read_error_and_a_time_limit_leave_gaps_with_their_bytes():
    items = [_jpeg(38, True, 80, 60), _jpeg(39, False, 80, 60)]
    data, offsets = _disk(items, gap=40)
    carve.WINDOW, saved = 16 * SECTOR, carve.WINDOW
    try:
        report = CarveReport()
        bad = (offsets[1] - 2 * SECTOR, offsets[1] + 4 * SECTOR)
        found = list(carve_space(_space(data, fail=bad), [(0, len(data))], report))
        assert [c.offset for c in found] == [offsets[0]]
        assert report.left and all(why.startswith("read error") and kind == records.MEDIA_DAMAGED
                                   for _, _, why, kind in report.left)
        lost = sum(n for _, n, _, _ in report.left)
        assert 0 < lost < len(data) and report.bytes_scanned + lost == len(data) // SECTOR * SECTOR
        report = CarveReport()
        assert list(carve_space(_space(data), [(0, 4096), (8192, 4096)], report, deadline=0.0)) == []
        assert [(s, n, k) for s, n, _, k in report.left] == [
            (0, 4096, records.SCAN_INCOMPLETE), (8192, 4096, records.SCAN_INCOMPLETE)]
    finally:
        carve.WINDOW = saved


def test_seeded_fuzz_never_raises_or_hangs():
    """Valid items cut, bit-flipped and spliced at random into random bytes with headers
    sprinkled on sector starts: every candidate is validated or rejected, nothing raises, and
    whatever is carved lies inside the run with bytes that start with its own header."""
    rng = random.Random(1414)
    pool = list(samples().values()) + [_bomb_jpeg()]
    heads = [b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM", b"RIFF", b"\0\0\0\x18ftyp",
             b"\x1a\x45\xdf\xa3", _ASF_H, b"FLV\x01"]
    for round_ in range(60):
        blobs = []
        for _ in range(rng.randrange(1, 6)):
            b = bytearray(rng.choice(pool))
            for _ in range(rng.randrange(0, 6)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            if rng.random() < 0.4:
                b = b[:rng.randrange(1, len(b))]
            blobs.append(bytes(b))
        data = bytearray(_disk(blobs, seed=round_, gap=rng.randrange(0, 3))[0])
        for _ in range(20):
            at = rng.randrange(len(data) // SECTOR) * SECTOR
            h = rng.choice(heads)
            data[at:at + len(h)] = h
        data = bytes(data)
        end = rng.randrange(len(data) // 2, len(data) + 1)
        found = list(carve_space(_space(data), [(0, end)]))
        for c in found:
            assert 0 <= c.offset and c.offset + c.length <= end and c.length > 0
            assert validate(_space(data), c.offset, end) == c
        assert list(carve_space(_mapped(data), [(0, end)])) == found
        # the same bytes as the content of a file (pictures inside it, at any offset)
        inside = list(carve.embedded(data[:end]))
        assert all(0 <= c.offset < c.offset + c.length <= end for c in inside)
        assert all(a.offset + a.length <= b.offset for a, b in zip(inside, inside[1:]))


# --- free space to a matched, reachable file ---------------------------------------------------

@pytest.fixture(scope="module")
def rich(tmp_path_factory):
    return rich_ext4(tmp_path_factory.mktemp("rich"))


def test_free_space_picture_is_carved_and_read_back_exactly(rich):
    """rich_ext4's deleted JPEG lies in free space. Carving finds it without any metadata, the
    record reads back through the evidence layer, and dd at the recorded offset and length
    gives the same bytes."""
    with open_evidence([str(rich.image)]) as ev:
        [vol], _ = discover(ev)
        problems, done = [], []
        found = list(carve.carve_volume(ev, vol, problems, done))
        assert done == [True] and problems == []
        [rec] = found
        assert rec.type == "image/jpeg" and not rec.allocated
        assert rec.path == f"$Unallocated/{rec.prov.offset}.jpg"
        assert rec.prov.parent == vol.where and rec.prov.carved and rec.prov.scope == "embedded"
        got = b"".join(bytes(c) for c in read_chunks(ev, rec.prov))
    assert got == rich.deleted_jpeg
    dd = subprocess.run(["dd", f"if={rich.image}", "iflag=skip_bytes,count_bytes", "bs=1M",
                         f"skip={vol.offset + rec.prov.offset}", f"count={rec.size}"],
                        capture_output=True, check=True).stdout
    assert dd == rich.deleted_jpeg


def test_a_file_system_whose_map_is_not_read_keeps_its_gap(rich):
    """No allocation-map reader (UFS here, by pretending): nothing is carved, `done` stays
    empty, so the scan keeps the volume's 'not carved' gap."""
    with open_evidence([str(rich.image)]) as ev:
        [vol], _ = discover(ev)
        problems, done = [], []
        odd = VolumeRef(vol.device_id, vol.index, vol.offset, vol.length, "x", fs_type="ufs")
        assert list(carve.carve_volume(ev, odd, problems, done)) == [] and done == []


def test_unpartitioned_space_is_carved_and_its_gap_goes(rich, tmp_path):
    """An MBR disk: a PNG in the sectors before the first partition and a JPEG after the last
    one. The scan carves both as `$Unpartitioned/<media offset>.<ext>` with the device as
    parent, matches the JPEG (an alert stand-in in this test's alert set), and leaves neither
    an unpartitioned nor an unallocated gap behind."""
    from evidence_images import wrap
    disk = tmp_path / "disk.raw"
    [part] = wrap(disk, [(rich.image, "83")], "mbr")
    png, jpg = _png(33, 22, (10, 120, 240)), _jpeg(40, True, 160, 120)
    size = disk.stat().st_size
    at_png, at_jpg = 64 * SECTOR, size - 512 * SECTOR
    with open(disk, "r+b") as fh:
        fh.seek(at_png)
        fh.write(png)
        fh.seek(at_jpg)
        fh.write(jpg)
    alert = tmp_path / "alert.vics.json"
    alert.write_text(json.dumps({"@odata.context": "http://github.com/VICSDATAMODEL/ProjectVic/"
                                 "DataModels/2.0.xml/UK/$metadata#Media",
                                 "value": [{"MediaID": 1, "Category": 1,
                                            "MD5": hashlib.md5(jpg).hexdigest()}]}))
    case = tmp_path / "case"
    run = subprocess.run([str(Path(sys.executable).parent / "triage"), "scan", "--case", str(case),
                          "--mode", "full", "--hashset", str(alert), "--json", str(disk)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    with CaseStore(case, create=False) as store:
        [dev] = store.devices()
        files = {r.path: (r, f) for r, f in store.files(dev["id"])}
        kinds = {c.kind for c in store.coverage(dev["id"])}
        matched = {m.key for m in store.matches(dev["id"]) if m.role == "alert"}
    for at, blob, ext in ((at_png, png, "png"), (at_jpg, jpg, "jpg")):
        rec, feat = files[f"$Unpartitioned/{at}.{ext}"]
        assert rec.prov.parent.scope == "device" and rec.prov.volume_offset is None
        assert (rec.prov.offset, rec.size, feat.md5) == (at, len(blob), hashlib.md5(blob).hexdigest())
    assert files[f"$Unpartitioned/{at_jpg}.jpg"][0].key in matched
    for fmt in ("vics", "case", "csv", "dfxml"):       # content with no volume exports too
        out = tmp_path / f"export.{fmt}"
        r = subprocess.run([str(Path(sys.executable).parent / "triage"), "export", "--case",
                            str(case), "--format", fmt, "--out", str(out)], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        assert f"$Unpartitioned/{at_jpg}.jpg" in out.read_text(), fmt
    assert not kinds & {records.UNPARTITIONED, records.UNALLOCATED}, kinds
    assert part == 1 << 20


# --- pictures inside other files -----------------------------------------------------------------

def _content(image: Path, path: str) -> tuple:
    with open_evidence([str(image)]) as ev:
        [vol], _ = discover(ev)
        from triage.filesystems import walk
        rec = next(r for r in walk(ev, vol) if r.path == path)
        return rec, b"".join(bytes(c) for c in read_chunks(ev, rec.prov))


def test_thumbnail_cache_and_pdf_pictures_are_examined_with_their_ranges(rich):
    """Each JPEG in the thumbcache_256.db and the PDF's DCTDecode page is a member with the
    file as parent and its byte range: hashed, decoded, perceptually hashed. Neither leaves a
    gap: every image of the PDF is examined (Flate ones in tests/test_inside.py)."""
    for role in ("thumbcache", "pdf"):
        path = rich.files[role][0]
        rec, data = _content(rich.image, path)
        result = analyse(rec, iter([data]))
        got = [(m.record.prov.offset, m.record.prov.length) for m in result.members]
        assert got == rich.embedded[path], role
        for m in result.members:
            p = m.record.prov
            assert p.parent == rec.prov and p.scope == "embedded" and not p.carved
            assert m.record.path == f"{path}@{p.offset}.jpg"
            assert m.features.md5 == hashlib.md5(data[p.offset:p.offset + p.length]).hexdigest()
            assert m.features.is_picture and m.features.pdq and m.features.width
        assert [c for c in result.coverage if c.kind == records.EMBEDDED] == []


def test_an_exif_thumbnail_is_examined_as_a_member():
    """A JPEG whose EXIF (APP1, TIFF IFD1) holds a thumbnail of another picture: the thumbnail
    is found at its offset, decoded and hashed as a member of the JPEG."""
    thumb = _jpeg(41, True, 160, 120)
    main_jpg = _jpeg(42, False, 320, 240)
    tiff = b"II*\0" + struct.pack("<I", 8) + struct.pack("<H", 0) + struct.pack("<I", 14)
    ifd1 = struct.pack("<H", 2) + struct.pack("<HHII", 0x0201, 4, 1, 14 + 2 + 24 + 4) + \
        struct.pack("<HHII", 0x0202, 4, 1, len(thumb)) + struct.pack("<I", 0)
    exif = b"Exif\0\0" + tiff + ifd1 + thumb
    app1 = b"\xff\xe1" + struct.pack(">H", 2 + len(exif)) + exif
    data = main_jpg[:2] + app1 + main_jpg[2:]
    at = data.index(thumb)
    from triage.records import FileRecord, Provenance
    rec = FileRecord(prov=Provenance("d", 0, inode=12, path="/DCIM/IMG_0001.JPG"),
                     name="IMG_0001.JPG", size=len(data), allocated=True, fs_type="ext4")
    result = analyse(rec, iter([data]))
    assert result.features.is_picture and result.features.width == 320
    [m] = result.members
    assert (m.record.prov.offset, m.record.prov.length) == (at, len(thumb))
    assert m.features.md5 == hashlib.md5(thumb).hexdigest() and m.features.width == 160


def test_no_carve_leaves_free_space_a_gap_with_its_bytes(rich, tmp_path):
    """`scan --no-carve`: nothing is carved, and the volume's free space stays the gap that
    says so, with blkls's byte count."""
    case = tmp_path / "case"
    run = subprocess.run([str(Path(sys.executable).parent / "triage"), "scan", "--case", str(case),
                          "--mode", "full", "--no-carve", "--json", str(rich.image)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    with CaseStore(case, create=False) as store:
        [dev] = store.devices()
        [free] = [c for c in store.coverage(dev["id"]) if c.kind == records.UNALLOCATED]
        assert free.bytes_not_examined == rich.unallocated
        assert not [r for r, _ in store.files(dev["id"]) if r.prov.carved]


def test_a_tiff_ends_after_the_last_byte_its_directories_point_at():
    """Big-endian too; a directory chain that loops, or points outside the space, is no item
    or ends where the sound part ends."""
    img = Image.radial_gradient("L").resize((50, 40))
    buf = io.BytesIO()
    img.save(buf, "TIFF")
    le = buf.getvalue()
    # the same picture written big-endian by hand: header, strip, then one directory
    pixels = img.tobytes()
    entries = [(256, 3, 1, 50), (257, 3, 1, 40), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 8), (277, 3, 1, 1), (278, 3, 1, 40), (279, 4, 1, len(pixels))]
    ifd_at = 8 + len(pixels)
    be = b"MM\x00*" + struct.pack(">I", ifd_at) + pixels + struct.pack(">H", len(entries))
    for tag, typ, n, v in entries:
        val = struct.pack(">HH", v, 0) if typ == 3 else struct.pack(">I", v)
        be += struct.pack(">HHI", tag, typ, n) + val
    be += struct.pack(">I", 0)
    with Image.open(io.BytesIO(be)) as check:
        assert check.tobytes() == pixels
    for blob in (le, be):
        data, [off] = _disk([blob])
        [c] = list(carve_space(_space(data), [(0, len(data))]))
        assert (c.offset, c.length, c.ext) == (off, len(blob), "tif")
    loop = bytearray(be)
    loop[-4:] = struct.pack(">I", ifd_at)              # the directory points at itself
    data, [off] = _disk([bytes(loop)])
    [c] = list(carve_space(_space(data), [(0, len(data))]))
    assert c.length == len(be)                          # ends with the sound directory
    far = bytearray(be)
    far[4:8] = struct.pack(">I", 1 << 30)               # the first directory is outside
    data, _ = _disk([bytes(far)])
    assert list(carve_space(_space(data), [(0, len(data))])) == []
