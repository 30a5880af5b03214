"""The scan driver: devices -> probe -> plan (per volume) -> batches -> store and flags.

One loop in the driver process does all the bookkeeping, following Ray's limit-pending-tasks
pattern: at most `max_in_flight` batches are submitted at a time, results are handled as they
finish (`ray.wait(num_returns=1)`), and planners are pulled only when there is room, so the
driver's and the object store's memory stay flat however large the evidence.

Every batch's results are written to the case store in one transaction, and its flags are
raised (store, flags.jsonl, console) the moment the result arrives. A failed batch (worker
crash, time limit) is retried once, then recorded as coverage, and the scan goes on.

With a model, a batch's pictures join one queue and reach the model actors in calls of the
size the pool measures fastest (workers/model_batches.py), so one call may carry pictures of
several batches and one batch may span several calls; a batch is done, and its model flags
raised, once every one of its pictures is answered, and a picture whose call failed is a
NOT_SCORED gap of that batch.
"""
from __future__ import annotations

import dataclasses
import getpass
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from triage import __version__
from triage.errors import TriageError
from triage import records
from triage.records import Coverage, EvidenceRef, VolumeRef, device_where, volume_where
from triage.store import CaseStore, ScanLock
from workers.batch import Backend, BatchResult, ScanOptions
from workers.plan import (PICTURE_TIERS, BatchHeader, BatchSpec, VolumePlan, halves, is_half,
                          tier_of_batch, unlisted_bytes)

TRIAGE_STOP_REASON = "not examined (triage mode)"
INTERRUPTED_REASON = "scan interrupted before the end"
MAX_ATTEMPTS = 2                      # a failed batch or walk is retried once
# Halvings of batches over their time limit, per device. Each costs a worker slot one more time
# limit (a file that hangs in a batch of 1,024 takes 10), so files planted to hang could
# otherwise multiply a scan's time; past this many, a batch over its limit is a gap whole.
MAX_TIMEOUT_SPLITS = 40
MAX_POSTPONED = 2                     # restarts of a batch's time limit while it may be queued
WAIT_TICK = 0.5                       # seconds between time-limit checks while idle


class Reporter:
    """Callbacks for progress display. The default does nothing (--quiet, --json, tests)."""

    console = None

    def device_added(self, device_id: str) -> None: ...
    def device_planned(self, device_id: str, files: int, nbytes: int) -> None: ...
    def batch_done(self, device_id: str, state: "DeviceState") -> None: ...
    def device_finished(self, device_id: str, state: "DeviceState") -> None: ...
    def warn(self, message: str) -> None: ...


@dataclass
class PlannerState:
    volume: VolumeRef
    gen: Any = None                   # ObjectRefGenerator
    attempts: int = 0
    seen: set = field(default_factory=set)
    plan: Optional[VolumePlan] = None
    pulled_files: int = 0
    pulled_bytes: int = 0
    finished: bool = False
    clears: list = field(default_factory=list)   # gaps its carving examines (removed when done)
    part: str = "files"               # files: the walk; free: carving the free space
    known: frozenset = frozenset()    # free: the deleted files' first bytes the walk found


@dataclass
class InFlight:
    device_id: str
    spec: BatchHeader
    spec_ref: Any                     # the planner's BatchSpec, passed on by reference
    attempts: int
    deadline: float
    postponed: int = 0                # deadlines restarted while it may not have started


@dataclass
class ModelJob:
    device_id: str
    spec: BatchHeader
    files: int
    items: list                       # (FileRecord, Features) of the pictures sent
    matches: list                     # their alert matches: a near-matched picture is no SUSPECTED_NEW
    frame_of: dict = field(default_factory=dict)   # video frames sent: key -> (video, number, s)
    pending: int = 0                  # pictures not yet answered (they may be in several calls)
    scores: list = field(default_factory=list)
    failed: list = field(default_factory=list)     # (keys, why) of calls that failed


@dataclass
class DeviceState:
    device_id: str
    paths: tuple[str, ...]
    context: Optional[dict] = None
    ref: Optional[EvidenceRef] = None
    phase: str = "waiting"            # waiting, probing, scanning, finished
    probe: Any = None
    # volume offset -> the walk's PlannerState; ("free", offset) -> its free space's
    planners: dict = field(default_factory=dict)
    volume_names: dict = field(default_factory=dict)   # volume offset -> VolumeRef.name
    done: set = field(default_factory=set)             # batch ids stored (earlier runs too)
    split_done: set = field(default_factory=set)       # batches of which only parts are stored
    in_flight: int = 0
    timeout_splits: int = 0                            # see MAX_TIMEOUT_SPLITS
    tier_batches: Counter = field(default_factory=Counter)     # planned, from the headers
    tier_accounted: Counter = field(default_factory=Counter)   # stored or recorded as coverage
    exact_alerts: set = field(default_factory=set)
    near: set = field(default_factory=set)
    files: int = 0
    bytes: int = 0
    pictures: int = 0
    flags: int = 0
    scored: int = 0
    model_skipped: int = 0
    total_files: int = 0
    total_bytes: int = 0
    coverage: int = 0
    stopped_early: bool = False
    failed: Optional[str] = None
    status: str = "pending"
    started: float = 0.0
    finished: float = 0.0
    first_flag: Optional[float] = None
    first_known_match: Optional[float] = None
    verify: Any = None
    verified: Optional[dict] = None

    def summary(self, t0: float) -> dict:
        return {
            "device": self.device_id, "evidence": list(self.paths), "status": self.status,
            "files": self.files, "bytes": self.bytes, "pictures": self.pictures,
            "alert_matches": len(self.exact_alerts), "near_matches": len(self.near),
            "flags": self.flags, "coverage_records": self.coverage, "scored": self.scored,
            "model_skipped": self.model_skipped,
            "stopped_early": self.stopped_early, "error": self.failed,
            "seconds": round(self.finished - self.started, 3) if self.finished else None,
            "first_flag_s": None if self.first_flag is None else round(self.first_flag - t0, 3),
            "first_known_match_s": (None if self.first_known_match is None
                                    else round(self.first_known_match - t0, 3)),
            "verified_hashes": self.verified,
        }


@dataclass
class ScanSummary:
    run_id: int
    status: str                       # complete, partial, interrupted
    seconds: float
    devices: list[dict]
    warnings: list[str]
    cluster: dict
    first_flag_s: Optional[float] = None
    first_known_match_s: Optional[float] = None
    ray_ready_s: Optional[float] = None       # start-up: from t0 until Ray was ready
    work_done_s: Optional[float] = None       # from t0 until every result was stored (Ray stops after)
    model_runtime: Optional[dict] = None      # the model actors' device and precision report

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def unique_device_ids(evidence: list[str], id_for: Callable[[str], str]) -> list[str]:
    """Device ids for EVIDENCE arguments, made unique in argument order ("a.E01", "a.E01-2")."""
    ids: list[str] = []
    for path in evidence:
        base = id_for(path)
        name, n = base, 2
        while name in ids:
            name, n = f"{base}-{n}", n + 1
        ids.append(name)
    return ids


class Scan:
    """One scan run over a list of devices. Use `run_scan`; the class keeps the loop's state."""

    def __init__(self, store: CaseStore, sink, devices: list[DeviceState], opts: ScanOptions, *,
                 backend: Backend, workers: int, resume: bool, verify: bool,
                 reporter: Reporter, max_in_flight: Optional[int] = None, model_pool=None,
                 thresholds: Optional[dict] = None,
                 max_active_devices: Optional[int] = None, t0: Optional[float] = None,
                 recovery_key: Optional[str] = None, password: Optional[str] = None,
                 alert_sets: int = 0, run_id: Optional[int] = None,
                 labels: Optional[dict] = None):
        import ray
        from workers import tasks
        self.ray, self.tasks = ray, tasks
        self.store, self.sink, self.opts, self.backend = store, sink, opts, backend
        self.devices = {d.device_id: d for d in devices}
        self.order = [d.device_id for d in devices]
        self.resume, self.verify, self.reporter = resume, verify, reporter
        self.workers = workers
        self.max_in_flight = max_in_flight or max(2, 2 * workers)
        self.max_active = max_active_devices or max(2, workers)
        self.in_flight: dict[Any, InFlight] = {}
        self.model_pool = model_pool
        # decode batches waiting for scores; their pictures queued, then in calls of the size
        # the pool measures fastest (workers/model_batches.py: BatchSizer), many batches a call
        self.model_jobs: dict[tuple, ModelJob] = {}
        from workers.model_batches import ModelQueue
        self.model_queue = ModelQueue()
        self.model_calls: dict[Any, list] = {}        # ref -> [(job, keys)]
        self.max_model_calls = 2 * len(model_pool.actors) + 1 if model_pool else 0
        self.thresholds = thresholds
        self.t0 = t0 or time.time()
        self.warnings: list[str] = []
        self.hash_engines: set[str] = set()    # recorded with the run (provenance)
        self.listers: set[str] = set()         # which code listed the file systems (the same)
        # kept out of ScanOptions, which the run record stores: keys never reach the case
        self.keys = (recovery_key, password) if (recovery_key or password) else ()
        self._rr = 0
        self.alert_sets = alert_sets            # none: every device gets a NOT_MATCHED gap
        self.run_id = run_id
        self.labels = labels or {}          # one category vocabulary in the flags and queue

    # --- the loop ---------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._activate()
            # warm the other workers while the first probes and walks run
            self._warm = [self.tasks.warm_up.remote(self.backend, self.opts)
                          for _ in range(max(0, self.workers - 1))]
            # and one process for the planners (0 CPUs: Ray starts it beside the others)
            self._warm.append(self.tasks.warm_up.options(num_cpus=0).remote(self.backend, self.opts))
            while True:
                self._activate()
                self._pull_batches()
                if self._all_finished():
                    return
                self._wait_and_handle()
                self._check_time_limits()
                for dev in list(self.devices.values()):
                    self._maybe_finish(dev)
        except KeyboardInterrupt:
            self._interrupt()
            raise

    def _all_finished(self) -> bool:
        return all(d.phase == "finished" for d in self.devices.values())

    def _active(self) -> list[DeviceState]:
        return [d for d in self.devices.values() if d.phase in ("probing", "scanning")]

    def _activate(self) -> None:
        """Starts devices (in argument order) while fewer than `max_active` are in progress."""
        for dev_id in self.order:
            if len(self._active()) >= self.max_active:
                return
            dev = self.devices[dev_id]
            if dev.phase != "waiting":
                continue
            dev.phase = "probing"
            dev.started = time.time()
            self.store.set_device_status(dev.device_id, "opening")
            dev.probe = self.tasks.probe_device.remote(self.backend, dev.paths, dev.device_id,
                                                       *self.keys)
            self.reporter.device_added(dev.device_id)

    def _planners(self) -> list[tuple[DeviceState, PlannerState]]:
        out = []
        for dev in self._active():
            for p in dev.planners.values():
                if p.gen is not None and not p.finished and not dev.stopped_early:
                    out.append((dev, p))
        return out

    def _room(self) -> bool:
        """Room for another batch: CPU batches below their bound, and the model stage keeping up."""
        if self.model_pool is not None and self._model_full():
            return False
        return len(self.in_flight) < self.max_in_flight

    def _pull_batches(self) -> None:
        """Moves ready batch specs from planners to workers, round robin across devices, while
        there is room in flight."""
        while self._room():
            planners = self._planners()
            if not planners:
                return
            gens = [p.gen for _, p in planners]
            ready, _ = self.ray.wait(gens, num_returns=len(gens), timeout=0)
            if not ready:
                return
            ready_ids = {id(g) for g in ready}
            candidates = [(d, p) for d, p in planners if id(p.gen) in ready_ids]
            self._rr = (self._rr + 1) % len(candidates)
            dev, planner = candidates[self._rr]
            self._pull_one(dev, planner)

    def _pull_one(self, dev: DeviceState, planner: PlannerState) -> None:
        try:
            ref = next(planner.gen)
        except StopIteration:
            planner.finished = True
            return
        try:
            item = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            self._planner_failed(dev, planner, exc)
            return
        if isinstance(item, VolumePlan):
            if planner.plan is None:
                self._volume_planned(dev, planner, item)
            return
        spec: BatchHeader = item
        try:            # its BatchSpec follows at once (see tasks.plan_device_volume)
            spec_ref = next(planner.gen)
        except StopIteration:
            planner.finished = True
            return
        if spec.batch_id in planner.seen:          # a restarted walk repeats what we have
            return
        planner.seen.add(spec.batch_id)
        planner.pulled_files += spec.files
        planner.pulled_bytes += spec.bytes
        if spec.batch_id in dev.done:              # stored by an earlier, interrupted run
            return
        if spec.batch_id in dev.split_done:
            self._resume_parts(dev, spec, spec_ref)
            return
        self._submit(dev, spec, spec_ref, attempts=1)

    def _resume_parts(self, dev: DeviceState, spec: BatchHeader, spec_ref) -> None:
        """A batch an earlier run halved (a crash or a file that hangs) and stored in part: only
        the parts it did not store go again, each as the part it was, so a file that hangs
        costs one time limit on resume, not every halving again."""
        whole = self._whole(spec_ref)
        if whole is None:
            self._submit(dev, spec, spec_ref, attempts=1)
            return
        parts: list = []

        def left(batch_id: str, recs: tuple) -> None:
            if batch_id in dev.done:
                return
            if len(recs) > 1 and any(d.startswith(batch_id + ".") for d in dev.done):
                for part_id, part in halves(batch_id, recs):      # as _split cut it
                    left(part_id, part)
            else:
                parts.append((batch_id, recs))

        left(spec.batch_id, whole.records)
        dev.tier_batches[spec.tier] += len(parts) - 1       # planned as one batch
        for part_id, recs in parts:
            self._submit_part(dev, spec, part_id, recs, whole.volume_length)

    def _submit_part(self, dev: DeviceState, spec: BatchHeader, part_id: str, recs: tuple,
                     volume_length: int) -> None:
        part = BatchSpec(dev.device_id, part_id, spec.volume_offset, spec.tier, recs,
                         volume_length)
        self._submit(dev, part.header, self.ray.put(part), attempts=1)

    def _limit(self, spec: BatchHeader) -> float:
        """A batch's time limit, in seconds."""
        return self.opts.timeout_for(spec.bytes, getattr(spec, "videos", 0))

    def _submit(self, dev: DeviceState, spec: BatchHeader, spec_ref, attempts: int) -> None:
        ref = self.tasks.scan_batch_task.remote(self.backend, dev.paths, spec_ref, self.opts,
                                                self.keys)
        self.in_flight[ref] = InFlight(dev.device_id, spec, spec_ref, attempts,
                                       time.monotonic() + self._limit(spec))
        dev.in_flight += 1

    def _wait_and_handle(self) -> None:
        waitables = list(self.in_flight) + list(self.model_calls)
        probes = {d.probe: d for d in self._active() if d.probe is not None}
        verifies = {d.verify: d for d in self.devices.values() if d.verify is not None}
        waitables += list(probes) + list(verifies)
        if self._room():
            waitables += [p.gen for _, p in self._planners()]
        if not waitables:
            time.sleep(0.05)
            return
        ready, _ = self.ray.wait(waitables, num_returns=1, timeout=WAIT_TICK)
        if not ready:
            return
        # take everything already finished in one go (no extra wait)
        more, _ = self.ray.wait(waitables, num_returns=len(waitables), timeout=0)
        for ref in more:
            if ref in self.in_flight:
                self._batch_finished(ref)
            elif ref in self.model_calls:
                self._scored(ref)
            elif ref in probes:
                self._probed(probes[ref])
            elif ref in verifies:
                self._verified(verifies[ref])
            # ready planners are pulled at the top of the loop

    # --- probes and planners ----------------------------------------------------------------

    def _probed(self, dev: DeviceState) -> None:
        ref, dev.probe = dev.probe, None
        try:
            evidence_ref, volumes, coverage = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            self._device_failed(dev, _error_line(exc))
            return
        dev.ref = evidence_ref
        self.store.upsert_device(evidence_ref, context=dev.context)
        self._start_device(dev)
        self.store.add_volumes(volumes)
        dev.volume_names = {v.offset: v.name for v in volumes}
        if coverage:
            self._coverage(dev, coverage)
        if self.verify:
            dev.verify = self.tasks.verify_media.remote(self.backend, dev.paths, dev.device_id)
        examinable = [v for v in volumes if v.fs_type and not v.encryption]
        dev.phase = "scanning"
        for v in examinable:
            dev.planners[v.offset] = PlannerState(volume=v)
            free = [c for c in coverage if c.kind == records.UNALLOCATED and c.where == v.where]
            if self.opts.carve and free:
                dev.planners[("free", v.offset)] = PlannerState(volume=v, clears=free, part="free")
        outside = [c for c in coverage if c.kind == records.UNPARTITIONED]
        if self.opts.carve and outside and evidence_ref.format != "directory":
            # the disk's bytes outside every volume: carved by a planner of their own
            space = VolumeRef(device_id=dev.device_id, index=-1, offset=records.UNPARTITIONED_OFFSET,
                              length=sum(c.bytes_not_examined for c in outside),
                              description="unpartitioned space")
            dev.planners[("free", space.offset)] = PlannerState(volume=space, clears=outside,
                                                                part="free")
        for planner in dev.planners.values():
            if planner.part == "files":
                self._start_planner(dev, planner)
        self._start_carving(dev)

    def _start_carving(self, dev: DeviceState) -> None:
        """Free space is carved once every walk of the device has ended: its files' first
        tiers go first, and the free space is read while their later tiers are hashed, never
        in front of them (a large disk's free space takes as long to read as its files)."""
        if dev.stopped_early:
            return
        if any(p.part == "files" and p.plan is None and not p.finished
               for p in dev.planners.values()):
            return
        walked = {p.volume.offset: p.plan for p in dev.planners.values()
                  if p.part == "files" and p.plan is not None}
        for planner in dev.planners.values():
            if planner.part == "free" and planner.gen is None and not planner.finished:
                plan = walked.get(planner.volume.offset)
                self._start_planner(dev, planner, known=plan.deleted_starts if plan else frozenset())

    def _start_device(self, dev: DeviceState) -> None:
        if self.resume:
            dev.done = self.store.done_batches(dev.device_id)
            # what an earlier run could not finish is examined now, or recorded again below
            for c in self.store.coverage(dev.device_id):
                if c.reason in (TRIAGE_STOP_REASON, INTERRUPTED_REASON) or \
                        c.kind in (records.NOT_MATCHED, records.PICTURE) and c.where.scope == "device":
                    self.store.remove_coverage(c)
            counts = self.store.counts(dev.device_id)
            dev.files, dev.bytes, dev.pictures = counts["files"], counts["bytes"], counts["pictures"]
            dev.scored, dev.model_skipped = counts["scored"], counts["model_skipped"]
            for m in self.store.matches(dev.device_id):
                if m.role == "alert":
                    (dev.exact_alerts if m.kind == "exact" else dev.near).add(m.key)
            dev.flags = counts["flags"]
            for batch in dev.done:
                if not is_half(batch):    # a split batch is planned (and counted) whole
                    dev.tier_accounted[tier_of_batch(batch)] += 1
            dev.split_done = {b.split(".", 1)[0] for b in dev.done if is_half(b)} - dev.done
        # a fresh scan archives the device's earlier results with their run: kept, not lost
        self.store.device_started(dev.device_id, dev.started, run_id=self.run_id,
                                  fresh=not self.resume)

    def _start_planner(self, dev: DeviceState, planner: PlannerState,
                       known: frozenset = frozenset()) -> None:
        """`known`: where the walk's deleted files start (carving skips their content)."""
        planner.attempts += 1
        planner.finished = False
        planner.known = known
        planner.gen = self.tasks.plan_device_volume.remote(self.backend, dev.paths,
                                                           planner.volume, self.opts, self.keys,
                                                           planner.part, known)

    def _volume_planned(self, dev: DeviceState, planner: PlannerState, plan: VolumePlan) -> None:
        planner.plan = plan
        if plan.listed_by:
            self.listers.add(plan.listed_by)
        for tier, totals in plan.tiers.items():
            dev.tier_batches[tier] += totals.batches
        dev.total_files += plan.files
        dev.total_bytes += plan.bytes
        if plan.coverage:
            self._coverage(dev, list(plan.coverage))
        if plan.carved and self.opts.carve:
            for c in planner.clears:          # carved through: what is left is in plan.coverage
                self.store.remove_coverage(c)
                dev.coverage -= 1
        self.reporter.device_planned(dev.device_id, dev.total_files, dev.total_bytes)
        if planner.part == "files":
            self._start_carving(dev)

    def _planner_failed(self, dev: DeviceState, planner: PlannerState, exc: Exception) -> None:
        if planner.attempts < MAX_ATTEMPTS:
            self._start_planner(dev, planner, planner.known)
            return
        planner.finished = True
        v = planner.volume
        if planner.part == "free":
            # its free-space gap (planner.clears) stays with its bytes; this says why
            self._coverage(dev, [Coverage(
                device_id=dev.device_id, kind=records.SCAN_INCOMPLETE, where=v.where,
                reason=f"carving of free space failed twice: {_error_line(exc)}")])
            return
        self._coverage(dev, [Coverage(
            device_id=dev.device_id, kind=records.SCAN_INCOMPLETE, where=v.where,
            reason=f"file system walk failed twice: {_error_line(exc)}",
            bytes_not_examined=unlisted_bytes(v.length, planner.pulled_bytes))])
        self._start_carving(dev)

    # --- batches ----------------------------------------------------------------------------

    def _batch_finished(self, ref) -> None:
        job = self.in_flight.pop(ref)
        dev = self.devices[job.device_id]
        dev.in_flight -= 1
        try:
            result: BatchResult = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            self._batch_failed(dev, job, _error_line(exc))
            return
        self._store_result(dev, job.spec, result)

    def _store_result(self, dev: DeviceState, spec: BatchHeader, result: BatchResult) -> None:
        from triage.flags import rules_for_batch

        # flags first: a crash between the two then re-scans the batch and the flags dedupe,
        # where the other order could lose a flag for good
        flags = rules_for_batch(dev.device_id, dev.context, result.items, result.matches, [],
                                result.coverage, time.time(), thresholds=self.thresholds,
                                labels=self.labels)
        self._raise(dev, flags)
        if result.hash_engine:
            self.hash_engines.add(result.hash_engine)
        to_model = result.model_inputs if self.model_pool is not None else []
        self.store.add_batch(dev.device_id, result.batch_id, result.items, result.matches, [],
                             result.coverage, done=not to_model,
                             model_skips=result.model_skips, rows=result.rows)
        if self.resume:       # an earlier run may have given up on this batch
            self.store.remove_batch_coverage(dev.device_id, spec.batch_id)
        if to_model:
            self._send_to_model(dev, spec, result)
        else:
            dev.done.add(result.batch_id)
        dev.tier_accounted[spec.tier] += 1
        dev.files += result.files
        dev.bytes += result.bytes_read
        dev.pictures += result.pictures
        dev.model_skipped += len(result.model_skips)
        dev.coverage += len(result.coverage)
        dev.exact_alerts |= {m.key for m in result.matches if m.kind == "exact" and m.role == "alert"}
        dev.near |= {m.key for m in result.matches if m.kind == "near" and m.role == "alert"}
        self.reporter.batch_done(dev.device_id, dev)
        self._check_triage_stop(dev)

    def _send_to_model(self, dev: DeviceState, spec: BatchHeader, result: BatchResult) -> None:
        keys = [k for k, _ in result.model_inputs]
        wanted = set(keys) | {v for v, _, _ in result.frame_of.values()}
        items = [(r, f) for r, f in result.items if r.key in wanted]
        matches = [m for m in result.matches if m.key in wanted and m.role == "alert"]
        job = (dev.device_id, spec.batch_id)
        self.model_jobs[job] = ModelJob(dev.device_id, spec, result.stored_files, items, matches,
                                        result.frame_of, pending=len(keys))
        dev.in_flight += 1
        self.model_queue.add(job, keys, [x for _, x in result.model_inputs])
        if self.model_pool.batching == "batch":        # one call per decode batch, as it came
            self._call_model(len(keys))
        else:
            self._feed_model()

    def _model_full(self) -> bool:
        """The model stage has enough work: no decode batch is pulled until it catches up.
        Full when as many decode batches wait for scores as calls may be in flight (large
        yields: as before batching adapted) and enough pictures wait to fill that many calls
        (small yields: enough to coalesce)."""
        if len(self.model_jobs) < self.max_model_calls:
            return False
        if self.model_pool.batching == "batch":
            return True
        waiting = len(self.model_queue) + sum(len(k) for parts in self.model_calls.values()
                                              for _, k in parts)
        return waiting >= self.max_model_calls * self.model_pool.target(self.workers)

    def _model_idle_cpus(self) -> int:
        """The cores the decode workers leave the model (an adaptive pool runs that many
        threads): all of them once the model's queue is full, as no batch is pulled then until
        the model catches up, or when no batch is left to decode."""
        return self.workers if self._model_full() else max(0, self.workers - len(self.in_flight))

    def _feed_model(self) -> None:
        """Queued pictures to the actors: a call of the measured size whenever one is full, and
        what there is whenever an actor would otherwise wait (never holding pictures back from
        an idle model)."""
        while self.model_queue and len(self.model_calls) < self.max_model_calls:
            target = self.model_pool.target(self._model_idle_cpus())
            if len(self.model_queue) < target and len(self.model_calls) >= len(self.model_pool.actors):
                return          # every actor busy: let more pictures join this call
            self._call_model(target)

    def _call_model(self, n: int) -> None:
        idle = self._model_idle_cpus()
        keys, pixels, parts = self.model_queue.take(n)
        if keys:
            self.model_calls[self.model_pool.submit(keys, pixels, idle_cpus=idle)] = parts

    def _scored(self, ref) -> None:
        parts = self.model_calls.pop(ref)
        try:
            answer = self.ray.get(ref)
            self.model_pool.done(ref, answer)
            by_key = {s.key: s for s in answer.scores}
            for job, keys in parts:
                got = self.model_jobs[job]
                got.scores += [by_key[k] for k in keys if k in by_key]
                missing = [k for k in keys if k not in by_key]
                if missing:         # never silently unscored: a gap like a failed call
                    got.failed.append((missing, "the model returned no score"))
        except self.ray.exceptions.RayError as exc:
            self.model_pool.done(ref)
            for job, keys in parts:
                self.model_jobs[job].failed.append((keys, _error_line(exc)))
        for job, keys in parts:
            got = self.model_jobs[job]
            got.pending -= len(keys)
            if got.pending <= 0:
                self._model_job_done(self.model_jobs.pop(job))
        self._feed_model()

    def _model_job_done(self, job: ModelJob) -> None:
        """Every picture of a decode batch answered: its scores (a video's frames made one
        score), a NOT_SCORED gap for those in failed calls, the batch done, its flags."""
        from triage.flags import rules_for_batch

        dev = self.devices[job.device_id]
        dev.in_flight -= 1
        scores = _video_scores(job.scores, job.frame_of)
        coverage = []
        if job.failed:
            lost = {job.frame_of[k][0] if k in job.frame_of else k
                    for keys, _ in job.failed for k in keys}
            where = volume_where(dev.device_id, job.spec.volume_offset)
            coverage = [Coverage(device_id=dev.device_id, kind=records.NOT_SCORED, where=where,
                                 reason=f"{len(lost)} pictures of batch {job.spec.batch_id} "
                                        f"not scored by the model: {job.failed[0][1]}",
                                 bytes_not_examined=sum(r.size for r, _ in job.items
                                                        if r.key in lost))]
        self.store.mark_batch_done(dev.device_id, job.spec.batch_id, scores, coverage, job.files)
        dev.done.add(job.spec.batch_id)
        dev.scored += len(scores)
        dev.coverage += len(coverage)
        # the matches come again so near-matched pictures are not also called new; their
        # NEAR_MATCH flags were raised with the batch and dedupe here
        flags = rules_for_batch(dev.device_id, dev.context, job.items, job.matches, scores, coverage,
                                time.time(), thresholds=self.thresholds, labels=self.labels)
        self._raise(dev, flags)
        self.reporter.batch_done(dev.device_id, dev)

    def _batch_failed(self, dev: DeviceState, job: InFlight, reason: str,
                      crashed: bool = True) -> None:
        """A crashed batch goes again once (a lost node or a memory spike passes), then in
        halves. A batch over its time limit goes straight to halves: the same files again
        would take as long, and its other files should not wait for a second limit."""
        if crashed and job.attempts < MAX_ATTEMPTS and not dev.stopped_early:
            self._submit(dev, job.spec, job.spec_ref, job.attempts + 1)
            return
        spec = job.spec
        spent = not crashed and dev.timeout_splits >= MAX_TIMEOUT_SPLITS
        whole = None if dev.stopped_early or spent else self._whole(job.spec_ref)
        if whole is not None and whole.files > 1:
            if not crashed:
                dev.timeout_splits += 1
            self._split(dev, job, whole)
            return
        if spent and not dev.stopped_early:
            reason += f" (this device's {MAX_TIMEOUT_SPLITS} halvings for such batches are spent)"
        where = volume_where(dev.device_id, spec.volume_offset)
        if whole is not None and whole.files == 1:
            where = whole.records[0].prov       # the one file its worker dies on
        dev.tier_accounted[spec.tier] += 1
        self._coverage(dev, [Coverage(
            device_id=dev.device_id, kind=records.SCAN_INCOMPLETE, where=where,
            reason=f"{spec.files} file{'' if spec.files == 1 else 's'} of batch {spec.batch_id} "
                   f"not examined: {reason} (after {job.attempts} "
                   f"{'try' if job.attempts == 1 else 'tries'})",
            bytes_not_examined=spec.bytes, batch_id=spec.batch_id)])
        self._check_triage_stop(dev)

    def _whole(self, spec_ref) -> Optional[BatchSpec]:
        """A batch with its records (the driver otherwise never unpacks them)."""
        try:
            whole = self.ray.get(spec_ref)
            whole.records       # unpacked here, so a block that will not unpack is a gap whole
            return whole
        except Exception:   # noqa: BLE001 - the batch is then a gap whole, as before
            return None

    def _split(self, dev: DeviceState, job: InFlight, whole: BatchSpec) -> None:
        """A batch whose worker died on both tries, or that ran over its time limit, goes
        again as two halves, and they as theirs, down to the file that kills its worker or
        never ends: that file is the gap, not the other files of its batch (a later tier's
        batch holds up to 1,024). A file that hangs costs its worker slot the batch's limit and
        one per halving (11 for 1,024 files), each counted from its half's bytes; the
        other workers go on meanwhile (MAX_TIMEOUT_SPLITS bounds it per device)."""
        spec = job.spec
        for part_id, recs in halves(spec.batch_id, whole.records):
            self._submit_part(dev, spec, part_id, recs, whole.volume_length)
        dev.tier_batches[spec.tier] += 1       # one planned batch is two now

    def _check_time_limits(self) -> None:
        now = time.monotonic()
        jobs = list(self.in_flight.items())          # in the order they were submitted
        for i, (ref, job) in enumerate(jobs):
            if now < job.deadline:
                continue
            if self.ray.wait([ref], timeout=0)[0]:
                continue    # answered at the last moment: taken as it is (a forced cancel
                            # racing its reply can abort the driver inside Ray)
            if i >= self.workers and job.postponed < MAX_POSTPONED:
                # A limit runs from submission, and up to twice the workers are in flight: as
                # many batches submitted before this one held every worker until now (Ray
                # starts a scan's batches in order), so it may never have started. Its clock
                # starts again; bounded, so that no order Ray might take keeps a hang alive.
                job.deadline = now + self._limit(job.spec)
                job.postponed += 1
                continue
            self.ray.cancel(ref, force=True)
            del self.in_flight[ref]
            dev = self.devices[job.device_id]
            dev.in_flight -= 1
            self._batch_failed(dev, job, f"over its time limit of {self._limit(job.spec):.0f} s",
                               crashed=False)

    # --- triage mode ------------------------------------------------------------------------

    def _check_triage_stop(self, dev: DeviceState) -> None:
        """Stops a device once it has enough exact alert matches and one full picture pass."""
        if self.opts.mode != "triage" or dev.stopped_early:
            return
        if len(dev.exact_alerts) < self.opts.stop_after:
            return
        if any(p.part == "files" and p.plan is None and not p.finished
               for p in dev.planners.values()):
            return      # not every volume has been walked yet, so the picture pass is unknown
        if any(dev.tier_accounted[t] < dev.tier_batches[t] for t in PICTURE_TIERS):
            return
        dev.stopped_early = True
        coverage = []
        for p in dev.planners.values():
            if p.plan is None and not p.finished:
                # free space still being carved (or not yet): it stays a gap with its bytes
                if p.gen is not None:
                    self.ray.cancel(p.gen)
                p.finished = True
                continue
            if p.plan is None or (p.finished and p.pulled_files >= p.plan.files):
                continue
            if p.gen is not None and not p.finished:
                self.ray.cancel(p.gen)
            p.finished = True
            left_files = p.plan.files - p.pulled_files
            if left_files > 0:
                coverage.append(Coverage(
                    device_id=dev.device_id, kind=records.SCAN_INCOMPLETE, where=p.volume.where,
                    reason=TRIAGE_STOP_REASON, bytes_not_examined=p.plan.bytes - p.pulled_bytes))
        if coverage:
            self._coverage(dev, coverage)

    # --- devices ----------------------------------------------------------------------------

    def _maybe_finish(self, dev: DeviceState) -> None:
        if dev.phase != "scanning" or dev.in_flight:
            return
        if any(not p.finished for p in dev.planners.values()):
            return
        if dev.verify is not None:
            return
        self._finish(dev)

    def _finish(self, dev: DeviceState, status: Optional[str] = None) -> None:
        dev.finished = time.time()
        if status != "failed":
            self._scan_wide_gaps(dev)
        if status is None:
            status = "partial" if self.store.coverage(dev.device_id) else "complete"
        dev.status = status
        dev.phase = "finished"
        if all(d.phase == "finished" for d in self.devices.values()):
            # every batch is stored: the hash indexes are sorted while the counts are read
            self.store.start_hash_indexes()
        self.store.device_finished(dev.device_id, dev.finished, status)
        self.reporter.device_finished(dev.device_id, dev)

    def _scan_wide_gaps(self, dev: DeviceState) -> None:
        """What this scan's settings left out on every device: no alert set to match against
        (an empty store, or known-software sets only), or picture analysis turned off."""
        gaps = []
        where = device_where(dev.device_id)
        if not self.alert_sets:
            gaps.append(Coverage(dev.device_id, records.NOT_MATCHED, where,
                                 "no alert hash set was given: nothing on this device was "
                                 "compared with known material", dev.bytes))
        if not self.opts.pictures:
            gaps.append(Coverage(dev.device_id, records.PICTURE, where,
                                 f"picture analysis was off: {dev.pictures} pictures have no "
                                 "perceptual hash and no model score", 0))
        if gaps:
            self._coverage(dev, gaps)

    def _device_failed(self, dev: DeviceState, reason: str) -> None:
        dev.failed = reason
        size = 0
        for p in dev.paths:
            try:
                size += os.path.getsize(p)
            except OSError:
                pass
        fmt = "unknown"
        dev.ref = EvidenceRef(device_id=dev.device_id, paths=dev.paths, format=fmt, media_size=size)
        self.store.upsert_device(dev.ref, context=dev.context)
        self._start_device(dev)
        self._coverage(dev, [Coverage(device_id=dev.device_id, kind=records.EVIDENCE_NOT_OPENED,
                                      where=device_where(dev.device_id),
                                      reason=f"evidence could not be opened: {reason}",
                                      bytes_not_examined=size)])
        self.warnings.append(f"{dev.device_id}: not examined: {reason}")
        self.reporter.warn(f"{dev.device_id}: not examined: {reason}")
        self._finish(dev, "failed")

    def _verified(self, dev: DeviceState) -> None:
        ref, dev.verify = dev.verify, None
        try:
            hashes = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            why = _error_line(exc)
            self.warnings.append(f"{dev.device_id}: media hash not verified: {why}")
            self._coverage(dev, [Coverage(dev.device_id, records.MEDIA_DAMAGED,
                                          device_where(dev.device_id),
                                          f"media hash not verified: {why}")])
            return
        dev.verified = hashes
        self.store.set_verified_hashes(dev.device_id, hashes)
        stored = (dev.ref.stored_hashes if dev.ref else {}) or {}
        for algo, value in stored.items():
            got = hashes.get(algo)
            if got and value and got.lower() != str(value).lower():
                msg = (f"{dev.device_id}: {algo} of the media is {got}, the container stores "
                       f"{value}: the image may have changed since acquisition")
                self.warnings.append(msg)
                self.reporter.warn(msg)

    # --- coverage, flags, interrupts --------------------------------------------------------

    def _coverage(self, dev: DeviceState, items: list[Coverage]) -> None:
        from triage.flags import rules_for_batch

        self.store.add_coverage(items)
        dev.coverage += len(items)
        self._raise(dev, rules_for_batch(dev.device_id, dev.context, [], [], [], items,
                                         time.time(), volume_names=dev.volume_names))

    def _raise(self, dev: DeviceState, flags) -> None:
        if not flags:
            return
        new = self.sink.raise_all(flags)
        dev.flags += new
        if new:
            now = time.time()
            dev.first_flag = dev.first_flag or now
            if any(f.code == "KNOWN_MATCH" for f in flags):
                dev.first_known_match = dev.first_known_match or now

    def _interrupt(self) -> None:
        # Batches in flight are dropped, not cancelled: the session's end stops their workers
        # (a private instance is shut down; a cluster kills the tasks of a driver that left),
        # and a forced cancel racing a batch's reply aborts the driver inside Ray's core worker
        # ("Tried to complete task that was not pending"), with a C++ stack for an exit.
        self.in_flight.clear()
        for ref in list(self.model_calls):     # else Ray retries them on actors being killed
            try:
                self.ray.cancel(ref)
            except Exception:   # noqa: BLE001 - best effort while stopping
                pass
        self.model_calls.clear()
        self.model_queue.clear()
        self.model_jobs.clear()
        for dev in self.devices.values():
            for p in dev.planners.values():
                if p.gen is not None and not p.finished:
                    try:
                        self.ray.cancel(p.gen)
                    except Exception:   # noqa: BLE001 - best effort while stopping
                        pass
            if dev.phase in ("scanning", "probing") and dev.ref is not None:
                self.store.add_coverage([Coverage(dev.device_id, records.SCAN_INCOMPLETE,
                                                  device_where(dev.device_id),
                                                  INTERRUPTED_REASON)])
                dev.finished = time.time()
                dev.status = "interrupted"
                self.store.device_finished(dev.device_id, dev.finished, "interrupted")


def _video_scores(scores: list, frame_of: dict) -> list:
    """The model's scores with each video's frame scores made into one score of the video
    (triage.classify.video_score: the highest per label, every frame kept)."""
    if not frame_of:
        return scores
    from triage.classify import video_score
    out, frames = [], {}
    for s in scores:
        got = frame_of.get(s.key)
        if got is None:
            out.append(s)
        else:
            video, number, seconds = got
            frames.setdefault(video, []).append((number, seconds, s))
    return out + [video_score(video, fs) for video, fs in frames.items()]


def _error_line(exc: BaseException) -> str:
    """One line for a task failure: the worker's own exception when there is one."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException) and not isinstance(cause, type(exc)):
        text = f"{cause}" or type(cause).__name__
    else:
        name = type(exc).__name__
        if name in ("WorkerCrashedError", "NodeDiedError", "ActorDiedError", "ObjectLostError",
                    "OwnerDiedError", "OutOfMemoryError"):
            text = {"WorkerCrashedError": "worker process crashed",
                    "NodeDiedError": "node died",
                    "OutOfMemoryError": "worker ran out of memory"}.get(name, name)
        elif name == "TaskCancelledError":
            text = "task cancelled"
        else:
            text = str(exc) or name
    lines = [ln for ln in str(text).splitlines() if ln.strip()]
    return (lines[-1] if lines else "unknown failure")[:300]


def run_scan(case_dir, evidence: list[str], opts: ScanOptions, *, hashsets: list[dict] = (),
             context_file=None, address: Optional[str] = None, workers: Optional[int] = None,
             resume: bool = False, verify: bool = False, dashboard: bool = False,
             reporter: Optional[Reporter] = None, backend: Optional[Backend] = None,
             operator: Optional[str] = None, max_in_flight: Optional[int] = None,
             recovery_key: Optional[str] = None, password: Optional[str] = None,
             allow_plaintext_key: bool = False, t0: Optional[float] = None,
             replace: bool = False, case_ref: Optional[str] = None) -> ScanSummary:
    """Scans every EVIDENCE argument (one device each) into the case at `case_dir`.

    `hashsets` is the provenance of the hash sets in `opts.hashsets` (name, version,
    role, ...), written to the run record. Returns a summary; raises TriageError for bad input
    and KeyboardInterrupt (after storing everything found so far) on Ctrl-C.
    A device scanned before keeps its earlier runs (archived in the case); a re-scan weaker
    than its last complete run is refused unless `replace` (triage.runs.check_rescan).
    """
    from triage.classify import category_labels_of
    from triage.flags import FlagSink
    from workers.runtime import check_key_transport, collecting_less, ray_session

    t0 = t0 or time.time()
    if not evidence:
        raise TriageError("no EVIDENCE given: name one image (or image set) per device")
    if opts.mode not in ("triage", "full"):
        raise TriageError(f"mode must be triage or full, not {opts.mode!r}")
    for path in evidence:
        if not os.path.exists(path):
            raise TriageError(f"evidence not found: {path}")
    check_key_transport(address, bool(recovery_key or password), allow_plaintext_key)
    backend = backend or Backend()
    reporter = reporter or Reporter()
    contexts = {}
    if context_file:
        from triage.context import load_context
        contexts = load_context(context_file)
    # "live": the scan resumes and extends the result tables as they are, never an archived run
    store = CaseStore(case_dir, create=True, results="live")
    # one scan per case at a time: a second one would mix its results with the first's
    lock = ScanLock(case_dir)
    ids = unique_device_ids(list(evidence), backend.device_id_for)
    try:
        if case_ref is not None:
            store.set_case_ref(case_ref)
        if resume:
            _check_resumable(store, opts, hashsets)
            rescan_notes = []
        else:
            from triage.runs import check_rescan
            rescan_notes = check_rescan(store, ids, list(hashsets), opts.model, replace)
    except BaseException:
        lock.release()
        store.close()
        raise
    devices = []
    from triage.context import match_context
    for path, dev_id in zip(evidence, ids):
        devices.append(DeviceState(device_id=dev_id, paths=(os.path.abspath(path),),
                                   context=match_context(contexts, [path]) if contexts else None))
    options = dataclasses.asdict(opts)
    options.update(evidence=[os.path.abspath(p) for p in evidence], resume=resume,
                   address=address, workers=workers, verify=verify)
    run_id = store.begin_run(tool_version=__version__, hashsets=list(hashsets), model=opts.model,
                             operator=operator or _operator(), options=options)
    store.queue_devices((d.device_id, d.paths) for d in devices)   # the queue lists them at once
    sink = FlagSink(case_dir, store, console=reporter.console)
    no_alert = "" if any(h.get("role") == "alert" for h in hashsets) else (
        "no alert hash set: no device is matched against known material, and none can be "
        "reported clean (give --hashset with a CAID or Project VIC set)")
    status = "interrupted"
    cluster: dict = {}
    scan = None
    ray_ready = work_done = None
    model_runtime: dict = {}
    try:
        with ray_session(address=address, workers=workers, dashboard=dashboard) as cluster:
            ray_ready = time.time() - t0
            n_workers = workers or max(1, cluster.get("cpus", 1))
            pool = None
            if opts.model:
                from workers.model_pool import ModelPool, cpu_layout
                gpus = cluster.get("gpus", 0)
                if gpus:
                    pool = ModelPool(opts.model, size=gpus, gpus=gpus)
                else:
                    actors, threads = cpu_layout(n_workers)
                    pool = ModelPool(opts.model, size=actors, cpu_threads=threads, cpus=0,
                                     max_threads=n_workers)
            scan = Scan(store, sink, devices, opts, backend=backend, workers=n_workers,
                        resume=resume, verify=verify, reporter=reporter,
                        max_in_flight=max_in_flight, t0=t0, recovery_key=recovery_key,
                        password=password, model_pool=pool,
                        alert_sets=sum(1 for h in hashsets if h.get("role") == "alert"),
                        run_id=run_id, labels=category_labels_of(hashsets),
                        thresholds=(opts.model or {}).get("thresholds") or None)
            for note in rescan_notes:
                reporter.warn(note)
                scan.warnings.append(note)
            if no_alert:                        # once Ray is up: a scan that cannot start says only why
                reporter.warn(no_alert)
                scan.warnings.append(no_alert)
            try:
                with collecting_less():
                    scan.run()
                work_done = time.time() - t0
            finally:
                if pool is not None:
                    model_runtime = pool.describe(timeout=5)
                    if model_runtime:
                        model_runtime["batching"] = pool.batching_report()
                    pool.close()
        statuses = {d.status for d in devices}
        status = ("complete" if statuses == {"complete"} else
                  "failed" if statuses == {"failed"} else "partial")
    finally:
        for d in devices:
            if d.ref is None and not d.failed:      # never opened: back to its last run's state
                store.restore_status(d.device_id)
        store.end_run(run_id, status, hash_engines=sorted(scan.hash_engines) if scan else [],
                      listers=sorted(scan.listers) if scan else [], model_runtime=model_runtime)
        sink.close()
        store.close()
        lock.release()
    firsts = [d.first_flag for d in devices if d.first_flag]
    known = [d.first_known_match for d in devices if d.first_known_match]
    return ScanSummary(run_id=run_id, status=status, seconds=round(time.time() - t0, 3),
                       devices=[d.summary(t0) for d in devices], warnings=scan.warnings,
                       cluster=cluster,
                       first_flag_s=round(min(firsts) - t0, 3) if firsts else None,
                       first_known_match_s=round(min(known) - t0, 3) if known else None,
                       ray_ready_s=None if ray_ready is None else round(ray_ready, 3),
                       work_done_s=None if work_done is None else round(work_done, 3),
                       model_runtime=model_runtime or None)


# Options that change what a batch finds: a resume with different ones would mix two scans.
_RESUME_KEYS = ("pictures", "archives", "sha256", "perceptual", "batch_files", "batch_bytes",
                "batch_plan",
                "carve",     # carved items are in the batches: their ids depend on it
                "video", "video_limits", "vpdq",
                "video_spool")      # on or off: large videos decoded or a gap (not the folder)
# What a run stored before a key existed meant (a run without "batch_plan" cut every tier at
# batch_files: the ids of its later tiers' batches name other files now)
_RESUME_BEFORE = {"batch_plan": 1}
# Keys compared by what they change in a batch's results, not by their value
_RESUME_AS = {"video_spool": lambda v: v == "off"}


def _check_resumable(store: CaseStore, opts: ScanOptions, hashsets) -> None:
    runs = store.runs()
    if not runs:
        return
    last = runs[-1]["options"]
    now = dataclasses.asdict(opts)
    changed = [k for k in _RESUME_KEYS if (k in last or k in _RESUME_BEFORE)
               and _RESUME_AS.get(k, _norm)(last.get(k, _RESUME_BEFORE.get(k)))
               != _RESUME_AS.get(k, _norm)(now[k])]
    before = sorted((h.get("name"), str(h.get("version"))) for h in runs[-1]["hashsets"])
    after = sorted((h.get("name"), str(h.get("version"))) for h in hashsets)
    if before != after:
        changed.append("hash sets")
    if changed:
        raise TriageError("--resume needs the same settings as the interrupted scan; changed: "
                          + ", ".join(changed) + " (scan without --resume to start afresh)")


def _norm(v):
    # as the run's options were stored: JSON (tuples, nested ones too, become lists)
    return json.loads(json.dumps(v, default=str))


def _operator() -> str:
    try:
        return os.environ.get("USER") or getpass.getuser()
    except Exception:   # noqa: BLE001 - no passwd entry in some containers
        return "unknown"


def prepare_scan(case_dir, *, hashset_args=(), store_root=None, model: str = "none",
                 mode: str = "triage", stop_after: int = 10, pictures: bool = True,
                 sha256: bool = False, task_timeout: float = 300.0,
                 model_precision: str = "auto", model_first_stage: str = "on",
                 **extra) -> tuple[ScanOptions, list[dict]]:
    """Turns CLI arguments into ScanOptions and the hash sets' provenance.

    FILE arguments are imported into CASE_DIR/hashsets (the case keeps its own copy of what it
    was matched against); NAME arguments are looked up in the store.
    """
    from hashsets.store import sets_for_scan
    from models.registry import for_scan
    wanted, provenance = sets_for_scan(case_dir, hashset_args, store_root)
    model_info = for_scan(model, model_precision, model_first_stage)
    opts = ScanOptions(mode=mode, stop_after=stop_after, pictures=pictures, sha256=sha256,
                       hashsets=wanted, task_timeout=task_timeout, model=model_info, **extra)
    return opts, provenance
