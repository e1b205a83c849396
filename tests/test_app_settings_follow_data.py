"""Desktop app: the Model page's settings follow a newly opened dataset (issue 35, items 1 and 2).

Settings the app chose (defaults, the task's metric, the sample's quick-trial epochs and length) are
chosen afresh for each dataset; settings the user changed are kept where they still apply, and the
page names them. Only the methods that apply to the chosen backbone are offered: a method that does
not is switched to full fine-tuning with a note, so Start never fails on it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from app_support import APP_MARKS, aloop, drop_files, load, wait_task, window  # noqa: F401 - fixtures
from conftest import sentiment_rows, write_tsv
from image_samples import write_class_folder, write_grey_glyphs

pytestmark = [*APP_MARKS, pytest.mark.timeout(300)]


def _settled(qtbot, window) -> None:
    """Wait until the page has worked out the task (its metric) and every background flow is done."""
    from workbench.app import aio

    qtbot.waitUntil(lambda: window.state.config.train.metric is not None and not aio._tasks, timeout=30000)


def _open(qtbot, window, path, sample: bool = False) -> None:
    """Open a TSV as File > Open does (``sample``: as `workbench --sample` opens the bundled one)."""
    wait_task(qtbot, window.data_page.open_path(str(path), sample=sample))
    _settled(qtbot, window)


def _open_images(qtbot, window, root) -> None:
    with qtbot.waitSignal(window.data_page.images.view.loaded, timeout=20000):
        drop_files(window.sidebar, root)
    page = window.model_page
    qtbot.waitUntil(lambda: page.effective_task == "image-classification", timeout=30000)
    _settled(qtbot, window)


def _settings(window) -> dict:
    from workbench.app import carried

    return carried.values(window.state.config)


def test_the_samples_quick_settings_do_not_follow_to_the_next_file(qtbot, window, tmp_path):
    sample = write_tsv(tmp_path / "sample.tsv", sentiment_rows(60))
    other = write_tsv(tmp_path / "other.tsv", sentiment_rows(80))
    page = window.model_page
    _open(qtbot, window, other)
    fresh = _settings(window)
    assert fresh["train.epochs"] is None and fresh["train.max_length"] == 128 and fresh["train.metric"] == "macro_f1"

    _open(qtbot, window, sample, sample=True)
    t = window.state.config.train
    assert (t.epochs, t.max_length) == (1.0, 64) and page.epochs.value() == 1 and page.max_length.value() == 64
    assert page.kept_note.text() == "" and not page.kept_note.isVisibleTo(page)

    _open(qtbot, window, other)
    assert _settings(window) == fresh  # as when the file was opened first
    assert page.epochs.text() == "Automatic" and page.max_length.value() == 128
    assert page.metric.currentData() == "macro_f1" and page.patience.value() == 0
    assert not page.kept_note.isVisibleTo(page)


def test_a_setting_the_user_changed_is_kept_and_the_page_says_so(qtbot, window, tmp_path):
    page = window.model_page
    _open(qtbot, window, write_tsv(tmp_path / "sample.tsv", sentiment_rows(60)), sample=True)
    window.go_to("model")
    page.lr.setValue(3e-4)
    page.batch_size.setValue(16)
    page.metric.setCurrentIndex(page.metric.findData("accuracy"))
    assert window.state.config.train.lr == 3e-4

    _open(qtbot, window, write_tsv(tmp_path / "other.tsv", sentiment_rows(80)))
    t = window.state.config.train
    assert (t.lr, t.batch_size, t.metric) == (3e-4, 16, "accuracy")
    assert (t.epochs, t.max_length) == (None, 128)  # the sample's, not the user's: chosen afresh
    assert page.lr.value() == 3e-4 and page.batch_size.value() == 16 and page.metric.currentData() == "accuracy"
    assert page.kept_note.isVisibleTo(page)
    assert page.kept_note.text() == "Kept from before: learning rate 3e-4, batch size 16, best model by Accuracy."

    # Restore Defaults makes every setting the app's again: the next file keeps none.
    page.restore_defaults()
    _open(qtbot, window, write_tsv(tmp_path / "third.tsv", sentiment_rows(70)))
    assert window.state.config.train.lr is None and not page.kept_note.isVisibleTo(page)


def test_an_image_folder_after_the_sample_gets_its_own_epochs(qtbot, window, tmp_path):
    page = window.model_page
    _open(qtbot, window, write_tsv(tmp_path / "sample.tsv", sentiment_rows(60)), sample=True)
    page.max_length.setValue(256)  # a text setting: it does not apply to images
    page.batch_size.setValue(16)
    _open_images(qtbot, window, write_grey_glyphs(tmp_path / "glyphs", 6, side=16))
    t = window.state.config.train
    assert t.epochs is None and t.batch_size == 16 and t.max_length == 128
    text = window.data_page.images.view.defaults.text()
    assert "Up to 15 epochs" in text and "as set" not in text
    assert page.image_note.text() == text and page.epochs.text() == "Automatic"
    assert page.kept_note.text() == "Kept from before: batch size 16."


def test_lora_then_an_image_folder_offers_only_methods_that_apply_and_starts(qtbot, window, tmp_path, runs_home):
    page = window.model_page
    window.go_to("model")
    load(qtbot, window, write_tsv(tmp_path / "reviews.tsv", sentiment_rows(60)))
    wait_task(qtbot, page.load_catalog())
    _settled(qtbot, window)
    offered = lambda: [page.method.itemData(i) for i in range(page.method.count())]  # noqa: E731
    assert offered() == ["full", "frozen", "lora", "adalora"]  # text backbones are transformers
    page.method.setCurrentIndex(page.method.findData("lora"))
    assert window.state.config.model.method == "lora"

    _open_images(qtbot, window, write_class_folder(tmp_path / "photos", 6))
    qtbot.waitUntil(lambda: page.modality == "image", timeout=30000)
    cfg = window.state.config
    assert cfg.model.name == "efficientnet-lite0" and offered() == ["full", "frozen"]
    assert cfg.model.method == "full" and page.method.currentData() == "full"
    assert page.method_note.isVisibleTo(page)
    assert page.method_note.text().startswith("LoRA adapters applies to Hugging Face transformer backbones; "
                                              "efficientnet-lite0 is not one, so the method is now full fine-tuning")
    assert "method" not in page.kept_note.text() and not page.lora_rank.isVisibleTo(page)

    # A frozen backbone needs pretrained weights: small-cnn, trained from scratch, offers full only.
    page.method.setCurrentIndex(page.method.findData("frozen"))
    assert not page.method_note.isVisibleTo(page)  # the user's own choice clears the note
    item = next(page.backbones.topLevelItem(i) for i in range(page.backbones.topLevelItemCount())
                if page.backbones.topLevelItem(i).text(0) == "small-cnn")
    page.backbones.setCurrentItem(item)
    assert offered() == ["full"] and cfg.model.method == "full" and "trained from scratch" in page.method_note.text()
    _settled(qtbot, window)

    page.image_size.setValue(32)
    page.batch_size.setValue(8)
    cfg.train.max_steps = 2
    window.go_to("train")
    assert window.train_page.start_button.isEnabled(), window.train_page.reason.text()
    with qtbot.waitSignal(window.controller.started, timeout=5000) as started:
        window.train_page.start_button.click()
    with qtbot.waitSignal(window.controller.finished, timeout=120000):
        pass
    saved = json.loads((Path(started.args[0]) / "config.json").read_text())
    assert saved["model"]["method"] == "full" and saved["model"]["name"] == "small-cnn"


def test_methods_for_a_backbone(tmp_path):
    from workbench.app.pages.model import methods_for
    from workbench.core.backbones import BackboneInfo

    own = BackboneInfo("efficientnet-lite0", "package", "/x", model_type="efficientnet-lite0")
    scratch = BackboneInfo("small-cnn", "builtin", "builtin:small-cnn", model_type="small-cnn")
    export = tmp_path / "export"
    export.mkdir()
    (export / "config.json").write_text(json.dumps({"workbench_architecture": "small-cnn"}))
    hub = tmp_path / "vit"
    hub.mkdir()
    (hub / "config.json").write_text(json.dumps({"model_type": "vit"}))
    assert methods_for(None, "text") == ("full", "frozen", "lora", "adalora")
    assert methods_for(None, "image") == methods_for(own, "image") == ("full", "frozen")
    assert methods_for(scratch, "image") == ("full",)
    assert methods_for(BackboneInfo("mine", "local", str(export)), "image") == ("full", "frozen")
    assert methods_for(BackboneInfo("vit", "local", str(hub), model_type="vit"), "image") == (
        "full", "frozen", "lora", "adalora")


def test_rederive_keeps_only_what_the_user_changed_and_what_applies():
    from workbench.app import carried
    from workbench.core.config import RunConfig

    cfg = RunConfig()
    auto = carried.values(cfg)
    auto, kept = carried.rederive(cfg, auto, "text-classification", quick_trial=True)
    assert (cfg.train.epochs, cfg.train.max_length, kept) == (1.0, 64, {})
    cfg.train.lr, cfg.train.max_length, cfg.model.method, cfg.model.lora_rank = 3e-4, 256, "lora", 4
    auto, kept = carried.rederive(cfg, auto, "image-classification")
    assert (cfg.train.epochs, cfg.train.lr, cfg.train.max_length) == (None, 3e-4, 128)  # length: text only
    assert (cfg.model.method, cfg.model.lora_rank) == ("lora", 4)
    assert kept == {"model.method": "method LoRA adapters", "train.lr": "learning rate 3e-4",
                    "model.lora_rank": "LoRA rank 4"}
    cfg.train.metric = "mse"  # a regression metric: no classifier has it
    auto, kept = carried.rederive(cfg, auto, "text-classification")
    assert cfg.train.metric is None and "train.metric" not in kept
