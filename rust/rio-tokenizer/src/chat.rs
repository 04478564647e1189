//! Chat templates: Jinja rendered by minijinja in the environment transformers gives chat
//! templates (`transformers/utils/chat_template_utils.py`), so that a checkpoint's template gives
//! the same text here as `tokenizer.apply_chat_template(..., tokenize=False)`:
//! `trim_blocks` and `lstrip_blocks`, loop controls, Python string/dict methods (`startswith`,
//! `split`, `items`, ... through minijinja-contrib's pycompat), `raise_exception(msg)`, and a `tojson`
//! filter that writes what Python's `json.dumps` writes (not minijinja's HTML-safe JSON). Messages
//! are normalised as transformers does: keys whose value is None are dropped, and a message's
//! reasoning (`reasoning_content`, `thinking` or `reasoning`) is visible under both
//! `reasoning_content` and `thinking`.
//!
//! Not provided: `strftime_now` and the `{% generation %}` tag (assistant masks).
use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Environment, ErrorKind};
use rio_core::{Error, Result};

pub use minijinja::Value;

/// A template map that keeps its insertion order, as Python dicts do (templates may iterate a
/// message's items, and `tojson` writes keys in order).
pub fn map_value<K: Into<Value>, V: Into<Value>>(entries: impl IntoIterator<Item = (K, V)>) -> Value {
    Value::from(entries.into_iter().map(|(k, v)| (k.into(), v.into())).collect::<indexmap::IndexMap<Value, Value>>())
}

const TEMPLATE_NAME: &str = "chat_template";

/// Names transformers accepts for a message's reasoning, in its order of preference.
const REASONING_FIELDS: [&str; 3] = ["reasoning_content", "thinking", "reasoning"];

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    /// The file it came from, for errors.
    origin: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").field("origin", &self.origin).finish()
    }
}

/// The error `raise_exception` raises, told apart from template bugs when rendering fails.
#[derive(Debug)]
struct Raised(String);

impl std::fmt::Display for Raised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Raised {}

fn raise_exception(message: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message.clone()).with_source(Raised(message)))
}

impl ChatTemplate {
    /// Compiles `source`; `origin` names the file in errors (a syntax error is a config error).
    pub fn new(source: impl Into<String>, origin: &str) -> Result<ChatTemplate> {
        let mut env = Environment::new();
        let mut syntax = SyntaxConfig::builder();
        syntax.trim_blocks(true).lstrip_blocks(true);
        env.set_syntax(syntax.build().expect("the default delimiters are valid"));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", raise_exception);
        let source = source.into();
        env.add_template_owned(TEMPLATE_NAME, source.clone())
            .map_err(|e| Error::config(origin, format!("the chat template does not compile: {e}")))?;
        Ok(ChatTemplate { env, source, origin: origin.to_string() })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages` (a list of maps) with `add_generation_prompt` and the variables `vars`
    /// (special tokens, `enable_thinking`, `tools`, ...; later entries win). `tools` and
    /// `documents` are none unless `vars` sets them, as in transformers.
    pub fn render(&self, messages: &Value, add_generation_prompt: bool, vars: &[(String, Value)]) -> Result<String> {
        let messages = normalize_messages(messages)?;
        let mut context: Vec<(String, Value)> = vec![
            ("messages".to_string(), messages),
            ("tools".to_string(), Value::from(())),
            ("documents".to_string(), Value::from(())),
            ("add_generation_prompt".to_string(), Value::from(add_generation_prompt)),
        ];
        context.extend(vars.iter().cloned());
        let template = self.env.get_template(TEMPLATE_NAME).expect("added in new");
        template.render(map_value(context)).map_err(|e| {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(err) = source {
                if let Some(raised) = err.downcast_ref::<Raised>() {
                    return Error::value("messages", format!("the chat template rejected the conversation: {raised}"));
                }
                source = err.source();
            }
            Error::config(&self.origin, format!("the chat template failed: {e}"))
        })
    }
}

/// transformers' normalisation of a conversation before rendering (see the module comment).
fn normalize_messages(messages: &Value) -> Result<Value> {
    if !matches!(messages.kind(), ValueKind::Seq | ValueKind::Iterable) {
        return Err(Error::value("messages", format!("expected a list of messages, got {}", messages.kind())));
    }
    let items: Vec<Value> = messages.try_iter().map_err(|e| Error::value("messages", e.to_string()))?.collect();
    if items.is_empty() {
        return Err(Error::value("messages", "cannot apply a chat template to an empty conversation"));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, message) in items.iter().enumerate() {
        if message.kind() != ValueKind::Map {
            return Err(Error::value(
                "messages",
                format!("message {i}: expected a map with \"role\" and \"content\", got {}", message.kind()),
            ));
        }
        let entries: Vec<(Value, Value)> = message
            .try_iter()
            .map_err(|e| Error::value("messages", e.to_string()))?
            .map(|key| {
                let value = message.get_item(&key).unwrap_or_default();
                (key, value)
            })
            .filter(|(_, value)| !value.is_none() && !value.is_undefined())
            .collect();
        let reasoning =
            REASONING_FIELDS.iter().find_map(|field| entries.iter().find(|(k, _)| k.as_str() == Some(field)).map(|(_, v)| v.clone()));
        // As `{"thinking": r, **message, "reasoning_content": r}` in Python: insertion order kept.
        let mut map: Vec<(Value, Value)> = Vec::with_capacity(entries.len() + 2);
        let mut set = |key: Value, value: Value| match map.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => map.push((key, value)),
        };
        if let Some(r) = &reasoning {
            set(Value::from("thinking"), r.clone());
        }
        for (k, v) in entries {
            set(k, v);
        }
        if let Some(r) = reasoning {
            set(Value::from("reasoning_content"), r);
        }
        out.push(map_value(map));
    }
    Ok(Value::from(out))
}

/// Python's `json.dumps(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`,
/// the `tojson` transformers installs for chat templates.
fn tojson(value: &Value, kwargs: Kwargs) -> std::result::Result<String, minijinja::Error> {
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let indent: Option<usize> = kwargs.get("indent")?;
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let (item_sep, key_sep) = match separators.as_deref() {
        Some([item, key]) => (item.clone(), key.clone()),
        Some(other) => {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: separators must be two strings, got {}", other.len()),
            ));
        }
        // Python drops the trailing space of the item separator when indenting.
        None if indent.is_some() => (",".to_string(), ": ".to_string()),
        None => (", ".to_string(), ": ".to_string()),
    };
    let opts = JsonStyle { ensure_ascii: ensure_ascii.unwrap_or(false), indent, item_sep, key_sep, sort_keys: sort_keys.unwrap_or(false) };
    let mut out = String::new();
    write_json(&mut out, value, &opts, 0)?;
    Ok(out)
}

struct JsonStyle {
    ensure_ascii: bool,
    indent: Option<usize>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

fn not_serializable(value: &Value) -> minijinja::Error {
    minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: a value of kind {} is not JSON serializable", value.kind()))
}

fn write_json(out: &mut String, value: &Value, style: &JsonStyle, level: usize) -> std::result::Result<(), minijinja::Error> {
    match value.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => out.push_str(&python_number(value)),
        ValueKind::String => write_json_string(out, value.as_str().unwrap_or_default(), style.ensure_ascii),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            write_container(out, style, level, ('[', ']'), items.len(), |out, i| write_json(out, &items[i], style, level + 1))?;
        }
        ValueKind::Map => {
            let mut entries: Vec<(String, Value)> = value
                .try_iter()?
                .map(|k| Ok((json_key(&k)?, value.get_item(&k)?)))
                .collect::<std::result::Result<_, minijinja::Error>>()?;
            if style.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            write_container(out, style, level, ('{', '}'), entries.len(), |out, i| {
                write_json_string(out, &entries[i].0, style.ensure_ascii);
                out.push_str(&style.key_sep);
                write_json(out, &entries[i].1, style, level + 1)
            })?;
        }
        _ => return Err(not_serializable(value)),
    }
    Ok(())
}

fn write_container(
    out: &mut String,
    style: &JsonStyle,
    level: usize,
    (open, close): (char, char),
    len: usize,
    mut item: impl FnMut(&mut String, usize) -> std::result::Result<(), minijinja::Error>,
) -> std::result::Result<(), minijinja::Error> {
    out.push(open);
    if len == 0 {
        out.push(close);
        return Ok(());
    }
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = style.indent {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', n * level));
        }
    };
    for i in 0..len {
        if i > 0 {
            out.push_str(&style.item_sep);
        }
        newline(out, level + 1);
        item(out, i)?;
    }
    newline(out, level);
    out.push(close);
    Ok(())
}

/// A map key as Python's json writes it: strings as they are, other scalars as their JSON text.
fn json_key(key: &Value) -> std::result::Result<String, minijinja::Error> {
    Ok(match key.kind() {
        ValueKind::String => key.as_str().unwrap_or_default().to_string(),
        ValueKind::Number => python_number(key),
        ValueKind::Bool => (if key.is_true() { "true" } else { "false" }).to_string(),
        ValueKind::None => "null".to_string(),
        _ => return Err(not_serializable(key)),
    })
}

fn write_json_string(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && !(' '..='~').contains(&c)) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A number as Python's `repr` writes it: integers in full, floats in the shortest form that
/// round-trips, in exponent notation below 1e-4 and from 1e16 on.
fn python_number(value: &Value) -> String {
    if value.is_integer() {
        return value.to_string();
    }
    let x = f64::try_from(value.clone()).unwrap_or(f64::NAN);
    python_float_repr(x)
}

fn python_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "NaN".to_string();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.to_string();
    }
    // `{:e}` gives the shortest round-trip digits: "-1.2345e-5".
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').expect("`{:e}` always has an exponent");
    let exp: i32 = exp.parse().expect("integer exponent");
    let (sign, mantissa) = mantissa.strip_prefix('-').map_or(("", mantissa), |m| ("-", m));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let point = exp + 1; // the decimal point sits after this many digits
    if !(-4 < point && point <= 16) {
        let frac = &digits[1..];
        let frac = if frac.is_empty() { String::new() } else { format!(".{frac}") };
        return format!("{sign}{}{frac}e{}{:02}", &digits[..1], if exp < 0 { '-' } else { '+' }, exp.abs());
    }
    let n = digits.len() as i32;
    if point <= 0 {
        format!("{sign}0.{}{digits}", "0".repeat((-point) as usize))
    } else if point >= n {
        format!("{sign}{digits}{}.0", "0".repeat((point - n) as usize))
    } else {
        format!("{sign}{}.{}", &digits[..point as usize], &digits[point as usize..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_python_repr() {
        for (x, want) in [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (123456789.125, "123456789.125"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1.2345e300, "1.2345e+300"),
            (0.0, "0.0"),
            (f64::INFINITY, "Infinity"),
        ] {
            assert_eq!(python_float_repr(x), want, "{x}");
        }
    }

    #[test]
    fn tojson_matches_python_json_dumps() {
        let t =
            ChatTemplate::new("{{ v | tojson }}|{{ v | tojson(indent=2) }}|{{ v | tojson(sort_keys=true, separators=[',', ':']) }}", "t")
                .unwrap();
        let v = map_value([
            ("b", Value::from(vec![Value::from(1), Value::from(2.5), Value::from(())])),
            ("a", Value::from("x\"y\n\u{e9}\u{1}")),
            ("c", map_value(Vec::<(String, Value)>::new())),
        ]);
        let out = t.render(&Value::from(vec![map_value([("role", "user")])]), false, &[("v".into(), v)]).unwrap();
        // json.dumps of the same object in Python 3 (ensure_ascii=False keeps é as it is).
        let want = concat!(
            "{\"b\": [1, 2.5, null], \"a\": \"x\\\"y\\n\u{e9}\\u0001\", \"c\": {}}",
            "|",
            "{\n  \"b\": [\n    1,\n    2.5,\n    null\n  ],\n  \"a\": \"x\\\"y\\n\u{e9}\\u0001\",\n  \"c\": {}\n}",
            "|",
            "{\"a\":\"x\\\"y\\n\u{e9}\\u0001\",\"b\":[1,2.5,null],\"c\":{}}"
        );
        assert_eq!(out, want);
    }

    #[test]
    fn raise_exception_is_a_value_error_and_bugs_are_config_errors() {
        let t = ChatTemplate::new("{{ raise_exception('roles must alternate') }}", "dir/chat_template.jinja").unwrap();
        let msgs = Value::from(vec![map_value([("role", "user")])]);
        let err = t.render(&msgs, false, &[]).unwrap_err();
        assert!(matches!(err, Error::Value { .. }) && err.to_string().contains("roles must alternate"), "{err}");
        let t = ChatTemplate::new("{{ messages | no_such_filter }}", "dir/chat_template.jinja").unwrap();
        let err = t.render(&msgs, false, &[]).unwrap_err();
        assert!(matches!(err, Error::Config { .. }) && err.to_string().contains("dir/chat_template.jinja"), "{err}");
        let t = ChatTemplate::new("{% for m in messages %}", "dir/chat_template.jinja").unwrap_err();
        assert!(t.to_string().contains("does not compile"), "{t}");
    }

    #[test]
    fn messages_drop_none_and_alias_reasoning() {
        let t =
            ChatTemplate::new("{% for m in messages %}{% for k, v in m.items() %}{{ k }}={{ v }};{% endfor %}{% endfor %}", "t").unwrap();
        let msgs = Value::from(vec![map_value([
            ("role", Value::from("assistant")),
            ("content", Value::from("A")),
            ("tool_calls", Value::from(())),
            ("reasoning", Value::from("R")),
        ])]);
        assert_eq!(t.render(&msgs, false, &[]).unwrap(), "thinking=R;role=assistant;content=A;reasoning=R;reasoning_content=R;");
        assert!(t.render(&Value::from(Vec::<Value>::new()), false, &[]).is_err());
        assert!(t.render(&Value::from(vec![Value::from("hi")]), false, &[]).is_err());
    }
}
