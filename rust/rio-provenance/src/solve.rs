//! Least squares from moments: candidate ≈ Σ cᵢ·parentᵢ (+ b), solved on the normal equations in
//! fp64. Columns are scaled to unit norm and the system is solved by a symmetric eigen
//! decomposition with a pseudo-inverse, so identical or zero parents give a minimum-norm answer
//! instead of a failure.
use crate::moments::Moments;

/// Eigenvalues below this fraction of the largest are treated as zero (collinear parents).
const RANK_CUTOFF: f64 = 1e-12;

#[derive(Clone, Debug, PartialEq)]
pub struct Solution {
    pub coefficients: Vec<f64>,
    pub intercept: Option<f64>,
    /// Σ r², clamped at zero.
    pub rss: f64,
}

/// Fits the candidate (the last operand) on the parents (the others).
pub fn least_squares(m: &Moments, intercept: bool) -> Solution {
    let k = m.operands - 1;
    let cols = k + usize::from(intercept);
    let mut gram = vec![0.0; cols * cols];
    let mut rhs = vec![0.0; cols];
    for i in 0..k {
        for j in 0..k {
            gram[i * cols + j] = m.product(i, j);
        }
        rhs[i] = m.product(i, k);
    }
    if intercept {
        for i in 0..k {
            gram[i * cols + k] = m.sums[i];
            gram[k * cols + i] = m.sums[i];
        }
        gram[k * cols + k] = m.count as f64;
        rhs[k] = m.sums[k];
    }
    let x = solve_psd(&gram, &rhs, cols);
    let yy = m.product(k, k);
    let mut rss = yy;
    for i in 0..cols {
        rss -= 2.0 * x[i] * rhs[i];
        for j in 0..cols {
            rss += x[i] * gram[i * cols + j] * x[j];
        }
    }
    Solution { coefficients: x[..k].to_vec(), intercept: intercept.then(|| x[k]), rss: rss.max(0.0) }
}

/// Minimum-norm solution of `a x = b` for a symmetric positive semi-definite `a` (`n × n`).
pub fn solve_psd(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let scale: Vec<f64> = (0..n).map(|i| a[i * n + i].max(0.0).sqrt()).collect();
    let inv = |s: f64| if s > 0.0 { 1.0 / s } else { 0.0 };
    let mut scaled = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            scaled[i * n + j] = a[i * n + j] * inv(scale[i]) * inv(scale[j]);
        }
    }
    let (values, vectors) = jacobi_eigen(scaled, n);
    let largest = values.iter().fold(0.0f64, |m, &v| m.max(v.abs()));
    let bs: Vec<f64> = (0..n).map(|i| b[i] * inv(scale[i])).collect();
    let mut x = vec![0.0; n];
    for (e, &lambda) in values.iter().enumerate() {
        if lambda <= RANK_CUTOFF * largest || lambda <= 0.0 {
            continue;
        }
        let proj: f64 = (0..n).map(|i| vectors[i * n + e] * bs[i]).sum::<f64>() / lambda;
        for i in 0..n {
            x[i] += proj * vectors[i * n + e];
        }
    }
    x.iter().zip(&scale).map(|(v, &s)| v * inv(s)).collect()
}

/// Cyclic Jacobi: eigenvalues and column eigenvectors (row-major `n × n`) of a symmetric matrix.
fn jacobi_eigen(mut a: Vec<f64>, n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..n).flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j))).map(|(i, j)| a[i * n + j].powi(2)).sum();
        let diag: f64 = (0..n).map(|i| a[i * n + i].powi(2)).sum();
        if off <= 1e-30 * diag || off == 0.0 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn moments_of(cols: &[Vec<f64>]) -> Moments {
        let mut m = Moments::new(cols.len());
        let cols: Vec<Vec<f32>> = cols.iter().map(|c| c.iter().map(|&v| v as f32).collect()).collect();
        let refs: Vec<&[f32]> = cols.iter().map(|c| c.as_slice()).collect();
        m.accumulate(&refs);
        m
    }

    #[test]
    fn exact_blend_is_recovered_with_zero_residual() {
        // Small dyadic values: the inputs and the blend are exact in f32.
        let a: Vec<f64> = (0..100).map(|i| (i % 7) as f64 - 3.0).collect();
        let b: Vec<f64> = (0..100).map(|i| (i % 5) as f64 * 0.5).collect();
        let y: Vec<f64> = a.iter().zip(&b).map(|(x, z)| 0.5 * x + 0.25 * z + 0.25).collect();
        let s = least_squares(&moments_of(&[a, b, y.clone()]), true);
        assert!((s.coefficients[0] - 0.5).abs() < 1e-10 && (s.coefficients[1] - 0.25).abs() < 1e-10, "{s:?}");
        assert!((s.intercept.unwrap() - 0.25).abs() < 1e-10);
        // The normal-equation residual cancels to ~1e-16 of ‖y‖², a relative residual near 1e-8.
        let yy: f64 = y.iter().map(|v| v * v).sum();
        assert!(s.rss < 1e-13 * yy, "{}", s.rss);
    }

    #[test]
    fn identical_parents_share_the_weight() {
        let a: Vec<f64> = (0..50).map(|i| i as f64 - 20.0).collect();
        let y: Vec<f64> = a.iter().map(|v| 2.0 * v).collect();
        let s = least_squares(&moments_of(&[a.clone(), a, y]), false);
        assert!((s.coefficients[0] - 1.0).abs() < 1e-9 && (s.coefficients[1] - 1.0).abs() < 1e-9, "{s:?}");
    }

    #[test]
    fn zero_parent_gets_zero() {
        let a: Vec<f64> = (0..50).map(|i| (i as f64).sqrt()).collect();
        let s = least_squares(&moments_of(&[vec![0.0; 50], a.clone(), a]), false);
        assert_eq!(s.coefficients[0], 0.0);
        assert!((s.coefficients[1] - 1.0).abs() < 1e-12);
    }

    proptest! {
        /// The residual is orthogonal to every parent: the defining property of least squares.
        #[test]
        fn residual_is_orthogonal_to_parents(
            data in proptest::collection::vec(-10.0f64..10.0, 3 * 40),
            intercept in any::<bool>(),
        ) {
            let cols: Vec<Vec<f64>> = data.chunks(40).map(|c| c.iter().map(|&v| v as f32 as f64).collect()).collect();
            let s = least_squares(&moments_of(&cols), intercept);
            let b = s.intercept.unwrap_or(0.0);
            let r: Vec<f64> = (0..40).map(|t| cols[2][t] - s.coefficients[0] * cols[0][t] - s.coefficients[1] * cols[1][t] - b).collect();
            let norm_y: f64 = cols[2].iter().map(|v| v * v).sum::<f64>().sqrt();
            for p in &cols[..2] {
                let d: f64 = r.iter().zip(p).map(|(x, y)| x * y).sum();
                let np: f64 = p.iter().map(|v| v * v).sum::<f64>().sqrt();
                prop_assert!(d.abs() <= 1e-8 * np * norm_y + 1e-12, "{} {:?}", d, s);
            }
            let rss: f64 = r.iter().map(|v| v * v).sum();
            prop_assert!((rss - s.rss).abs() <= 1e-8 * norm_y * norm_y + 1e-12);
        }
    }
}
