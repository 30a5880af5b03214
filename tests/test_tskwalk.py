"""The walk's C lister (triage/_tskwalk.c) against pytsk3's: on every raw ext and FAT volume
the project builds, and on seeded damaged copies of them, the same records in the same order,
the same gaps and the same deleted files' first bytes; a file's first bytes read from its
pieces equal TSK's; and any volume the C lister cannot open is listed by pytsk3."""
from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest

from evidence_images import MiB, build_all
from triage import filesystems
from triage.device import discover
from triage.evidence import open_evidence
from triage.records import plain_common, plain_record
from triage.synth.mutate import write_mutants

# `make deps` builds it (libtsk-dev is installed with it): a missing build fails here.
from triage import _tskwalk  # noqa: E402


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return build_all(tmp_path_factory.mktemp("tskwalk"))


@pytest.fixture(scope="module")
def fragmented(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    """A FAT16 volume whose files lie in several runs: three files, the middle one deleted,
    then bigger files written into its hole and past the third, and so on."""
    work = tmp_path_factory.mktemp("fragmented")
    img = work / "frag.raw"
    with open(img, "wb") as fh:
        fh.truncate(16 * MiB)
    subprocess.run(["mkfs.fat", "-F", "16", "-s", "1", img], check=True, capture_output=True)
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    rng = random.Random(5)
    contents: dict[str, bytes] = {}

    def put(name: str, size: int) -> None:
        data = contents[name] = rng.randbytes(size)
        (work / name).write_bytes(data)
        subprocess.run(["mcopy", "-i", img, work / name, f"::/{name}"], check=True, env=env,
                       capture_output=True)

    for i in range(6):
        put(f"a{i}.bin", 3000 + 700 * i)
    for i in (1, 3, 5):
        subprocess.run(["mdel", "-i", img, f"::/a{i}.bin"], check=True, env=env)
        del contents[f"a{i}.bin"]
    put("big.bin", 40_000)          # fills the three holes, then runs on past the last file
    put("mid.bin", 9_000)
    return img, contents


def _walk(path, native: bool, monkeypatch) -> dict:
    """Everything one walk of every volume gives, and which volumes the C lister served. The
    walk runs twice, giving FileRecords and giving plain files as tuples (the scan's planner
    asks for those): the tuples, made records (records.plain_record), must be the same walk.
    `plain`: how many files came as tuples (never any from pytsk3's lister)."""
    records = _walk_once(path, native, monkeypatch, False)
    plain = _walk_once(path, native, monkeypatch, True)
    _same(records, plain)
    assert records["served"] == plain["served"] and records["plain"] == 0
    assert native or plain["plain"] == 0
    return {**records, "plain": plain["plain"]}


def _walk_once(path, native: bool, monkeypatch, plain: bool) -> dict:
    served = []
    real = filesystems._native_lister

    def spy(evidence, fs, offset):
        lister = real(evidence, fs, offset)
        served.append((offset, lister is not None))
        return lister

    with monkeypatch.context() as m:
        m.setattr(filesystems, "_native_lister", spy)
        if not native:
            m.setattr(filesystems, "_tskwalk", None)
        out = {"records": [], "problems": [], "errors": [], "plain": 0}
        try:
            ev = open_evidence(str(path))
            volumes, _ = discover(ev)
        except Exception as exc:        # noqa: BLE001 - a mutant may not open at all
            out["errors"].append(f"{type(exc).__name__}: {exc}")
            return {**out, "served": served, "starts": {}}
        res = filesystems.resolver(ev)
        for vol in volumes:
            if not vol.fs_type:
                continue
            try:
                for rec in filesystems.walk(res, vol, out["problems"], plain=plain):
                    if type(rec) is tuple:
                        out["plain"] += 1
                        rec = plain_record(plain_common(vol), rec)
                    out["records"].append(rec)
            except Exception as exc:    # noqa: BLE001 - compared, not judged, here
                out["errors"].append(f"{vol.offset}: {type(exc).__name__}: {exc}")
        starts = {k: sorted(v) for k, v in res.deleted_starts.items()}
        res.close()
        ev.close()
    return {**out, "served": served, "starts": starts}


def _same(a: dict, b: dict) -> None:
    assert len(a["records"]) == len(b["records"])
    for x, y in zip(a["records"], b["records"]):
        assert x == y and x.prov.key == y.prov.key and x.pieces == y.pieces, (x, y)
    assert a["problems"] == b["problems"]
    assert a["starts"] == b["starts"]
    assert a["errors"] == b["errors"]


@pytest.mark.parametrize("name", ["ext4", "fat12", "fat16", "mbr", "gpt"])
def test_same_walk_as_pytsk3(images, name, monkeypatch):
    image = images[name]
    py = _walk(image.path, False, monkeypatch)
    c = _walk(image.path, True, monkeypatch)
    _same(py, c)
    assert py["records"] and not any(served for _, served in py["served"])
    # every ext and FAT volume went through the C lister (NTFS never does)
    direct = {off for off, fs in zip(image.offsets, image.fs_types) if fs != "ntfs"}
    assert {off for off, served in c["served"] if served} == direct
    # deleted files too (FAT keeps a deleted name without its first letter)
    assert any(not r.allocated and not r.is_dir for r in c["records"])
    # most files of the volumes it served came as plain tuples
    assert c["plain"] > sum(not r.is_dir and r.prov.volume_offset in direct
                            for r in c["records"]) // 2


def test_same_walk_on_the_synth_fleet(synth_fleet, monkeypatch):
    """dev01: FAT32 beside NTFS, with deleted and orphan files; dev05: bare ext4."""
    for dev in ("dev01.raw", "dev05.raw"):
        path = synth_fleet / "devices" / dev
        py, c = _walk(path, False, monkeypatch), _walk(path, True, monkeypatch)
        _same(py, c)
        assert any(served for _, served in c["served"])
        if dev == "dev01.raw":
            fat = [r for r in c["records"] if r.fs_type == "fat32"]
            assert any(not r.allocated for r in fat) and any(r.pieces for r in fat)


def test_same_walk_on_damaged_copies(images, tmp_path, monkeypatch):
    """Seeded byte flips where parsers look (superblocks, FATs, inode tables, folders): both
    listers give the same records, gaps and errors, mutant by mutant."""
    differing = []
    checked = 0
    for name in ("ext4", "fat16", "gpt"):
        image = images[name]
        for m in write_mutants([Path(image.path)], tmp_path / name, 12, 19, list(image.offsets)):
            py, c = _walk(m.path, False, monkeypatch), _walk(m.path, True, monkeypatch)
            checked += 1
            try:
                _same(py, c)
            except AssertionError:
                differing.append(f"{name} {m.how}")
    assert checked == 36 and not differing, differing


def test_files_in_several_runs(fragmented, monkeypatch):
    """Pieces of a fragmented file, in order, read back to its content; both listers agree,
    and with fewer pieces allowed than a file has, both leave it to TSK's read."""
    img, contents = fragmented
    py, c = _walk(img, False, monkeypatch), _walk(img, True, monkeypatch)
    _same(py, c)
    raw = img.read_bytes()
    by_name = {r.name: r for r in c["records"] if r.allocated}
    big = by_name["big.bin"]
    assert len(big.pieces) >= 3
    for name, data in contents.items():
        pieces = by_name[name].pieces
        assert b"".join(raw[a:a + n] for a, n in pieces) == data
    monkeypatch.setattr(filesystems, "MAX_PIECES", 2)
    py, c = _walk(img, False, monkeypatch), _walk(img, True, monkeypatch)
    _same(py, c)
    capped = {r.name: r for r in c["records"] if r.allocated}
    assert capped["big.bin"].pieces == () and capped["big.bin"].type == big.type
    assert all(capped[n].pieces == by_name[n].pieces for n in contents
               if len(by_name[n].pieces) <= 2)


def test_first_bytes_come_from_the_pieces(images):
    """A file in pieces: the C lister's first bytes are the image's at its first piece, and
    TSK's own read of the file."""
    image = images["ext4"]
    pytsk3 = filesystems.pytsk3
    img = pytsk3.Img_Info(str(image.path))
    fs = pytsk3.FS_Info(img)
    walker = _tskwalk.Walker(str(image.path), 0, int(fs.info.ftype), os.path.getsize(image.path),
                             8, 4096)
    raw = Path(image.path).read_bytes()
    stack, seen = [int(fs.info.root_inum)], 0
    while stack:
        walker.opendir(stack.pop())
        names, error, done = walker.read(10_000)
        assert error is None and done
        for name, addr, _alloc, is_dir, facts, head, pieces, _first, _entry in names:
            if is_dir and facts is not None:
                stack.append(addr)
            if pieces:
                start, length = pieces[0]
                want = min(8, facts[0])
                assert head == raw[start:start + want]
                assert head == fs.open_meta(inode=addr).read_random(0, want)
                seen += 1
    walker.close()
    assert seen >= 5


def test_unopenable_volumes_are_listed_by_pytsk3(images, monkeypatch):
    """A volume TSK's raw reader will not open, or a split raw image (not one file): pytsk3
    lists it, and the records are the same."""
    py = _walk(images["ext4"].path, False, monkeypatch)

    def refuse(*args, **kwargs):
        raise OSError("tskwalk: (open) refused")

    monkeypatch.setattr(_tskwalk, "Walker", refuse)
    refused = _walk(images["ext4"].path, True, monkeypatch)
    assert refused["served"] == [(0, False)]
    _same(py, refused)
    monkeypatch.undo()
    split = _walk(images["ext4_split"].path, True, monkeypatch)
    assert split["served"] == [(0, False)]
    assert [r.prov.path for r in split["records"]] == [r.prov.path for r in py["records"]]


def test_the_lister_reads_the_file_the_evidence_holds(images, tmp_path, monkeypatch):
    """A file put in the image's place after it was opened is never listed instead (the C
    lister opens the held file, not the name again)."""
    image = tmp_path / "held.raw"
    image.write_bytes(images["ext4"].path.read_bytes())
    want = _walk(image, False, monkeypatch)
    ev = open_evidence(str(image))
    volumes, _ = discover(ev)
    other = tmp_path / "other.raw"
    other.write_bytes(images["fat16"].path.read_bytes())
    os.replace(other, image)                    # the name now holds another file system
    listed = []
    with monkeypatch.context() as m:
        real = filesystems._native_lister
        m.setattr(filesystems, "_native_lister",
                  lambda *a: listed.append(real(*a)) or listed[-1])
        res = filesystems.resolver(ev)
        got = [r for v in volumes if v.fs_type for r in filesystems.walk(res, v)]
    assert listed and listed[0] is not None
    assert got == want["records"]
    ev.close()


def test_a_folder_is_read_in_steps(images, monkeypatch):
    """Three names at a time: the same walk (a folder of a million names is never a million
    tuples at once)."""
    py = _walk(images["ext4"].path, False, monkeypatch)
    monkeypatch.setattr(filesystems, "FOLDER_STEP", 3)
    c = _walk(images["ext4"].path, True, monkeypatch)
    _same(py, c)
    image = images["ext4"]
    walker = _tskwalk.Walker(str(image.path), 0, 0x2000, os.path.getsize(image.path), 64, 4096)
    total = walker.opendir(2)
    steps = []
    while True:
        names, error, done = walker.read(2)
        steps.append(len(names))
        if done:
            break
    assert error is None and sum(steps) == total - 2 and len(steps) >= total // 2
    assert walker.read(5) == ([], None, True)       # nothing open: nothing more
    walker.close()


def test_a_folder_that_fails_part_way_keeps_the_names_before_it():
    class Failing:
        def __init__(self):
            self.steps = [([1, 2], None, False), ([3], "Error opening File: bad entry", True)]

        def read(self, n):
            return self.steps.pop(0)

    got = []
    with pytest.raises(OSError, match="Error opening File"):
        for n in filesystems._read_folder(Failing().read):
            got.append(n)
    assert got == [1, 2, 3]
    # in a scan's walk the names before it are kept and the rest of the volume is a gap
    from workers.tasks import _guarded
    from triage.records import SCAN_INCOMPLETE, FileRecord, Provenance, VolumeRef
    vol = VolumeRef(device_id="d", index=0, offset=0, length=1 << 20, description="",
                    fs_type="ext4")

    def rec(inode, size):
        return FileRecord(prov=Provenance("d", 0, inode, f"/f{inode}"), name=f"f{inode}",
                          size=size, allocated=True, fs_type="ext4")

    class Listing(Failing):
        def __init__(self):
            self.steps = [([rec(1, 1000), rec(2, 3000)], None, False),
                          ([rec(3, 500)], "Error opening File: bad entry", True)]

    problems = []
    got = list(_guarded(filesystems._read_folder(Listing().read), "d", vol, problems))
    assert [r.prov.inode for r in got] == [1, 2, 3]
    [gap] = problems
    assert gap.kind == SCAN_INCOMPLETE and "Error opening File: bad entry" in gap.reason
    # the gap holds what the volume holds beyond the files listed, so it ranks as unexamined
    assert gap.bytes_not_examined == (1 << 20) - 4500


def test_a_folder_that_cannot_be_opened_is_a_gap(images):
    image = images["ext4"]
    walker = _tskwalk.Walker(str(image.path), 0, 0x2000, os.path.getsize(image.path), 64, 4096)
    with pytest.raises(OSError, match="Unable to open directory"):
        walker.opendir(10 ** 12)
    with pytest.raises(ValueError):
        walker.read(0)
    # read_plain's table is filetype.SNIFF_RULES' shape, or refused
    from triage.filetype import SNIFF_RULES
    for rules in ([], (("x", ((-1, b"a"),)),), (("x", ((0, "a"),)),), ((1, ()),)):
        with pytest.raises((TypeError, ValueError)):
            walker.read_plain(5, "/", "/$OrphanFiles/", rules)
    with pytest.raises(TypeError):
        walker.read_plain(5, b"/", "/$OrphanFiles/", SNIFF_RULES)
    walker.opendir(2)
    every = walker.read_plain(100, "/", "/$OrphanFiles/", SNIFF_RULES)[0]
    # a table that types everything: no name comes as a plain file's fields
    walker.opendir(2)
    typed = walker.read_plain(100, "/", "/$OrphanFiles/", (("any", ()),))[0]
    assert len(every) == len(typed) and {len(t) for t in typed} == {9}
    assert any(len(t) == len(filesystems.PLAIN_FIELDS) and t[1] == "/" + t[2] for t in every)
    walker.close()
    with pytest.raises(RuntimeError, match="closed"):
        walker.opendir(2)
    with pytest.raises(RuntimeError, match="closed"):
        walker.read_plain(5, "/", "/$OrphanFiles/", SNIFF_RULES)
