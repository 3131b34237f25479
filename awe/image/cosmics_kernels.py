"""Compiled loops of the cosmic-ray detection (numba; a module of their own, imported on first use)."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def lplus(e: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """L.A.Cosmic's positive Laplacian of the float32 image ``e`` into ``out`` (its outer pixels left alone):
    per pixel the mean over its four corners of ``max(0, 2 v - vertical neighbour - horizontal neighbour)``,
    in float32, the four terms summed in a fixed order (vertical above, below; horizontal left, right)."""
    ny, nx = e.shape
    zero, two, quarter = np.float32(0.0), np.float32(2.0), np.float32(0.25)
    for y in range(1, ny - 1):
        for x in range(1, nx - 1):
            v2 = two * e[y, x]
            acc = zero
            for vertical in (e[y - 1, x], e[y + 1, x]):
                t = v2 - vertical
                for horizontal in (e[y, x - 1], e[y, x + 1]):
                    d = t - horizontal
                    if not d <= zero:  # max(d, 0), NaN kept
                        acc += d
            out[y, x] = acc * quarter
