//! Every kernel against the f64 reference, for every instruction set this machine has.
use rio_core::{bf16, f16, DType};

use super::{matmul_nt, matmul_nt_with, reference, MatRef};
use crate::features;
#[cfg(target_arch = "x86_64")]
use crate::features::Isa;

/// A small deterministic generator (xorshift) of values in [-1, 1).
pub(crate) struct Rng(u64);
impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub(crate) fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// A matrix of `rows x cols` values, `stride` apart, stored as `dtype`.
pub(crate) enum Data {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Bf16(Vec<bf16>),
}

impl Data {
    pub(crate) fn random(dtype: DType, len: usize, rng: &mut Rng) -> Data {
        let v = (0..len).map(|_| rng.next());
        match dtype {
            DType::F32 => Data::F32(v.collect()),
            DType::F16 => Data::F16(v.map(f16::from_f32).collect()),
            DType::BF16 => Data::Bf16(v.map(bf16::from_f32).collect()),
            other => panic!("no test data for {other}"),
        }
    }
    pub(crate) fn mat(&self, rows: usize, cols: usize, stride: usize) -> MatRef<'_> {
        match self {
            Data::F32(v) => MatRef::from_slice_strided(v, rows, cols, stride),
            Data::F16(v) => MatRef::from_slice_strided(v, rows, cols, stride),
            Data::Bf16(v) => MatRef::from_slice_strided(v, rows, cols, stride),
        }
    }
}

/// Checks `got` (written with row stride `ldo`) against the f64 reference: every element within
/// `rel · Σ_k |x[m,k]| |w[n,k]|` (fp32 accumulation of exact products), and untouched padding.
fn check(x: MatRef<'_>, w: MatRef<'_>, got: &[f32], ldo: usize, rel: f64, what: &str) {
    let mut want = vec![0f32; got.len()];
    reference::matmul_nt(x, w, &mut want, ldo);
    for m in 0..x.rows {
        for n in 0..ldo {
            let (g, r) = (got[m * ldo + n], want[m * ldo + n]);
            if n >= w.rows {
                assert!(g.is_nan(), "{what}: wrote padding at ({m}, {n})");
                continue;
            }
            let scale: f64 = (0..x.cols).map(|k| (x.get_f32(m, k) as f64 * w.get_f32(n, k) as f64).abs()).sum();
            let tol = rel * scale + 1e-30;
            assert!(((g - r) as f64).abs() <= tol, "{what}: at ({m}, {n}) got {g}, want {r} (tolerance {tol:e})");
        }
    }
}

const PAIRS: [(DType, DType); 5] =
    [(DType::BF16, DType::BF16), (DType::F32, DType::F32), (DType::F32, DType::F16), (DType::F32, DType::BF16), (DType::BF16, DType::F16)];

/// Runs `kernel` over many shapes (tails, multiples of 32, strides wider than rows).
fn sweep(
    what: &str,
    pairs: &[(DType, DType)],
    rows_list: &[usize],
    cols_list: &[usize],
    mut kernel: impl FnMut(MatRef<'_>, MatRef<'_>, &mut [f32], usize),
) {
    let mut rng = Rng::new(7);
    for &(xd, wd) in pairs {
        for &m in rows_list {
            for &n in &[1usize, 5, 16, 17, 33, 64] {
                for &k in cols_list {
                    let (ldx, ldw, ldo) = (k + 3, k + 5, n + 2);
                    let xs = Data::random(xd, m * ldx, &mut rng);
                    let ws = Data::random(wd, n * ldw, &mut rng);
                    let (x, w) = (xs.mat(m, k, ldx), ws.mat(n, k, ldw));
                    let mut out = vec![f32::NAN; m * ldo];
                    kernel(x, w, &mut out, ldo);
                    check(x, w, &out, ldo, 1e-5, &format!("{what} x {xd} w {wd} M {m} N {n} K {k}"));
                }
            }
        }
    }
}

const ROWS: [usize; 8] = [0, 1, 2, 15, 16, 17, 33, 100];
const COLS: [usize; 7] = [1, 7, 31, 32, 33, 64, 100];

#[test]
fn every_isa_matches_the_reference() {
    for isa in features::available_isas() {
        sweep(isa.name(), &PAIRS, &ROWS, &COLS, |x, w, out, ldo| matmul_nt_with(isa, x, w, out, ldo));
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn amx_tiles_match_the_reference_for_any_row_count() {
    if !features::available_isas().contains(&Isa::Amx) {
        return;
    }
    let bf = [(DType::BF16, DType::BF16)];
    // 600 columns: a long run of column steps with a partial last one.
    sweep("amx", &bf, &[1, 2, 7, 8, 31, 32, 47, 48, 65], &[1, 31, 33, 100, 600], |x, w, out, ldo| unsafe {
        super::amx::matmul_nt(x, w, out.as_mut_ptr(), ldo)
    });
}

#[cfg(target_arch = "x86_64")]
#[test]
fn amx_staging_across_passes_of_one_and_two_row_groups_matches_the_reference() {
    if !features::available_isas().contains(&Isa::Amx) {
        return;
    }
    // 48 and 112 weight rows: passes of two row groups, then one (the next pass's weights are
    // copied while the tiles run); 120 rows: a tail for the dot-product kernel; 600 columns: a
    // partial last column step in every staged copy; 31 activation rows: an odd block count.
    let mut rng = Rng::new(13);
    for &(m, n, k) in &[(31usize, 48usize, 600usize), (64, 112, 64), (17, 120, 33), (96, 80, 2048)] {
        let (ldx, ldw, ldo) = (k + 1, k + 7, n + 3);
        let xs = Data::random(DType::BF16, m * ldx, &mut rng);
        let ws = Data::random(DType::BF16, n * ldw, &mut rng);
        let (x, w) = (xs.mat(m, k, ldx), ws.mat(n, k, ldw));
        let mut out = vec![f32::NAN; m * ldo];
        unsafe { super::amx::matmul_nt(x, w, out.as_mut_ptr(), ldo) };
        check(x, w, &out, ldo, 1e-5, &format!("amx M {m} N {n} K {k}"));
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn amx_tiles_loaded_straight_from_the_weights_match_the_reference() {
    if !features::available_isas().contains(&Isa::Amx) {
        return;
    }
    // One or two blocks of activation rows and whole column steps: the A tiles are loaded from
    // the weight rows in place (strided, unaligned rows here), in passes of two row groups, one,
    // and a tail of rows for the dot-product kernel.
    let mut rng = Rng::new(19);
    for &m in &[1usize, 8, 16, 17, 32] {
        for &(n, k) in &[(16usize, 32usize), (48, 64), (112, 2048), (120, 96), (7, 64)] {
            let (ldx, ldw, ldo) = (k + 3, k + 7, n + 3);
            let xs = Data::random(DType::BF16, m * ldx, &mut rng);
            let ws = Data::random(DType::BF16, n * ldw, &mut rng);
            let (x, w) = (xs.mat(m, k, ldx), ws.mat(n, k, ldw));
            let mut out = vec![f32::NAN; m * ldo];
            unsafe { super::amx::matmul_nt(x, w, out.as_mut_ptr(), ldo) };
            check(x, w, &out, ldo, 1e-5, &format!("amx direct M {m} N {n} K {k}"));
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn amx_packed_rows_beyond_one_chunk_match_the_reference() {
    if !features::available_isas().contains(&Isa::Amx) {
        return;
    }
    // 600 rows of 1100 columns: 1.3 MiB packed, swept in two runs of blocks (the second odd).
    let (m, n, k) = (600usize, 40usize, 1100usize);
    let mut rng = Rng::new(19);
    let xs = Data::random(DType::BF16, m * k, &mut rng);
    let ws = Data::random(DType::BF16, n * k, &mut rng);
    let (x, w) = (xs.mat(m, k, k), ws.mat(n, k, k));
    let mut packed = super::amx::Packed::new();
    packed.pack(x);
    assert!(packed.chunks().count() > 1, "the rows fit one chunk; the test needs more");
    let mut out = vec![f32::NAN; m * n];
    unsafe { super::amx::matmul_nt_packed(x, &packed, w, out.as_mut_ptr(), n) };
    check(x, w, &out, n, 1e-5, "amx packed in chunks");
}

#[test]
fn pooled_matmul_matches_the_reference_on_large_shapes() {
    let mut rng = Rng::new(11);
    for &(m, n, k) in &[(300usize, 70usize, 130usize), (3, 600, 520), (1100, 33, 64)] {
        for &(xd, wd) in &PAIRS[..2] {
            let xs = Data::random(xd, m * k, &mut rng);
            let ws = Data::random(wd, n * k, &mut rng);
            let (x, w) = (xs.mat(m, k, k), ws.mat(n, k, k));
            let mut out = vec![f32::NAN; m * n];
            matmul_nt(x, w, &mut out, n);
            check(x, w, &out, n, 1e-5, &format!("pooled {xd} M {m} N {n} K {k}"));
        }
    }
}

/// Few activation rows against a weight matrix of several MiB: the weights are cut into more
/// bands than threads (odd row counts, a partial last band), every row written once.
#[test]
fn pooled_gemv_in_many_weight_bands_matches_the_reference() {
    let mut rng = Rng::new(13);
    let (n, k) = (4099usize, 300usize);
    for &(xd, wd) in &PAIRS[..2] {
        let ws = Data::random(wd, n * k, &mut rng);
        let w = ws.mat(n, k, k);
        assert!(n * k * wd.size() > 2 * super::GEMV_MIN_BAND_BYTES, "the weights must span several bands");
        for m in [1usize, 2, 5, 8] {
            let xs = Data::random(xd, m * k, &mut rng);
            let x = xs.mat(m, k, k);
            // ldo > n: the padding columns must stay NaN.
            let mut out = vec![f32::NAN; m * (n + 3)];
            matmul_nt(x, w, &mut out, n + 3);
            check(x, w, &out, n + 3, 1e-5, &format!("banded GEMV {xd} x {wd} M {m}"));
        }
    }
}
