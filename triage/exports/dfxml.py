"""DFXML file listing: every file the scan recorded, as fiwalk-style `fileobject`s.

Layout: `dfxml` (version 1.2.0) > metadata, creator, source (every evidence segment), then one
`volume` per examined volume of each device, holding its `fileobject`s. The device id is kept
in a `triage:device` attribute on each volume (DFXML allows extension namespaces). Inside a
fileobject the elements follow the schema's order: filename, partition, id, filesize, alloc,
orphan, inode, mtime, ctime, atime, crtime, hashdigest. Archive members and NTFS streams are
written as `archive.zip!member` and `file:stream` filenames.

Files are streamed from the store, so a case of any size exports in flat memory.
"""
from __future__ import annotations

import platform
import re
import time
from typing import Optional
from xml.sax.saxutils import XMLGenerator

from triage import __version__
from triage.exports import iso_utc, private_output
from triage.flags import display_path

DFXML_NS = "http://www.forensicswiki.org/wiki/Category:Digital_Forensics_XML"
DC_NS = "http://purl.org/dc/elements/1.1/"
TRIAGE_NS = "https://github.com/triage/triage/dfxml"


_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_text(value) -> str:
    """Text XML 1.0 can hold: characters it cannot (control characters in a file name, lone
    surrogates from undecodable names) are written as visible escapes, `\\x01`, `\\udc80`."""
    text = str(value)
    if not _XML_ILLEGAL.search(text):
        return text
    return _XML_ILLEGAL.sub(lambda m: (f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                                       else f"\\u{ord(m.group()):04x}"), text)


class _Writer:
    """A streaming XML writer (the standard library's XMLGenerator does the escaping and
    quoting); every text and attribute value passes through `xml_text` first."""

    def __init__(self, fh):
        self._gen = XMLGenerator(fh, encoding="utf-8", short_empty_elements=True)
        self._fh = fh

    def start(self, name: str, **attrs) -> None:
        self._gen.startElement(name, {k.replace("__", ":"): xml_text(v) for k, v in attrs.items()})

    def end(self, name: str) -> None:
        self._gen.endElement(name)

    def el(self, name: str, value, **attrs) -> None:
        self.start(name, **attrs)
        self._gen.characters(xml_text(value))
        self.end(name)

    def raw(self, text: str) -> None:           # whitespace between elements only
        self._gen.ignorableWhitespace(text)


def _fileobject(w: _Writer, rec, feat, partition: Optional[int], file_id: int) -> None:
    p = rec.prov
    w.raw("    ")
    w.start("fileobject")
    w.el("filename", display_path(p))
    if partition is not None:
        w.el("partition", partition)
    w.el("id", file_id)
    w.el("name_type", "d" if rec.is_dir else "r")
    w.el("filesize", int(rec.size))
    w.el("alloc", 1 if rec.allocated else 0)
    if rec.orphan:
        w.el("orphan", 1)
    if p.inode is not None:
        w.el("inode", int(p.inode))
    for tag, t in (("mtime", rec.mtime), ("ctime", rec.ctime), ("atime", rec.atime),
                   ("crtime", rec.crtime)):
        if t is not None:
            w.el(tag, iso_utc(t))
    ctype = feat.type or rec.type
    if ctype:
        w.el("libmagic", ctype)
    for algo, value in (("md5", feat.md5), ("sha1", feat.sha1), ("sha256", feat.sha256)):
        if value:
            w.el("hashdigest", value, type=algo)
    w.end("fileobject")
    w.raw("\n")


def write_dfxml(store, out, device_id: Optional[str] = None) -> str:
    devices = [d for d in store.devices() if device_id is None or d["id"] == device_id]
    n = 0
    with private_output(out, mode="wb", encoding=None) as fh:
        w = _Writer(fh)
        w._gen.startDocument()
        w.raw("\n")
        w.start("dfxml", version="1.2.0", xmlns=DFXML_NS, xmlns__dc=DC_NS,
                xmlns__triage=TRIAGE_NS)
        w.raw("\n  ")
        w.start("metadata")
        w.el("dc:type", "File system walk")
        w.end("metadata")
        w.raw("\n  ")
        w.start("creator", version="1.0")
        w.el("program", "triage")
        w.el("version", __version__)
        w.start("execution_environment")
        w.el("os_sysname", platform.system())
        w.el("os_release", platform.release())
        w.el("start_time", iso_utc(time.time()))
        w.end("execution_environment")
        w.end("creator")
        w.raw("\n  ")
        w.start("source")
        for d in devices:
            for path in d["paths"]:
                w.el("image_filename", path)
        w.end("source")
        w.raw("\n")
        for dev in devices:
            volumes = {v.offset: v for v in store.volumes(dev["id"])}
            current: Optional[int] = None
            opened = False
            # files come in key order, which groups them by volume offset within a device
            for rec, feat in store.files(dev["id"]):
                off = rec.prov.volume_offset
                if not opened or off != current:
                    if opened:
                        w.raw("  ")
                        w.end("volume")
                        w.raw("\n")
                    vol = volumes.get(off)
                    w.raw("  ")
                    w.start("volume", offset=off, triage__device=dev["id"])
                    if vol is not None:
                        if vol.fs_type:
                            w.el("ftype_str", vol.fs_type)
                        if vol.block_size:
                            w.el("block_size", vol.block_size)
                    w.raw("\n")
                    current, opened = off, True
                n += 1
                vol = volumes.get(off)
                _fileobject(w, rec, feat, vol.index if vol else None, n)
            if opened:
                w.raw("  ")
                w.end("volume")
                w.raw("\n")
        w.end("dfxml")
        w.raw("\n")
        w._gen.endDocument()
    return f"{n} file objects from {len(devices)} devices"
