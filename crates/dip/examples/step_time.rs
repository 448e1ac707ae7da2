//! Seconds per training step of the standard network: `cargo run --release --example step_time -- 256`.
use std::time::Instant;

use dip::engine::{Adam, AdamConfig};
use dip::nets::SkipSpec;

fn main() {
    let size: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(128);
    let iters: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let mut net = SkipSpec::standard(32, 3)
        .build::<f32>(size, size, 0)
        .unwrap();
    net.input_mut()
        .data
        .iter_mut()
        .enumerate()
        .for_each(|(i, v)| *v = ((i * 7919) % 1000) as f32 * 1e-4);
    let target: Vec<f32> = (0..size * size * 3)
        .map(|i| ((i * 104729) % 997) as f32 / 997.0)
        .collect();
    let mut adam = Adam::new(net.num_params(), AdamConfig::default());
    let mut times = Vec::new();
    for _ in 0..iters + 2 {
        let t = Instant::now();
        net.forward();
        let (out, g) = net.output_and_grad();
        let n = target.len() as f32;
        for ((g, &o), &y) in g.data.iter_mut().zip(&out.data).zip(&target) {
            *g = 2.0 * (o - y) / n;
        }
        net.backward();
        let (p, g) = net.params_and_grads();
        adam.step(p, g);
        times.push(t.elapsed().as_secs_f64());
    }
    net.set_profiling(true);
    for _ in 0..2 {
        net.forward();
        net.backward();
    }
    let mut prof = net.profile();
    prof.sort_by(|a, b| {
        (b.forward + b.backward)
            .partial_cmp(&(a.forward + a.backward))
            .unwrap()
    });
    for p in prof.iter().take(25) {
        println!(
            "{:40} fwd {:.4} bwd {:.4}",
            p.label,
            p.forward / 2.0,
            p.backward / 2.0
        );
    }
    let tot: f64 = prof.iter().map(|p| p.forward + p.backward).sum::<f64>() / 2.0;
    println!("total fwd+bwd {tot:.4}");
    let mut t = times[2..].to_vec();
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "size={size} median_s={:.4} min_s={:.4} mem_mb={}",
        t[t.len() / 2],
        t[0],
        net.memory_bytes() >> 20
    );
}
