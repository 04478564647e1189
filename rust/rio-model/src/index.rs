//! `model.safetensors.index.json`: which shard file holds each tensor of a sharded checkpoint.
use std::collections::BTreeMap;

use rio_core::{Error, Result};
use serde::Deserialize;

pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// The parsed index: tensor name -> shard file name (relative to the checkpoint folder).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardIndex {
    pub weight_map: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct RawIndex {
    weight_map: BTreeMap<String, String>,
}

impl ShardIndex {
    /// Parses index JSON; `file` names it in errors. Shard names must stay inside the folder.
    pub fn parse(json: &[u8], file: &str) -> Result<ShardIndex> {
        let raw: RawIndex = serde_json::from_slice(json)
            .map_err(|e| Error::checkpoint(file, format!("not a valid index (expected {{\"weight_map\": {{name: shard}}}}): {e}")))?;
        for (name, shard) in &raw.weight_map {
            let inside = shard.split('/').all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\\'));
            if !inside {
                return Err(Error::checkpoint(
                    file,
                    format!("tensor {name}: shard {shard:?} is not a file name inside the checkpoint folder"),
                ));
            }
        }
        Ok(ShardIndex { weight_map: raw.weight_map })
    }

    /// Distinct shard files, sorted.
    pub fn shards(&self) -> Vec<&str> {
        let mut s: Vec<&str> = self.weight_map.values().map(String::as_str).collect();
        s.sort_unstable();
        s.dedup();
        s
    }
}
