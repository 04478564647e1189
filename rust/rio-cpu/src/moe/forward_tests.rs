//! The whole block and the grouped expert kernels against a plain f64 implementation written
//! here, for every dtype and instruction set, on the decode (few rows per expert) and prefill
//! (many rows per expert, the tile path) sizes, with experts that get no rows.
use rio_core::moe::{ExpertMats, MoeWeights, RouterConfig, SharedExpert};
use rio_core::{DType, Tensor, TensorRef};

use super::{decode, experts, forward, router};
use crate::features;
use crate::gemm::tests::{Data, Rng};
use crate::gemm::MatRef;

fn tensor<'a>(d: &'a Data, shape: &[usize]) -> TensorRef<'a> {
    match d {
        Data::F32(v) => TensorRef::from_slice(v, shape).unwrap(),
        Data::F16(v) => TensorRef::from_slice(v, shape).unwrap(),
        Data::Bf16(v) => TensorRef::from_slice(v, shape).unwrap(),
    }
}

fn rows_f64(t: &TensorRef<'_>) -> Vec<Vec<f64>> {
    let m = MatRef::from_tensor(t, "t").unwrap();
    (0..m.rows).map(|r| (0..m.cols).map(|c| m.get_f32(r, c) as f64).collect()).collect()
}

/// One expert on one row in f64: the output and a bound on the error of a kernel that rounds
/// the SwiGLU activation to bf16 (`act_rounding` = 2^-8, else 0) and accumulates in f32.
fn expert_f64(x: &[f64], m: &ExpertMats<'_>, act_rounding: f64) -> (Vec<f64>, Vec<f64>) {
    const F32_SUM: f64 = 1e-5;
    let (gate, up, down) = (rows_f64(&m.gate), rows_f64(&m.up), rows_f64(&m.down));
    let dot = |w: &[f64]| -> (f64, f64) { (w.iter().zip(x).map(|(a, b)| a * b).sum(), w.iter().zip(x).map(|(a, b)| (a * b).abs()).sum()) };
    let mut act = Vec::new();
    let mut act_err = Vec::new();
    for (g_row, u_row) in gate.iter().zip(&up) {
        let ((g, g_abs), (u, u_abs)) = (dot(g_row), dot(u_row));
        let silu = g / (1.0 + (-g).exp());
        act.push(silu * u);
        // |silu'| <= 1.1: errors of g and u from f32 sums, then the rounding of the activation.
        act_err.push(F32_SUM * (1.1 * u.abs() * g_abs + silu.abs() * u_abs) + act_rounding * (silu * u).abs());
    }
    let y = down.iter().map(|d| d.iter().zip(&act).map(|(a, b)| a * b).sum()).collect();
    let err = down.iter().map(|d| d.iter().zip(&act).zip(&act_err).map(|((w, a), e)| w.abs() * (e + F32_SUM * a.abs())).sum()).collect();
    (y, err)
}

fn assert_close(got: &[f32], want: &[f64], tol: &[f64], what: &str) {
    for (i, ((&g, &w), &t)) in got.iter().zip(want).zip(tol).enumerate() {
        assert!((g as f64 - w).abs() <= t + 1e-12, "{what}: element {i} got {g}, want {w} (tolerance {t:e})");
    }
}

fn act_rounding(dtype: DType) -> f64 {
    if dtype == DType::BF16 {
        2f64.powi(-8)
    } else {
        0.0
    }
}

struct Block {
    router: Data,
    gate_up: Data,
    down: Data,
    shared: [Data; 4],
}

const E: usize = 6;
const H: usize = 40;
const I: usize = 24;
const IS: usize = 20;

impl Block {
    fn random(dtype: DType, rng: &mut Rng) -> Block {
        Block {
            router: Data::random(dtype, E * H, rng),
            gate_up: Data::random(dtype, E * 2 * I * H, rng),
            down: Data::random(dtype, E * H * I, rng),
            shared: [
                Data::random(dtype, IS * H, rng),
                Data::random(dtype, IS * H, rng),
                Data::random(dtype, H * IS, rng),
                Data::random(dtype, H, rng),
            ],
        }
    }
    fn weights(&self) -> MoeWeights<'_> {
        let [g, u, d, gw] = &self.shared;
        let shared = SharedExpert {
            mats: ExpertMats { gate: tensor(g, &[IS, H]), up: tensor(u, &[IS, H]), down: tensor(d, &[H, IS]) },
            gate_weight: Some(tensor(gw, &[1, H])),
        };
        MoeWeights::fused(
            tensor(&self.router, &[E, H]),
            tensor(&self.gate_up, &[E, 2 * I, H]),
            tensor(&self.down, &[E, H, I]),
            Some(shared),
        )
        .unwrap()
    }
}

/// The block on `x` in f64 (routing from `router::route`, itself tested against hand-computed
/// cases): the output and its tolerance (see `expert_f64`).
fn block_f64(x: &TensorRef<'_>, weights: &MoeWeights<'_>, config: RouterConfig) -> (Vec<f64>, Vec<f64>) {
    let (t, h) = (x.shape()[0], weights.hidden());
    let rounding = act_rounding(weights.dtype());
    let routing = router::route(x, &weights.router, config).unwrap();
    let xs = rows_f64(x);
    let mut want = vec![0f64; t * h];
    let mut tol = vec![0f64; t * h];
    for (tok, xrow) in xs.iter().enumerate() {
        for j in 0..config.top_k {
            let slot = tok * config.top_k + j;
            let (e, wgt) = (routing.experts[slot] as usize, routing.weights[slot] as f64);
            let (y, err) = expert_f64(xrow, &weights.experts[e], rounding);
            for c in 0..h {
                want[tok * h + c] += wgt * y[c];
                tol[tok * h + c] += wgt.abs() * err[c];
            }
        }
        let Some(shared) = weights.shared.as_ref() else { continue };
        let (y, err) = expert_f64(xrow, &shared.mats, rounding);
        let (sg, logit_abs) = match &shared.gate_weight {
            Some(g) => {
                let gate_w = rows_f64(g);
                let logit: f64 = gate_w[0].iter().zip(xrow).map(|(a, b)| a * b).sum();
                (1.0 / (1.0 + (-logit).exp()), gate_w[0].iter().zip(xrow).map(|(a, b)| (a * b).abs()).sum())
            }
            None => (1.0, 0.0),
        };
        for c in 0..h {
            want[tok * h + c] += sg * y[c];
            tol[tok * h + c] += sg * err[c] + 0.25 * 1e-5 * logit_abs * y[c].abs();
        }
    }
    (want, tol)
}

#[test]
fn forward_matches_a_plain_f64_block() {
    let mut rng = Rng::new(3);
    for dtype in [DType::BF16, DType::F16, DType::F32] {
        let block = Block::random(dtype, &mut rng);
        let weights = block.weights();
        let config = RouterConfig { top_k: 2, renormalize: true };
        // 1 and 3 tokens: the decode path, most experts idle; 40: decode with several rows per
        // expert (the tile path inside the pieces); 300: the prefill path.
        for t in [0usize, 1, 3, 40, 300] {
            let xd = Data::random(dtype, t * H, &mut rng);
            let x = tensor(&xd, &[t, H]);
            let mut out = Tensor::zeros(DType::F32, &[t, H]);
            crate::scratch::poison();
            forward(&x, &weights, config, &mut out.view_mut()).unwrap();
            let (want, tol) = block_f64(&x, &weights, config);
            assert_close(out.as_slice::<f32>(), &want, &tol, &format!("{dtype} T {t}"));
        }
    }
}

/// The fused decode block on every instruction set, with pieces of the smallest size (16 weight
/// rows: many pieces per expert, a partial last one) and of the default size, over token
/// counts, k up to E, and with the shared expert gated, ungated or absent.
#[test]
fn decode_block_matches_f64_on_every_isa() {
    let mut rng = Rng::new(29);
    for dtype in [DType::BF16, DType::F16, DType::F32] {
        let block = Block::random(dtype, &mut rng);
        let gated = block.weights();
        let mut ungated = block.weights();
        ungated.shared.as_mut().unwrap().gate_weight = None;
        let mut unshared = block.weights();
        unshared.shared = None;
        for (weights, what) in [(&gated, "gated shared"), (&ungated, "ungated shared"), (&unshared, "no shared")] {
            for (t, top_k) in [(1usize, 2usize), (2, E), (5, 3), (17, 2)] {
                let config = RouterConfig { top_k, renormalize: top_k < E };
                let xd = Data::random(dtype, t * H, &mut rng);
                let x = tensor(&xd, &[t, H]);
                let (want, tol) = block_f64(&x, weights, config);
                for isa in features::available_isas() {
                    for piece_bytes in [1, 256 << 10] {
                        let mut got = vec![0f32; t * H];
                        crate::scratch::poison();
                        let run = match super::compute_dtype(dtype) {
                            DType::BF16 => decode::forward_with::<rio_core::bf16>,
                            _ => decode::forward_with::<f32>,
                        };
                        run(isa, piece_bytes, &x, weights, config, &mut got).unwrap();
                        let case = format!("{dtype} {what} T {t} k {top_k} on {} pieces of {piece_bytes} B", isa.name());
                        assert_close(&got, &want, &tol, &case);
                    }
                }
            }
        }
    }
}

/// Every token on one expert (its block has all T rows, the tile path's size at 64), the other
/// slot on expert 0 (ties go to the lower index): x and router row 3 positive, the rest zero.
#[test]
fn decode_block_with_every_token_on_one_expert_matches_f64() {
    let mut rng = Rng::new(31);
    let mut block = Block::random(DType::BF16, &mut rng);
    let positive = |n: usize, rng: &mut Rng| (0..n).map(|_| rio_core::bf16::from_f32(rng.next().abs() + 0.1)).collect::<Vec<_>>();
    let mut router = vec![rio_core::bf16::ZERO; E * H];
    router[3 * H..4 * H].copy_from_slice(&positive(H, &mut rng));
    block.router = Data::Bf16(router);
    let weights = block.weights();
    let config = RouterConfig { top_k: 2, renormalize: true };
    for t in [1usize, 8, 64] {
        let xd = Data::Bf16(positive(t * H, &mut rng));
        let x = tensor(&xd, &[t, H]);
        let routing = router::route(&x, &weights.router, config).unwrap();
        assert!(routing.experts.chunks(2).all(|s| s == [3, 0]), "every token routes to experts 3 and 0");
        let (want, tol) = block_f64(&x, &weights, config);
        for isa in features::available_isas() {
            let mut got = vec![0f32; t * H];
            crate::scratch::poison();
            decode::forward_with::<rio_core::bf16>(isa, 1, &x, &weights, config, &mut got).unwrap();
            assert_close(&got, &want, &tol, &format!("T {t} on one expert on {}", isa.name()));
        }
    }
}

/// NaN in x reaches the router's logits: the fused block reports it like the router does.
#[test]
fn decode_block_reports_nan_router_logits() {
    let mut rng = Rng::new(37);
    let block = Block::random(DType::F32, &mut rng);
    let weights = block.weights();
    let mut xv = match Data::random(DType::F32, 3 * H, &mut rng) {
        Data::F32(v) => v,
        _ => unreachable!("f32 data"),
    };
    xv[H + 5] = f32::NAN;
    let x = TensorRef::from_slice(&xv, &[3, H]).unwrap();
    let mut out = Tensor::zeros(DType::F32, &[3, H]);
    let err = forward(&x, &weights, RouterConfig { top_k: 2, renormalize: true }, &mut out.view_mut()).unwrap_err().to_string();
    assert!(err.contains("token 1") && err.contains("NaN"), "{err}");
}

#[test]
fn experts_match_f64_on_every_isa() {
    let mut rng = Rng::new(5);
    // Expert rows: none, one, a few (dot products), many (tiles), none at the end.
    let offsets = [0u32, 0, 1, 4, 40, 41, 41];
    let s = *offsets.last().unwrap() as usize;
    for dtype in [DType::BF16, DType::F16, DType::F32] {
        let block = Block::random(dtype, &mut rng);
        let weights = block.weights();
        let compute = super::compute_dtype(dtype);
        let xd = Data::random(compute, s * H, &mut rng);
        let xt = Tensor::from_vec(
            match &xd {
                Data::Bf16(v) => v.iter().map(|b| b.to_f32()).collect::<Vec<f32>>(),
                Data::F32(v) => v.clone(),
                Data::F16(_) => unreachable!("compute dtypes are bf16 or f32"),
            },
            &[s, H],
        )
        .unwrap();
        let xs = super::rows::gather(&xt.view(), None, 1, compute).unwrap();
        let xrows = rows_f64(&xs.view());
        for isa in features::available_isas() {
            let mut got = vec![0f32; s * H];
            let targets = super::combine::RowTargets::per_token(s, None);
            crate::scratch::poison();
            experts::swiglu_experts_with(isa, &xs, &weights.experts, &offsets, &targets, &mut got);
            let mut want = vec![0f64; s * H];
            let mut tol = vec![0f64; s * H];
            for e in 0..E {
                for r in offsets[e] as usize..offsets[e + 1] as usize {
                    let (y, err) = expert_f64(&xrows[r], &weights.experts[e], act_rounding(dtype));
                    want[r * H..][..H].copy_from_slice(&y);
                    tol[r * H..][..H].copy_from_slice(&err);
                }
            }
            assert_close(&got, &want, &tol, &format!("{dtype} on {}", isa.name()));
        }
    }
}

#[test]
fn an_expert_with_more_rows_than_a_packed_chunk_matches_f64() {
    // 520 rows of 1056 bf16 columns pack into more than one 1 MiB chunk of the tile path; the
    // second chunk ends in a partial block.
    const ROWS: usize = 520;
    const HID: usize = 1056;
    const INT: usize = 40;
    let mut rng = Rng::new(17);
    let [g, u, d, x] = [INT * HID, INT * HID, HID * INT, ROWS * HID].map(|n| Data::random(DType::BF16, n, &mut rng));
    let mats = ExpertMats { gate: tensor(&g, &[INT, HID]), up: tensor(&u, &[INT, HID]), down: tensor(&d, &[HID, INT]) };
    let xs = match &x {
        Data::Bf16(v) => Tensor::from_vec(v.clone(), &[ROWS, HID]).unwrap(),
        _ => unreachable!("bf16 data"),
    };
    let xrows = rows_f64(&xs.view());
    let mut want = vec![0f64; ROWS * HID];
    let mut tol = vec![0f64; ROWS * HID];
    for (r, xr) in xrows.iter().enumerate() {
        let (y, err) = expert_f64(xr, &mats, act_rounding(DType::BF16));
        want[r * HID..][..HID].copy_from_slice(&y);
        tol[r * HID..][..HID].copy_from_slice(&err);
    }
    for isa in features::available_isas() {
        let mut got = vec![0f32; ROWS * HID];
        let targets = super::combine::RowTargets::per_token(ROWS, None);
        experts::swiglu_experts_with(isa, &xs, std::slice::from_ref(&mats), &[0, ROWS as u32], &targets, &mut got);
        assert_close(&got, &want, &tol, &format!("{ROWS} rows on {}", isa.name()));
    }
}

#[test]
fn experts_packed_straight_from_the_dispatch_order_match_f64() {
    // 30 tokens, top-2: 60 slots in a scrambled dispatch order; experts with a few rows (dot
    // products), many (tiles, packed straight from x), none, and many again.
    const T: usize = 30;
    const K: usize = 2;
    const INT: usize = 32;
    let offsets = [0u32, 3, 30, 30, 60];
    let order: Vec<u32> = (0..(T * K) as u32).map(|p| p * 7 % (T * K) as u32).collect();
    let mut rng = Rng::new(23);
    let data: Vec<[Data; 3]> = (0..4).map(|_| [INT * H, INT * H, H * INT].map(|n| Data::random(DType::BF16, n, &mut rng))).collect();
    let mats: Vec<ExpertMats<'_>> = data
        .iter()
        .map(|[g, u, d]| ExpertMats { gate: tensor(g, &[INT, H]), up: tensor(u, &[INT, H]), down: tensor(d, &[H, INT]) })
        .collect();
    let xd = Data::random(DType::BF16, T * H, &mut rng);
    let x = tensor(&xd, &[T, H]);
    let src = MatRef::from_tensor(&x, "x").unwrap();
    let xrows = rows_f64(&x);
    let (mut want, mut tol) = (vec![0f64; T * K * H], vec![0f64; T * K * H]);
    for e in 0..4 {
        for p in offsets[e] as usize..offsets[e + 1] as usize {
            let (y, err) = expert_f64(&xrows[order[p] as usize / K], &mats[e], act_rounding(DType::BF16));
            want[p * H..][..H].copy_from_slice(&y);
            tol[p * H..][..H].copy_from_slice(&err);
        }
    }
    for isa in features::available_isas() {
        let direct = experts::packs_direct(isa, src, &mats).then_some(experts::Direct { source: src, order: &order, per_row: K });
        assert_eq!(direct.is_some(), isa == features::Isa::Amx, "AMX packs bf16 rows straight from x");
        // Rows the kernels must not read stay NaN.
        let mut xs = vec![rio_core::bf16::from_f32(f32::NAN); T * K * H];
        for e in 0..4 {
            let (first, end) = (offsets[e] as usize, offsets[e + 1] as usize);
            if direct.is_none() || !experts::uses_tiles(isa, DType::BF16, DType::BF16, end - first) {
                super::rows::gather_into(src, Some(&order[first..end]), K, &mut xs[first * H..end * H]);
            }
        }
        let mut got = vec![0f32; T * K * H];
        let targets = super::combine::RowTargets::per_token(T * K, None);
        crate::scratch::poison();
        experts::swiglu_experts_rows(isa, MatRef::from_slice(&xs, T * K, H), direct, &mats, &offsets, &targets, &mut got);
        assert_close(&got, &want, &tol, &format!("dispatch order on {}", isa.name()));
    }
}

/// Decode blocks called at once from several threads and from inside the pool's own tasks (as a
/// model running layers on the pool would): every call finishes, with the right answer.
#[test]
fn decode_blocks_run_concurrently_and_nested_in_the_pool() {
    use rayon::prelude::*;
    let mut rng = Rng::new(41);
    let block = Block::random(DType::BF16, &mut rng);
    let weights = block.weights();
    let config = RouterConfig { top_k: 2, renormalize: true };
    let xd = Data::random(DType::BF16, 3 * H, &mut rng);
    let x = tensor(&xd, &[3, H]);
    let (want, tol) = block_f64(&x, &weights, config);
    let call = || {
        let mut out = Tensor::zeros(DType::F32, &[3, H]);
        forward(&x, &weights, config, &mut out.view_mut()).unwrap();
        assert_close(out.as_slice::<f32>(), &want, &tol, "concurrent decode block");
    };
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| (0..20).for_each(|_| call()));
        }
        s.spawn(|| crate::threads::pool().install(|| (0..40).into_par_iter().for_each(|_| call())));
    });
}

/// Experts with one or two blocks of rows and whole column steps (H 64), where the tile path
/// loads gate and up tiles straight from the weights; 40 features: two groups of 16, then a
/// tail for the dot-product kernel; one expert with three blocks stays on the staged path.
#[test]
fn experts_with_tiles_straight_from_the_weights_match_f64() {
    const HID: usize = 64;
    const INT: usize = 40;
    let rows = [9usize, 16, 17, 32, 33, 1, 0];
    let offsets: Vec<u32> = std::iter::once(0)
        .chain(rows.iter().scan(0u32, |acc, &r| {
            *acc += r as u32;
            Some(*acc)
        }))
        .collect();
    let s = *offsets.last().unwrap() as usize;
    let mut rng = Rng::new(43);
    let data: Vec<[Data; 3]> =
        rows.iter().map(|_| [INT * HID, INT * HID, HID * INT].map(|n| Data::random(DType::BF16, n, &mut rng))).collect();
    let mats: Vec<ExpertMats<'_>> = data
        .iter()
        .map(|[g, u, d]| ExpertMats { gate: tensor(g, &[INT, HID]), up: tensor(u, &[INT, HID]), down: tensor(d, &[HID, INT]) })
        .collect();
    let xs = match Data::random(DType::BF16, s * HID, &mut rng) {
        Data::Bf16(v) => Tensor::from_vec(v, &[s, HID]).unwrap(),
        _ => unreachable!("bf16 data"),
    };
    let xrows = rows_f64(&xs.view());
    let (mut want, mut tol) = (vec![0f64; s * HID], vec![0f64; s * HID]);
    for e in 0..rows.len() {
        for r in offsets[e] as usize..offsets[e + 1] as usize {
            let (y, err) = expert_f64(&xrows[r], &mats[e], act_rounding(DType::BF16));
            want[r * HID..][..HID].copy_from_slice(&y);
            tol[r * HID..][..HID].copy_from_slice(&err);
        }
    }
    for isa in features::available_isas() {
        let mut got = vec![0f32; s * HID];
        let targets = super::combine::RowTargets::per_token(s, None);
        crate::scratch::poison();
        experts::swiglu_experts_with(isa, &xs, &mats, &offsets, &targets, &mut got);
        assert_close(&got, &want, &tol, &format!("tiles from the weights on {}", isa.name()));
    }
}

/// The fused decode block and the grouped path add the same products in the same order, so a
/// model's batched and one-sequence calls (which may take different paths) agree bit for bit.
/// Up to 7 tokens no expert reaches the tile path, whose SwiGLU uses a vector exp.
#[test]
fn decode_block_equals_the_grouped_path_bit_for_bit() {
    let mut rng = Rng::new(47);
    for dtype in [DType::BF16, DType::F16, DType::F32] {
        let block = Block::random(dtype, &mut rng);
        let weights = block.weights();
        let config = RouterConfig { top_k: 2, renormalize: true };
        let tokens: &[usize] = if dtype == DType::BF16 { &[1, 3, 7] } else { &[1, 3, 10, 16] };
        for &t in tokens {
            let xd = Data::random(dtype, t * H, &mut rng);
            let x = tensor(&xd, &[t, H]);
            let routing = router::route(&x, &weights.router, config).unwrap();
            let dispatch = super::dispatch::dispatch(&routing, E).unwrap();
            let (mut grouped, mut fused) = (vec![0f32; t * H], vec![0f32; t * H]);
            match super::compute_dtype(dtype) {
                DType::BF16 => {
                    super::add_experts::<rio_core::bf16>(&x, &weights, &routing, &dispatch, &mut grouped).unwrap();
                    decode::forward::<rio_core::bf16>(&x, &weights, config, &mut fused).unwrap();
                }
                _ => {
                    super::add_experts::<f32>(&x, &weights, &routing, &dispatch, &mut grouped).unwrap();
                    decode::forward::<f32>(&x, &weights, config, &mut fused).unwrap();
                }
            }
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&fused), bits(&grouped), "{dtype} T {t}");
        }
    }
}
