"""rio_rt.Tokenizer against independent references.

- encode / decode / vocabulary lookups against the Python ``tokenizers`` package, on the demo
  tokenizer (trained by rio_rt's Rust trainer) and on tokenizers trained here with the Python
  package: Qwen-style byte-level BPE with special and non-special added tokens, GPT-2-style
  byte-level BPE with a BOS post-processor, and a SentencePiece-style Unigram (Metaspace);
- streaming: the decoder's deltas add up to ``decode`` of all ids and never hold half a character;
- chat templates against transformers' ``apply_chat_template`` (Qwen3.5-style template with
  reasoning, tool turns, thinking on/off/default; ``tojson``, special tokens, extra variables);
- errors that name the file or argument.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import rio_rt
from rio_rt.demo import ADDED_TOKENS, CHAT_TEMPLATE, TRAINING_TEXT, build_demo_checkpoint
from rio_rt.tokenizer import Tokenizer, train_bpe_tokenizer

tokenizers = pytest.importorskip("tokenizers")

QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
              r"|\s+(?!\S)|\s+")

CORPUS = [
    "The quick brown fox jumps over the lazy dog. It's 12:45 and we've got 3.14159 reasons to smile!",
    "Mixture-of-experts layers route each token to the top-k experts; the router's weights mix them.",
    "Ünïcödé wörter, naïve café, 中文字符串的测试, 日本語のテキスト, русский текст, ελληνικά γράμματα.",
    "Emoji: 🚀🎉✨ 👩‍🔬 🇫🇷 and flags, 🤖 robots; whitespace   runs\t\ttabs\n\n\nnewlines   end.",
    "def f(x):\n    return x ** 2  # code with    indentation\n\treturn {'a': [1, 2, 3]}",
    "User: What is 2 + 2?\nAssistant: <think>\n2 + 2 = 4\n</think>\n\nThe answer is 4.",
] * 3

TEXTS = [
    "",
    "hello world",
    "The quick brown fox jumps over the lazy dog.",
    "  leading and trailing spaces   ",
    "whitespace   runs\t\t\ttabs\n\n\n\nnewlines \r\n crlf",
    "I'M SHOUTING, you're not; they'll see. WE'VE DONE IT'S",
    "numbers 1234567890 3.14159 -42 1e-7",
    "Ünïcödé café naïve, 中文字符, 日本語, русский, ελληνικά, עברית, العربية",
    "combining: e\u0301 a\u0308 (NFC composes them), precomposed: é ä",
    "emoji 🚀🎉✨ zwj 👩‍🔬 👨‍👩‍👧‍👦 flags 🇫🇷🇯🇵 skin 👍🏽",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n<think>\nok\n</think>\n\nHello!<|im_end|>",
    "glued<|im_end|>text<think>x</think>y<|endoftext|>",
    "never seen bytes: \x00\x01\x7f and \u2028 \ufeff zero-width\u200b",
]


def _qwen_style(path: Path) -> None:
    from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors, trainers
    tok = tokenizers.Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=700, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in ("<think>", "</think>")])
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}))


def _gpt2_style_with_bos(path: Path) -> None:
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, min_frequency=2, show_progress=False, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({"bos_token": {"content": "<s>", "special": True},
                                                            "eos_token": "</s>"}))


def _sentencepiece_style(path: Path) -> None:
    from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers
    tok = tokenizers.Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=300, show_progress=False, special_tokens=["<unk>", "<s>", "</s>"],
                                      unk_token="<unk>")
    tok.train_from_iterator(CORPUS, trainer)
    tok.save(str(path / "tokenizer.json"))


def _demo_style(path: Path) -> None:
    lines = [line for line in TRAINING_TEXT.splitlines() if line.strip()]
    (path / "tokenizer.json").write_text(train_bpe_tokenizer(lines, 1024, added_tokens=ADDED_TOKENS))
    (path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}))


BUILDERS = {"demo": _demo_style, "qwen": _qwen_style, "gpt2_bos": _gpt2_style_with_bos, "sentencepiece": _sentencepiece_style}


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def pair(request, tmp_path_factory):
    """(rio_rt.Tokenizer, the Python tokenizers.Tokenizer of the same file, name)."""
    folder = tmp_path_factory.mktemp(f"tok_{request.param}")
    BUILDERS[request.param](folder)
    return Tokenizer.from_pretrained(folder), tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json")), request.param


def _random_texts(n: int, seed: int) -> list:
    """Random strings over ASCII, Latin-1, CJK, emoji, whitespace and special-token pieces."""
    rng = np.random.default_rng(seed)
    pieces = list("abcXYZ019 .,!?'\n\t") + ["  ", "   ", "é", "ß", "中", "語", "🚀", "👩‍🔬", "\u0301", "<|im_end|>",
                                              "<think>", "'s", "'LL", "\r\n", "\u00a0", "𝔘"]
    return ["".join(rng.choice(pieces, size=int(rng.integers(0, 40)))) for _ in range(n)]


def test_encode_equals_tokenizers_package(pair):
    tok, ref, name = pair
    for text in TEXTS + CORPUS[:6] + _random_texts(150, seed=1):
        for add_special in (True, False):
            assert tok.encode(text, add_special_tokens=add_special) == ref.encode(text, add_special_tokens=add_special).ids, \
                (name, text, add_special)
    if name == "gpt2_bos":
        assert tok.encode("hi")[0] == tok.bos_token_id == ref.token_to_id("<s>")
        assert tok.encode("hi", add_special_tokens=False)[0] != tok.bos_token_id


def test_decode_equals_tokenizers_package(pair):
    tok, ref, name = pair
    rng = np.random.default_rng(2)
    cases = [ref.encode(t).ids for t in TEXTS + _random_texts(50, seed=3)]
    # Arbitrary id sequences: half characters, lone continuation bytes, special tokens anywhere.
    cases += [rng.integers(0, len(tok), size=int(rng.integers(1, 30))).tolist() for _ in range(200)]
    for ids in cases:
        for skip in (False, True):
            assert tok.decode(ids, skip_special_tokens=skip) == ref.decode(ids, skip_special_tokens=skip), (name, ids, skip)
    assert tok.decode(np.array(cases[1], dtype=np.int64)) == ref.decode(cases[1], skip_special_tokens=False)


def test_vocabulary_lookups_equal_tokenizers_package(pair):
    tok, ref, name = pair
    assert len(tok) == tok.vocab_size == ref.get_vocab_size(with_added_tokens=True)
    for token, i in ref.get_vocab(with_added_tokens=True).items():
        assert tok.token_to_id(token) == i
        assert tok.id_to_token(i) == token
    assert tok.token_to_id("definitely not a token ∅∅") is None
    assert tok.id_to_token(len(tok) + 5) is None
    added = ref.get_added_tokens_decoder()
    for i, t in added.items():
        assert tok.is_special(i) == t.special


def test_streaming_deltas_add_up_and_never_split_characters(pair):
    tok, ref, name = pair
    rng = np.random.default_rng(4)
    for text in TEXTS + _random_texts(60, seed=5):
        ids = ref.encode(text, add_special_tokens=False).ids
        for skip in (False, True):
            stream = tok.decoder(skip_special_tokens=skip)
            deltas = [stream.push(i) for i in ids]
            tail = stream.finish()
            assert "".join(deltas) + tail == ref.decode(ids, skip_special_tokens=skip), (name, text)
            # Valid text: no replacement character ever reaches the stream.
            if "\ufffd" not in text:
                assert not any("\ufffd" in d for d in deltas) and tail == "", (name, text, deltas)
    for _ in range(150):  # any ids at all: the pieces still add up to decode()
        ids = rng.integers(0, len(tok), size=int(rng.integers(1, 25))).tolist()
        stream = tok.decoder()
        assert "".join(stream.push(i) for i in ids) + stream.finish() == ref.decode(ids, skip_special_tokens=False)


def test_byte_level_stream_holds_a_split_emoji_back(pair):
    tok, ref, name = pair
    if name == "sentencepiece":
        pytest.skip("byte-level tokenizers only")
    # One token per byte of the rocket's four UTF-8 bytes: nothing until the last one.
    byte_ids = [ref.token_to_id(_byte_token(b)) for b in "🚀".encode()]
    assert None not in byte_ids
    stream = tok.decoder()
    assert [stream.push(i) for i in byte_ids] == ["", "", "", "🚀"]
    stream = tok.decoder()
    assert [stream.push(i) for i in byte_ids[:2]] == ["", ""]
    assert stream.finish() == ref.decode(byte_ids[:2], skip_special_tokens=False) == "\ufffd"


def _byte_token(b: int) -> str:
    """The byte-level alphabet's character for byte ``b`` (GPT-2's bytes_to_unicode)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    if b in printable:
        return chr(b)
    return chr(256 + [x for x in range(256) if x not in printable].index(b))


def test_special_tokens_from_tokenizer_config(pair):
    tok, ref, name = pair
    if name in ("qwen", "demo"):
        assert (tok.eos_token, tok.eos_token_id) == ("<|im_end|>", ref.token_to_id("<|im_end|>"))
        assert (tok.pad_token, tok.pad_token_id) == ("<|endoftext|>", ref.token_to_id("<|endoftext|>"))
        assert tok.bos_token is None and tok.bos_token_id is None
        assert (tok.think_token_id, tok.end_think_token_id) == (ref.token_to_id("<think>"), ref.token_to_id("</think>"))
        assert not tok.is_special(tok.think_token_id) and tok.is_special(tok.eos_token_id)
    elif name == "gpt2_bos":
        assert (tok.bos_token, tok.eos_token) == ("<s>", "</s>") and tok.think_token_id is None
    else:
        assert tok.eos_token is None and tok.think_token_id is None


# ----- chat templates against transformers ---------------------------------------------------------

CONVERSATIONS = {
    "user": [{"role": "user", "content": "What is 2+2?"}],
    "system_user": [{"role": "system", "content": "  You are terse.  "}, {"role": "user", "content": "Hi"}],
    "multi_turn_reasoning": [
        {"role": "system", "content": "Be helpful."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4", "reasoning_content": "2 plus 2 is 4."},
        {"role": "user", "content": "And 3+3?"},
        {"role": "assistant", "content": "<think>\n3 plus 3 is 6.\n</think>\n\n6"},
    ],
    "inline_think_before_last_query": [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "<think>\nold thoughts\n</think>\n\nA1"},
        {"role": "user", "content": "Q2 with ünïcödé 🚀"},
    ],
    "tools": [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": "", "reasoning_content": "call tools"},
        {"role": "tool", "content": "{\"paris\": 21}"},
        {"role": "tool", "content": "{\"rome\": 25}"},
        {"role": "assistant", "content": "Paris 21, Rome 25.", "reasoning": "aliased reasoning field"},
        {"role": "user", "content": "<tool_response>\nlate\n</tool_response>"},
    ],
    "none_values_dropped": [
        {"role": "user", "content": "hi", "name": None},
        {"role": "assistant", "content": "hello", "reasoning_content": None, "tool_calls": None},
        {"role": "user", "content": "again"},
    ],
}


@pytest.fixture(scope="module")
def qwen_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok_chat")
    _qwen_style(folder)
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    return folder


@pytest.fixture(scope="module")
def hf_tokenizer(qwen_folder):
    transformers = pytest.importorskip("transformers")
    hf = transformers.PreTrainedTokenizerFast(tokenizer_file=str(qwen_folder / "tokenizer.json"),
                                              eos_token="<|im_end|>", pad_token="<|endoftext|>")
    hf.chat_template = CHAT_TEMPLATE
    return hf


@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("enable_thinking", [None, True, False])
def test_chat_template_equals_transformers(qwen_folder, hf_tokenizer, conversation, add_generation_prompt, enable_thinking):
    tok = Tokenizer.from_pretrained(qwen_folder)
    messages = CONVERSATIONS[conversation]
    kwargs = {} if enable_thinking is None else {"enable_thinking": enable_thinking}
    want = hf_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt, **kwargs)
    got = tok.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, enable_thinking=enable_thinking)
    assert got == want
    ids = tok.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, enable_thinking=enable_thinking,
                                  tokenize=True)
    assert ids == hf_tokenizer.encode(want, add_special_tokens=False)


def test_thinking_switch_of_the_generation_prompt(qwen_folder):
    tok = Tokenizer.from_pretrained(qwen_folder)
    msgs = CONVERSATIONS["user"]
    assert tok.apply_chat_template(msgs, add_generation_prompt=True).endswith("<|im_start|>assistant\n<think>\n")
    assert tok.apply_chat_template(msgs, add_generation_prompt=True, enable_thinking=False).endswith(
        "<|im_start|>assistant\n<think>\n\n</think>\n\n")


TOJSON_TEMPLATE = (
    "{{ bos_token }}{%- for m in messages %}[{{ m.role }}]{{ m.content }}"
    "{%- for c in m.tool_calls or [] %}<tool_call>{{ c.function | tojson }}</tool_call>{% endfor %}"
    "{%- endfor %}|{{ extra | tojson(indent=2) }}|{{ extra | tojson(sort_keys=true) }}|{{ eos_token }}|{{ tools }}"
    "|{{ flag }}|{{ not flag }}|{{ 1.5 }}|{{ 7 // 2 }}"
)


def test_tojson_special_tokens_and_variables_equal_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    _gpt2_style_with_bos(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "chat_template": TOJSON_TEMPLATE}))
    tok = Tokenizer.from_pretrained(tmp_path)
    assert tok.chat_template == TOJSON_TEMPLATE
    hf = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"), bos_token="<s>", eos_token="</s>")
    hf.chat_template = TOJSON_TEMPLATE
    messages = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {
                "city": "Zürich \"quoted\" \\ 🚀", "days": 3, "ratio": 0.1, "tiny": 1.5e-7, "big": 1e20,
                "flags": [True, False, None], "nested": {"b": 1, "a": [1.0, -2.5]}}}}]},
    ]
    extra = {"z": 1, "ünï": "line\nbreak\ttab\x01", "list": [], "obj": {}, "f": 2.0,
             "np": [np.int64(7), np.float32(0.5), np.bool_(False)]}
    want = hf.apply_chat_template(messages, tokenize=False, extra=extra, flag=True)
    assert "|None|True|False|1.5|3" in want
    assert tok.apply_chat_template(messages, extra=extra, flag=True) == want


def test_template_errors(qwen_folder):
    tok = Tokenizer.from_pretrained(qwen_folder)
    with pytest.raises(ValueError, match="Unexpected message role: robot"):
        tok.apply_chat_template([{"role": "robot", "content": "beep"}])
    with pytest.raises(ValueError, match="empty conversation"):
        tok.apply_chat_template([])
    with pytest.raises(TypeError, match="messages: expected a list"):
        tok.apply_chat_template({"role": "user", "content": "x"})
    with pytest.raises(ValueError, match="message 0"):
        tok.apply_chat_template(["just a string"])
    with pytest.raises(TypeError, match=r"messages\[0\]\['content'\]"):
        tok.apply_chat_template([{"role": "user", "content": object()}])
    with pytest.raises(TypeError, match="enable_thinking"):
        tok.apply_chat_template(CONVERSATIONS["user"], enable_thinking="yes")


# ----- loading, errors -------------------------------------------------------------------------------

def test_broken_files_raise_errors_naming_them(tmp_path):
    assert Tokenizer.from_dir(tmp_path) is None
    with pytest.raises(rio_rt.CheckpointError, match="no tokenizer.json"):
        Tokenizer.from_pretrained(tmp_path)

    (tmp_path / "tokenizer.json").write_text("{\"version\": \"1.0\", \"model\": {\"type\": \"BPE\"")  # truncated
    with pytest.raises(rio_rt.CheckpointError, match="tokenizer.json"):
        Tokenizer.from_pretrained(tmp_path)

    _qwen_style(tmp_path)
    (tmp_path / "chat_template.jinja").write_text("{% for m in messages %}{{ m.content }")
    with pytest.raises(rio_rt.ConfigError, match="chat_template.jinja"):
        Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "chat_template.jinja").unlink()

    (tmp_path / "tokenizer_config.json").write_text("{\"eos_token\": ")
    with pytest.raises(rio_rt.ConfigError, match="tokenizer_config.json"):
        Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|not_a_token|>"}))
    with pytest.raises(rio_rt.ConfigError, match=r"tokenizer_config.json.*<\|not_a_token\|>"):
        Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ undefined_filter_user | nope }}"}))
    tok = Tokenizer.from_pretrained(tmp_path)
    with pytest.raises(rio_rt.ConfigError, match="tokenizer_config.json"):
        tok.apply_chat_template([{"role": "user", "content": "x"}])

    (tmp_path / "tokenizer_config.json").write_text("{}")
    tok = Tokenizer.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="no chat template"):
        tok.apply_chat_template([{"role": "user", "content": "x"}])
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([1, -1])
    with pytest.raises(TypeError, match="ids"):
        tok.decode("abc")
    with pytest.raises(TypeError, match="text"):
        tok.encode(123)


def test_model_tokenizer_property(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    build_demo_checkpoint(ckpt, progress=lambda _: None)
    model = rio_rt.Model.from_pretrained(ckpt)
    assert isinstance(model.tokenizer, Tokenizer) and model.tokenizer is model.tokenizer
    assert model.tokenizer.vocab_size == model.vocab_size
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors", "generation_config.json"):
        shutil.copy(ckpt / name, bare / name)
    assert rio_rt.Model.from_pretrained(bare).tokenizer is None
