//! The Qwen3.5-MoE text model (`qwen3_5_moe`), f32 on CPU. Section numbers refer to
//! shared/spec/qwen35moe.md. One struct and one `forward` per block:
//! [`Qwen35Moe`] → [`DecoderLayer`] → ([`GatedAttention`] | [`GatedDeltaNet`]) + [`SparseMoe`].
//!
//! Weights are read once into f32 (bf16/f16 checkpoints are upcast at load time).
use rio_core::moe::{ExpertMats, MoeWeights, RouterConfig, SharedExpert};
use rio_core::{Backend, Error, Result, TensorMut, TensorRef};
use rio_cpu::ops::{attention, conv, gated_delta, norm, rope, sigmoid, softplus};
use rio_cpu::CpuBackend;

use crate::cache::{GdnState, KvCache, LayerCache, ModelCache};
use crate::config::{GenerationConfig, LayerType, Qwen35MoeConfig};
pub use crate::layers::Input;
use crate::layers::{eos_token_ids, load_f32, Linear, LmEnds};
use crate::Checkpoint;

/// Gated full attention (section 2).
#[derive(Debug)]
pub struct GatedAttention {
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

impl GatedAttention {
    fn load(ck: &Checkpoint, p: &str, c: &Qwen35MoeConfig) -> Result<Self> {
        let (h, n_h, n_kv, d) = (c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        Ok(GatedAttention {
            q_proj: Linear::load(ck, &format!("{p}.q_proj.weight"), 2 * n_h * d, h)?,
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
        let (n_h, d) = (self.n_h, self.d);
        let past = kv.len();
        let qg = self.q_proj.forward(x);
        let mut k = self.k_proj.forward(x);
        let v = self.v_proj.forward(x);
        let t = qg.len() / (2 * n_h * d);
        // 2.1 step 1: per head, rows [2d·h, 2d·h+d) are the query and the next d the gate.
        let mut q = vec![0f32; t * n_h * d];
        let mut gate = vec![0f32; t * n_h * d];
        for (i, pair) in qg.chunks_exact(2 * d).enumerate() {
            q[i * d..(i + 1) * d].copy_from_slice(&pair[..d]);
            gate[i * d..(i + 1) * d].copy_from_slice(&pair[d..]);
        }
        // Steps 2-3: q/k norm before RoPE.
        norm::rms_norm_1p_inplace(&mut q, &self.q_norm, self.eps);
        norm::rms_norm_1p_inplace(&mut k, &self.k_norm, self.eps);
        for s in 0..t {
            rope::apply_rope(&mut q[s * n_h * d..(s + 1) * n_h * d], d, past + s, &self.inv_freq);
            rope::apply_rope(&mut k[s * self.n_kv * d..(s + 1) * self.n_kv * d], d, past + s, &self.inv_freq);
        }
        // Steps 4-5.
        kv.append(&k, &v);
        let mut out = vec![0f32; q.len()];
        attention::causal_gqa(&q, kv.keys(), kv.values(), n_h, self.n_kv, d, &mut out);
        // Steps 6-7.
        for (o, &g) in out.iter_mut().zip(&gate) {
            *o *= sigmoid(g);
        }
        self.o_proj.forward(&out)
    }
}

/// Gated DeltaNet linear attention (section 3).
#[derive(Debug)]
pub struct GatedDeltaNet {
    in_proj_qkv: Linear,
    in_proj_z: Linear,
    in_proj_b: Linear,
    in_proj_a: Linear,
    out_proj: Linear,
    /// `[C, K]`
    conv_weight: Vec<f32>,
    a_log: Vec<f32>,
    dt_bias: Vec<f32>,
    norm_weight: Vec<f32>,
    n_k: usize,
    n_v: usize,
    d_k: usize,
    d_v: usize,
    kernel: usize,
    eps: f32,
}

impl GatedDeltaNet {
    fn load(ck: &Checkpoint, p: &str, c: &Qwen35MoeConfig) -> Result<Self> {
        let h = c.hidden_size;
        let (n_k, n_v, d_k, d_v, kernel) =
            (c.linear_num_key_heads, c.linear_num_value_heads, c.linear_key_head_dim, c.linear_value_head_dim, c.linear_conv_kernel_dim);
        let channels = c.conv_channels();
        Ok(GatedDeltaNet {
            in_proj_qkv: Linear::load(ck, &format!("{p}.in_proj_qkv.weight"), channels, h)?,
            in_proj_z: Linear::load(ck, &format!("{p}.in_proj_z.weight"), n_v * d_v, h)?,
            in_proj_b: Linear::load(ck, &format!("{p}.in_proj_b.weight"), n_v, h)?,
            in_proj_a: Linear::load(ck, &format!("{p}.in_proj_a.weight"), n_v, h)?,
            out_proj: Linear::load(ck, &format!("{p}.out_proj.weight"), h, n_v * d_v)?,
            conv_weight: load_f32(ck, &format!("{p}.conv1d.weight"), &[channels, 1, kernel])?,
            a_log: load_f32(ck, &format!("{p}.A_log"), &[n_v])?,
            dt_bias: load_f32(ck, &format!("{p}.dt_bias"), &[n_v])?,
            norm_weight: load_f32(ck, &format!("{p}.norm.weight"), &[d_v])?,
            n_k,
            n_v,
            d_k,
            d_v,
            kernel,
            eps: c.rms_norm_eps as f32,
        })
    }

    /// `x [T, H]`, continuing from `state`.
    fn forward(&self, x: &[f32], state: &mut GdnState) -> Vec<f32> {
        let (n_k, n_v, d_k, d_v) = (self.n_k, self.n_v, self.d_k, self.d_v);
        let key_dim = n_k * d_k;
        // 3.1 steps 1-2.
        let qkv = self.in_proj_qkv.forward(x);
        let z = self.in_proj_z.forward(x);
        let b = self.in_proj_b.forward(x);
        let a = self.in_proj_a.forward(x);
        let channels = self.in_proj_qkv.out_features;
        let t = b.len() / n_v;
        let mut y = vec![0f32; qkv.len()];
        conv::causal_conv1d_silu(&qkv, &self.conv_weight, self.kernel, &mut state.conv, &mut y);

        // Steps 3-4: split, L2-normalise q and k per head, scale q.
        let scale = 1.0 / (d_k as f32).sqrt();
        for row in y.chunks_exact_mut(channels) {
            let qk = &mut row[..2 * key_dim];
            norm::l2_norm_inplace(qk, d_k);
            qk[..key_dim].iter_mut().for_each(|q| *q *= scale);
        }
        // Step 6: β and the log-decay g per token and value head.
        let beta: Vec<f32> = b.iter().map(|&x| sigmoid(x)).collect();
        let g: Vec<f32> = a.iter().enumerate().map(|(i, &x)| -self.a_log[i % n_v].exp() * softplus(x + self.dt_bias[i % n_v])).collect();
        // Steps 5 and 7: value head j reads key head j / (n_v / n_k); one token steps the
        // recurrence, several run the chunked form (spec 3.2), as in transformers.
        let mut o = vec![0f32; t * n_v * d_v];
        let column = |offset: usize, width: usize| -> Vec<f32> {
            y.chunks_exact(channels).flat_map(|row| &row[offset..offset + width]).copied().collect()
        };
        for j in 0..n_v {
            let kh = j / (n_v / n_k);
            let state_j = &mut state.recurrent[j * d_k * d_v..(j + 1) * d_k * d_v];
            let (q, k, v) = (column(kh * d_k, d_k), column(key_dim + kh * d_k, d_k), column(2 * key_dim + j * d_v, d_v));
            let g_j: Vec<f32> = (0..t).map(|s| g[s * n_v + j]).collect();
            let beta_j: Vec<f32> = (0..t).map(|s| beta[s * n_v + j]).collect();
            let mut o_j = vec![0f32; t * d_v];
            if t == 1 {
                gated_delta::gated_delta_step(state_j, &q, &k, &v, g_j[0].exp(), beta_j[0], &mut o_j);
            } else {
                gated_delta::gated_delta_chunked(state_j, &q, &k, &v, &g_j, &beta_j, &mut o_j);
            }
            for (s, row) in o_j.chunks_exact(d_v).enumerate() {
                o[(s * n_v + j) * d_v..(s * n_v + j + 1) * d_v].copy_from_slice(row);
            }
        }
        // Steps 8-9.
        norm::rms_norm_gated_inplace(&mut o, &z, &self.norm_weight, self.eps);
        self.out_proj.forward(&o)
    }
}

/// The sparse MoE block (section 4): routed SwiGLU experts plus the sigmoid-gated shared
/// expert, run by the CPU backend's MoE pipeline.
#[derive(Debug)]
pub struct SparseMoe {
    router: Vec<f32>,
    gate_up: Vec<f32>,
    down: Vec<f32>,
    shared_gate: Vec<f32>,
    shared_up: Vec<f32>,
    shared_down: Vec<f32>,
    shared_expert_gate: Vec<f32>,
    e: usize,
    h: usize,
    i: usize,
    i_s: usize,
    top_k: usize,
}

impl SparseMoe {
    fn load(ck: &Checkpoint, p: &str, c: &Qwen35MoeConfig) -> Result<Self> {
        let (e, h, i, i_s) = (c.num_experts, c.hidden_size, c.moe_intermediate_size, c.shared_expert_intermediate_size);
        if i_s == 0 {
            return Err(Error::config(
                ck.dir().join("config.json").display().to_string(),
                "shared_expert_intermediate_size: must be at least 1 (every Qwen3.5-MoE layer has a shared expert)",
            ));
        }
        Ok(SparseMoe {
            router: load_f32(ck, &format!("{p}.gate.weight"), &[e, h])?,
            gate_up: load_f32(ck, &format!("{p}.experts.gate_up_proj"), &[e, 2 * i, h])?,
            down: load_f32(ck, &format!("{p}.experts.down_proj"), &[e, h, i])?,
            shared_gate: load_f32(ck, &format!("{p}.shared_expert.gate_proj.weight"), &[i_s, h])?,
            shared_up: load_f32(ck, &format!("{p}.shared_expert.up_proj.weight"), &[i_s, h])?,
            shared_down: load_f32(ck, &format!("{p}.shared_expert.down_proj.weight"), &[h, i_s])?,
            shared_expert_gate: load_f32(ck, &format!("{p}.shared_expert_gate.weight"), &[1, h])?,
            e,
            h,
            i,
            i_s,
            top_k: c.num_experts_per_tok,
        })
    }

    fn forward(&self, x: &[f32]) -> Result<Vec<f32>> {
        fn view<'a>(data: &'a [f32], shape: &[usize]) -> Result<TensorRef<'a>> {
            TensorRef::from_slice(data, shape)
        }
        let (e, h, i, i_s) = (self.e, self.h, self.i, self.i_s);
        let shared = SharedExpert {
            mats: ExpertMats {
                gate: view(&self.shared_gate, &[i_s, h])?,
                up: view(&self.shared_up, &[i_s, h])?,
                down: view(&self.shared_down, &[h, i_s])?,
            },
            gate_weight: Some(view(&self.shared_expert_gate, &[1, h])?),
        };
        let weights = MoeWeights::fused(
            view(&self.router, &[e, h])?,
            view(&self.gate_up, &[e, 2 * i, h])?,
            view(&self.down, &[e, h, i])?,
            Some(shared),
        )?;
        let t = x.len() / h;
        let mut out = vec![0f32; x.len()];
        let config = RouterConfig { top_k: self.top_k, renormalize: true };
        CpuBackend.moe_forward(&view(x, &[t, h])?, &weights, config, &mut TensorMut::from_slice(&mut out, &[t, h])?)?;
        Ok(out)
    }
}

#[derive(Debug)]
pub enum Mixer {
    Attention(GatedAttention),
    DeltaNet(GatedDeltaNet),
}

/// One pre-norm decoder layer with two residual additions (section 1).
#[derive(Debug)]
pub struct DecoderLayer {
    input_layernorm: Vec<f32>,
    post_attention_layernorm: Vec<f32>,
    mixer: Mixer,
    mlp: SparseMoe,
    eps: f32,
}

impl DecoderLayer {
    fn load(ck: &Checkpoint, layer: usize, c: &Qwen35MoeConfig) -> Result<Self> {
        let p = format!("layers.{layer}");
        let mixer = match c.layer_types[layer] {
            LayerType::FullAttention => Mixer::Attention(GatedAttention::load(ck, &format!("{p}.self_attn"), c)?),
            LayerType::LinearAttention => Mixer::DeltaNet(GatedDeltaNet::load(ck, &format!("{p}.linear_attn"), c)?),
        };
        Ok(DecoderLayer {
            input_layernorm: load_f32(ck, &format!("{p}.input_layernorm.weight"), &[c.hidden_size])?,
            post_attention_layernorm: load_f32(ck, &format!("{p}.post_attention_layernorm.weight"), &[c.hidden_size])?,
            mixer,
            mlp: SparseMoe::load(ck, &format!("{p}.mlp"), c)?,
            eps: c.rms_norm_eps as f32,
        })
    }

    fn forward(&self, x: &mut [f32], cache: &mut LayerCache) -> Result<()> {
        let mut h = vec![0f32; x.len()];
        norm::rms_norm_1p(x, &self.input_layernorm, self.eps, &mut h);
        let mixed = match (&self.mixer, cache) {
            (Mixer::Attention(a), LayerCache::Attention(kv)) => a.forward(&h, kv),
            (Mixer::DeltaNet(g), LayerCache::LinearAttention(s)) => g.forward(&h, s),
            _ => return Err(Error::value("cache", "does not belong to this model (layer types differ)")),
        };
        x.iter_mut().zip(&mixed).for_each(|(a, b)| *a += b);
        norm::rms_norm_1p(x, &self.post_attention_layernorm, self.eps, &mut h);
        let moe = self.mlp.forward(&h)?;
        x.iter_mut().zip(&moe).for_each(|(a, b)| *a += b);
        Ok(())
    }
}

/// `Qwen3_5MoeForCausalLM` (section 0): embedding, decoder layers, final norm, lm_head.
#[derive(Debug)]
pub struct Qwen35Moe {
    config: Qwen35MoeConfig,
    generation: GenerationConfig,
    ends: LmEnds,
    layers: Vec<DecoderLayer>,
}

impl Qwen35Moe {
    /// Loads a checkpoint folder: `config.json` and the safetensors weights (either key prefix,
    /// either expert layout; vision and MTP tensors are skipped by the checkpoint reader).
    pub fn from_dir(dir: impl AsRef<std::path::Path>) -> Result<Self> {
        if !dir.as_ref().is_dir() {
            return Err(Error::checkpoint(dir.as_ref().display().to_string(), "no such checkpoint folder"));
        }
        let config = Qwen35MoeConfig::from_dir(&dir)?;
        let generation = GenerationConfig::from_dir(&dir)?;
        let ck = Checkpoint::open(&dir)?;
        Self::load(&ck, config, generation)
    }

    pub fn load(ck: &Checkpoint, config: Qwen35MoeConfig, generation: GenerationConfig) -> Result<Self> {
        let ends = LmEnds::load(ck, config.vocab_size, config.hidden_size, config.tie_word_embeddings)?;
        let layers = (0..config.num_hidden_layers).map(|l| DecoderLayer::load(ck, l, &config)).collect::<Result<Vec<_>>>()?;
        Ok(Qwen35Moe { ends, layers, config, generation })
    }

    pub fn config(&self) -> &Qwen35MoeConfig {
        &self.config
    }

    pub fn generation_config(&self) -> &GenerationConfig {
        &self.generation
    }

    /// The tokens that end a generation: `generation_config.json`'s, then `config.json`'s.
    pub fn eos_token_ids(&self) -> Vec<u32> {
        eos_token_ids(&self.generation, &self.config.eos_token_ids)
    }

    /// A fresh per-sequence cache for this model.
    pub fn new_cache(&self) -> ModelCache {
        ModelCache::new(&self.config)
    }

    /// The embedding rows of `tokens`, `[T, H]`.
    pub fn embed(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.ends.embed(tokens)
    }

    /// Runs T new tokens (or embeddings) through the model after what `cache` has seen, and
    /// returns the logits `[n, V]` of the last `n = logits_to_keep` new positions (all T for 0,
    /// as transformers' `logits_to_keep`); lm_head runs only for those (section 8).
    pub fn forward(&self, input: Input<'_>, cache: &mut ModelCache, logits_to_keep: usize) -> Result<Vec<f32>> {
        let mut x = self.ends.input_rows(input)?;
        if !cache.fits(&self.config) {
            return Err(Error::value("cache", "was made for a model of other layers or sizes; use this model's new_cache()"));
        }
        for (layer, lc) in self.layers.iter().zip(cache.layers.iter_mut()) {
            layer.forward(&mut x, lc)?;
        }
        cache.advance(x.len() / self.config.hidden_size);
        let eps = self.config.rms_norm_eps as f32;
        Ok(self.ends.logits(&mut x, logits_to_keep, |rows, w| norm::rms_norm_1p_inplace(rows, w, eps)))
    }
}

impl crate::CausalLm for Qwen35Moe {
    fn model_type(&self) -> &'static str {
        "qwen3_5_moe"
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
        Qwen35Moe::eos_token_ids(self)
    }
    fn generation_config(&self) -> &GenerationConfig {
        &self.generation
    }
    fn new_cache(&self) -> ModelCache {
        Qwen35Moe::new_cache(self)
    }
    fn embedding_table(&self) -> TensorRef<'_> {
        self.ends.table()
    }
    fn embed(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.ends.embed(tokens)
    }
    fn forward(&self, input: Input<'_>, cache: &mut ModelCache, logits_to_keep: usize) -> Result<Vec<f32>> {
        Qwen35Moe::forward(self, input, cache, logits_to_keep)
    }
}
