//! The deep decoder (Heckel & Hand, 2019): an under-parameterised generator of 1×1
//! convolutions and fixed upsampling.
//!
//! The input is noise at `H/2^(layers−1)`. Each layer is a bias-free 1×1 convolution, ReLU,
//! channel normalisation (batch norm over the pixels of the one image, with learned scale and
//! shift), then ×2 upsampling (all layers but the last). A bias-free 1×1 convolution to the
//! output channels and a sigmoid finish it. With 128 channels, 6 layers and 3 outputs it has
//! 100,224 parameters. All spatial coupling comes from the fixed upsampling filter: the
//! architecture isolates the interpolating filters that Heckel & Soltanolkotabi credit for the
//! spectral bias.

use serde::{Deserialize, Serialize};

use super::{Built, Upsampler, upsample2};
use crate::engine::{Float, NetBuilder, PadMode};
use crate::{Error, Result};

/// Architecture of a deep decoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecoderSpec {
    pub out_channels: usize,
    /// Channels `k` of every layer (64 or 128 in the paper).
    pub channels: usize,
    pub layers: usize,
    pub upsample: Upsampler,
    /// Width of the Gaussian when `upsample` is `gaussian`.
    #[serde(default = "default_sigma")]
    pub gaussian_sigma: f64,
}

fn default_sigma() -> f64 {
    1.0
}

impl DecoderSpec {
    /// Heckel & Hand's decoder: 6 layers of `channels`, bilinear upsampling.
    pub fn new(out_channels: usize, channels: usize) -> Self {
        DecoderSpec {
            out_channels,
            channels,
            layers: 6,
            upsample: Upsampler::Bilinear,
            gaussian_sigma: default_sigma(),
        }
    }

    /// Sides must be multiples of this: the input is the image shrunk this many times.
    pub fn size_multiple(&self) -> usize {
        1 << self.layers.saturating_sub(1)
    }

    pub fn input_shape(&self, h: usize, w: usize) -> (usize, usize, usize) {
        let m = self.size_multiple();
        (h / m, w / m, self.channels)
    }

    pub fn builder<T: Float>(&self, h: usize, w: usize) -> Result<Built<T>> {
        if self.channels == 0 || self.layers == 0 || self.out_channels == 0 {
            return Err(Error::invalid(
                "deep decoder: channels and layers must be positive",
            ));
        }
        if !(self.gaussian_sigma.is_finite() && self.gaussian_sigma > 0.0) {
            return Err(Error::invalid(
                "deep decoder: gaussian_sigma must be positive",
            ));
        }
        let m = self.size_multiple();
        if h == 0 || w == 0 || !h.is_multiple_of(m) || !w.is_multiple_of(m) {
            return Err(Error::invalid(format!(
                "a deep decoder with {} layers needs sides divisible by {m}, got {w}x{h}",
                self.layers
            )));
        }
        let (ih, iw, c) = self.input_shape(h, w);
        let mut b = NetBuilder::new(ih, iw, c);
        let mut x = b.input();
        for i in 0..self.layers {
            x = b.conv(
                x,
                self.channels,
                1,
                1,
                PadMode::Zero,
                false,
                &format!("l{i}.conv"),
            );
            x = b.leaky_relu(x, 0.0);
            x = b.batchnorm(x, None, &format!("l{i}.norm"));
            if i + 1 < self.layers {
                x = upsample2(
                    &mut b,
                    x,
                    self.upsample,
                    self.gaussian_sigma,
                    PadMode::Reflection,
                    &format!("l{i}.up"),
                );
            }
        }
        let out = b.conv(x, self.out_channels, 1, 1, PadMode::Zero, false, "out.conv");
        let out = b.sigmoid(out);
        Ok((b, out))
    }
}
