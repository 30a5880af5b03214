"""The review service's web app (Starlette): JSON API, pages, server-sent events.

Security, in one place:
- sessions: a random id in a signed cookie (HttpOnly, SameSite=Strict, Secure under TLS); the
  session itself (user, role, CSRF token) lives in server memory and ends on logout or restart;
- every state-changing request needs the session's token in `X-CSRF-Token` (403 without);
- failed logins are rate-limited per user name and per address (429 with Retry-After);
- Content-Security-Policy allows 'self' only; every asset is served by the app;
- templates autoescape; the page script writes evidence strings with textContent only;
- pictures leave the server blurred and greyscale; a clear one needs the examiner or
  supervisor role and a reason, and is an audit event.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import quote

import jinja2
from itsdangerous import BadSignature, TimestampSigner
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (HTMLResponse, JSONResponse, RedirectResponse, Response,
                                 StreamingResponse)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from triage import __version__
from triage.errors import TriageError
from triage.exports.report_html import thumbnail_jpeg
from triage.flags import CODES
from triage.output import iso_times
from triage.units import human_bytes
from triage.review.casereview import GRADES
from triage.review.cases import Cases
from triage.review.live import LiveFeed
from triage.review.users import AUDIT_ROLES, BLUR_MAX, BLUR_MIN, CLEAR_ROLES, UserDB

HERE = Path(__file__).parent
COOKIE = "triage_session"
SESSION_SECONDS = 10 * 3600          # a working day and a bit; then log in again
LOGIN_FAILURES, LOGIN_WINDOW = 5, 300.0   # at most 5 failures per user and per address per 5 min
MAX_TRACKED = 10_000                      # names and addresses with recent failures kept
THUMB_PX = 192
MAX_BODY = 64 * 1024
CSP = ("default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; frame-ancestors 'none'; "
       "base-uri 'none'; form-action 'self'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


@dataclass
class Session:
    id: str
    user: str
    role: str
    csrf: str
    started: float


class _Headers:
    """Pure ASGI middleware: the security headers on every response (SSE included)."""

    def __init__(self, app, tls: bool, stopping: Callable[[], bool] = lambda: False):
        self.app = app
        self.stopping = stopping
        self.extra = SECURITY_HEADERS + ([(b"strict-transport-security", b"max-age=31536000")]
                                         if tls else [])

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _v in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in self.extra if k not in names]
            await send(message)

        try:
            return await self.app(scope, receive, send_with_headers)
        except asyncio.CancelledError:
            if self.stopping():    # cut short by the shutdown's time limit: end quietly,
                return None        # not with a traceback per request on stderr
            raise


class _RateLimit:
    def __init__(self, limit: int, window: float):
        self.limit, self.window = limit, window
        self.failures: dict[str, deque] = defaultdict(deque)

    def _trim(self, key: str, now: float) -> deque:
        q = self.failures[key]
        while q and q[0] <= now - self.window:
            q.popleft()
        return q

    def retry_after(self, keys: list[str], now: float) -> float:
        """Seconds until a login may be tried again under every key; 0 when allowed now."""
        wait = 0.0
        for k in keys:
            q = self._trim(k, now)
            if len(q) >= self.limit:
                wait = max(wait, q[0] + self.window - now)
        return wait

    def fail(self, keys: list[str], now: float) -> None:
        for k in keys:
            self._trim(k, now).append(now)
        if len(self.failures) > MAX_TRACKED:     # guesses under many names must not grow memory
            for k in list(self.failures):
                if not self._trim(k, now):
                    del self.failures[k]

    def clear(self, key: str) -> None:
        self.failures.pop(key, None)


def _jinja() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE / "templates")),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["bytes"] = human_bytes
    env.filters["when"] = lambda t: time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t)) if t else "-"
    env.filters["q"] = lambda s: quote(str(s), safe="")
    env.globals.update(version=__version__, codes=CODES, grades=GRADES)
    return env


def create_app(cases: Cases, users: UserDB, *, tls: bool = False, poll: float = 0.5,
               stopping: Callable[[], bool] = lambda: False,
               now: Callable[[], float] = time.time) -> Starlette:
    """The app over `cases`, authenticating against `users`. `tls`: cookies are Secure.
    `stopping`: true once the server is shutting down (ends event streams)."""
    signer = TimestampSigner(secrets.token_bytes(32), salt="triage-session")
    sessions: dict[str, Session] = {}
    limiter = _RateLimit(LOGIN_FAILURES, LOGIN_WINDOW)
    env = _jinja()

    # --- helpers ---------------------------------------------------------------------------

    def session_of(request: Request) -> Optional[Session]:
        raw = request.cookies.get(COOKIE)
        if not raw:
            return None
        try:
            sid = signer.unsign(raw, max_age=SESSION_SECONDS).decode()
        except (BadSignature, UnicodeDecodeError):
            return None
        s = sessions.get(sid)
        if s is None:
            return None
        user = users.get(s.user)
        # ends after SESSION_SECONDS, when the user is removed, or when the password changed
        if now() - s.started > SESSION_SECONDS or user is None or user["changed"] > s.started:
            sessions.pop(sid, None)
            return None
        return s

    def need(request: Request, roles: Optional[frozenset] = None) -> Session:
        s = session_of(request)
        if s is None:
            raise HTTPException(401, "log in first")
        if roles is not None and s.role not in roles:
            raise HTTPException(403, f"your role ({s.role}) may not do this")
        return s

    def need_csrf(request: Request, s: Session) -> None:
        token = request.headers.get("x-csrf-token", "")
        if not token or not hmac.compare_digest(token, s.csrf):
            raise HTTPException(403, "missing or wrong X-CSRF-Token header")

    async def body_json(request: Request) -> dict:
        if "application/json" not in request.headers.get("content-type", ""):
            raise HTTPException(415, "send JSON (Content-Type: application/json)")
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise HTTPException(413, "request too large")
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            raise HTTPException(400, "the body is not JSON") from None
        if not isinstance(data, dict):
            raise HTTPException(400, "the body must be a JSON object")
        return data

    def client_addr(request: Request) -> str:
        return request.client.host if request.client else "unknown"

    def page(request: Request, name: str, s: Optional[Session], **ctx) -> HTMLResponse:
        user = users.get(s.user) if s else None
        html = env.get_template(name).render(
            request_path=request.url.path, session=s, user=user, csrf=s.csrf if s else "",
            can_clear=bool(s and s.role in CLEAR_ROLES), can_audit=bool(s and s.role in AUDIT_ROLES),
            cases=[c.name for c in cases], **ctx)
        return HTMLResponse(html)

    def page_session(request: Request) -> Session:
        s = session_of(request)
        if s is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise HTTPException(303, headers={"Location": "/login?next=" + quote(target, safe="")})
        return s

    def queue_args(request: Request) -> dict:
        q = request.query_params
        days = q.get("deadline", "")
        try:
            deadline = float(days) if days else None
        except ValueError:
            raise HTTPException(400, "deadline is a number of days") from None
        flag = q.get("flag", "")
        if flag and flag not in CODES:
            raise HTTPException(400, f"flag is one of {', '.join(CODES)}")
        return {"flag": flag, "case": q.get("case", ""), "deadline_days": deadline}

    def device_of(ref: str, case: str):
        try:
            return cases.device(ref, case)
        except LookupError:
            raise HTTPException(404, f"no device {ref!r}") from None
        except TriageError as exc:
            raise HTTPException(409, str(exc)) from None

    def device_payload(s: Session, ref: str, case: str) -> tuple[dict, bytes]:
        c, dev = device_of(ref, case)
        out = c.device_json(dev)
        c.review.audit.append(s.user, "device view", dev["id"], {"case": c.name})
        return out

    def with_thumbs(out: dict) -> list[dict]:
        return [dict(f, thumbnail=f"/api/findings/{f['id']}/thumbnail") for f in out["findings"]]

    # --- auth ------------------------------------------------------------------------------

    async def login_page(request: Request):
        nxt = request.query_params.get("next", "/")
        if not nxt.startswith("/") or nxt.startswith("//") or "\\" in nxt:
            nxt = "/"
        return page(request, "login.html", session_of(request), next=nxt)

    async def api_login(request: Request):
        data = await body_json(request)
        name, password = data.get("username"), data.get("password")
        if not isinstance(name, str) or not isinstance(password, str) or len(password) > 1024:
            raise HTTPException(400, "send username and password")
        addr = client_addr(request)
        keys = [f"user:{name.lower()[:64]}", f"addr:{addr}"]
        t = now()
        wait = limiter.retry_after(keys, t)
        if wait > 0:
            await run_in_threadpool(users.audit.append, name[:64], "login refused",
                                    addr, {"why": "too many failed logins"})
            return JSONResponse({"error": "too many failed logins; wait and try again"}, 429,
                                headers={"Retry-After": str(int(wait) + 1)})
        user = await run_in_threadpool(users.authenticate, name, password)
        if user is None:
            limiter.fail(keys, t)
            await run_in_threadpool(users.audit.append, name[:64], "login failed", addr)
            return JSONResponse({"error": "wrong user name or password"}, 401)
        limiter.clear(keys[0])
        s = Session(secrets.token_urlsafe(32), user["name"], user["role"], secrets.token_urlsafe(32), t)
        sessions[s.id] = s
        await run_in_threadpool(users.audit.append, s.user, "login", addr, {"role": s.role})
        resp = JSONResponse({"user": s.user, "role": s.role, "csrf": s.csrf, "blur": user["blur"]})
        resp.set_cookie(COOKIE, signer.sign(s.id).decode(), max_age=SESSION_SECONDS, path="/",
                        httponly=True, samesite="strict", secure=tls)
        return resp

    async def api_logout(request: Request):
        s = need(request)
        need_csrf(request, s)
        sessions.pop(s.id, None)
        await run_in_threadpool(users.audit.append, s.user, "logout", client_addr(request))
        resp = JSONResponse({"ok": True})
        resp.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=tls)
        return resp

    async def api_me(request: Request):
        s = need(request)
        user = users.get(s.user)
        return JSONResponse({"user": s.user, "role": s.role, "blur": user["blur"]})

    async def api_blur(request: Request):
        s = need(request)
        need_csrf(request, s)
        data = await body_json(request)
        blur = data.get("blur")
        if isinstance(blur, bool) or not isinstance(blur, int):
            raise HTTPException(400, f"blur is a whole number from {BLUR_MIN} to {BLUR_MAX}")
        return JSONResponse({"blur": await run_in_threadpool(users.set_blur, s.user, blur)})

    # --- API -------------------------------------------------------------------------------

    async def api_queue(request: Request):
        need(request)
        args = queue_args(request)
        return Response(await run_in_threadpool(cases.queue_json, **args),
                        media_type="application/json")

    async def api_device(request: Request):
        s = need(request)
        _out, body = await run_in_threadpool(device_payload, s, request.path_params["device"],
                                             request.query_params.get("case", ""))
        return Response(body, media_type="application/json")

    async def api_findings(request: Request):
        s = need(request)
        ref = request.query_params.get("device")
        if not ref:
            raise HTTPException(400, "give ?device=ID")
        out, _body = await run_in_threadpool(device_payload, s, ref, request.query_params.get("case", ""))
        rows = [dict(f, case=out["case"], device=out["device"]) for f in with_thumbs(out)]
        return Response(json.dumps(iso_times(rows), default=str), media_type="application/json")

    def _thumbnail(s: Session, fid: str, clear: bool, reason: str, addr: str) -> Response:
        hit = cases.finding(fid)
        if hit is None:
            raise HTTPException(404, "no such finding")
        c, dev_id, key = hit
        if clear:
            if s.role not in CLEAR_ROLES:
                c.review.audit.append(s.user, "reveal refused", f"{dev_id} {fid}",
                                      {"case": c.name, "role": s.role})
                raise HTTPException(403, "clear pictures are for the examiner and supervisor roles")
            if not reason.strip():
                raise HTTPException(400, "give a reason for revealing the picture (?reason=...)")
        item = c.store.file(key)
        data = item[1].thumbnail if item else b""
        blur = users.get(s.user)["blur"]
        jpeg = thumbnail_jpeg(data, "clear" if clear else "blurred", THUMB_PX, blur)
        if jpeg is None:
            raise HTTPException(404, "no picture stored for this finding")
        if clear:
            c.review.audit.append(s.user, "reveal", f"{dev_id} {fid}",
                                  {"case": c.name, "reason": reason.strip()[:500], "key": key,
                                   "address": addr})
        return Response(jpeg, media_type="image/jpeg")

    async def api_thumbnail(request: Request):
        s = need(request)
        q = request.query_params
        return await run_in_threadpool(_thumbnail, s, request.path_params["fid"],
                                       q.get("clear") in ("1", "true"), q.get("reason", ""),
                                       client_addr(request))

    async def api_grade(request: Request):
        s = need(request)
        need_csrf(request, s)
        data = await body_json(request)
        grade, note = data.get("grade"), data.get("note", "")
        if grade not in GRADES:
            raise HTTPException(400, f"grade is one of {', '.join(GRADES)}")
        if note is None:
            note = ""
        if not isinstance(note, str):
            raise HTTPException(400, "note is text")
        fid = request.path_params["fid"]

        def work():
            hit = cases.finding(fid)
            if hit is None:
                raise HTTPException(404, "no such finding")
            c = hit[0]
            return dict(c.set_grade(fid, grade, note, s.user), case=c.name, device=hit[1])

        return JSONResponse(await run_in_threadpool(work))

    def audit_events(case: str = "", limit: int = 500) -> list[dict]:
        logs = [("service", users.audit)] + [(c.name, c.review.audit) for c in cases
                                             if not case or c.name == case]
        out = []
        for name, log in logs:
            out.extend(dict(e.to_dict(), log=name) for e in log.events(limit=limit, newest_first=True))
        out.sort(key=lambda e: (-e["time"], e["log"], -e["id"]))
        return out[:limit]

    async def api_audit(request: Request):
        need(request, AUDIT_ROLES)
        try:
            limit = max(1, min(5000, int(request.query_params.get("limit", "500"))))
        except ValueError:
            raise HTTPException(400, "limit is a number") from None
        return JSONResponse(await run_in_threadpool(audit_events, request.query_params.get("case", ""),
                                                    limit))

    progress_cache: dict = {}

    def progress_rows() -> list[dict]:
        """Each device's status and counts; per case, read again only when the case changed
        (the page refreshes on every batch a scan commits)."""
        rows = []
        for c in cases:
            snap = c.snapshot()
            cached = progress_cache.get(c.name)
            if cached is None or cached[0] != snap.version:
                part = []
                for dev_id, d in snap.devices.items():
                    part.append({"case": c.name, "device": dev_id, "status": d.get("status"),
                                 "started": d.get("started"), "finished": d.get("finished"),
                                 "media_size": d.get("media_size"), **c.store.counts(dev_id)})
                cached = progress_cache[c.name] = (snap.version, part)
            rows.extend(cached[1])
        return rows

    async def api_progress(request: Request):
        need(request)
        return JSONResponse(await run_in_threadpool(progress_rows))

    async def api_events(request: Request):
        """Server-sent events (triage.review.live): `flag` for each flag raised after the
        stream opened, `scan-ended` when a scan ends, `progress` when a case store changed."""
        need(request)

        async def stream():
            feed = await run_in_threadpool(LiveFeed, cases)
            yield "retry: 2000\n: connected\n\n"
            beat = time.monotonic()
            while not stopping():
                if await request.is_disconnected():
                    return
                for msg in await run_in_threadpool(feed.messages):
                    yield msg
                if time.monotonic() - beat > 15:
                    beat = time.monotonic()
                    yield ": keep-alive\n\n"
                await asyncio.sleep(poll)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"X-Accel-Buffering": "no"})

    # --- pages -----------------------------------------------------------------------------

    async def queue_page(request: Request):
        s = page_session(request)
        args = queue_args(request)
        rows = await run_in_threadpool(cases.queue, **args)
        partial = request.query_params.get("partial") == "1"
        return page(request, "queue_rows.html" if partial else "queue.html", s, rows=rows,
                    filters=args)

    async def device_page(request: Request):
        s = page_session(request)
        out, _body = await run_in_threadpool(device_payload, s, request.path_params["device"],
                                             request.query_params.get("case", ""))
        findings = with_thumbs(out)       # each with its category_label (views.finding_dict)
        lost = out["accounting"]["total"] - out["accounting"]["examined"]
        return page(request, "device.html", s, d=out, findings=findings, lost=lost,
                    blur=users.get(s.user)["blur"], blur_min=BLUR_MIN, blur_max=BLUR_MAX)

    async def progress_page(request: Request):
        s = page_session(request)
        rows = await run_in_threadpool(progress_rows)
        partial = request.query_params.get("partial") == "1"
        return page(request, "progress_rows.html" if partial else "progress.html", s, rows=rows)

    async def audit_page(request: Request):
        s = page_session(request)
        if s.role not in AUDIT_ROLES:
            return page(request, "refused.html", s, what="the audit log")

        def work():
            checks = [("service", users.audit.verify())] + [(c.name, c.review.audit.verify())
                                                            for c in cases]
            return audit_events(request.query_params.get("case", ""), 1000), checks

        events, checks = await run_in_threadpool(work)
        return page(request, "audit.html", s, events=events, checks=checks)

    async def error_handler(request: Request, exc: HTTPException):
        if exc.status_code in (301, 302, 303, 307) and exc.headers:
            return RedirectResponse(exc.headers["Location"], exc.status_code)
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": exc.detail}, exc.status_code, headers=exc.headers)
        s = session_of(request)
        if exc.status_code == 401:
            return RedirectResponse("/login", 303)
        return HTMLResponse(env.get_template("error.html").render(
            session=s, status=exc.status_code, message=exc.detail, csrf=s.csrf if s else "",
            can_audit=bool(s and s.role in AUDIT_ROLES), request_path=request.url.path,
            cases=[c.name for c in cases], user=None), exc.status_code)

    routes = [
        Route("/login", login_page),
        Route("/favicon.ico", lambda request: Response(status_code=204)),
        Route("/", queue_page),
        Route("/device/{device:path}", device_page),
        Route("/progress", progress_page),
        Route("/audit", audit_page),
        Route("/api/login", api_login, methods=["POST"]),
        Route("/api/logout", api_logout, methods=["POST"]),
        Route("/api/me", api_me),
        Route("/api/me/blur", api_blur, methods=["POST"]),
        Route("/api/queue", api_queue),
        Route("/api/devices/{device:path}", api_device),
        Route("/api/findings", api_findings),
        Route("/api/findings/{fid}/thumbnail", api_thumbnail),
        Route("/api/findings/{fid}/grade", api_grade, methods=["POST"]),
        Route("/api/audit", api_audit),
        Route("/api/progress", api_progress),
        Route("/api/events", api_events),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: error_handler})
    app.state.cases = cases
    app.state.sessions = sessions
    return _Headers(app, tls, stopping)
