"""dip: the Deep Image Prior from numpy.

An untrained convolutional network, fitted to one corrupted image, restores it: denoising,
inpainting, super-resolution and deblurring, with a stopping rule (``stop="auto"``) that needs
no clean image. The numerics are the ``dip`` Rust library, the same code as the ``dip``
command line, with the same presets and defaults.

Arrays
------
Images are ``H x W`` (gray) or ``H x W x C`` arrays with C = 1 or 3. Their dtype says what the
values mean:

* ``uint8``: 0-255; ``uint16``: 0-65535;
* ``float32`` / ``float64``: values in [0, 1] (clipped).

Any memory order (Fortran, strided views) is accepted; it is copied once. Results are
``float32`` arrays in [0, 1] with the input's shape (2-D in, 2-D out).
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from . import _dip, analysis, operators
from ._dip import Restoration, preset_text, presets
from .operators import Operator

__version__ = _dip.__version__

__all__ = [
    "Operator",
    "Restoration",
    "Result",
    "add_noise",
    "deblur",
    "denoise",
    "analysis",
    "ct",
    "inpaint",
    "operators",
    "phantom",
    "preset_text",
    "presets",
    "psnr",
    "restore",
    "ssim",
    "super_resolve",
]

Callback = Callable[[int, float, Optional[np.ndarray]], Optional[bool]]


def _as_image(a: Any, name: str) -> Tuple[np.ndarray, int, bool]:
    """``a`` as a C-contiguous H x W x C float32 array in [0, 1], the bit depth its dtype
    implies (8 or 16), and whether it was 2-D."""
    arr = np.asarray(a)
    if arr.ndim not in (2, 3):
        raise ValueError(f"{name}: expected an H x W or H x W x C array, got shape {arr.shape}")
    two_d = arr.ndim == 2
    if two_d:
        arr = arr[:, :, None]
    if arr.shape[2] not in (1, 3):
        raise ValueError(
            f"{name}: {arr.shape[2]} channels; dip restores gray (1) or colour (3) images"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name}: the image is empty (shape {arr.shape})")
    if arr.dtype == np.uint8:
        out, bits = arr.astype(np.float32) / 255.0, 8
    elif arr.dtype == np.uint16:
        out, bits = arr.astype(np.float32) / 65535.0, 16
    elif arr.dtype in (np.float32, np.float64):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name}: the array holds NaN or infinite values")
        out, bits = np.clip(arr, 0.0, 1.0).astype(np.float32), 16
    else:
        raise TypeError(
            f"{name}: dtype {arr.dtype} is not supported; use uint8 (0-255), uint16 "
            "(0-65535), float32 or float64 (0-1)"
        )
    return np.ascontiguousarray(out, dtype=np.float32), bits, two_d


def _as_measurement(a: Any, name: str) -> Tuple[np.ndarray, int, Tuple[int, ...]]:
    """An observation of any linear operator: a float array is taken as it is (no clipping:
    measurements may be negative or above 1), an integer one as an image. 1-D, 2-D and
    H x W x C (C = 1 or 3) arrays. Returns the H x W x C float32 array, the bit depth, and the
    shape as given."""
    arr = np.asarray(a)
    if arr.dtype in (np.uint8, np.uint16):
        out, bits, _ = _as_image(arr, name)
        return out, bits, arr.shape
    if arr.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name}: dtype {arr.dtype} is not supported; use a float array")
    if arr.size == 0:
        raise ValueError(f"{name}: the observation is empty (shape {arr.shape})")
    if arr.ndim == 1:
        arr3 = arr[:, None, None]
    elif arr.ndim == 2:
        arr3 = arr[:, :, None]
    elif arr.ndim == 3 and arr.shape[2] in (1, 3):
        arr3 = arr
    else:
        raise ValueError(
            f"{name}: expected a 1-D, 2-D or H x W x C (C = 1 or 3) array, got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr3)):
        raise ValueError(f"{name}: the array holds NaN or infinite values")
    return np.ascontiguousarray(arr3, dtype=np.float32), 16, arr.shape


def _callables(forward: Any, adjoint: Any, shape: Any, obs_shape: Tuple[int, ...],
               obs3: Tuple[int, int, int]) -> Tuple[Any, Any, Tuple[int, int, int]]:
    """The user's ``forward``/``adjoint`` on their own shapes, wrapped to take and give the
    H x W x C float32 arrays the fit uses; and the image's H x W x C shape."""
    in_user = tuple(int(v) for v in shape)
    in3 = operators._shape3(in_user)
    if in3[2] not in (1, 3) or min(in3) <= 0:
        raise ValueError(f"shape={in_user}: the image is H x W or H x W x C with C = 1 or 3")

    def wrap(f: Any, arg_shape: Tuple[int, ...], res_shape: Tuple[int, ...],
             res3: Tuple[int, int, int], what: str) -> Any:
        def g(a: np.ndarray) -> np.ndarray:
            r = np.asarray(f(a.reshape(arg_shape)), dtype=np.float32)
            if r.size != int(np.prod(res3)):
                raise ValueError(f"{what} returned shape {r.shape}; expected {res_shape}")
            return np.ascontiguousarray(r.reshape(res3))
        return g

    return (
        wrap(forward, in_user, obs_shape, obs3, "forward"),
        wrap(adjoint, obs_shape, in_user, in3, "adjoint"),
        in3,
    )


def _out(img: np.ndarray, two_d: bool) -> np.ndarray:
    return img[:, :, 0] if two_d else img


_SHORTCUTS = {
    "iters": "fit.iters",
    "lr": "fit.lr",
    "seed": "fit.seed",
    "ema": "fit.ema",
    "reg_noise": "fit.reg_noise",
    "loss": "fit.loss",
    "input": "fit.input",
    "arch": "arch",
    "width": "net.width",
    "stop": "stop.rule",
    "patience": "stop.patience",
}


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if isinstance(v, (int, float, np.integer, np.floating)):
        return repr(v.item() if hasattr(v, "item") else v)
    raise TypeError(f"setting value {v!r} is not a number, boolean, string or list")


def _settings(config: Optional[Union[str, os.PathLike]], kwargs: Dict[str, Any]) -> list:
    """(dotted key, TOML value) pairs: a settings file's, then the keyword arguments'."""
    pairs = []
    if config is not None:
        try:
            import tomllib  # Python 3.11+
        except ImportError:  # pragma: no cover
            import tomli as tomllib  # type: ignore
        with open(config, "rb") as f:
            table = tomllib.load(f)

        def walk(prefix: str, t: dict) -> None:
            for k, v in t.items():
                key = f"{prefix}.{k}" if prefix else k
                if isinstance(v, dict):
                    walk(key, v)
                else:
                    pairs.append((key, _toml(v)))

        walk("", table)
    for k, v in kwargs.items():
        if v is None:
            continue
        if k == "sgld":
            if v:
                pairs.append(("sgld.every", "50"))
            continue
        key = _SHORTCUTS.get(k)
        if key is None:
            if "." in k or "__" in k:
                key = k.replace("__", ".")
            else:
                raise TypeError(
                    f"unknown setting '{k}'; use {', '.join(sorted(_SHORTCUTS))}, or a "
                    "dotted key in settings={'fit.lr': 0.01}"
                )
        pairs.append((key, _toml(v)))
    return pairs


def _progress(total: int, callback: Optional[Callback]):
    try:
        from tqdm.auto import tqdm  # type: ignore
    except ImportError:
        return callback, None
    bar = tqdm(total=total or None, unit="step")

    def tick(step: int, loss: float, image: Optional[np.ndarray]) -> Optional[bool]:
        bar.update(step - bar.n)
        bar.set_postfix(loss=f"{loss:.3e}")
        return callback(step, loss, image) if callback is not None else None

    return tick, bar


def _run(
    kind: str,
    y: Any,
    *,
    clean: Any = None,
    sigma: Optional[float] = None,
    preset: Optional[str] = None,
    config: Optional[Union[str, os.PathLike]] = None,
    settings: Optional[Dict[str, Any]] = None,
    threads: Optional[int] = None,
    device: str = "cpu",
    callback: Optional[Callback] = None,
    callback_every: int = 10,
    callback_images: bool = False,
    progress: bool = True,
    extra: Optional[Dict[str, Any]] = None,
    result_2d: Optional[bool] = None,
    bands: Optional[int] = None,
    record_every: Optional[int] = None,
    **kwargs: Any,
) -> "Result":
    if device != "cpu":
        raise ValueError(
            f"device={device!r}: the Python package runs on the CPU; the GPU backend is the "
            "command line's (dip --device cuda)"
        )
    if kind in ("custom", "ct"):
        arr, bits, _ = _as_measurement(y, "y")
        two_d = bool(result_2d)
    else:
        arr, bits, two_d = _as_image(y, "y")
    c = None
    if clean is not None:
        c, _, _ = _as_image(clean, "clean")
    pairs = _settings(config, dict(kwargs))
    for k, v in (settings or {}).items():
        pairs.append((k, _toml(v)))
    bar = None
    if progress:
        iters = kwargs.get("iters") or (settings or {}).get("fit.iters")
        callback, bar = _progress(int(iters) if iters else 0, callback)
    try:
        r = _dip.restore(
            kind,
            arr,
            bits,
            clean=c,
            sigma=sigma,
            preset=preset,
            settings=pairs,
            threads=threads,
            callback=callback,
            callback_every=callback_every,
            callback_images=callback_images,
            bands=bands,
            record_every=record_every,
            **(extra or {}),
        )
    finally:
        if bar is not None:
            bar.close()
    if r.interrupted:
        warnings.warn(
            f"interrupted after step {r.steps_run}: the result so far is returned "
            f"(step {r.stopped_at})",
            stacklevel=3,
        )
    return Result(r, two_d)


class Result:
    """The result of a restoration. ``image`` is the chosen result (float32 in [0, 1], the
    input's shape); ``stopped_at`` the step it is from; ``stop_rule`` the rule that chose it;
    ``sigma_estimate`` the noise level (0-255 scale) the rule used; ``warnings`` what the rule
    was unsure of; ``history`` per-step arrays (``step``, ``loss``, and ``psnr``/``psnr_raw``
    with a clean image); ``psnr``/``ssim`` against the clean image, when given; ``baseline``
    the classical result's name and PSNR; ``summary`` the JSON summary the command line
    writes."""

    def __init__(self, r: Restoration, two_d: bool) -> None:
        self._r = r
        self.image = _out(r.image, two_d)
        self.sgld_std = None if r.sgld_std is None else _out(r.sgld_std, two_d)
        t = r.trajectory
        self.trajectory = None if t is None else (t[..., 0] if two_d else t)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._r, name)

    def __repr__(self) -> str:
        return repr(self._r)


def denoise(y: Any, **kw: Any) -> "Result":
    """Removes noise from ``y``. The noise level is estimated from the image unless
    ``sigma`` (0-255 scale) is given. Keywords: see :func:`restore`."""
    return _run("denoise", y, **kw)


def inpaint(y: Any, mask: Any, **kw: Any) -> "Result":
    """Fills the pixels of ``y`` where ``mask`` (H x W, nonzero/True = known) is 0. The values
    of the unknown pixels are ignored."""
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[2] in (1, 3):
        m = m.min(axis=2)
    if m.ndim != 2:
        raise ValueError(f"mask: expected an H x W array, got shape {m.shape}")
    return _run("inpaint", y, extra={"mask": np.ascontiguousarray(m != 0)}, **kw)


def super_resolve(y: Any, factor: int, **kw: Any) -> "Result":
    """Upscales ``y`` by ``factor`` (2, 4 or 8) under the reference Lanczos-2 downsampler."""
    return _run("sr", y, extra={"factor": int(factor)}, **kw)


def deblur(y: Any, psf: Union[str, Any], **kw: Any) -> "Result":
    """Removes a known blur: ``psf`` is ``"gaussian:SIGMA"``, ``"box:SIZE"``, or a square,
    odd-sized array of nonnegative weights (normalised to sum 1)."""
    if isinstance(psf, str):
        extra = {"psf": psf}
    else:
        extra = {"psf_weights": np.ascontiguousarray(np.asarray(psf, dtype=np.float64))}
    return _run("deblur", y, extra=extra, **kw)


def ct(sinogram: Any, angles: Any, **kw: Any) -> "Result":
    """Reconstructs an ``n x n`` gray image from a parallel-beam ``sinogram`` (``n`` detector
    bins by ``len(angles)`` views, scikit-image's ``radon(x, theta, circle=True)`` layout:
    line integrals, used as they are). ``angles`` in degrees, or an int: that many even views
    over [0, 180). The classical baseline (``result.baseline`` with ``clean=``) is filtered
    back projection, as scikit-image's ``iradon``. Keywords: see :func:`restore`."""
    a = operators.even_angles(angles) if np.isscalar(angles) else np.asarray(angles, np.float64)
    s = np.asarray(sinogram)
    if s.ndim != 2:
        raise ValueError(f"sinogram: expected bins x views, got shape {s.shape}")
    return _run("ct", s, extra={"angles": [float(v) for v in a]}, result_2d=True, **kw)


def phantom(n: int) -> np.ndarray:
    """The modified Shepp-Logan head phantom, ``n x n`` float32 in [0, 1]."""
    return _dip.phantom(int(n))[:, :, 0]


def restore(y: Any, operator: Any, *, shape: Optional[Sequence[int]] = None,
            **kw: Any) -> "Result":
    """Restores ``y`` through ``operator``: ``"denoise"``, ``"inpaint"`` (``mask=``), ``"sr"``
    (``factor=``) or ``"deblur"`` (``psf=``); an :class:`Operator` (:mod:`dip.operators`);
    or any linear operator of your own, as a pair of callables ``(forward, adjoint)`` (or an
    object with ``forward`` and ``adjoint`` methods) with ``shape=`` the image's shape.

    A user's operator takes and returns numpy arrays: ``forward`` an array of ``shape`` to
    one of ``y``'s shape, ``adjoint`` back. ``y`` may then be any float array (1-D, 2-D or
    H x W x C), used as it is: no clipping. Before the fit, a dot-product test checks that
    ``adjoint`` is the adjoint of ``forward`` (``<Ax, y> = <x, A^T y>`` to a relative 1e-3) and
    raises ``ValueError`` otherwise. Each call takes the GIL; an exception in either ends the
    fit after that step and is raised. The fit uses the generic linear-operator settings (the
    ``deblur`` preset) unless told otherwise.

    Keywords shared by every task:

    * ``stop``: ``"auto"`` (default), ``"fixed"``, ``"wmv"``, ``"emv"``, ``"discrepancy"``,
      ``"spectral"``; ``iters`` the step budget; ``seed``, ``lr``, ``ema``, ``arch``,
      ``width``;
    * ``preset``: a preset name (:func:`presets`), ``config``: a TOML settings file,
      ``settings``: ``{"net.skip": 0, ...}`` (dotted keys, as ``dip --set``);
    * ``clean``: the clean image, only to measure the result; ``sigma``: a known noise level;
    * ``threads``: worker threads (default: all cores); the same seed and thread count give
      the same result;
    * ``callback(step, loss, image_or_None)``: called every ``callback_every`` steps (the
      image with ``callback_images=True``); returning ``False`` stops the fit;
    * ``progress``: a tqdm bar when tqdm is installed (default; ``progress=False`` for none).
    * ``bands=N``: record how much of each of N radial frequency bands of the observation the
      output has fitted, every 10 steps, and each band's half-time (``result.bands``); for
      observations of the image's own size;
    * ``record_every=K`` (a multiple of 10): keep the raw output every K steps
      (``result.trajectory``, T x H x W (x C) float32: mind the memory).
    * Ctrl-C ends the fit within a step and returns the result so far, with
      ``interrupted=True`` and a warning.
    """
    if isinstance(operator, Operator):
        return _run("custom", y, extra={"operator": operator._op},
                    result_2d=len(operator.input_shape) == 2, **kw)
    if not isinstance(operator, str):
        if isinstance(operator, tuple) and len(operator) == 2:
            fwd, adj = operator
        elif hasattr(operator, "forward") and hasattr(operator, "adjoint"):
            fwd, adj = operator.forward, operator.adjoint
        else:
            raise TypeError(
                "operator: expected a task name, a dip.operators.Operator, a (forward, adjoint) "
                f"pair or an object with forward and adjoint methods, got {type(operator).__name__}"
            )
        if not (callable(fwd) and callable(adj)):
            raise TypeError("operator: forward and adjoint must be callable")
        if shape is None:
            raise ValueError("a (forward, adjoint) operator needs shape=, the shape of the "
                             "image to restore")
        obs3, _, obs_shape = _as_measurement(y, "y")
        f, a, in3 = _callables(fwd, adj, shape, obs_shape, obs3.shape)
        return _run("custom", y, extra={"callables": (f, a, in3)},
                    result_2d=len(tuple(shape)) == 2, **kw)
    if shape is not None:
        raise TypeError(f"shape= is for a user's operator, not for {operator!r}")
    if operator == "denoise":
        return denoise(y, **kw)
    if operator == "inpaint":
        return inpaint(y, kw.pop("mask"), **kw)
    if operator in ("sr", "super_resolve"):
        return super_resolve(y, kw.pop("factor"), **kw)
    if operator == "deblur":
        return deblur(y, kw.pop("psf"), **kw)
    raise ValueError(f"unknown operator {operator!r}; use denoise, inpaint, sr or deblur")


def add_noise(x: Any, sigma: Optional[float] = None, *, kind: str = "gaussian",
              peak: Optional[float] = None, amount: Optional[float] = None,
              seed: int = 0) -> np.ndarray:
    """``x`` with seeded noise, as ``dip add-noise``: gaussian (``sigma``, 0-255 scale),
    poisson (``peak`` photons at white) or impulse (``amount``, the fraction of samples).
    Returns float32 in [0, 1]."""
    arr, _, two_d = _as_image(x, "x")
    value = {"gaussian": sigma if sigma is not None else 25.0, "poisson": peak,
             "impulse": amount}.get(kind)
    if value is None:
        raise ValueError(f"add_noise(kind={kind!r}) needs its level (peak= or amount=)")
    return _out(_dip.add_noise(arr, kind, float(value), int(seed)), two_d)


def psnr(a: Any, b: Any) -> float:
    """PSNR in dB of ``a`` against ``b`` (same shapes; values as their dtype says)."""
    x, _, _ = _as_image(a, "a")
    y, _, _ = _as_image(b, "b")
    return _dip.psnr(x, y)


def ssim(a: Any, b: Any) -> float:
    """SSIM of ``a`` against ``b`` (same shapes; values as their dtype says)."""
    x, _, _ = _as_image(a, "a")
    y, _, _ = _as_image(b, "b")
    return _dip.ssim(x, y)
