"""Starting and joining Ray for a scan: quiet, private, no telemetry.

Local by default: a Ray instance private to this scan. Its files live in a 0700 directory of
ours (Ray makes its own temporary directory 0777, and its session logs may name evidence
files), it authenticates with a token made for this scan and kept 0600 in that directory (Ray
would otherwise write one to ~/.ray, world-readable), and the directory is removed afterwards.
What a killed scan leaves behind (the directory, Ray's agents) the next scan removes.

With an address, the scan joins an existing cluster; evidence paths must then be readable at the
same path on every node, and a recovery key or password is sent to the workers only over TLS.
"""
from __future__ import annotations

import gc
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from triage.errors import Terminated, TriageError

# the prefix of every private instance's directory under the system's temporary directory
PRIVATE_PREFIX = "triage-ray-"
OWNER_FILE = "owner.json"

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


# Without the dashboard nothing reads Ray's per-task event log, and flushing it held every
# driver's shutdown for a quarter of a second.
NO_DASHBOARD_ENV = {"RAY_task_events_report_interval_ms": "0"}


# A scan's processes make and drop millions of small records (a walk's, a batch's, their store
# rows). CPython's default young-generation threshold (a collection every 700 net allocations)
# cost a batch worker a tenth of its time on small files, for garbage that is almost never
# cyclic. At 20,000 the collections still walked each batch's live rows (a batch of 8,192
# small files holds about 80,000 tracked objects until it is done): an eighth of a worker's
# time in one process (0.43 of 3.86 s on 290k files), and 43.0 -> 40.7 core-seconds for the
# whole 1M-file scan at 100,000 (interleaved runs), where a batch frees what it made before
# the count is reached. Objects alive at that point (imports, open stores) are frozen out of
# later full collections.
GC_YOUNG_THRESHOLD = 100_000


def collect_less(freeze: bool = True) -> tuple[int, int, int]:
    """Sets this process's collection thresholds for a scan; returns the ones before."""
    before = gc.get_threshold()
    if freeze:
        gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *before[1:])
    return before


@contextmanager
def collecting_less() -> Iterator[None]:
    """collect_less() for a block of a longer-lived process (the scan's driver, which may be a
    test or a notebook): its thresholds are as before once it ends, and so are its frozen
    objects (frozen here only when it had frozen none itself: unfreezing is all or nothing)."""
    ours = gc.get_freeze_count() == 0
    before = collect_less(freeze=ours)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        if ours:
            gc.unfreeze()


def quiet_environment(dashboard: bool = False) -> None:
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    if not dashboard:
        for key, value in NO_DASHBOARD_ENV.items():
            os.environ.setdefault(key, value)


def lower_priority(niceness: int) -> int:
    """Run this process, and every process it starts from now on (a local Ray instance's
    raylet and workers inherit it), at least `niceness` (0-19). Returns the niceness now.

    A scan is batch work: on a workstation that also serves the review service, or the
    examiner's desktop, those should win the CPU, and on an idle machine nice costs nothing.
    Niceness only ever goes up without privileges, so a value below the current one is kept
    as it is. Workers of a cluster joined with --address keep their own priority."""
    current = os.nice(0)
    wanted = max(0, min(19, int(niceness)))
    if wanted > current:
        try:
            current = os.nice(wanted - current)
        except OSError:
            pass        # not allowed here (a container's seccomp policy): run as we are
    return current


@contextmanager
def ray_session(address: Optional[str] = None, workers: Optional[int] = None,
                dashboard: bool = False, object_store_bytes: Optional[int] = None,
                ) -> Iterator[dict]:
    """A Ray session for one scan. Yields a summary: cpus, gpus, nodes, address.

    If Ray is already initialised in this process (tests, notebooks), that session is used and
    left running.
    """
    quiet_environment(dashboard)
    import ray

    if ray.is_initialized():
        yield _describe(ray)
        return
    temp_dir = None
    kwargs: dict = dict(include_dashboard=bool(dashboard), logging_level=logging.ERROR,
                        log_to_driver=False, configure_logging=True)
    if dashboard:
        kwargs["dashboard_host"] = "127.0.0.1"
    private = None
    if address:
        if _answers(address) is False:
            # ray.init would retry for minutes, printing a warning every few seconds
            raise TriageError(f"cannot join the Ray cluster at {address}: nothing answers there "
                              "(is `ray start --head` running, and is the port right?)")
        kwargs["address"] = address
        _authenticate_to_cluster(address)
    else:
        reap_stale()
        # ours is 0700 (mkdtemp); Ray's own directory inside it is 0777 but cannot be reached.
        # Short enough for Ray's unix socket paths (108 bytes).
        temp_dir = tempfile.mkdtemp(prefix=PRIVATE_PREFIX)
        _write_owner(Path(temp_dir))
        kwargs["_temp_dir"] = os.path.join(temp_dir, "r")
        private = _private_token(Path(temp_dir))
        # always a new instance: a RAY_ADDRESS left in the environment would otherwise join
        # some other cluster (or fail on --workers); joining one is what --address is for
        kwargs["address"] = "local"
        if workers:
            kwargs["num_cpus"] = int(workers)
        if object_store_bytes:
            kwargs["object_store_memory"] = int(object_store_bytes)
    try:
        with _lean_private_start(ray, enabled=not address and not dashboard):
            ray.init(**kwargs)
    except ConnectionError as exc:
        _restore_env(private)
        hint = ("" if _auth_token_available() else
                "; if the cluster uses token authentication, put its token (`ray get-auth-token` "
                "on the head) in ~/.ray/auth_token here or in RAY_AUTH_TOKEN")
        raise TriageError(f"cannot join the Ray cluster at {address}: "
                          f"{str(exc).splitlines()[0]}{hint}") from None
    except Exception as exc:   # noqa: BLE001 - Ray raises many kinds; the user needs one line
        _restore_env(private)
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)
        raise TriageError(f"cannot start Ray: {str(exc).splitlines()[0]}") from None
    # ray.init installed the C++ core worker's SIGTERM handler, which prints a stack and exits
    # at once: a scan stopped by SIGTERM must end like one stopped by Ctrl-C instead
    previous = _terminate_like_interrupt()
    try:
        yield _describe(ray)
    finally:
        if temp_dir:
            _kill_on_shutdown(ray)
        ray.shutdown()
        _restore_env(private)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)


_TERMINATED = threading.Event()


def _terminate_like_interrupt():
    """Makes SIGTERM raise Terminated (a KeyboardInterrupt) in the main thread. Returns the
    handler it replaced, or None where signals cannot be set (not the main thread)."""
    def on_term(signum, frame):
        _TERMINATED.set()
        raise Terminated()
    _TERMINATED.clear()
    try:
        return signal.signal(signal.SIGTERM, on_term)
    except ValueError:      # not the main thread: leave signals to whoever owns it
        return None


def interrupt_exit_code(exc: KeyboardInterrupt) -> int:
    """143 for a scan that SIGTERM stopped, 130 for Ctrl-C. Told by the flag the handler
    sets, not only by the exception's type: Ray's waits turn whatever a signal handler raises
    into a plain KeyboardInterrupt, so a SIGTERM that came while the driver waited on Ray
    used to exit 130."""
    return 143 if isinstance(exc, Terminated) or _TERMINATED.is_set() else 130


def _private_token(root: Path) -> dict:
    """A token for this instance only, 0600 inside our 0700 directory, given to Ray through
    RAY_AUTH_TOKEN_PATH (the workers inherit it). Without it a local ray.init writes
    ~/.ray/auth_token 0644 and reuses it for every later instance. A token the user set
    themselves is left alone. Returns what to restore afterwards."""
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN")}
    if saved["RAY_AUTH_TOKEN"] or saved["RAY_AUTH_TOKEN_PATH"]:
        return {}
    path = root / "auth_token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32))
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(path)
    _reload_token()
    return saved


def _restore_env(saved: Optional[dict]) -> None:
    if not saved:
        return
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _reload_token()


def _reload_token() -> None:
    """The driver caches the first token it loads: make it read the environment again, so
    each instance in one process (tests, notebooks) presents its own token, and a later
    plain ray.init the usual one."""
    try:
        from ray._raylet import AuthenticationTokenLoader
        AuthenticationTokenLoader.instance().reset_cache()
    except (ImportError, AttributeError):   # pinned Ray has it (tests/test_runtime.py)
        pass


def _write_owner(root: Path) -> None:
    """Names the scan that owns a private directory, so a later scan can tell it was left by
    one that died (pid and the process's start time: pids are reused)."""
    pid = os.getpid()
    (root / OWNER_FILE).write_text(json.dumps({"pid": pid, "start": _start_ticks(pid)}))


def _start_ticks(pid: int) -> Optional[int]:
    """A process's start time in clock ticks since boot (Linux), None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _owner_alive(root: Path) -> bool:
    try:
        owner = json.loads((root / OWNER_FILE).read_text())
        pid, start = int(owner["pid"]), owner["start"]
    except (OSError, ValueError, KeyError, TypeError):
        # an older layout, one being set up this moment, or an owner that died writing it
        try:
            young = time.time() - root.stat().st_mtime < 60
        except OSError:
            return False
        return young or _ray_services_running(root)
    ticks = _start_ticks(pid)
    return ticks is not None and (start is None or ticks == start)


def _belongs(pid: int, root: str) -> tuple[bool, bool]:
    """Whether process `pid` is one of a private instance's (its command line or an open file
    lies in `root`), and whether it is one of Ray's services (GCS, raylet)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = fh.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return False, False
    service = "gcs_server" in argv or "raylet" in argv
    if root in argv:
        return True, service
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(root):
                    return True, service
            except OSError:
                continue
    except OSError:
        pass
    return False, service


def _instance_processes(root: Path) -> list[tuple[int, bool]]:
    """The processes of ours that belong to the private instance in `root`."""
    me, uid, out = os.getpid(), os.getuid(), []
    prefix = str(root) + os.sep
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return out
    for pid in pids:
        if pid == me:
            continue
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
        except OSError:
            continue
        mine, service = _belongs(pid, prefix)
        if mine:
            out.append((pid, service))
    return out


def _ray_services_running(root: Path) -> bool:
    return any(service for _, service in _instance_processes(root))


def reap_stale(tmp: Optional[str] = None) -> list[str]:
    """Removes what scans killed outright (SIGKILL, power loss) left in the temporary
    directory: their private directories and the Ray agents that outlive their raylet (they
    linger for over a minute). Only our own directories whose owner is gone; a running scan's
    are left alone. Returns the directories removed."""
    removed = []
    base = Path(tmp or tempfile.gettempdir())
    try:
        candidates = [p for p in base.iterdir() if p.name.startswith(PRIVATE_PREFIX)]
    except OSError:
        return removed
    uid = os.getuid()
    for root in candidates:
        try:
            st = root.lstat()
        except OSError:
            continue
        if not root.is_dir() or root.is_symlink() or st.st_uid != uid or _owner_alive(root):
            continue
        for pid, _ in _instance_processes(root):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        shutil.rmtree(root, ignore_errors=True)
        removed.append(str(root))
    return removed


def check_key_transport(address: Optional[str], has_key: bool,
                        allow_plaintext: bool = False) -> None:
    """A recovery key or password goes to the workers as a task argument. On a private
    instance that stays on this machine; on a cluster it crosses the network, so it is sent
    only when Ray's TLS is on or the user says plaintext is acceptable."""
    if not address or not has_key or allow_plaintext:
        return
    tls = os.environ.get("RAY_USE_TLS", "").strip().lower() in ("1", "true", "yes")
    if tls and all(os.environ.get(k) for k in ("RAY_TLS_SERVER_CERT", "RAY_TLS_SERVER_KEY",
                                                "RAY_TLS_CA_CERT")):
        return
    raise TriageError(
        "refusing to send a recovery key or password to the cluster at "
        f"{address} without TLS: anyone on that network could read it. Start the cluster and "
        "this scan with RAY_USE_TLS=1 and RAY_TLS_SERVER_CERT, RAY_TLS_SERVER_KEY and "
        "RAY_TLS_CA_CERT set (see the README's cluster section), scan on one machine without "
        "--address, or pass --allow-plaintext-key to accept the risk")


@contextmanager
def _lean_private_start(ray, enabled: bool) -> Iterator[None]:
    """Starts a private instance without the processes a scan never uses, and notices at once
    when its raylet is up.

    `ray.init` also starts the dashboard's API server (even with the dashboard off, and waits
    half a second for it), the autoscaler's monitor and the log monitor (which forwards worker
    logs, turned off here). On two cores each costs a Python start-up beside the raylet's own
    agents, and the wait for the raylet polls the GCS once a second: together 1-2 s of every
    scan's start. Ray's version is pinned; if its internals differ, Ray starts as usual."""
    try:
        from ray._private import node as ray_node, services
    except ImportError:
        enabled = False
    names = ("start_api_server", "start_monitor", "start_log_monitor")
    if not enabled or not all(callable(getattr(ray_node.Node, n, None)) for n in names) \
            or not callable(getattr(services, "get_node", None)):
        yield
        return
    saved = {n: getattr(ray_node.Node, n) for n in names}
    get_node = services.get_node

    def skip(self, *args, **kwargs):
        return None

    def get_node_soon(gcs_address, node_id):
        _wait_for_node(gcs_address, node_id)
        return get_node(gcs_address, node_id)

    for name in names:
        setattr(ray_node.Node, name, skip)
    services.get_node = get_node_soon
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(ray_node.Node, name, fn)
        services.get_node = get_node


def _wait_for_node(gcs_address: str, node_id: str, timeout: float = 30.0,
                   tick: float = 0.02) -> None:
    """Polls the GCS until the node is alive (Ray's own wait polls once a second). Any
    trouble here leaves the wait to Ray."""
    try:
        from ray._raylet import GcsClient, NodeID
        from ray.core.generated.gcs_pb2 import GcsNodeInfo
        from ray.core.generated.gcs_service_pb2 import GetAllNodeInfoRequest
        client = GcsClient(address=gcs_address)
        selector = [GetAllNodeInfoRequest.NodeSelector(node_id=NodeID.from_hex(node_id).binary())]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if client.get_all_node_info(timeout=5, node_selectors=selector,
                                        state_filter=GcsNodeInfo.GcsNodeState.ALIVE):
                return
            time.sleep(tick)
    except Exception:   # noqa: BLE001 - an optimisation only; Ray's wait still follows
        return


def _kill_on_shutdown(ray) -> None:
    """Makes `ray.shutdown` of a private instance kill its processes outright.

    Ray asks each process in turn to exit and gives it a second: its services do not honour
    SIGTERM promptly, so that is over a second at the end of every scan. A private instance
    holds nothing to save (results are in the case store, its directory is deleted next), so
    its processes are killed outright, the raylet's children (its agents and workers) too:
    orphaned agents otherwise lingered for up to a minute after the scan."""
    node = getattr(ray._private.worker, "_global_node", None)
    if node is None or not callable(getattr(node, "kill_all_processes", None)):
        return
    own = node.kill_all_processes

    def kill_all_processes(check_alive: bool = True, allow_graceful: bool = False,
                           wait: bool = False):
        children = [c for info in getattr(node, "all_processes", {}).get("raylet", ())
                    for c in _children(info.process.pid)]
        try:
            return own(check_alive=False, allow_graceful=False, wait=wait)
        finally:
            for pid in children:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:      # already gone
                    pass

    node.kill_all_processes = kill_all_processes


def _children(pid: int) -> list[int]:
    """The child processes of `pid` (Linux /proc; none where that is not available)."""
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                out += [int(c) for c in fh.read().split()]
    except (OSError, ValueError):
        pass
    return out


def _auth_token_available() -> bool:
    """Whether Ray would find a cluster token here (its own sources, in its order)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return Path(os.environ["RAY_AUTH_TOKEN_PATH"]).is_file()
    return (Path.home() / ".ray" / "auth_token").is_file()


def _answers(address: str, timeout: float = 5.0) -> Optional[bool]:
    """Whether something accepts connections at a HOST:PORT address (None for other forms,
    such as `auto`, which Ray resolves itself)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return None
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout):
            return True
    except OSError:
        return False


def _cluster_wants_token(address: str, timeout: float = 5.0) -> bool:
    """Whether the cluster at `address` refuses a client without a token. True when that
    cannot be told (unreachable: ray.init then says so)."""
    if not _answers(address, timeout):
        return True
    try:
        from ray._raylet import GcsClient
        GcsClient(address=address).get_all_node_info(timeout=timeout)
    except Exception:   # noqa: BLE001 - refused (Ray's auth error has no public type) or unknown
        return True
    return False


def _authenticate_to_cluster(address: str) -> None:
    """Send the token when there is one. `ray start` (2.60) turns token authentication on
    whenever a token exists on the head (a first local `ray.init` writes one), but a client
    given an explicit address only authenticates when RAY_AUTH_MODE says so; a cluster without
    authentication ignores the token."""
    if "RAY_AUTH_MODE" in os.environ or not _auth_token_available():
        return
    if not _cluster_wants_token(address):
        # a driver that authenticates refuses its workers' unauthenticated calls back: the
        # scan would wait for ever on a cluster started without a token
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
            "address": ray.get_runtime_context().gcs_address,
            # the driver's; a local instance's workers inherited it (see lower_priority)
            "niceness": os.nice(0)}
