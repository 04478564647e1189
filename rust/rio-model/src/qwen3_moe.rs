//! The Qwen3-MoE text model (`qwen3_moe`) on CPU, f32 or transformers' bf16 dtype flow, mirroring transformers'
//! `modeling_qwen3_moe.py`: [`Qwen3Moe`] → [`DecoderLayer`] → [`Attention`] + ([`MoeBlock`] | [`Mlp`]).
//!
//! Unlike Qwen3.5-MoE: every RMSNorm has a plain weight `w` (not `1 + w`), attention has no
//! output gate and rotates the whole head, the MoE block has no shared expert and renormalises
//! the top-k probabilities only when `norm_topk_prob` says so, and layers outside the sparse
//! rule run a dense SwiGLU MLP.
use rio_core::moe::RouterConfig;
use rio_core::{Error, Result};
use rio_cpu::ops::{attention, silu};

use crate::cache::{KvCache, LayerCache, ModelCache};
use crate::config::{GenerationConfig, Qwen3MoeConfig};
use crate::layers::{
    eos_token_ids, open_folder, rms_norm_inplace, run_layers, Input, Linear, LmEnds, Loader, MoeBlock, Precision, Rope, Rows,
};

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
    rope: Rope,
    precision: Precision,
}

impl Attention {
    fn load(w: &Loader, p: &str, c: &Qwen3MoeConfig) -> Result<Self> {
        let (h, n_h, n_kv, d) = (c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        let (inv_freq, attention_scaling) = c.rope.inv_freq(c.rotary_dim());
        Ok(Attention {
            q_proj: Linear::load(w, &format!("{p}.q_proj.weight"), n_h * d, h)?,
            k_proj: Linear::load(w, &format!("{p}.k_proj.weight"), n_kv * d, h)?,
            v_proj: Linear::load(w, &format!("{p}.v_proj.weight"), n_kv * d, h)?,
            o_proj: Linear::load(w, &format!("{p}.o_proj.weight"), h, n_h * d)?,
            q_norm: w.vector(&format!("{p}.q_norm.weight"), &[d])?,
            k_norm: w.vector(&format!("{p}.k_norm.weight"), &[d])?,
            n_h,
            n_kv,
            d,
            eps: c.rms_norm_eps as f32,
            rope: Rope::new(inv_freq, attention_scaling),
            precision: w.precision,
        })
    }

    /// `x [N, H]`: `lens[b]` rows of sequence b in turn, at positions `kvs[b].len()..`;
    /// appends to each `kvs[b]`. Projections run once over all rows.
    fn forward(&self, x: &Rows<'_>, lens: &[usize], kvs: &mut [&mut KvCache]) -> Vec<f32> {
        let (n_h, n_kv, d, pr) = (self.n_h, self.n_kv, self.d, self.precision);
        let mut q = self.q_proj.forward_rows(x);
        let mut k = self.k_proj.forward_rows(x);
        let v = self.v_proj.forward_rows(x);
        rms_norm_inplace(&mut q, &self.q_norm, self.eps, pr);
        rms_norm_inplace(&mut k, &self.k_norm, self.eps, pr);
        let mut out = vec![0f32; q.len()];
        let (q_w, kv_w) = (n_h * d, n_kv * d);
        let mut first = 0;
        for (&len, kv) in lens.iter().zip(kvs.iter_mut()) {
            let rows = first..first + len;
            let (qs, ks) = (&mut q[rows.start * q_w..rows.end * q_w], &mut k[rows.start * kv_w..rows.end * kv_w]);
            self.rope.apply(qs, q_w, d, kv.len(), pr);
            self.rope.apply(ks, kv_w, d, kv.len(), pr);
            kv.append(ks, &v[rows.start * kv_w..rows.end * kv_w]);
            let os = &mut out[rows.start * q_w..rows.end * q_w];
            attention::causal_gqa(qs, kv.keys(), kv.values(), n_h, n_kv, d, pr == Precision::Bf16, os);
            first = rows.end;
        }
        self.o_proj.forward(&out, pr)
    }
}

/// `Qwen3MoeMLP`: the dense SwiGLU MLP of layers outside the sparse rule.
#[derive(Debug)]
pub struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
    precision: Precision,
}

impl Mlp {
    fn load(w: &Loader, p: &str, c: &Qwen3MoeConfig) -> Result<Self> {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        Ok(Mlp {
            gate_proj: Linear::load(w, &format!("{p}.gate_proj.weight"), i, h)?,
            up_proj: Linear::load(w, &format!("{p}.up_proj.weight"), i, h)?,
            down_proj: Linear::load(w, &format!("{p}.down_proj.weight"), h, i)?,
            precision: w.precision,
        })
    }

    fn forward(&self, x: &Rows<'_>) -> Vec<f32> {
        let pr = self.precision;
        let mut act = self.gate_proj.forward_rows(x);
        let up = self.up_proj.forward_rows(x);
        act.iter_mut().zip(&up).for_each(|(g, &u)| *g = pr.round1(pr.round1(silu(*g)) * u));
        self.down_proj.forward(&act, pr)
    }
}

#[derive(Debug)]
pub enum FeedForward {
    /// `Qwen3MoeSparseMoeBlock`: softmax router, top-k (renormalised when `norm_topk_prob`),
    /// SwiGLU experts, no shared expert.
    Sparse(MoeBlock),
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
    precision: Precision,
}

impl DecoderLayer {
    fn load(w: &Loader, layer: usize, c: &Qwen3MoeConfig) -> Result<Self> {
        let p = format!("layers.{layer}");
        let mlp = if c.sparse_layers[layer] {
            let routing = RouterConfig { top_k: c.num_experts_per_tok, renormalize: c.norm_topk_prob };
            FeedForward::Sparse(MoeBlock::load(
                w,
                &format!("{p}.mlp"),
                (c.num_experts, c.hidden_size, c.moe_intermediate_size),
                None,
                routing,
            )?)
        } else {
            FeedForward::Dense(Mlp::load(w, &format!("{p}.mlp"), c)?)
        };
        Ok(DecoderLayer {
            input_layernorm: w.vector(&format!("{p}.input_layernorm.weight"), &[c.hidden_size])?,
            post_attention_layernorm: w.vector(&format!("{p}.post_attention_layernorm.weight"), &[c.hidden_size])?,
            self_attn: Attention::load(w, &format!("{p}.self_attn"), c)?,
            mlp,
            eps: c.rms_norm_eps as f32,
            precision: w.precision,
        })
    }

    /// `x [N, H]`: `lens[b]` rows of sequence b in turn, continuing `caches[b]` (this layer's).
    fn forward(&self, x: &mut [f32], lens: &[usize], caches: Vec<&mut LayerCache>) -> Result<()> {
        let mut kvs = caches
            .into_iter()
            .map(|c| match c {
                LayerCache::Attention(kv) => Ok(kv),
                _ => Err(Error::value("cache", "does not belong to this model (layer types differ)")),
            })
            .collect::<Result<Vec<_>>>()?;
        let (pr, hidden) = (self.precision, self.input_layernorm.len());
        let mut h = x.to_vec();
        rms_norm_inplace(&mut h, &self.input_layernorm, self.eps, pr);
        let mut buf = Vec::new();
        let attended = self.self_attn.forward(&Rows::new(&h, hidden, pr, &mut buf), lens, &mut kvs);
        x.iter_mut().zip(&attended).for_each(|(a, b)| *a = pr.round1(*a + b));
        h.copy_from_slice(x);
        rms_norm_inplace(&mut h, &self.post_attention_layernorm, self.eps, pr);
        let ff = match &self.mlp {
            FeedForward::Sparse(moe) => moe.forward(&h)?,
            FeedForward::Dense(mlp) => mlp.forward(&Rows::new(&h, hidden, pr, &mut buf)),
        };
        x.iter_mut().zip(&ff).for_each(|(a, b)| *a = pr.round1(*a + b));
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
    precision: Precision,
}

impl Qwen3Moe {
    /// Loads a checkpoint folder: `config.json` and the safetensors weights (`model.` prefix,
    /// fused or per-expert layout), computing in the checkpoint's dtype.
    pub fn from_dir(dir: impl AsRef<std::path::Path>) -> Result<Self> {
        Self::from_dir_with(dir, "auto")
    }

    /// [`Qwen3Moe::from_dir`] computing in `dtype`: `"auto"`, `"bfloat16"` or `"float32"`.
    pub fn from_dir_with(dir: impl AsRef<std::path::Path>, dtype: &str) -> Result<Self> {
        let (w, config, generation) = open_folder(dir.as_ref(), dtype, |d| Qwen3MoeConfig::from_dir(d))?;
        Self::load(&w, config, generation)
    }

    pub fn load(w: &Loader, config: Qwen3MoeConfig, generation: GenerationConfig) -> Result<Self> {
        let ends = LmEnds::load(w, config.vocab_size, config.hidden_size, config.tie_word_embeddings)?;
        let layers = (0..config.num_hidden_layers).map(|l| DecoderLayer::load(w, l, &config)).collect::<Result<Vec<_>>>()?;
        Ok(Qwen3Moe { ends, layers, config, generation, precision: w.precision })
    }

    /// The dtype the forward computes in.
    pub fn precision(&self) -> Precision {
        self.precision
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
        let (mut x, _) = self.run(&[input], &mut [cache])?;
        let (eps, pr) = (self.config.rms_norm_eps as f32, self.precision);
        Ok(self.ends.logits(&mut x, logits_to_keep, |rows, w| rms_norm_inplace(rows, w, eps, pr)))
    }

    /// Sequence b continues `caches[b]` with `inputs[b]`; returns the logits `[B, V]` of each
    /// sequence's last new position. Projections and MoE run once over the rows of all
    /// sequences, attention per sequence; the results equal separate [`Qwen3Moe::forward`] calls.
    pub fn forward_batch(&self, inputs: &[Input<'_>], caches: &mut [&mut ModelCache]) -> Result<Vec<f32>> {
        let (x, lens) = self.run(inputs, caches)?;
        let (eps, pr) = (self.config.rms_norm_eps as f32, self.precision);
        Ok(self.ends.logits_of_last_rows(&x, &lens, |rows, w| rms_norm_inplace(rows, w, eps, pr)))
    }

    /// The decoder layers over the rows of every input; returns the final hidden rows `[N, H]`
    /// (before the final norm) and the row count of each input.
    fn run(&self, inputs: &[Input<'_>], caches: &mut [&mut ModelCache]) -> Result<(Vec<f32>, Vec<usize>)> {
        let layout = self.new_cache();
        run_layers(&self.ends, &self.layers, inputs, caches, |c| c.has_layout_of(&layout), DecoderLayer::forward)
    }
}

crate::causal_lm::impl_causal_lm!(Qwen3Moe, "qwen3_moe");
