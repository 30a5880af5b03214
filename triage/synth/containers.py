"""Files that hold pictures inside them, built byte by byte so the pictures inside are exactly
the bytes given: a Windows thumbnail cache, a PDF with DCTDecode images, a JPEG whose EXIF
holds a thumbnail. Each builder returns the file and the (offset, length) of every picture."""
from __future__ import annotations

import struct
from typing import NamedTuple


class CacheEntry(NamedTuple):
    """Where a thumbnail sits in a built thumbnail cache, and the entry that holds it."""

    offset: int
    length: int
    entry_hash: str             # the cache-entry hash, 16 hex digits
    identifier: str             # the identifier string


# Windows' thumbcache format versions (the file header's second field): 20 Vista, 21 Windows 7,
# 26/28/30 Windows 8 (three header layouts), 31 Windows 8.1, 32 Windows 10 and 11
THUMBCACHE_VERSIONS = (20, 21, 26, 28, 30, 31, 32)


def thumbcache(thumbs: list[bytes], version: int = 21, free: int = 0
               ) -> tuple[bytes, list[CacheEntry]]:
    """A Windows thumbcache_256.db of one format version: a "CMMM" file header, then one
    "CMMM" cache entry per thumbnail (entry header, UTF-16 identifier, padding, the picture),
    then, with `free`, the "first available" entry of that many bytes that ends real files.
    Each entry's hash is a 64-bit value (from the thumbnail's MD5, as stable as Windows' own)
    and its identifier that value in hex without leading zeros, as Windows 7 to 11 write it.
    Layouts (libyal's "Windows Explorer Thumbnail Cache database format"): Vista's entry
    header is 56 bytes with a file extension; Windows 7's 48; Windows 8 and later 56, with
    the thumbnail's width and height. Entry checksums (a CRC-64) are left 0: nothing here
    checks them."""
    import hashlib
    if version not in THUMBCACHE_VERSIONS:
        raise ValueError(f"thumbcache format version {version} is not one Windows writes")
    head_size = 28 if version == 28 else 24
    entries, where = b"", []
    for data in thumbs:
        key = int.from_bytes(hashlib.md5(data).digest()[:8], "little")
        ident = f"{key:x}".encode("utf-16-le")
        fixed = 48 if version == 21 else 56
        pad = -(fixed + len(ident)) % 16 if version >= 30 else 0     # the data 16-aligned
        size = fixed + len(ident) + pad + len(data)
        if version == 20:
            head = b"CMMM" + struct.pack("<IQ8sIIIIQQ", size, key, "jpg".encode("utf-16-le")
                                         + b"\0\0", len(ident), pad, len(data), 0, 0, 0)
        elif version == 21:
            head = b"CMMM" + struct.pack("<IQIIIIQQ", size, key, len(ident), pad, len(data), 0,
                                         0, 0)
        else:
            head = b"CMMM" + struct.pack("<IQIIIIIIQQ", size, key, len(ident), pad, len(data),
                                         256, 192, 0, 0, 0)
        assert len(head) == fixed
        at = head_size + len(entries) + fixed + len(ident) + pad
        where.append(CacheEntry(at, len(data), f"{key:016x}", f"{key:x}"))
        entries += head + ident + bytes(pad) + data
    available = head_size + len(entries)
    if free:
        entries += b"CMMM" + struct.pack("<I", free) + bytes(free - 8)
    kind = 2 if version <= 21 else 4               # 256 x 256
    if version in (20, 21, 26):
        header = b"CMMM" + struct.pack("<5I", version, kind, 24, available, len(thumbs))
    elif version == 28:
        header = b"CMMM" + struct.pack("<6I", version, kind, 0, 28, available, len(thumbs))
    else:
        header = b"CMMM" + struct.pack("<5I", version, kind, 0, 24, available)
    return header + entries, where


def pdf_with_jpegs(pages: list[tuple[bytes, int, int]]) -> tuple[bytes, list[tuple[int, int]]]:
    """A PDF with one page per (JPEG, width, height), each page an image XObject whose stream
    is the JPEG as given (/DCTDecode), with a cross-reference table."""
    return pdf_with_images([("dct", jpeg, w, h) for jpeg, w, h in pages])


def pdf_with_images(images: list[tuple[str, bytes, int, int]], encrypt: bool = False,
                    content: bytes = b"") -> tuple[bytes, list[tuple[int, int]]]:
    """A PDF with one page per (encoding, payload, width, height); returns it and each image
    stream's (offset, length). Encodings: dct (payload: a JPEG, stored as is), flate (payload:
    8-bit RGB pixels, zlib-compressed), flate-png (the same with PNG predictor 15, Up rows),
    jpx (payload stored as is, /JPXDecode). `content` is added to each page's drawing (an
    inline image, say); `encrypt` adds an /Encrypt entry to the trailer."""
    import zlib
    objs: list[bytes] = []
    kids = " ".join(f"{3 + 3 * i} 0 R" for i in range(len(images)))
    objs.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objs.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(images)} >>".encode())
    streams: list[bytes] = []
    for i, (enc, payload, w, h) in enumerate(images):
        content_n, image = 4 + 3 * i, 5 + 3 * i
        draw = f"q {w} 0 0 {h} 0 0 cm /Im{i} Do Q".encode() + content
        objs.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {w} {h}] /Contents "
                    f"{content_n} 0 R /Resources << /XObject << /Im{i} {image} 0 R >> >> >>"
                    .encode())
        objs.append(b"<< /Length %d >>\nstream\n" % len(draw) + draw + b"\nendstream")
        parms = ""
        if enc == "dct":
            data, filt = payload, "/DCTDecode"
        elif enc == "flate":
            data, filt = zlib.compress(payload, 6), "/FlateDecode"
        elif enc == "flate-png":
            row = w * 3
            rows = [payload[y * row:(y + 1) * row] for y in range(h)]
            out, prev = bytearray(), bytes(row)
            for r in rows:          # PNG filter 2 (Up) on every row
                out += b"\x02" + bytes((a - b) & 0xFF for a, b in zip(r, prev))
                prev = r
            data, filt = zlib.compress(bytes(out), 6), "/FlateDecode"
            parms = f" /DecodeParms << /Predictor 15 /Colors 3 /BitsPerComponent 8 /Columns {w} >>"
        else:
            data, filt = payload, "/JPXDecode"
        streams.append(data)
        objs.append(f"<< /Type /XObject /Subtype /Image /Width {w} /Height {h} /ColorSpace "
                    f"/DeviceRGB /BitsPerComponent 8 /Filter {filt}{parms} /Length {len(data)} >>\n"
                    "stream\n".encode() + data + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets, where = [], []
    for n, body in enumerate(objs, 1):
        offsets.append(len(out))
        head = b"%d 0 obj\n" % n
        if b"/Subtype /Image" in body:
            where.append(len(out) + len(head) + body.index(b"stream\n") + len(b"stream\n"))
        out += head + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    enc_entry = b" /Encrypt << /Filter /Standard /V 2 /R 3 >>" if encrypt else b""
    out += b"trailer\n<< /Size %d /Root 1 0 R%s >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objs) + 1, enc_entry, xref)
    return bytes(out), [(w, len(d)) for w, d in zip(where, streams)]


def jpeg_with_exif_thumbnail(jpeg: bytes, thumb: bytes) -> tuple[bytes, tuple[int, int]]:
    """`jpeg` with an EXIF APP1 segment after its SOI whose IFD1 points at `thumb` (a JPEG of
    at most about 64 KB), as cameras and phones store the thumbnail of a photo."""
    ifd1_at = 8 + 2 + 4                       # TIFF header, IFD0 (no entries), its next-IFD
    thumb_at = ifd1_at + 2 + 2 * 12 + 4
    tiff = (b"II*\0" + struct.pack("<I", 8) + struct.pack("<HI", 0, ifd1_at)
            + struct.pack("<H", 2) + struct.pack("<HHII", 0x0201, 4, 1, thumb_at)
            + struct.pack("<HHII", 0x0202, 4, 1, len(thumb)) + struct.pack("<I", 0) + thumb)
    exif = b"Exif\0\0" + tiff
    if len(exif) + 2 > 0xFFFF:
        raise ValueError("an EXIF thumbnail must fit in one APP1 segment (64 KB)")
    app1 = b"\xff\xe1" + struct.pack(">H", 2 + len(exif)) + exif
    return jpeg[:2] + app1 + jpeg[2:], (2 + 4 + 6 + thumb_at, len(thumb))


def ole_file(streams: dict[str, bytes]) -> tuple[bytes, dict[str, int]]:
    """A Compound File Binary (OLE2, version 3, 512-byte sectors) holding `streams` at the root,
    as Windows' Thumbs.db and Office 97 documents are. Every stream is stored in regular
    sectors (padded to the 4096-byte mini-stream cutoff, so no mini stream is needed). Returns
    the file and each stream's first byte offset in it."""
    import struct
    sect, endchain, free, fatsect, nostream = 512, 0xFFFFFFFE, 0xFFFFFFFF, 0xFFFFFFFD, 0xFFFFFFFF
    names = list(streams)
    data = {n: streams[n] + bytes(max(0, 4096 - len(streams[n]))) for n in names}
    sizes = {n: len(data[n]) for n in names}
    n_dir = -(-(len(names) + 1) * 128 // sect)
    n_data = sum(-(-len(d) // sect) for d in data.values())
    n_fat = 1
    while n_fat * 128 < n_fat + n_dir + n_data:
        n_fat += 1
    fat = [fatsect] * n_fat
    first_dir = len(fat)
    fat += list(range(first_dir + 1, first_dir + n_dir)) + [endchain]
    starts, offsets = {}, {}
    for n in names:
        count = -(-len(data[n]) // sect)
        starts[n] = len(fat)
        offsets[n] = sect * (1 + len(fat))
        fat += list(range(len(fat) + 1, len(fat) + count)) + [endchain]
    fat += [free] * (n_fat * 128 - len(fat))

    def entry(name: str, kind: int, child: int, right: int, start: int, size: int) -> bytes:
        raw = name.encode("utf-16-le") + b"\0\0"
        return (raw.ljust(64, b"\0") + struct.pack("<HBB", len(raw), kind, 1)
                + struct.pack("<III", nostream, right, child) + bytes(16) + bytes(4)
                + bytes(16) + struct.pack("<IQ", start, size))

    dirs = [entry("Root Entry", 5, 1 if names else nostream, nostream, endchain, 0)]
    for i, n in enumerate(names, 1):
        dirs.append(entry(n, 2, nostream, i + 1 if i < len(names) else nostream, starts[n],
                          len(streams[n]) if len(streams[n]) >= 4096 else sizes[n]))
    directory = b"".join(dirs).ljust(n_dir * sect, b"\0")
    difat = list(range(n_fat)) + [free] * (109 - n_fat)
    header = (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(16)
              + struct.pack("<HHHHH", 0x3E, 3, 0xFFFE, 9, 6) + bytes(6)
              + struct.pack("<IIIIIIII", 0, n_fat, first_dir, 0, 4096, endchain, 0, endchain)
              + struct.pack("<I", 0) + struct.pack("<109I", *difat))
    body = struct.pack(f"<{len(fat)}I", *fat) + directory + b"".join(
        data[n].ljust(-(-len(data[n]) // sect) * sect, b"\0") for n in names)
    return header + body, offsets
