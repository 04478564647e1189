//! Fuzzing the header and index parsers: any bytes give a header or an error, never a panic, and
//! every accepted header only describes bytes inside the file.
mod common;

use common::{entry, safetensors_bytes};
use proptest::prelude::*;
use rio_model::index::ShardIndex;
use rio_model::safetensors::parse_header;

fn valid_file() -> Vec<u8> {
    safetensors_bytes(&[entry("a", &[2, 3], &[1.0; 6]), entry("b", &[4], &[2.0; 4]), entry("c", &[0, 5], &[])])
}

fn check_accepted(bytes: &[u8]) {
    if let Ok(h) = parse_header(bytes, "fuzz.safetensors") {
        let mut ranges: Vec<_> = h.tensors.values().map(|t| t.bytes.clone()).collect();
        ranges.sort_by_key(|r| r.start);
        for t in h.tensors.values() {
            assert!(t.bytes.end <= bytes.len());
            assert_eq!(t.bytes.len(), t.numel() * t.dtype.size());
        }
        for w in ranges.windows(2) {
            assert!(w[0].is_empty() || w[1].is_empty() || w[1].start >= w[0].end);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        check_accepted(&bytes);
    }

    #[test]
    fn mutated_files_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let mut bytes = valid_file();
        for (pos, val) in flips {
            let n = bytes.len();
            bytes[pos % n] = val;
        }
        check_accepted(&bytes);
    }

    #[test]
    fn truncated_files_are_rejected(cut in 1usize..100) {
        let bytes = valid_file();
        let cut = cut.min(bytes.len());
        prop_assert!(parse_header(&bytes[..bytes.len() - cut], "t.safetensors").is_err());
    }

    #[test]
    fn random_headers_never_panic(
        dtype in prop::sample::select(vec!["F32", "BF16", "F16", "I64", "U8", "F8_E4M3", "XX"]),
        shape in proptest::collection::vec(0u64..u64::MAX, 0..4),
        begin in 0u64..64, len in 0u64..64, data in 0usize..64,
    ) {
        let json = serde_json::json!({"t": {"dtype": dtype, "shape": shape, "data_offsets": [begin, begin + len]}});
        let json = serde_json::to_vec(&json).unwrap();
        let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
        bytes.extend(json);
        bytes.extend(vec![0u8; data]);
        check_accepted(&bytes);
    }

    #[test]
    fn random_index_json_never_panics(s in "\\PC{0,80}", name in "[a-z./]{0,12}") {
        let _ = ShardIndex::parse(s.as_bytes(), "index.json");
        let json = serde_json::json!({"weight_map": {"t": name}}).to_string();
        if let Ok(ix) = ShardIndex::parse(json.as_bytes(), "index.json") {
            prop_assert!(!ix.shards()[0].split('/').any(|c| c == ".." || c.is_empty()));
        }
    }
}

#[test]
fn header_lying_about_sizes_is_named() {
    let json = br#"{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}"#;
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend(json);
    bytes.extend([0u8; 8]);
    let msg = parse_header(&bytes, "x.safetensors").unwrap_err().to_string();
    assert!(msg.contains("x.safetensors") && msg.contains("tensor w") && msg.contains("needs 16 bytes"), "{msg}");
}

#[test]
fn overlapping_tensors_are_rejected() {
    let json =
        br#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}"#;
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend(json);
    bytes.extend([0u8; 12]);
    let msg = parse_header(&bytes, "x.safetensors").unwrap_err().to_string();
    assert!(msg.contains("overlap"), "{msg}");
}

#[test]
fn valid_file_parses() {
    let h = parse_header(&valid_file(), "v.safetensors").unwrap();
    assert_eq!(h.tensors["a"].shape, [2, 3]);
    assert_eq!(h.tensors.len(), 3);
}
