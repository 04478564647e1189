//! Soft embeddings for latent reasoning (swireasoning spec sections 1.1, 1.8 and 2.2): the
//! softmax of a logit row with its entropy, and the three ways of mixing embedding rows with it:
//! - [`soft_embedding_full`]: `pᵀE` over the whole vocabulary (SwiReasoning), streaming `E` once;
//! - [`soft_embedding_pruned`]: `pᵀE` over the tokens that carry all but a given probability mass,
//!   returning the error bound it incurred (`skipped mass × max row norm`);
//! - [`soft_embedding_topk`]: `Σ_j w_j E[idx_j]` over K gathered rows (Soft Thinking's concept token).
//!
//! Everything accumulates in f32 from an `E` stored as f32, bf16 or f16; the tests compare each
//! with a float64 twin.
use half::{bf16, f16};
use rayon::prelude::*;
use rio_core::dtype::FloatElement;
use rio_core::{DType, Error, Result, TensorRef};

/// Rows of `E` one task reads when the full product is split over the vocabulary.
const ROWS_PER_TASK: usize = 2048;
/// Below this many logits one thread does the softmax (spawning costs more than it saves).
const PARALLEL_SOFTMAX_MIN: usize = 32 * 1024;
/// The entropy's clamp before the log (spec 1.1: `ln(max(p, 1e-12))`).
const LOG_CLAMP: f32 = 1e-12;

/// `probs = softmax(logits / temperature)` and its entropy `-Σ p·ln(max(p, 1e-12))` in nats.
///
/// Two reads of the logits (an online max-and-sum, then normalise-and-entropy) and one write of
/// `probs`. `temperature` must be positive and finite; NaN logits are an error.
pub fn softmax_entropy(logits: &[f32], temperature: f32, probs: &mut [f32]) -> Result<f32> {
    if !(temperature > 0.0 && temperature.is_finite()) {
        return Err(Error::value("temperature", format!("must be positive and finite, got {temperature}")));
    }
    if logits.is_empty() || logits.len() != probs.len() {
        return Err(Error::value("probs", format!("{} logits but {} probabilities", logits.len(), probs.len())));
    }
    let inv_t = 1.0 / temperature;
    let (max, sum) = if logits.len() >= PARALLEL_SOFTMAX_MIN {
        crate::threads::pool().install(|| {
            logits.par_chunks(PARALLEL_SOFTMAX_MIN / 4).map(|c| max_and_sum(c, inv_t)).reduce(|| (f32::NEG_INFINITY, 0.0), merge_max_sum)
        })
    } else {
        max_and_sum(logits, inv_t)
    };
    if max.is_nan() || sum.is_nan() || sum <= 0.0 {
        return Err(Error::value("logits", "NaN or all -inf logits have no softmax"));
    }
    let inv_sum = 1.0 / sum;
    // The entropy accumulates in f64: V terms of similar size would lose ~1e-4 nats in f32.
    let normalise = |(z, p): (&[f32], &mut [f32])| -> f64 {
        let mut h = 0.0f64;
        for (&zi, pi) in z.iter().zip(p.iter_mut()) {
            let v = ((zi * inv_t - max).exp()) * inv_sum;
            *pi = v;
            h -= (v * v.max(LOG_CLAMP).ln()) as f64;
        }
        h
    };
    let entropy = if logits.len() >= PARALLEL_SOFTMAX_MIN {
        crate::threads::pool().install(|| {
            logits.par_chunks(PARALLEL_SOFTMAX_MIN / 4).zip(probs.par_chunks_mut(PARALLEL_SOFTMAX_MIN / 4)).map(normalise).sum::<f64>()
        })
    } else {
        normalise((logits, probs))
    };
    Ok(entropy as f32)
}

/// The running (max, Σ exp(x - max)) of `x = z / T` over a chunk.
fn max_and_sum(z: &[f32], inv_t: f32) -> (f32, f32) {
    let mut max = f32::NEG_INFINITY;
    let mut sum = 0.0f32;
    for &zi in z {
        let x = zi * inv_t;
        if x.is_nan() {
            return (f32::NAN, f32::NAN);
        }
        if x > max {
            sum = sum * (max - x).exp() + 1.0;
            max = x;
        } else {
            sum += (x - max).exp();
        }
    }
    (max, sum)
}

fn merge_max_sum(a: (f32, f32), b: (f32, f32)) -> (f32, f32) {
    if a.0.is_nan() || b.0.is_nan() {
        return (f32::NAN, f32::NAN);
    }
    let max = a.0.max(b.0);
    if max == f32::NEG_INFINITY {
        return (max, 0.0);
    }
    (max, a.1 * (a.0 - max).exp() + b.1 * (b.0 - max).exp())
}

/// The embedding matrix `[V, H]` as a contiguous slice of its stored type.
enum Table<'a> {
    F32(&'a [f32]),
    BF16(&'a [bf16]),
    F16(&'a [f16]),
}

struct Embeddings<'a> {
    table: Table<'a>,
    vocab: usize,
    hidden: usize,
}

impl<'a> Embeddings<'a> {
    fn new(e: &TensorRef<'a>) -> Result<Self> {
        if e.ndim() != 2 {
            return Err(Error::shape("embeddings", "[V, H]", e.shape()));
        }
        let (vocab, hidden) = (e.shape()[0], e.shape()[1]);
        let not_contiguous = || Error::value("embeddings", "must be contiguous");
        let table = match e.dtype() {
            DType::F32 => Table::F32(e.as_slice().ok_or_else(not_contiguous)?),
            DType::BF16 => Table::BF16(e.as_slice().ok_or_else(not_contiguous)?),
            DType::F16 => Table::F16(e.as_slice().ok_or_else(not_contiguous)?),
            other => return Err(Error::dtype("embeddings", "float32, bfloat16 or float16", other)),
        };
        Ok(Embeddings { table, vocab, hidden })
    }

    fn row_norm(&self, row: usize) -> f32 {
        fn go<T: FloatElement>(t: &[T], row: usize, h: usize) -> f32 {
            t[row * h..(row + 1) * h].iter().map(|&e| e.to_f32() * e.to_f32()).sum::<f32>().sqrt()
        }
        match self.table {
            Table::F32(t) => go(t, row, self.hidden),
            Table::BF16(t) => go(t, row, self.hidden),
            Table::F16(t) => go(t, row, self.hidden),
        }
    }

    fn check(&self, probs: usize, out: usize) -> Result<()> {
        if probs != self.vocab {
            return Err(Error::value("probs", format!("{probs} probabilities for a vocabulary of {}", self.vocab)));
        }
        if out != self.hidden {
            return Err(Error::value("out", format!("{out} elements for a hidden size of {}", self.hidden)));
        }
        Ok(())
    }

    /// `out = Σ_{v ∈ rows} w(v) · E[v]`, split over tasks of [`ROWS_PER_TASK`] rows whose
    /// partial sums are added at the end (each row of `E` is read once).
    fn mix(&self, rows: &[usize], weight: impl Fn(usize) -> f32 + Sync, out: &mut [f32]) {
        let h = self.hidden;
        let partial = |chunk: &[usize]| {
            let mut acc = vec![0.0f32; h];
            let weighted: Vec<(usize, f32)> = chunk.iter().map(|&v| (v, weight(v))).collect();
            self.accumulate(&weighted, &mut acc);
            acc
        };
        let sum = if rows.len() > ROWS_PER_TASK {
            crate::threads::pool().install(|| {
                rows.par_chunks(ROWS_PER_TASK).map(partial).reduce(
                    || vec![0.0f32; h],
                    |mut a, b| {
                        a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                        a
                    },
                )
            })
        } else {
            partial(rows)
        };
        out.copy_from_slice(&sum);
    }

    /// `acc += Σ w · E[row]` over `(row, w)` pairs, four rows per pass over `acc`. The table is
    /// read once at memory speed only when the loop is vectorised, so the same code is compiled
    /// for AVX-512 and AVX2 and picked at run time (the crate's baseline is plain x86-64).
    fn accumulate(&self, weighted: &[(usize, f32)], acc: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            use crate::features::{active_isa, Isa};
            if active_isa() >= Isa::Avx512 {
                // SAFETY: the CPU has AVX-512F/BW (run-time detection behind `active_isa`).
                return unsafe { self.accumulate_avx512(weighted, acc) };
            }
            if active_isa() >= Isa::Avx2 {
                // SAFETY: the CPU has AVX2 and FMA (run-time detection behind `active_isa`).
                return unsafe { self.accumulate_avx2(weighted, acc) };
            }
        }
        self.accumulate_portable(weighted, acc)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
    unsafe fn accumulate_avx512(&self, weighted: &[(usize, f32)], acc: &mut [f32]) {
        self.accumulate_portable(weighted, acc)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn accumulate_avx2(&self, weighted: &[(usize, f32)], acc: &mut [f32]) {
        self.accumulate_portable(weighted, acc)
    }

    #[inline(always)]
    fn accumulate_portable(&self, weighted: &[(usize, f32)], acc: &mut [f32]) {
        #[inline(always)]
        fn go<T: Copy>(t: &[T], h: usize, weighted: &[(usize, f32)], acc: &mut [f32], to_f32: impl Fn(T) -> f32 + Copy) {
            let mut quads = weighted.chunks_exact(4);
            for q in &mut quads {
                let r = |i: usize| &t[q[i].0 * h..(q[i].0 + 1) * h];
                let (e0, e1, e2, e3) = (r(0), r(1), r(2), r(3));
                let (w0, w1, w2, w3) = (q[0].1, q[1].1, q[2].1, q[3].1);
                for (i, a) in acc.iter_mut().enumerate() {
                    *a += w0 * to_f32(e0[i]) + w1 * to_f32(e1[i]) + w2 * to_f32(e2[i]) + w3 * to_f32(e3[i]);
                }
            }
            for &(v, w) in quads.remainder() {
                for (a, &e) in acc.iter_mut().zip(&t[v * h..(v + 1) * h]) {
                    *a += w * to_f32(e);
                }
            }
        }
        let h = self.hidden;
        match self.table {
            Table::F32(t) => go(t, h, weighted, acc, |e| e),
            // bf16 → f32 is a 16-bit shift, written out so that it vectorises.
            Table::BF16(t) => go(t, h, weighted, acc, |e: bf16| f32::from_bits((e.to_bits() as u32) << 16)),
            Table::F16(t) => go(t, h, weighted, acc, |e: f16| e.to_f32()),
        }
    }
}

/// `out = pᵀE` over the full vocabulary (SwiReasoning, spec 1.3 step 8). `E` is `[V, H]`, f32,
/// bf16 or f16, contiguous; `probs` has V entries.
pub fn soft_embedding_full(probs: &[f32], embeddings: &TensorRef<'_>, out: &mut [f32]) -> Result<()> {
    let e = Embeddings::new(embeddings)?;
    e.check(probs.len(), out.len())?;
    let rows: Vec<usize> = (0..e.vocab).collect();
    e.mix(&rows, |v| probs[v], out);
    Ok(())
}

/// What [`soft_embedding_pruned`] skipped, and the bound on the error that cost.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pruning {
    /// Rows of `E` read (tokens kept).
    pub rows_read: usize,
    /// `Σ p` over the skipped tokens.
    pub skipped_mass: f32,
    /// The smallest kept probability is at least this (0 when nothing was skipped).
    pub threshold: f32,
    /// `‖pᵀE − out‖₂ ≤ error_bound = skipped_mass × max_row_norm` (the triangle inequality over
    /// the skipped rows), up to f32 rounding of the kept sum.
    pub error_bound: f32,
}

/// `out ≈ pᵀE` reading only the rows of the most probable tokens: every token with `p` below a
/// power-of-two threshold is skipped, the threshold being the largest one whose skipped mass
/// stays within `max_skipped_mass`. Hence `‖pᵀE − out‖₂ ≤ skipped_mass × max_row_norm ≤
/// max_skipped_mass × max_row_norm`, returned in [`Pruning::error_bound`]. `max_row_norm` is
/// [`max_row_norm`] of the same `E` (computed once per table by the caller). Not renormalised:
/// the skipped mass is simply missing, which is what the bound measures.
pub fn soft_embedding_pruned(
    probs: &[f32],
    embeddings: &TensorRef<'_>,
    max_row_norm: f32,
    max_skipped_mass: f32,
    out: &mut [f32],
) -> Result<Pruning> {
    let e = Embeddings::new(embeddings)?;
    e.check(probs.len(), out.len())?;
    if !(0.0..1.0).contains(&max_skipped_mass) {
        return Err(Error::value("max_skipped_mass", format!("must be in [0, 1), got {max_skipped_mass}")));
    }
    // Mass per binary exponent of p (one pass); the threshold is the largest power of two such
    // that all probabilities below it together weigh at most `max_skipped_mass`.
    let mut mass_by_exponent = [0.0f64; 256];
    for &p in probs {
        mass_by_exponent[exponent(p)] += p as f64;
    }
    let mut skipped = 0.0f64;
    let mut cut = 0usize; // skip exponents < cut
    for (x, &m) in mass_by_exponent.iter().enumerate() {
        if skipped + m > max_skipped_mass as f64 {
            break;
        }
        skipped += m;
        cut = x + 1;
    }
    let threshold = if cut == 0 { 0.0 } else { f32::from_bits((cut.min(255) as u32) << 23) };
    let rows: Vec<usize> = (0..e.vocab).filter(|&v| exponent(probs[v]) >= cut).collect();
    e.mix(&rows, |v| probs[v], out);
    let skipped_mass = skipped as f32;
    Ok(Pruning { rows_read: rows.len(), skipped_mass, threshold, error_bound: skipped_mass * max_row_norm })
}

/// The biased binary exponent of a non-negative f32 (0 for zero and subnormals).
#[inline]
fn exponent(p: f32) -> usize {
    ((p.to_bits() >> 23) & 0xff) as usize
}

/// `max_v ‖E[v]‖₂`, the constant of [`soft_embedding_pruned`]'s error bound.
pub fn max_row_norm(embeddings: &TensorRef<'_>) -> Result<f32> {
    let e = Embeddings::new(embeddings)?;
    Ok(crate::threads::pool().install(|| (0..e.vocab).into_par_iter().map(|v| e.row_norm(v)).reduce(|| 0.0, f32::max)))
}

/// `out = Σ_j weights[j] · E[ids[j]]` (Soft Thinking's concept token, spec 2.2: K gathered rows).
pub fn soft_embedding_topk(ids: &[u32], weights: &[f32], embeddings: &TensorRef<'_>, out: &mut [f32]) -> Result<()> {
    let e = Embeddings::new(embeddings)?;
    if out.len() != e.hidden {
        return Err(Error::value("out", format!("{} elements for a hidden size of {}", out.len(), e.hidden)));
    }
    if ids.len() != weights.len() || ids.is_empty() {
        return Err(Error::value("weights", format!("{} weights for {} ids (need at least one)", weights.len(), ids.len())));
    }
    if let Some(&bad) = ids.iter().find(|&&t| t as usize >= e.vocab) {
        return Err(Error::value("ids", format!("token {bad} is outside the vocabulary of {}", e.vocab)));
    }
    out.fill(0.0);
    let weighted: Vec<(usize, f32)> = ids.iter().zip(weights).map(|(&t, &w)| (t as usize, w)).collect();
    e.accumulate(&weighted, out);
    Ok(())
}

/// `out = Σ_j weights[j] · E[ids[j]]` into `out` with `out` first scaled by `keep`: the
/// `α·soft + (1−α)·E[<think>]` blends of SwiReasoning (spec 1.3 step 8).
pub fn blend_rows(out: &mut [f32], keep: f32, ids: &[u32], weights: &[f32], embeddings: &TensorRef<'_>) -> Result<()> {
    let e = Embeddings::new(embeddings)?;
    if out.len() != e.hidden {
        return Err(Error::value("out", format!("{} elements for a hidden size of {}", out.len(), e.hidden)));
    }
    if let Some(&bad) = ids.iter().find(|&&t| t as usize >= e.vocab) {
        return Err(Error::value("ids", format!("token {bad} is outside the vocabulary of {}", e.vocab)));
    }
    out.iter_mut().for_each(|v| *v *= keep);
    let weighted: Vec<(usize, f32)> = ids.iter().zip(weights).map(|(&t, &w)| (t as usize, w)).collect();
    e.accumulate(&weighted, out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32 * scale
            })
            .collect()
    }

    fn softmax_entropy_f64(z: &[f32], t: f64) -> (Vec<f64>, f64) {
        let m = z.iter().map(|&v| v as f64 / t).fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = z.iter().map(|&v| (v as f64 / t - m).exp()).collect();
        let s: f64 = e.iter().sum();
        let p: Vec<f64> = e.iter().map(|v| v / s).collect();
        let h = -p.iter().map(|&v| v * v.max(1e-12).ln()).sum::<f64>();
        (p, h)
    }

    fn mix_f64(p: &[f64], e: &[f32], h: usize) -> Vec<f64> {
        let mut out = vec![0.0; h];
        for (v, &w) in p.iter().enumerate() {
            for j in 0..h {
                out[j] += w * e[v * h + j] as f64;
            }
        }
        out
    }

    #[test]
    fn softmax_and_entropy_match_float64() {
        for (v, t, scale) in [(1000usize, 1.0f32, 8.0f32), (70_000, 0.6, 12.0), (7, 2.0, 3.0)] {
            let z = data(v, v as u64, scale);
            let mut p = vec![0.0; v];
            let h = softmax_entropy(&z, t, &mut p).unwrap();
            let (p64, h64) = softmax_entropy_f64(&z, t as f64);
            assert!((h as f64 - h64).abs() < 1e-5 * h64.max(1.0), "V={v}: {h} vs {h64}");
            for (a, b) in p.iter().zip(&p64) {
                assert!((*a as f64 - b).abs() < 1e-5 * b + 1e-12, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn entropy_of_one_hot_uniform_and_shifted_logits() {
        let v = 4096;
        let mut p = vec![0.0; v];
        let uniform = softmax_entropy(&vec![0.25; v], 1.0, &mut p).unwrap();
        assert!((uniform - (v as f32).ln()).abs() < 1e-4, "{uniform}");
        let mut z = vec![-1e4f32; v];
        z[17] = 0.0;
        assert_eq!(softmax_entropy(&z, 1.0, &mut p).unwrap(), 0.0);
        assert_eq!(p[17], 1.0);
        let z = data(v, 5, 6.0);
        let shifted: Vec<f32> = z.iter().map(|x| x + 100.0).collect();
        let (a, b) = (softmax_entropy(&z, 1.0, &mut p).unwrap(), softmax_entropy(&shifted, 1.0, &mut p).unwrap());
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }

    #[test]
    fn softmax_rejects_bad_input() {
        let mut p = vec![0.0; 3];
        assert!(softmax_entropy(&[0.0, f32::NAN, 1.0], 1.0, &mut p).is_err());
        assert!(softmax_entropy(&[0.0, 1.0, 2.0], 0.0, &mut p).is_err());
        assert!(softmax_entropy(&[0.0, 1.0], 1.0, &mut p).is_err());
        assert!(softmax_entropy(&[f32::NEG_INFINITY; 3], 1.0, &mut p).is_err());
    }

    fn table(dtype: DType, e: &[f32]) -> (Vec<u8>, DType) {
        let bytes: Vec<u8> = match dtype {
            DType::F32 => e.iter().flat_map(|v| v.to_le_bytes()).collect(),
            DType::BF16 => e.iter().flat_map(|&v| bf16::from_f32(v).to_le_bytes()).collect(),
            DType::F16 => e.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect(),
            _ => unreachable!(),
        };
        (bytes, dtype)
    }

    /// E rounded to its stored dtype, as f32 (what the f64 twin must mix).
    fn rounded(dtype: DType, e: &[f32]) -> Vec<f32> {
        e.iter()
            .map(|&v| match dtype {
                DType::BF16 => bf16::from_f32(v).to_f32(),
                DType::F16 => f16::from_f32(v).to_f32(),
                _ => v,
            })
            .collect()
    }

    fn view(bytes: &[u8], dtype: DType, v: usize, h: usize) -> TensorRef<'_> {
        // SAFETY: `bytes` holds v*h elements of `dtype` and outlives the view (aligned: Vec<u8>
        // from the global allocator is at least 8-aligned in practice; the test asserts it).
        assert_eq!(bytes.as_ptr() as usize % 4, 0);
        unsafe { TensorRef::from_raw(bytes.as_ptr(), dtype, vec![v, h], vec![h as isize, 1]) }
    }

    #[test]
    fn full_and_topk_forms_match_float64_in_every_dtype() {
        let (v, h) = (5000, 48);
        let e = data(v * h, 9, 1.0);
        let z = data(v, 3, 10.0);
        let mut p = vec![0.0; v];
        softmax_entropy(&z, 1.0, &mut p).unwrap();
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            let (bytes, _) = table(dtype, &e);
            let et = view(&bytes, dtype, v, h);
            let er = rounded(dtype, &e);
            let p64: Vec<f64> = p.iter().map(|&x| x as f64).collect();
            let want = mix_f64(&p64, &er, h);
            let mut out = vec![0.0; h];
            soft_embedding_full(&p, &et, &mut out).unwrap();
            for (a, b) in out.iter().zip(&want) {
                assert!((*a as f64 - b).abs() < 1e-5, "{dtype}: {a} vs {b}");
            }
            // Top-k over 10 gathered rows, and the one-hot case that must equal E[t] exactly (O1).
            let ids: Vec<u32> = (0..10).map(|j| (j * 397 + 11) as u32).collect();
            let w = data(10, 4, 1.0).iter().map(|x| x.abs()).collect::<Vec<_>>();
            soft_embedding_topk(&ids, &w, &et, &mut out).unwrap();
            for j in 0..h {
                let want: f64 = ids.iter().zip(&w).map(|(&t, &wj)| wj as f64 * er[t as usize * h + j] as f64).sum();
                assert!((out[j] as f64 - want).abs() < 1e-5);
            }
            soft_embedding_topk(&[123], &[1.0], &et, &mut out).unwrap();
            assert_eq!(out, er[123 * h..124 * h]);
            let mut one_hot = vec![0.0; v];
            one_hot[4321] = 1.0;
            soft_embedding_full(&one_hot, &et, &mut out).unwrap();
            assert_eq!(out, er[4321 * h..4322 * h]);
        }
    }

    #[test]
    fn pruned_form_stays_within_its_error_bound() {
        let (v, h) = (6000, 32);
        let e = data(v * h, 21, 1.5);
        let (bytes, _) = table(DType::BF16, &e);
        let et = view(&bytes, DType::BF16, v, h);
        let er = rounded(DType::BF16, &e);
        let norm = max_row_norm(&et).unwrap();
        let norm64 = (0..v).map(|r| er[r * h..(r + 1) * h].iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt()).fold(0.0, f64::max);
        assert!((norm as f64 - norm64).abs() < 1e-5 * norm64);
        // Peaked, medium and flat distributions; the bound must hold and be nearly used.
        for (scale, budget) in [(40.0f32, 1e-4f32), (12.0, 1e-3), (2.0, 1e-2), (12.0, 0.0)] {
            let z = data(v, scale as u64, scale);
            let mut p = vec![0.0; v];
            softmax_entropy(&z, 1.0, &mut p).unwrap();
            let p64: Vec<f64> = p.iter().map(|&x| x as f64).collect();
            let exact = mix_f64(&p64, &er, h);
            let mut out = vec![0.0; h];
            let pr = soft_embedding_pruned(&p, &et, norm, budget, &mut out).unwrap();
            let err = exact.iter().zip(&out).map(|(a, &b)| (a - b as f64).powi(2)).sum::<f64>().sqrt();
            let skipped64: f64 = p.iter().filter(|&&x| x < pr.threshold).map(|&x| x as f64).sum();
            assert!((pr.skipped_mass as f64 - skipped64).abs() <= 1e-6 * skipped64.max(1e-12) + 1e-12);
            assert!(pr.skipped_mass <= budget, "{pr:?}");
            assert!(err <= pr.error_bound as f64 + 1e-5, "scale {scale}: error {err} > bound {pr:?}");
            assert_eq!(pr.rows_read, p.iter().filter(|&&x| x >= pr.threshold).count());
            if budget == 0.0 {
                assert!(p.iter().all(|&x| x >= pr.threshold || x == 0.0));
            }
            if scale == 40.0 {
                assert!(pr.rows_read < v / 2, "a peaked distribution must skip most rows: {pr:?}");
            }
        }
    }

    #[test]
    fn blend_is_alpha_soft_plus_rest_special_row() {
        let (v, h) = (50, 8);
        let e = data(v * h, 2, 1.0);
        let et = TensorRef::from_slice(&e, &[v, h]).unwrap();
        let soft = data(h, 3, 1.0);
        let mut out = soft.clone();
        blend_rows(&mut out, 0.7, &[9], &[0.3], &et).unwrap();
        for j in 0..h {
            assert!((out[j] - (0.7 * soft[j] + 0.3 * e[9 * h + j])).abs() < 1e-6);
        }
        assert!(blend_rows(&mut out, 1.0, &[50], &[0.1], &et).is_err());
        assert!(soft_embedding_topk(&[3], &[1.0, 2.0], &et, &mut out).is_err());
        assert!(soft_embedding_full(&[0.0; 49], &et, &mut out).is_err());
    }
}
