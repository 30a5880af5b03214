"""The review service's JSON API contract, with status codes: login and sessions, the queue and
device as the CLI gives them, findings with stable ids, blurred and clear pictures by role,
grading behind the CSRF header, the audit log for supervisors, rate-limited logins, and grades
reaching `triage queue`, `show` and the VICS export. The app runs in-process (Starlette's test
client) over the shared scanned case."""
from __future__ import annotations

import hashlib
import io
import json

import pytest
from PIL import Image
from starlette.testclient import TestClient

import reviewcase as rc
from triage.review.app import LOGIN_FAILURES, create_app
from triage.review.cases import Cases
from triage.review.users import UserDB
from triage.store import CaseStore


@pytest.fixture(scope="module")
def app(review_case):
    cases = Cases([review_case["case"]])
    users = UserDB(review_case["home"] / "users.db")
    yield create_app(cases, users)
    cases.close()
    users.close()


def client(app, addr: str = "10.0.0.1") -> TestClient:
    return TestClient(app, client=(addr, 50000), follow_redirects=False)


def login(app, name: str, addr: str = "10.0.0.1") -> tuple[TestClient, str]:
    c = client(app, addr)
    r = c.post("/api/login", json={"username": name, "password": rc.PASSWORDS[name]})
    assert r.status_code == 200, r.text
    return c, r.json()["csrf"]


def cli_json(case, *args):
    out = rc.triage(*args, "--case", str(case))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_everything_needs_a_session(app):
    c = client(app)
    for path in ("/api/queue", "/api/devices/dev01.raw", "/api/findings?device=dev01.raw",
                 "/api/audit", "/api/events", "/api/progress", "/api/me",
                 "/api/findings/0123/thumbnail"):
        assert c.get(path).status_code == 401, path
    assert c.post("/api/findings/0123/grade", json={"grade": "A"}).status_code == 401
    assert c.post("/api/logout").status_code == 401
    # pages send the browser to the login page
    r = c.get("/device/dev01.raw")
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")


def test_login_sets_a_strict_httponly_session_cookie(app):
    c = client(app)
    bad = c.post("/api/login", json={"username": "boss", "password": "wrong password!"})
    assert bad.status_code == 401 and "csrf" not in bad.json()
    assert c.post("/api/login", json={"username": "nobody", "password": "x" * 12}).status_code == 401
    assert c.post("/api/login", content="username=boss&password=x",
                  headers={"content-type": "application/x-www-form-urlencoded"}).status_code == 415
    r = c.post("/api/login", json={"username": "boss", "password": rc.PASSWORDS["boss"]})
    assert r.status_code == 200
    body = r.json()
    assert body["role"] == "supervisor" and len(body["csrf"]) >= 32
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie           # plain HTTP on loopback; TLS adds Secure
    assert c.get("/api/me").json()["user"] == "boss"
    # logout needs the CSRF header too, and ends the session
    assert c.post("/api/logout").status_code == 403
    assert c.post("/api/logout", headers={"X-CSRF-Token": body["csrf"]}).status_code == 200
    assert c.get("/api/queue").status_code == 401


def test_tls_cookies_are_secure(review_case):
    cases = Cases([review_case["case"]])
    users = UserDB(review_case["home"] / "users.db")
    try:
        c = TestClient(create_app(cases, users, tls=True), base_url="https://testserver")
        r = c.post("/api/login", json={"username": "inv", "password": rc.PASSWORDS["inv"]})
        assert r.status_code == 200 and "Secure" in r.headers["set-cookie"]
        assert "max-age" in r.headers["strict-transport-security"]
    finally:
        cases.close()
        users.close()


def test_failed_logins_are_rate_limited_per_user_and_per_address(review_case):
    # an app of its own: the lock-out must not spill into the other tests
    cases = Cases([review_case["case"]])
    users = UserDB(review_case["home"] / "users.db")
    app = create_app(cases, users)
    c = client(app, "10.9.0.1")
    for _ in range(LOGIN_FAILURES):
        assert c.post("/api/login", json={"username": "exa", "password": "wrong-password"}).status_code == 401
    # the right password is refused too while the user is locked out, from any address
    r = client(app, "10.9.0.2").post("/api/login", json={"username": "exa", "password": rc.PASSWORDS["exa"]})
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    # the address is locked out for other names as well
    r = c.post("/api/login", json={"username": "inv", "password": rc.PASSWORDS["inv"]})
    assert r.status_code == 429
    # another user from another address is not affected
    assert client(app, "10.9.0.3").post(
        "/api/login", json={"username": "inv", "password": rc.PASSWORDS["inv"]}).status_code == 200
    cases.close()
    users.close()


def test_queue_is_the_cli_queue_with_case_and_review_counts(app, review_case):
    c, _ = login(app, "inv")
    api = c.get("/api/queue").json()
    cli = cli_json(review_case["case"], "queue", "--format", "json")
    assert [r["device"] for r in api] == [r["device"] for r in cli]
    for a, b in zip(api, cli):
        assert a.pop("case") == review_case["case"].name
        assert a == b
        assert a["reviewed"] + a["unreviewed"] == a["alert_matches"] + a["near_matches"] + a["suspected_new"]
    flagged = c.get("/api/queue", params={"flag": "NOT_EXAMINED"}).json()
    assert flagged and all("NOT_EXAMINED" in r["flags"] for r in flagged)
    assert len(flagged) < len(api)
    assert c.get("/api/queue", params={"flag": "<script>"}).status_code == 400
    assert c.get("/api/queue", params={"case": "no-such-case"}).json() == []


def test_device_is_what_show_json_gives(app, review_case):
    c, _ = login(app, "inv")
    api = c.get("/api/devices/dev01.raw").json()
    cli = cli_json(review_case["case"], "show", "dev01.raw", "--json")
    assert api.pop("case") == review_case["case"].name
    assert api == cli
    assert c.get("/api/devices/no-such-device").status_code == 404
    # by exhibit reference too, as `triage show` takes it
    assert c.get("/api/devices/SYN%2F7%2F01").json()["device"] == "dev01.raw"


def test_findings_have_stable_ids_provenance_and_blurred_thumbnails(app):
    c, _ = login(app, "inv")
    first = c.get("/api/findings", params={"device": "dev01.raw"}).json()
    again = c.get("/api/findings", params={"device": "dev01.raw"}).json()
    assert first and [f["id"] for f in first] == [f["id"] for f in again]
    for f in first:
        assert f["id"] == hashlib.sha256(("triage finding\0" + f["key"]).encode()).hexdigest()[:32]
        assert f["kind"] in ("exact", "near", "suspected") and f["path"].startswith(
            ("/", "$Unallocated/", "$Unpartitioned/"))      # carved from free space too
        assert {"volume_offset", "inode", "hashes"} <= set(f["provenance"])
        assert f["thumbnail"] == f"/api/findings/{f['id']}/thumbnail"
        assert "grade" in f
    exact = [f for f in first if f["kind"] == "exact"]
    assert exact and all(m["set"] and m["category"] for m in exact[0]["matches"])
    r = c.get(exact[0]["thumbnail"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    img = Image.open(io.BytesIO(r.content))
    assert img.mode == "L"                     # greyscale
    assert c.get("/api/findings?device=").status_code == 400
    assert c.get("/api/findings/ffffffffffffffffffffffffffffffff/thumbnail").status_code == 404


def _roughness(data: bytes) -> float:
    import numpy as np

    px = np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=float)
    return float(np.abs(np.diff(px, axis=1)).mean())


def test_clear_pictures_need_the_role_and_a_reason_and_are_audited(app):
    inv, _ = login(app, "inv")
    f = inv.get("/api/findings", params={"device": "dev02.E01"}).json()[0]
    assert inv.get(f["thumbnail"], params={"clear": "1", "reason": "curious"}).status_code == 403
    exa, _ = login(app, "exa", "10.0.0.2")
    assert exa.get(f["thumbnail"], params={"clear": "1"}).status_code == 400
    assert exa.get(f["thumbnail"], params={"clear": "1", "reason": "  "}).status_code == 400
    clear = exa.get(f["thumbnail"], params={"clear": "1", "reason": "confirm category for CPS"})
    assert clear.status_code == 200
    assert Image.open(io.BytesIO(clear.content)).mode == "RGB"
    blurred = exa.get(f["thumbnail"]).content
    assert _roughness(blurred) < _roughness(clear.content)
    boss, _ = login(app, "boss", "10.0.0.3")
    events = boss.get("/api/audit").json()
    reveal = [e for e in events if e["action"] == "reveal" and f["id"] in e["target"]]
    assert reveal and reveal[0]["user"] == "exa"
    assert reveal[0]["detail"]["reason"] == "confirm category for CPS"
    refused = [e for e in events if e["action"] == "reveal refused" and f["id"] in e["target"]]
    assert refused and refused[0]["user"] == "inv"


def test_blur_strength_is_per_user(app):
    c, token = login(app, "exa", "10.0.0.4")
    f = c.get("/api/findings", params={"device": "dev01.raw"}).json()[0]
    assert c.post("/api/me/blur", json={"blur": 3}).status_code == 403
    assert c.post("/api/me/blur", json={"blur": 3}, headers={"X-CSRF-Token": token}).json() == {"blur": 3}
    light = c.get(f["thumbnail"]).content
    assert c.post("/api/me/blur", json={"blur": 99}, headers={"X-CSRF-Token": token}).json() == {"blur": 24}
    heavy = c.get(f["thumbnail"]).content
    assert _roughness(heavy) < _roughness(light)
    assert c.post("/api/me/blur", json={"blur": "x"}, headers={"X-CSRF-Token": token}).status_code == 400
    c.post("/api/me/blur", json={"blur": 8}, headers={"X-CSRF-Token": token})


def test_grading_needs_the_csrf_header_and_reaches_queue_show_and_vics(app, review_case, tmp_path):
    c, token = login(app, "inv")
    found = c.get("/api/findings", params={"device": "dev02.E01"}).json()
    target = [f for f in found if f["grade"] is None][0]
    url = f"/api/findings/{target['id']}/grade"
    before = {r["device"]: r for r in c.get("/api/queue").json()}["dev02.E01"]
    assert c.post(url, json={"grade": "B"}).status_code == 403
    assert c.post(url, json={"grade": "B"}, headers={"X-CSRF-Token": "forged"}).status_code == 403
    assert c.post(url, json={"grade": "Z"}, headers={"X-CSRF-Token": token}).status_code == 400
    assert c.post(url, json={"grade": "B", "note": 5}, headers={"X-CSRF-Token": token}).status_code == 400
    assert c.post("/api/findings/ffffffffffffffffffffffffffffffff/grade", json={"grade": "B"},
                  headers={"X-CSRF-Token": token}).status_code == 404
    r = c.post(url, json={"grade": "B", "note": "<b>seen</b>"}, headers={"X-CSRF-Token": token})
    assert r.status_code == 200 and r.json()["grade"] == "B"
    after = {r["device"]: r for r in c.get("/api/queue").json()}["dev02.E01"]
    assert after["reviewed"] == before["reviewed"] + 1
    assert after["unreviewed"] == before["unreviewed"] - 1
    graded = [f for f in c.get("/api/findings", params={"device": "dev02.E01"}).json()
              if f["id"] == target["id"]][0]
    assert graded["grade"]["grade"] == "B" and graded["grade"]["user"] == "inv"
    # the CLI sees the same counts
    cli_row = {r["device"]: r for r in cli_json(review_case["case"], "queue", "--format", "json")}["dev02.E01"]
    assert cli_row["reviewed"] == after["reviewed"]
    table = rc.triage("queue", "--case", str(review_case["case"])).stdout
    total = after["reviewed"] + after["unreviewed"]
    assert f"reviewed {after['reviewed']}/{total}" in [l for l in table.splitlines() if "dev02.E01" in l and "." in l[:4]][0]
    import csv as _csv
    rows = list(_csv.DictReader(io.StringIO(rc.triage("queue", "--case", str(review_case["case"]),
                                                      "--format", "csv").stdout)))
    assert [r["reviewed"] for r in rows if r["device"] == "dev02.E01"] == [str(after["reviewed"])]
    show = cli_json(review_case["case"], "show", "dev02.E01", "--json")
    assert [f["grade"]["grade"] for f in show["findings"] if f["id"] == target["id"]] == ["B"]
    # the VICS export carries the grade as its Category (B -> 2), and the export is audited
    out = tmp_path / "v.json"
    exported = rc.triage("export", "--case", str(review_case["case"]), "--format", "vics",
                         "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    media = json.loads(out.read_text())["value"][0]["Media"]
    item = [m for m in media if m["MD5"] == target["provenance"]["hashes"]["md5"].upper()][0]
    assert item["Category"] == 2
    assert any(p["PropertyName"] == "triage grade" and p["PropertyValue"].startswith("B by inv")
               for p in item["MediaMetadata"])
    boss, _ = login(app, "boss", "10.0.0.3")
    actions = [(e["action"], e["log"]) for e in boss.get("/api/audit").json()]
    assert ("export", review_case["case"].name) in actions
    assert ("grade", review_case["case"].name) in actions


def test_non_pertinent_grade_exports_category_zero(app, review_case, tmp_path):
    c, token = login(app, "inv")
    target = c.get("/api/findings", params={"device": "dev03.000"}).json()[0]
    r = c.post(f"/api/findings/{target['id']}/grade", json={"grade": "non-pertinent"},
               headers={"X-CSRF-Token": token})
    assert r.status_code == 200
    out = tmp_path / "v.json"
    assert rc.triage("export", "--case", str(review_case["case"]), "--format", "vics",
                     "--out", str(out)).returncode == 0
    media = json.loads(out.read_text())["value"][0]["Media"]
    item = [m for m in media if m["MD5"] == target["provenance"]["hashes"]["md5"].upper()][0]
    assert item["Category"] == 0


def test_audit_log_is_for_supervisors_only(app):
    for name, addr in (("inv", "10.0.0.1"), ("exa", "10.0.0.2")):
        c, _ = login(app, name, addr)
        assert c.get("/api/audit").status_code == 403
        page = c.get("/audit")
        assert page.status_code == 200 and "may not see the audit log" in page.text
    boss, _ = login(app, "boss", "10.0.0.3")
    boss.get("/api/devices/dev05.raw")
    events = boss.get("/api/audit").json()
    actions = {e["action"] for e in events}
    assert {"login", "login failed", "device view", "user add"} <= actions
    for e in events:
        assert {"time", "user", "action", "target", "hash", "prev", "log"} <= set(e)
    view = [e for e in events if e["action"] == "device view" and e["target"] == "dev05.raw"]
    assert view and view[0]["user"] == "boss"


def test_every_response_carries_the_security_headers(app):
    c, _ = login(app, "inv")
    for path in ("/", "/api/queue", "/static/app.js", "/login"):
        h = c.get(path).headers
        assert h["content-security-policy"].startswith("default-src 'self'"), path
        assert "http" not in h["content-security-policy"]
        assert h["x-content-type-options"] == "nosniff" and h["x-frame-options"] == "DENY"


def test_hostile_names_are_escaped_in_every_page(app):
    c, _ = login(app, "inv")
    hostile = [r for r in c.get("/api/queue").json() if r["device"] == "hostile.raw"][0]
    assert hostile["alert_matches"] == len(rc.HOSTILE_NAMES)
    assert hostile["exhibit"] == rc.HOSTILE_EXHIBIT
    paths = [f["path"] for f in c.get("/api/findings", params={"device": "hostile.raw"}).json()]
    assert sorted(paths) == sorted(f"/{rc.HOSTILE_DIR}/{name}" for name in rc.HOSTILE_NAMES)
    for url in ("/", "/?partial=1", "/device/hostile.raw", "/progress"):
        page = c.get(url).text
        assert "<script>alert" not in page and "<img src=x" not in page, url
        assert "<b onmouseover" not in page and "<i>9</i>" not in page, url
    device = c.get("/device/hostile.raw").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.jpg" in device
    assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;.jpg" in device
    assert "[bold red]rich[blink]" in device           # rich markup stays literal text
    assert "&lt;script&gt;alert(4)&lt;/script&gt;" in device  # the context notes


def test_progress_lists_every_device_with_its_counts(app, review_case):
    c, _ = login(app, "inv")
    rows = {r["device"]: r for r in c.get("/api/progress").json()}
    with CaseStore(review_case["case"], create=False) as store:
        for d in store.devices():
            assert rows[d["id"]]["status"] == d["status"]
            assert rows[d["id"]]["files"] == store.counts(d["id"])["files"]
    assert rows["dev01.raw"]["files"] > 0 and rows["dev01.raw"]["alert_matches"] > 0


def test_failed_login_records_do_not_grow_without_bound():
    from triage.review.app import MAX_TRACKED, _RateLimit

    limit = _RateLimit(5, 300.0)
    for i in range(MAX_TRACKED):
        limit.fail([f"user:n{i}"], now=0.0)
    assert len(limit.failures) == MAX_TRACKED
    # once their window has passed, the old names go when the table is full
    limit.fail(["user:late"], now=1000.0)
    assert set(limit.failures) == {"user:late"}
    assert limit.retry_after(["user:late"], now=1000.0) == 0
    for _ in range(4):
        limit.fail(["user:late"], now=1000.0)
    assert limit.retry_after(["user:late"], now=1001.0) == pytest.approx(299.0)


def test_several_cases_merge_into_one_queue(review_case, tmp_path):
    """`--cases ROOT` serves every case under ROOT: the queue merges them by tier and score,
    `?case=` filters, and a device id found in two cases needs `?case=`."""
    import sqlite3

    from triage.review.cases import case_dirs

    root = tmp_path / "cases"
    for name in ("op-alpha", "op-beta"):
        (root / name).mkdir(parents=True)
        with sqlite3.connect(review_case["case"] / "case.sqlite") as src, \
                sqlite3.connect(root / name / "case.sqlite") as dest:
            src.backup(dest)
    (root / "not-a-case").mkdir()
    dirs = case_dirs([], [str(root)])
    assert [d.name for d in dirs] == ["op-alpha", "op-beta"]
    cases = Cases(dirs)
    users = UserDB(review_case["home"] / "users.db")
    try:
        c = TestClient(create_app(cases, users), client=("10.0.1.1", 50000))
        c.post("/api/login", json={"username": "inv", "password": rc.PASSWORDS["inv"]})
        rows = c.get("/api/queue").json()
        single = cli_json(review_case["case"], "queue", "--format", "json")
        assert len(rows) == 2 * len(single)
        assert {r["case"] for r in rows} == {"op-alpha", "op-beta"}
        keys = [(-r["tier"], -r["score"], r["case"], r["device"]) for r in rows]
        assert keys == sorted(keys)
        alpha = c.get("/api/queue", params={"case": "op-alpha"}).json()
        assert [r["device"] for r in alpha] == [r["device"] for r in single]
        assert c.get("/api/devices/dev01.raw").status_code == 409
        assert c.get("/api/devices/dev01.raw", params={"case": "op-beta"}).json()["case"] == "op-beta"
    finally:
        cases.close()
        users.close()


def test_a_password_change_or_removal_ends_open_sessions(review_case, tmp_path):
    import shutil

    home = tmp_path / "home"
    shutil.copytree(review_case["home"], home)
    cases = Cases([review_case["case"]])
    users = UserDB(home / "users.db")
    try:
        app = create_app(cases, users)
        a, _ = login(app, "exa", "10.0.2.1")
        b, _ = login(app, "inv", "10.0.2.2")
        assert a.get("/api/queue").status_code == 200 and b.get("/api/queue").status_code == 200
        env = {"TRIAGE_HOME": str(home)}
        assert rc.triage("users", "passwd", "exa", "--password-stdin", env=env,
                         stdin="a new long password\n").returncode == 0
        assert rc.triage("users", "remove", "inv", env=env).returncode == 0
        assert a.get("/api/queue").status_code == 401
        assert b.get("/api/queue").status_code == 401
        r = client(app, "10.0.2.1").post("/api/login", json={"username": "exa",
                                                              "password": "a new long password"})
        assert r.status_code == 200
    finally:
        cases.close()
        users.close()


def test_requests_cut_short_by_shutdown_end_quietly():
    """uvicorn cancels requests still running when the graceful shutdown's time is up; the app
    ends them without a traceback then, and only then."""
    import asyncio

    from triage.review.app import _Headers

    async def slow(scope, receive, send):
        raise asyncio.CancelledError()

    stopping = [False]
    wrapped = _Headers(slow, tls=False, stopping=lambda: stopping[0])
    scope = {"type": "http"}
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(wrapped(scope, None, None))
    stopping[0] = True
    assert asyncio.run(wrapped(scope, None, None)) is None


def test_the_live_feed_reports_a_scans_end_as_flags_follow_does(tmp_path):
    """/api/events looks through the follow loop of `flags --follow` (FlagFollower): a flag
    the running scan raises, then the scan's end with the words the terminal prints; a case
    that changes no more is still looked at, so a killed scan's end is reported too."""
    from triage.flags import ended_text, follow_store
    from triage.records import EvidenceRef, Flag
    from triage.review.live import RECHECK_SECONDS, LiveFeed
    from triage.store import ScanLock

    case = tmp_path / "case"
    clock = [0.0]
    with CaseStore(case, results="live") as scan:
        scan.upsert_device(EvidenceRef(device_id="d1", paths=("/x/d1.raw",), format="raw",
                                       media_size=10))
        first = scan.begin_run(tool_version="t", hashsets=[], model=None, operator="o",
                               options={})
        scan.end_run(first, "complete")
        lock = ScanLock(case)
        run = scan.begin_run(tool_version="t", hashsets=[], model=None, operator="o",
                             options={})
        cases = Cases([case])
        try:
            feed = LiveFeed(cases, clock=lambda: clock[0])
            assert feed.messages() == []
            scan.add_flag(Flag(code="KNOWN_MATCH", severity=80, device_id="d1", key="k1",
                               raised_at=1.0e9, message="a <b>match</b>"))
            got = feed.messages()
            assert [m.split("\n")[0] for m in got] == ["event: flag", "event: progress"]
            flag = json.loads(got[0].split("data: ", 1)[1])
            assert flag["device"] == "d1" and flag["raised_at"] == "2001-09-09T01:46:40Z"
            scan.end_run(run, "complete")
            lock.release()
            ended = [json.loads(m.split("data: ", 1)[1]) for m in feed.messages()
                     if m.startswith("event: scan-ended")]
            follow = list(follow_store(scan, after_run=first, sleep=lambda _s: None))
            assert follow[-1][0] == "ended" and follow[-1][1]["id"] == run
            assert [(e["run"], e["message"]) for e in ended] == [(run, ended_text(follow[-1][1]))]
            assert ended[0]["message"] == f"scan run {run} ended (complete); no more flags " \
                                          "will come from it"
            # the next scan is killed: no end recorded, no change to the store after it
            lock = ScanLock(case)
            killed = scan.begin_run(tool_version="t", hashsets=[], model=None, operator="o",
                                    options={})
            assert [m for m in feed.messages() if "scan-ended" in m] == []
            lock.release()
            assert feed.messages() == []            # not looked at again yet
            clock[0] += RECHECK_SECONDS
            ended = [json.loads(m.split("data: ", 1)[1]) for m in feed.messages()
                     if m.startswith("event: scan-ended")]
            assert [e["run"] for e in ended] == [killed]
            assert "stopped with no end recorded" in ended[0]["message"]
        finally:
            lock.release()
            cases.close()
