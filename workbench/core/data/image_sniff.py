"""Is a path a folder of labelled images? A cheap look (a few directory listings, no decoding) that
imports nothing heavy, so the app can ask on its GUI thread and `--task auto` can ask before anything
is loaded. Reading the folder for real is ``workbench.core.data.images``."""

from __future__ import annotations

import os
from pathlib import Path

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".webp", ".gif",
                              ".tif", ".tiff"})
SPLIT_FOLDERS = {"train": "train", "training": "train", "val": "validation", "valid": "validation",
                 "validation": "validation", "dev": "validation", "test": "test", "testing": "test"}
IGNORED = frozenset({"thumbs.db", "desktop.ini", "__macosx", "icon\r"})  # operating-system litter


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a symbolic link that loops: not a folder to look into
        return False


def _is_file(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


def _sub_folders(folder: Path) -> list[Path]:
    try:
        with os.scandir(folder) as it:
            return sorted(Path(e.path) for e in it if _is_dir(e) and not e.name.startswith(".")
                          and e.name.lower() not in IGNORED)
    except OSError:
        return []


def sniff_image_folder(path: Path) -> float:
    """0.95 for a folder of class folders holding images (or of train/val/test folders of them), 0.2
    for another folder with sub-folders, 0 otherwise. Looks at no more than 20 folders, 50 entries each."""
    path = Path(path)
    if not path.is_dir():
        return 0.0
    dirs = _sub_folders(path)
    splits = [d for d in dirs if d.name.lower() in SPLIT_FOLDERS]
    candidates = [c for s in splits for c in _sub_folders(s)] if splits else dirs
    for folder in candidates[:20]:
        try:
            with os.scandir(folder) as it:
                for k, e in enumerate(it):
                    if _is_file(e) and is_image_name(e.name):
                        return 0.95
                    if k > 50:
                        break
        except OSError:
            continue
    return 0.2 if dirs else 0.0
