"""Synthetic "model bait": abstract pictures that the open_nsfw model scores high.

They are shaded skin-toned ellipses on a darker skin-toned ground with fine noise: nothing
sexual, no people, no real material. They exist so a synthetic fleet can exercise
`SUSPECTED_NEW` (a picture over the model's threshold with no hash match) end to end.

The layouts below were found by a random search over this family (about 640 candidates):
the 40 best were re-scored with 12 more seeds each (other noise, colours moved by up to 1 %),
and these six had the highest minimum. Saved as JPEG quality 90 at 480 x 640, each scored at
least 0.83 on open_nsfw in that check (medians 0.87-0.95), so they clear the default 0.8
threshold. A flat skin-toned field scores only 0.21 to 0.28, and is skipped by the cascade as a
graphic (too few colours) anyway. No torch here: triage/synth.py may import this.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

WIDTH, HEIGHT = 480, 640
JPEG_QUALITY = 90        # the quality the layouts were checked at
JITTER = 0.01            # colour shift between seeds; larger shifts move scores by 0.1


@dataclass(frozen=True)
class Layout:
    colour: tuple[int, int, int]                          # the blobs' RGB
    bg: float                                             # ground = colour * bg
    soft: float                                           # edge softness of each ellipse
    noise: float                                          # sd of the Gaussian pixel noise
    blobs: tuple[tuple[float, float, float, float], ...]  # centre x, y and radii, as shares


LAYOUTS: tuple[Layout, ...] = (
    Layout(colour=(198, 134, 102), bg=0.604, soft=0.145, noise=2.65, blobs=(
        (0.484, 0.173, 0.153, 0.341),
        (0.216, 0.664, 0.195, 0.277),
        (0.400, 0.409, 0.203, 0.327),
        (0.397, 0.210, 0.108, 0.320),
    )),
    Layout(colour=(241, 194, 167), bg=0.792, soft=0.127, noise=3.18, blobs=(
        (0.340, 0.680, 0.250, 0.307),
        (0.491, 0.306, 0.226, 0.328),
        (0.386, 0.164, 0.137, 0.333),
        (0.204, 0.188, 0.120, 0.323),
    )),
    Layout(colour=(141, 85, 60), bg=0.665, soft=0.234, noise=1.76, blobs=(
        (0.269, 0.624, 0.125, 0.119),
        (0.434, 0.631, 0.172, 0.288),
        (0.473, 0.349, 0.207, 0.251),
        (0.290, 0.564, 0.134, 0.342),
        (0.519, 0.294, 0.109, 0.154),
    )),
    Layout(colour=(241, 194, 167), bg=0.572, soft=0.249, noise=2.55, blobs=(
        (0.451, 0.641, 0.150, 0.339),
        (0.652, 0.604, 0.158, 0.302),
        (0.751, 0.704, 0.282, 0.123),
        (0.645, 0.756, 0.195, 0.120),
        (0.526, 0.320, 0.107, 0.334),
    )),
    Layout(colour=(224, 172, 140), bg=0.536, soft=0.159, noise=2.76, blobs=(
        (0.726, 0.748, 0.294, 0.321),
        (0.470, 0.249, 0.291, 0.157),
        (0.573, 0.335, 0.263, 0.150),
        (0.452, 0.304, 0.272, 0.255),
        (0.578, 0.370, 0.135, 0.314),
    )),
    Layout(colour=(198, 134, 102), bg=0.748, soft=0.192, noise=3.95, blobs=(
        (0.489, 0.280, 0.173, 0.121),
        (0.440, 0.572, 0.231, 0.343),
        (0.427, 0.211, 0.273, 0.144),
        (0.395, 0.250, 0.242, 0.321),
        (0.327, 0.556, 0.105, 0.271),
    )),
)


def make_bait_picture(seed: int, width: int = WIDTH, height: int = HEIGHT) -> Image.Image:
    """A deterministic bait picture (RGB): layout `seed % len(LAYOUTS)`, noise and a colour
    shift of at most 3 % from `seed`. Save it as JPEG (quality 90) to match the checked scores.
    """
    rng = np.random.default_rng(seed)
    layout = LAYOUTS[seed % len(LAYOUTS)]
    colour = np.array(layout.colour, np.float32) * np.float32(1 + rng.uniform(-JITTER, JITTER))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.empty((height, width, 3), np.float32)
    img[:] = colour * layout.bg
    for cx, cy, ax, ay in layout.blobs:
        d = ((xx - cx * width) / (ax * width)) ** 2 + ((yy - cy * height) / (ay * height)) ** 2
        inside = np.clip(1.0 - d, 0, 1)
        mask = np.clip((1.0 - d) / layout.soft, 0, 1)[..., None]
        shade = (0.8 + 0.35 * inside)[..., None]   # lighter towards the centre: a rounded look
        img = img * (1 - mask) + colour * shade * mask
    img += rng.normal(0, layout.noise, img.shape).astype(np.float32)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
