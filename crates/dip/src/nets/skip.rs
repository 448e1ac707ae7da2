//! The DIP "skip" encoder-decoder (Ulyanov et al.), with every knob of the reference builder.

use serde::{Deserialize, Serialize};

use super::{Built, Upsampler, upsample2};
use crate::engine::{Float, Net, NetBuilder, PadMode};
use crate::{Error, Result};

/// Architecture of a skip network. Per-scale lists must all have `scales()` entries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkipSpec {
    pub in_channels: usize,
    pub out_channels: usize,
    /// Channels of the two downsampling convolutions of each scale.
    pub down: Vec<usize>,
    /// Channels of the merge convolutions of each scale.
    pub up: Vec<usize>,
    /// Channels of the skip branch of each scale (0: no skip at that scale).
    pub skip: Vec<usize>,
    /// Kernel sizes of the down and up convolutions of each scale.
    pub kernel_down: Vec<usize>,
    pub kernel_up: Vec<usize>,
    /// Kernel size of the skip convolutions.
    pub kernel_skip: usize,
    pub pad: PadMode,
    pub upsample: Upsampler,
    /// Width (std, in output pixels) of the Gaussian of each scale's upsampling when `upsample`
    /// is `gaussian`: one value for every scale, or one per scale.
    #[serde(default = "default_sigma")]
    pub gaussian_sigma: Vec<f64>,
    /// A 1×1 conv + BN + LeakyReLU after the merge convolution of each scale.
    pub need_1x1_up: bool,
    pub need_sigmoid: bool,
    pub need_bias: bool,
}

fn default_sigma() -> Vec<f64> {
    vec![1.0]
}

impl SkipSpec {
    /// The standard denoising network of the DIP paper: 5 scales of 128 channels, skip 4,
    /// reflection padding, bilinear upsampling (2,217,831 parameters for 32 → 3 channels).
    pub fn standard(in_channels: usize, out_channels: usize) -> Self {
        Self::uniform(in_channels, out_channels, 5, 128, 4)
    }

    /// `scales` scales of `channels` channels down and up, `skip` skip channels, 3×3 kernels.
    pub fn uniform(
        in_channels: usize,
        out_channels: usize,
        scales: usize,
        channels: usize,
        skip: usize,
    ) -> Self {
        SkipSpec {
            in_channels,
            out_channels,
            down: vec![channels; scales],
            up: vec![channels; scales],
            skip: vec![skip; scales],
            kernel_down: vec![3; scales],
            kernel_up: vec![3; scales],
            kernel_skip: 1,
            pad: PadMode::Reflection,
            upsample: Upsampler::Bilinear,
            gaussian_sigma: default_sigma(),
            need_1x1_up: true,
            need_sigmoid: true,
            need_bias: true,
        }
    }

    /// Number of scales.
    pub fn scales(&self) -> usize {
        self.down.len()
    }

    /// Image sides must be multiples of this.
    pub fn size_multiple(&self) -> usize {
        1 << self.scales()
    }
}

impl SkipSpec {
    /// Checks the per-scale lists and that an `h × w` input fits: sides divisible by
    /// 2^scales, and the coarsest scale large enough for its padding.
    pub fn validate(&self, h: usize, w: usize) -> Result<()> {
        let n = self.scales();
        if n == 0 {
            return Err(Error::invalid("a skip network needs at least one scale"));
        }
        for (name, len) in [
            ("up", self.up.len()),
            ("skip", self.skip.len()),
            ("kernel_down", self.kernel_down.len()),
            ("kernel_up", self.kernel_up.len()),
        ] {
            if len != n {
                return Err(Error::invalid(format!(
                    "skip network: `{name}` has {len} entries, `down` has {n}"
                )));
            }
        }
        if self.in_channels == 0
            || self.out_channels == 0
            || self.down.contains(&0)
            || self.up.contains(&0)
        {
            return Err(Error::invalid(
                "skip network: channel counts must be positive",
            ));
        }
        let kernels = self
            .kernel_down
            .iter()
            .chain(&self.kernel_up)
            .chain(std::iter::once(&self.kernel_skip));
        if let Some(k) = kernels.clone().find(|&&k| k % 2 == 0) {
            return Err(Error::invalid(format!(
                "skip network: kernel sizes must be odd, got {k}"
            )));
        }
        let g = &self.gaussian_sigma;
        if g.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(Error::invalid(
                "skip network: gaussian_sigma values must be positive",
            ));
        }
        if g.len() > 1 && g.len() != n {
            return Err(Error::invalid(format!(
                "skip network: `gaussian_sigma` has {} entries, `down` has {n}",
                g.len()
            )));
        }
        let m = self.size_multiple();
        if !h.is_multiple_of(m) || !w.is_multiple_of(m) {
            return Err(Error::invalid(format!(
                "skip network with {n} scales needs sides divisible by {m}, got {w}x{h}"
            )));
        }
        let min = self.min_side();
        if h < min || w < min {
            return Err(Error::invalid(format!(
                "skip network with {n} scales needs sides of at least {min} pixels, got {w}x{h}"
            )));
        }
        Ok(())
    }

    /// The smallest side the network accepts: the coarsest scale must be larger than the padding
    /// of its kernels (reflection padding cannot mirror more pixels than there are).
    pub fn min_side(&self) -> usize {
        let pad = self
            .kernel_down
            .iter()
            .chain(&self.kernel_up)
            .map(|k| (k - 1) / 2)
            .max()
            .unwrap_or(0);
        let coarsest = match self.pad {
            PadMode::Reflection => pad + 1,
            PadMode::Zero => 1,
        };
        self.size_multiple() * coarsest
    }

    /// Builds the network for an `h × w` input with parameters drawn from `seed`.
    pub fn build<T: Float>(&self, h: usize, w: usize, seed: u64) -> Result<Net<T>> {
        let (b, out) = self.builder(h, w)?;
        Ok(b.build(out, seed, false))
    }

    /// The network's builder for an `h × w` input and its output activation.
    pub fn builder<T: Float>(&self, h: usize, w: usize) -> Result<Built<T>> {
        self.validate(h, w)?;
        let mut b = NetBuilder::new(h, w, self.in_channels);
        let x = b.input();
        let top = self.build_scale(&mut b, x, 0);
        let mut out = b.conv(
            top,
            self.out_channels,
            1,
            1,
            self.pad,
            self.need_bias,
            "out.conv",
        );
        if self.need_sigmoid {
            out = b.sigmoid(out);
        }
        Ok((b, out))
    }

    /// The Gaussian upsampling width at scale `i`.
    fn sigma(&self, i: usize) -> f64 {
        match self.gaussian_sigma.as_slice() {
            [] => 1.0,
            [s] => *s,
            list => list[i.min(list.len() - 1)],
        }
    }

    /// One scale, in the reference's module order so that the parameters come out in its
    /// registration order: skip branch, deeper branch (with the next scale inside), merge.
    fn build_scale<T: Float>(&self, b: &mut NetBuilder<T>, x: usize, i: usize) -> usize {
        const SLOPE: Option<f64> = Some(0.2);
        let (pad, bias) = (self.pad, self.need_bias);
        let name = |part: &str| format!("s{i}.{part}");
        let skip = (self.skip[i] > 0).then(|| {
            let s = b.conv(
                x,
                self.skip[i],
                self.kernel_skip,
                1,
                pad,
                bias,
                &name("skip.conv"),
            );
            b.batchnorm(s, SLOPE, &name("skip.bn"))
        });
        let mut d = b.conv(
            x,
            self.down[i],
            self.kernel_down[i],
            2,
            pad,
            bias,
            &name("down.conv1"),
        );
        d = b.batchnorm(d, SLOPE, &name("down.bn1"));
        d = b.conv(
            d,
            self.down[i],
            self.kernel_down[i],
            1,
            pad,
            bias,
            &name("down.conv2"),
        );
        d = b.batchnorm(d, SLOPE, &name("down.bn2"));
        if i + 1 < self.scales() {
            d = self.build_scale(b, d, i + 1);
        }
        let up = upsample2(b, d, self.upsample, self.sigma(i), pad, &name("up"));
        let merged = match skip {
            Some(s) => b.concat(&[s, up]),
            None => up,
        };
        let mut m = b.batchnorm(merged, None, &name("merge.bn"));
        m = b.conv(
            m,
            self.up[i],
            self.kernel_up[i],
            1,
            pad,
            bias,
            &name("up.conv"),
        );
        m = b.batchnorm(m, SLOPE, &name("up.bn"));
        if self.need_1x1_up {
            m = b.conv(m, self.up[i], 1, 1, pad, bias, &name("up.conv1x1"));
            m = b.batchnorm(m, SLOPE, &name("up.bn1x1"));
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_network_has_the_reference_parameter_count() {
        let net = SkipSpec::standard(32, 3).build::<f32>(64, 64, 0).unwrap();
        assert_eq!(net.num_params(), 2_217_831);
    }

    #[test]
    fn rejects_sizes_the_network_cannot_take() {
        let spec = SkipSpec::standard(32, 3);
        assert!(spec.validate(96, 64).is_ok());
        assert!(spec.validate(48, 64).is_err(), "not divisible by 32");
        assert!(
            spec.validate(32, 64).is_err(),
            "coarsest scale 1 px cannot be reflection-padded"
        );
    }
}
