//! rio-tokenizer: the tokenizer and chat template of a Hugging Face checkpoint folder.
//!
//! - `tokenizer.json` is loaded with the HF `tokenizers` crate itself (the library behind the
//!   Python `tokenizers` package), so encoding and decoding match it token for token;
//! - `tokenizer_config.json` names the special tokens (bos/eos/pad/unk) and may hold the chat template,
//! - [`chat`]: the chat template (`chat_template.jinja` first, else `tokenizer_config.json`'s
//!   `chat_template`), rendered by minijinja in the environment transformers gives its templates,
//! - [`stream`]: incremental detokenization for streaming (text deltas never split a character),
//! - [`train`]: a byte-level BPE trainer for synthetic checkpoints (`rio-rt demo`).
pub mod chat;
mod config;
pub mod stream;
pub mod train;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rio_core::{Error, Result};

pub use chat::{map_value, ChatTemplate, Value};
pub use stream::IncrementalDecoder;

pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
pub const CHAT_TEMPLATE_FILE: &str = "chat_template.jinja";

/// The tokens that open and close a reasoning block (Qwen3 / Qwen3.5).
pub const THINK_TOKEN: &str = "<think>";
pub const END_THINK_TOKEN: &str = "</think>";

/// A special token named by `tokenizer_config.json`: its text and its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedToken {
    pub text: String,
    pub id: u32,
}

/// The special tokens of a tokenizer. `bos`/`eos`/`pad`/`unk` come from `tokenizer_config.json`;
/// `think`/`end_think` are the ids of `<think>`/`</think>` when the vocabulary has them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos: Option<NamedToken>,
    pub eos: Option<NamedToken>,
    pub pad: Option<NamedToken>,
    pub unk: Option<NamedToken>,
    pub think: Option<u32>,
    pub end_think: Option<u32>,
}

struct Inner {
    hf: tokenizers::Tokenizer,
    dir: PathBuf,
    special: SpecialTokens,
    template: Option<ChatTemplate>,
    /// `clean_up_tokenization_spaces` of `tokenizer_config.json` (transformers applies it in decode).
    clean_up_spaces: bool,
}

/// A checkpoint's tokenizer. Cloning is cheap (shared).
#[derive(Clone)]
pub struct Tokenizer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("dir", &self.inner.dir)
            .field("vocab_size", &self.vocab_size())
            .field("chat_template", &self.inner.template.is_some())
            .finish()
    }
}

impl Tokenizer {
    /// Loads the tokenizer of a checkpoint folder; `Ok(None)` when it has no `tokenizer.json`.
    /// A broken `tokenizer.json` is a checkpoint error, a broken `tokenizer_config.json` or chat
    /// template a config error; each names its file.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Option<Tokenizer>> {
        let dir = dir.as_ref();
        let path = dir.join(TOKENIZER_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let shown = path.display().to_string();
        let bytes = std::fs::read(&path).map_err(|e| Error::checkpoint(&shown, format!("cannot read: {e}")))?;
        let hf = tokenizers::Tokenizer::from_bytes(&bytes)
            .map_err(|e| Error::checkpoint(&shown, format!("not a valid tokenizers JSON file: {e}")))?;

        let config = config::TokenizerConfig::from_dir(dir)?;
        let config_shown = dir.join(TOKENIZER_CONFIG_FILE).display().to_string();
        let named = |field: &str, text: &Option<String>| -> Result<Option<NamedToken>> {
            let Some(text) = text else { return Ok(None) };
            let id = hf
                .token_to_id(text)
                .ok_or_else(|| Error::config(&config_shown, format!("{field} {text:?} is not in the vocabulary of {TOKENIZER_FILE}")))?;
            Ok(Some(NamedToken { text: text.clone(), id }))
        };
        let special = SpecialTokens {
            bos: named("bos_token", &config.bos_token)?,
            eos: named("eos_token", &config.eos_token)?,
            pad: named("pad_token", &config.pad_token)?,
            unk: named("unk_token", &config.unk_token)?,
            think: hf.token_to_id(THINK_TOKEN),
            end_think: hf.token_to_id(END_THINK_TOKEN),
        };

        // transformers reads chat_template.jinja in preference to the config's copy.
        let template_path = dir.join(CHAT_TEMPLATE_FILE);
        let template = if template_path.is_file() {
            let shown = template_path.display().to_string();
            let source = std::fs::read_to_string(&template_path).map_err(|e| Error::config(&shown, format!("cannot read: {e}")))?;
            Some(ChatTemplate::new(source, &shown)?)
        } else {
            match config.chat_template {
                Some(source) => Some(ChatTemplate::new(source, &format!("{config_shown} (chat_template)"))?),
                None => None,
            }
        };
        let inner = Inner { hf, dir: dir.to_path_buf(), special, template, clean_up_spaces: config.clean_up_tokenization_spaces };
        Ok(Some(Tokenizer { inner: Arc::new(inner) }))
    }

    /// The folder it was loaded from.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Token ids of `text`; `add_special_tokens` applies the tokenizer's post-processor (e.g. a
    /// BOS token), as in `tokenizers`' `encode`.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let encoding = self.inner.hf.encode(text, add_special_tokens).map_err(|e| Error::value("text", e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The text of `ids`. Ids outside the vocabulary are skipped, as `tokenizers` does (a model's
    /// embedding table is often padded past the tokenizer's vocabulary).
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let text = self.inner.hf.decode(ids, skip_special_tokens).map_err(|e| Error::value("ids", e.to_string()))?;
        Ok(if self.inner.clean_up_spaces { clean_up_tokenization(&text) } else { text })
    }

    /// A streaming decoder: push ids one at a time, get text deltas.
    pub fn decoder(&self, skip_special_tokens: bool) -> IncrementalDecoder {
        IncrementalDecoder::new(self.clone(), skip_special_tokens)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.hf.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.hf.id_to_token(id)
    }

    /// Number of tokens, added tokens included (`len(tokenizer)` in transformers).
    pub fn vocab_size(&self) -> usize {
        self.inner.hf.get_vocab_size(true)
    }

    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.inner.special
    }

    /// Whether `id` is a special added token (skipped by `decode(.., skip_special_tokens=true)`).
    pub fn is_special(&self, id: u32) -> bool {
        self.inner.hf.get_added_tokens_decoder().get(&id).is_some_and(|t| t.special)
    }

    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.inner.template.as_ref()
    }

    /// Renders a conversation with the checkpoint's chat template, as transformers'
    /// `apply_chat_template(messages, tokenize=False, add_generation_prompt=..., enable_thinking=...)`
    /// does. `messages` is a list of maps (`role`, `content`, optionally `reasoning_content`,
    /// `tool_calls`, ...); `enable_thinking: None` leaves the template's own default; `extra` adds
    /// more template variables (`tools`, `documents`, ...).
    pub fn apply_chat_template(
        &self,
        messages: &Value,
        add_generation_prompt: bool,
        enable_thinking: Option<bool>,
        extra: &[(String, Value)],
    ) -> Result<String> {
        let template = self.chat_template().ok_or_else(|| {
            Error::value(
                "messages",
                format!(
                    "the tokenizer in {} has no chat template (no {CHAT_TEMPLATE_FILE} and no chat_template in {TOKENIZER_CONFIG_FILE})",
                    self.inner.dir.display()
                ),
            )
        })?;
        let special = &self.inner.special;
        let mut vars: Vec<(String, Value)> =
            [("bos_token", &special.bos), ("eos_token", &special.eos), ("unk_token", &special.unk), ("pad_token", &special.pad)]
                .into_iter()
                .filter_map(|(name, token)| token.as_ref().map(|t| (name.to_string(), Value::from(t.text.clone()))))
                .collect();
        if let Some(on) = enable_thinking {
            vars.push(("enable_thinking".to_string(), Value::from(on)));
        }
        vars.extend(extra.iter().cloned());
        template.render(messages, add_generation_prompt, &vars)
    }
}

/// transformers' `clean_up_tokenization`: removes the space before punctuation and English
/// contractions that word-level tokenizers insert.
fn clean_up_tokenization(text: &str) -> String {
    [
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ]
    .iter()
    .fold(text.to_string(), |acc, (from, to)| acc.replace(from, to))
}
