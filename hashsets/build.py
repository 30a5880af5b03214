"""Compiling a set: importers feed hashes in, `SetBuilder.finish` writes the on-disk index.

Exact algorithms compile to three arrays per algorithm, sorted by digest:
  {alg}.keys.npy   uint64, the first 8 bytes of each digest read big-endian (the search key)
  {alg}.rest.npy   uint8 (N, width - 8), the remaining bytes (checked only on a key hit)
  {alg}.meta.npy   uint32, a row of the side table `meta.json` (absent when every row is 0)
Perceptual algorithms keep their codes in insertion order ({alg}.codes.npy, {alg}.meta.npy)
plus a faiss binary index ({alg}.faiss), see hashsets/perceptual.py. PDQ entries that are
frames of a known video (a vPDQ set) also have {alg}.video.npy (int32, the video's row of
`videos.json`, -1 for a plain entry); `videos.json` names each video and counts its frames,
so the vPDQ rule (hashsets/vpdq.py) can weigh matches per known video.

Splitting key and rest means a batch lookup touches 8 bytes per probe, and the full digest only
where the key matched, so lookup memory stays near the size of what is mapped.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from hashsets.model import DIGEST_BYTES, PDQ_MIN_QUALITY, PERCEPTUAL_ALGORITHMS

MAX_EXAMPLES = 5
# A meta row is (category, series, victim_identified, is_distributed); row 0 means "none".
NO_META = ("", "", None, None)


def hex_to_digests(hexes: Sequence[str], width: int) -> tuple[np.ndarray, list[int]]:
    """(N', width) uint8 digests of the valid hex strings, and the indexes of the others.

    One `bytes.fromhex` over the joined batch when every string has the right length (the
    common case, millions per second); a per-string pass only for a batch with bad entries.
    """
    n = len(hexes)
    if n == 0:
        return np.empty((0, width), np.uint8), []
    try:
        lengths = np.fromiter(map(len, hexes), np.int64, n) if type(hexes[0]) is str else None
        if lengths is not None and lengths.min() == lengths.max() == 2 * width:
            raw = bytes.fromhex("".join(hexes))
            if len(raw) == n * width:
                return np.frombuffer(raw, np.uint8).reshape(n, width), []
    except ValueError:
        pass
    good, bad = [], []
    for i, h in enumerate(hexes):
        h = h.strip() if isinstance(h, str) else h
        try:
            if isinstance(h, str) and len(h) == 2 * width:
                good.append(bytes.fromhex(h))
                continue
        except ValueError:
            pass
        bad.append(i)
    arr = np.frombuffer(b"".join(good), np.uint8).reshape(len(good), width)
    return arr, bad


def big_endian_keys(digests: np.ndarray) -> np.ndarray:
    """uint64 search keys: the first 8 bytes of each digest, so key order is byte order."""
    return np.ascontiguousarray(digests[:, :8]).view(">u8").ravel().astype(np.uint64)


class SetBuilder:
    """Collects one set's entries in memory (digests are small: 10M SHA-1 = 200 MB) and
    writes the compiled index. Importers call `add_hex`/`add_digests`, `meta_id` and `reject`."""

    def __init__(self, role: str, progress: Optional[Callable[[int, Optional[float]], None]] = None):
        self.role = role
        self._digests: dict[str, list[np.ndarray]] = {}
        self._metas: dict[str, list[np.ndarray]] = {}
        self._meta_rows: list[tuple] = [NO_META]
        self._meta_ids: dict[tuple, int] = {NO_META: 0}
        self.rejected = 0                  # distinct source records with something rejected
        self._rejected_at: set[str] = set()
        self.examples: list[str] = []
        self.source_records = 0            # the source's records (Media entries, lines, rows)
        self.skipped_low_quality = 0
        self.records_in = 0
        self._progress = progress
        self.photodna: list[tuple[str, str]] = []
        self._vids: dict[str, list[np.ndarray]] = {}      # per algorithm: video row per entry
        self.videos: list[str] = []                       # known videos (vPDQ), by row
        self._video_ids: dict[str, int] = {}

    def video_id(self, name: str) -> int:
        """The row of known video `name` (a vPDQ set's grouping of frames)."""
        got = self._video_ids.get(name)
        if got is None:
            got = self._video_ids[name] = len(self.videos)
            self.videos.append(name)
        return got

    # -------------------------------------------------------------- importer side
    def meta_id(self, category="", series="", victim_identified=None, is_distributed=None) -> int:
        row = (str(category) if category is not None else "", series or "", victim_identified,
               is_distributed)
        got = self._meta_ids.get(row)
        if got is None:
            got = self._meta_ids[row] = len(self._meta_rows)
            self._meta_rows.append(row)
        return got

    def reject(self, where: str, text) -> None:
        """A record (`where`: "media 151", "line 7") with something unusable; a record with two
        bad hashes is one rejected record, its examples both shown."""
        if where not in self._rejected_at:
            self._rejected_at.add(where)
            self.rejected += 1
        if len(self.examples) < MAX_EXAMPLES:
            shown = text if isinstance(text, str) else repr(text)
            self.examples.append(f"{where}: {shown[:120]}")

    def progress(self, fraction: Optional[float] = None) -> None:
        if self._progress is not None:
            self._progress(self.records_in, fraction)

    def add_hex(self, algorithm: str, hexes: Sequence[str], meta=0, *, where: str = "record",
                first: int = 1, quality: Optional[Sequence[int]] = None, video=-1,
                numbers: Optional[Sequence[int]] = None) -> int:
        """Adds a batch of hex strings; bad ones are rejected as `{where} {number}`, the number
        being the record's own (`numbers`, one per hex) or else `first + i`.
        Empty strings and None mean "this record has no such hash" and are skipped silently."""
        width = DIGEST_BYTES[algorithm]
        digests, bad = hex_to_digests(hexes, width)
        keep = None
        if bad:
            keep = np.ones(len(hexes), bool)
            keep[bad] = False
            for i in bad:
                if hexes[i]:
                    number = numbers[i] if numbers is not None else first + i
                    self.reject(f"{where} {number}", f"{algorithm} {hexes[i]!r}")
        metas = np.asarray(meta, np.uint32)
        if metas.ndim == 0:
            metas = np.full(len(hexes), int(meta), np.uint32)
        qual = None if quality is None else np.asarray(quality, np.int16)
        vids = np.asarray(video, np.int32)
        if vids.ndim == 0:
            vids = np.full(len(hexes), int(video), np.int32)
        if keep is not None:
            metas, vids = metas[keep], vids[keep]
            qual = None if qual is None else qual[keep]
        if qual is not None and algorithm == "pdq":
            # quality -1 = not given (ThreatExchange lines); kept.
            low = (qual >= 0) & (qual < PDQ_MIN_QUALITY)
            if low.any():
                self.skipped_low_quality += int(low.sum())
                digests, metas, vids = digests[~low], metas[~low], vids[~low]
        return self.add_digests(algorithm, digests, metas, vids)

    def add_digests(self, algorithm: str, digests: np.ndarray, meta=0, video=-1) -> int:
        n = len(digests)
        if n == 0:
            return 0
        metas = np.asarray(meta, np.uint32)
        if metas.ndim == 0:
            metas = np.full(n, int(meta), np.uint32)
        vids = np.asarray(video, np.int32)
        if vids.ndim == 0:
            vids = np.full(n, int(video), np.int32)
        self._digests.setdefault(algorithm, []).append(np.ascontiguousarray(digests, np.uint8))
        self._metas.setdefault(algorithm, []).append(metas)
        self._vids.setdefault(algorithm, []).append(vids)
        self.records_in += n
        return n

    def load_existing(self, compiled_dir: Path, meta_rows: list) -> None:
        """Starts from an already compiled set (for a delta): its entries and its meta rows."""
        remap = np.array([self.meta_id(*row) for row in meta_rows] or [0], np.uint32)
        vp = compiled_dir / "videos.json"
        vremap = np.array([self.video_id(v["name"]) for v in json.loads(vp.read_text())]
                          if vp.exists() else [], np.int32)
        for alg in DIGEST_BYTES:
            if alg in PERCEPTUAL_ALGORITHMS:
                p = compiled_dir / f"{alg}.codes.npy"
                if not p.exists():
                    continue
                digests = np.load(p)
            else:
                p = compiled_dir / f"{alg}.keys.npy"
                if not p.exists():
                    continue
                keys = np.load(p)
                rest = np.load(compiled_dir / f"{alg}.rest.npy")
                digests = np.concatenate([keys.astype(">u8").view(np.uint8).reshape(-1, 8), rest], 1)
            mp = compiled_dir / f"{alg}.meta.npy"
            metas = remap[np.load(mp)] if mp.exists() else np.zeros(len(digests), np.uint32)
            vidp = compiled_dir / f"{alg}.video.npy"
            vids = np.full(len(digests), -1, np.int32)
            if vidp.exists():
                old = np.load(vidp)
                vids[old >= 0] = vremap[old[old >= 0]]
            self._digests.setdefault(alg, []).append(digests)
            self._metas.setdefault(alg, []).append(metas)
            self._vids.setdefault(alg, []).append(vids)
        pdna = compiled_dir / "photodna.tsv"
        if pdna.exists():
            for line in pdna.read_text().splitlines():
                md5, _, value = line.partition("\t")
                self.photodna.append((md5, value))

    # -------------------------------------------------------------- compile
    def finish(self, out: Path) -> dict[str, int]:
        """Writes the compiled arrays into `out`; returns entries per algorithm."""
        counts: dict[str, int] = {}
        for alg in list(self._digests):
            # Hand the arrays over (no reference kept here), so each copy the compiler makes
            # replaces the one before instead of adding to it: peak memory stays near 2-3x
            # one algorithm's digests rather than every copy of every algorithm at once.
            chunks, metas = self._digests.pop(alg), self._metas.pop(alg)
            vids = self._vids.pop(alg)
            parts = [np.concatenate(chunks) if len(chunks) > 1 else chunks[0], np.concatenate(metas)]
            del chunks, metas
            if alg in PERCEPTUAL_ALGORITHMS:
                counts[alg] = _write_perceptual(out, alg, parts, np.concatenate(vids),
                                                self.videos)
            else:
                counts[alg] = _write_exact(out, alg, parts)
        (out / "meta.json").write_text(json.dumps(self._meta_rows))
        if self.photodna:
            seen = dict(self.photodna)
            (out / "photodna.tsv").write_text("".join(f"{k}\t{v}\n" for k, v in sorted(seen.items())))
        return counts


def _write_exact(out: Path, alg: str, parts: list) -> int:
    digests, metas = parts
    parts.clear()
    keys = big_endian_keys(digests)
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    metas = metas[order]
    digests = np.take(digests, order, axis=0)
    del order
    if len(keys) > 1:
        # Duplicates (same hash and same metadata) are dropped; the same hash with other
        # metadata is kept. Only rows whose key repeats need a closer look, and they are few.
        same_key = np.nonzero(keys[1:] == keys[:-1])[0] + 1
        if len(same_key):
            drop = []
            run_start = None
            seen: set = set()
            for i in same_key.tolist():
                if run_start is None or i - 1 != run_start:
                    seen = {(digests[i - 1].tobytes(), int(metas[i - 1]))}
                item = (digests[i].tobytes(), int(metas[i]))
                if item in seen:
                    drop.append(i)
                seen.add(item)
                run_start = i
            if drop:
                keep = np.ones(len(keys), bool)
                keep[drop] = False
                keys, digests, metas = keys[keep], digests[keep], metas[keep]
    np.save(out / f"{alg}.keys.npy", keys)
    np.save(out / f"{alg}.rest.npy", np.ascontiguousarray(digests[:, 8:]))
    if metas.any():
        np.save(out / f"{alg}.meta.npy", metas)
    return int(len(keys))


def _write_perceptual(out: Path, alg: str, parts: list, vids: np.ndarray,
                      videos: list[str]) -> int:
    from hashsets.perceptual import build_index

    digests, metas = parts
    parts.clear()
    # Deduplicate (code, meta, video) triples, keeping first-seen order: a frame repeated in
    # one known video counts once (vPDQ compares unique frames), in two videos once in each.
    width = digests.shape[1]
    rows = np.concatenate([digests, metas.astype("<u4").view(np.uint8).reshape(-1, 4),
                           vids.astype("<i4").view(np.uint8).reshape(-1, 4)], 1)
    _, first = np.unique(rows.view(f"V{width + 8}").ravel(), return_index=True)
    first.sort()
    digests, metas, vids = np.ascontiguousarray(digests[first]), metas[first], vids[first]
    np.save(out / f"{alg}.codes.npy", digests)
    if metas.any():
        np.save(out / f"{alg}.meta.npy", metas)
    if (vids >= 0).any():
        np.save(out / f"{alg}.video.npy", vids)
        if alg == "pdq":
            frames = np.bincount(vids[vids >= 0], minlength=len(videos))
            (out / "videos.json").write_text(json.dumps([
                {"name": name, "frames": int(n)} for name, n in zip(videos, frames)]))
    build_index(digests, out / f"{alg}.faiss")
    return int(len(digests))
