"""Pure functions from a file's bytes to its Features: hashing, signature typing, picture
features (PDQ, pHash, EXIF, thumbnail) and archive members. No Ray, no TSK.

    analyse(record, chunks, opts) -> Analysis      # the one entry point the scan uses
"""
from triage.features.core import DEFAULT_OPTIONS, Analysis, FeatureOptions, analyse
from triage.features.hashing import Digests, read_once
from triage.features.pictures import (PDQ_QUALITY_THRESHOLD, decode_for_model, hamming_hex,
                                      pdq, phash, read_exif)

__all__ = [
    "Analysis", "FeatureOptions", "DEFAULT_OPTIONS", "analyse", "Digests", "read_once",
    "pdq", "phash", "hamming_hex", "decode_for_model", "read_exif", "PDQ_QUALITY_THRESHOLD",
]
