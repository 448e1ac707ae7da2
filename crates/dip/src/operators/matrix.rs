//! Any linear forward model given as a sparse matrix: `y = A x` over the HWC-flattened image,
//! read from a Matrix Market file (`.mtx`, coordinate format) or from scipy's
//! `scipy.sparse.save_npz` (`.npz`, CSR or CSC), or built from CSR arrays. The adjoint is the
//! transpose.

use std::path::Path;

use rayon::prelude::*;

use super::sparse::SparseRows;
use super::{Operator, Shape, check_len, shape_len};
use crate::error::{Error, Result};

/// A sparse matrix as an operator from images of `input` shape to measurement vectors.
#[derive(Debug, Clone)]
pub struct MatrixOperator {
    a: SparseRows,
    at: SparseRows,
    input: Shape,
    name: String,
}

fn bad(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::invalid(format!("{}: {what}", path.display()))
}

impl MatrixOperator {
    /// `rows × cols` from CSR arrays (`indptr` of `rows + 1` offsets, column `indices`,
    /// `values`); `input` (width, height, channels) must have `cols` samples. Repeated entries
    /// add.
    pub fn from_csr(
        rows: usize,
        cols: usize,
        indptr: &[usize],
        indices: &[usize],
        values: &[f64],
        input: Shape,
        name: impl Into<String>,
    ) -> Result<Self> {
        let name = name.into();
        if indptr.len() != rows + 1 || indices.len() != values.len() {
            return Err(Error::invalid(format!(
                "{name}: a CSR matrix of {rows} rows needs {} row offsets and one column index \
                 per value; got {} offsets, {} indices, {} values",
                rows + 1,
                indptr.len(),
                indices.len(),
                values.len()
            )));
        }
        if indptr[0] != 0 || indptr.windows(2).any(|w| w[1] < w[0]) || indptr[rows] != values.len()
        {
            return Err(Error::invalid(format!(
                "{name}: the row offsets must rise from 0 to the number of values"
            )));
        }
        if let Some(&c) = indices.iter().find(|&&c| c >= cols) {
            return Err(Error::invalid(format!(
                "{name}: column index {c} is outside the {cols} columns"
            )));
        }
        if let Some(v) = values.iter().find(|v| !v.is_finite()) {
            return Err(Error::invalid(format!(
                "{name}: the value {v} is not finite"
            )));
        }
        let n = shape_len(input);
        if n != cols {
            return Err(Error::invalid(format!(
                "{name}: the matrix has {cols} columns but the image is {}x{}x{} = {n} samples",
                input.0, input.1, input.2
            )));
        }
        let a = SparseRows::build(cols, rows, |o, out| {
            for k in indptr[o]..indptr[o + 1] {
                out.push((indices[k], values[k] as f32));
            }
        })
        .ok_or_else(|| Error::invalid(format!("{name}: too large for 32-bit indices")))?;
        let at = a.transpose();
        Ok(MatrixOperator { a, at, input, name })
    }

    /// From a `(row, col, value)` list (0-based); repeated entries add.
    pub fn from_triplets(
        rows: usize,
        cols: usize,
        mut entries: Vec<(usize, usize, f64)>,
        input: Shape,
        name: impl Into<String>,
    ) -> Result<Self> {
        let name = name.into();
        if let Some(&(r, c, _)) = entries.iter().find(|(r, c, _)| *r >= rows || *c >= cols) {
            return Err(Error::invalid(format!(
                "{name}: entry ({}, {}) is outside the {rows} x {cols} matrix",
                r + 1,
                c + 1
            )));
        }
        entries.sort_by_key(|&(r, c, _)| (r, c));
        let mut indptr = vec![0usize; rows + 1];
        for &(r, _, _) in &entries {
            indptr[r + 1] += 1;
        }
        for k in 0..rows {
            indptr[k + 1] += indptr[k];
        }
        let indices: Vec<usize> = entries.iter().map(|e| e.1).collect();
        let values: Vec<f64> = entries.iter().map(|e| e.2).collect();
        Self::from_csr(rows, cols, &indptr, &indices, &values, input, name)
    }

    /// A matrix file: Matrix Market (`.mtx`) or scipy's `save_npz` (`.npz`).
    pub fn from_file(path: &Path, input: Shape) -> Result<Self> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("mtx") => Self::from_mtx(path, input),
            Some("npz") => Self::from_npz(path, input),
            _ => Err(bad(
                path,
                "a matrix file is Matrix Market (.mtx) or scipy.sparse.save_npz (.npz)",
            )),
        }
    }

    /// A Matrix Market file in coordinate format (`real`, `integer` or `pattern`; `general` or
    /// `symmetric`).
    pub fn from_mtx(path: &Path, input: Shape) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| bad(path, format!("cannot read the file: {e}")))?;
        let mut lines = text.lines().enumerate();
        let (_, header) = lines.next().ok_or_else(|| bad(path, "the file is empty"))?;
        let h: Vec<String> = header
            .split_whitespace()
            .map(str::to_ascii_lowercase)
            .collect();
        if h.len() != 5 || h[0] != "%%matrixmarket" || h[1] != "matrix" {
            return Err(bad(
                path,
                "not a Matrix Market file (the first line must be %%MatrixMarket matrix ...)",
            ));
        }
        if h[2] != "coordinate" {
            return Err(bad(
                path,
                format!(
                    "'{}' format: only the sparse coordinate format is read",
                    h[2]
                ),
            ));
        }
        let pattern = match h[3].as_str() {
            "real" | "integer" | "double" => false,
            "pattern" => true,
            other => {
                return Err(bad(
                    path,
                    format!("'{other}' values: only real ones are read"),
                ));
            }
        };
        let symmetric = match h[4].as_str() {
            "general" => false,
            "symmetric" => true,
            other => return Err(bad(path, format!("'{other}' symmetry is not read"))),
        };
        let mut size: Option<(usize, usize, usize)> = None;
        let mut entries = Vec::new();
        for (k, line) in lines {
            let line = line.trim();
            if line.is_empty() || line.starts_with('%') {
                continue;
            }
            let at = |what: &str| bad(path, format!("line {}: {what}", k + 1));
            let f: Vec<&str> = line.split_whitespace().collect();
            let Some((rows, cols, nnz)) = size else {
                let n: Vec<usize> = f
                    .iter()
                    .map(|s| s.parse::<usize>())
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|_| at("expected the sizes: ROWS COLS ENTRIES"))?;
                if n.len() != 3 {
                    return Err(at("expected the sizes: ROWS COLS ENTRIES"));
                }
                size = Some((n[0], n[1], n[2]));
                entries.reserve(n[2]);
                continue;
            };
            let want = if pattern { 2 } else { 3 };
            if f.len() != want {
                return Err(at(&format!(
                    "expected {want} fields: ROW COL{}",
                    if pattern { "" } else { " VALUE" }
                )));
            }
            let r: usize = f[0]
                .parse()
                .map_err(|_| at("the row is not a whole number"))?;
            let c: usize = f[1]
                .parse()
                .map_err(|_| at("the column is not a whole number"))?;
            let v: f64 = if pattern {
                1.0
            } else {
                f[2].parse()
                    .map_err(|_| at(&format!("'{}' is not a number", f[2])))?
            };
            if r == 0 || c == 0 || r > rows || c > cols {
                return Err(at(&format!(
                    "entry ({r}, {c}) is outside the {rows} x {cols} matrix"
                )));
            }
            entries.push((r - 1, c - 1, v));
            if symmetric && r != c {
                entries.push((c - 1, r - 1, v));
            }
            if entries.len() > 2 * nnz {
                return Err(at(&format!("more entries than the {nnz} announced")));
            }
        }
        let Some((rows, cols, _)) = size else {
            return Err(bad(path, "no size line (ROWS COLS ENTRIES)"));
        };
        Self::from_triplets(rows, cols, entries, input, path.display().to_string())
    }

    /// scipy's `save_npz` of a CSR or CSC matrix (`data`, `indices`, `indptr`, `shape`).
    pub fn from_npz(path: &Path, input: Shape) -> Result<Self> {
        use ndarray::{Array1, ArrayD};
        use ndarray_npy::NpzReader;
        let f = std::fs::File::open(path)
            .map_err(|e| bad(path, format!("cannot read the file: {e}")))?;
        let mut npz =
            NpzReader::new(f).map_err(|e| bad(path, format!("not an .npz archive: {e}")))?;
        let ints = |npz: &mut NpzReader<std::fs::File>, name: &str| -> Result<Vec<usize>> {
            if let Ok(a) = npz.by_name::<ndarray::OwnedRepr<i32>, ndarray::Ix1>(name) {
                return a
                    .iter()
                    .map(|&v| {
                        usize::try_from(v).map_err(|_| bad(path, format!("{name}: negative")))
                    })
                    .collect();
            }
            let a: Array1<i64> = npz.by_name(name).map_err(|_| {
                bad(
                    path,
                    format!("no integer array '{name}': not a scipy.sparse .npz"),
                )
            })?;
            a.iter()
                .map(|&v| usize::try_from(v).map_err(|_| bad(path, format!("{name}: negative"))))
                .collect()
        };
        let indptr = ints(&mut npz, "indptr.npy")?;
        let indices = ints(&mut npz, "indices.npy")?;
        let shape = ints(&mut npz, "shape.npy")?;
        let data: Vec<f64> =
            if let Ok(a) = npz.by_name::<ndarray::OwnedRepr<f64>, ndarray::IxDyn>("data.npy") {
                let a: ArrayD<f64> = a;
                a.iter().copied().collect()
            } else {
                let a: ArrayD<f32> = npz.by_name("data.npy").map_err(|_| {
                    bad(path, "no float array 'data': not a float scipy.sparse .npz")
                })?;
                a.iter().map(|&v| v as f64).collect()
            };
        if shape.len() != 2 {
            return Err(bad(path, "the shape must have two entries"));
        }
        let (rows, cols) = (shape[0], shape[1]);
        let name = path.display().to_string();
        // CSC (columns compressed) when its offsets count the columns: its transpose's CSR.
        if indptr.len() == cols + 1 && indptr.len() != rows + 1 {
            let mut entries = Vec::with_capacity(data.len());
            for c in 0..cols {
                for k in indptr[c]..indptr[c + 1].min(indices.len()) {
                    entries.push((indices[k], c, data[k]));
                }
            }
            return Self::from_triplets(rows, cols, entries, input, name);
        }
        Self::from_csr(rows, cols, &indptr, &indices, &data, input, name)
    }

    /// Number of measurements (rows).
    pub fn rows_count(&self) -> usize {
        self.a.n_out
    }
}

impl Operator for MatrixOperator {
    fn input_shape(&self) -> Shape {
        self.input
    }
    fn output_shape(&self) -> Shape {
        (1, self.a.n_out, 1)
    }
    fn forward(&self, x: &[f32], y: &mut [f32]) {
        check_len("matrix", "input", x.len(), self.a.n_in);
        check_len("matrix", "output", y.len(), self.a.n_out);
        apply_rows(&self.a, x, y);
    }
    fn adjoint(&self, gy: &[f32], gx: &mut [f32]) {
        check_len("matrix", "output", gy.len(), self.a.n_out);
        check_len("matrix", "input", gx.len(), self.a.n_in);
        apply_rows(&self.at, gy, gx);
    }
    fn name(&self) -> String {
        format!(
            "matrix {} ({} x {}, {} entries)",
            self.name,
            self.a.n_out,
            self.a.n_in,
            self.a.nnz()
        )
    }
    fn rows(&self) -> Option<SparseRows> {
        Some(self.a.clone())
    }
}

/// `y = A x` by rows in parallel, each row summed in f64 in the order of its entries (the same
/// result for any thread count).
fn apply_rows(a: &SparseRows, x: &[f32], y: &mut [f32]) {
    y.par_iter_mut().enumerate().for_each(|(o, yo)| {
        let r = a.start[o] as usize..a.start[o + 1] as usize;
        *yo = a.idx[r.clone()]
            .iter()
            .zip(&a.w[r])
            .map(|(&i, &w)| w as f64 * x[i as usize] as f64)
            .sum::<f64>() as f32;
    });
}
