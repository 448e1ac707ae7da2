//! ReLUNet: a coordinate MLP mapping the pixel position (x, y) to its colour.
//!
//! Layers of `width` units with ReLU, a sigmoid output; the positions run from 0 to 1 across
//! the image (the reference's `x / (w − 1)`). Every layer acts on one pixel at a time, so the
//! network is built as 1×1 convolutions over the coordinate image: the same arithmetic as the
//! reference's `nn.Linear` stack on a batch of pixels. With `fourier_features > 0` the input is
//! Tancik et al.'s random Fourier features `[cos 2πBv, sin 2πBv]`, `B` drawn from N(0, scale²)
//! with the fit's seed: the way coordinate networks are used today, and a strong contrast,
//! since it lifts the MLP's bias against high frequencies.

use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use rand_pcg::Pcg64Mcg;
use serde::{Deserialize, Serialize};

use super::Built;
use crate::engine::{Float, NetBuilder, PadMode};
use crate::{Error, Result};

/// Architecture of the coordinate MLP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReluNetSpec {
    pub out_channels: usize,
    /// Units per hidden layer.
    pub width: usize,
    /// Linear layers in all, the output layer included (the reference's `depth`).
    pub layers: usize,
    /// Random Fourier features of the coordinates (0: the raw coordinates).
    #[serde(default)]
    pub fourier_features: usize,
    /// Std of the Fourier frequencies, in cycles across the image.
    #[serde(default = "default_scale")]
    pub fourier_scale: f64,
}

fn default_scale() -> f64 {
    10.0
}

impl ReluNetSpec {
    /// The reference ReLUNet: 10 layers of 256 units.
    pub fn new(out_channels: usize) -> Self {
        ReluNetSpec {
            out_channels,
            width: 256,
            layers: 10,
            fourier_features: 0,
            fourier_scale: default_scale(),
        }
    }

    /// Channels of the input: 2 coordinates, or a cosine and a sine per Fourier feature.
    pub fn input_channels(&self) -> usize {
        if self.fourier_features > 0 {
            2 * self.fourier_features
        } else {
            2
        }
    }

    /// The coordinate (or Fourier-feature) image for `h × w`.
    pub fn input(&self, h: usize, w: usize, seed: u64) -> Vec<f32> {
        let coord = |i: usize, n: usize| {
            if n > 1 {
                i as f64 / (n - 1) as f64
            } else {
                0.0
            }
        };
        let nf = self.fourier_features;
        let b: Vec<[f64; 2]> = if nf > 0 {
            let mut rng = Pcg64Mcg::seed_from_u64(seed ^ 0x5EED_F0F0_0F0F_5EED);
            let normal = Normal::new(0.0, self.fourier_scale).expect("a valid std");
            (0..nf)
                .map(|_| [normal.sample(&mut rng), normal.sample(&mut rng)])
                .collect()
        } else {
            Vec::new()
        };
        let mut z = Vec::with_capacity(h * w * self.input_channels());
        for y in 0..h {
            for x in 0..w {
                let (u, v) = (coord(x, w), coord(y, h));
                if nf == 0 {
                    z.push(u as f32);
                    z.push(v as f32);
                } else {
                    for f in &b {
                        let a = 2.0 * std::f64::consts::PI * (f[0] * u + f[1] * v);
                        z.push(a.cos() as f32);
                    }
                    for f in &b {
                        let a = 2.0 * std::f64::consts::PI * (f[0] * u + f[1] * v);
                        z.push(a.sin() as f32);
                    }
                }
            }
        }
        z
    }

    pub fn builder<T: Float>(&self, h: usize, w: usize) -> Result<Built<T>> {
        if self.width == 0 || self.layers < 2 || self.out_channels == 0 {
            return Err(Error::invalid(
                "relunet: needs at least 2 layers and positive widths",
            ));
        }
        if !(self.fourier_scale.is_finite() && self.fourier_scale > 0.0) {
            return Err(Error::invalid("relunet: fourier_scale must be positive"));
        }
        if h == 0 || w == 0 {
            return Err(Error::invalid("relunet: the image is empty"));
        }
        let mut b = NetBuilder::new(h, w, self.input_channels());
        let mut x = b.input();
        for i in 0..self.layers - 1 {
            x = b.conv(x, self.width, 1, 1, PadMode::Zero, true, &format!("fc{i}"));
            x = b.leaky_relu(x, 0.0);
        }
        let out = b.conv(
            x,
            self.out_channels,
            1,
            1,
            PadMode::Zero,
            true,
            &format!("fc{}", self.layers - 1),
        );
        let out = b.sigmoid(out);
        Ok((b, out))
    }
}
