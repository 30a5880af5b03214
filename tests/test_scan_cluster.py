"""`triage scan --address` on a two-node Ray cluster (ray.cluster_utils.Cluster, both nodes on
this machine) gives the same files and matches as a scan on a local Ray instance."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

import ray

from triage.store import CaseStore  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    from workers.runtime import quiet_environment
    quiet_environment()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    yield c
    if ray.is_initialized():
        ray.shutdown()
    c.shutdown()


def _args(case, fleet, truth, devices):
    hs = truth["hashsets"]
    args = ["scan", "--case", str(case), "--json", "--mode", "full", "--batch-files", "8"]
    for k in ("alert_vics", "nsrl", "alert_pdq", "alert_phash", "alert_vpdq"):
        args += ["--hashset", str(fleet / hs[k])]
    return args + [str(fleet / d["evidence"]) for d in devices]


def _results(case):
    with CaseStore(case, create=False) as store:
        files = sorted((r.key, r.allocated, f.md5, f.sha1, f.pdq, f.phash) for r, f in store.files())
        matches = sorted((m.key, m.kind, m.algorithm, m.set_name, m.value, m.distance)
                         for m in store.matches())
        coverage = sorted((c.device_id, c.key, c.reason, c.bytes_not_examined) for c in store.coverage())
    return files, matches, coverage


def test_two_node_cluster_matches_local(tmp_path, cluster, synth_fleet, synth_truth):
    # one device with exact and near matches (raw), one E01 with an encrypted volume
    devices = [next(d for d in synth_truth["devices"] if d["expect"]["exact_matches"]),
               next(d for d in synth_truth["devices"] if d["encrypted_volumes"])]
    local = subprocess.run([str(ROOT / ".venv/bin/triage"),
                            *_args(tmp_path / "local", synth_fleet, synth_truth, devices),
                            "--workers", "2"], capture_output=True, text=True, timeout=600)
    assert local.returncode == 0, local.stderr[-2000:]
    result = CliRunner().invoke(
        __import__("cli").main,
        _args(tmp_path / "cluster", synth_fleet, synth_truth, devices) + ["--address", cluster.address],
        catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["cluster"]["nodes"] == 2 and summary["cluster"]["cpus"] == 2
    local_results = _results(tmp_path / "local")
    assert local_results[1], "the local scan found no matches: nothing to compare"
    assert _results(tmp_path / "cluster") == local_results
