//! `rio_rt.info`: what a checkpoint folder holds, from its config and safetensors headers only
//! (no weight is read, so it is instant even for an 800 GB checkpoint).
//!
//! Parameters per decoded token (batch 1) count every text tensor in full except the routed
//! experts (k of E per layer) and the embedding table (one row); bytes per token are those
//! parameters at their stored dtype (spec section 7). Vision and MTP tensors are reported apart.
//! A folder with a config but no weights is counted from the tensor shapes the config implies
//! (spec section 5), in bf16 with `A_log` and the Gated DeltaNet norm in f32 as the releases store them.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pyo3::prelude::*;
use pyo3::types::PyDict;
use rio_core::Result;
use rio_model::config::{Architecture, GenerationConfig, LayerType, Qwen35MoeConfig, Qwen3MoeConfig};
use rio_model::index::INDEX_FILE;
use rio_model::names::tensor_kind;
use rio_model::{Checkpoint, StoredDType};

use crate::errors::to_py;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(checkpoint_info, m)?)?;
    Ok(())
}

/// Tensors of one kind, summed.
#[derive(Default)]
struct Group {
    params: u64,
    bytes: u64,
    active_params: u64,
    active_bytes: u64,
}

/// What a decoder layer is made of, from the config.
struct Layout {
    model_type: &'static str,
    layer_types: Vec<&'static str>,
    dims: Vec<(&'static str, u64)>,
    experts: u64,
    top_k: u64,
    tie_word_embeddings: bool,
    eos_from_config: Vec<u32>,
    /// KV-cache elements per context token (all full-attention layers, K and V).
    kv_elements_per_token: u64,
    /// Gated DeltaNet recurrent-state elements (fp32) and conv-state elements per sequence.
    linear_state_elements: u64,
    conv_state_elements: u64,
    /// The text tensors the config implies: logical name, shape, stored in f32 (else bf16).
    implied: Vec<(String, Vec<usize>, bool)>,
}

/// The logical tensors of a Qwen3.5-MoE text model (spec section 5).
fn qwen35_tensors(c: &Qwen35MoeConfig) -> Vec<(String, Vec<usize>, bool)> {
    let (h, e, i, is) = (c.hidden_size, c.num_experts, c.moe_intermediate_size, c.shared_expert_intermediate_size);
    let (nh, nkv, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
    let (nv, dv) = (c.linear_num_value_heads, c.linear_value_head_dim);
    let mut t = ends(c.vocab_size, h, c.tie_word_embeddings);
    for (l, kind) in c.layer_types.iter().enumerate() {
        let mut layer = vec![("input_layernorm.weight", vec![h], false), ("post_attention_layernorm.weight", vec![h], false)];
        layer.extend(match kind {
            LayerType::LinearAttention => vec![
                ("linear_attn.in_proj_qkv.weight", vec![c.conv_channels(), h], false),
                ("linear_attn.in_proj_z.weight", vec![nv * dv, h], false),
                ("linear_attn.in_proj_b.weight", vec![nv, h], false),
                ("linear_attn.in_proj_a.weight", vec![nv, h], false),
                ("linear_attn.conv1d.weight", vec![c.conv_channels(), 1, c.linear_conv_kernel_dim], false),
                ("linear_attn.A_log", vec![nv], true),
                ("linear_attn.dt_bias", vec![nv], false),
                ("linear_attn.norm.weight", vec![dv], true),
                ("linear_attn.out_proj.weight", vec![h, nv * dv], false),
            ],
            // q_proj holds the query and its output gate (spec 2).
            LayerType::FullAttention => attention(h, 2 * nh * hd, nkv * hd, nh * hd, hd),
        });
        layer.extend(moe(h, e, i));
        if is > 0 {
            layer.extend([
                ("mlp.shared_expert.gate_proj.weight", vec![is, h], false),
                ("mlp.shared_expert.up_proj.weight", vec![is, h], false),
                ("mlp.shared_expert.down_proj.weight", vec![h, is], false),
                ("mlp.shared_expert_gate.weight", vec![1, h], false),
            ]);
        }
        t.extend(layer.into_iter().map(|(name, shape, f32)| (format!("layers.{l}.{name}"), shape, f32)));
    }
    t
}

/// The logical tensors of a Qwen3-MoE model.
fn qwen3moe_tensors(c: &Qwen3MoeConfig) -> Vec<(String, Vec<usize>, bool)> {
    let h = c.hidden_size;
    let (nh, nkv, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
    let mut t = ends(c.vocab_size, h, c.tie_word_embeddings);
    for (l, sparse) in c.sparse_layers.iter().enumerate() {
        let mut layer = vec![("input_layernorm.weight", vec![h], false), ("post_attention_layernorm.weight", vec![h], false)];
        layer.extend(attention(h, nh * hd, nkv * hd, nh * hd, hd));
        if *sparse {
            layer.extend(moe(h, c.num_experts, c.moe_intermediate_size));
        } else {
            let d = c.intermediate_size;
            layer.extend([
                ("mlp.gate_proj.weight", vec![d, h], false),
                ("mlp.up_proj.weight", vec![d, h], false),
                ("mlp.down_proj.weight", vec![h, d], false),
            ]);
        }
        t.extend(layer.into_iter().map(|(name, shape, f32)| (format!("layers.{l}.{name}"), shape, f32)));
    }
    t
}

fn ends(vocab: usize, h: usize, tied: bool) -> Vec<(String, Vec<usize>, bool)> {
    let mut t = vec![("embed_tokens.weight".to_string(), vec![vocab, h], false), ("norm.weight".to_string(), vec![h], false)];
    if !tied {
        t.push(("lm_head.weight".to_string(), vec![vocab, h], false));
    }
    t
}

fn attention(h: usize, q_rows: usize, kv_rows: usize, o_cols: usize, hd: usize) -> Vec<(&'static str, Vec<usize>, bool)> {
    vec![
        ("self_attn.q_proj.weight", vec![q_rows, h], false),
        ("self_attn.k_proj.weight", vec![kv_rows, h], false),
        ("self_attn.v_proj.weight", vec![kv_rows, h], false),
        ("self_attn.o_proj.weight", vec![h, o_cols], false),
        ("self_attn.q_norm.weight", vec![hd], false),
        ("self_attn.k_norm.weight", vec![hd], false),
    ]
}

fn moe(h: usize, e: usize, i: usize) -> Vec<(&'static str, Vec<usize>, bool)> {
    vec![
        ("mlp.gate.weight", vec![e, h], false),
        ("mlp.experts.gate_up_proj", vec![e, 2 * i, h], false),
        ("mlp.experts.down_proj", vec![e, h, i], false),
    ]
}

fn layout(dir: &Path) -> Result<Layout> {
    Ok(match Architecture::from_dir(dir)? {
        Architecture::Qwen35Moe => {
            let c = Qwen35MoeConfig::from_dir(dir)?;
            let full = c.layer_types.iter().filter(|t| **t == LayerType::FullAttention).count() as u64;
            let linear = c.layer_types.len() as u64 - full;
            Layout {
                model_type: "qwen3_5_moe",
                layer_types: c
                    .layer_types
                    .iter()
                    .map(|t| match t {
                        LayerType::FullAttention => "full_attention",
                        LayerType::LinearAttention => "linear_attention",
                    })
                    .collect(),
                dims: vec![
                    ("vocab_size", c.vocab_size as u64),
                    ("hidden_size", c.hidden_size as u64),
                    ("num_hidden_layers", c.num_hidden_layers as u64),
                    ("num_attention_heads", c.num_attention_heads as u64),
                    ("num_key_value_heads", c.num_key_value_heads as u64),
                    ("head_dim", c.head_dim as u64),
                    ("rotary_dim", c.rotary_dim() as u64),
                    ("linear_num_key_heads", c.linear_num_key_heads as u64),
                    ("linear_num_value_heads", c.linear_num_value_heads as u64),
                    ("linear_key_head_dim", c.linear_key_head_dim as u64),
                    ("linear_value_head_dim", c.linear_value_head_dim as u64),
                    ("linear_conv_kernel_dim", c.linear_conv_kernel_dim as u64),
                    ("num_experts", c.num_experts as u64),
                    ("num_experts_per_tok", c.num_experts_per_tok as u64),
                    ("moe_intermediate_size", c.moe_intermediate_size as u64),
                    ("shared_expert_intermediate_size", c.shared_expert_intermediate_size as u64),
                ],
                experts: c.num_experts as u64,
                top_k: c.num_experts_per_tok as u64,
                tie_word_embeddings: c.tie_word_embeddings,
                eos_from_config: c.eos_token_ids.clone(),
                kv_elements_per_token: full * 2 * (c.num_key_value_heads * c.head_dim) as u64,
                linear_state_elements: linear * (c.linear_num_value_heads * c.linear_key_head_dim * c.linear_value_head_dim) as u64,
                conv_state_elements: linear * (c.conv_channels() * (c.linear_conv_kernel_dim - 1)) as u64,
                implied: qwen35_tensors(&c),
            }
        }
        Architecture::Qwen3Moe => {
            let c = Qwen3MoeConfig::from_dir(dir)?;
            Layout {
                model_type: "qwen3_moe",
                layer_types: vec!["full_attention"; c.num_hidden_layers],
                dims: vec![
                    ("vocab_size", c.vocab_size as u64),
                    ("hidden_size", c.hidden_size as u64),
                    ("num_hidden_layers", c.num_hidden_layers as u64),
                    ("num_attention_heads", c.num_attention_heads as u64),
                    ("num_key_value_heads", c.num_key_value_heads as u64),
                    ("head_dim", c.head_dim as u64),
                    ("num_experts", c.num_experts as u64),
                    ("num_experts_per_tok", c.num_experts_per_tok as u64),
                    ("moe_intermediate_size", c.moe_intermediate_size as u64),
                    ("intermediate_size", c.intermediate_size as u64),
                    ("sparse_layers", c.sparse_layers.iter().filter(|s| **s).count() as u64),
                ],
                experts: c.num_experts as u64,
                top_k: c.num_experts_per_tok as u64,
                tie_word_embeddings: c.tie_word_embeddings,
                eos_from_config: c.eos_token_ids.clone(),
                kv_elements_per_token: c.num_hidden_layers as u64 * 2 * (c.num_key_value_heads * c.head_dim) as u64,
                linear_state_elements: 0,
                conv_state_elements: 0,
                implied: qwen3moe_tensors(&c),
            }
        }
    })
}

/// The group a logical tensor name belongs to (the rows of spec section 7's table).
fn group_of(logical: &str) -> &'static str {
    match logical {
        "embed_tokens.weight" => return "embedding",
        "lm_head.weight" => return "lm_head",
        "norm.weight" => return "norms",
        _ => {}
    }
    let kind = tensor_kind(logical);
    if kind == logical {
        "other"
    } else if kind.starts_with("mlp.experts.") {
        "routed experts"
    } else if kind == "mlp.gate.weight" {
        "router"
    } else if kind.starts_with("mlp.shared_expert") {
        "shared expert"
    } else if kind.starts_with("mlp.") {
        "dense mlp"
    } else if kind.starts_with("linear_attn.") {
        "linear attention"
    } else if kind.starts_with("self_attn.") {
        "full attention"
    } else if kind.contains("layernorm") {
        "norms"
    } else {
        "other"
    }
}

struct WeightsInfo {
    /// "headers" (the safetensors headers) or "config" (the shapes the config implies).
    counted_from: &'static str,
    groups: BTreeMap<&'static str, Group>,
    dtype_params: BTreeMap<&'static str, u64>,
    skipped_params: u64,
    skipped_tensors: usize,
    shards: usize,
    file_bytes: u64,
}

impl WeightsInfo {
    fn new(counted_from: &'static str) -> Self {
        WeightsInfo {
            counted_from,
            groups: BTreeMap::new(),
            dtype_params: BTreeMap::new(),
            skipped_params: 0,
            skipped_tensors: 0,
            shards: 0,
            file_bytes: 0,
        }
    }

    /// Adds one logical tensor of `rows` leading rows; `tied`: the embedding doubles as lm_head.
    fn add(&mut self, layout: &Layout, name: &str, rows: usize, params: u64, bytes: u64, tied: bool) {
        let group = group_of(name);
        let rows = rows.max(1) as u64;
        // Per decoded token: k of E experts, one embedding row (the whole table when it doubles
        // as the lm_head), everything else in full.
        let (active_params, active_bytes) = match group {
            "routed experts" if rows == layout.experts => (params / rows * layout.top_k, bytes / rows * layout.top_k),
            "embedding" if !tied => (params / rows, bytes / rows),
            _ => (params, bytes),
        };
        let g = self.groups.entry(group).or_default();
        g.params += params;
        g.bytes += bytes;
        g.active_params += active_params;
        g.active_bytes += active_bytes;
    }
}

fn from_headers(dir: &Path, layout: &Layout) -> Result<WeightsInfo> {
    let ck = Checkpoint::open(dir)?;
    let mut w = WeightsInfo::new("headers");
    let tied = ck.get("lm_head.weight").is_none() && layout.tie_word_embeddings;
    for name in ck.names() {
        let tensor = ck.get(name).expect("name from this checkpoint");
        let (mut params, mut bytes) = (0u64, 0u64);
        for part in &tensor.parts {
            let info = ck.shards()[part.shard].info(&part.key).expect("part from this checkpoint");
            params += info.numel() as u64;
            bytes += info.bytes.len() as u64;
            *w.dtype_params.entry(info.dtype.name()).or_default() += info.numel() as u64;
        }
        w.add(layout, name, tensor.shape.first().copied().unwrap_or(1), params, bytes, tied);
    }
    for key in ck.skipped() {
        if let Some(info) = ck.shards().iter().find_map(|s| s.info(key)) {
            w.skipped_params += info.numel() as u64;
        }
    }
    w.skipped_tensors = ck.skipped().len();
    w.shards = ck.shards().len();
    for shard in ck.shards() {
        w.file_bytes += std::fs::metadata(shard.path()).map(|m| m.len()).unwrap_or(0);
    }
    Ok(w)
}

fn from_config(layout: &Layout) -> WeightsInfo {
    let mut w = WeightsInfo::new("config");
    for (name, shape, f32) in &layout.implied {
        let params: u64 = shape.iter().map(|&d| d as u64).product();
        let dtype = if *f32 { StoredDType::F32 } else { StoredDType::BF16 };
        *w.dtype_params.entry(dtype.name()).or_default() += params;
        w.add(layout, name, shape[0], params, params * dtype.size() as u64, layout.tie_word_embeddings);
    }
    w
}

fn has_weights(dir: &Path) -> bool {
    dir.join(rio_model::checkpoint::SINGLE_FILE).is_file() || dir.join(INDEX_FILE).is_file()
}

/// A dict describing a checkpoint folder; see `rio_rt.info.CheckpointInfo` for the fields.
#[pyfunction]
fn checkpoint_info(py: Python<'_>, path: PathBuf) -> PyResult<Bound<'_, PyDict>> {
    let (layout, weights, generation, tokenizer) = py
        .detach(|| -> Result<_> {
            let layout = layout(&path)?;
            let weights = if has_weights(&path) { from_headers(&path, &layout)? } else { from_config(&layout) };
            let generation = GenerationConfig::from_dir(&path)?;
            let tokenizer = rio_tokenizer::Tokenizer::from_dir(&path)?;
            Ok((layout, weights, generation, tokenizer))
        })
        .map_err(to_py)?;

    let d = PyDict::new(py);
    d.set_item("path", path.display().to_string())?;
    d.set_item("model_type", layout.model_type)?;
    d.set_item("layer_types", &layout.layer_types)?;
    let dims = PyDict::new(py);
    for (k, v) in &layout.dims {
        dims.set_item(k, v)?;
    }
    d.set_item("dims", dims)?;
    d.set_item("tie_word_embeddings", layout.tie_word_embeddings)?;
    let eos = if generation.eos_token_ids.is_empty() { &layout.eos_from_config } else { &generation.eos_token_ids };
    d.set_item("eos_token_ids", eos)?;
    d.set_item("kv_cache_elements_per_token", layout.kv_elements_per_token)?;
    d.set_item("linear_state_elements", layout.linear_state_elements)?;
    d.set_item("conv_state_elements", layout.conv_state_elements)?;

    let groups = PyDict::new(py);
    for (name, g) in &weights.groups {
        let row = PyDict::new(py);
        row.set_item("params", g.params)?;
        row.set_item("bytes", g.bytes)?;
        row.set_item("active_params", g.active_params)?;
        row.set_item("active_bytes", g.active_bytes)?;
        groups.set_item(name, row)?;
    }
    d.set_item("counted_from", weights.counted_from)?;
    d.set_item("groups", groups)?;
    d.set_item("dtype_params", weights.dtype_params.clone())?;
    d.set_item("skipped_params", weights.skipped_params)?;
    d.set_item("skipped_tensors", weights.skipped_tensors)?;
    d.set_item("shards", weights.shards)?;
    d.set_item("file_bytes", weights.file_bytes)?;

    match &tokenizer {
        None => d.set_item("tokenizer", py.None())?,
        Some(t) => {
            let td = PyDict::new(py);
            td.set_item("vocab_size", t.vocab_size())?;
            td.set_item("chat_template", t.chat_template().is_some())?;
            let special = t.special_tokens();
            td.set_item("eos_token", special.eos.as_ref().map(|n| n.text.clone()))?;
            td.set_item("think_token_id", special.think)?;
            td.set_item("end_think_token_id", special.end_think)?;
            d.set_item("tokenizer", td)?;
        }
    }
    Ok(d)
}
