// TEMPORARY experiment (H7): single-thread AMX dense GEMM rate by thread CPU time.
use rio_core::bf16;
use rio_cpu::features::Isa;
use rio_cpu::gemm::{matmul_nt_with, MatRef};

fn thread_cpu_ns() -> u64 {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    s.split_whitespace().next().unwrap().parse().unwrap()
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().unwrap()).collect();
    let (m, n, k) = (args[0], args[1], args[2]);
    let w: Vec<bf16> = (0..n * k).map(|i| bf16::from_f32(((i * 7919) % 1000) as f32 * 1e-3)).collect();
    let x: Vec<bf16> = (0..m * k).map(|i| bf16::from_f32((i % 13) as f32 * 0.1)).collect();
    let mut out = vec![0f32; m * n];
    let (xm, wm) = (MatRef::from_slice(&x, m, k), MatRef::from_slice(&w, n, k));
    let mut best = f64::INFINITY;
    for _ in 0..15 {
        let t = thread_cpu_ns();
        matmul_nt_with(Isa::Amx, xm, wm, &mut out, n);
        best = best.min((thread_cpu_ns() - t) as f64 * 1e-9);
    }
    println!("{m}x{n}x{k}: {:.0} GFLOP/s per core (thread CPU time)", 2.0 * (m * n * k) as f64 / best / 1e9);
}
