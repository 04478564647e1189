//! What every causal LM puts around its decoder layers (spec section 1): the token embedding at
//! the input, the final norm and lm_head at the output, and the stop tokens.
use rio_core::{Error, Result, TensorRef};

use super::{Linear, Loader, Precision, Weight};
use crate::config::GenerationConfig;

/// What a forward step consumes: token ids, or input embeddings `[T, H]` (soft embeddings
/// included) used in place of the embedding lookup (sections 1 and 10).
#[derive(Clone, Copy, Debug)]
pub enum Input<'a> {
    Tokens(&'a [u32]),
    Embeddings(&'a [f32]),
}

/// `embed_tokens [V, H]` and `lm_head [V, H]` (tied to the embedding when the config says so
/// and the checkpoint has no `lm_head.weight`), read in place, and the final norm's weight `[H]`.
#[derive(Debug)]
pub struct LmEnds {
    vocab_size: usize,
    hidden_size: usize,
    precision: Precision,
    embed_tokens: Weight,
    norm: Vec<f32>,
    lm_head: Linear,
}

impl LmEnds {
    pub fn load(w: &Loader, vocab_size: usize, hidden_size: usize, tie_word_embeddings: bool) -> Result<Self> {
        let (v, h) = (vocab_size, hidden_size);
        let embed_tokens = w.weight("embed_tokens.weight", &[v, h])?;
        let lm_head = if tie_word_embeddings && w.checkpoint().get("lm_head.weight").is_none() {
            Linear::from_weight(embed_tokens.clone())
        } else {
            Linear::load(w, "lm_head.weight", v, h)?
        };
        Ok(LmEnds { vocab_size, hidden_size, precision: w.precision, norm: w.vector("norm.weight", &[h])?, embed_tokens, lm_head })
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden_size
    }

    /// The embedding matrix `[V, H]` in the dtype the model holds it (the checkpoint's, or bf16
    /// when a bf16 computation converted it).
    pub fn table(&self) -> TensorRef<'_> {
        self.embed_tokens.view().clone()
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
            out.resize((i + 1) * h, 0.0);
            self.embed_tokens.row_f32(row, &mut out[i * h..]);
        }
        Ok(out)
    }

    /// The hidden rows `[T, H]` a forward starts from: looked-up embeddings, or the given
    /// embeddings once checked (rounded to bf16 in bf16 precision, as a bf16 model holds its
    /// inputs). At least one row.
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
                let mut x = e.to_vec();
                self.precision.round(&mut x);
                x
            }
        };
        if x.is_empty() {
            return Err(Error::value("ids", "needs at least one token"));
        }
        Ok(x)
    }

    /// Logits `[n, V]` of the last `n = logits_to_keep` rows of `x [T, H]` (all T for 0, as
    /// transformers' `logits_to_keep`): `final_norm(rows, weight)` then lm_head, only for those
    /// rows (section 8). In bf16 the logits are bf16 values, as transformers returns them.
    pub fn logits(&self, x: &mut [f32], logits_to_keep: usize, final_norm: impl Fn(&mut [f32], &[f32])) -> Vec<f32> {
        let t = x.len() / self.hidden_size;
        let keep = if logits_to_keep == 0 { t } else { logits_to_keep.min(t) };
        let last = &mut x[(t - keep) * self.hidden_size..];
        final_norm(last, &self.norm);
        self.lm_head.forward(last, self.precision)
    }

    /// The logits `[B, V]` of the last row of each sequence of a batch `x [N, H]` that holds
    /// `lens[b]` rows of sequence b in turn; `final_norm` as in [`LmEnds::logits`].
    pub fn logits_of_last_rows(&self, x: &[f32], lens: &[usize], final_norm: impl Fn(&mut [f32], &[f32])) -> Vec<f32> {
        let h = self.hidden_size;
        let mut picked = Vec::with_capacity(lens.len() * h);
        let mut end = 0;
        for &len in lens {
            end += len;
            picked.extend_from_slice(&x[(end - 1) * h..end * h]);
        }
        final_norm(&mut picked, &self.norm);
        self.lm_head.forward(&picked, self.precision)
    }
}

/// The tokens that end a generation: `generation_config.json`'s, then `config.json`'s.
pub fn eos_token_ids(generation: &GenerationConfig, config_eos: &[u32]) -> Vec<u32> {
    let mut ids = generation.eos_token_ids.clone();
    ids.extend(config_eos.iter().filter(|id| !generation.eos_token_ids.contains(id)));
    ids
}
