//! Times the single-thread GEMM kernels on one `M x N x K` bf16 product (best of `reps`: other
//! work on a shared machine only ever adds time), to tune a kernel in isolation.
//!
//! `cargo run --release -p rio-cpu --example gemm_kernel -- [M N K] [reps] [mats]` (default 1024
//! 1024 2048, 10, 1): with `mats` > 1, each repetition runs over that many distinct weight
//! matrices in turn, so the weights come from memory as in a MoE layer's experts.
use std::time::Instant;

use rio_core::bf16;
use rio_cpu::features::{self, Isa};
use rio_cpu::gemm::{matmul_nt_with, MatRef};

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
    let mats = args.get(4).copied().unwrap_or(1).max(1);
    let (x, w) = (random_bf16(m * k, 1), random_bf16(mats * n * k, 2));
    let xm = MatRef::from_slice(&x, m, k);
    let mut out = vec![0f32; m * n];
    let flop = 2.0 * (mats * m * n * k) as f64;
    for isa in [Isa::Amx, Isa::Avx512Bf16] {
        if !features::available_isas().contains(&isa) {
            continue;
        }
        let mut best = f64::INFINITY;
        for _ in 0..reps + 1 {
            let start = Instant::now();
            for w in w.chunks_exact(n * k) {
                matmul_nt_with(isa, xm, MatRef::from_slice(w, n, k), &mut out, n);
            }
            best = best.min(start.elapsed().as_secs_f64());
        }
        println!("{:12} {m}x{n}x{k} x {mats}: {:7.2} ms ({:5.0} GFLOP/s)", isa.name(), best * 1e3, flop / best / 1e9);
    }
}
