"""Where triage keeps what outlives a case on this machine: $TRIAGE_HOME, default ~/.triage
(hash sets, the model precision cache, review users, internal error logs, video spool)."""
from __future__ import annotations

import os
from pathlib import Path


def triage_home() -> Path:
    return Path(os.environ.get("TRIAGE_HOME") or "~/.triage").expanduser()
