"""The Ray tasks of a scan. Everything that touches evidence runs here, in worker processes,
so a crash in TSK or libyal (a segfault on a corrupt image) costs a task, never the driver.

Each worker process keeps one `WorkerContext` (open evidence, hash-set stores), made on first
use: Ray reuses worker processes across tasks, so a device is opened once per process.
"""
from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import Iterator, Optional

import ray

from triage.errors import TriageError
from triage.records import (PLAIN_AT, SCAN_INCOMPLETE, UNPARTITIONED_OFFSET, Coverage,
                            EvidenceRef, VolumeRef, plain_common)
from workers.batch import Backend, BatchResult, ScanOptions, WorkerContext, scan_batch
from workers.plan import BatchHeader, BatchSpec, VolumePlan, bounded, plan_volume, unlisted_bytes
from workers.runtime import collect_less

# Batch specs a planner may have produced ahead of the driver: the walk is spooled to disk,
# so this bounds only what sits in the object store.
PLANNER_AHEAD = 4

_context: Optional[WorkerContext] = None
_PLAIN_SIZE = PLAIN_AT["size"]


def worker_context(backend: Backend) -> WorkerContext:
    """This process's context (one per worker process; rebuilt if the backend changes)."""
    global _context
    if _context is None or type(_context.backend) is not type(backend):
        if _context is not None:
            _context.close()
        _context = WorkerContext(backend)
        collect_less()              # a worker process lives for the scan's batches
    return _context


@ray.remote(num_cpus=1, max_retries=0)
def probe_device(backend: Backend, paths: tuple[str, ...], device_id: str,
                 recovery_key: Optional[str] = None, password: Optional[str] = None,
                 ) -> tuple[EvidenceRef, list[VolumeRef], list[Coverage]]:
    """Opens a device and finds its volumes. Raises TriageError for evidence that is not one."""
    ctx = worker_context(backend)
    evidence = ctx.evidence(paths, device_id)
    volumes, coverage = backend.discover(evidence, recovery_key=recovery_key, password=password)
    return evidence.ref, list(volumes), list(coverage)


def _guarded(records, device_id: str, volume: VolumeRef, problems: list,
             what: str = "file system walk", walk: bool = True) -> Iterator:
    """The walk (or the carving, `walk` False), with a failure part-way turned into a coverage
    record (what was found stays). A walk's gap holds the volume's bytes its listed files do
    not (unlisted_bytes, the driver's rule for a walk that fails whole)."""
    listed = 0
    try:
        if not walk:
            yield from records
            return
        for rec in records:
            if type(rec) is tuple:              # a plain file (records.PLAIN_FIELDS)
                listed += bounded(rec[_PLAIN_SIZE], volume.length)
            elif not rec.is_dir:
                listed += bounded(rec.size, volume.length)
            yield rec
    except Exception as exc:   # noqa: BLE001 - any walk failure is coverage, never a lost volume
        problems.append(Coverage(device_id=device_id, kind=SCAN_INCOMPLETE, where=volume.where,
                                 reason=f"{what} stopped: {exc}".splitlines()[0][:300],
                                 bytes_not_examined=unlisted_bytes(volume.length, listed)
                                 if walk else 0))


# num_cpus=0: a planner spends most of its life parked on back-pressure; holding a CPU slot
# while parked would starve the batch tasks it feeds. The driver bounds how many run at once.
@ray.remote(num_cpus=0, max_retries=0, _generator_backpressure_num_objects=PLANNER_AHEAD)
def plan_device_volume(backend: Backend, paths: tuple[str, ...], volume: VolumeRef,
                       opts: ScanOptions, keys: tuple = (), part: str = "files",
                       known: frozenset = frozenset(),
                       ) -> Iterator[VolumePlan | BatchHeader | BatchSpec]:
    """The batches of one volume: its files (`part="files"`: the walk), or what carving its
    free space finds (`part="free"`; the pseudo-volume of unpartitioned space has only this).
    The driver starts a volume's free-space planner once the walks are done, so unallocated
    space is read while the files' later tiers are hashed, not in front of them. `known`: the
    first bytes of the deleted files the walk found (their content is not carved again)."""
    ctx = worker_context(backend)
    evidence = ctx.evidence(paths, volume.device_id, keys)
    problems: list[Coverage] = []
    carved: list = []
    free = part == "free" or volume.offset == UNPARTITIONED_OFFSET
    deleted = None
    if free:
        records = _guarded(backend.carve(evidence, volume, problems, carved, opts.carve_seconds,
                                         known=known),
                           volume.device_id, volume, problems, "carving of free space",
                           walk=False)
    else:
        deleted = backend.deleted_starts(evidence, volume)
        records = _guarded(backend.walk(evidence, volume, problems, plain=True),
                           volume.device_id, volume, problems)
    for item in plan_volume(records, volume.device_id, volume.offset, max_files=opts.batch_files,
                            max_bytes=opts.batch_bytes, coverage=problems,
                            volume_length=volume.length, carved=carved,
                            plain=plain_common(volume),
                            free_space=free and volume.offset != UNPARTITIONED_OFFSET,
                            deleted_starts=deleted):
        if isinstance(item, BatchSpec):
            # header, then the spec: the driver reads the header and hands the spec on by
            # reference, never unpacking and repacking its records
            yield item.header
        elif isinstance(item, VolumePlan) and not free:
            item = replace(item, listed_by=backend.listed_by(evidence, volume))
        yield item


@ray.remote(num_cpus=1, max_retries=0)
def scan_batch_task(backend: Backend, paths: tuple[str, ...], spec: BatchSpec,
                    opts: ScanOptions, keys: tuple = ()) -> BatchResult:
    return scan_batch(worker_context(backend), paths, spec, opts, keys).for_driver()


@ray.remote(num_cpus=1, max_retries=0)
def warm_up(backend: Backend, opts: ScanOptions) -> int:
    """Started beside the first probes: imports and opens what batches need, in parallel with
    the probe and the walk instead of in front of the first batch."""
    ctx = worker_context(backend)
    backend.warm()
    ctx.feature_options(opts)
    for store in ctx.hashsets(opts.hashsets):
        getattr(store, "names", lambda: None)()
    return os.getpid()


@ray.remote(num_cpus=1, max_retries=0)
def verify_media(backend: Backend, paths: tuple[str, ...], device_id: str) -> dict:
    """Hashes of the whole media, for comparison with the hashes stored in the container."""
    ctx = worker_context(backend)
    t0 = time.monotonic()
    hashes = backend.media_hashes(ctx.evidence(paths, device_id))
    return dict(hashes, seconds=round(time.monotonic() - t0, 3))


def worker_pid() -> int:
    return os.getpid()


__all__ = ["probe_device", "plan_device_volume", "scan_batch_task", "verify_media", "warm_up",
           "worker_context", "TriageError"]
