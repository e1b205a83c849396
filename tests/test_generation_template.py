"""Chat templates and assistant-only loss masks, checked token by token on tiny ChatML (Llama) and
template-less (GPT-2) tokenizers."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from workbench.core.errors import InputError
from workbench.core.tasks.generation.template import (
    DEFAULT_CHAT_TEMPLATE,
    encode_conversation,
    ensure_chat_template,
    prompt_ids,
    render,
    stop_token_ids,
    stop_token_note,
)

SINGLE = [{"role": "user", "content": "What is the capital of France?"},
          {"role": "assistant", "content": "The capital of France is Paris."}]
MULTI = [{"role": "system", "content": "You are a helpful assistant. Answer briefly."},
         {"role": "user", "content": "What is the capital of France?"},
         {"role": "assistant", "content": "Paris."},
         {"role": "user", "content": "Translate to French: good morning."},
         {"role": "assistant", "content": "Bonjour."}]
# Where each backbone's template closes an answer.
END = {"llama": "<|im_end|>", "gpt2": "<|endoftext|>"}


@pytest.fixture(params=["llama", "gpt2"])
def tok(request, tiny_llama_dir, tiny_gpt2_dir):
    """A fresh tokenizer (ensure_chat_template changes it) and the marker that ends its answers."""
    folder = tiny_llama_dir if request.param == "llama" else tiny_gpt2_dir
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ensure_chat_template(tokenizer)
    return tokenizer, END[request.param]


def trained_runs(tokenizer, enc) -> list[str]:
    """The decoded text of each contiguous run of loss-carrying tokens."""
    runs: list[list[int]] = []
    previous = False
    for token, trained in zip(enc.input_ids, enc.loss_mask):
        if trained and not previous:
            runs.append([])
        if trained:
            runs[-1].append(token)
        previous = trained
    return [tokenizer.decode(run) for run in runs]


def untrained_text(tokenizer, enc) -> str:
    return tokenizer.decode([t for t, m in zip(enc.input_ids, enc.loss_mask) if not m])


def test_single_turn_trains_exactly_the_answer_and_its_end_marker(tok):
    tokenizer, end = tok
    enc = encode_conversation(tokenizer, SINGLE, max_length=512)
    assert len(enc.input_ids) == len(enc.loss_mask) and enc.truncated_tokens == 0
    assert trained_runs(tokenizer, enc) == ["The capital of France is Paris." + end]
    # Everything else (role headers, the question, the newline after the marker) carries no loss.
    full = render(tokenizer, SINGLE)
    assert untrained_text(tokenizer, enc) == full.replace("The capital of France is Paris." + end, "", 1)
    assert "Paris" not in untrained_text(tokenizer, enc)


def test_multi_turn_with_a_system_prompt_trains_both_answers_and_nothing_else(tok):
    tokenizer, end = tok
    enc = encode_conversation(tokenizer, MULTI, max_length=512)
    assert trained_runs(tokenizer, enc) == ["Paris." + end, "Bonjour." + end]
    rest = untrained_text(tokenizer, enc)
    for message in MULTI:
        if message["role"] != "assistant":
            assert message["content"] in rest
    assert "Paris" not in rest and "Bonjour" not in rest
    # Exactly the answers are missing from the untrained tokens: both assistant headers stay untrained.
    full = render(tokenizer, MULTI)
    assert rest == full.replace("Paris." + end, "", 1).replace("Bonjour." + end, "", 1)


def test_train_on_all_trains_every_token_of_the_same_encoding(tok):
    tokenizer, _ = tok
    answers = encode_conversation(tokenizer, MULTI, max_length=512)
    everything = encode_conversation(tokenizer, MULTI, max_length=512, train_on="all")
    assert everything.input_ids == answers.input_ids
    assert all(everything.loss_mask) and not all(answers.loss_mask)
    assert tokenizer.decode(everything.input_ids) == render(tokenizer, MULTI)


def test_prompt_ids_then_the_answer_tokens_are_the_full_encoding(tok):
    tokenizer, end = tok
    enc = encode_conversation(tokenizer, SINGLE, max_length=512)
    prompt = prompt_ids(tokenizer, SINGLE)
    answer = [t for t, m in zip(enc.input_ids, enc.loss_mask) if m]
    assert enc.input_ids[: len(prompt) + len(answer)] == prompt + answer
    assert not any(enc.loss_mask[: len(prompt)])
    # Only the whitespace the template writes after the end marker follows.
    assert tokenizer.decode(enc.input_ids[len(prompt) + len(answer):]).strip() == ""
    # Without an answer, prompt_ids renders all the messages with the generation prompt.
    assert prompt_ids(tokenizer, SINGLE[:1]) == prompt
    assert tokenizer.decode(prompt).endswith("ssistant:\n" if end == END["gpt2"] else "<|im_start|>assistant\n")


def test_truncation_keeps_the_first_tokens_and_counts_the_rest(tok):
    tokenizer, _ = tok
    full = encode_conversation(tokenizer, MULTI, max_length=512)
    cut = encode_conversation(tokenizer, MULTI, max_length=len(full.input_ids) - 5)
    assert cut.truncated_tokens == 5
    assert cut.input_ids == full.input_ids[:-5] and cut.loss_mask == full.loss_mask[:-5]
    # Cut before the first answer: nothing left to train, returned as is for the caller to report.
    prompt_len = len(prompt_ids(tokenizer, MULTI[:3]))
    none_left = encode_conversation(tokenizer, MULTI, max_length=prompt_len)
    assert not any(none_left.loss_mask) and none_left.truncated_tokens == len(full.input_ids) - prompt_len


def test_a_conversation_without_an_answer_trains_nothing(tok):
    tokenizer, _ = tok
    enc = encode_conversation(tokenizer, SINGLE[:1], max_length=512)
    assert enc.input_ids and not any(enc.loss_mask)


def test_ensure_chat_template_sets_the_default_and_a_pad_token_once(tiny_gpt2_dir, tiny_llama_dir):
    gpt2 = AutoTokenizer.from_pretrained(tiny_gpt2_dir)
    assert not gpt2.chat_template and gpt2.pad_token is None
    note = ensure_chat_template(gpt2)
    assert note is not None and "has no chat template: a plain one is used" in note and "padding" in note
    assert gpt2.chat_template == DEFAULT_CHAT_TEMPLATE and gpt2.pad_token == gpt2.eos_token
    assert ensure_chat_template(gpt2) is None
    assert gpt2.chat_template == DEFAULT_CHAT_TEMPLATE and gpt2.pad_token == gpt2.eos_token
    # The default template renders role-tagged turns, eos after each answer, and a generation prompt.
    assert render(gpt2, SINGLE, add_generation_prompt=False) == (
        "### User:\nWhat is the capital of France?\n\n### Assistant:\nThe capital of France is Paris.<|endoftext|>\n\n")
    assert render(gpt2, SINGLE[:1], add_generation_prompt=True).endswith("\n\n### Assistant:\n")
    # A tokenizer with its own template and pad token is left alone.
    llama = AutoTokenizer.from_pretrained(tiny_llama_dir)
    template, pad = llama.chat_template, llama.pad_token
    assert ensure_chat_template(llama) is None
    assert (llama.chat_template, llama.pad_token) == (template, pad)


def _bos_adding(folder):
    """The tiny Llama tokenizer made to put its bos before text by itself, as Llama's and Gemma's do."""
    from tokenizers import processors

    tokenizer = AutoTokenizer.from_pretrained(folder)
    bos = tokenizer.bos_token_id
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{tokenizer.bos_token} $A", special_tokens=[(tokenizer.bos_token, bos)])
    assert tokenizer("Hi")["input_ids"][0] == bos
    return tokenizer, bos


def test_bos_is_never_doubled_and_never_missing(tiny_llama_dir):
    tokenizer, bos = _bos_adding(tiny_llama_dir)
    # ChatML already starts with the bos text: exactly one bos.
    enc = encode_conversation(tokenizer, SINGLE, max_length=512)
    assert enc.input_ids[0] == bos and enc.input_ids[1] != bos
    assert prompt_ids(tokenizer, SINGLE)[:2] == enc.input_ids[:2]
    # The default template writes no bos: the one the tokenizer wants is put in front, untrained.
    tokenizer.chat_template = None
    ensure_chat_template(tokenizer)
    enc = encode_conversation(tokenizer, SINGLE, max_length=512)
    assert enc.input_ids[0] == bos and enc.input_ids[1] != bos and not enc.loss_mask[0]
    assert trained_runs(tokenizer, enc) == ["The capital of France is Paris.<|im_end|>"]
    assert prompt_ids(tokenizer, SINGLE)[0] == bos and prompt_ids(tokenizer, SINGLE)[1] != bos
    assert encode_conversation(tokenizer, SINGLE, 512, train_on="all").input_ids == enc.input_ids
    # A tokenizer that adds nothing gets nothing added.
    plain = AutoTokenizer.from_pretrained(tiny_llama_dir)
    assert encode_conversation(plain, SINGLE, 512).input_ids == plain(render(plain, SINGLE),
                                                                      add_special_tokens=False)["input_ids"]


# Drops earlier turns' reasoning (as Qwen3's does): not prefix-stable.
REASONING = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}"
    "{% generation %}"
    "{% if loop.last %}{{ message['content'] }}{% else %}{{ message['content'].split('</think>')[-1] }}{% endif %}"
    "{{ '<|im_end|>' }}"
    "{% endgeneration %}"
    "{{ '\n' }}"
    "{% else %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
THINKING = [{"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "<think>France.</think>Paris."},
            {"role": "user", "content": "And in French?"},
            {"role": "assistant", "content": "Bonjour."}]


def test_a_template_that_is_not_prefix_stable_falls_back_to_its_generation_markers(tiny_llama_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    tokenizer.chat_template = REASONING
    enc = encode_conversation(tokenizer, THINKING, max_length=512)
    assert trained_runs(tokenizer, enc) == ["Paris.<|im_end|>", "Bonjour.<|im_end|>"]
    assert "France." not in tokenizer.decode(enc.input_ids)  # the earlier reasoning was dropped

    tokenizer.chat_template = REASONING.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    with pytest.raises(InputError, match="not prefix-stable"):
        encode_conversation(tokenizer, THINKING, max_length=512)
    # Training on everything needs no answer spans.
    assert all(encode_conversation(tokenizer, THINKING, max_length=512, train_on="all").loss_mask)


def test_a_template_that_refuses_the_conversation_is_an_input_error(tiny_llama_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    tokenizer.chat_template = ("{% if messages[0]['role'] == 'system' %}"
                               "{{ raise_exception('System role not supported') }}{% endif %}"
                               + tokenizer.chat_template)
    with pytest.raises(InputError, match="cannot render this conversation: System role not supported"):
        encode_conversation(tokenizer, MULTI, max_length=512)
    with pytest.raises(InputError, match="train on"):
        encode_conversation(tokenizer, SINGLE, max_length=512, train_on="prompt")
    with pytest.raises(InputError, match="max length"):
        encode_conversation(tokenizer, SINGLE, max_length=0)


def test_stop_tokens_are_eos_and_the_end_of_turn_marker(tiny_llama_dir, tiny_gpt2_dir):
    llama = AutoTokenizer.from_pretrained(tiny_llama_dir)
    assert stop_token_ids(llama) == [llama.convert_tokens_to_ids("<|im_end|>")]
    assert stop_token_note(llama) is None
    # ChatML with eos <|endoftext|> (as Qwen2.5's base models): <|im_end|> still stops generation.
    llama.eos_token = "<|endoftext|>"
    assert stop_token_ids(llama) == [llama.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_end|>")]
    gpt2 = AutoTokenizer.from_pretrained(tiny_gpt2_dir)
    ensure_chat_template(gpt2)
    assert stop_token_ids(gpt2) == [gpt2.eos_token_id] and stop_token_note(gpt2) is None
    # A template that closes answers with plain text teaches no stop.
    gpt2.chat_template = DEFAULT_CHAT_TEMPLATE.replace("{{ eos_token }}", "")
    note = stop_token_note(gpt2)
    assert note is not None and "may not learn to stop" in note


def test_tokenizers_without_offsets_encode_piece_by_piece_to_the_same_result(tok, monkeypatch):
    tokenizer, _ = tok
    fast = encode_conversation(tokenizer, MULTI, max_length=512)
    monkeypatch.setattr(type(tokenizer), "is_fast", property(lambda self: False))
    slow = encode_conversation(tokenizer, MULTI, max_length=512)
    assert (slow.input_ids, slow.loss_mask) == (fast.input_ids, fast.loss_mask)
