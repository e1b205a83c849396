"""Desktop app, image classification: the Data page's thumbnail grid per class, and the Evaluate page's
confusion-matrix cell grid and drop-an-image "try it", on a run the engine really trained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from app_support import APP_MARKS, aloop, drop_files, window  # noqa: F401 - fixtures
from image_samples import write_broken_files, write_class_folder

pytestmark = [*APP_MARKS, pytest.mark.timeout(300)]


def test_dropping_an_image_folder_shows_a_grid_per_class(qtbot, window, tmp_path):
    from workbench.app.views.images import THUMB

    root = tmp_path / "photos"
    write_class_folder(root, 5)
    broken = write_broken_files(root / "red")
    (root / "notes.txt").write_text("not an image")
    view = window.data_page.images.view
    with qtbot.waitSignal(view.loaded, timeout=20000):
        drop_files(window.sidebar, root)
    assert window.data_page.stack.currentWidget() is view
    data = window.state.data
    assert data.usable and data.class_counts == {"blue": 5, "red": 5 + len(broken)}
    assert window.state.config.data.train == str(root.resolve())
    assert [view.class_combo.itemData(i) for i in range(view.class_combo.count())] == [("train", "blue"), ("train", "red")]
    assert any("notes.txt" in view.findings.item(i).toolTip() for i in range(view.findings.count()))

    view.show_class("red")
    model = view.grid.grid_model
    assert model.rowCount() == 9
    for r in range(model.rowCount()):  # ask for every thumbnail, as scrolling through would
        model.data(model.index(r), 1)
    qtbot.waitUntil(lambda: not model.loading, timeout=20000)
    sizes = {}
    for r in range(model.rowCount()):
        path = model.data(model.index(r), 256 + 1)
        pix = model.data(model.index(r), 1)
        sizes[Path(path).name] = (pix.width(), pix.height())
    assert all(max(s) <= THUMB for s in sizes.values())
    assert sizes["red1.png"] != (THUMB, THUMB)  # a real thumbnail keeps the photo's aspect ratio
    assert sizes["empty.png"] == (THUMB, THUMB)  # the unreadable-file tile


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> Path:
    """A small CNN trained on generated red/blue images with a few mislabelled ones, so the
    confusion matrix has mistakes to open."""
    from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from workbench.core.run.pipeline import run_training

    folder = tmp_path_factory.mktemp("image-eval")
    write_class_folder(folder / "train", 16)
    write_class_folder(folder / "test", 8, seed=2)
    for path in sorted((folder / "test" / "blue").iterdir())[:3]:  # blue images filed under red: mistakes
        path.rename(folder / "test" / "red" / f"moved-{path.name}")
    cfg = RunConfig(
        data=DataConfig(train=str(folder / "train"), test=str(folder / "test")),
        model=ModelConfig(name="small-cnn"),
        train=TrainConfig(epochs=4, batch_size=8, lr=3e-3, warmup_ratio=0.0, image_size=32, seed=0),
        run_dir=str(folder / "runs" / "run-1"),
    )
    return Path(run_training(cfg).run_dir)


@pytest.fixture()
def evaluate_page(qtbot, image_run):
    from workbench.app.pages.evaluate import EvaluatePage

    page = EvaluatePage()
    qtbot.addWidget(page)
    page.resize(1200, 800)
    page.show()
    with qtbot.waitSignal(page.loaded, timeout=30000):
        page.show_run(str(image_run))
    yield page
    page.shutdown()


def test_confusion_cell_opens_exactly_its_images(qtbot, evaluate_page, image_run):
    from workbench.app.views.images import ImageClassificationView

    view = evaluate_page.view
    assert isinstance(view, ImageClassificationView)
    preds = [json.loads(l) for l in (image_run / "predictions.jsonl").read_text().splitlines()]
    wrong = [p for p in preds if p["gold"] == "red" and p["predicted"] == "blue"]
    assert wrong, "the moved blue images should be mistakes"
    view.confusion.choose("red", "blue")
    dialog = view.cell_dialog
    qtbot.waitUntil(dialog.isVisible, timeout=5000)
    model = dialog.grid.grid_model
    shown = [model.data(model.index(r), 256 + 1) for r in range(model.rowCount())]
    assert sorted(shown) == sorted(p["path"] for p in wrong)
    first = min(wrong, key=lambda p: p["confidence"])  # least confident first
    caption = model.data(model.index(0), 0)
    assert Path(first["path"]).name in caption and f"{first['confidence']:.0%}" in caption and "blue" in caption
    assert "gold: red" in model.data(model.index(0), 3)  # the tooltip names gold, predicted, confidence
    assert view.predictions_model.rowCount() == len(wrong)  # the table below shows the same rows

    view.confusion.choose("blue", "blue")
    shown = [model.data(model.index(r), 256 + 1) for r in range(model.rowCount())]
    assert sorted(shown) == sorted(p["path"] for p in preds if p["gold"] == p["predicted"] == "blue")


def test_try_it_takes_a_dropped_image(qtbot, evaluate_page, image_run):
    view = evaluate_page.view
    preds = [json.loads(l) for l in (image_run / "predictions.jsonl").read_text().splitlines()]
    target = preds[0]
    with qtbot.waitSignal(view.try_it.predicted, timeout=60000) as got:
        drop_files(view.try_it, target["path"])
    scores = got.args[0]
    assert scores[0][0] == target["predicted"] == view.try_it.top_label()
    assert scores[0][1] == pytest.approx(target["confidence"], abs=2e-3)
    assert abs(sum(s for _, s in scores) - 1) < 1e-4
    # The saliency overlay, computed off the GUI thread, replaces the preview
    before = view.try_it.picture.pixmap().toImage()
    view.try_it.saliency.click()
    qtbot.waitUntil(lambda: "Where the model looked" in view.try_it.status.text(), timeout=60000)
    assert view.try_it.picture.pixmap().toImage() != before


def test_a_listed_image_gets_its_saliency_in_try_it(qtbot, evaluate_page, image_run):
    view = evaluate_page.view
    record = view.predictions_model.row_record(0)
    view.explain_row(0)  # what a double-click on the row does
    qtbot.waitUntil(lambda: "Where the model looked" in view.try_it.status.text(), timeout=60000)
    status = view.try_it.status.text()
    assert f"Line {record['row']}" in status and f"“{record['predicted']}”" in status


def test_try_it_decodes_off_the_gui_thread_and_loads_the_model_once(qtbot, evaluate_page, image_run, monkeypatch,
                                                                      tmp_path):
    import threading

    import workbench.core.data.images as images
    import workbench.core.tasks.image.models as image_models
    from workbench.app.model_cache import MODELS

    decoded_on: list[threading.Thread] = []
    decode, load = images.decode_file, image_models.load_image_classifier

    def recording_decode(*args, **kwargs):
        decoded_on.append(threading.current_thread())
        return decode(*args, **kwargs)

    loads: list[str] = []
    monkeypatch.setattr(images, "decode_file", recording_decode)
    monkeypatch.setattr(image_models, "load_image_classifier",
                        lambda folder, **kw: loads.append(str(folder)) or load(folder, **kw))
    MODELS.clear()
    box = evaluate_page.view.try_it
    preds = [json.loads(l) for l in (image_run / "predictions.jsonl").read_text().splitlines()]
    for target in preds[:3]:
        with qtbot.waitSignal(box.predicted, timeout=60000) as got:
            drop_files(box, target["path"])
            assert not decoded_on or threading.main_thread() not in decoded_on
        assert got.args[0][0][0] == target["predicted"]
        assert not box.picture.pixmap().isNull()  # the preview the worker decoded
    assert decoded_on and threading.main_thread() not in decoded_on
    assert len(loads) == 1  # one load for three predictions

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    drop_files(box, broken)
    qtbot.waitUntil(lambda: "not an image the model can read" in box.status.text(), timeout=30000)
    assert box.picture.text() == "Not a readable image" and box.top_label() is None


def test_model_page_follows_an_image_folder_and_a_run_uses_its_settings(qtbot, window, tmp_path):
    """Dropping an image folder lists image backbones, shows the image settings, and applies the
    task's suggested learning rate, never over one the user typed; a run started from the app
    trains with exactly those settings."""
    from app_support import load, wait_task

    page = window.model_page
    root = write_class_folder(tmp_path / "photos", 6)
    with qtbot.waitSignal(window.data_page.images.view.loaded, timeout=20000):
        drop_files(window.sidebar, root)
    wait_task(qtbot, page.load_catalog())
    qtbot.waitUntil(lambda: page.modality == "image" and page.effective_task == "image-classification", timeout=30000)
    wait_task(qtbot, page.refresh_suggestions())
    names = [page.backbones.topLevelItem(i).text(0) for i in range(page.backbones.topLevelItemCount())]
    assert names[0] == "efficientnet-lite0" and "small-cnn" in names and "all-MiniLM-L6-v2" not in names
    cfg = window.state.config
    # lr None: the task's default for the method and backbone, which the page shows.
    assert cfg.model.name == "efficientnet-lite0" and (cfg.train.lr, page.lr.value()) == (None, 5e-4)
    assert "5e-4" in page.lr_note.text()
    assert page.image_size.isVisibleTo(page) and page.method.isVisibleTo(page)
    assert not page.max_length.isVisibleTo(page)
    assert [page.metric.itemData(i) for i in range(page.metric.count())][:2] == ["accuracy", "macro_f1"]

    page.method.setCurrentIndex(page.method.findData("frozen"))  # only the head learns: a larger step
    wait_task(qtbot, page.refresh_suggestions())
    assert cfg.model.method == "frozen" and (cfg.train.lr, page.lr.value()) == (None, 1e-3)
    page.lr.setValue(2e-4)  # the user's own rate survives later suggestions
    page.method.setCurrentIndex(page.method.findData("full"))
    wait_task(qtbot, page.refresh_suggestions())
    assert cfg.train.lr == 2e-4 and cfg.model.method == "full"
    page.restore_defaults()
    wait_task(qtbot, page.refresh_suggestions())
    assert (cfg.train.lr, page.lr.value()) == (None, 5e-4)

    item = next(page.backbones.topLevelItem(i) for i in range(page.backbones.topLevelItemCount())
                if page.backbones.topLevelItem(i).text(0) == "small-cnn")
    page.backbones.setCurrentItem(item)
    wait_task(qtbot, page.refresh_suggestions())
    assert cfg.model.name == "small-cnn" and (cfg.train.lr, page.lr.value()) == (None, 2e-3)
    page.image_size.setValue(32)
    page.epochs.setValue(1)
    page.batch_size.setValue(8)
    assert cfg.train.image_size == 32
    window.go_to("train")
    with qtbot.waitSignal(window.controller.started, timeout=5000) as started:
        window.train_page.start_button.click()
    with qtbot.waitSignal(window.controller.finished, timeout=120000) as done:
        pass
    saved = json.loads((Path(started.args[0]) / "config.json").read_text())
    assert done.args[0].task == "image-classification"
    assert saved["model"]["name"] == "small-cnn" and saved["train"]["lr"] == 2e-3
    assert saved["train"]["image_size"] == 32

    # Back to text: the text backbones return and the default text rate with them.
    from conftest import NEUTRAL, POSITIVE

    tsv = tmp_path / "s.tsv"
    tsv.write_text("text\tlabel\n" + "".join(f"{w} {n}\t{'pos' if w in POSITIVE else 'neu'}\n"
                                             for w in POSITIVE + NEUTRAL for n in range(3)), encoding="utf-8")
    load(qtbot, window, tsv)
    qtbot.waitUntil(lambda: page.modality == "text", timeout=30000)
    wait_task(qtbot, page.refresh_suggestions())
    assert page.backbones.topLevelItem(0).text(0) == "all-MiniLM-L6-v2" and cfg.model.name == "all-MiniLM-L6-v2"
    assert (cfg.train.lr, page.lr.value()) == (None, 5e-5)
    assert page.lr_note.text() == "" and page.max_length.isVisibleTo(page)
