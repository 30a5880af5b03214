"""The review service's live feed (`/api/events`): each flag a scan raises, each change of a
case's devices, and each scan's end, as server-sent events.

The flags and the scan's end come from triage.flags.FlagFollower, the follow loop `triage flags
--follow` runs, so the page and the terminal say the same thing at the same moment. A case is
looked at again when its store changed (SQLite's data_version), and at least every
RECHECK_SECONDS, so a scan killed without writing its end is still reported as ended.
"""
from __future__ import annotations

import json
import time
from typing import Callable

from triage.flags import FlagFollower, ended_text
from triage.output import iso_time

RECHECK_SECONDS = 2.0


def sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


class LiveFeed:
    """One event stream's view of the served cases, from the moment it opened."""

    def __init__(self, cases, clock: Callable[[], float] = time.monotonic):
        self.cases, self.clock = list(cases), clock
        self.followers, self.versions, self.looked = {}, {}, {}
        for c in self.cases:
            fl = c.store.flags()
            self.followers[c.name] = FlagFollower(c.store, after_id=fl[-1][0] if fl else 0)
            self.versions[c.name] = c.version()
            self.looked[c.name] = clock()

    def messages(self) -> list[str]:
        """The events since the last call, as SSE messages: `flag`, `scan-ended` (its
        `message` is what `flags --follow` prints) and `progress` (device statuses)."""
        out = []
        for c in self.cases:
            version, now = c.version(), self.clock()
            changed = self.versions[c.name] != version
            if not changed and now - self.looked[c.name] < RECHECK_SECONDS:
                continue
            self.versions[c.name], self.looked[c.name] = version, now
            for what, item in self.followers[c.name].poll():
                if what == "flags":
                    out.extend(sse("flag", {"case": c.name, "id": fid, "code": f.code,
                                            "severity": f.severity, "device": f.device_id,
                                            "message": f.message,
                                            "raised_at": iso_time(f.raised_at)})
                               for fid, f in item)
                else:
                    out.append(sse("scan-ended", {"case": c.name, "run": item["id"],
                                                  "status": item.get("status"),
                                                  "ended": iso_time(item.get("ended")),
                                                  "message": ended_text(item)}))
            if changed:
                statuses = {d["id"]: d["status"] for d in c.store.devices()}
                out.append(sse("progress", {"case": c.name, "devices": statuses}))
        return out
