//! A training step allocates nothing once the network is built: every buffer is made up front.
//! Counted with a global allocator over the whole process (worker threads included). The `gemm`
//! crate allocates its packing buffers inside every call; those are counted apart and only
//! reported, since they are not ours to remove.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use dip::engine::{Adam, AdamConfig, Precision};
use dip::nets::SkipSpec;

struct Counting;
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static GEMM_ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

fn count() {
    if dip::engine::in_gemm() {
        GEMM_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    } else {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn a_training_step_allocates_nothing_after_the_first() {
    // One precision after the other: the counters are process-wide.
    for precision in [Precision::F32, Precision::Bf16] {
        steps_allocate_nothing(precision);
    }
}

fn steps_allocate_nothing(precision: Precision) {
    // Large enough that the elementwise passes and the GEMMs go parallel.
    let spec = SkipSpec::uniform(8, 3, 3, 32, 4);
    let mut net = spec.build::<f32>(64, 64, 0).unwrap();
    net.set_precision(precision);
    net.input_mut()
        .data
        .iter_mut()
        .enumerate()
        .for_each(|(i, v)| *v = (i % 97) as f32 * 1e-3);
    let target: Vec<f32> = (0..64 * 64 * 3).map(|i| (i % 13) as f32 / 13.0).collect();
    let mut adam = Adam::new(net.num_params(), AdamConfig::default());
    let mut step = |count: bool| {
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        net.forward();
        let (out, grad) = net.output_and_grad();
        for ((g, &o), &t) in grad.data.iter_mut().zip(&out.data).zip(&target) {
            *g = 2.0 * (o - t) / target.len() as f32;
        }
        net.backward();
        let (p, g) = net.params_and_grads();
        adam.step(p, g);
        let n = ALLOCATIONS.load(Ordering::SeqCst) - before;
        if count {
            assert_eq!(n, 0, "a {precision} training step allocated {n} times");
        }
    };
    // Steps run on a pool thread, as the fit loop runs them: jobs injected from outside the pool
    // go through rayon's global queue, which allocates a block now and then.
    rayon::scope(|_| {
        step(false);
        step(false);
        let gemm_before = GEMM_ALLOCATIONS.load(Ordering::SeqCst);
        for _ in 0..3 {
            step(true);
        }
        let g = GEMM_ALLOCATIONS.load(Ordering::SeqCst) - gemm_before;
        println!(
            "{precision}: GEMMs allocated {} times per step (packing buffers)",
            g / 3
        );
    });
}
