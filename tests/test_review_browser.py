"""The review service in a real browser (Debian's headless chromium, driven by Playwright),
served by `triage serve` over a case scanned from the synthetic fleet: log in, the queue in the
CLI's order, a device, keyboard grading, a reveal with a reason seen by a supervisor in the
audit log, an investigator refused, CSRF refused, markup in file names inert, and a flag from a
scan still running appearing on the open queue page without a reload."""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image
from playwright import sync_api

import reviewcase as rc
from triage.store import CaseStore

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM, "Debian package chromium is not installed (make test installs it)"
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def wait_js(page, expression: str, timeout: float = 30) -> None:
    """Poll an expression until it is true. (Playwright's wait_for_function evaluates a string
    inside the page, which the service's CSP, without 'unsafe-eval', rightly refuses.)"""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout} s: {expression}")
        time.sleep(0.05)


class Tab:
    """A logged-in page that records dialogs, page errors and requests leaving the app."""

    def __init__(self, browser, base: str, user: str):
        self.base = base
        self.context = browser.new_context(viewport={"width": 1300, "height": 900})
        self.page = self.context.new_page()
        self.dialogs, self.errors, self.outside = [], [], []
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("request", lambda r: None if r.url.startswith(base) else self.outside.append(r.url))
        self.page.goto(base + "/login")
        self.page.fill("#username", user)
        self.page.fill("#password", rc.PASSWORDS[user])
        self.page.click("#login button[type=submit]")
        self.page.wait_for_url(base + "/")

    def goto(self, path: str):
        self.page.goto(self.base + path)
        return self.page

    def close(self):
        self.context.close()


@pytest.fixture
def tab(browser, review_server):
    opened = []

    def make(user: str) -> Tab:
        t = Tab(browser, review_server, user)
        opened.append(t)
        return t

    yield make
    for t in opened:
        assert t.outside == [], t.outside          # nothing leaves the app
        assert t.dialogs == [], t.dialogs          # no script from evidence ever ran
        t.close()


def _cli_queue(case) -> list[str]:
    out = rc.triage("queue", "--case", str(case), "--format", "json")
    return [r["device"] for r in json.loads(out.stdout)]


def test_login_and_the_queue_in_the_cli_order(tab, review_case):
    t = tab("inv")
    rows = t.page.locator("#queue-rows tr[data-device]")
    assert rows.count() >= 7
    assert [rows.nth(i).get_attribute("data-device") for i in range(rows.count())] == \
        _cli_queue(review_case["case"])
    assert t.page.locator("text=Audit log").count() == 0      # not a supervisor
    assert t.errors == []


def test_a_wrong_password_stays_on_the_login_page(browser, review_server):
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(review_server + "/login")
    page.fill("#username", "inv")
    page.fill("#password", "not the password")
    page.click("#login button[type=submit]")
    wait_js(page, "document.getElementById('login-error').textContent.length > 0")
    assert "wrong user name or password" in page.inner_text("#login-error")
    assert page.url.startswith(review_server + "/login")
    ctx.close()


def test_queue_filters(tab):
    t = tab("inv")
    t.page.select_option("select[name=flag]", "NOT_EXAMINED")
    t.page.click("#filters button[type=submit]")
    t.page.wait_for_url("**flag=NOT_EXAMINED**")
    rows = t.page.locator("#queue-rows tr[data-device]")
    assert rows.count() >= 1
    for i in range(rows.count()):
        assert "NOT_EXAMINED" in rows.nth(i).inner_text()


def test_device_page_and_keyboard_grading(tab):
    t = tab("inv")
    t.page.click("a.device-link >> text=dev01.raw")
    t.page.wait_for_url("**/device/dev01.raw**")
    page = t.page
    assert "exact alert matches" in page.inner_text("main")
    assert "bytes) not examined" in page.inner_text("main")
    assert page.locator(".flags .badge").count() > 0
    tiles = page.locator("figure.finding")
    assert tiles.count() >= 4
    assert "Category A" in page.inner_text("#gallery")      # the set's CAID label, not "1"
    assert page.evaluate("window.scrollY") == 0              # opens at the reasons, not the gallery
    wait_js(page, "[...document.querySelectorAll('img.thumb')].every(i => i.complete && i.naturalWidth > 0)")
    px = np.asarray(Image.open(io.BytesIO(tiles.first.locator("img").screenshot())).convert("RGB"),
                    dtype=np.int16)
    assert int((px.max(axis=2) - px.min(axis=2)).max()) <= 3      # greyscale on screen
    assert "selected" in tiles.nth(0).get_attribute("class")
    page.keyboard.press("1")
    wait_js(page, "document.querySelectorAll('figure.finding')[0].querySelector('.grade').textContent === 'A'")
    assert "selected" in tiles.nth(1).get_attribute("class")       # moved on to the next
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("0")
    wait_js(page, "document.querySelectorAll('figure.finding')[1].querySelector('.grade').textContent === 'non-pertinent'")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("3")
    wait_js(page, "document.querySelectorAll('figure.finding')[3].querySelector('.grade').textContent === 'C'")
    # stored: a fresh load shows the same grades
    page.reload()
    grades = page.locator("figure.finding .grade").all_inner_texts()
    assert grades[0] == "A" and grades[1] == "non-pertinent" and grades[3] == "C"
    assert t.errors == []


def test_reveal_with_a_reason_shows_in_the_supervisors_audit_log(tab):
    exa = tab("exa")
    page = exa.goto("/device/dev02.E01")
    tile = page.locator("figure.finding").first
    fid = tile.get_attribute("data-id")
    blurred = tile.locator("img").screenshot()
    tile.locator("input.reason").fill("compare with the CPS referral, exhibit SYN/7/02")
    with page.expect_response(lambda r: "clear=1" in r.url) as resp:
        tile.locator("button.reveal-btn").click()
    assert resp.value.status == 200
    wait_js(page, "document.querySelector('img.thumb.revealed').complete")
    px = np.asarray(Image.open(io.BytesIO(tile.locator("img").screenshot())).convert("RGB"), dtype=np.int16)
    assert px.tobytes() != blurred
    boss = tab("boss")
    audit = boss.goto("/audit")
    row = audit.locator("tr.action-reveal", has_text=fid).first
    assert "exa" in row.inner_text()
    assert "compare with the CPS referral, exhibit SYN/7/02" in row.inner_text()
    assert "chain whole" in audit.inner_text("ul.checks")


def test_an_investigator_is_refused_the_audit_log_and_clear_pictures(tab):
    t = tab("inv")
    page = t.goto("/device/dev02.E01")
    assert page.locator("form.reveal").count() == 0
    url = page.locator("figure.finding img").first.get_attribute("data-src")
    status = page.evaluate("u => fetch(u + '?clear=1&reason=x').then(r => r.status)", url)
    assert status == 403
    audit = t.goto("/audit")
    assert "may not see the audit log" in audit.inner_text("#refused")
    assert page.evaluate("fetch('/api/audit').then(r => r.status)") == 403


def test_csrf_is_refused_in_the_browser(tab):
    t = tab("inv")
    page = t.goto("/device/dev03.000")
    fid = page.locator("figure.finding").first.get_attribute("data-id")
    post = """([fid, token]) => fetch('/api/findings/' + fid + '/grade', {method: 'POST',
        headers: Object.assign({'Content-Type': 'application/json'}, token ? {'X-CSRF-Token': token} : {}),
        body: JSON.stringify({grade: 'C'})}).then(r => r.status)"""
    assert page.evaluate(post, [fid, ""]) == 403
    assert page.evaluate(post, [fid, "forged-token"]) == 403
    token = page.get_attribute("meta[name=csrf]", "content")
    assert page.evaluate(post, [fid, token]) == 200


def test_hostile_file_names_render_inert(tab):
    t = tab("inv")
    for path in ("/", "/device/hostile.raw", "/progress"):
        page = t.goto(path)
        page.wait_for_load_state("load")
        assert page.evaluate("document.scripts.length") == 1        # only /static/app.js
        assert page.locator("img[src='x'], img[onerror], b[onmouseover], i").count() == 0
    page = t.goto("/device/hostile.raw")
    shown = page.locator("figure.finding .path").all_text_contents()
    assert sorted(shown) == sorted(f"/{rc.HOSTILE_DIR}/{name}" for name in rc.HOSTILE_NAMES)
    text = page.inner_text("#gallery")
    assert "<script>alert(1)</script>.jpg" in text
    assert '"><img src=x onerror=alert(2)>.jpg' in text
    assert "[bold red]rich[blink]" in text
    assert "<script>alert(4)</script>" in page.inner_text("dl.facts")
    assert rc.HOSTILE_EXHIBIT in page.inner_text("dl.facts")
    # grading a hostile finding by keyboard runs no script either
    page.keyboard.press("2")
    wait_js(page, "document.querySelector('figure.finding .grade').textContent === 'B'")
    assert t.errors == []


def test_a_flag_from_a_running_scan_appears_without_reload(tab, review_case):
    t = tab("inv")
    page = t.page
    wait_js(page, "document.getElementById('live-state').textContent === 'live'")
    page.evaluate("window.__notReloaded = 42")
    case = review_case["case"]
    scan = subprocess.Popen(
        [sys.executable, "-c", "from cli import run; run()", "scan", "--case", str(case), "--json",
         "--batch-files", "16", "--context", str(review_case["context"]),
         *rc.hashset_args(review_case["fleet"], review_case["truth"]), str(review_case["late"])],
        cwd=rc.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        page.wait_for_selector("#live-flags li:has-text('late.raw')", timeout=120_000)
        seen = time.time()
        assert page.evaluate("window.__notReloaded") == 42
        assert "KNOWN_MATCH" in page.inner_text("#live-flags")
        page.wait_for_selector("#queue-rows tr[data-device='late.raw']", timeout=30_000)
        assert page.evaluate("window.__notReloaded") == 42
        out, err = scan.communicate(timeout=300)
    finally:
        if scan.poll() is None:
            scan.kill()
    assert scan.returncode == 0, err
    with CaseStore(case, create=False) as store:
        device = [d for d in store.devices() if d["id"] == "late.raw"][0]
        flags = [f for _i, f in store.flags("late.raw") if f.code == "KNOWN_MATCH"]
    # the flag was raised while the device was still being scanned, and shown before its end
    assert flags and min(f.raised_at for f in flags) < device["finished"]
    assert seen - min(f.raised_at for f in flags) < 30
    # the scan's end reaches the open page as `flags --follow` says it
    run = json.loads(out)["run_id"]
    page.wait_for_selector("#live-flags li.scan-ended", timeout=30_000)
    assert f"scan run {run} ended (" in page.inner_text("#live-flags li.scan-ended")
    assert page.evaluate("window.__notReloaded") == 42
