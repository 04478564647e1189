//! The Qwen3.5-MoE model on a tiny random checkpoint written here: cached decoding equals a
//! full prefill, embeddings equal token ids, and bad inputs give errors that name the problem.
//! (Agreement with transformers is tested in tests/test_model_qwen35.py.)
mod common;

use common::{entry, entry_bf16, write, Entry};
use rio_core::Error;
use rio_model::cache::LayerCache;
use rio_model::qwen3_5_moe::{Input, Qwen35Moe};

const CONFIG: &str = r#"{"model_type": "qwen3_5_moe", "tie_word_embeddings": false, "text_config": {
    "vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
    "num_key_value_heads": 1, "head_dim": 8, "linear_num_key_heads": 1, "linear_num_value_heads": 2,
    "linear_key_head_dim": 4, "linear_value_head_dim": 6, "linear_conv_kernel_dim": 4,
    "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 8,
    "shared_expert_intermediate_size": 12, "full_attention_interval": 2,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}}}"#;

/// Deterministic values in [-scale, scale).
fn noise(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// (key, shape) of every tensor of the config above, multimodal key prefix.
fn tensor_list() -> Vec<(String, Vec<usize>)> {
    let p = "model.language_model";
    let mut t = vec![
        (format!("{p}.embed_tokens.weight"), vec![50, 16]),
        (format!("{p}.norm.weight"), vec![16]),
        ("lm_head.weight".to_string(), vec![50, 16]),
    ];
    for l in 0..2 {
        let q = format!("{p}.layers.{l}");
        t.push((format!("{q}.input_layernorm.weight"), vec![16]));
        t.push((format!("{q}.post_attention_layernorm.weight"), vec![16]));
        t.push((format!("{q}.mlp.gate.weight"), vec![4, 16]));
        t.push((format!("{q}.mlp.experts.gate_up_proj"), vec![4, 16, 16]));
        t.push((format!("{q}.mlp.experts.down_proj"), vec![4, 16, 8]));
        t.push((format!("{q}.mlp.shared_expert.gate_proj.weight"), vec![12, 16]));
        t.push((format!("{q}.mlp.shared_expert.up_proj.weight"), vec![12, 16]));
        t.push((format!("{q}.mlp.shared_expert.down_proj.weight"), vec![16, 12]));
        t.push((format!("{q}.mlp.shared_expert_gate.weight"), vec![1, 16]));
        if l == 0 {
            let a = format!("{q}.linear_attn");
            // conv channels 2·1·4 + 2·6 = 20
            t.push((format!("{a}.in_proj_qkv.weight"), vec![20, 16]));
            t.push((format!("{a}.in_proj_z.weight"), vec![12, 16]));
            t.push((format!("{a}.in_proj_b.weight"), vec![2, 16]));
            t.push((format!("{a}.in_proj_a.weight"), vec![2, 16]));
            t.push((format!("{a}.conv1d.weight"), vec![20, 1, 4]));
            t.push((format!("{a}.A_log"), vec![2]));
            t.push((format!("{a}.dt_bias"), vec![2]));
            t.push((format!("{a}.norm.weight"), vec![6]));
            t.push((format!("{a}.out_proj.weight"), vec![16, 12]));
        } else {
            let a = format!("{q}.self_attn");
            t.push((format!("{a}.q_proj.weight"), vec![32, 16]));
            t.push((format!("{a}.k_proj.weight"), vec![8, 16]));
            t.push((format!("{a}.v_proj.weight"), vec![8, 16]));
            t.push((format!("{a}.o_proj.weight"), vec![16, 16]));
            t.push((format!("{a}.q_norm.weight"), vec![8]));
            t.push((format!("{a}.k_norm.weight"), vec![8]));
        }
    }
    t
}

/// Writes the checkpoint (bf16 matrices, f32 vectors, like the official releases), leaving out
/// the tensor named `omit`.
fn write_checkpoint(dir: &std::path::Path, omit: &str) {
    std::fs::write(dir.join("config.json"), CONFIG).unwrap();
    std::fs::write(dir.join("generation_config.json"), r#"{"eos_token_id": [7, 3], "top_k": 20}"#).unwrap();
    let list = tensor_list();
    let entries: Vec<Entry<'_>> = list
        .iter()
        .enumerate()
        .filter(|(_, (k, _))| omit.is_empty() || !k.ends_with(omit))
        .map(|(i, (k, shape))| {
            let n: usize = shape.iter().product();
            let values = noise(n, i as u64, if shape.len() == 1 { 0.5 } else { 0.6 });
            if shape.len() == 1 {
                entry(k, shape, &values)
            } else {
                entry_bf16(k, shape, &values)
            }
        })
        .collect();
    write(&dir.join("model.safetensors"), &entries);
}

fn tiny_model() -> (tempfile::TempDir, Qwen35Moe) {
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), "");
    let model = Qwen35Moe::from_dir(dir.path()).unwrap();
    (dir, model)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn prefill_then_single_token_steps_equal_one_prefill() {
    let (_dir, model) = tiny_model();
    let tokens: Vec<u32> = (0..11).map(|i| (i * 7 + 3) % 50).collect();
    let full = model.forward(Input::Tokens(&tokens), &mut model.new_cache(), 0).unwrap();
    assert!(full.iter().any(|v| v.abs() > 0.1), "logits should not be near zero");

    let mut cache = model.new_cache();
    let mut stepped = model.forward(Input::Tokens(&tokens[..5]), &mut cache, 0).unwrap();
    for t in 5..tokens.len() {
        stepped.extend(model.forward(Input::Tokens(&tokens[t..t + 1]), &mut cache, 0).unwrap());
    }
    assert_eq!(cache.position(), tokens.len());
    assert!(max_diff(&full, &stepped) < 1e-5, "{}", max_diff(&full, &stepped));
    let last2 = model.forward(Input::Tokens(&tokens), &mut model.new_cache(), 2).unwrap();
    assert_eq!(last2, full[(tokens.len() - 2) * 50..]);
    match (&cache.layers[0], &cache.layers[1]) {
        (LayerCache::LinearAttention(s), LayerCache::Attention(kv)) => {
            assert_eq!(kv.len(), tokens.len());
            assert!(s.recurrent.iter().any(|&v| v != 0.0));
        }
        other => panic!("unexpected layer caches {other:?}"),
    }
}

#[test]
fn embeddings_input_equals_token_input() {
    let (_dir, model) = tiny_model();
    assert_eq!(model.eos_token_ids(), vec![7, 3]);
    assert_eq!(model.generation_config().top_k, Some(20));
    let tokens = [4u32, 9, 49, 0, 17];
    let emb = model.embed(&tokens).unwrap();
    let a = model.forward(Input::Tokens(&tokens), &mut model.new_cache(), 0).unwrap();
    let b = model.forward(Input::Embeddings(&emb), &mut model.new_cache(), 0).unwrap();
    assert_eq!(a, b);
}

#[test]
fn bad_inputs_and_checkpoints_give_named_errors() {
    let (_dir, model) = tiny_model();
    let err = model.forward(Input::Tokens(&[50]), &mut model.new_cache(), 0).unwrap_err();
    assert!(matches!(&err, Error::Value { arg, message } if arg == "ids" && message.contains("50")), "{err}");
    let err = model.forward(Input::Embeddings(&[0.0; 15]), &mut model.new_cache(), 0).unwrap_err();
    assert!(matches!(&err, Error::Value { arg, .. } if arg == "input_embeds"), "{err}");
    let err = model.forward(Input::Tokens(&[]), &mut model.new_cache(), 0).unwrap_err();
    assert!(err.to_string().contains("at least one token"), "{err}");

    let mut foreign = model.new_cache();
    foreign.layers.swap(0, 1);
    let err = model.forward(Input::Tokens(&[1]), &mut foreign, 0).unwrap_err();
    assert!(matches!(&err, Error::Value { arg, .. } if arg == "cache"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), "layers.1.self_attn.k_norm.weight");
    let err = Qwen35Moe::from_dir(dir.path()).unwrap_err();
    assert!(matches!(&err, Error::Checkpoint { message, .. } if message.contains("layers.1.self_attn.k_norm.weight")), "{err}");
}
