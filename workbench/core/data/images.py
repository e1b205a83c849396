"""Image folders: find the labelled images, decode each once into a cache, and check them.

Layouts (the folder name is the class name):

    FOLDER/CLASS/*.jpg                                   one folder per class
    FOLDER/train/CLASS/*.jpg, FOLDER/val/CLASS/*.jpg,    train, val (or validation, valid, dev) and
    FOLDER/test/CLASS/*.jpg                              test folders, each with class folders

JPEG, PNG, BMP, WebP, GIF (first frame) and TIFF are read; the EXIF orientation is applied and every
colour mode becomes RGB (transparency over white). Files that are not images, empty, truncated or
corrupt, and decompression bombs are skipped and listed by path in the validation report. Every image
is decoded here, once, before training: an unreadable file can never stop a run mid-epoch, and later
epochs read the uint8 cache (a memory-mapped .npy) instead of decoding JPEGs again.
"""

from __future__ import annotations

import hashlib
import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from ..cancel import NEVER, CancelToken
from ..errors import InputError
from ..labels import build_label_map
from .image_sniff import IGNORED, IMAGE_EXTENSIONS, SPLIT_FOLDERS, is_image_name, sniff_image_folder  # noqa: F401
from .validation import SEVERITY_ORDER, SPLIT_ORDER, Finding, ValidationReport

IMBALANCE_RATIO = 3  # image sets are small: a 3x gap between classes is already worth a warning
MAX_ITEMS = 200  # example paths kept per finding
MAX_PIXELS = 89_478_485  # Pillow's decompression-bomb limit (a 0.25 GB RGB image)


@dataclass
class ImageItem:
    path: Path
    label: str
    split: str


@dataclass
class ImageFolders:
    """What a scan found: labelled image files per split, and what it had to leave out."""

    items: dict[str, list[ImageItem]]
    sources: dict[str, str]  # split -> folder
    findings: list[Finding] = field(default_factory=list)
    layout: str = "classes"  # "classes" | "splits"
    stats: Any = None  # ImageStats of the training images (workbench/core/tasks/image/policy.py), when measured


class ImageProblem(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


# ---------------------------------------------------------------------------- scanning


def _visible(entry: os.DirEntry) -> bool:
    return not entry.name.startswith(".") and entry.name.lower() not in IGNORED


def _entries(folder: Path, broken: list[tuple[Path, str]]) -> tuple[list[os.DirEntry], list[os.DirEntry]]:
    """The visible sub-folders and files of ``folder``; entries that cannot be followed (a symbolic
    link to nothing or to itself, no permission) are added to ``broken`` with the reason."""
    try:
        with os.scandir(folder) as it:
            entries = sorted((e for e in it if _visible(e)), key=lambda e: e.name)
    except OSError as err:
        raise InputError(f"cannot read the folder ({err.strerror or err})", path=folder) from None
    dirs: list[os.DirEntry] = []
    files: list[os.DirEntry] = []
    for e in entries:
        try:
            if e.is_dir():
                dirs.append(e)
            elif e.is_file():
                files.append(e)
            elif e.is_symlink():
                broken.append((Path(e.path), "a symbolic link to something that does not exist"))
        except OSError as err:  # e.g. ELOOP: a link that points at itself
            broken.append((Path(e.path), err.strerror or str(err)))
    return dirs, files


def _images_below(folder: Path) -> list[Path]:
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d.lower() not in IGNORED]
        out += [Path(root, f) for f in sorted(files) if is_image_name(f)]
    return out


def _class_folders(folder: Path, split: str, findings: list[Finding]) -> list[ImageItem]:
    """Images in the class folders of ``folder``; what does not fit is reported, not used."""
    broken: list[tuple[Path, str]] = []
    dirs, files = _entries(folder, broken)
    items: list[ImageItem] = []
    loose = [Path(f.path) for f in files if is_image_name(f.name)]
    not_images: list[Path] = [Path(f.path) for f in files if not is_image_name(f.name)]
    nested: list[tuple[Path, int]] = []
    empty: list[str] = []
    for d in dirs:
        sub_dirs, sub_files = _entries(Path(d.path), broken)
        images = [Path(f.path) for f in sub_files if is_image_name(f.name)]
        not_images += [Path(f.path) for f in sub_files if not is_image_name(f.name)]
        for s in sub_dirs:
            n = len(_images_below(Path(s.path)))
            if n:
                nested.append((Path(s.path), n))
        if images:
            items += [ImageItem(p, d.name, split) for p in images]
        elif not any(n for p, n in nested if p.parent == Path(d.path)):
            empty.append(d.name)
    where = str(folder)
    if not items:
        if len(dirs) == 1 and nested:
            inner = Path(dirs[0].path)
            raise InputError(f"the images are one folder deeper than expected: point at {inner} instead "
                             f"(its sub-folders look like the classes)", path=folder)
        if nested:
            raise InputError(f"no images directly inside the class folders; they are nested deeper (e.g. "
                             f"{nested[0][0]}). Expected {folder}/CLASS/image.jpg", path=folder)
        raise InputError(f"no images in class sub-folders. Expected {folder}/CLASS/image.jpg (one folder per "
                         f"class) or {folder}/train/CLASS/image.jpg", path=folder)
    if loose:
        findings.append(Finding("warning", "loose_images", f"{where}: {len(loose):,} image(s) are not inside a "
                                "class folder, so they have no label and were skipped", [], len(loose), where,
                                split, items=[str(p) for p in loose[:MAX_ITEMS]]))
    if nested:
        total = sum(n for _, n in nested)
        findings.append(Finding("warning", "nested_folders", f"{where}: {total:,} image(s) sit in folders nested "
                                "inside a class folder and were skipped (only CLASS/image files are used; move "
                                "them up, or make each nested folder a class of its own)", [], total, where, split,
                                items=[f"{p} ({n} images)" for p, n in nested[:MAX_ITEMS]]))
    if not_images:
        findings.append(Finding("warning", "not_images", f"{where}: {len(not_images):,} file(s) do not have an "
                                "image extension and were skipped", [], len(not_images), where, split,
                                items=[str(p) for p in not_images[:MAX_ITEMS]]))
    if broken:
        findings.append(_broken_finding(broken, where, split))
    if empty:
        findings.append(Finding("info", "empty_class_folder", f"{where}: class folder(s) without images were "
                                f"ignored: {', '.join(empty[:20])}", [], len(empty), where, split, items=empty))
    return items


def _broken_finding(broken: list[tuple[Path, str]], where: str, split: str | None) -> Finding:
    one = len(broken) == 1
    return Finding("warning", "broken_links", f"{where}: {len(broken):,} entr{'y' if one else 'ies'} could not be "
                   f"followed (a broken or looping symbolic link, or no permission) and {'was' if one else 'were'} "
                   "skipped",
                   [], len(broken), where, split, items=[f"{p} ({why})" for p, why in broken[:MAX_ITEMS]])


def scan_image_folders(train: str | Path, val: str | Path | None = None, test: str | Path | None = None) -> ImageFolders:
    root = Path(train)
    if not root.is_dir():
        raise InputError("not a folder of images", path=root)
    findings: list[Finding] = []
    broken: list[tuple[Path, str]] = []
    dirs, _ = _entries(root, broken)
    if broken:
        findings.append(_broken_finding(broken, str(root), None))
    split_dirs = {SPLIT_FOLDERS[d.name.lower()]: Path(d.path) for d in dirs if d.name.lower() in SPLIT_FOLDERS}
    items: dict[str, list[ImageItem]] = {}
    sources: dict[str, str] = {}
    if split_dirs:
        if "train" not in split_dirs:
            raise InputError(f"has {', '.join(sorted(d.name for d in dirs if d.name.lower() in SPLIT_FOLDERS))} "
                             "folders but no train/ folder", path=root)
        others = [d.name for d in dirs if d.name.lower() not in SPLIT_FOLDERS]
        if others:
            findings.append(Finding("warning", "extra_folders", f"{root}: folder(s) beside train/val/test were "
                                    f"ignored: {', '.join(others[:20])}", [], len(others), str(root), None,
                                    items=[str(root / o) for o in others]))
        for split in ("train", "validation", "test"):
            if split in split_dirs:
                items[split] = _class_folders(split_dirs[split], split, findings)
                sources[split] = str(split_dirs[split])
        layout = "splits"
    else:
        items["train"] = _class_folders(root, "train", findings)
        sources["train"] = str(root)
        layout = "classes"
    for split, given in (("validation", val), ("test", test)):
        if given:
            if split in items:
                findings.append(Finding("info", "split_replaced", f"the {split} images come from {given}, not from "
                                        f"{sources[split]}", [], 0, str(given), split))
            folder = Path(given)
            if not folder.is_dir():
                raise InputError("not a folder of images", path=folder)
            items[split] = _class_folders(folder, split, findings)
            sources[split] = str(folder)
    return ImageFolders(items, sources, findings, layout)


# ---------------------------------------------------------------------------- decoding


def open_rgb(im) -> "Any":
    """An opened PIL image (first frame), upright per its EXIF orientation, as RGB."""
    from PIL import Image, ImageOps

    im = ImageOps.exif_transpose(im) or im
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float greyscale: stretch to 8 bits instead of clipping everything to white.
        a = np.asarray(im, dtype=np.float32)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        im = Image.fromarray(a.astype(np.uint8), "L")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")


def decode_bytes(data: bytes, min_side: int | None = None):
    """Decode ``data`` to an RGB PIL image, or raise ImageProblem saying why it cannot be used.

    With ``min_side``, JPEGs are decoded at a reduced DCT scale that still leaves the shorter side at
    least that long: several times faster on large photos and the same after resizing.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageProblem("empty_file", "the file is empty")
    try:
        im = Image.open(io.BytesIO(data))
        w, h = im.size
        if w * h > MAX_PIXELS:
            raise ImageProblem("decompression_bomb", f"{w}x{h} pixels is more than the {MAX_PIXELS:,} allowed")
        if w < 1 or h < 1:
            raise ImageProblem("corrupt_image", f"{w}x{h} pixels")
        if min_side and im.format == "JPEG":
            im.draft("RGB", (min_side, min_side))
        im.load()  # decodes the first frame; truncated data raises here
        return open_rgb(im)
    except ImageProblem:
        raise
    except Image.DecompressionBombError as e:
        raise ImageProblem("decompression_bomb", str(e)) from None
    except UnidentifiedImageError:
        raise ImageProblem("not_an_image", "not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, MemoryError) as e:
        # Truncated and corrupt files surface as any of these, depending on the format's decoder.
        raise ImageProblem("corrupt_image", f"{type(e).__name__}: {e}") from None


def decode_file(path: Path, min_side: int | None = None):
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ImageProblem("unreadable", e.strerror or str(e)) from None
    return decode_bytes(data, min_side)


def resize_center_square(im, side: int) -> np.ndarray:
    """uint8 (side, side, 3): the shorter side resized to ``side`` (bicubic), then the centre square."""
    from PIL import Image

    w, h = im.size
    scale = side / min(w, h)
    nw, nh = max(side, int(round(w * scale))), max(side, int(round(h * scale)))
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - side) // 2, (nh - side) // 2
    return np.asarray(im.crop((left, top, left + side, top + side)), dtype=np.uint8)


@dataclass
class DecodedImages:
    array: np.ndarray  # (N, side, side, 3) uint8, memory-mapped; rows of failed files stay zero
    ok: np.ndarray  # bool per item
    hashes: np.ndarray  # uint64 content hash per item (0 for unreadable files)
    problems: list[tuple[int, str, str]]  # (item index, code, detail)


def _decode_one(path: Path, side: int) -> tuple[np.ndarray | None, int, tuple[str, str] | None]:
    try:
        data = path.read_bytes()
    except OSError as e:
        return None, 0, ("unreadable", e.strerror or str(e))
    digest = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")
    try:
        return resize_center_square(decode_bytes(data, side), side), digest, None
    except ImageProblem as p:
        return None, digest, (p.code, str(p))


def decode_to_cache(paths: list[Path], side: int, cache_file: Path, progress: Callable[[int, int], None] | None = None,
                    cancel: CancelToken = NEVER, workers: int | None = None) -> DecodedImages:
    """Decode every file once into a memory-mapped (N, side, side, 3) uint8 array at ``cache_file``.

    Pillow releases the GIL while it decodes and resizes, so threads use every core.
    """
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    n = len(paths)
    array = np.lib.format.open_memmap(cache_file, mode="w+", dtype=np.uint8, shape=(max(n, 1), side, side, 3))
    ok = np.zeros(n, bool)
    hashes = np.zeros(n, np.uint64)
    problems: list[tuple[int, str, str]] = []
    workers = workers or min(8, os.cpu_count() or 1)
    chunk = 64
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, n, chunk):
            cancel.raise_if_cancelled()
            idx = range(start, min(n, start + chunk))
            for i, (pixels, digest, problem) in zip(idx, pool.map(lambda i: _decode_one(paths[i], side), idx)):
                hashes[i] = digest
                if problem is None:
                    array[i] = pixels
                    ok[i] = True
                else:
                    problems.append((i, *problem))
            if progress:
                progress(min(n, start + chunk), n)
    array.flush()
    del array
    return DecodedImages(np.load(cache_file, mmap_mode="r"), ok, hashes, problems)


# ---------------------------------------------------------------------------- checks

PROBLEM_TEXT = {
    "empty_file": "empty file(s)",
    "not_an_image": "file(s) that are not images (or in a format Pillow cannot read)",
    "corrupt_image": "truncated or corrupt image(s)",
    "decompression_bomb": "decompression bomb(s): images with too many pixels to decode safely",
    "unreadable": "file(s) that could not be read",
}


def problem_findings(problems: Iterable[tuple[ImageItem, str, str]]) -> list[Finding]:
    """One finding per kind of unusable file, listing the paths (and why, for the first few)."""
    by_code: dict[str, list[tuple[ImageItem, str]]] = {}
    for item, code, detail in problems:
        by_code.setdefault(code, []).append((item, detail))
    out = []
    for code, found in by_code.items():
        shown = [f"{it.path} ({detail})" if k < 20 else str(it.path) for k, (it, detail) in enumerate(found[:MAX_ITEMS])]
        splits = sorted({it.split for it, _ in found})
        out.append(Finding("warning", code, f"{len(found):,} {PROBLEM_TEXT.get(code, code)} skipped "
                           f"(in {', '.join(splits)})", [], len(found), None, splits[0] if len(splits) == 1 else None,
                           items=shown))
    return out


def _counts(items: list[ImageItem], names: list[str]) -> dict[str, int]:
    counts = {n: 0 for n in names}
    for it in items:
        counts[it.label] = counts.get(it.label, 0) + 1
    return {k: v for k, v in counts.items() if v}


def check_images(splits: dict[str, list[ImageItem]], hashes: dict[str, np.ndarray], sources: dict[str, str],
                 findings: list[Finding]) -> ValidationReport:
    """Per-class counts and the checks a user should hear about before training: too few classes,
    rare and imbalanced classes, duplicate files, test images that also occur in training."""
    names = sorted(splits, key=lambda s: SPLIT_ORDER.index(s) if s in SPLIT_ORDER else len(SPLIT_ORDER))
    label_names = build_label_map({it.label for s in names for it in splits[s]}).names
    counts = {s: _counts(splits[s], label_names) for s in names}
    for s in names:
        if not splits[s]:
            findings.append(Finding("error", "no_rows", f"{sources.get(s, s)}: no usable images in the {s} split",
                                    [], 0, sources.get(s), s))
    train = counts.get("train", {})
    where = sources.get("train")
    if len(train) < 2:
        only = f"only the class '{next(iter(train))}'" if train else "no classes"
        findings.append(Finding("error", "single_class", f"{where}: has {only}; a classifier needs at least two class "
                                "folders with images", [], len(train), where, "train"))
    elif train:
        rare = [k for k, v in train.items() if v < 2]
        if rare:
            findings.append(Finding("warning", "rare_class", f"{where}: class(es) with fewer than 2 images: "
                                    f"{', '.join(rare[:10])}; the model can hardly learn them", [], len(rare), where,
                                    "train", items=rare))
        most, least = max(train, key=train.__getitem__), min(train, key=train.__getitem__)
        if train[most] > IMBALANCE_RATIO * train[least]:
            findings.append(Finding("warning", "imbalance", f"{where}: classes are imbalanced: '{most}' has "
                                    f"{train[most]:,} images but '{least}' only {train[least]:,} "
                                    f"({train[most] / train[least]:.0f}x); accuracy will flatter the model, so watch "
                                    "macro-F1", [], train[most] // max(train[least], 1), where, "train"))
    for s in names:
        h, items = hashes[s], splits[s]
        order = np.argsort(h, kind="stable")
        same = np.flatnonzero(h[order][1:] == h[order][:-1])
        dup = [(items[order[k]], items[order[k + 1]]) for k in same]
        clash = [(a, b) for a, b in dup if a.label != b.label]
        if dup:
            findings.append(Finding("info", "duplicates", f"{sources.get(s)}: {len(dup):,} image file(s) are exact "
                                    "copies of another one", [], len(dup), sources.get(s), s,
                                    items=[f"{b.path} = {a.path}" for a, b in dup[:MAX_ITEMS]]))
        if clash:
            findings.append(Finding("warning", "conflicting_duplicates", f"{sources.get(s)}: {len(clash):,} identical "
                                    "image(s) sit in different class folders; the model cannot get all of them right",
                                    [], len(clash), sources.get(s), s,
                                    items=[f"{a.path} ({a.label}) = {b.path} ({b.label})" for a, b in clash[:MAX_ITEMS]]))
    if "train" in hashes:
        train_hashes = np.unique(hashes["train"])
        for s in names:
            if s == "train":
                continue
            overlap = np.flatnonzero(np.isin(hashes[s], train_hashes))
            if len(overlap):
                findings.append(Finding("warning", "train_test_overlap", f"{sources.get(s)}: {len(overlap):,} {s} "
                                        "image(s) are exact copies of training images; scores on them overstate how "
                                        "well the model generalises", [], len(overlap), sources.get(s), s,
                                        items=[str(splits[s][k].path) for k in overlap[:MAX_ITEMS]]))
            unseen = sorted(set(counts[s]) - set(train))
            if unseen:
                n = sum(counts[s][u] for u in unseen)
                findings.append(Finding("warning", "unseen_test_labels", f"{sources.get(s)}: class(es) "
                                        f"{', '.join(unseen[:10])} do not occur in training ({n:,} images); they are "
                                        "left out of evaluation", [], n, sources.get(s), s, items=unseen))
    findings.sort(key=lambda f: SEVERITY_ORDER.get(f.severity, 3))
    return ValidationReport(findings, counts, {s: len(splits[s]) for s in names}, dict(sources))
