//! The reference twin of every GEMM kernel: one f64 dot product per output element.
use super::MatRef;

/// `out[m * ldo + n] = Σ_k x[m, k] · w[n, k]`, accumulated in f64 and rounded once to f32.
pub fn matmul_nt(x: MatRef<'_>, w: MatRef<'_>, out: &mut [f32], ldo: usize) {
    assert_eq!(x.cols, w.cols, "inner dimensions differ");
    for m in 0..x.rows {
        for n in 0..w.rows {
            let acc: f64 = (0..x.cols).map(|k| x.get_f32(m, k) as f64 * w.get_f32(n, k) as f64).sum();
            out[m * ldo + n] = acc as f32;
        }
    }
}
