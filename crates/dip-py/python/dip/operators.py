"""Forward operators: what maps the image being restored to what was observed.

These are the operators the command line fits through (the same Rust code), as Python objects
with ``forward(x)`` and ``adjoint(y)`` on numpy arrays. Pass one to :func:`dip.restore`::

    A = dip.operators.Downsample((256, 256, 3), factor=4)
    y = A.forward(clean)                 # 64 x 64 x 3
    r = dip.restore(y, A)

A user's own operator is a pair of callables ``(forward, adjoint)`` with ``shape=`` the image's
shape; see :func:`dip.restore`.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np

from . import _dip

__all__ = ["Blur", "Downsample", "Identity", "Mask", "Matrix", "Operator", "Radon", "even_angles"]

Shape = Tuple[int, ...]


def _shape3(shape: Sequence[int], name: str = "shape") -> Tuple[int, int, int]:
    s = tuple(int(v) for v in shape)
    if len(s) == 2:
        s = s + (1,)
    if len(s) != 3:
        raise ValueError(f"{name}: expected (H, W) or (H, W, C), got {tuple(shape)}")
    return s  # type: ignore[return-value]


def _user_shape(shape3: Tuple[int, int, int], two_d: bool) -> Shape:
    return shape3[:2] if two_d else shape3


class Operator:
    """A linear forward operator ``A`` of the library, acting on float32 arrays.

    ``input_shape`` is the image's shape and ``output_shape`` the observation's, as given
    (``(H, W)`` for gray when the shape was given as 2-D). ``forward(x)`` is ``A x`` and
    ``adjoint(y)`` is ``A^T y``; both accept any float or integer array of the right shape
    (values are used as they are: no scaling) and return float32."""

    def __init__(self, op: Any, two_d: bool, vector_out: bool = False) -> None:
        self._op = op
        self._two_d = two_d
        self._vector_out = vector_out

    @property
    def name(self) -> str:
        """What the operator does, e.g. ``downsample x4 (lanczos2)``."""
        return self._op.name

    @property
    def input_shape(self) -> Shape:
        return _user_shape(self._op.input_shape, self._two_d)

    @property
    def output_shape(self) -> Shape:
        if self._vector_out:
            return (self._op.output_shape[0],)
        return _user_shape(self._op.output_shape, self._two_d)

    def _apply(self, f: Any, a: Any, want: Tuple[int, int, int], out: Shape, what: str):
        arr = np.asarray(a, dtype=np.float32)
        allowed = [want]
        if want[2] == 1:
            allowed.append(want[:2])
            if want[1] == 1:
                allowed.append(want[:1])
        if arr.shape not in allowed:
            raise ValueError(f"{what}: expected shape {_user_shape(want, self._two_d)}, got {arr.shape}")
        r = f(np.ascontiguousarray(arr.reshape(want)))
        return r.reshape(out)

    def forward(self, x: Any) -> np.ndarray:
        """``A x``."""
        return self._apply(self._op.forward, x, self._op.input_shape, self.output_shape, "x")

    def adjoint(self, y: Any) -> np.ndarray:
        """``A^T y``."""
        return self._apply(self._op.adjoint, y, self._op.output_shape, self.input_shape, "y")

    __call__ = forward

    def __repr__(self) -> str:
        return f"Operator('{self.name}', {self.input_shape} -> {self.output_shape})"


def Identity(shape: Sequence[int]) -> Operator:
    """The identity on images of ``shape`` (denoising)."""
    s = _shape3(shape)
    return Operator(_dip.operator("identity", s), len(shape) == 2)


def Mask(mask: Any, channels: int = 1) -> Operator:
    """Keeps the pixels where ``mask`` (H x W, nonzero/True = known) is set and zeroes the
    others (inpainting); ``channels`` of the image (1 or 3)."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask: expected an H x W array, got shape {m.shape}")
    s = (m.shape[0], m.shape[1], int(channels))
    return Operator(_dip.operator("mask", s, mask=np.ascontiguousarray(m != 0)), channels == 1)


def Downsample(shape: Sequence[int], factor: int) -> Operator:
    """The reference Lanczos-2 downsampler by ``factor`` (super-resolution) on images of
    ``shape``, whose sides must be multiples of ``factor``."""
    s = _shape3(shape)
    return Operator(_dip.operator("downsample", s, factor=int(factor)), len(shape) == 2)


def Blur(shape: Sequence[int], psf: Union[str, Any]) -> Operator:
    """Convolution with ``psf`` (``"gaussian:SIGMA"``, ``"box:SIZE"``, or a square odd array of
    nonnegative weights, normalised to sum 1), same-size output with reflected borders."""
    s = _shape3(shape)
    if isinstance(psf, str):
        op = _dip.operator("blur", s, psf=psf)
    else:
        op = _dip.operator(
            "blur", s, psf_weights=np.ascontiguousarray(np.asarray(psf, dtype=np.float64))
        )
    return Operator(op, len(shape) == 2)


def even_angles(views: int) -> np.ndarray:
    """``views`` angles in degrees evenly spaced over [0, 180): ``linspace(0, 180, views,
    endpoint=False)``."""
    return np.linspace(0.0, 180.0, int(views), endpoint=False)


def Radon(n: int, angles: Any) -> Operator:
    """Parallel-beam CT of ``n x n`` gray images over ``angles`` (degrees, or an int: that many
    even views), scikit-image's ``radon(x, theta, circle=True)`` geometry: the sinogram is
    ``n`` detector bins by ``len(angles)`` views. ``adjoint`` is the back projection."""
    a = even_angles(angles) if np.isscalar(angles) else np.asarray(angles, dtype=np.float64)
    return Operator(_dip.operator("radon", (int(n), int(n), 1), angles=[float(v) for v in a]),
                    True)


def Matrix(matrix: Any, shape: Sequence[int]) -> Operator:
    """Any linear model as a sparse matrix: a scipy.sparse matrix (anything with ``tocsr()``),
    or the path of a Matrix Market (``.mtx``) or ``scipy.sparse.save_npz`` (``.npz``) file. It
    maps the image of ``shape`` ((H, W) or (H, W, C)), flattened row by row with the channels
    innermost (numpy's ``ravel()``), to a vector of measurements; the adjoint is the
    transpose."""
    s = _shape3(shape)
    two_d = len(tuple(shape)) == 2
    if isinstance(matrix, (str, bytes)) or hasattr(matrix, "__fspath__"):
        import os

        op = _dip.operator("matrix", s, path=os.fspath(matrix))
    elif hasattr(matrix, "tocsr"):
        m = matrix.tocsr()
        m.sum_duplicates()
        op = _dip.operator(
            "matrix", s,
            csr=(int(m.shape[0]), int(m.shape[1]),
                 np.ascontiguousarray(m.indptr, dtype=np.int64),
                 np.ascontiguousarray(m.indices, dtype=np.int64),
                 np.ascontiguousarray(m.data, dtype=np.float64)),
        )
    else:
        raise TypeError(
            "matrix: expected a scipy.sparse matrix or the path of a .mtx or .npz file, got "
            f"{type(matrix).__name__}"
        )
    return Operator(op, two_d, vector_out=True)
