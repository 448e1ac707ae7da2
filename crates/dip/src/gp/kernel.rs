//! Stationary covariance kernels on the pixel grid: estimated ones (the DIP prior) and the RBF.
//!
//! A kernel is stored as its covariance `c(dy, dx)` for displacements up to `radius` on each
//! axis. On a finite periodic grid (a torus) a stationary covariance is a circulant matrix,
//! diagonalised by the DFT: its eigenvalues are the DFT of `c` wrapped onto the grid. An
//! estimated or truncated `c` need not be positive definite, so [`Kernel::torus_spectrum`]
//! clips negative eigenvalues to zero: the nearest valid covariance in the spectral sense, and
//! what every regression here uses, so that its matrices are genuine covariances.

use serde::{Deserialize, Serialize};

use super::grid::Grid;
use crate::{Error, Result};

/// A stationary covariance function on the pixel grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Kernel {
    /// What it is: `dip:<arch>`, `rbf`, …
    pub name: String,
    /// Largest displacement stored along each axis.
    pub radius: usize,
    /// `c(dy, dx)` for `dy, dx ∈ [−radius, radius]`, row-major by `dy`:
    /// index `(dy + radius) · (2·radius + 1) + (dx + radius)`.
    pub cov: Vec<f64>,
}

impl Kernel {
    /// A kernel from its covariance values (see [`Kernel::cov`]), symmetrised so that
    /// `c(d) = c(−d)`, as every covariance function is.
    pub fn new(name: impl Into<String>, radius: usize, cov: Vec<f64>) -> Result<Self> {
        let side = 2 * radius + 1;
        if cov.len() != side * side {
            return Err(Error::invalid(format!(
                "a kernel of radius {radius} needs {} values, got {}",
                side * side,
                cov.len()
            )));
        }
        if cov.iter().any(|v| !v.is_finite()) {
            return Err(Error::invalid("the kernel has non-finite values"));
        }
        let mut k = Kernel {
            name: name.into(),
            radius,
            cov,
        };
        let n = k.cov.len();
        for i in 0..n / 2 {
            let m = 0.5 * (k.cov[i] + k.cov[n - 1 - i]);
            k.cov[i] = m;
            k.cov[n - 1 - i] = m;
        }
        if k.variance() <= 0.0 {
            return Err(Error::invalid(format!(
                "the kernel's variance c(0) must be positive, got {}",
                k.variance()
            )));
        }
        Ok(k)
    }

    /// The squared-exponential kernel `variance · exp(−|d|² / (2ℓ²))`, stored out to `4ℓ`
    /// (where it has fallen to `e⁻⁸ ≈ 3·10⁻⁴`), at most `max_radius`.
    pub fn rbf(lengthscale: f64, variance: f64, max_radius: usize) -> Result<Self> {
        if !(lengthscale.is_finite() && lengthscale > 0.0 && variance.is_finite() && variance > 0.0)
        {
            return Err(Error::invalid(format!(
                "an RBF kernel needs a positive lengthscale and variance, got {lengthscale} and \
                 {variance}"
            )));
        }
        let radius = ((4.0 * lengthscale).ceil() as usize).clamp(1, max_radius.max(1));
        let side = 2 * radius + 1;
        let r = radius as f64;
        let cov = (0..side * side)
            .map(|i| {
                let (dy, dx) = ((i / side) as f64 - r, (i % side) as f64 - r);
                variance * (-(dx * dx + dy * dy) / (2.0 * lengthscale * lengthscale)).exp()
            })
            .collect();
        Kernel::new(format!("rbf(l={lengthscale:.3})"), radius, cov)
    }

    /// `c(0)`: the marginal variance.
    pub fn variance(&self) -> f64 {
        self.at(0, 0)
    }

    /// `c(dy, dx)`, zero beyond the stored radius.
    pub fn at(&self, dy: isize, dx: isize) -> f64 {
        let r = self.radius as isize;
        if dy.abs() > r || dx.abs() > r {
            return 0.0;
        }
        let side = 2 * r + 1;
        self.cov[((dy + r) * side + dx + r) as usize]
    }

    /// The same kernel times `a`.
    pub fn scaled(&self, a: f64) -> Kernel {
        Kernel {
            name: self.name.clone(),
            radius: self.radius,
            cov: self.cov.iter().map(|v| v * a).collect(),
        }
    }

    /// The kernel normalised to unit variance: its correlation function.
    pub fn normalised(&self) -> Kernel {
        self.scaled(1.0 / self.variance())
    }

    /// Eigenvalues of the circulant covariance on a periodic `width × height` grid: the DFT of
    /// `c` wrapped onto the grid (displacements that wrap onto the same cell add up), with
    /// negative values clipped to zero. Unshifted layout, index `ky · width + kx`.
    pub fn torus_spectrum(&self, width: usize, height: usize) -> Vec<f64> {
        let mut grid = Grid::new(width, height);
        let mut field = vec![0.0; width * height];
        let r = self.radius as isize;
        for dy in -r..=r {
            for dx in -r..=r {
                let y = dy.rem_euclid(height as isize) as usize;
                let x = dx.rem_euclid(width as isize) as usize;
                field[y * width + x] += self.at(dy, dx);
            }
        }
        let mut spec = Vec::new();
        grid.forward_real(&field, &mut spec);
        spec.iter().map(|z| z.re.max(0.0)).collect()
    }

    /// The mean covariance over rings of integer radius `0, 1, …, radius`: the radial profile.
    pub fn radial_profile(&self) -> Vec<(f64, f64)> {
        let r = self.radius as isize;
        let mut sum = vec![0.0; self.radius + 1];
        let mut count = vec![0usize; self.radius + 1];
        for dy in -r..=r {
            for dx in -r..=r {
                let d = ((dy * dy + dx * dx) as f64).sqrt().round() as usize;
                if d <= self.radius {
                    sum[d] += self.at(dy, dx);
                    count[d] += 1;
                }
            }
        }
        sum.iter()
            .zip(&count)
            .enumerate()
            .filter(|(_, (_, c))| **c > 0)
            .map(|(d, (s, c))| (d as f64, s / *c as f64))
            .collect()
    }
}

/// A PSD covariance on a periodic grid: the clipped circulant spectrum of a kernel and the
/// covariance function it implies, `c̃ = F⁻¹(max(λ, 0))`.
#[derive(Debug, Clone)]
pub struct TorusKernel {
    pub width: usize,
    pub height: usize,
    /// Eigenvalues (see [`Kernel::torus_spectrum`]).
    pub spectrum: Vec<f64>,
    /// `c̃(dy, dx)` at `(dy mod height, dx mod width)`.
    pub cov: Vec<f64>,
}

impl TorusKernel {
    pub fn new(kernel: &Kernel, width: usize, height: usize) -> Self {
        let spectrum = kernel.torus_spectrum(width, height);
        let mut grid = Grid::new(width, height);
        let mut work: Vec<_> = spectrum
            .iter()
            .map(|&s| rustfft::num_complex::Complex64::new(s, 0.0))
            .collect();
        grid.inverse(&mut work);
        let cov = work.iter().map(|z| z.re).collect();
        TorusKernel {
            width,
            height,
            spectrum,
            cov,
        }
    }

    /// `c̃` at a displacement.
    pub fn at(&self, dy: isize, dx: isize) -> f64 {
        let y = dy.rem_euclid(self.height as isize) as usize;
        let x = dx.rem_euclid(self.width as isize) as usize;
        self.cov[y * self.width + x]
    }
}
