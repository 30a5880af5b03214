"""Errors the CLI turns into one line and exit code 2."""


class TriageError(Exception):
    """Bad input or a refusal the user can act on. The message is shown as is."""


class EvidenceError(TriageError):
    """Evidence that cannot be opened: truncated, missing segments, not an image."""


class ShortRead(EvidenceError):
    """A file's content ended before its size: raised by the evidence layer after the bytes
    it could read, so the reader knows how much it has and why the rest is missing."""

    def __init__(self, reason: str, expected: int = 0, got: int = 0, gap: bool = True):
        super().__init__(reason)
        self.reason, self.expected, self.got = reason, expected, got
        # False: the file system itself says the content ends here (an NTFS stream's
        # initialised size), so nothing is missing and no coverage gap is due
        self.gap = gap


class HashSetError(TriageError):
    """A file that is not a hash set, or a store problem."""


class ModelError(TriageError):
    """A model that fails its sha256 check or cannot be loaded."""


class Terminated(KeyboardInterrupt):
    """SIGTERM during a scan: stops it the way Ctrl-C does (everything found so far is kept,
    devices in progress end `interrupted`), so a service manager's stop loses nothing."""
