//! Channel concatenation.

use super::{Float, Tensor};

/// Concatenates tensors of equal spatial size along channels. Forward and backward work one
/// input at a time, so the network can hand over each input's buffer on its own.
#[derive(Debug)]
pub struct Concat {
    pub channels: Vec<usize>,
}

impl Concat {
    pub fn new(channels: Vec<usize>) -> Self {
        Concat { channels }
    }

    pub fn out_channels(&self) -> usize {
        self.channels.iter().sum()
    }

    pub(crate) fn offset(&self, which: usize) -> usize {
        self.channels[..which].iter().sum()
    }

    /// Copies input `which` into its channels of `y`.
    pub fn forward_input<T: Float>(&self, which: usize, x: &Tensor<T>, y: &mut Tensor<T>) {
        let (c, cx, off) = (
            self.out_channels(),
            self.channels[which],
            self.offset(which),
        );
        for (ypx, xpx) in y.data.chunks_exact_mut(c).zip(x.data.chunks_exact(cx)) {
            ypx[off..off + cx].copy_from_slice(xpx);
        }
    }

    /// Writes (or adds) the gradient of input `which`: its channels of `dy`.
    pub fn backward_input<T: Float>(
        &self,
        which: usize,
        dy: &Tensor<T>,
        dx: &mut Tensor<T>,
        accumulate: bool,
    ) {
        let (c, cx, off) = (
            self.out_channels(),
            self.channels[which],
            self.offset(which),
        );
        for (dpx, gpx) in dx.data.chunks_exact_mut(cx).zip(dy.data.chunks_exact(c)) {
            let g = &gpx[off..off + cx];
            if accumulate {
                dpx.iter_mut().zip(g).for_each(|(d, &v)| *d += v);
            } else {
                dpx.copy_from_slice(g);
            }
        }
    }
}
