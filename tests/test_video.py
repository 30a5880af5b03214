"""The video stage (issue 15): decoding, the vPDQ rule, matching, scoring, results.

Every video here is built in the test from generated pictures (triage/synth/videos.py), small
(160x120 or 320x240, a few seconds) so the file stays fast.
"""
from __future__ import annotations

import io
import json
import re
import time

import numpy as np
import pytest

from hashsets.importers import detect
from hashsets.store import HashSetStore
from hashsets.vpdq import VpdqRule, considered, shares
from triage.classify import VIDEO_MIN_FRAMES, classify, suspected, video_score
from triage.features import FeatureOptions, analyse
from triage.features.pictures import hamming_hex, pdq
from triage.features.video import VideoLimits, analyse_video, vpdq_line, vpdq_lines
from triage.filetype import VIDEO_TYPES, sniff
from triage.records import (VIDEO_FRAMES, FileRecord, Match, Provenance, Score, VideoFrame)
from triage.synth import pictures as pics
from triage.synth import videos as sv
from workers.matching import match_items

FPS = 10
SMALL = (160, 120)


def landscapes(tag: str, n: int, size=(320, 240)) -> list:
    return [pics.landscape(pics.rng_for(42, tag, k), *size) for k in range(n)]


def make(tag: str, seconds: list[float], kind: str = "h264", size=SMALL, pictures=None,
         **kw) -> bytes:
    imgs = pictures if pictures is not None else landscapes(tag, len(seconds))
    return sv.encode(sv.scenes(imgs, seconds, size, FPS, seed=1), size, FPS, kind, **kw)


def record(name: str, data: bytes = b"") -> FileRecord:
    return FileRecord(prov=Provenance("dev", 0, 7, f"/v/{name}"), name=name, size=len(data),
                      allocated=True, fs_type="ext4")


# --- decoding ------------------------------------------------------------------------------

def test_keyframes_and_one_sample_a_second_each_hashed():
    data = make("kf", [2.0] * 4, gop=40)                   # keyframes at 0 and 4 s only
    r = analyse_video(data)
    assert r.error == "" and r.gap == ""
    assert r.duration == pytest.approx(8.0, abs=0.2) and r.examined == pytest.approx(8.0, abs=0.2)
    times = [f.seconds for f in r.frames]
    assert times == sorted(times)
    assert {0.0, 4.0} <= {f.seconds for f in r.frames if f.keyframe}
    # the rest are the 1 fps samples between the keyframes, decoded by seeking
    assert [round(t) for t in times] == list(range(8))
    assert all(len(f.pdq) == 64 and len(f.phash) == 16 and 0 <= f.quality <= 100 for f in r.frames)
    # frames of one scene are near each other, frames of two scenes far apart
    assert hamming_hex(r.frames[0].pdq, r.frames[1].pdq) <= 16
    assert hamming_hex(r.frames[0].pdq, r.frames[2].pdq) > 31
    assert len(r.strip) > 0 and r.width == 160 and r.height == 120


def test_keyframes_only_when_samples_are_off():
    data = make("kf", [2.0] * 4, gop=40)
    r = analyse_video(data, limits=VideoLimits(sample_seconds=0))
    # the GOP's keyframes, and any the encoder put at a scene cut; nothing decoded between
    assert {0.0, 4.0} <= {f.seconds for f in r.frames} and all(f.keyframe for f in r.frames)
    assert len(r.frames) < len(analyse_video(data).frames)


def test_the_frame_cap_grows_with_the_square_root_of_the_duration():
    lim = VideoLimits()
    assert lim.cap(0) == lim.min_frames
    assert lim.cap(60) == int(np.ceil(6 * np.sqrt(60)))
    assert lim.cap(3600) == 360 and lim.cap(10 * 3600) == lim.max_frames
    assert lim.cap(4 * 60) == pytest.approx(2 * lim.cap(60), abs=1)
    # a cap smaller than the seconds: the frames spread over the whole video, not its start
    small = VideoLimits(min_frames=3, frames_per_sqrt_second=1.0, max_frames=4)
    r = analyse_video(make("cap", [2.0] * 8), limits=small)
    assert len(r.frames) == 4 and r.gap == ""
    assert r.frames[0].seconds < 2.0 and r.frames[-1].seconds >= 10.0


@pytest.mark.parametrize("fmt,codec,ctype", [
    ("mp4", "libx264", "video/mp4"), ("mov", "libx264", "video/quicktime"),
    ("3gp", "libx264", "video/3gpp"), ("avi", "mjpeg", "video/x-msvideo"),
    ("matroska", "libx264", "video/x-matroska"), ("webm", "libvpx-vp9", "video/x-matroska"),
    ("asf", "wmv2", "video/x-ms-asf"), ("flv", "flv", "video/x-flv"),
    ("mpegts", "mpeg2video", "video/mp2t"), ("vob", "mpeg2video", "video/mpeg"),
])
def test_every_container_is_sniffed_and_decoded(fmt, codec, ctype):
    import av

    buf = io.BytesIO()
    frames = list(sv.scenes(landscapes("fmt", 2, SMALL), [1.5, 1.5], SMALL, FPS, seed=2))
    with av.open(buf, mode="w", format=fmt) as out:
        s = out.add_stream(codec, rate=FPS)
        s.width, s.height = SMALL
        s.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        s.options = {"g": str(FPS)}
        for arr in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(p)
        for p in s.encode(None):
            out.mux(p)
    data = buf.getvalue()
    assert sniff(data[:512]) == ctype and ctype in VIDEO_TYPES
    a = analyse(record(f"clip.{fmt}", data), [data])
    assert len(a.features.frames) >= 2, a.features.error
    assert not [c for c in a.coverage if c.kind == VIDEO_FRAMES]


def test_a_video_cut_short_says_how_many_seconds_were_examined():
    full = make("cut", [2.0] * 6, faststart=True)
    cut = sv.truncate(full, 0.5)
    a = analyse(record("cut.mp4", cut), [cut])
    gaps = [c for c in a.coverage if c.kind == VIDEO_FRAMES]
    assert len(gaps) == 1, a.coverage
    f = a.features
    assert f.duration == pytest.approx(12.0, abs=0.2) and 1.0 < f.examined_seconds < 10.0
    m = re.search(r"([\d.]+) of ([\d.]+) s examined", gaps[0].reason)
    assert m and float(m.group(1)) == pytest.approx(f.examined_seconds, abs=0.1)
    assert float(m.group(2)) == pytest.approx(12.0, abs=0.2)
    assert 0 < gaps[0].bytes_not_examined < len(cut)
    assert f.frames and max(fr.seconds for fr in f.frames) <= f.examined_seconds
    # the whole video: examined, no gap
    whole = analyse(record("whole.mp4", full), [full])
    assert not [c for c in whole.coverage if c.kind == VIDEO_FRAMES]


def test_undecodable_and_over_the_limits_are_gaps():
    junk = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40
    a = analyse(record("junk.mp4", junk), [junk])
    [gap] = [c for c in a.coverage if c.kind == VIDEO_FRAMES]
    assert "no frame examined" in gap.reason and gap.bytes_not_examined == len(junk)
    data = make("lim", [2.0] * 3)
    slow = analyse(record("slow.mp4", data), [data],
                   FeatureOptions(video=VideoLimits(seconds=1e-6)))
    [gap] = [c for c in slow.coverage if c.kind == VIDEO_FRAMES]
    assert "time limit" in gap.reason
    big = analyse(record("big.mp4", data), [data], FeatureOptions(video=VideoLimits(max_bytes=1000)))
    [gap] = [c for c in big.coverage if c.kind == VIDEO_FRAMES]
    assert "not decoded" in gap.reason and "limit" in gap.reason
    off = analyse(record("off.mp4", data), [data], FeatureOptions(video=None))
    assert [c.kind for c in off.coverage] == [VIDEO_FRAMES] and not off.features.frames


# --- videos too large to decode from memory: spooled to an unnamed file as they are hashed ---

class _Kept(io.BytesIO):
    """A spool file whose content stays readable after it is closed."""

    def close(self) -> None:
        self.content = self.getvalue()
        super().close()


class _Disk:
    """A spool that keeps its files for the test to look at, or fails like a full disk."""

    def __init__(self, full: bool = False):
        self.files, self.full, self.sizes = [], full, []

    def __call__(self, size: int):
        self.sizes.append(size)
        if self.full:
            raise OSError("No space left on device")
        self.files.append(_Kept())
        return self.files[-1]


def test_a_video_over_the_memory_limit_is_spooled_and_decoded_like_one_in_memory():
    import hashlib
    data = make("spool", [2.0] * 3)
    chunks = [data[i:i + 700] for i in range(0, len(data), 700)]
    whole = analyse(record("v.mp4", data), chunks)
    disk = _Disk()
    big = analyse(record("v.mp4", data), chunks,
                  FeatureOptions(video=VideoLimits(max_bytes=1000), video_spool=disk))
    assert disk.files[0].closed                                # nothing left open
    assert disk.sizes == [len(data)] and disk.files[0].content == data     # every byte
    assert big.features.frames == whole.features.frames and big.features.frames
    assert not [c for c in big.coverage if c.kind == VIDEO_FRAMES]
    assert big.features.md5 == hashlib.md5(data).hexdigest() == whole.features.md5
    # a full disk: the video is still hashed whole, and its frames are a gap saying why
    full = analyse(record("v.mp4", data), chunks,
                   FeatureOptions(video=VideoLimits(max_bytes=1000), video_spool=_Disk(full=True)))
    [gap] = [c for c in full.coverage if c.kind == VIDEO_FRAMES]
    assert "over the 1000 bytes limit; not spooled: No space left on device" in gap.reason
    assert full.features.md5 == whole.features.md5 and not full.features.frames
    # only a video goes to disk: a picture or an archive over its limit does not
    other = _Disk()
    pic = pics.encode(pics.landscape(pics.rng_for(1, "p"), 320, 240), "png")
    analyse(record("p.png", pic), [pic], FeatureOptions(picture_max_bytes=100, video_spool=other))
    assert other.sizes == []


def test_the_spool_refuses_what_would_fill_the_disk_and_grows_no_further_than_allowed(
        tmp_path, monkeypatch):
    import shutil
    from triage.features.video import VideoSpool
    spool = VideoSpool(str(tmp_path), most=10_000, reserve=1000)
    with pytest.raises(OSError, match="over the 9.8 KiB spool limit"):
        spool(20_000)
    f = spool(0)                                 # size unknown: the limit holds at each write
    f.write(b"x" * 9000)
    with pytest.raises(OSError, match="spool limit was reached"):
        f.write(memoryview(b"y" * 2000))
    assert list(tmp_path.iterdir()) == []        # unnamed: nothing to find or leave behind
    f.seek(0)
    assert f.read() == b"x" * 9000
    f.close()
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=5000))
    with pytest.raises(OSError, match="free in .*needed and 1000 bytes kept free"):
        spool(4500)


class _Flaky(_Kept):
    """A spool file on a disk that fills as its last bytes are flushed."""

    def flush(self) -> None:
        raise OSError("No space left on device")


def test_a_spool_that_fails_at_its_last_bytes_or_is_cut_short_keeps_the_hashes_and_closes():
    from triage.features.hashing import ReadAborted, read_once
    data = bytes(range(256)) * 40
    flaky = _Flaky()
    rr = read_once([data[:2000], data[2000:]], keep=lambda head: 1000, size_hint=0,
                   spill=lambda head, size: flaky)
    assert rr.spilled is None and flaky.closed and rr.size == len(data)
    assert rr.not_kept == "over the 1000 bytes limit; not spooled: No space left on device"
    assert rr.digests.md5 == __import__("hashlib").md5(data).hexdigest()

    def cut():
        yield data[:1500]
        yield data[1500:3000]
        raise ReadAborted("the archive budget ran out")
    kept = _Kept()
    rr = read_once(cut(), keep=lambda head: 1000, spill=lambda head, size: kept)
    assert rr.aborted and rr.spilled is None and kept.closed
    # size unknown (0): spooled once the content passes the limit, every byte in order
    whole = _Kept()
    rr = read_once([data[i:i + 300] for i in range(0, len(data), 300)], keep=lambda head: 1000,
                   spill=lambda head, size: whole)
    assert rr.spilled is whole and whole.read() == data     # not kept in memory, but on disk


def test_the_spool_stops_when_other_writers_fill_the_disk(tmp_path, monkeypatch):
    import shutil
    from triage.features import video as video_mod
    spool = video_mod.VideoSpool(str(tmp_path), most=1 << 30, reserve=1000)
    monkeypatch.setattr(video_mod._Capped, "CHECK", 4096)
    f = spool(0)
    f.write(b"x" * 3000)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=1500))
    with pytest.raises(OSError, match="under 1000 bytes left free in"):
        f.write(b"y" * 3000)
    f.close()


def test_the_spool_folder_is_checked_before_any_work(tmp_path):
    from click.testing import CliRunner
    out = CliRunner().invoke(__import__("cli").main,
                             ["scan", "--case", str(tmp_path / "c"), "--video-spool",
                              str(tmp_path / "nowhere"), str(tmp_path)])
    assert out.exit_code == 2 and "is not a folder this user can write to" in out.output
    assert not (tmp_path / "c").exists()


def test_a_scan_decodes_a_video_over_the_memory_limit_from_its_spool(tmp_path):
    """The scan's own options reach the workers: with the in-memory limit under the video's
    size it is still decoded (the default spool) and the device is complete; with
    --video-spool off its frames are a gap with its bytes, and the device is not complete."""
    from hashsets.store import sets_for_scan
    from triage.records import VIDEO_FRAMES as KIND
    from triage.store import CaseStore
    from workers.batch import Backend, ScanOptions
    from workers.scan import run_scan
    data = make("scan-spool", [2.0] * 3)
    folder = tmp_path / "phone"
    folder.mkdir()
    (folder / "clip.mp4").write_bytes(data)
    alert = tmp_path / "alert.md5"
    alert.write_text("0123456789abcdef0123456789abcdef  not-here.jpg\n")
    small = (("max_bytes", 1000),)
    found = {}
    for spool in ("", "off"):
        case = tmp_path / f"case{spool}"
        stores, sets = sets_for_scan(case, [str(alert)], None)
        summary = run_scan(case, [str(folder)], ScanOptions(
            mode="full", video_limits=small, video_spool=spool, hashsets=stores),
            hashsets=sets, workers=1)
        assert summary.devices[0]["files"] == 1 and summary.devices[0]["error"] is None
        with CaseStore(case, create=False) as store:
            [(rec, feat)] = [(r, f) for r, f in store.files() if r.name == "clip.mp4"]
            found[spool] = (summary.devices[0]["status"], len(feat.frames),
                            [c.bytes_not_examined for c in store.coverage() if c.kind == KIND])
    assert found[""][0] == "complete" and found[""][1] > 0 and found[""][2] == []
    assert found["off"] == ("partial", 0, [len(data)])
    off = Backend().feature_options(ScanOptions(video_limits=small, video_spool="off"))
    assert off.video_spool is None
    a = analyse(record("clip.mp4", data), [data], off)
    assert [c.kind for c in a.coverage] == [KIND]
    assert "over the 1000 bytes limit; not spooled to disk (scan --video-spool off)" \
        in a.coverage[0].reason


def test_a_video_inside_an_archive_is_decoded_too():
    import zipfile

    data = make("zip", [2.0] * 2)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("DCIM/clip.mp4", data)
    a = analyse(record("old.zip", buf.getvalue()), [buf.getvalue()])
    [member] = a.members
    assert member.record.prov.members == ("DCIM/clip.mp4",) and len(member.features.frames) >= 2


def test_fuzzed_video_bytes_never_raise_or_hang():
    rng = np.random.default_rng(15)
    seeds = [make("fz", [1.0] * 3), make("fz", [1.0] * 3, kind="mjpeg"),
             make("fz", [1.0] * 3, kind="vp9"), make("fz", [1.0] * 3, faststart=True)]
    limits = VideoLimits(seconds=5.0)
    t_all = time.monotonic()
    for i in range(60):
        data = bytearray(seeds[i % len(seeds)])
        how = i % 4
        if how == 0:                                   # bit flips
            for p in rng.integers(0, len(data), 40):
                data[p] ^= 1 << int(rng.integers(8))
        elif how == 1:                                 # a random cut
            data = data[:int(rng.integers(16, len(data)))]
        elif how == 2:                                 # a random block overwritten
            a = int(rng.integers(0, len(data) - 64))
            data[a:a + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
        else:                                          # header kept, the rest noise
            data = data[:64] + rng.integers(0, 256, 4000, dtype=np.uint8).tobytes()
        t0 = time.monotonic()
        a = analyse(record(f"f{i}.mp4", bytes(data)), [bytes(data)], FeatureOptions(video=limits))
        assert time.monotonic() - t0 < limits.seconds + 5
        f = a.features
        assert f.examined_seconds >= 0 and all(len(fr.pdq) == 64 for fr in f.frames)
        if not f.frames:
            assert any(c.kind == VIDEO_FRAMES for c in a.coverage) or f.type not in VIDEO_TYPES
    assert time.monotonic() - t_all < 120


# --- vPDQ: the record, the rule, the import ---------------------------------------------------

def test_vpdq_lines_are_threatexchanges_format():
    f = VideoFrame(number=30, seconds=1.0, pdq="ab" * 32, quality=87)
    assert vpdq_line(f) == f"30,{'ab' * 32},87,1.000"
    r = analyse_video(make("fmt", [1.0, 1.0]))
    for line in vpdq_lines(r.frames):
        assert re.fullmatch(r"\d+,[0-9a-f]{64},\d{1,3},\d+\.\d{3}", line)


def _h(rng) -> str:
    return rng.integers(0, 256, 32, dtype=np.uint8).tobytes().hex()


def _near(h: str, bits: int, rng) -> str:
    v = int(h, 16)
    for b in rng.choice(256, bits, replace=False):
        v ^= 1 << int(b)
    return f"{v:064x}"


def test_the_vpdq_rule_on_hand_made_frame_lists():
    rng = np.random.default_rng(3)
    k = [_h(rng) for _ in range(5)]
    known = [(h, 90) for h in k] + [(k[0], 90)]            # a repeated frame counts once
    # 4 of 5 query frames near known frames, the fifth unrelated: 80 % and 4/5 known
    query = [(_near(h, 10, rng), 100) for h in k[:4]] + [(_h(rng), 100)]
    assert shares(query, known) == (80.0, 80.0)
    assert VpdqRule().is_match(80.0, 80.0)                 # ThreatExchange: >= 80 %, >= 0 %
    assert not VpdqRule().is_match(79.9, 100.0)
    assert not VpdqRule(index_percent=90.0).is_match(80.0, 80.0)
    # frames beyond the distance do not match; at the distance they do
    assert shares([(_near(k[0], 32, rng), 100)], known)[0] == 0.0
    assert shares([(_near(k[0], 31, rng), 100)], known)[0] == 100.0
    # low-quality frames are not considered on either side; duplicates once
    low = query + [(_h(rng), 10)] * 5
    assert shares(low, known) == (80.0, 80.0)
    assert considered([("aa" * 32, 60), ("AA" * 32, 70), ("bb" * 32, 49)]) == [0]
    # a clip of a known video: all its frames matched, a small part of the known video's
    clip = [(_near(k[1], 5, rng), 100)]
    assert shares(clip, known) == (100.0, 20.0) and VpdqRule().is_match(100.0, 20.0)


def test_vpdq_import_keeps_each_known_video_and_agrees_with_the_rule(tmp_path):
    rng = np.random.default_rng(9)
    videos = {f"known-{v}": [_h(rng) for _ in range(6)] for v in range(3)}
    lines = []
    for name, hs in videos.items():
        lines.append(f"# video: {name}")
        lines += [f"{i * 30},{h},{95 if i else 20},{i:.3f}" for i, h in enumerate(hs)]
    path = tmp_path / "set.vpdq.txt"
    path.write_text("\n".join(lines) + "\n")
    assert detect(path) == "vpdq"
    store = HashSetStore(tmp_path / "hs")
    info = store.import_file(path, "vids", "alert")
    assert info.format == "vpdq" and info.counts == {"pdq": 15} and info.skipped_low_quality == 3
    folder = store.root / "vids" / (store.root / "vids" / "CURRENT").read_text().strip()
    assert json.loads((folder / "videos.json").read_text()) == [
        {"name": n, "frames": 5} for n in videos]
    # random queries made of near copies of some known frames: the store's faiss answer is
    # the brute-force rule's, for every known video
    for trial in range(25):
        name = list(videos)[trial % 3]
        picks = rng.choice(6, int(rng.integers(1, 6)), replace=False)
        query = [(_near(videos[name][int(i)], int(rng.integers(0, 40)), rng), 100) for i in picks]
        query += [(_h(rng), 100) for _ in range(int(rng.integers(0, 3)))]
        rule = VpdqRule(index_percent=float(rng.choice([0.0, 40.0])))
        got = {vh.hit.value: (vh.query_share, vh.known_share)
               for vh in store.lookup_videos(query, rule)}
        want = {}
        for n, hs in videos.items():
            q, c = shares(query, [(h, 95) for h in hs[1:]], rule)
            if rule.is_match(q, c):
                want[n] = (round(q, 2), round(c, 2))
        assert got == want, (trial, rule)
    # a frame of a known video is no match of a single frame: only through the rule
    h = videos["known-1"][2]
    assert store.lookup_perceptual("pdq", [h])[0] and not store.lookup_perceptual(
        "pdq", [h], video_frames=False)[0]
    # a delta adds a video and keeps the others' grouping
    (tmp_path / "d.txt").write_text(f"# video: known-9\n0,{_h(rng)},99,0.000\n")
    store.add_delta("vids", tmp_path / "d.txt")
    folder = store.root / "vids" / (store.root / "vids" / "CURRENT").read_text().strip()
    assert [v["frames"] for v in json.loads((folder / "videos.json").read_text())] == [5, 5, 5, 1]


# --- matching, scoring, classifying --------------------------------------------------------

def _item(name: str, frames) -> tuple:
    from triage.records import Features
    rec = record(name)
    return rec, Features(key=rec.key, size=1, type="video/mp4", frames=tuple(frames))


def test_frames_match_pictures_and_known_videos_with_their_times(tmp_path):
    alert = pics.alert_picture(42, 1)
    a_pdq, a_q = pdq(alert)
    (tmp_path / "a.pdq.txt").write_text(f"{a_pdq},{a_q},alert-1\n")
    shown = make("scene", [2.0, 2.0, 3.0, 2.0], size=(320, 240),
                 pictures=landscapes("show", 2) + [alert] + landscapes("show-end", 1))
    known = make("kv", [2.0] * 5, size=(320, 240))
    known_frames = analyse_video(known).frames
    (tmp_path / "k.vpdq.txt").write_text("# video: kv-1\n" + "\n".join(vpdq_lines(known_frames)))
    reencode = make("kv", [2.0] * 5, kind="mjpeg", size=SMALL)       # other codec and size
    benign = make("benign", [2.0] * 4, kind="vp9")
    store = HashSetStore(tmp_path / "hs")
    store.import_file(tmp_path / "a.pdq.txt", "pics", "alert")
    store.import_file(tmp_path / "k.vpdq.txt", "vids", "alert")
    items = [_item(n, analyse_video(d).frames)
             for n, d in (("shown.mp4", shown), ("re.avi", reencode), ("benign.webm", benign))]
    matches, _ = match_items([store], items)
    by = {}
    for m in matches:
        by.setdefault(items[[r.key for r, _ in items].index(m.key)][0].name, []).append(m)
    assert set(by) == {"shown.mp4", "re.avi"}
    pdq_m = [m for m in by["shown.mp4"] if m.algorithm == "pdq"][0]
    assert pdq_m.kind == "near" and pdq_m.set_name == "pics" and pdq_m.distance <= 31
    assert pdq_m.frames and all(4.0 <= t < 7.0 for _, t in pdq_m.frames)
    [v] = by["re.avi"]
    assert (v.algorithm, v.value, v.set_name) == ("vpdq", "kv-1", "vids")
    assert v.query_share >= 80.0 and v.known_share > 0 and len(v.frames) >= 8
    assert "kv-1" in v.video_text and "frames at 0:00:00.000" in v.video_text


def test_a_video_is_suspected_new_from_two_frames_over_the_threshold():
    def frame(n, explicit):
        return (n, n / 10, Score("k", "m", "s", {"explicit": explicit}))

    one = video_score("v", [frame(0, 0.95), frame(10, 0.2), frame(20, 0.3)])
    two = video_score("v", [frame(0, 0.95), frame(10, 0.85), frame(20, 0.1)])
    assert one.values == {"explicit": 0.95} and len(one.frames) == 3
    assert VIDEO_MIN_FRAMES == 2
    assert not suspected(one) and suspected(two)
    found = classify([], [two])
    assert found.kind("v") == "suspected"
    # an alert match on the video wins over the model
    m = Match("v", "near", "vpdq", "kv", "vids", "1", "alert", frames=((0, 0.0),),
              query_share=90.0, known_share=50.0)
    assert classify([m], [two]).kind("v") == "near"


def test_video_results_round_trip_through_the_store(tmp_path):
    from triage.records import Features
    from triage.store import CaseStore

    frames = (VideoFrame(0, 0.0, "ab" * 32, 90, "cd" * 8, True), VideoFrame(10, 1.0, "ef" * 32, 80))
    rec = record("x.mp4")
    feat = Features(key=rec.key, size=1, type="video/mp4", duration=2.0, examined_seconds=2.0,
                    frames=frames, thumbnail=b"jpeg")
    m = Match(rec.key, "near", "vpdq", "kv", "vids", "1", "alert", frames=((0, 0.0), (10, 1.0)),
              query_share=100.0, known_share=40.0)
    s = video_score(rec.key, [(0, 0.0, Score(rec.key, "m", "s", {"explicit": 0.9})),
                              (10, 1.0, Score(rec.key, "m", "s", {"explicit": 0.85}))])
    with CaseStore(tmp_path / "case") as store:
        store.add_batch("dev", "b1", [(rec, feat)], [m], [s], [])
        [(r2, f2)] = list(store.files("dev"))
        assert f2.frames == frames and f2.duration == 2.0 and isinstance(f2.frames[0], VideoFrame)
        assert store.matches("dev") == [m]
        assert store.scores("dev") == [s]


def test_report_shows_a_blurred_greyscale_strip_and_show_names_the_frames(tmp_path):
    import base64

    from PIL import Image

    from triage.exports.report_html import build
    from triage.findings import findings
    from triage.records import EvidenceRef
    from triage.store import CaseStore

    data = make("rep", [1.0] * 4, size=(320, 240))
    a = analyse(record("clip.mp4", data), [data])
    rec, feat = a.record, a.features
    assert feat.thumbnail and Image.open(io.BytesIO(feat.thumbnail)).width > 3 * 72
    m = Match(rec.key, "near", "vpdq", "kv-1", "vids", "1", "alert", severity=2,
              frames=((0, 0.0), (10, 1.0)), query_share=100.0, known_share=50.0)
    with CaseStore(tmp_path / "case") as store:
        store.upsert_device(EvidenceRef("dev", ("/e/dev.raw",), "raw", 1 << 20))
        store.add_batch("dev", "b1", [(rec, feat)], [m], [], [])
        [f] = findings(store, "dev")
        assert f.is_video and f.frames == ((0, 0.0), (10, 1.0))
        assert f.frame_text == "0:00:00.000, 0:00:01.000"
        page = build(store)
    strip = re.search(r'<img class="strip" alt="4 frames \(blurred\)" src="data:image/jpeg;base64,([^"]+)"',
                      page)
    assert strip, page[:2000]
    img = Image.open(io.BytesIO(base64.b64decode(strip.group(1))))
    assert img.mode == "L" and img.width > 2 * img.height
    assert "known video &#x27;kv-1&#x27;" in page or "known video 'kv-1'" in page
    assert "frames at 0:00:00.000, 0:00:01.000" in page
