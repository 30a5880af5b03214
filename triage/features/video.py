"""Video features: sampled frames decoded with PyAV, each hashed (PDQ with quality, pHash).

What is decoded, per video (bounded in frames, time and memory; see VideoLimits):
1. Keyframes. The decoder is told to skip every other frame (`skip_frame` NONKEY), and a
   keyframe packet closer than one sampling step to the last kept one is not even sent to it,
   so an all-intra video (MJPEG) costs no more than one with a long GOP.
2. Uniform samples, one per sampling step (1 s by default), where no keyframe fell within
   half a step: a seek to the keyframe before the sample and a decode forward to it.
The sampling step grows once the frames would pass the cap: cap = max(min_frames,
frames_per_sqrt_second * sqrt(duration)), at most max_frames. Each frame is hashed from the
decoder's own luma (its Y plane, where it lies, no copy, no RGB): PDQ over the whole frame, as
other systems hash it, pHash and the review strip from a small grey picture made in the same
pass (frame_hashes); only the model's frames are converted to a small RGB picture. An MJPEG
video is decoded at 1/2, 1/4 or 1/8 size (`lowres`), as JPEG pictures are.

The frames form the video's vPDQ record (ThreatExchange's line format, `vpdq_lines`). What could
not be examined (no video stream, undecodable, cut short, over the time limit) is said in
`VideoResult.gap` with the seconds examined, for a coverage record.

Pure: bytes in, result out, never raises on bad bytes. Runs in the scan's batch workers.
"""
from __future__ import annotations

import io
import math
import os
import time
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Optional

import numpy as np

from triage.records import VideoFrame
from triage.units import human_bytes
from triage.videolimits import DEFAULT_LIMITS, VideoLimits  # noqa: F401  (re-exported)

MiB = 1024 * 1024
GiB = 1024 * MiB
WORK_SIZE = 256            # shorter side of the decoded frame, as for pictures
STRIP_FRAMES = 4           # frames in the review strip




@dataclass
class VideoResult:
    duration: float = 0.0                 # seconds, as the container states it (0: unknown)
    examined: float = 0.0                 # seconds of the video its data was read to
    width: int = 0
    height: int = 0
    frames: tuple = ()                    # VideoFrame, in time order
    strip: bytes = b""                    # JPEG: STRIP_FRAMES frames side by side, for review
    model_inputs: list = field(default_factory=list)   # (VideoFrame, model array or why not)
    error: str = ""                       # why decoding stopped or failed ("" when it did not)
    note: str = ""                        # what was thinned without leaving anything unseen
    gap: str = ""                         # what was not examined ("" when all of it was)


class VideoSpool:
    """Where a video too large to decode from memory (`VideoLimits.max_bytes`) is written as
    it is hashed, so its frames can still be decoded from a file: read once from the evidence,
    never held whole in memory.

    Each video gets an unnamed temporary file in `directory` (default $TRIAGE_HOME/spool, made
    0700: on disk, where /tmp may be memory): `tempfile.TemporaryFile`, which on Linux has no
    name at all (O_TMPFILE), is readable by this user alone, and is freed when it is closed or
    its worker dies. A video over `most` bytes, or one that would leave less than `reserve`
    bytes free there (checked when it starts, and again every GiB written, as a declared size
    can lie and other workers spool too), is not spooled and stays a coverage gap saying why
    (OSError's message)."""

    def __init__(self, directory: Optional[str] = None, most: int = 16 * GiB,
                 reserve: int = 2 * GiB):
        self.directory, self.most, self.reserve = directory, most, reserve

    def __call__(self, size: int) -> BinaryIO:
        import tempfile
        if self.directory:
            where = self.directory
        else:
            from triage.home import triage_home
            where = str(triage_home() / "spool")
            os.makedirs(where, mode=0o700, exist_ok=True)
        if size > self.most:
            raise OSError(f"{human_bytes(size)} is over the {human_bytes(self.most)} spool limit")
        room = _room(where, self.reserve)
        if size > room:
            raise OSError(f"{human_bytes(room + self.reserve)} free in {where}, "
                          f"{human_bytes(size)} needed and {human_bytes(self.reserve)} kept free")
        return _Capped(tempfile.TemporaryFile(dir=where), where, min(self.most, room),
                       self.reserve)


def _room(where: str, reserve: int) -> int:
    """Bytes that may be written in `where` leaving `reserve` free."""
    import shutil
    return max(0, shutil.disk_usage(where).free - reserve)


class _Capped:
    """A spool file that stops at `most` bytes, and when the disk's free space falls under
    `reserve` (checked every CHECK bytes)."""

    CHECK = GiB

    def __init__(self, f: BinaryIO, where: str, most: int, reserve: int):
        self._f, self._where, self._left, self._reserve = f, where, most, reserve
        self._next_check = self.CHECK

    def write(self, data) -> int:
        n = len(data) if not isinstance(data, memoryview) else data.nbytes
        if n > self._left:
            raise OSError("the spool limit was reached")
        self._left -= n
        self._next_check -= n
        if self._next_check <= 0:
            self._next_check = self.CHECK
            if _room(self._where, self._reserve) < n:
                raise OSError(f"under {human_bytes(self._reserve)} left free in {self._where}")
        return self._f.write(data)

    def __getattr__(self, name: str):
        return getattr(self._f, name)


class _TimeUp(Exception):
    pass


def _why(exc: BaseException) -> str:
    """One short line: FFmpeg's own words for its errors ("Invalid data found when processing
    input"), else the exception's."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(text).splitlines()[0][:160] if str(text).strip() else type(exc).__name__


def _quiet_av():
    import av
    import av.logging
    av.logging.set_level(None)            # FFmpeg's own complaints about hostile bytes: silence
    return av


def analyse_video(data, content_type: str = "", limits: VideoLimits = DEFAULT_LIMITS, *,
                  thumbnails: bool = True, thumb_size: int = 128,
                  model_prep: Optional[Callable] = None,
                  model_input_size: Optional[int] = None) -> VideoResult:
    """Decode sampled frames of a video (its bytes, or a readable, seekable binary file) and
    hash each. Never raises on bad bytes."""
    out = VideoResult()
    out._thumbs = thumbnails
    t0 = time.monotonic()
    container = None
    try:
        av = _quiet_av()
        # a large buffer: each refill is a call back into Python (a BytesIO or the spool file)
        source = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
        container = av.open(source, mode="r", metadata_errors="ignore",
                            buffer_size=MiB,
                            options={"probesize": str(8 * MiB), "analyzeduration": "10000000"})
        _decode(container, out, limits, t0, thumb_size, model_prep, model_input_size)
    except _TimeUp:
        out.error = f"time limit of {limits.seconds:g} s per video reached"
    except MemoryError:
        out.error = "out of memory while decoding"
    except Exception as exc:  # noqa: BLE001 - hostile input: every decoder failure is data
        out.error = "decode error: " + _why(exc)
    finally:
        if container is not None:
            try:
                container.close()
            except Exception:  # noqa: BLE001
                pass
    kept = getattr(out, "_kept", None)
    del out._thumbs
    if kept is not None:
        del out._kept
        kept.frames.sort(key=lambda fi: fi[0].seconds)
        out.frames = tuple(f for f, _ in kept.frames)
        if kept.frames and thumbnails:
            out.strip = _strip(kept.strip_images(), thumb_size)
        out.model_inputs = sorted(kept.model, key=lambda fm: fm[0].seconds)
    out.gap = _gap(out)
    return out


class _Kept:
    """The frames kept so far: each hashed at once, then held only as a thumbnail-sized
    picture (for the strip) and, for the model, its prepared input, thinned to at most
    2 x model_frames, so memory stays bounded whatever the cap."""

    def __init__(self, out: VideoResult, rate: float, thumb_size: int, model_frames: int,
                 model_prep, model_input_size):
        self.out, self.rate, self.thumb_size = out, rate, thumb_size
        self.model_frames, self.prep, self.size = model_frames, model_prep, model_input_size
        self.frames: list = []
        self.model: list = []
        self.sws = _reformatter()
        self.duration = out.duration
        self.strip: list = [None] * STRIP_FRAMES if out.duration > 0 else []

    def __len__(self) -> int:
        return len(self.frames)

    def add(self, frame, t: float, key: bool) -> None:
        from PIL import Image

        from triage.features.pictures import phash

        pdq_h, quality, small = frame_hashes(frame, self.sws)
        img = Image.fromarray(small)
        vf = VideoFrame(number=max(0, int(round(t * self.rate))), seconds=round(max(0.0, t), 3),
                        pdq=pdq_h, quality=int(quality), phash=phash(img), keyframe=key)
        if self.prep is not None or self.size:
            try:
                rgb = Image.fromarray(frame_pixels(frame, self.sws))     # the model sees colour
                value = (self.prep(rgb) if self.prep is not None
                         else np.asarray(rgb.resize((self.size, self.size)), dtype=np.uint8))
            except Exception as exc:  # noqa: BLE001
                value = f"model input not prepared: {type(exc).__name__}"
            self.model.append((vf, value))
            if len(self.model) > 2 * self.model_frames:
                self.model.sort(key=lambda fm: fm[0].seconds)
                self.model = self.model[::2]
        self.frames.append((vf, None))
        if not self.thumb_size:
            return
        # the review strip: the frame nearest each of STRIP_FRAMES evenly spread times gets a
        # thumbnail (when the length is unknown, every frame does, thinned as they come)
        if self.duration > 0:
            # the decoded frame itself is held (4 at most); thumbnails are made at the end
            for i in range(STRIP_FRAMES):
                target = (i + 0.5) * self.duration / STRIP_FRAMES
                best = self.strip[i]
                if best is None or abs(t - target) < abs(best[0] - target):
                    self.strip[i] = (t, img)
        else:
            self.strip.append((t, self._thumb(img)))
            if len(self.strip) > 8 * STRIP_FRAMES:
                self.strip = self.strip[::2]

    def _thumb(self, img):
        from PIL import Image
        small = img.copy()
        small.thumbnail((2 * self.thumb_size, self.thumb_size), Image.Resampling.BILINEAR)
        return small

    def strip_images(self) -> list:
        got = sorted((s for s in self.strip if s is not None), key=lambda s: s[0])
        if len(got) > STRIP_FRAMES:
            got = [got[int((i + 0.5) * len(got) / STRIP_FRAMES)] for i in range(STRIP_FRAMES)]
        return [img if self.duration <= 0 else self._thumb(img) for _, img in got]


def _gap(out: VideoResult) -> str:
    """What of the video was not examined, in words ("" when it all was)."""
    total = f"{out.duration:.1f} s" if out.duration else "an unknown length"
    if not out.frames:
        why = out.error or "no frame could be decoded"
        return f"no frame examined ({why}); 0 of {total} examined"
    # a keyframe-only stream ends before its last second: allow a step's slack
    slack = max(2.0, 0.02 * out.duration)
    if out.error or (out.duration and out.examined < out.duration - slack):
        why = out.error or "the video's data ends early"
        return (f"video examined only in part ({why}): {out.examined:.1f} of {total} "
                f"examined, {len(out.frames)} frames")
    return ""


def _decode(container, out: VideoResult, limits: VideoLimits, t0: float, thumb_size: int,
            model_prep, model_input_size) -> None:
    if not container.streams.video:
        out.error = "no video stream"
        return
    stream = container.streams.video[0]
    cc = stream.codec_context
    out.width, out.height = int(cc.width or 0), int(cc.height or 0)
    if out.width * out.height > limits.max_pixels:
        out.error = f"frame size {out.width}x{out.height} refused (over {limits.max_pixels:,} pixels)"
        return
    tb = float(stream.time_base) if stream.time_base else 0.0
    start = float(stream.start_time * tb) if stream.start_time is not None and tb else 0.0
    if stream.duration and tb:
        out.duration = float(stream.duration * tb)
    elif container.duration:
        out.duration = container.duration / 1_000_000
    rate = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
    cap = limits.cap(out.duration)
    step = max(limits.sample_seconds or 1.0, (out.duration / cap) if out.duration else 0.0)
    cc.thread_count = max(1, limits.threads)
    cc.skip_frame = "NONKEY"
    lowres = _lowres(cc.name, out.width, out.height)
    if lowres:
        cc.options = {"lowres": str(lowres)}
    kept = out._kept = _Kept(out, rate, thumb_size if out._thumbs else 0, limits.model_frames,
                             model_prep, model_input_size)
    keytimes: list[float] = []
    # the sampling grid: slot k is the step around k * step; a keyframe fills its slot when
    # the slot is empty, and samples are decoded only for the slots no keyframe filled
    filled: set[int] = set()

    def slot(t: float) -> int:
        return int(math.floor(t / step + 0.5))

    def clock() -> None:
        if time.monotonic() - t0 > limits.seconds:
            raise _TimeUp()

    # 1. keyframes, at most one per step; every packet is demuxed, so `examined` says how far
    # the video's data goes (kept in the stream's time base until the end: most packets are
    # not keyframes, and this loop runs once per packet in Python)
    data_end = None
    try:
        for packet in container.demux(stream):
            pts = packet.pts
            if pts is None:
                pts = packet.dts
            if pts is None:
                # the end: the frames the decoder still holds (it runs a few packets behind)
                out.examined = _seconds(data_end, tb, start, out.examined)
                for frame in packet.decode():
                    t = _time(frame, tb, start, out.examined)
                    if slot(t) not in filled and len(kept) < cap:
                        kept.add(frame, t, True)
                        filled.add(slot(t))
                continue
            end = pts + (packet.duration or 0)
            if data_end is None or end > data_end:
                data_end = end
            if not packet.is_keyframe:
                continue
            when = float(pts * tb - start)
            keytimes.append(when)
            if slot(when) in filled or len(kept) >= cap:
                continue                # its slot has a frame already: not even decoded
            clock()
            for frame in packet.decode():
                t = _time(frame, tb, start, when)
                if slot(t) not in filled and len(kept) < cap:
                    kept.add(frame, t, True)
                    filled.add(slot(t))
    except _TimeUp:
        out.examined = _seconds(data_end, tb, start, out.examined)
        raise
    except Exception as exc:  # noqa: BLE001 - damaged data: keep what was decoded before it
        out.error = "data damaged: " + _why(exc)
    out.examined = _seconds(data_end, tb, start, out.examined)
    # 2. uniform samples where no keyframe fell within half a step
    if limits.sample_seconds and len(kept) < cap and out.examined > 0 and not out.error:
        # sample times up to the last frame's (not the end of the data: nothing is there)
        end = out.examined - 1.0 / rate
        targets = [k * step for k in range(int(end / step) + 1)
                   if k * step <= end and k not in filled]
        room = cap - len(kept)
        if len(targets) > room:       # spread what the cap allows over the whole video
            targets = [targets[int(i * len(targets) / room)] for i in range(room)]
        if targets:
            _samples(container, stream, cc, targets, keytimes, tb, start, rate, out, kept, clock)


# decoders that can decode at 1/2, 1/4 or 1/8 size (FFmpeg's `lowres`), as libjpeg's DCT
# scaling does for pictures: every frame of an MJPEG video is a JPEG
LOWRES_CODECS = {"mjpeg": 3}


def _lowres(codec: str, width: int, height: int) -> int:
    """The largest `lowres` that keeps the frame's shorter side at WORK_SIZE or more."""
    most = LOWRES_CODECS.get(codec or "", 0)
    n, short = 0, min(width, height)
    while n < most and (short >> (n + 1)) >= WORK_SIZE:
        n += 1
    return n


def _seconds(end, tb: float, start: float, so_far: float) -> float:
    """How far the data goes, in seconds from the start: the furthest packet end seen (in the
    stream's time base), or what was known before."""
    return max(so_far, float(end * tb - start)) if end is not None and tb else so_far


def _time(frame, tb: float, start: float, fallback: float) -> float:
    pts = frame.pts
    return float(pts * tb - start) if pts is not None and tb else fallback


def _samples(container, stream, cc, targets, keytimes, tb, start, rate, out, kept, clock) -> None:
    """Decode forward from the keyframe before each target to the target; one seek serves
    every target up to the next keyframe."""
    import bisect
    cc.skip_frame = "DEFAULT"
    pos = None                                   # time of the last frame decoded in sequence
    frames = None
    try:
        for target in targets:
            clock()
            k = bisect.bisect_right(keytimes, target) - 1
            key = keytimes[k] if k >= 0 else 0.0
            if pos is None or not (key <= pos < target):
                container.seek(int((key + start) / tb) if tb else 0, stream=stream,
                               backward=True, any_frame=False)
                frames = container.decode(stream)
            for frame in frames:
                t = _time(frame, tb, start, target)
                pos = t
                if t >= target - 0.5 / rate:
                    kept.add(frame, t, False)
                    break
                clock()
            else:
                break                             # the data ended before the target
    except _TimeUp:
        raise
    except Exception as exc:  # noqa: BLE001
        # the keyframes already cover the whole video: samples between them that will not
        # decode (a seek the container refuses) thin the sampling, they leave nothing unseen
        out.note = "samples between keyframes not decoded: " + _why(exc)


def work_size(width: int, height: int, shorter: int = WORK_SIZE) -> tuple[int, int]:
    """The size frames are converted to: shorter side `shorter` (never enlarged), even sides."""
    if not width or not height:
        return width, height
    scale = min(1.0, shorter / min(width, height))
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def _reformatter():
    """One swscale context for a video's frames: `frame.to_ndarray(width=...)` makes a fresh
    one per frame, and starting and stopping its slice threads cost more than the conversion."""
    from av.video.reformatter import VideoReformatter
    return VideoReformatter()


# decoders' pixel formats whose first plane is the 8-bit luma, one byte a pixel
LUMA_FORMATS = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "yuv440p",
                "yuvj440p", "yuv411p", "yuv410p", "nv12", "nv21", "nv16", "yuva420p", "gray"}
SMALL_SIZE = 128           # shorter side (at least) of the grey picture pHash and the strip use


def frame_hashes(frame, sws=None) -> tuple[str, int, np.ndarray]:
    """A decoded frame's PDQ (hex, quality), from its full-size luma, and a small grey picture
    of it (shorter side SMALL_SIZE to 2 x SMALL_SIZE) for pHash and the review strip.

    PDQ and pHash take luma only (their first step from RGB is luma), and the decoder's Y
    plane is that luma: so no RGB is made, and PDQ sees the whole frame, as other systems'
    hashers (ThreatExchange's vpdq-hash-video) do when they convert each frame to RGB at full
    size. Other pixel formats (10-bit, RGB, palette) go through swscale to grey first (at
    full size too; a copy, slower, and rare in seized video).
    """
    from triage.features.pictures import pdq_luma

    fmt = frame.format.name
    plane = frame.planes[0] if fmt in LUMA_FORMATS else None
    if plane is not None and plane.line_size >= frame.width > 0 and frame.height > 0:
        # limited range unless the frame says full (JPEG) or is a full-range format
        limited = fmt != "gray" and not fmt.startswith("yuvj") and int(frame.color_range) != 2
        rows, cols, stride = frame.height, frame.width, plane.line_size
    else:
        # swscale's grey of the whole frame: full range, luma as PDQ takes it from RGB
        plane = np.ascontiguousarray((sws or _reformatter()).reformat(
            frame, format="gray", threads=1).to_ndarray())
        limited = False
        rows, cols = plane.shape
        stride = cols
    k = max(1, min(rows, cols) // SMALL_SIZE)
    return pdq_luma(plane, rows, cols, stride, limited, k)


def frame_pixels(frame, sws=None) -> np.ndarray:
    """A decoded frame as a small RGB uint8 array, converted straight from the decoder's
    pixels (swscale), never at full size: what the model sees."""
    w, h = work_size(frame.width, frame.height)
    # AREA: averaging, as a JPEG draft decode or a box reduction does for pictures, and a
    # quarter of the time of swscale's default (bicubic) at these ratios
    return (sws or _reformatter()).reformat(frame, w, h, "rgb24", interpolation="AREA",
                                            threads=1).to_ndarray()


def _strip(images: list, thumb_size: int) -> bytes:
    """STRIP_FRAMES frames, evenly spread, side by side as one small JPEG."""
    from PIL import Image

    n = len(images)
    picks = [images[min(n - 1, int((i + 0.5) * n / STRIP_FRAMES))] for i in range(STRIP_FRAMES)]
    if n < STRIP_FRAMES:
        picks = images
    h = max(16, min(img.height for img in picks))
    tiles = []
    for img in picks:
        w = max(1, round(img.width * h / max(1, img.height)))
        tiles.append(img.resize((min(w, 2 * thumb_size), h), Image.Resampling.BILINEAR))
    strip = Image.new("RGB", (sum(t.width for t in tiles) + 2 * (len(tiles) - 1), h), (0, 0, 0))
    x = 0
    for t in tiles:
        strip.paste(t, (x, 0))
        x += t.width + 2
    buf = io.BytesIO()
    strip.save(buf, format="JPEG", quality=70)
    return buf.getvalue()


# --- the vPDQ record -------------------------------------------------------------------------

def vpdq_line(f: VideoFrame) -> str:
    """One frame as ThreatExchange's vpdq-hash-video writes it:
    `frame_number,pdq_hex,quality,timestamp_seconds` (timestamp to 3 decimals)."""
    return f"{int(f.number)},{f.pdq},{int(f.quality)},{float(f.seconds):.3f}"


def vpdq_lines(frames) -> list[str]:
    return [vpdq_line(VideoFrame(*f) if not isinstance(f, VideoFrame) else f) for f in frames]
