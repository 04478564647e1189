//! The sampler against a float64 re-implementation of transformers' logits processors
//! (RepetitionPenalty, Temperature, TopK, TopP, MinP) plus vLLM's presence/frequency penalties.
use std::collections::{BTreeMap, HashMap};

use rio_generate::sampling::{Rng, Sampler, SamplingParams};

fn random_logits(rng: &mut Rng, vocab: usize, scale: f64) -> Vec<f32> {
    (0..vocab).map(|_| ((rng.next_f64() * 2.0 - 1.0) * scale) as f32).collect()
}

/// transformers' processors, in f64, as a map id -> probability.
fn reference(logits: &[f32], p: &SamplingParams, prompt: &[u32], output: &[u32]) -> BTreeMap<u32, f64> {
    let mut x: Vec<f64> = logits.iter().map(|&v| v as f64).collect();
    let mut seen: Vec<u32> = prompt.iter().chain(output).copied().collect();
    seen.sort();
    seen.dedup();
    for &t in &seen {
        let v = &mut x[t as usize];
        *v = if *v < 0.0 { *v * p.repetition_penalty } else { *v / p.repetition_penalty };
    }
    let mut counts: HashMap<u32, usize> = HashMap::new();
    for &t in output {
        *counts.entry(t).or_default() += 1;
    }
    for (&t, &c) in &counts {
        x[t as usize] -= p.presence_penalty + p.frequency_penalty * c as f64;
    }
    for v in x.iter_mut() {
        *v /= p.temperature;
    }
    let mut alive: Vec<bool> = vec![true; x.len()];
    if p.top_k > 0 && p.top_k < x.len() {
        let mut sorted = x.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let kth = sorted[p.top_k - 1];
        for (a, &v) in alive.iter_mut().zip(&x) {
            *a = v >= kth;
        }
    }
    let softmax = |alive: &[bool]| -> Vec<f64> {
        let m = x.iter().zip(alive).filter(|(_, &a)| a).map(|(&v, _)| v).fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = x.iter().zip(alive).map(|(&v, &a)| if a { (v - m).exp() } else { 0.0 }).collect();
        let s: f64 = e.iter().sum();
        e.into_iter().map(|v| v / s).collect()
    };
    if p.top_p < 1.0 {
        // HF: sort ascending, drop tokens whose cumulative mass is <= 1 - top_p, keep the last.
        let probs = softmax(&alive);
        let mut order: Vec<usize> = (0..x.len()).collect();
        order.sort_by(|&a, &b| probs[a].total_cmp(&probs[b]));
        let mut cum = 0.0;
        for (rank, &i) in order.iter().enumerate() {
            cum += probs[i];
            if cum <= 1.0 - p.top_p && rank + 1 < order.len() {
                alive[i] = false;
            }
        }
    }
    if p.min_p > 0.0 {
        let probs = softmax(&alive);
        let top = probs.iter().copied().fold(0.0, f64::max);
        for (a, &q) in alive.iter_mut().zip(&probs) {
            if q < p.min_p * top {
                *a = false;
            }
        }
    }
    let probs = softmax(&alive);
    (0..x.len() as u32).filter(|&i| alive[i as usize]).map(|i| (i, probs[i as usize])).collect()
}

fn sampler_with_history(p: &SamplingParams, prompt: &[u32], output: &[u32]) -> Sampler {
    let mut s = Sampler::new(p.clone(), 7);
    s.set_prompt(prompt);
    for &t in output {
        s.record(t);
    }
    s
}

fn assert_matches_reference(logits: &[f32], p: &SamplingParams, prompt: &[u32], output: &[u32]) {
    let expected = reference(logits, p, prompt, output);
    let dist = sampler_with_history(p, prompt, output).filtered(logits);
    let got: BTreeMap<u32, f64> = dist.ids.iter().zip(&dist.probs).map(|(&i, &q)| (i, q as f64)).collect();
    assert_eq!(got.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>(), "kept ids differ for {p:?}");
    for (id, q) in &expected {
        assert!((got[id] - q).abs() < 1e-6, "p({id}) = {} vs reference {q} for {p:?}", got[id]);
    }
    assert!(dist.probs.windows(2).all(|w| w[0] >= w[1]), "distribution not sorted descending");
}

#[test]
fn filtered_distribution_matches_float64_reference() {
    let mut rng = Rng::new(1);
    let settings = [
        SamplingParams { temperature: 1.0, ..Default::default() },
        SamplingParams { temperature: 0.7, top_k: 20, ..Default::default() },
        SamplingParams { temperature: 1.3, top_p: 0.8, ..Default::default() },
        SamplingParams { temperature: 0.9, min_p: 0.05, ..Default::default() },
        SamplingParams { temperature: 0.6, top_k: 50, top_p: 0.9, min_p: 0.02, ..Default::default() },
        SamplingParams { temperature: 1.0, repetition_penalty: 1.3, ..Default::default() },
        SamplingParams {
            temperature: 0.8,
            repetition_penalty: 0.7,
            presence_penalty: 0.5,
            frequency_penalty: 0.3,
            top_p: 0.95,
            ..Default::default()
        },
        SamplingParams { temperature: 2.0, top_k: 1, ..Default::default() },
        SamplingParams { temperature: 1.0, top_p: 0.01, ..Default::default() },
    ];
    for p in &settings {
        for _ in 0..4 {
            let logits = random_logits(&mut rng, 500, 4.0);
            let prompt: Vec<u32> = (0..10).map(|_| (rng.next_u64() % 500) as u32).collect();
            let output: Vec<u32> = (0..12).map(|_| (rng.next_u64() % 40) as u32).collect();
            assert_matches_reference(&logits, p, &prompt, &output);
        }
    }
}

#[test]
fn top_p_over_a_large_flat_vocabulary() {
    // Nearly flat logits: the top-p set holds tens of thousands of tokens and the weight buckets
    // (1/16 octave each) thousands, so the cut falls inside a crowded bucket.
    let mut rng = Rng::new(2);
    let logits = random_logits(&mut rng, 60_000, 0.5);
    for p in [
        SamplingParams { temperature: 1.0, top_p: 0.9, ..Default::default() },
        SamplingParams { temperature: 1.0, top_p: 0.5, top_k: 40_000, ..Default::default() },
    ] {
        assert_matches_reference(&logits, &p, &[], &[]);
    }
}

#[test]
fn top_k_keeps_ties_with_the_kth_value_as_transformers() {
    let logits = [1.0f32, 3.0, 2.0, 2.0, 0.5];
    let p = SamplingParams { temperature: 1.0, top_k: 2, ..Default::default() };
    let dist = Sampler::new(p.clone(), 0).filtered(&logits);
    assert_eq!(dist.ids, vec![1, 2, 3]);
    assert_matches_reference(&logits, &p, &[], &[]);
}

#[test]
fn greedy_is_the_argmax_of_penalised_logits_with_ties_to_the_lower_id() {
    let logits = [0.5f32, 2.0, -1.0, 2.0, 1.9];
    let mut s = Sampler::new(SamplingParams::greedy(4), 0);
    let got = s.sample(&logits);
    assert_eq!(got.token, 1);
    let lse = logits.iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
    assert!((got.logprob as f64 - (2.0 - lse)).abs() < 1e-6);
    assert!((got.prob as f64 - (2.0 - lse).exp()).abs() < 1e-6);

    // A repetition penalty of 2 on the two 2.0s leaves 1.9 on top; the logprob is of the
    // penalised, untempered logits.
    let p = SamplingParams { repetition_penalty: 2.0, ..SamplingParams::greedy(4) };
    let mut s = sampler_with_history(&p, &[1], &[3]);
    let got = s.sample(&logits);
    assert_eq!(got.token, 4);
    let penalised = [0.5f64, 1.0, -1.0, 1.0, 1.9];
    let lse = penalised.iter().map(|v| v.exp()).sum::<f64>().ln();
    assert!((got.logprob as f64 - (1.9 - lse)).abs() < 1e-6);
    assert_eq!(s.filtered(&logits).ids, vec![4]);
}

#[test]
fn sampled_frequencies_follow_the_filtered_distribution() {
    let mut rng = Rng::new(3);
    let logits = random_logits(&mut rng, 12, 2.0);
    let p = SamplingParams { temperature: 0.8, top_p: 0.9, ..Default::default() };
    let mut s = Sampler::new(p, 42);
    let dist = s.filtered(&logits);
    let n = 40_000;
    let mut counts: HashMap<u32, usize> = HashMap::new();
    for _ in 0..n {
        *counts.entry(s.sample(&logits).token).or_default() += 1;
    }
    assert!(counts.keys().all(|t| dist.ids.contains(t)), "drew a filtered-out token");
    let chi2: f64 = dist
        .ids
        .iter()
        .zip(&dist.probs)
        .map(|(t, &q)| {
            let expected = n as f64 * q as f64;
            let observed = *counts.get(t).unwrap_or(&0) as f64;
            (observed - expected).powi(2) / expected
        })
        .sum();
    // 99.9% quantile of chi-square with <= 11 degrees of freedom is 31.3.
    assert!(chi2 < 31.3, "chi-square {chi2} over {} categories", dist.ids.len());

    // draw() samples the same distribution.
    let mut counts: HashMap<u32, usize> = HashMap::new();
    for _ in 0..n {
        *counts.entry(s.draw(&dist)).or_default() += 1;
    }
    let chi2: f64 = dist
        .ids
        .iter()
        .zip(&dist.probs)
        .map(|(t, &q)| (*counts.get(t).unwrap_or(&0) as f64 - n as f64 * q as f64).powi(2) / (n as f64 * q as f64))
        .sum();
    assert!(chi2 < 31.3, "draw(): chi-square {chi2}");
}

#[test]
fn same_seed_same_tokens_different_seed_different_tokens() {
    let mut rng = Rng::new(4);
    let rows: Vec<Vec<f32>> = (0..64).map(|_| random_logits(&mut rng, 300, 1.0)).collect();
    let p = SamplingParams { temperature: 1.0, ..Default::default() };
    let run = |seed| {
        let mut s = Sampler::new(p.clone(), seed);
        rows.iter().map(|r| s.sample(r).token).collect::<Vec<_>>()
    };
    assert_eq!(run(11), run(11));
    assert_ne!(run(11), run(12));
}

#[test]
fn logprobs_are_of_the_distribution_drawn_from() {
    let mut rng = Rng::new(5);
    let logits = random_logits(&mut rng, 200, 3.0);
    let p = SamplingParams { temperature: 0.7, top_k: 30, top_p: 0.9, ..Default::default() };
    let mut s = Sampler::new(p, 9);
    let dist = s.filtered(&logits);
    let top = s.top_logprobs(&logits, 5);
    assert_eq!(top.len(), 5.min(dist.ids.len()));
    for ((id, lp), (&did, &dp)) in top.iter().zip(dist.ids.iter().zip(&dist.probs)) {
        assert_eq!(*id, did);
        assert!((lp - dp.ln()).abs() < 1e-5);
    }
    let got = s.sample(&logits);
    let i = dist.ids.iter().position(|&t| t == got.token).expect("sampled token is in the distribution");
    assert!((got.logprob - dist.probs[i].ln()).abs() < 1e-5);

    // Greedy: the top alternatives are the log-softmax of the logits.
    let s = Sampler::new(SamplingParams::greedy(1), 0);
    let top = s.top_logprobs(&logits, 3);
    let lse = logits.iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    for ((id, lp), &want) in top.iter().zip(&order) {
        assert_eq!(*id as usize, want);
        assert!((*lp as f64 - (logits[want] as f64 - lse)).abs() < 1e-5);
    }
}

#[test]
fn bad_parameters_name_the_field() {
    let cases: Vec<(SamplingParams, &str)> = vec![
        (SamplingParams { temperature: -0.1, ..Default::default() }, "temperature"),
        (SamplingParams { temperature: f64::NAN, ..Default::default() }, "temperature"),
        (SamplingParams { top_p: 0.0, ..Default::default() }, "top_p"),
        (SamplingParams { top_p: 1.5, ..Default::default() }, "top_p"),
        (SamplingParams { min_p: -0.5, ..Default::default() }, "min_p"),
        (SamplingParams { min_p: f64::NAN, ..Default::default() }, "min_p"),
        (SamplingParams { repetition_penalty: 0.0, ..Default::default() }, "repetition_penalty"),
        (SamplingParams { presence_penalty: f64::INFINITY, ..Default::default() }, "presence_penalty"),
        (SamplingParams { frequency_penalty: f64::NAN, ..Default::default() }, "frequency_penalty"),
        (SamplingParams { max_new_tokens: 0, ..Default::default() }, "max_new_tokens"),
        (SamplingParams { stop_strings: vec![String::new()], ..Default::default() }, "stop_strings"),
    ];
    for (p, field) in cases {
        let err = p.validate().expect_err(field);
        assert!(err.to_string().starts_with(field), "{err} should name {field}");
    }
    assert!(SamplingParams::default().validate().is_ok());
}
