"""The vPDQ rule: when does a query video match a known video. Decided here, once.

As ThreatExchange states it (vpdq/README.md, "Comparison (Matching) Algorithm", and
python-threatexchange's vpdq constants): each side's frames are reduced to its unique hashes
(exact duplicates dropped: `dedupe`) of quality at least F; a query frame is matched when some
known frame is within distance D of it, and a known frame when some query frame is within D of
it; then

    query share = matched query frames * 100 / query frames considered
    known share = matched known frames * 100 / known frames considered
    match when query share >= P_q and known share >= P_c

Defaults are ThreatExchange's: D = 31, F = 50, P_q = 80.0 (VPDQ_QUERY_MATCH_THRESHOLD_PERCENT),
P_c = 0.0 (VPDQ_INDEX_MATCH_THRESHOLD_PERCENT; the README's own example uses P_c = 80 with
P_q = 0). Frame numbers and times play no part; they only say where the matches are.

Frames are deduplicated exactly, as python-threatexchange does, not "pruned" by distance: the
reference hasher prunes nothing, and pruning the query against a differently-pruned known
video would change both shares. Known videos' frames are quality-filtered at import (PDQ lists'
rule: below 50 is not indexed), so F above 50 filters the query side only.

`shares` is the brute-force reference; `HashSetStore.lookup_videos` gets the same numbers from
the faiss PDQ index (every pair within D, by range search) and `shares_from_pairs`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

DISTANCE = 31                  # VPDQ_DISTANCE_THRESHOLD
QUALITY = 50                   # VPDQ_QUALITY_THRESHOLD
QUERY_MATCH_PERCENT = 80.0     # VPDQ_QUERY_MATCH_THRESHOLD_PERCENT
INDEX_MATCH_PERCENT = 0.0      # VPDQ_INDEX_MATCH_THRESHOLD_PERCENT


@dataclass(frozen=True)
class VpdqRule:
    distance: int = DISTANCE
    quality: int = QUALITY
    query_percent: float = QUERY_MATCH_PERCENT
    index_percent: float = INDEX_MATCH_PERCENT

    def is_match(self, query_share: float, known_share: float) -> bool:
        return query_share >= self.query_percent and known_share >= self.index_percent


DEFAULT_RULE = VpdqRule()


def considered(frames: Iterable[tuple[str, int]], quality: int = QUALITY) -> list[int]:
    """Positions of the frames the rule looks at: quality >= `quality`, first of each hash."""
    seen: set[str] = set()
    out = []
    for i, (h, q) in enumerate(frames):
        h = h.lower()
        if int(q) >= quality and h not in seen:
            seen.add(h)
            out.append(i)
    return out


def _dist(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def shares(query: Sequence[tuple[str, int]], known: Sequence[tuple[str, int]],
           rule: VpdqRule = DEFAULT_RULE) -> tuple[float, float]:
    """(query share, known share) in percent, by comparing every pair (the reference)."""
    q = [query[i][0] for i in considered(query, rule.quality)]
    c = [known[i][0] for i in considered(known, rule.quality)]
    if not q or not c:
        return 0.0, 0.0
    pairs = [(i, j) for i, a in enumerate(q) for j, b in enumerate(c)
             if _dist(a, b) <= rule.distance]
    return shares_from_pairs(len(q), len(c), pairs)


def shares_from_pairs(n_query: int, n_known: int,
                      pairs: Iterable[tuple[int, int]]) -> tuple[float, float]:
    """The two shares from every (query frame, known frame) pair within the distance."""
    qs, ks = set(), set()
    for i, j in pairs:
        qs.add(i)
        ks.add(j)
    if not n_query or not n_known:
        return 0.0, 0.0
    return len(qs) * 100.0 / n_query, len(ks) * 100.0 / n_known
