//! Complex 2-D FFTs in `f64` on a grid of any size, for the Gaussian-process computations:
//! circulant covariance spectra, convolutions by a kernel (the matrix-vector product of
//! conjugate gradients) and the Wiener filter. `rustfft` does the 1-D transforms; this only
//! runs them over rows and columns.

use std::sync::Arc;

use rustfft::num_complex::Complex64;
use rustfft::{Fft, FftPlanner};

/// Forward and inverse plans for one `width × height` grid, with their scratch.
#[derive(Clone)]
pub struct Grid {
    pub width: usize,
    pub height: usize,
    row_f: Arc<dyn Fft<f64>>,
    row_i: Arc<dyn Fft<f64>>,
    col_f: Arc<dyn Fft<f64>>,
    col_i: Arc<dyn Fft<f64>>,
    cols: Vec<Complex64>,
    scratch: Vec<Complex64>,
}

impl std::fmt::Debug for Grid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Grid({}x{})", self.width, self.height)
    }
}

impl Grid {
    /// Plans for a `width × height` grid (both at least 1).
    pub fn new(width: usize, height: usize) -> Self {
        assert!(width > 0 && height > 0, "an FFT grid must not be empty");
        let mut p = FftPlanner::<f64>::new();
        let (row_f, row_i) = (p.plan_fft_forward(width), p.plan_fft_inverse(width));
        let (col_f, col_i) = (p.plan_fft_forward(height), p.plan_fft_inverse(height));
        let scratch = [&row_f, &row_i, &col_f, &col_i]
            .iter()
            .map(|f| f.get_inplace_scratch_len())
            .max()
            .unwrap_or(0);
        let zero = Complex64::new(0.0, 0.0);
        Grid {
            width,
            height,
            row_f,
            row_i,
            col_f,
            col_i,
            cols: vec![zero; width * height],
            scratch: vec![zero; scratch],
        }
    }

    /// Cells of the grid.
    pub fn len(&self) -> usize {
        self.width * self.height
    }

    /// Whether the grid has no cell (never: [`Grid::new`] refuses that).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn run(&mut self, data: &mut [Complex64], inverse: bool) {
        let (w, h) = (self.width, self.height);
        assert_eq!(data.len(), w * h, "the data does not fit the grid");
        let (row, col) = if inverse {
            (&self.row_i, &self.col_i)
        } else {
            (&self.row_f, &self.col_f)
        };
        row.process_with_scratch(data, &mut self.scratch);
        for y in 0..h {
            for x in 0..w {
                self.cols[x * h + y] = data[y * w + x];
            }
        }
        col.process_with_scratch(&mut self.cols, &mut self.scratch);
        for y in 0..h {
            for x in 0..w {
                data[y * w + x] = self.cols[x * h + y];
            }
        }
    }

    /// The unnormalised forward DFT, in place (row-major, unshifted layout).
    pub fn forward(&mut self, data: &mut [Complex64]) {
        self.run(data, false);
    }

    /// The inverse DFT scaled by `1/N`, in place: it undoes [`Grid::forward`].
    pub fn inverse(&mut self, data: &mut [Complex64]) {
        self.run(data, true);
        let s = 1.0 / self.len() as f64;
        data.iter_mut().for_each(|z| *z *= s);
    }

    /// The DFT of a real field.
    pub fn forward_real(&mut self, x: &[f64], out: &mut Vec<Complex64>) {
        out.clear();
        out.extend(x.iter().map(|&v| Complex64::new(v, 0.0)));
        self.forward(out);
    }

    /// The circular convolution of `x` with the symmetric kernel whose DFT is the real
    /// `spectrum`: `out = F⁻¹(spectrum · F(x))`. `work` is scratch.
    pub fn filter(
        &mut self,
        x: &[f64],
        spectrum: &[f64],
        out: &mut [f64],
        work: &mut Vec<Complex64>,
    ) {
        self.forward_real(x, work);
        work.iter_mut().zip(spectrum).for_each(|(z, &s)| *z *= s);
        self.inverse(work);
        out.iter_mut().zip(work.iter()).for_each(|(o, z)| *o = z.re);
    }
}
