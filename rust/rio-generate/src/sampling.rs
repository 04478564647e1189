//! Sampling parameters and the per-sequence [`Sampler`]: logits processors with the semantics of
//! transformers / vLLM, a seeded RNG, token history for penalties, and logprobs.
//!
//! The processors run in transformers' order: repetition penalty (HF: divide positive logits,
//! multiply negative ones, for every token seen in the prompt or the output), presence and
//! frequency penalties (OpenAI / vLLM: subtract `presence·[count>0] + frequency·count`, output
//! tokens only), temperature, top-k (ties with the k-th value kept, as HF), top-p (the smallest
//! prefix, by probability, whose mass reaches `top_p`; at least one token), min-p (drop tokens
//! whose probability is below `min_p` times the largest). Temperature 0 is greedy: the argmax of
//! the penalised logits, ties to the lower id.
//!
//! Log-probs are natural logs of the distribution the token was drawn from (the filtered,
//! renormalised one). Under greedy decoding there is no such distribution, so they are the
//! log-softmax of the penalised, untempered logits (what vLLM reports and what transformers'
//! `output_logits` give after `log_softmax`).
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use rio_core::{Error, Result};

/// How one sequence picks its tokens and when it stops. The default is greedy decoding of up
/// to 64 tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy; otherwise logits are divided by it.
    pub temperature: f64,
    /// Keep the `top_k` most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest most-likely set whose probability reaches `top_p`, in (0, 1].
    pub top_p: f64,
    /// Drop tokens less likely than `min_p` times the most likely one, in [0, 1].
    pub min_p: f64,
    /// HF repetition penalty over prompt and output tokens (> 0; 1 = off).
    pub repetition_penalty: f64,
    /// OpenAI presence penalty over output tokens (0 = off).
    pub presence_penalty: f64,
    /// OpenAI frequency penalty over output tokens (0 = off).
    pub frequency_penalty: f64,
    /// The most tokens recorded (>= 1).
    pub max_new_tokens: usize,
    /// Token ids that end the sequence (recorded, as EOS is).
    pub stop_token_ids: Vec<u32>,
    /// Strings that end the sequence when the decoded text reaches them (cut from the text).
    pub stop_strings: Vec<String>,
    /// RNG seed; `None` draws one from the OS.
    pub seed: Option<u64>,
    /// How many top alternatives to report per step with their logprobs (0 = none).
    pub logprobs: usize,
    /// Keep generating past EOS tokens (benchmarks, parity tests).
    pub ignore_eos: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            max_new_tokens: 64,
            stop_token_ids: Vec::new(),
            stop_strings: Vec::new(),
            seed: None,
            logprobs: 0,
            ignore_eos: false,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding of `max_new_tokens` tokens.
    pub fn greedy(max_new_tokens: usize) -> Self {
        SamplingParams { max_new_tokens, ..Default::default() }
    }

    /// Checks every field; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let finite = |name: &str, x: f64| {
            if x.is_finite() {
                Ok(())
            } else {
                Err(Error::value(name, format!("must be a finite number, got {x}")))
            }
        };
        finite("temperature", self.temperature)?;
        if self.temperature < 0.0 {
            return Err(Error::value("temperature", format!("must be >= 0 (0 = greedy), got {}", self.temperature)));
        }
        finite("top_p", self.top_p)?;
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::value("top_p", format!("must be in (0, 1], got {}", self.top_p)));
        }
        finite("min_p", self.min_p)?;
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(Error::value("min_p", format!("must be in [0, 1], got {}", self.min_p)));
        }
        finite("repetition_penalty", self.repetition_penalty)?;
        if self.repetition_penalty <= 0.0 {
            return Err(Error::value("repetition_penalty", format!("must be > 0 (1 = off), got {}", self.repetition_penalty)));
        }
        finite("presence_penalty", self.presence_penalty)?;
        finite("frequency_penalty", self.frequency_penalty)?;
        if self.max_new_tokens == 0 {
            return Err(Error::value("max_new_tokens", "must be >= 1"));
        }
        if self.stop_strings.iter().any(String::is_empty) {
            return Err(Error::value("stop_strings", "an empty stop string would stop at once"));
        }
        Ok(())
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    fn has_penalties(&self) -> bool {
        self.repetition_penalty != 1.0 || self.presence_penalty != 0.0 || self.frequency_penalty != 0.0
    }
}

/// xoshiro256** (Blackman & Vigna), seeded through splitmix64: small, fast, and the same stream
/// for the same seed on every platform.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut splitmix = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng { s: [splitmix(), splitmix(), splitmix(), splitmix()] }
    }

    /// A seed from the OS (std's per-process random hasher keys) and the clock.
    pub fn entropy_seed() -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
        h.finish()
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1), 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in (0, 1): safe under `ln` (Gumbel and exponential noise).
    pub fn next_f64_open(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
    }
}

/// A sampled token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampled {
    pub token: u32,
    /// Natural log of `prob`, or under greedy the log-softmax of the penalised logits.
    pub logprob: f32,
    pub prob: f32,
}

/// A filtered, renormalised distribution: ids sorted by probability, descending (ties by id).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Distribution {
    pub ids: Vec<u32>,
    pub probs: Vec<f32>,
}

/// The tokens that survive filtering with their unnormalised weights `exp(z - z_max)`, in no
/// particular order ([`Sampler::sample`] draws without sorting).
struct Kept {
    ids: Vec<u32>,
    weights: Vec<f64>,
}

/// One sequence's sampler: its parameters, RNG stream and token history (for penalties).
#[derive(Clone, Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
    /// Prompt and output tokens (repetition penalty).
    seen: HashSet<u32>,
    /// Output tokens and their counts (presence and frequency penalties).
    output_counts: HashMap<u32, u32>,
}

impl Sampler {
    /// `seed` starts this sequence's RNG stream; [`crate::generate`] passes `params.seed`, or an
    /// OS-drawn seed when it is `None`.
    pub fn new(params: SamplingParams, seed: u64) -> Sampler {
        Sampler { params, rng: Rng::new(seed), seen: HashSet::new(), output_counts: HashMap::new() }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// The prompt's tokens count for the repetition penalty (as in transformers and vLLM).
    pub fn set_prompt(&mut self, prompt: &[u32]) {
        self.seen.extend(prompt.iter().copied());
    }

    /// Adds a recorded output token to the history.
    pub fn record(&mut self, token: u32) {
        self.seen.insert(token);
        *self.output_counts.entry(token).or_insert(0) += 1;
    }

    /// Picks the next token: greedy argmax at temperature 0, else a draw from the filtered
    /// distribution (the one [`Sampler::filtered`] returns, possibly walked in id order).
    pub fn sample(&mut self, logits: &[f32]) -> Sampled {
        let penalised = self.penalised(logits);
        if self.params.is_greedy() {
            let token = argmax(&penalised);
            let logprob = (penalised[token as usize] as f64 - log_sum_exp(&penalised)) as f32;
            return Sampled { token, logprob, prob: logprob.exp() };
        }
        let kept = self.kept(&penalised);
        let total: f64 = kept.weights.iter().sum();
        let i = draw_index(&kept.weights, total, self.rng.next_f64());
        let prob = kept.weights[i] / total;
        Sampled { token: kept.ids[i], logprob: prob.ln() as f32, prob: prob as f32 }
    }

    /// The distribution [`Sampler::sample`] draws from (at temperature 0: the argmax with
    /// probability 1).
    pub fn filtered(&self, logits: &[f32]) -> Distribution {
        let penalised = self.penalised(logits);
        if self.params.is_greedy() {
            return Distribution { ids: vec![argmax(&penalised)], probs: vec![1.0] };
        }
        let kept = self.kept(&penalised);
        let mut order: Vec<usize> = (0..kept.ids.len()).collect();
        order.sort_unstable_by(|&a, &b| kept.weights[b].total_cmp(&kept.weights[a]).then(kept.ids[a].cmp(&kept.ids[b])));
        let total: f64 = kept.weights.iter().sum();
        Distribution {
            ids: order.iter().map(|&i| kept.ids[i]).collect(),
            probs: order.iter().map(|&i| (kept.weights[i] / total) as f32).collect(),
        }
    }

    /// Draws from a distribution with this sampler's RNG.
    pub fn draw(&mut self, dist: &Distribution) -> u32 {
        let weights: Vec<f64> = dist.probs.iter().map(|&p| p as f64).collect();
        let total = weights.iter().sum();
        dist.ids[draw_index(&weights, total, self.rng.next_f64())]
    }

    /// The `n` most likely tokens and their logprobs under the distribution [`Sampler::sample`]
    /// reports logprobs for (fewer when fewer survive filtering), most likely first. Call it
    /// before [`Sampler::record`] to describe the step just sampled.
    pub fn top_logprobs(&self, logits: &[f32], n: usize) -> Vec<(u32, f32)> {
        if n == 0 {
            return Vec::new();
        }
        let penalised = self.penalised(logits);
        let (ids, logps): (Vec<u32>, Vec<f64>) = if self.params.is_greedy() {
            let lse = log_sum_exp(&penalised);
            ((0..penalised.len() as u32).collect(), penalised.iter().map(|&x| x as f64 - lse).collect())
        } else {
            let kept = self.kept(&penalised);
            let log_total = kept.weights.iter().sum::<f64>().ln();
            let logps = kept.weights.iter().map(|&w| w.ln() - log_total).collect();
            (kept.ids, logps)
        };
        let mut order: Vec<usize> = (0..ids.len()).collect();
        let by_logp_desc = |&a: &usize, &b: &usize| logps[b].total_cmp(&logps[a]).then(ids[a].cmp(&ids[b]));
        if n < order.len() {
            order.select_nth_unstable_by(n - 1, by_logp_desc);
            order.truncate(n);
        }
        order.sort_unstable_by(by_logp_desc);
        order.into_iter().map(|i| (ids[i], logps[i] as f32)).collect()
    }

    /// Logits after the repetition, presence and frequency penalties (borrowed when all are off).
    fn penalised<'l>(&self, logits: &'l [f32]) -> Cow<'l, [f32]> {
        let p = &self.params;
        if !p.has_penalties() || self.seen.is_empty() {
            return Cow::Borrowed(logits);
        }
        let mut out = logits.to_vec();
        let vocab = out.len();
        if p.repetition_penalty != 1.0 {
            let penalty = p.repetition_penalty as f32;
            for &t in self.seen.iter().filter(|&&t| (t as usize) < vocab) {
                let x = &mut out[t as usize];
                *x = if *x < 0.0 { *x * penalty } else { *x / penalty };
            }
        }
        if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
            for (&t, &count) in self.output_counts.iter().filter(|(&t, _)| (t as usize) < vocab) {
                out[t as usize] -= (p.presence_penalty + p.frequency_penalty * count as f64) as f32;
            }
        }
        Cow::Owned(out)
    }

    /// Temperature, top-k, top-p and min-p over penalised logits (temperature > 0).
    fn kept(&self, penalised: &[f32]) -> Kept {
        let p = &self.params;
        // HF divides the f32 scores by the temperature before the other warpers.
        let t = p.temperature as f32;
        let tempered: Cow<'_, [f32]> =
            if p.temperature == 1.0 { Cow::Borrowed(penalised) } else { Cow::Owned(penalised.iter().map(|&x| x / t).collect()) };
        let mut ids: Vec<u32> = if p.top_k > 0 && p.top_k < tempered.len() {
            let mut values = tempered.to_vec();
            let (_, kth, _) = values.select_nth_unstable_by(p.top_k - 1, |a, b| b.total_cmp(a));
            let kth = *kth;
            (0..tempered.len() as u32).filter(|&i| tempered[i as usize] >= kth).collect()
        } else {
            (0..tempered.len() as u32).collect()
        };
        let z_max = ids.iter().map(|&i| tempered[i as usize]).fold(f32::NEG_INFINITY, f32::max);
        // f32 exp (relative error ~1e-7, far below what sampling can see), summed in f64.
        let mut weights: Vec<f64> = ids.iter().map(|&i| (tempered[i as usize] - z_max).exp() as f64).collect();
        if p.top_p < 1.0 {
            (ids, weights) = top_p_keep(ids, weights, p.top_p);
        }
        if p.min_p > 0.0 {
            // The largest weight is exp(0) = 1 (it survives top-k and top-p).
            let floor = p.min_p;
            let keep: Vec<bool> = weights.iter().map(|&w| w >= floor).collect();
            let mut k = keep.iter();
            ids.retain(|_| *k.next().unwrap());
            let mut k = keep.iter();
            weights.retain(|_| *k.next().unwrap());
        }
        Kept { ids, weights }
    }
}

/// HF's TopPLogitsWarper: walking the tokens by weight, descending, keep each while the mass
/// before it is below `top_p` (HF drops tokens whose ascending cumulative mass is <= 1 - top_p).
/// Found without sorting V: tokens are bucketed by weight (1/16 of an octave per bucket; the
/// buckets follow the weight order exactly since they come from the f64 bits), whole buckets are
/// kept while their cumulative mass stays below the target, and only the bucket where it crosses
/// is sorted. Weights are in (0, 1] (the largest is 1). The kept tokens come back unsorted.
fn top_p_keep(ids: Vec<u32>, weights: Vec<f64>, top_p: f64) -> (Vec<u32>, Vec<f64>) {
    const BUCKETS: usize = 2048; // 128 octaves: weights below 2^-128 share the last bucket
    const ONE: u64 = 0x3FF0_0000_0000_0000; // 1.0f64.to_bits()
    let bucket = |w: f64| (((ONE - w.to_bits()) >> 48) as usize).min(BUCKETS - 1);
    let target = top_p * weights.iter().sum::<f64>();
    let mut mass = vec![0.0f64; BUCKETS];
    for &w in &weights {
        mass[bucket(w)] += w;
    }
    let (mut boundary, mut before) = (BUCKETS - 1, 0.0);
    for (b, &m) in mass.iter().enumerate() {
        if before + m >= target {
            boundary = b;
            break;
        }
        before += m;
    }
    let mut kept_ids = Vec::new();
    let mut kept_weights = Vec::new();
    let mut edge = Vec::new();
    for (&id, &w) in ids.iter().zip(&weights) {
        match bucket(w).cmp(&boundary) {
            std::cmp::Ordering::Less => {
                kept_ids.push(id);
                kept_weights.push(w);
            }
            std::cmp::Ordering::Equal => edge.push((w, id)),
            std::cmp::Ordering::Greater => {}
        }
    }
    // `before < target` here, so the edge's first token (the overall first, at worst) is kept.
    edge.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    for (w, id) in edge {
        if before >= target {
            break;
        }
        before += w;
        kept_ids.push(id);
        kept_weights.push(w);
    }
    (kept_ids, kept_weights)
}

/// The first maximum (ties to the lower id) in one pass.
fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

fn log_sum_exp(x: &[f32]) -> f64 {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    m as f64 + x.iter().map(|&v| (v - m).exp() as f64).sum::<f64>().ln()
}

/// Inverse-CDF draw: the first index whose cumulative weight exceeds `u·total`.
fn draw_index(weights: &[f64], total: f64, u: f64) -> usize {
    let target = u * total;
    let mut cumulative = 0.0;
    for (i, &w) in weights.iter().enumerate() {
        cumulative += w;
        if cumulative > target {
            return i;
        }
    }
    // Rounding left `target` at the very end: the last token with any weight.
    weights.iter().rposition(|&w| w > 0.0).unwrap_or(0)
}
