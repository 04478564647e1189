//! A plain safetensors writer for tests: header padded to 8 bytes, tensors packed in order.
#![allow(dead_code)]
use std::path::Path;

pub struct Entry<'a> {
    pub name: &'a str,
    pub dtype: &'a str,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

pub fn entry<'a>(name: &'a str, shape: &[usize], values: &[f32]) -> Entry<'a> {
    Entry { name, dtype: "F32", shape: shape.to_vec(), data: values.iter().flat_map(|v| v.to_le_bytes()).collect() }
}

pub fn entry_bf16<'a>(name: &'a str, shape: &[usize], values: &[f32]) -> Entry<'a> {
    let data = values.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect();
    Entry { name, dtype: "BF16", shape: shape.to_vec(), data }
}

pub fn safetensors_bytes(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for e in entries {
        header.insert(
            e.name.to_string(),
            serde_json::json!({"dtype": e.dtype, "shape": e.shape, "data_offsets": [offset, offset + e.data.len()]}),
        );
        offset += e.data.len();
    }
    let mut json = serde_json::to_vec(&header).unwrap();
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend(json);
    for e in entries {
        out.extend(&e.data);
    }
    out
}

pub fn write(path: &Path, entries: &[Entry<'_>]) {
    std::fs::write(path, safetensors_bytes(entries)).unwrap();
}

pub fn ramp(n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|i| (i as f32 * 0.37).sin() * scale).collect()
}
