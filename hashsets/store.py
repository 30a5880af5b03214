"""The hash-set store: a directory of compiled sets, and batch lookups across all of them.

    ROOT/                       default $TRIAGE_HOME/hashsets ($TRIAGE_HOME default ~/.triage)
      NAME/CURRENT              the name of the live build folder, replaced atomically
      NAME/b-.../info.json      HashSetInfo: provenance, role, category scheme, counts
      NAME/b-.../*.npy          the compiled arrays (hashsets/build.py), memory-mapped to look up
      NAME/b-.../meta.json      the side table: (category, series, victim identified, distributed)
      NAME/b-.../*.faiss        perceptual indexes

An import or a delta compiles into a new build folder and then points CURRENT at it, so a scan
that is reading a set keeps its mapped files (unlinked files stay readable) and never sees a
half-written one. Exact lookup is `numpy.searchsorted` on the sorted uint64 keys of each set;
memory while looking up is the mapped pages, not a copy of the set.

A HashSetStore is cheap to build from its root (nothing is opened until the first lookup) and
pickles as its root, so Ray workers make their own and map the files themselves.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import gc
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from hashsets.build import SetBuilder, big_endian_keys, hex_to_digests
from hashsets.importers import ImportOptions, detect, importer
from hashsets.model import (DEFAULT_DISTANCE, DIGEST_BYTES, EXACT_ALGORITHMS,
                            PERCEPTUAL_ALGORITHMS, ROLES, SCHEMES, HashSetInfo, Hit,
                            make_hit, parse_category_map, scheme_for)
from triage.errors import HashSetError

IMPORTER_VERSION = "1"
LOOKUP_CHUNK = 1 << 17          # queries per searchsorted pass
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
Progress = Callable[[int, Optional[float]], None]      # (records so far, fraction done or None)


def default_root() -> Path:
    from triage.home import triage_home
    return triage_home() / "hashsets"


def check_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise HashSetError(f"hash-set name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
                           "starting with a letter or digit")
    return name


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(4 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class DigestMatches:
    """Vectorised exact-lookup result: parallel arrays, one row per (query, set entry) hit."""

    query_index: np.ndarray        # int64, index into the queried digests
    set_index: np.ndarray          # int32, index into `names`
    meta_index: np.ndarray         # uint32, row of that set's side table
    names: list[str]

    def __len__(self) -> int:
        return len(self.query_index)


class CompiledSet:
    """One set's live build, opened lazily: arrays are memory-mapped on first use."""

    def __init__(self, folder: Path, info: HashSetInfo):
        self.folder = folder
        self.info = info
        self._arrays: dict[str, object] = {}
        self._templates: Optional[list[tuple]] = None
        self._indexes: dict[str, object] = {}

    def _array(self, name: str):
        if name not in self._arrays:
            p = self.folder / f"{name}.npy"
            self._arrays[name] = np.load(p, mmap_mode="r") if p.exists() else None
        return self._arrays[name]

    def templates(self) -> list[dict]:
        """Per side-table row: the Hit fields that do not depend on the query."""
        if self._templates is None:
            rows = json.loads((self.folder / "meta.json").read_text())
            info = self.info
            out = []
            for category, series, victim, distributed in rows:
                mapped = info.category_map.get(category) if category else None
                if mapped is None and category:
                    mapped = info.category_map.get(category.upper())
                severity = int(mapped["severity"]) if mapped else info.default_severity
                label = mapped["label"] if mapped else ""
                role = info.role
                if mapped and severity == 0 and role != "ignore":
                    role = "ignore"       # a non-pertinent category: known, not of interest
                out.append({"set_name": info.name, "set_version": info.version, "role": role,
                            "category": category, "severity": severity, "category_label": label,
                            "series": series, "victim_identified": victim,
                            "is_distributed": distributed})
            self._templates = out
        return self._templates

    def exact(self, algorithm: str, keys: np.ndarray, rest: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query positions, meta rows) of every entry equal to a query. `keys` must be sorted."""
        skeys = self._array(f"{algorithm}.keys")
        if skeys is None or len(skeys) == 0 or len(keys) == 0:
            return np.empty(0, np.int64), np.empty(0, np.uint32)
        srest = self._array(f"{algorithm}.rest")
        meta = self._array(f"{algorithm}.meta")
        n = len(skeys)
        lo = np.searchsorted(skeys, keys, side="left")
        qs, ps = [], []
        offset = 0
        cand = np.nonzero(lo < n)[0]
        while len(cand):
            pos = lo[cand] + offset
            same = skeys[pos] == keys[cand]
            cand, pos = cand[same], pos[same]
            if not len(cand):
                break
            full = (srest[pos] == rest[cand]).all(1) if srest.shape[1] else np.ones(len(pos), bool)
            qs.append(cand[full])
            ps.append(pos[full])
            # Several entries share a key (same hash, other metadata): look at the next one.
            offset += 1
            cand = cand[lo[cand] + offset < n]
        if not qs:
            return np.empty(0, np.int64), np.empty(0, np.uint32)
        q, p = np.concatenate(qs), np.concatenate(ps)
        metas = np.asarray(meta[p], np.uint32) if meta is not None else np.zeros(len(p), np.uint32)
        return q, metas

    def videos(self) -> list[dict]:
        """The known videos of a vPDQ set ({name, frames}), by row; [] for other sets."""
        if "videos" not in self._arrays:
            p = self.folder / "videos.json"
            self._arrays["videos"] = json.loads(p.read_text()) if p.exists() else []
        return self._arrays["videos"]

    def perceptual(self, algorithm: str, queries: np.ndarray, max_distance: int):
        from hashsets.perceptual import load_index, range_search

        codes = self._array(f"{algorithm}.codes")
        if codes is None or len(codes) == 0:
            return None
        if algorithm not in self._indexes:
            self._indexes[algorithm] = load_index(self.folder / f"{algorithm}.faiss")
        lims, dist, ids = range_search(self._indexes[algorithm], queries, max_distance)
        return lims, dist, ids, codes, self._array(f"{algorithm}.meta")


class HashSetStore:
    """All sets under `root` (or only `names`), imported, updated, removed and looked up."""

    def __init__(self, root: str | Path | None = None, names: Optional[Iterable[str]] = None):
        self.root = Path(root) if root is not None else default_root()
        self.only = tuple(names) if names is not None else None
        self._open: Optional[dict[str, CompiledSet]] = None

    def __getstate__(self):
        return {"root": str(self.root), "only": self.only}

    def __setstate__(self, state):
        self.__init__(state["root"], state["only"])

    def __repr__(self) -> str:
        return f"HashSetStore({str(self.root)!r})"

    # -------------------------------------------------------------- catalogue
    def _live(self, name: str) -> Optional[Path]:
        try:
            build = (self.root / name / "CURRENT").read_text().strip()
        except (FileNotFoundError, NotADirectoryError):
            return None
        folder = self.root / name / build
        return folder if (folder / "info.json").exists() else None

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        found = sorted(p.name for p in self.root.iterdir() if p.is_dir() and self._live(p.name))
        if self.only is not None:
            found = [n for n in found if n in self.only]
        return found

    def sets(self) -> list[HashSetInfo]:
        return [self.info(n) for n in self.names()]

    def info(self, name: str) -> HashSetInfo:
        folder = self._live(name)
        if folder is None:
            have = ", ".join(self.names()) or "none"
            raise HashSetError(f"no hash set named {name!r} in {self.root} (sets: {have})")
        return HashSetInfo.from_dict(json.loads((folder / "info.json").read_text()))

    def _compiled(self) -> dict[str, CompiledSet]:
        if self._open is None:
            self._open = {}
            for name in self.names():
                folder = self._live(name)
                if folder is not None:
                    info = HashSetInfo.from_dict(json.loads((folder / "info.json").read_text()))
                    self._open[name] = CompiledSet(folder, info)
        return self._open

    def refresh(self) -> None:
        """Forget opened sets, so the next lookup sees imports and removals made since."""
        self._open = None

    # -------------------------------------------------------------- changes
    @contextmanager
    def _locked(self, name: str):
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)          # hash sets are sensitive: owner only
        with open(folder / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield folder
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def import_file(self, path: str | Path, name: str, role: str, format: Optional[str] = None,
                    profile: Optional[str] = None, category_map=None,
                    progress: Optional[Progress] = None, replace: bool = False) -> HashSetInfo:
        """Imports FILE as set NAME. `category_map`: a scheme name (uk-caid, us-projectvic),
        `RAW=LABEL:SEVERITY,...`, or a dict raw -> {"label", "severity"}."""
        path = Path(path)
        check_name(name)
        if role not in ROLES:
            raise HashSetError(f"role {role!r}: use one of {', '.join(ROLES)}")
        if not path.is_file():
            raise HashSetError(f"{path}: no such file")
        fmt = format or detect(path)
        if fmt.startswith("nsrl") and role != "ignore":
            raise HashSetError(f"{path.name} is NSRL, known software rather than known good or "
                               f"bad: it may only be imported with --role ignore, not {role}")
        if self._live(name) is not None and not replace:
            raise HashSetError(f"a hash set named {name!r} exists; remove it, import with "
                               "--replace, or add a delta to it")
        t0 = time.monotonic()
        builder = SetBuilder(role, progress)
        facts = importer(fmt).read(path, builder, ImportOptions(format=fmt, role=role, profile=profile))
        if builder.records_in == 0:
            why = (f"; {builder.rejected} records rejected, e.g. {builder.examples[0]}"
                   if builder.rejected else "")
            raise HashSetError(f"{path.name}: no usable hashes found as {fmt}{why}")
        sha = _sha256(path)
        scheme, cmap = _scheme(category_map, facts.profile, fmt)
        with self._locked(name) as folder, self._building(folder) as build:
            counts = builder.finish(build)
            info = HashSetInfo(
                name=name, role=role, format=fmt,
                # The source's own version; else its newest record date plus the file's
                # sha256, so two releases never share a version; else the sha256 alone.
                version=facts.version or (f"{facts.source_date[:10]}.{sha[:8]}" if facts.source_date
                                          else sha[:12]),
                source_name=path.name, source_sha256=sha, importer_version=IMPORTER_VERSION,
                # the source's records (Media entries, lines); entries per algorithm in counts
                imported_at=_now(), records=builder.source_records or max(counts.values(), default=0),
                counts=counts,
                rejected=builder.rejected, rejected_examples=tuple(builder.examples),
                scheme=scheme, profile=facts.profile, category_map=cmap,
                default_severity=0 if role == "ignore" else 1,
                skipped_low_quality=builder.skipped_low_quality, source_date=facts.source_date)
            self._commit(folder, build, info, dict(facts.detail, seconds=round(time.monotonic() - t0, 3)))
        self.refresh()
        return info

    def add_delta(self, name: str, path: str | Path, format: Optional[str] = None,
                  progress: Optional[Progress] = None) -> HashSetInfo:
        """Adds the entries of a delta FILE to set NAME (a new build; the old one stays valid
        for readers that have it open)."""
        path = Path(path)
        old = self.info(name)
        if not path.is_file():
            raise HashSetError(f"{path}: no such file")
        fmt = format or detect(path)
        if fmt.startswith("nsrl") and old.role != "ignore":
            raise HashSetError("NSRL entries may only go into an ignore set")
        with self._locked(name) as folder:
            live = self._live(name)
            builder = SetBuilder(old.role, progress)
            before = builder.records_in
            builder.load_existing(live, json.loads((live / "meta.json").read_text()))
            base = builder.records_in - before
            facts = importer(fmt).read(path, builder, ImportOptions(format=fmt, role=old.role,
                                                                    profile=old.profile or None))
            added = builder.records_in - base
            if added == 0:
                raise HashSetError(f"{path.name}: no usable hashes found as {fmt}")
            with self._building(folder) as build:
                counts = builder.finish(build)
            delta = {"source_name": path.name, "source_sha256": _sha256(path), "format": fmt,
                     "added_at": _now(), "records_read": added, "rejected": builder.rejected,
                     "rejected_examples": list(builder.examples)}
            deltas = old.deltas + (delta,)
            version = (old.version.split("+delta")[0]) + f"+delta{len(deltas)}"
            info = HashSetInfo(**{**old.to_dict(), "version": version, "counts": counts,
                                  "records": sum(counts.values()), "deltas": deltas,
                                  "skipped_low_quality": old.skipped_low_quality
                                  + builder.skipped_low_quality})
            self._commit(folder, build, info, facts.detail)
        self.refresh()
        return info

    def remove(self, name: str) -> HashSetInfo:
        info = self.info(name)
        shutil.rmtree(self.root / name)
        self.refresh()
        return info

    @contextmanager
    def _building(self, folder: Path):
        """A fresh hidden build folder, removed again if compiling it fails or is interrupted."""
        build = folder / f".b-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        build.mkdir(mode=0o700)
        try:
            yield build
        except BaseException:
            shutil.rmtree(build, ignore_errors=True)
            raise

    def _commit(self, folder: Path, build: Path, info: HashSetInfo, detail: dict) -> None:
        (build / "info.json").write_text(json.dumps(dict(info.to_dict(), detail=detail), indent=1))
        final = folder / build.name[1:]
        build.rename(final)
        tmp = folder / f".CURRENT.{uuid.uuid4().hex[:8]}"
        tmp.write_text(final.name + "\n")
        os.replace(tmp, folder / "CURRENT")
        for old in folder.iterdir():          # earlier builds: open mappings stay readable
            if old.is_dir() and old.name != final.name:
                shutil.rmtree(old, ignore_errors=True)

    # -------------------------------------------------------------- exact lookup
    def match_digests(self, algorithm: str, digests: np.ndarray) -> DigestMatches:
        """Every hit of raw digests ((N, width) uint8) in every set, as arrays."""
        if algorithm not in EXACT_ALGORITHMS:
            raise HashSetError(f"exact lookup needs md5, sha1 or sha256, not {algorithm!r}")
        width = DIGEST_BYTES[algorithm]
        digests = np.asarray(digests, np.uint8).reshape(-1, width)
        compiled = self._compiled()
        names = list(compiled)
        qs, ss, ms = [], [], []
        # In chunks, so the temporary arrays stay a few MB whatever the batch size.
        for start in range(0, len(digests), LOOKUP_CHUNK):
            chunk = digests[start:start + LOOKUP_CHUNK]
            keys = big_endian_keys(chunk)
            # Sorted queries walk the sorted keys forwards: far fewer cache and page misses.
            order = np.argsort(keys, kind="stable")
            skeys, srest = keys[order], np.ascontiguousarray(chunk[order, 8:])
            for i, cs in enumerate(compiled.values()):
                q, m = cs.exact(algorithm, skeys, srest)
                if len(q):
                    qs.append(order[q] + start)
                    ss.append(np.full(len(q), i, np.int32))
                    ms.append(m)
        if not qs:
            return DigestMatches(np.empty(0, np.int64), np.empty(0, np.int32),
                                 np.empty(0, np.uint32), names)
        return DigestMatches(np.concatenate(qs), np.concatenate(ss), np.concatenate(ms), names)

    def lookup(self, algorithm: str, hashes: Sequence[str]) -> list[list[Hit]]:
        """Per input hash (hex, any case), the hits across all sets. Malformed input: no hits."""
        algorithm = algorithm.lower()
        with _no_gc():
            out: list[list[Hit]] = [[] for _ in hashes]
        if len(out) == 0:
            return out
        width = DIGEST_BYTES.get(algorithm)
        if width is None or algorithm not in EXACT_ALGORITHMS:
            raise HashSetError(f"exact lookup needs md5, sha1 or sha256, not {algorithm!r}")
        digests, bad = hex_to_digests(list(hashes), width)
        index = np.arange(len(hashes))
        if bad:
            index = np.delete(index, bad)
        found = self.match_digests(algorithm, digests)
        if not len(found):
            return out
        compiled = self._compiled()
        sets = [compiled[n] for n in found.names]
        templates = [cs.templates() for cs in sets]
        with _no_gc():
            for q, s, m in zip(index[found.query_index].tolist(), found.set_index.tolist(),
                               found.meta_index.tolist()):
                out[q].append(make_hit(templates[s][m], algorithm, hashes[q].strip().lower()))
        return out

    # -------------------------------------------------------------- perceptual lookup
    def lookup_perceptual(self, algorithm: str, hashes: Sequence[str],
                          max_distance: Optional[int] = None,
                          video_frames: bool = True) -> list[list[Hit]]:
        """Per input hash, every set entry within `max_distance` bits (default: PDQ 31, pHash
        8), nearest first. Hit.value is the set's hash, Hit.distance the Hamming distance.
        `video_frames` False leaves out the entries that are frames of a known video (a
        video's frames are matched to those by the vPDQ rule, `lookup_videos`)."""
        algorithm = algorithm.lower()
        if algorithm not in PERCEPTUAL_ALGORITHMS:
            raise HashSetError(f"perceptual lookup needs pdq or phash, not {algorithm!r}")
        if max_distance is None:
            max_distance = DEFAULT_DISTANCE[algorithm]
        out: list[list[Hit]] = [[] for _ in hashes]
        if len(out) == 0:
            return out
        codes, bad = hex_to_digests([h.strip() for h in hashes], DIGEST_BYTES[algorithm])
        index = np.delete(np.arange(len(hashes)), bad) if bad else np.arange(len(hashes))
        if not len(codes):
            return out
        for cs in self._compiled().values():
            res = cs.perceptual(algorithm, codes, max_distance)
            if res is None:
                continue
            lims, dist, ids, set_codes, meta = res
            templates = cs.templates()
            video = None if video_frames else cs._array(f"{algorithm}.video")
            for qi in range(len(codes)):
                a, b = lims[qi], lims[qi + 1]
                for d, e in zip(dist[a:b].tolist(), ids[a:b].tolist()):
                    if video is not None and video[e] >= 0:
                        continue
                    base = templates[int(meta[e]) if meta is not None else 0]
                    out[index[qi]].append(make_hit(base, algorithm, bytes(set_codes[e]).hex(), d))
        for hits in out:
            hits.sort(key=lambda h: (h.distance, -h.severity, h.set_name))
        return out

    def lookup_videos(self, frames: Sequence[tuple[str, int]], rule=None) -> list["VideoHit"]:
        """The known videos (of every vPDQ set) that the video with these frames ((pdq hex,
        quality), in time order) matches by the vPDQ rule (hashsets/vpdq.py), best first."""
        from hashsets.vpdq import DEFAULT_RULE, considered, shares_from_pairs
        rule = rule or DEFAULT_RULE
        pos = considered(frames, rule.quality)
        if not pos:
            return []
        codes, bad = hex_to_digests([frames[i][0].strip().lower() for i in pos], 32)
        if bad:                                   # not 64 hex: never looked up
            dropped = set(bad)
            pos = [p for k, p in enumerate(pos) if k not in dropped]
        if not pos:
            return []
        found: list[VideoHit] = []
        for cs in self._compiled().values():
            videos = cs.videos()
            if not videos:
                continue
            res = cs.perceptual("pdq", codes, rule.distance)
            vid = cs._array("pdq.video")
            if res is None or vid is None:
                continue
            lims, dist, ids, _, meta = res
            pairs: dict[int, list[tuple[int, int]]] = {}
            best: dict[tuple[int, int], int] = {}
            for qi in range(len(codes)):
                for d, e in zip(dist[lims[qi]:lims[qi + 1]].tolist(),
                                ids[lims[qi]:lims[qi + 1]].tolist()):
                    v = int(vid[e])
                    if v >= 0:
                        pairs.setdefault(v, []).append((qi, e))
                        best[(v, qi)] = min(d, best.get((v, qi), d))
            templates = cs.templates()
            for v, ps in pairs.items():
                q_share, k_share = shares_from_pairs(len(codes), int(videos[v]["frames"]), ps)
                if not rule.is_match(q_share, k_share):
                    continue
                matched = sorted({qi for qi, _ in ps})
                base = templates[int(meta[ps[0][1]]) if meta is not None else 0]
                found.append(VideoHit(
                    hit=make_hit(base, "vpdq", str(videos[v]["name"]),
                                 max(best[(v, qi)] for qi in matched)),
                    query_share=round(q_share, 2), known_share=round(k_share, 2),
                    frames=tuple(pos[qi] for qi in matched)))
        found.sort(key=lambda f: (-f.query_share, -f.known_share, f.hit.set_name, f.hit.value))
        return found


@dataclass(frozen=True)
class VideoHit:
    """A known video that a query video matches by the vPDQ rule. `hit.value` is the known
    video's name, `hit.distance` the largest distance among the matched frames' nearest;
    `frames` are the positions of the matched query frames (in the frames looked up)."""

    hit: Hit
    query_share: float
    known_share: float
    frames: tuple[int, ...]


@contextmanager
def _no_gc():
    """Millions of small result objects: the cyclic GC would rescan them again and again while
    they are made (they hold no cycles), costing more than making them."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _scheme(category_map, profile: str, fmt: str) -> tuple[str, dict]:
    if category_map is None or category_map == "":
        name = scheme_for(profile, fmt)
        return name, dict(SCHEMES[name])
    if isinstance(category_map, str) and category_map in SCHEMES:
        return category_map, dict(SCHEMES[category_map])
    if isinstance(category_map, str):
        return "custom", parse_category_map(category_map)
    return "custom", {str(k): (v if isinstance(v, dict) else {"label": str(v), "severity": 1})
                      for k, v in dict(category_map).items()}


def open_sets(root: str | Path | None, names: Optional[list[str]] = None) -> HashSetStore:
    """A view of the store restricted to `names` (all sets when None). Unknown names: error."""
    store = HashSetStore(root)
    if names:
        have = set(store.names())
        missing = [n for n in names if n not in have]
        if missing:
            raise HashSetError(f"no hash set named {', '.join(missing)} in {store.root} "
                               f"(sets: {', '.join(sorted(have)) or 'none'})")
        return HashSetStore(root, names)
    return store


ROLE_BY_FORMAT = {"vics": "alert", "nsrl-rdsv3": "ignore", "nsrl-txt": "ignore"}


# hex length -> the algorithms a hash of that length may be
LOOKUP_ALGORITHMS = {32: ("md5",), 40: ("sha1",), 64: ("sha256", "pdq"), 16: ("phash",)}


def lookup_many(store: HashSetStore, values: list[str], algorithm: Optional[str] = None,
                distance: Optional[int] = None) -> list[list]:
    """Each value's hits, in the order given. Values are grouped by algorithm (from their length
    unless `algorithm`) so each index is searched once for all of them; a value that is not hex
    of a known length is a HashSetError."""
    results: list[list] = [[] for _ in values]
    groups: dict[str, list[int]] = {}
    for i, v in enumerate(values):
        algs = (algorithm,) if algorithm else LOOKUP_ALGORITHMS.get(len(v))
        if not algs or not v or not all(c in "0123456789abcdefABCDEF" for c in v):
            raise HashSetError(f"{v!r} is not an MD5, SHA-1, SHA-256, PDQ or pHash in hex")
        for alg in algs:
            groups.setdefault(alg, []).append(i)
    for alg, idx in groups.items():
        batch = [values[i] for i in idx]
        found = (store.lookup_perceptual(alg, batch, distance) if alg in ("pdq", "phash")
                 else store.lookup(alg, batch))
        for i, hits in zip(idx, found):
            results[i].extend(hits)
    return results


def resolve_hashsets(store_root: str | Path | None, names_or_files: Iterable[str],
                     role_default: Optional[str] = None,
                     progress: Optional[Progress] = None) -> list[str]:
    """Set names for `triage scan --hashset NAME_OR_FILE`.

    A FILE is imported into the store under its stem (VICS as alert, NSRL as ignore, others
    as `role_default` or alert); the same file imported before is reused, a different file
    with the same stem gets `stem-2`, `stem-3`, .... A NAME must already be in the store.
    """
    store = HashSetStore(store_root)
    names: list[str] = []
    for arg in names_or_files:
        path = Path(arg)
        if not path.is_file():
            store.info(arg)                                 # raises with the sets there are
            names.append(arg)
            continue
        fmt = detect(path)
        role = ROLE_BY_FORMAT.get(fmt) or role_default or "alert"
        if fmt.startswith("nsrl"):
            role = "ignore"
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", path.name.split(".")[0]).strip("-._") or "set"
        stem = stem[:56]
        sha = None
        name, k = stem, 1
        while store._live(name) is not None:
            sha = sha or _sha256(path)
            if store.info(name).source_sha256 == sha:
                break
            k += 1
            name = f"{stem}-{k}"
        else:
            store.import_file(path, name, role, format=fmt, progress=progress)
        names.append(name)
    return names


def sets_for_scan(case_dir, hashset_args, store_root
                  ) -> tuple[tuple[tuple[str, tuple[str, ...]], ...], list[dict]]:
    """((store root, set names), ...) for the workers, and each set's provenance for the run.

    FILE arguments are imported into CASE_DIR/hashsets, so the case keeps its own copy of what
    it was matched against; NAME arguments are sets in `store_root` ($TRIAGE_HOME/hashsets).
    With no arguments, every set in `store_root` is used.
    """
    root = Path(store_root) if store_root else default_root()
    for a in hashset_args:
        p = Path(a)
        if p.is_file():
            continue
        if p.exists():
            raise HashSetError(f"{a} is not a file")
        # a name is letters, digits, . _ -; anything else (a path) must be a file that exists,
        # and a name not in the store may be a file name mistyped
        have = HashSetStore(root).names() if root.is_dir() else []
        if not _NAME.match(a) or "/" in a or a not in have:
            raise HashSetError(f"no such file: {a}" if not _NAME.match(a) or "/" in a else
                               f"no such file: {a}, and no hash set named {a} in {root} "
                               f"(sets: {', '.join(have) or 'none'})")
    files = [a for a in hashset_args if Path(a).is_file()]
    names = [a for a in hashset_args if not Path(a).is_file()]
    wanted: list[tuple[str, tuple[str, ...]]] = []
    if files:
        case_sets = Path(case_dir) / "hashsets"
        Path(case_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(case_dir, 0o700)
        old = os.umask(0o077)              # the case's copy of the sets: owner only, like the rest
        try:
            imported = resolve_hashsets(case_sets, files)
        finally:
            os.umask(old)
        wanted.append((str(case_sets.resolve()), tuple(dict.fromkeys(imported))))
    if names:
        open_sets(root, names)                      # unknown names: a HashSetError now
        wanted.append((str(root.resolve()), tuple(dict.fromkeys(names))))
    elif not hashset_args and HashSetStore(root).names():
        wanted.append((str(root.resolve()), tuple(HashSetStore(root).names())))
    provenance = []
    for where, set_names in wanted:
        store = HashSetStore(where)
        for name in set_names:
            info = store.info(name)
            provenance.append({"name": info.name, "version": info.version, "role": info.role,
                               "format": info.format, "records": info.records,
                               "source_name": info.source_name,
                               "source_sha256": info.source_sha256, "scheme": info.scheme,
                               "category_map": info.category_map, "rejected": info.rejected,
                               "rejected_examples": list(info.rejected_examples[:5]),
                               "imported_at": info.imported_at, "store": where})
    return tuple(wanted), provenance
