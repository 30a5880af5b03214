"""The lean path for many small files (issue 19, "a million files"): each shortcut gives
exactly what the general path gives."""
from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest

from triage.records import Provenance


def _general_key(prov: Provenance) -> str:
    return json.dumps(prov._key_parts(), separators=(",", ":"), ensure_ascii=False)


def _hostile_text(rng: random.Random) -> str:
    alphabet = ["a", "/", "\\", '"', "\x00", "\x1b", "\n", "\u202e", "\ud800", "\udfff", "é",
                "\U0001f600", " ", "'", "\x7f", "\u2028"]
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))


def test_provenance_key_fast_path_is_the_json_key():
    from triage.records import file_keys
    rng = random.Random(19)
    for _ in range(3000):
        prov = Provenance(device_id=_hostile_text(rng),
                          volume_offset=rng.choice([None, 0, 1 << 40, -1, 512]),
                          inode=rng.choice([None, 0, 7, (1 << 63) + 5]),
                          path=_hostile_text(rng), volume_index=rng.choice([None, 3]),
                          fs_type=rng.choice(["", "ext4"]))
        assert prov.key == _general_key(prov)
        json.loads(prov.key)
        # the workers' key of a volume's plain files (its device and offset written once)
        assert file_keys(prov.device_id, prov.volume_offset)(prov.inode, prov.path) == prov.key


def test_provenance_key_with_any_extra_field_keeps_the_general_form():
    base = Provenance(device_id="d", volume_offset=0, inode=5, path="/a")
    variants = [dict(ads="s"), dict(attr_type=128, attr_id=3), dict(members=("m",)),
                dict(snapshot="vss1"), dict(parent=base, offset=3, length=4), dict(length=9),
                dict(decoded="FlateDecode"), dict(frame=2, frame_time=0.5)]
    for kw in variants:
        prov = Provenance(device_id="d", volume_offset=0, inode=5, path="/a", **kw)
        assert prov.key == _general_key(prov)
        assert prov.key != base.key
    # a bool is no plain number: json writes it "true", so it takes the general path
    odd = Provenance(device_id="d", volume_offset=True, inode=False, path="/a")
    assert odd.key == _general_key(odd) == '["d",true,false,"/a"]'


def _rec(path: str, size: int, inode: int, type_: str = ""):
    from triage.records import FileRecord
    return FileRecord(prov=Provenance(device_id="d", volume_offset=0, inode=inode, path=path),
                      name=path.rsplit("/", 1)[-1], size=size, allocated=True, fs_type="ext4",
                      type=type_)


def test_spooled_batches_travel_packed_and_arrive_as_cut():
    """A batch read back from the planner's spool is not unpacked there; pickled (as Ray does)
    it is one byte string, and the worker gets the records, sizes and counts that were cut."""
    import pickle

    from workers.plan import BatchSpec, batch_counts, cut_batches, plan_volume, tier_of
    recs = [_rec(f"/srv/d{i % 7}/f{i:05d}.bin", 200 + 37 * i, i,
                 "video/mp4" if i % 50 == 0 else "") for i in range(1300)]
    recs.append(_rec("/srv/huge.bin", 7 * 10**16, 99_999))       # hostile size, bounded
    specs = [o for o in plan_volume(iter(recs), "d", 0, max_files=64, max_bytes=1 << 20,
                                    volume_length=1 << 30) if isinstance(o, BatchSpec)]
    assert specs and all(s._records is None for s in specs)         # never unpacked here
    from workers.plan import OTHER_TIER_FACTOR
    want = [b for t in (1, 3) for b in cut_batches([r for r in recs if tier_of(r) == t],
                                                   64 if t == 1 else 64 * OTHER_TIER_FACTOR,
                                                   1 << 20, volume_length=1 << 30)]
    assert {s.tier for s in specs} == {1, 3} and len(specs) == len(want)
    specs.sort(key=lambda s: (s.tier, s.batch_id))
    for spec, batch in zip(specs, want):
        header = spec.header
        arrived = pickle.loads(pickle.dumps(spec))
        assert arrived.records == tuple(batch)
        assert (header.files, header.bytes, header.videos) == batch_counts(batch, 1 << 30)
        assert (arrived.files, arrived.bytes, arrived.videos, arrived.batch_id) == \
            (header.files, header.bytes, header.videos, spec.batch_id)
    assert max(s.bytes for s in specs) <= (1 << 30) + (1 << 20)


def test_a_batch_made_from_records_pickles_as_the_packed_one():
    import pickle

    from workers.plan import BatchSpec, batch_counts, pack
    recs = tuple(_rec(f"/a/{i}", 100 + i, i) for i in range(5))
    made = BatchSpec("d", "v0-t0-00000", 0, 0, recs, 4096)
    packed = BatchSpec.packed("d", "v0-t0-00000", 0, 0, pack(recs), batch_counts(recs, 4096), 4096)
    assert pickle.dumps(made) == pickle.dumps(packed)
    assert pickle.loads(pickle.dumps(made)).records == recs


def test_sniff_by_first_byte_types_as_every_signature_in_turn():
    from triage.filetype import _SIGNATURES, sniff
    rng = random.Random(7)
    heads = [b"", b"\x00", b"B", b"BM", b"PK\x03", b"\x47" * 600]
    for offset, sig, _ in _SIGNATURES:
        for n in (0, 3, 60, 500):
            pad = rng.randbytes(offset)
            heads += [pad + sig + rng.randbytes(n), pad + sig[:-1], pad + sig[:-1] + b"\x00" * n]
    for _ in range(20000):
        head = bytearray(rng.randbytes(rng.choice([1, 2, 7, 64, 300, 512])))
        if rng.random() < 0.2:
            for k in range(rng.choice([0, 4]), len(head), rng.choice([188, 192])):
                head[k] = 0x47
        if rng.random() < 0.1 and len(head) > 12:
            head[4:8] = b"ftyp"
        heads.append(bytes(head))
    for head in heads:
        got = sniff(head)
        assert sniff(memoryview(head)) == got
        if not head:
            assert got == "empty"
            continue
        # the first signature of the table, in its order, that the bytes carry
        first = next((m for o, sig, m in _SIGNATURES if head[o:o + len(sig)] == sig), None)
        if first is not None:
            assert got == first, head[:16]
        elif head[:4] != b"RIFF" and head[4:8] != b"ftyp":
            # else a transport stream: a 0x47 sync byte three packets in a row
            ts = any(len(head) > start + 2 * size and
                     all(head[start + k * size] == 0x47 for k in range(3))
                     for start, size in ((0, 188), (4, 192)))
            assert got == ("video/mp2t" if ts else ""), head[:16]
    # the workers' C path reads the same table (filetype.SNIFF_RULES) to the same types
    from triage.features import _mbhash
    from triage.filetype import SNIFF_RULES
    heads = [h for h in heads if h]
    at = [0]
    for h in heads:
        at.append(at[-1] + len(h))
    typed = _mbhash.small_files(b"".join(heads), [((a, len(h)),) for a, h in zip(at, heads)],
                                [len(h) for h in heads], SNIFF_RULES, 512)
    assert [t[2] for t in typed] == [sniff(h) for h in heads]


def test_a_resumed_scan_counts_files_as_the_live_scan_does(tmp_path):
    """The store's counts (what `--resume` starts from) count a batch's own files, as the live
    scan does: a carved picture is one, a picture found inside a file (an EXIF thumbnail) or an
    archive member is not. (The resumed run counted two files twice once the first run had
    stored a picture batch whose JPEGs held thumbnails.)"""
    from triage.carve import Carved, embedded_record
    from triage.records import FileRecord, Features, volume_where
    from triage.store import CaseStore
    jpeg = _rec("/home/u/a.jpg", 5000, 12, "image/jpeg")
    thumb = embedded_record(jpeg, Carved(offset=100, length=700, type="image/jpeg", ext="jpg"))
    member = FileRecord(prov=jpeg.prov.member_of("x.jpg"), name="x.jpg", size=40,
                        allocated=True, fs_type="ext4", type="image/jpeg")
    carved_prov = Provenance(device_id="d", volume_offset=0, path="$Unallocated/1.jpg",
                             parent=volume_where("d", 0), offset=4096, length=900)
    carved = FileRecord(prov=carved_prov, name="1.jpg", size=900, allocated=False,
                        fs_type="ext4", type="image/jpeg")
    items = [(r, Features(key=r.key, size=r.size, is_picture=True))
             for r in (jpeg, thumb, member, carved)]
    with CaseStore(tmp_path / "case") as store:
        store.add_batch("d", "v0-t0-00000", items, [], [], [])
        counts = store.counts("d")
    assert (counts["files"], counts["bytes"], counts["pictures"]) == (2, 5000 + 900, 4)


def _contents() -> dict[str, bytes]:
    """Small files of the kinds a device holds: plain ones and ones analysis looks into."""
    import gzip
    import io
    import zipfile

    from PIL import Image
    rng = random.Random(7)
    jpeg, png, zipped = io.BytesIO(), io.BytesIO(), io.BytesIO()
    Image.new("RGB", (40, 30), (200, 40, 90)).save(jpeg, "JPEG")
    Image.new("RGB", (40, 30), (20, 140, 90)).save(png, "PNG")
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("a.txt", "hello")
    return {
        "random.bin": rng.randbytes(3000), "tiny.bin": b"x", "notes.txt": b"plain text\n" * 90,
        "prog": b"\x7fELF\x02\x01\x01" + rng.randbytes(900), "big.bin": rng.randbytes(70_000),
        "a.jpg": jpeg.getvalue(), "fake.jpg": rng.randbytes(700), "b.png": png.getvalue(),
        "c.zip": zipped.getvalue(), "d.gz": gzip.compress(b"abc" * 100),
        "e.pdf": b"%PDF-1.4\n" + rng.randbytes(600), "f.db": b"SQLite format 3\x00" + bytes(600),
        "g.doc": bytes.fromhex("d0cf11e0a1b11ae1") + bytes(600),
        "h.mp4": b"\x00\x00\x00\x18ftypmp42" + bytes(600), "i.txt": b"\x00" * 520,
    }


def test_files_read_whole_are_analysed_as_the_general_path_analyses_them(monkeypatch):
    """A file read whole and hashed by hash_many skips analyse's second pass when its type
    needs nothing but hashes: its analysis equals the general path's for every kind of file,
    each set of options, a walk that typed it wrongly, and content shorter than declared."""
    import hashlib
    from dataclasses import replace

    from triage.features import core
    from triage.features.core import FeatureOptions, analyse
    from triage.features.hashing import Digests
    general = core.read_once
    passes: list[str] = []

    def counted(*a, **kw):
        passes.append("general")
        return general(*a, **kw)

    monkeypatch.setattr(core, "read_once", counted)
    skipped = set()
    for name, data in _contents().items():
        chunks = [memoryview(data)[i:i + 1000] for i in range(0, len(data), 1000)]
        known = Digests(hashlib.md5(data).hexdigest(), hashlib.sha1(data).hexdigest())
        for walk_type in ("", "image/jpeg"):
            rec = replace(_rec(f"/home/u/{name}", len(data), 5), type=walk_type)
            for opts in (FeatureOptions(), FeatureOptions(pictures=False),
                         FeatureOptions(sha256=True), FeatureOptions(archives=False)):
                passes.clear()
                quick = analyse(rec, list(chunks), opts, known=known)
                went = list(passes)
                assert quick == analyse(rec, iter(chunks), opts, known=known), (name, opts)
                if not went:
                    skipped.add((name, opts.pictures))
                    assert not quick.coverage and not quick.members and not opts.sha256
            # declared longer than what was read: the general path, which records the gap
            longer = replace(rec, size=len(data) + 10)
            cut = analyse(longer, list(chunks), FeatureOptions(), known=known)
            assert cut.coverage and not cut.features.md5
    plain = {"random.bin", "tiny.bin", "notes.txt", "prog", "fake.jpg", "i.txt"}
    # a file of unknown type of 64 KiB or more is carved for pictures when pictures are on
    assert skipped == {(n, p) for n in plain for p in (True, False)} | {("big.bin", False)}


class _Name(str):
    """A str that marshal refuses (pickle takes it)."""


def test_packed_records_come_back_equal_whatever_their_fields_hold():
    """A batch crosses as its volume's fields and each file in order: a plain file of that
    volume as the tuple of its fields, any other record pickled alone; a batch holding what
    marshal cannot take is pickled whole. Either way the records that arrive equal those
    sent, keys and all."""
    import marshal
    import pickle
    from dataclasses import replace

    from triage.records import FileRecord
    from workers.plan import pack, plain_row, unpack
    rng = random.Random(3)
    devices = [_hostile_text(rng) for _ in range(2)]
    recs = []
    for i in range(400):
        plain = rng.random() < 0.6
        prov = Provenance(device_id=rng.choice(devices), volume_offset=rng.choice([None, 1 << 41]),
                          inode=rng.choice([None, 0, (1 << 63) + i]), path=_hostile_text(rng),
                          ads="" if plain else rng.choice(["", "Zone.Identifier"]),
                          attr_type=0 if plain else rng.choice([0, 128]),
                          members=() if plain else
                          tuple(_hostile_text(rng) for _ in range(rng.randrange(3))),
                          volume_index=rng.choice([None, 2]),
                          snapshot="" if plain else rng.choice(["", "vss1"]),
                          frame=-1 if plain else rng.choice([-1, 4]),
                          frame_time=None if plain else rng.choice([None, 0.25]), fs_type="ntfs")
        recs.append(FileRecord(prov=prov, name=_hostile_text(rng), size=rng.randrange(1 << 40),
                               allocated=rng.random() < 0.5, fs_type="ntfs",
                               mtime=rng.choice([None, 1.5e9 + i / 7]), type=_hostile_text(rng),
                               ext_mismatch=rng.random() < 0.5,
                               link_target="" if plain else _hostile_text(rng),
                               pieces=tuple((rng.randrange(1 << 40), 512)
                                            for _ in range(rng.randrange(3)))))
    block = pack(recs)
    assert block[:1] == b"S"
    volume, items = marshal.loads(block[1:])
    first = recs[0].prov
    assert volume == (first.device_id, first.volume_offset, first.volume_index, "ntfs")
    rows = [it for it in items if type(it) is tuple]
    # the plain files of the first record's volume went as tuples, the rest pickled alone
    assert rows == [r for r in (plain_row(rec, volume) for rec in recs) if r is not None]
    assert 10 < len(rows) < 200 and len(items) == len(recs)
    assert [pickle.loads(it) for it in items if type(it) is bytes] == \
        [rec for rec in recs if plain_row(rec, volume) is None]
    back = unpack(block)
    assert back == tuple(recs)
    assert [r.key for r in back] == [r.key for r in recs]
    assert [r.pieces for r in back] == [r.pieces for r in recs]
    assert {hash(r) for r in back} == {hash(r) for r in recs}
    # carved content nests its provenance: pickled alone, and equal too
    carved = replace(recs[0], prov=Provenance(device_id="d", inode=None, parent=recs[1].prov,
                                              offset=4096, length=700))
    mixed = recs[:5] + [carved]
    assert unpack(pack(mixed)) == tuple(mixed)
    # no plain file at all: pickled whole, so records share their parents' provenances
    nested = [replace(carved, prov=replace(carved.prov, offset=4096 * k)) for k in range(20)]
    block = pack(nested)
    assert block[:1] == b"P" and unpack(block) == tuple(nested)
    # a value marshal cannot take (a str subclass): the batch is pickled whole
    odd = replace(recs[0], name=_Name("x"))
    block = pack(recs[:3] + [odd])
    assert block[:1] == b"P" and unpack(block) == tuple(recs[:3] + [odd])
    assert unpack(pack([])) == ()


def _fleet_walk(synth_fleet):
    """(open evidence, volume, record) for every record of every file system of the fleet."""
    from triage.device import discover
    from triage.evidence import open_evidence
    from triage.filesystems import walk
    for image in sorted((synth_fleet / "devices").iterdir()):
        with open_evidence(image) as ev:
            volumes, _ = discover(ev)
            for vol in volumes:
                if vol.fs_type:
                    for rec in walk(ev, vol):
                        yield ev, vol, rec


def test_the_walks_records_are_the_ones_their_dataclasses_make(synth_fleet):
    """The walk builds each record without the dataclass __init__ (records.built): every record
    of the fleet's file systems (NTFS with streams, FAT, ext4, deleted and orphan files) equals,
    field for field and key for key, the one __init__ makes from the same values."""
    import dataclasses

    import pytest

    from triage.records import FileRecord, built
    seen = set()
    for _, vol, rec in _fleet_walk(synth_fleet):
        again = dataclasses.replace(rec, prov=dataclasses.replace(rec.prov))
        assert again == rec and again.key == rec.key
        assert vars(again) == vars(rec) and vars(again.prov) == vars(rec.prov)
        seen.add((vol.fs_type, rec.allocated, rec.is_dir))
    assert {"ntfs", "fat32", "ext4"} <= {fs for fs, _, _ in seen}
    assert (("ntfs", False, False) in seen or ("ext4", False, False) in seen)   # deleted files
    with pytest.raises(TypeError):
        built(dict, a=1)
    from triage.features.core import Analysis
    from triage.records import Coverage, EvidenceRef, Features
    with pytest.raises(TypeError):                  # a default factory: __init__ does more
        built(EvidenceRef, device_id="d", paths=(), format="raw", media_size=0)
    with pytest.raises(TypeError):                  # not a class at all
        built(Coverage(device_id="d", kind="k", where=Provenance(device_id="d"), reason="r"))
    f = Features(key="k", size=1)
    made = built(Analysis, record=None, features=f)
    assert made == Analysis(None, f) and vars(made) == vars(Analysis(None, f))
    # a provenance's key is worked out once, and kept in the record (frozen as it is)
    p = Provenance(device_id="d", inode=5, path="/a")
    assert "key" not in vars(p) and p.key == '["d",0,5,"/a"]' and vars(p)["key"] is p.key
    assert built(FileRecord, prov=built(Provenance, device_id="d"), name="n", size=0,
                 allocated=True, fs_type="") == FileRecord(prov=Provenance(device_id="d"),
                                                           name="n", size=0, allocated=True,
                                                           fs_type="")


def test_the_pieces_a_walk_finds_read_what_tsk_reads(synth_fleet):
    """The walk hands each plain ext and FAT file's pieces to the workers, which then read the
    image straight, without TSK: on every file system of the fleet, what the pieces hold is
    what TSK's read gives, byte for byte, and a file without pieces (NTFS, deleted, empty) is
    read through TSK as before."""
    from triage.filesystems import read_chunks, read_pieces
    from workers.batch import Backend
    with_pieces = set()
    without = set()
    for ev, vol, rec in _fleet_walk(synth_fleet):
        if rec.is_dir:
            continue
        if not rec.pieces:
            without.add((vol.fs_type, rec.allocated))
            continue
        assert rec.allocated and rec.size > 0 and not rec.prov.ads
        assert sum(n for _, n in rec.pieces) == rec.size
        direct = b"".join(bytes(c) for c in read_pieces(ev, rec.pieces, 4096))
        tsk = b"".join(bytes(c) for c in read_chunks(ev, rec.prov, 4096))
        assert direct == tsk, rec.path
        # and the worker's reader takes the pieces
        assert b"".join(bytes(c) for c in Backend().read_record(ev, rec, 1 << 20)) == tsk
        with_pieces.add(vol.fs_type)
    assert {"ext4", "fat32"} <= with_pieces and "ntfs" not in with_pieces
    assert ("ntfs", True) in without


def _batches_both_ways(image, opts, every: int = 64):
    """Each batch of a device's walk scanned twice, as records and as the packed block a
    planner sends (workers.plan.pack): the two results, ready for the driver, and how many
    files the packed way stored without records."""
    from triage.device import discover
    from triage.evidence import open_evidence
    from triage.filesystems import walk
    from workers.batch import Backend, WorkerContext, scan_batch
    from workers.plan import BatchSpec, batch_counts, pack
    with open_evidence(str(image)) as ev:
        volumes, _ = discover(ev)
        # each volume's batches apart, as a planner cuts them
        parts = [[r for r in walk(ev, v, []) if not r.is_dir] for v in volumes if v.fs_type]
    recs = [r for part in parts for r in part]
    out, plain = [], 0
    one, two = WorkerContext(Backend()), WorkerContext(Backend())
    dev = recs[0].prov.device_id
    for v, i in ((v, i) for v, part in enumerate(parts) for i in range(0, len(part), every)):
        part = tuple(parts[v][i:i + every])
        bid = f"v{v}-t3-{i:05d}"
        a = scan_batch(one, (str(image),), BatchSpec(dev, bid, 0, 3, part), opts)
        b = scan_batch(two, (str(image),), BatchSpec.packed(dev, bid, 0, 3, pack(part),
                                                             batch_counts(part)), opts)
        plain += len(b.plain)
        assert b.stored_files == a.stored_files
        out.append((a.for_driver(), b.for_driver()))
    one.close()
    two.close()
    return recs, out, plain


def _alert_set(tmp_path, recs, image, picks: int = 6) -> tuple:
    """A hash set holding the MD5s of some of the device's files (small plain ones, a picture
    when there is one), as ScanOptions.hashsets names it."""
    from hashsets.store import HashSetStore
    from triage.evidence import open_evidence
    from triage.filesystems import read_pieces
    chosen = [r for r in recs if r.pieces and 0 < r.size < 4096][:picks]
    chosen += [r for r in recs if r.pieces and r.name.lower().endswith(".jpg")][:2]
    assert len(chosen) >= 3
    with open_evidence(str(image)) as ev:
        md5s = [hashlib.md5(b"".join(bytes(c) for c in read_pieces(ev, r.pieces, 1 << 20)))
                .hexdigest() for r in chosen]
    tmp_path.mkdir(parents=True, exist_ok=True)
    listing = tmp_path / "alert.md5"
    listing.write_text("".join(f"{m}\n" for m in md5s))
    root = tmp_path / "hs"
    HashSetStore(root).import_file(listing, "alert", "alert")
    return ((str(root), ("alert",)),), {r.key for r in chosen}


@pytest.mark.parametrize("pictures", [False, True])
def test_packed_batches_store_what_record_batches_store(synth_fleet, tmp_path, pictures):
    """The workers' packed-row path (workers/batch._scan_packed) stores a plain file as its row
    without making its records. Against the same batches scanned as records: the same rows in
    the same order, the same matches (records made for the matched plain files), coverage,
    counts and bytes. A small chunk size sends the larger files down the record path inside
    the same batches, beside pictures, archives and empty files."""
    from workers.batch import ScanOptions
    for dev in ("dev01.raw", "dev05.raw"):
        image = synth_fleet / "devices" / dev
        probe = _batches_both_ways(image, ScanOptions(pictures=False))[0]
        sets, wanted = _alert_set(tmp_path / dev, probe, image)
        opts = ScanOptions(mode="full", pictures=pictures, hashsets=sets, chunk_size=16384)
        recs, results, plain = _batches_both_ways(image, opts)
        assert 0 < plain < len(recs)          # both ways ran inside the same batches
        matched = set()
        for a, b in results:
            assert b.rows == a.rows
            assert sorted(map(repr, b.matches)) == sorted(map(repr, a.matches))
            assert b.coverage == a.coverage and b.ignored == a.ignored
            assert (b.bytes_read, b.files, b.pictures) == (a.bytes_read, a.files, a.pictures)
            assert sorted(b.items, key=repr) == sorted(a.items, key=repr)
            assert (b.model_inputs, b.model_skips) == (a.model_inputs, a.model_skips)
            matched |= {m.key for m in b.matches}
        assert wanted <= matched


@pytest.mark.parametrize("engine", ["kernel", "hashlib"])
def test_packed_batches_with_odd_pieces_store_what_record_batches_store(tmp_path, monkeypatch,
                                                                       engine):
    """Pieces that run past the image, lie wholly outside it, do not add up to the declared
    size, or hold a picture: the packed way leaves each to the record path, which says what
    went wrong, and only whole plain files become rows straight away. Both where the small
    files are hashed and sniffed in one C pass over the mapped image (hashing.hash_small) and
    where no kernel runs (read_small and `sniff`)."""
    from triage.features import hashing
    from workers.batch import Backend
    if engine == "hashlib":
        monkeypatch.setenv("TRIAGE_MBHASH", "0")
    hashing._kernel.cache_clear()
    hashing.hash_engine.cache_clear()
    quick = []
    small_digests = Backend.small_digests

    def spied(self, *args):
        got = small_digests(self, *args)
        quick.append(got is not None)
        return got
    monkeypatch.setattr(Backend, "small_digests", spied)
    try:
        _odd_pieces_both_ways(tmp_path)
    finally:             # the engine chosen again, with the environment as it was
        hashing._kernel.cache_clear()
        hashing.hash_engine.cache_clear()
    assert quick and all(quick) == (engine == "kernel")


def _odd_pieces_both_ways(tmp_path):
    from workers.batch import Backend, ScanOptions, WorkerContext, scan_batch
    from workers.plan import BatchSpec, batch_counts, pack
    rng = random.Random(7)
    data = bytearray(rng.randbytes(65536))
    data[2000:2004] = b"\xff\xd8\xff\xe0"
    data[510:512] = b"\x55\xaa"                 # an MBR's mark: the image opens as a disk
    data[100:104] = b"\x7fELF"
    image = tmp_path / "odd.raw"
    image.write_bytes(bytes(data))

    def rec(inode, size, pieces, name="f.bin"):
        from triage.records import FileRecord
        return FileRecord(prov=Provenance(device_id="odd.raw", volume_offset=0, inode=inode,
                                          path=f"/{inode}/{name}", volume_index=0,
                                          fs_type="ext4"),
                          name=name, size=size, allocated=True, fs_type="ext4", pieces=pieces)

    recs = (rec(1, 1000, ((0, 1000),)),                    # plain
            rec(2, 10000, ((60000, 10000),)),              # runs past the end
            rec(3, 0, ()),                                 # empty
            rec(4, 100, ((100, 50), (5000, 50)), "g.jpg"), # plain, in two pieces, misnamed
            rec(5, 3000, ((2000, 3000),), "p.jpg"),        # a picture
            rec(6, 10, ((70000, 10),)),                    # wholly outside
            rec(7, 500, ((0, 400),)))                      # pieces short of the size
    opts = ScanOptions(mode="full", pictures=True)
    one, two = WorkerContext(Backend()), WorkerContext(Backend())
    a = scan_batch(one, (str(image),), BatchSpec("odd.raw", "b", 0, 3, recs), opts)
    b = scan_batch(two, (str(image),), BatchSpec.packed("odd.raw", "b", 0, 3, pack(recs),
                                                         batch_counts(recs)), opts)
    assert [row[0] for _, row in b.plain] == [recs[0].key, recs[3].key]
    assert b.plain[1][1][-4:-2] == ("application/x-elf", 1)     # g.jpg holds a program
    a, b = a.for_driver(), b.for_driver()
    assert b.rows == a.rows and len(b.rows) == len(recs)
    assert b.coverage == a.coverage
    assert {c.where.inode for c in b.coverage} >= {2, 6}
    assert (b.bytes_read, b.pictures) == (a.bytes_read, a.pictures)
    one.close()
    two.close()


def test_packed_batches_of_damaged_copies_store_what_record_batches_store(tmp_path):
    """Seeded byte flips and truncations of ext4 and FAT16 images (superblocks, tables,
    folders): whatever each walk lists, its batches give the same rows, matches and coverage
    both ways."""
    from evidence_images import build_all
    from triage.errors import TriageError
    from triage.synth.mutate import write_mutants
    from workers.batch import ScanOptions
    images = build_all(tmp_path / "images")
    compared = plain = 0
    for name in ("ext4", "fat16"):
        image = images[name]
        for m in write_mutants([Path(image.path)], tmp_path / name, 10, 23, list(image.offsets)):
            try:
                recs, results, n = _batches_both_ways(m.path, ScanOptions(pictures=True),
                                                      every=16)
            except TriageError:
                continue                       # not opened: nothing to batch
            plain += n
            for a, b in results:
                assert b.rows == a.rows, m.how
                assert sorted(map(repr, b.matches)) == sorted(map(repr, a.matches))
                assert b.coverage == a.coverage, m.how
                assert (b.bytes_read, b.files, b.pictures) == (a.bytes_read, a.files, a.pictures)
                compared += 1
    assert compared >= 10 and plain > 0, (compared, plain)


def _plain_walks(synth_fleet, unplain: bool = False):
    """(volume, its plain_common, the walk's items with plain files as tuples, the same as
    records) for each file system of two synth devices; `unplain`: and the records of a walk
    without plain files."""
    from triage.device import discover
    from triage.evidence import open_evidence
    from triage.filesystems import walk
    from triage.records import plain_common, plain_record
    for dev in ("dev01.raw", "dev05.raw"):
        with open_evidence(str(synth_fleet / "devices" / dev)) as ev:
            for vol in discover(ev)[0]:
                if vol.fs_type:
                    common = plain_common(vol)
                    items = list(walk(ev, vol, [], plain=True))
                    recs = [plain_record(common, r) if type(r) is tuple else r for r in items]
                    yield (vol, common, items, recs) + \
                        ((list(walk(ev, vol, [])),) if unplain else ())


def test_the_c_listers_plain_files_are_the_records_the_walk_makes(synth_fleet, monkeypatch):
    """The C lister makes a plain file's tuple itself where no content type matches its first
    bytes (_tskwalk's read_plain, reading filetype.SNIFF_RULES): the walk with plain files
    gives, in the same order, the records the walk without them gives, and a typed plain file
    (a picture, an archive) still comes through Python's sniff."""
    from triage import filesystems
    made_in_c = []
    real = filesystems._read_folder

    def counted(read):
        for item in real(read):
            made_in_c.append(len(item) == filesystems._PLAIN_WIDTH)
            yield item
    monkeypatch.setattr(filesystems, "_read_folder", counted)
    typed = 0
    for _, _, items, recs, unplain in _plain_walks(synth_fleet, unplain=True):
        assert recs == unplain
        typed += sum(1 for r in items if type(r) is tuple and r[10])
    assert sum(made_in_c) >= 10 and typed > 0


def test_plain_files_from_the_walk_pack_as_their_records(synth_fleet):
    """The planner packs the walk's plain files (tuples) as it would pack the records they
    stand for: the same volume, items and records arrive either way."""
    import marshal

    from workers.plan import pack, unpack
    tuples = 0
    for _, common, items, recs in _plain_walks(synth_fleet):
        kept = [i for i, r in enumerate(recs) if not r.is_dir]
        items, recs = [items[i] for i in kept], [recs[i] for i in kept]
        tuples += sum(type(r) is tuple for r in items)
        for i in range(0, len(items), 50):
            a, b = pack(items[i:i + 50], common), pack(recs[i:i + 50], common)
            assert a[:1] == b[:1] == b"S"
            assert marshal.loads(a[1:]) == marshal.loads(b[1:])
            assert unpack(a) == tuple(recs[i:i + 50])
    assert tuples > 50


def test_a_result_crosses_to_the_driver_with_its_rows_marshalled():
    """BatchResult's rows cross marshalled (half pickle's cost to the worker) and arrive
    equal; rows holding what marshal cannot take cross pickled, and arrive equal too."""
    import marshal
    import pickle

    from workers.batch import BatchResult
    rows = [(f'["d",0,{i},"/f{i}"]', "b", "d", 0, 0, i, f"/f{i}", f"f{i}", i, True, "ext4",
             False, False, 1.5e9 + i / 3, None, None, None, "", False, "ab" * 16, "cd" * 20)
            for i in range(300)]
    result = BatchResult(device_id="d", batch_id="b", tier=3, rows=rows, files=300)
    state = result.__getstate__()
    assert type(state["rows"]) is bytes and marshal.loads(state["rows"]) == rows
    back = pickle.loads(pickle.dumps(result))
    assert back == result and back.rows == rows and back.stored_files == 300
    odd = BatchResult(device_id="d", batch_id="b", tier=3, rows=rows[:2] + [(_Name("x"),)])
    assert type(odd.__getstate__()["rows"]) is list
    assert pickle.loads(pickle.dumps(odd)) == odd
    empty = BatchResult(device_id="d", batch_id="b", tier=3)
    assert pickle.loads(pickle.dumps(empty)) == empty


def test_a_plan_of_plain_tuples_cuts_the_batches_of_their_records(synth_fleet):
    """plan_volume given the walk's plain files as tuples cuts the batches it cuts from their
    records: the same ids, tiers, counts and records, and the same totals (batches come out
    in the order the walk's thread cuts them, so they are compared by id)."""
    from workers.plan import BatchSpec, VolumePlan, plan_volume

    def plan(items, vol, common):
        out = list(plan_volume(iter(items), vol.device_id, vol.offset, max_files=16,
                               max_bytes=1 << 20, other_max_files=64,
                               volume_length=vol.length, plain=common))
        specs = sorted((o for o in out if isinstance(o, BatchSpec)), key=lambda o: o.batch_id)
        [totals] = [o for o in out if isinstance(o, VolumePlan)]
        return [(o.batch_id, o.tier, o.counts, o.records) for o in specs], totals

    tuples = 0
    for vol, common, items, recs in _plain_walks(synth_fleet):
        tuples += sum(type(r) is tuple for r in items)
        a, b = plan(items, vol, common), plan(recs, vol, None)
        assert a == b and len(a[0]) > 2
    assert tuples > 50
