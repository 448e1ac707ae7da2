"""The compiled half of dip (float32 H x W x C arrays in [0, 1]); use the functions of dip."""

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

__version__: str

class Restoration:
    image: np.ndarray
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
    sgld_std: Optional[np.ndarray]
    summary: str
    bands: Optional[Dict[str, np.ndarray]]
    trajectory: Optional[np.ndarray]
    trajectory_steps: Optional[np.ndarray]

class Operator:
    name: str
    input_shape: Tuple[int, int, int]
    output_shape: Tuple[int, int, int]
    def forward(self, x: np.ndarray) -> np.ndarray: ...
    def adjoint(self, y: np.ndarray) -> np.ndarray: ...

def operator(
    kind: str,
    shape: Tuple[int, int, int],
    *,
    mask: Optional[np.ndarray] = ...,
    factor: Optional[int] = ...,
    psf: Optional[str] = ...,
    psf_weights: Optional[np.ndarray] = ...,
    angles: Optional[Sequence[float]] = ...,
) -> Operator: ...
def phantom(n: int) -> np.ndarray: ...
def restore(
    kind: str,
    y: np.ndarray,
    bits: int,
    *,
    mask: Optional[np.ndarray] = ...,
    factor: Optional[int] = ...,
    psf: Optional[str] = ...,
    psf_weights: Optional[np.ndarray] = ...,
    operator: Optional[Operator] = ...,
    callables: Optional[Tuple[Any, Any, Tuple[int, int, int]]] = ...,
    angles: Optional[Sequence[float]] = ...,
    clean: Optional[np.ndarray] = ...,
    sigma: Optional[float] = ...,
    preset: Optional[str] = ...,
    settings: Sequence[Tuple[str, str]] = ...,
    threads: Optional[int] = ...,
    callback: Optional[Any] = ...,
    callback_every: int = ...,
    callback_images: bool = ...,
    bands: Optional[int] = ...,
    record_every: Optional[int] = ...,
) -> Restoration: ...
def band_distance(a: np.ndarray, b: np.ndarray, bands: int = ...) -> Tuple[float, np.ndarray]: ...
def gp_prior(
    preset: str = ...,
    settings: Sequence[Tuple[str, str]] = ...,
    channels: int = ...,
    size: int = ...,
    samples: int = ...,
    seed: int = ...,
    threads: Optional[int] = ...,
) -> Dict[str, Any]: ...
def add_noise(x: np.ndarray, kind: str, amount: float, seed: int) -> np.ndarray: ...
def psnr(a: np.ndarray, b: np.ndarray) -> float: ...
def ssim(a: np.ndarray, b: np.ndarray) -> float: ...
def presets() -> List[str]: ...
def preset_text(name: str) -> str: ...
