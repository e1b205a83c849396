"""A loaded export that answers predictions: ONNX Runtime (``model.onnx``, or ``model.int8.onnx``) or
PyTorch, for every task. One object serves the CLI's ``predict``, the server and the app.

    p = Predictor("RUN/model")                  # ONNX Runtime when the export has model.onnx
    p.predict(["a fine film", "dull"])          # [{"label": "pos", "score": .97, "probabilities": {...}}, ...]
    # a multi-label export: [{"labels": ["billing", "bug"], "scores": {"billing": .91, "bug": .64, ...}}, ...]

Inputs are prepared exactly as evaluation prepared them: the export's tokenizer truncating at the
training max length (pairs encoded together), tagging's first-sub-word alignment with long sentences
split into windows, images resized and centre-cropped with the export's preprocessing.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import InputError
from ..export.onnx_export import INT8_FILE, ONNX_FILE, decide_labels, open_session, run_session
from ..export.target import MARKER, missing_tokenizer
from ..tasks.scoring import softmax
from ..tasks.table import TASKS
from .loading import KINDS, error_line, load_torch_model

BACKENDS = ("auto", "onnx", "torch")
PRECISIONS = ("auto", "fp32", "bf16")
LABEL_SEPARATORS = ("|", ",", ";")  # how a multi-label export's predictions join labels (its label_separator)
DEFAULT_THRESHOLD = 0.5  # a label the export gives no threshold for


def _read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object file of an export, or InputError naming the file and what is wrong with it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"is missing: the export is incomplete ({what}); export the model again",
                         path=path) from None
    except UnicodeDecodeError:
        raise InputError(f"is damaged: it is not UTF-8 text ({what}); export the model again", path=path) from None
    except OSError as e:
        raise InputError(f"cannot be read: {e.strerror or e}", path=path) from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise InputError(f"is damaged: not valid JSON ({e}; {what}); export the model again", path=path) from None
    if not isinstance(data, dict):
        raise InputError(f"is damaged: it holds JSON but not an object of settings ({what}); export the model again",
                         path=path)
    return data


def read_meta(folder: Path) -> dict[str, Any]:
    if not folder.exists():
        raise InputError("model folder not found", path=folder)
    if not folder.is_dir():
        raise InputError("is a file, not a model folder; give RUN/model or a folder written by --export or the Export "
                         "page", path=folder)
    if not (folder / MARKER).exists():
        raise InputError("is not a Workbench export (no workbench.json and config.json); give RUN/model or a folder "
                         "written by --export or the Export page", path=folder)
    meta = _read_json(folder / MARKER, "what Workbench knows about the model: task, labels, columns")
    if not (folder / "config.json").exists():
        raise InputError("is not a Workbench export (no config.json beside workbench.json); give RUN/model or a "
                         "folder written by --export or the Export page", path=folder)
    if not isinstance(meta.get("task"), str) or meta["task"] not in KINDS:
        raise InputError(f"was exported by a task this version cannot predict with ({meta.get('task')!r})", path=folder)
    if not isinstance(meta.get("inputs") or {}, dict) or not isinstance(meta.get("labels") or [], list):
        raise InputError("is damaged: its inputs or labels are not what an export writes; export the model again",
                         path=folder / MARKER)
    return meta


class Predictor:
    def __init__(self, export_dir: str | Path, backend: str = "auto", int8: bool = False,
                 precision: str = "auto") -> None:
        folder = Path(export_dir).expanduser().resolve()
        self.folder = folder
        self.meta = read_meta(folder)
        self.task: str = self.meta["task"]
        self.kind = KINDS[self.task]
        self.modality = TASKS[self.task].modality
        self.inputs: dict[str, Any] = self.meta.get("inputs") or {}
        try:
            self.max_length = int(self.meta.get("max_length") or 128)
        except (TypeError, ValueError):
            raise InputError(f"is damaged: max_length {self.meta.get('max_length')!r} is not a number; export the "
                             "model again", path=folder / MARKER) from None
        config = _read_json(folder / "config.json", "the model's architecture and labels")
        id2label = config.get("id2label") or {}
        try:
            names = self.meta.get("labels") or [id2label[k] for k in sorted(id2label, key=int)]
        except (TypeError, ValueError, AttributeError):
            raise InputError("is damaged: its id2label is not a table of class numbers and names; export the model "
                             "again", path=folder / "config.json") from None
        self.labels: list[str] = [str(n) for n in names]
        if not self.labels and self.kind != "values":
            raise InputError("has no label names (neither workbench.json nor config.json's id2label lists them); "
                             "export the model again", path=folder)
        if self.kind == "labels":  # several labels per input: each decided at its own threshold
            self.thresholds, self.label_separator, self.thresholds_fallback = _decisions(self.meta, self.labels,
                                                                                         folder / MARKER)
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
        self.precision, self.precision_reason = _precision(precision, self.backend, self.meta)
        self._lock = threading.Lock()  # the tokenizer and a torch model are not for two threads at once
        self._load(config)

    # ---- loading --------------------------------------------------------------------------------
    def _load(self, config: dict[str, Any]) -> None:
        folder = self.folder
        if self.modality == "text":
            reason = missing_tokenizer(folder, self.task)
            if reason:  # transformers would build an empty tokenizer: every word [UNK], every answer the same
                raise InputError(reason, path=folder)
            from transformers import AutoTokenizer

            try:
                self.tokenizer = AutoTokenizer.from_pretrained(folder)
                if self.kind == "tags":
                    from ..tasks.token_classification import Specials

                    try:
                        self.tokenizer([["a"]], is_split_into_words=True)
                    except Exception:  # byte-level BPE needs a prefix space for pre-split words
                        self.tokenizer = AutoTokenizer.from_pretrained(folder, add_prefix_space=True)
                    self.specials = Specials.of(self.tokenizer)
            except (MemoryError, ImportError):
                raise
            except Exception as e:  # a damaged tokenizer.json, vocabulary or tokenizer_config.json
                raise InputError(f"its tokenizer cannot be loaded ({error_line(e)}); export the model again",
                                 path=folder) from None
            self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        else:
            try:
                self.preprocessing = _image_preprocessing(folder, config)
            except (KeyError, TypeError, ValueError, AttributeError):
                raise InputError("is damaged: its image preprocessing (image_size, resize_to, mean, std) cannot be "
                                 "read; export the model again", path=folder / "config.json") from None
        if self.backend == "onnx":
            try:
                session = open_session(folder / self.model_file)
            except (MemoryError, ImportError):
                raise
            except Exception as e:  # onnxruntime's InvalidProtobuf, Fail, ...: a damaged or truncated file
                other = "" if self.model_file != ONNX_FILE else ", or use --backend torch"
                raise InputError(f"cannot be loaded by ONNX Runtime ({error_line(e)}): the file is damaged or "
                                 f"incomplete; export the model again{other}", path=folder / self.model_file) from None
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

    # A text is cut before it is tokenized: the model sees max_length tokens, yet tokenizing a 10 MB text
    # in full took 13 s of CPU. The cut does not change the answer:
    # - it falls on a space that follows a visible character, never inside a word. Tokenizers split
    #   words at spaces (BERT's WordPiece, byte-level BPE's " word" pieces, SentencePiece's "▁word"), so
    #   every word before the cut is tokenized as in the whole text: the head's tokens are the whole
    #   text's first tokens. The cut is kept only when the head alone has max_length tokens or more, so
    #   truncating the head keeps exactly the tokens that truncating the whole text keeps.
    # - a text whose head has no such space (a run without spaces: Chinese or Japanese, punctuation, a
    #   long URL or blob) is cut inside the run, once the head has twice max_length tokens: exact for
    #   tokenizers that split such runs into characters (BERT's), and for BPE and SentencePiece, whose
    #   pieces depend on nearby characters only, the first half of the head is not near the cut.
    # The first look takes max_length * 32 characters: ordinary text needs a few characters a token and
    # words of 32 characters are rare. A head with too few tokens (long runs of spaces, characters the
    # tokenizer drops, very long words) is looked at again with 4 times as many characters, up to
    # max_length * 2,048 characters; a text with fewer than max_length tokens in that many characters
    # (almost all of them spaces or dropped characters) is read as those characters only. So a text
    # costs at most a few tokenizations of max_length * 2,048 characters, and ordinary text no more
    # than a short one.
    HEAD_CHARS_PER_TOKEN = 32
    HEAD_MOST_CHARS_PER_TOKEN = 2048

    @staticmethod
    def _space_before(text: str, limit: int) -> int:
        """The largest k <= limit with a space at text[k] after a visible character at text[k - 1]; 0 if none."""
        import re

        m = re.search(r" [^\s\x00-\x1f\x7f-\x9f]", text[:limit + 1][::-1])  # reversed: the last such space first
        return limit - m.start() if m else 0

    def _tokens(self, text: str, cap: int = 10**9) -> int:
        """How many tokens ``text`` gives, without special tokens (at most ``cap``; truncating keeps the
        tokenizer from warning about long sequences)."""
        return len(self.tokenizer(text, add_special_tokens=False, truncation=True, max_length=cap)["input_ids"])

    def _head(self, text: str, more_than: int = 0) -> str:
        """``text``, or its first part that the model reads the same (see above); with ``more_than``, a
        first part that also has more tokens than that."""
        need = max(self.max_length, more_than + 1)
        limit = self.max_length * self.HEAD_CHARS_PER_TOKEN
        while len(text) > limit:
            k = self._space_before(text, limit)
            if k and self._tokens(text[:k], need) >= need:
                return text[:k]
            if self._tokens(text[:limit], 2 * need) >= 2 * need:  # a run without spaces
                return text[:limit]
            if limit >= self.max_length * self.HEAD_MOST_CHARS_PER_TOKEN:
                return text[:limit]
            limit *= 4
        return text

    def _pair_heads(self, text: str, pair: str) -> tuple[str, str]:
        """Both texts of a pair cut as ``_head`` cuts one. Longest-first truncation shares the budget by
        the texts' lengths in tokens, and each head keeps max_length tokens or more, so each text keeps
        what it keeps in full. One detail depends on which text is the longer: an odd budget's last
        token goes to it. When one text is cut, its head is made longer (in tokens) than the other text,
        as the whole text is. When both are cut, that token goes to the one with more tokens in its head
        (not knowable without tokenizing both in full, which is what the cut avoids): the only case where
        the answer may differ, by that one token of a pair of two texts both over max_length * 32
        characters."""
        a, b = self._head(text), self._head(pair)
        cut_a, cut_b = len(a) < len(text), len(b) < len(pair)
        budget = self.max_length - self.tokenizer.num_special_tokens_to_add(pair=True)
        if budget % 2 and cut_a != cut_b:
            if cut_a:
                a = self._head(text, more_than=self._tokens(b))
            else:
                b = self._head(pair, more_than=self._tokens(a))
        return a, b

    def text_logits(self, texts: Sequence[str], pairs: Sequence[str] | None = None, batch_size: int = 32) -> np.ndarray:
        """Logits for each text (or pair), in order; batches are formed by length so padding stays small.
        Long texts are first cut to the part the model reads (``_head``), so their size costs nothing."""
        n = len(texts)
        if n == 0:
            return np.zeros((0, max(1, len(self.labels))), np.float32)
        with self._lock:  # the tokenizer is not for two threads at once (the server answers on several)
            if pairs:
                heads = [self._pair_heads(a, b) for a, b in zip(texts, pairs)]
                texts, pairs = [a for a, _ in heads], [b for _, b in heads]
            else:
                texts = [self._head(t) for t in texts]
        order = sorted(range(n), key=lambda i: len(texts[i]) + (len(pairs[i]) if pairs else 0))
        out: np.ndarray | None = None
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            with self._lock:
                batch = self._encode([texts[i] for i in idx], [pairs[i] for i in idx] if pairs else None)
                logits = self._run(batch)
            if out is None:
                out = np.empty((n, logits.shape[-1]), np.float32)
            out[idx] = logits
        assert out is not None, "n > 0, so the loop ran"
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
        from ..data.images import decode_bytes, decode_file, open_rgb, resize_center_square
        from ..tasks.image.transforms import to_pixels

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
        """Per row: label, score and probabilities (classes), score (values), or the decided labels (in
        label order) and every label's sigmoid score (labels)."""
        if self.kind == "values":
            return [{"score": float(v)} for v in logits.reshape(len(logits), -1)[:, 0]]
        if self.kind == "labels":
            return self._label_answers(logits)
        probs = softmax(logits.astype(np.float64))
        best = probs.argmax(-1)
        return [{"label": self.labels[k], "score": float(row[k]),
                 "probabilities": {n: float(q) for n, q in zip(self.labels, row)}} for k, row in zip(best, probs)]

    def _label_answers(self, logits: np.ndarray) -> list[dict[str, Any]]:
        if logits.ndim != 2 or logits.shape[-1] != len(self.labels):
            raise InputError(f"is damaged: its model gives {logits.shape[-1]} scores per input but {MARKER} lists "
                             f"{len(self.labels)} labels; export the model again", path=self.folder / MARKER)
        scores, decided = decide_labels(logits, self.thresholds)
        return [{"labels": [n for n, on in zip(self.labels, row_on) if on],
                 "scores": {n: float(q) for n, q in zip(self.labels, row)}} for row, row_on in zip(scores, decided)]

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
        out = {"task": self.task, "backend": self.backend, "model_file": self.model_file, "labels": self.labels,
               "pairs": self.pairs, "max_length": self.max_length if self.modality == "text" else None,
               "precision": self.precision, "precision_reason": self.precision_reason}
        if self.kind == "labels":
            out.update(thresholds=dict(zip(self.labels, map(float, self.thresholds))),
                       thresholds_fallback=self.thresholds_fallback, label_separator=self.label_separator)
        return out


def _decisions(meta: dict[str, Any], labels: list[str], path: Path) -> tuple[np.ndarray, str, list[str]]:
    """A multi-label export's thresholds in label order (DEFAULT_THRESHOLD for a label it gives none),
    the separator its predictions join labels with, and the labels it says were left at the default;
    InputError naming ``path`` (workbench.json) when any of them is not what an export writes."""
    again = "; export the model again"
    given = meta.get("thresholds")
    given = {} if given is None else given
    if not isinstance(given, dict):
        raise InputError(f"is damaged: its thresholds are {type(given).__name__}, not a table of label -> threshold"
                         + again, path=path)
    unknown = [k for k in given if k not in labels]
    if unknown:
        raise InputError(f"is damaged: its thresholds name labels the model does not have ({', '.join(map(repr, unknown[:5]))}"
                         f"; its labels: {', '.join(map(repr, labels[:12]))})" + again, path=path)
    values = []
    for name in labels:
        t = given.get(name, DEFAULT_THRESHOLD)
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or not 0 <= t <= 1:
            raise InputError(f"is damaged: the threshold of label {name!r} is {t!r}, not a number from 0 to 1" + again,
                             path=path)
        values.append(float(t))
    separator = meta.get("label_separator", LABEL_SEPARATORS[0])
    if not isinstance(separator, str) or separator not in LABEL_SEPARATORS:
        raise InputError(f"is damaged: its label_separator {separator!r} is none of "
                         f"{' '.join(map(repr, LABEL_SEPARATORS))}" + again, path=path)
    fallback = meta.get("thresholds_fallback") or []
    if not isinstance(fallback, list) or any(not isinstance(n, str) or n not in labels for n in fallback):
        raise InputError(f"is damaged: its thresholds_fallback {fallback!r} is not a list of its labels" + again,
                         path=path)
    return np.asarray(values, np.float64), separator, list(fallback)


def _precision(requested: str, backend: str, meta: dict[str, Any] | None = None) -> tuple[str, str]:
    """(precision, why) of a Predictor. By default the report's numbers: fp32, as the run tested the
    model and as pipeline and ONNX Runtime run it. ``auto`` on the PyTorch backend takes bf16 only
    where the CPU has bf16 units and the run's check at export time found that bf16 changed no label
    of its test split (``precision.bf16_check`` in workbench.json); ``bf16`` is the user's choice."""
    if requested not in PRECISIONS:
        raise InputError(f"unknown precision {requested!r}; choose one of {', '.join(PRECISIONS)}")
    if backend == "onnx":
        if requested == "bf16":
            raise InputError("--precision bf16 runs the PyTorch model: add --backend torch (ONNX Runtime runs the "
                             "exported model in fp32)")
        return "fp32", "ONNX Runtime runs the exported model in fp32"
    if requested == "fp32":
        return "fp32", "--precision fp32"
    from ..device import cpu_bf16_units

    units, why = cpu_bf16_units()
    if requested == "bf16":
        return "bf16", "--precision bf16" + ("" if units else f" ({why}: slower than fp32 here)")
    recorded = (meta or {}).get("precision")
    check = recorded.get("bf16_check") if isinstance(recorded, dict) else None
    check = check if isinstance(check, dict) else {}
    if not units:
        return "fp32", f"auto: {why}"
    if not check.get("ran"):
        return "fp32", "auto: the report's precision (the export was not checked in bf16)"
    if check.get("changed"):
        return "fp32", (f"auto: the report's precision (bf16 changed {check['changed']} of {check['items']} "
                        f"{check.get('split', 'test')} labels at export)")
    return "bf16", f"auto: {why}, and bf16 changed none of {check['items']} {check.get('split', 'test')} labels at export"


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
