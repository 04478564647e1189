//! Times the single-thread GEMM kernels on one `M x N x K` bf16 product, in this thread's CPU
//! time (so other processes on a busy machine do not count), to tune a kernel in isolation.
//!
//! `cargo run --release -p rio-cpu --example gemm_kernel -- [M N K] [reps]` (default 1024 1024 2048, 10)
use std::time::Instant;

use rio_core::bf16;
use rio_cpu::features::{self, Isa};
use rio_cpu::gemm::{matmul_nt_with, MatRef};

/// Nanoseconds this thread has run (Linux schedstat; 0 elsewhere).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat").ok().and_then(|s| s.split_whitespace().next()?.parse().ok()).unwrap_or(0)
}

fn random_bf16(len: usize, seed: u64) -> Vec<bf16> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            bf16::from_f32((s >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
        })
        .collect()
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("integer arguments")).collect();
    let (m, n, k) = match args[..] {
        [m, n, k, ..] => (m, n, k),
        _ => (1024, 1024, 2048),
    };
    let reps = args.get(3).copied().unwrap_or(10).max(1);
    let (x, w) = (random_bf16(m * k, 1), random_bf16(n * k, 2));
    let (xm, wm) = (MatRef::from_slice(&x, m, k), MatRef::from_slice(&w, n, k));
    let mut out = vec![0f32; m * n];
    let flop = 2.0 * (m * n * k) as f64;
    for isa in [Isa::Amx, Isa::Avx512Bf16] {
        if !features::available_isas().contains(&isa) {
            continue;
        }
        let (mut wall, mut cpu) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..reps + 1 {
            let (start, cpu_start) = (Instant::now(), thread_cpu_ns());
            matmul_nt_with(isa, xm, wm, &mut out, n);
            wall = wall.min(start.elapsed().as_secs_f64());
            cpu = cpu.min((thread_cpu_ns() - cpu_start) as f64 * 1e-9);
        }
        println!("{:12} {m}x{n}x{k}: wall {:7.2} ms ({:5.0} GFLOP/s), cpu {:7.2} ms ({:5.0} GFLOP/s)", isa.name(), wall * 1e3, flop / wall / 1e9, cpu * 1e3, flop / cpu / 1e9);
    }
}
