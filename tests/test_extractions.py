"""Phone extractions as evidence (issue 16, part 1): tar, tgz and zip of a phone's file
system, recognised by content, walked in archive order, read straight from the evidence file;
bad ones (a bomb, hostile names, cut short) give coverage, never a traceback."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from extraction_builders import (DEEP, MiB, bait_jpeg, md5, phone_tree, write_tar, write_tgz_bomb,
                                 write_zip, write_zip_bomb)
from triage.device import discover
from triage.errors import EvidenceError, ShortRead
from triage.evidence import open_evidence
from triage.filesystems import read_chunks, walk
from triage.records import ARCHIVE, MEDIA_DAMAGED
from workers.plan import tier_of


def listing(path: Path) -> tuple[list, list, dict]:
    """(records, walk coverage, path -> md5 of what read_chunks gives) of an extraction."""
    with open_evidence(path) as ev:
        vols, cov = discover(ev)
        assert len(vols) == 1 and not cov
        problems: list = []
        recs = list(walk(ev, vols[0], problems))
        hashes = {}
        for r in recs:
            if not r.is_dir:
                try:
                    hashes[r.path] = md5(b"".join(bytes(c) for c in read_chunks(ev, r.prov)))
                except EvidenceError as exc:      # ShortRead included
                    hashes[r.path] = exc
        return recs, problems, hashes


@pytest.fixture(scope="module")
def tree() -> dict[str, bytes]:
    return phone_tree(bait_jpeg())


@pytest.mark.parametrize("kind", ["tar", "tgz", "zip", "zip-stored", "zip-bzip2"])
def test_extraction_lists_and_reads_every_member(tmp_path, tree, kind):
    # names say nothing: each is called .bin, and is told by its bytes
    path = tmp_path / "phone.bin"
    if kind == "tar":
        write_tar(path, tree)
    elif kind == "tgz":
        write_tar(path, tree, compress=True)
    else:
        import zipfile
        write_zip(path, tree, {"zip-stored": zipfile.ZIP_STORED,
                               "zip-bzip2": zipfile.ZIP_BZIP2}.get(kind, zipfile.ZIP_DEFLATED))
    with open_evidence(path) as ev:
        assert ev.ref.format == {"tar": "tar", "tgz": "tar.gz"}.get(kind, "zip")
    recs, problems, hashes = listing(path)
    assert not problems
    files = [r for r in recs if not r.is_dir]
    # archive order, device paths with one leading slash
    assert [r.path for r in files] == ["/" + n for n in tree]
    assert {p: h for p, h in hashes.items()} == {"/" + n: md5(d) for n, d in tree.items()}
    by_path = {r.path: r for r in files}
    assert by_path["/" + DEEP].type == "image/jpeg" and by_path["/" + DEEP].size == len(tree[DEEP])
    assert by_path["/" + DEEP].mtime is not None
    # the tiers apply to the device paths: the camera first, system folders last
    assert tier_of(by_path["/" + DEEP]) == 0
    assert tier_of(by_path["/system/build.prop"]) == 4
    if kind in ("tar", "tgz"):
        assert {"/data", "/data/media/0/DCIM/Camera"} <= {r.path for r in recs if r.is_dir}


def test_tgz_members_read_out_of_order(tmp_path, tree):
    """A compressed tar streams forward; a read behind the last one starts the stream over."""
    path = write_tar(tmp_path / "phone.tgz", tree, compress=True)
    with open_evidence(path) as ev:
        vol = discover(ev)[0][0]
        files = [r for r in walk(ev, vol) if not r.is_dir]
        for r in reversed(files):
            assert md5(b"".join(read_chunks(ev, r.prov))) == md5(tree[r.path[1:]])


def test_not_an_extraction_is_still_refused(tmp_path):
    bogus = tmp_path / "notes.tar"
    bogus.write_bytes(b"just text, named like a tar\n" * 100)
    with pytest.raises(EvidenceError, match="not a recognised disk image"):
        open_evidence(bogus)


def test_zip_bomb_posing_as_an_extraction_is_a_gap(tmp_path):
    path = write_zip_bomb(tmp_path / "phone.zip")
    recs, problems, hashes = listing(path)
    assert [r.path for r in recs if not r.is_dir] == ["/sdcard/DCIM/readme.txt"]
    [gap] = problems
    assert gap.kind == ARCHIVE and "bomb" in gap.reason and gap.where.path == "/sdcard/DCIM/huge.bin"
    assert gap.bytes_not_examined == 128 * MiB


def test_tgz_bomb_stops_the_walk_with_a_gap(tmp_path):
    path = write_tgz_bomb(tmp_path / "phone.tgz")
    recs, problems, hashes = listing(path)
    assert [p.kind for p in problems] == [ARCHIVE]
    assert "bomb" in problems[0].reason
    assert "/sdcard/after.txt" not in {r.path for r in recs}
    # the bomb's own member is listed, and reading it stops at the same bound
    assert "bomb" in str(hashes["/sdcard/zeros.bin"])


def test_hostile_names_are_listed_never_written(tmp_path, monkeypatch):
    files = {"../../escape.txt": b"dot-dot\n", "/etc/passwd": b"absolute\n",
             "ok/../../../x.jpg": bait_jpeg(3)}
    buf = tmp_path / "hostile.tar"
    with tarfile.open(buf, "w") as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    before = sorted(p for p in tmp_path.rglob("*"))
    recs, problems, hashes = listing(buf)
    assert not problems
    assert [r.path for r in recs] == ["/../../escape.txt", "/etc/passwd", "/ok/../../../x.jpg"]
    assert hashes == {"/../../escape.txt": md5(files["../../escape.txt"]),
                      "/etc/passwd": md5(b"absolute\n"), "/ok/../../../x.jpg": md5(files["ok/../../../x.jpg"])}
    assert sorted(p for p in tmp_path.rglob("*")) == before
    assert not Path("/escape.txt").exists()


@pytest.mark.parametrize("compress", [False, True], ids=["tar", "tgz"])
def test_truncated_tar_lists_what_is_there_and_says_what_is_lost(tmp_path, tree, compress):
    whole = write_tar(tmp_path / "whole", tree, compress=compress).read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole[:len(whole) * 2 // 3])
    recs, problems, hashes = listing(cut)
    assert problems and all(p.kind == MEDIA_DAMAGED for p in problems)
    assert "cut short" in problems[0].reason
    read = {p: h for p, h in hashes.items() if isinstance(h, str)}
    short = [p for p, h in hashes.items() if isinstance(h, ShortRead)]
    # everything before the cut reads exactly; nothing is read past it
    assert read and all(read[p] == md5(tree[p[1:]]) for p in read)
    assert len(read) + len(short) == len(hashes)


def test_bad_extractions_through_inspect_never_trace(tmp_path):
    from cli import main
    bomb = write_zip_bomb(tmp_path / "bomb.zip")
    cut = tmp_path / "cut.tgz"
    cut.write_bytes(write_tar(tmp_path / "w.tgz", phone_tree(b"x"), compress=True).read_bytes()[:700])
    for path, said in ((bomb, "bomb"), (cut, "cut short")):
        r = CliRunner().invoke(main, ["inspect", str(path), "--json"])
        assert r.exit_code == 0, r.output
        assert "Traceback" not in r.output
        info = json.loads(r.output)
        assert any(said in c["reason"] for c in info["coverage"]), info["coverage"]


def _many(path: Path, n: int, kind: str) -> Path:
    """An extraction of `n` tiny members in 100 folders (what a phone's app caches look like)."""
    import zipfile
    if kind == "zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
            for i in range(n):
                z.writestr(f"data/data/app{i % 100}/cache/{i:07d}.bin", b"%07d" % i)
        return path
    with tarfile.open(path, "w:gz" if kind == "tgz" else "w",
                      **({"compresslevel": 1} if kind == "tgz" else {})) as tf:
        for i in range(n):
            data = b"%07d" % i
            ti = tarfile.TarInfo(f"data/data/app{i % 100}/cache/{i:07d}.bin")
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return path


@pytest.mark.parametrize("kind", ["tar", "tgz", "zip"])
def test_planning_an_extraction_keeps_memory_flat(tmp_path, kind, monkeypatch):
    """Four times the members cost the planner no more memory: the walk streams the headers
    (tarfile's member list emptied, the zip's central directory read a block at a time) and
    plan_volume spools every tier but the first to disk. Batches of 1,024 files, fewer than
    the smaller archive holds, so both hold about a batch per tier in memory (the default,
    8,192 in later tiers, would keep the smaller archive's 3,000 members in one batch).
    Blocks of 64 KiB, smaller than either archive's central directory (about 230 KiB and
    920 KiB): with the real 1 MiB, the smaller one's is read whole and the larger one's
    nearly whole, so the buffer itself grew 700 KiB with the members and the comparison
    failed on a CI machine whose threads ran in a different order."""
    import tracemalloc
    from triage import extractions
    from workers.plan import BatchSpec, VolumePlan, plan_volume
    monkeypatch.setattr(extractions, "BLOCK", 64 * 1024)

    def peak(n: int) -> tuple[int, int]:
        path = _many(tmp_path / f"{n}.{kind}", n, kind)
        with open_evidence(path) as ev:
            vol = discover(ev)[0][0]
            tracemalloc.start()
            files = 0
            for item in plan_volume(walk(ev, vol), vol.device_id, vol.offset,
                                    other_max_files=1024, spool_dir=str(tmp_path)):
                if isinstance(item, BatchSpec):
                    files += item.files
                else:
                    assert isinstance(item, VolumePlan)
            top = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        return top, files

    small, n_small = peak(3_000)
    big, n_big = peak(12_000)
    assert (n_small, n_big) == (3_000, 12_000)
    assert big < small * 1.5 + 512 * 1024, (small, big)


def test_password_protected_ufdr_is_a_gap_unless_the_password_opens_it(tmp_path):
    from extraction_builders import write_encrypted_zip, write_ufdr
    import zipfile
    from triage.records import ENCRYPTED
    bait = bait_jpeg(5)
    plain = write_ufdr(tmp_path / "plain.ufdr", {
        "files/Image/IMG_0001.JPG": ("/private/var/mobile/Media/DCIM/100APPLE/IMG_0001.JPG",
                                     bait, False)})
    with zipfile.ZipFile(plain) as z:
        members = {n: z.read(n) for n in z.namelist()}
    locked = write_encrypted_zip(tmp_path / "locked.ufdr", members, b"s3cret")

    def look(password=None):
        with open_evidence(locked) as ev:
            vols, _ = discover(ev, password=password)
            problems: list = []
            recs = {r.path: r for r in walk(ev, vols[0], problems)}
            got = {p: md5(b"".join(read_chunks(ev, r.prov))) for p, r in recs.items()}
            return vols[0], recs, got, problems

    vol, recs, _, problems = look()
    assert vol.fs_type == "ufdr" and not recs
    [gap] = problems               # one gap for all the members it keeps closed, with their bytes
    assert gap.kind == ENCRYPTED and gap.bytes_not_examined == sum(len(v) for v in members.values())
    assert gap.reason.startswith("2 password-protected UFDR member(s)")
    assert "give --password" in gap.reason and "'/files/Image/IMG_0001.JPG'" in gap.reason
    _, recs, _, problems = look("wrong")
    [gap] = problems
    assert not recs and "the password does not open it" in gap.reason and "\n" not in gap.reason
    _, recs, got, problems = look("s3cret")
    assert not problems
    phone = "/private/var/mobile/Media/DCIM/100APPLE/IMG_0001.JPG"
    assert got[phone] == md5(bait) and recs[phone].type == "image/jpeg"
    assert recs[phone].prov.members == ("files/Image/IMG_0001.JPG",)


def test_zip64_records_are_read(tmp_path, tree, monkeypatch):
    """A zip whose end record and entries use the zip64 fields (zipfile is made to write them
    for small members by lowering its limits, as it does past 4 GiB or 65,535 entries)."""
    import zipfile
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 1000)
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 3)
    path = tmp_path / "zip64.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as z:
        for name, data in tree.items():
            with z.open(name, "w", force_zip64=True) as w:
                w.write(data)
    monkeypatch.undo()
    raw = path.read_bytes()
    assert b"PK\x06\x06" in raw and b"PK\x06\x07" in raw          # zip64 end record, locator
    recs, problems, hashes = listing(path)
    assert not problems
    assert hashes == {"/" + n: md5(d) for n, d in tree.items()}


def test_damaged_itunes_manifest_still_examines_every_file(tmp_path):
    """Manifest.db unreadable but the backup not encrypted: the files are hashed under their
    stored names (no paths), and the gap says why."""
    import hashlib
    from extraction_builders import write_itunes
    bait = bait_jpeg(9)
    folder = write_itunes(tmp_path / "backup", {("CameraRollDomain", "Media/DCIM/a.jpg"): bait})
    (folder / "Manifest.db").write_bytes(b"not a database" * 100)
    recs, problems, hashes = listing(folder)
    fid = hashlib.sha1(b"CameraRollDomain-Media/DCIM/a.jpg").hexdigest()
    assert hashes[f"/$Backup/{fid[:2]}/{fid}"] == md5(bait)
    [gap] = problems
    assert gap.kind == MEDIA_DAMAGED and "Manifest.db cannot be read" in gap.reason


@pytest.mark.parametrize("body,said", [
    (b"ANDROID BACKUP\n5\n1", "header cut short"),
    (b"ANDROID BACKUP\n5\n1\nnone\n" + b"not zlib at all" * 50, "damaged"),
])
def test_bad_adb_backups_are_one_line_or_a_gap(tmp_path, body, said):
    path = tmp_path / "backup.ab"
    path.write_bytes(body)
    try:
        recs, problems, _ = listing(path)
    except EvidenceError as exc:          # the header itself: one line, the device not opened
        assert said in str(exc) and "\n" not in str(exc)
        return
    assert not recs and problems and said in problems[0].reason


def test_mutated_extractions_never_trace(tmp_path, tree):
    """Seeded mutants (bytes changed, cut short, bytes inserted) of a tar, tgz, zip, UFDR and
    adb backup: opening, walking and reading each gives records, gaps or one EvidenceError,
    never another exception (800 mutants were run this way by hand; 100 here)."""
    import random
    from extraction_builders import write_adb, write_ufdr
    seeds = {
        "tar": write_tar(tmp_path / "s.tar", tree).read_bytes(),
        "tgz": write_tar(tmp_path / "s.tgz", tree, compress=True).read_bytes(),
        "zip": write_zip(tmp_path / "s.zip", tree).read_bytes(),
        "ufdr": write_ufdr(tmp_path / "s.ufdr", {"files/a.jpg": ("/p/a.jpg", bait_jpeg(2), True),
                                                 "files/b.txt": ("/p/b.txt", b"x" * 500, False)}).read_bytes(),
        "adb": write_adb(tmp_path / "s.ab", tree).read_bytes(),
    }
    rng = random.Random(16)
    for i in range(100):
        kind = rng.choice(sorted(seeds))
        data = bytearray(seeds[kind])
        for _ in range(rng.randint(1, 8)):
            op, at = rng.random(), rng.randrange(len(data))
            if op < 0.6:
                data[at] = rng.randrange(256)
            elif op < 0.8:
                data = data[:max(1, at)]
            else:
                data[at:at] = rng.randbytes(rng.randint(1, 16))
        path = tmp_path / f"m{i}.bin"
        path.write_bytes(bytes(data))
        try:
            with open_evidence(path) as ev:
                for vol in discover(ev)[0]:
                    if not vol.fs_type:
                        continue
                    for rec in walk(ev, vol, []):
                        if not rec.is_dir:
                            try:
                                for _ in read_chunks(ev, rec.prov):
                                    pass
                            except EvidenceError:
                                pass
        except EvidenceError:
            pass
