//! Synthetic test images whose high-frequency content is set by one parameter: the "triangles"
//! family used to study the spectral bias of the Deep Image Prior.
//!
//! Each image is one filled triangle on a flat background, RGB, values in \[0, 1\]. The shape and
//! colours come from a seed and are the same at every level; only the fine detail changes with
//! the level parameter `t ∈ [0, 1]`:
//!
//! * `0 ≤ t ≤ ½` — **edge sharpness.** The triangle's edges are those of a hard-edged triangle
//!   blurred by a Gaussian of standard deviation `s` pixels (the coverage at signed distance `d`
//!   from the edge is `Φ(−d / s)`), with `s` falling geometrically from
//!   [`MAX_EDGE_WIDTH`]` × size` at `t = 0` to [`MIN_EDGE_WIDTH`] pixels at `t = ½` (a sharp,
//!   barely anti-aliased edge). No texture.
//! * `½ < t ≤ 1` — **texture.** Sharp edges, plus a luminance grating inside the triangle,
//!   `a · cos(2π f (x cos θ + y sin θ))`, whose amplitude `a` rises linearly from 0 to
//!   [`MAX_TEXTURE_AMPLITUDE`] and whose frequency `f` rises from [`MIN_TEXTURE_FREQUENCY`] to
//!   [`MAX_TEXTURE_FREQUENCY`] cycles/pixel. The orientation `θ` comes from the seed. Both
//!   frequencies lie above half-Nyquist (0.25 cycles/pixel), so the grating adds energy to the
//!   top half of the spectrum only.
//!
//! The `n` levels of [`triangle_family`] sit at `t = i / (n − 1)`; the default of
//! [`DEFAULT_LEVELS`] = 9 gives five edge levels (`t` = 0 … ½) and four texture levels. The
//! triangle stays clear of the image border (its vertices lie within 0.34 × size of the centre
//! and the blur is at most 0.05 × size), so the periodic extension the DFT assumes adds no edge.
//!
//! [`high_frequency_fraction`] measures the content the family controls: the share of the
//! non-DC spectral energy above half-Nyquist. It rises strictly with the level: the blur's
//! transfer function `exp(−2π²s²r²)` grows at every frequency as `s` falls, and the grating adds
//! energy above half-Nyquist only (checked for sizes from 32 to 128 pixels and many seeds). At 64
//! pixels it goes from about 10⁻⁴ at level 0 to about 0.1 at level 8.

use std::f64::consts::PI;

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;

use crate::error::{Error, Result};
use crate::image::Image;
use crate::spectral::{BandSpacing, Bands, Fft2d, band_energy};

/// Levels of [`triangle_family`] when the caller has no reason to choose.
pub const DEFAULT_LEVELS: usize = 9;

/// Edge blur (Gaussian standard deviation) at `t = 0`, as a fraction of the image side.
pub const MAX_EDGE_WIDTH: f64 = 0.05;

/// Edge blur (Gaussian standard deviation, pixels) from `t = ½` on.
pub const MIN_EDGE_WIDTH: f64 = 0.3;

/// Grating amplitude at `t = 1` (on the \[0, 1\] scale).
pub const MAX_TEXTURE_AMPLITUDE: f64 = 0.15;

/// Grating frequency just above `t = ½`, cycles/pixel.
pub const MIN_TEXTURE_FREQUENCY: f64 = 0.3;

/// Grating frequency at `t = 1`, cycles/pixel.
pub const MAX_TEXTURE_FREQUENCY: f64 = 0.45;

/// The smallest image side [`triangle`] draws.
pub const MIN_SIZE: usize = 16;

/// Radial frequency (cycles/pixel) above which [`high_frequency_fraction`] counts energy as high:
/// half the Nyquist frequency.
pub const HIGH_FREQUENCY_CUTOFF: f64 = 0.25;

/// The detail settings of one level of the family.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TriangleDetail {
    /// Gaussian standard deviation of the edge blur, in pixels.
    pub edge_width: f64,
    /// Amplitude of the grating inside the triangle (0 = none).
    pub texture_amplitude: f64,
    /// Frequency of the grating in cycles/pixel (0 when there is none).
    pub texture_frequency: f64,
}

impl TriangleDetail {
    /// The settings at level parameter `t ∈ [0, 1]` for a `size × size` image (see the module
    /// documentation). Errors if `t` is outside \[0, 1\].
    pub fn at(t: f64, size: usize) -> Result<Self> {
        if !(0.0..=1.0).contains(&t) {
            return Err(Error::invalid(format!(
                "the triangle level parameter must be in [0, 1], not {t}"
            )));
        }
        let widest = (MAX_EDGE_WIDTH * size as f64).max(MIN_EDGE_WIDTH);
        if t <= 0.5 {
            let u = t / 0.5;
            Ok(TriangleDetail {
                edge_width: widest * (MIN_EDGE_WIDTH / widest).powf(u),
                texture_amplitude: 0.0,
                texture_frequency: 0.0,
            })
        } else {
            let u = (t - 0.5) / 0.5;
            Ok(TriangleDetail {
                edge_width: MIN_EDGE_WIDTH,
                texture_amplitude: MAX_TEXTURE_AMPLITUDE * u,
                texture_frequency: MIN_TEXTURE_FREQUENCY
                    + (MAX_TEXTURE_FREQUENCY - MIN_TEXTURE_FREQUENCY) * u,
            })
        }
    }
}

/// One member of the family.
#[derive(Clone, Debug)]
pub struct TriangleLevel {
    /// Index in the family, 0 = smoothest.
    pub level: usize,
    /// The level parameter `t ∈ [0, 1]`.
    pub t: f64,
    /// What `t` sets.
    pub detail: TriangleDetail,
    /// The picture: RGB, `size × size`, values in \[0, 1\], 8-bit for saving.
    pub image: Image,
}

/// What the seed decides: the shape, the colours and the grating's orientation.
struct Layout {
    vertices: [(f64, f64); 3],
    background: [f64; 3],
    foreground: [f64; 3],
    /// Grating direction (cos θ, sin θ).
    direction: (f64, f64),
}

impl Layout {
    fn new(size: usize, seed: u64) -> Self {
        let mut rng = Pcg64Mcg::seed_from_u64(seed);
        let n = size as f64;
        let centre = n / 2.0;
        let start = rng.random_range(0.0..2.0 * PI);
        let vertices = std::array::from_fn(|k| {
            let angle = start + k as f64 * 2.0 * PI / 3.0 + rng.random_range(-0.35..0.35);
            let radius = n * rng.random_range(0.26..0.34);
            (centre + radius * angle.cos(), centre + radius * angle.sin())
        });
        let background = std::array::from_fn(|_| rng.random_range(0.1..0.35));
        let foreground = std::array::from_fn(|_| rng.random_range(0.55..0.8));
        let theta = rng.random_range(0.0..PI);
        Layout {
            vertices,
            background,
            foreground,
            direction: (theta.cos(), theta.sin()),
        }
    }

    /// Signed distance from `p` to the triangle's outline: negative inside, positive outside.
    fn signed_distance(&self, p: (f64, f64)) -> f64 {
        let v = &self.vertices;
        let mut dist = f64::INFINITY;
        let mut sides = [0.0; 3];
        for k in 0..3 {
            let (a, b) = (v[k], v[(k + 1) % 3]);
            dist = dist.min(segment_distance(p, a, b));
            sides[k] = (b.0 - a.0) * (p.1 - a.1) - (b.1 - a.1) * (p.0 - a.0);
        }
        let inside = sides.iter().all(|&s| s >= 0.0) || sides.iter().all(|&s| s <= 0.0);
        if inside { -dist } else { dist }
    }
}

/// Distance from `p` to the segment `a`–`b`.
fn segment_distance(p: (f64, f64), a: (f64, f64), b: (f64, f64)) -> f64 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    let s = if len2 > 0.0 {
        (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (qx, qy) = (a.0 + s * dx - p.0, a.1 + s * dy - p.1);
    (qx * qx + qy * qy).sqrt()
}

/// The error function, to about 1e-7 (Abramowitz and Stegun 7.1.26).
fn erf(x: f64) -> f64 {
    let sign = x.signum();
    let x = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    sign * (1.0 - poly * (-x * x).exp())
}

/// The standard normal distribution function `Φ`.
fn normal_cdf(x: f64) -> f64 {
    0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

/// One `size × size` triangle image with the detail of level parameter `t ∈ [0, 1]` (see the
/// module documentation). The same `size`, `t` and `seed` give the same image everywhere.
///
/// Errors if `size` is below [`MIN_SIZE`] or `t` is outside \[0, 1\].
pub fn triangle(size: usize, t: f64, seed: u64) -> Result<Image> {
    check_size(size)?;
    let detail = TriangleDetail::at(t, size)?;
    Ok(draw(&Layout::new(size, seed), size, &detail))
}

fn check_size(size: usize) -> Result<()> {
    if !(MIN_SIZE..=1 << 14).contains(&size) {
        return Err(Error::invalid(format!(
            "triangle images are {MIN_SIZE} to {} pixels on a side, not {size}",
            1 << 14
        )));
    }
    Ok(())
}

fn draw(layout: &Layout, size: usize, detail: &TriangleDetail) -> Image {
    let mut data = Vec::with_capacity(size * size * 3);
    let (ux, uy) = layout.direction;
    for y in 0..size {
        for x in 0..size {
            // Pixel centres.
            let p = (x as f64 + 0.5, y as f64 + 0.5);
            let coverage = normal_cdf(-layout.signed_distance(p) / detail.edge_width);
            let texture = if detail.texture_amplitude > 0.0 {
                detail.texture_amplitude
                    * (2.0 * PI * detail.texture_frequency * (p.0 * ux + p.1 * uy)).cos()
            } else {
                0.0
            };
            for c in 0..3 {
                let bg = layout.background[c];
                let fg = layout.foreground[c] + texture;
                data.push((bg + coverage * (fg - bg)).clamp(0.0, 1.0) as f32);
            }
        }
    }
    Image::new(size, size, 3, data)
}

/// The family: `levels` images of side `size` at `t = i / (levels − 1)` (a single level is
/// `t = 0`), smoothest first, all with the triangle and colours drawn from `seed`.
///
/// Errors if `levels` is 0 or `size` is below [`MIN_SIZE`].
pub fn triangle_family(size: usize, levels: usize, seed: u64) -> Result<Vec<TriangleLevel>> {
    check_size(size)?;
    if levels == 0 {
        return Err(Error::invalid("the triangle family needs at least 1 level"));
    }
    let layout = Layout::new(size, seed);
    (0..levels)
        .map(|level| {
            let t = if levels == 1 {
                0.0
            } else {
                level as f64 / (levels - 1) as f64
            };
            let detail = TriangleDetail::at(t, size)?;
            Ok(TriangleLevel {
                level,
                t,
                detail,
                image: draw(&layout, size, &detail),
            })
        })
        .collect()
}

/// The share of an image's spectral energy above [`HIGH_FREQUENCY_CUTOFF`] (half-Nyquist),
/// in \[0, 1\].
///
/// Energies are per DFT bin summed over channels ([`band_energy`] with two linear radial bands);
/// the DC bin of each channel is left out, so the mean brightness does not dilute the measure.
/// A flat image (no energy besides DC) gives 0. Errors only for images too small to split
/// (under 2 pixels on a side).
pub fn high_frequency_fraction(img: &Image) -> Result<f64> {
    let mut fft = Fft2d::new(img.width, img.height)?;
    let spectrum = fft.forward(img)?;
    let bands = Bands::cached(img.width, img.height, 2, BandSpacing::Linear)?;
    let energy = band_energy(&spectrum, &bands)?;
    let dc: f64 = (0..spectrum.channels)
        .map(|c| spectrum.channel(c)[0].norm_sqr())
        .sum::<f64>()
        / spectrum.bins() as f64;
    let low = (energy.total[0] - dc).max(0.0);
    let high = energy.total[1];
    let total = low + high;
    Ok(if total > 0.0 { high / total } else { 0.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        for (x, want) in [
            (0.0, 0.0),
            (0.5, 0.520_499_877_8),
            (1.0, 0.842_700_792_9),
            (2.0, 0.995_322_265_0),
            (-1.0, -0.842_700_792_9),
        ] {
            assert!((erf(x) - want).abs() < 2e-7, "erf({x}) = {}", erf(x));
        }
    }

    #[test]
    fn signed_distance_sign_and_size() {
        let layout = Layout {
            vertices: [(0.0, 0.0), (10.0, 0.0), (0.0, 10.0)],
            background: [0.0; 3],
            foreground: [1.0; 3],
            direction: (1.0, 0.0),
        };
        assert!((layout.signed_distance((2.0, 3.0)) + 2.0).abs() < 1e-12);
        assert!((layout.signed_distance((-3.0, 5.0)) - 3.0).abs() < 1e-12);
        assert!((layout.signed_distance((13.0, 0.0)) - 3.0).abs() < 1e-12);
    }

    #[test]
    fn detail_is_continuous_where_the_halves_meet() {
        let a = TriangleDetail::at(0.5, 64).unwrap();
        let b = TriangleDetail::at(0.5 + 1e-9, 64).unwrap();
        assert_eq!(a.edge_width, b.edge_width);
        assert!(b.texture_amplitude < 1e-8);
        assert!(TriangleDetail::at(1.5, 64).is_err());
    }
}
