"""Shared fixtures. `synth_fleet` builds the small synthetic fleet once per test session."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

SYNTH_SEED = 7          # the seed `make demo` uses, so test failures reproduce with the demo fleet


@pytest.fixture(scope="session", autouse=True)
def triage_home(tmp_path_factory) -> Path:
    """A $TRIAGE_HOME of the session's own, set before any Ray starts (the model actors inherit
    it): the model precision cache and added models never touch the user's ~/.triage, and the
    cache is built once per session, as once per machine."""
    home = tmp_path_factory.mktemp("triage_home")
    before = os.environ.get("TRIAGE_HOME")
    os.environ["TRIAGE_HOME"] = str(home)
    yield home
    if before is None:
        os.environ.pop("TRIAGE_HOME", None)
    else:
        os.environ["TRIAGE_HOME"] = before


@pytest.fixture(scope="session", autouse=True)
def ray_token_left_as_found():
    """Tests that start Ray with a plain `ray.init` (as a notebook would) make Ray write its
    token to ~/.ray/auth_token, 0644 in a 0755 folder, which scans never do
    (workers/runtime.py). A machine that had no token before the suite has none after it."""
    folder = Path.home() / ".ray"
    token = folder / "auth_token"
    had_folder, had_token = folder.exists(), token.exists()
    yield
    if not had_token:
        token.unlink(missing_ok=True)
    if not had_folder:
        try:
            folder.rmdir()
        except OSError:         # something else of Ray's is in it now: left alone
            pass


@pytest.fixture(scope="session")
def synth_fleet(tmp_path_factory) -> Path:
    """Folder of a six-device small fleet (`triage synth --devices 6 --seed 7`): devices/,
    alert.vics.json, nsrl.db, alert.pdq.txt, alert.phash.txt, context.csv, truth.json."""
    from triage.synth import build_fleet

    out = tmp_path_factory.mktemp("synth_fleet")
    build_fleet(out, devices=6, seed=SYNTH_SEED, size="small")
    return out


@pytest.fixture(scope="session")
def synth_truth(synth_fleet) -> dict:
    """truth.json of `synth_fleet`, parsed."""
    return json.loads((synth_fleet / "truth.json").read_text())


@pytest.fixture(scope="session")
def review_case(tmp_path_factory, synth_fleet, synth_truth) -> dict:
    """The case the review-service tests share: the fleet plus hostile.raw (markup in file
    names, exhibit and notes), scanned by `triage scan` with the default model; late.raw is
    built but left for the live-update test to scan. Users boss (supervisor), exa (examiner)
    and inv (investigator) are added with `triage users add` into its own TRIAGE_HOME."""
    import reviewcase as rc

    work = tmp_path_factory.mktemp("review")
    hostile, late = rc.build_images(work, SYNTH_SEED)
    context = rc.context_file(synth_fleet, work / "context.csv", [
        {"evidence": hostile.name, "exhibit": rc.HOSTILE_EXHIBIT, "suspect": "<u>S</u>",
         "access_to_children": "none", "custody_deadline": "2026-12-30", "notes": rc.HOSTILE_NOTES},
        {"evidence": late.name, "exhibit": "EX/late", "suspect": "L", "access_to_children": "none",
         "custody_deadline": "", "notes": ""}])
    case = work / "case"
    evidence = [str(synth_fleet / d["evidence"]) for d in synth_truth["devices"]] + [str(hostile)]
    scan = rc.triage("scan", "--case", str(case), "--json", "--context", str(context),
                     "--model", "default", *rc.hashset_args(synth_fleet, synth_truth), *evidence,
                     timeout=600)
    assert scan.returncode == 0, scan.stderr
    home = work / "home"
    for name, password in rc.PASSWORDS.items():
        added = rc.triage("users", "add", name, "--role", rc.ROLES[name], "--password-stdin",
                          env={"TRIAGE_HOME": str(home)}, stdin=password + "\n")
        assert added.returncode == 0, added.stderr
    return {"case": case, "home": home, "late": late, "context": context, "hostile": hostile,
            "fleet": synth_fleet, "truth": synth_truth}


@pytest.fixture(scope="session")
def review_server(review_case):
    """`triage serve` on the shared case, on a free loopback port; its base URL."""
    import reviewcase as rc

    port = rc.free_port()
    proc = rc.start_server(review_case["case"], review_case["home"], port)
    yield f"http://127.0.0.1:{port}"
    rc.stop_server(proc)


@pytest.fixture(scope="session")
def cli_case(tmp_path_factory, synth_fleet, synth_truth) -> dict:
    """The CLI-convention tests' case: dev01 (suspect lives with children), dev02 (the same
    content, suspect without access), dev04 (a locked BitLocker volume) and dev05 (clean),
    scanned in full with the fleet's VICS
    and NSRL sets and its context, through the `triage` entry point. Tests that change a case
    work on a copy (clirun.copy_case)."""
    from clirun import fleet_paths, triage

    p = fleet_paths(synth_fleet, synth_truth)
    case = tmp_path_factory.mktemp("cli") / "case"
    done = triage("scan", "--case", case, "-q", "--mode", "full", "--case-ref", "OP-ELM/42",
                  "--hashset", p["alert_vics"], "--hashset", p["nsrl"], "--context", p["context"],
                  p["dev01"], p["dev02"], p["dev04"], p["dev05"])
    assert done.returncode == 0, done.stderr
    return {"case": case, "paths": p, "scan": done}
