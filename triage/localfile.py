"""Reading a plain file of a folder given as evidence (a logical extraction, a backup folder)."""
from __future__ import annotations

import os
from typing import Iterator

from triage.errors import EvidenceError


def read_chunks(path: str, label: str, chunk_size: int) -> Iterator[bytes]:
    """The file at `path` in chunks, opened read-only without following a final symbolic link
    (a link in evidence must not reach outside it); `label` names it in the error."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise EvidenceError(f"{label}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb", buffering=0) as fh:
        while True:
            data = fh.read(chunk_size)
            if not data:
                return
            yield data
