"""vPDQ records of the matched and suspected videos of a case, for other systems.

ThreatExchange's line format, one line per hashed frame: `frame_number,pdq_hex,quality,
timestamp_seconds` (what `vpdq-hash-video` writes). Several videos go in one file, each
started by a `# video: NAME` line, the form `triage hashset import` reads back (a file of
vPDQ lines is detected as `vpdq`). NAME is `DEVICE:PATH (md5 MD5)`, with control and bidi
characters escaped, so a hostile file name cannot forge a line. Comment lines above say which
case, device and finding each video is; other vPDQ readers skip `#` lines.
"""
from __future__ import annotations

from typing import Optional

from triage import __version__
from triage.exports import iso_utc, private_output
from triage.features.video import vpdq_lines
from triage.findings import findings
from triage.units import terminal_safe


def _one_line(text: str) -> str:
    return terminal_safe(text).replace("#", "\\x23") if text.startswith("#") else terminal_safe(text)


def write_vpdq(store, out, device_id: Optional[str] = None, now: Optional[float] = None) -> str:
    import time

    videos = [f for f in findings(store, device_id) if f.is_video]
    with private_output(out) as fh:
        fh.write(f"# vPDQ records written by triage {__version__} at "
                 f"{iso_utc(now if now is not None else time.time())}\n")
        fh.write("# frame_number,pdq_hex,quality,timestamp_seconds\n")
        frames = 0
        for f in videos:
            name = f"{f.device_id}:{f.record.prov.display()} (md5 {f.features.md5 or '-'})"
            why = f.kind + (f", {f.top.set_name} {f.top.algorithm} {f.top.value}" if f.top else "")
            fh.write(f"# finding: {_one_line(why)}; duration {f.features.duration:.3f} s, "
                     f"{len(f.features.frames)} frames\n")
            fh.write(f"# video: {_one_line(name)}\n")
            for line in vpdq_lines(f.features.frames):
                fh.write(line + "\n")
            frames += len(f.features.frames)
    return f"{len(videos)} videos, {frames} frames"
