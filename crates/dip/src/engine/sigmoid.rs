//! The logistic sigmoid.

use super::{Float, Tensor};

#[derive(Debug, Default)]
pub struct Sigmoid;

impl Sigmoid {
    pub fn forward<T: Float>(&self, x: &Tensor<T>, y: &mut Tensor<T>) {
        for (o, &v) in y.data.iter_mut().zip(&x.data) {
            *o = T::ONE / (T::ONE + (-v).exp());
        }
    }

    /// `dx = dy · y · (1 − y)`, written or added.
    pub fn backward<T: Float>(
        &self,
        y: &Tensor<T>,
        dy: &Tensor<T>,
        dx: &mut Tensor<T>,
        accumulate: bool,
    ) {
        for ((d, &g), &s) in dx.data.iter_mut().zip(&dy.data).zip(&y.data) {
            let v = g * s * (T::ONE - s);
            if accumulate {
                *d += v;
            } else {
                *d = v;
            }
        }
    }
}
