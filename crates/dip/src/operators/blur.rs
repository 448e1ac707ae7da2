//! Deblurring: convolution with a point spread function.

use std::path::Path;

use super::axis::{AxisMap, Boundary, separable_adjoint, separable_forward};
use super::{Operator, Scratch, Shape, check_len, check_shape};
use crate::error::{Error, Result};
use crate::image;

/// The largest PSF side accepted (from a file or a size argument).
pub const MAX_PSF_SIZE: usize = 255;

/// A point spread function: a square, odd-sized kernel of nonnegative weights summing to 1.
#[derive(Clone, Debug, PartialEq)]
pub struct Psf {
    size: usize,
    /// `size × size`, row-major, sums to 1.
    kernel: Vec<f32>,
    /// For separable PSFs, the 1-D factor (same on both axes) whose outer product is `kernel`.
    factor: Option<Vec<f32>>,
    description: String,
}

fn check_size(size: usize) -> Result<()> {
    if size == 0 || size.is_multiple_of(2) || size > MAX_PSF_SIZE {
        return Err(Error::invalid(format!(
            "PSF size must be odd, from 1 to {MAX_PSF_SIZE}, not {size}"
        )));
    }
    Ok(())
}

impl Psf {
    /// A separable PSF from a 1-D profile (normalised here).
    fn separable(profile: &[f64], description: String) -> Self {
        let sum: f64 = profile.iter().sum();
        let p: Vec<f64> = profile.iter().map(|v| v / sum).collect();
        let kernel = p
            .iter()
            .flat_map(|a| p.iter().map(move |b| (a * b) as f32))
            .collect();
        Psf {
            size: p.len(),
            kernel,
            factor: Some(p.iter().map(|&v| v as f32).collect()),
            description,
        }
    }

    /// An isotropic Gaussian `exp(−r²/2σ²)` sampled at pixel centres on a `size × size` grid
    /// (odd), normalised to sum 1. [`Psf::default_gaussian_size`] gives the usual `2⌈3σ⌉ + 1`.
    pub fn gaussian(sigma: f64, size: usize) -> Result<Self> {
        if !(sigma.is_finite() && sigma > 0.0) {
            return Err(Error::invalid(format!(
                "Gaussian PSF sigma must be positive, not {sigma}"
            )));
        }
        check_size(size)?;
        let r = (size / 2) as f64;
        let profile: Vec<f64> = (0..size)
            .map(|i| {
                let d = i as f64 - r;
                (-d * d / (2.0 * sigma * sigma)).exp()
            })
            .collect();
        Ok(Self::separable(
            &profile,
            format!("gaussian:{sigma} ({size}x{size})"),
        ))
    }

    /// `2⌈3σ⌉ + 1`, capped at [`MAX_PSF_SIZE`]: the size [`Psf::parse`] uses when none is given.
    pub fn default_gaussian_size(sigma: f64) -> usize {
        let half = (3.0 * sigma).ceil().clamp(0.0, (MAX_PSF_SIZE / 2) as f64) as usize;
        2 * half + 1
    }

    /// A uniform `size × size` box (odd size).
    pub fn boxcar(size: usize) -> Result<Self> {
        check_size(size)?;
        Ok(Self::separable(&vec![1.0; size], format!("box:{size}")))
    }

    /// A PSF from an image file.
    ///
    /// Accepted: any image [`image::load`] reads that is square with an odd side of at most
    /// [`MAX_PSF_SIZE`] and not all black; colour PSFs are averaged over their channels. The
    /// samples (already in \[0, 1\]) are normalised to sum 1, so the overall brightness of the
    /// file does not matter. The PSF's centre is its middle pixel. Errors name the file.
    pub fn from_image(path: &Path) -> Result<Self> {
        let (img, _) = image::load(path)?;
        if img.width != img.height || img.width.is_multiple_of(2) || img.width > MAX_PSF_SIZE {
            return Err(Error::file(
                path,
                format!(
                    "a PSF image must be square with an odd side of at most {MAX_PSF_SIZE} pixels, this one is {}x{}",
                    img.width, img.height
                ),
            ));
        }
        let c = img.channels;
        let gray: Vec<f64> = img
            .data
            .chunks_exact(c)
            .map(|px| px.iter().map(|&v| f64::from(v)).sum::<f64>() / c as f64)
            .collect();
        let sum: f64 = gray.iter().sum();
        if sum <= 0.0 {
            return Err(Error::file(
                path,
                "the PSF image is all black (its weights sum to zero)",
            ));
        }
        Ok(Psf {
            size: img.width,
            kernel: gray.iter().map(|v| (v / sum) as f32).collect(),
            factor: None,
            description: format!("psf:{}", path.display()),
        })
    }

    /// A PSF from its weights: `size × size` (odd), row-major, nonnegative and not all zero;
    /// normalised here to sum 1.
    pub fn from_weights(size: usize, weights: &[f64]) -> Result<Self> {
        check_size(size)?;
        if weights.len() != size * size {
            return Err(Error::invalid(format!(
                "a {size}x{size} PSF has {} weights, not {}",
                size * size,
                weights.len()
            )));
        }
        if weights.iter().any(|w| !(w.is_finite() && *w >= 0.0)) {
            return Err(Error::invalid("PSF weights must be finite and nonnegative"));
        }
        let sum: f64 = weights.iter().sum();
        if sum <= 0.0 {
            return Err(Error::invalid("the PSF's weights sum to zero"));
        }
        Ok(Psf {
            size,
            kernel: weights.iter().map(|v| (v / sum) as f32).collect(),
            factor: None,
            description: format!("psf {size}x{size}"),
        })
    }

    /// Parses a PSF spec, as given on a command line.
    ///
    /// - `gaussian:SIGMA` or `gaussian:SIGMA:SIZE` (also `gauss:`); size defaults to
    ///   [`Psf::default_gaussian_size`],
    /// - `box:SIZE`,
    /// - anything else is read as the path of a PSF image ([`Psf::from_image`]).
    pub fn parse(spec: &str) -> Result<Self> {
        let bad = |why: &str| Error::invalid(format!("bad PSF '{spec}': {why}"));
        let parse_size = |s: &str| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| bad("the size must be an odd whole number"))
        };
        if let Some(rest) = spec
            .strip_prefix("gaussian:")
            .or_else(|| spec.strip_prefix("gauss:"))
        {
            let mut parts = rest.split(':');
            let sigma: f64 = parts
                .next()
                .unwrap_or("")
                .trim()
                .parse()
                .map_err(|_| bad("expected gaussian:SIGMA or gaussian:SIGMA:SIZE"))?;
            let size = match parts.next() {
                Some(s) => parse_size(s)?,
                None => Self::default_gaussian_size(sigma),
            };
            if parts.next().is_some() {
                return Err(bad("expected gaussian:SIGMA or gaussian:SIGMA:SIZE"));
            }
            return Self::gaussian(sigma, size).map_err(|e| bad(&e.to_string()));
        }
        if let Some(rest) = spec.strip_prefix("box:") {
            return Self::boxcar(parse_size(rest)?).map_err(|e| bad(&e.to_string()));
        }
        Self::from_image(Path::new(spec))
    }

    /// Side length (odd).
    pub fn size(&self) -> usize {
        self.size
    }

    /// The weights, `size × size` row-major, summing to 1.
    pub fn kernel(&self) -> &[f32] {
        &self.kernel
    }

    /// Whether the PSF is an outer product of a 1-D profile (Gaussian and box are), which
    /// [`Blur`] applies as two 1-D passes.
    pub fn is_separable(&self) -> bool {
        self.factor.is_some()
    }

    /// What the PSF was made from, e.g. `gaussian:2 (13x13)` or `box:5`.
    pub fn description(&self) -> &str {
        &self.description
    }
}

/// Deblurring operator: `y = psf ∗ x`, a true convolution (the PSF is flipped, which matters only
/// for asymmetric PSFs from images), centred on the PSF's middle pixel, each channel on its own.
///
/// Boundary: the image is extended by replicating its edge samples (`aaa|abcd|ddd`), so the
/// output has the input's size. The adjoint is the exact transpose, padding included: gradient
/// that falls on replicated samples is added back to the edge samples. Separable PSFs run as
/// two 1-D passes (one preallocated intermediate buffer), others as a direct 2-D sum.
#[derive(Debug)]
pub struct Blur {
    psf: Psf,
    shape: Shape,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Separable {
        h: AxisMap,
        v: AxisMap,
        scratch: Scratch,
    },
    Direct {
        /// Flipped PSF, `size × size`.
        flipped: Vec<f32>,
        /// `rows[oy * size + dy]`: input row read for output row `oy`, tap `dy`.
        rows: Vec<usize>,
        /// `cols[ox * size + dx]`: input column read for output column `ox`, tap `dx`.
        cols: Vec<usize>,
    },
}

impl Blur {
    /// The blur of `width × height × channels` images by `psf`.
    pub fn new(psf: Psf, width: usize, height: usize, channels: usize) -> Result<Self> {
        check_shape("blur", (width, height, channels))?;
        let k = psf.size;
        let r = (k / 2) as isize;
        let kind = match &psf.factor {
            Some(p) => {
                let map = |n: usize| {
                    AxisMap::build(n, n, Boundary::Replicate, false, |o, taps| {
                        // Convolution: output o reads input o + r − j with weight p[j].
                        taps.extend(
                            p.iter()
                                .enumerate()
                                .map(|(j, &w)| (o as isize + r - j as isize, f64::from(w))),
                        );
                    })
                };
                Kind::Separable {
                    h: map(width),
                    v: map(height),
                    scratch: Scratch::new(width * height * channels),
                }
            }
            None => {
                let flipped = psf.kernel.iter().rev().copied().collect();
                let table = |n: usize| -> Vec<usize> {
                    (0..n)
                        .flat_map(|o| {
                            (0..k).map(move |d| {
                                Boundary::Replicate.index(o as isize + d as isize - r, n)
                            })
                        })
                        .collect()
                };
                Kind::Direct {
                    flipped,
                    rows: table(height),
                    cols: table(width),
                }
            }
        };
        Ok(Blur {
            psf,
            shape: (width, height, channels),
            kind,
        })
    }

    /// The PSF.
    pub fn psf(&self) -> &Psf {
        &self.psf
    }
}

impl Operator for Blur {
    fn input_shape(&self) -> Shape {
        self.shape
    }
    fn output_shape(&self) -> Shape {
        self.shape
    }
    fn forward(&self, x: &[f32], y: &mut [f32]) {
        let n = self.input_len();
        check_len("blur", "input", x.len(), n);
        check_len("blur", "output", y.len(), n);
        let (w, _, c) = self.shape;
        match &self.kind {
            Kind::Separable { h, v, scratch } => {
                scratch.with(|t| separable_forward(h, v, c, x, t, y));
            }
            Kind::Direct {
                flipped,
                rows,
                cols,
            } => {
                let k = self.psf.size;
                let row = w * c;
                for (oy, yrow) in y.chunks_exact_mut(row).enumerate() {
                    yrow.fill(0.0);
                    for dy in 0..k {
                        let iy = rows[oy * k + dy];
                        let xrow = &x[iy * row..(iy + 1) * row];
                        let kr = &flipped[dy * k..(dy + 1) * k];
                        for (ox, ypx) in yrow.chunks_exact_mut(c).enumerate() {
                            let cx = &cols[ox * k..(ox + 1) * k];
                            for (&wt, &ix) in kr.iter().zip(cx) {
                                for (o, &s) in ypx.iter_mut().zip(&xrow[ix * c..(ix + 1) * c]) {
                                    *o += wt * s;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    fn rows(&self) -> Option<super::SparseRows> {
        let (w, h, c) = self.shape;
        match &self.kind {
            Kind::Separable { h: hm, v, .. } => super::sparse::separable_rows(hm, v, c),
            Kind::Direct {
                flipped,
                rows,
                cols,
            } => {
                let k = self.psf.size;
                super::SparseRows::build(w * h * c, w * h * c, |o, out| {
                    let (ch, px) = (o % c, o / c);
                    let (oy, ox) = (px / w, px % w);
                    for dy in 0..k {
                        let iy = rows[oy * k + dy];
                        for dx in 0..k {
                            let ix = cols[ox * k + dx];
                            out.push(((iy * w + ix) * c + ch, flipped[dy * k + dx]));
                        }
                    }
                })
            }
        }
    }
    fn adjoint(&self, gy: &[f32], gx: &mut [f32]) {
        let n = self.input_len();
        check_len("blur", "output gradient", gy.len(), n);
        check_len("blur", "input gradient", gx.len(), n);
        let (w, _, c) = self.shape;
        match &self.kind {
            Kind::Separable { h, v, scratch } => {
                scratch.with(|t| separable_adjoint(h, v, c, gy, t, gx));
            }
            Kind::Direct {
                flipped,
                rows,
                cols,
            } => {
                let k = self.psf.size;
                let row = w * c;
                gx.fill(0.0);
                for (oy, gyrow) in gy.chunks_exact(row).enumerate() {
                    for dy in 0..k {
                        let iy = rows[oy * k + dy];
                        let gxrow = &mut gx[iy * row..(iy + 1) * row];
                        let kr = &flipped[dy * k..(dy + 1) * k];
                        for (ox, gpx) in gyrow.chunks_exact(c).enumerate() {
                            let cx = &cols[ox * k..(ox + 1) * k];
                            for (&wt, &ix) in kr.iter().zip(cx) {
                                for (o, &g) in gxrow[ix * c..(ix + 1) * c].iter_mut().zip(gpx) {
                                    *o += wt * g;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    fn name(&self) -> String {
        format!("blur {}", self.psf.description)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separable_and_direct_paths_agree() {
        // The same Gaussian through both code paths.
        let psf = Psf::gaussian(1.3, 7).unwrap();
        let direct_psf = Psf {
            factor: None,
            ..psf.clone()
        };
        let (w, h, c) = (13, 9, 3);
        let a = Blur::new(psf, w, h, c).unwrap();
        let b = Blur::new(direct_psf, w, h, c).unwrap();
        let x: Vec<f32> = (0..w * h * c)
            .map(|i| ((i * 37) % 101) as f32 / 100.0)
            .collect();
        let (mut ya, mut yb) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        a.forward(&x, &mut ya);
        b.forward(&x, &mut yb);
        for (p, q) in ya.iter().zip(&yb) {
            assert!((p - q).abs() < 1e-5, "{p} vs {q}");
        }
        a.adjoint(&x, &mut ya);
        b.adjoint(&x, &mut yb);
        for (p, q) in ya.iter().zip(&yb) {
            assert!((p - q).abs() < 1e-5, "{p} vs {q}");
        }
    }

    #[test]
    fn asymmetric_psf_is_convolved_not_correlated() {
        // A PSF with all weight one pixel right of centre shifts the image right by one.
        let mut kernel = vec![0.0; 9];
        kernel[5] = 1.0;
        let psf = Psf {
            size: 3,
            kernel,
            factor: None,
            description: "shift".into(),
        };
        let b = Blur::new(psf, 4, 1, 1).unwrap();
        let mut y = vec![0.0; 4];
        b.forward(&[1.0, 2.0, 3.0, 4.0], &mut y);
        assert_eq!(y, [1.0, 1.0, 2.0, 3.0]);
    }
}
