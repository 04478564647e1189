//! Training a Qwen-style byte-level BPE tokenizer with the `tokenizers` crate's `BpeTrainer`, for
//! synthetic checkpoints (`rio-rt demo`) that should carry a real-looking `tokenizer.json`.
//!
//! The pipeline is Qwen2/Qwen3's: NFC normalisation, the Qwen split regex, then byte-level
//! mapping; every byte is in the initial alphabet, so any text encodes without an unknown token.
use rio_core::{Error, Result};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, SplitDelimiterBehavior, TokenizerBuilder};

/// The pre-tokenizer split of Qwen2/Qwen3's `tokenizer.json`.
pub const QWEN_SPLIT_REGEX: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A token added after the learned vocabulary (ids follow it, in the order given).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtraToken {
    pub text: String,
    /// Special tokens are dropped by `decode(.., skip_special_tokens=true)`; Qwen's `<think>`
    /// and `</think>` are not special.
    pub special: bool,
}

/// Trains byte-level BPE on `texts` up to `vocab_size` tokens (fewer if the texts run out of
/// pairs seen `min_frequency` times), appends `extra` tokens, and returns the `tokenizer.json` text.
pub fn train_byte_level_bpe(texts: &[String], vocab_size: usize, min_frequency: u64, extra: &[ExtraToken]) -> Result<String> {
    let alphabet = ByteLevel::alphabet();
    if vocab_size < alphabet.len() {
        return Err(Error::value("vocab_size", format!("must be at least {} (the byte alphabet), got {vocab_size}", alphabet.len())));
    }
    if let Some(empty) = extra.iter().find(|t| t.text.is_empty()) {
        return Err(Error::value("extra_tokens", format!("empty token {empty:?}")));
    }
    let failed = |what: &str, e: tokenizers::Error| Error::value("texts", format!("{what}: {e}"));
    let split = Split::new(SplitPattern::Regex(QWEN_SPLIT_REGEX.to_string()), SplitDelimiterBehavior::Isolated, false)
        .map_err(|e| failed("split regex", e))?;
    let pre_tokenizer =
        Sequence::new(vec![PreTokenizerWrapper::Split(split), PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, false))]);
    let mut tokenizer = TokenizerBuilder::<BPE, NormalizerWrapper, PreTokenizerWrapper, PostProcessorWrapper, DecoderWrapper>::new()
        .with_model(BPE::default())
        .with_normalizer(Some(NFC.into()))
        .with_pre_tokenizer(Some(pre_tokenizer.into()))
        .with_post_processor(Some(ByteLevel::new(false, false, false).into()))
        .with_decoder(Some(ByteLevelDecoder::new(false, false, false).into()))
        .build()
        .map_err(|e| failed("building the tokenizer", e))?;
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(min_frequency)
        .show_progress(false)
        .initial_alphabet(alphabet.into_iter().collect())
        .build();
    tokenizer.train(&mut trainer, texts.iter()).map_err(|e| failed("training", e))?;
    // Qwen's added tokens match literally (not normalised) and only as whole tokens.
    let added = |t: &ExtraToken| AddedToken::from(t.text.clone(), t.special).normalized(false);
    for token in extra {
        if token.special {
            tokenizer.add_special_tokens([added(token)]).map_err(|e| failed("adding special tokens", e))?;
        } else {
            tokenizer.add_tokens([added(token)]).map_err(|e| failed("adding tokens", e))?;
        }
    }
    tokenizers::Tokenizer::from(tokenizer).to_string(true).map_err(|e| failed("serialising", e))
}
