"""One pass over a file's content: MD5 and SHA-1 always, SHA-256 on request, signature typing
from the first bytes, and the bytes themselves kept only when a later step needs them.

The content arrives as an iterator of chunks and is read exactly once. hashlib releases the GIL
for buffers over 2 KiB, so a worker thread reading the next chunk overlaps with hashing.
Chunks are kept by reference (a list), never copied into a growing buffer, and joined once at
the end; a single-chunk file is not copied at all. Views of a mapped image are copied once
when kept (only pictures and archives are), so the mapping's pages can be let go.
"""
from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass
from functools import lru_cache
from typing import BinaryIO, Callable, Iterable, Optional, Sequence

from triage.filetype import SNIFF_RULES
from triage.units import human_bytes

SNIFF_BYTES = 512  # covers every signature in triage.filetype (tar's "ustar" sits at 257)


@dataclass(frozen=True)
class Digests:
    md5: str
    sha1: str
    sha256: str = ""


@dataclass(frozen=True)
class ReadResult:
    """What one pass over the content gives."""

    digests: Digests
    size: int                        # bytes actually read
    head: bytes                      # the first SNIFF_BYTES (fewer for a short file)
    data: Optional[bytes]            # the whole content, when it was kept
    not_kept: str = ""               # why it was not kept although asked for ("" otherwise)
    aborted: str = ""                # the read stopped early (e.g. an archive expansion limit)
    # content over the limit written, as it was hashed, to the file `spill` gave (rewound);
    # the caller reads it and closes it
    spilled: Optional[BinaryIO] = None


def head_of(parts: Sequence) -> bytes:
    """The first SNIFF_BYTES of content that arrives in `parts` (fewer for a short file),
    copied from the first part alone when it holds them."""
    first = parts[0] if parts else b""
    return bytes(first[:SNIFF_BYTES]) if len(first) >= SNIFF_BYTES \
        else b"".join(parts)[:SNIFF_BYTES]


class ReadAborted(Exception):
    """Raised by a chunk source to stop a read early (the reason is the message)."""


def read_once(chunks: Iterable[bytes], *, sha256: bool = False,
              keep: Callable[[bytes], int] = lambda head: 0, size_hint: int = 0,
              known: Optional[Digests] = None,
              spill: Optional[Callable[[bytes, int], Optional[BinaryIO]]] = None) -> ReadResult:
    """Hash every chunk once; keep the content when `keep(head)` returns a byte limit > 0.

    `keep` sees the first SNIFF_BYTES and returns how many bytes may be kept (0: none). Content
    longer than that is still hashed to the end but not kept, and `not_kept` says why;
    `size_hint` (the expected size, 0 if unknown) lets that decision be taken at once.
    A chunk source may raise ReadAborted to stop (the digests then cover only what was read).
    `known`, when given, holds these same chunks' MD5 and SHA-1, already taken by `hash_many`
    (not taken again; SHA-256 still is, on request).
    `spill(head, size_hint)`, when given, is asked once for content over the limit: a writable
    file to hold it (None: not for this content), so the content is still read once. A spill
    that fails (OSError: no room, its own size limit) is dropped and `not_kept` says why.
    """
    md5 = sha1 = None
    if known is None:
        md5, sha1 = hashlib.md5(usedforsecurity=False), hashlib.sha1(usedforsecurity=False)
    s256 = hashlib.sha256() if sha256 else None
    updates = tuple(h.update for h in (md5, sha1, s256) if h is not None)
    it = iter(chunks)
    parts: list = []
    kept: Optional[list] = None
    head = b""
    n = 0
    limit = 0
    over = aborted = ""
    sink: Optional[BinaryIO] = None
    spill_error = ""

    def give_up(exc: Optional[OSError] = None) -> None:
        # the spill file goes (closed, so a temporary file is freed); the hashes go on
        nonlocal sink, spill_error
        if exc is not None:
            spill_error = f"not spooled: {exc}"
        if sink is not None:
            try:
                sink.close()
            except OSError:
                pass
        sink = None

    def spill_to(done: list) -> None:
        nonlocal sink
        try:
            sink = spill(head, size_hint) if spill is not None else None
            for part in done if sink is not None else ():
                sink.write(part)
        except OSError as exc:
            give_up(exc)

    try:
        # Phase 1: enough bytes to know the type (one chunk, almost always).
        for chunk in it:
            if chunk:
                for update in updates:
                    update(chunk)
                parts.append(chunk)
                n += len(chunk)
                if n >= SNIFF_BYTES:
                    break
        head = head_of(parts)
        limit = keep(head) if n else 0
        if limit > 0:
            kept = [_own(p) for p in parts] if n <= limit and size_hint <= limit else None
            over = "" if kept is not None else f"over the {human_bytes(limit)} limit"
            if kept is None:
                spill_to(parts)
        parts = []
        # Phase 2: the rest, hashed and (maybe) kept by reference.
        for chunk in it:
            if chunk:
                for update in updates:
                    update(chunk)
                n += len(chunk)
                if kept is not None:
                    if n > limit:
                        spill_to(kept + [chunk])
                        kept, over = None, f"over the {human_bytes(limit)} limit"
                    else:
                        kept.append(_own(chunk))
                elif sink is not None:
                    try:
                        sink.write(chunk)
                    except OSError as exc:
                        give_up(exc)
    except ReadAborted as exc:
        aborted = str(exc) or "read aborted"
        head = head or head_of(parts)
        kept = None
        give_up()
    except BaseException:
        give_up()
        raise
    if sink is not None:
        try:
            sink.flush()           # its last bytes may still be in a buffer: a full disk says so here
            sink.seek(0)
        except OSError as exc:
            give_up(exc)
    if kept is None:
        data = None
    elif len(kept) == 1 and isinstance(kept[0], bytes):
        data = kept[0]
    else:
        data = b"".join(kept)
    return ReadResult(
        digests=Digests(known.md5 if known else md5.hexdigest(),
                        known.sha1 if known else sha1.hexdigest(),
                        s256.hexdigest() if s256 else ""),
        size=n, head=head, data=data,
        not_kept="; ".join(x for x in (over, spill_error) if x) if over else "",
        aborted=aborted, spilled=sink)



# Multi-buffer MD5 and SHA-1 (triage/features/_mbhash.c): sixteen files per pass with AVX-512,
# eight with AVX2; on one core here about 2.6 and 1.5 GB/s for both hashes, against hashlib's
# 0.53. The two hashes are most of a hash-only scan's CPU, and a batch always holds many files.
# TRIAGE_MBHASH=0 turns it off; =avx2 or =avx512 asks for that kernel (if the CPU runs it).
MB_MIN_FILES = 4            # fewer files than this: hashlib (one stream per lane is no gain)
# Rates on one core here (MD5 + SHA-1) with every lane busy, and lanes: only the ratios matter.
_KERNELS = {"avx512": ("multi-buffer AVX-512", 2.6e9, 16), "avx2": ("multi-buffer AVX2", 1.5e9, 8)}
_HASHLIB_RATE = 0.53e9


@lru_cache(maxsize=1)
def hash_engine() -> str:
    """'multi-buffer AVX-512' or 'multi-buffer AVX2' when the kernel is built, the CPU runs it,
    and it gives hashlib's answers on a self-test of awkward lengths and split buffers;
    'hashlib' otherwise. Recorded with each scan run: which code produced the hashes is part
    of the provenance."""
    kernel = _kernel()
    return _KERNELS[kernel[1]][0] if kernel is not None else "hashlib"


@lru_cache(maxsize=1)
def _kernel():
    """(module, kernel name), or None."""
    wanted = os.environ.get("TRIAGE_MBHASH", "1")
    if wanted == "0":
        return None
    try:
        from triage.features import _mbhash
    except ImportError:
        return None
    best = _mbhash.best_kernel()
    name = wanted if wanted in _KERNELS else best
    order = list(_KERNELS)
    if best not in _KERNELS or order.index(name) < order.index(best):
        return None          # no vector kernel on this CPU, or one wider than it runs
    rnd = random.Random(1321)
    cases = []
    for n in list(range(0, 130)) + [4095, 4096, 4097, 65536 + 55, 200_003]:
        data = rnd.randbytes(n)
        cuts = sorted(rnd.randrange(n + 1) for _ in range(rnd.randrange(4)))
        cases.append((data, [data[a:b] for a, b in zip([0] + cuts, cuts + [n])]))
    want = [hashlib.md5(d, usedforsecurity=False).digest() +
            hashlib.sha1(d, usedforsecurity=False).digest() for d, _ in cases]
    if _mbhash.hash_many([pieces for _, pieces in cases], kernel=name) != want:
        return None
    return _mbhash, name


def hash_many(files: Sequence[Sequence[bytes]]) -> list[Digests]:
    """MD5 and SHA-1 of each file, given as its content's chunks (bytes or memoryviews), many
    files per pass where the kernel runs; hashlib one file at a time otherwise."""
    out: list = [None] * len(files)
    kernel = _kernel()
    if kernel is not None and len(files) >= MB_MIN_FILES:
        module, name = kernel
        sizes = [sum(map(len, chunks)) for chunks in files]
        # longest first: lanes are handed out in order, so the long strings start at once and
        # the short ones fill in around them instead of trailing in a nearly empty pass
        order = sorted(range(len(files)), key=lambda i: -sizes[i])
        _, rate, lanes = _KERNELS[name]
        alone = _alone([sizes[i] for i in order], rate, lanes)
        rest = order[alone:]
        spill = len(rest) % lanes
        if len(rest) > lanes and spill <= 2:
            # the one or two files past a whole number of lanes (the shortest) would start when
            # the others end and run alone, at a third of hashlib's speed (measured: 18 files of
            # 3.4 MB 0.93 -> 1.72 GB/s; with three left over the two ways cost the same)
            rest = rest[:len(rest) - spill]
        if len(rest) >= MB_MIN_FILES:
            for i, d in zip(rest, module.hash_many([files[i] for i in rest], kernel=name)):
                out[i] = Digests(d[:16].hex(), d[16:].hex())
    for i, chunks in enumerate(files):
        if out[i] is None:
            out[i] = read_once(chunks).digests
    return out


def hash_small(buffer, pieces_of: Sequence, sizes: Sequence[int]) -> Optional[list]:
    """(MD5 hex, SHA-1 hex, content type) of each of a group of small files of one mapped
    image (`buffer`), each given by its pieces ((offset, length) each) and declared size, in
    one pass of the multi-buffer kernel that reads the pieces straight from the buffer and
    sniffs each head by filetype.SNIFF_RULES (what `sniff` reads); None for a file with a
    piece outside the buffer or pieces that do not add up to its size. None for the whole
    group where no checked kernel runs: the caller reads the files the ordinary way."""
    kernel = _kernel()
    if kernel is None:
        return None
    module, name = kernel
    return module.small_files(buffer, pieces_of, sizes, SNIFF_RULES, SNIFF_BYTES, kernel=name)


def _alone(sizes_desc: list[int], rate: float = _KERNELS["avx512"][1],
           lanes: int = _KERNELS["avx512"][2]) -> int:
    """How many of the largest files to give hashlib instead of a lane: a file much longer
    than the rest would keep the kernel running for it alone, a lane being a `lanes`-th of the
    kernel's `rate` (a third of hashlib with AVX-512)."""
    total = sum(sizes_desc)
    if not sizes_desc or sizes_desc[0] * lanes <= total:
        # no file outlasts the others sharing the lanes: all in the kernel costs total / rate,
        # and any file given to hashlib (slower than the kernel) costs more (most groups of
        # small files; the search below was half a microsecond a file)
        return 0
    best_k, best_cost, head = 0, float("inf"), 0
    for k in range(len(sizes_desc) + 1):
        rest = total - head
        kernel = max(rest / rate, sizes_desc[k] / (rate / lanes)) if k < len(sizes_desc) else 0.0
        cost = head / _HASHLIB_RATE + kernel
        if cost < best_cost:
            best_k, best_cost = k, cost
        if k < len(sizes_desc):
            head += sizes_desc[k]
    return best_k


def _own(chunk) -> bytes:
    """A kept chunk as bytes of its own: a view into a mapped image would be touched again
    (and stay resident) when the content is joined and decoded later."""
    return chunk if isinstance(chunk, bytes) else bytes(chunk)


