//! The entry point of a fit: checks, builds the network, and runs the loop
//! ([`super::driver`]) on the backend the device asks for.

use super::observer::Observer;
use super::run::{FitConfig, FitReport, setup};
use crate::device::Device;
#[cfg(feature = "cuda")]
use crate::engine::Precision;
use crate::image::Image;
use crate::nets::Arch;
use crate::operators::{Identity, Operator};
use crate::{Error, Result};

/// Denoise `noisy` with the Deep Image Prior: [`fit`] with the identity operator.
pub fn fit_denoise(
    noisy: &Image,
    clean: Option<&Image>,
    spec: impl Into<Arch>,
    cfg: &FitConfig,
    observers: &mut [&mut dyn Observer],
) -> Result<FitReport> {
    let identity = Identity::new(noisy.width, noisy.height, noisy.channels);
    fit(noisy, &identity, clean, spec, cfg, observers)
}

/// Solve the inverse problem `observation = A(x) + noise` with the Deep Image Prior: fit the
/// network so that `A(f_θ(z))` matches the observation, and return `f_θ(z)`.
///
/// The restored image has the operator's input shape; `clean`, when given, must have that shape
/// and is used only for reporting PSNR. The network works on that shape padded by reflection to
/// the size it needs; the padding is cropped before `A`, so it carries no observation, and the
/// returned images are cropped back.
pub fn fit(
    observation: &Image,
    operator: &dyn Operator,
    clean: Option<&Image>,
    spec: impl Into<Arch>,
    cfg: &FitConfig,
    observers: &mut [&mut dyn Observer],
) -> Result<FitReport> {
    // The loop runs on a pool thread: parallel work spawned from there goes to the thread's own
    // queue instead of rayon's global one, which is cheaper and allocates nothing.
    let spec = spec.into();
    match cfg.device {
        Device::Cpu => {
            rayon::scope(|_| fit_on_pool(observation, operator, clean, &spec, cfg, observers))
        }
        #[cfg(feature = "cuda")]
        Device::Cuda(ordinal) => {
            // A lane of the batch the fit joins, or a network of its own.
            let precision = cuda_precision(cfg.precision);
            let gpu = |e: crate::cuda::GpuError| Error::invalid(e.0);
            super::gpu::fit_on_device(
                observation,
                operator,
                clean,
                &spec,
                cfg,
                observers,
                &mut |net, room, step| match &cfg.lanes {
                    Some(pool) => pool.open(net, room, precision, step),
                    None => Ok(Box::new(
                        crate::cuda::GpuNet::with_room(net, ordinal, precision, room)
                            .map_err(gpu)?,
                    )),
                },
            )
        }
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(_) => Err(Error::invalid(crate::device::NO_CUDA_BUILD)),
    }
}

#[cfg(feature = "cuda")]
fn cuda_precision(p: Precision) -> crate::cuda::Precision {
    match p {
        Precision::F32 => crate::cuda::Precision::F32,
        Precision::Bf16 => crate::cuda::Precision::Bf16,
    }
}

fn fit_on_pool(
    observation: &Image,
    operator: &dyn Operator,
    clean: Option<&Image>,
    spec: &Arch,
    cfg: &FitConfig,
    observers: &mut [&mut dyn Observer],
) -> Result<FitReport> {
    let s = setup(observation, operator, clean, spec, cfg)?;
    let grid = s.grid;
    let mut cpu = super::cpu::Cpu::new(cfg, observation, operator, grid, s.net, s.z);
    let inputs = super::driver::Inputs {
        observation,
        operator,
        clean,
        spec,
        cfg,
    };
    super::driver::drive(&mut cpu, inputs, grid, s.started, observers)
}
