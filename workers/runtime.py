"""Starting and joining Ray for a scan: quiet, private, no telemetry.

Local by default: a Ray instance private to this scan, in a 0700 temporary directory removed
afterwards (Ray's session logs may name evidence files). With an address, the scan joins an
existing cluster; evidence paths must then be readable at the same path on every node.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from triage.errors import TriageError

# No usage reports, no update checks, no log de-duplication banners, normal priority.
QUIET_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_USAGE_STATS_PROMPT_ENABLED": "0",
    "RAY_DISABLE_DOCKER_CPU_WARNING": "1",
    "RAY_DEDUP_LOGS": "0",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
    "RAY_memory_monitor_refresh_ms": "250",
    # Ray runs workers at nice 15 by default; a scan is the machine's main job, and a
    # benchmark against md5sum must not start a nice level behind it
    "RAY_worker_niceness": "0",
}


def quiet_environment() -> None:
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)


@contextmanager
def ray_session(address: Optional[str] = None, workers: Optional[int] = None,
                dashboard: bool = False, object_store_bytes: Optional[int] = None,
                ) -> Iterator[dict]:
    """A Ray session for one scan. Yields a summary: cpus, gpus, nodes, address.

    If Ray is already initialised in this process (tests, notebooks), that session is used and
    left running.
    """
    quiet_environment()
    import ray

    if ray.is_initialized():
        yield _describe(ray)
        return
    temp_dir = None
    kwargs: dict = dict(include_dashboard=bool(dashboard), logging_level=logging.ERROR,
                        log_to_driver=False, configure_logging=True)
    if dashboard:
        kwargs["dashboard_host"] = "127.0.0.1"
    if address:
        kwargs["address"] = address
        _authenticate_to_cluster()
    else:
        # a private temp dir: short enough for Ray's unix sockets, 0700 from mkdtemp
        temp_dir = tempfile.mkdtemp(prefix="triage-ray-")
        kwargs["_temp_dir"] = temp_dir
        if workers:
            kwargs["num_cpus"] = int(workers)
        if object_store_bytes:
            kwargs["object_store_memory"] = int(object_store_bytes)
    try:
        ray.init(**kwargs)
    except ConnectionError as exc:
        hint = ("" if _auth_token_available() else
                "; if the cluster uses token authentication, put its token (`ray get-auth-token` "
                "on the head) in ~/.ray/auth_token here or in RAY_AUTH_TOKEN")
        raise TriageError(f"cannot join the Ray cluster at {address}: "
                          f"{str(exc).splitlines()[0]}{hint}") from None
    except Exception as exc:   # noqa: BLE001 - Ray raises many kinds; the user needs one line
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)
        raise TriageError(f"cannot start Ray: {str(exc).splitlines()[0]}") from None
    try:
        yield _describe(ray)
    finally:
        if temp_dir:
            _kill_on_shutdown(ray)
        ray.shutdown()
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)


def _kill_on_shutdown(ray) -> None:
    """Makes `ray.shutdown` of a private instance kill its processes outright.

    Ray asks each process in turn to exit and gives it a second: its services do not honour
    SIGTERM promptly, so that is over a second at the end of every scan. A private instance
    holds nothing to save (results are in the case store, its directory is deleted next), so
    its processes are killed outright; the workers end themselves when their raylet goes."""
    node = getattr(ray._private.worker, "_global_node", None)
    if node is None or not callable(getattr(node, "kill_all_processes", None)):
        return
    own = node.kill_all_processes

    def kill_all_processes(check_alive: bool = True, allow_graceful: bool = False,
                           wait: bool = False):
        return own(check_alive=False, allow_graceful=False, wait=wait)

    node.kill_all_processes = kill_all_processes


def _auth_token_available() -> bool:
    """Whether Ray would find a cluster token here (its own sources, in its order)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return Path(os.environ["RAY_AUTH_TOKEN_PATH"]).is_file()
    return (Path.home() / ".ray" / "auth_token").is_file()


def _authenticate_to_cluster() -> None:
    """Send the token when there is one. `ray start` (2.60) turns token authentication on
    whenever a token exists on the head (a first local `ray.init` writes one), but a client
    given an explicit address only authenticates when RAY_AUTH_MODE says so; a cluster without
    authentication ignores the token."""
    if "RAY_AUTH_MODE" in os.environ or not _auth_token_available():
        return
    try:    # what ray.init does for address="auto"; it also refreshes Ray's cached config
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available)
    except ImportError:
        os.environ["RAY_AUTH_MODE"] = "token"
    else:
        maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _describe(ray) -> dict:
    res = ray.cluster_resources()
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return {"cpus": int(res.get("CPU", 0)), "gpus": int(res.get("GPU", 0)), "nodes": len(nodes),
            "address": ray.get_runtime_context().gcs_address}
