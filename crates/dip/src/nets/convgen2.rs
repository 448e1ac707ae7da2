//! The two-layer convolutional generator of Heckel & Soltanolkotabi ("Denoising and
//! regularization via exploiting the structural bias of convolutional generators", ICLR 2020):
//! `G(C) = ReLU(U C) v`.
//!
//! `C` is a learned `h × w × k` coefficient tensor, `U` a fixed circular convolution with an
//! interpolating filter (here the separable triangle of half-width `filter`, the kernel of
//! linear interpolation by that factor), and `v` the combination of the `k` channels into the
//! output channels. Their analysis shows that gradient descent on `C` fits the image's Fourier
//! components at rates set by the filter's spectrum, low frequencies first, so early stopping
//! denoises. Their theory keeps `v` fixed; here `v` is learned with `C` (the generator as the
//! study defines it), which adds `k · out_channels` parameters.

use serde::{Deserialize, Serialize};

use super::Built;
use crate::engine::{FilterPad, Float, NetBuilder, PadMode};
use crate::{Error, Result};

/// Architecture of the two-layer generator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvGen2Spec {
    pub out_channels: usize,
    /// Channels `k` of `C`.
    pub channels: usize,
    /// Half-width of the triangle filter `U`, in pixels (its support is `2·filter − 1`).
    pub filter: usize,
    /// Std of the initial coefficients `C`.
    pub init_std: f64,
}

impl ConvGen2Spec {
    pub fn new(out_channels: usize, channels: usize) -> Self {
        ConvGen2Spec {
            out_channels,
            channels,
            filter: 4,
            init_std: 1.0,
        }
    }

    /// The separable triangle kernel, normalised to sum 1, and its size.
    pub fn kernel(&self) -> (Vec<f64>, usize) {
        let r = self.filter.max(1);
        let k = 2 * r - 1;
        let t: Vec<f64> = (0..k)
            .map(|i| (r as f64 - (i as f64 - (r - 1) as f64).abs()) / r as f64)
            .collect();
        let mut kernel: Vec<f64> = (0..k * k).map(|i| t[i / k] * t[i % k]).collect();
        let s: f64 = kernel.iter().sum();
        kernel.iter_mut().for_each(|v| *v /= s);
        (kernel, k)
    }

    pub fn builder<T: Float>(&self, h: usize, w: usize) -> Result<Built<T>> {
        if self.channels == 0 || self.filter == 0 || self.out_channels == 0 {
            return Err(Error::invalid(
                "convgen2: channels and filter must be positive",
            ));
        }
        if !(self.init_std.is_finite() && self.init_std > 0.0) {
            return Err(Error::invalid("convgen2: init_std must be positive"));
        }
        let (kernel, k) = self.kernel();
        if h == 0 || w == 0 {
            return Err(Error::invalid("convgen2: the image is empty"));
        }
        let mut b = NetBuilder::new(1, 1, 1);
        let c = b.learned_tensor((h, w, self.channels), self.init_std, "C");
        let u = b.fixed_filter(c, &kernel, k, 1, FilterPad::Circular);
        let r = b.leaky_relu(u, 0.0);
        let out = b.conv(r, self.out_channels, 1, 1, PadMode::Zero, false, "v");
        Ok((b, out))
    }
}
