//! The decode loop over a batch of sequences (design.md, "One decode step"): prefill every prompt
//! in one batched forward, then per step let each sequence's [`Controller`] choose the recorded
//! token and the next input, check the stop conditions, report to the observer, drop finished
//! sequences (and their caches) and run the survivors' next inputs as one batched forward.
use rayon::prelude::*;
use rio_core::{Error, Result};
use rio_model::cache::ModelCache;
use rio_model::layers::Input;
use rio_model::CausalLm;

use crate::controller::{Controller, Explicit, FinishReason, NextInput, Steer, StepContext};
use crate::sampling::{Rng, Sampler, SamplingParams};
use crate::trace::{Trace, TraceRow};

/// One sequence to generate.
pub struct Request {
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
    pub controller: Box<dyn Controller>,
    /// Keep the controller's per-step trace rows in the output.
    pub trace: bool,
}

impl Request {
    /// Plain sampling (the [`Explicit`] controller), no trace.
    pub fn new(prompt: Vec<u32>, params: SamplingParams) -> Request {
        Request { prompt, params, controller: Box::new(Explicit), trace: false }
    }
}

/// What one request produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    /// The recorded tokens (an EOS or stop token that ended the sequence included).
    pub token_ids: Vec<u32>,
    /// Natural-log probability of each recorded token (see [`crate::sampling`]).
    pub logprobs: Vec<f32>,
    /// Per step, the `params.logprobs` most likely alternatives (empty when 0).
    pub top_logprobs: Vec<Vec<(u32, f32)>>,
    pub finish_reason: FinishReason,
    pub trace: Option<Trace>,
    /// The decoded text, a stop string and what follows it cut (only with a decoder).
    pub text: Option<String>,
}

/// Turns token ids into text (the tokenizer's decode, special tokens skipped).
pub type Decoder<'a> = &'a (dyn Fn(&[u32]) -> Result<String> + Sync);

/// Options shared by every request of one call.
#[derive(Clone, Copy, Default)]
pub struct GenerateOptions<'a> {
    /// Tokens that end a sequence; `None`: the model's (generation_config.json, then config.json).
    pub eos_token_ids: Option<&'a [u32]>,
    /// Needed for stop strings and for `Output::text` / event text deltas.
    pub decoder: Option<Decoder<'a>>,
}

/// One sequence's step, as the observer sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct StepEvent {
    /// The request's index in the call.
    pub request: usize,
    /// 0 for the token chosen from the prompt's last logits, then 1, 2, ...
    pub step: usize,
    pub token_id: u32,
    pub logprob: f32,
    /// New text since the previous event (only with a decoder). Text that could still become
    /// a stop string is held back until it cannot; the deltas of a sequence add up to its text.
    pub text_delta: Option<String>,
    /// Set on the sequence's last event.
    pub finish_reason: Option<FinishReason>,
    /// The mode the controller runs the next step in (`"explicit"` or `"latent"`).
    pub mode: &'static str,
    pub trace: Option<TraceRow>,
}

/// Sees every step of a generation (streaming, research callbacks) and may steer sequences.
pub trait Observer {
    /// Called once per step with the events of the sequences that ran it. Returns steering
    /// requests `(request index, Steer)` applied before the next step; an error ends the
    /// generation and is returned.
    fn on_step(&mut self, events: &[StepEvent]) -> Result<Vec<(usize, Steer)>>;
}

/// Generates every request; outputs are in request order.
pub fn generate(
    model: &dyn CausalLm,
    requests: Vec<Request>,
    options: &GenerateOptions<'_>,
    mut observer: Option<&mut dyn Observer>,
) -> Result<Vec<Output>> {
    let model_eos;
    let eos: &[u32] = match options.eos_token_ids {
        Some(ids) => ids,
        None => {
            model_eos = model.eos_token_ids();
            &model_eos
        }
    };
    let vocab = model.vocab_size();
    let mut active = Vec::with_capacity(requests.len());
    for (index, request) in requests.into_iter().enumerate() {
        active.push(Sequence::new(model, index, request, options.decoder.is_some())?);
    }
    let mut outputs: Vec<Option<Output>> = (0..active.len()).map(|_| None).collect();
    if active.is_empty() {
        return Ok(Vec::new());
    }

    // Prefill: every prompt, whatever its length, in one batched forward.
    let mut logits = forward_step(model, &mut active, Feed::Prompt)?;
    for step in 0.. {
        // Decide: each sequence's controller picks the token to record and the next input.
        let decisions: Vec<Result<Decided>> =
            active.par_iter_mut().zip(logits.par_chunks(vocab)).map(|(seq, row)| seq.decide(model, step, row)).collect();

        // Record, check the stop conditions, build the observer's events.
        let mut events = Vec::new();
        for (seq, decided) in active.iter_mut().zip(decisions) {
            let decided = decided?;
            let text_delta = seq.record(decided, eos, options.decoder)?;
            if observer.is_some() {
                events.push(seq.event(step, text_delta));
            }
        }
        if let Some(observer) = observer.as_deref_mut() {
            for (index, steer) in observer.on_step(&events)? {
                let Some(seq) = active.iter_mut().find(|s| s.index == index) else {
                    continue; // finished at an earlier step: nothing left to steer
                };
                match steer {
                    Steer::Stop => seq.finish = seq.finish.or(Some(FinishReason::Callback)),
                    Steer::ForceSwitch => seq.controller.steer(steer)?,
                }
            }
        }

        // Finished sequences leave the batch; their caches go with them.
        let (done, running): (Vec<Sequence>, Vec<Sequence>) = active.into_iter().partition(|s| s.finish.is_some());
        for seq in done {
            let index = seq.index;
            outputs[index] = Some(seq.into_output());
        }
        active = running;
        if active.is_empty() {
            break;
        }

        logits = forward_step(model, &mut active, Feed::Next)?;
    }
    Ok(outputs.into_iter().map(|o| o.expect("every sequence finishes before the loop ends")).collect())
}

/// What a sequence feeds at a step: its whole prompt (prefill) or its controller's next input.
#[derive(Clone, Copy)]
enum Feed {
    Prompt,
    Next,
}

/// One batched forward of every active sequence's `input`, continuing its cache; `[B, V]` logits.
fn forward_step(model: &dyn CausalLm, active: &mut [Sequence], feed: Feed) -> Result<Vec<f32>> {
    let (inputs, mut caches): (Vec<Input<'_>>, Vec<&mut ModelCache>) = active
        .iter_mut()
        .map(|Sequence { prompt, next, cache, .. }| {
            let input = match (feed, &*next) {
                (Feed::Prompt, _) => Input::Tokens(prompt),
                (Feed::Next, NextInput::Token(token)) => Input::Tokens(std::slice::from_ref(token)),
                (Feed::Next, NextInput::Embedding(row)) => Input::Embeddings(row),
            };
            (input, cache)
        })
        .unzip();
    model.forward_batch(&inputs, &mut caches)
}

/// A controller's decision plus what the loop reports with it.
struct Decided {
    token: u32,
    logprob: f32,
    next: NextInput,
    finish: Option<FinishReason>,
    trace: Option<TraceRow>,
    top_logprobs: Vec<(u32, f32)>,
}

/// One sequence in flight.
struct Sequence {
    index: usize,
    prompt: Vec<u32>,
    cache: ModelCache,
    sampler: Sampler,
    controller: Box<dyn Controller>,
    trace: Option<Trace>,
    /// The last step's trace row (for the observer, whether or not the trace is kept).
    last_trace: Option<TraceRow>,
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    top_logprobs: Vec<Vec<(u32, f32)>>,
    text: Option<TextState>,
    next: NextInput,
    finish: Option<FinishReason>,
}

impl Sequence {
    fn new(model: &dyn CausalLm, index: usize, request: Request, with_text: bool) -> Result<Sequence> {
        let Request { prompt, params, controller, trace } = request;
        let vocab = model.vocab_size();
        let field = |name: &str| format!("requests[{index}].{name}");
        params.validate().map_err(|e| match e {
            Error::Value { arg, message } => Error::value(field(&arg), message),
            other => other,
        })?;
        if prompt.is_empty() {
            return Err(Error::value(field("prompt"), "is empty (it needs at least one token)"));
        }
        if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= vocab) {
            return Err(Error::value(field("prompt"), format!("token id {bad} is out of range for a vocabulary of {vocab}")));
        }
        if !params.stop_strings.is_empty() && !with_text {
            return Err(Error::value(field("stop_strings"), "stop strings need a decoder (a tokenizer)"));
        }
        let seed = params.seed.unwrap_or_else(Rng::entropy_seed);
        let text = with_text.then(|| TextState::new(&params.stop_strings));
        let mut sampler = Sampler::new(params, seed);
        sampler.set_prompt(&prompt);
        Ok(Sequence {
            index,
            prompt,
            cache: model.new_cache(),
            sampler,
            controller,
            trace: trace.then(Trace::default),
            last_trace: None,
            tokens: Vec::new(),
            logprobs: Vec::new(),
            top_logprobs: Vec::new(),
            text,
            next: NextInput::Token(0),
            finish: None,
        })
    }

    fn decide(&mut self, model: &dyn CausalLm, step: usize, logits: &[f32]) -> Result<Decided> {
        let top_n = self.sampler.params().logprobs;
        let top_logprobs = self.sampler.top_logprobs(logits, top_n);
        let cx = StepContext {
            step,
            max_new_tokens: self.sampler.params().max_new_tokens,
            logits,
            embeddings: model.embedding_table(),
            sampler: &mut self.sampler,
        };
        let d = self.controller.step(cx)?;
        Ok(Decided { token: d.token, logprob: d.logprob, next: d.next, finish: d.finish, trace: d.trace, top_logprobs })
    }

    /// Records the decision and sets `finish` when a stop condition holds; returns the text
    /// delta (with a decoder).
    fn record(&mut self, d: Decided, eos: &[u32], decoder: Option<Decoder<'_>>) -> Result<Option<String>> {
        let params = self.sampler.params();
        let mut finish = if !params.ignore_eos && eos.contains(&d.token) {
            Some(FinishReason::Eos)
        } else if params.stop_token_ids.contains(&d.token) {
            Some(FinishReason::StopToken)
        } else {
            None
        };
        let at_length = self.tokens.len() + 1 >= params.max_new_tokens;
        let keep_top_logprobs = params.logprobs > 0;
        self.sampler.record(d.token);
        self.tokens.push(d.token);
        self.logprobs.push(d.logprob);
        if keep_top_logprobs {
            self.top_logprobs.push(d.top_logprobs);
        }
        if let (Some(trace), Some(row)) = (self.trace.as_mut(), d.trace.clone()) {
            trace.rows.push(row);
        }
        self.last_trace = d.trace;
        self.next = d.next;
        let delta = match (self.text.as_mut(), decoder) {
            (Some(text), Some(decode)) => {
                let last = finish.is_some() || d.finish.is_some() || at_length;
                let (delta, hit_stop) = text.push(&self.tokens, decode, last)?;
                if hit_stop && finish.is_none() {
                    finish = Some(FinishReason::StopString);
                }
                Some(delta)
            }
            _ => None,
        };
        self.finish = finish.or(d.finish).or(at_length.then_some(FinishReason::Length));
        Ok(delta)
    }

    fn event(&self, step: usize, text_delta: Option<String>) -> StepEvent {
        StepEvent {
            request: self.index,
            step,
            token_id: *self.tokens.last().expect("recorded before the event"),
            logprob: *self.logprobs.last().expect("recorded before the event"),
            text_delta,
            finish_reason: self.finish,
            mode: self.controller.mode(),
            trace: self.last_trace.clone(),
        }
    }

    fn into_output(self) -> Output {
        Output {
            token_ids: self.tokens,
            logprobs: self.logprobs,
            top_logprobs: self.top_logprobs,
            finish_reason: self.finish.expect("only finished sequences leave"),
            trace: self.trace,
            text: self.text.map(|t| t.text),
        }
    }
}

/// Incremental detokenisation (vLLM's scheme: decode a short window of recent tokens and keep
/// what it adds past the window's already-read part, waiting while the tail is an incomplete
/// UTF-8 sequence) and stop-string search over the new text only.
struct TextState {
    /// The text so far, a stop string and what followed it cut.
    text: String,
    /// Bytes of `text` already handed out as deltas.
    emitted: usize,
    /// The window `tokens[prefix_offset..]`: `tokens[prefix_offset..read_offset]` is already text.
    prefix_offset: usize,
    read_offset: usize,
    stop_strings: Vec<String>,
    /// Bytes held back from deltas: the longest stop string less one could still be completing.
    hold_back: usize,
}

impl TextState {
    fn new(stop_strings: &[String]) -> TextState {
        let hold_back = stop_strings.iter().map(|s| s.len()).max().unwrap_or(1) - 1;
        TextState { text: String::new(), emitted: 0, prefix_offset: 0, read_offset: 0, stop_strings: stop_strings.to_vec(), hold_back }
    }

    /// Adds the text of `tokens`' last token; `last`: the sequence ends now, flush everything.
    /// Returns the delta to hand out and whether a stop string was reached.
    fn push(&mut self, tokens: &[u32], decode: Decoder<'_>, last: bool) -> Result<(String, bool)> {
        let read = decode(&tokens[self.prefix_offset..self.read_offset])?;
        let window = decode(&tokens[self.prefix_offset..])?;
        let mut hit_stop = false;
        let complete = last || !window.ends_with('\u{FFFD}');
        if let Some(new) = window.get(read.len()..).filter(|new| complete && !new.is_empty()) {
            let old_len = self.text.len();
            self.text.push_str(new);
            self.prefix_offset = self.read_offset;
            self.read_offset = tokens.len();
            // A new match ends in the new text, so it starts at most `hold_back` bytes before it.
            let from = floor_char_boundary(&self.text, old_len.saturating_sub(self.hold_back));
            let cut = self.stop_strings.iter().filter_map(|s| self.text[from..].find(s.as_str())).min();
            if let Some(at) = cut {
                self.text.truncate(from + at);
                hit_stop = true;
            }
        }
        let end = if last || hit_stop {
            self.text.len()
        } else {
            floor_char_boundary(&self.text, self.text.len().saturating_sub(self.hold_back))
        };
        let start = self.emitted.min(self.text.len());
        let delta = self.text.get(start..end.max(start)).unwrap_or_default().to_string();
        self.emitted = end.max(start);
        Ok((delta, hit_stop))
    }
}

/// The largest char boundary of `s` at or before byte `i`.
fn floor_char_boundary(s: &str, i: usize) -> usize {
    let mut i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}
