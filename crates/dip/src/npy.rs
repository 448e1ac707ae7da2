//! NumPy `.npy` files: measurements (sinograms, k-space, vectors) and angles, read without
//! quantisation or clipping, with errors that name the file.

use std::path::Path;

use ndarray::{Array1, Array2, Array3};
use ndarray_npy::ReadNpyExt;

use crate::error::{Error, Result};
use crate::image::{BitDepth, Image};

fn bad(path: &Path, what: &str) -> Error {
    Error::invalid(format!("{}: {what}", path.display()))
}

/// A float32 or float64 array of 1, 2 or 3 dimensions, as its shape and values. The file is
/// read once; each element type and rank is tried on its bytes.
fn read_any(path: &Path) -> Result<(Vec<usize>, Vec<f64>)> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::invalid(format!("{}: cannot read the file: {e}", path.display())))?;
    macro_rules! attempt {
        ($t:ty) => {
            if let Ok(a) = <$t>::read_npy(&bytes[..]) {
                return Ok((a.shape().to_vec(), a.iter().map(|&v| v as f64).collect()));
            }
        };
    }
    attempt!(Array1<f32>);
    attempt!(Array1<f64>);
    attempt!(Array2<f32>);
    attempt!(Array2<f64>);
    attempt!(Array3<f32>);
    attempt!(Array3<f64>);
    // Say what the file is, when it is a .npy at all.
    if !bytes.starts_with(b"\x93NUMPY") {
        return Err(bad(path, "not a NumPy .npy file"));
    }
    Err(bad(
        path,
        "expected a float32 or float64 array of 1 to 3 dimensions, in C order \
         (numpy.save of a float array)",
    ))
}

/// An `H × W` or `H × W × C` (C = 1 or 3) float array as an image, values kept as they are
/// (no clipping: measurements are not pixels); a 1-D array of `n` values is `n × 1`.
/// Non-finite values are refused.
pub fn load_array(path: &Path) -> Result<Image> {
    let (shape, v) = read_any(path)?;
    let (h, w, c) = match shape[..] {
        [n] => (n, 1, 1),
        [h, w] => (h, w, 1),
        [h, w, c] if c == 1 || c == 3 => (h, w, c),
        _ => {
            return Err(bad(
                path,
                &format!(
                    "expected a vector, an H x W or an H x W x C (C = 1 or 3) array, got shape \
                     {shape:?}"
                ),
            ));
        }
    };
    if h == 0 || w == 0 {
        return Err(bad(path, "the array is empty"));
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(bad(path, "the array holds NaN or infinite values"));
    }
    let data = v.into_iter().map(|x| x as f32).collect();
    Ok(Image::try_new(w, h, c, data)
        .map_err(|e| bad(path, &e.to_string()))?
        .with_bit_depth(BitDepth::Sixteen))
}

/// Writes an image's values as a float32 array, `H × W` for one channel, `H × W × C` otherwise.
pub fn save_array(path: &Path, img: &Image) -> Result<()> {
    use ndarray_npy::WriteNpyExt;
    let f = std::fs::File::create(path)
        .map_err(|e| Error::invalid(format!("{}: cannot write the file: {e}", path.display())))?;
    let w = std::io::BufWriter::new(f);
    let r = if img.channels == 1 {
        Array2::from_shape_vec((img.height, img.width), img.data.clone())
            .expect("an image's samples fill its shape")
            .write_npy(w)
    } else {
        Array3::from_shape_vec((img.height, img.width, img.channels), img.data.clone())
            .expect("an image's samples fill its shape")
            .write_npy(w)
    };
    r.map_err(|e| Error::invalid(format!("{}: cannot write the array: {e}", path.display())))
}

/// Writes a 1-D float64 array.
pub fn save_vector(path: &Path, v: &[f64]) -> Result<()> {
    use ndarray_npy::WriteNpyExt;
    let f = std::fs::File::create(path)
        .map_err(|e| Error::invalid(format!("{}: cannot write the file: {e}", path.display())))?;
    Array1::from(v.to_vec())
        .write_npy(std::io::BufWriter::new(f))
        .map_err(|e| Error::invalid(format!("{}: cannot write the array: {e}", path.display())))
}

/// A 1-D float array (angles, a measurement vector).
pub fn load_vector(path: &Path) -> Result<Vec<f64>> {
    let (shape, v) = read_any(path)?;
    if shape.len() != 1 {
        return Err(bad(
            path,
            &format!("expected a 1-D array, got shape {shape:?}"),
        ));
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(bad(path, "the array holds NaN or infinite values"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray_npy::WriteNpyExt;

    #[test]
    fn arrays_read_back_and_bad_files_are_named() {
        let dir = std::env::temp_dir().join(format!("dip-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.npy");
        let a = Array2::from_shape_vec((2, 3), vec![-1.5f64, 0.0, 2.0, 3.0, 40.0, 5.0]).unwrap();
        a.write_npy(std::fs::File::create(&p).unwrap()).unwrap();
        let img = load_array(&p).unwrap();
        assert_eq!((img.width, img.height, img.channels), (3, 2, 1));
        assert_eq!(img.data, vec![-1.5, 0.0, 2.0, 3.0, 40.0, 5.0]);
        let v = dir.join("v.npy");
        Array1::from(vec![0.0f32, 45.0])
            .write_npy(std::fs::File::create(&v).unwrap())
            .unwrap();
        assert_eq!(load_vector(&v).unwrap(), vec![0.0, 45.0]);
        assert!(load_vector(&p).unwrap_err().to_string().contains("1-D"));
        let t = dir.join("t.npy");
        std::fs::write(&t, b"hello").unwrap();
        let e = load_array(&t).unwrap_err().to_string();
        assert!(e.contains("t.npy") && e.contains("not a NumPy"), "{e}");
        let i = dir.join("i.npy");
        Array1::from(vec![1i64, 2])
            .write_npy(std::fs::File::create(&i).unwrap())
            .unwrap();
        assert!(
            load_vector(&i)
                .unwrap_err()
                .to_string()
                .contains("float32 or float64")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
