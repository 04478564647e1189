//! The decode loop on a toy model whose logits are a fixed function of (last token, position):
//! batching, stop conditions, text, observers, embedding inputs.
use std::sync::atomic::{AtomicUsize, Ordering};

use rio_core::{Error, Result, TensorRef};
use rio_generate::controller::{Controller, Decision, FinishReason, NextInput, Steer, StepContext};
use rio_generate::generate::{generate, GenerateOptions, Observer, Output, Request, StepEvent};
use rio_generate::sampling::SamplingParams;
use rio_model::cache::ModelCache;
use rio_model::config::GenerationConfig;
use rio_model::layers::Input;
use rio_model::CausalLm;

const VOCAB: usize = 16;
const HIDDEN: usize = 2;
const EOS: u32 = 15;

/// Logits of the token after `token` at `position`: a hash, so that every step differs. Its
/// embedding row `t` is `[t, 0]`; an embedding input `[x, _]` acts as token `round(x)`.
struct Toy {
    table: Vec<f32>,
    generation_config: GenerationConfig,
    forward_rows: AtomicUsize,
}

impl Toy {
    fn new() -> Toy {
        let table = (0..VOCAB).flat_map(|t| [t as f32, 0.0]).collect();
        Toy { table, generation_config: GenerationConfig::default(), forward_rows: AtomicUsize::new(0) }
    }

    fn logits(token: u32, position: usize) -> Vec<f32> {
        (0..VOCAB as u64)
            .map(|j| {
                let mut h = (token as u64 * 1_000_003 + position as u64 * 7919 + j * 104_729).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                h ^= h >> 29;
                (h % 1000) as f32 / 250.0
            })
            .collect()
    }
}

impl CausalLm for Toy {
    fn model_type(&self) -> &'static str {
        "toy"
    }
    fn vocab_size(&self) -> usize {
        VOCAB
    }
    fn hidden_size(&self) -> usize {
        HIDDEN
    }
    fn num_layers(&self) -> usize {
        1
    }
    fn eos_token_ids(&self) -> Vec<u32> {
        vec![EOS]
    }
    fn generation_config(&self) -> &GenerationConfig {
        &self.generation_config
    }
    fn new_cache(&self) -> ModelCache {
        ModelCache::attention_only(1, 1, 1)
    }
    fn embedding_table(&self) -> TensorRef<'_> {
        TensorRef::from_slice(&self.table, &[VOCAB, HIDDEN]).unwrap()
    }
    fn embed(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        Ok(tokens.iter().flat_map(|&t| [t as f32, 0.0]).collect())
    }
    fn forward(&self, input: Input<'_>, cache: &mut ModelCache, logits_to_keep: usize) -> Result<Vec<f32>> {
        let tokens: Vec<u32> = match input {
            Input::Tokens(t) => t.to_vec(),
            Input::Embeddings(e) => e.chunks(HIDDEN).map(|row| row[0].round() as u32).collect(),
        };
        self.forward_rows.fetch_add(tokens.len(), Ordering::Relaxed);
        let start = cache.position();
        cache.advance(tokens.len());
        let keep = if logits_to_keep == 0 { tokens.len() } else { logits_to_keep };
        Ok((tokens.len() - keep..tokens.len()).flat_map(|i| Toy::logits(tokens[i], start + i)).collect())
    }
}

fn argmax(x: &[f32]) -> u32 {
    (0..x.len()).fold(0, |best, i| if x[i] > x[best] { i } else { best }) as u32
}

/// Greedy decoding, written out step by step against the toy's logits.
fn greedy_reference(prompt: &[u32], n: usize) -> Vec<u32> {
    let mut tokens = prompt.to_vec();
    for _ in 0..n {
        let pos = tokens.len() - 1;
        tokens.push(argmax(&Toy::logits(*tokens.last().unwrap(), pos)));
    }
    tokens[prompt.len()..].to_vec()
}

fn ignore_eos(max_new_tokens: usize) -> SamplingParams {
    SamplingParams { ignore_eos: true, ..SamplingParams::greedy(max_new_tokens) }
}

fn run(model: &Toy, requests: Vec<Request>) -> Vec<Output> {
    generate(model, requests, &GenerateOptions::default(), None).unwrap()
}

#[test]
fn greedy_follows_the_logits_and_batches_equal_solo_runs() {
    let model = Toy::new();
    let prompts = [vec![1, 2, 3], vec![4], vec![5, 6, 7, 8, 9, 10]];
    let batch = run(&model, prompts.iter().map(|p| Request::new(p.clone(), ignore_eos(20))).collect());
    for (prompt, out) in prompts.iter().zip(&batch) {
        assert_eq!(out.token_ids, greedy_reference(prompt, 20));
        assert_eq!(out.finish_reason, FinishReason::Length);
        let solo = run(&model, vec![Request::new(prompt.clone(), ignore_eos(20))]);
        assert_eq!(&solo[0], out);
    }
}

#[test]
fn seeded_sampling_in_a_batch_reproduces_solo_runs() {
    let model = Toy::new();
    let params = |seed| SamplingParams { temperature: 1.0, seed: Some(seed), ..ignore_eos(30) };
    let batch = run(&model, vec![Request::new(vec![1, 2], params(5)), Request::new(vec![3], params(6))]);
    let solo = run(&model, vec![Request::new(vec![3], params(6))]);
    assert_eq!(batch[1], solo[0]);
    let other_seed = run(&model, vec![Request::new(vec![3], params(7))]);
    assert_ne!(other_seed[0].token_ids, solo[0].token_ids);
}

#[test]
fn finish_reasons() {
    let model = Toy::new();
    let prompt = vec![1, 2, 3];
    let free = greedy_reference(&prompt, 40);
    // A stop id (and then an EOS id) taken from the free run ends the run at its first occurrence.
    let first = free[3];
    let until_first = free[..=free.iter().position(|&t| t == first).unwrap()].to_vec();
    let params = SamplingParams { stop_token_ids: vec![first], ..ignore_eos(40) };
    let out = run(&model, vec![Request::new(prompt.clone(), params)]);
    assert_eq!(out[0].token_ids, until_first);
    assert_eq!(out[0].finish_reason, FinishReason::StopToken);

    let eos_options = GenerateOptions { eos_token_ids: Some(&[first]), ..Default::default() };
    let out = generate(&model, vec![Request::new(prompt.clone(), SamplingParams::greedy(40))], &eos_options, None).unwrap();
    assert_eq!(out[0].finish_reason, FinishReason::Eos);
    assert_eq!(out[0].token_ids, until_first);
    let out = generate(&model, vec![Request::new(prompt.clone(), ignore_eos(40))], &eos_options, None).unwrap();
    assert_eq!(out[0].token_ids, free);

    let out = run(&model, vec![Request::new(prompt.clone(), ignore_eos(1))]);
    assert_eq!((out[0].token_ids.clone(), out[0].finish_reason), (free[..1].to_vec(), FinishReason::Length));
}

#[test]
fn finished_sequences_leave_the_batch() {
    let model = Toy::new();
    let requests = vec![Request::new(vec![1], ignore_eos(2)), Request::new(vec![2], ignore_eos(10))];
    run(&model, requests);
    // Prefill 2 rows, then 1 + 9 decode rows (the first sequence is done after its 2nd token).
    assert_eq!(model.forward_rows.load(Ordering::Relaxed), 2 + 1 + 9);
}

/// id t decodes to the letter 'a' + t.
fn letters(ids: &[u32]) -> Result<String> {
    Ok(ids.iter().map(|&t| (b'a' + t as u8) as char).collect())
}

struct Recorder {
    events: Vec<StepEvent>,
    stop_at: Option<(usize, usize)>,
    fail_at: Option<usize>,
}

impl Observer for Recorder {
    fn on_step(&mut self, events: &[StepEvent]) -> Result<Vec<(usize, Steer)>> {
        self.events.extend_from_slice(events);
        let step = events[0].step;
        if self.fail_at == Some(step) {
            return Err(Error::value("callback", "boom"));
        }
        Ok(match self.stop_at {
            Some((request, at)) if at == step => vec![(request, Steer::Stop)],
            _ => vec![],
        })
    }
}

#[test]
fn stop_strings_cut_the_text_and_stream_deltas_add_up() {
    let model = Toy::new();
    let free = greedy_reference(&[1, 2], 30);
    let full = letters(&free).unwrap();
    // A two-letter stop string that first appears at some point of the free text.
    let stop = full[6..8].to_string();
    let at = full.find(&stop).unwrap();
    let options = GenerateOptions { decoder: Some(&letters), ..Default::default() };
    let params = SamplingParams { stop_strings: vec![stop.clone(), "zz".into()], ..ignore_eos(30) };
    let mut rec = Recorder { events: vec![], stop_at: None, fail_at: None };
    let out = generate(&model, vec![Request::new(vec![1, 2], params)], &options, Some(&mut rec)).unwrap();
    assert_eq!(out[0].finish_reason, FinishReason::StopString);
    assert_eq!(out[0].text.as_deref(), Some(&full[..at]));
    assert_eq!(out[0].token_ids, free[..at + 2].to_vec());
    let streamed: String = rec.events.iter().map(|e| e.text_delta.clone().unwrap()).collect();
    assert_eq!(streamed, full[..at]);
    assert_eq!(rec.events.iter().map(|e| e.token_id).collect::<Vec<_>>(), out[0].token_ids);
    assert_eq!(rec.events.last().unwrap().finish_reason, Some(FinishReason::StopString));
    assert!(rec.events[..rec.events.len() - 1].iter().all(|e| e.finish_reason.is_none()));

    // Without a decoder, stop strings are refused.
    let params = SamplingParams { stop_strings: vec!["x".into()], ..ignore_eos(3) };
    let err = generate(&model, vec![Request::new(vec![1], params)], &GenerateOptions::default(), None).unwrap_err();
    assert!(err.to_string().contains("stop_strings"), "{err}");
}

#[test]
fn observer_can_stop_a_sequence_and_its_errors_end_the_generation() {
    let model = Toy::new();
    let requests = || vec![Request::new(vec![1], ignore_eos(10)), Request::new(vec![2], ignore_eos(10))];
    let mut rec = Recorder { events: vec![], stop_at: Some((1, 3)), fail_at: None };
    let out = generate(&model, requests(), &GenerateOptions::default(), Some(&mut rec)).unwrap();
    assert_eq!(out[1].finish_reason, FinishReason::Callback);
    assert_eq!(out[1].token_ids, greedy_reference(&[2], 4));
    assert_eq!(out[0].token_ids, greedy_reference(&[1], 10));

    let mut rec = Recorder { events: vec![], stop_at: None, fail_at: Some(2) };
    let err = generate(&model, requests(), &GenerateOptions::default(), Some(&mut rec)).unwrap_err();
    assert!(err.to_string().contains("boom"));
    assert_eq!(rec.events.len(), 2 * 3);
}

/// Feeds every token back as its embedding row, and ends after 5 tokens.
struct ViaEmbeddings;

impl Controller for ViaEmbeddings {
    fn step(&mut self, cx: StepContext<'_>) -> Result<Decision> {
        let s = cx.sampler.sample(cx.logits);
        let row = cx.embeddings.index0(s.token as usize).as_slice::<f32>().unwrap().to_vec();
        let finish = (cx.step == 4).then_some(FinishReason::Budget);
        Ok(Decision { token: s.token, logprob: s.logprob, next: NextInput::Embedding(row), finish, trace: None })
    }
}

#[test]
fn embedding_inputs_equal_token_inputs_and_controllers_can_finish() {
    let model = Toy::new();
    let request = Request { prompt: vec![3, 4], params: ignore_eos(20), controller: Box::new(ViaEmbeddings), trace: false };
    let out = run(&model, vec![request]);
    assert_eq!(out[0].token_ids, greedy_reference(&[3, 4], 5));
    assert_eq!(out[0].finish_reason, FinishReason::Budget);
}

#[test]
fn logprobs_and_top_alternatives() {
    let model = Toy::new();
    let params = SamplingParams { logprobs: 3, ..ignore_eos(4) };
    let out = run(&model, vec![Request::new(vec![1], params)]);
    let mut tokens = vec![1u32];
    for (i, (&t, top)) in out[0].token_ids.iter().zip(&out[0].top_logprobs).enumerate() {
        let logits = Toy::logits(*tokens.last().unwrap(), tokens.len() - 1);
        let lse = logits.iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
        assert!((out[0].logprobs[i] as f64 - (logits[t as usize] as f64 - lse)).abs() < 1e-5);
        assert_eq!(top.len(), 3);
        assert_eq!(top[0].0, t);
        tokens.push(t);
    }
}

#[test]
fn bad_requests_name_the_request_and_field() {
    let model = Toy::new();
    let err = generate(
        &model,
        vec![Request::new(vec![1], ignore_eos(2)), Request::new(vec![], ignore_eos(2))],
        &GenerateOptions::default(),
        None,
    )
    .unwrap_err();
    assert!(err.to_string().starts_with("requests[1].prompt"), "{err}");
    let err = generate(&model, vec![Request::new(vec![99], ignore_eos(2))], &GenerateOptions::default(), None).unwrap_err();
    assert!(err.to_string().contains("out of range"), "{err}");
    let bad = SamplingParams { top_p: 2.0, ..ignore_eos(2) };
    let err = generate(&model, vec![Request::new(vec![1], bad)], &GenerateOptions::default(), None).unwrap_err();
    assert!(err.to_string().starts_with("requests[0].top_p"), "{err}");
}
