//! The fields of `tokenizer_config.json` rio_rt uses. The file is optional; every field too.
use std::path::Path;

use rio_core::{Error, Result};
use serde_json::Value;

use crate::TOKENIZER_CONFIG_FILE;

#[derive(Debug, Default)]
pub(crate) struct TokenizerConfig {
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub pad_token: Option<String>,
    pub unk_token: Option<String>,
    pub chat_template: Option<String>,
    pub clean_up_tokenization_spaces: bool,
}

impl TokenizerConfig {
    pub fn from_dir(dir: &Path) -> Result<TokenizerConfig> {
        let path = dir.join(TOKENIZER_CONFIG_FILE);
        if !path.is_file() {
            return Ok(TokenizerConfig::default());
        }
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|e| Error::config(&shown, format!("cannot read: {e}")))?;
        Self::parse(&text, &shown)
    }

    pub fn parse(json: &str, shown: &str) -> Result<TokenizerConfig> {
        let root = match serde_json::from_str(json).map_err(|e| Error::config(shown, format!("not valid JSON: {e}")))? {
            Value::Object(obj) => obj,
            _ => return Err(Error::config(shown, "expected a JSON object at the top level")),
        };
        // A token is a string, or an AddedToken object {"content": ...}; null means none.
        let token = |key: &str| -> Result<Option<String>> {
            match root.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(Value::Object(obj)) => match obj.get("content") {
                    Some(Value::String(s)) => Ok(Some(s.clone())),
                    _ => Err(Error::config(shown, format!("{key}: expected a string or an object with a \"content\" string"))),
                },
                Some(v) => Err(Error::config(shown, format!("{key}: expected a string or an object with a \"content\" string, got {v}"))),
            }
        };
        // A template string, or a list of named templates of which transformers uses "default".
        let chat_template = match root.get("chat_template") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Array(items)) => {
                let named = |item: &Value| Some((item.get("name")?.as_str()?.to_string(), item.get("template")?.as_str()?.to_string()));
                let templates = items.iter().map(named).collect::<Option<Vec<_>>>().ok_or_else(|| {
                    Error::config(shown, "chat_template: expected a string or a list of {\"name\": ..., \"template\": ...} objects")
                })?;
                match templates.iter().find(|(name, _)| name == "default") {
                    Some((_, template)) => Some(template.clone()),
                    None => {
                        let names: Vec<&str> = templates.iter().map(|(n, _)| n.as_str()).collect();
                        return Err(Error::config(shown, format!("chat_template: named templates {names:?} include no \"default\"")));
                    }
                }
            }
            Some(v) => return Err(Error::config(shown, format!("chat_template: expected a string, got {v}"))),
        };
        let clean_up_tokenization_spaces = match root.get("clean_up_tokenization_spaces") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => return Err(Error::config(shown, format!("clean_up_tokenization_spaces: expected true or false, got {v}"))),
        };
        Ok(TokenizerConfig {
            bos_token: token("bos_token")?,
            eos_token: token("eos_token")?,
            pad_token: token("pad_token")?,
            unk_token: token("unk_token")?,
            chat_template,
            clean_up_tokenization_spaces,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_strings_or_added_token_objects_and_named_templates_pick_default() {
        let c = TokenizerConfig::parse(
            r#"{"bos_token": null, "eos_token": {"content": "<|im_end|>", "special": true}, "pad_token": "<|endoftext|>",
                "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}"#,
            "cfg",
        )
        .unwrap();
        assert_eq!(c.bos_token, None);
        assert_eq!(c.eos_token.as_deref(), Some("<|im_end|>"));
        assert_eq!(c.pad_token.as_deref(), Some("<|endoftext|>"));
        assert_eq!(c.chat_template.as_deref(), Some("D"));
        assert!(!c.clean_up_tokenization_spaces);
    }

    #[test]
    fn bad_fields_name_the_file_and_field() {
        for (json, needle) in [
            (r#"{"eos_token": 5}"#, "eos_token"),
            (r#"{"chat_template": 3}"#, "chat_template"),
            (r#"{"chat_template": [{"name": "x", "template": "y"}]}"#, "no \"default\""),
            (r#"{"clean_up_tokenization_spaces": "yes"}"#, "clean_up_tokenization_spaces"),
            ("[1]", "JSON object"),
            ("{", "not valid JSON"),
        ] {
            let msg = TokenizerConfig::parse(json, "dir/tokenizer_config.json").unwrap_err().to_string();
            assert!(msg.contains("dir/tokenizer_config.json") && msg.contains(needle), "{json}: {msg}");
        }
    }
}
