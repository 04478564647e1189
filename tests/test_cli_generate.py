"""``rio-rt generate``: streams exactly the tokens ``Model.generate`` produces (text, ids, chat
template and thinking switch, sampling from generation_config.json, stops), records reasoning
traces, and reports bad arguments without a traceback."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import rio_rt
from rio_rt.cli import main
from rio_rt.demo import build_demo_checkpoint


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("generate_demo")
    build_demo_checkpoint(path, progress=lambda _: None)
    return path


@pytest.fixture(scope="module")
def model(folder):
    return rio_rt.Model.from_pretrained(folder)


def _chat_ids(model, prompt, thinking=None, system=None):
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    text = model.tokenizer.apply_chat_template(messages, add_generation_prompt=True, enable_thinking=thinking)
    return model.tokenizer.encode(text, add_special_tokens=False)


def test_streams_the_tokens_of_model_generate(folder, model, capsys):
    args = ["generate", "--model", str(folder), "--prompt", "Hello there", "--max-new-tokens", "40",
            "--temperature", "0.9", "--top-p", "0.9", "--seed", "7"]
    assert main(args) == 0
    cap = capsys.readouterr()
    want = model.generate(_chat_ids(model, "Hello there"), max_new_tokens=40, temperature=0.9, top_p=0.9, seed=7)
    assert len(want.token_ids) > 1
    assert cap.out == want.text + "\n"
    assert want.text == model.tokenizer.decode(want.token_ids, skip_special_tokens=True)
    assert f"{len(want.token_ids)} generated" in cap.err and f"finish: {want.finish_reason}" in cap.err

    assert main(args + ["--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["token_ids"] == want.token_ids and doc["text"] == want.text
    assert doc["prompt_ids"] == _chat_ids(model, "Hello there")
    assert doc["logprobs"] == pytest.approx(want.logprobs, abs=1e-6)


def test_prompt_forms_and_sampling_defaults(folder, model, capsys):
    # --no-thinking and a system prompt through the chat template; sampling values not given come
    # from generation_config.json (do_sample, temperature 0.8, top_k 20, top_p 0.95).
    assert main(["generate", "--model", str(folder), "--prompt", "Hi", "--system", "Be brief.", "--no-thinking",
                 "--max-new-tokens", "16", "--seed", "1", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    ids = _chat_ids(model, "Hi", thinking=False, system="Be brief.")
    assert doc["prompt_ids"] == ids
    assert doc["token_ids"] == model.generate(ids, max_new_tokens=16, seed=1).token_ids
    assert doc["token_ids"] == model.generate(ids, max_new_tokens=16, seed=1, temperature=0.8, top_k=20,
                                              top_p=0.95).token_ids

    assert main(["generate", "--model", str(folder), "--prompt", "plain text", "--no-chat", "--max-new-tokens", "8",
                 "--temperature", "0", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["prompt_ids"] == model.tokenizer.encode("plain text")
    assert doc["token_ids"] == model.generate(model.tokenizer.encode("plain text"), max_new_tokens=8,
                                              temperature=0.0).token_ids

    assert main(["generate", "--model", str(folder), "--prompt-ids", "5, 6,7", "--max-new-tokens", "8",
                 "--temperature", "0", "--ignore-eos", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["prompt_ids"] == [5, 6, 7] and len(doc["token_ids"]) == 8
    assert doc["token_ids"] == model.generate([5, 6, 7], max_new_tokens=8, temperature=0.0, ignore_eos=True).token_ids


def test_stop_strings_and_ids(folder, model, capsys):
    ids = _chat_ids(model, "Hello there")
    free = model.generate(ids, max_new_tokens=30, temperature=0.0, ignore_eos=True)
    stop_id = free.token_ids[5]
    assert main(["generate", "--model", str(folder), "--prompt", "Hello there", "--max-new-tokens", "30",
                 "--temperature", "0", "--ignore-eos", "--stop-id", str(stop_id), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["finish_reason"] == "stop_token" and doc["token_ids"] == free.token_ids[:free.token_ids.index(stop_id) + 1]
    stop_text = next(t for t in (model.tokenizer.decode([i]) for i in free.token_ids[3:]) if t.strip() and "\ufffd" not in t)
    assert main(["generate", "--model", str(folder), "--prompt", "Hello there", "--max-new-tokens", "30",
                 "--temperature", "0", "--ignore-eos", "--stop", stop_text, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["finish_reason"] == "stop_string" and stop_text not in doc["text"]


def test_reasoning_trace_json_plot_and_table(folder, model, tmp_path, capsys):
    trace_path, plot_path = tmp_path / "trace.json", tmp_path / "trace.png"
    assert main(["generate", "--model", str(folder), "--prompt", "Think", "--max-new-tokens", "24", "--temperature", "0",
                 "--reasoning", "swi", "--window", "4", "--max-switch-count", "3",
                 "--trace", str(trace_path), "--plot", str(plot_path)]) == 0
    cap = capsys.readouterr()
    reasoning = rio_rt.reasoning.resolve_reasoning(rio_rt.SwiReasoning(window=4, max_switch_count=3), model)
    want = model.generate(_chat_ids(model, "Think"), max_new_tokens=24, temperature=0.0, reasoning=reasoning, trace=True)
    assert json.loads(trace_path.read_text()) == json.loads(json.dumps(want.trace.to_dict()))
    assert cap.out == want.text + "\n"
    assert "entropy" in cap.err and "ref_H" in cap.err  # the trace table, on stderr
    assert plot_path.stat().st_size > 1000


@pytest.mark.parametrize("extra, message", [
    (["--trace", "t.json"], "--trace and --plot record a reasoning run"),
    (["--window", "4"], "--window and --max-switch-count need --reasoning swi"),
    (["--reasoning", "soft", "--window", "4"], "SwiReasoning settings"),
    (["--max-new-tokens", "0"], "max_new_tokens"),
    (["--temperature", "-1"], "temperature"),
])
def test_bad_arguments_report_an_error(folder, capsys, extra, message):
    assert main(["generate", "--model", str(folder), "--prompt", "x", *extra]) == 2
    err = capsys.readouterr().err
    assert "rio-rt generate: error:" in err and message in err


def test_missing_model_or_tokenizer(folder, tmp_path, capsys):
    assert main(["generate", "--model", str(tmp_path / "nope"), "--prompt", "x"]) == 2
    assert "nope" in capsys.readouterr().err
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(Path(folder) / name, bare / name)
    assert main(["generate", "--model", str(bare), "--prompt", "x"]) == 2
    assert "no tokenizer.json" in capsys.readouterr().err
    # Token ids work without a tokenizer: the ids stream instead of text.
    assert main(["generate", "--model", str(bare), "--prompt-ids", "1,2,3", "--max-new-tokens", "4",
                 "--temperature", "0", "--ignore-eos"]) == 0
    assert len(capsys.readouterr().out.split()) == 4
    assert main(["generate", "--model", str(folder), "--prompt-ids", "1,x"]) == 2
    assert "--prompt-ids" in capsys.readouterr().err


def test_native_and_python_decoders_give_the_same_text(model):
    """A plain rio_rt.Tokenizer decodes natively inside the Rust loop; a subclass goes through
    its Python ``decode``. Both must give the same text, deltas and stop-string cut."""
    from rio_rt.model import _text_decoder

    class PythonDecoded(rio_rt.Tokenizer):
        pass

    native_tok = model.tokenizer
    assert isinstance(_text_decoder(native_tok), rio_rt._rio_rt.Tokenizer)
    python_tok = PythonDecoded(native_tok._native)
    assert callable(_text_decoder(python_tok)) and not isinstance(_text_decoder(python_tok), rio_rt._rio_rt.Tokenizer)

    prompt = _chat_ids(model, "Hello there")
    kwargs = dict(max_new_tokens=40, temperature=0.9, top_p=0.9, seed=7)
    free = model.generate(prompt, **kwargs)
    stop = free.text[len(free.text) // 2:][:3]  # a stop string taken from the middle of the text
    assert stop.strip(), free.text
    runs = []
    for tok in (native_tok, python_tok):
        model._tokenizer = tok
        try:
            deltas = []
            result = model.generate(prompt, stop=[stop], stream=lambda e: deltas.append(e.text), **kwargs)
        finally:
            model._tokenizer = native_tok
        runs.append((result.text, result.token_ids, result.finish_reason, deltas))
    assert runs[0] == runs[1]
    text, _, finish, deltas = runs[0]
    assert finish == "stop_string" and "".join(deltas) == text and stop not in text
    assert free.text.startswith(text)
