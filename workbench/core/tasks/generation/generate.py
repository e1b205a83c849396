"""Decoding: answers of a causal language model to prompts (token ids), batched or streamed.

    settings = GenerationSettings(max_new_tokens=64)           # temperature 0: greedy
    generate_texts(model, tokenizer, [ids_a, ids_b], settings)  # ["answer a", "answer b"], in input order
    for piece in stream_text(model, tokenizer, ids_a, settings): print(piece, end="")

Batches are formed by prompt length and padded on the left (a causal LM writes after the last token
of every row), with attention masks, so a greedy answer is the same batched or alone. Generation stops
at eos and at the chat template's end-of-turn token (``<|im_end|>`` where eos is another token). Only
the new tokens are decoded, special tokens left out, surrounding whitespace stripped. Sampling
(temperature > 0) is seeded per call from ``settings.seed``, so the same call gives the same answers;
the global random state is left as it was.
"""

from __future__ import annotations

import contextlib
import math
import threading
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Generator, Iterator, Mapping

from ...cancel import CancelToken
from ...errors import InputError
from .template import stop_token_ids

TASK = "text-generation"


@dataclass
class GenerationSettings:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0: greedy (the most likely token each step); above 0: sampling
    top_p: float = 1.0  # sampling: the smallest set of tokens whose probabilities reach top_p
    seed: int = 0  # sampling: the same seed gives the same answers
    repetition_penalty: float = 1.0  # 1: none; above 1 makes tokens already written less likely

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, path: str | Path | None = None) -> GenerationSettings:
        """Settings from a JSON object (an export's ``generation``, a request); keys it lacks take the
        defaults, keys it does not know are ignored (a newer export). InputError naming ``path`` when a
        value is of the wrong kind or out of range."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise InputError(f"the generation settings are {type(data).__name__}, not an object of settings", path=path)
        known = {f.name for f in fields(cls)}
        return cls().updated(path=path, **{k: v for k, v in data.items() if k in known})

    def updated(self, path: str | Path | None = None, **changes: Any) -> GenerationSettings:
        """A copy with ``changes`` (None values leave a setting as it is: unset command-line flags),
        checked."""
        out = replace(self, **{k: v for k, v in changes.items() if v is not None})
        out.check(path)
        return out

    def check(self, path: str | Path | None = None) -> None:
        def bad(name: str, rule: str) -> InputError:
            return InputError(f"generation setting {name} = {getattr(self, name)!r}: {rule}", path=path)

        for name in ("max_new_tokens", "seed"):
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), int):
                raise bad(name, "must be a whole number")
        for name in ("temperature", "top_p", "repetition_penalty"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise bad(name, "must be a number")
            setattr(self, name, float(value))
        if self.max_new_tokens < 1:
            raise bad("max_new_tokens", "must be at least 1")
        if self.temperature < 0:
            raise bad("temperature", "must be 0 (greedy) or more")
        if not 0 < self.top_p <= 1:
            raise bad("top_p", "must be above 0 and at most 1")
        if self.repetition_penalty <= 0:
            raise bad("repetition_penalty", "must be above 0 (1 is none)")


def context_length(model) -> int | None:
    """How many positions the model reads (prompt and answer together), when its config says."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_prompt_length(model, n_tokens: int, settings: GenerationSettings) -> str | None:
    """Why a prompt of ``n_tokens`` cannot be answered (empty, or no room left in the model's context
    for even one new token), or None."""
    if n_tokens == 0:
        return "the prompt is empty: there is nothing to answer"
    limit = context_length(model)
    if limit is not None and n_tokens >= limit:
        return (f"the prompt has {n_tokens:,} tokens; the model reads at most {limit:,} (prompt and answer "
                "together): shorten it")
    return None


def _stop_ids(model, tokenizer) -> list[int]:
    """eos (the tokenizer's and the model's generation config's) and the template's end-of-turn token."""
    stops = stop_token_ids(tokenizer) if getattr(tokenizer, "chat_template", None) else []
    config = getattr(model, "generation_config", None)
    extra = getattr(config, "eos_token_id", None)
    for token in ([extra] if isinstance(extra, int) else list(extra or [])) + [tokenizer.eos_token_id]:
        if isinstance(token, int) and token not in stops:
            stops.append(token)
    return stops


def _pad_id(tokenizer, stops: list[int]) -> int:
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    return stops[0] if stops else 0  # left padding is masked out: any id will do


def _is_stopped(stop: Any) -> bool:
    if stop is None:
        return False
    if isinstance(stop, CancelToken):
        return stop.cancelled
    return bool(stop.is_set())


def _generate_kwargs(model, settings: GenerationSettings, stops: list[int], pad: int, width: int,
                     halt: Callable[[], bool]) -> dict[str, Any]:
    """model.generate's arguments. Every decoding setting is given, so the export's generation_config
    (a backbone's sampling defaults, its top_k) does not silently change what the settings say."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _Halt(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            import torch

            return torch.full((input_ids.shape[0],), halt(), dtype=torch.bool, device=input_ids.device)

    limit = context_length(model)
    new_tokens = settings.max_new_tokens if limit is None else max(1, min(settings.max_new_tokens, limit - width))
    if settings.greedy:  # the library's neutral values: a backbone's sampling defaults would only warn
        decoding = {"do_sample": False, "temperature": 1.0, "top_p": 1.0, "top_k": 50}
    else:  # top_p alone truncates (top_k 0 is off), as OpenAI-style clients expect
        decoding = {"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p, "top_k": 0}
    return {"max_new_tokens": new_tokens, "min_new_tokens": 0, "eos_token_id": stops, "pad_token_id": pad,
            "repetition_penalty": settings.repetition_penalty, "num_beams": 1, **decoding,
            "stopping_criteria": StoppingCriteriaList([_Halt()])}


@contextlib.contextmanager
def _seeded(seed: int, device):
    """The global random state as it was afterwards; seeded inside, so sampling repeats call to call."""
    import torch

    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _left_padded(prompts: list[list[int]], pad: int, device):
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        if prompt:
            ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
            mask[row, width - len(prompt):] = 1
    return ids.to(device), mask.to(device)


def _device_of(model):
    import torch

    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def generate_texts(model, tokenizer, prompts: list[list[int]], settings: GenerationSettings, batch_size: int = 8,
                   cancel: CancelToken | None = None,
                   progress: Callable[[int, int], None] | None = None) -> list[str]:
    """The answer to each prompt (token ids, e.g. ``template.prompt_ids``), in input order. Batches of up to
    ``batch_size`` prompts of similar length; ``cancel`` is checked between batches and between tokens
    (Cancelled); ``progress(done, total)`` after each batch. InputError for an empty prompt or one that
    leaves no room in the model's context."""
    settings.check()
    if batch_size < 1:
        raise InputError(f"the batch size must be at least 1, not {batch_size}")
    for i, prompt in enumerate(prompts):
        problem = check_prompt_length(model, len(prompt), settings)
        if problem:
            raise InputError(f"prompt {i + 1}: {problem}")
    import torch

    total = len(prompts)
    answers = [""] * total
    order = sorted(range(total), key=lambda i: len(prompts[i]))  # similar lengths together: little padding
    stops = _stop_ids(model, tokenizer)
    pad = _pad_id(tokenizer, stops)
    device = _device_of(model)
    with _seeded(settings.seed, device), torch.inference_mode():
        for start in range(0, total, batch_size):
            if cancel is not None:
                cancel.raise_if_cancelled()
            rows = order[start:start + batch_size]
            ids, mask = _left_padded([prompts[i] for i in rows], pad, device)
            out = model.generate(input_ids=ids, attention_mask=mask,
                                 **_generate_kwargs(model, settings, stops, pad, ids.shape[1],
                                                    lambda: _is_stopped(cancel)))
            for row, i in enumerate(rows):
                answers[i] = tokenizer.decode(out[row, ids.shape[1]:].tolist(), skip_special_tokens=True).strip()
            if progress is not None:
                progress(min(start + batch_size, total), total)
    if cancel is not None:
        cancel.raise_if_cancelled()
    return answers


def stream_text(model, tokenizer, prompt: list[int], settings: GenerationSettings,
                stop: CancelToken | threading.Event | None = None) -> Generator[str, None, None]:
    """The answer to one prompt, piece by piece as it is generated (greedy: the pieces join to
    ``generate_texts``' answer, whitespace at its ends stripped alike). Generation runs in a thread;
    it ends at a stop token, the token limit, when ``stop`` is set, or when the caller stops iterating
    (closing the iterator stops the thread). An error in generation is raised here."""
    settings.check()
    problem = check_prompt_length(model, len(prompt), settings)
    if problem:
        raise InputError(problem)
    from transformers import TextIteratorStreamer

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    halt = threading.Event()
    failure: list[BaseException] = []
    stops = _stop_ids(model, tokenizer)
    pad = _pad_id(tokenizer, stops)
    device = _device_of(model)

    def work() -> None:
        import torch

        try:
            ids, mask = _left_padded([prompt], pad, device)
            with _seeded(settings.seed, device), torch.inference_mode():
                model.generate(input_ids=ids, attention_mask=mask, streamer=streamer,
                               **_generate_kwargs(model, settings, stops, pad, ids.shape[1],
                                                  lambda: halt.is_set() or _is_stopped(stop)))
        except BaseException as e:  # said in the caller's thread, which would otherwise wait forever
            failure.append(e)
            streamer.end()

    thread = threading.Thread(target=work, name="workbench-generate", daemon=True)
    thread.start()
    try:
        yield from _trimmed(streamer)
    finally:
        halt.set()
        thread.join()
    if failure:
        raise failure[0]


def _trimmed(pieces) -> Iterator[str]:
    """``pieces`` with the whitespace at the start of the text dropped and whitespace at its end held back
    until more text follows, so that the pieces join to the stripped text."""
    pending, started = "", False
    for piece in pieces:
        if not started:
            piece = piece.lstrip()
            if not piece:
                continue
            started = True
        text = pending + piece
        body = text.rstrip()
        pending = text[len(body):]
        if body:
            yield body
