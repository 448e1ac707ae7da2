"""Why the Deep Image Prior works, as arrays to plot: the distance between two runs per
frequency band, and the Gaussian-process prior of a network at initialisation.

The band fits of a fit itself are recorded by ``dip.restore(..., bands=8)`` (``result.bands``),
and its trajectory by ``record_every=`` (``result.trajectory``).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np

from . import _dip

__all__ = ["band_distance", "gp_prior"]


def _frame(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    if a.ndim == 2:
        a = a[:, :, None]
    return np.ascontiguousarray(a)


def band_distance(a: Any, b: Any, bands: int = 8) -> Tuple[Any, np.ndarray]:
    """The squared distance ``||a - b||^2`` between two images, in total and per radial
    frequency band (``bands`` linear bands from 0 to 0.5 cycles per pixel; by Parseval the
    bands add up to the total).

    ``a`` and ``b`` are images (H x W or H x W x C) or two trajectories of the same length
    (T x H x W or T x H x W x C, e.g. ``result.trajectory`` of two seeds): then the total is
    an array of T values and the bands a T x ``bands`` array. Two runs that agree on the low
    bands early and differ only in the high ones are the spectral bias seen from a second
    view."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} and {b.shape}")
    if a.ndim in (2, 3) and not (a.ndim == 3 and a.shape[2] not in (1, 3)):
        return _dip.band_distance(_frame(a), _frame(b), bands)
    if a.ndim in (3, 4):
        rows = [_dip.band_distance(_frame(x), _frame(y), bands) for x, y in zip(a, b)]
        return np.array([r[0] for r in rows]), np.stack([r[1] for r in rows])
    raise ValueError(f"expected images or trajectories, got shape {a.shape}")


def gp_prior(preset: str = "denoise", *, settings: Optional[Dict[str, Any]] = None,
             channels: int = 1, size: int = 64, samples: int = 256, seed: int = 0,
             threads: Optional[int] = None) -> Dict[str, Any]:
    """The network's output at initialisation as a stationary Gaussian process, measured by
    Monte Carlo over ``samples`` independent initialisations of ``size x size`` outputs.

    The network is the preset's with ``settings`` laid over it (dotted keys, as
    ``dip.restore``'s ``settings=``). Returns ``kernel`` (the covariance by displacement,
    (2r+1) x (2r+1), the variance at the centre), ``frequency`` and ``power`` (its radial power
    spectrum, cycles per pixel), ``mean``, ``variance``, ``excess_kurtosis`` (near 0 for a
    Gaussian process) and ``arch``."""
    from . import _toml

    pairs = [(k, _toml(v)) for k, v in (settings or {}).items()]
    return _dip.gp_prior(preset, pairs, channels, size, samples, seed, threads)
