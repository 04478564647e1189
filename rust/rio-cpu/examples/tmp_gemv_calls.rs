// TEMPORARY experiment (H7): single-thread GEMV bandwidth by rows per call.
use std::time::Instant;
use rio_core::bf16;
use rio_cpu::gemm::{matmul_nt_with, MatRef};
use rio_cpu::features::Isa;

fn main() {
    let (n, k) = (262144usize, 2048usize);
    let w: Vec<bf16> = (0..n * k).map(|i| bf16::from_f32(((i * 7919) % 1000) as f32 * 1e-3)).collect();
    let x: Vec<bf16> = (0..8 * k).map(|i| bf16::from_f32((i % 13) as f32 * 0.1)).collect();
    let mut out = vec![0f32; 8 * n];
    let wm = MatRef::from_slice(&w, n, k);
    for rows in [1usize, 8] {
        let xm = MatRef::from_slice(&x, rows, k);
        for per_call in [32usize, 256, 262144] {
            let mut best = f64::INFINITY;
            for _ in 0..3 {
                let t = Instant::now();
                for n0 in (0..n).step_by(per_call) {
                    let len = per_call.min(n - n0);
                    matmul_nt_with(Isa::Amx, xm, wm.rows_range(n0, len), &mut out[n0..], n);
                }
                best = best.min(t.elapsed().as_secs_f64());
            }
            println!("rows {rows} per_call {per_call:6}: {:.1} GB/s", (n * k * 2) as f64 / best / 1e9);
        }
    }
}
