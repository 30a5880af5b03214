"""The HTML report: self-contained, blurred thumbnails by default, renders in Chromium."""
from __future__ import annotations

import base64
import io
import re
import stat
import subprocess
import time

import pytest
from PIL import Image

from casebuild import add_device, build_fleet, context, exact, picture
from triage.exports.report_html import _anchor, build, thumbnail_data_uri, write_report
from triage.rank import verdicts

NOW = time.time()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = build_fleet(tmp_path_factory.mktemp("case"), now=NOW)
    yield s
    s.close()


def _checkerboard() -> bytes:
    img = Image.new("RGB", (64, 64))
    px = img.load()
    for x in range(64):
        for y in range(64):
            px[x, y] = (255, 40, 40) if (x // 4 + y // 4) % 2 else (20, 20, 200)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _decode(uri: str) -> Image.Image:
    assert uri.startswith("data:image/jpeg;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


def _roughness(img: Image.Image) -> float:
    """Mean absolute difference between horizontal neighbours (edges make it large)."""
    g = img.convert("L")
    px = g.tobytes()
    w = g.width
    diffs = [abs(px[i] - px[i + 1]) for i in range(len(px) - 1) if (i + 1) % w]
    return sum(diffs) / len(diffs)


def test_thumbnails_are_blurred_greyscale_by_default():
    data = _checkerboard()
    original = Image.open(io.BytesIO(data))
    blurred = _decode(thumbnail_data_uri(data))
    clear = _decode(thumbnail_data_uri(data, "clear"))
    assert blurred.mode == "L" and clear.mode == "RGB"
    assert _roughness(blurred) < _roughness(original) / 5
    assert _roughness(clear) > _roughness(original) / 2
    assert thumbnail_data_uri(data, "none") is None
    assert thumbnail_data_uri(b"not a jpeg") is None


def test_report_is_self_contained_and_complete(store):
    page = build(store, now=NOW)
    assert not re.search(r"https?://", page, re.IGNORECASE)
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert not re.search(r"url\(", page)
    srcs = re.findall(r'src="([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/") for s in srcs)
    assert "default-src 'none'" in page            # the browser refuses any load anyway
    assert "ranking aid, not evidence" in page
    # the queue in the report is the queue rank computes
    order = [v.device_id for v in verdicts(store, now=NOW)]
    positions = [page.index(f'href="#{_anchor(d)}"') for d in order]
    assert positions == sorted(positions)
    for v in verdicts(store, now=NOW):
        for reason in v.reasons:
            assert reason.replace("'", "&#x27;") in page
    assert "<svg" in page and "findings per device" in page
    assert "volume 2 (BitLocker, 40 MiB at 4,194,304) not examined" in page
    assert "CHILD_ACCESS" in page and "inode 102" in page


def test_no_thumbnails_leaves_every_picture_out(store):
    page = build(store, thumbnails="none", now=NOW)
    assert "<img" not in page and "data:image" not in page
    assert "left out of this report" in page


def test_thumbnails_in_page_are_greyscale(store):
    uris = re.findall(r'src="(data:image/jpeg;base64,[^"]+)"', build(store, now=NOW))
    assert uris and all(_decode(u).mode == "L" for u in uris)


def test_html_escapes_hostile_paths(tmp_path):
    from triage.store import CaseStore
    s = CaseStore(tmp_path / "c", create=True)
    x = picture("x.dd", 1, '/Users/<script>alert(1)</script>/a".jpg')
    add_device(s, None, "x.dd", items=[x], matches=[exact(x)], context=context("none", "<b>X</b>"))
    page = build(s, now=NOW)
    assert "<script>" not in page and "&lt;script&gt;" in page and "<b>X</b>" not in page


def test_cli_report_and_bad_case(store, tmp_path):
    from click.testing import CliRunner
    from cli import main
    out = tmp_path / "r.html"
    result = CliRunner().invoke(main, ["report", "--case", str(store.case_dir), "--out", str(out),
                                       "--no-thumbnails"])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and "<img" not in out.read_text()
    bad = CliRunner().invoke(main, ["report", "--case", str(tmp_path / "nope"), "--out", str(out)])
    assert bad.exit_code == 2 and bad.output.strip().startswith("error:")
    assert len(bad.output.strip().splitlines()) == 1


def test_renders_in_headless_chromium(store, tmp_path):
    page = tmp_path / "report.html"
    write_report(store, page, now=NOW)
    shot = tmp_path / "report.png"
    base = ["chromium", "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--user-data-dir=" + str(tmp_path / "profile")]
    subprocess.run(base + ["--window-size=1200,1800", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120, check=False)
    assert shot.exists()
    img = Image.open(shot)
    assert img.size == (1200, 1800)
    # a rendered page, not a blank one: many distinct colours (badges, bars, text)
    assert len(img.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50
    dom = subprocess.run(base + ["--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    assert "Examination queue" in dom and dom.count("<svg") == 2
