"""E01 chunks that fail their checksum are never read as if they were whole (issue 19, item 1).

libewf 20140814 reads a damaged chunk as zeroes and reports success; only its list of checksum
errors tells. EwfSource turns every read that overlaps one into an EvidenceError naming the
sectors, and lets reads elsewhere go on.
"""
from __future__ import annotations

import ctypes
import threading
from contextlib import closing

import pytest

import damaged
from damaged import e01_bad_chunk, ewf_chunks, flip_chunk
from triage.errors import EvidenceError
from triage.evidence import EwfSource, media_hashes, open_evidence

KiB = 1 << 10


@pytest.fixture
def bad(tmp_path):
    """The damaged E01, its raw's bytes, and the E01 opened as an EwfSource."""
    d = e01_bad_chunk(tmp_path)
    with closing(EwfSource([str(d.image)])) as src:
        yield d, d.raw.read_bytes(), src


def acquire(raw, target, compression="best"):
    damaged.run(["ewfacquire", "-u", "-q", "-t", target, "-f", "encase6", "-c", compression, "-d", "sha1",
                 "-C", "c", "-D", "d", "-E", "1", "-e", "t", "-N", "n", "-m", "fixed", "-M", "physical", raw])
    return target.with_name(target.name + ".E01")


def sectors(start: int, length: int) -> str:
    return f"sectors {start // 512}-{(start + length) // 512 - 1}"


@pytest.mark.parametrize("compression", ["best", "none"])
def test_a_clean_e01_reads_as_its_raw(tmp_path, compression):
    raw = damaged._ext4(tmp_path, "clean", {"a.bin": damaged._random_bytes(200_000, 9),
                                            "b.txt": damaged._text_bytes(300_000, 9)}, "4M")
    data = raw.read_bytes()
    with closing(EwfSource([str(acquire(raw, tmp_path / "clean", compression))])) as src:
        assert src.size == len(data)
        whole = b"".join(src.read(off, 64 * KiB) for off in range(0, src.size, 64 * KiB))
        assert whole == data
        for off, size in ((0, 1), (511, 3), (32 * KiB - 5, 10), (src.size - 7, 100), (12345, 98765)):
            assert src.read(off, size) == data[off:off + size]
        assert src.damaged_ranges() == []


def test_a_read_over_the_damaged_chunk_raises_naming_the_sectors(bad):
    d, raw, src = bad
    start, length = d.damaged
    with pytest.raises(EvidenceError, match=f"checksum error in {sectors(start, length)} "
                                            r"\(E01 chunk damaged\)"):
        src.read(start - 100, 200)            # from the chunk before into the damaged one
    assert src.damaged_ranges() == [(start, length)]
    # again, now from libewf's cache, a single byte inside: still refused
    with pytest.raises(EvidenceError, match=sectors(start, length)):
        src.read(start + length // 2, 1)
    with pytest.raises(EvidenceError, match=sectors(start, length)):
        src.read(0, src.size)
    # everything else reads, and right up to both edges of the damage
    for off, size in ((0, 4096), (start - 4096, 4096), (start + length, 4096),
                      (src.size - 4096, 4096), (start - 32 * KiB, 32 * KiB)):
        assert src.read(off, size) == raw[off:off + size], (off, size)
    assert src.damaged_ranges() == [(start, length)]


def test_the_damage_is_seen_whatever_the_read_order(tmp_path):
    """libewf merges neighbouring damaged chunks into one range without a new entry: the second
    of two neighbours, read after the first, must still be refused."""
    d = e01_bad_chunk(tmp_path)
    raw = d.raw.read_bytes()
    size, chunks = ewf_chunks(d.image)
    k = d.damaged[0] // size
    flip_chunk(d.image, chunks[k + 1])
    flip_chunk(d.image, chunks[k + 3])
    with closing(EwfSource([str(d.image)])) as src:
        # the later neighbour first, then the earlier: one range of two chunks
        for chunk in (k + 1, k):
            with pytest.raises(EvidenceError, match="checksum error"):
                src.read(chunk * size + 10, 10)
        assert src.damaged_ranges() == [(k * size, 2 * size)]
        assert src.read((k + 2) * size, size) == raw[(k + 2) * size:(k + 3) * size]
        with pytest.raises(EvidenceError, match=sectors((k + 3) * size, size)):
            src.read((k + 2) * size, 2 * size)
        assert src.damaged_ranges() == [(k * size, 2 * size), ((k + 3) * size, size)]
        for chunk in (k, k + 1, k + 3):           # refused every time after, too
            with pytest.raises(EvidenceError):
                src.read(chunk * size, 1)


def test_threads_never_get_the_zeroes(bad):
    d, raw, src = bad
    start, length = d.damaged
    outcomes, lock = [], threading.Lock()

    def reader(i):
        off = start - 8 * KiB + i * KiB
        try:
            data = src.read(off, 4 * KiB)
            ok = data == raw[off:off + 4 * KiB]
            kind = "clean" if ok else "WRONG"
        except EvidenceError:
            kind = "refused"
        with lock:
            outcomes.append((off, kind))

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(48)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for off, kind in outcomes:
        overlaps = off < start + length and off + 4 * KiB > start
        assert kind == ("refused" if overlaps else "clean"), (off, kind)


def test_through_tsk_the_damaged_file_fails_and_others_read(bad):
    d, _, _ = bad
    with open_evidence(str(d.image)) as ev:
        import pytsk3
        fs = pytsk3.FS_Info(ev.img)
        with pytest.raises((OSError, RuntimeError), match="checksum error"):
            fs.open_meta(d.inode).read_random(0, d.size)
        assert fs.open("/a.txt").read_random(0, 100) == b"an intact file\n"
        assert ev.source.damaged_ranges() == [d.damaged]


def test_the_media_hash_refuses_a_damaged_e01(bad):
    d, _, _ = bad
    with open_evidence(str(d.image)) as ev:
        with pytest.raises(EvidenceError, match=sectors(*d.damaged)):
            media_hashes(ev)


def test_a_clean_read_costs_one_libewf_read_and_no_error_lookup(bad, monkeypatch):
    """The check reads nothing twice: per read, one libewf read and one count of errors; the
    list itself is only fetched when the count moves or a read touches a known range."""
    d, _, src = bad
    start, length = d.damaged
    lib = src._reader._lib
    calls = {"read": 0, "get": 0}
    real_read, real_get = lib.triage_read, lib.libewf_handle_get_checksum_error

    def counting_read(*a):
        calls["read"] += 1
        return real_read(*a)

    def counting_get(*a):
        calls["get"] += 1
        return real_get(*a)

    monkeypatch.setattr(lib, "triage_read", counting_read)
    monkeypatch.setattr(lib, "libewf_handle_get_checksum_error", counting_get)
    reads = [off for off in range(0, start - 64 * KiB, 64 * KiB)]
    for off in reads:
        src.read(off, 64 * KiB)
    assert calls == {"read": len(reads), "get": 0}
    with pytest.raises(EvidenceError):
        src.read(start, 512)
    assert calls == {"read": len(reads) + 1, "get": 1}
    src.read(start + 4 * length, 512)                  # far from it: no lookup
    assert calls == {"read": len(reads) + 2, "get": 1}


def test_the_prototypes_match_libewf(bad):
    """get_checksum_error fills two 64-bit sector numbers: a wrong prototype would garble them."""
    d, _, src = bad
    with pytest.raises(EvidenceError):
        src.read(*d.damaged)
    reader = src._reader
    first, count, err = ctypes.c_uint64(), ctypes.c_uint64(), ctypes.c_void_p()
    assert reader._lib.libewf_handle_get_checksum_error(
        reader._handle, 0, ctypes.byref(first), ctypes.byref(count), ctypes.byref(err)) == 1
    assert (first.value * 512, count.value * 512) == d.damaged
