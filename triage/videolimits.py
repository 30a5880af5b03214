"""How much of each video the video stage decodes (triage/features/video.py): plain values,
light to import (the CLI's options and the scan's options read the defaults from here)."""
from __future__ import annotations

import math
from dataclasses import dataclass

MiB = 1024 * 1024


@dataclass(frozen=True)
class VideoLimits:
    """How much of each video is decoded. Configurable per scan (`triage scan --video-*`)."""

    sample_seconds: float = 1.0           # one uniform sample per this many seconds; 0: keyframes only
    frames_per_sqrt_second: float = 6.0   # the frame cap grows with sqrt(duration) ...
    min_frames: int = 16                  # ... from this ...
    max_frames: int = 480                 # ... to at most this (a 1 h video reaches 360)
    seconds: float = 60.0                 # wall-clock limit per video; the rest is a gap
    max_bytes: int = 192 * MiB            # a larger video is not held in memory to decode
    max_pixels: int = 8192 * 4320         # refused above this frame size (8K): a decoder bomb
    model_frames: int = 48                # frames of one video sent to the model, spread evenly
    threads: int = 1                      # decoder threads (a scan runs a worker per core)

    def cap(self, duration: float) -> int:
        """Frames hashed at most for a video of `duration` seconds (unknown: the minimum)."""
        grown = math.ceil(self.frames_per_sqrt_second * math.sqrt(max(0.0, duration)))
        return max(1, min(self.max_frames, max(self.min_frames, grown)))


DEFAULT_LIMITS = VideoLimits()
