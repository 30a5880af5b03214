"""Damaged disk images for the coverage tests, and what The Sleuth Kit's tools make of them.

Each builder takes an empty work folder, builds one small image (a few MB, a few seconds) with
the Debian tools a lab has (mke2fs -d, debugfs, mkfs.fat + mtools, mkntfs + ntfscp,
ewfacquire), damages one thing in it on purpose, and returns a `Damaged` naming what was
damaged. `tsk_truth` lists every regular file with what `icat` gives for it: the reference a
differential test holds triage's coverage records against. `rich_ext4` is sound but holds
what a whole-file hash walk does not look into: a video's frames, a thumbnail cache's and a
PDF's pictures, and a deleted picture in free space, each with the offsets of its JPEGs.

What Debian's TSK 4.11 and libewf 20140814 do on each (tests/test_damaged.py asserts it):
- ext4_root_unreadable: `fls -r` exits 1 ("Error reading directory contents"), lists nothing.
- ext4_truncated: fls exits 0; `icat` of the 3,000,000-byte file exits 1 after the blocks
  still in the image (1,499,136 bytes: "Address missing in partial image").
- ext4_bad_extent: fls exits 0; icat exits 1 with 0 bytes ("Invalid address in run").
- fat_cluster_loop: fls exits 0 and lists the file at its declared size; icat exits 0 with 0
  bytes and nothing on stderr (TSK finds the loop and gives the file no clusters at all).
  Only the byte count tells.
- ntfs_bad_mft_entry: fls exits 0 and lists the name ("r/-", no size); icat exits 1 with 0
  bytes ("Incorrect update sequence value in MFT entry").
- e01_bad_chunk: ewfverify exits 1 naming the 64 sectors; libewf reads the chunk as zeroes
  with no error, so fls and icat on the E01 exit 0 with wrong bytes. Only libewf's
  checksum-error list (or a comparison with the raw) tells.
"""
from __future__ import annotations

import io
import os
import random
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Optional

from evidence_images import MiB, fls_body, run
from triage.synth.containers import thumbcache  # noqa: F401  (rich_ext4's cache)

MTOOLS_ENV = dict(os.environ, MTOOLS_SKIP_CHECK="1")
SECTOR = 512


@dataclass(frozen=True)
class Damaged:
    """One damaged image and what was damaged in it."""

    name: str
    image: Path                 # what to open: the raw image, or the E01's first segment
    fs_type: str                # "ext4", "fat16", "ntfs"
    path: str                   # file-system path of the damaged file or folder ("/": the root)
    inode: int                  # its metadata address, as icat/istat take it
    size: int                   # its declared size in bytes
    description: str            # one line: what was done to it
    offset: int = 0             # volume offset in the image, bytes
    raw: Optional[Path] = None  # the undamaged raw image the E01 was acquired from
    damaged: tuple[int, int] = (0, 0)   # (offset, length) of the damaged bytes in the media


@dataclass(frozen=True)
class Rich:
    """An ext4 image holding the places a file-by-file hash walk does not look into."""

    image: Path
    fs_type: str
    files: dict                 # role -> (path, inode, size): "video", "thumbcache", "pdf"
    embedded: dict              # path -> [(offset, length)] of the JPEGs inside that file
    deleted: str                # a JPEG deleted after the build: its content is in free space
    deleted_jpeg: bytes
    unallocated: int            # bytes in unallocated blocks, as `blkls` counts them
    description: str
    offset: int = 0


# --- helpers -----------------------------------------------------------------------------------
def _random_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _text_bytes(n: int, seed: int) -> bytes:
    """Compressible but not trivial bytes (EWF stores such chunks deflated)."""
    rng = random.Random(seed)
    words = [b"alpha", b"bravo", b"charlie", b"delta", b"echo", b"foxtrot", b"golf", b"hotel"]
    out = bytearray()
    while len(out) < n:
        out += rng.choice(words) + (b"\n" if rng.random() < 0.1 else b" ")
    return bytes(out[:n])


def _ext4(work: Path, name: str, files: dict[str, bytes], size: str) -> Path:
    src = work / f"{name}.src"
    for rel, data in files.items():
        p = src / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    img = work / f"{name}.raw"
    run(["mke2fs", "-q", "-F", "-t", "ext4", "-b", "1024", "-E", "root_owner=0:0", "-d", src, img, size])
    return img


def inode_of(image: Path, path: str, offset: int = 0) -> int:
    """The metadata address TSK gives `path` (`ifind -n`)."""
    out = run(["ifind", "-o", offset // SECTOR, "-n", path, image]).stdout.decode().strip()
    return int(out.split("-")[0])


def _ext4_first_block(image: Path, inode: int) -> int:
    out = run(["debugfs", "-R", f"bmap <{inode}> 0", image]).stdout.decode().strip()
    return int(out)


# --- a) the root folder cannot be read ---------------------------------------------------------
def ext4_root_unreadable(work: Path) -> Damaged:
    """ext4 whose root directory's extent header is zeroed: nothing below it can be listed."""
    img = _ext4(work, "root_unreadable", {
        "readme.txt": b"under an unreadable root\n",
        "docs/report.txt": b"quarterly numbers " * 200,
        "pictures/a.bin": _random_bytes(20_000, 1),
    }, "4M")
    run(["debugfs", "-w", "-R", "sif <2> block[0] 0", img])
    return Damaged("ext4_root_unreadable", img, "ext4", "/", 2, 1024,
                   "ext4 root directory inode 2: first word of its extent header zeroed")


# --- b) the image ends in the middle of a file -------------------------------------------------
BIG = 3_000_000


def ext4_truncated(work: Path) -> Damaged:
    """ext4 cut off half-way through a 3,000,000-byte file (blocks of 1 KiB)."""
    full = _ext4(work, "truncated_full", {"a.txt": b"before the big file\n",
                                          "big.bin": _random_bytes(BIG, 2)}, "5M")
    inode = inode_of(full, "/big.bin")
    start = _ext4_first_block(full, inode) * 1024
    cut = start + (BIG // 2) // 1024 * 1024
    img = work / "truncated.raw"
    with open(full, "rb") as src, open(img, "wb") as out:
        out.write(src.read(cut))
    full_size = full.stat().st_size
    full.unlink()
    return Damaged("ext4_truncated", img, "ext4", "/big.bin", inode, BIG,
                   f"ext4 image cut at byte {cut} of {full_size}, half-way through /big.bin",
                   damaged=(cut, full_size - cut))


# --- c) a file's extent points outside the file system -----------------------------------------
def ext4_bad_extent(work: Path) -> Damaged:
    size = 200_000
    img = _ext4(work, "bad_extent", {"ok.txt": b"an intact file\n",
                                     "victim.bin": _random_bytes(size, 3)}, "4M")
    inode = inode_of(img, "/victim.bin")
    # i_block[3..5] is the first extent (logical block, length + start_hi, start_lo): its start
    # now lies 2 TiB into a 4 MiB file system
    run(["debugfs", "-w", "-R", f"sif <{inode}> block[5] 0x7fffff00", img])
    return Damaged("ext4_bad_extent", img, "ext4", "/victim.bin", inode, size,
                   "ext4 /victim.bin: its only extent starts at block 0x7fffff00, past the end")


# --- d) a FAT cluster chain that loops ---------------------------------------------------------
def _fat16_geometry(boot: bytes) -> tuple[int, int, int, int, int, int]:
    bps, spc, reserved, fats, root_entries, _, _, spf = struct.unpack_from("<HBHBHHBH", boot, 11)
    return bps, spc, reserved, fats, root_entries, spf


def fat_cluster_loop(work: Path) -> Damaged:
    """FAT16 (512-byte clusters) where the middle cluster of a 40-cluster file points back to
    its second: the chain never reaches an end-of-chain mark."""
    img = work / "fat_loop.raw"
    with open(img, "wb") as fh:
        fh.truncate(4 * MiB)
    run(["mkfs.fat", "-F", "16", "-s", "1", "-n", "DAMAGED", img])
    size = 20_000
    for name, data in (("FIRST.TXT", b"an intact file\n"), ("LOOP.BIN", _random_bytes(size, 4))):
        tmp = work / name
        tmp.write_bytes(data)
        run(["mcopy", "-i", img, tmp, f"::/{name}"], env=MTOOLS_ENV)
        tmp.unlink()
    with open(img, "r+b") as fh:
        disk = fh.read()
        bps, _, reserved, fats, root_entries, spf = _fat16_geometry(disk[:512])
        root = (reserved + fats * spf) * bps
        for i in range(root_entries):
            entry = disk[root + 32 * i: root + 32 * i + 32]
            if entry[:11] == b"LOOP    BIN":
                start = struct.unpack_from("<H", entry, 26)[0]
                break
        else:
            raise AssertionError("LOOP.BIN not in the root folder")
        fat = reserved * bps
        chain = [start]
        while (nxt := struct.unpack_from("<H", disk, fat + 2 * chain[-1])[0]) < 0xFFF8:
            chain.append(nxt)
        at = chain[len(chain) // 2]
        for k in range(fats):                 # both copies, so neither disagrees
            fh.seek(fat + k * spf * bps + 2 * at)
            fh.write(struct.pack("<H", chain[1]))
    return Damaged("fat_cluster_loop", img, "fat16", "/LOOP.BIN", inode_of(img, "/LOOP.BIN"), size,
                   f"FAT16 /LOOP.BIN: cluster {at} (of {len(chain)}) points back to cluster {chain[1]}",
                   damaged=(fat + 2 * at, 2))


# --- e) a damaged NTFS MFT entry ---------------------------------------------------------------
def mft_entry_offset(image: Path, inode: int) -> tuple[int, int]:
    """(byte offset, record size) of MFT entry `inode` in a bare NTFS image, found by its
    signature and record number (the $MFT of a fresh small volume is not always contiguous)."""
    data = image.read_bytes()
    raw = struct.unpack_from("<b", data, 0x40)[0]
    cluster = struct.unpack_from("<H", data, 11)[0] * data[13]
    record = 1 << -raw if raw < 0 else raw * cluster
    for off in range(0, len(data) - record + 1, record):
        if data[off:off + 4] == b"FILE" and struct.unpack_from("<I", data, off + 0x2C)[0] == inode:
            return off, record
    raise AssertionError(f"MFT entry {inode} not found")


def ntfs_bad_mft_entry(work: Path) -> Damaged:
    """NTFS whose file's MFT entry fails its fixup check: the last two bytes of its first
    sector no longer match the update sequence number, as after a torn write."""
    img = work / "ntfs_bad_mft.raw"
    with open(img, "wb") as fh:
        fh.truncate(6 * MiB)
    run(["mkntfs", "-q", "-F", "-f", "-L", "DAMAGED", img])
    size = 100_000
    for name, data in (("hello.txt", b"an intact file\n"), ("victim.bin", _random_bytes(size, 5))):
        tmp = work / name
        tmp.write_bytes(data)
        run(["ntfscp", "-f", img, tmp, name])
        tmp.unlink()
    inode = inode_of(img, "/victim.bin")
    off, _ = mft_entry_offset(img, inode)
    with open(img, "r+b") as fh:
        head = fh.read(off + 512)[off:]
        usa = struct.unpack_from("<H", head, 4)[0]
        usn = head[usa:usa + 2]
        assert head[510:512] == usn, "sector end does not hold the update sequence number"
        fh.seek(off + 510)
        fh.write(bytes([usn[0] ^ 0xFF, usn[1]]))
    return Damaged("ntfs_bad_mft_entry", img, "ntfs", "/victim.bin", inode, size,
                   f"NTFS /victim.bin: MFT entry {inode} at byte {off} fails its fixup "
                   f"(update sequence number overwritten at the end of its first sector)",
                   damaged=(off + 510, 1))


# --- f) an E01 with one damaged compressed chunk ----------------------------------------------
@dataclass(frozen=True)
class EwfChunk:
    index: int
    start: int          # byte offset of the chunk's stored data in the segment file
    end: int
    compressed: bool


def ewf_chunks(segment: Path) -> tuple[int, list[EwfChunk]]:
    """(chunk size in bytes, the chunks) of a one-segment EWF1 (EnCase 6) file, from its
    `volume` and `table` sections."""
    data = segment.read_bytes()
    offset, chunk_size, chunks = 13, 0, []
    while True:
        kind = data[offset:offset + 16].rstrip(b"\0")
        nxt = struct.unpack_from("<Q", data, offset + 16)[0]
        body = offset + 76
        if kind in (b"volume", b"disk"):
            spc, bps = struct.unpack_from("<II", data, body + 8)
            chunk_size = spc * bps
        elif kind == b"table":
            count, _, base = struct.unpack_from("<IIQ", data, body)
            entries = struct.unpack_from(f"<{count}I", data, body + 24)
            starts = [base + (e & 0x7FFFFFFF) for e in entries] + [offset]   # data ends at the table
            for i, e in enumerate(entries):
                chunks.append(EwfChunk(len(chunks), starts[i], starts[i + 1], bool(e >> 31)))
        if kind in (b"next", b"done") or nxt <= offset:
            return chunk_size, chunks
        offset = nxt


def flip_chunk(segment: Path, chunk: EwfChunk) -> int:
    """Flip every bit of the byte in the middle of `chunk`'s stored data; its file offset."""
    flip = (chunk.start + chunk.end) // 2
    with open(segment, "r+b") as fh:
        fh.seek(flip)
        byte = fh.read(1)[0]
        fh.seek(flip)
        fh.write(bytes([byte ^ 0xFF]))
    return flip


def e01_bad_chunk(work: Path) -> Damaged:
    """A deflate E01 of an ext4 image with one byte flipped in the stored (compressed) data of
    a chunk inside a 300,000-byte text file."""
    size = 300_000
    raw = _ext4(work, "e01_source", {"a.txt": b"an intact file\n",
                                     "notes.txt": _text_bytes(size, 6)}, "4M")
    inode = inode_of(raw, "/notes.txt")
    file_start = _ext4_first_block(raw, inode) * 1024
    target = work / "bad_chunk"
    run(["ewfacquire", "-u", "-q", "-t", target, "-f", "encase6", "-c", "best", "-d", "sha1",
         "-C", "case", "-D", "damaged", "-E", "1", "-e", "tests", "-N", "none", "-m", "fixed",
         "-M", "physical", raw])
    e01 = work / "bad_chunk.E01"
    chunk_size, chunks = ewf_chunks(e01)
    chunk = chunks[(file_start + size // 3) // chunk_size]
    assert chunk.compressed, "ewfacquire stored the chunk uncompressed"
    flip = flip_chunk(e01, chunk)
    media = chunk.index * chunk_size
    first = media // SECTOR
    return Damaged("e01_bad_chunk", e01, "ext4", "/notes.txt", inode, size,
                   f"E01 (deflate) chunk {chunk.index}: byte {flip} of its compressed data flipped "
                   f"(sectors {first}-{first + chunk_size // SECTOR - 1}, inside /notes.txt)",
                   raw=raw, damaged=(media, chunk_size))


DAMAGED_BUILDERS = (ext4_root_unreadable, ext4_truncated, ext4_bad_extent, fat_cluster_loop,
                    ntfs_bad_mft_entry, e01_bad_chunk)



# --- g) what a file-by-file hash walk does not look into -------------------------------------
def _jpeg(seed: int, alert: bool, w: int, h: int) -> bytes:
    from triage.synth import pictures
    img = pictures.alert_picture(seed, 0, w, h) if alert else pictures.benign_picture(seed, "rich", w, h)
    return pictures.encode(img, "jpeg")


def _chunk(fourcc: bytes, data: bytes) -> bytes:
    return fourcc + struct.pack("<I", len(data)) + data + b"\0" * (len(data) & 1)


def mjpeg_avi(frames: list[bytes], w: int, h: int, fps: int = 2) -> tuple[bytes, list[tuple[int, int]]]:
    """An AVI (RIFF, one Motion-JPEG video stream, idx1 index) whose frames are `frames`, and
    each frame's (offset, length) in it: a real, playable video of synthetic pictures."""
    n, biggest = len(frames), max(len(f) for f in frames)
    avih = struct.pack("<10I16x", 1_000_000 // fps, biggest * fps, 0, 0x10, n, 0, 1, biggest, w, h)
    strh = (b"vidsMJPG" + struct.pack("<IHHIIIIIIiI", 0, 0, 0, 0, 1, fps, 0, n, biggest, -1, 0)
            + struct.pack("<4h", 0, 0, w, h))
    strf = struct.pack("<IiiHH4sIiiII", 40, w, h, 1, 24, b"MJPG", w * h * 3, 0, 0, 0, 0)
    hdrl = b"hdrl" + _chunk(b"avih", avih) + _chunk(b"LIST", b"strl" + _chunk(b"strh", strh)
                                                     + _chunk(b"strf", strf))
    movi, index, where = b"movi", b"", []
    for f in frames:
        index += b"00dc" + struct.pack("<III", 0x10, len(movi), len(f))     # offsets from "movi"
        where.append(len(movi) + 8)
        movi += _chunk(b"00dc", f)
    body = b"AVI " + _chunk(b"LIST", hdrl) + _chunk(b"LIST", movi) + _chunk(b"idx1", index)
    movi_at = 12 + 8 + len(hdrl) + 8                 # RIFF header, hdrl LIST, movi LIST header
    return _chunk(b"RIFF", body), [(movi_at + off, len(f)) for off, f in zip(where, frames)]


def pdf_with_jpeg(seed: int) -> tuple[bytes, list[tuple[int, int]]]:
    """A one-page PDF (Pillow's writer) whose page is a DCTDecode image: a JPEG stored whole."""
    from triage.synth import pictures
    buf = io.BytesIO()
    pictures.alert_picture(seed, 1, 160, 120).save(buf, "PDF", resolution=72.0)
    pdf = buf.getvalue()
    start = pdf.index(b"\xff\xd8\xff", pdf.index(b"/DCTDecode"))
    end = pdf.rindex(b"\xff\xd9", start, pdf.index(b"endstream", start)) + 2
    return pdf, [(start, end - start)]


def rich_ext4(work: Path) -> Rich:
    """ext4 with a Motion-JPEG AVI, a thumbcache_256.db, a PDF holding a JPEG, and a deleted
    JPEG whose blocks are free space. Alert stand-ins (synthetic shapes, triage.synth) sit in
    one thumbnail, the PDF, one video frame and the deleted file: places a walk that hashes
    whole files never sees them."""
    video, frames = mjpeg_avi([_jpeg(21, False, 96, 64), _jpeg(22, True, 96, 64),
                               _jpeg(23, False, 96, 64)], 96, 64)
    cache, entries = thumbcache([_jpeg(24, False, 128, 96), _jpeg(25, True, 128, 96)])
    thumbs = [(e.offset, e.length) for e in entries]
    pdf, pdf_jpegs = pdf_with_jpeg(26)
    gone = _jpeg(27, True, 480, 360)
    paths = {"video": "/DCIM/clip0001.avi",
             "thumbcache": "/Users/sam/AppData/Local/Microsoft/Windows/Explorer/thumbcache_256.db",
             "pdf": "/Documents/scan.pdf"}
    content = {paths["video"]: video, paths["thumbcache"]: cache, paths["pdf"]: pdf,
               "/readme.txt": b"a device with pictures inside other files\n", "/Pictures/old.jpg": gone}
    img = _ext4(work, "rich", {k.lstrip("/"): v for k, v in content.items()}, "4M")
    files = {role: (p, inode_of(img, p), len(content[p])) for role, p in paths.items()}
    run(["debugfs", "-w", "-R", "rm /Pictures/old.jpg", img])
    unallocated = 0
    proc = subprocess.Popen(["blkls", str(img)], stdout=subprocess.PIPE)
    while chunk := proc.stdout.read(1 << 20):
        unallocated += len(chunk)
    if proc.wait() != 0:
        raise AssertionError("blkls failed")
    return Rich(img, "ext4", files,
                {paths["video"]: frames, paths["thumbcache"]: thumbs, paths["pdf"]: pdf_jpegs},
                "/Pictures/old.jpg", gone, unallocated,
                "ext4: a 3-frame MJPEG AVI, a 2-thumbnail thumbcache_256.db, a PDF with a JPEG page, "
                "a deleted JPEG in free space")

# --- the TSK reference: what icat gives for every regular file ---------------------------------
NTFS_DATA = 128


class TskFile(NamedTuple):
    path: str
    inode: str          # as icat takes it: "12", NTFS "65-128-2"
    size: int           # the size fls lists (a damaged NTFS entry lists 0)
    icat_ok: bool       # icat exited 0 and wrote nothing on stderr
    icat_bytes: int     # bytes icat wrote before it ended (or was stopped)


def icat_count(image, offset: int, inode: str, timeout: float = 20.0) -> tuple[bool, int]:
    """(icat succeeded, bytes it wrote). Counted as they stream, so a big file costs no
    memory; a run past `timeout` is killed and counts as failed."""
    import tempfile
    import threading

    from evidence_images import _images

    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(["icat", "-o", str(offset // SECTOR), *_images(image), inode],
                                stdout=subprocess.PIPE, stderr=err)
        killed = threading.Event()

        def stop() -> None:
            killed.set()
            proc.kill()

        timer = threading.Timer(timeout, stop)
        timer.start()
        got = 0
        try:
            while chunk := proc.stdout.read(1 << 20):
                got += len(chunk)
            rc = proc.wait()
        finally:
            timer.cancel()
            proc.stdout.close()
        err.seek(0)
        stderr = err.read()
    return rc == 0 and not stderr and not killed.is_set(), got


def tsk_truth(image, offset: int = 0, timeout: float = 20.0, deleted: bool = False) -> list[TskFile]:
    """Every regular file `fls -r -p -m` lists (allocated only unless `deleted`), with what
    `icat` gives for it. NTFS: the $DATA streams, not the $FILE_NAME or index lines. fls may
    fail part-way (an unreadable folder): what it listed still counts."""
    rows = []
    for line in fls_body(image, offset, check=False):
        if not line.mode.startswith("r/") or (not line.allocated and not deleted):
            continue
        if line.path.endswith(" ($FILE_NAME)"):
            continue
        parts = line.inode.split("-")
        if len(parts) == 3 and int(parts[1]) != NTFS_DATA:
            continue
        ok, got = icat_count(image, offset, line.inode, timeout)
        rows.append(TskFile(line.path, line.inode, line.size, ok, got))
    return rows


def unread(rows: list[TskFile]) -> list[TskFile]:
    """The files TSK could not read in full: icat failed, or gave fewer bytes than the size.

    Not NTFS's $BadClus:$Bad: a sparse stream as big as the volume, of which TSK writes only
    the clusters marked bad (on a sound disk, none).
    """
    return [r for r in rows if (not r.icat_ok or r.icat_bytes < r.size)
            and r.path != "/$BadClus:$Bad"]
