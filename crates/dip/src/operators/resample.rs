//! Resampling: the super-resolution operator ([`Downsample`]) and the bicubic baseline.

use std::f64::consts::PI;

use super::axis::{AxisMap, Boundary, separable_adjoint, separable_forward};
use super::{Operator, Scratch, Shape, check_len, check_shape};
use crate::error::{Error, Result};
use crate::image::Image;

/// The 1-D weights of the reference DIP's `lanczos2` downsampling kernel, phase 0.5.
///
/// `4 · factor` taps (the reference's `kernel_width = 4·factor + 1`, less one for phase 0.5):
/// tap `i` (1-based) sits at distance `d = |i + 0.5 − (4·factor + 2)/2| / factor` from the centre
/// and weighs `L(d) = 2·sin(πd)·sin(πd/2) / (π²d²)`, the Lanczos window with support 2; the
/// weights are normalised to sum to 1. The reference builds the 2-D kernel as the outer product
/// of these values normalised by its total, which is the outer product of this normalised vector.
pub fn lanczos2_weights(factor: usize) -> Vec<f64> {
    let width = 4 * factor + 1;
    let center = (width as f64 + 1.0) / 2.0;
    let support = 2.0;
    let mut k: Vec<f64> = (1..width)
        .map(|i| {
            let d = (i as f64 + 0.5 - center).abs() / factor as f64;
            if d == 0.0 {
                1.0
            } else {
                support * (PI * d).sin() * (PI * d / support).sin() / (PI * PI * d * d)
            }
        })
        .collect();
    let sum: f64 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= sum);
    k
}

/// Super-resolution operator: Lanczos-2 low-pass and decimation by `factor`.
///
/// Reproduces the reference Deep Image Prior's
/// `Downsampler(factor, kernel_type='lanczos2', phase=0.5, preserve_size=True)`:
///
/// 1. replication padding by `pad = ⌊(4·factor − factor) / 2⌋` samples on every side
///    (`nn.ReplicationPad2d`; the kernel has even size, hence the reference's `(size − factor)/2`),
/// 2. a valid 2-D correlation with the separable `4·factor × 4·factor` kernel of
///    [`lanczos2_weights`] (symmetric, so correlation and convolution agree), with stride `factor`.
///
/// Output sample `o` therefore averages inputs `o·factor − pad … o·factor − pad + 4·factor − 1`
/// (clamped to the image), a window centred on the block `o·factor … o·factor + factor − 1`.
/// The output is `⌊width / factor⌋ × ⌊height / factor⌋`; the reference crops images to a multiple
/// of the factor first, and a remainder is dropped as its strided convolution does. Each channel
/// is filtered on its own. The adjoint is the transpose of the same map, padding included (the
/// gradient falling on replicated samples is added back onto the edge samples).
///
/// Factors 2, 4 and 8 are the ones the reference uses; any even factor from 2 to 16 is accepted
/// (for odd factors the reference's padding does not give `size / factor`).
#[derive(Debug)]
pub struct Downsample {
    factor: usize,
    input: Shape,
    output: Shape,
    h: AxisMap,
    v: AxisMap,
    scratch: Scratch,
}

impl Downsample {
    /// The operator for `width × height × channels` inputs.
    pub fn new(width: usize, height: usize, channels: usize, factor: usize) -> Result<Self> {
        if !(2..=16).contains(&factor) || !factor.is_multiple_of(2) {
            return Err(Error::invalid(format!(
                "downsampling factor must be 2, 4 or 8 (any even factor up to 16), not {factor}"
            )));
        }
        check_shape("downsample", (width, height, channels))?;
        if width < factor || height < factor {
            return Err(Error::invalid(format!(
                "cannot downsample a {width}x{height} image by {factor}: it is smaller than the factor"
            )));
        }
        let k = lanczos2_weights(factor);
        let pad = (3 * factor / 2) as isize;
        let map = |n_in: usize| {
            AxisMap::build(
                n_in,
                n_in / factor,
                Boundary::Replicate,
                false,
                |o, taps| {
                    let start = (o * factor) as isize - pad;
                    taps.extend(k.iter().enumerate().map(|(j, &w)| (start + j as isize, w)));
                },
            )
        };
        let (ow, oh) = (width / factor, height / factor);
        Ok(Downsample {
            factor,
            input: (width, height, channels),
            output: (ow, oh, channels),
            h: map(width),
            v: map(height),
            scratch: Scratch::new(height * ow * channels),
        })
    }

    /// The decimation factor.
    pub fn factor(&self) -> usize {
        self.factor
    }
}

impl Operator for Downsample {
    fn input_shape(&self) -> Shape {
        self.input
    }
    fn output_shape(&self) -> Shape {
        self.output
    }
    fn forward(&self, x: &[f32], y: &mut [f32]) {
        check_len("downsample", "input", x.len(), self.input_len());
        check_len("downsample", "output", y.len(), self.output_len());
        let c = self.input.2;
        self.scratch
            .with(|t| separable_forward(&self.h, &self.v, c, x, t, y));
    }
    fn adjoint(&self, gy: &[f32], gx: &mut [f32]) {
        check_len("downsample", "output gradient", gy.len(), self.output_len());
        check_len("downsample", "input gradient", gx.len(), self.input_len());
        let c = self.input.2;
        self.scratch
            .with(|t| separable_adjoint(&self.h, &self.v, c, gy, t, gx));
    }
    fn name(&self) -> String {
        format!("downsample x{} (lanczos2)", self.factor)
    }
    fn rows(&self) -> Option<super::SparseRows> {
        super::sparse::separable_rows(&self.h, &self.v, self.input.2)
    }
}

/// Keys' cubic convolution kernel with `a = −0.5` (MATLAB `imresize`, PIL `BICUBIC`).
fn cubic(x: f64) -> f64 {
    let a = -0.5;
    let x = x.abs();
    if x <= 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    } else {
        0.0
    }
}

/// The MATLAB `imresize` bicubic map along one axis from `n_in` to `n_out` samples.
fn bicubic_map(n_in: usize, n_out: usize) -> AxisMap {
    let scale = n_out as f64 / n_in as f64;
    // Shrinking widens the kernel by 1/scale (antialiasing); enlarging uses it as is.
    let (stretch, half) = if scale < 1.0 {
        (scale, 2.0 / scale)
    } else {
        (1.0, 2.0)
    };
    AxisMap::build(n_in, n_out, Boundary::Symmetric, true, |o, taps| {
        // Output sample centres map to input coordinates with the pixel areas aligned.
        let u = (o as f64 + 0.5) / scale - 0.5;
        let lo = (u - half).floor() as isize;
        let hi = (u + half).ceil() as isize;
        taps.extend((lo..=hi).map(|i| (i, stretch * cubic(stretch * (u - i as f64)))));
    })
}

/// Bicubic resize to `width × height`, as MATLAB's `imresize(img, [h w], 'bicubic')`.
///
/// Keys' kernel with `a = −0.5`; pixel centres aligned (`u = (o + 0.5)/scale − 0.5`); when
/// shrinking, the kernel is widened by the shrink factor (antialiasing, as MATLAB does and PIL
/// does too); borders mirrored with the edge sample repeated; each output's weights normalised to
/// sum 1. The two axes are resized independently. Results are clamped to \[0, 1\] (what a saved
/// file would hold); the bit depth is kept.
pub fn bicubic_resize(img: &Image, width: usize, height: usize) -> Result<Image> {
    check_shape("bicubic resize", (width, height, img.channels))?;
    check_shape("bicubic resize", (img.width, img.height, img.channels))?;
    let h = bicubic_map(img.width, width);
    let v = bicubic_map(img.height, height);
    let c = img.channels;
    let mut tmp = vec![0.0; img.height * width * c];
    let mut data = vec![0.0; height * width * c];
    separable_forward(&h, &v, c, &img.data, &mut tmp, &mut data);
    data.iter_mut().for_each(|s| *s = s.clamp(0.0, 1.0));
    Ok(Image::try_new(width, height, c, data)?.with_bit_depth(img.bit_depth))
}

/// Bicubic enlargement by an integer `factor` (the usual super-resolution baseline).
///
/// See [`bicubic_resize`]; `factor` must be at least 1.
pub fn bicubic_upscale(img: &Image, factor: usize) -> Result<Image> {
    if factor == 0 {
        return Err(Error::invalid("bicubic upscale factor must be at least 1"));
    }
    bicubic_resize(img, img.width * factor, img.height * factor)
}

/// Antialiased bicubic reduction by an integer `factor`, as MATLAB `imresize(img, 1/factor)`.
///
/// The output is `⌊width / factor⌋ × ⌊height / factor⌋`; see [`bicubic_resize`].
pub fn bicubic_downscale(img: &Image, factor: usize) -> Result<Image> {
    if factor == 0 || img.width < factor || img.height < factor {
        return Err(Error::invalid(format!(
            "cannot bicubic-downscale a {}x{} image by {factor}",
            img.width, img.height
        )));
    }
    // MATLAB sizes by the scale; for a width that is a multiple of the factor the map is the same.
    let (w, h) = (img.width / factor, img.height / factor);
    let hm = bicubic_map_scaled(img.width, w, factor);
    let vm = bicubic_map_scaled(img.height, h, factor);
    let c = img.channels;
    let mut tmp = vec![0.0; img.height * w * c];
    let mut data = vec![0.0; h * w * c];
    separable_forward(&hm, &vm, c, &img.data, &mut tmp, &mut data);
    data.iter_mut().for_each(|s| *s = s.clamp(0.0, 1.0));
    Ok(Image::try_new(w, h, c, data)?.with_bit_depth(img.bit_depth))
}

/// Like [`bicubic_map`] with the scale fixed at `1/factor` (so a remainder is cropped, not
/// stretched over the output).
fn bicubic_map_scaled(n_in: usize, n_out: usize, factor: usize) -> AxisMap {
    let f = factor as f64;
    let stretch = 1.0 / f;
    let half = 2.0 * f;
    AxisMap::build(n_in, n_out, Boundary::Symmetric, true, |o, taps| {
        let u = (o as f64 + 0.5) * f - 0.5;
        let lo = (u - half).floor() as isize;
        let hi = (u + half).ceil() as isize;
        taps.extend((lo..=hi).map(|i| (i, stretch * cubic(stretch * (u - i as f64)))));
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanczos_weights_are_symmetric_and_sum_to_one() {
        for f in [2, 4, 8] {
            let k = lanczos2_weights(f);
            assert_eq!(k.len(), 4 * f);
            assert!((k.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            for i in 0..k.len() {
                assert!((k[i] - k[k.len() - 1 - i]).abs() < 1e-15);
            }
            // Peak in the middle, negative lobes at the ends.
            assert!(k[2 * f - 1] == k.iter().cloned().fold(f64::MIN, f64::max));
            assert!(k[0] < 0.0 || k[0].abs() < 1e-3);
        }
        // Tables computed outside this code (in double precision, from the reference DIP's
        // definition: distances (i + 0.5 − (4f + 2)/2)/f for i = 1..4f, the Lanczos-2 window,
        // normalised), first halves; the second halves mirror them. Factor 2: d = 1.75, 1.25,
        // 0.75, 0.25, raw values −0.0286, −0.1353, 0.3758, 1.4010 (sum 2·1.6129).
        let tables: [(usize, &[f64]); 2] = [
            (
                2,
                &[
                    -8.863_332_075_900_31e-3,
                    -4.194_003_395_069_178e-2,
                    1.165_000_943_074_772e-1,
                    4.343_032_717_191_149e-1,
                ],
            ),
            (
                4,
                &[
                    -1.065_382_736_460_241e-3,
                    -9.751_701_453_881_292e-3,
                    -2.038_398_750_407_104e-2,
                    -1.487_789_084_787_682e-2,
                    2.459_406_446_281_679e-2,
                    9.865_849_951_970_386e-2,
                    1.831_152_828_562_153e-1,
                    2.397_111_157_035_534e-1,
                ],
            ),
        ];
        for (f, want) in tables {
            let k = lanczos2_weights(f);
            for (i, w) in want.iter().enumerate() {
                assert!((k[i] - w).abs() < 1e-14, "x{f} tap {i}: {} vs {w}", k[i]);
            }
        }
    }

    #[test]
    fn cubic_kernel_values() {
        assert_eq!(cubic(0.0), 1.0);
        assert_eq!(cubic(1.0), 0.0);
        assert_eq!(cubic(2.0), 0.0);
        assert!((cubic(0.5) - 0.5625).abs() < 1e-12);
        assert!((cubic(1.5) + 0.0625).abs() < 1e-12);
    }
}
