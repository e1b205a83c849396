"""Loading an export's PyTorch model: for the Predictor and for the ONNX export's child process,
which checks the exported graph against it (its own module, so neither imports the other)."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..tasks.table import TASKS

# Task name -> what its models predict ("classes", "tags", "values"): the tasks a Predictor serves.
KINDS = {name: t.prediction for name, t in TASKS.items() if t.prediction is not None}


def load_torch_model(folder: Path, task: str, fold: bool = False):
    """The PyTorch model of an export folder of ``task``, in eval mode (``fold``: Workbench's own
    image models with their batch norms folded into the convolutions, for speed). InputError when the
    weights or their config cannot be loaded (missing, damaged)."""
    from ..errors import WorkbenchError

    spec = TASKS[task]
    try:
        model = _own_image_model(folder, fold) if spec.modality == "image" else None
        if model is None:  # a transformers model: the task's AutoModel class loads it
            import transformers

            model = getattr(transformers, spec.auto_model).from_pretrained(folder)
    except (WorkbenchError, MemoryError, ImportError):
        raise
    except Exception as e:  # a damaged model.safetensors or config.json, missing weights
        raise InputError(f"its PyTorch model cannot be loaded ({error_line(e)}); export the model again",
                         path=folder) from None
    return model.eval()


def _own_image_model(folder: Path, fold: bool):
    """Workbench's own image model in ``folder`` (EfficientNet-Lite0, the small CNN), None for any other."""
    from ..tasks.image.models import load_image_classifier, read_image_config

    if read_image_config(folder) is None:
        return None
    return load_image_classifier(folder, fold=fold)[0]


def error_line(e: BaseException) -> str:
    """The first line of an exception's message (libraries put tracebacks of their own below it)."""
    text = str(e).strip().splitlines()
    return (text[0][:300] if text else type(e).__name__).rstrip(".")
