//! A bias-free linear layer `y = x · Wᵀ` on the CPU GEMM.
use rio_core::Result;
use rio_cpu::gemm::{matmul_nt, MatRef};

use super::load_f32;
use crate::Checkpoint;

/// `weight [out_features, in_features]`, checkpoint (out, in) order.
#[derive(Clone, Debug)]
pub struct Linear {
    weight: Vec<f32>,
    pub out_features: usize,
    pub in_features: usize,
}

impl Linear {
    pub fn load(ck: &Checkpoint, name: &str, out_features: usize, in_features: usize) -> Result<Linear> {
        Ok(Linear { weight: load_f32(ck, name, &[out_features, in_features])?, out_features, in_features })
    }

    /// `x [T, in] → [T, out]`.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let t = x.len() / self.in_features;
        assert_eq!(t * self.in_features, x.len(), "input rows must have {} elements", self.in_features);
        let mut out = vec![0f32; t * self.out_features];
        let xm = MatRef::from_slice(x, t, self.in_features);
        let wm = MatRef::from_slice(&self.weight, self.out_features, self.in_features);
        matmul_nt(xm, wm, &mut out, self.out_features);
        out
    }

    /// A layer over an existing weight (tied embeddings).
    pub fn from_weight(weight: Vec<f32>, out_features: usize, in_features: usize) -> Linear {
        assert_eq!(weight.len(), out_features * in_features);
        Linear { weight, out_features, in_features }
    }
}
