"""Desktop app at the sizes people run it (issue 35 item 5 and parts of 11): nothing of the Evaluate
page is cut at 1280x800 (every table column as wide as its header, no horizontal scroll bar on the
per-class table, a Try-it box with room for a few lines), the window fits a 1280x800 screen less its
panel, image file names read in the grids, a listed image shows when its row is clicked, and the
Model page's two parameter counts say what each counts. Runs the engine really trained (tiny BERT,
a small CNN), offscreen."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from app_support import APP_MARKS, aloop, drop_files, wait_task, window  # noqa: F401 - fixtures
from conftest import sentiment_rows, write_tsv
from image_samples import write_class_folder
from PySide6.QtCore import QSize, Qt

pytestmark = [*APP_MARKS, pytest.mark.timeout(300)]

# A 1280x800 screen, the default window on one with a 32-pixel panel, and a 1920x1080 screen.
SIZES = [(1280, 800), (1264, 720), (1920, 1080)]


@pytest.fixture(scope="module")
def text_run(tmp_path_factory, tiny_model_dir) -> Path:
    """A finished three-class run whose labels are words, as a user's are."""
    from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from workbench.core.run.pipeline import run_training

    folder = tmp_path_factory.mktemp("layout")
    names = {"pos": "positive", "neg": "negative"}
    rows = [(t, "neutral" if i % 5 == 0 else names[l]) for i, (t, l) in enumerate(sentiment_rows(150))]
    cfg = RunConfig(
        data=DataConfig(train=str(write_tsv(folder / "reviews.tsv", rows))),
        model=ModelConfig(name=str(tiny_model_dir)),
        train=TrainConfig(epochs=1, batch_size=16, lr=3e-3, max_length=32, seed=1),
        run_dir=str(folder / "runs" / "run-1"),
    )
    return Path(run_training(cfg).run_dir)


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> Path:
    from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from workbench.core.run.pipeline import run_training

    folder = tmp_path_factory.mktemp("layout-images")
    write_class_folder(folder / "train", 10)
    write_class_folder(folder / "test", 4, seed=2)
    cfg = RunConfig(
        data=DataConfig(train=str(folder / "train"), test=str(folder / "test")),
        model=ModelConfig(name="small-cnn"),
        train=TrainConfig(epochs=2, batch_size=8, lr=3e-3, warmup_ratio=0.0, image_size=32, seed=0),
        run_dir=str(folder / "runs" / "run-1"),
    )
    return Path(run_training(cfg).run_dir)


def _show_run(qtbot, window, run_dir: Path, size: tuple[int, int]):
    window.resize(*size)
    window.ensure_run_pages()
    with qtbot.waitSignal(window.evaluate_page.loaded, timeout=30000):
        window.open_run(str(run_dir))
    qtbot.waitUntil(lambda: window.evaluate_page.view is not None and window.evaluate_page.view.isVisible())
    qtbot.wait(50)  # the layout passes after the run is shown
    return window.evaluate_page.view


def _cut_columns(table) -> list[str]:
    """The visible columns narrower than their header's text and margins."""
    from PySide6.QtWidgets import QStyle

    header = table.horizontalHeader()
    margins = 2 * header.style().pixelMetric(QStyle.PixelMetric.PM_HeaderMargin, None, header)
    model = table.model()
    cut = []
    for c in range(model.columnCount()):
        if header.isSectionHidden(c):
            continue
        text = str(model.headerData(c, Qt.Orientation.Horizontal))
        if header.sectionSize(c) < header.fontMetrics().horizontalAdvance(text) + margins:
            cut.append(f"{text}: {header.sectionSize(c)} px")
    return cut


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_no_evaluate_column_is_narrower_than_its_header(qtbot, window, text_run, size):
    view = _show_run(qtbot, window, text_run, size)
    assert window.width() <= size[0] and window.height() <= size[1]  # the pages' minimums allow the size
    per_class = view.per_class
    labels = [per_class.model().index(r, 0).data() for r in range(per_class.model().rowCount())]
    assert sorted(labels) == ["negative", "neutral", "positive"]
    for sort_column in (-1, 1):  # a sort arrow takes room in its header too
        per_class.sortByColumn(sort_column, Qt.SortOrder.DescendingOrder)
        qtbot.wait(20)
        for table in (per_class, view.confusion, view.predictions):
            assert table.isVisible() and not _cut_columns(table), (type(table).__name__, _cut_columns(table))
        header = per_class.horizontalHeader()
        assert header.length() <= per_class.viewport().width()  # every column whole: nothing to scroll to
        assert not per_class.horizontalScrollBar().isVisible()
        metrics = per_class.fontMetrics()
        assert header.sectionSize(0) >= max(metrics.horizontalAdvance(label) for label in labels)  # labels read whole
    confusion = view.confusion.horizontalHeader()
    assert confusion.length() <= view.confusion.viewport().width()


def test_try_it_has_room_for_a_few_lines(qtbot, window, text_run):
    view = _show_run(qtbot, window, text_run, (1280, 800))
    box = view.try_it
    lines = box.input.fontMetrics().lineSpacing()
    assert box.input.isVisible() and box.input.height() >= 3 * lines and box.input.width() >= 250
    assert box.height() >= 8 * lines  # the texts, the buttons and the answer's bars below them
    box.input.setFocus()
    qtbot.keyClicks(box.input, "a great film")
    qtbot.keyClick(box.input, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)  # a new line, not a prediction
    qtbot.keyClicks(box.input, "that i loved")
    assert box.input.text() == "a great film\nthat i loved" and box.button.isEnabled()
    with qtbot.waitSignal(box.predicted, timeout=60000) as got:
        qtbot.keyClick(box.input, Qt.Key.Key_Return)  # Enter predicts
    assert sorted(label for label, _ in got.args[0]) == ["negative", "neutral", "positive"]


def test_the_window_fits_a_1280x800_screen_less_its_panel(qtbot, window):
    from workbench.app.window import default_size

    available = window.screen().availableGeometry().size()  # the offscreen screen is smaller than a laptop's
    assert window.size() == default_size(available).expandedTo(window.minimumSizeHint())  # no saved geometry
    laptop = default_size(QSize(1280, 768))  # a 1280x800 screen with a 32-pixel panel
    assert laptop.width() <= 1280 - 16 and laptop.height() <= 768 - 48  # room for the title bar and borders
    assert default_size(QSize(1920, 1050)) == QSize(1280, 800)  # larger screens: the size the pages are laid out for
    window.ensure_pages()
    for key in ("data", "model", "train", "evaluate", "export", "runs"):
        window.go_to(key)
        qtbot.wait(10)
        hint = window.minimumSizeHint()
        assert hint.width() <= laptop.width() and hint.height() <= laptop.height(), (key, hint)


def test_image_file_names_read_in_the_grid(qtbot, tmp_path):
    from workbench.app.views.images import GridItem, ImageGrid, caption_lines

    grid = ImageGrid()
    qtbot.addWidget(grid)
    metrics = grid.fontMetrics()
    width = grid.gridSize().width() - 8
    name = "1030023514_aad5c608f9.jpg"
    lines = caption_lines(name, metrics, width, 2)
    assert "".join(lines) == name and len(lines) == 2  # wrapped whole, broken after the "_"
    assert lines[0].endswith("_") and all(metrics.horizontalAdvance(line) <= width for line in lines)
    very_long = "a_photo_of_an_ant_on_a_leaf_taken_in_the_garden_in_may_2019.jpeg"
    lines = caption_lines(very_long, metrics, width, 2)
    assert len(lines) == 2 and lines[1].endswith("2019.jpeg") and "…" in lines[1]  # elided in the middle
    assert all(metrics.horizontalAdvance(line) <= width for line in lines)
    lines = caption_lines(f"{name}\nbees 71%", metrics, width, 3)  # the cell dialog's: name, then prediction
    assert lines[-1] == "bees 71%" and "".join(lines[:-1]) == name
    # A cell has room for the thumbnail and its caption's lines; the tooltip names the whole path.
    side = grid.iconSize().height()
    assert grid.gridSize().height() >= side + 2 * metrics.lineSpacing()
    write_class_folder(tmp_path, 1)
    photo = next((tmp_path / "red").iterdir())
    long_path = photo.rename(tmp_path / very_long)
    grid.set_items([GridItem(str(long_path), long_path.name)])
    model = grid.grid_model
    assert model.data(model.index(0), Qt.ItemDataRole.ToolTipRole) == str(long_path)
    grid.resize(400, 300)
    grid.show()
    qtbot.waitUntil(lambda: not model.loading or model.rowCount() == 0, timeout=10000)
    model.data(model.index(0), Qt.ItemDataRole.DecorationRole)
    qtbot.waitUntil(lambda: not model.loading, timeout=10000)
    assert not grid.grab().isNull()  # the delegate paints the thumbnail and its caption
    grid.shutdown()


def test_clicking_a_listed_image_shows_it_with_its_scores(qtbot, image_run):
    from workbench.app.pages.evaluate import EvaluatePage

    page = EvaluatePage()
    qtbot.addWidget(page)
    page.resize(1280, 760)
    page.show()
    with qtbot.waitSignal(page.loaded, timeout=30000):
        page.show_run(str(image_run))
    view = page.view
    box = view.try_it
    assert box.picture.pixmap().isNull() and "click one in the predictions list" in box.picture.text()
    records = {json.loads(line)["row"]: json.loads(line)
               for line in (image_run / "predictions.jsonl").read_text(encoding="utf-8").splitlines()}
    table = view.predictions
    rect = table.visualRect(table.model().index(2, 1))
    qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    record = records[view.predictions_model.row_record(2)["row"]]
    qtbot.waitUntil(lambda: not box.picture.pixmap().isNull(), timeout=20000)
    status = box.status.text()
    assert Path(record["path"]).name in status and f"Line {record['row']}" in status
    assert box.top_label() == record["predicted"]
    best = max(record["probabilities"].values())
    assert box.bars.grid.itemAtPosition(0, 2).widget().text() == f"{best:.1%}"  # the run's own scores
    assert box.saliency.isEnabled()  # Show Saliency now explains this image
    shown = box.picture.pixmap().toImage()

    qtbot.keyClick(table.viewport(), Qt.Key.Key_Down)  # the arrow keys walk through the images
    following = records[view.predictions_model.row_record(3)["row"]]
    qtbot.waitUntil(lambda: Path(following["path"]).name in box.status.text(), timeout=20000)
    assert box.picture.pixmap().toImage() != shown
    page.shutdown()


def test_model_page_says_what_each_parameter_count_counts(qtbot, window, tmp_path):
    from workbench.app.pages.model import trainable_text

    # The published backbone with its 1000-class ImageNet head, against the task's model with a 2-class one.
    text = trainable_text(3_372_562, 3_372_562, 4_652_008, 2)
    assert text.startswith("Trains 3.4M of 3.4M parameters (100.00%).")
    assert "4.7M counts the backbone as published, with the head it was pretrained with" in text
    assert "one with 2 outputs" in text
    assert trainable_text(66, 1_000_000, 999_000, 2) == "Trains 66 of 1.0M parameters (0.01%)."  # the same size
    assert "adds a head with 3 outputs" in trainable_text(500_000, 500_000, 388_896, 3)

    from workbench.core.backbones import IMAGE_MODELS, image_weights_file

    if image_weights_file(IMAGE_MODELS[0]) is None:
        pytest.skip("the EfficientNet-Lite0 weights package is not installed")
    write_class_folder(tmp_path / "photos", 4)
    with qtbot.waitSignal(window.data_page.images.view.loaded, timeout=20000):
        drop_files(window.sidebar, tmp_path / "photos")
    page = window.model_page
    window.go_to("model")
    qtbot.waitUntil(lambda: page.effective_modality == "image" and page.catalog_loaded, timeout=30000)
    wait_task(qtbot, page.use_backbone("efficientnet-lite0"))
    wait_task(qtbot, page.refresh_trainable())
    listed = page.backbones.currentItem().text(1)
    assert listed == "4.7M" and page.trainable.text().startswith("Trains 3.4M of 3.4M parameters")
    assert "The list's 4.7M counts the backbone as published" in page.trainable.text()


def test_export_shows_code_that_runs_for_image_and_text_models(image_run, text_run, capsys):
    """The Export page's "Use it": an image model of Workbench's own architecture is loaded by its
    loader (transformers cannot), a text model by the pipeline; each snippet runs as shown."""
    from workbench.app.pages.export import usage_code

    photo = next((image_run.parent.parent / "test" / "red").iterdir())
    code = usage_code(str(image_run / "model"), "image-classification", "image", image_run / "model")
    assert "classify_images" in code and "pipeline" not in code
    exec(code.replace("photo.jpg", str(photo)), {})
    out = capsys.readouterr().out
    assert "'label': 'red'" in out and "'label': 'blue'" in out  # both classes' scores, best first
    code = usage_code(str(text_run / "model"), "text-classification", "text", text_run / "model")
    assert code.startswith("from transformers import pipeline")
    exec(code, {})
    out = capsys.readouterr().out
    assert any(f"'label': '{name}'" in out for name in ("positive", "negative", "neutral")), out
