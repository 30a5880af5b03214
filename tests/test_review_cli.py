"""`triage users`, `triage audit verify` and `triage serve` from the command line: users file
mode and refusals, the audit chain whole and broken (edited with sqlite3), TLS and the loopback
rule, and a clean stop on SIGTERM with an event stream open."""
from __future__ import annotations

import json
import socket
import sqlite3
import ssl
import stat
import subprocess
import threading
import time

import httpx
import pytest

import reviewcase as rc
from triage.review.server import check_transport
from triage.errors import TriageError


def test_users_add_list_passwd_remove(tmp_path):
    env = {"TRIAGE_HOME": str(tmp_path / "home")}
    r = rc.triage("users", "add", "asmith", "--role", "examiner", "--password-stdin", env=env,
                  stdin="a long password\n")
    assert r.returncode == 0, r.stderr
    db = tmp_path / "home" / "users.db"
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
    again = rc.triage("users", "add", "asmith", "--role", "examiner", "--password-stdin", env=env,
                      stdin="a long password\n")
    assert again.returncode == 2 and again.stderr.startswith("error: user 'asmith' exists")
    short = rc.triage("users", "add", "bob", "--role", "investigator", "--password-stdin", env=env,
                      stdin="short\n")
    assert short.returncode == 2 and "at least 10 characters" in short.stderr
    bad = rc.triage("users", "add", "<script>", "--role", "investigator", "--password-stdin",
                    env=env, stdin="a long password\n")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    role = rc.triage("users", "add", "eve", "--role", "admin", "--password-stdin", env=env,
                     stdin="a long password\n")
    assert role.returncode == 2
    listed = json.loads(rc.triage("users", "list", "--json", env=env).stdout)
    assert [(u["name"], u["role"]) for u in listed] == [("asmith", "examiner")]
    assert "hash" not in listed[0]
    stored = sqlite3.connect(db).execute("SELECT hash FROM users").fetchone()[0]
    assert stored.startswith("$argon2id$") and "a long password" not in stored
    assert rc.triage("users", "passwd", "asmith", "--password-stdin", env=env,
                     stdin="another long one\n").returncode == 0
    assert sqlite3.connect(db).execute("SELECT hash FROM users").fetchone()[0] != stored
    assert rc.triage("users", "remove", "asmith", env=env).returncode == 0
    assert rc.triage("users", "remove", "asmith", env=env).returncode == 2
    assert json.loads(rc.triage("users", "list", "--json", env=env).stdout) == []
    # every change is in the service's audit log, by the operator at the command line
    from triage.review.users import UserDB

    with UserDB(db) as users:
        actions = [(e.action, e.target) for e in users.audit.events()]
        assert actions == [("user add", "asmith"), ("user passwd", "asmith"), ("user remove", "asmith")]
        assert all(e.user.endswith("(command line)") for e in users.audit.events())


def _copy_db(src, dest):
    """A consistent copy of a live SQLite file (WAL included)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(src) as a, sqlite3.connect(dest) as b:
        a.backup(b)


def test_audit_verify_passes_untouched_and_fails_after_an_edit(review_case, tmp_path):
    home = tmp_path / "home"
    _copy_db(review_case["home"] / "users.db", home / "users.db")
    case = tmp_path / "case"
    _copy_db(review_case["case"] / "review.sqlite", case / "review.sqlite")
    review = case / "review.sqlite"
    # give the copied case log a few events of its own
    from triage.review.casereview import CaseReview

    with CaseReview(case) as r:
        for i in range(3):
            r.audit.append("boss", "device view", f"dev0{i}.raw")
    env = {"TRIAGE_HOME": str(home)}
    ok = rc.triage("audit", "verify", "--case", str(case), env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.count("ok ") == 2 and "BROKEN" not in ok.stdout
    # the log refuses edits through SQL...
    edit = subprocess.run(["sqlite3", str(review), "UPDATE audit SET user = 'nobody' WHERE id = 2"],
                          capture_output=True, text=True)
    assert edit.returncode != 0 and "append-only" in edit.stderr
    assert rc.triage("audit", "verify", "--case", str(case), env=env).returncode == 0
    # ...so whoever edits it drops the triggers first; verify then names the event
    edit = subprocess.run(["sqlite3", str(review), "DROP TRIGGER audit_no_update; "
                           "UPDATE audit SET user = 'nobody' WHERE id = 2"], capture_output=True, text=True)
    assert edit.returncode == 0, edit.stderr
    broken = rc.triage("audit", "verify", "--case", str(case), "--json", env=env)
    assert broken.returncode == 1
    logs = {d["log"]: d for d in json.loads(broken.stdout)}
    assert logs["service"]["ok"] is True
    problems = logs[str(case)]["problems"]
    assert problems and problems[0].startswith("event 2: content changed")


def test_audit_verify_fails_when_an_event_is_removed(review_case, tmp_path):
    home = tmp_path / "home"
    _copy_db(review_case["home"] / "users.db", home / "users.db")
    db = home / "users.db"
    subprocess.run(["sqlite3", str(db), "DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE id = 2"],
                   check=True, capture_output=True)
    r = rc.triage("audit", "verify", env={"TRIAGE_HOME": str(home)})
    assert r.returncode == 1 and "BROKEN" in r.stdout and "event 3" in r.stdout


def test_a_non_loopback_host_needs_tls_or_an_explicit_opt_out(review_case, tmp_path):
    env = {"TRIAGE_HOME": str(review_case["home"])}
    r = rc.triage("serve", "--case", str(review_case["case"]), "--host", "0.0.0.0", env=env)
    assert r.returncode == 2 and "--cert and --key" in r.stderr and "Traceback" not in r.stderr
    r = rc.triage("serve", "--case", str(review_case["case"]), "--cert", str(tmp_path / "x.pem"), env=env)
    assert r.returncode == 2 and "both --cert and --key" in r.stderr
    r = rc.triage("serve", "--case", str(tmp_path), env=env)
    assert r.returncode == 2 and "not a case directory" in r.stderr
    assert check_transport("127.0.0.1", None, None, False) is None
    assert check_transport("::1", None, None, False) is None
    warning = check_transport("10.1.2.3", None, None, True)
    assert warning.startswith("warning:") and "unencrypted" in warning
    with pytest.raises(TriageError):
        check_transport("10.1.2.3", None, None, False)


def _self_signed(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def _serve(args, home, port):
    import os
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "from cli import run; run()", "serve", *args,
                             "--port", str(port)], cwd=rc.ROOT,
                            env={**os.environ, "TRIAGE_HOME": str(home)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError(proc.stderr.read())


def test_serves_over_tls_with_secure_cookies(review_case, tmp_path):
    cert, key = _self_signed(tmp_path)
    port = rc.free_port()
    proc = _serve(["--case", str(review_case["case"]), "--cert", str(cert), "--key", str(key)],
                  review_case["home"], port)
    try:
        trusted = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=trusted) as c:
            r = c.post("/api/login", json={"username": "inv", "password": rc.PASSWORDS["inv"]})
            assert r.status_code == 200
            assert "Secure" in r.headers["set-cookie"] and "HttpOnly" in r.headers["set-cookie"]
            assert c.get("/api/queue").status_code == 200
        with pytest.raises(httpx.HTTPError):        # no plain HTTP on the TLS port
            httpx.get(f"http://127.0.0.1:{port}/api/queue", timeout=5)
    finally:
        code, err = rc.stop_server(proc)
    assert code == 0, err


def test_sigterm_stops_the_server_cleanly_with_an_event_stream_open(review_case):
    port = rc.free_port()
    proc = _serve(["--case", str(review_case["case"])], review_case["home"], port)
    base = f"http://127.0.0.1:{port}"
    got = []
    c = httpx.Client(base_url=base, timeout=30)
    c.post("/api/login", json={"username": "inv", "password": rc.PASSWORDS["inv"]})

    def listen():
        try:
            with c.stream("GET", "/api/events") as r:
                got.append(r.status_code)
                for line in r.iter_lines():
                    got.append(line)
        except httpx.HTTPError as exc:
            got.append(exc)

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while ": connected" not in got and time.monotonic() < deadline:
        time.sleep(0.05)
    assert got[:1] == [200] and ": connected" in got
    t0 = time.monotonic()
    code, err = rc.stop_server(proc, timeout=15)
    took = time.monotonic() - t0
    assert code == 0, err
    assert took < 5, took
    assert "stopped" in err and "Traceback" not in err
    t.join(5)
    assert not t.is_alive()
    c.close()
