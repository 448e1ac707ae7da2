//! Inpainting: a pixel mask of known and missing pixels.

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;

use super::{Operator, Shape, check_len};
use crate::error::{Error, Result};
use crate::image::{self, Image};

/// Inpainting operator: keeps the known pixels and zeros the missing ones, in every channel.
///
/// `A = diag(m)` with `m` 1 on known pixels and 0 elsewhere, so `A` is its own adjoint. The mask
/// is per pixel; it is applied to `channels` channels (3 unless set with
/// [`Mask::with_channels`]), and the operator's input and output are both
/// `width × height × channels`.
#[derive(Clone, Debug, PartialEq)]
pub struct Mask {
    width: usize,
    height: usize,
    channels: usize,
    /// One per pixel, row-major: `true` = known.
    known: Vec<bool>,
    description: String,
}

fn check_dims(width: usize, height: usize) -> Result<()> {
    if width == 0 || height == 0 {
        return Err(Error::invalid(format!(
            "a mask needs a nonzero size, not {width}x{height}"
        )));
    }
    Ok(())
}

impl Mask {
    /// A mask from per-pixel flags (`true` = known), row-major.
    pub fn from_known(width: usize, height: usize, known: Vec<bool>) -> Result<Self> {
        check_dims(width, height)?;
        if known.len() != width * height {
            return Err(Error::invalid(format!(
                "a {width}x{height} mask needs {} flags, got {}",
                width * height,
                known.len()
            )));
        }
        Ok(Mask {
            width,
            height,
            channels: 3,
            known,
            description: "mask".into(),
        })
    }

    /// A mask from an image: a pixel is known if **every** channel is above 0.5 (white, or
    /// light), missing otherwise. For the usual black-and-white mask files this is simply
    /// white = known; anti-aliased edges are split at half grey, and a coloured pixel (e.g. red
    /// text drawn on white) counts as missing.
    pub fn from_image(img: &Image) -> Result<Self> {
        let c = img.channels.max(1);
        let known = img
            .data
            .chunks_exact(c)
            .map(|px| px.iter().all(|&v| v > 0.5))
            .collect();
        Self::from_known(img.width, img.height, known)
    }

    /// Reads a mask file (see [`Mask::from_image`] for what counts as known) that must be
    /// `expected_width × expected_height`, the size of the image it masks. Errors name the file.
    pub fn from_file(path: &Path, expected_width: usize, expected_height: usize) -> Result<Self> {
        let (img, _) = image::load(path)?;
        if (img.width, img.height) != (expected_width, expected_height) {
            return Err(Error::file(
                path,
                format!(
                    "the mask is {}x{} but the image is {expected_width}x{expected_height}; they must be the same size",
                    img.width, img.height
                ),
            ));
        }
        let mut m = Self::from_image(&img)?;
        m.description = format!("mask {}", path.display());
        Ok(m)
    }

    /// Each pixel known independently with probability `p_known` (Bernoulli), from `seed`.
    ///
    /// Pixels are drawn row-major from a `Pcg64Mcg` seeded with `seed`, so the same arguments
    /// give the same mask on every platform.
    pub fn random(width: usize, height: usize, p_known: f64, seed: u64) -> Result<Self> {
        check_dims(width, height)?;
        if !(0.0..=1.0).contains(&p_known) {
            return Err(Error::invalid(format!(
                "the fraction of known pixels must be in [0, 1], not {p_known}"
            )));
        }
        let mut rng = Pcg64Mcg::seed_from_u64(seed);
        let known = (0..width * height)
            .map(|_| rng.random::<f64>() < p_known)
            .collect();
        let mut m = Self::from_known(width, height, known)?;
        m.description = format!("random mask ({:.0}% known)", 100.0 * p_known);
        Ok(m)
    }

    /// `n` missing squares of side `size` at random positions (from `seed`), each wholly inside
    /// the image (clipped if `size` exceeds it); squares may overlap.
    pub fn blocks(width: usize, height: usize, n: usize, size: usize, seed: u64) -> Result<Self> {
        check_dims(width, height)?;
        let mut rng = Pcg64Mcg::seed_from_u64(seed);
        let mut known = vec![true; width * height];
        let (bw, bh) = (size.min(width), size.min(height));
        for _ in 0..n {
            let x0 = rng.random_range(0..=width - bw);
            let y0 = rng.random_range(0..=height - bh);
            for y in y0..y0 + bh {
                known[y * width + x0..y * width + x0 + bw].fill(false);
            }
        }
        let mut m = Self::from_known(width, height, known)?;
        m.description = format!("block mask ({n} of {size}x{size})");
        Ok(m)
    }

    /// A mask of random scribbled "text" from `seed`: no font, just handwriting-like strokes.
    ///
    /// The image is divided into lines of text `max(8, height/14)` pixels apart. Along each line,
    /// words of 2–7 "letters" are separated by spaces; each letter adds 3–4 random points inside
    /// a letter box (0.45 line heights wide, 0.6 high), and the points of a word are joined by
    /// straight strokes of width `2r + 1`, `r = max(1, ⌊min(width, height) / 200⌋)` (5 pixels
    /// wide on a 512×512 image). Pixels whose centre is under a stroke are missing. About
    /// 15–20% of the pixels end up missing on 256–512 pixel images (more on small ones, about a
    /// third at 64×64), similar to the text overlay of the reference DIP's inpainting example.
    pub fn text(width: usize, height: usize, seed: u64) -> Result<Self> {
        check_dims(width, height)?;
        let mut rng = Pcg64Mcg::seed_from_u64(seed);
        let mut known = vec![true; width * height];
        let r = (width.min(height) as f64 / 200.0).floor().max(1.0);
        let line = (height as f64 / 14.0).max(8.0);
        let glyph_h = 0.6 * line;
        let glyph_w = 0.45 * line;
        let margin = 0.3 * line;
        let mut baseline = 0.75 * line;
        while baseline - glyph_h < height as f64 {
            let mut x = margin * rng.random_range(0.0..2.0);
            while x + glyph_w < width as f64 {
                let letters = rng.random_range(2..=7);
                let mut prev: Option<(f64, f64)> = None;
                for _ in 0..letters {
                    if x + glyph_w >= width as f64 {
                        break;
                    }
                    for _ in 0..rng.random_range(3..=4) {
                        let p = (
                            x + rng.random_range(0.0..glyph_w),
                            baseline - rng.random_range(0.0..glyph_h),
                        );
                        if let Some(q) = prev {
                            stroke(&mut known, width, height, q, p, r);
                        }
                        prev = Some(p);
                    }
                    x += glyph_w * rng.random_range(0.6..1.0);
                }
                x += glyph_w * rng.random_range(0.8..1.6);
            }
            baseline += line;
        }
        let mut m = Self::from_known(width, height, known)?;
        m.description = "text mask".into();
        Ok(m)
    }

    /// The same mask applied to `channels` channels.
    ///
    /// # Panics
    /// If `channels` is 0.
    pub fn with_channels(mut self, channels: usize) -> Self {
        assert!(channels > 0, "a mask applies to at least one channel");
        self.channels = channels;
        self
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Per-pixel flags, row-major: `true` = known.
    pub fn known(&self) -> &[bool] {
        &self.known
    }

    /// Fraction of pixels that are known, in \[0, 1\].
    pub fn known_fraction(&self) -> f64 {
        self.known.iter().filter(|&&k| k).count() as f64 / self.known.len() as f64
    }

    /// The mask as a gray image: 1 known, 0 missing (what [`Mask::from_image`] reads back).
    pub fn to_image(&self) -> Image {
        let data = self
            .known
            .iter()
            .map(|&k| if k { 1.0 } else { 0.0 })
            .collect();
        Image::new(self.width, self.height, 1, data)
    }
}

/// Rounds of [`harmonic_fill`] that the inpainting baseline uses.
pub const HARMONIC_ROUNDS: usize = 300;

/// The classical inpainting baseline: every unknown pixel becomes the mean of its 4 neighbours
/// (inside the image), `rounds` times over (Jacobi sweeps towards the discrete harmonic
/// interpolant), the known pixels held fixed. The unknown pixels start at the mean of the known
/// ones, per channel. `img` has the mask's size; its values at unknown pixels are ignored.
pub fn harmonic_fill(img: &Image, mask: &Mask, rounds: usize) -> Result<Image> {
    let (w, h, c) = (img.width, img.height, img.channels);
    if (w, h) != (mask.width, mask.height) {
        return Err(Error::invalid(format!(
            "the image is {w}x{h} but the mask is {}x{}",
            mask.width, mask.height
        )));
    }
    let known = &mask.known;
    let mut cur = img.data.clone();
    for k in 0..c {
        let (sum, n) = (0..w * h)
            .filter(|&p| known[p])
            .fold((0.0f64, 0usize), |(s, n), p| {
                (s + f64::from(img.data[p * c + k]), n + 1)
            });
        let mean = if n > 0 { (sum / n as f64) as f32 } else { 0.5 };
        for p in (0..w * h).filter(|&p| !known[p]) {
            cur[p * c + k] = mean;
        }
    }
    let mut next = cur.clone();
    for _ in 0..rounds {
        for y in 0..h {
            for x in 0..w {
                let p = y * w + x;
                if known[p] {
                    continue;
                }
                for k in 0..c {
                    let (mut s, mut n) = (0.0f32, 0.0f32);
                    let mut add = |q: usize| {
                        s += cur[q * c + k];
                        n += 1.0;
                    };
                    if x > 0 {
                        add(p - 1);
                    }
                    if x + 1 < w {
                        add(p + 1);
                    }
                    if y > 0 {
                        add(p - w);
                    }
                    if y + 1 < h {
                        add(p + w);
                    }
                    next[p * c + k] = s / n.max(1.0);
                }
            }
        }
        std::mem::swap(&mut cur, &mut next);
    }
    Ok(Image {
        data: cur,
        ..img.clone()
    })
}

/// Marks as missing every pixel whose centre is within `r` of the segment `a`–`b`.
fn stroke(known: &mut [bool], w: usize, h: usize, a: (f64, f64), b: (f64, f64), r: f64) {
    let x0 = (a.0.min(b.0) - r).floor().max(0.0) as usize;
    let x1 = ((a.0.max(b.0) + r).ceil().max(0.0) as usize).min(w - 1);
    let y0 = (a.1.min(b.1) - r).floor().max(0.0) as usize;
    let y1 = ((a.1.max(b.1) + r).ceil().max(0.0) as usize).min(h - 1);
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    for y in y0..=y1 {
        for x in x0..=x1 {
            let (px, py) = (x as f64 + 0.5, y as f64 + 0.5);
            let t = if len2 > 0.0 {
                (((px - a.0) * dx + (py - a.1) * dy) / len2).clamp(0.0, 1.0)
            } else {
                0.0
            };
            let (ex, ey) = (px - a.0 - t * dx, py - a.1 - t * dy);
            if ex * ex + ey * ey <= r * r {
                known[y * w + x] = false;
            }
        }
    }
}

impl Operator for Mask {
    fn input_shape(&self) -> Shape {
        (self.width, self.height, self.channels)
    }
    fn output_shape(&self) -> Shape {
        (self.width, self.height, self.channels)
    }
    fn forward(&self, x: &[f32], y: &mut [f32]) {
        let n = self.input_len();
        check_len("mask", "input", x.len(), n);
        check_len("mask", "output", y.len(), n);
        let c = self.channels;
        for ((ypx, xpx), &k) in y
            .chunks_exact_mut(c)
            .zip(x.chunks_exact(c))
            .zip(&self.known)
        {
            if k {
                ypx.copy_from_slice(xpx);
            } else {
                ypx.fill(0.0);
            }
        }
    }
    fn diagonal(&self) -> Option<Vec<f32>> {
        let c = self.channels;
        Some(
            self.known
                .iter()
                .flat_map(|&k| std::iter::repeat_n(if k { 1.0 } else { 0.0 }, c))
                .collect(),
        )
    }
    fn adjoint(&self, gy: &[f32], gx: &mut [f32]) {
        self.forward(gy, gx);
    }
    fn name(&self) -> String {
        format!(
            "{} ({:.1}% known)",
            self.description,
            100.0 * self.known_fraction()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plane is harmonic (its 4-neighbour mean is itself away from the border, where the
    /// missing pixels' neighbours are mostly known), so the fill recovers it from half its
    /// pixels; and the known pixels are never changed.
    #[test]
    fn harmonic_fill_recovers_a_plane_and_keeps_known_pixels() {
        let (w, h) = (24, 20);
        let plane: Vec<f32> = (0..w * h)
            .map(|p| 0.2 + 0.02 * (p % w) as f32 + 0.01 * (p / w) as f32)
            .collect();
        let img = Image::new(w, h, 1, plane.clone());
        let mask = Mask::random(w, h, 0.5, 3).unwrap().with_channels(1);
        let obs = mask.apply(&img).unwrap();
        let filled = harmonic_fill(&obs, &mask, HARMONIC_ROUNDS).unwrap();
        for ((&f, &v), &k) in filled.data.iter().zip(&plane).zip(mask.known()) {
            if k {
                assert_eq!(f, v);
            }
        }
        // Inside, the plane is recovered; at the border the reflecting neighbourhood bends it.
        for y in 2..h - 2 {
            for x in 2..w - 2 {
                let p = y * w + x;
                assert!(
                    (filled.data[p] - plane[p]).abs() < 2e-3,
                    "({x}, {y}): {} vs {}",
                    filled.data[p],
                    plane[p]
                );
            }
        }
        assert!(harmonic_fill(&obs, &Mask::random(5, 5, 0.5, 1).unwrap(), 3).is_err());
    }
}
