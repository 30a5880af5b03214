"""The private Ray a scan starts: only the processes a scan uses, Ray's own code left as found."""
from __future__ import annotations

import os
import time

import pytest

import ray


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
