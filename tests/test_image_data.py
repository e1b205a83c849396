"""Reading image folders: layouts, colour modes, EXIF, broken files, checks and the decode cache."""

from __future__ import annotations

import numpy as np
import pytest
from image_samples import COLOURS, write_broken_files, write_class_folder, write_odd_images

from workbench.core.config import DataConfig
from workbench.core.data.images import (
    ImageProblem,
    decode_file,
    decode_to_cache,
    scan_image_folders,
    sniff_image_folder,
)
from workbench.core.errors import InputError
from workbench.core.events import Callbacks
from workbench.core.tasks import detect_task
from workbench.core.tasks.image.classification import ImageClassification
from workbench.core.tasks.image.transforms import center_crops, random_resized_crops, to_pixels


def test_every_colour_mode_becomes_upright_rgb(tmp_path):
    odd = write_odd_images(tmp_path)
    for name, path in odd.items():
        im = decode_file(path)
        assert im.mode == "RGB", name
    assert decode_file(odd["exif"]).size == (24, 48)  # stored 48x24, EXIF orientation 6 applied
    rgba = np.asarray(decode_file(odd["rgba"]))
    assert (rgba[:, :16] == 255).all()  # transparent pixels composited over white, not black
    assert rgba[:, 16:, 0].mean() > 120 and rgba[:, 16:, 2].mean() < 100  # the opaque half keeps its red
    gif = np.asarray(decode_file(odd["gif"]))
    assert gif[..., 0].mean() > gif[..., 1].mean()  # the first (red) frame, not the green second one
    grey16 = np.asarray(decode_file(odd["grey16"]))
    assert grey16.min() == 0 and grey16.max() == 255  # 16-bit range stretched, not clipped to white
    cmyk = np.asarray(decode_file(odd["cmyk"]))
    assert cmyk[..., 0].mean() > cmyk[..., 2].mean()


@pytest.mark.parametrize("kind,code", [("truncated", "corrupt_image"), ("empty", "empty_file"),
                                       ("text", "not_an_image"), ("bomb", "decompression_bomb")])
def test_broken_files_raise_a_named_problem(tmp_path, kind, code):
    path = write_broken_files(tmp_path)[kind]
    with pytest.raises(ImageProblem) as e:
        decode_file(path)
    assert e.value.code == code


def test_layouts_and_sniffing(tmp_path):
    classes = write_class_folder(tmp_path / "flat", 3)
    found = scan_image_folders(classes)
    assert found.layout == "classes" and set(found.items) == {"train"}
    assert {it.label for it in found.items["train"]} == set(COLOURS)

    root = tmp_path / "splits"
    write_class_folder(root / "train", 3)
    write_class_folder(root / "validation", 2, seed=1)
    write_class_folder(root / "test", 2, seed=2)
    found = scan_image_folders(root)
    assert found.layout == "splits" and [len(found.items[s]) for s in ("train", "validation", "test")] == [6, 4, 4]

    assert sniff_image_folder(classes) > 0.9 and sniff_image_folder(root) > 0.9
    assert sniff_image_folder(tmp_path / "nope") == 0.0
    assert detect_task(root) is ImageClassification
    (tmp_path / "data.tsv").write_text("text\tlabel\na\tb\n")
    assert detect_task(tmp_path / "data.tsv") is not ImageClassification


def test_deeper_nesting_is_reported(tmp_path):
    outer = tmp_path / "download"
    write_class_folder(outer / "hymenoptera", 2)  # download/hymenoptera/red/*.jpg
    with pytest.raises(InputError, match="one folder deeper.*point at .*hymenoptera"):
        scan_image_folders(outer)

    root = tmp_path / "classes"
    write_class_folder(root, 3)
    write_class_folder(root / "red" / "more", 2)  # images one level too deep inside a class
    (root / "notes.txt").write_text("hello")
    (root / "stray.png").write_bytes((root / "red" / "red1.png").read_bytes())
    found = scan_image_folders(root)
    codes = {f.code: f for f in found.findings}
    assert "nested_folders" in codes and str(root / "red" / "more") in codes["nested_folders"].items[0]
    assert codes["not_images"].items == [str(root / "notes.txt")]
    assert codes["loose_images"].items == [str(root / "stray.png")]

    with pytest.raises(InputError, match="no images in class sub-folders"):
        (tmp_path / "empty" / "a").mkdir(parents=True)
        scan_image_folders(tmp_path / "empty")


def test_decode_cache_is_written_once_and_skips_broken_files(tmp_path):
    good = write_class_folder(tmp_path / "good", 2)
    broken = write_broken_files(tmp_path / "broken")
    paths = sorted(good.rglob("*.*")) + list(broken.values())
    done = []
    decoded = decode_to_cache(paths, 20, tmp_path / "cache.npy", lambda d, t: done.append((d, t)))
    assert decoded.array.shape == (len(paths), 20, 20, 3) and decoded.array.dtype == np.uint8
    assert isinstance(decoded.array, np.memmap)  # later epochs read the file, they decode nothing
    assert decoded.ok.sum() == 4 and not decoded.ok[4:].any()
    assert sorted(code for _, code, _ in decoded.problems) == ["corrupt_image", "decompression_bomb", "empty_file",
                                                                "not_an_image"]
    assert done[-1] == (len(paths), len(paths))
    assert decoded.array[0, ..., 2].mean() > decoded.array[0, ..., 0].mean()  # blue/ sorts first: a blue image


def _prepare(folder, tmp_path, **data):
    task = ImageClassification()
    from workbench.core.config import RunConfig

    cfg = RunConfig(data=DataConfig(train=str(folder), **data))
    cfg.model.name = "small-cnn"
    cfg.train.image_size = 16
    task.configure(cfg)
    return task, task.prepare_data(cfg.data, 0, tmp_path / "cache", Callbacks())


def test_prepare_data_lists_every_skipped_file_and_checks_classes(tmp_path):
    root = tmp_path / "photos"
    write_class_folder(root, 10)
    broken = write_broken_files(root / "red")
    odd = write_odd_images(root / "blue")
    task, data = _prepare(root, tmp_path)
    findings = {f.code: f for f in data.report.findings}
    for kind, code in [("truncated", "corrupt_image"), ("empty", "empty_file"), ("text", "not_an_image"),
                       ("bomb", "decompression_bomb")]:
        assert any(str(broken[kind]) in item for item in findings[code].items), code
    counts = data.report.class_counts
    assert sum(counts["train"].values()) + sum(counts["test"].values()) + sum(counts["validation"].values()) == 20 + len(odd)
    assert data.resolved["skipped_files"] == 4
    assert data.eval_split == "test" and set(data.splits) == {"train", "validation", "test"}
    assert data.label_map.names == ["blue", "red"]
    text = data.report.to_text()
    assert str(broken["bomb"]) in text and "decompression bomb" in text


def test_imbalance_duplicates_and_single_class(tmp_path):
    root = tmp_path / "imb"
    write_class_folder(root, 2, classes={"rare": (10, 10, 10)})
    write_class_folder(root, 12, seed=3, classes={"common": (250, 250, 250)})
    (root / "rare" / "copy.png").write_bytes((root / "common" / "common1.png").read_bytes())
    _, data = _prepare(root, tmp_path, test_fraction=0, val_fraction=0)
    codes = {f.code for f in data.report.findings}
    assert {"imbalance", "conflicting_duplicates"} <= codes

    single = tmp_path / "single"
    write_class_folder(single, 4, classes={"only": (1, 2, 3)})
    with pytest.raises(InputError, match="only the class 'only'"):
        _prepare(single, tmp_path)


def test_augmentation_is_seeded_and_evaluation_is_deterministic():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (5, 37, 37, 3), dtype=np.uint8)
    idx = np.array([4, 0, 2])
    a = random_resized_crops(images, idx, 32, np.random.default_rng(7))
    b = random_resized_crops(images, idx, 32, np.random.default_rng(7))
    c = random_resized_crops(images, idx, 32, np.random.default_rng(8))
    assert a.shape == (3, 32, 32, 3) and (a == b).all() and (a != c).any()
    crops = center_crops(images, idx, 32)
    assert (crops[0] == images[4, 2:34, 2:34]).all()
    pixels = to_pixels(crops, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert pixels.shape == (3, 3, 32, 32) and pixels.dtype == np.float32
    assert pixels.min() >= -1.0 and pixels.max() <= 1.0
    assert np.allclose(pixels[0, 0], images[4, 2:34, 2:34, 0] / 127.5 - 1, atol=1e-6)
