"""Loading an export's PyTorch model: for the Predictor and for the ONNX export's child process,
which checks the exported graph against it (its own module, so neither imports the other)."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError

KINDS = {"text-classification": "classes", "text-pair-classification": "classes", "image-classification": "classes",
         "text-regression": "values", "token-classification": "tags"}


def load_torch_model(folder: Path, task: str, fold: bool = False):
    """The PyTorch model of an export folder of ``task``, in eval mode (``fold``: Workbench's own
    image models with their batch norms folded into the convolutions, for speed). InputError when the
    weights or their config cannot be loaded (missing, damaged)."""
    from ..errors import WorkbenchError

    try:
        if task == "image-classification":
            from ..image_models import load_image_classifier, read_image_config

            if read_image_config(folder) is not None:
                model, _ = load_image_classifier(folder, fold=fold)
            else:
                from transformers import AutoModelForImageClassification

                model = AutoModelForImageClassification.from_pretrained(folder)
        else:
            from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

            cls = AutoModelForTokenClassification if KINDS[task] == "tags" else AutoModelForSequenceClassification
            model = cls.from_pretrained(folder)
    except (WorkbenchError, MemoryError, ImportError):
        raise
    except Exception as e:  # a damaged model.safetensors or config.json, missing weights
        raise InputError(f"its PyTorch model cannot be loaded ({error_line(e)}); export the model again",
                         path=folder) from None
    return model.eval()


def error_line(e: BaseException) -> str:
    """The first line of an exception's message (libraries put tracebacks of their own below it)."""
    text = str(e).strip().splitlines()
    return (text[0][:300] if text else type(e).__name__).rstrip(".")
