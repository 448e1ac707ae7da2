//! A fully connected layer over the whole flattened tensor (PyTorch `nn.Linear` on a batch of
//! one): `y = W x + b`, with `x` the `h·w·c` input values and `y` reshaped to the output shape.
//!
//! The weight is stored `[in][out]` (row-major, `n_in × n_out`), so the forward is a row
//! vector times the matrix, the weight gradient an outer product, and the input gradient the
//! matrix times a column: three products for `gemm`.

use super::gemm::{MatRef, matmul};
use super::{Float, Tensor};

#[derive(Debug)]
pub struct Dense {
    pub n_in: usize,
    pub n_out: usize,
    /// Offsets of the weight and the bias in the flat parameter buffer.
    pub weight: usize,
    pub bias: Option<usize>,
}

impl Dense {
    pub fn new(n_in: usize, n_out: usize, weight: usize, bias: Option<usize>) -> Self {
        Dense {
            n_in,
            n_out,
            weight,
            bias,
        }
    }

    pub fn forward<T: Float>(&self, params: &[T], x: &Tensor<T>, y: &mut Tensor<T>) {
        let (ni, no) = (self.n_in, self.n_out);
        let w = &params[self.weight..self.weight + ni * no];
        let acc = match self.bias {
            Some(b) => {
                y.data.copy_from_slice(&params[b..b + no]);
                true
            }
            None => false,
        };
        matmul(
            1,
            no,
            ni,
            &mut y.data,
            no,
            acc,
            MatRef::rows(&x.data, ni),
            MatRef::rows(w, no),
        );
    }

    /// Writes the parameter gradients and writes (or adds to) `dx`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward<T: Float>(
        &self,
        params: &[T],
        x: &Tensor<T>,
        dy: &Tensor<T>,
        dx: Option<&mut Tensor<T>>,
        accumulate: bool,
        dparams: &mut [T],
    ) {
        let (ni, no) = (self.n_in, self.n_out);
        if let Some(b) = self.bias {
            dparams[b..b + no].copy_from_slice(&dy.data);
        }
        // dW[i][o] = x[i] · dy[o].
        matmul(
            ni,
            no,
            1,
            &mut dparams[self.weight..self.weight + ni * no],
            no,
            false,
            MatRef::rows(&x.data, 1),
            MatRef::rows(&dy.data, no),
        );
        if let Some(dx) = dx {
            // dx[i] = Σ_o W[i][o] dy[o].
            let w = &params[self.weight..self.weight + ni * no];
            matmul(
                ni,
                1,
                no,
                &mut dx.data,
                1,
                accumulate,
                MatRef::rows(w, no),
                MatRef::rows(&dy.data, 1),
            );
        }
    }
}
