//! The loop's backend on the CPU: the network on the rayon pool, the data term and the operator
//! on the host, Adam, the moving average and SGLD's noise in place.

use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use rand_pcg::Pcg64Mcg;
use rayon::prelude::*;

use super::checkpoint::FitState;
use super::driver::{Backend, KeptParts, NetParts};
use super::run::{
    FitConfig, Grid, NOISE_CHUNK, adam_config, crop_slice, data_term, draw_batch, sgld_tensors,
    uncrop_slice,
};
use crate::Result;
use crate::engine::{Adam, Net};
use crate::image::Image;
use crate::operators::Operator;

/// The fit's network and state on the CPU.
pub(super) struct Cpu<'a> {
    cfg: &'a FitConfig,
    observation: &'a Image,
    operator: &'a dyn Operator,
    grid: Grid,
    net: Net<f32>,
    /// The fixed input, before the perturbation of each step.
    z: Vec<f32>,
    adam: Adam<f32>,
    ema: Vec<f32>,
    /// The weights SGLD puts noise on.
    noisy: Vec<(usize, usize)>,
    /// The last good parameters and Adam state.
    kept: Option<(Vec<f32>, Adam<f32>)>,
    /// How often each observation pixel is drawn this step (pixel batches).
    counts: Vec<u32>,
    // Work buffers of the data term, allocated once: the cropped output x, A(x), and the
    // gradients with respect to A(x) and to x.
    x_buf: Vec<f32>,
    ax: Vec<f32>,
    g_ax: Vec<f32>,
    g_x: Vec<f32>,
}

impl<'a> Cpu<'a> {
    pub fn new(
        cfg: &'a FitConfig,
        observation: &'a Image,
        operator: &'a dyn Operator,
        grid: Grid,
        net: Net<f32>,
        z: Vec<f32>,
    ) -> Self {
        let pixels = observation.width * observation.height;
        let image = grid.xw * grid.xh * grid.xc;
        Cpu {
            adam: Adam::new(net.num_params(), adam_config(cfg)),
            ema: vec![0.0f32; grid.h * grid.w * grid.c],
            noisy: sgld_tensors(&net, cfg),
            kept: None,
            counts: vec![0u32; if cfg.pixel_batch.is_some() { pixels } else { 0 }],
            x_buf: vec![0.0f32; image],
            ax: vec![0.0f32; observation.data.len()],
            g_ax: vec![0.0f32; observation.data.len()],
            g_x: vec![0.0f32; image],
            cfg,
            observation,
            operator,
            grid,
            net,
            z,
        }
    }

    /// Input perturbation: `z + N(0, reg_noise²)`, fresh each step.
    fn perturb_input(&mut self, it: usize) {
        let sd = self.cfg.reg_noise as f32;
        let seed = self.cfg.seed;
        self.net
            .input_mut()
            .data
            .par_chunks_mut(NOISE_CHUNK)
            .zip(self.z.par_chunks(NOISE_CHUNK))
            .enumerate()
            .for_each(|(ci, (dst, src))| {
                let mut r = Pcg64Mcg::seed_from_u64(
                    seed ^ ((it as u64) << 32) ^ (ci as u64).wrapping_mul(0xD1B5_4A32_D192_ED03),
                );
                for (d, &s) in dst.iter_mut().zip(src) {
                    let n: f32 = r.sample(StandardNormal);
                    *d = s + sd * n;
                }
            });
    }

    /// SGLD's weight noise, `N(0, (noise · lr)²)` on every convolution and dense weight.
    fn weight_noise(&mut self, it: usize, noise: f64) {
        let sd = (noise * self.adam.cfg.lr) as f32;
        let params = self.net.params_mut();
        for (k, &(off, len)) in self.noisy.iter().enumerate() {
            let seed = self.cfg.seed ^ 0x5C1D_0000_0000_0000 ^ ((it as u64) << 24) ^ (k as u64);
            params[off..off + len]
                .par_chunks_mut(NOISE_CHUNK)
                .enumerate()
                .for_each(|(ci, dst)| {
                    let mut r = Pcg64Mcg::seed_from_u64(
                        seed ^ (ci as u64).wrapping_mul(0xD1B5_4A32_D192_ED03),
                    );
                    for d in dst.iter_mut() {
                        let n: f32 = r.sample(StandardNormal);
                        *d += sd * n;
                    }
                });
        }
    }
}

impl Backend for Cpu<'_> {
    const LOSS_EVERY_STEP: bool = true;

    fn num_params(&self) -> usize {
        self.net.num_params()
    }

    fn resume(&mut self, st: &FitState) -> Result<()> {
        self.net.params_mut().copy_from_slice(&st.params);
        let adam = &mut self.adam;
        adam.m.copy_from_slice(&st.adam_m);
        adam.v.copy_from_slice(&st.adam_v);
        adam.t = st.adam_t;
        adam.cfg.lr = st.lr;
        self.ema.copy_from_slice(&st.ema);
        self.kept = st.snapshot.as_ref().map(|s| {
            let mut a = adam.clone();
            a.m.copy_from_slice(&s.adam_m);
            a.v.copy_from_slice(&s.adam_v);
            a.t = s.adam_t;
            a.cfg.lr = s.adam_lr;
            (s.params.clone(), a)
        });
        Ok(())
    }

    fn start(&mut self, _first: usize, _lr: f64) -> Result<()> {
        Ok(())
    }

    fn front(&mut self, it: usize, _read: bool) -> Result<Option<(f64, f64)>> {
        if self.cfg.reg_noise > 0.0 {
            self.perturb_input(it);
        }
        let Grid { xw, pad, w, c, .. } = self.grid;
        self.net.forward();
        let (out, grad) = self.net.output_and_grad();
        crop_slice(&out.data, w, c, &pad, xw, &mut self.x_buf);
        self.operator.forward(&self.x_buf, &mut self.ax);
        let batch = self.cfg.pixel_batch.map(|n| {
            draw_batch(self.cfg.seed, it, n, &mut self.counts);
            (&self.counts[..], n, self.observation.channels)
        });
        let (loss, mse) = data_term(
            &self.ax,
            &self.observation.data,
            &mut self.g_ax,
            self.cfg.loss,
            batch,
        );
        self.operator.adjoint(&self.g_ax, &mut self.g_x);
        // The padding carries no observation: its gradient is zero.
        grad.data.fill(0.0);
        uncrop_slice(&self.g_x, w, c, &pad, xw, &mut grad.data);
        Ok(Some((loss, mse)))
    }

    fn keep(&mut self) -> Result<()> {
        match &mut self.kept {
            Some((params, adam)) => {
                params.copy_from_slice(self.net.params());
                adam.clone_from(&self.adam);
            }
            None => self.kept = Some((self.net.params().to_vec(), self.adam.clone())),
        }
        Ok(())
    }

    fn rollback(&mut self, lr: f64) -> Result<()> {
        let (params, adam) = self.kept.as_ref().expect("the loop checked the kept state");
        self.net.params_mut().copy_from_slice(params);
        self.adam.clone_from(adam);
        self.adam.cfg.lr = lr;
        Ok(())
    }

    fn back(&mut self, it: usize, _checked: bool) -> Result<()> {
        self.net.backward();
        let out = &self.net.output().data;
        if it == 1 {
            self.ema.copy_from_slice(out);
        } else {
            let (a, b) = (self.cfg.ema as f32, 1.0 - self.cfg.ema as f32);
            self.ema
                .iter_mut()
                .zip(out)
                .for_each(|(e, &o)| *e = a * *e + b * o);
        }
        let (params, grads) = self.net.params_and_grads();
        self.adam.step(params, grads);
        if let Some(l) = self.cfg.lipschitz {
            self.net.lipschitz_project(l);
        }
        if let Some(g) = &self.cfg.sgld
            && g.noise > 0.0
        {
            self.weight_noise(it, g.noise);
        }
        Ok(())
    }

    fn with_output(&self, f: &mut dyn FnMut(&[f32])) -> Result<()> {
        f(&self.net.output().data);
        Ok(())
    }

    fn with_ema(&self, f: &mut dyn FnMut(&[f32])) -> Result<()> {
        f(&self.ema);
        Ok(())
    }

    fn parts(&self) -> Result<NetParts> {
        Ok(NetParts {
            params: self.net.params().to_vec(),
            adam_m: self.adam.m.clone(),
            adam_v: self.adam.v.clone(),
            adam_t: self.adam.t,
            ema: self.ema.clone(),
            kept: self.kept.as_ref().map(|(p, a)| KeptParts {
                params: p.clone(),
                adam_m: a.m.clone(),
                adam_v: a.v.clone(),
                adam_t: a.t,
            }),
        })
    }
}
