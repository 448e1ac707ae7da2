//! The DIP prior at initialisation, by Monte Carlo: draw networks (weights and input noise) at
//! random, run them forward, and measure the distribution of their outputs.
//!
//! Cheng et al. (2019) showed that as the channels grow, a convolutional network at
//! initialisation fed stationary noise outputs a stationary Gaussian process. This measures how
//! close a given network is: the mean, the covariance as a function of displacement (the
//! autocorrelation through the FFT, averaged over positions), the power spectrum, the
//! excess kurtosis of the marginal (0 for a Gaussian), and how much the covariance around the
//! corners and edges differs from the stationary estimate (padding breaks stationarity there).

use std::time::Instant;

use rayon::prelude::*;
use rustfft::num_complex::Complex64;
use serde::Serialize;

use super::grid::Grid;
use super::kernel::Kernel;
use crate::device::Device;
use crate::fit::{FitConfig, network_input};
use crate::nets::Arch;
use crate::{Error, Result};

/// Settings of a Monte Carlo prior.
#[derive(Debug, Clone, Copy)]
pub struct PriorConfig {
    /// Independent initialisations.
    pub samples: usize,
    /// Output side in pixels (square).
    pub size: usize,
    pub seed: u64,
    /// Largest displacement of the stored kernel (default: half the size).
    pub radius: Option<usize>,
    /// Half-width of the window of displacements compared around each anchor.
    pub anchor_radius: usize,
    /// Where the networks run (the statistics are computed on the host).
    pub device: Device,
}

impl Default for PriorConfig {
    fn default() -> Self {
        PriorConfig {
            samples: 256,
            size: 64,
            seed: 0,
            radius: None,
            anchor_radius: 3,
            device: Device::Cpu,
        }
    }
}

/// The covariance around one anchor pixel against the stationary estimate.
#[derive(Debug, Clone, Serialize)]
pub struct Anchor {
    pub name: String,
    pub x: usize,
    pub y: usize,
    /// `‖C_a − C‖ / ‖C‖` over the displacements of the window that stay inside the image.
    pub residual: f64,
    /// The Monte Carlo error of `C_a` on the same scale (from two halves of the samples): a
    /// residual near it is sampling noise, not non-stationarity.
    pub mc_floor: f64,
}

/// What the Monte Carlo prior measured.
#[derive(Debug, Clone, Serialize)]
pub struct PriorStats {
    pub arch: String,
    pub size: usize,
    pub samples: usize,
    pub channels: usize,
    /// Mean of all outputs.
    pub mean: f64,
    /// Variance of all outputs about that mean.
    pub variance: f64,
    /// Spatial standard deviation of the per-pixel mean (0 for a stationary mean).
    pub mean_map_std: f64,
    /// `E[g⁴] / E[g²]² − 3` of the centred outputs: 0 for a Gaussian.
    pub excess_kurtosis: f64,
    /// The stationary covariance estimate.
    pub kernel: Kernel,
    /// `(radial frequency in cycles/pixel, mean power E|F(g)|²/N)`, in rings of width 1/size.
    pub power: Vec<(f64, f64)>,
    pub anchors: Vec<Anchor>,
    pub seconds: f64,
}

/// Sample `i` of a prior drawn with `seed`: its network, initialised from the sample's seed,
/// with the fixed input a fit of that seed would give it.
fn sample_net(spec: &Arch, size: usize, seed: u64, i: usize) -> Result<crate::engine::Net<f32>> {
    let s = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(i as u64 + 1);
    let mut net = spec.build::<f32>(size, size, s)?;
    let cfg = FitConfig {
        seed: s,
        ..FitConfig::default()
    };
    let z = network_input(spec, &cfg, size, size);
    net.input_mut().data.copy_from_slice(&z);
    Ok(net)
}

/// [`draw_outputs`] on `device`: on a GPU, one network on the device takes each sample's
/// parameters and input (initialised on the host, as on the CPU) and runs its forward, so the
/// samples are the CPU's.
pub fn draw_outputs_on(
    spec: &Arch,
    size: usize,
    samples: usize,
    seed: u64,
    device: Device,
) -> Result<Vec<Vec<f32>>> {
    match device {
        Device::Cpu => draw_outputs(spec, size, samples, seed),
        #[cfg(feature = "cuda")]
        Device::Cuda(ordinal) => {
            draw_outputs_gpu(spec, size, samples, seed, PRIOR_LANES, &mut |net, lanes| {
                crate::cuda::GpuNet::with_lanes(net, ordinal, crate::cuda::Precision::F32, 0, lanes)
            })
        }
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(_) => Err(Error::invalid(crate::device::NO_CUDA_BUILD)),
    }
}

/// Samples the GPU draws at once, as lanes of one network (one forward launch sequence for
/// all).
#[cfg(feature = "cuda")]
pub const PRIOR_LANES: usize = 8;

/// Makes the GPU network of [`draw_outputs_gpu`] from a sample's network and a lane count.
#[cfg(feature = "cuda")]
pub type OpenPrior<'a> = dyn FnMut(
        &crate::engine::Net<f32>,
        usize,
    ) -> std::result::Result<crate::cuda::GpuNet, crate::cuda::GpuError>
    + 'a;

/// [`draw_outputs`] on the GPU network of up to `lanes` lanes that `open` makes from the first
/// sample's network (one lane if that many do not fit): the samples' networks are initialised
/// on the host in parallel, `lanes` at a time, and run forward together.
#[cfg(feature = "cuda")]
#[doc(hidden)]
pub fn draw_outputs_gpu(
    spec: &Arch,
    size: usize,
    samples: usize,
    seed: u64,
    lanes: usize,
    open: &mut OpenPrior<'_>,
) -> Result<Vec<Vec<f32>>> {
    check_prior(spec, size, samples)?;
    let gpu = |e: crate::cuda::GpuError| Error::invalid(e.0);
    let mut device_net: Option<crate::cuda::GpuNet> = None;
    let mut lanes = lanes.clamp(1, samples);
    let mut outs = Vec::with_capacity(samples);
    let mut start = 0;
    while start < samples {
        let n = match &device_net {
            Some(g) => g.lanes(),
            None => lanes,
        }
        .min(samples - start);
        let nets: Vec<crate::engine::Net<f32>> = (start..start + n)
            .into_par_iter()
            .map(|i| sample_net(spec, size, seed, i))
            .collect::<Result<_>>()?;
        let g = match &mut device_net {
            Some(g) => g,
            None => {
                let made = match open(&nets[0], lanes) {
                    Err(e) if lanes > 1 && e.0.contains("cannot allocate") => {
                        // Not enough device memory for that many: one at a time.
                        lanes = 1;
                        open(&nets[0], 1)
                    }
                    r => r,
                };
                device_net.insert(made.map_err(gpu)?)
            }
        };
        let n = n.min(g.lanes());
        for (lane, net) in nets.iter().take(n).enumerate() {
            g.select(lane).map_err(gpu)?;
            g.set_params(net.params()).map_err(gpu)?;
            g.set_input(net.input()).map_err(gpu)?;
        }
        g.forward().map_err(gpu)?;
        for lane in 0..n {
            g.select(lane).map_err(gpu)?;
            outs.push(g.output().map_err(gpu)?.data);
        }
        start += n;
    }
    Ok(outs)
}

fn check_prior(spec: &Arch, size: usize, samples: usize) -> Result<()> {
    let m = spec.size_multiple();
    if size == 0 || !size.is_multiple_of(m) || size < spec.min_side() {
        return Err(Error::invalid(format!(
            "the {} network needs a size that is a multiple of {m} and at least {}, not {size}",
            spec.label(),
            spec.min_side().max(m)
        )));
    }
    if samples == 0 {
        return Err(Error::invalid("the prior needs at least 1 sample"));
    }
    Ok(())
}

/// One network output per sample: `size × size × channels`, HWC.
pub fn draw_outputs(spec: &Arch, size: usize, samples: usize, seed: u64) -> Result<Vec<Vec<f32>>> {
    check_prior(spec, size, samples)?;
    (0..samples)
        .into_par_iter()
        .map(|i| -> Result<Vec<f32>> {
            Ok(sample_net(spec, size, seed, i)?.forward().data.clone())
        })
        .collect()
}

/// Samples per chunk of the partial sums: fixed, so that sums do not depend on the threads.
const CHUNK: usize = 8;

/// Measures the prior of `spec` (see the module documentation).
pub fn sample_prior(spec: &Arch, cfg: &PriorConfig) -> Result<PriorStats> {
    let started = Instant::now();
    let outs = draw_outputs_on(spec, cfg.size, cfg.samples, cfg.seed, cfg.device)?;
    let mut stats = measure_samples(
        &spec.label(),
        &outs,
        cfg.size,
        spec.out_channels(),
        cfg.radius,
        cfg.anchor_radius,
    )?;
    stats.seconds = started.elapsed().as_secs_f64();
    Ok(stats)
}

/// The statistics of [`sample_prior`] over given samples of a random field: `outs` holds
/// `size × size × channels` images (HWC). Any field can be measured this way, so the
/// stationarity measure (the anchors) can be checked on fields known to be stationary or not.
pub fn measure_samples(
    label: &str,
    outs: &[Vec<f32>],
    size: usize,
    channels: usize,
    radius: Option<usize>,
    anchor_radius: usize,
) -> Result<PriorStats> {
    let started = Instant::now();
    let s = size;
    if size < 2 || outs.is_empty() || outs.iter().any(|o| o.len() != s * s * channels) {
        return Err(crate::Error::invalid(format!(
            "samples must be non-empty {s}x{s}x{channels} images"
        )));
    }
    let ch = channels;
    let n = outs.len();
    let total = (n * s * s * ch) as f64;
    let mean = outs.iter().flatten().map(|&v| v as f64).sum::<f64>() / total;
    let (mut m2, mut m4) = (0.0, 0.0);
    for &v in outs.iter().flatten() {
        let g = v as f64 - mean;
        m2 += g * g;
        m4 += g * g * g * g;
    }
    let variance = m2 / total;
    let excess_kurtosis = (m4 / total) / (variance * variance) - 3.0;
    let mut mean_map = vec![0.0; s * s];
    for o in outs {
        for (p, m) in mean_map.iter_mut().enumerate() {
            for c in 0..ch {
                *m += o[p * ch + c] as f64;
            }
        }
    }
    mean_map.iter_mut().for_each(|m| *m /= (n * ch) as f64);
    let mm = mean_map.iter().sum::<f64>() / (s * s) as f64;
    let mean_map_std =
        (mean_map.iter().map(|m| (m - mm) * (m - mm)).sum::<f64>() / (s * s) as f64).sqrt();

    // Autocorrelation sums on a 2s × 2s grid (zero padding makes it linear, not circular) and
    // the periodogram on the s × s grid, in partial sums over fixed chunks of samples.
    let (s2, big) = (s * s, 4 * s * s);
    let partials: Vec<(Vec<f64>, Vec<f64>)> = outs
        .par_chunks(CHUNK)
        .map(|chunk| {
            let mut g2 = Grid::new(2 * s, 2 * s);
            let mut g1 = Grid::new(s, s);
            let (mut auto, mut power) = (vec![0.0; big], vec![0.0; s2]);
            let mut buf: Vec<Complex64> = vec![Complex64::new(0.0, 0.0); big];
            let mut small: Vec<Complex64> = vec![Complex64::new(0.0, 0.0); s2];
            for o in chunk {
                for c in 0..ch {
                    buf.iter_mut().for_each(|z| *z = Complex64::new(0.0, 0.0));
                    for y in 0..s {
                        for x in 0..s {
                            let v = o[(y * s + x) * ch + c] as f64 - mean;
                            buf[y * 2 * s + x] = Complex64::new(v, 0.0);
                            small[y * s + x] = Complex64::new(v, 0.0);
                        }
                    }
                    g2.forward(&mut buf);
                    g1.forward(&mut small);
                    for (a, z) in auto.iter_mut().zip(&buf) {
                        *a += z.norm_sqr();
                    }
                    for (p, z) in power.iter_mut().zip(&small) {
                        *p += z.norm_sqr() / s2 as f64;
                    }
                }
            }
            (auto, power)
        })
        .collect();
    let (mut auto, mut power) = (vec![0.0; big], vec![0.0; s2]);
    for (a, p) in &partials {
        auto.iter_mut().zip(a).for_each(|(x, y)| *x += y);
        power.iter_mut().zip(p).for_each(|(x, y)| *x += y);
    }
    let mut spec_buf: Vec<Complex64> = auto.iter().map(|&v| Complex64::new(v, 0.0)).collect();
    Grid::new(2 * s, 2 * s).inverse(&mut spec_buf);
    let radius = radius.unwrap_or(s / 2).clamp(1, s - 1);
    let side = 2 * radius + 1;
    let r = radius as isize;
    let mut cov = Vec::with_capacity(side * side);
    for dy in -r..=r {
        for dx in -r..=r {
            let y = dy.rem_euclid(2 * s as isize) as usize;
            let x = dx.rem_euclid(2 * s as isize) as usize;
            let pairs = (s - dy.unsigned_abs()) * (s - dx.unsigned_abs()) * n * ch;
            cov.push(spec_buf[y * 2 * s + x].re / pairs as f64);
        }
    }
    let kernel = Kernel::new(format!("dip:{label}"), radius, cov)?;

    // Radial power in rings of width 1/s.
    let radial = crate::spectral::radial_frequencies(s, s);
    let rings = s; // up to √2/2 · s rings hold bins
    let (mut psum, mut pcount) = (vec![0.0; rings], vec![0usize; rings]);
    for (p, &f) in power.iter().zip(&radial) {
        let k = (f * s as f64).round() as usize;
        if k < rings {
            psum[k] += p / (n * ch) as f64;
            pcount[k] += 1;
        }
    }
    let power: Vec<(f64, f64)> = psum
        .iter()
        .zip(&pcount)
        .enumerate()
        .filter(|(_, (_, c))| **c > 0)
        .map(|(k, (p, c))| (k as f64 / s as f64, p / *c as f64))
        .collect();

    let anchors = anchors(outs, s, ch, mean, &kernel, anchor_radius);
    Ok(PriorStats {
        arch: label.to_string(),
        size: s,
        samples: n,
        channels: ch,
        mean,
        variance,
        mean_map_std,
        excess_kurtosis,
        kernel,
        power,
        anchors,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The anchors: centre, four corners and four edge midpoints.
fn anchor_points(s: usize) -> Vec<(&'static str, usize, usize)> {
    let (m, e) = (s / 2, s - 1);
    vec![
        ("centre", m, m),
        ("corner top-left", 0, 0),
        ("corner top-right", e, 0),
        ("corner bottom-left", 0, e),
        ("corner bottom-right", e, e),
        ("edge top", m, 0),
        ("edge bottom", m, e),
        ("edge left", 0, m),
        ("edge right", e, m),
    ]
}

fn anchors(
    outs: &[Vec<f32>],
    s: usize,
    ch: usize,
    mean: f64,
    kernel: &Kernel,
    ra: usize,
) -> Vec<Anchor> {
    let half = outs.len() / 2;
    let ra = ra.min(kernel.radius) as isize;
    anchor_points(s)
        .into_iter()
        .map(|(name, ax, ay)| {
            let mut disp = Vec::new();
            for dy in -ra..=ra {
                for dx in -ra..=ra {
                    let (x, y) = (ax as isize + dx, ay as isize + dy);
                    if x >= 0 && y >= 0 && (x as usize) < s && (y as usize) < s {
                        disp.push((dy, dx, y as usize * s + x as usize));
                    }
                }
            }
            let a = ay * s + ax;
            let est = |set: &[Vec<f32>]| -> Vec<f64> {
                let mut acc = vec![0.0; disp.len()];
                for o in set {
                    for c in 0..ch {
                        let ga = o[a * ch + c] as f64 - mean;
                        for (v, &(_, _, p)) in acc.iter_mut().zip(&disp) {
                            *v += ga * (o[p * ch + c] as f64 - mean);
                        }
                    }
                }
                let k = (set.len() * ch).max(1) as f64;
                acc.iter().map(|v| v / k).collect()
            };
            let (h1, h2) = (est(&outs[..half]), est(&outs[half..]));
            let (w1, w2) = (half as f64, (outs.len() - half) as f64);
            let full: Vec<f64> = h1
                .iter()
                .zip(&h2)
                .map(|(a, b)| (w1 * a + w2 * b) / (w1 + w2))
                .collect();
            let stat: Vec<f64> = disp.iter().map(|&(dy, dx, _)| kernel.at(dy, dx)).collect();
            let norm = stat.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-300);
            let residual = full
                .iter()
                .zip(&stat)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f64>()
                .sqrt()
                / norm;
            let mc_floor = if half > 0 {
                h1.iter()
                    .zip(&h2)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f64>()
                    .sqrt()
                    / 2.0
                    / norm
            } else {
                f64::NAN
            };
            Anchor {
                name: name.to_string(),
                x: ax,
                y: ay,
                residual,
                mc_floor,
            }
        })
        .collect()
}
