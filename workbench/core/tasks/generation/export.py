"""A generation model's export: a Hugging Face folder that ``pipeline("text-generation")`` loads with its
chat template, decoding defaults that stop at the end of a turn, and GGUF files on request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...cancel import NEVER, CancelToken
from ...events import Callbacks, PhaseChanged, Warning_


def save_generation_model(model, tokenizer, folder: Path, settings) -> None:
    """Weights (safetensors), tokenizer with its chat template, generation_config.json with the run's
    decoding settings and stop tokens."""
    from transformers import GenerationConfig

    from .template import stop_token_ids

    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    stops = stop_token_ids(tokenizer)
    sampling = settings.temperature > 0
    gen = GenerationConfig(
        eos_token_id=stops if len(stops) > 1 else (stops[0] if stops else None),
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stops[0] if stops else None),
        bos_token_id=tokenizer.bos_token_id, max_new_tokens=settings.max_new_tokens, do_sample=sampling,
        **({"temperature": settings.temperature, "top_p": settings.top_p} if sampling else {}))
    gen.save_pretrained(folder)


def write_gguf_files(folder: Path, kinds: list[str], callbacks: Callbacks, cancel: CancelToken = NEVER
                     ) -> dict[str, Any]:
    """model.<kind>.gguf for each kind, each read back and compared with the PyTorch model; a failure is
    recorded and warned about, and the Hugging Face export stands."""
    from ...export.gguf_export import check_gguf, write_gguf

    record: dict[str, Any] = {}
    for kind in kinds:
        cancel.raise_if_cancelled()
        name = f"model.{kind}.gguf"
        callbacks.on_event(PhaseChanged("exporting", f"GGUF ({kind.upper()})"))
        try:
            path = write_gguf(folder, folder / name, kind=kind)
            check = check_gguf(path, folder, ["Hello!", "What can you do?"])
            record[kind] = {"file": name, "bytes": path.stat().st_size, "check": check}
            if not check.get("identical", False):
                callbacks.on_event(Warning_(
                    f"{name}: read back, its greedy answers match PyTorch's on {check.get('same_output', 0)} of "
                    f"{check.get('prompts', 0)} prompts (quantization changes some tokens)"))
        except Exception as e:  # GGUF is an extra: the Hugging Face folder is the export
            if cancel.cancelled:
                raise
            (folder / name).unlink(missing_ok=True)
            record[kind] = {"file": None, "error": str(e)[:500]}
            callbacks.on_event(Warning_(f"GGUF export ({kind}) failed: {str(e)[:300]}"))
    return record
