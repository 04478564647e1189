//! Stored keys to logical names (spec section 5).
//!
//! The text tower is stored under `model.language_model.` (multimodal releases, and whatever
//! transformers 5 writes) or `model.` (text-only releases); both map to the same logical name
//! without the prefix. `lm_head.weight` stays as it is. The vision tower (`model.visual.*`) and
//! the multi-token-prediction head (`mtp.*`) are not part of text decoding and are skipped.

const TEXT_PREFIXES: [&str; 2] = ["model.language_model.", "model."];
const SKIPPED_PREFIXES: [&str; 3] = ["model.visual.", "model.language_model.visual.", "mtp."];

/// The logical name of a stored key, or `None` for a tensor rio_rt skips.
pub fn logical_name(key: &str) -> Option<&str> {
    if SKIPPED_PREFIXES.iter().any(|p| key.starts_with(p)) {
        return None;
    }
    Some(TEXT_PREFIXES.iter().find_map(|p| key.strip_prefix(p)).unwrap_or(key))
}

/// One matrix of a per-expert checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExpertProj {
    Gate,
    Up,
    Down,
}

/// Splits `{block}.experts.{e}.{gate,up,down}_proj.weight` into (`{block}.experts`, e, projection).
pub fn split_expert_key(logical: &str) -> Option<(&str, usize, ExpertProj)> {
    let rest = logical.strip_suffix("_proj.weight")?;
    let (head, proj) = rest.rsplit_once('.')?;
    let proj = match proj {
        "gate" => ExpertProj::Gate,
        "up" => ExpertProj::Up,
        "down" => ExpertProj::Down,
        _ => return None,
    };
    let (prefix, expert) = head.rsplit_once('.')?;
    if !prefix.ends_with(".experts") && prefix != "experts" {
        return None;
    }
    if expert.is_empty() || !expert.bytes().all(|b| b.is_ascii_digit()) || (expert.len() > 1 && expert.starts_with('0')) {
        return None;
    }
    Some((prefix, expert.parse().ok()?, proj))
}

/// The decoder layer a logical name belongs to (`layers.{L}.…`).
pub fn layer_of(logical: &str) -> Option<usize> {
    let rest = logical.strip_prefix("layers.")?;
    let (idx, _) = rest.split_once('.')?;
    idx.parse().ok()
}

/// The name with its layer index removed (`mlp.experts.down_proj`), for grouping by tensor type.
pub fn tensor_kind(logical: &str) -> &str {
    match logical.strip_prefix("layers.").and_then(|r| r.split_once('.')) {
        Some((idx, kind)) if idx.parse::<usize>().is_ok() => kind,
        _ => logical,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_prefixes_map_to_one_name_and_other_towers_are_skipped() {
        assert_eq!(logical_name("model.language_model.layers.0.mlp.gate.weight"), Some("layers.0.mlp.gate.weight"));
        assert_eq!(logical_name("model.layers.0.mlp.gate.weight"), Some("layers.0.mlp.gate.weight"));
        assert_eq!(logical_name("lm_head.weight"), Some("lm_head.weight"));
        assert_eq!(logical_name("model.visual.blocks.0.attn.qkv.weight"), None);
        assert_eq!(logical_name("mtp.layers.0.mlp.gate.weight"), None);
    }

    #[test]
    fn expert_keys_split_and_shared_expert_does_not() {
        assert_eq!(split_expert_key("layers.3.mlp.experts.17.up_proj.weight"), Some(("layers.3.mlp.experts", 17, ExpertProj::Up)));
        assert_eq!(split_expert_key("layers.3.mlp.shared_expert.up_proj.weight"), None);
        assert_eq!(split_expert_key("layers.3.mlp.experts.gate_up_proj"), None);
        assert_eq!(split_expert_key("layers.3.mlp.experts.01.up_proj.weight"), None);
        assert_eq!(split_expert_key("layers.3.mlp.experts.x.up_proj.weight"), None);
    }

    #[test]
    fn layers_and_kinds() {
        assert_eq!(layer_of("layers.12.mlp.experts.down_proj"), Some(12));
        assert_eq!(layer_of("embed_tokens.weight"), None);
        assert_eq!(tensor_kind("layers.12.mlp.experts.down_proj"), "mlp.experts.down_proj");
        assert_eq!(tensor_kind("lm_head.weight"), "lm_head.weight");
    }
}
