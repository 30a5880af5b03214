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
import time
from typing import Optional
from xml.sax.saxutils import escape, quoteattr

from triage import __version__
from triage.exports import iso_utc, private_output
from triage.flags import display_path

DFXML_NS = "http://www.forensicswiki.org/wiki/Category:Digital_Forensics_XML"
DC_NS = "http://purl.org/dc/elements/1.1/"
TRIAGE_NS = "https://github.com/triage/triage/dfxml"


def _el(name: str, value, **attrs) -> str:
    attr = "".join(f" {k}={quoteattr(str(v))}" for k, v in attrs.items())
    return f"<{name}{attr}>{escape(str(value))}</{name}>"


def _fileobject(rec, feat, partition: Optional[int], file_id: int) -> str:
    # Hot loop (one call per file of the case): numbers go in as they are, text is escaped.
    p = rec.prov
    parts = [f"<filename>{escape(display_path(p))}</filename>"]
    if partition is not None:
        parts.append(f"<partition>{partition}</partition>")
    parts.append(f"<id>{file_id}</id><name_type>{'d' if rec.is_dir else 'r'}</name_type>"
                 f"<filesize>{int(rec.size)}</filesize><alloc>{1 if rec.allocated else 0}</alloc>")
    if rec.orphan:
        parts.append("<orphan>1</orphan>")
    if p.inode is not None:
        parts.append(f"<inode>{int(p.inode)}</inode>")
    for tag, t in (("mtime", rec.mtime), ("ctime", rec.ctime), ("atime", rec.atime),
                   ("crtime", rec.crtime)):
        if t is not None:
            parts.append(f"<{tag}>{iso_utc(t)}</{tag}>")
    ctype = feat.type or rec.type
    if ctype:
        parts.append(f"<libmagic>{escape(ctype)}</libmagic>")
    for algo, value in (("md5", feat.md5), ("sha1", feat.sha1), ("sha256", feat.sha256)):
        if value:
            parts.append(f'<hashdigest type="{algo}">{escape(value)}</hashdigest>')
    return "    <fileobject>" + "".join(parts) + "</fileobject>\n"


def write_dfxml(store, out, device_id: Optional[str] = None) -> str:
    devices = [d for d in store.devices() if device_id is None or d["id"] == device_id]
    n = 0
    with private_output(out) as fh:
        fh.write('<?xml version="1.0" encoding="UTF-8"?>\n')
        fh.write(f'<dfxml version="1.2.0" xmlns="{DFXML_NS}" xmlns:dc="{DC_NS}" '
                 f'xmlns:triage="{TRIAGE_NS}">\n')
        fh.write("  <metadata><dc:type>File system walk</dc:type></metadata>\n")
        fh.write("  <creator version=\"1.0\">" + _el("program", "triage")
                 + _el("version", __version__)
                 + "<execution_environment>" + _el("os_sysname", platform.system())
                 + _el("os_release", platform.release()) + _el("start_time", iso_utc(time.time()))
                 + "</execution_environment></creator>\n")
        fh.write("  <source>" + "".join(_el("image_filename", p) for d in devices
                                        for p in d["paths"]) + "</source>\n")
        for dev in devices:
            volumes = {v.offset: v for v in store.volumes(dev["id"])}
            current: Optional[int] = None
            opened = False
            # files come in key order, which groups them by volume offset within a device
            for rec, feat in store.files(dev["id"]):
                off = rec.prov.volume_offset
                if not opened or off != current:
                    if opened:
                        fh.write("  </volume>\n")
                    vol = volumes.get(off)
                    attrs = {"offset": off, "triage:device": dev["id"]}
                    fh.write("  <volume" + "".join(f" {k}={quoteattr(str(v))}" for k, v in attrs.items())
                             + ">")
                    if vol is not None:
                        if vol.fs_type:
                            fh.write(_el("ftype_str", vol.fs_type))
                        if vol.block_size:
                            fh.write(_el("block_size", vol.block_size))
                    fh.write("\n")
                    current, opened = off, True
                n += 1
                vol = volumes.get(off)
                fh.write(_fileobject(rec, feat, vol.index if vol else None, n))
            if opened:
                fh.write("  </volume>\n")
        fh.write("</dfxml>\n")
    return f"{n} file objects from {len(devices)} devices"
