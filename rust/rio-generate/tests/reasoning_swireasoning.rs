//! SwiReasoning controller on hand-made logits (swireasoning spec 1.3): each step's mode,
//! switches, injections and fed embedding against a float64 re-derivation of the spec.
mod common;

use rio_generate::controller::{Controller, FinishReason, NextInput, Steer};
use rio_generate::sampling::{Sampler, SamplingParams};
use rio_generate::swireasoning::{SoftForm, SwiReasoning, SwiReasoningConfig};
use rio_generate::trace::{Mode, Switch};

const V: usize = 16;
const H: usize = 4;
const THINK: u32 = 10;
const END_THINK: u32 = 11;
const MAX_NEW: usize = 100;

fn table() -> Vec<f32> {
    (0..V * H).map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0).collect()
}

/// Logits peaked on `token` with height `a` (larger a: lower entropy).
fn peaked(token: u32, a: f32) -> Vec<f32> {
    let mut z: Vec<f32> = (0..V).map(|i| (i as f32 * 0.37).sin() * 0.1).collect();
    z[token as usize] += a;
    z
}

fn softmax64(z: &[f32]) -> Vec<f64> {
    let m = z.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let e: Vec<f64> = z.iter().map(|&x| (x as f64 - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}

fn entropy64(z: &[f32]) -> f64 {
    -softmax64(z).iter().map(|&p| p * p.max(1e-12).ln()).sum::<f64>()
}

fn soft64(z: &[f32], e: &[f32]) -> Vec<f64> {
    let p = softmax64(z);
    (0..H).map(|j| (0..V).map(|v| p[v] * e[v * H + j] as f64).sum()).collect()
}

fn mix64(soft: &[f64], keep: f64, row: u32, e: &[f32]) -> Vec<f64> {
    (0..H).map(|j| keep * soft[j] + (1.0 - keep) * e[row as usize * H + j] as f64).collect()
}

type Run = common::Run<SwiReasoning>;

fn run(cfg: SwiReasoningConfig) -> Run {
    cfg.validate(V).unwrap();
    Run::new(SwiReasoning::new(cfg), Sampler::new(SamplingParams::greedy(MAX_NEW), 0), table(), H, MAX_NEW)
}

fn cfg(window: usize) -> SwiReasoningConfig {
    SwiReasoningConfig { window, alpha0: 0.5, soft_form: SoftForm::Full, ..SwiReasoningConfig::new(THINK, END_THINK) }
}

fn assert_embedding(next: &NextInput, want: &[f64]) {
    let NextInput::Embedding(got) = next else { panic!("expected a soft input, got {next:?}") };
    for (a, b) in got.iter().zip(want) {
        assert!((*a as f64 - b).abs() < 1e-5, "{got:?} vs {want:?}");
    }
}

#[test]
fn switches_follow_the_entropy_against_the_block_reference() {
    let mut r = run(SwiReasoningConfig { step0_token_id: Some(3), ..cfg(3) });
    let e = table();
    // Step 0: latent, reference = H0, fed 0.9·pᵀE + 0.1·E[3].
    let z0 = peaked(2, 2.0);
    let d = r.step(&z0);
    let t = d.trace.clone().unwrap();
    assert_eq!((t.mode, t.switched, d.token), (Mode::Latent, None, 2));
    assert!((t.entropy as f64 - entropy64(&z0)).abs() < 1e-5);
    assert_eq!(t.ref_entropy, t.entropy);
    assert_embedding(&d.next, &mix64(&soft64(&z0, &e), 0.9, 3, &e));
    // Step 1: entropy up: still latent, plain soft input.
    let z1 = peaked(4, 1.0);
    let d = r.step(&z1);
    assert_eq!(d.trace.as_ref().unwrap().mode, Mode::Latent);
    assert_embedding(&d.next, &soft64(&z1, &e));
    // Step 2: entropy below the reference: latent→explicit at once (no window), fed
    // β·pᵀE + (1−β)·E[</think>] with β annealed (quirk 4).
    let z2 = peaked(5, 4.0);
    let d = r.step(&z2);
    let t = d.trace.clone().unwrap();
    assert_eq!((t.mode, t.switched), (Mode::Explicit, Some(Switch::ToExplicit)));
    assert!((t.ref_entropy as f64 - entropy64(&z2)).abs() < 1e-5);
    let beta = 0.7 + 0.3 * 2.0 / MAX_NEW as f64;
    assert_embedding(&d.next, &mix64(&soft64(&z2, &e), beta, END_THINK, &e));
    // Steps 3-4: entropy above the new reference but within the window: explicit, hard tokens.
    for token in [6, 7] {
        let d = r.step(&peaked(token, 1.0));
        assert_eq!((d.next.clone(), d.trace.unwrap().switched), (NextInput::Token(token), None));
    }
    // Step 5: three steps in the block: explicit→latent, fed α·pᵀE + (1−α)·E[<think>].
    let z5 = peaked(8, 1.0);
    let d = r.step(&z5);
    let t = d.trace.clone().unwrap();
    assert_eq!((t.mode, t.switched), (Mode::Latent, Some(Switch::ToLatent)));
    let alpha = 0.5 + 0.5 * 5.0 / MAX_NEW as f64;
    assert_embedding(&d.next, &mix64(&soft64(&z5, &e), alpha, THINK, &e));
    assert_eq!(r.c.mode(), "latent");
}

#[test]
fn sampled_end_think_locks_explicit_mode() {
    let mut r = run(cfg(1));
    r.step(&peaked(2, 2.0));
    // A sampled </think> in a latent step: fed hard from now on, never latent again.
    let d = r.step(&peaked(END_THINK, 1.0));
    assert_eq!(d.next, NextInput::Token(END_THINK));
    assert_eq!(d.trace.unwrap().mode, Mode::Explicit);
    for a in [0.1, 5.0, 0.0, 0.2] {
        let d = r.step(&peaked(1, a));
        assert!(!d.trace.as_ref().unwrap().fed_soft);
        assert_ne!(d.trace.unwrap().switched, Some(Switch::ToLatent));
    }
}

#[test]
fn math_tokens_are_fed_hard_in_latent_steps() {
    let mut r = run(SwiReasoningConfig { math_token_ids: vec![4], ..cfg(4) });
    r.step(&peaked(2, 2.0));
    let d = r.step(&peaked(4, 1.0));
    assert_eq!(d.next, NextInput::Token(4));
    assert_eq!(d.trace.unwrap().mode, Mode::Latent, "the override does not change the mode");
    assert!(matches!(r.step(&peaked(3, 1.0)).next, NextInput::Embedding(_)));
}

#[test]
fn switch_count_control_injects_convergence_then_termination() {
    let (c, budget) = (1, 6);
    let termination = vec![END_THINK, 12, 13];
    let mut r = run(SwiReasoningConfig {
        max_switch_count: Some(c),
        convergence_token_ids: vec![END_THINK],
        termination_token_ids: termination.clone(),
        termination_max_tokens: budget,
        ..cfg(1)
    });
    let (low, high) = (6.0, 0.5);
    r.step(&peaked(2, 3.0));
    // Switch 1 (= C): convergence </think> injected at the next step.
    assert_eq!(r.step(&peaked(2, low)).trace.unwrap().switched, Some(Switch::ToExplicit));
    let d = r.step(&peaked(3, high));
    let t = d.trace.unwrap();
    assert!(t.injected && d.token == END_THINK, "{t:?}");
    assert_eq!(t.switched, Some(Switch::ToLatent), "a forced </think> does not lock (quirk 7)");
    // Switch 2 (<= 2C): convergence again (quirk 9).
    assert_eq!(r.step(&peaked(2, low)).trace.unwrap().switched, Some(Switch::ToExplicit));
    assert_eq!(r.step(&peaked(3, high)).token, END_THINK);
    // Switch 3 (> 2C): termination text verbatim from the next step, then the answer budget.
    let d = r.step(&peaked(2, low));
    assert_eq!((d.trace.unwrap().switched, d.finish), (Some(Switch::ToExplicit), None));
    assert_eq!(r.c.switch_count(), 3);
    let mut recorded = Vec::new();
    let mut finish = None;
    for _ in 0..budget {
        let d = r.step(&peaked(9, 3.0));
        recorded.push(d.token);
        if d.finish.is_some() {
            finish = d.finish;
            break;
        }
    }
    assert_eq!(&recorded[..3], &termination[..]);
    assert_eq!(recorded.len(), budget - 1, "the trigger step counts against the budget (quirk 11)");
    assert_eq!(finish, Some(FinishReason::Budget));
}

#[test]
fn explicit_start_with_an_endless_window_is_plain_greedy() {
    let mut r = run(SwiReasoningConfig { start_explicit: true, ..cfg(usize::MAX) });
    for (i, a) in [3.0f32, 0.1, 5.0, 0.0, 2.0].into_iter().enumerate() {
        let z = peaked(i as u32 + 1, a);
        let argmax = z.iter().enumerate().fold(0, |b, (i, &v)| if v > z[b] { i } else { b }) as u32;
        let d = r.step(&z);
        assert_eq!((d.token, d.next), (argmax, NextInput::Token(argmax)));
    }
}

#[test]
fn force_switch_starts_a_new_block() {
    let mut r = run(cfg(2));
    r.step(&peaked(2, 2.0));
    let d = r.step(&peaked(3, 1.0));
    let h1 = d.trace.unwrap().entropy;
    r.c.steer(Steer::ForceSwitch).unwrap();
    assert_eq!(r.c.mode(), "explicit");
    // The new reference is the last entropy; a lower one does not switch (already explicit).
    let d = r.step(&peaked(3, 1.0));
    let t = d.trace.unwrap();
    assert_eq!((t.mode, t.switched, t.ref_entropy), (Mode::Explicit, None, h1));
    assert_eq!(d.next, NextInput::Token(3));
}

#[test]
fn pruned_form_is_close_to_the_full_form() {
    let mut full = run(cfg(4));
    let mut pruned = run(SwiReasoningConfig { soft_form: SoftForm::Pruned { max_skipped_mass: 1e-3 }, ..cfg(4) });
    for z in [peaked(2, 9.0), peaked(3, 12.0)] {
        let (a, b) = (full.step(&z).next, pruned.step(&z).next);
        let (NextInput::Embedding(a), NextInput::Embedding(b)) = (a, b) else { panic!() };
        let norm = (0..V).map(|v| table()[v * H..(v + 1) * H].iter().map(|x| x * x).sum::<f32>().sqrt()).fold(0.0, f32::max);
        let err = a.iter().zip(&b).map(|(x, y)| (x - y).powi(2)).sum::<f32>().sqrt();
        assert!(err <= 1e-3 * norm + 1e-6, "{err}");
    }
}

#[test]
fn bad_configs_name_the_field() {
    let bad = [
        (SwiReasoningConfig { window: 0, ..cfg(1) }, "window"),
        (SwiReasoningConfig { alpha0: 1.5, ..cfg(1) }, "alpha0"),
        (SwiReasoningConfig { beta0: -0.1, ..cfg(1) }, "beta0"),
        (SwiReasoningConfig { max_switch_count: Some(0), ..cfg(1) }, "max_switch_count"),
        (SwiReasoningConfig { think_token_id: 99, ..cfg(1) }, "think_token_id"),
        (SwiReasoningConfig { math_token_ids: vec![16], ..cfg(1) }, "math_token_ids"),
    ];
    for (c, field) in bad {
        let msg = c.validate(V).unwrap_err().to_string();
        assert!(msg.starts_with(field), "{msg}");
    }
}

#[test]
fn faithful_min_p_is_absolute_and_clean_min_p_is_relative() {
    // q = (0.5, 0.3, 0.2): min_p 0.5 keeps only token 0 when absolute (quirk 15), tokens 0 and 1
    // when relative to the max (threshold 0.25).
    let mut z = vec![-40.0f32; V];
    z[0] = 0.5f32.ln();
    z[1] = 0.3f32.ln();
    z[2] = 0.2f32.ln();
    let params = SamplingParams { temperature: 1.0, min_p: 0.5, ..SamplingParams::greedy(MAX_NEW) };
    let draws = |faithful: bool| {
        (0..64u64)
            .map(|seed| {
                let mut r = run(SwiReasoningConfig { faithful, ..cfg(4) });
                r.sampler = Sampler::new(params.clone(), seed);
                r.step(&z).token
            })
            .collect::<Vec<_>>()
    };
    assert!(draws(true).iter().all(|&t| t == 0));
    let clean = draws(false);
    assert!(clean.contains(&0) && clean.contains(&1) && !clean.contains(&2), "{clean:?}");
}
