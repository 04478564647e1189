//! The CUDA backend against the CPU backend on host tensors (copied in and out per call). Needs a
//! GPU: without one each test prints why and returns (the Python GPU tests cover far more shapes).
use rio_core::moe::{ExpertMats, MoeWeights, RouterConfig, SharedExpert};
use rio_core::{bf16, Backend, Tensor, TensorRef};
use rio_cpu::CpuBackend;
use rio_cuda::CudaBackend;

fn backend() -> Option<CudaBackend> {
    let a = rio_cuda::probe();
    if !a.available {
        eprintln!("skipped: no CUDA GPU: {}", a.reason);
        return None;
    }
    Some(CudaBackend::new().expect("the probe said the GPU is usable"))
}

/// Deterministic values in [-scale, scale) as bf16.
fn random(n: usize, seed: u64, scale: f32) -> Vec<bf16> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            bf16::from_f32(((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale)
        })
        .collect()
}

#[test]
fn routing_and_dispatch_match_the_cpu_backend() {
    let Some(gpu) = backend() else { return };
    let (t, h, e) = (300, 128, 64);
    let x = random(t * h, 1, 1.0);
    let router = random(e * h, 2, 0.2);
    let (xv, rv) = (TensorRef::from_slice(&x, &[t, h]).unwrap(), TensorRef::from_slice(&router, &[e, h]).unwrap());
    let config = RouterConfig { top_k: 8, renormalize: true };
    let want = CpuBackend.moe_route(&xv, &rv, config).unwrap();
    let got = gpu.moe_route(&xv, &rv, config).unwrap();
    let same = got.experts.iter().zip(&want.experts).filter(|(a, b)| a == b).count();
    assert!(same * 100 >= want.experts.len() * 99, "only {same} of {} expert choices agree", want.experts.len());
    for (g, w) in got.weights.iter().zip(&want.weights) {
        assert!((g - w).abs() <= 1e-4, "routing weight {g} vs CPU {w}");
    }
    assert_eq!(gpu.moe_dispatch(&want, e).unwrap(), CpuBackend.moe_dispatch(&want, e).unwrap());
}

#[test]
fn moe_forward_matches_the_cpu_backend_at_decode_and_prefill_sizes() {
    let Some(gpu) = backend() else { return };
    let (h, i, e, si) = (256, 128, 32, 128);
    let router = random(e * h, 3, 0.1);
    let gate_up = random(e * 2 * i * h, 4, 0.06);
    let down = random(e * h * i, 5, 0.09);
    let (sg, su, sd, sgate) = (random(si * h, 6, 0.06), random(si * h, 7, 0.06), random(h * si, 8, 0.09), random(h, 9, 0.06));
    let shared = SharedExpert {
        mats: ExpertMats {
            gate: TensorRef::from_slice(&sg, &[si, h]).unwrap(),
            up: TensorRef::from_slice(&su, &[si, h]).unwrap(),
            down: TensorRef::from_slice(&sd, &[h, si]).unwrap(),
        },
        gate_weight: Some(TensorRef::from_slice(&sgate, &[1, h]).unwrap()),
    };
    let weights = MoeWeights::fused(
        TensorRef::from_slice(&router, &[e, h]).unwrap(),
        TensorRef::from_slice(&gate_up, &[e, 2 * i, h]).unwrap(),
        TensorRef::from_slice(&down, &[e, h, i]).unwrap(),
        Some(shared),
    )
    .unwrap();
    let config = RouterConfig { top_k: 4, renormalize: true };
    for t in [1, 64, 65, 500] {
        let x = random(t * h, 10 + t as u64, 1.0);
        let xv = TensorRef::from_slice(&x, &[t, h]).unwrap();
        let mut want = Tensor::zeros(rio_core::DType::F32, &[t, h]);
        let mut got = Tensor::zeros(rio_core::DType::F32, &[t, h]);
        CpuBackend.moe_forward(&xv, &weights, config, &mut want.view_mut()).unwrap();
        gpu.moe_forward(&xv, &weights, config, &mut got.view_mut()).unwrap();
        let (g, w) = (got.as_slice::<f32>(), want.as_slice::<f32>());
        let scale = w.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        let err = g.iter().zip(w).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
        // bf16 activations: both backends round the SwiGLU output to bf16, in different orders.
        assert!(err <= 2e-2, "{t} tokens: max error {err} of the largest value");
    }
}
