//! 2-D parallel-beam CT: the Radon transform as a ray-driven sampler, its exact adjoint (the
//! back projection), and filtered back projection (FBP) as the classical baseline.
//!
//! The geometry is scikit-image's `radon(x, theta, circle=True)`: an `n × n` image, `n`
//! detector bins, the centre `c = n / 2` (integer division), angles in degrees. The sample of
//! bin `j` at angle `θ` sums the image, interpolated bilinearly (zero outside), at the `n`
//! points
//!
//! ```text
//! col = c + (j − c) cos θ + (r − c) sin θ,   row = c − (j − c) sin θ + (r − c) cos θ,   r = 0..n
//! ```
//!
//! which is what scikit-image computes by rotating the image and summing its rows. The
//! sinogram is an `n × n_angles` single-channel image (rows: detector bins; columns: angles),
//! scikit-image's layout. The adjoint uses the same weights, scattered: it is the transpose to
//! rounding, which the dot-product test checks.

use std::f64::consts::PI;

use rayon::prelude::*;
use rustfft::FftPlanner;
use rustfft::num_complex::Complex64;

use super::sparse::SparseRows;
use super::{Operator, Shape, check_len};
use crate::error::{Error, Result};
use crate::image::Image;

/// Angles whose back projection is summed into one partial image: the partial images are
/// added in a fixed order, so the adjoint does not depend on the thread count.
const ANGLES_PER_CHUNK: usize = 4;

/// The parallel-beam Radon transform of `n × n` gray images over the given angles.
#[derive(Debug, Clone)]
pub struct Radon {
    n: usize,
    angles: Vec<f64>,
    /// `(cos θ, sin θ)` of each angle.
    trig: Vec<(f64, f64)>,
}

/// `views` angles evenly spaced over [0°, 180°), as `linspace(0, 180, views, endpoint=False)`.
pub fn even_angles(views: usize) -> Vec<f64> {
    (0..views)
        .map(|i| 180.0 * i as f64 / views as f64)
        .collect()
}

impl Radon {
    /// The transform of `n × n` images over `angles` (degrees).
    pub fn new(n: usize, angles: &[f64]) -> Result<Self> {
        if n < 2 {
            return Err(Error::invalid(format!(
                "a CT image needs a side of at least 2 pixels, not {n}"
            )));
        }
        if angles.is_empty() {
            return Err(Error::invalid("a CT scan needs at least one angle"));
        }
        if let Some(a) = angles.iter().find(|a| !a.is_finite()) {
            return Err(Error::invalid(format!(
                "angle {a} is not a number of degrees"
            )));
        }
        Ok(Radon {
            n,
            angles: angles.to_vec(),
            trig: angles
                .iter()
                .map(|a| (a.to_radians().cos(), a.to_radians().sin()))
                .collect(),
        })
    }

    /// The image side.
    pub fn size(&self) -> usize {
        self.n
    }

    /// The angles, in degrees.
    pub fn angles(&self) -> &[f64] {
        &self.angles
    }

    /// Calls `f(pixel, weight)` for the bilinear footprint of every sample point of bin `j` at
    /// angle `a`, in a fixed order.
    #[inline]
    fn ray(&self, a: usize, j: usize, mut f: impl FnMut(usize, f64)) {
        let n = self.n;
        let c = (n / 2) as f64;
        let (cos, sin) = self.trig[a];
        let s = j as f64 - c;
        let (x0, y0) = (c + s * cos, c - s * sin);
        for r in 0..n {
            let t = r as f64 - c;
            let (x, y) = (x0 + t * sin, y0 + t * cos);
            let (xf, yf) = (x.floor(), y.floor());
            if xf < -1.0 || yf < -1.0 || xf >= n as f64 || yf >= n as f64 {
                continue;
            }
            let (fx, fy) = (x - xf, y - yf);
            let (xi, yi) = (xf as isize, yf as isize);
            for (dy, wy) in [(0isize, 1.0 - fy), (1, fy)] {
                let row = yi + dy;
                if row < 0 || row >= n as isize || wy == 0.0 {
                    continue;
                }
                for (dx, wx) in [(0isize, 1.0 - fx), (1, fx)] {
                    let col = xi + dx;
                    if col < 0 || col >= n as isize || wx == 0.0 {
                        continue;
                    }
                    f(row as usize * n + col as usize, wy * wx);
                }
            }
        }
    }

    /// The ramp-filtered projections times `π / (2 · angles)`, each first padded with zeros
    /// (centred) to the image's diagonal, `L = ⌈√2 n⌉` bins, as scikit-image's `iradon` does for
    /// `circle=True`: `L × angles`, bin `L / 2` the centre. `hann` windows the ramp (less noise,
    /// less resolution).
    fn filter(&self, sinogram: &[f32], hann: bool) -> (usize, Vec<f64>) {
        let (n, m) = (self.n, self.angles.len());
        check_len("radon", "sinogram", sinogram.len(), n * m);
        let len = (std::f64::consts::SQRT_2 * n as f64).ceil() as usize;
        let before = len / 2 - n / 2;
        // scikit-image's filter: the spatial Ram-Lak kernel's transform, on a padded length.
        let size = (2 * len).next_power_of_two().max(64);
        let mut kernel = vec![Complex64::new(0.0, 0.0); size];
        kernel[0].re = 0.25;
        for (k, v) in kernel.iter_mut().enumerate().skip(1) {
            // Odd distances only: 1, 3, ..., size/2 - 1, then back down.
            let d = if k <= size / 2 { k } else { size - k };
            if d % 2 == 1 {
                v.re = -1.0 / (PI * d as f64).powi(2);
            }
        }
        let mut planner = FftPlanner::<f64>::new();
        let fwd = planner.plan_fft_forward(size);
        let inv = planner.plan_fft_inverse(size);
        fwd.process(&mut kernel);
        let mut ramp: Vec<f64> = kernel.iter().map(|v| 2.0 * v.re).collect();
        if hann {
            // numpy's fftshift(hanning(size)), from index 1 on.
            let hanning = |i: usize| 0.5 - 0.5 * (2.0 * PI * i as f64 / (size as f64 - 1.0)).cos();
            for (k, r) in ramp.iter_mut().enumerate().skip(1) {
                *r *= hanning((k + size / 2) % size);
            }
        }
        let scale = PI / (2.0 * m as f64);
        let mut out = vec![0.0f64; len * m];
        let mut buf = vec![Complex64::new(0.0, 0.0); size];
        for a in 0..m {
            buf.fill(Complex64::new(0.0, 0.0));
            for j in 0..n {
                buf[before + j].re = sinogram[j * m + a] as f64;
            }
            fwd.process(&mut buf);
            for (b, &r) in buf.iter_mut().zip(&ramp) {
                *b *= r;
            }
            inv.process(&mut buf);
            for j in 0..len {
                out[j * m + a] = buf[j].re / size as f64 * scale;
            }
        }
        (len, out)
    }

    /// Filtered back projection of a sinogram (Ram-Lak ramp, or Hann-windowed), as an image
    /// (values as they come: not clipped), zero outside the inscribed circle. As scikit-image's
    /// `iradon(..., circle=True)`, to rounding: each pixel takes, at every angle, the filtered
    /// projection interpolated linearly at its detector position
    /// `t = (col − c) cos θ − (row − c) sin θ` (zero beyond the detector).
    pub fn fbp(&self, sinogram: &[f32], hann: bool) -> Vec<f32> {
        let (len, filtered) = self.filter(sinogram, hann);
        let (n, m) = (self.n, self.angles.len());
        let c = (n / 2) as f64;
        let centre = (len / 2) as f64;
        let mut x = vec![0.0f32; n * n];
        x.par_chunks_mut(n).enumerate().for_each(|(row, out)| {
            for (col, v) in out.iter_mut().enumerate() {
                let (dx, dy) = (col as f64 - c, row as f64 - c);
                if dx * dx + dy * dy > c * c {
                    continue;
                }
                let mut sum = 0.0f64;
                for (a, &(cos, sin)) in self.trig.iter().enumerate() {
                    let t = dx * cos - dy * sin + centre;
                    if t < 0.0 || t > (len - 1) as f64 {
                        continue;
                    }
                    let j = (t.floor() as usize).min(len - 1);
                    let f = t - j as f64;
                    let lo = filtered[j * m + a];
                    let hi = if j + 1 < len {
                        filtered[(j + 1) * m + a]
                    } else {
                        0.0
                    };
                    sum += lo * (1.0 - f) + hi * f;
                }
                *v = sum as f32;
            }
        });
        x
    }

    /// The sinogram of `img` (an `n × n` gray image) as an image (rows: bins, columns: angles).
    pub fn sinogram(&self, img: &Image) -> Result<Image> {
        if (img.width, img.height, img.channels) != (self.n, self.n, 1) {
            return Err(Error::invalid(format!(
                "CT needs a square gray image of {0}x{0}, not {1}x{2} with {3} channel(s)",
                self.n, img.width, img.height, img.channels
            )));
        }
        let mut y = vec![0.0f32; self.output_len()];
        self.forward(&img.data, &mut y);
        Image::try_new(self.angles.len(), self.n, 1, y)
    }
}

impl Operator for Radon {
    fn input_shape(&self) -> Shape {
        (self.n, self.n, 1)
    }
    fn output_shape(&self) -> Shape {
        (self.angles.len(), self.n, 1)
    }
    fn forward(&self, x: &[f32], y: &mut [f32]) {
        let (n, m) = (self.n, self.angles.len());
        check_len("radon", "input", x.len(), n * n);
        check_len("radon", "output", y.len(), n * m);
        // Row j of the sinogram holds bin j at every angle.
        y.par_chunks_mut(m).enumerate().for_each(|(j, row)| {
            for (a, v) in row.iter_mut().enumerate() {
                let mut sum = 0.0f64;
                self.ray(a, j, |p, w| sum += w * x[p] as f64);
                *v = sum as f32;
            }
        });
    }
    fn adjoint(&self, gy: &[f32], gx: &mut [f32]) {
        let (n, m) = (self.n, self.angles.len());
        check_len("radon", "output", gy.len(), n * m);
        check_len("radon", "input", gx.len(), n * n);
        let chunks: Vec<usize> = (0..m).step_by(ANGLES_PER_CHUNK).collect();
        let partial: Vec<Vec<f64>> = chunks
            .par_iter()
            .map(|&a0| {
                let mut acc = vec![0.0f64; n * n];
                for a in a0..(a0 + ANGLES_PER_CHUNK).min(m) {
                    for j in 0..n {
                        let g = gy[j * m + a] as f64;
                        if g != 0.0 {
                            self.ray(a, j, |p, w| acc[p] += w * g);
                        }
                    }
                }
                acc
            })
            .collect();
        let mut sum = vec![0.0f64; n * n];
        for p in &partial {
            sum.iter_mut().zip(p).for_each(|(s, v)| *s += v);
        }
        gx.iter_mut().zip(&sum).for_each(|(o, &s)| *o = s as f32);
    }
    fn name(&self) -> String {
        format!(
            "radon ({} views, {:.1} to {:.1} degrees)",
            self.angles.len(),
            self.angles.first().copied().unwrap_or(0.0),
            self.angles.last().copied().unwrap_or(0.0)
        )
    }
    fn rows(&self) -> Option<SparseRows> {
        let (n, m) = (self.n, self.angles.len());
        SparseRows::build(n * n, n * m, |o, out| {
            let (j, a) = (o / m, o % m);
            self.ray(a, j, |p, w| out.push((p, w as f32)));
        })
    }
}

/// The modified Shepp–Logan head phantom (Toft's contrasts, as scikit-image's), `n × n`, values
/// in [0, 1], each pixel the mean over a 4 × 4 grid of points inside it.
pub fn shepp_logan(n: usize) -> Image {
    // (value, semi-axis a, semi-axis b, centre x, centre y, rotation in degrees), on [-1, 1]²
    // with y up.
    const ELLIPSES: [(f64, f64, f64, f64, f64, f64); 10] = [
        (1.0, 0.69, 0.92, 0.0, 0.0, 0.0),
        (-0.8, 0.6624, 0.874, 0.0, -0.0184, 0.0),
        (-0.2, 0.11, 0.31, 0.22, 0.0, -18.0),
        (-0.2, 0.16, 0.41, -0.22, 0.0, 18.0),
        (0.1, 0.21, 0.25, 0.0, 0.35, 0.0),
        (0.1, 0.046, 0.046, 0.0, 0.1, 0.0),
        (0.1, 0.046, 0.046, 0.0, -0.1, 0.0),
        (0.1, 0.046, 0.023, -0.08, -0.605, 0.0),
        (0.1, 0.023, 0.023, 0.0, -0.606, 0.0),
        (0.1, 0.023, 0.046, 0.06, -0.605, 0.0),
    ];
    const SUB: usize = 4;
    let mut data = vec![0.0f32; n * n];
    for (p, v) in data.iter_mut().enumerate() {
        let (row, col) = (p / n, p % n);
        let mut sum = 0.0;
        for sy in 0..SUB {
            for sx in 0..SUB {
                let x = ((col * SUB + sx) as f64 + 0.5) / (n * SUB) as f64 * 2.0 - 1.0;
                let y = 1.0 - ((row * SUB + sy) as f64 + 0.5) / (n * SUB) as f64 * 2.0;
                for &(val, a, b, x0, y0, phi) in &ELLIPSES {
                    let (c, s) = (phi.to_radians().cos(), phi.to_radians().sin());
                    let (dx, dy) = (x - x0, y - y0);
                    let (u, w) = (dx * c + dy * s, -dx * s + dy * c);
                    if (u / a).powi(2) + (w / b).powi(2) <= 1.0 {
                        sum += val;
                    }
                }
            }
        }
        *v = (sum / (SUB * SUB) as f64).clamp(0.0, 1.0) as f32;
    }
    Image::new(n, n, 1, data)
}
