//! Reference cases of the PyTorch DIP code (a folder per case: `config.json`, and `tensors.npz`
//! in float64 with the input, target, parameters, output, loss, gradients and the parameters
//! after one Adam step), read into the engine's layout. The engine's reference tests and the
//! GPU self-test (`dip selftest`) compare against them.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use ndarray::{ArrayD, IxDyn, OwnedRepr};
use ndarray_npy::NpzReader;
use serde_json::Value;

use crate::engine::{Float, Net, PadMode, Tensor};
use crate::nets::{SkipSpec, Upsampler};
use crate::{Error, Result};

/// One reference case.
pub struct Case {
    pub name: String,
    pub cfg: Value,
    /// Tensors by name (`input`, `param/NAME`, `grad/NAME`, …), as the reference stored them.
    pub tensors: HashMap<String, ArrayD<f64>>,
}

fn bad(case: &str, msg: impl std::fmt::Display) -> Error {
    Error::invalid(format!("golden case {case}: {msg}"))
}

fn count(v: &Value, case: &str, what: &str) -> Result<usize> {
    v.as_u64()
        .map(|x| x as usize)
        .ok_or_else(|| bad(case, format!("{what} is not a count")))
}

/// The case folders of `dir` that hold tensors, sorted.
pub fn cases(dir: &Path) -> Result<Vec<String>> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| Error::invalid(format!("cannot read golden folder {}: {e}", dir.display())))?;
    let mut v: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("tensors.npz").is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    v.sort();
    if v.is_empty() {
        return Err(Error::invalid(format!(
            "no golden cases (folders with tensors.npz) in {}",
            dir.display()
        )));
    }
    Ok(v)
}

impl Case {
    /// Reads case `name` of `dir` (its tensors, if it has any).
    pub fn load(dir: &Path, name: &str) -> Result<Case> {
        let d = dir.join(name);
        let f = File::open(d.join("config.json")).map_err(|e| bad(name, e))?;
        let cfg: Value = serde_json::from_reader(f).map_err(|e| bad(name, e))?;
        let mut tensors = HashMap::new();
        let npz = d.join("tensors.npz");
        if npz.exists() {
            let f = File::open(&npz).map_err(|e| bad(name, e))?;
            let mut r = NpzReader::new(f).map_err(|e| bad(name, e))?;
            for n in r.names().map_err(|e| bad(name, e))? {
                let a: ArrayD<f64> = r
                    .by_name::<OwnedRepr<f64>, IxDyn>(&n)
                    .map_err(|e| bad(name, e))?;
                tensors.insert(n.trim_end_matches(".npy").to_string(), a);
            }
        }
        Ok(Case {
            name: name.to_string(),
            cfg,
            tensors,
        })
    }

    /// Tensor `key`, or an error naming it.
    pub fn tensor(&self, key: &str) -> Result<&ArrayD<f64>> {
        self.tensors
            .get(key)
            .ok_or_else(|| bad(&self.name, format!("tensor {key} missing")))
    }

    /// Tensor `key` flattened in the reference's order.
    pub fn flat(&self, key: &str) -> Result<Vec<f64>> {
        Ok(self.tensor(key)?.iter().copied().collect())
    }

    /// A number of the configuration (e.g. `optimizer`, `lr`).
    pub fn number(&self, path: &[&str]) -> Result<f64> {
        path.iter()
            .fold(&self.cfg, |v, k| &v[*k])
            .as_f64()
            .ok_or_else(|| bad(&self.name, format!("{} missing", path.join("."))))
    }

    /// Names of the parameter tensors in the reference's forward order.
    pub fn param_names(&self) -> Result<Vec<String>> {
        self.cfg["parameters_in_forward_order"]
            .as_array()
            .ok_or_else(|| bad(&self.name, "parameters_in_forward_order missing"))?
            .iter()
            .map(|p| {
                p["name"]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad(&self.name, "a parameter without a name"))
            })
            .collect()
    }

    /// The case's skip network.
    pub fn spec(&self) -> Result<SkipSpec> {
        let case = &self.name;
        let a = &self.cfg["architecture"];
        let list = |k: &str| -> Result<Vec<usize>> {
            a[k].as_array()
                .ok_or_else(|| bad(case, format!("architecture.{k} missing")))?
                .iter()
                .map(|v| count(v, case, k))
                .collect()
        };
        let down = list("down")?;
        let mut s = SkipSpec::uniform(
            count(&a["in_channels"], case, "in_channels")?,
            count(&a["out_channels"], case, "out_channels")?,
            down.len(),
            1,
            1,
        );
        s.down = down;
        s.up = list("up")?;
        s.skip = list("skip")?;
        s.pad = match a["pad"].as_str() {
            Some("reflection") => PadMode::Reflection,
            Some("zero") => PadMode::Zero,
            p => return Err(bad(case, format!("unknown pad {p:?}"))),
        };
        s.upsample = match a["upsample"].as_str() {
            Some("bilinear") => Upsampler::Bilinear,
            Some("nearest") => Upsampler::Nearest,
            u => return Err(bad(case, format!("unknown upsample {u:?}"))),
        };
        Ok(s)
    }

    /// The case's network with the reference's parameters (those the case stores; a case of
    /// configuration only keeps the seeded ones), each tensor's shape and the parameter count
    /// checked against the reference.
    pub fn net<T: Float>(&self) -> Result<Net<T>> {
        let name = &self.name;
        let (h, w) = (
            count(&self.cfg["height"], name, "height")?,
            count(&self.cfg["width"], name, "width")?,
        );
        let mut net = self.spec()?.build::<T>(h, w, 0).map_err(|e| bad(name, e))?;
        let order = self.cfg["parameters_in_forward_order"]
            .as_array()
            .ok_or_else(|| bad(name, "parameters_in_forward_order missing"))?;
        if order.len() != net.param_info().len() {
            return Err(bad(
                name,
                format!(
                    "{} parameter tensors, the network has {}",
                    order.len(),
                    net.param_info().len()
                ),
            ));
        }
        for (i, (p, pname)) in order.iter().zip(self.param_names()?).enumerate() {
            if let Some(shape) = p["shape"].as_array() {
                let shape = shape
                    .iter()
                    .map(|v| count(v, name, "a parameter shape"))
                    .collect::<Result<Vec<_>>>()?;
                if net.param_info()[i].reference_shape() != shape {
                    return Err(bad(
                        name,
                        format!("parameter {pname} has shape {shape:?} in the reference"),
                    ));
                }
            }
            if let Some(a) = self.tensors.get(&format!("param/{pname}")) {
                if a.len() != net.param_info()[i].len {
                    return Err(bad(name, format!("parameter {pname} has the wrong size")));
                }
                let flat: Vec<f64> = a.iter().copied().collect();
                net.set_param_reference(i, &flat);
            }
        }
        if let Some(n) = self.cfg["parameter_count"].as_u64()
            && n as usize != net.num_params()
        {
            return Err(bad(
                name,
                format!("{n} parameters in the reference, {} here", net.num_params()),
            ));
        }
        Ok(net)
    }
}

/// A reference tensor `[1, C, H, W]` in the engine's HWC layout.
pub fn to_hwc<T: Float>(a: &ArrayD<f64>) -> Result<Tensor<T>> {
    let s = a.shape();
    if s.len() != 4 || s[0] != 1 {
        return Err(Error::invalid(format!(
            "expected a [1, C, H, W] tensor, got {s:?}"
        )));
    }
    let (c, h, w) = (s[1], s[2], s[3]);
    let mut t = Tensor::zeros(h, w, c);
    for (i, &v) in a.iter().enumerate() {
        let (x, rest) = (i % w, i / w);
        let (y, ci) = (rest % h, rest / h);
        t.data[(y * w + x) * c + ci] = T::from_f64(v);
    }
    Ok(t)
}

/// Largest absolute difference relative to the largest reference value (or `floor`, if
/// larger; the plain difference where both are 0).
pub fn rel_err<T: Float>(ours: &[T], reference: &[f64], floor: f64) -> f64 {
    assert_eq!(
        ours.len(),
        reference.len(),
        "compared tensors differ in length"
    );
    let scale = reference
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(floor);
    let diff = ours
        .iter()
        .zip(reference)
        .fold(0.0f64, |m, (a, b)| m.max((a.to_f64() - b).abs()));
    if scale == 0.0 { diff } else { diff / scale }
}
