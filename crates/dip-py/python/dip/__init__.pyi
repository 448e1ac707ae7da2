"""Type stubs of the dip package (see dip/__init__.py for the docs)."""

import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

from . import analysis as analysis
from . import operators as operators
from ._dip import Restoration as Restoration
from .operators import Operator as Operator
from ._dip import preset_text as preset_text
from ._dip import presets as presets

__version__: str

ArrayLike = npt.ArrayLike
Callback = Callable[[int, float, Optional[np.ndarray]], Optional[bool]]

class Result:
    """A restoration: the chosen image and how it was chosen."""

    image: np.ndarray
    sgld_std: Optional[np.ndarray]
    stopped_at: int
    steps_run: int
    stop_rule: str
    sigma_estimate: Optional[float]
    warnings: List[str]
    psnr: Optional[float]
    ssim: Optional[float]
    baseline: Optional[Tuple[str, float]]
    interrupted: bool
    seconds: float
    history: Dict[str, np.ndarray]
    summary: str
    bands: Optional[Dict[str, np.ndarray]]
    trajectory: Optional[np.ndarray]
    trajectory_steps: Optional[np.ndarray]

def denoise(
    y: ArrayLike,
    *,
    clean: Optional[ArrayLike] = ...,
    sigma: Optional[float] = ...,
    stop: Optional[str] = ...,
    iters: Optional[int] = ...,
    seed: Optional[int] = ...,
    lr: Optional[float] = ...,
    ema: Optional[float] = ...,
    arch: Optional[str] = ...,
    width: Optional[int] = ...,
    sgld: Optional[bool] = ...,
    preset: Optional[str] = ...,
    config: Optional[Union[str, os.PathLike]] = ...,
    settings: Optional[Dict[str, Any]] = ...,
    threads: Optional[int] = ...,
    device: str = ...,
    callback: Optional[Callback] = ...,
    callback_every: int = ...,
    callback_images: bool = ...,
    progress: bool = ...,
    bands: Optional[int] = ...,
    record_every: Optional[int] = ...,
) -> Result: ...
def inpaint(y: ArrayLike, mask: ArrayLike, **kw: Any) -> Result: ...
def super_resolve(y: ArrayLike, factor: int, **kw: Any) -> Result: ...
def deblur(y: ArrayLike, psf: Union[str, ArrayLike], **kw: Any) -> Result: ...
def ct(sinogram: ArrayLike, angles: Union[int, ArrayLike], **kw: Any) -> Result: ...
def phantom(n: int) -> np.ndarray: ...
def restore(
    y: ArrayLike,
    operator: Union[str, Operator, Tuple[Callable[[np.ndarray], Any], Callable[[np.ndarray], Any]], Any],
    *,
    shape: Optional[Sequence[int]] = ...,
    **kw: Any,
) -> Result: ...
def add_noise(
    x: ArrayLike,
    sigma: Optional[float] = ...,
    *,
    kind: str = ...,
    peak: Optional[float] = ...,
    amount: Optional[float] = ...,
    seed: int = ...,
) -> np.ndarray: ...
def psnr(a: ArrayLike, b: ArrayLike) -> float: ...
def ssim(a: ArrayLike, b: ArrayLike) -> float: ...
