"""Run the review service on uvicorn: loopback by default, TLS or an explicit opt-out elsewhere,
a clean stop on SIGTERM or Ctrl-C (uvicorn's own signal handling; event streams end at once)."""
from __future__ import annotations

import ipaddress
import os
import signal
from pathlib import Path
from typing import Callable, Optional

from triage.errors import TriageError

GRACEFUL_SECONDS = 3
KEEP_ALIVE_SECONDS = 30     # a reviewer's browser reuses its connection between clicks


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_transport(host: str, cert: Optional[str], key: Optional[str],
                    insecure_http: bool) -> Optional[str]:
    """Refuses a non-loopback host without TLS unless asked; returns a warning to print."""
    if bool(cert) != bool(key):
        raise TriageError("give both --cert and --key (PEM files) for TLS")
    for label, path in (("--cert", cert), ("--key", key)):
        if path and not Path(path).is_file():
            raise TriageError(f"{label} {path}: no such file")
    if cert or is_loopback(host):
        return None
    if not insecure_http:
        raise TriageError(f"--host {host} is not loopback: serve with --cert and --key (TLS), or "
                          "give --insecure-http to send passwords and pictures unencrypted")
    return (f"warning: serving on {host} over plain HTTP (--insecure-http): passwords, session "
            "cookies and pictures cross the network unencrypted; use --cert/--key")


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, except that a SIGTERM or Ctrl-C after the graceful shutdown ends
        the process normally (exit 0, "stopped") instead of being raised again at it."""

        def handle_exit(self, sig, frame) -> None:
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True

    return Server


def serve(case_dirs: list[Path], *, host: str = "127.0.0.1", port: int = 8765,
          cert: Optional[str] = None, key: Optional[str] = None, insecure_http: bool = False,
          users_path: Optional[str] = None, say: Callable[[str], None] = print) -> None:
    import uvicorn

    from triage.review.app import create_app

    _Server = _server_class()
    from triage.review.cases import Cases
    from triage.review.users import UserDB

    warning = check_transport(host, cert, key, insecure_http)
    if warning:
        say(warning)
    users = UserDB(users_path)
    if not users.list():
        say(f"warning: no users in {users.path} yet; add one with "
            "`triage users add NAME --role supervisor`")
    cases = Cases(case_dirs)
    holder: dict = {}
    app = create_app(cases, users, tls=bool(cert),
                     stopping=lambda: bool(holder.get("server") and holder["server"].should_exit))
    config = uvicorn.Config(app, host=host, port=port, ssl_certfile=cert, ssl_keyfile=key,
                            log_level=os.environ.get("TRIAGE_SERVE_LOG", "warning"),
                            timeout_graceful_shutdown=GRACEFUL_SECONDS, lifespan="off",
                            timeout_keep_alive=KEEP_ALIVE_SECONDS,
                            server_header=False, proxy_headers=False)
    server = _Server(config)
    holder["server"] = server
    scheme = "https" if cert else "http"
    say(f"serving {len(cases.by_name)} case(s) ({', '.join(cases.by_name)}) on "
        f"{scheme}://{host}:{port}/  (Ctrl-C or SIGTERM stops)")
    try:
        server.run()
    finally:
        cases.close()
        users.close()
    say("stopped")
