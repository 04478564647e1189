//! Checkpoint folders: layouts, key prefixes, sharding and the errors of broken folders.
mod common;

use common::{entry, entry_bf16, ramp, write};
use rio_model::Checkpoint;

const E: usize = 3;
const I: usize = 2;
const H: usize = 4;

fn expert_values() -> (Vec<f32>, Vec<f32>) {
    (ramp(E * 2 * I * H, 1.0), ramp(E * H * I, 2.0))
}

fn write_fused(dir: &std::path::Path, prefix: &str) {
    let (gu, dn) = expert_values();
    let k1 = format!("{prefix}layers.0.mlp.experts.gate_up_proj");
    let k2 = format!("{prefix}layers.0.mlp.experts.down_proj");
    write(
        &dir.join("model.safetensors"),
        &[
            entry(&k1, &[E, 2 * I, H], &gu),
            entry_bf16(&k2, &[E, H, I], &dn),
            entry("lm_head.weight", &[2, H], &ramp(2 * H, 1.0)),
            entry("model.visual.patch.weight", &[2], &[1.0, 2.0]),
            entry("mtp.fc.weight", &[2], &[1.0, 2.0]),
        ],
    );
}

/// Per-expert layout, split over two shards with an index, as transformers 5 saves it.
fn write_per_expert_sharded(dir: &std::path::Path, prefix: &str) {
    let (gu, dn) = expert_values();
    let mut names = Vec::new();
    for e in 0..E {
        for p in ["gate", "up", "down"] {
            names.push((e, p, format!("{prefix}layers.0.mlp.experts.{e}.{p}_proj.weight")));
        }
    }
    let mut shard_a = Vec::new();
    let mut shard_b = Vec::new();
    let mut weight_map = serde_json::Map::new();
    for (e, p, name) in &names {
        let (shape, values) = match *p {
            "gate" => (vec![I, H], gu[(e * 2 * I) * H..(e * 2 * I + I) * H].to_vec()),
            "up" => (vec![I, H], gu[(e * 2 * I + I) * H..(e * 2 * I + 2 * I) * H].to_vec()),
            _ => (vec![H, I], dn[e * H * I..(e + 1) * H * I].to_vec()),
        };
        let to_a = e % 2 == 0;
        weight_map.insert(name.clone(), (if to_a { "a.safetensors" } else { "b.safetensors" }).into());
        let ent = if *p == "down" { entry_bf16(name, &shape, &values) } else { entry(name, &shape, &values) };
        if to_a {
            shard_a.push(ent)
        } else {
            shard_b.push(ent)
        }
    }
    write(&dir.join("a.safetensors"), &shard_a);
    write(&dir.join("b.safetensors"), &shard_b);
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

fn logical_values(ck: &Checkpoint, name: &str) -> Vec<f32> {
    let mut out = Vec::new();
    for part in ck.parts(name).unwrap() {
        match part.dtype() {
            rio_core::DType::F32 => out.extend(part.as_slice::<f32>().unwrap()),
            rio_core::DType::BF16 => out.extend(part.as_slice::<half::bf16>().unwrap().iter().map(|v| v.to_f32())),
            d => panic!("unexpected {d}"),
        }
    }
    out
}

#[test]
fn fused_and_per_expert_layouts_hold_the_same_logical_tensors() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    write_fused(a.path(), "model.language_model.");
    write_per_expert_sharded(b.path(), "model.");
    let (fa, pb) = (Checkpoint::open(a.path()).unwrap(), Checkpoint::open(b.path()).unwrap());
    for name in ["layers.0.mlp.experts.gate_up_proj", "layers.0.mlp.experts.down_proj"] {
        assert_eq!(fa.get(name).unwrap().shape, pb.get(name).unwrap().shape, "{name}");
        assert_eq!(logical_values(&fa, name), logical_values(&pb, name), "{name}");
    }
    assert_eq!(pb.get("layers.0.mlp.experts.gate_up_proj").unwrap().parts.len(), 2 * E);
    assert!(fa.names().all(|n| !n.contains("visual") && !n.starts_with("mtp")));
    assert_eq!(fa.skipped().len(), 2);

    let (ea, eb) = (fa.experts("layers.0.mlp.experts").unwrap(), pb.experts("layers.0.mlp.experts").unwrap());
    assert_eq!(ea.len(), E);
    for (x, y) in ea.iter().zip(&eb) {
        assert_eq!(x.up.to_contiguous().as_slice::<f32>(), y.up.to_contiguous().as_slice::<f32>());
        assert_eq!(x.down.shape(), [H, I]);
    }
}

#[test]
fn missing_shard_is_named() {
    let d = tempfile::tempdir().unwrap();
    write_per_expert_sharded(d.path(), "model.");
    std::fs::remove_file(d.path().join("b.safetensors")).unwrap();
    let msg = Checkpoint::open(d.path()).unwrap_err().to_string();
    assert!(msg.contains("b.safetensors") && msg.contains("missing"), "{msg}");
}

#[test]
fn missing_expert_matrix_is_named() {
    let d = tempfile::tempdir().unwrap();
    let m = ramp(I * H, 1.0);
    write(
        &d.path().join("model.safetensors"),
        &[
            entry("model.layers.0.mlp.experts.0.gate_proj.weight", &[I, H], &m),
            entry("model.layers.0.mlp.experts.0.up_proj.weight", &[I, H], &m),
            entry("model.layers.0.mlp.experts.0.down_proj.weight", &[H, I], &m),
            entry("model.layers.0.mlp.experts.1.gate_proj.weight", &[I, H], &m),
            entry("model.layers.0.mlp.experts.1.down_proj.weight", &[H, I], &m),
        ],
    );
    let msg = Checkpoint::open(d.path()).unwrap_err().to_string();
    assert!(msg.contains("model.layers.0.mlp.experts.1.up_proj.weight is missing"), "{msg}");
}

#[test]
fn both_prefixes_for_one_tensor_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    write(
        &d.path().join("model.safetensors"),
        &[entry("model.norm.weight", &[2], &[1.0, 2.0]), entry("model.language_model.norm.weight", &[2], &[1.0, 2.0])],
    );
    let msg = Checkpoint::open(d.path()).unwrap_err().to_string();
    assert!(msg.contains("both map to the logical tensor norm.weight"), "{msg}");
}

#[test]
fn truncated_file_and_missing_folder_are_errors() {
    let d = tempfile::tempdir().unwrap();
    write_fused(d.path(), "model.");
    let file = d.path().join("model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 3]).unwrap();
    let msg = Checkpoint::open(d.path()).unwrap_err().to_string();
    assert!(msg.contains("model.safetensors") && msg.contains("truncated"), "{msg}");

    let msg = Checkpoint::open(d.path().join("nope")).unwrap_err().to_string();
    assert!(msg.contains("nope") && msg.contains("no such"), "{msg}");
    let empty = tempfile::tempdir().unwrap();
    let msg = Checkpoint::open(empty.path()).unwrap_err().to_string();
    assert!(msg.contains("neither model.safetensors"), "{msg}");
}

#[test]
fn index_naming_a_tensor_its_shard_lacks_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    write(&d.path().join("a.safetensors"), &[entry("model.norm.weight", &[2], &[1.0, 2.0])]);
    let index = serde_json::json!({"weight_map": {"model.norm.weight": "a.safetensors", "lm_head.weight": "a.safetensors"}});
    std::fs::write(d.path().join("model.safetensors.index.json"), index.to_string()).unwrap();
    let msg = Checkpoint::open(d.path()).unwrap_err().to_string();
    assert!(msg.contains("lm_head.weight") && msg.contains("not stored"), "{msg}");
}

#[test]
fn views_are_zero_copy_and_unreadable_tensors_are_named() {
    let d = tempfile::tempdir().unwrap();
    let f16_values: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
    write(
        &d.path().join("model.safetensors"),
        &[
            common::Entry { name: "model.norm.weight", dtype: "F16", shape: vec![2], data: f16_values },
            common::Entry { name: "model.scale", dtype: "I8", shape: vec![3], data: vec![1, 2, 3] },
        ],
    );
    let ck = Checkpoint::open(d.path()).unwrap();
    let t = ck.tensor("norm.weight").unwrap();
    assert_eq!(t.as_slice::<half::f16>().unwrap(), [half::f16::from_f32(1.5), half::f16::from_f32(-2.0)]);
    let shard = &ck.shards()[0];
    assert_eq!(t.as_ptr(), shard.bytes("model.norm.weight").unwrap().as_ptr(), "the view points into the map");
    let msg = ck.tensor("scale").unwrap_err().to_string();
    assert!(msg.contains("model.scale") && msg.contains("I8"), "{msg}");
    let msg = ck.tensor("nope").unwrap_err().to_string();
    assert!(msg.contains("no tensor named nope"), "{msg}");
}

#[test]
fn misaligned_tensor_is_an_error_not_a_bad_view() {
    // A one-byte tensor first puts the f32 tensor at an odd offset.
    let d = tempfile::tempdir().unwrap();
    write(
        &d.path().join("model.safetensors"),
        &[common::Entry { name: "a", dtype: "U8", shape: vec![1], data: vec![7] }, entry("b", &[2], &[1.0, 2.0])],
    );
    let ck = Checkpoint::open(d.path()).unwrap();
    let msg = ck.tensor("b").unwrap_err().to_string();
    assert!(msg.contains("tensor b") && msg.contains("not aligned"), "{msg}");
}
