//! Batches of fits on one GPU (feature `cuda`): up to `lanes` fits of one network layout and
//! one step recipe share a [`GpuNet`] with that many lanes, so each step of all of them is one
//! launch sequence (every kernel and GEMM runs for all lanes at once) instead of one per fit.
//! A sweep of many small images or seeds fills the device this way.
//!
//! Each fit keeps its own loop, on its own thread, exactly as [`super::fit_on_gpu`] runs it:
//! its calls for its lane alone (targets, downloads, rollbacks, checkpoints) go to its lane;
//! the two parts of a step (up to the loss; backward, Adam and the rest) wait until every fit
//! in the step has asked for them, and the last to ask launches them for all lanes.
//!
//! Fits need not start or stop together. A fit that rolls back skips the rest of its step (its
//! lane is marked inactive on the device: no moving average, Adam or noise), a fit that stops
//! early gives its lane back, and a new fit takes a free lane and joins the next step. The
//! device keeps each lane's step count, step size and seed, so every fit is the one it would be
//! on a network of its own, bit for bit (tested on the host emulation). A fit of another
//! layout or recipe than the batch's runs on a network of its own.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use super::gpu::FitDevice;
use crate::cuda::plan::{GpuNode, Layout, lower_with_extra};
use crate::cuda::{FitStep, GpuError, GpuNet, Precision};
use crate::engine::{Net, Tensor};
use crate::operators::SparseRows;
use crate::{Error, Result};

type R<T> = std::result::Result<T, GpuError>;

/// Opens a GPU network of `lanes` lanes for a host network, operator room and GEMM precision
/// ([`GpuNet::with_lanes`]).
pub type OpenLanes = dyn Fn(&Net<f32>, usize, usize, Precision) -> R<GpuNet> + Send + Sync;

/// Up to `lanes` fits at once in one launch sequence (see the module's documentation). Shared
/// by the threads that run the fits ([`super::FitConfig::lanes`]). A device without room for
/// that many lanes gets half as many, down to one (the fits then take turns).
pub struct LanePool {
    /// Lanes of the batch's network (halved while the device has no room for that many).
    lanes: AtomicUsize,
    open: Box<OpenLanes>,
    state: Mutex<Option<Group>>,
    turn: Condvar,
    /// Fits that ran in a lane (the others on networks of their own).
    in_lanes: AtomicUsize,
}

impl std::fmt::Debug for LanePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LanePool({} lanes)", self.lanes())
    }
}

/// The parts of a step, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Front,
    Back,
}

/// What fits must share to share a batch: the lowered network (layers, buffers, fixed tables),
/// the GEMMs' precision and the step recipe (all but the seed and the step size).
#[derive(PartialEq, Clone)]
struct Key {
    nodes: Vec<GpuNode>,
    layout: Layout,
    precision: Precision,
    step: FitStep,
}

impl Key {
    fn new(net: &Net<f32>, room: usize, precision: Precision, step: &FitStep) -> R<Key> {
        let (nodes, layout) = lower_with_extra(net, room)?;
        Ok(Key {
            nodes,
            layout,
            precision,
            // The seed and the step size are each lane's own, on the device.
            step: FitStep {
                seed: 0,
                adam: crate::engine::AdamConfig {
                    lr: 0.0,
                    ..step.adam
                },
                ..step.clone()
            },
        })
    }
}

/// The batch's network and each lane's place in the current step.
struct Group {
    net: GpuNet,
    key: Key,
    /// A fit holds the lane.
    held: Vec<bool>,
    /// The lane took part in the last launch of the step's first part (and has not skipped).
    in_step: Vec<bool>,
    /// The part the lane's fit waits for.
    want: Vec<Option<Phase>>,
    /// The lane's active flag as last sent to the device.
    active: Vec<bool>,
    phase: Phase,
    prepared: bool,
    failed: Option<String>,
}

impl Group {
    /// Launches every part of the step that all its fits have asked for.
    fn advance(&mut self) {
        while self.failed.is_none() {
            let needed: Vec<usize> = (0..self.held.len())
                .filter(|&l| match self.phase {
                    Phase::Front => self.held[l],
                    Phase::Back => self.in_step[l],
                })
                .collect();
            if needed.iter().any(|&l| self.want[l] != Some(self.phase))
                || (needed.is_empty() && self.phase == Phase::Front)
            {
                return;
            }
            if !needed.is_empty()
                && let Err(e) = self.launch()
            {
                self.failed = Some(e.0);
                return;
            }
            for &l in &needed {
                self.want[l] = None;
            }
            self.phase = match self.phase {
                Phase::Front => Phase::Back,
                Phase::Back => Phase::Front,
            };
        }
    }

    fn launch(&mut self) -> R<()> {
        match self.phase {
            Phase::Front => {
                // The held lanes take this step; the others' updates are skipped on the device.
                for l in 0..self.held.len() {
                    if self.active[l] != self.held[l] {
                        self.net.select(l)?;
                        self.net.set_active(self.held[l])?;
                        self.active[l] = self.held[l];
                    }
                }
                self.in_step = self.held.clone();
                self.net.fit_front()
            }
            Phase::Back => self.net.fit_back(),
        }
    }
}

impl LanePool {
    /// A pool of `lanes` lanes; `open` makes the batch's network.
    pub fn new(lanes: usize, open: Box<OpenLanes>) -> Self {
        LanePool {
            lanes: AtomicUsize::new(lanes.max(1)),
            open,
            state: Mutex::new(None),
            turn: Condvar::new(),
            in_lanes: AtomicUsize::new(0),
        }
    }

    /// How many fits run at once.
    pub fn lanes(&self) -> usize {
        self.lanes.load(Ordering::SeqCst)
    }

    /// How many fits have run (or are running) in a lane of a batch.
    pub fn fits_in_lanes(&self) -> usize {
        self.in_lanes.load(Ordering::SeqCst)
    }

    /// How many lanes fits hold now.
    pub fn held(&self) -> usize {
        self.lock()
            .as_ref()
            .map_or(0, |g| g.held.iter().filter(|&&h| h).count())
    }

    fn lock(&self) -> MutexGuard<'_, Option<Group>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The device side of a fit: a free lane of the batch (made for the first fit, remade when
    /// a fit of another layout or recipe finds no fit in it), or a network of its own.
    pub(crate) fn open<'a>(
        &'a self,
        net: &Net<f32>,
        room: usize,
        precision: Precision,
        step: &FitStep,
    ) -> Result<Box<dyn FitDevice + 'a>> {
        let gpu = |e: GpuError| Error::invalid(e.0);
        let key = Key::new(net, room, precision, step).map_err(gpu)?;
        let mut st = self.lock();
        loop {
            match st.as_mut() {
                Some(g) if g.key == key && g.failed.is_none() => {
                    if let Some(lane) = g.held.iter().position(|h| !h) {
                        g.held[lane] = true;
                        g.in_step[lane] = false;
                        g.want[lane] = None;
                        g.net.select(lane).map_err(gpu)?;
                        // Inactive until its first step: the other lanes' launches meanwhile
                        // leave its parameters, moments and average alone.
                        g.net.set_active(false).map_err(gpu)?;
                        g.active[lane] = false;
                        g.net.set_params(net.params()).map_err(gpu)?;
                        g.net.reset_adam().map_err(gpu)?;
                        self.in_lanes.fetch_add(1, Ordering::SeqCst);
                        return Ok(Box::new(Lane {
                            pool: self,
                            lane,
                            step: step.clone(),
                        }));
                    }
                    st = self.turn.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                Some(g) if g.held.iter().any(|&h| h) => {
                    drop(st);
                    return Ok(Box::new((self.open)(net, room, 1, precision).map_err(gpu)?));
                }
                _ => {
                    // Free the old batch's memory before making the new one.
                    *st = None;
                    let mut n = self.lanes();
                    let net = loop {
                        match (self.open)(net, room, n, precision) {
                            // No room on the device for that many: half as many lanes (at one,
                            // the fits take turns).
                            Err(e) if n > 1 && e.0.contains("cannot allocate") => {
                                n /= 2;
                                self.lanes.store(n, Ordering::SeqCst);
                            }
                            r => break r.map_err(gpu)?,
                        }
                    };
                    *st = Some(Group {
                        net,
                        key: key.clone(),
                        held: vec![false; n],
                        in_step: vec![false; n],
                        want: vec![None; n],
                        active: vec![true; n],
                        phase: Phase::Front,
                        prepared: false,
                        failed: None,
                    });
                }
            }
        }
    }
}

/// A fit's lane of the batch.
struct Lane<'a> {
    pool: &'a LanePool,
    lane: usize,
    step: FitStep,
}

impl Lane<'_> {
    /// Runs `f` on the batch's network with this lane selected.
    fn with<T>(&self, f: impl FnOnce(&mut GpuNet) -> R<T>) -> R<T> {
        let mut st = self.pool.lock();
        let g = st.as_mut().expect("a held lane's batch stays");
        if let Some(e) = &g.failed {
            return Err(GpuError(format!("the batch of fits failed: {e}")));
        }
        g.net.select(self.lane)?;
        f(&mut g.net)
    }

    /// Asks for a part of the step and waits until it is launched (by this fit or another).
    fn arrive(&self, phase: Phase) -> R<()> {
        let mut st = self.pool.lock();
        {
            let g = st.as_mut().expect("a held lane's batch stays");
            g.want[self.lane] = Some(phase);
            g.advance();
        }
        self.pool.turn.notify_all();
        loop {
            let g = st.as_mut().expect("a held lane's batch stays");
            if let Some(e) = &g.failed {
                return Err(GpuError(format!("the batch of fits failed: {e}")));
            }
            if g.want[self.lane].is_none() {
                return Ok(());
            }
            st = self.pool.turn.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Drop for Lane<'_> {
    fn drop(&mut self) {
        let mut st = self.pool.lock();
        if let Some(g) = st.as_mut() {
            g.held[self.lane] = false;
            g.in_step[self.lane] = false;
            g.want[self.lane] = None;
            g.advance();
        }
        self.pool.turn.notify_all();
    }
}

impl FitDevice for Lane<'_> {
    fn set_fixed_input(&mut self, z: &[f32]) -> R<()> {
        self.with(|g| g.set_fixed_input(z))
    }
    fn set_target(&mut self, y: &Tensor<f32>, mask: Option<&[f32]>) -> R<()> {
        self.with(|g| g.set_target(y, mask))
    }
    fn set_operator(&mut self, a: &SparseRows, target: &[f32]) -> R<()> {
        self.with(|g| g.set_operator(a, target))
    }
    fn set_params(&mut self, params: &[f32]) -> R<()> {
        self.with(|g| g.set_params(params))
    }
    fn params(&self) -> R<Vec<f32>> {
        self.with(|g| g.params())
    }
    fn set_ema(&mut self, ema: &[f32]) -> R<()> {
        self.with(|g| g.set_ema(ema))
    }
    fn ema(&self) -> R<Tensor<f32>> {
        self.with(|g| g.ema())
    }
    fn output(&self) -> R<Tensor<f32>> {
        self.with(|g| g.output())
    }
    fn set_adam(&mut self, m: &[f32], v: &[f32], t: u64, beta1: f64, beta2: f64) -> R<()> {
        self.with(|g| g.set_adam(m, v, t, beta1, beta2))
    }
    fn moments(&self) -> R<(Vec<f32>, Vec<f32>)> {
        self.with(|g| g.moments())
    }
    fn adam_t(&self) -> R<u64> {
        self.with(|g| g.adam_t())
    }
    fn save(&mut self) -> R<[f64; 3]> {
        self.with(|g| g.save())
    }
    fn keep(&mut self) -> R<()> {
        self.with(|g| g.keep())
    }
    fn save_ema(&mut self) -> R<()> {
        self.with(|g| g.save_ema())
    }
    fn saved(&self) -> R<[Vec<f32>; 3]> {
        self.with(|g| g.saved())
    }
    fn restore(&mut self, adam: [f64; 3]) -> R<()> {
        self.with(|g| g.restore(adam))
    }
    /// The batch's steps are captured once, by its first fit; each fit's seed goes to its lane.
    /// The lane stays inactive until its first step.
    fn prepare_fit(&mut self, step: FitStep) -> R<()> {
        if step != self.step {
            return Err(GpuError(
                "a lane's fit changed its step after joining the batch".into(),
            ));
        }
        let mut st = self.pool.lock();
        let g = st.as_mut().expect("a held lane's batch stays");
        g.net.select(self.lane)?;
        if g.prepared {
            g.net.set_fit_seed(step.seed)?;
        } else {
            g.net.prepare_fit(step)?;
            g.prepared = true;
        }
        g.net.set_active(false)?;
        g.active[self.lane] = false;
        Ok(())
    }
    fn set_fit_state(&mut self, done: u64, lr: f64) -> R<()> {
        self.with(|g| g.set_fit_state(done, lr))
    }
    fn set_lr(&mut self, lr: f64) -> R<()> {
        self.with(|g| g.set_lr(lr))
    }
    fn set_weights(&mut self, w: &[f32]) -> R<()> {
        self.with(|g| g.set_weights(w))
    }
    fn loss_sums_and_adam(&self) -> R<([f64; 4], [f64; 3])> {
        self.with(|g| g.loss_sums_and_adam())
    }
    fn fit_front(&mut self) -> R<()> {
        self.arrive(Phase::Front)
    }
    fn fit_back(&mut self) -> R<()> {
        self.arrive(Phase::Back)
    }
    /// The lane leaves this step: inactive on the device until its next step.
    fn skip_back(&mut self) -> R<()> {
        let mut st = self.pool.lock();
        let g = st.as_mut().expect("a held lane's batch stays");
        g.in_step[self.lane] = false;
        g.net.select(self.lane)?;
        g.net.set_active(false)?;
        g.active[self.lane] = false;
        g.advance();
        drop(st);
        self.pool.turn.notify_all();
        Ok(())
    }
}
