//! End-to-end fits on synthetic checkpoints written to temp folders.
use std::path::Path;

use rio_provenance::{fit, Options, VerdictKind};

/// Writes an f32 safetensors file with the given tensors.
fn write(dir: &Path, tensors: &[(&str, Vec<usize>, Vec<f32>)]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape, values) in tensors {
        let start = data.len();
        data.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        header.insert(name.to_string(), serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}));
    }
    let mut json = serde_json::to_vec(&header).unwrap();
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend(json);
    bytes.extend(data);
    std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
}

fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

fn model(dir: &Path, values: &dyn Fn(&str, usize) -> Vec<f32>) {
    let names = ["model.layers.0.mlp.gate.weight", "model.layers.1.self_attn.q_proj.weight", "lm_head.weight"];
    let tensors: Vec<_> = names.iter().map(|n| (*n, vec![64, 80], values(n, 64 * 80))).collect();
    write(dir, &tensors);
}

fn seed_of(name: &str) -> u64 {
    name.bytes().map(u64::from).sum()
}

#[test]
fn blend_fine_tune_and_unrelated_are_told_apart() {
    let (a, b, blend, tuned, other) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    model(a.path(), &|n, len| noise(len, seed_of(n)));
    model(b.path(), &|n, len| noise(len, seed_of(n) + 1000));
    model(blend.path(), &|n, len| {
        noise(len, seed_of(n)).iter().zip(noise(len, seed_of(n) + 1000)).map(|(x, y)| 0.6 * x + 0.4 * y).collect()
    });
    model(tuned.path(), &|n, len| noise(len, seed_of(n)).iter().zip(noise(len, 77)).map(|(x, e)| x + 0.05 * e).collect());
    model(other.path(), &|n, len| noise(len, seed_of(n) + 5000));
    let parents = [a.path(), b.path()];
    let opts = Options::default();

    let r = fit(blend.path(), &parents, &opts, &mut |_| true).unwrap();
    assert_eq!(r.verdict.kind, VerdictKind::Blend, "{}", r.verdict.text);
    for t in &r.tensors {
        assert!((t.coefficients[0] - 0.6).abs() < 1e-6 && (t.coefficients[1] - 0.4).abs() < 1e-6, "{t:?}");
        assert!(t.rel_residual < 1e-6);
    }
    assert_eq!(r.layers.len(), 3);

    let r = fit(tuned.path(), &parents, &opts, &mut |_| true).unwrap();
    assert_eq!((r.verdict.kind.clone(), r.verdict.parent), (VerdictKind::FineTuned, Some(0)), "{}", r.verdict.text);

    let r = fit(other.path(), &parents, &opts, &mut |_| true).unwrap();
    assert_eq!(r.verdict.kind, VerdictKind::Unrelated, "{}", r.verdict.text);

    let r = fit(b.path(), &parents, &Options { quick: true, sample: 1000, ..opts.clone() }, &mut |_| true).unwrap();
    assert_eq!((r.verdict.kind.clone(), r.verdict.parent), (VerdictKind::Identical, Some(1)), "{}", r.verdict.text);
    assert!(r.tensors.iter().all(|t| t.elements >= 1000 && t.elements < t.params));
}

#[test]
fn shape_mismatch_is_an_error_and_missing_tensors_are_reported() {
    let (a, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write(a.path(), &[("model.norm.weight", vec![4], vec![1.0; 4]), ("extra.weight", vec![2], vec![1.0; 2])]);
    write(c.path(), &[("model.norm.weight", vec![4], vec![2.0; 4]), ("only_here.weight", vec![2], vec![1.0; 2])]);
    let r = fit(c.path(), &[a.path()], &Options::default(), &mut |_| true).unwrap();
    let names: Vec<&str> = r.not_compared.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["only_here.weight", "extra.weight"]);
    assert!((r.tensors[0].coefficients[0] - 2.0).abs() < 1e-12);

    let msg = fit(c.path(), &[a.path()], &Options::default(), &mut |_| false).unwrap_err().to_string();
    assert!(msg.contains("cancelled"), "{msg}");

    write(c.path(), &[("model.norm.weight", vec![2, 2], vec![2.0; 4])]);
    let msg = fit(c.path(), &[a.path()], &Options::default(), &mut |_| true).unwrap_err().to_string();
    assert!(msg.contains("norm.weight") && msg.contains("[4]") && msg.contains("[2, 2]"), "{msg}");
}
