"""Multi-buffer MD5: the C kernel must give hashlib's MD5 for every length, every way the
content is split into buffers, and every number of files (lanes refilled, lanes left idle);
the batch must use it only where it holds, and fall back to hashlib cleanly."""
from __future__ import annotations

import hashlib
import mmap
import random

import pytest

from triage.features import hashing
from triage.records import FileRecord, Provenance
from workers import batch as batch_mod
from workers.plan import BatchSpec

_md5mb = pytest.importorskip("triage.features._md5mb",
                             reason="the C kernel is not built (no compiler): hashlib is used")


def _split(rnd: random.Random, data: bytes) -> list[bytes]:
    cuts = sorted(rnd.randrange(len(data) + 1) for _ in range(rnd.randrange(5)))
    return [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]


def _cases(seed: int, lengths) -> list[tuple[bytes, list[bytes]]]:
    rnd = random.Random(seed)
    out = []
    for n in lengths:
        data = rnd.randbytes(n)
        out.append((data, _split(rnd, data)))
    return out


@pytest.mark.parametrize("simd", [True, False])
def test_every_length_and_split_gives_hashlibs_md5(simd):
    if simd and not _md5mb.simd():
        pytest.skip("this CPU has no AVX-512")
    rnd = random.Random(7)
    # every padding case (0..200 bytes: one or two final blocks), block edges, and large ones
    lengths = list(range(201)) + [511, 512, 513, 4095, 4096, 4097] + \
        [rnd.randrange(1, 300_000) for _ in range(60)]
    cases = _cases(1, lengths)
    got = _md5mb.md5_many([pieces for _, pieces in cases], simd=simd)
    want = [hashlib.md5(d).digest() for d, _ in cases]
    assert got == want


def test_lanes_refill_with_files_of_very_different_sizes():
    # more files than lanes, one long one among short ones: lanes finish at different blocks
    lengths = [3_000_000] + [64 * k + 7 for k in range(40)] + [1_000_000, 0, 1]
    cases = _cases(2, lengths)
    got = _md5mb.md5_many([pieces for _, pieces in cases])
    assert got == [hashlib.md5(d).digest() for d, _ in cases]


def test_views_of_a_mapping_and_empty_inputs(tmp_path):
    data = random.Random(3).randbytes(1 << 20)
    path = tmp_path / "img.raw"
    path.write_bytes(data)
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as m:
        view = memoryview(m)
        files = [[view[i * 4096:(i + 1) * 4096 + 100]] for i in range(20)]
        files.append([view[0:10], view[10:70_000]])
        got = _md5mb.md5_many(files)
        want = [hashlib.md5(b"".join(bytes(p) for p in f)).digest() for f in files]
        del files, view
    assert got == want
    assert _md5mb.md5_many([]) == []
    assert _md5mb.md5_many([[]]) == [hashlib.md5(b"").digest()]


def test_wrong_arguments_raise_type_errors_not_crashes():
    with pytest.raises(TypeError):
        _md5mb.md5_many([["not bytes"]])
    with pytest.raises(TypeError):
        _md5mb.md5_many(5)
    with pytest.raises(TypeError):
        _md5mb.md5_many([5])


def test_md5_many_and_engine_agree_with_hashlib():
    cases = _cases(4, [0, 1, 55, 56, 64, 1000, 70_000, 123_457])
    assert hashing.md5_many([p for _, p in cases]) == [hashlib.md5(d).hexdigest() for d, _ in cases]
    assert hashing.md5_engine() == ("multi-buffer AVX-512" if _md5mb.simd() else "hashlib")


def test_read_once_takes_a_given_md5_and_still_hashes_the_rest():
    data = b"x" * 5000
    rr = hashing.read_once([data[:100], data[100:]], md5="0" * 32)
    assert rr.digests.md5 == "0" * 32           # taken as given, not recomputed
    assert rr.digests.sha1 == hashlib.sha1(data).hexdigest()
    assert hashing.read_once([data]).digests.md5 == hashlib.md5(data).hexdigest()


def test_engine_off_switch_and_missing_kernel(monkeypatch):
    monkeypatch.setenv("TRIAGE_MD5MB", "0")
    hashing._kernel.cache_clear()
    hashing.md5_engine.cache_clear()
    try:
        assert hashing.md5_engine() == "hashlib"
        assert hashing.md5_many([[b"abc"]] * 5) == [hashlib.md5(b"abc").hexdigest()] * 5
    finally:
        monkeypatch.delenv("TRIAGE_MD5MB")
        hashing._kernel.cache_clear()
        hashing.md5_engine.cache_clear()


def _rec(path: str, size: int) -> FileRecord:
    return FileRecord(prov=Provenance(device_id="d", volume_offset=0, inode=len(path), path=path),
                      name=path.rsplit("/", 1)[-1], size=size, allocated=True, fs_type="ext4")


def test_groups_keep_order_bound_bytes_and_put_big_files_alone():
    big = batch_mod.GROUP_FILE_MAX + 1
    recs = [_rec("/a", 10), _rec("/b", big), _rec("/c", 20), _rec("/d", 30)]
    groups = list(batch_mod._groups(recs))
    assert [[r.path for r in g] for g in groups] == [["/a"], ["/b"], ["/c", "/d"]]
    many = [_rec(f"/f{i}", batch_mod.GROUP_FILE_MAX) for i in range(9)]
    sizes = [sum(r.size for r in g) for g in batch_mod._groups(many)]
    assert all(s <= batch_mod.GROUP_BYTES for s in sizes) and sum(sizes) == 9 * batch_mod.GROUP_FILE_MAX


class _Evidence:
    """Content by path; counts how views are let go."""

    def __init__(self, files: dict):
        self.files = files
        self.released = 0
        self.held_blocks = 0

    def held(self):
        import contextlib

        @contextlib.contextmanager
        def block():
            self.held_blocks += 1
            yield self
        return block()


class _Backend(batch_mod.Backend):
    def __init__(self):
        self.md5_given = {}

    def read_chunks(self, evidence, prov, chunk_size):
        data = evidence.files[prov.path]
        if data is None:
            raise OSError("read error at sector 99")
        for i in range(0, len(data), chunk_size):
            yield data[i:i + chunk_size]

    def analyse(self, record, chunks, feature_options, md5=None):
        self.md5_given[record.path] = md5
        return super().analyse(record, chunks, feature_options, md5=md5)


@pytest.mark.skipif(not _md5mb.simd(), reason="this CPU has no AVX-512: batches use hashlib")
def test_a_batch_hashes_its_group_together_and_a_bad_file_stays_coverage():
    rnd = random.Random(5)
    files = {f"/f{i}": rnd.randbytes(rnd.randrange(0, 200_000)) for i in range(20)}
    files["/bad"] = None
    backend = _Backend()
    ev = _Evidence(files)
    ctx = batch_mod.WorkerContext(backend)
    ctx._evidence[(("x",), "d")] = ev
    recs = tuple(_rec(p, len(d) if d is not None else 4096) for p, d in files.items())
    spec = BatchSpec(device_id="d", batch_id="v0-t3-00000", volume_offset=0, tier=3, records=recs)
    opts = batch_mod.ScanOptions(mode="full", pictures=False, archives=False, chunk_size=65536)
    result = batch_mod.scan_batch(ctx, ("x",), spec, opts)
    md5s = {r.path: f.md5 for r, f in result.items}
    for path, data in files.items():
        if data is not None:
            assert md5s[path] == hashlib.md5(data).hexdigest(), path
            assert backend.md5_given[path] == md5s[path]     # came from the group pass
    assert [c.where for c in result.coverage] == [next(r.key for r in recs if r.path == "/bad")]
    assert "read error at sector 99" in result.coverage[0].reason
    assert ev.held_blocks == 1


def test_held_views_go_together_at_the_end(tmp_path):
    from triage.evidence import Evidence, RawSource
    from triage.records import EvidenceRef
    path = tmp_path / "img.raw"
    path.write_bytes(b"\1" * (1 << 20))
    src = RawSource([str(path)])
    calls = []
    real_release, real_all = src.release, src.release_all
    src.release = lambda o, n: (calls.append(("one", o)), real_release(o, n))
    src.release_all = lambda: (calls.append(("all",)), real_all())
    ev = Evidence(ref=EvidenceRef(device_id="d", paths=(str(path),), format="raw",
                                  media_size=1 << 20), source=src, img=None)
    with ev.held():
        assert bytes(ev.view(0, 4096)) == b"\1" * 4096
        ev.release(0, 4096)
        with ev.held():
            ev.release(4096, 4096)
        assert calls == []                    # nothing goes while a group still holds views
    assert calls == [("all",)]
    ev.release(0, 4096)
    assert calls[-1] == ("one", 0)
    src.close()
