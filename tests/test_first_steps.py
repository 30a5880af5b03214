"""Issue 18, point 12: after `make demo` the commands the README and the tool print work as
printed: `make demo` installs `triage` on PATH, and where it cannot, the hints name the path
the tool was started by."""
from __future__ import annotations

import os
import subprocess

from clirun import ROOT


def make_command(bin_dir) -> subprocess.CompletedProcess:
    # only the `command` target: the rest of `make demo` (Debian packages, the venv) is setup
    return subprocess.run(["make", "-s", "command", f"BIN_DIR={bin_dir}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_make_demo_installs_a_triage_command_on_path(tmp_path):
    demo = subprocess.run(["make", "-pn", "demo"], cwd=ROOT, capture_output=True, text=True)
    assert any(line.startswith("demo:") and "command" in line for line in demo.stdout.splitlines())
    bin_dir = tmp_path / "bin"
    done = make_command(bin_dir)
    assert done.returncode == 0 and f"installed {bin_dir}/triage" in done.stdout, done
    wrapper = bin_dir / "triage"
    assert os.access(wrapper, os.X_OK) and str(ROOT / ".venv" / "bin" / "triage") in wrapper.read_text()
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    version = subprocess.run(["triage", "--version"], env=env, capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("triage, version")
    assert make_command(bin_dir).returncode == 0                     # again: replaced, fine


def test_someone_elses_triage_is_left_alone(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "triage").write_text("#!/bin/sh\necho other\n")
    done = make_command(bin_dir)
    assert done.returncode == 0 and "not ours; left alone" in done.stdout
    assert (bin_dir / "triage").read_text() == "#!/bin/sh\necho other\n"


def test_hints_name_a_command_that_works_when_triage_is_not_on_path(cli_case, tmp_path):
    script = ROOT / ".venv" / "bin" / "triage"
    env = {**os.environ, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    scan = subprocess.run([str(script), "scan", "--case", str(tmp_path / "c"), "-q", "--hashset",
                           str(cli_case["paths"]["alert_vics"]), str(cli_case["paths"]["dev05"])],
                          env=env, capture_output=True, text=True, timeout=300)
    assert scan.returncode == 0, scan.stderr
    (hint,) = [line for line in scan.stdout.splitlines() if line.startswith("next: ")]
    command = hint[len("next: "):]
    assert command.startswith(str(script))
    rerun = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True)
    assert rerun.returncode == 0 and "dev05.raw" in rerun.stdout
