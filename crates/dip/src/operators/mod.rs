//! Forward operators: the `A` in `y = A(x) + noise`.
//!
//! The Deep Image Prior restores `x` by minimising `‖A(f_θ(z)) − y‖²` over the network weights θ.
//! The fit loop calls [`Operator::forward`] on the network output and [`Operator::adjoint`] on
//! the gradient of the loss with respect to `A(x)`, which gives the gradient with respect to the
//! network output. Every operator here is linear, so the adjoint is the backward pass.
//!
//! Buffers are `f32`, channel-last (HWC, row-major), the layout of [`Image`] and of the network
//! tensors. Shapes are `(width, height, channels)`. `forward` and `adjoint` overwrite their whole
//! output (they never accumulate into it) and allocate nothing in the usual case: index and weight
//! tables are built by the constructors, and the few operators that need an intermediate buffer
//! keep one behind a mutex (a second thread calling the same operator at the same time gets a
//! temporary buffer instead of waiting).
//!
//! | operator | task | `A` |
//! |---|---|---|
//! | [`Identity`] | denoising | `x` |
//! | [`Mask`] | inpainting | keeps the known pixels, zeros the rest |
//! | [`Downsample`] | super-resolution | Lanczos-2 filter and stride, as the reference DIP |
//! | [`Blur`] | deblurring | convolution with a normalised [`Psf`], replicated edges |
//! | [`Compose`] | e.g. blurred and downsampled | the operators one after the other |
//! | [`Radon`] | CT, parallel beam | line integrals over given angles (scikit-image's geometry) |
//! | [`MatrixOperator`] | any linear model | a sparse matrix from a file (`.mtx`, scipy `.npz`) |
//!
//! Baselines and synthetic degradations live alongside: [`bicubic_upscale`],
//! [`bicubic_downscale`], and the noise models in [`noise_models`].

mod axis;
mod blur;
mod mask;
mod matrix;
pub mod noise_models;
mod radon;
mod resample;
mod sparse;

use std::sync::{Mutex, TryLockError};

pub use blur::{Blur, MAX_PSF_SIZE, Psf};
pub use mask::{HARMONIC_ROUNDS, Mask, harmonic_fill};
pub use matrix::MatrixOperator;
pub use radon::{Radon, even_angles, shepp_logan};
pub use resample::{
    Downsample, bicubic_downscale, bicubic_resize, bicubic_upscale, lanczos2_weights,
};
pub use sparse::SparseRows;

use crate::error::{Error, Result};
use crate::image::Image;

/// `(width, height, channels)` of an operator's input or output.
pub type Shape = (usize, usize, usize);

/// Number of samples in a buffer of this shape.
pub fn shape_len(s: Shape) -> usize {
    s.0 * s.1 * s.2
}

/// A linear forward operator on HWC `f32` buffers.
///
/// Implementations must make `adjoint` the exact transpose of `forward`:
/// `⟨A x, y⟩ = ⟨x, Aᵀ y⟩` for all `x`, `y` (up to `f32` rounding).
pub trait Operator: Send + Sync {
    /// Shape of `x`, the image being restored.
    fn input_shape(&self) -> Shape;
    /// Shape of `A x`, the observation.
    fn output_shape(&self) -> Shape;
    /// Writes `A x` to `y`, overwriting all of it.
    ///
    /// # Panics
    /// If `x` or `y` does not have the length of the input or output shape.
    fn forward(&self, x: &[f32], y: &mut [f32]);
    /// Writes `Aᵀ gy` to `gx`, overwriting all of it.
    ///
    /// # Panics
    /// If `gy` or `gx` does not have the length of the output or input shape.
    fn adjoint(&self, gy: &[f32], gx: &mut [f32]);
    /// A short human-readable description, e.g. `downsample x4 (lanczos2)`.
    fn name(&self) -> String;

    /// The operator as one factor per sample, `(A x)_i = d_i·x_i`, when it is that (the
    /// identity, masks); `None` otherwise. Fits on the GPU run these operators.
    fn diagonal(&self) -> Option<Vec<f32>> {
        None
    }

    /// The operator as an explicit sparse matrix over flattened HWC samples, where it has one
    /// of practical size (resampling, blur); `None` otherwise. Fits on the GPU apply it.
    fn rows(&self) -> Option<SparseRows> {
        None
    }

    /// Samples in an input buffer.
    fn input_len(&self) -> usize {
        shape_len(self.input_shape())
    }
    /// Samples in an output buffer.
    fn output_len(&self) -> usize {
        shape_len(self.output_shape())
    }
    /// `A` applied to an image (e.g. to make a synthetic observation); keeps its bit depth.
    ///
    /// Errors if the image's shape is not the input shape, or the output shape has a channel
    /// count an [`Image`] cannot have.
    fn apply(&self, img: &Image) -> Result<Image> {
        let want = self.input_shape();
        if (img.width, img.height, img.channels) != want {
            return Err(Error::invalid(format!(
                "{}: expects a {}x{} image with {} channel(s), got {}x{} with {}",
                self.name(),
                want.0,
                want.1,
                want.2,
                img.width,
                img.height,
                img.channels
            )));
        }
        let (w, h, c) = self.output_shape();
        let mut data = vec![0.0; w * h * c];
        self.forward(&img.data, &mut data);
        Ok(Image::try_new(w, h, c, data)?.with_bit_depth(img.bit_depth))
    }
}

/// Panics with a clear message if a buffer has the wrong length (a programming error).
#[track_caller]
pub(crate) fn check_len(op: &str, what: &str, got: usize, want: usize) {
    assert!(
        got == want,
        "{op}: {what} has {got} samples, the shape needs {want}"
    );
}

/// Errors unless all of a shape's sizes are nonzero.
pub(crate) fn check_shape(op: &str, s: Shape) -> Result<()> {
    if s.0 == 0 || s.1 == 0 || s.2 == 0 {
        return Err(Error::invalid(format!(
            "{op}: shape {}x{}x{} has a zero size",
            s.0, s.1, s.2
        )));
    }
    Ok(())
}

/// A preallocated work buffer for `&self` methods.
///
/// Used under a mutex; if another thread holds it, the caller gets a fresh buffer instead of
/// waiting, so sharing an operator across threads is correct, only slower.
#[derive(Debug)]
pub(crate) struct Scratch {
    buf: Mutex<Vec<f32>>,
    len: usize,
}

impl Scratch {
    pub(crate) fn new(len: usize) -> Self {
        Scratch {
            buf: Mutex::new(vec![0.0; len]),
            len,
        }
    }

    /// Runs `f` on a buffer of `len` samples with unspecified contents.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut [f32]) -> R) -> R {
        match self.buf.try_lock() {
            Ok(mut g) => f(&mut g),
            // The buffer holds no invariant worth protecting: a panic mid-use leaves garbage,
            // which the next user overwrites anyway.
            Err(TryLockError::Poisoned(p)) => f(&mut p.into_inner()),
            Err(TryLockError::WouldBlock) => f(&mut vec![0.0; self.len]),
        }
    }
}

/// `A = I`: denoising.
#[derive(Clone, Debug)]
pub struct Identity {
    shape: Shape,
}

impl Identity {
    /// The identity on images of `width × height × channels`.
    pub fn new(width: usize, height: usize, channels: usize) -> Self {
        Identity {
            shape: (width, height, channels),
        }
    }
}

impl Operator for Identity {
    fn input_shape(&self) -> Shape {
        self.shape
    }
    fn output_shape(&self) -> Shape {
        self.shape
    }
    fn forward(&self, x: &[f32], y: &mut [f32]) {
        let n = shape_len(self.shape);
        check_len("identity", "input", x.len(), n);
        check_len("identity", "output", y.len(), n);
        y.copy_from_slice(x);
    }
    fn adjoint(&self, gy: &[f32], gx: &mut [f32]) {
        self.forward(gy, gx);
    }
    fn name(&self) -> String {
        "identity".to_string()
    }
    fn diagonal(&self) -> Option<Vec<f32>> {
        Some(vec![1.0; shape_len(self.shape)])
    }
}

/// Several operators applied one after the other: `A = A_{n−1} ∘ … ∘ A_1 ∘ A_0`.
///
/// `ops[0]` is applied first, so blur-then-downsample is `Compose::new(vec![blur, down])`. The
/// adjoint applies the adjoints in reverse order. Two intermediate buffers, as large as the
/// largest intermediate shape, are allocated once.
pub struct Compose {
    ops: Vec<Box<dyn Operator>>,
    /// Largest intermediate buffer (0 for a single operator).
    max_mid: usize,
    scratch: Scratch,
}

impl Compose {
    /// Chains `ops`, first applied first.
    ///
    /// Errors if the list is empty or an operator's output shape is not the next one's input
    /// shape; the message names both operators and shapes.
    pub fn new(ops: Vec<Box<dyn Operator>>) -> Result<Self> {
        if ops.is_empty() {
            return Err(Error::invalid("compose: needs at least one operator"));
        }
        let mut max_mid = 0;
        for pair in ops.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            let (out, inp) = (a.output_shape(), b.input_shape());
            if out != inp {
                return Err(Error::invalid(format!(
                    "compose: {} gives {}x{}x{} but {} expects {}x{}x{}",
                    a.name(),
                    out.0,
                    out.1,
                    out.2,
                    b.name(),
                    inp.0,
                    inp.1,
                    inp.2
                )));
            }
            max_mid = max_mid.max(shape_len(out));
        }
        Ok(Compose {
            ops,
            max_mid,
            scratch: Scratch::new(2 * max_mid),
        })
    }

    /// The operators, in the order they are applied.
    pub fn ops(&self) -> &[Box<dyn Operator>] {
        &self.ops
    }
}

impl std::fmt::Debug for Compose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compose")
            .field("name", &self.name())
            .finish()
    }
}

impl Operator for Compose {
    fn input_shape(&self) -> Shape {
        self.ops[0].input_shape()
    }
    fn output_shape(&self) -> Shape {
        self.ops[self.ops.len() - 1].output_shape()
    }
    fn forward(&self, x: &[f32], y: &mut [f32]) {
        check_len("compose", "input", x.len(), self.input_len());
        check_len("compose", "output", y.len(), self.output_len());
        let n = self.ops.len();
        if n == 1 {
            return self.ops[0].forward(x, y);
        }
        self.scratch.with(|s| {
            let (a, b) = s.split_at_mut(self.max_mid);
            let (mut cur, mut next) = (a, b);
            let first = &self.ops[0];
            first.forward(x, &mut cur[..first.output_len()]);
            for op in &self.ops[1..n - 1] {
                op.forward(&cur[..op.input_len()], &mut next[..op.output_len()]);
                std::mem::swap(&mut cur, &mut next);
            }
            let last = &self.ops[n - 1];
            last.forward(&cur[..last.input_len()], y);
        });
    }
    fn adjoint(&self, gy: &[f32], gx: &mut [f32]) {
        check_len("compose", "output gradient", gy.len(), self.output_len());
        check_len("compose", "input gradient", gx.len(), self.input_len());
        let n = self.ops.len();
        if n == 1 {
            return self.ops[0].adjoint(gy, gx);
        }
        self.scratch.with(|s| {
            let (a, b) = s.split_at_mut(self.max_mid);
            let (mut cur, mut next) = (a, b);
            let last = &self.ops[n - 1];
            last.adjoint(gy, &mut cur[..last.input_len()]);
            for op in self.ops[1..n - 1].iter().rev() {
                op.adjoint(&cur[..op.output_len()], &mut next[..op.input_len()]);
                std::mem::swap(&mut cur, &mut next);
            }
            let first = &self.ops[0];
            first.adjoint(&cur[..first.output_len()], gx);
        });
    }
    fn name(&self) -> String {
        self.ops
            .iter()
            .map(|o| o.name())
            .collect::<Vec<_>>()
            .join(" then ")
    }
    /// The product of the diagonals, when every operator is diagonal.
    fn diagonal(&self) -> Option<Vec<f32>> {
        let mut d = self.ops[0].diagonal()?;
        for op in &self.ops[1..] {
            for (a, b) in d.iter_mut().zip(op.diagonal()?) {
                *a *= b;
            }
        }
        Some(d)
    }
    /// The product of the operators' matrices (a diagonal one as its matrix), when each has one.
    fn rows(&self) -> Option<SparseRows> {
        let matrix = |op: &dyn Operator| {
            op.rows()
                .or_else(|| op.diagonal().and_then(|d| SparseRows::diagonal(&d)))
        };
        let mut a = matrix(self.ops[0].as_ref())?;
        for op in &self.ops[1..] {
            a = a.then(&matrix(op.as_ref())?)?;
        }
        Some(a)
    }
}
