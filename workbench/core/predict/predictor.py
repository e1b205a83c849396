"""A loaded export that answers predictions: ONNX Runtime (``model.onnx``, or ``model.int8.onnx``) or
PyTorch, for every task. One object serves the CLI's ``predict``, the server and the app.

    p = Predictor("RUN/model")                  # ONNX Runtime when the export has model.onnx
    p.predict(["a fine film", "dull"])          # [{"label": "pos", "score": .97, "probabilities": {...}}, ...]

Inputs are prepared exactly as evaluation prepared them: the export's tokenizer truncating at the
training max length (pairs encoded together), tagging's first-sub-word alignment with long sentences
split into windows, images resized and centre-cropped with the export's preprocessing.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import InputError
from ..export_target import MARKER, is_export
from ..onnx_export import INT8_FILE, ONNX_FILE, open_session, run_session
from ..tasks.scoring import softmax

BACKENDS = ("auto", "onnx", "torch")
PRECISIONS = ("auto", "fp32", "bf16")
KINDS = {"text-classification": "classes", "text-pair-classification": "classes", "image-classification": "classes",
         "text-regression": "values", "token-classification": "tags"}


def read_meta(folder: Path) -> dict[str, Any]:
    if not is_export(folder):
        raise InputError("is not a Workbench export (no workbench.json and config.json); give RUN/model or a folder "
                         "written by --export or the Export page", path=folder)
    meta = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    if meta.get("task") not in KINDS:
        raise InputError(f"was exported by a task this version cannot predict with ({meta.get('task')!r})", path=folder)
    return meta


def load_torch_model(folder: Path, task: str, fold: bool = False):
    """The PyTorch model of an export folder of ``task``, in eval mode (``fold``: Workbench's own
    image models with their batch norms folded into the convolutions, for speed)."""
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
    return model.eval()


class Predictor:
    def __init__(self, export_dir: str | Path, backend: str = "auto", int8: bool = False,
                 precision: str = "auto") -> None:
        folder = Path(export_dir).expanduser().resolve()
        self.folder = folder
        self.meta = read_meta(folder)
        self.task: str = self.meta["task"]
        self.kind = KINDS[self.task]
        self.modality = "image" if self.task == "image-classification" else "text"
        self.inputs: dict[str, Any] = self.meta.get("inputs") or {}
        self.max_length = int(self.meta.get("max_length") or 128)
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        id2label = config.get("id2label") or {}
        self.labels: list[str] = list(self.meta.get("labels") or [id2label[k] for k in sorted(id2label, key=int)])
        self.pairs = bool(self.inputs.get("text_pair_column"))
        if backend not in BACKENDS:
            raise InputError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        onnx_file = folder / (INT8_FILE if int8 else ONNX_FILE)
        if int8 and not onnx_file.is_file():
            raise InputError(f"has no {INT8_FILE}; train with --quantize int8 or tick int8 on the Export page",
                             path=folder)
        if backend == "onnx" and not onnx_file.is_file():
            raise InputError(f"has no {ONNX_FILE} (see onnx_check.json for why); use --backend torch", path=folder)
        if backend == "torch" and int8:
            raise InputError("the int8 model is an ONNX model; use --backend onnx (or auto) with --int8")
        self.backend = "onnx" if backend == "onnx" or (backend == "auto" and onnx_file.is_file()) else "torch"
        self.model_file = onnx_file.name if self.backend == "onnx" else "model.safetensors"
        self.precision, self.precision_reason = _precision(precision, self.backend)
        self._lock = threading.Lock()  # the tokenizer and a torch model are not for two threads at once
        self._load(config)

    # ---- loading --------------------------------------------------------------------------------
    def _load(self, config: dict[str, Any]) -> None:
        folder = self.folder
        if self.modality == "text":
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(folder)
            if self.kind == "tags":
                from ..tasks.token_classification import Specials

                try:
                    self.tokenizer([["a"]], is_split_into_words=True)
                except Exception:  # byte-level BPE needs a prefix space for pre-split words
                    self.tokenizer = AutoTokenizer.from_pretrained(folder, add_prefix_space=True)
                self.specials = Specials.of(self.tokenizer)
            self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        else:
            self.preprocessing = _image_preprocessing(folder, config)
        if self.backend == "onnx":
            session = open_session(folder / self.model_file)
            self._run = lambda batch: run_session(session, batch)
            return
        import torch

        model = load_torch_model(folder, self.task, fold=True)

        import contextlib

        def run(batch: dict[str, np.ndarray]) -> np.ndarray:
            # bf16 on a CPU with bf16 units (as training autocasts there); logits come back in fp32.
            cast = torch.autocast("cpu", dtype=torch.bfloat16) if self.precision == "bf16" else contextlib.nullcontext()
            with torch.inference_mode(), cast:
                out = model(**{k: torch.from_numpy(v) for k, v in batch.items()})
                return (out.logits if hasattr(out, "logits") else out).float().numpy()

        self._run = run
        self.torch_model = model

    # ---- text -----------------------------------------------------------------------------------
    def _encode(self, texts: list[str], pairs: list[str] | None) -> dict[str, np.ndarray]:
        enc = self.tokenizer(texts, pairs, truncation="longest_first" if pairs else True, max_length=self.max_length,
                             padding=True, return_tensors="np")
        return {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()
                if k in ("input_ids", "attention_mask", "token_type_ids")}

    def text_logits(self, texts: Sequence[str], pairs: Sequence[str] | None = None, batch_size: int = 32) -> np.ndarray:
        """Logits for each text (or pair), in order; batches are formed by length so padding stays small."""
        n = len(texts)
        if n == 0:
            return np.zeros((0, max(1, len(self.labels))), np.float32)
        order = sorted(range(n), key=lambda i: len(texts[i]) + (len(pairs[i]) if pairs else 0))
        out: np.ndarray | None = None
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            batch = self._encode([texts[i] for i in idx], [pairs[i] for i in idx] if pairs else None)
            with self._lock:
                logits = self._run(batch)
            if out is None:
                out = np.empty((n, logits.shape[-1]), np.float32)
            out[idx] = logits
        return out

    # ---- tagging --------------------------------------------------------------------------------
    def tag(self, sentences: Sequence[list[str]], batch_size: int = 32) -> list[list[tuple[str, float]]]:
        """(tag, confidence) for every token of every sentence; long sentences run as several windows."""
        from ..tasks.token_classification import WindowStats, encode_sentences

        if not sentences:
            return []
        with self._lock:
            cols = encode_sentences(self.tokenizer, list(sentences), None, self.max_length, self.specials, 0, 0,
                                    WindowStats())
        windows = cols["input_ids"]
        result: list[list[tuple[str, float]]] = [[] for _ in sentences]
        order = sorted(range(len(windows)), key=lambda w: len(windows[w]))
        per_window: dict[int, list[tuple[str, float]]] = {}
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            width = max(len(windows[w]) for w in idx)
            ids = np.full((len(idx), width), self.pad_id, np.int64)
            mask = np.zeros((len(idx), width), np.int64)
            for j, w in enumerate(idx):
                ids[j, :len(windows[w])] = windows[w]
                mask[j, :len(windows[w])] = 1
            batch = {"input_ids": ids, "attention_mask": mask}  # as training fed the tagger
            with self._lock:
                logits = self._run(batch)
            for j, w in enumerate(idx):
                probs = softmax(logits[j, cols["label_pos"][w]])
                best = probs.argmax(-1)
                per_window[w] = [(self.labels[k], float(probs[i, k])) for i, k in enumerate(best)]
        for w in range(len(windows)):  # windows are in sentence order, a sentence's windows in word order
            result[cols["sentence"][w]].extend(per_window[w])
        return result

    # ---- images ---------------------------------------------------------------------------------
    def pixels(self, image) -> np.ndarray:
        """(3, size, size) float32 pixels of one image (a path, bytes or a PIL image); ImageProblem if broken."""
        from ..data.image_transforms import to_pixels
        from ..data.images import decode_bytes, decode_file, open_rgb, resize_center_square

        p = self.preprocessing
        if isinstance(image, (str, Path)):
            im = decode_file(Path(image), p["resize_to"])
        elif isinstance(image, (bytes, bytearray)):
            im = decode_bytes(bytes(image), p["resize_to"])
        else:
            im = open_rgb(image)
        square = resize_center_square(im, p["resize_to"])
        off = (p["resize_to"] - p["image_size"]) // 2
        crop = square[None, off:off + p["image_size"], off:off + p["image_size"]]
        return to_pixels(crop, p["mean"], p["std"])[0]

    def image_logits(self, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
        outs = []
        for start in range(0, len(pixels), batch_size):
            with self._lock:
                outs.append(self._run({"pixel_values": np.ascontiguousarray(pixels[start:start + batch_size])}))
        return np.concatenate(outs) if outs else np.zeros((0, len(self.labels)), np.float32)

    # ---- answers --------------------------------------------------------------------------------
    def answers(self, logits: np.ndarray) -> list[dict[str, Any]]:
        """Per row: label, score and probabilities (classes), or score (values)."""
        if self.kind == "values":
            return [{"score": float(v)} for v in logits.reshape(len(logits), -1)[:, 0]]
        probs = softmax(logits.astype(np.float64))
        best = probs.argmax(-1)
        return [{"label": self.labels[k], "score": float(row[k]),
                 "probabilities": {n: float(q) for n, q in zip(self.labels, row)}} for k, row in zip(best, probs)]

    def predict(self, inputs: Sequence[Any], batch_size: int = 32) -> list[dict[str, Any]]:
        """Predictions for already-validated inputs: texts (or [text, second text] pairs), token lists or
        texts for tagging, images (paths, bytes or PIL images)."""
        if self.kind == "tags":
            sentences = [x if isinstance(x, list) else _words(x) for x in inputs]
            return [{"tokens": s, "tags": [t for t, _ in tags], "scores": [c for _, c in tags]}
                    for s, tags in zip(sentences, self.tag(sentences, batch_size))]
        if self.modality == "image":
            pixels = np.stack([self.pixels(x) for x in inputs]) if inputs else np.zeros((0,))
            return self.answers(self.image_logits(pixels, batch_size))
        if self.pairs:
            texts, pairs = [x[0] for x in inputs], [x[1] for x in inputs]
        else:
            texts, pairs = list(inputs), None
        return self.answers(self.text_logits(texts, pairs, batch_size))

    def describe(self) -> dict[str, Any]:
        return {"task": self.task, "backend": self.backend, "model_file": self.model_file, "labels": self.labels,
                "pairs": self.pairs, "max_length": self.max_length if self.modality == "text" else None,
                "precision": self.precision}


def _precision(requested: str, backend: str) -> tuple[str, str]:
    """(precision, why) of a Predictor: the PyTorch backend autocasts to bf16 where the CPU has bf16
    units (auto) or when asked; ONNX Runtime runs the exported fp32 graph as it is."""
    if requested not in PRECISIONS:
        raise InputError(f"unknown precision {requested!r}; choose one of {', '.join(PRECISIONS)}")
    if backend == "onnx":
        if requested == "bf16":
            raise InputError("--precision bf16 runs the PyTorch model: add --backend torch (ONNX Runtime runs the "
                             "exported model in fp32)")
        return "fp32", "ONNX Runtime runs the exported model in fp32"
    import torch

    from ..device import choose_precision

    return choose_precision(requested, torch.device("cpu"))


def _words(text: str) -> list[str]:
    from .inputs import words

    return words(text)


def _image_preprocessing(folder: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Size, resize and normalisation of an image export: Workbench architectures keep them in
    config.json; every image export has them in preprocessor_config.json."""
    if isinstance(config.get("preprocessing"), dict):
        p = config["preprocessing"]
        return {"image_size": int(p["image_size"]), "resize_to": int(p["resize_to"]), "mean": list(p["mean"]),
                "std": list(p["std"])}
    try:
        pre = json.loads((folder / "preprocessor_config.json").read_text(encoding="utf-8"))
        crop, size = pre["crop_size"], pre["size"]
        return {"image_size": int(crop.get("height") or crop.get("shortest_edge")),
                "resize_to": int(size.get("shortest_edge") or size.get("height")),
                "mean": list(pre["image_mean"]), "std": list(pre["image_std"])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise InputError("has no readable preprocessor_config.json, so its images cannot be prepared as in "
                         "training", path=folder) from None
