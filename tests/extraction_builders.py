"""Small phone extractions built in the test: tar, tgz, zip, UFDR (zip + report.xml), iTunes
backup folders (Manifest.db) and Android adb backups, plus the bad ones (bomb, hostile names,
cut short). The alert stand-in is a synthetic bait picture (triage/synth/bait.py)."""
from __future__ import annotations

import hashlib
import io
import plistlib
import sqlite3
import tarfile
import zipfile
import zlib
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from triage.synth.bait import make_bait_picture

MiB = 1 << 20
DEEP = "data/media/0/DCIM/Camera/2026/12/IMG_20261201_101500.jpg"


def bait_jpeg(seed: int = 11) -> bytes:
    buf = io.BytesIO()
    make_bait_picture(seed).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def phone_tree(bait: bytes) -> dict[str, bytes]:
    """An Android-like file system: system files, app data, a nested zip, and the bait deep
    inside the camera folder."""
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        z.writestr("photos/shared/holiday.txt", b"not a picture\n")
    return {
        "system/build.prop": b"ro.product.model=Synthetic\n" * 20,
        "system/app/Settings/Settings.apk": bytes(range(256)) * 64,
        "data/data/com.example.chat/databases/msg.db": b"SQLite format 3\x00" + bytes(2000),
        "data/media/0/Download/archive.zip": inner.getvalue(),
        "data/media/0/Documents/notes.txt": b"shopping list\n",
        DEEP: bait,
    }


def write_tar(path, files: dict[str, bytes], compress: bool = False, prefix: str = "./"):
    """A tar (gzip'd when asked) of `files`, folders first, to a path or a file object."""
    target = {"fileobj": path} if hasattr(path, "write") else {"name": path}
    with tarfile.open(mode="w:gz" if compress else "w", format=tarfile.GNU_FORMAT,
                      **target) as tf:
        dirs = set()
        for name in files:
            parts = name.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    ti = tarfile.TarInfo(prefix + d)
                    ti.type = tarfile.DIRTYPE
                    ti.mode = 0o755
                    tf.addfile(ti)
        for name, data in files.items():
            ti = tarfile.TarInfo(prefix + name)
            ti.size = len(data)
            ti.mtime = 1764583200
            tf.addfile(ti, io.BytesIO(data))
    return path


def write_zip(path: Path, files: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", method) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def write_ufdr(path: Path, files: dict[str, tuple[str, bytes, bool]]) -> Path:
    """A UFDR: `files` maps the member name in the UFDR (files/Image/x.jpg) to (the phone's
    path, content, deleted). report.xml lists each under taggedFiles, with its Local Path."""
    ns = "http://pa.cellebrite.com/report/2.0"
    rows = []
    for i, (local, (phone_path, data, deleted)) in enumerate(files.items()):
        rows.append(
            f'  <file fs="Data" fsid="fs-1" path={quoteattr(phone_path)} size="{len(data)}" '
            f'id="f{i}" extractionId="0" deleted="{"Deleted" if deleted else "Intact"}">\n'
            f'   <metadata section="File">\n'
            f'    <item name="Local Path"><![CDATA[{local.replace("/", chr(92))}]]></item>\n'
            f'    <item name="MD5">{escape(md5(data))}</item>\n'
            f'   </metadata>\n  </file>')
    report = (f'<?xml version="1.0" encoding="utf-8"?>\n<project id="p1" name="Synthetic phone" '
              f'reportVersion="5.2.0.0" xmlns="{ns}">\n <sourceExtractions>\n  <extractionInfo '
              f'id="0" name="File System" type="FileSystem" deviceName="Synthetic phone"/>\n'
              f' </sourceExtractions>\n <decodedData/>\n <taggedFiles>\n' + "\n".join(rows) +
              '\n </taggedFiles>\n</project>\n')
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("report.xml", report)
        for local, (_p, data, _d) in files.items():
            z.writestr(local, data)
    return path


def _file_blob(size: int, mtime: int) -> bytes:
    """A Files.file value as iOS writes it: an NSKeyedArchiver plist of an MBFile."""
    return plistlib.dumps({"$archiver": "NSKeyedArchiver", "$version": 100000,
                           "$top": {"root": plistlib.UID(1)},
                           "$objects": ["$null", {"Size": size, "LastModified": mtime, "Flags": 0,
                                                  "Mode": 0o100644,
                                                  "$class": plistlib.UID(2)},
                                        {"$classname": "MBFile", "$classes": ["MBFile", "NSObject"]}]},
                          fmt=plistlib.FMT_BINARY)


def write_itunes(folder: Path, files: dict[tuple[str, str], bytes], encrypted: bool = False) -> Path:
    """An iTunes/Finder backup: Manifest.db's Files table (fileID = sha1(domain-relativePath)),
    each file stored at <fileID[:2]>/<fileID>, Info.plist and Manifest.plist (IsEncrypted)."""
    folder.mkdir(parents=True)
    (folder / "Info.plist").write_bytes(plistlib.dumps({"Device Name": "Synthetic iPhone"}))
    (folder / "Manifest.plist").write_bytes(plistlib.dumps({"IsEncrypted": encrypted,
                                                           "Version": "10.0"}))
    if encrypted:
        # iOS 10.2+: Manifest.db is encrypted too; stand in with bytes SQLite cannot read
        (folder / "Manifest.db").write_bytes(bytes((i * 131 + 7) % 256 for i in range(8192)))
        for (domain, rel), data in files.items():
            fid = hashlib.sha1(f"{domain}-{rel}".encode()).hexdigest()
            (folder / fid[:2]).mkdir(exist_ok=True)
            (folder / fid[:2] / fid).write_bytes(bytes(b ^ 0x5A for b in data))
        return folder
    con = sqlite3.connect(folder / "Manifest.db")
    con.execute("CREATE TABLE Files (fileID TEXT PRIMARY KEY, domain TEXT, relativePath TEXT, "
                "flags INTEGER, file BLOB)")
    dirs = set()
    for (domain, rel), data in files.items():
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if (domain, d) not in dirs:
                dirs.add((domain, d))
                fid = hashlib.sha1(f"{domain}-{d}".encode()).hexdigest()
                con.execute("INSERT INTO Files VALUES (?, ?, ?, 2, ?)", (fid, domain, d, None))
        fid = hashlib.sha1(f"{domain}-{rel}".encode()).hexdigest()
        con.execute("INSERT INTO Files VALUES (?, ?, ?, 1, ?)",
                    (fid, domain, rel, _file_blob(len(data), 1764583200)))
        (folder / fid[:2]).mkdir(exist_ok=True)
        (folder / fid[:2] / fid).write_bytes(data)
    con.commit()
    con.close()
    return folder


def write_adb(path: Path, files: dict[str, bytes], encrypted: bool = False) -> Path:
    """An Android `adb backup`: the header, then the zlib-deflated tar (apps/<pkg>/...)."""
    tar = io.BytesIO()
    write_tar(tar, files, prefix="")
    if encrypted:
        header = (b"ANDROID BACKUP\n5\n1\nAES-256\n" + b"A" * 64 + b"\n" + b"B" * 32 + b"\n"
                  + b"10000\n" + b"C" * 32 + b"\n" + b"D" * 192 + b"\n")
        path.write_bytes(header + bytes((i * 73) % 256 for i in range(4096)))
        return path
    path.write_bytes(b"ANDROID BACKUP\n5\n1\nnone\n" + zlib.compress(tar.getvalue()))
    return path


def write_zip_bomb(path: Path, declared: int = 128 * MiB) -> Path:
    """A 'phone extraction' whose one real-looking member inflates 1000:1 (zeros)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("sdcard/DCIM/readme.txt", b"hello\n")
        with z.open("sdcard/DCIM/huge.bin", "w", force_zip64=True) as w:
            block = bytes(MiB)
            for _ in range(declared // MiB):
                w.write(block)
    return path


def write_tgz_bomb(path: Path, declared: int = 160 * MiB) -> Path:
    """A gzip'd tar whose stream inflates far past 100:1 (one member of zeros)."""
    class Zeros(io.RawIOBase):
        def __init__(self, n):
            self.left = n

        def readinto(self, b):
            n = min(len(b), self.left)
            b[:n] = bytes(n)
            self.left -= n
            return n

        def readable(self):
            return True

    with tarfile.open(path, "w:gz", compresslevel=1) as tf:
        ti = tarfile.TarInfo("sdcard/zeros.bin")
        ti.size = declared
        tf.addfile(ti, io.BufferedReader(Zeros(declared)))
        ti = tarfile.TarInfo("sdcard/after.txt")
        ti.size = 3
        tf.addfile(ti, io.BytesIO(b"end"))
    return path


class _PkCrypt:
    """PKWARE traditional encryption (APPNOTE 6.1.5), for building password-protected zips;
    zipfile (which can read them) checks what this writes."""

    def __init__(self, password: bytes):
        self.keys = [305419896, 591751049, 878082192]
        for b in password:
            self.update(b)

    @staticmethod
    def crc(value: int, b: int) -> int:
        value ^= b
        for _ in range(8):
            value = (value >> 1) ^ 0xEDB88320 if value & 1 else value >> 1
        return value

    def update(self, b: int) -> None:
        k0, k1, k2 = self.keys
        k0 = self.crc(k0, b)
        k1 = ((k1 + (k0 & 0xFF)) * 134775813 + 1) & 0xFFFFFFFF
        k2 = self.crc(k2, k1 >> 24)
        self.keys = [k0, k1, k2]

    def encrypt(self, data: bytes) -> bytes:
        out = bytearray()
        for p in data:
            t = (self.keys[2] | 2) & 0xFFFF
            out.append(p ^ (((t * (t ^ 1)) >> 8) & 0xFF))
            self.update(p)
        return bytes(out)


def write_encrypted_zip(path: Path, files: dict[str, bytes], password: bytes) -> Path:
    """A zip whose members are deflated, then encrypted with the password (as `zip -P` does)."""
    import os
    import struct
    out, central = bytearray(), bytearray()
    t, d = (10 << 11) | (15 << 5), (46 << 9) | (12 << 5) | 1        # 2026-12-01 10:15
    for name, data in files.items():
        raw = name.encode()
        comp = zlib.compressobj(6, zlib.DEFLATED, -15)
        packed = comp.compress(data) + comp.flush()
        crc = zlib.crc32(data)
        body = _PkCrypt(password).encrypt(os.urandom(11) + bytes((crc >> 24,)) + packed)
        offset = len(out)
        out += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 1, 8, t, d, crc, len(body),
                           len(data), len(raw), 0) + raw + body
        central += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 1, 8, t, d, crc,
                               len(body), len(data), len(raw), 0, 0, 0, 0, 0, offset) + raw
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(files), len(files), len(central),
                      len(out), 0)
    path.write_bytes(bytes(out + central + end))
    with zipfile.ZipFile(path) as z:           # zipfile agrees: the password opens every member
        assert all(z.read(n, pwd=password) == files[n] for n in files)
    return path
