"""The one finding classifier: which files are exact, near-only or suspected findings.

Flags, the rank and the findings list all ask this module, so a file is never an exact match to
one of them and a near match to another. The rule:

- exact: an exact (cryptographic hash) match against an alert set;
- near: a perceptual (PDQ/pHash) alert match within threshold, and no exact one;
- suspected: the model's scores reach every assessed threshold, and no alert match at all;
  for a video, at least VIDEO_MIN_FRAMES of its scored frames each do (one frame over the
  threshold is too often a blur or a transition to call a video new material).

Matches against ignore (known software) and watch sets are never findings.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional

from triage.records import Match, Score

EXACT, NEAR, SUSPECTED = "exact", "near", "suspected"
KIND_ORDER = {EXACT: 0, NEAR: 1, SUSPECTED: 2}

# A picture is SUSPECTED_NEW when every thresholded label its model reports reaches the
# threshold. open_nsfw gives "explicit" only; an age model adds "minor_likelihood".
DEFAULT_THRESHOLDS = {"explicit": 0.8, "minor_likelihood": 0.5}
VIDEO_MIN_FRAMES = 2


def category_labels_of(hashsets: Iterable[dict]) -> dict[str, dict[str, str]]:
    """set name -> raw category -> the label people see ("1" -> "A" for UK CAID, or the set's
    own `--category-map` labels), from hash-set provenance as scan runs record it: the set's
    category map when recorded, else its scheme's. Unknown sets keep raw categories."""
    try:
        from hashsets.model import SCHEMES
    except ImportError:   # a case read without the hash-set package: raw categories
        SCHEMES = {}
    out: dict[str, dict[str, str]] = {}
    for hs in hashsets:
        if not isinstance(hs, dict):
            continue
        cmap = hs.get("category_map") or SCHEMES.get(hs.get("scheme") or "", {})
        labels = {str(k): str(v.get("label", k)) if isinstance(v, dict) else str(v)
                  for k, v in cmap.items()}
        if labels:
            out.setdefault(str(hs.get("name", "")), {}).update(labels)
    return out


def category_label(labels: Optional[dict], set_name: str, raw) -> str:
    """The one label of a set's raw category, wherever a person reads it (flags, the queue,
    `show`, the report, the review service, CSV `category_label`, VICS and CASE text): the
    set's own `--category-map` label or its scheme's ("1" -> "A" for UK CAID), else the raw
    value. `labels`: category_labels_of. Empty for no category."""
    if raw is None or str(raw) == "":
        return ""
    return (labels or {}).get(set_name, {}).get(str(raw), str(raw))


def category_text(labels: Optional[dict], set_name: str, raw) -> str:
    """A category in a sentence: "Category A" (category_label); empty for no category."""
    label = category_label(labels, set_name, raw)
    return f"Category {label}" if label else ""


def score_text(values: dict) -> str:
    """A model's outputs for people: "explicit 0.91, faces 2, minor_likelihood 0.12". Counts
    (integers, and the face count however the model typed it) print as integers; labels not
    assessed are left out."""
    out = []
    for k, v in sorted(values.items()):
        n = _number(v)
        if n is None:
            continue
        count = isinstance(v, int) or (k == "faces" and n == int(n))
        out.append(f"{k} {int(n)}" if count else f"{k} {n:.2f}")
    return ", ".join(out)


def _number(value) -> Optional[float]:
    """A score value as a float; None (and NaN) mean the label was not assessed."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if value != value else float(value)


def suspected(score: Score, thresholds: Optional[dict] = None) -> bool:
    """True when every thresholded label the model assessed is at or over its threshold;
    for a video's score, when at least VIDEO_MIN_FRAMES of its frames are (`frames_over`).

    A label whose value is None was not assessed (the age stage found no face, or did not run)
    and neither passes nor fails; at least one thresholded label must have been assessed.
    """
    if score.frames:
        return len(frames_over(score, thresholds)) >= VIDEO_MIN_FRAMES
    return _over(score.values, thresholds)


def frames_over(score: Score, thresholds: Optional[dict] = None) -> list[tuple]:
    """The frames of a video's score ((number, seconds, values), ...) over the thresholds."""
    return [f for f in score.frames if _over(f[2], thresholds)]


def video_score(key: str, frame_scores: list[tuple[int, float, Score]]) -> Score:
    """A video's score from its frames' ((number, seconds, frame Score), ...): the highest
    value per label, and every frame with its values (the classifier counts those)."""
    frame_scores = sorted(frame_scores, key=lambda f: f[1])
    top: dict = {}
    for _, _, s in frame_scores:
        for label, value in s.values.items():
            v = _number(value)
            if v is not None and (label not in top or v > top[label]):
                top[label] = v
    first = frame_scores[0][2]
    return Score(key=key, model=first.model, model_sha256=first.model_sha256, values=top,
                 frames=tuple((int(n), float(t), dict(s.values)) for n, t, s in frame_scores))


def _over(values: dict, thresholds: Optional[dict]) -> bool:
    thresholds = DEFAULT_THRESHOLDS if thresholds is None else thresholds
    assessed = [(label, _number(values.get(label))) for label in thresholds]
    assessed = [(label, v) for label, v in assessed if v is not None]
    return bool(assessed) and all(v >= float(thresholds[label]) for label, v in assessed)


def store_thresholds(store) -> dict:
    """The thresholds of the model the latest scan run used, else the defaults."""
    for run in reversed(store.runs()):
        model = run.get("model") or {}
        if isinstance(model, dict) and isinstance(model.get("thresholds"), dict):
            return {str(k): float(v) for k, v in model["thresholds"].items()}
    return dict(DEFAULT_THRESHOLDS)


def match_order(m: Match) -> tuple:
    """The match that says most first: exact before near, then severity, then distance."""
    return (m.kind != "exact", -int(m.severity or 0), m.distance, m.set_name, m.algorithm)


@dataclass(frozen=True)
class Classified:
    """File key -> its evidence, per kind. Each key is in one kind only."""

    exact: dict = field(default_factory=dict)       # key -> alert matches (exact first)
    near: dict = field(default_factory=dict)        # key -> near alert matches, no exact one
    suspected: dict = field(default_factory=dict)   # key -> the scores over threshold

    def kind(self, key: str) -> Optional[str]:
        if key in self.exact:
            return EXACT
        if key in self.near:
            return NEAR
        return SUSPECTED if key in self.suspected else None

    def keys(self) -> list[str]:
        """Every finding's key: exact, then near, then suspected, each sorted."""
        return sorted(self.exact) + sorted(self.near) + sorted(self.suspected)

    def alert_matches(self, key: str) -> tuple[Match, ...]:
        return self.exact.get(key) or self.near.get(key) or ()


def classify(matches: Iterable[Match], scores: Iterable[Score],
             thresholds: Optional[dict] = None) -> Classified:
    """Sort a device's (or a batch's) matches and scores into exact, near and suspected."""
    alert: dict[str, list[Match]] = {}
    for m in matches:
        if m.role == "alert":
            alert.setdefault(m.key, []).append(m)
    exact, near = {}, {}
    for key, ms in alert.items():
        ordered = tuple(sorted(ms, key=match_order))
        if any(m.kind == "exact" for m in ms):
            exact[key] = ordered
        else:
            near[key] = ordered
    suspect: dict[str, list[Score]] = {}
    for s in scores:
        if s.key not in alert and suspected(s, thresholds):
            suspect.setdefault(s.key, []).append(s)
    return Classified(exact, near, {k: tuple(v) for k, v in suspect.items()})
