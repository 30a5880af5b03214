"""triage.features: one-pass hashing, signature typing, picture features, archives.

Every fixture is generated here with Pillow/numpy (synthetic smooth "photos"), small and fast.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import struct
import tarfile
import zipfile

import numpy as np
import pdqhash
import pytest
from PIL import Image

from triage.features import (Analysis, FeatureOptions, analyse, decode_for_model, hamming_hex,
                             pdq, phash)
from triage.features.hashing import SNIFF_BYTES
from triage.features.pictures import pdq_hex
from triage import records
from triage.records import FileRecord, Provenance

PDQ_NEAR, PDQ_FAR = 31, 64      # PDQ: <=31 is a match; unrelated pictures average ~128
PHASH_NEAR, PHASH_FAR = 10, 16


# --- fixtures --------------------------------------------------------------------------------

def photo(seed: int, w: int = 640, h: int = 480) -> Image.Image:
    """A random multi-octave colour field with grain: energy at every scale, as in a photo,
    so perceptual hashes have structure to hold on to (a too-smooth field makes PDQ fragile)."""
    rng = np.random.default_rng(seed)
    acc = np.zeros((h, w, 3), dtype=np.float32)
    for cells, amp in ((4, 1.0), (12, 0.6), (36, 0.35), (108, 0.2)):
        coarse = rng.uniform(-1, 1, size=(cells * 3 // 4 + 1, cells + 1, 3)).astype(np.float32)
        acc += amp * np.stack([np.asarray(Image.fromarray(coarse[..., c], mode="F").resize(
            (w, h), Image.Resampling.BICUBIC)) for c in range(3)], -1)
    acc = 128 + 60 * acc + rng.normal(0, 3, acc.shape)
    return Image.fromarray(acc.clip(0, 255).astype(np.uint8))


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def record(name: str, data: bytes, path: str | None = None) -> FileRecord:
    return FileRecord(prov=Provenance("dev1", 1048576, 42, path or f"/home/u/{name}"),
                      name=name, size=len(data), allocated=True, fs_type="ext4")


def chunked(data: bytes, size: int = 65536):
    return [data[i:i + size] for i in range(0, len(data), size)] or [b""]


def run(name: str, data: bytes, opts: FeatureOptions = FeatureOptions(), chunk: int = 65536
        ) -> Analysis:
    return analyse(record(name, data), chunked(data, chunk), opts)


def zip_bytes(members: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture(scope="module")
def pic_a() -> Image.Image:
    return photo(1)


@pytest.fixture(scope="module")
def jpeg_a(pic_a) -> bytes:
    return encode(pic_a, "JPEG", quality=90)


# --- hashing and typing ------------------------------------------------------------------------

@pytest.mark.parametrize("chunk", [1, 7, SNIFF_BYTES - 1, 4096, 10**6])
def test_hashes_equal_hashlib_whatever_the_chunking(chunk):
    data = np.random.default_rng(3).bytes(50_000)
    a = run("blob.bin", data, FeatureOptions(sha256=True), chunk=chunk)
    f = a.features
    assert f.md5 == hashlib.md5(data).hexdigest()
    assert f.sha1 == hashlib.sha1(data).hexdigest()
    assert f.sha256 == hashlib.sha256(data).hexdigest()
    assert f.size == len(data) and f.key == a.record.key


def test_sha256_only_on_request_and_empty_chunks_ignored():
    data = b"hello world" * 100
    a = analyse(record("t.txt", data), [b"", data[:5], b"", data[5:]], FeatureOptions())
    assert a.features.sha256 == "" and a.features.md5 == hashlib.md5(data).hexdigest()


def test_empty_file():
    a = analyse(record("empty.jpg", b""), iter(()), FeatureOptions())
    assert a.record.type == "empty" and not a.record.ext_mismatch
    assert a.features.md5 == hashlib.md5(b"").hexdigest() and not a.features.is_picture


def test_content_is_read_exactly_once(jpeg_a):
    pulled = []

    def source():
        for c in chunked(jpeg_a):
            pulled.append(len(c))
            yield c
    a = analyse(record("a.jpg", jpeg_a), source(), FeatureOptions())
    assert sum(pulled) == len(jpeg_a) and a.features.pdq


def test_renamed_jpeg_is_still_a_picture(jpeg_a):
    a = run("holiday.dat", jpeg_a)
    assert a.record.type == "image/jpeg" and a.record.ext_mismatch
    f = a.features
    assert f.is_picture and f.type == "image/jpeg" and f.ext_mismatch
    assert (f.width, f.height) == (640, 480) and len(f.pdq) == 64 and len(f.phash) == 16
    assert run("holiday.jpg", jpeg_a).record.ext_mismatch is False


def test_short_read_is_a_gap_and_never_a_hash(jpeg_a):
    """Content that ends before the file's size: no hash (a partial one would be matched as the
    file's), and a coverage record with the bytes expected and read."""
    rec = record("a.bin", jpeg_a)
    a = analyse(rec, [jpeg_a[:1000]], FeatureOptions())
    f = a.features
    assert f.size == 1000 and "not fully read" in f.error
    assert (f.md5, f.sha1, f.sha256, f.pdq) == ("", "", "", "")
    [gap] = a.coverage
    assert gap.kind == records.FILE_NOT_READ and gap.where == rec.prov
    assert (gap.bytes_expected, gap.bytes_read, gap.bytes_not_examined) == \
        (len(jpeg_a), 1000, len(jpeg_a) - 1000)


def test_read_error_mid_file_keeps_its_reason(jpeg_a):
    """The evidence layer's ShortRead (a truncated image, a bad block) ends the read where the
    bytes stop; the gap says why."""
    from triage.errors import ShortRead

    def chunks():
        yield jpeg_a[:4096]
        raise ShortRead("read error at byte 4,096: sector not found", len(jpeg_a), 4096)

    a = analyse(record("a.jpg", jpeg_a), chunks(), FeatureOptions())
    assert a.features.md5 == "" and "sector not found" in a.features.error
    [gap] = a.coverage
    assert gap.kind == records.FILE_NOT_READ and gap.bytes_read == 4096
    assert "sector not found" in gap.reason


def test_videos_and_ole_files_are_gaps_thumbcache_pictures_are_members(jpeg_a):
    """Nothing decodes video frames or opens OLE files yet: each is a gap. A thumbnail cache's
    pictures are stored whole: each is a member, and the cache leaves no gap (one with no
    picture in it has nothing left to examine); so does a PDF with no image in it."""
    mp4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 1000
    pdf = b"%PDF-1.4\n" + b"x" * 500
    a = run("scan.pdf", pdf)
    assert a.coverage == () and a.members == ()
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 500
    for name, data, kind in (("clip.mp4", mp4, records.VIDEO_FRAMES),
                             ("Thumbs.db", ole, records.EMBEDDED)):
        a = run(name, data)
        assert [(c.kind, c.bytes_not_examined) for c in a.coverage] == [(kind, len(data))], name
        assert a.features.md5 == hashlib.md5(data).hexdigest()       # matched whole all the same
    empty = b"CMMM\x20\x00\x00\x00" + b"\x00" * 500
    a = run("thumbcache_256.db", empty)
    assert a.coverage == () and a.members == ()
    cache = b"CMMM\x20\x00\x00\x00" + b"\x00" * 92 + jpeg_a + b"\x00" * 64
    a = run("thumbcache_256.db", cache)
    [m] = a.members
    assert (m.record.prov.offset, m.record.prov.length) == (100, len(jpeg_a))
    assert m.features.md5 == hashlib.md5(jpeg_a).hexdigest() and m.features.pdq
    assert a.coverage == ()


# --- perceptual hashes -----------------------------------------------------------------------

def test_near_copy_is_near_and_other_picture_is_far(pic_a, jpeg_a):
    copy = encode(pic_a.resize((400, 300), Image.Resampling.BILINEAR), "JPEG", quality=55)
    other = encode(photo(2), "JPEG", quality=90)
    a, b, c = (run("x.jpg", d).features for d in (jpeg_a, copy, other))
    assert a.pdq_quality >= 50
    assert hamming_hex(a.pdq, b.pdq) <= PDQ_NEAR
    assert hamming_hex(a.phash, b.phash) <= PHASH_NEAR
    assert hamming_hex(a.pdq, c.pdq) >= PDQ_FAR
    assert hamming_hex(a.phash, c.phash) >= PHASH_FAR


def test_draft_decode_hashes_match_full_decode(jpeg_a):
    f = run("a.jpg", jpeg_a).features
    full = Image.open(io.BytesIO(jpeg_a)).convert("RGB")
    assert hamming_hex(f.pdq, pdq(full)[0]) <= 16
    assert hamming_hex(f.phash, phash(full)) <= 6


def test_pdq_hex_is_the_reference_word_order():
    # C++ Hash256::format prints w[15] .. w[0] as %04hx
    words = [(0x1111 * i + 0x0F0E) & 0xFFFF for i in range(16)]
    vector = pdqhash.bindings.hash_to_vector(words)
    assert pdq_hex(vector) == "".join(f"{w:04x}" for w in reversed(words))


def test_phash_is_imagehash_dct_phash(pic_a):
    # independent naive form: scipy's unnormalised DCT-II along rows then columns
    grey = np.asarray(pic_a.convert("L").resize((32, 32), Image.Resampling.LANCZOS), float)
    n = np.arange(32)
    dct = np.array([[sum(grey[y, x] * np.cos(np.pi * u * (2 * y + 1) / 64)
                         * np.cos(np.pi * v * (2 * x + 1) / 64) for y in n for x in n)
                     for v in range(8)] for u in range(8)])
    bits = "".join("1" if b else "0" for b in (dct > np.median(dct)).ravel())
    assert phash(pic_a) == f"{int(bits, 2):016x}"


def test_hamming_hex():
    assert hamming_hex("00ff", "0f0f") == 8 and hamming_hex("ab", "ab") == 0
    with pytest.raises(ValueError):
        hamming_hex("00", "000")


# --- picture formats -------------------------------------------------------------------------

@pytest.mark.parametrize("fmt,mime,kw", [
    ("PNG", "image/png", {}), ("WEBP", "image/webp", {"quality": 90}), ("BMP", "image/bmp", {}),
    ("TIFF", "image/tiff", {}), ("GIF", "image/gif", {}),
])
def test_each_picture_format_decodes_to_the_same_hashes(pic_a, jpeg_a, fmt, mime, kw):
    ref = run("a.jpg", jpeg_a).features
    f = run(f"a.{fmt.lower()}", encode(pic_a, fmt, **kw)).features
    assert f.type == mime and not f.error and (f.width, f.height) == (640, 480)
    assert hamming_hex(ref.pdq, f.pdq) <= PDQ_NEAR
    assert hamming_hex(ref.phash, f.phash) <= PHASH_NEAR


def test_gif_uses_the_first_frame(pic_a):
    first, second = pic_a, photo(7)
    buf = io.BytesIO()
    first.save(buf, format="GIF", save_all=True, append_images=[second], duration=100)
    f = run("anim.gif", buf.getvalue()).features
    assert not f.error
    assert hamming_hex(f.phash, phash(first)) <= PHASH_NEAR
    assert hamming_hex(f.phash, phash(second)) >= PHASH_FAR


def test_heic(pic_a, jpeg_a):
    import pillow_heif
    assert pillow_heif.libheif_info().get("HEIF"), "pillow-heif wheel without its HEVC encoder"
    f = run("IMG_0001.HEIC", encode(pic_a, "HEIF", quality=80)).features
    assert f.type == "image/heic" and not f.error and (f.width, f.height) == (640, 480)
    assert hamming_hex(f.pdq, run("a.jpg", jpeg_a).features.pdq) <= PDQ_NEAR


def test_sixteen_bit_png_is_scaled_not_clipped():
    ramp = (np.linspace(0, 65535, 256)[None, :] * np.ones((64, 1))).astype(np.uint16)
    f = run("depth.png", encode(Image.fromarray(ramp), "PNG")).features
    assert not f.error and f.pdq_quality > 0 and (f.width, f.height) == (256, 64)


def test_banner_shaped_picture_is_reduced_before_hashing():
    banner = encode(photo(8, 120, 9000), "PNG")
    f = run("banner.png", banner).features
    assert not f.error and (f.width, f.height) == (120, 9000) and f.pdq and f.phash
    from triage.features.pictures import WORK_MAX, _small
    small = _small(Image.open(io.BytesIO(banner)), 256)
    assert max(small.size) <= 4 * WORK_MAX


def test_exif_make_model_date_gps(pic_a):
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon", "Canon EOS 5D Mark IV"
    exif.get_ifd(0x8769)[0x9003] = "2024:05:06 07:08:09"
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "S", (33.0, 51.0, 54.0), "E", (151.0, 12.0, 36.0)
    f = run("IMG_1.jpg", encode(pic_a, "JPEG", exif=exif)).features
    assert f.exif.make == "Canon" and f.exif.model == "Canon EOS 5D Mark IV"
    assert f.exif.datetime_original == "2024:05:06 07:08:09"
    lat, lon = f.exif.gps
    assert lat == pytest.approx(-33.865) and lon == pytest.approx(151.21)
    assert run("plain.jpg", encode(pic_a, "JPEG")).features.exif is None


def test_thumbnail_is_a_small_jpeg(jpeg_a):
    f = run("a.jpg", jpeg_a, FeatureOptions(thumb_size=96)).features
    thumb = Image.open(io.BytesIO(f.thumbnail))
    assert thumb.format == "JPEG" and max(thumb.size) == 96 and len(f.thumbnail) < 10_000
    assert run("a.jpg", jpeg_a, FeatureOptions(thumbnails=False)).features.thumbnail == b""


def test_truncated_jpeg_is_an_error_not_an_exception(jpeg_a):
    cut = jpeg_a[: len(jpeg_a) // 2]
    f = run("cut.jpg", cut).features
    assert f.is_picture and f.error.startswith("decode error") and f.pdq == ""
    assert f.md5 == hashlib.md5(cut).hexdigest()


def test_garbage_behind_a_jpeg_signature():
    data = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8
    a = run("x.jpg", data)
    assert a.features.error and a.features.md5 == hashlib.md5(data).hexdigest()


def test_decompression_bomb_is_refused_and_recorded():
    bomb = encode(Image.new("1", (3000, 2000)), "PNG")           # 6 Mpx in a few KiB
    a = run("bomb.png", bomb, FeatureOptions(max_image_pixels=1_000_000))
    f = a.features
    assert "decompression bomb" in f.error and f.pdq == "" and (f.width, f.height) == (3000, 2000)
    assert f.md5 == hashlib.md5(bomb).hexdigest()
    assert len(a.coverage) == 1 and "decompression bomb" in a.coverage[0].reason
    assert a.coverage[0].where == a.record.prov and a.coverage[0].kind == records.PICTURE
    assert run("ok.png", bomb).features.error == ""               # under Pillow's default


def test_picture_over_the_byte_limit_is_hashed_only(jpeg_a):
    a = run("big.jpg", jpeg_a, FeatureOptions(picture_max_bytes=10_000))
    f = a.features
    assert f.md5 == hashlib.md5(jpeg_a).hexdigest() and f.pdq == "" and "not decoded" in f.error
    assert a.coverage and "not decoded" in a.coverage[0].reason


def test_pictures_off_hashes_only(jpeg_a):
    f = run("a.jpg", jpeg_a, FeatureOptions(pictures=False)).features
    assert f.is_picture and f.md5 and f.pdq == "" and f.error == ""


def test_model_input_and_decode_for_model(jpeg_a):
    a = run("a.jpg", jpeg_a, FeatureOptions(model_input_size=224))
    assert a.model_input.shape == (224, 224, 3) and a.model_input.dtype == np.uint8
    assert run("a.jpg", jpeg_a).model_input is None
    prepped = run("a.jpg", jpeg_a, FeatureOptions(model_prep=lambda im: np.asarray(im)[:8, :8]))
    assert prepped.model_input.shape == (8, 8, 3)
    def broken(im):
        raise RuntimeError("no such model")
    failed = run("a.jpg", jpeg_a, FeatureOptions(model_prep=broken))
    assert failed.model_input is None and failed.features.pdq
    assert "model input not prepared" in failed.features.error
    img = decode_for_model(jpeg_a, 200)
    assert img.mode == "RGB" and min(img.size) >= 200 and max(img.size) < 640
    assert decode_for_model(b"not a picture", 200) is None


# --- archives --------------------------------------------------------------------------------

def test_zip_members_are_analysed_with_provenance(jpeg_a):
    other = encode(photo(5), "PNG")
    data = zip_bytes({"DCIM/a.jpg": jpeg_a, "b.dat": other, "notes.txt": b"hi" * 100})
    a = run("photos.zip", data)
    assert a.record.type == "application/zip" and a.features.md5 == hashlib.md5(data).hexdigest()
    by = {m.record.prov.members[-1]: m for m in a.members}
    assert set(by) == {"DCIM/a.jpg", "b.dat", "notes.txt"}
    jpg = by["DCIM/a.jpg"]
    assert jpg.record.path == "/home/u/photos.zip" and jpg.record.name == "a.jpg"
    assert jpg.record.prov.members == ("DCIM/a.jpg",)
    assert jpg.record.prov == a.record.prov.member_of("DCIM/a.jpg")
    assert jpg.features.key == jpg.record.key and jpg.features.md5 == hashlib.md5(jpeg_a).hexdigest()
    assert jpg.features.pdq == run("a.jpg", jpeg_a).features.pdq
    assert by["b.dat"].record.type == "image/png" and by["b.dat"].record.ext_mismatch
    assert by["notes.txt"].features.sha1 == hashlib.sha1(b"hi" * 100).hexdigest()
    assert a.coverage == () and jpg.record.prov.inode == 42 and jpg.record.mtime


def test_tar_members(jpeg_a):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("pics/a.jpg")
        info.size, info.mtime = len(jpeg_a), 1_700_000_000
        tf.addfile(info, io.BytesIO(jpeg_a))
    a = run("backup.tar", buf.getvalue())
    assert a.record.type == "application/x-tar"
    (m,) = a.members
    assert m.record.prov.member == "pics/a.jpg" and m.record.mtime == 1_700_000_000
    assert m.features.md5 == hashlib.md5(jpeg_a).hexdigest() and m.features.pdq


def test_tar_gz_opens_as_two_levels(jpeg_a):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("pics/a.jpg")
        info.size = len(jpeg_a)
        tf.addfile(info, io.BytesIO(jpeg_a))
    data = gzip.compress(buf.getvalue(), mtime=0)
    a = run("backup.tgz", data)
    assert a.record.type == "application/gzip" and a.coverage == ()
    (tar,) = a.members
    assert tar.record.prov.member == "backup.tar" and tar.record.type == "application/x-tar"
    (pic,) = tar.members
    assert pic.record.prov.member == "backup.tar!/pics/a.jpg" and pic.features.pdq
    assert tar.record.size == tar.features.size == len(buf.getvalue()) and not tar.features.error
    assert pic.features.md5 == hashlib.md5(jpeg_a).hexdigest()
    assert run("backup.tgz", data, FeatureOptions(archive_gzip=False)).members == ()


def test_concatenated_gzip_reads_as_one_member():
    data = gzip.compress(b"first part\n" * 100) + gzip.compress(b"second part\n" * 100)
    (m,) = run("log.gz", data).members
    whole = b"first part\n" * 100 + b"second part\n" * 100
    assert m.record.prov.member == "log" and m.features.md5 == hashlib.md5(whole).hexdigest()
    assert m.record.size == len(whole) and not m.features.error


def test_gzip_bomb_is_cut_off_by_the_shared_budget():
    data = bytearray(gzip.compress(bytes(8 * 1024 * 1024)))
    data[-4:] = struct.pack("<I", 1000)                 # a forged, harmless-looking ISIZE
    a = run("zeros.gz", bytes(data), FeatureOptions(archive_max_total_bytes=2 * 1024 * 1024))
    (m,) = a.members
    assert m.record.prov.members == ("zeros",) and m.features.md5 == ""
    assert "not fully read" in m.features.error
    (cov,) = a.all_coverage()
    assert "expansion limit" in cov.reason and cov.where == m.record.prov
    assert cov.kind == records.ARCHIVE


@pytest.mark.parametrize("seed", range(4))
def test_random_bytes_with_a_gzip_signature_are_not_a_gzip_bomb(seed):
    import random
    rnd = random.Random(seed)
    body = bytes(rnd.getrandbits(8) for _ in range(4096))
    # deflate and no reserved flags, so only the stream itself can tell; a random trailer
    # declares gigabytes
    data = b"\x1f\x8b\x08\x00" + body + struct.pack("<I", 0xFFFFFFF0)
    a = run("blob.gz", data)
    assert a.members == ()
    (cov,) = a.all_coverage()
    assert cov.reason.startswith("not a valid gzip stream") and "bomb" not in cov.reason
    assert cov.kind == records.ARCHIVE and cov.bytes_not_examined == len(data)
    (cov,) = run("blob.gz", b"\x1f\x8b\x3f" + body).all_coverage()    # not deflate
    assert cov.reason.startswith("not a valid gzip stream: compression method 63")


def test_nested_zips_open_to_the_depth_limit(jpeg_a):
    inner = zip_bytes({"a.jpg": jpeg_a})               # level 4 archive
    for level in (3, 2):
        inner = zip_bytes({f"l{level + 1}.zip": inner})
    data = zip_bytes({"l2.zip": inner})                 # outer.zip is level 1
    a = run("outer.zip", data)
    paths = [x.record.prov.members for x in a.walk()]
    assert paths == [(), ("l2.zip",), ("l2.zip", "l3.zip"), ("l2.zip", "l3.zip", "l4.zip")]
    deepest = list(a.walk())[-1]
    assert deepest.features.md5 and deepest.members == ()
    cov = a.all_coverage()
    assert len(cov) == 1 and "deeper than 3" in cov[0].reason and cov[0].where == deepest.record.prov
    # one level more and the picture is reached
    b = run("outer.zip", data, FeatureOptions(archive_max_depth=4))
    leaf = list(b.walk())[-1]
    assert leaf.record.prov.members == ("l2.zip", "l3.zip", "l4.zip", "a.jpg") and leaf.features.pdq
    assert b.all_coverage() == []


def test_zip_bomb_member_is_refused():
    data = zip_bytes({"readme.txt": b"ok", "zeros.bin": bytes(8 * 1024 * 1024)})
    a = run("bomb.zip", data, FeatureOptions(archive_ratio_min_bytes=1024 * 1024))
    assert [m.record.prov.member for m in a.members] == ["readme.txt"]
    (cov,) = a.coverage
    assert "bomb" in cov.reason and cov.where.members == ("zeros.bin",)
    assert cov.bytes_not_examined == 8 * 1024 * 1024


def test_total_expansion_limit_is_shared_by_nested_archives():
    blob = np.random.default_rng(9).bytes(300_000)     # incompressible: no ratio alarm
    inner = zip_bytes({"x1.bin": blob, "x2.bin": blob})
    data = zip_bytes({"inner.zip": inner, "y.bin": blob})
    a = run("o.zip", data, FeatureOptions(archive_max_total_bytes=1_000_000))
    examined = [x.record.prov.member for x in a.walk() if x.features.md5][1:]
    assert examined == ["inner.zip", "inner.zip!/x1.bin"]
    reasons = [c.reason for c in a.all_coverage()]
    assert len(reasons) == 2 and all("expansion limit" in r for r in reasons)


def test_member_count_limit():
    data = zip_bytes({f"f{i}.txt": str(i).encode() for i in range(10)})
    a = run("many.zip", data, FeatureOptions(archive_max_members=4))
    assert len(a.members) == 4
    (cov,) = a.coverage
    assert "member limit (4)" in cov.reason and "6 of 10" in cov.reason


def test_zip_declaring_too_many_entries_is_not_parsed(monkeypatch):
    from triage.features import archives
    data = zip_bytes({f"f{i}.txt": b"x" for i in range(5)})
    assert archives.zip_entry_count(data) == 5
    monkeypatch.setattr(archives, "ZIP_MAX_ENTRIES", 4)
    a = run("huge.zip", data)
    assert a.members == ()
    (cov,) = a.coverage
    assert "declares 5 entries" in cov.reason and cov.bytes_not_examined == len(data)


def _set_encrypted(data: bytes, name: bytes) -> bytes:
    """Set the 'encrypted' general-purpose bit of member `name` (local and central headers)."""
    buf = bytearray(data)
    for sig, flag_at, name_len_at, name_at in ((b"PK\x03\x04", 6, 26, 30),
                                               (b"PK\x01\x02", 8, 28, 46)):
        pos = buf.find(sig)
        while pos >= 0:
            n = struct.unpack_from("<H", buf, pos + name_len_at)[0]
            if bytes(buf[pos + name_at:pos + name_at + n]) == name:
                struct.pack_into("<H", buf, pos + flag_at,
                                 struct.unpack_from("<H", buf, pos + flag_at)[0] | 1)
            pos = buf.find(sig, pos + 4)
    return bytes(buf)


def test_encrypted_member_becomes_coverage(jpeg_a):
    data = _set_encrypted(zip_bytes({"secret.jpg": jpeg_a, "open.txt": b"x"}), b"secret.jpg")
    a = run("locked.zip", data)
    assert [m.record.prov.member for m in a.members] == ["open.txt"]
    (cov,) = a.coverage
    assert "encrypted" in cov.reason and cov.where.members == ("secret.jpg",)


def test_corrupt_zip_becomes_coverage(jpeg_a):
    data = zip_bytes({"a.jpg": jpeg_a})
    cut = data[: len(data) - 30]                          # central directory damaged
    a = run("broken.zip", cut)
    assert a.features.md5 == hashlib.md5(cut).hexdigest() and a.members == ()
    (cov,) = a.coverage
    assert cov.reason.startswith("corrupt zip archive") and cov.where == a.record.prov


def test_corrupt_member_data_keeps_a_record():
    payload = b"important " * 5000
    data = bytearray(zip_bytes({"doc.txt": payload}, method=zipfile.ZIP_STORED))
    data[data.find(b"important") + 3] ^= 0xFF            # breaks the CRC
    a = run("crc.zip", bytes(data))
    (m,) = a.members
    assert m.features.error.startswith("corrupt archive member") and m.features.md5 == ""
    assert any("CRC" in c.reason for c in a.all_coverage())


def test_archives_off_hashes_only(jpeg_a):
    a = run("p.zip", zip_bytes({"a.jpg": jpeg_a}), FeatureOptions(archives=False))
    assert a.members == () and a.coverage == () and a.features.md5


def test_archive_over_the_byte_limit_is_hashed_not_opened(jpeg_a):
    data = zip_bytes({"a.jpg": jpeg_a})
    a = run("p.zip", data, FeatureOptions(archive_max_bytes=1000))
    assert a.members == () and a.features.md5 == hashlib.md5(data).hexdigest()
    (cov,) = a.coverage
    assert "archive not opened" in cov.reason and cov.bytes_not_examined == len(data)


# --- hostile bytes ---------------------------------------------------------------------------

def test_mutated_pictures_and_archives_never_raise():
    """Seeded random damage (flipped, cut, inserted bytes) to every kind the module decodes:
    each case gives a record with the right hashes, never an exception."""
    import random
    rng = random.Random(1234)
    img = photo(4, 96, 72)
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as tf:
        d = encode(img, "JPEG")
        info = tarfile.TarInfo("x.jpg")
        info.size = len(d)
        tf.addfile(info, io.BytesIO(d))
    seeds = [("jpg", encode(img, "JPEG")), ("png", encode(img, "PNG")), ("gif", encode(img, "GIF")),
             ("webp", encode(img, "WEBP")), ("tif", encode(img, "TIFF")), ("bmp", encode(img, "BMP")),
             ("zip", zip_bytes({"a.jpg": encode(img, "JPEG"), "b.txt": b"hello" * 50})),
             ("gz", gzip.compress(encode(img, "PNG"))), ("tar", tar.getvalue())]
    opts = FeatureOptions(archive_max_total_bytes=8 << 20)
    for case in range(300):
        ext, data = seeds[case % len(seeds)]
        b = bytearray(data)
        for _ in range(rng.randint(1, 6)):
            i = rng.randrange(len(b))
            op = rng.random()
            if op < 0.6:
                b[i] = rng.randrange(256)
            elif op < 0.8:
                del b[i:i + rng.randint(1, 64)]
            else:
                b[i:i] = rng.randbytes(rng.randint(1, 16))
        if rng.random() < 0.2:
            b = b[:rng.randrange(1, len(b))]
        a = run(f"f.{ext}", bytes(b), opts)
        assert a.features.md5 == hashlib.md5(b).hexdigest(), (case, ext)


def test_kept_content_is_copied_before_the_next_chunk_is_asked_for():
    """Chunks may be views into a mapped image, given back (unmapped) as soon as the next one
    is asked for. What is kept for decoding must be copied before then; the hashes are those
    of the bytes."""
    import hashlib

    from triage.features.hashing import read_once
    data = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40

    def mapped(step):
        for i in range(0, len(data), step):
            view = memoryview(data)[i:i + step]
            yield view
            view.release()             # what the evidence layer's release stands for

    for step in (1000, len(data)):      # several chunks, and a single one
        rr = read_once(mapped(step), keep=lambda head: 1 << 20, size_hint=len(data))
        assert rr.data == data and isinstance(rr.data, bytes)
        assert rr.digests.md5 == hashlib.md5(data).hexdigest()


def test_a_decode_error_reads_the_same_in_every_run():
    """PIL names the buffer it could not read with its address; the stored error leaves the
    address out, so the same file gives the same row in every run (and both ways a worker
    stores a batch compare equal)."""
    from triage.features.pictures import analyse_picture
    errors = {analyse_picture(b"\x89PNG\r\n\x1a\n" + bytes(range(64)) * 3, "image/png").error
              for _ in range(3)}
    assert len(errors) == 1
    (error,) = errors
    assert error.startswith("decode error: ") and " at 0x" not in error
