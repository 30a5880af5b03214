"""Matching one batch's files against the hash sets: exact first, then perceptual.

A file with an exact hit in an ignore set (NSRL: known software) is "ignored": later stages
(perceptual matching, the model) skip it. A file with an exact alert hit skips perceptual
matching, since an exact match already says more. PDQ hashes of low quality (flat or
near-blank pictures, which match everything) are not looked up.
"""
from __future__ import annotations

from typing import Iterable, Optional, Protocol, Sequence

from triage.records import Features, FileRecord, Match

EXACT_ALGORITHMS = ("md5", "sha1", "sha256")
# Meta's PDQ guidance: hashes with quality below 50 are too unreliable to match on.
PDQ_MIN_QUALITY = 50


class HashLookup(Protocol):
    def lookup(self, algorithm: str, hashes: Sequence[str]) -> list[list]: ...

    def lookup_perceptual(self, algorithm: str, hashes: Sequence[str],
                          max_distance: Optional[int] = None) -> list[list]: ...


def _to_match(key: str, kind: str, hit) -> Match:
    return Match(key=key, kind=kind, algorithm=hit.algorithm, value=hit.value,
                 set_name=hit.set_name, set_version=str(hit.set_version), role=hit.role,
                 category=str(hit.category or ""), severity=int(hit.severity or 0),
                 distance=int(getattr(hit, "distance", 0) or 0))


def match_items(stores: Iterable[HashLookup], items: Sequence[tuple[FileRecord, Features]],
                set_names: Optional[frozenset[str]] = None,
                perceptual: bool = True) -> tuple[list[Match], set[str]]:
    """All matches of `items` in `stores` (restricted to `set_names` when given), and the keys
    of ignored (known-software) files."""
    stores = list(stores)
    matches: list[Match] = []
    seen: set[tuple] = set()

    def keep(hit) -> bool:
        return set_names is None or hit.set_name in set_names

    def add(m: Match) -> None:
        ident = (m.key, m.kind, m.algorithm, m.set_name, m.value)
        if ident not in seen:
            seen.add(ident)
            matches.append(m)

    for algorithm in EXACT_ALGORITHMS:
        wanted = [(feat.key, getattr(feat, algorithm)) for _, feat in items
                  if getattr(feat, algorithm, "")]
        if not wanted:
            continue
        for store in stores:
            for (key, _), hits in zip(wanted, store.lookup(algorithm, [h for _, h in wanted])):
                for hit in hits:
                    if keep(hit):
                        add(_to_match(key, "exact", hit))
    ignored = {m.key for m in matches if m.role == "ignore"}
    alerted = {m.key for m in matches if m.kind == "exact" and m.role == "alert"}
    if perceptual:
        skip = ignored | alerted
        for algorithm, field, gate in (("pdq", "pdq", True), ("phash", "phash", False)):
            wanted = [(feat.key, getattr(feat, field)) for _, feat in items
                      if getattr(feat, field, "") and feat.key not in skip
                      and (not gate or feat.pdq_quality >= PDQ_MIN_QUALITY)]
            if not wanted:
                continue
            for store in stores:
                results = store.lookup_perceptual(algorithm, [h for _, h in wanted])
                for (key, _), hits in zip(wanted, results):
                    for hit in hits:
                        if keep(hit) and hit.role != "ignore":
                            add(_to_match(key, "near", hit))
    return matches, ignored
