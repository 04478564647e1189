//! Times one MoE layer of random bf16 weights (default: the Qwen3.5-35B shape) against this
//! machine's read bandwidth and dense bf16 GEMM rate, to guide kernel tuning.
//!
//! `cargo run --release -p rio-cpu --example moe_layer -- [--experts 256] [--top-k 8]
//!  [--hidden 2048] [--inter 512] [--shared 512] [--decode 1,8,64] [--prefill 512,2048] [--gemv 1,8]
//!  [--reps 5] [--skip-peaks]`
//!
//! Caches are flushed (a 1 GiB read) before every timed call, so weights come from memory as
//! in a model whose other layers ran in between. Bytes read count the active experts, the router
//! and the shared expert, as `rio-rt bench experts` does.
use std::time::Instant;

use rio_core::moe::{ExpertMats, MoeWeights, RouterConfig, SharedExpert};
use rio_core::{bf16, Tensor, TensorRef};
use rio_cpu::{features, moe, peak, threads};

struct Args {
    experts: usize,
    top_k: usize,
    hidden: usize,
    inter: usize,
    /// Intermediate size of the shared expert (0: none).
    shared: usize,
    decode: Vec<usize>,
    /// Token counts for the dense GEMV probe (`matmul_nt` against a 32k x H lm_head).
    gemv: Vec<usize>,
    prefill: Vec<usize>,
    reps: usize,
    /// Skip the machine measurements (for profiling the layer alone).
    skip_peaks: bool,
}

fn parse() -> Args {
    let mut a = Args {
        experts: 256,
        top_k: 8,
        hidden: 2048,
        inter: 512,
        shared: 512,
        decode: vec![1, 8, 64],
        gemv: vec![1, 8],
        prefill: vec![512, 2048],
        reps: 5,
        skip_peaks: false,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let list = |s: &str| s.split(',').filter(|v| !v.is_empty()).map(|v| v.parse().expect("a list of integers")).collect();
    let mut argv = argv.as_slice();
    if let Some(pos) = argv.iter().position(|s| s == "--skip-peaks") {
        a.skip_peaks = true;
        assert_eq!(pos, argv.len() - 1, "--skip-peaks goes last");
        argv = &argv[..pos];
    }
    for pair in argv.chunks(2) {
        let value = pair.get(1).unwrap_or_else(|| panic!("{} needs a value", pair[0]));
        let num = || value.parse::<usize>().unwrap_or_else(|_| panic!("{} takes an integer, got {value}", pair[0]));
        match pair[0].as_str() {
            "--experts" => a.experts = num(),
            "--top-k" => a.top_k = num(),
            "--hidden" => a.hidden = num(),
            "--inter" => a.inter = num(),
            "--shared" => a.shared = num(),
            "--decode" => a.decode = list(value),
            "--gemv" => a.gemv = list(value),
            "--prefill" => a.prefill = list(value),
            "--reps" => a.reps = num().max(1),
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn random_bf16(len: usize, seed: u64, scale: f32) -> Vec<bf16> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            bf16::from_f32(((s >> 40) as f32 / (1u64 << 23) as f32 - 1.0) * scale)
        })
        .collect()
}

/// Nanoseconds all threads of this process have run (Linux schedstat; 0 elsewhere): unlike wall
/// time, it leaves out the time other processes on a busy machine hold the cores.
fn cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// `gemm::matmul_nt` on an n³ bf16 problem: best wall and CPU time of `reps` runs.
fn dense_gemm(n: usize, reps: usize) {
    let x = random_bf16(n * n, 7, 1.0);
    let w = random_bf16(n * n, 8, 1.0);
    let mut out = vec![0f32; n * n];
    let (xm, wm) = (rio_cpu::gemm::MatRef::from_slice(&x, n, n), rio_cpu::gemm::MatRef::from_slice(&w, n, n));
    let (mut best, mut best_cpu) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..reps + 1 {
        let (start, cpu_start) = (Instant::now(), cpu_ns());
        rio_cpu::gemm::matmul_nt(xm, wm, &mut out, n);
        best = best.min(start.elapsed().as_secs_f64());
        best_cpu = best_cpu.min((cpu_ns() - cpu_start) as f64 * 1e-9);
    }
    let flop = 2.0 * (n * n * n) as f64;
    println!(
        "matmul_nt {n}^3 bf16: {:.2} ms ({:.0} GFLOP/s), cpu {:.2} ms ({:.0} GFLOP/s per busy core)",
        best * 1e3,
        flop / best / 1e9,
        best_cpu * 1e3,
        flop / best_cpu / 1e9
    );
}

/// `gemm::matmul_nt` of `tokens` rows against a 32k x `hidden` bf16 matrix (an lm_head): best
/// time of `reps` cold calls, as a share of the read bandwidth.
fn dense_gemv(tokens: usize, hidden: usize, reps: usize, flush: &peak::StreamBuffer, read_gb_s: f64) {
    const VOCAB: usize = 32 * 1024;
    let w = random_bf16(VOCAB * hidden, 9, 1.0);
    let x = random_bf16(tokens * hidden, 10, 1.0);
    let mut out = vec![0f32; tokens * VOCAB];
    let (xm, wm) = (rio_cpu::gemm::MatRef::from_slice(&x, tokens, hidden), rio_cpu::gemm::MatRef::from_slice(&w, VOCAB, hidden));
    let mut best = f64::INFINITY;
    for _ in 0..reps + 1 {
        std::hint::black_box(flush.read_all());
        let start = Instant::now();
        rio_cpu::gemm::matmul_nt(xm, wm, &mut out, VOCAB);
        best = best.min(start.elapsed().as_secs_f64());
    }
    let gb_s = (VOCAB * hidden * 2) as f64 / best / 1e9;
    println!(
        "matmul_nt {tokens:2} x {VOCAB} x {hidden} bf16 (GEMV): {:.3} ms, {gb_s:.1} GB/s ({:.1}% of read)",
        best * 1e3,
        100.0 * gb_s / read_gb_s
    );
}

fn main() {
    let a = parse();
    let (e, h, i, k) = (a.experts, a.hidden, a.inter, a.top_k);
    println!(
        "isa {}, {} threads; layer E={e} top-{k} H={h} I={i} shared {} bf16",
        features::active_isa().name(),
        threads::num_threads(),
        a.shared
    );
    let (read_gb_s, gemm_gflops) = if a.skip_peaks {
        (f64::NAN, f64::NAN)
    } else {
        (peak::read_bandwidth(1 << 30, 1.0).expect("read bandwidth"), peak::gemm_peak(2048, 2048, 2048, 1.0).expect("gemm peak"))
    };
    println!("read bandwidth {read_gb_s:.1} GB/s; dense bf16 GEMM 2048^3 {gemm_gflops:.0} GFLOP/s");
    dense_gemm(2048, a.reps);
    let flush = peak::StreamBuffer::new(1 << 30).expect("a 1 GiB flush buffer");
    for &tokens in &a.gemv {
        dense_gemv(tokens, h, a.reps, &flush, read_gb_s);
    }

    let router = random_bf16(e * h, 1, 1.0);
    let gate_up = random_bf16(e * 2 * i * h, 2, 0.05);
    let down = random_bf16(e * h * i, 3, 0.05);
    let t = |d: &'static [bf16], s: &[usize]| TensorRef::from_slice(d, s).unwrap();
    let (router, gate_up, down) = (router.leak() as &[bf16], gate_up.leak() as &[bf16], down.leak() as &[bf16]);
    let shared = (a.shared > 0).then(|| {
        let s = a.shared;
        let leak = |len, seed, scale| random_bf16(len, seed, scale).leak() as &[bf16];
        SharedExpert {
            mats: ExpertMats {
                gate: t(leak(s * h, 4, 0.05), &[s, h]),
                up: t(leak(s * h, 5, 0.05), &[s, h]),
                down: t(leak(h * s, 6, 0.05), &[h, s]),
            },
            gate_weight: Some(t(leak(h, 11, 0.05), &[1, h])),
        }
    });
    let weights = MoeWeights::fused(t(router, &[e, h]), t(gate_up, &[e, 2 * i, h]), t(down, &[e, h, i]), shared).unwrap();
    let config = RouterConfig { top_k: k, renormalize: true };
    let expert_bytes = 3 * i * h * 2;
    let always_bytes = (e * h + 3 * a.shared * h + if a.shared > 0 { h } else { 0 }) * 2;
    let per_token_flop = 2 * (k * 3 * i * h + e * h + 3 * a.shared * h);

    for (phase, list) in [("decode", &a.decode), ("prefill", &a.prefill)] {
        for &tokens in list {
            let mut times = Vec::new();
            let mut cpu = Vec::new();
            let mut bytes = 0usize;
            for rep in 0..a.reps + 1 {
                let x = random_bf16(tokens * h, 100 + rep as u64, 1.0);
                let xt = TensorRef::from_slice(&x, &[tokens, h]).unwrap();
                let routing = moe::router::route(&xt, &weights.router, config).unwrap();
                let mut used = vec![false; e];
                routing.experts.iter().for_each(|&x| used[x as usize] = true);
                let mut out = Tensor::zeros(rio_core::DType::BF16, &[tokens, h]);
                std::hint::black_box(flush.read_all());
                let (start, cpu_start) = (Instant::now(), cpu_ns());
                moe::forward(&xt, &weights, config, &mut out.view_mut()).unwrap();
                let dt = start.elapsed().as_secs_f64();
                let cpu_dt = (cpu_ns() - cpu_start) as f64 * 1e-9;
                if rep > 0 {
                    // the first call warms the pool and the allocator
                    times.push(dt);
                    cpu.push(cpu_dt);
                    bytes += used.iter().filter(|&&u| u).count() * expert_bytes + always_bytes;
                }
            }
            times.sort_by(f64::total_cmp);
            cpu.sort_by(f64::total_cmp);
            // The best repetition: other work on the machine only ever adds time.
            let best = times[0];
            let mean_bytes = bytes as f64 / a.reps as f64;
            let gb_s = mean_bytes / best / 1e9;
            let gflops = (tokens * per_token_flop) as f64 / best / 1e9;
            println!(
                "{phase:7} {tokens:5} tokens: {:8.3} ms (cpu {:8.3} ms)  {gb_s:6.1} GB/s ({:5.1}% of read)  {gflops:7.1} GFLOP/s ({:5.1}% of GEMM)",
                best * 1e3,
                cpu[0] * 1e3,
                100.0 * gb_s / read_gb_s,
                100.0 * gflops / gemm_gflops
            );
        }
    }
}
