//! The SwiGLU epilogue of the AMX gate/up tiles: `silu(g) · u` over a gate and an up C tile
//! (16 features x 16 tokens, outᵀ), rounded to bf16 and stored as the tokens' rows.
//!
//! Vectorised over the tile's tokens, with a polynomial exp (relative error about 1e-7, like
//! libm's `expf`), then transposed by one gather per token. The scalar twin in the tests runs
//! the same operations one element at a time and must agree bit for bit.
use std::arch::x86_64::*;

use rio_core::bf16;

const N: usize = 16;
/// Beyond this |x|, exp(x) is 0 or inf in f32 anyway; it keeps 2^n inside f32's exponents.
const EXP_LIMIT: f32 = 150.0;
/// ln 2 split so that `n · LN2_HI` is exact for the n that occur.
const LN2_HI: f32 = 0.6933594;
const LN2_LO: f32 = -2.1219444e-04;
/// exp(r) ≈ 1 + r + r² · poly(r) on |r| ≤ ln2 / 2 (Cephes' expf coefficients), highest first.
const POLY: [f32; 6] = [1.9875691e-04, 0.0013981999, 0.008333452, 0.041665796, 0.16666666, 0.5];

/// `exp(x)` on 16 lanes; NaN lanes give a finite value (callers keep NaN through `g` itself).
#[target_feature(enable = "avx512f")]
unsafe fn exp(x: __m512) -> __m512 {
    let x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-EXP_LIMIT)), _mm512_set1_ps(EXP_LIMIT));
    let log2 = _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(log2);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
    let mut p = _mm512_set1_ps(POLY[0]);
    for c in &POLY[1..] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(*c));
    }
    let p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0)));
    // p · 2^n in one rounding: overflow gives inf, underflow 0.
    _mm512_scalef_ps(p, n)
}

/// `silu(g) · u = g / (1 + exp(-g)) · u` on 16 lanes.
#[target_feature(enable = "avx512f")]
unsafe fn silu_mul(g: __m512, u: __m512) -> __m512 {
    let neg = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(g), _mm512_set1_epi32(i32::MIN)));
    let e = exp(neg);
    _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.0), e)), u)
}

/// f32 to bf16 bits (in the low half of each lane) as `half::bf16::from_f32`: round to nearest
/// even, NaN kept NaN (quieted, sign and top payload bits kept).
#[target_feature(enable = "avx512f")]
unsafe fn to_bf16(v: __m512) -> __m256i {
    let bits = _mm512_castps_si512(v);
    let high = _mm512_srli_epi32::<16>(bits);
    let lsb = _mm512_and_si512(high, _mm512_set1_epi32(1));
    let rounded = _mm512_srli_epi32::<16>(_mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))));
    let magnitude = _mm512_and_si512(bits, _mm512_set1_epi32(0x7fff_ffff));
    let nan = _mm512_cmpgt_epi32_mask(magnitude, _mm512_set1_epi32(0x7f80_0000));
    let quiet = _mm512_or_si512(high, _mm512_set1_epi32(0x40));
    _mm512_cvtepi32_epi16(_mm512_mask_mov_epi32(rounded, nan, quiet))
}

/// `dst[t * ld + j] = bf16(silu(g[j * 16 + t]) · u[j * 16 + t])` for tokens t < `rows` and all
/// 16 features j.
///
/// # Safety
/// Needs AVX-512F; `dst` must be valid for those writes.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn store_swiglu_bf16(g: &[f32; N * N], u: &[f32; N * N], dst: *mut bf16, ld: usize, rows: usize) {
    #[repr(C, align(64))]
    struct Tile([f32; N * N]);
    let mut h = Tile([0.0; N * N]);
    for j in 0..N {
        let (gj, uj) = (_mm512_loadu_ps(g[j * N..].as_ptr()), _mm512_loadu_ps(u[j * N..].as_ptr()));
        _mm512_store_ps(h.0[j * N..].as_mut_ptr(), silu_mul(gj, uj));
    }
    // Lane j of token t's row reads h[j * 16 + t].
    let column = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(N as i32));
    for t in 0..rows.min(N) {
        let row = _mm512_i32gather_ps::<4>(_mm512_add_epi32(column, _mm512_set1_epi32(t as i32)), h.0.as_ptr() as _);
        _mm256_storeu_si256(dst.add(t * ld) as *mut __m256i, to_bf16(row));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scalar twin of [`exp`]: the same operations, one rounding each.
    fn exp_scalar(x: f32) -> f32 {
        // As `max_ps`, which returns its second operand for NaN.
        let x = if x.is_nan() { -EXP_LIMIT } else { x.clamp(-EXP_LIMIT, EXP_LIMIT) };
        let n = (x * std::f32::consts::LOG2_E).round_ties_even();
        let r = (-n).mul_add(LN2_HI, x);
        let r = (-n).mul_add(LN2_LO, r);
        let p = POLY[1..].iter().fold(POLY[0], |p, &c| p.mul_add(r, c));
        let p = p.mul_add(r * r, r + 1.0);
        // p · 2^n as two exact scalings (|n| ≤ 217): p · 2^a stays normal, so one rounding.
        let pow2 = |k: i32| f32::from_bits(((k + 127) as u32) << 23);
        let (n, a) = (n as i32, n as i32 / 2);
        p * pow2(a) * pow2(n - a)
    }

    fn silu_mul_scalar(g: f32, u: f32) -> f32 {
        g / (1.0 + exp_scalar(-g)) * u
    }

    fn store_swiglu_scalar(g: &[f32; 256], u: &[f32; 256], dst: &mut [bf16], ld: usize, rows: usize) {
        for t in 0..rows {
            for j in 0..N {
                dst[t * ld + j] = bf16::from_f32(silu_mul_scalar(g[j * N + t], u[j * N + t]));
            }
        }
    }

    fn avx512() -> bool {
        std::is_x86_feature_detected!("avx512f")
    }

    /// Values of every magnitude and sign, zeros, infinities, NaNs, subnormals, and bf16 ties.
    fn samples() -> Vec<f32> {
        let mut v =
            vec![0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -f32::NAN, f32::MIN_POSITIVE / 4.0, -1e-40, f32::MAX, f32::MIN];
        v.extend([87.0, 88.7, 89.0, 103.0, 104.0, 150.0, 151.0, 1e6, -87.0, -88.7, -89.0, -103.0, -104.0, -150.0, -1e6]);
        v.extend([1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0, -1.0 - 1.0 / 256.0, 3.0f32.next_up()]);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..200_000 {
            let r = next();
            v.push(match r % 3 {
                0 => f32::from_bits((r >> 32) as u32),
                1 => ((r >> 8) as f32 / (1u64 << 56) as f32 - 0.5) * 40.0,
                _ => ((r >> 8) as f32 / (1u64 << 56) as f32 - 0.5) * 400.0,
            });
        }
        v
    }

    #[test]
    fn exp_matches_f64_and_its_scalar_twin() {
        if !avx512() {
            return;
        }
        let xs: Vec<f32> = samples().into_iter().filter(|x| x.is_finite()).collect();
        for chunk in xs.chunks_exact(N) {
            let mut got = [0f32; N];
            // SAFETY: AVX-512F checked above.
            unsafe { _mm512_storeu_ps(got.as_mut_ptr(), exp(_mm512_loadu_ps(chunk.as_ptr()))) };
            for (&x, &e) in chunk.iter().zip(&got) {
                assert_eq!(e.to_bits(), exp_scalar(x).to_bits(), "exp({x:e}): vector {e:e}, scalar twin {:e}", exp_scalar(x));
                let want = (x as f64).exp();
                if want > f32::MAX as f64 {
                    assert_eq!(e, f32::INFINITY, "exp({x:e}) overflows");
                } else if want >= f32::MIN_POSITIVE as f64 {
                    assert!(((e as f64 - want) / want).abs() <= 2e-7, "exp({x:e}) = {e:e}, want {want:e}");
                } else {
                    assert!((e as f64 - want).abs() <= 2f64.powi(-149) + 2e-7 * want, "exp({x:e}) = {e:e}, want {want:e} (subnormal)");
                }
            }
        }
    }

    #[test]
    fn store_matches_scalar_twin_and_f64() {
        if !avx512() {
            return;
        }
        let values = samples();
        let (mut compared, mut tiles) = (0, 0);
        let ld = 40;
        for pair in values.chunks_exact(2 * N * N) {
            let g: [f32; 256] = pair[..256].try_into().unwrap();
            let u: [f32; 256] = std::array::from_fn(|i| if tiles % 2 == 0 { pair[256 + i] } else { (pair[256 + i] % 4.0).abs() + 0.5 });
            let rows = [16, 16, 7, 1][tiles % 4];
            let sentinel = bf16::from_bits(0x1234);
            let (mut got, mut want) = (vec![sentinel; N * ld], vec![sentinel; N * ld]);
            // SAFETY: AVX-512F checked; `got` holds `rows` rows of `ld`.
            unsafe { store_swiglu_bf16(&g, &u, got.as_mut_ptr(), ld, rows) };
            store_swiglu_scalar(&g, &u, &mut want, ld, rows);
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                let same = a.to_bits() == b.to_bits() || a.is_nan() && b.is_nan();
                assert!(same, "tile {tiles} element {i}: vector {a} ({:#06x}), scalar twin {b} ({:#06x})", a.to_bits(), b.to_bits());
            }
            // The twin against f64 (and NaN where f64 gives NaN), where f32's exp(-g) is finite.
            for t in 0..rows {
                for j in 0..N {
                    let (gv, uv) = (g[j * N + t] as f64, u[j * N + t] as f64);
                    let exact = gv / (1.0 + (-gv).exp()) * uv;
                    let got = want[t * ld + j].to_f32() as f64;
                    if exact.is_nan() {
                        assert!(got.is_nan(), "silu({gv:e}) · {uv:e} = {got:e}, want NaN");
                    } else if -gv < 88.0 && exact.abs() < f32::MAX as f64 / 2.0 && exact.abs() > 1e-30 {
                        // bf16 rounding (half of 2^-7, relative) plus a few f32 roundings.
                        assert!(((got - exact) / exact).abs() <= 2f64.powi(-8) + 1e-6, "silu({gv:e}) · {uv:e} = {got:e}, want {exact:e}");
                        compared += 1;
                    }
                }
            }
            assert!(got[rows * ld..].iter().all(|v| v.to_bits() == sentinel.to_bits()), "rows past {rows} untouched");
            tiles += 1;
        }
        assert!(compared > 40_000, "only {compared} finite results compared");
    }
}
