//! Soft Thinking controller on hand-made logits (swireasoning spec 2.2-2.3, oracles T1-T5):
//! concept tokens against a float64 filter, Cold Stop, the one-way switch.
mod common;

use rio_generate::controller::{Controller, NextInput};
use rio_generate::sampling::{Sampler, SamplingParams};
use rio_generate::soft_thinking::{ConceptNoise, SoftThinking, SoftThinkingConfig};
use rio_generate::trace::{Mode, Switch};

const V: usize = 64;
const H: usize = 6;
const END_THINK: u32 = 11;

fn table() -> Vec<f32> {
    (0..V * H).map(|i| ((i * 53 % 31) as f32 - 15.0) / 9.0).collect()
}

fn logits(seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..V)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32 * scale
        })
        .collect()
}

fn peaked(token: u32, a: f32) -> Vec<f32> {
    let mut z = logits(7, 0.5);
    z[token as usize] += a;
    z
}

/// Spec 2.2 in float64 over a full sort: softmax(z/T), top-k renorm, top-p renorm, relative
/// min-p renorm, top-K renorm.
fn concept64(z: &[f32], c: &SoftThinkingConfig) -> (Vec<u32>, Vec<f64>, f64) {
    let t = c.temperature as f64;
    let m = z.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let e: Vec<f64> = z.iter().map(|&x| ((x as f64 - m) / t).exp()).collect();
    let s: f64 = e.iter().sum();
    let p: Vec<f64> = e.iter().map(|x| x / s).collect();
    let h = -p.iter().map(|&x| x * x.max(1e-12).ln()).sum::<f64>();
    let mut order: Vec<u32> = (0..V as u32).collect();
    order.sort_by(|&a, &b| p[b as usize].total_cmp(&p[a as usize]).then(a.cmp(&b)));
    let mut kept: Vec<(u32, f64)> = order.iter().map(|&i| (i, p[i as usize])).collect();
    let renorm = |k: &mut Vec<(u32, f64)>| {
        let s: f64 = k.iter().map(|x| x.1).sum();
        k.iter_mut().for_each(|x| x.1 /= s);
    };
    if c.filter_top_k > 0 {
        kept.truncate(c.filter_top_k);
    }
    renorm(&mut kept);
    let mut cum = 0.0;
    let n = kept.iter().position(|x| {
        cum += x.1;
        cum >= c.top_p as f64
    });
    kept.truncate(n.map_or(kept.len(), |i| i + 1));
    renorm(&mut kept);
    let floor = c.min_p as f64 * kept[0].1;
    kept.retain(|x| x.1 >= floor);
    kept.truncate(c.top_k);
    renorm(&mut kept);
    (kept.iter().map(|x| x.0).collect(), kept.iter().map(|x| x.1).collect(), h)
}

type Run = common::Run<SoftThinking>;

fn run(cfg: SoftThinkingConfig, params: SamplingParams) -> Run {
    cfg.validate(V).unwrap();
    Run::new(SoftThinking::new(cfg), Sampler::new(params, 5), table(), H, 1000)
}

fn cfg() -> SoftThinkingConfig {
    SoftThinkingConfig { cold_stop_entropy: 0.0, ..SoftThinkingConfig::new(END_THINK) }
}

#[test]
fn concept_tokens_match_a_float64_filter() {
    let e = table();
    for (seed, scale, c) in [
        (1, 3.0, cfg()),
        (2, 6.0, SoftThinkingConfig { top_k: 4, top_p: 0.8, min_p: 0.05, temperature: 1.0, ..cfg() }),
        (3, 2.0, SoftThinkingConfig { filter_top_k: 0, top_k: 20, top_p: 0.9, min_p: 0.0, ..cfg() }),
        (4, 9.0, SoftThinkingConfig { top_k: 15, filter_top_k: 5, top_p: 1.0, min_p: 0.001, ..cfg() }),
    ] {
        let z = logits(seed, scale);
        let (ids, w, h) = concept64(&z, &c);
        let mut r = run(c, SamplingParams::greedy(10));
        let d = r.step(&z);
        let t = d.trace.unwrap();
        assert!((t.entropy as f64 - h).abs() < 1e-5, "entropy {} vs {h}", t.entropy);
        assert_eq!((d.token, t.mode, t.fed_soft), (ids[0], Mode::Latent, ids.len() > 1), "T2: recorded token = top concept id");
        assert!((t.token_prob as f64 - w[0]).abs() < 1e-6);
        if ids.len() > 1 {
            let NextInput::Embedding(got) = d.next else { panic!() };
            for j in 0..H {
                let want: f64 = ids.iter().zip(&w).map(|(&i, &wi)| wi * e[i as usize * H + j] as f64).sum();
                assert!((got[j] as f64 - want).abs() < 1e-5);
            }
        }
    }
}

#[test]
fn one_entry_concepts_are_greedy_tokens() {
    // T1: K = 1 at any temperature, and temperature 0, feed the argmax as a hard token.
    for c in [SoftThinkingConfig { top_k: 1, temperature: 1.3, ..cfg() }, SoftThinkingConfig { temperature: 0.0, ..cfg() }] {
        let mut r = run(c, SamplingParams::greedy(10));
        for seed in 0..5 {
            let z = logits(seed, 4.0);
            let argmax = z.iter().enumerate().fold(0, |b, (i, &v)| if v > z[b] { i } else { b }) as u32;
            let d = r.step(&z);
            assert_eq!((d.token, d.next), (argmax, NextInput::Token(argmax)));
        }
    }
}

#[test]
fn cold_stop_replaces_the_lth_low_entropy_token_and_thinking_ends() {
    let c = SoftThinkingConfig { cold_stop_entropy: 0.05, cold_stop_steps: 3, ..cfg() };
    let mut r = run(c, SamplingParams::greedy(10));
    let (low, high) = (peaked(4, 30.0), peaked(4, 1.0));
    // Two low, one high (resets), then three low: the third is replaced by </think>.
    for z in [&low, &low, &high, &low, &low] {
        let d = r.step(z);
        assert!(!d.trace.unwrap().injected);
    }
    let d = r.step(&low);
    let t = d.trace.unwrap();
    assert_eq!((d.token, t.injected, t.switched, t.mode), (END_THINK, true, Some(Switch::ToExplicit), Mode::Explicit));
    assert_eq!(d.next, NextInput::Token(END_THINK));
    // T4: one way; answers come from the request's sampler, fed hard.
    for seed in 0..4 {
        let d = r.step(&logits(seed, 1.0));
        assert!(!d.trace.unwrap().fed_soft);
        assert!(matches!(d.next, NextInput::Token(_)));
    }
    assert_eq!(r.c.mode(), "explicit");
}

#[test]
fn a_natural_end_think_ends_thinking_and_zero_tau_never_stops() {
    let mut r = run(cfg(), SamplingParams::greedy(10));
    for _ in 0..50 {
        assert_ne!(r.step(&peaked(4, 40.0)).token, END_THINK, "τ = 0: no Cold Stop");
    }
    let d = r.step(&peaked(END_THINK, 40.0));
    assert_eq!((d.next, d.trace.unwrap().switched), (NextInput::Token(END_THINK), Some(Switch::ToExplicit)));
    assert_eq!(r.c.mode(), "explicit");
}

#[test]
fn thinking_consumes_no_randomness_without_noise() {
    // T5: same thinking phase whatever the sampler's seed; the answer phase samples.
    let params = SamplingParams { temperature: 1.0, ..SamplingParams::greedy(10) };
    let run = |seed| {
        let mut r = run(cfg(), params.clone());
        r.sampler = Sampler::new(params.clone(), seed);
        (0..6).map(|s| r.step(&logits(s, 2.0)).next).collect::<Vec<_>>()
    };
    assert_eq!(run(1), run(2));
}

#[test]
fn noise_keeps_a_normalised_concept_and_is_seeded() {
    for noise in [ConceptNoise::Gumbel { tau: 0.5 }, ConceptNoise::Dirichlet { alpha: 1.0 }] {
        let c = SoftThinkingConfig { noise: Some(noise), noise_seed: Some(9), ..cfg() };
        let mut a = run(c.clone(), SamplingParams::greedy(10));
        let mut b = run(c, SamplingParams::greedy(10));
        let z = logits(3, 2.0);
        let (da, db) = (a.step(&z), b.step(&z));
        assert_eq!((da.token, &da.next), (db.token, &db.next));
        let NextInput::Embedding(_) = da.next else { panic!() };
        let p = da.trace.unwrap().token_prob;
        assert!(p > 0.0 && p <= 1.0);
    }
}

#[test]
fn bad_configs_name_the_field() {
    for (c, field) in [
        (SoftThinkingConfig { top_k: 0, ..cfg() }, "top_k"),
        (SoftThinkingConfig { cold_stop_entropy: -0.1, ..cfg() }, "cold_stop_entropy"),
        (SoftThinkingConfig { cold_stop_steps: 0, ..cfg() }, "cold_stop_steps"),
        (SoftThinkingConfig { top_p: 0.0, ..cfg() }, "top_p"),
        (SoftThinkingConfig { end_think_token_id: 64, ..cfg() }, "end_think_token_id"),
        (SoftThinkingConfig { noise: Some(ConceptNoise::Gumbel { tau: 0.0 }), ..cfg() }, "gumbel_tau"),
    ] {
        let msg = c.validate(V).unwrap_err().to_string();
        assert!(msg.starts_with(field), "{msg}");
    }
}
