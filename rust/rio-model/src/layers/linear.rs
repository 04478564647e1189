//! A bias-free linear layer `y = x · Wᵀ` on the CPU GEMM, reading its weight in place.
use rio_core::{bf16, Result};
use rio_cpu::gemm::{matmul_nt, MatRef};

use super::weights::{Loader, Precision, Weight};

/// `weight [out_features, in_features]`, checkpoint (out, in) order.
#[derive(Clone, Debug)]
pub struct Linear {
    weight: Weight,
    pub out_features: usize,
    pub in_features: usize,
}

/// Activation rows in the dtype the projections read: the f32 rows themselves, or their bf16
/// copy (exact: in bf16 precision every activation already holds a bf16 value). Made once per
/// input and shared by every projection of it.
pub struct Rows<'a> {
    mat: MatRef<'a>,
    precision: Precision,
}

impl<'a> Rows<'a> {
    /// `x [T, cols]`; `buf` receives the bf16 copy in bf16 precision.
    pub fn new(x: &'a [f32], cols: usize, precision: Precision, buf: &'a mut Vec<bf16>) -> Rows<'a> {
        let t = x.len() / cols;
        assert_eq!(t * cols, x.len(), "input rows must have {cols} elements");
        let mat = match precision {
            Precision::F32 => MatRef::from_slice(x, t, cols),
            Precision::Bf16 => {
                buf.clear();
                buf.extend(x.iter().map(|&v| bf16::from_f32(v)));
                MatRef::from_slice(buf.as_slice(), t, cols)
            }
        };
        Rows { mat, precision }
    }

    pub fn len(&self) -> usize {
        self.mat.rows
    }

    pub fn is_empty(&self) -> bool {
        self.mat.rows == 0
    }
}

impl Linear {
    pub fn load(w: &Loader, name: &str, out_features: usize, in_features: usize) -> Result<Linear> {
        Ok(Linear { weight: w.weight(name, &[out_features, in_features])?, out_features, in_features })
    }

    /// A layer over an existing weight (tied embeddings).
    pub fn from_weight(weight: Weight) -> Linear {
        let (out_features, in_features) = (weight.view().shape()[0], weight.view().shape()[1]);
        Linear { weight, out_features, in_features }
    }

    pub fn weight(&self) -> &Weight {
        &self.weight
    }

    /// `x [T, in] → [T, out]`, rounded to the activation dtype (transformers' bf16 linear
    /// accumulates in f32 and rounds its output once).
    pub fn forward_rows(&self, x: &Rows<'_>) -> Vec<f32> {
        let mut out = vec![0f32; x.len() * self.out_features];
        matmul_nt(x.mat, self.weight.mat(), &mut out, self.out_features);
        x.precision.round(&mut out);
        out
    }

    /// [`Linear::forward_rows`] of f32 rows `x [T, in]`.
    pub fn forward(&self, x: &[f32], precision: Precision) -> Vec<f32> {
        let mut buf = Vec::new();
        self.forward_rows(&Rows::new(x, self.in_features, precision, &mut buf))
    }
}
