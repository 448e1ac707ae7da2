"""The distance between two runs per frequency band, and the GP prior of a network."""

from typing import Any, Dict, Optional, Tuple

import numpy as np
import numpy.typing as npt

def band_distance(a: npt.ArrayLike, b: npt.ArrayLike, bands: int = ...) -> Tuple[Any, np.ndarray]: ...
def gp_prior(
    preset: str = ...,
    *,
    settings: Optional[Dict[str, Any]] = ...,
    channels: int = ...,
    size: int = ...,
    samples: int = ...,
    seed: int = ...,
    threads: Optional[int] = ...,
) -> Dict[str, Any]: ...
