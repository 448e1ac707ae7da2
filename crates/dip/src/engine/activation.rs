//! LeakyReLU as a layer of its own (slope 0 is ReLU), for networks whose activation does not
//! follow a batch norm. The gradient at exactly 0 is `slope`, as PyTorch's (`x > 0` passes).

use super::par::{for_each_chunk, rows_per_task};
use super::{Float, Tensor};

#[derive(Debug)]
pub struct LeakyRelu<T> {
    pub slope: T,
}

impl<T: Float> LeakyRelu<T> {
    pub fn forward(&self, x: &Tensor<T>, y: &mut Tensor<T>) {
        let s = self.slope;
        let per = rows_per_task(x.len().max(1), 1);
        let xd = &x.data;
        for_each_chunk(&mut y.data, per, |(i, ys)| {
            for (o, &v) in ys.iter_mut().zip(&xd[i * per..]) {
                *o = if v > T::ZERO { v } else { s * v };
            }
        });
    }

    /// Writes (or adds to) `dx`.
    pub fn backward(&self, x: &Tensor<T>, dy: &Tensor<T>, dx: &mut Tensor<T>, accumulate: bool) {
        let s = self.slope;
        let per = rows_per_task(x.len().max(1), 1);
        let (xd, gd) = (&x.data, &dy.data);
        for_each_chunk(&mut dx.data, per, |(i, ds)| {
            let (xs, gs) = (&xd[i * per..], &gd[i * per..]);
            for ((d, &v), &g) in ds.iter_mut().zip(xs).zip(gs) {
                let val = if v > T::ZERO { g } else { s * g };
                if accumulate {
                    *d += val;
                } else {
                    *d = val;
                }
            }
        });
    }
}
