//! What is being restored: an observation, the operator that made it, what is known of its
//! noise, and the clean image when there is one ([`Problem`]); and how to make a problem from a
//! clean image for experiments ([`Degradation`]).

use crate::image::{self, Image};
use crate::operators::{
    Blur, Downsample, HARMONIC_ROUNDS, Identity, Mask, Operator, Psf, Radon, bicubic_upscale,
    harmonic_fill, noise_models,
};
use crate::{Error, Result};

/// The kind of a problem: which classical baseline it has, and which stopping rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskKind {
    Denoise,
    Inpaint,
    SuperResolve,
    Deblur,
    /// Parallel-beam CT: a sinogram of a gray image.
    Ct,
    /// Any other operator.
    Custom,
}

impl TaskKind {
    /// The command's name: `denoise`, `inpaint`, `sr`, `deblur` or `restore`.
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Denoise => "denoise",
            TaskKind::Inpaint => "inpaint",
            TaskKind::SuperResolve => "sr",
            TaskKind::Deblur => "deblur",
            TaskKind::Ct => "ct",
            TaskKind::Custom => "restore",
        }
    }
}

/// What is known of the observation's noise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NoiseModel {
    /// White Gaussian noise of this standard deviation (0–1 scale), or of a level estimated from
    /// the observation when `None`.
    Gaussian { sigma: Option<f64> },
    /// No noise: the observation is exact where it is measured (a mask's known pixels). `auto`
    /// then runs until the fit stops improving instead of reading a noise level.
    NoiseFree,
}

/// The classical result a restoration is compared with.
#[derive(Debug, Clone)]
enum Baseline {
    None,
    /// The harmonic fill of the unknown pixels.
    Fill(Mask),
    /// Bicubic upscaling by this factor.
    Bicubic(usize),
    /// Filtered back projection.
    Fbp(Radon),
    /// Least squares, `argmin ‖A x − y‖²` by this many conjugate-gradient (CGLS) steps.
    LeastSquares(usize),
}

/// One inverse problem: find `x` with `A x ≈ observation`.
pub struct Problem {
    pub kind: TaskKind,
    pub observation: Image,
    pub operator: Box<dyn Operator>,
    pub noise: NoiseModel,
    /// The clean image, when known: only used to measure the result.
    pub clean: Option<Image>,
    baseline: Baseline,
}

impl std::fmt::Debug for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Problem")
            .field("kind", &self.kind)
            .field("operator", &self.operator.name())
            .field("noise", &self.noise)
            .field("size", &self.operator.input_shape())
            .finish()
    }
}

impl Problem {
    /// Parallel-beam CT: `sinogram` is `n` detector bins (rows) by `angles.len()` views
    /// (columns), one channel, scikit-image's layout; the result is `n × n`. The baseline is
    /// filtered back projection (Ram-Lak ramp).
    pub fn ct(sinogram: Image, angles: &[f64]) -> Result<Problem> {
        if sinogram.channels != 1 || sinogram.width != angles.len() {
            return Err(Error::invalid(format!(
                "the sinogram is {} bins x {} views with {} channel(s), but there are {} angles: \
                 it must be one channel, one column per angle",
                sinogram.height,
                sinogram.width,
                sinogram.channels,
                angles.len()
            )));
        }
        let radon = Radon::new(sinogram.height, angles)?;
        Ok(Problem {
            kind: TaskKind::Ct,
            observation: sinogram,
            operator: Box::new(radon.clone()),
            noise: NoiseModel::Gaussian { sigma: None },
            clean: None,
            baseline: Baseline::Fbp(radon),
        })
    }

    /// The same problem with least squares (`steps` of CGLS from zero) as its classical
    /// baseline, for an operator with none of its own.
    pub fn with_least_squares_baseline(mut self, steps: usize) -> Problem {
        self.baseline = Baseline::LeastSquares(steps);
        self
    }

    /// Any operator: `observation` must have its output shape.
    pub fn new(observation: Image, operator: Box<dyn Operator>) -> Result<Problem> {
        let want = operator.output_shape();
        let got = (observation.width, observation.height, observation.channels);
        if got != want {
            return Err(Error::invalid(format!(
                "the observation is {}x{} with {} channel(s), but {} makes {}x{} with {}",
                got.0,
                got.1,
                got.2,
                operator.name(),
                want.0,
                want.1,
                want.2
            )));
        }
        Ok(Problem {
            kind: TaskKind::Custom,
            observation,
            operator,
            noise: NoiseModel::Gaussian { sigma: None },
            clean: None,
            baseline: Baseline::None,
        })
    }

    /// Denoising: the operator is the identity; the noise level is estimated unless given.
    pub fn denoise(noisy: Image) -> Problem {
        let op = Identity::new(noisy.width, noisy.height, noisy.channels);
        Problem {
            kind: TaskKind::Denoise,
            observation: noisy,
            operator: Box::new(op),
            noise: NoiseModel::Gaussian { sigma: None },
            clean: None,
            baseline: Baseline::None,
        }
    }

    /// Inpainting: `mask` (one channel, or the image's) marks the known pixels; the values of
    /// the others are ignored. Noise-free unless a noise level is given.
    pub fn inpaint(observation: Image, mask: Mask) -> Result<Problem> {
        if (mask.width(), mask.height()) != (observation.width, observation.height) {
            return Err(Error::invalid(format!(
                "the mask is {}x{} but the image is {}x{}",
                mask.width(),
                mask.height(),
                observation.width,
                observation.height
            )));
        }
        if mask.known().iter().all(|k| !k) {
            return Err(Error::invalid(
                "the mask has no known pixel (all black), so there is nothing to fit",
            ));
        }
        let mask = mask.with_channels(observation.channels);
        // Unknown pixels hold whatever the file held: the fit never sees them.
        let observation = mask.apply(&observation)?;
        Ok(Problem {
            kind: TaskKind::Inpaint,
            observation,
            operator: Box::new(mask.clone()),
            noise: NoiseModel::NoiseFree,
            clean: None,
            baseline: Baseline::Fill(mask),
        })
    }

    /// Super-resolution by `factor` (even, 2–16) under the reference Lanczos-2 downsampler.
    pub fn super_resolve(lowres: Image, factor: usize) -> Result<Problem> {
        if !(2..=16).contains(&factor) || !factor.is_multiple_of(2) {
            return Err(Error::invalid(format!(
                "the factor must be 2, 4 or 8 (any even factor up to 16), not {factor}"
            )));
        }
        let (w, h, c) = (lowres.width, lowres.height, lowres.channels);
        let down = Downsample::new(w * factor, h * factor, c, factor)?;
        Ok(Problem {
            kind: TaskKind::SuperResolve,
            observation: lowres,
            operator: Box::new(down),
            noise: NoiseModel::Gaussian { sigma: None },
            clean: None,
            baseline: Baseline::Bicubic(factor),
        })
    }

    /// Deblurring with a known point spread function (same-size output, reflected borders).
    pub fn deblur(blurred: Image, psf: Psf) -> Result<Problem> {
        let blur = Blur::new(psf, blurred.width, blurred.height, blurred.channels)?;
        Ok(Problem {
            kind: TaskKind::Deblur,
            observation: blurred,
            operator: Box::new(blur),
            noise: NoiseModel::Gaussian { sigma: None },
            clean: None,
            baseline: Baseline::None,
        })
    }

    /// The same problem with its clean image, which must have the result's size and channels.
    pub fn with_clean(mut self, clean: Image) -> Result<Problem> {
        let (w, h, c) = self.operator.input_shape();
        if (clean.width, clean.height) != (w, h) {
            return Err(Error::invalid(format!(
                "the clean image is {}x{} but the result will be {w}x{h}",
                clean.width, clean.height
            )));
        }
        if clean.channels != c {
            return Err(Error::invalid(format!(
                "the clean image has {} channel(s) but the result will have {c}",
                clean.channels
            )));
        }
        self.clean = Some(clean);
        Ok(self)
    }

    /// The same problem with a known Gaussian noise level (0–255 scale).
    pub fn with_noise_sigma(mut self, sigma_255: f64) -> Result<Problem> {
        if !(sigma_255.is_finite() && sigma_255 > 0.0) {
            return Err(Error::invalid(format!(
                "the noise level must be a positive number, got {sigma_255}"
            )));
        }
        self.noise = NoiseModel::Gaussian {
            sigma: Some(sigma_255 / 255.0),
        };
        Ok(self)
    }

    /// The restored image's shape: width, height, channels.
    pub fn result_shape(&self) -> (usize, usize, usize) {
        self.operator.input_shape()
    }

    /// The classical result, quantised to the observation's bit depth as a file would hold it:
    /// the harmonic fill for inpainting, bicubic upscaling for super-resolution, none otherwise.
    pub fn baseline(&self) -> Result<Option<(&'static str, Image)>> {
        let depth = self.observation.bit_depth;
        Ok(match &self.baseline {
            Baseline::None => None,
            Baseline::Fill(mask) => Some((
                "harmonic fill",
                image::quantize(
                    &harmonic_fill(&self.observation, mask, HARMONIC_ROUNDS)?,
                    depth,
                ),
            )),
            Baseline::Bicubic(f) => Some((
                "bicubic",
                image::quantize(&bicubic_upscale(&self.observation, *f)?, depth),
            )),
            Baseline::LeastSquares(steps) => {
                let x = cgls(self.operator.as_ref(), &self.observation.data, *steps);
                let (w, h, c) = self.operator.input_shape();
                let clipped = x.iter().map(|v| v.clamp(0.0, 1.0)).collect();
                Some(("least squares (CGLS)", Image::try_new(w, h, c, clipped)?))
            }
            Baseline::Fbp(radon) => {
                let n = radon.size();
                let x = radon.fbp(&self.observation.data, false);
                let clipped = x.iter().map(|v| v.clamp(0.0, 1.0)).collect();
                Some(("FBP", Image::new(n, n, 1, clipped)))
            }
        })
    }

    /// Whether the classical baseline is itself an estimate fitted to the measurements (FBP,
    /// least squares) rather than an interpolation of them, so that a result that explains the
    /// measurements less well than it did is a sign of a fit stopped too early.
    pub fn baseline_fits_the_data(&self) -> bool {
        matches!(self.baseline, Baseline::Fbp(_) | Baseline::LeastSquares(_))
    }

    /// `‖A x − y‖ / ‖y‖`: how well an image of the result's shape explains the observation.
    pub fn relative_residual(&self, x: &Image) -> f64 {
        let mut ax = vec![0.0f32; self.operator.output_len()];
        self.operator.forward(&x.data, &mut ax);
        let (mut r, mut n) = (0.0f64, 0.0f64);
        for (&a, &y) in ax.iter().zip(&self.observation.data) {
            r += (a as f64 - y as f64).powi(2);
            n += (y as f64).powi(2);
        }
        (r / n.max(f64::MIN_POSITIVE)).sqrt()
    }

    /// The mask of an inpainting problem.
    pub fn mask(&self) -> Option<&Mask> {
        match &self.baseline {
            Baseline::Fill(m) => Some(m),
            _ => None,
        }
    }
}

/// Noise added to a synthetic observation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Noise {
    None,
    /// White Gaussian noise of this standard deviation on the 0–255 scale, clipped to [0, 1].
    Gaussian(f64),
    /// Photon counts at this many photons for white.
    Poisson(f64),
    /// Salt and pepper on this fraction of the samples.
    Impulse(f64),
}

impl Noise {
    /// Gaussian noise of `sigma` (0–255), or none for 0.
    pub fn gaussian(sigma: f64) -> Noise {
        if sigma > 0.0 {
            Noise::Gaussian(sigma)
        } else {
            Noise::None
        }
    }

    /// `img` with this noise, drawn from `seed`.
    pub fn apply(&self, img: &Image, seed: u64) -> Result<Image> {
        match *self {
            Noise::None => Ok(img.clone()),
            Noise::Gaussian(s) => {
                if !(s.is_finite() && s >= 0.0) {
                    return Err(Error::invalid(format!(
                        "the noise sigma must be zero or positive, got {s}"
                    )));
                }
                Ok(noise_models::gaussian(img, s as f32, seed))
            }
            Noise::Poisson(peak) => noise_models::poisson(img, peak, seed),
            Noise::Impulse(amount) => noise_models::impulse(img, amount, seed),
        }
    }
}

/// Which pixels an inpainting degradation keeps.
#[derive(Debug, Clone, PartialEq)]
pub enum MaskKind {
    /// Each pixel kept with this probability.
    Random(f64),
    /// This many square holes of this side [default: an eighth of the shorter side].
    Blocks { count: usize, size: Option<usize> },
    /// Lines of text drawn over the image.
    Text,
    /// A given mask.
    Given(Mask),
}

/// The seeds of a degradation: of its noise, and of a generated mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seeds {
    pub noise: u64,
    pub mask: u64,
}

impl Seeds {
    /// Both from one seed (the mask's is the seed itself, the noise's a fixed scramble of it),
    /// as sweeps draw them.
    pub fn from_one(seed: u64) -> Seeds {
        Seeds {
            noise: seed ^ 0x6E6F_6973_6500_0000,
            mask: seed,
        }
    }
}

/// A synthetic degradation of a clean image. [`Degradation::apply`] makes the [`Problem`]
/// whose observation is what `dip degrade` writes (quantised to the image's bit depth) and
/// whose clean image is the image being restored.
#[derive(Debug, Clone, PartialEq)]
pub enum Degradation {
    /// Noise only: denoising.
    Noise(Noise),
    /// Pixels removed, then noise on the kept ones.
    Inpaint { mask: MaskKind, noise: Noise },
    /// Lanczos-2 downsampling by `factor`, then noise. The image is first centre-cropped to a
    /// multiple of `crop_to` (default: the factor).
    Downsample {
        factor: usize,
        crop_to: Option<usize>,
        noise: Noise,
    },
    /// Blur by a point spread function, then noise.
    Blur { psf: Psf, noise: Noise },
    /// Parallel-beam CT of a square gray image over `angles` (degrees), then white Gaussian
    /// noise of `sigma` in the sinogram's units (line integrals of pixels in [0, 1]), not
    /// clipped or quantised.
    Ct { angles: Vec<f64>, sigma: f64 },
}

impl Degradation {
    /// The problem of restoring `clean` from its degraded observation.
    pub fn apply(&self, clean: &Image, seeds: Seeds) -> Result<Problem> {
        let (w, h, c) = (clean.width, clean.height, clean.channels);
        let depth = clean.bit_depth;
        let q = |img: Image| image::quantize(&img, depth);
        match self {
            Degradation::Noise(noise) => {
                let noisy = q(noise.apply(clean, seeds.noise)?);
                // The noise level is left to the fit to estimate, as in a user's run.
                let mut p = Problem::denoise(noisy);
                p.clean = Some(clean.clone());
                Ok(p)
            }
            Degradation::Inpaint { mask, noise } => {
                let mask = match mask {
                    MaskKind::Random(p) => Mask::random(w, h, *p, seeds.mask)?,
                    MaskKind::Blocks { count, size } => {
                        let size = size.unwrap_or((w.min(h) / 8).max(1));
                        Mask::blocks(w, h, *count, size, seeds.mask)?
                    }
                    MaskKind::Text => Mask::text(w, h, seeds.mask)?,
                    MaskKind::Given(m) => m.clone(),
                };
                if mask.known().iter().all(|k| !k) {
                    return Err(Error::invalid(
                        "the mask has no known pixel (all black), so there is nothing to observe",
                    ));
                }
                let mask = mask.with_channels(c);
                // Noise after the mask, then the mask again: missing pixels stay black.
                let observation = q(mask.apply(&noise.apply(&mask.apply(clean)?, seeds.noise)?)?);
                // Noise-free to the fit, as a user's inpainting run is without a noise level
                // (a masked image's holes would mislead any estimator).
                let mut p = Problem::inpaint(observation, mask)?;
                p.clean = Some(clean.clone());
                Ok(p)
            }
            Degradation::Downsample {
                factor,
                crop_to,
                noise,
            } => {
                let f = *factor;
                let multiple = crop_to.unwrap_or(f);
                if multiple == 0 || !multiple.is_multiple_of(f) {
                    return Err(Error::invalid(format!(
                        "the crop multiple {multiple} must be a positive multiple of the factor {f}"
                    )));
                }
                let (cw, ch) = (w - w % multiple, h - h % multiple);
                if cw == 0 || ch == 0 {
                    return Err(Error::invalid(format!(
                        "the image is {w}x{h}, smaller than {multiple} pixels on a side, so \
                         nothing is left after cropping to multiples of {multiple}"
                    )));
                }
                let hr = image::center_crop(clean, cw, ch);
                let down = Downsample::new(cw, ch, c, f)?;
                let lowres = q(noise.apply(&down.apply(&hr)?, seeds.noise)?);
                let mut p = Problem::super_resolve(lowres, f)?;
                p.clean = Some(hr);
                Ok(p)
            }
            Degradation::Ct { angles, sigma } => {
                if w != h || c != 1 {
                    return Err(Error::invalid(format!(
                        "CT needs a square gray image, not {w}x{h} with {c} channel(s)"
                    )));
                }
                if !(sigma.is_finite() && *sigma >= 0.0) {
                    return Err(Error::invalid(format!(
                        "the noise sigma must be zero or positive, got {sigma}"
                    )));
                }
                let sino = Radon::new(w, angles)?.sinogram(clean)?;
                let sino = if *sigma > 0.0 {
                    crate::noise::add_measurement_noise(&sino, *sigma, seeds.noise)
                } else {
                    sino
                };
                let mut p = Problem::ct(sino, angles)?;
                p.clean = Some(clean.clone());
                Ok(p)
            }
            Degradation::Blur { psf, noise } => {
                let blur = Blur::new(psf.clone(), w, h, c)?;
                let blurred = q(noise.apply(&blur.apply(clean)?, seeds.noise)?);
                let mut p = Problem::deblur(blurred, psf.clone())?;
                p.clean = Some(clean.clone());
                Ok(p)
            }
        }
    }
}

/// `steps` of CGLS for `argmin ‖A x − y‖²` from `x = 0` (conjugate gradients on the normal
/// equations without forming them), in f64 sums.
pub fn cgls(a: &dyn Operator, y: &[f32], steps: usize) -> Vec<f32> {
    let (n, m) = (a.input_len(), a.output_len());
    let dot = |u: &[f32], v: &[f32]| {
        u.iter()
            .zip(v)
            .map(|(&p, &q)| p as f64 * q as f64)
            .sum::<f64>()
    };
    let mut x = vec![0.0f32; n];
    let mut r = y.to_vec();
    let mut s = vec![0.0f32; n];
    a.adjoint(&r, &mut s);
    let mut p = s.clone();
    let mut gamma = dot(&s, &s);
    let mut q = vec![0.0f32; m];
    for _ in 0..steps {
        if gamma <= f64::MIN_POSITIVE {
            break;
        }
        a.forward(&p, &mut q);
        let qq = dot(&q, &q);
        if qq <= f64::MIN_POSITIVE {
            break;
        }
        let alpha = gamma / qq;
        x.iter_mut()
            .zip(&p)
            .for_each(|(xi, &pi)| *xi += (alpha * pi as f64) as f32);
        r.iter_mut()
            .zip(&q)
            .for_each(|(ri, &qi)| *ri -= (alpha * qi as f64) as f32);
        a.adjoint(&r, &mut s);
        let next = dot(&s, &s);
        let beta = next / gamma;
        p.iter_mut()
            .zip(&s)
            .for_each(|(pi, &si)| *pi = si + (beta * *pi as f64) as f32);
        gamma = next;
    }
    x
}
