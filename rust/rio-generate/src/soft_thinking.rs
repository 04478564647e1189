//! Soft Thinking (swireasoning spec section 2): while thinking, every step feeds a concept token
//! (the K most likely tokens of the tempered, filtered distribution, renormalised, mixed as
//! `Σ_j w_j E[idx_j]`) and records its top token; Cold Stop forces `</think>` after L consecutive
//! steps of entropy below τ; from the first `</think>` on, ordinary sampling (one way).
//!
//! The answer phase samples with the request's own sampling parameters (`model.generate`'s
//! temperature, top-k, ...), which play the role of the official `after_thinking_*` parameters.
//! Not reproduced: the official abort of an answer after L low-entropy steps (spec 2.3, a quirk
//! that cuts long deterministic answers).
use rio_core::{Error, Result};
use rio_cpu::ops::soft_embedding::{soft_embedding_topk, softmax_entropy};

use crate::controller::{Controller, Decision, NextInput, Steer, StepContext};
use crate::sampling::Rng;
use crate::trace::{Mode, Switch, TraceRow};

/// Randomness added to the concept token (off in the paper; arXiv 2508.03440).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ConceptNoise {
    /// The concept weights become a Dirichlet(α·w) draw, re-sorted. Drawn over the K concept
    /// entries; the official code draws over the whole filtered distribution before its top-K.
    Dirichlet { alpha: f32 },
    /// The K concept weights become `softmax((ln w + Gumbel)/τ)`, re-sorted.
    Gumbel { tau: f32 },
}

/// Soft Thinking's parameters (spec 2.4; defaults: the README / paper-reproduction scripts).
#[derive(Clone, Debug, PartialEq)]
pub struct SoftThinkingConfig {
    /// K: the concept token's size (`max_topk`), >= 1.
    pub top_k: usize,
    /// The thinking filter's own top-k before top-p (`top_k` of the sampling params; 0 = off).
    pub filter_top_k: usize,
    pub top_p: f32,
    /// Relative min-p: drop tokens below `min_p × max p`.
    pub min_p: f32,
    /// Thinking temperature; 0 is greedy (SGLang: T = 1 and a one-token concept).
    pub temperature: f32,
    /// Cold Stop τ in nats (0: off).
    pub cold_stop_entropy: f32,
    /// Cold Stop L: consecutive low-entropy steps that force `</think>` (>= 1).
    pub cold_stop_steps: usize,
    pub end_think_token_id: u32,
    pub noise: Option<ConceptNoise>,
    /// Seed of the noise (`None`: the sequence's sampler RNG).
    pub noise_seed: Option<u64>,
    /// Start in the answer phase: plain decoding (oracle T1 with K = 1 is the other way to CoT).
    pub start_explicit: bool,
}

impl SoftThinkingConfig {
    pub fn new(end_think_token_id: u32) -> Self {
        SoftThinkingConfig {
            top_k: 10,
            filter_top_k: 30,
            top_p: 0.95,
            min_p: 0.001,
            temperature: 0.6,
            cold_stop_entropy: 0.01,
            cold_stop_steps: 256,
            end_think_token_id,
            noise: None,
            noise_seed: None,
            start_explicit: false,
        }
    }

    pub fn validate(&self, vocab: usize) -> Result<()> {
        if self.top_k < 1 {
            return Err(Error::value("top_k", "the concept token needs at least one entry (K >= 1)"));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::value("top_p", format!("must be in (0, 1], got {}", self.top_p)));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(Error::value("min_p", format!("must be in [0, 1], got {}", self.min_p)));
        }
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(Error::value("temperature", format!("must be >= 0 and finite, got {}", self.temperature)));
        }
        if !(self.cold_stop_entropy >= 0.0 && self.cold_stop_entropy.is_finite()) {
            return Err(Error::value("cold_stop_entropy", format!("must be >= 0, got {}", self.cold_stop_entropy)));
        }
        if self.cold_stop_steps < 1 {
            return Err(Error::value("cold_stop_steps", "must be at least 1"));
        }
        if self.end_think_token_id as usize >= vocab {
            return Err(Error::value(
                "end_think_token_id",
                format!("token {} is outside the vocabulary of {vocab}", self.end_think_token_id),
            ));
        }
        match self.noise {
            Some(ConceptNoise::Dirichlet { alpha }) if !(alpha > 0.0 && alpha.is_finite()) => {
                Err(Error::value("dirichlet_alpha", format!("must be positive, got {alpha}")))
            }
            Some(ConceptNoise::Gumbel { tau }) if !(tau > 0.0 && tau.is_finite()) => {
                Err(Error::value("gumbel_tau", format!("must be positive, got {tau}")))
            }
            _ => Ok(()),
        }
    }
}

/// A concept token: ids by weight descending, weights summing to 1.
#[derive(Clone, Debug, PartialEq)]
pub struct Concept {
    pub ids: Vec<u32>,
    pub weights: Vec<f32>,
}

/// One sequence's Soft Thinking state (spec 2.3).
pub struct SoftThinking {
    cfg: SoftThinkingConfig,
    thinking: bool,
    low_entropy_steps: usize,
    probs: Vec<f32>,
    noise_rng: Option<Rng>,
}

impl SoftThinking {
    pub fn new(cfg: SoftThinkingConfig) -> Self {
        SoftThinking {
            thinking: !cfg.start_explicit,
            low_entropy_steps: 0,
            probs: Vec::new(),
            noise_rng: cfg.noise_seed.map(Rng::new),
            cfg,
        }
    }

    /// Spec 2.2 steps 1-6 on `probs = softmax(z/T)`: top-k (`filter_top_k`), top-p and relative
    /// min-p, each renormalising, then the K largest renormalised. Every filter keeps a prefix
    /// of the descending order, so only the `max(K, filter_top_k)` largest need sorting.
    pub fn concept(probs: &[f32], cfg: &SoftThinkingConfig) -> Concept {
        let k = if cfg.temperature == 0.0 { 1 } else { cfg.top_k };
        let m = k.max(cfg.filter_top_k).min(probs.len());
        let mut idx: Vec<u32> = (0..probs.len() as u32).collect();
        let by_prob_desc = |a: &u32, b: &u32| probs[*b as usize].total_cmp(&probs[*a as usize]).then(a.cmp(b));
        if m < idx.len() {
            idx.select_nth_unstable_by(m - 1, by_prob_desc);
            idx.truncate(m);
        }
        idx.sort_unstable_by(by_prob_desc);
        // top-k filter: renormalise over its set (or the whole vocabulary when off).
        let (mut keep, mass) = if cfg.filter_top_k > 0 {
            let keep = cfg.filter_top_k.min(idx.len());
            (keep, idx[..keep].iter().map(|&i| probs[i as usize] as f64).sum::<f64>())
        } else {
            (idx.len(), 1.0)
        };
        // top-p: the smallest prefix reaching top_p of the renormalised mass.
        if cfg.top_p < 1.0 {
            let mut cum = 0.0f64;
            if let Some(i) = idx[..keep].iter().position(|&i| {
                cum += probs[i as usize] as f64 / mass;
                cum >= cfg.top_p as f64
            }) {
                keep = i + 1;
            }
        }
        // relative min-p (renormalising does not move a ratio to the max).
        let floor = cfg.min_p * probs[idx[0] as usize];
        keep = idx[..keep].iter().take_while(|&&i| probs[i as usize] >= floor).count().max(1);
        keep = keep.min(k);
        let ids = idx[..keep].to_vec();
        let total: f64 = ids.iter().map(|&i| probs[i as usize] as f64).sum();
        let weights = ids.iter().map(|&i| (probs[i as usize] as f64 / total) as f32).collect();
        Concept { ids, weights }
    }

    fn add_noise(&mut self, concept: &mut Concept, rng: &mut Rng) {
        let rng = self.noise_rng.as_mut().unwrap_or(rng);
        let w: Vec<f64> = match self.cfg.noise {
            None => return,
            Some(ConceptNoise::Dirichlet { alpha }) => {
                concept.weights.iter().map(|&p| gamma(rng, (p as f64 * alpha as f64).max(1e-30))).collect()
            }
            Some(ConceptNoise::Gumbel { tau }) => {
                let g: Vec<f64> =
                    concept.weights.iter().map(|&p| ((p as f64).max(1e-30).ln() - (-rng.next_f64_open().ln()).ln()) / tau as f64).collect();
                let max = g.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                g.iter().map(|x| (x - max).exp()).collect()
            }
        };
        let total: f64 = w.iter().sum::<f64>().max(1e-300);
        let mut order: Vec<usize> = (0..w.len()).collect();
        order.sort_by(|&a, &b| w[b].total_cmp(&w[a]));
        concept.ids = order.iter().map(|&i| concept.ids[i]).collect();
        concept.weights = order.iter().map(|&i| (w[i] / total) as f32).collect();
    }
}

/// Gamma(shape, 1) by Marsaglia and Tsang (shape < 1 through the `U^(1/shape)` boost).
fn gamma(rng: &mut Rng, shape: f64) -> f64 {
    if shape < 1.0 {
        return gamma(rng, shape + 1.0) * rng.next_f64_open().powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        // A standard normal by Box-Muller.
        let n = (-2.0 * rng.next_f64_open().ln()).sqrt() * (2.0 * std::f64::consts::PI * rng.next_f64()).cos();
        let v = (1.0 + c * n).powi(3);
        if v > 0.0 && rng.next_f64_open().ln() < 0.5 * n * n + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

impl Controller for SoftThinking {
    fn step(&mut self, cx: StepContext<'_>) -> Result<Decision> {
        let (v, h) = (cx.embeddings.shape()[0], cx.embeddings.shape()[1]);
        if cx.logits.len() != v {
            return Err(Error::value("logits", format!("{} logits for an embedding table of {v} rows", cx.logits.len())));
        }
        self.probs.resize(v, 0.0);
        // Spec 2.2 step 3: the entropy of softmax(z/T), before the filters (greedy: T = 1).
        let t = if self.cfg.temperature == 0.0 { 1.0 } else { self.cfg.temperature };
        let entropy = softmax_entropy(cx.logits, t, &mut self.probs)?;
        if !self.thinking {
            let s = cx.sampler.sample(cx.logits);
            let trace = TraceRow {
                step: cx.step,
                mode: Mode::Explicit,
                entropy,
                ref_entropy: f32::NAN,
                switched: None,
                injected: false,
                token_id: s.token,
                token_prob: s.prob,
                fed_soft: false,
            };
            return Ok(Decision { token: s.token, logprob: s.logprob, next: NextInput::Token(s.token), finish: None, trace: Some(trace) });
        }
        let mut concept = Self::concept(&self.probs, &self.cfg);
        self.add_noise(&mut concept, cx.sampler.rng());
        // Step 8: the recorded token is the concept's top token.
        let mut token = concept.ids[0];
        let mut prob = concept.weights[0];
        // Cold Stop (2.3): L consecutive steps below τ replace this step's token by </think>.
        let mut injected = false;
        if self.cfg.cold_stop_entropy > 0.0 {
            if entropy < self.cfg.cold_stop_entropy {
                self.low_entropy_steps += 1;
            } else {
                self.low_entropy_steps = 0;
            }
            if self.low_entropy_steps >= self.cfg.cold_stop_steps {
                token = self.cfg.end_think_token_id;
                prob = self.probs[token as usize];
                injected = true;
            }
        }
        let (next, switched) = if token == self.cfg.end_think_token_id {
            // One-way: the </think> position is fed as the hard token, then plain decoding.
            self.thinking = false;
            self.low_entropy_steps = 0;
            (NextInput::Token(token), Some(Switch::ToExplicit))
        } else if concept.ids.len() == 1 {
            // A one-hot concept is exactly the token's row (oracle O1).
            (NextInput::Token(token), None)
        } else {
            let mut soft = vec![0.0f32; h];
            soft_embedding_topk(&concept.ids, &concept.weights, &cx.embeddings, &mut soft)?;
            (NextInput::Embedding(soft), None)
        };
        let trace = TraceRow {
            step: cx.step,
            mode: if self.thinking { Mode::Latent } else { Mode::Explicit },
            entropy,
            ref_entropy: f32::NAN,
            switched,
            injected,
            token_id: token,
            token_prob: prob,
            fed_soft: matches!(next, NextInput::Embedding(_)),
        };
        Ok(Decision { token, logprob: prob.max(f32::MIN_POSITIVE).ln(), next, finish: None, trace: Some(trace) })
    }

    fn mode(&self) -> &'static str {
        if self.thinking {
            Mode::Latent.as_str()
        } else {
            Mode::Explicit.as_str()
        }
    }

    /// ForceSwitch leaves thinking (the next steps sample discretely) or re-enters it.
    fn steer(&mut self, steer: Steer) -> Result<()> {
        if steer == Steer::ForceSwitch {
            self.thinking = !self.thinking;
            self.low_entropy_steps = 0;
        }
        Ok(())
    }
}
