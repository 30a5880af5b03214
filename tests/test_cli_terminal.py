"""Issue 18, points 6 and 8: names and bytes one way, and every human view fits an 80-column
terminal without breaking words, captured through a pseudo-terminal as an officer sees it."""
from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import sys
import termios

from clirun import ROOT, triage
from triage.units import human_bytes

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
SPLIT = re.compile(r"[\s│┃┆║|]+")


def in_pty(*args, columns: int = 80, cwd=ROOT) -> str:
    """`triage ARGS` on a pseudo-terminal COLUMNS wide; what the terminal shows, without
    colour codes."""
    pid, fd = pty.fork()
    if pid == 0:                                       # the child: the command itself
        try:
            os.chdir(cwd)
            env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": str(columns),
                   "LINES": "50", "TERM": "xterm-256color"}
            env.pop("NO_COLOR", None)
            os.execve(sys.executable, [sys.executable, "-c", "from cli import run; run()",
                                       *map(str, args)], env)
        finally:
            os._exit(127)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:                                # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return ANSI.sub("", b"".join(chunks).decode("utf-8", "replace")).replace("\r\n", "\n")


def assert_fits(text: str, words: list[str], columns: int = 80) -> None:
    lines = text.splitlines()
    assert lines and max(len(line.rstrip()) for line in lines) <= columns, \
        [line for line in lines if len(line.rstrip()) > columns]
    shown = {t for line in lines for t in SPLIT.split(line) if t}
    broken = [w for w in words if len(w) < columns - 10 and w not in shown]
    assert not broken, broken


def words_of(*texts: str) -> list[str]:
    return [w for t in texts for w in SPLIT.split(t) if w]


def test_queue_fits_80_columns_in_a_terminal(cli_case):
    case = cli_case["case"]
    rows = json.loads(triage("queue", "--case", case, "--json").stdout)
    text = in_pty("queue", "--case", case)
    assert_fits(text, words_of(*(r for row in rows for r in row["reasons"]),
                               *(row["device"] for row in rows)))
    assert "dev04.E01" in text and "dev01.raw" in text


def test_show_fits_80_columns_in_a_terminal(cli_case):
    case = cli_case["case"]
    for device in ("dev01.raw", "dev04.E01"):
        data = json.loads(triage("show", device, "--case", case, "--json").stdout)
        text = in_pty("show", device, "--case", case)
        labels = [f"Category {f['category_label']}" for f in data["findings"]
                  if f["category_label"]]
        assert_fits(text, words_of(*data["reasons"], data["exhibit"], data["device"], *labels))
        assert "Scan runs" in text and "hashes stored {" not in text and "{'" not in text
        # the match column's lines are broken by the table, not shown as escaped newlines
        assert "\\x0a" not in text


def test_flags_and_scan_summary_fit_80_columns(cli_case, tmp_path):
    case = cli_case["case"]
    flags = json.loads(triage("flags", "--case", case, "--code", "CHILD_ACCESS",
                              "--code", "NOT_EXAMINED", "--json").stdout)
    text = in_pty("flags", "--case", case, "--code", "CHILD_ACCESS", "--code", "NOT_EXAMINED")
    assert_fits(text, words_of(*(f["message"] for f in flags)))
    # the case named as people type it, relative: the next: hint repeats it whole
    scan = in_pty("scan", "--case", "c", "-q", "--hashset", cli_case["paths"]["alert_vics"],
                  cli_case["paths"]["dev05"], cwd=tmp_path)
    assert "next: triage queue --case c" in scan
    assert_fits(scan, ["dev05.raw:", "complete;", "alert", "matches,", "next:"])


def test_a_volume_is_named_one_way_everywhere(cli_case):
    name = "volume 6 (BitLocker, 16 MiB at 44,040,192)"
    case = cli_case["case"]
    inspect = triage("inspect", cli_case["paths"]["dev04"], "--no-count")
    queue = json.loads(triage("queue", "--case", case, "--json").stdout)
    (dev04,) = [r for r in queue if r["device"] == "dev04.E01"]
    shown = triage("show", "dev04.E01", "--case", case)
    flags = triage("flags", "--case", case, "--device", "dev04.E01", "--format", "jsonl")
    for text in (inspect.stdout, " ".join(dev04["reasons"]), shown.stdout.replace("\n    ", " "),
                 flags.stdout):
        assert name in text
    # the locked volume says how to scan it again
    (reason,) = [r for r in dev04["reasons"] if r.startswith(name)]
    assert "--recovery-key" in reason and "--password" in reason


def test_bytes_use_one_formatter_whose_units_match_their_base():
    assert human_bytes(16 * 2**20) == "16 MiB"
    assert human_bytes(int(51.98 * 2**20)) == "52 MiB"          # not "52.0 MiB" beside "52 MiB"
    assert human_bytes(int(16.8 * 2**20)) == "16.8 MiB"         # binary value, binary unit
    assert human_bytes(1023) == "1023 bytes" and human_bytes(1) == "1 byte"


def test_show_is_case_insensitive_for_exhibits(cli_case):
    case = cli_case["case"]
    a = json.loads(triage("show", "syn/7/01", "--case", case, "--json").stdout)
    b = json.loads(triage("show", "DEV01.RAW", "--case", case, "--json").stdout)
    assert a["device"] == b["device"] == "dev01.raw"


def test_models_list_fits_80_columns_without_breaking_a_label():
    rows = json.loads(triage("models", "list", "--json").stdout)
    text = in_pty("models", "list")
    # a model of more than four labels is summed up ("81 labels: age_0 .. age_80")
    labels = [lab for row in rows if len(row.get("labels", [])) <= 4 for lab in row["labels"]]
    assert_fits(text, words_of(*labels, *(row["id"] for row in rows),
                               *(row.get("licence", "") for row in rows)))
    assert "minor_likelihood" in text
