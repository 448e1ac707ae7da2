//! A single image-shaped tensor, channel-last.

use super::Float;

/// `h × w × c` values, channel-last (the `c` values of a pixel are contiguous).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tensor<T> {
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub data: Vec<T>,
}

impl<T: Float> Tensor<T> {
    pub fn zeros(h: usize, w: usize, c: usize) -> Self {
        Tensor {
            h,
            w,
            c,
            data: vec![T::ZERO; h * w * c],
        }
    }

    /// Wraps existing HWC data. Panics if the length does not match, which is a programming error.
    pub fn from_vec(h: usize, w: usize, c: usize, data: Vec<T>) -> Self {
        assert_eq!(
            data.len(),
            h * w * c,
            "tensor data length does not match {h}x{w}x{c}"
        );
        Tensor { h, w, c, data }
    }

    /// Number of pixels.
    pub fn pixels(&self) -> usize {
        self.h * self.w
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn shape(&self) -> (usize, usize, usize) {
        (self.h, self.w, self.c)
    }

    /// Converts to another float type.
    pub fn cast<U: Float>(&self) -> Tensor<U> {
        Tensor {
            h: self.h,
            w: self.w,
            c: self.c,
            data: self.data.iter().map(|v| U::from_f64(v.to_f64())).collect(),
        }
    }
}
