//! DIP-Linear: the skip network's layer pattern with every convolution replaced by a fully
//! connected layer over the whole flattened tensor (Chakrabarty & Maji's control architecture).
//!
//! The input noise `h × w × in_channels` is flattened; each scale has two fully connected
//! layers down and two up (the merge layer and the 1×1 layer of the skip network), each followed
//! by LeakyReLU(0.2); a last layer maps to `h × w × out_channels`, then a sigmoid. There are no
//! skip connections, no batch norm (a batch of one vector has no statistics) and no notion of
//! neighbourhood: any pixel permutation of the image is fitted equally well, which is what makes
//! it the control for the convolutional prior.
//!
//! Memory grows with pixels × width: the first and last layers hold `pixels · channels · width`
//! weights each.

use serde::{Deserialize, Serialize};

use super::Built;
use crate::engine::{Float, NetBuilder};
use crate::{Error, Result};

/// Architecture of DIP-Linear.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearSpec {
    pub in_channels: usize,
    pub out_channels: usize,
    /// Units of every hidden layer (the paper uses 128 and 2048).
    pub width: usize,
    /// Scales of the skip pattern: each adds two layers down and two up.
    pub scales: usize,
    pub need_sigmoid: bool,
}

impl LinearSpec {
    /// The paper's DIP-Linear: 5 scales.
    pub fn new(in_channels: usize, out_channels: usize, width: usize) -> Self {
        LinearSpec {
            in_channels,
            out_channels,
            width,
            scales: 5,
            need_sigmoid: true,
        }
    }

    pub fn builder<T: Float>(&self, h: usize, w: usize) -> Result<Built<T>> {
        if self.width == 0 || self.scales == 0 || self.in_channels == 0 || self.out_channels == 0 {
            return Err(Error::invalid(
                "linear network: width, scales and channels must be positive",
            ));
        }
        if h == 0 || w == 0 {
            return Err(Error::invalid("linear network: the image is empty"));
        }
        const SLOPE: f64 = 0.2;
        let mut b = NetBuilder::new(h, w, self.in_channels);
        let mut x = b.input();
        let hidden = (1, 1, self.width);
        for i in 0..self.scales {
            for j in 1..=2 {
                x = b.dense(x, hidden, true, &format!("s{i}.down.fc{j}"));
                x = b.leaky_relu(x, SLOPE);
            }
        }
        for i in (0..self.scales).rev() {
            for part in ["up.fc", "up.fc1x1"] {
                x = b.dense(x, hidden, true, &format!("s{i}.{part}"));
                x = b.leaky_relu(x, SLOPE);
            }
        }
        let mut out = b.dense(x, (h, w, self.out_channels), true, "out.fc");
        if self.need_sigmoid {
            out = b.sigmoid(out);
        }
        Ok((b, out))
    }
}
