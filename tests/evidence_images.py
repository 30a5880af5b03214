"""Small disk images for the evidence-layer tests, built without mounts, and the TSK reference.

Each builder uses the Debian tools a lab would (mke2fs -d, mkfs.fat + mtools, mkntfs + ntfscp,
sfdisk, ewfacquire, split) and plants at least one deleted file. `fls_body` and `icat_md5`
read the same images with Debian's TSK 4.11 command-line tools, the reference the pytsk3
wheel's TSK 4.15 is compared with.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

MiB = 1 << 20
TOOLS = ("mke2fs", "debugfs", "mkfs.fat", "mcopy", "mdel", "mkntfs", "ntfscp", "sfdisk",
         "ewfacquire", "fls", "icat")


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


def run(cmd: list, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, **kw)


def png_bytes(seed: int) -> bytes:
    from PIL import Image
    img = Image.new("RGB", (24, 16), (seed * 37 % 256, seed * 91 % 256, seed * 13 % 256))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def jpeg_bytes(seed: int) -> bytes:
    from PIL import Image
    img = Image.new("RGB", (32, 32), (seed * 53 % 256, 40, 200))
    buf = io.BytesIO()
    img.save(buf, "JPEG")
    return buf.getvalue()


def content_tree(root: Path) -> dict[str, bytes]:
    """A small tree: nested folders, an empty file, a renamed picture, a multi-block file."""
    files = {
        "readme.txt": b"evidence-layer test image\n",
        "empty.dat": b"",
        "docs/report.txt": b"quarterly numbers " * 300,
        "docs/deep/er/note.txt": b"nested three levels\n",
        "pictures/cat.png": png_bytes(1),
        "pictures/holiday.jpg": jpeg_bytes(2),
        "pictures/renamed.txt": jpeg_bytes(3),          # a JPEG behind a .txt name
        "big.bin": bytes(range(256)) * 1200,            # ~300 KB, many blocks
        "gone.txt": b"this file will be deleted " * 40,
    }
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return files


@dataclass
class Image:
    """One test image: the path to open, the raw file TSK reads, and the volume offsets."""

    name: str
    path: Path                    # what triage opens (first segment / E01 / raw)
    raw: Path                     # the raw equivalent TSK's command-line tools read
    offsets: tuple[int, ...]      # volume offsets in bytes
    fs_types: tuple[str, ...]
    deleted: tuple[str, ...]      # paths deleted after the build


def build_ext4(work: Path, src: Path) -> Path:
    img = work / "ext4.raw"
    run(["mke2fs", "-q", "-F", "-t", "ext4", "-b", "1024", "-L", "EXTVOL", "-E",
         "root_owner=0:0", "-d", src, img, "8M"])
    run(["debugfs", "-w", "-R", "rm /gone.txt", img])
    return img


def build_fat32(work: Path, src: Path, files: dict[str, bytes]) -> Path:
    img = work / "fat32.raw"
    with open(img, "wb") as fh:
        fh.truncate(36 * MiB)
    run(["mkfs.fat", "-F", "32", "-n", "FATVOL", img])
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    for d in sorted({str(Path(r).parent) for r in files if "/" in r}):
        parts = Path(d).parts
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            subprocess.run(["mmd", "-i", str(img), f"::/{sub}"], env=env, capture_output=True)
    for rel in files:
        run(["mcopy", "-i", img, src / rel, f"::/{rel}"], env=env)
    run(["mdel", "-i", img, "::/gone.txt"], env=env)
    return img


def build_small_fat(work: Path, src: Path, bits: int) -> Path:
    """A bare FAT12 or FAT16 volume (floppies, old cards and cameras) with one deletion."""
    img = work / f"fat{bits}.raw"
    with open(img, "wb") as fh:
        fh.truncate((2 if bits == 12 else 16) * MiB)
    run(["mkfs.fat", "-F", str(bits), "-n", f"FAT{bits}", img])
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    run(["mmd", "-i", img, "::/docs"], env=env)
    for rel in ("readme.txt", "docs/report.txt", "pictures/cat.png", "gone.txt"):
        run(["mcopy", "-i", img, src / rel, f"::/{rel.replace('pictures/', '')}"], env=env)
    run(["mdel", "-i", img, "::/gone.txt"], env=env)
    return img


def build_ntfs(work: Path, src: Path, files: dict[str, bytes]) -> Path:
    """NTFS with files in the root (ntfscp writes into existing folders only), one ADS and
    one deleted file (Debian has no ntfsrm: the deletion goes through libntfs-3g, by way of
    the synth's unmounted-NTFS writer)."""
    img = work / "ntfs.raw"
    with open(img, "wb") as fh:
        fh.truncate(12 * MiB)
    run(["mkntfs", "-q", "-F", "-f", "-L", "NTFSVOL", img])
    for rel in ("readme.txt", "empty.dat", "big.bin", "gone.txt"):
        run(["ntfscp", "-f", img, src / rel, rel])
    # a picture hidden in an alternate data stream of readme.txt
    run(["ntfscp", "-f", "-N", "hidden", img, src / "pictures/cat.png", "readme.txt"])
    run(["ntfscp", "-f", img, src / "pictures/renamed.txt", "renamed.txt"])
    from triage.synth import ntfs
    if ntfs.available():
        ntfs.delete(["/gone.txt"], img)
    return img


def wrap(disk: Path, parts: list[tuple[Path, str]], table: str) -> list[int]:
    """Put file-system images into one disk with an MBR or GPT made by sfdisk; their offsets."""
    start = MiB
    offsets, lines = [], ["label: " + ("gpt" if table == "gpt" else "dos")]
    for img, ptype in parts:
        size = img.stat().st_size
        lines.append(f"start={start // 512}, size={size // 512}, type={ptype}")
        offsets.append(start)
        start += (size + MiB - 1) // MiB * MiB
    total = start + MiB
    with open(disk, "wb") as fh:
        fh.truncate(total)
    subprocess.run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", str(disk)],
                   input="\n".join(lines).encode() + b"\n", check=True, capture_output=True)
    with open(disk, "r+b") as out:
        for (img, _), off in zip(parts, offsets):
            out.seek(off)
            with open(img, "rb") as fh:
                shutil.copyfileobj(fh, out, 4 * MiB)
    return offsets


def to_e01(raw: Path, target: Path, segment: int, compression: str = "fast") -> list[Path]:
    run(["ewfacquire", "-u", "-q", "-t", target, "-f", "encase6", "-c", compression, "-d", "sha1",
         "-S", str(segment), "-C", "case", "-D", "test", "-E", "1", "-e", "tests", "-N", "none",
         "-m", "fixed", "-M", "physical", raw])
    return sorted(target.parent.glob(target.name + ".E[0-9][0-9]"))


def split_raw(raw: Path, stem: Path, segment: int) -> list[Path]:
    out = []
    with open(raw, "rb") as fh:
        i = 0
        while True:
            buf = fh.read(segment)
            if not buf:
                break
            seg = stem.with_name(f"{stem.name}.{i:03d}")
            seg.write_bytes(buf)
            out.append(seg)
            i += 1
    return out


def build_all(work: Path) -> dict[str, Image]:
    """Every test image: bare ext4, its split raw, FAT32+NTFS under MBR, the same under GPT
    as a split E01."""
    src = work / "src"
    files = content_tree(src)
    ext4 = build_ext4(work, src)
    fat = build_fat32(work, src, files)
    ntfs = build_ntfs(work, src, files)
    images = {"ext4": Image("ext4", ext4, ext4, (0,), ("ext4",), ("/gone.txt",))}
    if shutil.which("mkfs.exfat"):
        # exFAT has no unmounted writer in Debian (mtools stops at FAT32): an empty volume,
        # which still has a label entry, the allocation bitmap and the up-case table
        img = work / "exfat.raw"
        with open(img, "wb") as fh:
            fh.truncate(8 * MiB)
        run(["mkfs.exfat", "-L", "EXVOL", img])
        images["exfat"] = Image("exfat", img, img, (0,), ("exfat",), ())
    for bits in (12, 16):
        img = build_small_fat(work, src, bits)
        images[f"fat{bits}"] = Image(f"fat{bits}", img, img, (0,), (f"fat{bits}",), ("/gone.txt",))
    split_dir = work / "split"
    split_dir.mkdir()
    segs = split_raw(ext4, split_dir / "ext4", 3 * MiB)
    images["ext4_split"] = Image("ext4_split", segs[0], ext4, (0,), ("ext4",), ("/gone.txt",))
    mbr = work / "mbr.raw"
    offs = wrap(mbr, [(fat, "c"), (ntfs, "7")], "mbr")
    images["mbr"] = Image("mbr", mbr, mbr, tuple(offs), ("fat32", "ntfs"), ("/gone.txt",))
    gpt = work / "gpt.raw"
    offs = wrap(gpt, [(ext4, "0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
                      (fat, "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7")], "gpt")
    images["gpt"] = Image("gpt", gpt, gpt, tuple(offs), ("ext4", "fat32"), ("/gone.txt",))
    e01_dir = work / "e01"
    e01_dir.mkdir()
    segments = to_e01(gpt, e01_dir / "gpt", 8 * MiB, "none")   # uncompressed: several segments
    images["gpt_e01"] = Image("gpt_e01", segments[0], gpt, tuple(offs), ("ext4", "fat32"), ("/gone.txt",))
    return images


# --- the TSK command-line reference -------------------------------------------------------------
@dataclass(frozen=True)
class BodyLine:
    path: str
    inode: str          # "12" or NTFS "5-128-4"
    size: int
    allocated: bool
    mode: str


def _images(image) -> list[str]:
    return [str(p) for p in image] if isinstance(image, (list, tuple)) else [str(image)]


def fls_body(image, offset: int, check: bool = True) -> list[BodyLine]:
    """`fls -r -p -m / -o SECTORS IMAGE...`, parsed (mactime body format). With check=False, a
    failing fls (a folder it could not read) gives what it listed before failing."""
    cmd = ["fls", "-r", "-p", "-m", "/", "-o", str(offset // 512), *_images(image)]
    out = subprocess.run(cmd, check=check, capture_output=True).stdout.decode("utf-8", "replace")
    lines = []
    for line in out.splitlines():
        f = line.split("|")
        if len(f) < 11:
            continue
        # the name may hold '|': everything between the MD5 field and the last 9 fields
        name = "|".join(f[1:-9])
        inode, mode, size = f[-9], f[-8], int(f[-5])
        allocated = True
        for suffix in (" (deleted-realloc)", " (deleted)"):
            if name.endswith(suffix):
                name, allocated = name[: -len(suffix)], False
                break
        if mode.startswith("l/") and " -> " in name:        # a symbolic link shows its target
            name = name.split(" -> ", 1)[0]
        lines.append(BodyLine(name, inode, size, allocated, mode))
    return lines


def icat(image, offset: int, inode: str) -> tuple[str, bool, int]:
    """(MD5 of `icat -o SECTORS IMAGE... INODE`, whether icat succeeded, bytes it wrote); an
    NTFS stream is "addr-128-id"."""
    res = subprocess.run(["icat", "-o", str(offset // 512), *_images(image), inode], capture_output=True,
                         timeout=120)
    return hashlib.md5(res.stdout).hexdigest(), res.returncode == 0 and not res.stderr, len(res.stdout)


def icat_md5(image, offset: int, inode: str) -> str:
    return icat(image, offset, inode)[0]
