//! Incremental detokenization for streaming.
//!
//! Decoding token by token is wrong twice over: a byte-level token can end inside a multi-byte
//! UTF-8 character (decoding it alone gives U+FFFD), and some decoders change a token's text by
//! what precedes it (SentencePiece drops the first token's leading space). So each new token is
//! decoded together with a few tokens before it (from `prefix`), the text already emitted for
//! those is cut off, and nothing is emitted while the text ends in an unfinished character
//! (the method of text-generation-inference and vLLM).
use rio_core::Result;

use crate::Tokenizer;

/// Streams the text of a growing id sequence as deltas. The deltas concatenated, followed by
/// [`IncrementalDecoder::finish`], give the text of the whole sequence.
#[derive(Debug)]
pub struct IncrementalDecoder {
    tokenizer: Tokenizer,
    skip_special_tokens: bool,
    ids: Vec<u32>,
    /// Start of the ids decoded for context; their text up to `read` is already emitted.
    prefix: usize,
    /// End of the ids whose text has been emitted.
    read: usize,
}

impl IncrementalDecoder {
    pub fn new(tokenizer: Tokenizer, skip_special_tokens: bool) -> Self {
        IncrementalDecoder { tokenizer, skip_special_tokens, ids: Vec::new(), prefix: 0, read: 0 }
    }

    /// Adds one id; returns the text it completes (empty while a character is unfinished).
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.ids.push(id);
        let emitted = self.tokenizer.decode(&self.ids[self.prefix..self.read], self.skip_special_tokens)?;
        let text = self.tokenizer.decode(&self.ids[self.prefix..], self.skip_special_tokens)?;
        if text.len() <= emitted.len() || text.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        match text.get(emitted.len()..).filter(|_| text.starts_with(&emitted)) {
            Some(delta) => {
                let delta = delta.to_string();
                self.prefix = self.read;
                self.read = self.ids.len();
                Ok(delta)
            }
            None => Ok(String::new()),
        }
    }

    /// The text held back (an unfinished character at the end, as U+FFFD); call at the end.
    pub fn finish(&mut self) -> Result<String> {
        let emitted = self.tokenizer.decode(&self.ids[self.prefix..self.read], self.skip_special_tokens)?;
        let text = self.tokenizer.decode(&self.ids[self.prefix..], self.skip_special_tokens)?;
        self.prefix = self.read;
        self.read = self.ids.len();
        Ok(text.strip_prefix(emitted.as_str()).unwrap_or_default().to_string())
    }

    /// Every id pushed so far.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }
}
