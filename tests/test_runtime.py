"""The private Ray a scan starts: only the processes a scan uses, Ray's own code left as found."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ray
from clirun import triage

ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture
def no_ray():
    # an earlier test that leaves Ray running in the test process is a defect of its own
    assert not ray.is_initialized(), "a Ray session is already running in this process"
    yield
    if ray.is_initialized():
        ray.shutdown()


def test_private_session_starts_no_dashboard_or_monitors_and_runs_tasks(no_ray, monkeypatch):
    from ray._private import node as ray_node, services

    # a stray RAY_ADDRESS must not turn the default private instance into a join
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")

    from workers.runtime import _children, ray_session

    originals = (ray_node.Node.start_api_server, ray_node.Node.start_monitor,
                 ray_node.Node.start_log_monitor, services.get_node)
    with ray_session(workers=1) as info:
        started = set(ray._private.worker._global_node.all_processes)

        @ray.remote(num_cpus=1)
        def square(x):
            return x * x

        assert ray.get([square.remote(i) for i in range(4)]) == [0, 1, 4, 9]
        assert info["cpus"] == 1 and info["nodes"] == 1
        raylet = ray._private.worker._global_node.all_processes["raylet"][0].process.pid
        children = _children(raylet)            # its agents and the worker
    assert len(children) >= 3
    # nothing of the instance outlives the session (agents used to linger for a minute);
    # SIGKILL lands a moment after kill() returns
    deadline = time.monotonic() + 5
    while [pid for pid in children if _alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in children if _alive(pid)]
    # what a scan needs is there; the dashboard's API server and both monitors are not
    assert {"gcs_server", "raylet"} <= started
    assert not started & {"dashboard", "monitor", "log_monitor"}
    # the start-up shortcuts were for that one start: Ray's own functions are back
    assert (ray_node.Node.start_api_server, ray_node.Node.start_monitor,
            ray_node.Node.start_log_monitor, services.get_node) == originals
    assert not ray.is_initialized()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"    # a zombie is dead
    except OSError:
        return False


def test_wait_for_node_polls_until_alive_and_gives_up_quietly(monkeypatch):
    import time

    import ray._raylet

    from workers.runtime import _wait_for_node

    calls = []

    class Gcs:
        def __init__(self, address):
            self.address = address

        def get_all_node_info(self, **kwargs):
            calls.append(kwargs["state_filter"])
            return {"node": object()} if len(calls) >= 3 else {}

    monkeypatch.setattr(ray._raylet, "GcsClient", Gcs)
    _wait_for_node("127.0.0.1:1", "ab" * 28, timeout=5, tick=0.01)
    assert len(calls) == 3                      # returned on the first poll that saw it alive

    calls.clear()
    monkeypatch.setattr(Gcs, "get_all_node_info", lambda self, **kw: calls.append(1) or {})
    t = time.monotonic()
    _wait_for_node("127.0.0.1:1", "ab" * 28, timeout=0.2, tick=0.01)
    assert 0.2 <= time.monotonic() - t < 2 and len(calls) > 3    # never alive: gives up

    def refuse(self, **kwargs):
        raise ConnectionError("no GCS")

    monkeypatch.setattr(Gcs, "get_all_node_info", refuse)
    t = time.monotonic()
    _wait_for_node("127.0.0.1:1", "ab" * 28, timeout=5)    # trouble: leaves the wait to Ray
    assert time.monotonic() - t < 1


def test_task_event_log_is_off_without_the_dashboard(monkeypatch):
    from workers.runtime import quiet_environment
    key = "RAY_task_events_report_interval_ms"
    monkeypatch.delenv(key, raising=False)
    quiet_environment(dashboard=True)
    assert key not in os.environ          # the dashboard shows tasks: Ray's default stays
    quiet_environment()
    assert os.environ[key] == "0"         # nothing else reads it, and its flush held shutdown


def test_an_unreachable_cluster_is_not_judged_tokenless():
    from workers.runtime import _cluster_wants_token

    # nothing listens: the token is sent as before, and ray.init reports the address
    assert _cluster_wants_token("127.0.0.1:1", timeout=1) is True


def test_private_instance_files_are_ours_alone(no_ray, tmp_path, monkeypatch):
    """Ray makes its temporary directory 0777 and writes its token to ~/.ray 0644: the scan's
    instance lives inside a 0700 directory of ours, with a token of its own, 0600."""
    import stat

    from workers.runtime import OWNER_FILE, PRIVATE_PREFIX, ray_session

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    with ray_session(workers=1):
        token = Path(os.environ["RAY_AUTH_TOKEN_PATH"])
        root = token.parent
        assert root.name.startswith(PRIVATE_PREFIX)
        assert stat.S_IMODE(root.stat().st_mode) == 0o700
        assert stat.S_IMODE(token.stat().st_mode) == 0o600 and len(token.read_text()) == 64
        assert json.loads((root / OWNER_FILE).read_text())["pid"] == os.getpid()
        session = Path(ray._private.worker._global_node.get_session_dir_path())
        assert root in session.parents             # Ray's files are all inside ours

        @ray.remote(num_cpus=1)
        def pid():
            return os.getpid()

        assert ray.get(pid.remote()) != os.getpid()   # the workers authenticated with it
    assert not root.exists()
    assert "RAY_AUTH_TOKEN_PATH" not in os.environ    # the environment is as it was
    assert not (home / ".ray" / "auth_token").exists()
    # and a plain ray.init afterwards (tests, notebooks) uses Ray's usual token again (the real
    # home's: the token Ray's driver caches must not be one from this test's home)
    from workers.runtime import _reload_token
    monkeypatch.undo()
    _reload_token()
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        assert ray.get(pid.remote()) != os.getpid()
    finally:
        ray.shutdown()
        _reload_token()


def _sleeper(argv_marker: str) -> subprocess.Popen:
    """A process whose command line names a directory, as Ray's GCS and raylet do. Returned
    once /proc shows that command line: Popen returns as soon as exec begins, and for a moment
    after that the new command line is not there yet (a loaded machine lost the race once)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", argv_marker])
    deadline = time.monotonic() + 10
    while argv_marker.encode() not in Path(f"/proc/{proc.pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline, "the sleeper never showed its command line"
        time.sleep(0.01)
    return proc


def test_stale_private_directories_and_their_processes_are_reaped(tmp_path):
    from workers.runtime import OWNER_FILE, PRIVATE_PREFIX, _start_ticks, reap_stale

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    # left by a scan that was SIGKILLed: its owner is gone, an agent of it still runs
    stale = tmp_path / f"{PRIVATE_PREFIX}dead"
    (stale / "r" / "logs").mkdir(parents=True)
    (stale / OWNER_FILE).write_text(json.dumps({"pid": dead_pid, "start": 1}))
    agent = _sleeper(str(stale / "r" / "session_x"))
    # a running scan's, and one being set up this moment (no owner file yet): both kept
    live = tmp_path / f"{PRIVATE_PREFIX}live"
    live.mkdir()
    (live / OWNER_FILE).write_text(json.dumps({"pid": os.getpid(),
                                               "start": _start_ticks(os.getpid())}))
    young = tmp_path / f"{PRIVATE_PREFIX}young"
    young.mkdir()
    # an older layout without an owner file, whose services are gone: removed
    old = tmp_path / f"{PRIVATE_PREFIX}old"
    old.mkdir()
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    # not ours to touch: another prefix, and a link posing as one of ours
    other = tmp_path / "somebody-else"
    other.mkdir()
    (tmp_path / f"{PRIVATE_PREFIX}link").symlink_to(other)
    # a pid reused by another process: the recorded start time differs
    reused = tmp_path / f"{PRIVATE_PREFIX}reused"
    reused.mkdir()
    (reused / OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "start": 1}))
    try:
        removed = reap_stale(str(tmp_path))
        assert sorted(removed) == sorted(str(p) for p in (stale, old, reused))
        assert agent.wait(timeout=5) == -9               # the orphaned agent is gone too
    finally:
        if agent.poll() is None:
            agent.kill()
    assert live.exists() and young.exists() and other.exists()
    assert (tmp_path / f"{PRIVATE_PREFIX}link").is_symlink()


@pytest.mark.parametrize("env, allowed", [
    ({}, False),
    ({"RAY_USE_TLS": "1"}, False),                         # TLS on, but no certificates
    ({"RAY_USE_TLS": "1", "RAY_TLS_SERVER_CERT": "c", "RAY_TLS_SERVER_KEY": "k",
      "RAY_TLS_CA_CERT": "ca"}, True),
])
def test_a_key_is_sent_to_a_cluster_only_over_tls(monkeypatch, env, allowed):
    from triage.errors import TriageError
    from workers.runtime import check_key_transport

    for key in ("RAY_USE_TLS", "RAY_TLS_SERVER_CERT", "RAY_TLS_SERVER_KEY", "RAY_TLS_CA_CERT"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    check_key_transport(None, True)                        # a private instance: this machine
    check_key_transport("10.0.0.1:6379", False)            # no key: nothing to protect
    check_key_transport("10.0.0.1:6379", True, allow_plaintext=True)
    if allowed:
        check_key_transport("10.0.0.1:6379", True)
    else:
        with pytest.raises(TriageError, match="--allow-plaintext-key"):
            check_key_transport("10.0.0.1:6379", True)


def test_scan_refuses_a_plaintext_key_before_joining(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_USE_TLS", raising=False)
    evidence = tmp_path / "e.raw"
    evidence.write_bytes(b"\0" * 4096)
    key = "123456-123456-123456-123456-123456-123456-123456-123456"
    out = subprocess.run([str(ROOT / ".venv/bin/triage"), "scan", "--case", str(tmp_path / "c"),
                          "--address", "127.0.0.1:1", "--recovery-key", key, str(evidence)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: refusing to send a recovery key")
    assert key not in out.stderr + out.stdout


# Ray's private names the start-up and shutdown rely on (workers/runtime.py). Ray is pinned;
# an upgrade that moves one must fail here, not quietly slow every scan or leave processes.
PRIVATE_RAY_NAMES = {
    "ray._private.node.Node": ("start_api_server", "start_monitor", "start_log_monitor",
                               "kill_all_processes", "get_session_dir_path"),
    "ray._private.services": ("get_node",),
    "ray._private.worker": ("_global_node",),
    "ray._raylet": ("GcsClient", "NodeID", "AuthenticationTokenLoader"),
    "ray.core.generated.gcs_pb2": ("GcsNodeInfo",),
    "ray.core.generated.gcs_service_pb2": ("GetAllNodeInfoRequest",),
    "ray._private.authentication.authentication_token_setup": (
        "maybe_enable_token_auth_if_token_available",),
}


def test_ray_is_the_pinned_version_and_its_patched_internals_are_there():
    import importlib
    import inspect
    import re

    pinned = re.search(r'"ray==([^"]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert ray.__version__ == pinned
    for dotted, names in PRIVATE_RAY_NAMES.items():
        if dotted.endswith(".Node"):
            obj = importlib.import_module(dotted.rsplit(".", 1)[0]).Node
        else:
            obj = importlib.import_module(dotted)
        missing = [n for n in names if not hasattr(obj, n)]
        assert not missing, f"Ray {ray.__version__} has no {dotted}.{missing}"
    from ray._private.node import Node
    params = inspect.signature(Node.kill_all_processes).parameters
    assert {"check_alive", "allow_graceful", "wait"} <= set(params)
    from ray._private import services
    assert list(inspect.signature(services.get_node).parameters)[:2] == ["gcs_address", "node_id"]


LOWER_AND_SCAN = """
import json, os, sys
from workers.runtime import lower_priority, ray_session
before = os.nice(0)
target = min(19, before + 3)
kept = lower_priority(0)                  # never raises a priority back up
now = lower_priority(target)
import ray

@ray.remote
def worker_niceness():
    return os.nice(0)

with ray_session(workers=1) as info:
    worker = ray.get(worker_niceness.remote())
print(json.dumps({"before": before, "kept": kept, "target": target, "now": now,
                  "worker": worker, "reported": info["niceness"]}))
"""


def test_a_scan_at_lower_priority_runs_its_local_workers_at_it():
    """`triage scan --nice N`: the driver lowers its priority before Ray starts, and the local
    instance's workers (started by the raylet the driver spawned) run at it too, so a review
    service on the same machine wins the CPU (bench/serve.py)."""
    done = subprocess.run([sys.executable, "-c", LOWER_AND_SCAN], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["kept"] == got["before"]
    assert got["now"] == got["target"] == got["reported"] == got["worker"]


def test_scan_nice_is_a_bounded_option():
    bad = triage("scan", "--nice", "25", "--case", "unused", "nothing.dd")
    assert bad.returncode == 2 and "--nice" in bad.stderr
    assert "--nice" in triage("scan", "--help").stdout


def test_a_scan_collects_less_often_and_gives_the_driver_its_settings_back():
    """The driver collects every GC_YOUNG_THRESHOLD allocations while a scan runs, and only
    then: a test or notebook that runs a scan keeps its own settings and frozen objects."""
    import gc

    from workers.runtime import GC_YOUNG_THRESHOLD, collecting_less
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    with collecting_less():
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *before[1:])
        assert gc.get_freeze_count() > frozen
    assert gc.get_threshold() == before and gc.get_freeze_count() == frozen
    with pytest.raises(KeyboardInterrupt):          # a stopped scan gives them back too
        with collecting_less():
            raise KeyboardInterrupt
    assert gc.get_threshold() == before
    gc.freeze()                                     # a process that froze objects of its own
    try:
        mine = gc.get_freeze_count()
        with collecting_less():
            assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD
        assert gc.get_freeze_count() == mine and gc.get_threshold() == before
    finally:
        gc.unfreeze()


def test_a_worker_process_collects_less_once_it_has_its_context():
    code = ("import gc; from workers.batch import Backend; from workers.tasks import "
            "worker_context; print(gc.get_threshold()[0]); worker_context(Backend()); "
            "print(gc.get_threshold()[0])")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    from workers.runtime import GC_YOUNG_THRESHOLD
    assert done.stdout.split() == [str(gc_default()), str(GC_YOUNG_THRESHOLD)]


def gc_default() -> int:
    """CPython's own young-generation threshold, as a fresh interpreter has it."""
    done = subprocess.run([sys.executable, "-c", "import gc; print(gc.get_threshold()[0])"],
                          capture_output=True, text=True, timeout=30)
    return int(done.stdout)
