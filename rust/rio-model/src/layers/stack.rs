//! What both models do around their own layers: open a checkpoint folder, and run the decoder-layer
//! loop between their [`LmEnds`] (the input rows of every sequence stacked into one `[N, H]`
//! matrix, each layer over all of them, then the caches moved on; spec section 1).
use std::path::Path;
use std::sync::Arc;

use rio_core::{Error, Result};

use super::{Input, LmEnds, Loader, Precision};
use crate::cache::{LayerCache, ModelCache};
use crate::config::GenerationConfig;
use crate::Checkpoint;

/// A checkpoint folder opened for a model to load: its `config.json` read by `read_config`, its
/// generation config, and a loader of its weights computing in `dtype` (see [`Precision::parse`]).
pub fn open_folder<C>(dir: &Path, dtype: &str, read_config: impl FnOnce(&Path) -> Result<C>) -> Result<(Loader, C, GenerationConfig)> {
    if !dir.is_dir() {
        return Err(Error::checkpoint(dir.display().to_string(), "no such checkpoint folder"));
    }
    let config = read_config(dir)?;
    let generation = GenerationConfig::from_dir(dir)?;
    let ck = Arc::new(Checkpoint::open(dir)?);
    let precision = Precision::parse(dtype, &ck)?;
    Ok((Loader::new(ck, precision), config, generation))
}

/// Runs `layers` over the rows of every input, sequence b continuing `caches[b]`; returns the
/// final hidden rows `[N, H]` (before the final norm) and the row count of each input.
/// `fits` says whether a cache was made for this model; `layer_forward` runs one layer over
/// `x [N, H]` given the row counts and that layer's cache of each sequence.
pub fn run_layers<L: Sync>(
    ends: &LmEnds,
    layers: &[L],
    inputs: &[Input<'_>],
    caches: &mut [&mut ModelCache],
    fits: impl Fn(&ModelCache) -> bool,
    layer_forward: impl Fn(&L, &mut [f32], &[usize], Vec<&mut LayerCache>) -> Result<()> + Sync,
) -> Result<(Vec<f32>, Vec<usize>)> {
    if inputs.len() != caches.len() || inputs.is_empty() {
        return Err(Error::value("caches", format!("{} inputs need as many caches, got {}", inputs.len(), caches.len())));
    }
    if caches.iter().any(|c| !fits(c)) {
        return Err(Error::value("cache", "was made for a model of other layers or sizes; use this model's new_cache()"));
    }
    let h = ends.hidden_size();
    let mut x = Vec::new();
    let mut lens = Vec::with_capacity(inputs.len());
    for input in inputs {
        let rows = ends.input_rows(*input)?;
        lens.push(rows.len() / h);
        x.extend(rows);
    }
    rio_cpu::threads::pool().install(|| -> Result<()> {
        for (l, layer) in layers.iter().enumerate() {
            layer_forward(layer, &mut x, &lens, caches.iter_mut().map(|c| &mut c.layers[l]).collect())?;
        }
        Ok(())
    })?;
    for (cache, &len) in caches.iter_mut().zip(&lens) {
        cache.advance(len);
    }
    Ok((x, lens))
}
