//! Per-sequence decoding state (spec 3.3): a growing key/value cache for each full-attention
//! layer, and for each Gated DeltaNet layer the conv history (last `K-1` raw qkv vectors) and
//! the f32 recurrent state. Prefill followed by single-token steps sees exactly the state a
//! longer prefill would.
use crate::config::{LayerType, Qwen35MoeConfig};

/// Keys (post-norm, post-RoPE) and values of every position so far, `[L, n_kv, d]` each.
#[derive(Clone, Debug, PartialEq)]
pub struct KvCache {
    kv_width: usize,
    keys: Vec<f32>,
    values: Vec<f32>,
}

impl KvCache {
    pub fn new(num_kv_heads: usize, head_dim: usize) -> KvCache {
        KvCache { kv_width: num_kv_heads * head_dim, keys: Vec::new(), values: Vec::new() }
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.keys.len() / self.kv_width
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Appends the keys and values `[T, n_kv, d]` of the next T positions.
    pub fn append(&mut self, keys: &[f32], values: &[f32]) {
        assert!(
            keys.len() == values.len() && keys.len().is_multiple_of(self.kv_width),
            "keys and values must be whole [T, n_kv, d] blocks"
        );
        self.keys.extend_from_slice(keys);
        self.values.extend_from_slice(values);
    }

    pub fn keys(&self) -> &[f32] {
        &self.keys
    }

    pub fn values(&self) -> &[f32] {
        &self.values
    }
}

/// Gated DeltaNet state of one layer.
#[derive(Clone, Debug, PartialEq)]
pub struct GdnState {
    /// `[K-1, C]`: the raw (pre-conv) qkv vectors of the last K-1 tokens, oldest first; zeros
    /// before the sequence starts.
    pub conv: Vec<f32>,
    /// `[n_v, d_k, d_v]` in f32 whatever the weights' dtype (as transformers keeps it).
    pub recurrent: Vec<f32>,
}

impl GdnState {
    pub fn new(config: &Qwen35MoeConfig) -> GdnState {
        let (conv, recurrent) = GdnState::sizes(config);
        GdnState { conv: vec![0.0; conv], recurrent: vec![0.0; recurrent] }
    }

    /// Elements of the conv and recurrent state for a model of `config`.
    fn sizes(config: &Qwen35MoeConfig) -> (usize, usize) {
        let c = config;
        ((c.linear_conv_kernel_dim - 1) * c.conv_channels(), c.linear_num_value_heads * c.linear_key_head_dim * c.linear_value_head_dim)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum LayerCache {
    Attention(KvCache),
    LinearAttention(GdnState),
}

/// The decoding state of one sequence through every layer.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelCache {
    pub layers: Vec<LayerCache>,
    position: usize,
}

impl ModelCache {
    /// An empty cache (no tokens seen) for a model of `config`.
    pub fn new(config: &Qwen35MoeConfig) -> ModelCache {
        let layers = config
            .layer_types
            .iter()
            .map(|t| match t {
                LayerType::FullAttention => LayerCache::Attention(KvCache::new(config.num_key_value_heads, config.head_dim)),
                LayerType::LinearAttention => LayerCache::LinearAttention(GdnState::new(config)),
            })
            .collect();
        ModelCache { layers, position: 0 }
    }

    /// An empty cache for a model whose every layer is attention (`qwen3_moe`).
    pub fn attention_only(num_layers: usize, num_kv_heads: usize, head_dim: usize) -> ModelCache {
        ModelCache { layers: (0..num_layers).map(|_| LayerCache::Attention(KvCache::new(num_kv_heads, head_dim))).collect(), position: 0 }
    }

    /// Whether this cache has the layers and sizes of a model of `config`.
    /// Checked on every forward, so it compares sizes instead of building a fresh cache (whose
    /// recurrent states alone are 189 MB for the 397B).
    pub fn fits(&self, config: &Qwen35MoeConfig) -> bool {
        let kv_width = config.num_key_value_heads * config.head_dim;
        let (conv, recurrent) = GdnState::sizes(config);
        self.layers.len() == config.layer_types.len()
            && self.layers.iter().zip(&config.layer_types).all(|pair| match pair {
                (LayerCache::Attention(a), LayerType::FullAttention) => a.kv_width == kv_width,
                (LayerCache::LinearAttention(g), LayerType::LinearAttention) => g.conv.len() == conv && g.recurrent.len() == recurrent,
                _ => false,
            })
    }

    /// Whether this cache has the layer kinds and sizes of `empty` (a fresh cache of the model).
    pub fn has_layout_of(&self, empty: &ModelCache) -> bool {
        self.layers.len() == empty.layers.len()
            && self.layers.iter().zip(&empty.layers).all(|pair| match pair {
                (LayerCache::Attention(a), LayerCache::Attention(b)) => a.kv_width == b.kv_width,
                (LayerCache::LinearAttention(a), LayerCache::LinearAttention(b)) => {
                    a.conv.len() == b.conv.len() && a.recurrent.len() == b.recurrent.len()
                }
                _ => false,
            })
    }

    /// Tokens processed so far: the position of the next token.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Records that `tokens` more tokens went through every layer.
    pub fn advance(&mut self, tokens: usize) {
        self.position += tokens;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_cache_appends_blocks_in_order() {
        let mut kv = KvCache::new(2, 3);
        assert!(kv.is_empty());
        let k1: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let v1: Vec<f32> = k1.iter().map(|x| -x).collect();
        kv.append(&k1, &v1);
        kv.append(&[100.0; 6], &[-100.0; 6]);
        assert_eq!(kv.len(), 3);
        assert_eq!(&kv.keys()[..12], &k1[..]);
        assert_eq!(&kv.values()[12..], &[-100.0; 6]);
    }

    #[test]
    fn model_cache_follows_the_layer_pattern() {
        let json = r#"{"model_type": "qwen3_5_moe_text", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 4,
            "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4, "linear_num_key_heads": 1,
            "linear_num_value_heads": 2, "linear_key_head_dim": 4, "linear_value_head_dim": 3,
            "num_experts": 2, "num_experts_per_tok": 1, "moe_intermediate_size": 4}"#;
        let config = Qwen35MoeConfig::parse(json, "config.json").unwrap();
        let mut cache = ModelCache::new(&config);
        assert!(matches!(cache.layers[3], LayerCache::Attention(_)));
        match &cache.layers[0] {
            LayerCache::LinearAttention(s) => {
                assert_eq!(s.conv.len(), 3 * (2 * 4 + 2 * 3));
                assert_eq!(s.recurrent.len(), 2 * 4 * 3);
            }
            other => panic!("layer 0 should be Gated DeltaNet, got {other:?}"),
        }
        cache.advance(5);
        cache.advance(1);
        assert_eq!(cache.position(), 6);
        assert!(cache.fits(&config));
        let mut other = config.clone();
        other.linear_value_head_dim = 5;
        assert!(!cache.fits(&other));
        other = config.clone();
        other.layer_types.swap(0, 3);
        assert!(!cache.fits(&other));
    }
}
