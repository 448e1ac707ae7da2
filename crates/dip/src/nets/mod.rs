//! Network architectures built on the engine.
//!
//! [`Arch`] is the one type the fit loop and the tools take: the DIP skip encoder-decoder and the
//! architectures the spectral-bias study compares it with (DIP-Linear, a coordinate MLP, the deep
//! decoder and a two-layer convolutional generator).

mod convgen2;
mod decoder;
mod linear;
mod relunet;
mod skip;

use serde::{Deserialize, Serialize};

pub use convgen2::ConvGen2Spec;
pub use decoder::DecoderSpec;
pub use linear::LinearSpec;
pub use relunet::ReluNetSpec;
pub use skip::SkipSpec;

use crate::engine::{Float, Net, NetBuilder};
use crate::{Error, Result};

/// How a network doubles its resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Upsampler {
    Nearest,
    /// Bilinear, PyTorch's `align_corners=false` (the reference).
    #[default]
    Bilinear,
    /// A learned transposed convolution: zero insertion, then a 3×3 convolution with as many
    /// output channels as inputs (PyTorch `ConvTranspose2d(k=3, stride=2, padding=1,
    /// output_padding=1)` up to the flip of its kernel, which learning makes irrelevant).
    Transposed,
    /// Shi et al.'s Gaussian-controlled upsampling: a fixed depthwise transposed convolution
    /// with a Gaussian kernel (σ per layer), normalised so that a constant image keeps its value
    /// on average.
    Gaussian,
}

impl std::fmt::Display for Upsampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Upsampler::Nearest => "nearest",
            Upsampler::Bilinear => "bilinear",
            Upsampler::Transposed => "transposed",
            Upsampler::Gaussian => "gaussian",
        })
    }
}

/// Adds a ×2 upsampling of `x` to `b`. `sigma` is the Gaussian's width in output pixels.
pub(crate) fn upsample2<T: Float>(
    b: &mut NetBuilder<T>,
    x: usize,
    mode: Upsampler,
    sigma: f64,
    pad: crate::engine::PadMode,
    name: &str,
) -> usize {
    use crate::engine::{FilterPad, PadMode, UpsampleMode};
    match mode {
        Upsampler::Nearest => b.upsample(x, 2, UpsampleMode::Nearest),
        Upsampler::Bilinear => b.upsample(x, 2, UpsampleMode::Bilinear),
        Upsampler::Transposed => {
            let c = b.shape(x).2;
            let z = b.upsample(x, 2, UpsampleMode::Zeros);
            b.conv(z, c, 3, 1, pad, true, &format!("{name}.tconv"))
        }
        Upsampler::Gaussian => {
            let (kernel, k) = gaussian_kernel(sigma, 4.0);
            let fp = match pad {
                PadMode::Zero => FilterPad::Zero,
                PadMode::Reflection => FilterPad::Reflection,
            };
            b.fixed_filter(x, &kernel, k, 2, fp)
        }
    }
}

/// A `k × k` Gaussian of std `sigma` (k = 2·⌈3σ⌉ + 1, at least 3), scaled to sum to `total`.
pub fn gaussian_kernel(sigma: f64, total: f64) -> (Vec<f64>, usize) {
    let r = ((3.0 * sigma).ceil() as usize).max(1);
    let k = 2 * r + 1;
    let g: Vec<f64> = (0..k)
        .map(|i| {
            let d = i as f64 - r as f64;
            (-d * d / (2.0 * sigma * sigma)).exp()
        })
        .collect();
    let mut kernel: Vec<f64> = (0..k * k).map(|i| g[i / k] * g[i % k]).collect();
    let s: f64 = kernel.iter().sum();
    kernel.iter_mut().for_each(|v| *v *= total / s);
    (kernel, k)
}

/// What the network takes as its fixed input `z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetInput {
    /// Whatever `FitConfig::input` says (noise or meshgrid) at the network's input shape.
    Configured,
    /// The architecture computes its own input (coordinates, Fourier features, or none).
    Own,
}

/// A network architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "arch", rename_all = "lowercase")]
pub enum Arch {
    /// The DIP encoder-decoder with skip connections.
    Skip(SkipSpec),
    /// DIP-Linear: the skip network's layer pattern with fully connected layers.
    Linear(LinearSpec),
    /// A coordinate MLP.
    Relunet(ReluNetSpec),
    /// The deep decoder (Heckel & Hand).
    Decoder(DecoderSpec),
    /// The two-layer convolutional generator of Heckel & Soltanolkotabi.
    Convgen2(ConvGen2Spec),
}

impl From<SkipSpec> for Arch {
    fn from(s: SkipSpec) -> Self {
        Arch::Skip(s)
    }
}

impl From<&SkipSpec> for Arch {
    fn from(s: &SkipSpec) -> Self {
        Arch::Skip(s.clone())
    }
}

impl From<&Arch> for Arch {
    fn from(a: &Arch) -> Self {
        a.clone()
    }
}

/// The architecture names [`Arch::named`] knows.
pub const ARCH_NAMES: &[&str] = &["skip", "linear", "relunet", "decoder", "convgen2"];

impl Arch {
    /// An architecture by name with its defaults, `width` overriding its width (linear units,
    /// MLP units, decoder or generator channels; ignored by `skip`). A name may carry the width:
    /// `linear-2048`, `decoder-64`.
    pub fn named(
        name: &str,
        in_channels: usize,
        out_channels: usize,
        width: Option<usize>,
    ) -> Result<Arch> {
        let (base, w) = match name.rsplit_once('-') {
            Some((b, n)) if n.chars().all(|c| c.is_ascii_digit()) && !n.is_empty() => {
                let n: usize = n
                    .parse()
                    .map_err(|_| Error::invalid(format!("bad width in '{name}'")))?;
                (b, Some(n))
            }
            _ => (name, None),
        };
        let width = width.or(w);
        if width == Some(0) {
            return Err(Error::invalid(format!(
                "{name}: the width must be at least 1"
            )));
        }
        Ok(match base {
            "skip" => Arch::Skip(SkipSpec::standard(in_channels, out_channels)),
            // The input is noise with as many channels as the image, as the paper's code.
            "linear" => Arch::Linear(LinearSpec::new(
                out_channels,
                out_channels,
                width.unwrap_or(128),
            )),
            "relunet" => {
                let mut s = ReluNetSpec::new(out_channels);
                if let Some(w) = width {
                    s.width = w;
                }
                Arch::Relunet(s)
            }
            "decoder" => Arch::Decoder(DecoderSpec::new(out_channels, width.unwrap_or(128))),
            "convgen2" => Arch::Convgen2(ConvGen2Spec::new(out_channels, width.unwrap_or(64))),
            _ => {
                return Err(Error::invalid(format!(
                    "unknown architecture '{name}'; the architectures are: {}",
                    ARCH_NAMES.join(", ")
                )));
            }
        })
    }

    /// A short name with the width where it matters: `skip`, `linear-2048`, `decoder-64`.
    pub fn label(&self) -> String {
        match self {
            Arch::Skip(_) => "skip".into(),
            Arch::Linear(s) => format!("linear-{}", s.width),
            Arch::Relunet(s) if s.fourier_features > 0 => {
                format!("relunet-{}-ff{}", s.width, s.fourier_features)
            }
            Arch::Relunet(s) => format!("relunet-{}", s.width),
            Arch::Decoder(s) => format!("decoder-{}", s.channels),
            Arch::Convgen2(s) => format!("convgen2-{}", s.channels),
        }
    }

    pub fn out_channels(&self) -> usize {
        match self {
            Arch::Skip(s) => s.out_channels,
            Arch::Linear(s) => s.out_channels,
            Arch::Relunet(s) => s.out_channels,
            Arch::Decoder(s) => s.out_channels,
            Arch::Convgen2(s) => s.out_channels,
        }
    }

    /// Channels of the network input for an image of `h × w`.
    pub fn input_shape(&self, h: usize, w: usize) -> (usize, usize, usize) {
        match self {
            Arch::Skip(s) => (h, w, s.in_channels),
            Arch::Linear(s) => (h, w, s.in_channels),
            Arch::Relunet(s) => (h, w, s.input_channels()),
            Arch::Decoder(s) => s.input_shape(h, w),
            Arch::Convgen2(_) => (1, 1, 1),
        }
    }

    /// Who makes the network input.
    pub fn input_kind(&self) -> NetInput {
        match self {
            Arch::Skip(_) | Arch::Linear(_) | Arch::Decoder(_) => NetInput::Configured,
            Arch::Relunet(_) | Arch::Convgen2(_) => NetInput::Own,
        }
    }

    /// The input of an architecture that makes its own ([`NetInput::Own`]); `None` otherwise.
    pub fn own_input(&self, h: usize, w: usize, seed: u64) -> Option<Vec<f32>> {
        match self {
            Arch::Relunet(s) => Some(s.input(h, w, seed)),
            Arch::Convgen2(_) => Some(vec![0.0]),
            _ => None,
        }
    }

    /// Image sides must be multiples of this.
    pub fn size_multiple(&self) -> usize {
        match self {
            Arch::Skip(s) => s.size_multiple(),
            Arch::Decoder(s) => s.size_multiple(),
            Arch::Linear(_) | Arch::Relunet(_) | Arch::Convgen2(_) => 1,
        }
    }

    /// The smallest side the network accepts.
    pub fn min_side(&self) -> usize {
        match self {
            Arch::Skip(s) => s.min_side(),
            Arch::Decoder(s) => s.size_multiple(),
            Arch::Linear(_) | Arch::Relunet(_) | Arch::Convgen2(_) => 1,
        }
    }

    /// The builder of the network for an `h × w` image, before any buffer is allocated.
    pub fn builder<T: Float>(&self, h: usize, w: usize) -> Result<Built<T>> {
        match self {
            Arch::Skip(s) => s.builder(h, w),
            Arch::Linear(s) => s.builder(h, w),
            Arch::Relunet(s) => s.builder(h, w),
            Arch::Decoder(s) => s.builder(h, w),
            Arch::Convgen2(s) => s.builder(h, w),
        }
    }

    /// Builds the network for an `h × w` image with parameters drawn from `seed`.
    pub fn build<T: Float>(&self, h: usize, w: usize, seed: u64) -> Result<Net<T>> {
        let (b, out) = self.builder::<T>(h, w)?;
        Ok(b.build(out, seed, false))
    }

    /// Bytes the network's buffers (activations, gradients, parameters, Adam state) take for an
    /// `h × w` image, computed without allocating them.
    pub fn estimate_bytes(&self, h: usize, w: usize) -> Result<usize> {
        let (mut b, out) = self.builder::<f32>(h, w)?;
        Ok(b.estimate_bytes(out))
    }
}

/// A builder and its output activation.
pub type Built<T> = (NetBuilder<T>, usize);
