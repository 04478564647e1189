//! A trained byte-level BPE tokenizer in a temporary checkpoint folder: loading, round trips,
//! streaming, special tokens, the chat template and errors that name their file.
use std::path::Path;

use rio_core::Error;
use rio_tokenizer::train::{train_byte_level_bpe, ExtraToken};
use rio_tokenizer::{map_value, Tokenizer, Value};

const TEXT: &str = "Mixture-of-experts models route every token to a few experts. \
The router picks the top-k experts; their outputs are mixed by the router's weights.\n\n\
Reasoning models think first: <think> they write a chain of thought </think> and then answer. \
Ünïcödé wörds, 中文字符, emoji 🚀🎉 and   runs of   spaces\tand tabs.\n";

fn extra_tokens() -> Vec<ExtraToken> {
    [("<|endoftext|>", true), ("<|im_start|>", true), ("<|im_end|>", true), ("<think>", false), ("</think>", false)]
        .into_iter()
        .map(|(t, special)| ExtraToken { text: t.to_string(), special })
        .collect()
}

const TEMPLATE: &str = "{%- for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
{%- if add_generation_prompt %}<|im_start|>assistant\n{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}";

fn write_checkpoint(dir: &Path, template: Option<&str>) {
    let texts: Vec<String> = TEXT.lines().map(str::to_string).collect();
    let json = train_byte_level_bpe(&texts, 400, 2, &extra_tokens()).unwrap();
    std::fs::write(dir.join("tokenizer.json"), json).unwrap();
    std::fs::write(dir.join("tokenizer_config.json"), r#"{"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "bos_token": null}"#)
        .unwrap();
    if let Some(t) = template {
        std::fs::write(dir.join("chat_template.jinja"), t).unwrap();
    }
}

fn load(template: Option<&str>) -> (tempfile::TempDir, Tokenizer) {
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), template);
    let tok = Tokenizer::from_dir(dir.path()).unwrap().expect("tokenizer.json is there");
    (dir, tok)
}

#[test]
fn training_is_deterministic_and_adds_tokens_after_the_vocabulary() {
    let texts: Vec<String> = TEXT.lines().map(str::to_string).collect();
    let a = train_byte_level_bpe(&texts, 400, 2, &extra_tokens()).unwrap();
    let b = train_byte_level_bpe(&texts, 400, 2, &extra_tokens()).unwrap();
    assert_eq!(a, b);
    let (_dir, tok) = load(None);
    let n = tok.vocab_size() as u32;
    let ids: Vec<u32> =
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"].iter().map(|t| tok.token_to_id(t).unwrap()).collect();
    assert_eq!(ids, (n - 5..n).collect::<Vec<_>>());
    let special = tok.special_tokens();
    assert_eq!(special.eos.as_ref().map(|t| t.id), Some(ids[2]));
    assert_eq!(special.pad.as_ref().map(|t| t.id), Some(ids[0]));
    assert_eq!(special.bos, None);
    assert_eq!((special.think, special.end_think), (Some(ids[3]), Some(ids[4])));
    assert!(tok.is_special(ids[0]) && !tok.is_special(ids[3]));
}

#[test]
fn any_text_round_trips_and_special_tokens_match_whole() {
    let (_dir, tok) = load(None);
    for text in [TEXT, "never seen: ζωή 🦀 \u{1F469}\u{200D}\u{1F52C}  \n\n  x", "<|im_start|>user\nhi<|im_end|>", ""] {
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(tok.decode(&ids, false).unwrap(), text);
    }
    let ids = tok.encode("a<|im_end|>b<think>c", false).unwrap();
    assert!(ids.contains(&tok.token_to_id("<|im_end|>").unwrap()) && ids.contains(&tok.token_to_id("<think>").unwrap()));
    assert_eq!(tok.decode(&ids, true).unwrap(), "ab<think>c");
    // Ids past the vocabulary (a padded embedding table) are skipped.
    assert_eq!(tok.decode(&[tok.vocab_size() as u32 + 7], false).unwrap(), "");
}

#[test]
fn streamed_deltas_never_split_a_character_and_add_up_to_the_text() {
    let (_dir, tok) = load(None);
    let text = "emoji 🚀🎉 中文字符 and ünïcödé <think>x</think>";
    let mut ids = tok.encode(text, false).unwrap();
    ids.extend(tok.encode("🚀", false).unwrap());
    for skip in [false, true] {
        let mut stream = tok.decoder(skip);
        let mut out = String::new();
        for &id in &ids {
            let delta = stream.push(id).unwrap();
            assert!(!delta.contains('\u{FFFD}'), "{delta:?}");
            out.push_str(&delta);
        }
        out.push_str(&stream.finish().unwrap());
        assert_eq!(out, tok.decode(&ids, skip).unwrap());
    }
    // A truncated character is held back, then flushed by finish as U+FFFD.
    let rocket = tok.encode("🚀", false).unwrap();
    if rocket.len() > 1 {
        let mut stream = tok.decoder(false);
        assert_eq!(stream.push(rocket[0]).unwrap(), "");
        assert_eq!(stream.finish().unwrap(), tok.decode(&rocket[..1], false).unwrap());
    }
}

#[test]
fn chat_template_renders_with_generation_prompt_and_thinking_switch() {
    let (_dir, tok) = load(Some(TEMPLATE));
    let msgs = Value::from(vec![map_value([("role", "user"), ("content", "Hi")])]);
    let on = tok.apply_chat_template(&msgs, true, Some(true), &[]).unwrap();
    assert_eq!(on, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    let off = tok.apply_chat_template(&msgs, true, Some(false), &[]).unwrap();
    assert_eq!(off, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
    assert_eq!(tok.apply_chat_template(&msgs, false, None, &[]).unwrap(), "<|im_start|>user\nHi<|im_end|>\n");
}

#[test]
fn missing_or_broken_files() {
    let dir = tempfile::tempdir().unwrap();
    assert!(Tokenizer::from_dir(dir.path()).unwrap().is_none());

    std::fs::write(dir.path().join("tokenizer.json"), "{\"model\": 3}").unwrap();
    let err = Tokenizer::from_dir(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Checkpoint { .. }) && err.to_string().contains("tokenizer.json"), "{err}");

    write_checkpoint(dir.path(), Some("{% if %}"));
    let err = Tokenizer::from_dir(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Config { .. }) && err.to_string().contains("chat_template.jinja"), "{err}");

    std::fs::remove_file(dir.path().join("chat_template.jinja")).unwrap();
    std::fs::write(dir.path().join("tokenizer_config.json"), r#"{"eos_token": "<|nope|>"}"#).unwrap();
    let err = Tokenizer::from_dir(dir.path()).unwrap_err();
    assert!(
        matches!(err, Error::Config { .. }) && err.to_string().contains("tokenizer_config.json") && err.to_string().contains("<|nope|>")
    );

    std::fs::write(dir.path().join("tokenizer_config.json"), "{}").unwrap();
    let tok = Tokenizer::from_dir(dir.path()).unwrap().unwrap();
    let msgs = Value::from(vec![map_value([("role", "user"), ("content", "Hi")])]);
    let err = tok.apply_chat_template(&msgs, true, None, &[]).unwrap_err();
    assert!(matches!(err, Error::Value { .. }) && err.to_string().contains("no chat template"), "{err}");
}
