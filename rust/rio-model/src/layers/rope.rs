//! RoPE of a model (spec 2.2, 2.3): the inverse frequencies and attention factor its config
//! gives (default or YaRN), applied to rows of heads at consecutive positions.
use rio_cpu::ops::rope;

use super::Precision;

#[derive(Clone, Debug)]
pub struct Rope {
    inv_freq: Vec<f32>,
    /// Multiplies cos and sin (YaRN's attention factor; 1 otherwise).
    attention_scaling: f32,
}

impl Rope {
    pub fn new(inv_freq: Vec<f32>, attention_scaling: f32) -> Rope {
        Rope { inv_freq, attention_scaling }
    }

    /// Rotates `x [T, width]` (rows of heads of `head_dim`) at positions `first..first+T`; in
    /// bf16 cos/sin are rounded to bf16 and the rotation runs on bf16 values.
    pub fn apply(&self, x: &mut [f32], width: usize, head_dim: usize, first: usize, precision: Precision) {
        let half = self.inv_freq.len();
        let (mut cos, mut sin) = (vec![0f32; half], vec![0f32; half]);
        let bf16 = precision == Precision::Bf16;
        for (s, row) in x.chunks_exact_mut(width).enumerate() {
            rope::cos_sin(first + s, &self.inv_freq, self.attention_scaling, bf16, &mut cos, &mut sin);
            rope::rotate(row, head_dim, &cos, &sin, bf16);
        }
    }
}
