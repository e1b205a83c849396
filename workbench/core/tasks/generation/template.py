"""Chat templates and the loss mask of a conversation: which tokens a fine-tuned causal LM learns to write.

A conversation is rendered once with the tokenizer's own chat template and tokenized once. The tokens
that carry loss are found by character spans: assistant message i starts where the rendering of
``messages[:i]`` plus the generation prompt ends, and ends where the rendering of ``messages[:i+1]``
ends (less the whitespace after its end-of-turn marker). So the role headers are never trained, and the
marker that closes each answer (``<|im_end|>``, eos) always is: without it the model never learns to stop.
That only holds when the template is prefix-stable (earlier turns render the same whatever follows);
templates that are not (e.g. ones that drop earlier reasoning) need ``{% generation %}`` markers.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import InputError

# Role-tagged turns for tokenizers without a template (GPT-2, base models). eos closes each answer so the
# model learns to stop; the blank line after it is not trained. No bos here: tokenizers that want one
# get it from encode (see _wants_bos), so it is never doubled.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '### ' + message['role'] | capitalize + ':\n' + message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
    "{{ '\n\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Assistant:\n' }}{% endif %}"
)

TRAIN_ON = ("assistant", "all")
_GENERATION_TAG = re.compile(r"{%-?\s*generation\s*-?%}")
_WANTS_BOS: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()
_PROBE = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]


@dataclass
class Encoded:
    input_ids: list[int]
    loss_mask: list[bool]  # True where the token is a target (the caller shifts labels itself)
    truncated_tokens: int  # how many tokens max_length cut off the end


def backbone_name(tokenizer) -> str:
    """The name a message gives the backbone: its folder or Hub name."""
    name = str(getattr(tokenizer, "name_or_path", "") or "")
    return Path(name).name or name or "this backbone"


def ensure_chat_template(tokenizer) -> str | None:
    """Give a tokenizer without a chat template the plain default one, and one without a pad token its
    eos token. Returns a note for the log when it changed something, None otherwise (so a second call
    changes nothing and says nothing)."""
    name = backbone_name(tokenizer)
    notes = []
    if not tokenizer.chat_template:
        if tokenizer.eos_token is None:
            raise InputError(f"{name} has neither a chat template nor an end-of-sequence token, so a fine-tuned "
                             "model could not learn where an answer ends; pick another backbone")
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
        notes.append(f"{name} has no chat template: a plain one is used ('### User:' / '### Assistant:' turns, "
                     f"each answer ended by {tokenizer.eos_token})")
    if tokenizer.pad_token is None:
        # pad == eos is safe because the loss mask comes from encode_conversation, not from the pad id, so
        # the eos that ends an answer is still trained.
        fill = tokenizer.eos_token or tokenizer.unk_token
        if fill is not None:
            tokenizer.pad_token = fill
            notes.append(f"{'it' if notes else name} has no padding token, so {fill} pads (padding is left out "
                         "of the loss, so the model still learns to stop)")
    return "; ".join(notes) + "." if notes else None


def encode_conversation(tokenizer, messages: list[dict[str, str]], max_length: int,
                        train_on: str = "assistant") -> Encoded:
    """Token ids of the rendered conversation and which of them carry loss: with "assistant" exactly each
    assistant turn's content plus the end-of-turn marker that closes it; with "all" every token. Keeps
    the first ``max_length`` tokens. A mask with nothing left to train is returned as is (the caller
    reports it)."""
    if train_on not in TRAIN_ON:
        raise InputError(f"train on {train_on!r}? Use one of: {', '.join(TRAIN_ON)}")
    if max_length < 1:
        raise InputError(f"max length must be at least 1 token, not {max_length}")
    text = render(tokenizer, messages)
    if train_on == "all":
        ids, _ = _tokenize(tokenizer, text, offsets=False)
        mask = [True] * len(ids)
    else:
        ids, mask = _assistant_mask(tokenizer, messages, text)
    cut = max(0, len(ids) - max_length)
    return Encoded(ids[:max_length], mask[:max_length], cut)


def prompt_ids(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    """What generation starts from: the messages before the answer (all of them when the last is not an
    assistant turn) rendered with the generation prompt, tokenized as encode_conversation does."""
    head = messages[:-1] if messages and messages[-1].get("role") == "assistant" else messages
    ids, _ = _tokenize(tokenizer, render(tokenizer, head, add_generation_prompt=True), offsets=False)
    return ids


def stop_token_ids(tokenizer) -> list[int]:
    """The ids that end an answer: eos, and the token the chat template closes an assistant turn with
    when that is another special token (ChatML's ``<|im_end|>`` where eos is ``<|endoftext|>``)."""
    stops = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    last = _last_trained_token(tokenizer)
    if last is not None and last not in stops and _is_special(tokenizer, last):
        stops.append(last)
    return stops


def stop_token_note(tokenizer) -> str | None:
    """A warning when the chat template closes an answer with no special token (so the trained span
    holds nothing that teaches the model to stop); None when it does."""
    last = _last_trained_token(tokenizer)
    if last is not None and (last == tokenizer.eos_token_id or _is_special(tokenizer, last)):
        return None
    return (f"the chat template of {backbone_name(tokenizer)} ends an answer with no end-of-turn token, so the "
            "fine-tuned model may not learn to stop; generation will run to the token limit")


def render(tokenizer, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    """The conversation as text, by the tokenizer's chat template; a template that refuses it (roles
    out of order, a system turn it does not support) is an InputError naming the backbone."""
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as err:  # jinja's TemplateError from raise_exception, or a KeyError/TypeError inside it
        raise InputError(f"the chat template of {backbone_name(tokenizer)} cannot render this conversation: "
                         f"{err}") from err
    if not isinstance(text, str):
        raise InputError(f"the chat template of {backbone_name(tokenizer)} did not render to text")
    return text


def _assistant_mask(tokenizer, messages: list[dict[str, str]], text: str) -> tuple[list[int], list[bool]]:
    spans = _assistant_spans(tokenizer, messages, text)
    if spans is None:
        return _generation_tag_mask(tokenizer, messages, text)
    if not getattr(tokenizer, "is_fast", False):
        return _encode_segments(tokenizer, text, spans)
    ids, offsets = _tokenize(tokenizer, text, offsets=True)
    # A token is trained when its characters overlap an answer span (zero-width tokens, e.g. a bos
    # added here, never do).
    mask = [any(a < end and b > start for start, end in spans) for a, b in offsets]
    return ids, mask


def _assistant_spans(tokenizer, messages: list[dict[str, str]], text: str) -> list[tuple[int, int]] | None:
    """Character spans of each assistant turn's content + end marker in ``text``; None when the template
    is not prefix-stable (a prefix of the conversation does not render to a prefix of the text)."""
    spans = []
    for i, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        before = render(tokenizer, messages[:i], add_generation_prompt=True)
        upto = render(tokenizer, messages[: i + 1])
        if not (text.startswith(before) and text.startswith(upto) and len(upto) >= len(before)):
            return None
        # The newline a template writes after the end marker is the next turn's business, not the answer's.
        spans.append((len(before), max(len(before), len(upto.rstrip()))))
    return spans


def _generation_tag_mask(tokenizer, messages: list[dict[str, str]], text: str) -> tuple[list[int], list[bool]]:
    """The mask from the template's own ``{% generation %}`` markers, for templates that are not
    prefix-stable; without markers there is no sound way to find the answers."""
    source = tokenizer.get_chat_template() if hasattr(tokenizer, "get_chat_template") else tokenizer.chat_template
    if not isinstance(source, str) or not _GENERATION_TAG.search(source):
        raise InputError(
            f"the chat template of {backbone_name(tokenizer)} renders earlier turns differently once later turns "
            "follow (it is not prefix-stable) and has no {% generation %} markers, so the answer tokens cannot be "
            "told apart; train on all tokens, or give the tokenizer a template that is prefix-stable"
        )
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = list(out["input_ids"]), [bool(m) for m in out["assistant_masks"]]
    if _needs_bos(tokenizer, text):
        return [tokenizer.bos_token_id] + ids, [False] + mask
    return ids, mask


def _encode_segments(tokenizer, text: str, spans: list[tuple[int, int]]) -> tuple[list[int], list[bool]]:
    """For tokenizers without offsets (slow ones): tokenize prompt and answer pieces apart and join them."""
    cuts, pos = [], 0
    for start, end in spans:
        cuts += [(pos, start, False), (start, end, True)]
        pos = end
    cuts.append((pos, len(text), False))
    ids: list[int] = [tokenizer.bos_token_id] if _needs_bos(tokenizer, text) else []
    mask = [False] * len(ids)
    for a, b, trained in cuts:
        if b > a:
            piece = list(tokenizer(text[a:b], add_special_tokens=False)["input_ids"])
            ids += piece
            mask += [trained] * len(piece)
    return ids, mask


def _tokenize(tokenizer, text: str, offsets: bool) -> tuple[list[int], list[tuple[int, int]]]:
    """One tokenization of rendered text. Special tokens are not added (the template wrote the ones it
    wants), except a bos the tokenizer always adds and the template did not write."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=offsets)
    ids = list(enc["input_ids"])
    spans = [(int(a), int(b)) for a, b in enc["offset_mapping"]] if offsets else []
    if _needs_bos(tokenizer, text):
        ids = [tokenizer.bos_token_id] + ids
        spans = [(0, 0)] + spans if offsets else spans
    return ids, spans


def _needs_bos(tokenizer, text: str) -> bool:
    return _wants_bos(tokenizer) and not text.startswith(tokenizer.bos_token)


def _wants_bos(tokenizer) -> bool:
    """Whether the tokenizer puts a bos before text by itself (Llama, Gemma) — the models expect it."""
    try:
        return _WANTS_BOS[tokenizer]
    except (KeyError, TypeError):
        pass
    bos = tokenizer.bos_token_id
    wants = bos is not None and tokenizer.bos_token is not None
    if wants:
        with_specials = list(tokenizer("a", add_special_tokens=True)["input_ids"])
        plain = list(tokenizer("a", add_special_tokens=False)["input_ids"])
        wants = with_specials[:1] == [bos] and plain[:1] != [bos]
    try:
        _WANTS_BOS[tokenizer] = wants
    except TypeError:  # not weak-referenceable: compute again next time
        pass
    return wants


def _last_trained_token(tokenizer) -> int | None:
    """The last token a one-turn probe conversation trains: the template's end-of-turn marker."""
    try:
        enc = encode_conversation(tokenizer, _PROBE, max_length=1 << 20)
    except InputError:
        return None
    trained = [t for t, m in zip(enc.input_ids, enc.loss_mask) if m]
    return trained[-1] if trained else None


def _is_special(tokenizer, token_id: int) -> bool:
    if token_id in set(tokenizer.all_special_ids):
        return True
    token = tokenizer.convert_ids_to_tokens(token_id)
    added = tokenizer.get_added_vocab() if hasattr(tokenizer, "get_added_vocab") else {}
    return isinstance(token, str) and token in added
