"""Desktop app: the input size, augmentation and epochs chosen for a dropped image folder are shown,
with why, on the Data and Model pages; the Model page overrides them; the Evaluate page shows the
frozen-feature baseline beside the fine-tuned scores."""

from __future__ import annotations

from pathlib import Path

import pytest
from app_support import APP_MARKS, aloop, drop_files, window  # noqa: F401 - fixtures
from image_samples import write_grey_glyphs

pytestmark = [*APP_MARKS, pytest.mark.timeout(300)]


def test_small_greyscale_folder_shows_its_defaults_and_why(qtbot, window, tmp_path):
    root = write_grey_glyphs(tmp_path / "glyphs", 6, side=16)
    view = window.data_page.images.view
    with qtbot.waitSignal(view.loaded, timeout=20000):
        drop_files(window.sidebar, root)
    text = view.defaults.text()
    assert view.defaults.isVisibleTo(view)
    # EfficientNet-Lite0 (224 px) on 16-pixel images: a 64-pixel input, mild crops, no flips.
    assert "median 16x16 pixels, all greyscale" in text and "64 px input (whole image)" in text
    assert "mild augmentation" in text and "no flips" in text and "Greyscale images" in text
    assert "Up to 15 epochs" in text  # 12 images: enough passes for the optimizer steps, early stopping

    page = window.model_page
    window.go_to("model")
    qtbot.waitUntil(lambda: page.effective_modality == "image", timeout=20000)
    assert page.image_note.text() == text
    qtbot.waitUntil(lambda: page.image_note.isVisibleTo(page) and page.augment.isVisibleTo(page), timeout=5000)
    assert page.epochs.text() == "Automatic" and window.state.config.train.epochs is None

    # The user's choice wins, and both pages say so.
    page.augment.setCurrentIndex(page.augment.findData("strong"))
    page.image_size.setValue(224)
    page.epochs.setValue(4)
    t = window.state.config.train
    assert (t.augment, t.image_size, t.epochs) == ("strong", 224, 4.0)
    for shown in (page.image_note.text(), view.defaults.text()):
        assert "224 px input (centre crop), strong augmentation" in shown
        assert "as set (--augment)" in shown and "4 epochs, as set" in shown
    page.restore_defaults()
    t = window.state.config.train
    assert (t.augment, t.image_size, t.epochs) == (None, None, None)
    assert "64 px input" in page.image_note.text() and "64 px input" in view.defaults.text()

    # A frozen backbone: its features are cached, and the page says which crops train the head.
    assert not page.feature_views.isVisibleTo(page)
    page.method.setCurrentIndex(page.method.findData("frozen"))
    qtbot.waitUntil(lambda: page.feature_views.isVisibleTo(page), timeout=5000)
    assert "centre crops only (no augmentation)" in page.image_note.text()
    page.feature_views.setValue(3)
    assert window.state.config.train.feature_views == 3
    assert "centre crops and 2 augmented crops of each image" in page.image_note.text()


def test_evaluate_shows_the_baseline_beside_the_fine_tuned_scores(qtbot, tmp_path, runs_home):
    import json

    from workbench.app.pages.evaluate import EvaluatePage
    from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from workbench.core.run.pipeline import run_training

    root = tmp_path / "glyphs"
    write_grey_glyphs(root / "train", 10, side=16)
    write_grey_glyphs(root / "test", 4, side=16, seed=1)
    cfg = RunConfig(data=DataConfig(train=str(root / "train"), test=str(root / "test")),
                    model=ModelConfig(name="small-cnn"),
                    train=TrainConfig(batch_size=8, lr=3e-3, warmup_ratio=0.0, seed=0, max_steps=3))
    run = Path(run_training(cfg).run_dir)
    baseline = json.loads((run / "report.json").read_text())["baseline"]

    page = EvaluatePage()
    qtbot.addWidget(page)
    page.resize(1200, 800)
    page.show()
    with qtbot.waitSignal(page.loaded, timeout=30000):
        page.show_run(str(run))
    try:
        tile = page.view.baseline
        assert tile.isVisibleTo(page)
        assert tile.value.text() == f"{baseline['accuracy']:.3f}"
        assert "logistic regression" in tile.title.text() and "small-cnn" in tile.title.text()
        assert "fine-tuned" in tile.toolTip()
        # Its neighbour is the fine-tuned accuracy tile.
        assert page.view.tiles["accuracy"].isVisibleTo(page)
    finally:
        page.shutdown()
