//! Where a fit runs: the CPU (the default) or an NVIDIA GPU (`cuda`, `cuda:N`).
//!
//! Parsing is always available, so that a build without the `cuda` feature can say clearly that
//! it cannot run on a GPU.

use std::fmt;
use std::str::FromStr;

/// A compute device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    /// A CUDA device by ordinal.
    Cuda(usize),
}

impl FromStr for Device {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("cpu") {
            return Ok(Device::Cpu);
        }
        let lower = s.to_ascii_lowercase();
        if lower == "cuda" || lower == "gpu" {
            return Ok(Device::Cuda(0));
        }
        if let Some(n) = lower.strip_prefix("cuda:") {
            return n
                .parse()
                .map(Device::Cuda)
                .map_err(|_| format!("bad CUDA device ordinal {n:?} in {s:?} (expected cuda:N)"));
        }
        Err(format!(
            "unknown device {s:?} (expected cpu, cuda or cuda:N)"
        ))
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Whether this build has the GPU backend (the `cuda` feature).
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

/// The message for `--device cuda` in a build without the GPU backend.
pub const NO_CUDA_BUILD: &str =
    "this dip was built without CUDA support (rebuild with --features cuda)";

impl Device {
    /// Checks that this build can use the device at all (not that the device exists).
    pub fn check_built(self) -> Result<Self, String> {
        match self {
            Device::Cuda(_) if !CUDA_BUILT => Err(NO_CUDA_BUILD.to_string()),
            d => Ok(d),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!("cpu".parse::<Device>(), Ok(Device::Cpu));
        assert_eq!("cuda".parse::<Device>(), Ok(Device::Cuda(0)));
        assert_eq!("CUDA:3".parse::<Device>(), Ok(Device::Cuda(3)));
        assert!("cuda:x".parse::<Device>().is_err());
        assert!("tpu".parse::<Device>().is_err());
        assert_eq!(Device::Cuda(2).to_string(), "cuda:2");
    }

    #[test]
    fn build_check_matches_the_feature() {
        assert_eq!(Device::Cpu.check_built(), Ok(Device::Cpu));
        let r = Device::Cuda(0).check_built();
        if CUDA_BUILT {
            assert_eq!(r, Ok(Device::Cuda(0)));
        } else {
            assert_eq!(r, Err(NO_CUDA_BUILD.to_string()));
        }
    }
}
