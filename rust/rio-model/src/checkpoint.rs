//! A checkpoint folder as one map of logical tensors, read in place from memory-mapped shards.
//!
//! The folder holds `model.safetensors`, or `model.safetensors.index.json` and the shards it
//! names. Keys become logical names ([`crate::names`]), and per-expert matrices
//! `{block}.experts.{e}.{gate,up,down}_proj.weight` become the fused logical tensors
//! `{block}.experts.gate_up_proj [E, 2I, H]` (gate rows first) and `{block}.experts.down_proj
//! [E, H, I]`, made of one part per stored matrix in row-major order. So fused and per-expert
//! checkpoints hold the same logical tensors, element for element, and nothing is copied.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rio_core::moe::ExpertMats;
use rio_core::{Error, Result, TensorRef};

use crate::index::{ShardIndex, INDEX_FILE};
use crate::names::{logical_name, split_expert_key, ExpertProj};
use crate::safetensors::{Access, SafetensorsFile};

pub const SINGLE_FILE: &str = "model.safetensors";

/// One stored tensor that makes up (part of) a logical tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// Index into [`Checkpoint::shards`].
    pub shard: usize,
    /// The key in that shard's header.
    pub key: String,
}

/// A logical tensor: its shape and the stored tensors that hold its elements, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogicalTensor {
    pub shape: Vec<usize>,
    pub parts: Vec<Part>,
}

impl LogicalTensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

#[derive(Debug)]
pub struct Checkpoint {
    dir: PathBuf,
    shards: Vec<SafetensorsFile>,
    tensors: BTreeMap<String, LogicalTensor>,
    skipped: Vec<String>,
}

impl Checkpoint {
    /// Opens a checkpoint folder (or a single `.safetensors` file) and validates every header.
    pub fn open(path: impl AsRef<Path>) -> Result<Checkpoint> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        if path.is_file() {
            let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
            return Checkpoint::single(dir, SafetensorsFile::open(path)?);
        }
        if !path.is_dir() {
            return Err(Error::checkpoint(shown, "no such checkpoint folder or file"));
        }
        let index_path = path.join(INDEX_FILE);
        if index_path.is_file() {
            let shown_index = index_path.display().to_string();
            let json = std::fs::read(&index_path).map_err(|e| Error::checkpoint(&shown_index, format!("cannot read: {e}")))?;
            let index = ShardIndex::parse(&json, &shown_index)?;
            let names = index.shards();
            let mut shards = Vec::with_capacity(names.len());
            for name in &names {
                let shard_path = path.join(name);
                if !shard_path.is_file() {
                    return Err(Error::checkpoint(
                        shard_path.display().to_string(),
                        format!("shard {name} listed in {INDEX_FILE} is missing"),
                    ));
                }
                shards.push(SafetensorsFile::open(shard_path)?);
            }
            let mut stored = Vec::with_capacity(index.weight_map.len());
            for (key, shard_name) in &index.weight_map {
                let i = names.binary_search(&shard_name.as_str()).expect("names come from this index");
                if shards[i].info(key).is_none() {
                    return Err(Error::checkpoint(
                        shards[i].path().display().to_string(),
                        format!("tensor {key} is listed in {INDEX_FILE} for this shard but not stored in it"),
                    ));
                }
                stored.push((key.clone(), i));
            }
            return Checkpoint::from_shards(path.to_path_buf(), shards, stored);
        }
        let single = path.join(SINGLE_FILE);
        if single.is_file() {
            return Checkpoint::single(path.to_path_buf(), SafetensorsFile::open(single)?);
        }
        Err(Error::checkpoint(shown, format!("neither {SINGLE_FILE} nor {INDEX_FILE} is in this folder")))
    }

    fn single(dir: PathBuf, file: SafetensorsFile) -> Result<Checkpoint> {
        let stored = file.header().tensors.keys().map(|k| (k.clone(), 0)).collect();
        Checkpoint::from_shards(dir, vec![file], stored)
    }

    fn from_shards(dir: PathBuf, shards: Vec<SafetensorsFile>, stored: Vec<(String, usize)>) -> Result<Checkpoint> {
        let mut ck = Checkpoint { dir, shards, tensors: BTreeMap::new(), skipped: Vec::new() };
        let mut experts: BTreeMap<String, BTreeMap<(usize, ExpertProj), Part>> = BTreeMap::new();
        for (key, shard) in stored {
            let Some(logical) = logical_name(&key) else {
                ck.skipped.push(key);
                continue;
            };
            if let Some((prefix, e, proj)) = split_expert_key(logical) {
                experts.entry(prefix.to_string()).or_default().insert((e, proj), Part { shard, key });
                continue;
            }
            let logical = logical.to_string();
            let shape = ck.shards[shard].info(&key).expect("key from this shard").shape.clone();
            ck.insert(logical, LogicalTensor { shape, parts: vec![Part { shard, key }] })?;
        }
        for (prefix, mats) in experts {
            ck.insert_per_expert(&prefix, mats)?;
        }
        Ok(ck)
    }

    fn insert(&mut self, logical: String, tensor: LogicalTensor) -> Result<()> {
        if let Some(old) = self.tensors.get(&logical) {
            return Err(
                self.error(format!("keys {} and {} both map to the logical tensor {logical}", old.parts[0].key, tensor.parts[0].key))
            );
        }
        self.tensors.insert(logical, tensor);
        Ok(())
    }

    /// Builds `{prefix}.gate_up_proj` and `{prefix}.down_proj` from per-expert matrices.
    fn insert_per_expert(&mut self, prefix: &str, mats: BTreeMap<(usize, ExpertProj), Part>) -> Result<()> {
        let n_experts = mats.keys().map(|(e, _)| e + 1).max().unwrap_or(0);
        let any_key = mats.values().next().map(|p| p.key.clone()).unwrap_or_default();
        let key_prefix = &any_key[..any_key.find(prefix).map_or(0, |i| i + prefix.len())];
        let shape_of = |e: usize, proj: ExpertProj| -> Result<(Part, Vec<usize>)> {
            let part = mats.get(&(e, proj)).cloned().ok_or_else(|| {
                let name = match proj {
                    ExpertProj::Gate => "gate",
                    ExpertProj::Up => "up",
                    ExpertProj::Down => "down",
                };
                self.error(format!("per-expert tensor {key_prefix}.{e}.{name}_proj.weight is missing ({n_experts} experts)"))
            })?;
            let shape = self.shards[part.shard].info(&part.key).expect("key from this shard").shape.clone();
            Ok((part, shape))
        };
        let mut gate_up = Vec::with_capacity(2 * n_experts);
        let mut down = Vec::with_capacity(n_experts);
        let mut dims: Option<(usize, usize)> = None;
        for e in 0..n_experts {
            let (g, gs) = shape_of(e, ExpertProj::Gate)?;
            let (u, us) = shape_of(e, ExpertProj::Up)?;
            let (d, ds) = shape_of(e, ExpertProj::Down)?;
            let (i, h) = *dims.get_or_insert(if gs.len() == 2 { (gs[0], gs[1]) } else { (0, 0) });
            for (part, shape, want) in [(&g, &gs, [i, h]), (&u, &us, [i, h]), (&d, &ds, [h, i])] {
                if shape.as_slice() != want.as_slice() {
                    return Err(self.error(format!("per-expert tensor {} has shape {shape:?}, expected {want:?} like expert 0", part.key)));
                }
            }
            gate_up.extend([g, u]);
            down.push(d);
        }
        let (i, h) = dims.unwrap_or((0, 0));
        self.insert(format!("{prefix}.gate_up_proj"), LogicalTensor { shape: vec![n_experts, 2 * i, h], parts: gate_up })?;
        self.insert(format!("{prefix}.down_proj"), LogicalTensor { shape: vec![n_experts, h, i], parts: down })
    }

    fn error(&self, message: String) -> Error {
        Error::checkpoint(self.dir.display().to_string(), message)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn shards(&self) -> &[SafetensorsFile] {
        &self.shards
    }

    /// Advises the OS of the access pattern for every shard.
    pub fn advise(&self, access: Access) {
        for s in &self.shards {
            s.advise(access);
        }
    }

    /// Logical tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn get(&self, name: &str) -> Option<&LogicalTensor> {
        self.tensors.get(name)
    }

    /// Stored keys that were skipped (vision tower, MTP head).
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    fn lookup(&self, name: &str) -> Result<&LogicalTensor> {
        self.tensors.get(name).ok_or_else(|| self.error(format!("no tensor named {name}")))
    }

    /// Zero-copy views of a logical tensor's parts, in order; their elements concatenated are the
    /// logical tensor's elements in row-major order.
    pub fn parts(&self, name: &str) -> Result<Vec<TensorRef<'_>>> {
        self.lookup(name)?.parts.iter().map(|p| self.shards[p.shard].tensor(&p.key)).collect()
    }

    /// A zero-copy view of a logical tensor stored as one tensor.
    pub fn tensor(&self, name: &str) -> Result<TensorRef<'_>> {
        let t = self.lookup(name)?;
        match t.parts.as_slice() {
            [p] => self.shards[p.shard].tensor(&p.key),
            _ => Err(self.error(format!("{name} is stored as {} per-expert tensors; use parts() or experts()", t.parts.len()))),
        }
    }

    /// The per-expert matrices of `{block}.experts` (e.g. `layers.0.mlp.experts`), from either layout.
    pub fn experts(&self, block: &str) -> Result<Vec<ExpertMats<'_>>> {
        let gate_up_name = format!("{block}.gate_up_proj");
        let down_name = format!("{block}.down_proj");
        let (gu, dn) = (self.lookup(&gate_up_name)?, self.lookup(&down_name)?);
        if gu.shape.len() != 3 || gu.shape[1] % 2 != 0 {
            return Err(self.error(format!("{gate_up_name} has shape {:?}, expected (E, 2*I, H)", gu.shape)));
        }
        let (e, i, h) = (gu.shape[0], gu.shape[1] / 2, gu.shape[2]);
        if dn.shape != [e, h, i] {
            return Err(self.error(format!("{down_name} has shape {:?}, expected [{e}, {h}, {i}]", dn.shape)));
        }
        let (gate_up, down) = (self.parts(&gate_up_name)?, self.parts(&down_name)?);
        Ok(match (gate_up.as_slice(), down.as_slice()) {
            ([gu], [dn]) => (0..e)
                .map(|x| {
                    let g = gu.index0(x);
                    ExpertMats { gate: g.narrow0(0, i), up: g.narrow0(i, i), down: dn.index0(x) }
                })
                .collect(),
            _ => {
                gate_up.chunks_exact(2).zip(down).map(|(gu, dn)| ExpertMats { gate: gu[0].clone(), up: gu[1].clone(), down: dn }).collect()
            }
        })
    }
}
