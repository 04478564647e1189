//! `config.json` of a Qwen3.5-MoE checkpoint (spec sections 0, 1, 2.2, 6), and the sampling
//! defaults and stop tokens of its `generation_config.json`.
//!
//! Accepts the multimodal layout (`model_type: qwen3_5_moe`, text fields under `text_config`) and
//! the text-only one (`model_type: qwen3_5_moe_text`); [`Qwen3MoeConfig`] reads `qwen3_moe` ones and
//! [`Architecture`] tells them apart. Fields are read one by one so that an error
//! names the field, what was expected and what was found.
use std::path::Path;

use rio_core::{Error, Result};
use serde_json::{Map, Value};

/// One decoder layer's token mixer (spec section 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerType {
    /// Gated DeltaNet (`linear_attention`).
    LinearAttention,
    /// Gated full attention (`full_attention`).
    FullAttention,
}

/// RoPE parameters (spec 2.2, 2.3). M-RoPE collapses to 1-D RoPE for text, so `mrope_section`
/// is kept only for reporting.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeConfig {
    pub theta: f64,
    pub partial_rotary_factor: f64,
    pub mrope_section: Vec<usize>,
    pub scaling: RopeScaling,
}

/// How the frequencies are stretched for a longer context (`rope_type`).
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    /// `"default"`: plain `θ^(-2i/r)`.
    Default,
    /// `"yarn"` (transformers' `_compute_yarn_parameters`): frequencies blended between the
    /// original and the `factor`-interpolated ones over a ramp set by `beta_fast`/`beta_slow`,
    /// and cos/sin multiplied by `attention_factor`.
    Yarn { factor: f64, original_max_position_embeddings: f64, beta_fast: f64, beta_slow: f64, truncate: bool, attention_factor: f64 },
}

impl RopeConfig {
    /// The inverse frequencies of `rotary_dim` channels in f32, computed as transformers does,
    /// and the factor cos and sin are multiplied by.
    pub fn inv_freq(&self, rotary_dim: usize) -> (Vec<f32>, f32) {
        let RopeScaling::Yarn { factor, original_max_position_embeddings, beta_fast, beta_slow, truncate, attention_factor } = self.scaling
        else {
            return (rio_cpu::ops::rope::inv_freq(self.theta, rotary_dim), 1.0);
        };
        // Which frequencies rotate fewer than `rotations` times over the original context
        // (f64, as Python computes them), then a ramp over the dims between the two bounds.
        let (dim, base) = (rotary_dim as f64, self.theta);
        let correction_dim =
            |rotations: f64| dim * (original_max_position_embeddings / (rotations * 2.0 * std::f64::consts::PI)).ln() / (2.0 * base.ln());
        let (mut low, mut high) = (correction_dim(beta_fast), correction_dim(beta_slow));
        if truncate {
            (low, high) = (low.floor(), high.ceil());
        }
        let (low, mut high) = (low.max(0.0), high.min(dim - 1.0));
        if low == high {
            high += 0.001;
        }
        let inv_freq = (0..rotary_dim / 2)
            .map(|i| {
                let pos_freq = (base as f32).powf((2 * i) as f32 / rotary_dim as f32);
                let extrapolation = 1.0 / pos_freq;
                let interpolation = 1.0 / (factor as f32 * pos_freq);
                let ramp = ((i as f32 - low as f32) / (high as f32 - low as f32)).clamp(0.0, 1.0);
                let keep = 1.0 - ramp;
                interpolation * (1.0 - keep) + extrapolation * keep
            })
            .collect();
        (inv_freq, attention_factor as f32)
    }
}

/// Every text-model value the Qwen3.5-MoE forward pass needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Qwen35MoeConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub layer_types: Vec<LayerType>,
    pub rms_norm_eps: f64,
    pub tie_word_embeddings: bool,
    // gated attention (spec 2)
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rope: RopeConfig,
    // Gated DeltaNet (spec 3)
    pub linear_num_key_heads: usize,
    pub linear_num_value_heads: usize,
    pub linear_key_head_dim: usize,
    pub linear_value_head_dim: usize,
    pub linear_conv_kernel_dim: usize,
    // MoE (spec 4)
    pub num_experts: usize,
    pub num_experts_per_tok: usize,
    pub moe_intermediate_size: usize,
    pub shared_expert_intermediate_size: usize,
    pub eos_token_ids: Vec<u32>,
}

/// The layer pattern transformers derives when `layer_types` is absent (spec section 1).
fn interval_layer_types(layers: usize, interval: usize) -> Vec<LayerType> {
    (0..layers).map(|i| if (i + 1) % interval == 0 { LayerType::FullAttention } else { LayerType::LinearAttention }).collect()
}

/// Reads fields of one JSON object, naming them (with their parent path) in errors.
/// The text of a JSON file and its path as errors show it.
fn read_text(path: &Path) -> Result<(String, String)> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Error::config(&shown, format!("cannot read: {e}")))?;
    Ok((text, shown))
}

/// The top-level object of a JSON document; `path` names it in errors.
fn parse_object(json: &str, path: &str) -> Result<Map<String, Value>> {
    match serde_json::from_str(json).map_err(|e| Error::config(path, format!("not valid JSON: {e}")))? {
        Value::Object(obj) => Ok(obj),
        _ => Err(Error::config(path, "expected a JSON object at the top level")),
    }
}

struct Fields<'a> {
    path: &'a str,
    parent: &'a str,
    obj: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    fn err(&self, key: &str, message: impl std::fmt::Display) -> Error {
        Error::config(self.path, format!("{}{key}: {message}", self.parent))
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn usize_or(&self, key: &str, default: Option<usize>) -> Result<usize> {
        match self.get(key) {
            None => default.ok_or_else(|| self.err(key, "is missing")),
            Some(v) => v.as_u64().map(|n| n as usize).ok_or_else(|| self.err(key, format!("expected a non-negative integer, got {v}"))),
        }
    }

    fn positive(&self, key: &str, default: Option<usize>) -> Result<usize> {
        let n = self.usize_or(key, default)?;
        if n == 0 {
            return Err(self.err(key, "must be at least 1, got 0"));
        }
        Ok(n)
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        self.get(key).map(|v| v.as_f64().ok_or_else(|| self.err(key, format!("expected a number, got {v}")))).transpose()
    }

    fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| self.err(key, format!("expected a number, got {v}"))),
        }
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| self.err(key, format!("expected true or false, got {v}"))),
        }
    }

    fn str_or(&self, key: &str, default: &'a str) -> Result<&'a str> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_str().ok_or_else(|| self.err(key, format!("expected a string, got {v}"))),
        }
    }

    /// An int or a list of ints (`eos_token_id`).
    fn token_ids(&self, key: &str) -> Result<Vec<u32>> {
        let one = |v: &Value| v.as_u64().filter(|&n| n <= u32::MAX as u64).map(|n| n as u32);
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => {
                items.iter().map(|v| one(v).ok_or_else(|| self.err(key, format!("expected token ids, got {v}")))).collect()
            }
            Some(v) => one(v).map(|n| vec![n]).ok_or_else(|| self.err(key, format!("expected a token id or a list of them, got {v}"))),
        }
    }
}

impl Qwen35MoeConfig {
    /// Reads `config.json` in a checkpoint folder.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let path = dir.as_ref().join("config.json");
        let (text, shown) = read_text(&path)?;
        Self::parse(&text, &shown)
    }

    /// Parses the text of a `config.json`; `path` names it in errors.
    pub fn parse(json: &str, path: &str) -> Result<Self> {
        let root = &parse_object(json, path)?;
        let top = Fields { path, parent: "", obj: root };
        let model_type = top.str_or("model_type", "")?;
        let (text, parent) = match model_type {
            "qwen3_5_moe" => match top.get("text_config") {
                Some(Value::Object(obj)) => (obj, "text_config."),
                Some(v) => return Err(top.err("text_config", format!("expected an object, got {v}"))),
                None => return Err(top.err("text_config", "is missing (required for model_type qwen3_5_moe)")),
            },
            "qwen3_5_moe_text" => (root, ""),
            other => {
                return Err(top.err("model_type", format!("expected \"qwen3_5_moe\" or \"qwen3_5_moe_text\", got {other:?}")));
            }
        };
        let f = Fields { path, parent, obj: text };

        let hidden_act = f.str_or("hidden_act", "silu")?;
        if hidden_act != "silu" {
            return Err(f.err("hidden_act", format!("only \"silu\" is supported, got {hidden_act:?}")));
        }
        if f.bool_or("attention_bias", false)? {
            return Err(f.err("attention_bias", "true is not supported (Qwen3.5-MoE attention has no biases)"));
        }

        let num_hidden_layers = f.positive("num_hidden_layers", None)?;
        let layer_types = match f.get("layer_types") {
            Some(Value::Array(items)) => {
                let types = items
                    .iter()
                    .map(|v| match v.as_str() {
                        Some("linear_attention") => Ok(LayerType::LinearAttention),
                        Some("full_attention") => Ok(LayerType::FullAttention),
                        _ => Err(f.err("layer_types", format!("expected \"linear_attention\" or \"full_attention\", got {v}"))),
                    })
                    .collect::<Result<Vec<_>>>()?;
                if types.len() != num_hidden_layers {
                    return Err(f.err("layer_types", format!("has {} entries but num_hidden_layers is {num_hidden_layers}", types.len())));
                }
                types
            }
            Some(v) => return Err(f.err("layer_types", format!("expected a list, got {v}"))),
            None => interval_layer_types(num_hidden_layers, f.positive("full_attention_interval", Some(4))?),
        };

        let rope = Self::rope(&f)?;
        let head_dim = f.positive("head_dim", None)?;
        let rotary = (head_dim as f64 * rope.partial_rotary_factor) as usize;
        if !rotary.is_multiple_of(2) || rotary > head_dim {
            return Err(f.err(
                "rope_parameters.partial_rotary_factor",
                format!("gives a rotary dimension of {rotary} for head_dim {head_dim}; it must be even and at most head_dim"),
            ));
        }

        let num_attention_heads = f.positive("num_attention_heads", None)?;
        let num_key_value_heads = f.positive("num_key_value_heads", None)?;
        if num_attention_heads % num_key_value_heads != 0 {
            return Err(
                f.err("num_key_value_heads", format!("{num_key_value_heads} does not divide num_attention_heads {num_attention_heads}"))
            );
        }
        let linear_num_key_heads = f.positive("linear_num_key_heads", None)?;
        let linear_num_value_heads = f.positive("linear_num_value_heads", None)?;
        if linear_num_value_heads % linear_num_key_heads != 0 {
            return Err(f.err(
                "linear_num_value_heads",
                format!("{linear_num_value_heads} is not a multiple of linear_num_key_heads {linear_num_key_heads}"),
            ));
        }
        let num_experts = f.positive("num_experts", None)?;
        let num_experts_per_tok = f.positive("num_experts_per_tok", None)?;
        if num_experts_per_tok > num_experts {
            return Err(f.err("num_experts_per_tok", format!("{num_experts_per_tok} is more than num_experts {num_experts}")));
        }
        let rms_norm_eps = f.f64_or("rms_norm_eps", 1e-6)?;
        if !(rms_norm_eps > 0.0 && rms_norm_eps.is_finite()) {
            return Err(f.err("rms_norm_eps", format!("must be a positive number, got {rms_norm_eps}")));
        }
        // The multimodal wrapper's own value wins, as in transformers.
        let tie_word_embeddings = match top.get("tie_word_embeddings") {
            Some(_) if parent.is_empty() => f.bool_or("tie_word_embeddings", false)?,
            Some(_) => top.bool_or("tie_word_embeddings", false)?,
            None => f.bool_or("tie_word_embeddings", false)?,
        };
        let mut eos_token_ids = f.token_ids("eos_token_id")?;
        if eos_token_ids.is_empty() {
            eos_token_ids = top.token_ids("eos_token_id")?;
        }

        Ok(Qwen35MoeConfig {
            vocab_size: f.positive("vocab_size", None)?,
            hidden_size: f.positive("hidden_size", None)?,
            num_hidden_layers,
            layer_types,
            rms_norm_eps,
            tie_word_embeddings,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rope,
            linear_num_key_heads,
            linear_num_value_heads,
            linear_key_head_dim: f.positive("linear_key_head_dim", None)?,
            linear_value_head_dim: f.positive("linear_value_head_dim", None)?,
            linear_conv_kernel_dim: f.positive("linear_conv_kernel_dim", Some(4))?,
            num_experts,
            num_experts_per_tok,
            moe_intermediate_size: f.positive("moe_intermediate_size", None)?,
            shared_expert_intermediate_size: f.usize_or("shared_expert_intermediate_size", Some(0))?,
            eos_token_ids,
        })
    }

    /// `rope_parameters` (transformers 5), or the older flat `rope_theta` / `partial_rotary_factor`.
    fn rope(f: &Fields<'_>) -> Result<RopeConfig> {
        let (params, parent) = match f.get("rope_parameters") {
            Some(Value::Object(obj)) => (obj, format!("{}rope_parameters.", f.parent)),
            Some(v) => return Err(f.err("rope_parameters", format!("expected an object, got {v}"))),
            None => (f.obj, f.parent.to_string()),
        };
        let r = Fields { path: f.path, parent: &parent, obj: params };
        // transformers 4 configs name the scaling in `rope_scaling` next to a flat `rope_theta`.
        let legacy_parent = format!("{}rope_scaling.", f.parent);
        let scaling_fields = match (f.get("rope_parameters"), f.get("rope_scaling")) {
            (None, Some(Value::Object(obj))) => Fields { path: f.path, parent: &legacy_parent, obj },
            (None, Some(v)) => return Err(f.err("rope_scaling", format!("expected an object, got {v}"))),
            _ => Fields { path: f.path, parent: &parent, obj: params },
        };
        let rope_type = match scaling_fields.get("rope_type") {
            Some(_) => scaling_fields.str_or("rope_type", "default")?,
            None => scaling_fields.str_or("type", "default")?,
        };
        // transformers' class default when the config names no theta (spec 2.2).
        let theta = r.f64_or("rope_theta", 10000.0)?;
        let partial_rotary_factor = r.f64_or("partial_rotary_factor", 1.0)?;
        if !(theta > 0.0 && theta.is_finite()) {
            return Err(r.err("rope_theta", format!("must be a positive number, got {theta}")));
        }
        if !(partial_rotary_factor > 0.0 && partial_rotary_factor <= 1.0) {
            return Err(r.err("partial_rotary_factor", format!("must be in (0, 1], got {partial_rotary_factor}")));
        }
        let mrope_section = match r.get("mrope_section") {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_u64().map(|n| n as usize).ok_or_else(|| r.err("mrope_section", format!("expected integers, got {v}"))))
                .collect::<Result<_>>()?,
            Some(v) => return Err(r.err("mrope_section", format!("expected a list, got {v}"))),
        };
        let scaling = match rope_type {
            "default" => RopeScaling::Default,
            "yarn" => Self::yarn(&scaling_fields, f)?,
            other => return Err(scaling_fields.err("rope_type", format!("expected \"default\" or \"yarn\", got {other:?}"))),
        };
        Ok(RopeConfig { theta, partial_rotary_factor, mrope_section, scaling })
    }

    /// YaRN's fields, with transformers' defaults: `original_max_position_embeddings` from the
    /// config's `max_position_embeddings`, `factor` their ratio, `beta_fast` 32, `beta_slow` 1,
    /// `truncate` true, and `attention_factor` from `factor` (and `mscale`/`mscale_all_dim`).
    fn yarn(r: &Fields<'_>, top: &Fields<'_>) -> Result<RopeScaling> {
        let max_positions = top.opt_f64("max_position_embeddings")?;
        let original = match (r.opt_f64("original_max_position_embeddings")?, top.opt_f64("original_max_position_embeddings")?) {
            (Some(v), _) | (None, Some(v)) => v,
            (None, None) => {
                max_positions.ok_or_else(|| r.err("original_max_position_embeddings", "is missing (and so is max_position_embeddings)"))?
            }
        };
        if original.is_nan() || original < 1.0 {
            return Err(r.err("original_max_position_embeddings", format!("must be at least 1, got {original}")));
        }
        let factor = match r.opt_f64("factor")? {
            Some(f) => f,
            None => max_positions.ok_or_else(|| r.err("factor", "is missing (and so is max_position_embeddings)"))? / original,
        };
        if !(factor > 0.0 && factor.is_finite()) {
            return Err(r.err("factor", format!("must be a positive number, got {factor}")));
        }
        let mscale = |scale: f64, m: f64| if scale <= 1.0 { 1.0 } else { 0.1 * m * scale.ln() + 1.0 };
        // Python's truthiness: a 0 or missing value takes the default.
        let nonzero = |key: &str| -> Result<Option<f64>> { Ok(r.opt_f64(key)?.filter(|v| *v != 0.0)) };
        let attention_factor = match (r.opt_f64("attention_factor")?, nonzero("mscale")?, nonzero("mscale_all_dim")?) {
            (Some(a), _, _) => a,
            (None, Some(m), Some(m_all)) => mscale(factor, m) / mscale(factor, m_all),
            _ => mscale(factor, 1.0),
        };
        Ok(RopeScaling::Yarn {
            factor,
            original_max_position_embeddings: original,
            beta_fast: nonzero("beta_fast")?.unwrap_or(32.0),
            beta_slow: nonzero("beta_slow")?.unwrap_or(1.0),
            truncate: r.bool_or("truncate", true)?,
            attention_factor,
        })
    }

    /// Rotary channels per head: `int(head_dim * partial_rotary_factor)` (spec 2.3).
    pub fn rotary_dim(&self) -> usize {
        (self.head_dim as f64 * self.rope.partial_rotary_factor) as usize
    }

    /// Channels of the GDN causal conv: `2 · n_k·d_k + n_v·d_v` (spec 3).
    pub fn conv_channels(&self) -> usize {
        2 * self.linear_num_key_heads * self.linear_key_head_dim + self.linear_num_value_heads * self.linear_value_head_dim
    }
}

/// The architectures rio_rt runs, picked by `config.json`'s `model_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    /// `qwen3_5_moe` / `qwen3_5_moe_text`.
    Qwen35Moe,
    /// `qwen3_moe`.
    Qwen3Moe,
}

impl Architecture {
    /// Reads `model_type` from `config.json` in a checkpoint folder.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let path = dir.as_ref().join("config.json");
        let (text, shown) = read_text(&path)?;
        Self::parse(&text, &shown)
    }

    pub fn parse(json: &str, path: &str) -> Result<Self> {
        let root = &parse_object(json, path)?;
        let top = Fields { path, parent: "", obj: root };
        match top.str_or("model_type", "")? {
            "qwen3_5_moe" | "qwen3_5_moe_text" => Ok(Architecture::Qwen35Moe),
            "qwen3_moe" => Ok(Architecture::Qwen3Moe),
            other => Err(top.err(
                "model_type",
                format!("unsupported model_type {other:?}; expected \"qwen3_5_moe\", \"qwen3_5_moe_text\" or \"qwen3_moe\""),
            )),
        }
    }
}

/// Every value the Qwen3-MoE (`qwen3_moe`) forward pass needs: plain GQA attention with q/k
/// norm and full RoPE, and per layer either the sparse MoE block or a dense SwiGLU MLP.
#[derive(Clone, Debug, PartialEq)]
pub struct Qwen3MoeConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub rms_norm_eps: f64,
    pub tie_word_embeddings: bool,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rope: RopeConfig,
    pub num_experts: usize,
    pub num_experts_per_tok: usize,
    pub moe_intermediate_size: usize,
    pub norm_topk_prob: bool,
    /// Width of the dense MLP of the layers that are not sparse (0 when every layer is sparse).
    pub intermediate_size: usize,
    /// Per layer: the MoE block (true) or the dense MLP, by transformers' rule
    /// `l not in mlp_only_layers and num_experts > 0 and (l + 1) % decoder_sparse_step == 0`.
    pub sparse_layers: Vec<bool>,
    pub eos_token_ids: Vec<u32>,
}

impl Qwen3MoeConfig {
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let path = dir.as_ref().join("config.json");
        let (text, shown) = read_text(&path)?;
        Self::parse(&text, &shown)
    }

    pub fn parse(json: &str, path: &str) -> Result<Self> {
        let root = &parse_object(json, path)?;
        let f = Fields { path, parent: "", obj: root };
        let model_type = f.str_or("model_type", "")?;
        if model_type != "qwen3_moe" {
            return Err(f.err("model_type", format!("expected \"qwen3_moe\", got {model_type:?}")));
        }
        let hidden_act = f.str_or("hidden_act", "silu")?;
        if hidden_act != "silu" {
            return Err(f.err("hidden_act", format!("only \"silu\" is supported, got {hidden_act:?}")));
        }
        if f.bool_or("attention_bias", false)? {
            return Err(f.err("attention_bias", "true is not supported (attention projections without biases only)"));
        }
        if f.bool_or("use_sliding_window", false)? {
            return Err(f.err("use_sliding_window", "true is not supported (full causal attention only)"));
        }
        let num_hidden_layers = f.positive("num_hidden_layers", None)?;
        let hidden_size = f.positive("hidden_size", None)?;
        let num_attention_heads = f.positive("num_attention_heads", None)?;
        let num_key_value_heads = f.positive("num_key_value_heads", None)?;
        if num_attention_heads % num_key_value_heads != 0 {
            return Err(
                f.err("num_key_value_heads", format!("{num_key_value_heads} does not divide num_attention_heads {num_attention_heads}"))
            );
        }
        // transformers' fallback when the config names no head_dim.
        let head_dim = f.positive("head_dim", Some((hidden_size / num_attention_heads).max(1)))?;
        let rope = Qwen35MoeConfig::rope(&f)?;
        let rotary = (head_dim as f64 * rope.partial_rotary_factor) as usize;
        if !rotary.is_multiple_of(2) || rotary > head_dim {
            return Err(f.err(
                "rope_parameters.partial_rotary_factor",
                format!("gives a rotary dimension of {rotary} for head_dim {head_dim}; it must be even and at most head_dim"),
            ));
        }
        // Hub checkpoints say `num_experts`; transformers 5 writes its alias `num_local_experts`.
        let num_experts = match (f.get("num_experts"), f.get("num_local_experts")) {
            (None, Some(_)) => f.usize_or("num_local_experts", None)?,
            _ => f.usize_or("num_experts", None)?,
        };
        let decoder_sparse_step = f.positive("decoder_sparse_step", Some(1))?;
        let mlp_only_layers: Vec<usize> = match f.get("mlp_only_layers") {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_u64().map(|n| n as usize).ok_or_else(|| f.err("mlp_only_layers", format!("expected layer indices, got {v}"))))
                .collect::<Result<_>>()?,
            Some(v) => return Err(f.err("mlp_only_layers", format!("expected a list, got {v}"))),
        };
        let sparse_layers: Vec<bool> = (0..num_hidden_layers)
            .map(|l| !mlp_only_layers.contains(&l) && num_experts > 0 && (l + 1) % decoder_sparse_step == 0)
            .collect();
        let any_sparse = sparse_layers.iter().any(|&s| s);
        let (num_experts_per_tok, moe_intermediate_size) = if any_sparse {
            let k = f.positive("num_experts_per_tok", None)?;
            if k > num_experts {
                return Err(f.err("num_experts_per_tok", format!("{k} is more than num_experts {num_experts}")));
            }
            (k, f.positive("moe_intermediate_size", None)?)
        } else {
            (0, 0)
        };
        let intermediate_size = if sparse_layers.iter().all(|&s| s) { 0 } else { f.positive("intermediate_size", None)? };
        let rms_norm_eps = f.f64_or("rms_norm_eps", 1e-6)?;
        if !(rms_norm_eps > 0.0 && rms_norm_eps.is_finite()) {
            return Err(f.err("rms_norm_eps", format!("must be a positive number, got {rms_norm_eps}")));
        }
        Ok(Qwen3MoeConfig {
            vocab_size: f.positive("vocab_size", None)?,
            hidden_size,
            num_hidden_layers,
            rms_norm_eps,
            tie_word_embeddings: f.bool_or("tie_word_embeddings", false)?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rope,
            num_experts,
            num_experts_per_tok,
            moe_intermediate_size,
            norm_topk_prob: f.bool_or("norm_topk_prob", false)?,
            intermediate_size,
            sparse_layers,
            eos_token_ids: f.token_ids("eos_token_id")?,
        })
    }

    /// Rotary channels per head: `int(head_dim * partial_rotary_factor)`.
    pub fn rotary_dim(&self) -> usize {
        (self.head_dim as f64 * self.rope.partial_rotary_factor) as usize
    }
}

/// `generation_config.json`: stop tokens and the sampling defaults the checkpoint ships.
/// Every field is optional; a folder without the file gives all `None`/empty.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GenerationConfig {
    pub eos_token_ids: Vec<u32>,
    pub bos_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
    pub do_sample: Option<bool>,
    pub temperature: Option<f64>,
    pub top_k: Option<usize>,
    pub top_p: Option<f64>,
    pub min_p: Option<f64>,
    pub repetition_penalty: Option<f64>,
}

impl GenerationConfig {
    pub const FILE: &'static str = "generation_config.json";

    /// Reads `generation_config.json` in a checkpoint folder, if there is one.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let path = dir.as_ref().join(Self::FILE);
        if !path.exists() {
            return Ok(GenerationConfig::default());
        }
        let (text, shown) = read_text(&path)?;
        Self::parse(&text, &shown)
    }

    pub fn parse(json: &str, path: &str) -> Result<Self> {
        let obj = &parse_object(json, path)?;
        let f = Fields { path, parent: "", obj };
        let one_id = |key: &str| -> Result<Option<u32>> {
            match f.token_ids(key)?.as_slice() {
                [] => Ok(None),
                [id] => Ok(Some(*id)),
                more => Err(f.err(key, format!("expected one token id, got {} of them", more.len()))),
            }
        };
        let probability = |key: &str| -> Result<Option<f64>> {
            match f.opt_f64(key)? {
                Some(p) if !(0.0..=1.0).contains(&p) => Err(f.err(key, format!("must be in [0, 1], got {p}"))),
                p => Ok(p),
            }
        };
        let non_negative = |key: &str| -> Result<Option<f64>> {
            match f.opt_f64(key)? {
                Some(x) if !(x >= 0.0 && x.is_finite()) => Err(f.err(key, format!("must be a finite number >= 0, got {x}"))),
                x => Ok(x),
            }
        };
        Ok(GenerationConfig {
            eos_token_ids: f.token_ids("eos_token_id")?,
            bos_token_id: one_id("bos_token_id")?,
            pad_token_id: one_id("pad_token_id")?,
            do_sample: f.get("do_sample").map(|_| f.bool_or("do_sample", false)).transpose()?,
            temperature: non_negative("temperature")?,
            top_k: f.get("top_k").map(|_| f.usize_or("top_k", None)).transpose()?,
            top_p: probability("top_p")?,
            min_p: probability("min_p")?,
            repetition_penalty: non_negative("repetition_penalty")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_fields() -> Value {
        serde_json::json!({
            "vocab_size": 1000, "hidden_size": 64, "num_hidden_layers": 4,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
            "linear_num_key_heads": 2, "linear_num_value_heads": 4,
            "linear_key_head_dim": 16, "linear_value_head_dim": 16, "linear_conv_kernel_dim": 4,
            "num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 24,
            "shared_expert_intermediate_size": 32, "rms_norm_eps": 1e-6, "eos_token_id": 7,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e7, "partial_rotary_factor": 0.25,
                                "mrope_section": [2, 1, 1], "mrope_interleaved": true},
            "layer_types": ["linear_attention", "linear_attention", "linear_attention", "full_attention"]
        })
    }

    fn text_only(edit: impl FnOnce(&mut Map<String, Value>)) -> Result<Qwen35MoeConfig> {
        let mut v = text_fields();
        let obj = v.as_object_mut().unwrap();
        obj.insert("model_type".into(), "qwen3_5_moe_text".into());
        edit(obj);
        Qwen35MoeConfig::parse(&v.to_string(), "config.json")
    }

    fn message(r: Result<Qwen35MoeConfig>) -> String {
        match r {
            Err(Error::Config { path, message }) => {
                assert_eq!(path, "config.json");
                message
            }
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn text_only_and_multimodal_layouts_give_the_same_config() {
        let a = text_only(|_| {}).unwrap();
        let wrapped = serde_json::json!({"model_type": "qwen3_5_moe", "text_config": text_fields(), "tie_word_embeddings": false});
        let b = Qwen35MoeConfig::parse(&wrapped.to_string(), "config.json").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.rotary_dim(), 8);
        assert_eq!(a.conv_channels(), 2 * 32 + 64);
        assert_eq!(a.rope.theta, 1e7);
        assert_eq!(a.eos_token_ids, vec![7]);
        assert_eq!(a.layer_types[3], LayerType::FullAttention);
    }

    #[test]
    fn interval_rule_applies_without_layer_types() {
        let c = text_only(|o| {
            o.remove("layer_types");
            o.insert("num_hidden_layers".into(), 8.into());
        })
        .unwrap();
        let full: Vec<usize> = (0..8).filter(|&i| c.layer_types[i] == LayerType::FullAttention).collect();
        assert_eq!(full, vec![3, 7]);
        let c = text_only(|o| {
            o.remove("layer_types");
            o.insert("full_attention_interval".into(), 2.into());
        })
        .unwrap();
        assert_eq!(c.layer_types, interval_layer_types(4, 2));
    }

    #[test]
    fn missing_rope_parameters_fall_back_to_transformers_defaults() {
        let c = text_only(|o| {
            o.remove("rope_parameters");
        })
        .unwrap();
        assert_eq!(c.rope.theta, 10000.0);
        assert_eq!(c.rotary_dim(), 32);
    }

    #[test]
    fn errors_name_the_field() {
        let m = message(text_only(|o| {
            o.remove("hidden_size");
        }));
        assert!(m.contains("hidden_size") && m.contains("missing"), "{m}");
        let m = message(text_only(|o| {
            o.insert("num_experts_per_tok".into(), 9.into());
        }));
        assert!(m.contains("num_experts_per_tok") && m.contains("num_experts 8"), "{m}");
        let m = message(text_only(|o| {
            o.insert("model_type".into(), "llama".into());
        }));
        assert!(m.contains("model_type") && m.contains("llama"), "{m}");
        let m = message(text_only(|o| {
            o.insert("layer_types".into(), serde_json::json!(["full_attention"]));
        }));
        assert!(m.contains("layer_types") && m.contains("1 entries"), "{m}");
        let m = message(text_only(|o| {
            o["rope_parameters"]["rope_type"] = "longrope".into();
        }));
        assert!(m.contains("rope_parameters.rope_type") && m.contains("longrope"), "{m}");
        let m = message(text_only(|o| {
            o["rope_parameters"]["rope_type"] = "yarn".into();
            o["rope_parameters"]["factor"] = (-2.0).into();
            o["rope_parameters"]["original_max_position_embeddings"] = 4096.into();
        }));
        assert!(m.contains("rope_parameters.factor") && m.contains("-2"), "{m}");
        let m = message(text_only(|o| {
            o.insert("head_dim".into(), "big".into());
        }));
        assert!(m.contains("head_dim") && m.contains("\"big\""), "{m}");
        let m = message(Qwen35MoeConfig::parse(r#"{"model_type": "qwen3_5_moe"}"#, "config.json"));
        assert!(m.contains("text_config"), "{m}");
        let m = message(Qwen35MoeConfig::parse("[1,", "config.json"));
        assert!(m.contains("JSON"), "{m}");
    }

    fn qwen3_moe(edit: impl FnOnce(&mut Map<String, Value>)) -> Result<Qwen3MoeConfig> {
        let mut v = serde_json::json!({
            "model_type": "qwen3_moe", "vocab_size": 100, "hidden_size": 64, "num_hidden_layers": 4,
            "num_attention_heads": 4, "num_key_value_heads": 2, "num_experts": 8, "num_experts_per_tok": 2,
            "moe_intermediate_size": 24, "intermediate_size": 96, "rope_theta": 1e6, "norm_topk_prob": true
        });
        edit(v.as_object_mut().unwrap());
        Qwen3MoeConfig::parse(&v.to_string(), "config.json")
    }

    #[test]
    fn qwen3_moe_sparse_layers_follow_transformers_rule() {
        let c = qwen3_moe(|_| {}).unwrap();
        assert_eq!(c.sparse_layers, vec![true; 4]);
        assert_eq!((c.head_dim, c.rotary_dim(), c.rope.theta, c.norm_topk_prob), (16, 16, 1e6, true));
        let c = qwen3_moe(|o| {
            o.insert("decoder_sparse_step".into(), 2.into());
            o.insert("mlp_only_layers".into(), serde_json::json!([3]));
        })
        .unwrap();
        assert_eq!(c.sparse_layers, vec![false, true, false, false]);
        let c = qwen3_moe(|o| {
            o.remove("num_experts");
            o.insert("num_local_experts".into(), 0.into());
        })
        .unwrap();
        assert_eq!(c.sparse_layers, vec![false; 4]);
        assert_eq!(Architecture::parse(r#"{"model_type": "qwen3_moe"}"#, "c.json").unwrap(), Architecture::Qwen3Moe);
        assert_eq!(Architecture::parse(r#"{"model_type": "qwen3_5_moe_text"}"#, "c.json").unwrap(), Architecture::Qwen35Moe);
    }

    #[test]
    fn qwen3_moe_errors_name_the_field() {
        let m = message_of(qwen3_moe(|o| {
            o.remove("intermediate_size");
            o.insert("mlp_only_layers".into(), serde_json::json!([0]));
        }));
        assert!(m.contains("intermediate_size") && m.contains("missing"), "{m}");
        let m = message_of(qwen3_moe(|o| {
            o.insert("use_sliding_window".into(), true.into());
        }));
        assert!(m.contains("use_sliding_window"), "{m}");
        let m = message_of(qwen3_moe(|o| {
            o.insert("mlp_only_layers".into(), "all".into());
        }));
        assert!(m.contains("mlp_only_layers") && m.contains("\"all\""), "{m}");
        let m = message_of(Architecture::parse(r#"{"model_type": "llama"}"#, "config.json"));
        assert!(m.contains("model_type") && m.contains("llama"), "{m}");
    }

    fn message_of<T: std::fmt::Debug>(r: Result<T>) -> String {
        match r {
            Err(Error::Config { message, .. }) => message,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn generation_config_reads_stop_tokens_and_sampling_defaults() {
        let g = GenerationConfig::parse(
            r#"{"bos_token_id": 1, "do_sample": true, "eos_token_id": [248046, 248044], "pad_token_id": 248044,
                "temperature": 0.6, "top_k": 20, "top_p": 0.95, "transformers_version": "5.23.0"}"#,
            "generation_config.json",
        )
        .unwrap();
        assert_eq!(g.eos_token_ids, vec![248046, 248044]);
        assert_eq!((g.bos_token_id, g.pad_token_id, g.do_sample), (Some(1), Some(248044), Some(true)));
        assert_eq!((g.temperature, g.top_k, g.top_p, g.min_p), (Some(0.6), Some(20), Some(0.95), None));
        assert_eq!(GenerationConfig::parse("{}", "g.json").unwrap(), GenerationConfig::default());
        for (bad, field) in [(r#"{"top_p": 1.5}"#, "top_p"), (r#"{"eos_token_id": "x"}"#, "eos_token_id"), (r#"{"top_k": -1}"#, "top_k")] {
            let err = GenerationConfig::parse(bad, "g.json").unwrap_err().to_string();
            assert!(err.contains(field) && err.contains("g.json"), "{err}");
        }
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(GenerationConfig::from_dir(dir.path()).unwrap(), GenerationConfig::default());
    }

    #[test]
    fn any_bytes_give_a_config_or_an_error_never_a_panic() {
        let mut base = text_fields();
        base["model_type"] = "qwen3_5_moe_text".into();
        let base = base.to_string();
        assert!(Qwen35MoeConfig::parse(&base, "config.json").is_ok());
        let mut seed = 0x9E37_79B9u32;
        for _ in 0..2000 {
            let mut bytes = base.clone().into_bytes();
            for _ in 0..3 {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let i = (seed >> 8) as usize % bytes.len();
                bytes[i] = b"0123456789,:{}[]\"-ae."[(seed >> 3) as usize % 21];
            }
            let _ = Qwen35MoeConfig::parse(&String::from_utf8_lossy(&bytes), "config.json");
        }
    }
}
