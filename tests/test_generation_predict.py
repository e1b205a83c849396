"""Decoding (generate.py), the generation predictor, `workbench predict` on a text-generation export and
`workbench chat`: on the tiny random Llama and GPT-2 of generation_samples.py (no downloads)."""

from __future__ import annotations

import io
import json
import shutil
import threading
from pathlib import Path

import pytest

from workbench.cli.main import main
from workbench.core.cancel import CancelToken
from workbench.core.errors import Cancelled, InputError
from workbench.core.predict.generation import (
    GenerationPredictor,
    predict_generation_file,
    read_prompt_records,
    record_messages,
)
from workbench.core.tasks.generation.generate import GenerationSettings, generate_texts, stream_text
from workbench.core.tasks.generation.template import prompt_ids

QUESTIONS = ["What is the capital of France?", "Translate to French: good morning.",
             "List the entities: John lives in London. And tell me more about the cat that sat on the mat all day.",
             "Hi", "Summarise: the cat sat on the mat all day long."]
GREEDY = GenerationSettings(max_new_tokens=10)


def load(folder: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def llama(tiny_llama_dir):
    return load(tiny_llama_dir)


@pytest.fixture(scope="module")
def gen_export(tiny_llama_dir, tmp_path_factory) -> Path:
    """The tiny Llama as a text-generation export (what a training run writes, less the extras)."""
    folder = tmp_path_factory.mktemp("export") / "model"
    shutil.copytree(tiny_llama_dir, folder)
    meta = {"task": "text-generation", "generation": {"max_new_tokens": 8, "temperature": 0.0, "top_p": 1.0}}
    (folder / "workbench.json").write_text(json.dumps(meta), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def predictor(gen_export) -> GenerationPredictor:
    return GenerationPredictor(gen_export)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


# ---- decoding -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["llama", "gpt2"])
def test_greedy_batched_equals_one_by_one_in_input_order(which, llama, tiny_gpt2_dir):
    model, tok = llama if which == "llama" else load(tiny_gpt2_dir)
    if which == "llama":  # chat-templated prompts of different lengths: left padding in every batch
        prompts = [prompt_ids(tok, user(q)) for q in QUESTIONS]
    else:  # GPT-2: no chat template, no pad token, learned positions
        prompts = [list(tok(q)["input_ids"]) for q in QUESTIONS]
    assert len({len(p) for p in prompts}) == len(prompts)
    seen: list[tuple[int, int]] = []
    batched = generate_texts(model, tok, prompts, GREEDY, batch_size=2, progress=lambda d, t: seen.append((d, t)))
    alone = [generate_texts(model, tok, [p], GREEDY, batch_size=1)[0] for p in prompts]
    assert batched == alone
    assert any(batched) and len(set(batched)) > 1  # real, different answers, not all empty
    assert seen == [(2, 5), (4, 5), (5, 5)]
    for text in batched:
        assert text == text.strip() and "<|im_end|>" not in text and "<|endoftext|>" not in text


def test_generation_stops_at_eos_and_at_the_templates_end_of_turn_token(llama, tiny_llama_dir):
    import torch
    from transformers import AutoTokenizer

    from workbench.core.tasks.generation.generate import _stop_ids

    model, tok = llama
    end, other = tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")
    assert _stop_ids(model, tok) == [end]
    qwen_like = AutoTokenizer.from_pretrained(tiny_llama_dir, eos_token="<|endoftext|>")  # eos is not ChatML's end
    assert set(_stop_ids(model, qwen_like)) == {end, other}
    prompt = prompt_ids(tok, user(QUESTIONS[0]))
    original = model.lm_head.forward
    calls = []

    def forced(hidden):  # the model's third new token is <|im_end|>, whatever it would have been
        logits = original(hidden)
        calls.append(1)
        if len(calls) == 3:
            logits[..., end] = 1e4
        return logits

    model.lm_head.forward = forced
    try:
        text = generate_texts(model, qwen_like, [prompt], GREEDY)[0]
        calls.clear()
        with torch.inference_mode():
            ids = torch.tensor([prompt])
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=10,
                                 do_sample=False, eos_token_id=[end], pad_token_id=other)
    finally:
        del model.lm_head.forward
    assert out.shape[1] - len(prompt) == 3 and out[0, -1] == end  # two tokens, then <|im_end|>
    assert text == tok.decode(out[0, len(prompt):], skip_special_tokens=True).strip()


def test_stream_joins_to_the_greedy_answer_and_closing_it_stops_the_thread(llama):
    model, tok = llama
    settings = GenerationSettings(max_new_tokens=24)
    for q in QUESTIONS[:3]:
        prompt = prompt_ids(tok, user(q))
        pieces = list(stream_text(model, tok, prompt, settings))
        assert "".join(pieces) == generate_texts(model, tok, [prompt], settings)[0]
        assert all(pieces)
    before = threading.active_count()
    stream = stream_text(model, tok, prompt_ids(tok, user(QUESTIONS[2])), GenerationSettings(max_new_tokens=200))
    next(stream, None)
    stream.close()  # the consumer goes away: the generation thread ends, it does not run to 200 tokens
    assert threading.active_count() == before
    stop = threading.Event()
    stop.set()  # checked after each new token: the answer ends after its first
    prompt = prompt_ids(tok, user("Hi"))
    assert "".join(stream_text(model, tok, prompt, GREEDY, stop=stop)) == generate_texts(
        model, tok, [prompt], GenerationSettings(max_new_tokens=1))[0]


def test_sampling_repeats_per_seed_and_leaves_the_global_random_state(llama):
    import torch

    model, tok = llama
    prompts = [prompt_ids(tok, user(q)) for q in QUESTIONS]
    hot = GenerationSettings(max_new_tokens=10, temperature=1.5, top_p=0.95, seed=7)
    state = torch.random.get_rng_state()
    first = generate_texts(model, tok, prompts, hot)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert generate_texts(model, tok, prompts, hot) == first
    assert generate_texts(model, tok, prompts, hot.updated(seed=8)) != first
    assert first != generate_texts(model, tok, prompts, GREEDY)


def test_cancel_between_batches(llama):
    model, tok = llama
    prompts = [prompt_ids(tok, user(q)) for q in QUESTIONS]
    cancel = CancelToken()
    done: list[int] = []

    def progress(d: int, total: int) -> None:
        done.append(d)
        cancel.cancel()

    with pytest.raises(Cancelled):
        generate_texts(model, tok, prompts, GREEDY, batch_size=2, cancel=cancel, progress=progress)
    assert done == [2]


def test_settings_round_trip_and_bad_values_are_named(tmp_path):
    s = GenerationSettings(max_new_tokens=32, temperature=0.7, top_p=0.9, seed=3, repetition_penalty=1.1)
    assert GenerationSettings.from_dict(s.to_dict()) == s
    assert GenerationSettings.from_dict({"max_new_tokens": 5, "future_key": 1}) == GenerationSettings(max_new_tokens=5)
    assert GenerationSettings.from_dict(None) == GenerationSettings()
    assert GenerationSettings().greedy and not s.greedy
    for bad, words in (({"top_p": 0}, "top_p"), ({"temperature": -1}, "temperature"), ({"max_new_tokens": 0},
                       "max_new_tokens"), ({"max_new_tokens": "5"}, "whole number"), ({"top_p": float("nan")}, "number")):
        with pytest.raises(InputError, match=words) as e:
            GenerationSettings.from_dict(bad, path=tmp_path / "workbench.json")
        assert str(tmp_path / "workbench.json") in str(e.value)


def test_a_prompt_longer_than_the_context_is_an_input_error(llama):
    model, tok = llama
    with pytest.raises(InputError, match="prompt 2: the prompt has 300 tokens; the model reads at most 256"):
        generate_texts(model, tok, [[5, 6], [5] * 300], GREEDY)
    with pytest.raises(InputError, match="empty"):
        generate_texts(model, tok, [[]], GREEDY)


# ---- the predictor --------------------------------------------------------------------------------------

def test_predictor_chat_complete_stream_and_batch(predictor, llama):
    model, tok = llama
    assert predictor.settings == GenerationSettings(max_new_tokens=8)
    assert str(predictor.device) == "cpu" and predictor.context_length == 256
    conversations = [user(q) for q in QUESTIONS]
    conversations[1] = [{"role": "system", "content": "You are a helpful assistant."}, *conversations[1]]
    answers = predictor.generate_batch(conversations, batch_size=2)
    assert answers == [predictor.chat(m) for m in conversations]
    assert answers[0] == generate_texts(model, tok, [prompt_ids(tok, conversations[0])], predictor.settings)[0]
    assert "".join(predictor.stream_chat(conversations[0])) == answers[0]
    longer = GenerationSettings(max_new_tokens=16)
    assert predictor.chat(conversations[0], longer).startswith(answers[0])
    text = predictor.complete("The capital of France is")
    assert text == generate_texts(model, tok, [list(tok("The capital of France is")["input_ids"])],
                                  predictor.settings)[0]
    assert "".join(predictor.stream_complete("The capital of France is")) == text
    assert predictor.count_tokens("Bonjour. Bonjour.") == len(tok("Bonjour. Bonjour.", add_special_tokens=False)
                                                                ["input_ids"])
    # A trailing assistant turn is the answer: the model answers the turns before it.
    assert predictor.chat([*conversations[0], {"role": "assistant", "content": "Paris."}]) == answers[0]
    assert predictor.describe()["generation"]["max_new_tokens"] == 8


def test_a_long_chat_drops_its_oldest_turns_to_fit(predictor):
    long_turn = "The capital of France is Paris. " * 12
    history = [{"role": "system", "content": "Be brief."}]
    for _ in range(4):
        history += [{"role": "user", "content": long_turn}, {"role": "assistant", "content": long_turn}]
    history.append({"role": "user", "content": "Hi"})
    fitted = predictor.fit(history)
    assert fitted[0]["role"] == "system" and fitted[-1] == history[-1] and len(fitted) < len(history)
    assert predictor.prompt_problem(predictor.prompt_ids(fitted)) is None
    with pytest.raises(InputError, match="reads at most"):
        predictor.fit(user(long_turn * 4))


def test_bad_export_folders_are_named(gen_export, tmp_path):
    with pytest.raises(InputError, match="model folder not found") as e:
        GenerationPredictor(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(e.value)
    with pytest.raises(InputError, match="not a Workbench export"):
        GenerationPredictor(tmp_path)
    other = tmp_path / "classifier"
    shutil.copytree(gen_export, other)
    (other / "workbench.json").write_text(json.dumps({"task": "text-classification"}))
    with pytest.raises(InputError, match="not text-generation") as e:
        GenerationPredictor(other)
    assert str(other) in str(e.value)
    (other / "workbench.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        GenerationPredictor(other)
    (other / "workbench.json").write_text(json.dumps({"task": "text-generation", "generation": {"top_p": 3}}))
    with pytest.raises(InputError, match="top_p"):
        GenerationPredictor(other)
    (other / "workbench.json").write_text(json.dumps({"task": "text-generation"}))  # no settings: the defaults
    (other / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(InputError, match="its model cannot be loaded") as e:
        GenerationPredictor(other)
    assert "Traceback" not in str(e.value)


# ---- prompt files ---------------------------------------------------------------------------------------

def test_records_in_every_format_read_to_the_conversation_to_answer():
    assert record_messages({"messages": user("Hi")}) == ("messages", user("Hi"), None)
    assert record_messages({"messages": [*user("Hi"), {"role": "assistant", "content": "Hello"}]}) == (
        "messages", user("Hi"), "Hello")
    assert record_messages({"conversations": [{"from": "human", "value": "Hi"}]}) == ("sharegpt", user("Hi"), None)
    assert record_messages({"prompt": "Hi", "completion": "Hello", "system": "Be brief."}) == (
        "prompt", [{"role": "system", "content": "Be brief."}, *user("Hi")], None)
    assert record_messages({"instruction": "Translate", "input": "good morning", "output": "Bonjour"}) == (
        "alpaca", user("Translate\n\ngood morning"), "Bonjour")
    assert record_messages({"instruction": "Say hi", "input": ""})[1] == user("Say hi")
    for bad, words in (({"text": "x"}, "none of 'messages'"), ([1], "not an object"),
                       ({"messages": [{"role": "robot", "content": "x"}]}, "unknown role 'robot'"),
                       ({"messages": [{"role": "system", "content": "x"}]}, "nothing to answer"),
                       ({"prompt": "  "}, "empty"), ({"prompt": 3}, "not a string"), ({"messages": []}, "empty")):
        with pytest.raises(ValueError, match=words):
            record_messages(bad)


def test_a_json_list_names_the_line_of_each_item(tmp_path):
    path = tmp_path / "prompts.json"
    path.write_text('[\n  {"prompt": "a"},\n  {"text": "b"},\n  {"prompt":\n    "c"}\n]\n', encoding="utf-8")
    entries = list(read_prompt_records(path))
    assert [getattr(e, "line", getattr(e, "where", None)) for e in entries] == [2, 3, 4]
    assert "none of 'messages'" in entries[1].message  # type: ignore[union-attr]


def write_jsonl(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), encoding="utf-8")
    return path


def test_predict_answers_jsonl_records_in_order_with_bad_lines_named(gen_export, predictor, tmp_path, capsys):
    records = [
        {"messages": user(QUESTIONS[0])},
        {"prompt": QUESTIONS[1], "completion": "Bonjour."},
        "{not json",
        {"instruction": "Translate to French", "input": "good morning", "output": "Bonjour."},
        {"text": "no known key"},
        {"conversations": [{"from": "human", "value": QUESTIONS[3]}, {"from": "gpt", "value": "Hello"}]},
        {"messages": [{"role": "user", "content": "x"}, {"role": "wizard", "content": "y"}]},
        {"messages": [{"role": "system", "content": "Be brief."}, *user(QUESTIONS[4])], "id": 7},
    ]
    src = write_jsonl(tmp_path / "prompts.jsonl", records)
    code = main(["predict", str(gen_export), str(src), "-q", "--batch-size", "2", "--max-new-tokens", "6"])
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    target = tmp_path / "prompts.predictions.jsonl"
    assert summary["output"] == str(target) and summary["rows"] == 5 and summary["skipped"] == 3
    assert summary["task"] == "text-generation" and summary["generation"]["max_new_tokens"] == 6
    assert f"{src}, line 3: is not valid JSON" in err
    assert f"{src}, line 5: has none of 'messages'" in err
    assert f"{src}, line 7: turn 2 of 'messages' has the unknown role 'wizard'" in err
    rows = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    six = GenerationSettings(max_new_tokens=6)
    expect = [predictor.chat(m, six) for m in (user(QUESTIONS[0]), user(QUESTIONS[1]),
                                                user("Translate to French\n\ngood morning"), user(QUESTIONS[3]),
                                                [{"role": "system", "content": "Be brief."}, *user(QUESTIONS[4])])]
    assert [r["output"] for r in rows] == expect
    assert rows[0] == {"messages": [*user(QUESTIONS[0]), {"role": "assistant", "content": expect[0]}],
                       "output": expect[0]}
    assert rows[1] == {"prompt": QUESTIONS[1], "completion": "Bonjour.", "output": expect[1]}
    assert rows[2] == {"instruction": "Translate to French", "input": "good morning", "reference": "Bonjour.",
                       "output": expect[2]}
    assert rows[3]["conversations"] == [{"from": "human", "value": QUESTIONS[3]}, {"from": "gpt", "value": expect[3]}]
    assert rows[3]["reference"] == "Hello"
    assert rows[4]["id"] == 7 and rows[4]["messages"][-1] == {"role": "assistant", "content": expect[4]}


def test_predict_answers_a_text_file_one_prompt_a_line(gen_export, predictor, tmp_path, capsys):
    src = tmp_path / "prompts.txt"
    src.write_bytes(b"\xef\xbb\xbf" + "\n".join(QUESTIONS[:3]).encode() + b"\n\n  \nbad \xff byte\n" + b"Hi\n")
    out_file = tmp_path / "answers.jsonl"
    code = main(["predict", str(gen_export), str(src), "-o", str(out_file), "-q"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"{src}, line 6: is not valid UTF-8 text" in err
    rows = [json.loads(line) for line in out_file.read_text(encoding="utf-8").splitlines()]
    assert [r["prompt"] for r in rows] == [*QUESTIONS[:3], "Hi"]
    assert [r["output"] for r in rows] == predictor.generate_batch([user(r["prompt"]) for r in rows])
    assert list(rows[0]) == ["prompt", "output"]
    # An existing output is replaced only when asked.
    assert main(["predict", str(gen_export), str(src), "-o", str(out_file), "-q"]) == 2
    assert "exists already" in capsys.readouterr().err


def test_predict_refuses_what_does_not_apply_and_all_bad_inputs(gen_export, tmp_path, capsys):
    src = write_jsonl(tmp_path / "bad.jsonl", ["{oops", {"text": "x"}])
    assert main(["predict", str(gen_export), str(src), "-q"]) == 2
    err = capsys.readouterr().err
    assert "no record could be answered: all 2 were bad (first: line 1: is not valid JSON" in err
    assert not (tmp_path / "bad.predictions.jsonl").exists()
    good = write_jsonl(tmp_path / "good.jsonl", [{"prompt": "Hi"}])
    assert main(["predict", str(gen_export), str(good), "--backend", "onnx", "-q"]) == 2
    assert "--backend onnx do(es) not apply to a text-generation model" in capsys.readouterr().err
    assert main(["predict", str(gen_export), str(good), "--top-p", "1.5", "-q"]) == 2
    assert "top_p = 1.5: must be above 0 and at most 1" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    assert main(["predict", str(gen_export), str(empty), "-q"]) == 2
    assert "holds no prompts" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "empty.txt", "good.jsonl"]


def test_an_interrupted_predict_leaves_no_output(predictor, tmp_path):
    src = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": q} for q in QUESTIONS])
    cancel = CancelToken()

    class CancelOnProgress:
        def on_event(self, event) -> None:
            cancel.cancel()

    with pytest.raises(Cancelled):
        predict_generation_file(predictor, src, batch_size=1, callbacks=CancelOnProgress(),  # type: ignore[arg-type]
                                cancel=cancel)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prompts.jsonl"]


# ---- workbench chat -------------------------------------------------------------------------------------

def test_chat_streams_answers_keeps_the_history_resets_and_quits_at_eof(gen_export, predictor, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{QUESTIONS[0]}\n\n{QUESTIONS[1]}\n/nonsense\n/reset\n"
                                                 f"{QUESTIONS[0]}\n"))
    assert main(["chat", str(gen_export), "--system", "Be brief.", "--max-new-tokens", "6"]) == 0
    out, err = capsys.readouterr()
    six = GenerationSettings(max_new_tokens=6)
    system = [{"role": "system", "content": "Be brief."}]
    first = predictor.chat([*system, *user(QUESTIONS[0])], six)
    second = predictor.chat([*system, *user(QUESTIONS[0]), {"role": "assistant", "content": first},
                             *user(QUESTIONS[1])], six)
    assert first and second
    assert out == f"{first}\n{second}\n{first}\n"  # after /reset the same question gets the first answer again
    assert "unknown command /nonsense" in err and "(a new conversation)" in err


def test_ctrl_c_stops_the_answer_not_the_chat(gen_export, predictor, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{QUESTIONS[2]}\n{QUESTIONS[0]}\n/exit\n{QUESTIONS[1]}\n"))

    class Terminal(io.StringIO):
        interrupted = False

        def write(self, text: str) -> int:
            if not Terminal.interrupted and text.strip():
                Terminal.interrupted = True
                raise KeyboardInterrupt  # as Ctrl+C arrives while the first answer is written
            return super().write(text)

    from workbench.cli.chat import cmd_chat
    from workbench.cli.main import build_parser

    screen = Terminal()
    before = threading.active_count()
    args = build_parser().parse_args(["chat", str(gen_export)])
    assert cmd_chat(args, stdout=screen) == 0
    assert threading.active_count() == before  # the first answer's generation thread was stopped
    assert "(stopped)" in capsys.readouterr().err
    # The first answer was cut before any text, so its turn is dropped; the second is answered in full,
    # and /exit ends the chat before the third.
    assert screen.getvalue() == f"\n{predictor.chat(user(QUESTIONS[0]))}\n"
