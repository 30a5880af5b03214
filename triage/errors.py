"""Errors the CLI turns into one line and exit code 2."""


class TriageError(Exception):
    """Bad input or a refusal the user can act on. The message is shown as is."""


class EvidenceError(TriageError):
    """Evidence that cannot be opened: truncated, missing segments, not an image."""


class HashSetError(TriageError):
    """A file that is not a hash set, or a store problem."""


class ModelError(TriageError):
    """A model that fails its sha256 check or cannot be loaded."""
