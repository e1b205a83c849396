"""Image defaults chosen from the data (workbench/core/tasks/image/policy.py): small greyscale images get a
smaller input, mild augmentation and more epochs; photos keep the ImageNet recipe; the user's
--image-size / --augment / --epochs win; every image run reports the frozen-feature baseline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from image_samples import coloured, write_class_folder, write_grey_glyphs

from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from workbench.core.errors import InputError
from workbench.core.tasks.image.policy import (
    ImageStats,
    choose_image_policy,
    image_epochs,
    measure_images,
)
from workbench.core.tasks.image.transforms import random_resized_crops


def _photos(folder: Path, n: int = 6) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"p{i}.jpg"
        coloured((120, 80, 40), (400 + i, 300), seed=i).save(p, "JPEG")
        paths.append(p)
    return paths


def test_measure_reads_sizes_and_greyscale_from_headers(tmp_path):
    grey = write_grey_glyphs(tmp_path / "grey", 5, side=28)
    stats = measure_images(sorted(grey.rglob("*.png")))
    assert (stats.files, stats.measured, stats.median_side, stats.grey_share) == (10, 10, 28, 1.0)
    assert stats.greyscale and "28x28" in stats.describe() and "greyscale" in stats.describe()

    photos = measure_images(_photos(tmp_path / "photos") + [tmp_path / "missing.jpg"])
    assert photos.files == 7 and photos.measured == 6  # an unreadable file is left to the decode step
    assert (photos.median_side, photos.grey_share, photos.greyscale) == (300, 0.0, False)
    assert measure_images(sorted(grey.rglob("*.png")), limit=4).measured == 4  # a sample of a large set


def test_small_greyscale_images_get_a_small_input_and_mild_augmentation():
    digits = ImageStats(files=1000, measured=400, median_width=28, median_height=28, median_side=28, grey_share=1.0)
    p = choose_image_policy(digits, 224)
    assert (p.image_size, p.resize_to, p.augment, p.flip) == (96, 96, "mild", False)  # 3x 28, the whole image
    assert p.crop_scale[0] >= 0.7  # never a quarter-area crop of a 28-pixel glyph
    text = p.describe()
    assert "small" in text and "no flips" in text and "Greyscale" in text
    assert p.to_dict()["reasons"] == p.reasons and p.to_dict()["summary"].startswith("96 px input (whole image)")

    tiny = ImageStats(10, 10, 8, 8, 8, 1.0)
    assert choose_image_policy(tiny, 224).image_size == 64  # never below 64 pixels
    assert choose_image_policy(tiny, 128).image_size == 64


def test_photos_keep_the_imagenet_recipe():
    photos = ImageStats(files=245, measured=245, median_width=500, median_height=375, median_side=375, grey_share=0.0)
    p = choose_image_policy(photos, 224)
    assert (p.image_size, p.resize_to, p.augment, p.flip) == (224, 256, "strong", True)
    assert p.crop_scale == (0.25, 1.0) and "Greyscale" not in p.describe()
    # Mid-sized images (3x their side reaches the backbone's size) are not shrunk either.
    assert choose_image_policy(ImageStats(10, 10, 80, 80, 80, 0.0), 224).image_size == 224


def test_the_users_choices_win_and_reproduce_the_old_defaults():
    digits = ImageStats(1000, 400, 28, 28, 28, 1.0)
    old = choose_image_policy(digits, 224, image_size=224, augment="strong")
    assert (old.image_size, old.resize_to, old.augment, old.flip) == (224, 256, "strong", True)
    assert any("--image-size" in r for r in old.reasons) and any("--augment" in r for r in old.reasons)
    none = choose_image_policy(digits, 224, augment="none")
    assert (none.image_size, none.augment, none.crop_scale, none.flip) == (96, "none", None, False)
    # A backbone that cannot take another input size (a ViT checkpoint) keeps its own.
    fixed = choose_image_policy(digits, 224, resizable=False)
    assert fixed.image_size == 224 and fixed.augment == "mild"  # still enlarged 8x: mild crops
    # Nothing measured (no readable header): the backbone's defaults.
    assert choose_image_policy(ImageStats(3, 0, 0, 0, 0, 0.0), 224).augment == "strong"


def test_random_crop_ranges_come_only_with_augmentation():
    photos = choose_image_policy(ImageStats(10, 10, 375, 375, 375, 0.0), 224)
    assert photos.random_crop() == (photos.crop_scale, photos.crop_ratios) == ((0.25, 1.0), (3 / 4, 4 / 3))
    none = choose_image_policy(ImageStats(10, 10, 375, 375, 375, 0.0), 224, augment="none")
    with pytest.raises(ValueError, match="'none' cuts no random crops"):
        none.random_crop()


def test_epochs_train_small_sets_longer_with_early_stopping():
    small = image_epochs(1000, batch_size=32)
    assert (small.epochs, small.patience) == (10.0, 3) and "early" in small.reason
    assert image_epochs(100).epochs == 15.0  # at most 15 passes
    large = image_epochs(50_000)
    assert (large.epochs, large.patience) == (3.0, None)
    assert image_epochs(1000, batch_size=8).epochs == 3.0  # smaller batches: more steps per epoch


def test_mild_crops_never_mirror_and_keep_most_of_the_image():
    # Left half dark, right half bright: a mirrored crop has its bright side on the left.
    images = np.zeros((4, 32, 32, 3), np.uint8)
    images[:, :, 16:] = 255
    index = np.repeat(np.arange(4), 50)
    mild = random_resized_crops(images, index, 32, np.random.default_rng(0), flip=False, scale=(0.7, 1.0),
                                ratios=(0.9, 1.1))
    left, right = mild[:, :, :8].mean((1, 2, 3)), mild[:, :, -8:].mean((1, 2, 3))
    assert (left < right).all()
    strong = random_resized_crops(images, index, 32, np.random.default_rng(0))
    assert (strong[:, :, :8].mean((1, 2, 3)) > strong[:, :, -8:].mean((1, 2, 3))).any()  # flips happen


def _run(folder, runs_home, **train):
    from workbench.core.run.pipeline import run_training

    base = dict(batch_size=8, lr=3e-3, warmup_ratio=0.0, seed=0, max_steps=6)
    base.update(train)
    cfg = RunConfig(data=DataConfig(train=str(folder / "train"), test=str(folder / "test")),
                    model=ModelConfig(name="small-cnn"), train=TrainConfig(**base))
    return run_training(cfg)


def test_a_small_greyscale_run_records_its_choices_and_the_baseline(tmp_path, runs_home):
    root = tmp_path / "glyphs"
    write_grey_glyphs(root / "train", 12, side=16)
    write_grey_glyphs(root / "test", 5, side=16, seed=1)
    result = _run(root, runs_home)
    run = Path(result.run_dir)
    config = json.loads((run / "config.json").read_text())
    t, resolved = config["train"], config["resolved"]
    # Pinned, so `workbench train --config RUN/config.json` preprocesses and trains the same way.
    assert (t["image_size"], t["augment"]) == (64, "mild")  # 16-pixel images: 64, not the small CNN's 128
    assert t["epochs"] == 15.0 and t["early_stopping_patience"] == 3  # 22 images: a few steps an epoch
    assert "early" in resolved["epochs_reason"]
    assert resolved["image_stats"]["median_side"] == 16 and resolved["image_stats"]["grey_share"] == 1.0
    assert resolved["image_policy"]["flip"] is False
    assert any("Greyscale" in r for r in resolved["image_policy"]["reasons"])
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(e.get("phase") == "preprocessing" and "mild augmentation" in e.get("detail", "") for e in events)

    report = json.loads((run / "report.json").read_text())
    b = report["baseline"]
    assert b["kind"] == "logistic_regression_on_frozen_features"
    assert b["split"] == "test" and b["train_rows"] == report["trained_on"]["rows"]
    assert 0 <= b["accuracy"] <= 1 and 0 <= b["macro_f1"] <= 1 and b["seconds"] >= 0
    assert b["pretrained"] is False and b["capped"] is False  # the small CNN: random features
    # Scored on the same rows as the fine-tuned model: the same number of them.
    assert report["n"] == 10
    assert "Baseline, logistic regression" in (run / "report.txt").read_text()
    assert "Baseline" in result.report_text


def test_the_users_settings_are_kept(tmp_path, runs_home):
    root = tmp_path / "glyphs"
    write_grey_glyphs(root / "train", 8, side=16)
    write_grey_glyphs(root / "test", 3, side=16, seed=1)
    result = _run(root, runs_home, image_size=32, augment="strong", epochs=2.0, max_steps=2)
    t = json.loads((Path(result.run_dir) / "config.json").read_text())["train"]
    assert (t["image_size"], t["augment"], t["epochs"], t["early_stopping_patience"]) == (32, "strong", 2.0, None)


def test_the_baseline_caps_its_training_rows(tmp_path, runs_home):
    from workbench.core.events import Callbacks
    from workbench.core.tasks.image.baseline import frozen_feature_baseline
    from workbench.core.tasks.image.classification import ImageClassification

    root = write_class_folder(tmp_path / "photos", 10)
    task = ImageClassification()
    cfg = RunConfig(data=DataConfig(train=str(root), val_fraction=0.0, test_fraction=0.3),
                    model=ModelConfig(name="small-cnn"), train=TrainConfig(image_size=32))
    task.configure(cfg)
    data = task.prepare_data(cfg.data, 0, tmp_path / "cache", Callbacks())
    b = frozen_feature_baseline(task, task.backbone, data, data.splits["train"], "test", 128, tmp_path / "cache",
                                Callbacks(), max_rows=6)
    assert (b["train_rows"], b["rows_available"], b["capped"]) == (6, len(data.splits["train"]), True)


def test_a_bad_augment_value_is_refused(tmp_path):
    cfg = RunConfig(data=DataConfig(train=str(tmp_path)), train=TrainConfig(augment="heavy"))
    with pytest.raises(InputError, match="--augment must be strong, mild or none"):
        cfg.validate()


def test_cli_refuses_a_bad_augment_value(tmp_path):
    from test_cli import wb

    root = write_grey_glyphs(tmp_path / "glyphs", 4, side=16)
    p = wb(["train", root, "--model", "small-cnn", "--augment", "heavy"], tmp_path / "home")
    assert p.returncode == 2 and "--augment must be strong, mild or none, got 'heavy'" in p.stderr
    assert "Traceback" not in p.stderr


@pytest.mark.slow
def test_cli_says_what_it_chose_and_prints_the_baseline(tmp_path):
    from test_cli import wb

    root = tmp_path / "glyphs"
    write_grey_glyphs(root / "train", 10, side=16)
    write_grey_glyphs(root / "test", 4, side=16, seed=1)
    p = wb(["train", root / "train", "--test", root / "test", "--model", "small-cnn", "--batch-size", 8,
            "--max-steps", 3], tmp_path / "home")
    assert p.returncode == 0, p.stderr
    assert "[preprocessing: 64 px input (whole image), mild augmentation" in p.stderr
    assert "[epochs: up to 15 epochs" in p.stderr and "--epochs sets them" in p.stderr
    assert "Baseline, logistic regression on the untrained (random) small-cnn features (18 training images" in p.stdout  # 2 held out


def test_front_ends_preview_what_a_run_will_choose():
    from workbench.core.tasks.image.policy import planned_defaults

    digits = ImageStats(1000, 400, 28, 28, 28, 1.0)
    plan = planned_defaults(digits, 1000, TrainConfig(), None)  # None: the default image backbone
    assert plan.measured.startswith("Images: median 28x28 pixels, all greyscale")
    assert plan.uses.startswith("Training will use 96 px input (whole image), mild augmentation")
    assert "Up to 10 epochs" in plan.uses and "Greyscale" in plan.why
    old = planned_defaults(digits, 1000, TrainConfig(epochs=3, image_size=224, augment="strong"), "efficientnet-lite0")
    assert "224 px input (centre crop), strong augmentation" in old.uses and "3 epochs, as set." in old.uses
    assert planned_defaults(digits, 1000, TrainConfig(), "small-cnn").uses.startswith("Training will use 96 px")
