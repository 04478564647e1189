//! Streaming sums for one tensor: every pairwise dot product of the operands (the parents, then
//! the candidate), their sums, and each parent's squared distance to the candidate. Accumulated
//! in fp64 over chunks that were widened to fp64, so the fit sees no fp32 rounding of its sums.
use half::slice::HalfFloatSliceExt;
use rio_core::bf16;
use rio_cpu::features::{self, Isa};

#[derive(Clone, Debug, PartialEq)]
pub struct Moments {
    /// Number of operands: parents, then the candidate last.
    pub operands: usize,
    pub count: u64,
    /// Σ xᵢ per operand.
    pub sums: Vec<f64>,
    /// Σ xᵢ·xⱼ, row-major `[operands, operands]`, symmetric.
    pub products: Vec<f64>,
    /// Σ (candidate − parentᵢ)² per parent, exact for identical copies.
    pub sq_diffs: Vec<f64>,
}

impl Moments {
    pub fn new(operands: usize) -> Moments {
        Moments {
            operands,
            count: 0,
            sums: vec![0.0; operands],
            products: vec![0.0; operands * operands],
            sq_diffs: vec![0.0; operands.saturating_sub(1)],
        }
    }

    pub fn product(&self, i: usize, j: usize) -> f64 {
        self.products[i * self.operands + j]
    }

    /// False when an input held NaN or infinity (or the sums overflowed).
    pub fn is_finite(&self) -> bool {
        self.sums.iter().chain(&self.products).chain(&self.sq_diffs).all(|v| v.is_finite())
    }

    pub fn merge(&mut self, other: &Moments) {
        self.count += other.count;
        for (a, b) in self.sums.iter_mut().zip(&other.sums) {
            *a += b;
        }
        for (a, b) in self.products.iter_mut().zip(&other.products) {
            *a += b;
        }
        for (a, b) in self.sq_diffs.iter_mut().zip(&other.sq_diffs) {
            *a += b;
        }
    }

    /// Adds one chunk: `chunk[i]` holds operand i's elements, all the same length. Elements are
    /// f32 (every bf16/f16 value is exact in f32); products and sums are taken in f64.
    pub fn accumulate(&mut self, chunk: &[&[f32]]) {
        assert_eq!(chunk.len(), self.operands);
        let len = chunk.first().map_or(0, |c| c.len());
        assert!(chunk.iter().all(|c| c.len() == len));
        let avx512 = features::active_isa() >= Isa::Avx512;
        match self.operands {
            // SAFETY: the active level never exceeds what the CPU supports.
            2 if avx512 => unsafe { avx512::accumulate::<2>(self, chunk) },
            3 if avx512 => unsafe { avx512::accumulate::<3>(self, chunk) },
            4 if avx512 => unsafe { avx512::accumulate::<4>(self, chunk) },
            5 if avx512 => unsafe { avx512::accumulate::<5>(self, chunk) },
            _ if features::active_isa() >= Isa::Avx2 => unsafe { accumulate_avx2(self, chunk, 0) },
            _ => accumulate_generic(self, chunk, 0),
        }
        self.count += len as u64;
    }
}

impl Moments {
    /// As [`Moments::accumulate`], reading bf16 in place and widening in registers; exact f64
    /// arithmetic like the f32 path.
    pub fn accumulate_bf16(&mut self, chunk: &[&[bf16]]) {
        self.accumulate_bf16_with(chunk, false);
    }

    /// As [`Moments::accumulate_bf16`], summing runs of 16 exact bf16 products per lane in f32
    /// before adding them in f64: about 20% faster, with sums accurate to ~1e-7 relative per run
    /// (averaging down over many runs), so meant for large tensors.
    pub fn accumulate_bf16_runs(&mut self, chunk: &[&[bf16]]) {
        self.accumulate_bf16_with(chunk, true);
    }

    fn accumulate_bf16_with(&mut self, chunk: &[&[bf16]], runs: bool) {
        assert_eq!(chunk.len(), self.operands);
        let len = chunk.first().map_or(0, |c| c.len());
        assert!(chunk.iter().all(|c| c.len() == len));
        if features::active_isa() >= Isa::Avx512 && (2..=5).contains(&self.operands) {
            // SAFETY: the active level never exceeds what the CPU supports.
            unsafe {
                match (self.operands, runs) {
                    (2, false) => avx512::accumulate_bf16::<2>(self, chunk),
                    (3, false) => avx512::accumulate_bf16::<3>(self, chunk),
                    (4, false) => avx512::accumulate_bf16::<4>(self, chunk),
                    (_, false) => avx512::accumulate_bf16::<5>(self, chunk),
                    (2, true) => avx512::accumulate_bf16_runs::<2>(self, chunk),
                    (3, true) => avx512::accumulate_bf16_runs::<3>(self, chunk),
                    (4, true) => avx512::accumulate_bf16_runs::<4>(self, chunk),
                    (_, true) => avx512::accumulate_bf16_runs::<5>(self, chunk),
                }
            }
            self.count += len as u64;
            return;
        }
        const STEP: usize = 1024;
        let mut buf = vec![0.0f32; self.operands * STEP];
        for start in (0..len).step_by(STEP) {
            let n = STEP.min(len - start);
            for (src, out) in chunk.iter().zip(buf.chunks_exact_mut(STEP)) {
                src[start..start + n].convert_to_f32_slice(&mut out[..n]);
            }
            let views: Vec<&[f32]> = buf.chunks_exact(STEP).map(|c| &c[..n]).collect();
            self.accumulate(&views);
        }
    }
}

/// Lanes of independent partial sums: enough to hide the add latency at any SIMD width.
const LANES: usize = 16;

/// The portable path, from element `start` on (the SIMD kernels hand it their tails).
#[inline(always)]
fn accumulate_generic(m: &mut Moments, chunk: &[&[f32]], start: usize) {
    let n = m.operands;
    let cols: Vec<&[f32]> = chunk.iter().map(|c| &c[start..]).collect();
    let candidate = cols[n - 1];
    for i in 0..n {
        m.sums[i] += lane_sum(cols[i], cols[i], |x, _| x);
        for j in i..n {
            let d = lane_sum(cols[i], cols[j], |x, y| x * y);
            m.products[i * n + j] += d;
            if i != j {
                m.products[j * n + i] += d;
            }
        }
    }
    for (acc, parent) in m.sq_diffs.iter_mut().zip(&cols) {
        *acc += lane_sum(candidate, parent, |x, y| (x - y) * (x - y));
    }
}

/// Σ f(aₖ, bₖ) in f64 over `LANES` independent partial sums.
#[inline(always)]
fn lane_sum(a: &[f32], b: &[f32], f: impl Fn(f64, f64) -> f64) -> f64 {
    let mut acc = [0.0f64; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f64 = ca.remainder().iter().zip(cb.remainder()).map(|(&x, &y)| f(x as f64, y as f64)).sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += f(x[l] as f64, y[l] as f64);
        }
    }
    acc.iter().sum::<f64>() + tail
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn accumulate_avx2(m: &mut Moments, chunk: &[&[f32]], start: usize) {
    accumulate_generic(m, chunk, start)
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn accumulate_avx2(m: &mut Moments, chunk: &[&[f32]], start: usize) {
    accumulate_generic(m, chunk, start)
}

#[cfg(target_arch = "x86_64")]
// Indexing by operand number reads like the maths here, and N is a constant the loops unroll by.
#[allow(clippy::needless_range_loop)]
mod avx512 {
    use std::arch::x86_64::*;

    use rio_core::bf16;

    use super::{accumulate_generic, Moments};

    /// Every moment of `N` operands in one pass: per 8 elements, N loads widened to f64, then
    /// N(N+1)/2 products, N sums and N−1 squared differences, all in registers (N ≤ 5 keeps the
    /// 24 accumulators within the 32 zmm registers).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn accumulate<const N: usize>(m: &mut Moments, chunk: &[&[f32]]) {
        let mut ptrs = [std::ptr::null::<f32>(); N];
        for i in 0..N {
            ptrs[i] = chunk[i].as_ptr();
        }
        let len = chunk[0].len();
        // SAFETY: g * 8 + 8 <= len for every operand.
        let groups = kernel::<N>(m, len, |i, g| _mm512_cvtps_pd(_mm256_loadu_ps(ptrs[i].add(g * 8))));
        if groups * 8 < len {
            accumulate_generic(m, chunk, groups * 8);
        }
    }

    /// bf16 operands, read in place and widened in registers (zero-extend, shift into the high
    /// half: an exact f32), then as [`accumulate`] in f64.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn accumulate_bf16<const N: usize>(m: &mut Moments, chunk: &[&[bf16]]) {
        let mut ptrs = [std::ptr::null::<u16>(); N];
        for i in 0..N {
            ptrs[i] = chunk[i].as_ptr() as *const u16;
        }
        let len = chunk[0].len();
        let load = |i: usize, g: usize| {
            if g.is_multiple_of(4) {
                // One line per 4 groups; prefetching past the end is harmless.
                _mm_prefetch::<_MM_HINT_T0>(ptrs[i].wrapping_add(g * 8 + PREFETCH_ELEMENTS) as *const i8);
            }
            // SAFETY: g * 8 + 8 <= len for every operand.
            let bits = _mm256_cvtepu16_epi32(_mm_loadu_si128(ptrs[i].add(g * 8) as *const __m128i));
            _mm512_cvtps_pd(_mm256_castsi256_ps(_mm256_slli_epi32::<16>(bits)))
        };
        let groups = kernel::<N>(m, len, load);
        accumulate_bf16_tail(m, chunk, groups * 8);
    }

    /// bf16 operands, widened in registers as above. A product of two bf16 values is exact in f32, so each lane sums a run
    /// of `RUN` products in f32 (16 lanes per register, no f64 conversion per element) and the
    /// run's partial sums are then added to f64 totals. The only rounding is that of the f32 sums
    /// within a run (2^-24 relative per add), far below the bf16 rounding of the weights.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn accumulate_bf16_runs<const N: usize>(m: &mut Moments, chunk: &[&[bf16]]) {
        let mut ptrs = [std::ptr::null::<u16>(); N];
        for i in 0..N {
            ptrs[i] = chunk[i].as_ptr() as *const u16;
        }
        let len = chunk[0].len();
        let blocks = len / 16;
        let (zd, zs) = (_mm512_setzero_pd(), _mm512_setzero_ps());
        let mut tot_prod = [zd; 15];
        let mut tot_sums = [zd; 5];
        let mut tot_diffs = [zd; 4];
        let mut b = 0;
        while b < blocks {
            let run_end = (b + RUN).min(blocks);
            let mut prod = [zs; 15];
            let mut sums = [zs; 5];
            let mut diffs = [zs; 4];
            for blk in b..run_end {
                let mut x = [zs; N];
                for i in 0..N {
                    if blk % 2 == 0 {
                        // One line per 2 blocks; prefetching past the end is harmless.
                        _mm_prefetch::<_MM_HINT_T0>(ptrs[i].wrapping_add(blk * 16 + PREFETCH_ELEMENTS) as *const i8);
                    }
                    // SAFETY: blk * 16 + 16 <= len for every operand.
                    let bits = _mm512_cvtepu16_epi32(_mm256_loadu_si256(ptrs[i].add(blk * 16) as *const __m256i));
                    x[i] = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(bits));
                }
                let mut p = 0;
                for i in 0..N {
                    sums[i] = _mm512_add_ps(sums[i], x[i]);
                    for j in i..N {
                        prod[p] = _mm512_fmadd_ps(x[i], x[j], prod[p]);
                        p += 1;
                    }
                }
                for i in 0..N - 1 {
                    let d = _mm512_sub_ps(x[N - 1], x[i]);
                    diffs[i] = _mm512_fmadd_ps(d, d, diffs[i]);
                }
            }
            for (t, v) in tot_prod.iter_mut().zip(&prod).take(N * (N + 1) / 2) {
                *t = add_widened(*t, *v);
            }
            for (t, v) in tot_sums.iter_mut().zip(&sums).take(N) {
                *t = add_widened(*t, *v);
            }
            for (t, v) in tot_diffs.iter_mut().zip(&diffs).take(N - 1) {
                *t = add_widened(*t, *v);
            }
            b = run_end;
        }
        store::<N>(m, &tot_prod, &tot_sums, &tot_diffs);
        accumulate_bf16_tail(m, chunk, blocks * 16);
    }

    /// The elements from `start` on, through the portable path.
    fn accumulate_bf16_tail(m: &mut Moments, chunk: &[&[bf16]], start: usize) {
        if start < chunk[0].len() {
            let tail: Vec<Vec<f32>> = chunk.iter().map(|c| c[start..].iter().map(|v| v.to_f32()).collect()).collect();
            let views: Vec<&[f32]> = tail.iter().map(|t| t.as_slice()).collect();
            accumulate_generic(m, &views, 0);
        }
    }

    /// Blocks of 16 elements per f32 run: each lane sums 16 exact products before widening.
    const RUN: usize = 16;

    /// `total + low half + high half` of 16 f32 lanes, in f64.
    #[inline(always)]
    unsafe fn add_widened(total: __m512d, v: __m512) -> __m512d {
        let low = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
        let high = _mm512_cvtps_pd(_mm256_castsi256_ps(_mm512_extracti64x4_epi64::<1>(_mm512_castps_si512(v))));
        _mm512_add_pd(total, _mm512_add_pd(low, high))
    }

    /// Adds the register totals to the moments.
    #[inline(always)]
    unsafe fn store<const N: usize>(m: &mut Moments, prod: &[__m512d; 15], sums: &[__m512d; 5], diffs: &[__m512d; 4]) {
        let mut p = 0;
        for i in 0..N {
            m.sums[i] += _mm512_reduce_add_pd(sums[i]);
            for j in i..N {
                let v = _mm512_reduce_add_pd(prod[p]);
                m.products[i * N + j] += v;
                if i != j {
                    m.products[j * N + i] += v;
                }
                p += 1;
            }
        }
        for i in 0..N - 1 {
            m.sq_diffs[i] += _mm512_reduce_add_pd(diffs[i]);
        }
    }

    /// How far ahead the bf16 kernel prefetches: 8 KiB per stream, two pages, so the next page is
    /// on its way before the hardware prefetcher (which stops at page boundaries) needs it.
    const PREFETCH_ELEMENTS: usize = 4096;

    /// The loop over whole groups of 8; returns the number of groups done.
    #[inline(always)]
    unsafe fn kernel<const N: usize>(m: &mut Moments, len: usize, load: impl Fn(usize, usize) -> __m512d) -> usize {
        let groups = len / 8;
        let zero = _mm512_setzero_pd();
        let mut prod = [zero; 15];
        let mut sums = [zero; 5];
        let mut diffs = [zero; 4];
        for g in 0..groups {
            let mut x = [zero; N];
            for i in 0..N {
                x[i] = load(i, g);
            }
            let mut p = 0;
            for i in 0..N {
                sums[i] = _mm512_add_pd(sums[i], x[i]);
                for j in i..N {
                    prod[p] = _mm512_fmadd_pd(x[i], x[j], prod[p]);
                    p += 1;
                }
            }
            for i in 0..N - 1 {
                let d = _mm512_sub_pd(x[N - 1], x[i]);
                diffs[i] = _mm512_fmadd_pd(d, d, diffs[i]);
            }
        }
        store::<N>(m, &prod, &sums, &diffs);
        groups
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod avx512 {
    use super::{accumulate_generic, Moments};

    pub unsafe fn accumulate<const N: usize>(m: &mut Moments, chunk: &[&[f32]]) {
        accumulate_generic(m, chunk, 0)
    }

    pub unsafe fn accumulate_bf16<const N: usize>(_m: &mut Moments, _chunk: &[&[rio_core::bf16]]) {
        unreachable!("no AVX-512 level is ever active off x86-64")
    }

    pub unsafe fn accumulate_bf16_runs<const N: usize>(_m: &mut Moments, _chunk: &[&[rio_core::bf16]]) {
        unreachable!("no AVX-512 level is ever active off x86-64")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rio_cpu::features::{available_isas, set_max_isa};

    /// Every instruction-set level and operand count agrees with a plain f64 loop.
    #[test]
    fn simd_paths_match_a_plain_loop() {
        let before = features::active_isa();
        for n in 2..=6 {
            for len in [0usize, 1, 7, 8, 9, 100, 1029] {
                let cols: Vec<Vec<f32>> =
                    (0..n).map(|k| (0..len).map(|i| ((i * (k + 3) + k) % 17) as f32 * 0.25 - 2.0).collect()).collect();
                let refs: Vec<&[f32]> = cols.iter().map(|c| c.as_slice()).collect();
                let bf16_cols: Vec<Vec<bf16>> = cols.iter().map(|c| c.iter().map(|&v| bf16::from_f32(v)).collect()).collect();
                let bf16_refs: Vec<&[bf16]> = bf16_cols.iter().map(|c| c.as_slice()).collect();
                let mut want = Moments::new(n);
                for i in 0..n {
                    want.sums[i] = cols[i].iter().map(|&v| v as f64).sum();
                    for j in 0..n {
                        want.products[i * n + j] = cols[i].iter().zip(&cols[j]).map(|(&a, &b)| a as f64 * b as f64).sum();
                    }
                }
                for i in 0..n - 1 {
                    want.sq_diffs[i] = cols[n - 1].iter().zip(&cols[i]).map(|(&a, &b)| (a as f64 - b as f64).powi(2)).sum();
                }
                want.count = len as u64;
                for isa in available_isas() {
                    set_max_isa(isa);
                    let mut got = Moments::new(n);
                    got.accumulate(&refs);
                    // Values are multiples of 1/4 below 100 in magnitude: every sum is exact.
                    assert_eq!(got, want, "isa {isa:?}, {n} operands, {len} elements");
                    let mut got = Moments::new(n);
                    got.accumulate_bf16(&bf16_refs);
                    assert_eq!(got, want, "bf16, isa {isa:?}, {n} operands, {len} elements");
                    let mut got = Moments::new(n);
                    got.accumulate_bf16_runs(&bf16_refs);
                    assert_eq!(got, want, "bf16 runs, isa {isa:?}, {n} operands, {len} elements");
                }
            }
        }
        set_max_isa(before);
    }

    /// Random bf16 data: the f32 runs stay within 1e-6 of exact f64 sums.
    #[test]
    fn bf16_kernel_is_accurate_on_random_data() {
        let n = 3;
        let len = 100_003;
        let mut state = 0x1234_5678_u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
        };
        let cols: Vec<Vec<bf16>> = (0..n).map(|_| (0..len).map(|_| bf16::from_f32(next())).collect()).collect();
        let wide: Vec<Vec<f64>> = cols.iter().map(|c| c.iter().map(|v| v.to_f64()).collect()).collect();
        let refs: Vec<&[bf16]> = cols.iter().map(|c| c.as_slice()).collect();
        let mut got = Moments::new(n);
        got.accumulate_bf16_runs(&refs);
        for i in 0..n {
            for j in 0..n {
                let want: f64 = wide[i].iter().zip(&wide[j]).map(|(a, b)| a * b).sum();
                let scale = (got.product(i, i) * got.product(j, j)).sqrt();
                assert!((got.product(i, j) - want).abs() <= 1e-6 * scale, "{i},{j}: {} vs {want}", got.product(i, j));
            }
        }
        let want: f64 = wide[2].iter().zip(&wide[0]).map(|(a, b)| (a - b) * (a - b)).sum();
        assert!((got.sq_diffs[0] - want).abs() <= 1e-6 * want);
    }
}
