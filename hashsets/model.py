"""The records of the hash-set layer: what a set is (HashSetInfo) and what a lookup finds (Hit).

Category schemes live here too. VICS carries Category as a bare number whose meaning depends on
the national profile (docs/formats.md 1.6: not publicly specified), so every set keeps the raw
category and records the mapping it was imported with; the mapping is never hard-coded into
the compiled index.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

ROLES = ("alert", "ignore", "watch")
EXACT_ALGORITHMS = ("md5", "sha1", "sha256")
PERCEPTUAL_ALGORITHMS = ("pdq", "phash")
ALGORITHMS = EXACT_ALGORITHMS + PERCEPTUAL_ALGORITHMS
DIGEST_BYTES = {"md5": 16, "sha1": 20, "sha256": 32, "pdq": 32, "phash": 8}

# ThreatExchange's constants (pdq/README.md, PdqSignal): match when distance <= 31, and hashes
# of quality below 50 (flat or near-blank pictures) match far too much to be alerted on.
PDQ_MATCH_DISTANCE = 31
PDQ_MIN_QUALITY = 50
# imagehash has no official threshold; about 8 of 64 bits is common practice (formats.md 4.3).
PHASH_MATCH_DISTANCE = 8
DEFAULT_DISTANCE = {"pdq": PDQ_MATCH_DISTANCE, "phash": PHASH_MATCH_DISTANCE}


@dataclass(frozen=True)
class Hit:
    """One entry of one hash set that a queried hash matched."""

    set_name: str
    set_version: str
    role: str                      # alert, ignore, watch (a non-pertinent VICS category: ignore)
    category: str                  # the raw category as the set wrote it ("1", "A"), or ""
    severity: int                  # from the set's scheme; higher is worse, 0 = not pertinent
    algorithm: str                 # md5, sha1, sha256, pdq, phash
    value: str                     # the matched hash, lower-case hex
    category_label: str = ""       # the scheme's name for the category ("A", "CSAM")
    series: str = ""               # VICS Series
    victim_identified: Optional[bool] = None
    is_distributed: Optional[bool] = None
    distance: int = 0              # Hamming distance for perceptual hits, 0 for exact


_new = object.__new__
_set = object.__setattr__


def make_hit(base: dict, algorithm: str, value: str, distance: int = 0) -> Hit:
    """A Hit from a prepared dict of its other fields, without the frozen dataclass __init__
    (eleven guarded setattr calls): lookups make hundreds of thousands of these per batch."""
    hit = _new(Hit)
    _set(hit, "__dict__", {**base, "algorithm": algorithm, "value": value, "distance": distance})
    return hit


@dataclass(frozen=True)
class Rejects:
    """Lines or records an importer could not use: how many, and the first few as examples."""

    count: int = 0
    examples: tuple[str, ...] = ()


@dataclass(frozen=True)
class HashSetInfo:
    """Provenance of one imported set, written beside its compiled index (info.json)."""

    name: str
    role: str
    format: str                    # vics, nsrl-rdsv3, nsrl-txt, hashdeep, plain, encase, pdq, phash, vpdq
    version: str                   # the source's own version (NSRL VERSION, VICS date), or the import date
    source_name: str
    source_sha256: str
    importer_version: str
    imported_at: str               # ISO 8601 UTC
    records: int                   # the source's records (Media entries, lines, rows) read;
                                   # `counts` has the hashes per algorithm
    counts: dict = field(default_factory=dict)      # algorithm -> entries
    rejected: int = 0
    rejected_examples: tuple[str, ...] = ()
    scheme: str = ""               # category scheme: uk-caid, us-projectvic, none, custom
    profile: str = ""              # VICS profile from the context URL (UK, US, ...)
    category_map: dict = field(default_factory=dict)   # raw category -> {"label", "severity"}
    default_severity: int = 1      # severity of entries without a category (or an unmapped one)
    skipped_low_quality: int = 0   # PDQ alert entries below quality 50, left out of the index
    deltas: tuple[dict, ...] = ()  # each delta file added: source name, sha256, time, records
    source_date: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "HashSetInfo":
        known = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        data["rejected_examples"] = tuple(data.get("rejected_examples", ()))
        data["deltas"] = tuple(data.get("deltas", ()))
        return cls(**data)


# ------------------------------------------------------------------ category schemes
# Severity: 3 most severe, 0 not pertinent (such hits come back with role "ignore"). The numbers
# are conventions used by forces and vendors (UK sentencing categories A/B/C carried as 1/2/3;
# Project VIC US 1 = CSAM, 2 = child exploitive, 0 and 3 non-pertinent), not a published spec,
# so `--category-map` can replace them and the set records the mapping it used.
SCHEMES: dict[str, dict[str, dict]] = {
    "uk-caid": {
        "0": {"label": "non-pertinent", "severity": 0},
        "1": {"label": "A", "severity": 3}, "A": {"label": "A", "severity": 3},
        "2": {"label": "B", "severity": 2}, "B": {"label": "B", "severity": 2},
        "3": {"label": "C", "severity": 1}, "C": {"label": "C", "severity": 1},
    },
    "us-projectvic": {
        "0": {"label": "non-pertinent", "severity": 0},
        "1": {"label": "CSAM", "severity": 3},
        "2": {"label": "child exploitive", "severity": 2},
        "3": {"label": "non-pertinent", "severity": 0},
    },
    "none": {},
}
PROFILE_SCHEMES = {"UK": "uk-caid", "US": "us-projectvic", "CA": "us-projectvic"}


def scheme_for(profile: str, fmt: str) -> str:
    """The default scheme of a VICS profile; `none` for formats without categories."""
    if fmt != "vics":
        return "none"
    return PROFILE_SCHEMES.get((profile or "").upper(), "us-projectvic")


def parse_category_map(text: str) -> dict[str, dict]:
    """`1=A:3,2=B:2,0=non-pertinent:0` -> {"1": {"label": "A", "severity": 3}, ...}."""
    from triage.errors import HashSetError

    out: dict[str, dict] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            raw, rest = part.split("=", 1)
            label, sev = rest.rsplit(":", 1)
            out[raw.strip()] = {"label": label.strip(), "severity": int(sev)}
        except ValueError:
            raise HashSetError(f"category map entry {part!r} is not RAW=LABEL:SEVERITY "
                               "(e.g. 1=A:3,2=B:2,3=C:1)") from None
    return out
