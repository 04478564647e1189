//! The Qwen3-MoE text model (`qwen3_moe`), f32 on CPU, mirroring transformers'
//! `modeling_qwen3_moe.py`: [`Qwen3Moe`] → [`DecoderLayer`] → [`Attention`] + ([`SparseMoe`] | [`Mlp`]).
//!
//! Unlike Qwen3.5-MoE: every RMSNorm has a plain weight `w` (not `1 + w`), attention has no
//! output gate and rotates the whole head, the MoE block has no shared expert and renormalises
//! the top-k probabilities only when `norm_topk_prob` says so, and layers outside the sparse
//! rule run a dense SwiGLU MLP.
use rio_core::moe::{MoeWeights, RouterConfig};
use rio_core::{Backend, Error, Result, TensorMut, TensorRef};
use rio_cpu::ops::{attention, rope, silu};
use rio_cpu::CpuBackend;

use crate::cache::{KvCache, LayerCache, ModelCache};
use crate::config::{GenerationConfig, Qwen3MoeConfig};
use crate::layers::{eos_token_ids, load_f32, rms_norm_inplace, Input, Linear, LmEnds};
use crate::Checkpoint;

/// `Qwen3MoeAttention`: GQA with per-head q/k RMSNorm before RoPE.
#[derive(Debug)]
pub struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    q_norm: Vec<f32>,
    k_norm: Vec<f32>,
    n_h: usize,
    n_kv: usize,
    d: usize,
    eps: f32,
    inv_freq: Vec<f32>,
}

impl Attention {
    fn load(ck: &Checkpoint, p: &str, c: &Qwen3MoeConfig) -> Result<Self> {
        let (h, n_h, n_kv, d) = (c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        Ok(Attention {
            q_proj: Linear::load(ck, &format!("{p}.q_proj.weight"), n_h * d, h)?,
            k_proj: Linear::load(ck, &format!("{p}.k_proj.weight"), n_kv * d, h)?,
            v_proj: Linear::load(ck, &format!("{p}.v_proj.weight"), n_kv * d, h)?,
            o_proj: Linear::load(ck, &format!("{p}.o_proj.weight"), h, n_h * d)?,
            q_norm: load_f32(ck, &format!("{p}.q_norm.weight"), &[d])?,
            k_norm: load_f32(ck, &format!("{p}.k_norm.weight"), &[d])?,
            n_h,
            n_kv,
            d,
            eps: c.rms_norm_eps as f32,
            inv_freq: rope::inv_freq(c.rope.theta, c.rotary_dim()),
        })
    }

    /// `x [T, H]` at positions `kv.len()..`; appends to `kv`.
    fn forward(&self, x: &[f32], kv: &mut KvCache) -> Vec<f32> {
        let (n_h, n_kv, d) = (self.n_h, self.n_kv, self.d);
        let past = kv.len();
        let mut q = self.q_proj.forward(x);
        let mut k = self.k_proj.forward(x);
        let v = self.v_proj.forward(x);
        let t = q.len() / (n_h * d);
        rms_norm_inplace(&mut q, &self.q_norm, self.eps);
        rms_norm_inplace(&mut k, &self.k_norm, self.eps);
        for s in 0..t {
            rope::apply_rope(&mut q[s * n_h * d..(s + 1) * n_h * d], d, past + s, &self.inv_freq);
            rope::apply_rope(&mut k[s * n_kv * d..(s + 1) * n_kv * d], d, past + s, &self.inv_freq);
        }
        kv.append(&k, &v);
        let mut out = vec![0f32; q.len()];
        attention::causal_gqa(&q, kv.keys(), kv.values(), n_h, n_kv, d, &mut out);
        self.o_proj.forward(&out)
    }
}

/// `Qwen3MoeMLP`: the dense SwiGLU MLP of layers outside the sparse rule.
#[derive(Debug)]
pub struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    fn load(ck: &Checkpoint, p: &str, c: &Qwen3MoeConfig) -> Result<Self> {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        Ok(Mlp {
            gate_proj: Linear::load(ck, &format!("{p}.gate_proj.weight"), i, h)?,
            up_proj: Linear::load(ck, &format!("{p}.up_proj.weight"), i, h)?,
            down_proj: Linear::load(ck, &format!("{p}.down_proj.weight"), h, i)?,
        })
    }

    fn forward(&self, x: &[f32]) -> Vec<f32> {
        let mut act = self.gate_proj.forward(x);
        let up = self.up_proj.forward(x);
        act.iter_mut().zip(&up).for_each(|(g, &u)| *g = silu(*g) * u);
        self.down_proj.forward(&act)
    }
}

/// `Qwen3MoeSparseMoeBlock`: softmax router, top-k (optionally renormalised), SwiGLU experts,
/// run by the CPU backend's MoE pipeline.
#[derive(Debug)]
pub struct SparseMoe {
    router: Vec<f32>,
    gate_up: Vec<f32>,
    down: Vec<f32>,
    e: usize,
    h: usize,
    i: usize,
    routing: RouterConfig,
}

impl SparseMoe {
    fn load(ck: &Checkpoint, p: &str, c: &Qwen3MoeConfig) -> Result<Self> {
        let (e, h, i) = (c.num_experts, c.hidden_size, c.moe_intermediate_size);
        Ok(SparseMoe {
            router: load_f32(ck, &format!("{p}.gate.weight"), &[e, h])?,
            gate_up: load_f32(ck, &format!("{p}.experts.gate_up_proj"), &[e, 2 * i, h])?,
            down: load_f32(ck, &format!("{p}.experts.down_proj"), &[e, h, i])?,
            e,
            h,
            i,
            routing: RouterConfig { top_k: c.num_experts_per_tok, renormalize: c.norm_topk_prob },
        })
    }

    fn forward(&self, x: &[f32]) -> Result<Vec<f32>> {
        let (e, h, i) = (self.e, self.h, self.i);
        let weights = MoeWeights::fused(
            TensorRef::from_slice(&self.router, &[e, h])?,
            TensorRef::from_slice(&self.gate_up, &[e, 2 * i, h])?,
            TensorRef::from_slice(&self.down, &[e, h, i])?,
            None,
        )?;
        let t = x.len() / h;
        let mut out = vec![0f32; x.len()];
        CpuBackend.moe_forward(
            &TensorRef::from_slice(x, &[t, h])?,
            &weights,
            self.routing,
            &mut TensorMut::from_slice(&mut out, &[t, h])?,
        )?;
        Ok(out)
    }
}

#[derive(Debug)]
pub enum FeedForward {
    Sparse(SparseMoe),
    Dense(Mlp),
}

/// `Qwen3MoeDecoderLayer`: pre-norm attention and feed-forward, each with a residual.
#[derive(Debug)]
pub struct DecoderLayer {
    input_layernorm: Vec<f32>,
    post_attention_layernorm: Vec<f32>,
    self_attn: Attention,
    mlp: FeedForward,
    eps: f32,
}

impl DecoderLayer {
    fn load(ck: &Checkpoint, layer: usize, c: &Qwen3MoeConfig) -> Result<Self> {
        let p = format!("layers.{layer}");
        let mlp = if c.sparse_layers[layer] {
            FeedForward::Sparse(SparseMoe::load(ck, &format!("{p}.mlp"), c)?)
        } else {
            FeedForward::Dense(Mlp::load(ck, &format!("{p}.mlp"), c)?)
        };
        Ok(DecoderLayer {
            input_layernorm: load_f32(ck, &format!("{p}.input_layernorm.weight"), &[c.hidden_size])?,
            post_attention_layernorm: load_f32(ck, &format!("{p}.post_attention_layernorm.weight"), &[c.hidden_size])?,
            self_attn: Attention::load(ck, &format!("{p}.self_attn"), c)?,
            mlp,
            eps: c.rms_norm_eps as f32,
        })
    }

    fn forward(&self, x: &mut [f32], cache: &mut LayerCache) -> Result<()> {
        let LayerCache::Attention(kv) = cache else {
            return Err(Error::value("cache", "does not belong to this model (layer types differ)"));
        };
        let mut h = x.to_vec();
        rms_norm_inplace(&mut h, &self.input_layernorm, self.eps);
        let attended = self.self_attn.forward(&h, kv);
        x.iter_mut().zip(&attended).for_each(|(a, b)| *a += b);
        h.copy_from_slice(x);
        rms_norm_inplace(&mut h, &self.post_attention_layernorm, self.eps);
        let ff = match &self.mlp {
            FeedForward::Sparse(moe) => moe.forward(&h)?,
            FeedForward::Dense(mlp) => mlp.forward(&h),
        };
        x.iter_mut().zip(&ff).for_each(|(a, b)| *a += b);
        Ok(())
    }
}

/// `Qwen3MoeForCausalLM`: embedding, decoder layers, final norm, lm_head.
#[derive(Debug)]
pub struct Qwen3Moe {
    config: Qwen3MoeConfig,
    generation: GenerationConfig,
    ends: LmEnds,
    layers: Vec<DecoderLayer>,
}

impl Qwen3Moe {
    /// Loads a checkpoint folder: `config.json` and the safetensors weights (`model.` prefix,
    /// fused or per-expert layout).
    pub fn from_dir(dir: impl AsRef<std::path::Path>) -> Result<Self> {
        if !dir.as_ref().is_dir() {
            return Err(Error::checkpoint(dir.as_ref().display().to_string(), "no such checkpoint folder"));
        }
        let config = Qwen3MoeConfig::from_dir(&dir)?;
        let generation = GenerationConfig::from_dir(&dir)?;
        let ck = Checkpoint::open(&dir)?;
        Self::load(&ck, config, generation)
    }

    pub fn load(ck: &Checkpoint, config: Qwen3MoeConfig, generation: GenerationConfig) -> Result<Self> {
        let ends = LmEnds::load(ck, config.vocab_size, config.hidden_size, config.tie_word_embeddings)?;
        let layers = (0..config.num_hidden_layers).map(|l| DecoderLayer::load(ck, l, &config)).collect::<Result<Vec<_>>>()?;
        Ok(Qwen3Moe { ends, layers, config, generation })
    }

    pub fn config(&self) -> &Qwen3MoeConfig {
        &self.config
    }

    pub fn generation_config(&self) -> &GenerationConfig {
        &self.generation
    }

    /// The tokens that end a generation: `generation_config.json`'s, then `config.json`'s.
    pub fn eos_token_ids(&self) -> Vec<u32> {
        eos_token_ids(&self.generation, &self.config.eos_token_ids)
    }

    /// A fresh per-sequence cache (one KV cache per layer).
    pub fn new_cache(&self) -> ModelCache {
        ModelCache::attention_only(self.config.num_hidden_layers, self.config.num_key_value_heads, self.config.head_dim)
    }

    /// The embedding rows of `tokens`, `[T, H]`.
    pub fn embed(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.ends.embed(tokens)
    }

    /// Runs T new tokens (or embeddings) after what `cache` has seen and returns the logits
    /// `[n, V]` of the last `n = logits_to_keep` new positions (all T for 0).
    pub fn forward(&self, input: Input<'_>, cache: &mut ModelCache, logits_to_keep: usize) -> Result<Vec<f32>> {
        let mut x = self.ends.input_rows(input)?;
        if !cache.has_layout_of(&self.new_cache()) {
            return Err(Error::value("cache", "was made for a model of other layers or sizes; use this model's new_cache()"));
        }
        for (layer, lc) in self.layers.iter().zip(cache.layers.iter_mut()) {
            layer.forward(&mut x, lc)?;
        }
        cache.advance(x.len() / self.config.hidden_size);
        let eps = self.config.rms_norm_eps as f32;
        Ok(self.ends.logits(&mut x, logits_to_keep, |rows, w| rms_norm_inplace(rows, w, eps)))
    }
}

impl crate::CausalLm for Qwen3Moe {
    fn model_type(&self) -> &'static str {
        "qwen3_moe"
    }
    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }
    fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }
    fn num_layers(&self) -> usize {
        self.config.num_hidden_layers
    }
    fn eos_token_ids(&self) -> Vec<u32> {
        Qwen3Moe::eos_token_ids(self)
    }
    fn generation_config(&self) -> &GenerationConfig {
        &self.generation
    }
    fn new_cache(&self) -> ModelCache {
        Qwen3Moe::new_cache(self)
    }
    fn embedding_table(&self) -> TensorRef<'_> {
        self.ends.table()
    }
    fn embed(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.ends.embed(tokens)
    }
    fn forward(&self, input: Input<'_>, cache: &mut ModelCache, logits_to_keep: usize) -> Result<Vec<f32>> {
        Qwen3Moe::forward(self, input, cache, logits_to_keep)
    }
}
