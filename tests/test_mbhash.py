"""Multi-buffer MD5 and SHA-1: the C kernel must give hashlib's digests for every length,
every way the content is split into buffers, and every number of files (lanes refilled, lanes
left idle); the batch must use it only where it holds, and fall back to hashlib cleanly."""
from __future__ import annotations

import hashlib
import mmap
import random

import pytest

from triage.features import hashing
from triage.records import FileRecord, Provenance
from workers import batch as batch_mod
from workers.plan import BatchSpec

# `make deps` builds the kernel (gcc is installed with it): a missing build fails here.
from triage.features import _mbhash  # noqa: E402


def _split(rnd: random.Random, data: bytes) -> list[bytes]:
    cuts = sorted(rnd.randrange(len(data) + 1) for _ in range(rnd.randrange(5)))
    return [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]


def _both(data: bytes) -> bytes:
    return hashlib.md5(data).digest() + hashlib.sha1(data).digest()


def _cases(seed: int, lengths) -> list[tuple[bytes, list[bytes]]]:
    rnd = random.Random(seed)
    out = []
    for n in lengths:
        data = rnd.randbytes(n)
        out.append((data, _split(rnd, data)))
    return out


KERNELS = ("avx512", "avx2", "scalar")
BEST = _mbhash.best_kernel()
RUNS = KERNELS[KERNELS.index(BEST):]          # the kernels this CPU can run
ENGINES = {"avx512": "multi-buffer AVX-512", "avx2": "multi-buffer AVX2", "scalar": "hashlib"}


@pytest.mark.parametrize("kernel", KERNELS)
def test_every_length_and_split_gives_hashlibs_digests(kernel):
    if kernel not in RUNS:
        pytest.skip(f"this CPU does not run {kernel}")
    rnd = random.Random(7)
    # every padding case (0..200 bytes: one or two final blocks), block edges, and large ones
    lengths = list(range(201)) + [511, 512, 513, 4095, 4096, 4097] + \
        [rnd.randrange(1, 300_000) for _ in range(60)]
    cases = _cases(1, lengths)
    files = [pieces for _, pieces in cases]
    assert _mbhash.hash_many(files, kernel=kernel) == [_both(d) for d, _ in cases]
    assert _mbhash.hash_many(files, sha1=False, kernel=kernel) == [hashlib.md5(d).digest()
                                                               for d, _ in cases]


@pytest.mark.parametrize("kernel", KERNELS[:2])
def test_lanes_refill_with_files_of_very_different_sizes(kernel):
    if kernel not in RUNS:
        pytest.skip(f"this CPU does not run {kernel}")
    # more files than lanes, one long one among short ones: lanes finish at different blocks
    lengths = [3_000_000] + [64 * k + 7 for k in range(40)] + [1_000_000, 0, 1]
    cases = _cases(2, lengths)
    assert _mbhash.hash_many([pieces for _, pieces in cases], kernel=kernel) == \
        [_both(d) for d, _ in cases]


def test_views_of_a_mapping_and_empty_inputs(tmp_path):
    data = random.Random(3).randbytes(1 << 20)
    path = tmp_path / "img.raw"
    path.write_bytes(data)
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as m:
        view = memoryview(m)
        files = [[view[i * 4096:(i + 1) * 4096 + 100]] for i in range(20)]
        files.append([view[0:10], view[10:70_000]])
        got = _mbhash.hash_many(files)
        want = [_both(b"".join(bytes(p) for p in f)) for f in files]
        del files, view
    assert got == want
    assert _mbhash.hash_many([]) == []
    assert _mbhash.hash_many([[]]) == [_both(b"")]


def test_wrong_arguments_raise_type_errors_not_crashes():
    with pytest.raises(TypeError):
        _mbhash.hash_many([["not bytes"]])
    with pytest.raises(TypeError):
        _mbhash.hash_many(5)
    with pytest.raises(TypeError):
        _mbhash.hash_many([5])
    with pytest.raises(ValueError, match="not one this CPU runs"):
        _mbhash.hash_many([[b"x"]], kernel="sse9")


def _small_buffer(seed: int) -> tuple[bytes, list, list]:
    """A buffer with signatures planted in it, and files of it given by their pieces: whole
    pieces, heads split across pieces (a signature cut in two), and every way a file's pieces
    can fail (outside the buffer, empty, none, short of the declared size)."""
    from triage.filetype import SNIFF_RULES
    rnd = random.Random(seed)
    data = bytearray(rnd.randbytes(2 << 20))
    files, sizes = [], []
    at = 0
    for mime, parts in SNIFF_RULES * 3:
        for off, sig in parts:
            data[at + off:at + off + len(sig)] = sig
        n = rnd.choice([1, 5, 12, 64, 300, 511, 512, 513, 2000, 6000])
        cut = rnd.randrange(1, n + 1)
        pieces = ((at, cut), (at + 6500, n - cut)) if cut < n else ((at, n),)
        files.append(list(pieces) if rnd.random() < 0.5 else pieces)
        sizes.append(n)
        at += 13_000
    assert len(data) == 2 << 20         # every planted signature inside the buffer
    files += [((len(data) - 10, 20),), ((-1, 5),), ((100, 0),), (), ((0, 100), (len(data), 1)),
              ((0, 100),), ((0, len(data)),)]
    sizes += [20, 5, 0, 0, 101, 99, len(data)]
    return bytes(data), files, sizes


@pytest.mark.parametrize("kernel", KERNELS)
def test_small_files_hash_and_sniff_pieces_of_a_buffer_as_hashlib_and_sniff_do(kernel):
    """The C path for small files (hashing.hash_small): each file's MD5, SHA-1 and content
    type by filetype.SNIFF_RULES, as hashlib and `sniff` give them for the concatenation of its
    pieces; None for a file whose pieces leave the buffer, are empty, or fall short of or
    exceed its size."""
    from triage.filetype import SNIFF_RULES, sniff
    if kernel not in RUNS:
        pytest.skip(f"this CPU does not run {kernel}")
    data, files, sizes = _small_buffer(11)
    got = _mbhash.small_files(memoryview(data), files, sizes, SNIFF_RULES,
                              hashing.SNIFF_BYTES, kernel=kernel)
    typed = 0
    for pieces, size, one in zip(files, sizes, got):
        ok = bool(pieces) and all(0 <= a and 0 < n and a + n <= len(data) for a, n in pieces) \
            and sum(n for _, n in pieces) == size
        if not ok:
            assert one is None, pieces
            continue
        content = b"".join(data[a:a + n] for a, n in pieces)
        assert one == (hashlib.md5(content).hexdigest(), hashlib.sha1(content).hexdigest(),
                       sniff(content[:hashing.SNIFF_BYTES])), pieces
        typed += one[2] != ""
    assert typed > len(SNIFF_RULES) and got.count(None) == 6
    assert _mbhash.small_files(data, [], [], SNIFF_RULES, 512) == []
    # through the engine's own choice of kernel
    assert hashing.hash_small(data, files, sizes) == got


def test_small_files_wrong_arguments_raise_not_crash():
    from triage.filetype import SNIFF_RULES
    data = b"x" * 100
    for files, sizes, rules, err in (
            ([((0, 1),)], [1, 2], SNIFF_RULES, ValueError),       # a size for each file
            ([5], [1], SNIFF_RULES, TypeError),                    # pieces not a sequence
            ([((0, 1),)], [1], (("x", ((-1, b"a"),)),), ValueError),
            ([((0, 1),)], [1], (("x", ((0, "a"),)),), TypeError),
            ([((0, 1),)], [1], ((5, ()),), TypeError),
            ([((0, 1),)], ["1"], SNIFF_RULES, TypeError)):
        with pytest.raises(err):
            _mbhash.small_files(data, files, sizes, rules, 512)
    with pytest.raises(TypeError):
        _mbhash.small_files("not a buffer", [], [], SNIFF_RULES, 512)
    with pytest.raises(ValueError, match="not one this CPU runs"):
        _mbhash.small_files(data, [], [], SNIFF_RULES, 512, kernel="sse9")
    # a piece that is not (offset, length) of ints is no read, not an error
    assert _mbhash.small_files(data, [(("a", 1),), ((0,),), ((0, 2**70),)], [1, 1, 1],
                               SNIFF_RULES, 512) == [None] * 3


def _hex(data: bytes) -> hashing.Digests:
    return hashing.Digests(hashlib.md5(data).hexdigest(), hashlib.sha1(data).hexdigest())


def test_hash_many_and_engine_agree_with_hashlib():
    for n in (3, 9):      # below MB_MIN_FILES (hashlib) and above (the kernel)
        cases = _cases(4, [0, 1, 55, 56, 64, 1000, 70_000, 123_457, 9][:n])
        assert hashing.hash_many([p for _, p in cases]) == [_hex(d) for d, _ in cases]
    assert hashing.hash_engine() == ENGINES[BEST]


def test_read_once_takes_given_digests_and_still_reads_the_rest():
    data = b"x" * 5000
    given = hashing.Digests("0" * 32, "1" * 40)
    rr = hashing.read_once([data[:100], data[100:]], known=given, sha256=True)
    assert (rr.digests.md5, rr.digests.sha1) == (given.md5, given.sha1)   # not recomputed
    assert rr.digests.sha256 == hashlib.sha256(data).hexdigest()           # still on request
    assert rr.size == 5000 and rr.head == data[:hashing.SNIFF_BYTES]
    assert hashing.read_once([data]).digests == _hex(data)


def test_engine_off_switch_and_missing_kernel(monkeypatch):
    monkeypatch.setenv("TRIAGE_MBHASH", "0")
    hashing._kernel.cache_clear()
    hashing.hash_engine.cache_clear()
    try:
        assert hashing.hash_engine() == "hashlib"
        assert hashing.hash_many([[b"abc"]] * 5) == [_hex(b"abc")] * 5
        # a batch then streams file by file: read_group hands nothing back
        assert batch_mod.Backend().read_group(None, [_rec("/a", 3)] * 5, 1024) == [None] * 5
        if "avx2" in RUNS:        # a CPU without AVX-512, as far as the scan can tell
            monkeypatch.setenv("TRIAGE_MBHASH", "avx2")
            hashing._kernel.cache_clear()
            hashing.hash_engine.cache_clear()
            assert hashing.hash_engine() == "multi-buffer AVX2"
            cases = _cases(8, [100_000 + k for k in range(12)])
            assert hashing.hash_many([p for _, p in cases]) == [_hex(d) for d, _ in cases]
    finally:
        monkeypatch.delenv("TRIAGE_MBHASH")
        hashing._kernel.cache_clear()
        hashing.hash_engine.cache_clear()


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
        self.given = {}

    def read_chunks(self, evidence, prov, chunk_size):
        data = evidence.files[prov.path]
        if data is None:
            raise OSError("read error at sector 99")
        for i in range(0, len(data), chunk_size):
            yield data[i:i + chunk_size]

    def analyse(self, record, chunks, feature_options, known=None):
        self.given[record.path] = known
        return super().analyse(record, chunks, feature_options, known=known)


@pytest.mark.skipif(BEST == "scalar", reason="no AVX2 or AVX-512 here: batches use hashlib")
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
    found = {r.path: (f.md5, f.sha1) for r, f in result.items}
    for path, data in files.items():
        if data is not None:
            want = _hex(data)
            assert found[path] == (want.md5, want.sha1), path
            got = backend.given[path]                              # came from the group pass
            assert (got.md5, got.sha1) == found[path]
    assert [c.where for c in result.coverage] == [next(r.prov for r in recs if r.path == "/bad")]
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


def test_a_file_far_longer_than_the_rest_goes_to_hashlib_and_all_digests_hold():
    # one 4 MB file among 20 small ones would keep the kernel running for it alone
    assert hashing._alone([4_000_000] + [50_000] * 20) == 1
    assert hashing._alone([3_400_000] * 16) == 0
    assert hashing._alone([60_000] * 256) == 0
    # the least costly split, against every split tried (the shortcut for groups whose
    # longest file does not outlast the rest included)
    rnd = random.Random(8)
    for kernel in hashing._KERNELS:
        _, rate, lanes = hashing._KERNELS[kernel]
        for _ in range(400):
            if rnd.random() < 0.5:
                sizes = sorted((rnd.choice([rnd.randrange(1, 7000), rnd.randrange(1, 1 << 23)])
                                for _ in range(rnd.randrange(1, 60))), reverse=True)
            else:       # one long file beside others holding 0.2 to 30 times its bytes
                big, m = rnd.randrange(1 << 16, 1 << 23), rnd.randrange(1, 40)
                sizes = [big] + [max(1, int(big * rnd.uniform(0.2, 30) / m))] * m
                sizes.sort(reverse=True)

            def cost(k):
                rest = sum(sizes[k:])
                kernel_s = max(rest / rate, sizes[k] / (rate / lanes)) if k < len(sizes) else 0
                return sum(sizes[:k]) / hashing._HASHLIB_RATE + kernel_s
            best = min(range(len(sizes) + 1), key=lambda k: (cost(k), k))
            assert hashing._alone(sizes, rate, lanes) == best, sizes
    cases = _cases(6, [4_000_000] + [50_000 + k for k in range(20)])
    files = [p for _, p in cases]
    rnd = random.Random(6)
    rnd.shuffle(order := list(range(len(files))))
    got = hashing.hash_many([files[i] for i in order])
    assert got == [_hex(cases[i][0]) for i in order]


def test_files_past_a_whole_number_of_lanes_go_to_hashlib(monkeypatch):
    if BEST == "scalar":
        pytest.skip("no vector kernel here")
    lanes = {"avx512": 16, "avx2": 8}[BEST]
    sent = []
    module, name = hashing._kernel()

    class Spy:
        @staticmethod
        def hash_many(files, kernel=None):
            sent.append(len(files))
            return module.hash_many(files, kernel=kernel)

    monkeypatch.setattr(hashing, "_kernel", lambda: (Spy, name))
    cases = _cases(9, [70_000 + k for k in range(lanes + 1)])       # one past a full pass
    assert hashing.hash_many([p for _, p in cases]) == [_hex(d) for d, _ in cases]
    assert sent == [lanes]
