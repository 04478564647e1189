//! The contract between the decode loop ([`crate::generate`]) and whatever decides what a
//! sequence records and feeds next. The loop owns the model, the caches, stop conditions and
//! batching; a [`Controller`] owns one sequence's decoding policy (explicit, SwiReasoning, Soft
//! Thinking) and its state (mode, reference entropy, counters, injection queue).
use rio_core::{Result, TensorRef};

use crate::sampling::Sampler;
use crate::trace::TraceRow;

/// What a sequence feeds the model at its next position.
#[derive(Clone, Debug, PartialEq)]
pub enum NextInput {
    /// A hard token: fed as its id (bit-identical to feeding its embedding row).
    Token(u32),
    /// An f32 embedding row `[H]` (a soft embedding, possibly mixed with special-token rows).
    Embedding(Vec<f32>),
}

/// Why a sequence ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence token was recorded (in any mode).
    Eos,
    /// A stop token id (other than EOS) was recorded.
    StopToken,
    /// The decoded text reached a stop string.
    StopString,
    /// `max_new_tokens` were recorded.
    Length,
    /// A controller ended it (SwiReasoning's answer budget after termination injection).
    Budget,
    /// The caller's per-step callback stopped it.
    Callback,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Eos => "eos",
            FinishReason::StopToken => "stop_token",
            FinishReason::StopString => "stop_string",
            FinishReason::Length => "length",
            FinishReason::Budget => "budget",
            FinishReason::Callback => "callback",
        }
    }
}

/// Everything a controller sees at one step of one sequence.
pub struct StepContext<'a> {
    /// 0 for the logits of the prompt's last position (prefill), then 1, 2, ...
    pub step: usize,
    /// The generation's token budget (SwiReasoning anneals α/β over it).
    pub max_new_tokens: usize,
    /// Raw f32 logits `[V]` of this sequence's last position (no penalties, no temperature).
    pub logits: &'a [f32],
    /// The model's input embedding matrix `[V, H]` (stored dtype), for soft embeddings.
    pub embeddings: TensorRef<'a>,
    /// This sequence's sampler: its parameters, seeded RNG and token history (penalties).
    pub sampler: &'a mut Sampler,
}

/// A controller's answer for one step.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The token recorded in the output (after any injection override).
    pub token: u32,
    /// Natural-log probability of `token` under the distribution it was chosen from.
    pub logprob: f32,
    /// What the sequence feeds at its next position.
    pub next: NextInput,
    /// Set when the controller ends the sequence itself (answer budget spent).
    pub finish: Option<FinishReason>,
    /// The step's trace record (reasoning controllers; `None` for plain decoding).
    pub trace: Option<TraceRow>,
}

/// A request from the caller's per-step callback, applied before the next step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Steer {
    /// Flip latent ⇄ explicit now (resets the block: stay counter and reference entropy).
    ForceSwitch,
    /// End the sequence now with [`FinishReason::Callback`].
    Stop,
}

/// One sequence's decoding policy and state.
pub trait Controller: Send {
    /// Chooses the token to record and the next input from this step's logits.
    fn step(&mut self, cx: StepContext<'_>) -> Result<Decision>;
    /// `"latent"` or `"explicit"`: the mode the next step starts in.
    fn mode(&self) -> &'static str {
        "explicit"
    }
    /// Applies a caller's steering request; controllers without modes reject ForceSwitch.
    fn steer(&mut self, steer: Steer) -> Result<()> {
        match steer {
            Steer::Stop => Ok(()),
            Steer::ForceSwitch => {
                Err(rio_core::Error::value("steer", "force_switch needs a reasoning mode (SwiReasoning or SoftThinking)"))
            }
        }
    }
}

/// Plain decoding: sample with the sequence's [`Sampler`] and feed the token back.
#[derive(Clone, Copy, Debug, Default)]
pub struct Explicit;

impl Controller for Explicit {
    fn step(&mut self, cx: StepContext<'_>) -> Result<Decision> {
        let sampled = cx.sampler.sample(cx.logits);
        Ok(Decision { token: sampled.token, logprob: sampled.logprob, next: NextInput::Token(sampled.token), finish: None, trace: None })
    }
}
