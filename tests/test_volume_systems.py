"""APFS (libfsapfs) and LVM (libvslvm) on the public test images, against The Sleuth Kit's
listing of the same images (tests/data/reference/*.tsk, made by make_references.sh: TSK 4.11
reads the APFS pool itself, and the LVM logical volume's file system once libyal has taken the
volume out of the QCOW2): the same paths, sizes and content MD5s."""
from __future__ import annotations

import hashlib
from pathlib import Path


from triage.device import discover
from triage.evidence import open_evidence
from triage.filesystems import read_chunks, walk
from triage.records import ENCRYPTED, UNSUPPORTED_VOLUME
from triage.volumes import nested_of

DATA = Path(__file__).resolve().parent / "data"
IMAGES = DATA / "dfvfs" / "more"          # vendored, Apache-2.0 (LICENSE-dfvfs-test-data.txt)


def reference(name: str) -> dict[str, tuple[int, int, str]]:
    """path -> (inode, size, md5 or '-') from a TSK reference file."""
    out = {}
    for line in (DATA / "reference" / name).read_text().splitlines():
        inode, size, md5, path = line.split("\t")
        out[path] = (int(inode), int(size), md5)
    return out


def listing(path: Path) -> tuple[list, list, dict]:
    with open_evidence(path) as ev:
        vols, cov = discover(ev)
        out = {}
        for v in vols:
            for r in walk(ev, v):
                md5 = "-"
                if not r.is_dir and r.type != "inode/symlink":
                    md5 = hashlib.md5(b"".join(bytes(c) for c in read_chunks(ev, r.prov))).hexdigest()
                out[r.path] = (r, md5)
        return vols, cov, out


def test_apfs_listing_equals_the_tsk_reference():
    vols, cov, found = listing(IMAGES / "apfs.raw")
    [vol] = vols
    assert vol.fs_type == "apfs" and vol.label == "apfs_test" and nested_of(vol.offset) == (0, 0)
    assert [c.kind for c in cov] == ["unallocated space not carved"]     # not measured: a gap
    ref = reference("apfs.raw.tsk")
    # every path TSK lists, with its inode (APFS object id), size and content
    for path, (inode, size, md5) in ref.items():
        rec, got = found[path]
        assert rec.prov.inode == inode, path
        if md5 != "-":
            assert (rec.size, got) == (size, md5), path
        assert rec.mtime and abs(rec.mtime - 1642144781) < 1
    # and nothing else but the resource fork, TSK's own reading of which is the file's size 0
    extra = set(found) - set(ref)
    assert extra == {"/a_directory/a_resourcefork:com.apple.ResourceFork"}
    fork, md5 = found["/a_directory/a_resourcefork:com.apple.ResourceFork"]
    assert fork.size > 0 and fork.prov.ads == "com.apple.ResourceFork"


def test_lvm_logical_volume_listing_equals_the_tsk_reference():
    vols, cov, found = listing(IMAGES / "lvm.qcow2")
    [vol] = vols
    assert vol.fs_type == "ext2" and "LVM test_volume_group/test_logical_volume" in vol.description
    assert nested_of(vol.offset) == (0, 0) and vol.length == 4 * 1024 * 1024
    # the physical volume's extents in no logical volume are not dropped: carved as
    # unpartitioned space (from the end of the largest logical volume's size on)
    [rest] = [c for c in cov if c.kind == "unpartitioned space not carved"]
    assert rest.bytes_not_examined == 8 * 1024 * 1024 - vol.length
    ref = reference("lvm.qcow2.lv0.tsk")
    assert set(found) == set(ref)
    for path, (inode, size, md5) in ref.items():
        rec, got = found[path]
        assert (rec.prov.inode, rec.size) == (inode, size), path
        if md5 != "-":
            assert got == md5, path


def test_an_lvm_volume_libvslvm_cannot_read_is_a_gap(tmp_path, monkeypatch):
    """A thin volume or snapshot (which libvslvm does not read): the volume is a gap with its
    bytes, never dropped."""
    import triage.volumes as volumes
    real = volumes.lvm_volumes

    def thin(evidence, offset, length):
        group, lvs = real(evidence, offset, length)
        return group, lvs + [(1, "thin_pool_lv", 1 << 20, "libvslvm cannot read it (thin volume)")]
    monkeypatch.setattr(volumes, "lvm_volumes", thin)
    monkeypatch.setattr("triage.device.lvm_volumes", thin)
    with open_evidence(IMAGES / "lvm.qcow2") as ev:
        vols, cov = discover(ev)
    assert [v.fs_type for v in vols] == ["ext2", None]
    [gap] = [c for c in cov if c.kind == UNSUPPORTED_VOLUME]
    assert gap.bytes_not_examined == 1 << 20 and "thin" in gap.reason
    assert nested_of(gap.where.volume_offset) == (0, 1)


def test_a_locked_apfs_volume_is_a_gap_or_unlocks(monkeypatch):
    """libfsapfs reports the volume locked (no encrypted public image is small enough to vendor):
    without a key it is an 'encrypted' gap; a wrong password is one line, never a traceback."""
    unlocked = {"ok": False}

    class Locked:
        def __init__(self, real):
            self._real = real
            self.name = real.name

        def is_locked(self):
            return not unlocked["ok"]

        def set_password(self, pw):
            self.pw = pw

        def set_recovery_password(self, key):
            self.pw = key

        def unlock(self):
            unlocked["ok"] = getattr(self, "pw", None) == "right"
            return unlocked["ok"]

        def __getattr__(self, name):
            return getattr(self._real, name)

    from triage.apfs import Container
    real_get = Container._get
    monkeypatch.setattr(Container, "_get", lambda self, i: Locked(real_get(self, i)))
    with open_evidence(IMAGES / "apfs.raw") as ev:
        vols, cov = discover(ev)
        assert [v.fs_type for v in vols] == [None]
        [gap] = [c for c in cov if c.kind == ENCRYPTED]
        assert "locked" in gap.reason and "\n" not in gap.reason
    with open_evidence(IMAGES / "apfs.raw") as ev:
        vols, cov = discover(ev, password="wrong")
        [gap] = [c for c in cov if c.kind == ENCRYPTED]
        assert gap.reason.endswith("the key or password does not unlock it")
    with open_evidence(IMAGES / "apfs.raw") as ev:
        vols, cov = discover(ev, password="right")
        assert [v.fs_type for v in vols] == ["apfs"] and "unlocked" in vols[0].description
        assert "/passwords.txt" in {r.path for r in walk(ev, vols[0])}


def test_shadow_copy_file_is_listed_with_its_snapshot_and_read_from_it():
    """vsstest.qcow2: /syslog was deleted after the first shadow copy (the live volume holds
    /syslog.gz, its gzip'd copy). The copy's /syslog is listed with the snapshot in its
    provenance, its content is exactly what the live syslog.gz inflates to, and files the
    copies share with the live volume (or with an earlier copy) are not listed twice."""
    import gzip
    from triage.store import file_rows
    from triage.records import Features, Provenance
    with open_evidence(IMAGES / "vsstest.qcow2") as ev:
        [vol] = discover(ev)[0]
        recs = list(walk(ev, vol))
        live = {r.path: r for r in recs if not r.prov.snapshot}
        snap = [r for r in recs if r.prov.snapshot]
        [syslog] = [r for r in snap if r.path == "/syslog"]
        assert syslog.prov.snapshot == "vss1:{600f0b69-5bdf-11e3-9d6c-005056c00008}"
        assert "/syslog" not in live
        content = b"".join(bytes(c) for c in read_chunks(ev, syslog.prov))
        assert content == gzip.decompress(b"".join(read_chunks(ev, live["/syslog.gz"].prov)))
        assert len(content) == syslog.size == 1247
        # nothing identical to the live volume comes back from a copy, nor twice from two
        keys = [(r.prov.inode, r.prov.attr_id, r.path, r.size, r.mtime) for r in snap]
        assert len(keys) == len(set((k[:3] + k[3:]) for k in keys))
        for r in snap:
            same = live.get(r.path)
            assert same is None or (same.size, same.mtime, same.ctime) != (r.size, r.mtime, r.ctime)
        assert {r.prov.snapshot.split(":")[0] for r in snap} == {"vss1", "vss2"}
        # the snapshot survives the case store's row and comes back in the provenance
        [row] = file_rows("vsstest.qcow2", "b1", [(syslog, Features(key=syslog.key, size=1247))])
        assert "vss1:{600f0b69" in str(row)
        assert Provenance.from_dict(syslog.prov.to_dict()) == syslog.prov
        assert syslog.key != live["/syslog.gz"].key
