//! The Qwen3-MoE model on a tiny random checkpoint written here (fused expert layout, `model.`
//! prefix, layer 0 dense by `mlp_only_layers`): cached decoding equals a full prefill and a
//! missing tensor is named. (Agreement with transformers: tests/test_model_qwen3moe.py.)
mod common;

use common::{entry, entry_bf16, write, Entry};
use rio_core::Error;
use rio_model::qwen3_5_moe::Input;
use rio_model::qwen3_moe::Qwen3Moe;

const CONFIG: &str = r#"{"model_type": "qwen3_moe", "vocab_size": 40, "hidden_size": 16, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 6, "num_experts": 4, "num_experts_per_tok": 2,
    "moe_intermediate_size": 8, "intermediate_size": 20, "mlp_only_layers": [0], "norm_topk_prob": false,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}, "eos_token_id": 2}"#;

/// (key, shape) of every tensor of the config above.
fn tensor_list() -> Vec<(String, Vec<usize>)> {
    let mut t = vec![
        ("model.embed_tokens.weight".to_string(), vec![40, 16]),
        ("model.norm.weight".to_string(), vec![16]),
        ("lm_head.weight".to_string(), vec![40, 16]),
    ];
    for l in 0..2 {
        let q = format!("model.layers.{l}");
        t.push((format!("{q}.input_layernorm.weight"), vec![16]));
        t.push((format!("{q}.post_attention_layernorm.weight"), vec![16]));
        t.push((format!("{q}.self_attn.q_proj.weight"), vec![24, 16]));
        t.push((format!("{q}.self_attn.k_proj.weight"), vec![12, 16]));
        t.push((format!("{q}.self_attn.v_proj.weight"), vec![12, 16]));
        t.push((format!("{q}.self_attn.o_proj.weight"), vec![16, 24]));
        t.push((format!("{q}.self_attn.q_norm.weight"), vec![6]));
        t.push((format!("{q}.self_attn.k_norm.weight"), vec![6]));
        if l == 0 {
            t.push((format!("{q}.mlp.gate_proj.weight"), vec![20, 16]));
            t.push((format!("{q}.mlp.up_proj.weight"), vec![20, 16]));
            t.push((format!("{q}.mlp.down_proj.weight"), vec![16, 20]));
        } else {
            t.push((format!("{q}.mlp.gate.weight"), vec![4, 16]));
            t.push((format!("{q}.mlp.experts.gate_up_proj"), vec![4, 16, 16]));
            t.push((format!("{q}.mlp.experts.down_proj"), vec![4, 16, 8]));
        }
    }
    t
}

fn write_checkpoint(dir: &std::path::Path, omit: &str) {
    std::fs::write(dir.join("config.json"), CONFIG).unwrap();
    let list = tensor_list();
    let entries: Vec<Entry<'_>> = list
        .iter()
        .enumerate()
        .filter(|(_, (k, _))| omit.is_empty() || !k.ends_with(omit))
        .map(|(i, (k, shape))| {
            let n: usize = shape.iter().product();
            let values: Vec<f32> =
                (0..n).map(|j| ((j * 31 + i * 17) as f32 * 0.618).sin() * 0.6 + (shape.len() == 1) as u8 as f32).collect();
            if shape.len() == 1 {
                entry(k, shape, &values)
            } else {
                entry_bf16(k, shape, &values)
            }
        })
        .collect();
    write(&dir.join("model.safetensors"), &entries);
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn prefill_then_single_token_steps_equal_one_prefill() {
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), "");
    let model = Qwen3Moe::from_dir(dir.path()).unwrap();
    assert_eq!(model.config().sparse_layers, vec![false, true]);
    assert_eq!(model.eos_token_ids(), vec![2]);
    let tokens: Vec<u32> = (0..9).map(|i| (i * 7 + 3) % 40).collect();
    let full = model.forward(Input::Tokens(&tokens), &mut model.new_cache(), 0).unwrap();
    assert!(full.iter().any(|v| v.abs() > 0.1), "logits should not be near zero");
    let mut cache = model.new_cache();
    let mut stepped = model.forward(Input::Tokens(&tokens[..4]), &mut cache, 0).unwrap();
    for t in 4..tokens.len() {
        stepped.extend(model.forward(Input::Tokens(&tokens[t..t + 1]), &mut cache, 0).unwrap());
    }
    assert_eq!(cache.position(), tokens.len());
    assert!(max_diff(&full, &stepped) < 1e-5, "{}", max_diff(&full, &stepped));
    let emb = model.embed(&tokens).unwrap();
    assert_eq!(model.forward(Input::Embeddings(&emb), &mut model.new_cache(), 3).unwrap(), full[6 * 40..]);
}

#[test]
fn missing_tensors_and_bad_ids_are_named() {
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), "layers.0.mlp.up_proj.weight");
    let err = Qwen3Moe::from_dir(dir.path()).unwrap_err();
    assert!(matches!(&err, Error::Checkpoint { message, .. } if message.contains("layers.0.mlp.up_proj.weight")), "{err}");
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), "");
    let model = Qwen3Moe::from_dir(dir.path()).unwrap();
    let err = model.forward(Input::Tokens(&[40]), &mut model.new_cache(), 0).unwrap_err();
    assert!(matches!(&err, Error::Value { arg, .. } if arg == "ids"), "{err}");
}
