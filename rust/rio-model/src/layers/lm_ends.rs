//! What every causal LM puts around its decoder layers (spec section 1): the token embedding at
//! the input, the final norm and lm_head at the output, and the stop tokens.
use rio_core::{Error, Result, TensorRef};

use super::{load_f32, Linear};
use crate::config::GenerationConfig;
use crate::Checkpoint;

/// What a forward step consumes: token ids, or input embeddings `[T, H]` (soft embeddings
/// included) used in place of the embedding lookup (sections 1 and 10).
#[derive(Clone, Copy, Debug)]
pub enum Input<'a> {
    Tokens(&'a [u32]),
    Embeddings(&'a [f32]),
}

/// `embed_tokens [V, H]`, the final norm's weight `[H]` and `lm_head [V, H]` (tied to the
/// embedding when the config says so and the checkpoint has no `lm_head.weight`).
#[derive(Debug)]
pub struct LmEnds {
    vocab_size: usize,
    hidden_size: usize,
    embed_tokens: Vec<f32>,
    norm: Vec<f32>,
    lm_head: Linear,
}

impl LmEnds {
    pub fn load(ck: &Checkpoint, vocab_size: usize, hidden_size: usize, tie_word_embeddings: bool) -> Result<Self> {
        let (v, h) = (vocab_size, hidden_size);
        let embed_tokens = load_f32(ck, "embed_tokens.weight", &[v, h])?;
        let lm_head = if tie_word_embeddings && ck.get("lm_head.weight").is_none() {
            Linear::from_weight(embed_tokens.clone(), v, h)
        } else {
            Linear::load(ck, "lm_head.weight", v, h)?
        };
        Ok(LmEnds { vocab_size, hidden_size, norm: load_f32(ck, "norm.weight", &[h])?, embed_tokens, lm_head })
    }

    /// The embedding matrix `[V, H]`.
    pub fn table(&self) -> TensorRef<'_> {
        TensorRef::from_slice(&self.embed_tokens, &[self.vocab_size, self.hidden_size]).expect("embed_tokens holds V·H values")
    }

    /// The embedding rows of `tokens`, `[T, H]`.
    pub fn embed(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        let h = self.hidden_size;
        let mut out = Vec::with_capacity(tokens.len() * h);
        for (i, &tok) in tokens.iter().enumerate() {
            let row = tok as usize;
            if row >= self.vocab_size {
                return Err(Error::value("ids", format!("token id {tok} at index {i} is outside the vocabulary of {}", self.vocab_size)));
            }
            out.extend_from_slice(&self.embed_tokens[row * h..(row + 1) * h]);
        }
        Ok(out)
    }

    /// The hidden rows `[T, H]` a forward starts from: looked-up embeddings, or the given
    /// embeddings once checked. At least one row.
    pub fn input_rows(&self, input: Input<'_>) -> Result<Vec<f32>> {
        let h = self.hidden_size;
        let x = match input {
            Input::Tokens(tokens) => self.embed(tokens)?,
            Input::Embeddings(e) => {
                if e.len() % h != 0 {
                    return Err(Error::value("input_embeds", format!("{} values do not form rows of hidden_size {h}", e.len())));
                }
                if let Some(i) = e.iter().position(|v| !v.is_finite()) {
                    return Err(Error::value("input_embeds", format!("element {i} is {} (NaN or infinite)", e[i])));
                }
                e.to_vec()
            }
        };
        if x.is_empty() {
            return Err(Error::value("ids", "needs at least one token"));
        }
        Ok(x)
    }

    /// Logits `[n, V]` of the last `n = logits_to_keep` rows of `x [T, H]` (all T for 0, as
    /// transformers' `logits_to_keep`): `final_norm(rows, weight)` then lm_head, only for those
    /// rows (section 8).
    pub fn logits(&self, x: &mut [f32], logits_to_keep: usize, final_norm: impl Fn(&mut [f32], &[f32])) -> Vec<f32> {
        let t = x.len() / self.hidden_size;
        let keep = if logits_to_keep == 0 { t } else { logits_to_keep.min(t) };
        let last = &mut x[(t - keep) * self.hidden_size..];
        final_norm(last, &self.norm);
        self.lm_head.forward(last)
    }
}

/// The tokens that end a generation: `generation_config.json`'s, then `config.json`'s.
pub fn eos_token_ids(generation: &GenerationConfig, config_eos: &[u32]) -> Vec<u32> {
    let mut ids = generation.eos_token_ids.clone();
    ids.extend(config_eos.iter().filter(|id| !generation.eos_token_ids.contains(id)));
    ids
}
