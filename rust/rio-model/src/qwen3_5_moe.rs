//! The Qwen3.5-MoE text model (`qwen3_5_moe`) on CPU. Section numbers refer to
//! shared/spec/qwen35moe.md. One struct and one `forward` per block:
//! [`Qwen35Moe`] → [`DecoderLayer`] → ([`GatedAttention`] | [`GatedDeltaNet`]) + [`MoeBlock`].
//!
//! Weights are read in place from the memory-mapped checkpoint. The forward computes in f32, or
//! in transformers' bf16 dtype flow (spec section 9): activations are kept in f32 buffers but
//! rounded to bf16 at every point where transformers holds a bf16 tensor.
use rio_core::moe::RouterConfig;
use rio_core::{Error, Result};
use rio_cpu::ops::{attention, conv, gated_delta, norm, sigmoid, softplus};

use crate::cache::{GdnState, KvCache, LayerCache, ModelCache};
use crate::config::{GenerationConfig, LayerType, Qwen35MoeConfig};
pub use crate::layers::Input;
use crate::layers::{eos_token_ids, open_folder, run_layers, Linear, LmEnds, Loader, MoeBlock, Precision, Rope, Rows};

/// RMSNorm1p (section 4): computed in f32, the result rounded to the activation dtype.
fn rms_norm_1p(x: &[f32], w: &[f32], eps: f32, precision: Precision, out: &mut [f32]) {
    norm::rms_norm_1p(x, w, eps, out);
    precision.round(out);
}

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
    rope: Rope,
    precision: Precision,
}

impl GatedAttention {
    fn load(w: &Loader, p: &str, c: &Qwen35MoeConfig) -> Result<Self> {
        let (h, n_h, n_kv, d) = (c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        let (inv_freq, attention_scaling) = c.rope.inv_freq(c.rotary_dim());
        Ok(GatedAttention {
            q_proj: Linear::load(w, &format!("{p}.q_proj.weight"), 2 * n_h * d, h)?,
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

    /// `x [N, H]`: the new rows of several sequences, `lens[b]` rows of sequence b in turn, at
    /// positions `kvs[b].len()..`; appends to each `kvs[b]`. Projections run once over all rows.
    fn forward(&self, x: &Rows<'_>, lens: &[usize], kvs: &mut [&mut KvCache]) -> Vec<f32> {
        let (n_h, n_kv, d, pr) = (self.n_h, self.n_kv, self.d, self.precision);
        let qg = self.q_proj.forward_rows(x);
        let k_raw = self.k_proj.forward_rows(x);
        let v = self.v_proj.forward_rows(x);
        let n = x.len();
        // 2.1 step 1: per head, rows [2d·h, 2d·h+d) are the query and the next d the gate.
        let mut q_raw = vec![0f32; n * n_h * d];
        let mut gate = vec![0f32; n * n_h * d];
        for (i, pair) in qg.chunks_exact(2 * d).enumerate() {
            q_raw[i * d..(i + 1) * d].copy_from_slice(&pair[..d]);
            gate[i * d..(i + 1) * d].copy_from_slice(&pair[d..]);
        }
        // Steps 2-3: q/k norm before RoPE.
        let (mut q, mut k) = (vec![0f32; q_raw.len()], vec![0f32; k_raw.len()]);
        rms_norm_1p(&q_raw, &self.q_norm, self.eps, pr, &mut q);
        rms_norm_1p(&k_raw, &self.k_norm, self.eps, pr, &mut k);
        // Steps 3-5 per sequence, at its own positions and over its own cache.
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
        // Steps 6-7: the sigmoid gate is a tensor of the activation dtype.
        for (o, &g) in out.iter_mut().zip(&gate) {
            *o = pr.round1(*o * pr.round1(sigmoid(g)));
        }
        self.o_proj.forward(&out, pr)
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
    kernel: usize,
    eps: f32,
    precision: Precision,
}

impl GatedDeltaNet {
    fn load(w: &Loader, p: &str, c: &Qwen35MoeConfig) -> Result<Self> {
        let h = c.hidden_size;
        let (n_k, n_v, d_k, d_v, kernel) =
            (c.linear_num_key_heads, c.linear_num_value_heads, c.linear_key_head_dim, c.linear_value_head_dim, c.linear_conv_kernel_dim);
        let channels = c.conv_channels();
        Ok(GatedDeltaNet {
            in_proj_qkv: Linear::load(w, &format!("{p}.in_proj_qkv.weight"), channels, h)?,
            in_proj_z: Linear::load(w, &format!("{p}.in_proj_z.weight"), n_v * d_v, h)?,
            in_proj_b: Linear::load(w, &format!("{p}.in_proj_b.weight"), n_v, h)?,
            in_proj_a: Linear::load(w, &format!("{p}.in_proj_a.weight"), n_v, h)?,
            out_proj: Linear::load(w, &format!("{p}.out_proj.weight"), h, n_v * d_v)?,
            conv_weight: w.vector(&format!("{p}.conv1d.weight"), &[channels, 1, kernel])?,
            a_log: w.vector(&format!("{p}.A_log"), &[n_v])?,
            dt_bias: w.vector(&format!("{p}.dt_bias"), &[n_v])?,
            norm_weight: w.vector(&format!("{p}.norm.weight"), &[d_v])?,
            n_k,
            n_v,
            d_k,
            kernel,
            eps: c.rms_norm_eps as f32,
            precision: w.precision,
        })
    }

    /// `x [N, H]`: the new rows of several sequences, `lens[b]` rows of sequence b in turn,
    /// each continuing from `states[b]`. Projections and norms run once over all rows.
    fn forward(&self, x: &Rows<'_>, lens: &[usize], states: &mut [&mut GdnState]) -> Vec<f32> {
        let (n_k, n_v, d_k, pr) = (self.n_k, self.n_v, self.d_k, self.precision);
        let key_dim = n_k * d_k;
        // 3.1 steps 1-2.
        let qkv = self.in_proj_qkv.forward_rows(x);
        let z = self.in_proj_z.forward_rows(x);
        let b = self.in_proj_b.forward_rows(x);
        let a = self.in_proj_a.forward_rows(x);
        let channels = self.in_proj_qkv.out_features;
        let mut y = vec![0f32; qkv.len()];
        let mut first = 0;
        for (&len, state) in lens.iter().zip(states.iter_mut()) {
            let span = first * channels..(first + len) * channels;
            conv::causal_conv1d_silu(
                &qkv[span.clone()],
                &self.conv_weight,
                self.kernel,
                &mut state.conv,
                pr == Precision::Bf16,
                &mut y[span],
            );
            first += len;
        }
        // Steps 3-4: split, L2-normalise q and k per head (in f32, inside transformers' kernel),
        // scale q.
        let n = x.len();
        let scale = 1.0 / (d_k as f32).sqrt();
        let (mut q, mut k, mut v) = (Vec::with_capacity(n * key_dim), Vec::with_capacity(n * key_dim), Vec::with_capacity(y.len()));
        for row in y.chunks_exact(channels) {
            q.extend_from_slice(&row[..key_dim]);
            k.extend_from_slice(&row[key_dim..2 * key_dim]);
            v.extend_from_slice(&row[2 * key_dim..]);
        }
        norm::l2_norm_inplace(&mut q, d_k);
        norm::l2_norm_inplace(&mut k, d_k);
        q.iter_mut().for_each(|x| *x *= scale);
        // Step 6: β from the projection in the activation dtype, the log-decay g in f32.
        let beta: Vec<f32> = b.iter().map(|&x| pr.round1(sigmoid(x))).collect();
        let g: Vec<f32> = a.iter().enumerate().map(|(i, &x)| -self.a_log[i % n_v].exp() * softplus(x + self.dt_bias[i % n_v])).collect();
        // Steps 5 and 7 per sequence, every value head in parallel; the output is cast back.
        let mut o = vec![0f32; v.len()];
        let (v_w, qk_w) = (v.len() / n, key_dim);
        let mut first = 0;
        for (&len, state) in lens.iter().zip(states.iter_mut()) {
            let (r, h) = (first..first + len, first * n_v..(first + len) * n_v);
            let (qs, ks) = (&q[r.start * qk_w..r.end * qk_w], &k[r.start * qk_w..r.end * qk_w]);
            let vs = &v[r.start * v_w..r.end * v_w];
            gated_delta::gated_delta_heads(
                &mut state.recurrent,
                qs,
                ks,
                vs,
                &g[h.clone()],
                &beta[h],
                n_k,
                n_v,
                &mut o[r.start * v_w..r.end * v_w],
            );
            first = r.end;
        }
        pr.round(&mut o);
        // Steps 8-9.
        match pr {
            Precision::F32 => norm::rms_norm_gated_inplace(&mut o, &z, &self.norm_weight, self.eps),
            Precision::Bf16 => norm::rms_norm_gated_bf16_inplace(&mut o, &z, &self.norm_weight, self.eps),
        }
        self.out_proj.forward(&o, pr)
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
    mlp: MoeBlock,
    eps: f32,
    precision: Precision,
}

impl DecoderLayer {
    fn load(w: &Loader, layer: usize, c: &Qwen35MoeConfig) -> Result<Self> {
        let p = format!("layers.{layer}");
        let mixer = match c.layer_types[layer] {
            LayerType::FullAttention => Mixer::Attention(GatedAttention::load(w, &format!("{p}.self_attn"), c)?),
            LayerType::LinearAttention => Mixer::DeltaNet(GatedDeltaNet::load(w, &format!("{p}.linear_attn"), c)?),
        };
        // Section 4: routed experts plus the sigmoid-gated shared expert, always renormalised.
        if c.shared_expert_intermediate_size == 0 {
            return Err(Error::config(
                w.checkpoint().dir().join("config.json").display().to_string(),
                "shared_expert_intermediate_size: must be at least 1 (every Qwen3.5-MoE layer has a shared expert)",
            ));
        }
        let mlp = MoeBlock::load(
            w,
            &format!("{p}.mlp"),
            (c.num_experts, c.hidden_size, c.moe_intermediate_size),
            Some(c.shared_expert_intermediate_size),
            RouterConfig { top_k: c.num_experts_per_tok, renormalize: true },
        )?;
        Ok(DecoderLayer {
            input_layernorm: w.vector(&format!("{p}.input_layernorm.weight"), &[c.hidden_size])?,
            post_attention_layernorm: w.vector(&format!("{p}.post_attention_layernorm.weight"), &[c.hidden_size])?,
            mixer,
            mlp,
            eps: c.rms_norm_eps as f32,
            precision: w.precision,
        })
    }

    /// `x [N, H]`: `lens[b]` rows of sequence b in turn, continuing `caches[b]` (this layer's).
    fn forward(&self, x: &mut [f32], lens: &[usize], caches: Vec<&mut LayerCache>) -> Result<()> {
        let pr = self.precision;
        let mut h = vec![0f32; x.len()];
        rms_norm_1p(x, &self.input_layernorm, self.eps, pr, &mut h);
        let mut buf = Vec::new();
        let rows = Rows::new(&h, self.input_layernorm.len(), pr, &mut buf);
        let wrong = || Error::value("cache", "does not belong to this model (layer types differ)");
        let mixed = match &self.mixer {
            Mixer::Attention(a) => {
                let mut kvs = caches
                    .into_iter()
                    .map(|c| if let LayerCache::Attention(kv) = c { Ok(kv) } else { Err(wrong()) })
                    .collect::<Result<Vec<_>>>()?;
                a.forward(&rows, lens, &mut kvs)
            }
            Mixer::DeltaNet(g) => {
                let mut states = caches
                    .into_iter()
                    .map(|c| if let LayerCache::LinearAttention(s) = c { Ok(s) } else { Err(wrong()) })
                    .collect::<Result<Vec<_>>>()?;
                g.forward(&rows, lens, &mut states)
            }
        };
        // Residual additions happen in the activation dtype.
        x.iter_mut().zip(&mixed).for_each(|(a, b)| *a = pr.round1(*a + b));
        rms_norm_1p(x, &self.post_attention_layernorm, self.eps, pr, &mut h);
        let moe = self.mlp.forward(&h)?;
        x.iter_mut().zip(&moe).for_each(|(a, b)| *a = pr.round1(*a + b));
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
    precision: Precision,
}

impl Qwen35Moe {
    /// Loads a checkpoint folder: `config.json` and the safetensors weights (either key prefix,
    /// either expert layout; vision and MTP tensors are skipped by the checkpoint reader),
    /// computing in the checkpoint's dtype (bf16 for bf16 checkpoints, f32 otherwise).
    pub fn from_dir(dir: impl AsRef<std::path::Path>) -> Result<Self> {
        Self::from_dir_with(dir, "auto")
    }

    /// [`Qwen35Moe::from_dir`] computing in `dtype`: `"auto"`, `"bfloat16"` or `"float32"`
    /// (see [`Precision::parse`]).
    pub fn from_dir_with(dir: impl AsRef<std::path::Path>, dtype: &str) -> Result<Self> {
        let (w, config, generation) = open_folder(dir.as_ref(), dtype, |d| Qwen35MoeConfig::from_dir(d))?;
        Self::load(&w, config, generation)
    }

    pub fn load(w: &Loader, config: Qwen35MoeConfig, generation: GenerationConfig) -> Result<Self> {
        let ends = LmEnds::load(w, config.vocab_size, config.hidden_size, config.tie_word_embeddings)?;
        let layers = (0..config.num_hidden_layers).map(|l| DecoderLayer::load(w, l, &config)).collect::<Result<Vec<_>>>()?;
        Ok(Qwen35Moe { ends, layers, config, generation, precision: w.precision })
    }

    /// The dtype the forward computes in.
    pub fn precision(&self) -> Precision {
        self.precision
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
        let (mut x, _) = self.run(&[input], &mut [cache])?;
        Ok(self.ends.logits(&mut x, logits_to_keep, self.final_norm()))
    }

    /// Sequence b continues `caches[b]` with `inputs[b]`; returns the logits `[B, V]` of each
    /// sequence's last new position. Projections and MoE run once over the rows of all
    /// sequences, attention and Gated DeltaNet per sequence; the results equal separate
    /// [`Qwen35Moe::forward`] calls.
    pub fn forward_batch(&self, inputs: &[Input<'_>], caches: &mut [&mut ModelCache]) -> Result<Vec<f32>> {
        let (x, lens) = self.run(inputs, caches)?;
        Ok(self.ends.logits_of_last_rows(&x, &lens, self.final_norm()))
    }

    /// The final RMSNorm1p (sections 4, 8), rounded to the activation dtype.
    fn final_norm(&self) -> impl Fn(&mut [f32], &[f32]) {
        let (eps, pr) = (self.config.rms_norm_eps as f32, self.precision);
        move |rows, w| {
            norm::rms_norm_1p_inplace(rows, w, eps);
            pr.round(rows);
        }
    }

    /// The decoder layers over the rows of every input; returns the final hidden rows `[N, H]`
    /// (before the final norm) and the row count of each input.
    fn run(&self, inputs: &[Input<'_>], caches: &mut [&mut ModelCache]) -> Result<(Vec<f32>, Vec<usize>)> {
        run_layers(&self.ends, &self.layers, inputs, caches, |c| c.fits(&self.config), DecoderLayer::forward)
    }
}

crate::causal_lm::impl_causal_lm!(Qwen35Moe, "qwen3_5_moe");
