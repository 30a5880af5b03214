"""Findings: the files of a case worth a human look, with everything known about each.

A finding is a file with an alert match (exact or near) or a SUSPECTED_NEW model score, joined
with its record, features, matches and scores. `triage show`, the exports and the report all read
findings, so they agree on what was found.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Optional

from triage.classify import KIND_ORDER, classify, frames_over, match_order, store_thresholds
from triage.flags import camera_indicators, file_provenance
from triage.records import Features, FileRecord, Match, Score, frame_list


@dataclass(frozen=True)
class Finding:
    record: FileRecord
    features: Features
    matches: tuple[Match, ...] = ()      # alert matches only, worst first
    scores: tuple[Score, ...] = ()
    suspected: bool = False               # model over threshold and no alert match
    indicators: tuple[str, ...] = field(default=())   # camera-original indicators
    # a video: the frames the finding rests on, ((number, seconds), ...): the frames of its
    # top match, or, when suspected, the frames over the model's thresholds
    frames: tuple = ()

    @property
    def is_video(self) -> bool:
        return bool(self.features.frames)

    @property
    def frame_text(self) -> str:
        """For people: the frame times behind a video finding ("" otherwise)."""
        return frame_list(self.frames) if self.frames else ""

    @property
    def key(self) -> str:
        return self.record.key

    @property
    def device_id(self) -> str:
        return self.record.prov.device_id

    @property
    def exact(self) -> tuple[Match, ...]:
        return tuple(m for m in self.matches if m.kind == "exact")

    @property
    def near(self) -> tuple[Match, ...]:
        return tuple(m for m in self.matches if m.kind != "exact")

    @property
    def kind(self) -> str:
        """exact, near or suspected: the strongest reason this file is here."""
        return "exact" if self.exact else "near" if self.matches else "suspected"

    @property
    def top(self) -> Optional[Match]:
        """The match that says most: exact before near, then severity, then distance."""
        return self.matches[0] if self.matches else None

    @property
    def category(self) -> str:
        return self.top.category if self.top else ""

    @property
    def deleted(self) -> bool:
        return not self.record.allocated

    def provenance(self) -> dict:
        return file_provenance(self.record, self.features)


def findings(store, device_id: Optional[str] = None,
             thresholds: Optional[dict] = None) -> list[Finding]:
    """The findings of one device (or of the whole case), exact first, then near, then suspected."""
    out: list[Finding] = []
    if thresholds is None:
        thresholds = store_thresholds(store)
    device_ids = [device_id] if device_id is not None else [d["id"] for d in store.devices()]
    for dev in device_ids:
        out.extend(_device_findings(store, dev, thresholds))
    return out


def _device_findings(store, device_id: str, thresholds: Optional[dict]) -> Iterator[Finding]:
    scores = store.scores(device_id)
    found = classify(store.matches(device_id), scores, thresholds)
    keys = found.keys()
    if not keys:
        return []
    scores_by_key: dict[str, list[Score]] = {}
    for s in scores:
        scores_by_key.setdefault(s.key, []).append(s)
    items = []
    for rec, feat in store.files(device_id, keys=keys):
        ms = found.alert_matches(rec.key)
        frames: tuple = ()
        if ms and ms[0].frames:
            frames = tuple(ms[0].frames)
        elif rec.key in found.suspected:
            frames = tuple((n, t) for s in found.suspected[rec.key]
                           for n, t, _ in frames_over(s, thresholds))
        items.append(Finding(record=rec, features=feat, matches=ms,
                             scores=tuple(scores_by_key.get(rec.key, ())),
                             suspected=rec.key in found.suspected,
                             indicators=tuple(camera_indicators(rec, feat)), frames=frames))
    items.sort(key=lambda f: (KIND_ORDER[f.kind], match_order(f.top) if f.top else (),
                              f.record.path))
    return items
