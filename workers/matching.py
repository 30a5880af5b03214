"""Matching one batch's files against the hash sets: exact first, then perceptual.

A file with an exact hit in an ignore set (NSRL: known software) is "ignored": later stages
(perceptual matching, the model) skip it. A file with an exact alert hit skips perceptual
matching, since an exact match already says more. PDQ hashes of low quality (flat or
near-blank pictures, which match everything) are not looked up.

A video's sampled frames (Features.frames) are matched two ways: each frame against the PDQ
and pHash entries as a picture would be (a frame showing a known picture: a near match on the
video, with the times of the frames that matched), and the whole list against the known videos
of vPDQ sets by the vPDQ rule (hashsets/vpdq.py). A frame near a single frame of a known video
is not a match by itself: the known video's frames count only through the vPDQ rule.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Iterable, Optional, Protocol, Sequence

from triage.records import Features, FileRecord, Match

EXACT_ALGORITHMS = ("md5", "sha1", "sha256")
# Meta's PDQ guidance: hashes with quality below 50 are too unreliable to match on.
PDQ_MIN_QUALITY = 50


class HashLookup(Protocol):
    def lookup(self, algorithm: str, hashes: Sequence[str]) -> list[list]: ...

    def lookup_perceptual(self, algorithm: str, hashes: Sequence[str],
                          max_distance: Optional[int] = None,
                          video_frames: bool = True) -> list[list]: ...

    def lookup_videos(self, frames: Sequence[tuple[str, int]], rule=None) -> list: ...


def _to_match(key: str, kind: str, hit) -> Match:
    return Match(key=key, kind=kind, algorithm=hit.algorithm, value=hit.value,
                 set_name=hit.set_name, set_version=str(hit.set_version), role=hit.role,
                 category=str(hit.category or ""), severity=int(hit.severity or 0),
                 distance=int(getattr(hit, "distance", 0) or 0))


def match_items(stores: Iterable[HashLookup], items: Sequence[tuple[FileRecord, Features]],
                set_names: Optional[frozenset[str]] = None,
                perceptual: bool = True, vpdq_rule=None,
                hashed: Optional[dict[str, tuple[list, list]]] = None,
                ) -> tuple[list[Match], set[str]]:
    """All matches of `items` in `stores` (restricted to `set_names` when given), and the keys
    of ignored (known-software) files. `vpdq_rule`: the vPDQ thresholds (default
    ThreatExchange's). `hashed`: {algorithm: (keys, hex digests)} of more files, known by
    their exact hashes alone (the plain files a worker stores without records)."""
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
        keys, values = [k for k, _ in wanted], [v for _, v in wanted]
        more_keys, more_values = (hashed or {}).get(algorithm, ((), ()))
        keys += more_keys
        values += more_values
        if not values:
            continue
        for store in stores:
            for key, hits in zip(keys, store.lookup(algorithm, values)):
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
        videos = [(feat.key, feat.frames) for _, feat in items
                  if getattr(feat, "frames", ()) and feat.key not in skip]
        if videos:
            for m in _video_matches(stores, videos, keep, vpdq_rule):
                add(m)
    return matches, ignored


def _video_matches(stores: list, videos: list[tuple[str, tuple]], keep, rule) -> list[Match]:
    """Near matches of videos: frames near PDQ/pHash entries (one Match per entry, with every
    frame that matched it), and known videos by the vPDQ rule."""
    out: list[Match] = []
    # frames of low PDQ quality (black, fades, flat titles) are left out of both lookups:
    # they are near everything
    frames = [(key, f) for key, fs in videos for f in fs if f.quality >= PDQ_MIN_QUALITY]
    for algorithm, field in (("pdq", "pdq"), ("phash", "phash")):
        wanted = [(key, f) for key, f in frames if getattr(f, field)]
        if not wanted:
            continue
        for store in stores:
            results = store.lookup_perceptual(algorithm, [getattr(f, field) for _, f in wanted],
                                              video_frames=False)
            found: dict[tuple, tuple] = {}
            for (key, f), hits in zip(wanted, results):
                for hit in hits:
                    if not keep(hit) or hit.role == "ignore":
                        continue
                    ident = (key, hit.set_name, hit.value)
                    hit0, times = found.get(ident, (hit, []))
                    times.append((f.number, f.seconds))
                    found[ident] = (hit if hit.distance < hit0.distance else hit0, times)
            for (key, _, _), (hit, times) in found.items():
                out.append(replace(_to_match(key, "near", hit), frames=tuple(sorted(set(times)))))
    for key, fs in videos:
        query = [(f.pdq, f.quality) for f in fs]
        for store in stores:
            lookup = getattr(store, "lookup_videos", None)
            if lookup is None:
                continue
            for vh in lookup(query, rule):
                if not keep(vh.hit) or vh.hit.role == "ignore":
                    continue
                out.append(replace(_to_match(key, "near", vh.hit),
                                   frames=tuple((fs[i].number, fs[i].seconds) for i in vh.frames),
                                   query_share=vh.query_share, known_share=vh.known_share))
    return out
