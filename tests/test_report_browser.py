"""The HTML report opened in a real browser (Debian's headless chromium, driven by Playwright):
it asks the network for nothing, every picture and chart renders, the queue links work, and the
thumbnails a browser shows are greyscale."""
from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from PIL import Image

from casebuild import build_fleet
from triage.exports.report_html import write_report

from playwright import sync_api

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
assert CHROMIUM, "Debian package chromium is missing (the Makefile installs it)"

NOW = 1_790_000_000.0


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report_browser")
    store = build_fleet(root / "case", now=NOW)
    out = root / "report.html"
    try:
        write_report(store, out, now=NOW)
    finally:
        store.close()
    return out


@pytest.fixture(scope="module")
def page_of(report):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        outside, errors = [], []

        def route(r):
            if r.request.url.startswith(("file:", "data:")):
                r.continue_()
            else:
                outside.append(r.request.url)
                r.abort()

        page.route("**/*", route)
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(report.as_uri(), wait_until="load")
        yield page, outside, errors
        browser.close()


def test_report_asks_the_network_for_nothing(page_of):
    page, outside, errors = page_of
    assert outside == []
    assert errors == []
    # nothing that could reach out later either
    assert page.evaluate("document.querySelectorAll('script[src], link[href^=\"http\"], "
                         "iframe, object, embed').length") == 0


def test_every_picture_and_chart_renders(page_of):
    page, _outside, _errors = page_of
    sizes = page.evaluate("[...document.images].map(i => [i.complete, i.naturalWidth])")
    assert sizes, "the report shows no thumbnails"
    assert all(done and width > 0 for done, width in sizes)
    charts = page.locator("svg[role=img]")
    assert charts.count() >= 1
    box = charts.first.bounding_box()
    assert box and box["width"] > 100 and box["height"] > 20
    assert page.locator("svg[role=img] rect").count() > 0


def test_queue_links_lead_to_each_device(page_of):
    page, _outside, _errors = page_of
    links = page.locator("a[href^='#']")
    assert links.count() > 0
    href = links.first.get_attribute("href")
    links.first.click()
    assert page.evaluate("location.hash") == href
    target = page.locator(f"[id='{href[1:]}']")
    assert target.count() == 1 and target.is_visible()


def test_thumbnails_render_greyscale(page_of):
    page, _outside, _errors = page_of
    img = page.locator("img.thumb").first
    img.scroll_into_view_if_needed()
    px = np.asarray(Image.open(io.BytesIO(img.screenshot())).convert("RGB"), dtype=np.int16)
    assert int((px.max(axis=2) - px.min(axis=2)).max()) <= 3
    assert px.std() > 1                          # a picture, not an empty box
