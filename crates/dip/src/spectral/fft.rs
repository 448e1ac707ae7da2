//! 2-D discrete Fourier transforms of images, planned once per image size.
//!
//! A DIP trajectory has hundreds of frames of one size, so the plans, the scratch and the radial
//! frequency of every bin are built once in [`Fft2d`] and reused for every frame. The transform
//! runs in `f64`: band energies are sums over up to millions of bins and the low-pass search
//! compares errors near zero, where `f32` rounding would show.
//!
//! Convention: the unnormalised forward DFT
//! `F[ky, kx] = Σ_y Σ_x x[y, x] · exp(−2πi (kx·x / w + ky·y / h))`, stored row-major in the
//! usual unshifted layout (`F[0, 0]` is DC, index `ky * width + kx`). Parseval then reads
//! `Σ |F|² / N = Σ x²` with `N = width · height`.

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};
use rustfft::{Fft, FftPlanner};

use crate::error::{Error, Result};
use crate::image::Image;

/// Complex `f64`, re-exported so callers need not depend on `rustfft` to read a [`Spectrum`].
pub use rustfft::num_complex::Complex64;

/// Frequency in cycles per pixel of DFT index `k` along an axis of length `n`, in \[−0.5, 0.5).
///
/// Indices past the middle are the negative frequencies of the unshifted layout; for even `n`
/// the Nyquist index `n / 2` is reported as −0.5 (its sign does not matter for a radius).
pub fn axis_frequency(k: usize, n: usize) -> f64 {
    if 2 * k < n {
        k as f64 / n as f64
    } else {
        -((n - k) as f64 / n as f64)
    }
}

/// Normalised radial frequency `sqrt(fx² + fy²)` of every bin, in the unshifted layout.
///
/// Axis Nyquist is 0.5; the corners of an even-sized spectrum reach `sqrt(0.5) ≈ 0.707`.
pub fn radial_frequencies(width: usize, height: usize) -> Vec<f64> {
    let mut r = Vec::with_capacity(width * height);
    for ky in 0..height {
        let fy = axis_frequency(ky, height);
        for kx in 0..width {
            let fx = axis_frequency(kx, width);
            r.push((fx * fx + fy * fy).sqrt());
        }
    }
    r
}

/// The 2-D DFT of every channel of one image: complex coefficients in the unshifted layout.
///
/// Kept complex (not just power) because the fit, correspondence and low-pass measures need
/// differences and products of spectra, which power alone cannot give. Not serialisable: it is
/// a working value, and the measures derived from it are what gets saved.
#[derive(Clone, Debug, PartialEq)]
pub struct Spectrum {
    /// Columns of the image (and of the spectrum).
    pub width: usize,
    /// Rows of the image (and of the spectrum).
    pub height: usize,
    /// Number of channels transformed.
    pub channels: usize,
    /// Channel-major planes: coefficient `(c, ky, kx)` is at `c * width * height + ky * width + kx`.
    pub coeffs: Vec<Complex64>,
}

impl Spectrum {
    /// An all-zero spectrum, to be filled by [`Fft2d::forward_into`].
    pub fn zeros(width: usize, height: usize, channels: usize) -> Self {
        Spectrum {
            width,
            height,
            channels,
            coeffs: vec![Complex64::new(0.0, 0.0); width * height * channels],
        }
    }

    /// Number of frequency bins per channel (`width * height`).
    pub fn bins(&self) -> usize {
        self.width * self.height
    }

    /// The coefficients of channel `c`.
    pub fn channel(&self, c: usize) -> &[Complex64] {
        let n = self.bins();
        &self.coeffs[c * n..(c + 1) * n]
    }

    /// Power `|F|²` of every bin of channel `c`, unnormalised (divide by [`Spectrum::bins`] for
    /// Parseval's pixel-domain units).
    pub fn power(&self, c: usize) -> Vec<f64> {
        self.channel(c).iter().map(|z| z.norm_sqr()).collect()
    }

    /// Power `|F|²` summed over channels, per bin.
    pub fn total_power(&self) -> Vec<f64> {
        let n = self.bins();
        let mut p = vec![0.0; n];
        for c in 0..self.channels {
            for (acc, z) in p.iter_mut().zip(self.channel(c)) {
                *acc += z.norm_sqr();
            }
        }
        p
    }
}

/// Forward (and inverse) 2-D DFT plans for one image size, with their scratch.
///
/// Rows go through a real-to-complex FFT (half the work), columns through a complex FFT on the
/// `width / 2 + 1` non-redundant columns, and the other half of the spectrum is filled in from
/// Hermitian symmetry, so callers always see the full layout. Cloning is cheap (plans are
/// shared) and gives independent scratch, e.g. one per rayon worker.
#[derive(Clone)]
pub struct Fft2d {
    width: usize,
    height: usize,
    half: usize,
    row_r2c: Arc<dyn RealToComplex<f64>>,
    col_fwd: Arc<dyn Fft<f64>>,
    row_inv: Arc<dyn Fft<f64>>,
    col_inv: Arc<dyn Fft<f64>>,
    radial: Arc<Vec<f64>>,
    row_in: Vec<f64>,
    row_scratch: Vec<Complex64>,
    half_buf: Vec<Complex64>,
    col_buf: Vec<Complex64>,
    fft_scratch: Vec<Complex64>,
}

impl std::fmt::Debug for Fft2d {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fft2d")
            .field("width", &self.width)
            .field("height", &self.height)
            .finish_non_exhaustive()
    }
}

impl Fft2d {
    /// Plans the transforms for `width × height` images.
    pub fn new(width: usize, height: usize) -> Result<Self> {
        if width == 0 || height == 0 {
            return Err(Error::invalid(format!(
                "a spectrum needs a non-empty image, not {width}x{height}"
            )));
        }
        let half = width / 2 + 1;
        let row_r2c = RealFftPlanner::<f64>::new().plan_fft_forward(width);
        let mut planner = FftPlanner::<f64>::new();
        let col_fwd = planner.plan_fft_forward(height);
        let row_inv = planner.plan_fft_inverse(width);
        let col_inv = planner.plan_fft_inverse(height);
        let scratch_len = col_fwd
            .get_inplace_scratch_len()
            .max(row_inv.get_inplace_scratch_len())
            .max(col_inv.get_inplace_scratch_len());
        let zero = Complex64::new(0.0, 0.0);
        Ok(Fft2d {
            width,
            height,
            half,
            row_scratch: vec![zero; row_r2c.get_scratch_len()],
            row_r2c,
            col_fwd,
            row_inv,
            col_inv,
            radial: Arc::new(radial_frequencies(width, height)),
            row_in: vec![0.0; width],
            half_buf: vec![zero; half * height],
            col_buf: vec![zero; half.max(width) * height],
            fft_scratch: vec![zero; scratch_len],
        })
    }

    /// Image columns this plan is for.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Image rows this plan is for.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Bins per channel, `width * height` (the `N` of Parseval).
    pub fn bins(&self) -> usize {
        self.width * self.height
    }

    /// Radial frequency of every bin (see [`radial_frequencies`]), computed once per plan.
    pub fn radial(&self) -> &[f64] {
        &self.radial
    }

    fn check_data(&self, len: usize, channels: usize) -> Result<()> {
        if channels == 0 || len != self.bins() * channels {
            return Err(Error::invalid(format!(
                "the spectrum is planned for {}x{} images; got {len} samples with {channels} channel(s)",
                self.width, self.height
            )));
        }
        Ok(())
    }

    /// Transforms channel `c` of HWC samples into `out` (length `width * height`).
    ///
    /// This is the allocation-free primitive the other entry points are built on.
    pub fn forward_channel(
        &mut self,
        data: &[f32],
        channels: usize,
        c: usize,
        out: &mut [Complex64],
    ) -> Result<()> {
        self.check_data(data.len(), channels)?;
        if c >= channels || out.len() != self.bins() {
            return Err(Error::invalid(format!(
                "channel {c} of {channels}, into {} bins (need {})",
                out.len(),
                self.bins()
            )));
        }
        let (w, h, half) = (self.width, self.height, self.half);
        for y in 0..h {
            for (x, v) in self.row_in.iter_mut().enumerate() {
                *v = f64::from(data[(y * w + x) * channels + c]);
            }
            let row_out = &mut self.half_buf[y * half..(y + 1) * half];
            self.row_r2c
                .process_with_scratch(&mut self.row_in, row_out, &mut self.row_scratch)
                .map_err(|e| Error::invalid(format!("row FFT: {e}")))?;
        }
        // Transpose the half spectrum so every column is contiguous, then one batched FFT.
        let cols = &mut self.col_buf[..half * h];
        for y in 0..h {
            for kx in 0..half {
                cols[kx * h + y] = self.half_buf[y * half + kx];
            }
        }
        self.col_fwd
            .process_with_scratch(cols, &mut self.fft_scratch);
        for ky in 0..h {
            for kx in 0..w {
                out[ky * w + kx] = if kx < half {
                    cols[kx * h + ky]
                } else {
                    // Real input: F[ky, kx] = conj(F[−ky, −kx]).
                    cols[(w - kx) * h + (h - ky) % h].conj()
                };
            }
        }
        Ok(())
    }

    /// Transforms every channel of HWC samples into `out`, reusing its storage.
    pub fn forward_into(
        &mut self,
        data: &[f32],
        channels: usize,
        out: &mut Spectrum,
    ) -> Result<()> {
        self.check_data(data.len(), channels)?;
        let n = self.bins();
        out.width = self.width;
        out.height = self.height;
        out.channels = channels;
        out.coeffs.resize(n * channels, Complex64::new(0.0, 0.0));
        for c in 0..channels {
            self.forward_channel(data, channels, c, &mut out.coeffs[c * n..(c + 1) * n])?;
        }
        Ok(())
    }

    /// The spectrum of HWC samples with `channels` channels.
    pub fn forward_data(&mut self, data: &[f32], channels: usize) -> Result<Spectrum> {
        let mut s = Spectrum::zeros(self.width, self.height, channels);
        self.forward_into(data, channels, &mut s)?;
        Ok(s)
    }

    /// The spectrum of an image.
    pub fn forward(&mut self, img: &Image) -> Result<Spectrum> {
        self.check_size(img)?;
        self.forward_data(&img.data, img.channels)
    }

    /// Errors unless `img` has the size this plan is for.
    pub fn check_size(&self, img: &Image) -> Result<()> {
        if img.width != self.width || img.height != self.height {
            return Err(Error::invalid(format!(
                "the spectrum is planned for {}x{} images, not {}x{}",
                self.width, self.height, img.width, img.height
            )));
        }
        Ok(())
    }

    /// Inverse DFT of one channel's full spectrum, keeping the real part, scaled by `1 / N` so
    /// that it undoes [`Fft2d::forward_channel`]. `spec` is used as workspace and overwritten.
    ///
    /// Takes the full (not half) spectrum so that filtered spectra need not be exactly
    /// Hermitian; any imaginary residue of the result is dropped.
    pub fn inverse_channel_real(&mut self, spec: &mut [Complex64], out: &mut [f64]) -> Result<()> {
        let (w, h) = (self.width, self.height);
        if spec.len() != w * h || out.len() != w * h {
            return Err(Error::invalid(format!(
                "inverse of a {w}x{h} spectrum needs {} bins in and out",
                w * h
            )));
        }
        let cols = &mut self.col_buf[..w * h];
        for ky in 0..h {
            for kx in 0..w {
                cols[kx * h + ky] = spec[ky * w + kx];
            }
        }
        self.col_inv
            .process_with_scratch(cols, &mut self.fft_scratch);
        for y in 0..h {
            for kx in 0..w {
                spec[y * w + kx] = cols[kx * h + y];
            }
        }
        self.row_inv
            .process_with_scratch(spec, &mut self.fft_scratch);
        let scale = 1.0 / (w * h) as f64;
        for (o, z) in out.iter_mut().zip(spec.iter()) {
            *o = z.re * scale;
        }
        Ok(())
    }
}
