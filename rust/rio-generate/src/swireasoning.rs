//! SwiReasoning (swireasoning spec section 1): per sequence, switch between latent steps (the
//! next input is the soft embedding `pᵀE` of the full, untempered softmax) and explicit steps
//! (the sampled token), driven by the entropy trend against the block's reference entropy.
//!
//! Clean default vs `faithful` (spec 1.6): the two differ only where the official code has a
//! quirk that is not part of the method:
//! - min-p: clean uses the sampler's relative min-p (HF/vLLM); faithful an absolute threshold on
//!   the filtered probabilities (quirk 15) and the official filter order (T, top-k, top-p, min-p),
//!   without penalties;
//! - tokens forced by switch-count control while the sequence is latent: clean feeds them as hard
//!   tokens (the model reads the injected text); faithful feeds the soft embedding (quirk 8);
//! - after a sampled `</think>` (the lock), clean feeds every input hard; faithful still feeds
//!   the `β`-mix if a latent→explicit switch fires right after the lock (spec 1.4 (a));
//! - the step-0 mix token: the caller resolves it (Python: the newline token when clean, the
//!   literal two-character token `\n` when faithful, quirk 6); this module only mixes `step0_token_id`.
//!
//! Both compute the entropy and the soft embedding in f32 (the official code stays in bf16; the
//! spec calls the fp32 cast a strict improvement, 1.1), and both keep every other quirk: tokens
//! sampled (not fed) in latent steps are recorded (quirk 1), the latent→explicit switch step is
//! fed `β·pᵀE + (1−β)E[</think>]` (quirk 4), a forced `</think>` does not lock explicit mode
//! (quirk 7), the convergence trigger re-fires (quirk 9), the answer budget counts the injected
//! tokens (quirk 11).
use std::collections::VecDeque;

use rio_core::{Error, Result, TensorRef};
use rio_cpu::ops::soft_embedding::{blend_rows, max_row_norm, soft_embedding_full, soft_embedding_pruned, softmax_entropy};

use crate::controller::{Controller, Decision, FinishReason, NextInput, Steer, StepContext};
use crate::sampling::{Distribution, Sampler};
use crate::trace::{Mode, Switch, TraceRow};

/// How `pᵀE` is computed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SoftForm {
    /// Every row of `E` (exact, reads the whole matrix).
    Full,
    /// Skips the least likely tokens that together weigh at most `max_skipped_mass`, so
    /// `‖error‖₂ ≤ max_skipped_mass × max_v ‖E[v]‖₂` (see `rio_cpu::ops::soft_embedding`).
    Pruned { max_skipped_mass: f32 },
}

/// The probability mass the pruned soft embedding may skip by default: its error bound,
/// `1e-4 × max row norm`, is far below the bf16 rounding of the table (`2⁻⁸` relative).
pub const DEFAULT_MAX_SKIPPED_MASS: f32 = 1e-4;

/// SwiReasoning's parameters (spec 1.5: defaults are the official `generate_swir` ones).
#[derive(Clone, Debug, PartialEq)]
pub struct SwiReasoningConfig {
    /// W: steps an explicit block lasts at least before it may return to latent (>= 1).
    pub window: usize,
    /// α0: weight of the soft embedding at an explicit→latent switch (annealed to 1), in [0, 1].
    pub alpha0: f32,
    /// β0: weight of the soft embedding at a latent→explicit switch (annealed to 1), in [0, 1].
    pub beta0: f32,
    /// C: switch-count control (convergence at C..=2C latent→explicit switches, termination above).
    pub max_switch_count: Option<usize>,
    pub think_token_id: u32,
    pub end_think_token_id: u32,
    /// Injected from the step after the C-th..2C-th switch (`"</think>"` for Qwen).
    pub convergence_token_ids: Vec<u32>,
    /// Injected from the step after the (2C+1)-th switch (`"</think>\n\nThe final answer is"`).
    pub termination_token_ids: Vec<u32>,
    /// Steps (injected tokens included) the sequence may run after the termination trigger.
    pub termination_max_tokens: usize,
    /// Row mixed 0.1 into the step-0 soft embedding; `None`: no step-0 mix.
    pub step0_token_id: Option<u32>,
    /// Tokens fed hard even in latent steps (digits, letters, operators, LaTeX; empty: off).
    pub math_token_ids: Vec<u32>,
    pub soft_form: SoftForm,
    /// Start in explicit mode instead of latent (with a huge window: plain CoT, oracle S1).
    pub start_explicit: bool,
    /// Reproduce the official code's quirks (module docs).
    pub faithful: bool,
    /// `max_v ‖E[v]‖₂` for [`SoftForm::Pruned`], computed once by the caller for a whole batch;
    /// `None`: each controller computes it on its first pruned step.
    pub max_row_norm: Option<f32>,
}

impl SwiReasoningConfig {
    /// The official defaults with the given `<think>` / `</think>` ids.
    pub fn new(think_token_id: u32, end_think_token_id: u32) -> Self {
        SwiReasoningConfig {
            window: 512,
            alpha0: 1.0,
            beta0: 0.7,
            max_switch_count: None,
            think_token_id,
            end_think_token_id,
            convergence_token_ids: vec![end_think_token_id],
            termination_token_ids: vec![end_think_token_id],
            termination_max_tokens: 32,
            step0_token_id: None,
            math_token_ids: Vec::new(),
            soft_form: SoftForm::Pruned { max_skipped_mass: DEFAULT_MAX_SKIPPED_MASS },
            start_explicit: false,
            faithful: false,
            max_row_norm: None,
        }
    }

    /// Checks every field against a vocabulary of `vocab` tokens; the error names the field.
    pub fn validate(&self, vocab: usize) -> Result<()> {
        if self.window < 1 {
            return Err(Error::value("window", "must be at least 1"));
        }
        for (name, v) in [("alpha0", self.alpha0), ("beta0", self.beta0)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(Error::value(name, format!("must be in [0, 1], got {v}")));
            }
        }
        if self.max_switch_count == Some(0) {
            return Err(Error::value("max_switch_count", "must be at least 1 (or None for no switch-count control)"));
        }
        if self.max_switch_count.is_some() && (self.convergence_token_ids.is_empty() || self.termination_token_ids.is_empty()) {
            return Err(Error::value("convergence_token_ids", "switch-count control needs convergence and termination tokens"));
        }
        if let SoftForm::Pruned { max_skipped_mass } = self.soft_form {
            if !(0.0..1.0).contains(&max_skipped_mass) {
                return Err(Error::value("soft_form", format!("the pruned form's skipped mass must be in [0, 1), got {max_skipped_mass}")));
            }
        }
        let ids = [("think_token_id", self.think_token_id), ("end_think_token_id", self.end_think_token_id)]
            .into_iter()
            .chain(self.step0_token_id.map(|t| ("step0_token_id", t)))
            .chain(self.convergence_token_ids.iter().map(|&t| ("convergence_token_ids", t)))
            .chain(self.termination_token_ids.iter().map(|&t| ("termination_token_ids", t)))
            .chain(self.math_token_ids.iter().map(|&t| ("math_token_ids", t)));
        for (name, t) in ids {
            if t as usize >= vocab {
                return Err(Error::value(name, format!("token {t} is outside the vocabulary of {vocab}")));
            }
        }
        Ok(())
    }
}

/// One sequence's SwiReasoning state (spec 1.2).
pub struct SwiReasoning {
    cfg: SwiReasoningConfig,
    /// Sorted, for the math-token override.
    math: Vec<u32>,
    explicit: bool,
    stay_steps: usize,
    ref_entropy: f32,
    /// The entropy of the last step (the new reference when the caller forces a switch).
    last_entropy: f32,
    locked: bool,
    switch_count: usize,
    queue: VecDeque<u32>,
    /// Steps left after the termination trigger (`None`: not triggered).
    answer_budget: Option<usize>,
    probs: Vec<f32>,
    max_row_norm: Option<f32>,
}

impl SwiReasoning {
    pub fn new(cfg: SwiReasoningConfig) -> Self {
        let mut math = cfg.math_token_ids.clone();
        math.sort_unstable();
        math.dedup();
        SwiReasoning {
            math,
            explicit: cfg.start_explicit,
            stay_steps: 0,
            ref_entropy: f32::NAN,
            last_entropy: f32::NAN,
            locked: false,
            switch_count: 0,
            queue: VecDeque::new(),
            answer_budget: None,
            probs: Vec::new(),
            max_row_norm: cfg.max_row_norm,
            cfg,
        }
    }

    /// Latent→explicit switches so far (counted when switch-count control is on).
    pub fn switch_count(&self) -> usize {
        self.switch_count
    }

    /// The official `apply_sampling_filter` (faithful mode): temperature, top-k, top-p, then an
    /// ABSOLUTE min-p on the renormalised probabilities (quirk 15); greedy is the argmax.
    fn faithful_filter(logits: &[f32], sampler: &Sampler) -> Distribution {
        let p = sampler.params();
        if p.is_greedy() {
            let best = logits.iter().enumerate().fold(0, |b, (i, &v)| if v > logits[b] { i } else { b });
            return Distribution { ids: vec![best as u32], probs: vec![1.0] };
        }
        let t = p.temperature;
        let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        let by_logit_desc = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]).then(a.cmp(b));
        if p.top_k > 0 && p.top_k < order.len() {
            order.select_nth_unstable_by(p.top_k - 1, by_logit_desc);
            order.truncate(p.top_k);
        }
        order.sort_unstable_by(by_logit_desc);
        let mut w: Vec<f64> = order.iter().map(|&i| ((logits[i as usize] as f64 - max) / t).exp()).collect();
        let total: f64 = w.iter().sum();
        if p.top_p < 1.0 {
            let mut cum = 0.0;
            let keep = w.iter().position(|&x| {
                cum += x / total;
                cum >= p.top_p
            });
            let keep = keep.map_or(w.len(), |i| i + 1);
            order.truncate(keep);
            w.truncate(keep);
        }
        let total: f64 = w.iter().sum();
        if p.min_p > 0.0 {
            let keep = w.iter().take_while(|&&x| x / total >= p.min_p).count().max(1);
            order.truncate(keep);
            w.truncate(keep);
        }
        let total: f64 = w.iter().sum();
        Distribution { ids: order, probs: w.iter().map(|&x| (x / total) as f32).collect() }
    }

    fn soft_embedding(&mut self, e: &TensorRef<'_>, out: &mut [f32]) -> Result<()> {
        match self.cfg.soft_form {
            SoftForm::Full => soft_embedding_full(&self.probs, e, out),
            SoftForm::Pruned { max_skipped_mass } => {
                let norm = match self.max_row_norm {
                    Some(n) => n,
                    None => *self.max_row_norm.insert(max_row_norm(e)?),
                };
                soft_embedding_pruned(&self.probs, e, norm, max_skipped_mass, out).map(|_| ())
            }
        }
    }
}

impl Controller for SwiReasoning {
    fn step(&mut self, cx: StepContext<'_>) -> Result<Decision> {
        let (v, h) = (cx.embeddings.shape()[0], cx.embeddings.shape()[1]);
        if cx.logits.len() != v {
            return Err(Error::value("logits", format!("{} logits for an embedding table of {v} rows", cx.logits.len())));
        }
        let step = cx.step;
        // 1. p_t = softmax(z_t), untempered and unfiltered, and its entropy (5).
        self.probs.resize(v, 0.0);
        let entropy = softmax_entropy(cx.logits, 1.0, &mut self.probs)?;
        // 2. The token from the tempered, filtered q_t, sampled at every step.
        let (mut token, mut logprob) = if self.cfg.faithful {
            let dist = Self::faithful_filter(cx.logits, cx.sampler);
            let token = cx.sampler.draw(&dist);
            let prob = dist.ids.iter().position(|&t| t == token).map_or(0.0, |i| dist.probs[i]);
            (token, prob.ln())
        } else {
            let s = cx.sampler.sample(cx.logits);
            (s.token, s.logprob)
        };
        // 3. Lock on a sampled </think>, before any injection override.
        self.locked |= token == self.cfg.end_think_token_id;
        // 4. Injection override (switch-count control).
        let injected = match self.queue.pop_front() {
            Some(forced) => {
                token = forced;
                logprob = self.probs[forced as usize].max(f32::MIN_POSITIVE).ln();
                true
            }
            None => false,
        };
        // 6. Mode update: asymmetric, the window gates explicit→latent only.
        let mut switched = None;
        if step == 0 {
            self.ref_entropy = entropy;
        } else {
            self.stay_steps += 1;
            if !self.explicit && entropy < self.ref_entropy {
                switched = Some(Switch::ToExplicit);
            } else if self.explicit && entropy > self.ref_entropy && self.stay_steps >= self.cfg.window && !self.locked {
                switched = Some(Switch::ToLatent);
            }
            if let Some(s) = switched {
                self.explicit = s == Switch::ToExplicit;
                self.stay_steps = 0;
                self.ref_entropy = entropy;
                if s == Switch::ToExplicit && self.cfg.max_switch_count.is_some() {
                    self.switch_count += 1;
                }
            }
        }
        self.last_entropy = entropy;
        // 9. Switch-count control: triggers at a latent→explicit switch, injection from the next step.
        if let (Some(c), Some(Switch::ToExplicit)) = (self.cfg.max_switch_count, switched) {
            if (c..=2 * c).contains(&self.switch_count) {
                self.queue = self.cfg.convergence_token_ids.iter().copied().collect();
            } else if self.switch_count > 2 * c {
                self.queue = self.cfg.termination_token_ids.iter().copied().collect();
                self.answer_budget = Some(self.cfg.termination_max_tokens);
            }
        }
        let finish = match self.answer_budget.as_mut() {
            Some(b) => {
                *b = b.saturating_sub(1);
                (*b == 0).then_some(FinishReason::Budget)
            }
            None => None,
        };
        // 7. The effective mode of this step's input.
        let hard_override = self.math.binary_search(&token).is_ok() || (injected && !self.cfg.faithful);
        let is_explicit = self.explicit || self.locked || hard_override;
        // 8. Embeddings: α/β annealed linearly to 1 over the token budget.
        let progress = step as f32 / cx.max_new_tokens.max(1) as f32;
        let e = &cx.embeddings;
        // Clean: after a sampled </think> every input is hard (oracle S3e); faithful: a
        // latent→explicit switch right after the lock still feeds the β-mix.
        let mixes_end_think = switched == Some(Switch::ToExplicit) && (self.cfg.faithful || !self.locked);
        let next = if is_explicit && !mixes_end_think {
            NextInput::Token(token)
        } else {
            let mut soft = vec![0.0f32; h];
            self.soft_embedding(e, &mut soft)?;
            if step == 0 {
                if let Some(t) = self.cfg.step0_token_id {
                    blend_rows(&mut soft, 0.9, &[t], &[0.1], e)?;
                }
            }
            match switched {
                Some(Switch::ToLatent) => {
                    let alpha = self.cfg.alpha0 + (1.0 - self.cfg.alpha0) * progress;
                    blend_rows(&mut soft, alpha, &[self.cfg.think_token_id], &[1.0 - alpha], e)?;
                }
                Some(Switch::ToExplicit) => {
                    // The first input of an explicit block is soft too (quirk 4), math token
                    // or not: the official normal_emb is replaced by this mix.
                    let beta = self.cfg.beta0 + (1.0 - self.cfg.beta0) * progress;
                    blend_rows(&mut soft, beta, &[self.cfg.end_think_token_id], &[1.0 - beta], e)?;
                }
                None => {}
            }
            NextInput::Embedding(soft)
        };
        let mode = if self.explicit || self.locked { Mode::Explicit } else { Mode::Latent };
        let trace = TraceRow {
            step,
            mode,
            entropy,
            ref_entropy: self.ref_entropy,
            switched,
            injected,
            token_id: token,
            token_prob: logprob.exp(),
            fed_soft: matches!(next, NextInput::Embedding(_)),
        };
        Ok(Decision { token, logprob, next, finish, trace: Some(trace) })
    }

    fn mode(&self) -> &'static str {
        if self.explicit || self.locked {
            Mode::Explicit.as_str()
        } else {
            Mode::Latent.as_str()
        }
    }

    /// ForceSwitch flips the mode and starts a new block (stay counter 0, reference = the last
    /// step's entropy); it does not count towards switch-count control and mixes no signal row.
    fn steer(&mut self, steer: Steer) -> Result<()> {
        match steer {
            Steer::Stop => Ok(()),
            Steer::ForceSwitch if self.locked => {
                Err(Error::value("steer", "thinking has ended (a </think> was sampled): the sequence stays explicit"))
            }
            Steer::ForceSwitch => {
                self.explicit = !self.explicit;
                self.stay_steps = 0;
                self.ref_entropy = self.last_entropy;
                Ok(())
            }
        }
    }
}
