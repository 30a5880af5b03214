"""The damaged-image builders damage what they say, as Debian's TSK and ewfverify see it, and
`tsk_truth` reports exactly the files TSK cannot read in full."""
from __future__ import annotations

import hashlib
import io
import os
import struct
import subprocess

import pytest

import damaged
from damaged import (BIG, DAMAGED_BUILDERS, e01_bad_chunk, ext4_bad_extent, ext4_root_unreadable,
                     ext4_truncated, fat_cluster_loop, icat_count, mft_entry_offset, ntfs_bad_mft_entry,
                     tsk_truth, unread)

MiB = 1 << 20


def tool(*cmd, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, timeout=timeout)


def fls(image) -> subprocess.CompletedProcess:
    return tool("fls", "-r", "-p", image)


def listed(result: subprocess.CompletedProcess) -> set[str]:
    return {"/" + line.split("\t", 1)[1] for line in result.stdout.decode().splitlines() if "\t" in line}


def test_root_unreadable(tmp_path):
    d = ext4_root_unreadable(tmp_path)
    assert d.inode == 2 and d.path == "/"
    res = fls(d.image)
    assert res.returncode == 1
    assert res.stdout == b""
    assert b"Error reading directory contents" in res.stderr
    # the inode itself is still there: only its content (the listing) is lost
    assert tool("istat", d.image, 2).returncode == 0
    assert tsk_truth(d.image) == []


def test_truncated_mid_file(tmp_path):
    d = ext4_truncated(tmp_path)
    assert d.image.stat().st_size == d.damaged[0] < 5 * MiB
    assert ("/big.bin", BIG) in {(line.path, line.size) for line in damaged.fls_body(d.image, 0)}
    res = tool("icat", d.image, d.inode)
    assert res.returncode == 1
    assert b"Address missing in partial image" in res.stderr
    # what TSK still gives is the file's true start, block-aligned, about half of it
    assert len(res.stdout) == 1_499_136
    assert res.stdout == damaged._random_bytes(BIG, 2)[:len(res.stdout)]


def test_bad_extent(tmp_path):
    d = ext4_bad_extent(tmp_path)
    stat = tool("debugfs", "-R", f"stat <{d.inode}>", d.image).stdout.decode()
    assert "2147483392" in stat                       # 0x7fffff00, far past a 4 MiB volume
    assert "/victim.bin" in listed(fls(d.image))
    res = tool("icat", d.image, d.inode)
    assert (res.returncode, res.stdout) == (1, b"")
    assert b"Invalid address in run" in res.stderr
    ok = tool("icat", d.image, damaged.inode_of(d.image, "/ok.txt"))
    assert (ok.returncode, ok.stdout) == (0, b"an intact file\n")


def fat_chain(image, name: bytes) -> list[int]:
    """The file's clusters by hand, stopping at the first cluster seen twice."""
    disk = image.read_bytes()
    bps, _, reserved, fats, root_entries, spf = damaged._fat16_geometry(disk[:512])
    root = (reserved + fats * spf) * bps
    entry = next(disk[root + 32 * i: root + 32 * i + 32] for i in range(root_entries)
                 if disk[root + 32 * i: root + 32 * i + 11] == name)
    chain = [struct.unpack_from("<H", entry, 26)[0]]
    while True:
        nxt = struct.unpack_from("<H", disk, reserved * bps + 2 * chain[-1])[0]
        if nxt >= 0xFFF8 or nxt in chain:
            return chain + [nxt]
        chain.append(nxt)


def test_fat_cluster_loop(tmp_path):
    d = fat_cluster_loop(tmp_path)
    chain = fat_chain(d.image, b"LOOP    BIN")
    assert chain[-1] == chain[1] and len(chain) - 1 < d.size // 512   # back to the 2nd, early
    assert ("/LOOP.BIN", d.size) in {(line.path, line.size) for line in damaged.fls_body(d.image, 0)}
    # TSK does not hang: it notices the loop, gives the file no clusters, and says nothing
    res = tool("icat", d.image, d.inode, timeout=20)
    assert (res.returncode, res.stdout, res.stderr) == (0, b"", b"")
    first = tool("icat", d.image, damaged.inode_of(d.image, "/FIRST.TXT"))
    assert first.stdout == b"an intact file\n"


def test_ntfs_bad_mft_entry(tmp_path):
    d = ntfs_bad_mft_entry(tmp_path)
    off, size = mft_entry_offset(d.image, d.inode)
    assert size == 1024 and d.damaged[0] == off + 510
    assert "/victim.bin" in listed(fls(d.image))
    res = tool("icat", d.image, d.inode)
    assert (res.returncode, res.stdout) == (1, b"")
    assert b"Incorrect update sequence value in MFT entry" in res.stderr
    hello = tool("icat", d.image, damaged.inode_of(d.image, "/hello.txt"))
    assert hello.stdout == b"an intact file\n"


def test_e01_bad_chunk(tmp_path):
    d = e01_bad_chunk(tmp_path)
    verify = tool("ewfverify", "-q", d.image)
    assert verify.returncode == 1
    first = d.damaged[0] // 512
    last = first + d.damaged[1] // 512 - 1
    assert f"at sector(s): {first} - {last} (number: 64)" in verify.stdout.decode()
    # libewf reads the damaged chunk as zeroes and says nothing: TSK on the E01 exits 0 with
    # the full size, and only a comparison with the raw shows the difference
    on_e01 = tool("icat", d.image, d.inode)
    on_raw = tool("icat", d.raw, d.inode)
    assert on_e01.returncode == on_raw.returncode == 0
    assert len(on_e01.stdout) == len(on_raw.stdout) == d.size
    assert on_e01.stdout != on_raw.stdout
    file_start = damaged._ext4_first_block(d.raw, d.inode) * 1024
    differ = [i for i, (a, b) in enumerate(zip(on_e01.stdout, on_raw.stdout)) if a != b]
    lo, hi = d.damaged[0] - file_start, d.damaged[0] + d.damaged[1] - file_start
    assert lo <= differ[0] and differ[-1] < hi
    assert on_e01.stdout[lo:hi] == bytes(hi - lo)


def test_the_e01_undamaged_verifies(tmp_path):
    """The damage is the flipped byte, not the way the E01 was made."""
    d = e01_bad_chunk(tmp_path)
    clean = tmp_path / "clean"
    damaged.run(["ewfacquire", "-u", "-q", "-t", clean, "-f", "encase6", "-c", "best", "-d", "sha1",
                 "-C", "c", "-D", "d", "-E", "1", "-e", "t", "-N", "n", "-m", "fixed", "-M", "physical",
                 d.raw])
    assert tool("ewfverify", "-q", f"{clean}.E01").returncode == 0


@pytest.mark.parametrize("build", DAMAGED_BUILDERS, ids=lambda b: b.__name__)
def test_tsk_truth_names_the_damaged_file(build, tmp_path):
    d = build(tmp_path)
    assert sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file()) < 12 * MiB
    rows = tsk_truth(d.image, d.offset)
    bad = unread(rows)
    if d.name == "ext4_root_unreadable":
        assert rows == []                     # nothing listed; the gap is the folder
    elif d.name == "e01_bad_chunk":
        assert bad == []                      # TSK reads zeroes where the chunk was
        assert {r.path for r in rows} == {"/a.txt", "/notes.txt"}
    else:
        assert [r.path for r in bad] == [d.path]
        (row,) = bad
        assert row.inode.split("-")[0] == str(d.inode)
        assert row.icat_bytes < d.size
    for r in rows:
        if r not in bad and r.path != "/$BadClus:$Bad":
            assert r.icat_ok and r.icat_bytes == r.size, r


def test_tsk_truth_on_a_sound_image_matches_the_content(tmp_path):
    files = {"a.txt": b"one\n", "sub/b.bin": os.urandom(70_000), "empty": b""}
    img = damaged._ext4(tmp_path, "sound", files, "4M")
    rows = {r.path: r for r in tsk_truth(img)}
    assert set(rows) == {"/" + k for k in files}
    for rel, data in files.items():
        r = rows["/" + rel]
        assert (r.size, r.icat_ok, r.icat_bytes) == (len(data), True, len(data))
        assert hashlib.md5(tool("icat", img, r.inode).stdout).digest() == hashlib.md5(data).digest()
    assert unread(list(rows.values())) == []


def test_icat_count_stops_a_hanging_icat(tmp_path):
    fifo = tmp_path / "never-written"
    os.mkfifo(fifo)                           # icat blocks opening it: nobody ever writes
    assert icat_count(fifo, 0, "12", timeout=0.5) == (False, 0)


# --- g) the rich image ---------------------------------------------------------------------
def riff_chunks(data: bytes, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """(fourcc or LIST type, data offset, size) of every chunk, depth first; sizes must tile."""
    out, pos = [], start
    while pos < end:
        fourcc, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        assert pos + 8 + size <= end, (fourcc, pos, size)
        if fourcc == b"LIST":
            out.append((data[pos + 8:pos + 12], pos + 12, size - 4))
            out += riff_chunks(data, pos + 12, pos + 8 + size)
        else:
            out.append((fourcc, pos + 8, size))
        pos += 8 + size + (size & 1)
    assert pos == end
    return out


def test_rich_image(tmp_path):
    from PIL import Image

    from triage.filetype import sniff
    r = damaged.rich_ext4(tmp_path)
    body = {line.path: line for line in damaged.fls_body(r.image, 0)}
    contents = {}
    for role, (path, inode, size) in r.files.items():
        assert (body[path].inode, body[path].size, body[path].allocated) == (str(inode), size, True)
        contents[role] = tool("icat", r.image, inode).stdout
        assert len(contents[role]) == size
    assert body[r.deleted].allocated is False
    assert sniff(contents["video"]) == "video/x-msvideo"
    assert sniff(contents["pdf"]) == "application/pdf"
    # every embedded picture is a whole JPEG at the offset given
    for role, (path, _, _) in r.files.items():
        assert r.embedded[path]
        for off, length in r.embedded[path]:
            jpeg = contents[role][off:off + length]
            assert jpeg[:3] == b"\xff\xd8\xff" and jpeg[-2:] == b"\xff\xd9"
            with Image.open(io.BytesIO(jpeg)) as im:
                im.load()
                assert im.format == "JPEG"
    # the AVI: RIFF sizes tile exactly; avih, strh and idx1 agree with the frames
    avi = contents["video"]
    assert avi[:4] == b"RIFF" and struct.unpack_from("<I", avi, 4)[0] == len(avi) - 8
    chunks = riff_chunks(avi, 12, len(avi))
    kinds = [c[0] for c in chunks]
    assert kinds[:5] == [b"hdrl", b"avih", b"strl", b"strh", b"strf"] and kinds[-1] == b"idx1"
    frames = [(off, size) for kind, off, size in chunks if kind == b"00dc"]
    assert frames == r.embedded[r.files["video"][0]]
    assert struct.unpack_from("<I", avi, chunks[1][1] + 16)[0] == len(frames)
    assert avi[chunks[3][1]:chunks[3][1] + 8] == b"vidsMJPG"
    movi = next(off for kind, off, _ in chunks if kind == b"movi") - 4
    _, idx_at, idx_size = chunks[-1]
    for i in range(idx_size // 16):
        ckid, flags, off, size = struct.unpack_from("<4sIII", avi, idx_at + 16 * i)
        assert (ckid, movi + off + 8, size) == (b"00dc", *frames[i])
    # the thumbnail cache: Windows 7 header, then one CMMM entry per thumbnail
    cache = contents["thumbcache"]
    sig, version, kind, first, free, count = struct.unpack_from("<4s5I", cache, 0)
    assert (sig, version, kind, first, free, count) == (b"CMMM", 21, 2, 24, len(cache), 2)
    pos = first
    for off, length in r.embedded[r.files["thumbcache"][0]]:
        esig, esize, _, ident, pad, dsize = struct.unpack_from("<4sIQIII", cache, pos)
        assert esig == b"CMMM" and pos + 48 + ident + pad == off and dsize == length
        pos += esize
    assert pos == len(cache)
    assert b"/DCTDecode" in contents["pdf"]
    # free space: the deleted JPEG is there whole, and blkls counts every free block
    free = subprocess.run(["blkls", str(r.image)], capture_output=True, check=True).stdout
    assert len(free) == r.unallocated and r.deleted_jpeg in free
    stats = tool("dumpe2fs", "-h", r.image).stdout.decode()
    free_blocks = int(next(ln.split(":")[1] for ln in stats.splitlines() if ln.startswith("Free blocks:")))
    assert r.unallocated == free_blocks * 1024
    assert unread(tsk_truth(r.image)) == []
