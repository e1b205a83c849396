"""Runs page: Pack writes a .wbrun, Import Run unpacks one into the runs home and lists it like a local
run; a refused archive says why and leaves nothing behind."""

from __future__ import annotations

import json
import zipfile

import pytest
from app_support import APP_MARKS
from pack_samples import finished_run  # noqa: F401 - fixture

pytestmark = [*APP_MARKS, pytest.mark.timeout(120)]


def test_runs_page_packs_and_imports_a_run(qtbot, tmp_path, finished_run):  # noqa: F811
    from PySide6.QtWidgets import QMessageBox

    from workbench.app.pages.runs import RunsPage
    from workbench.core.run.history import summarize

    source_home = finished_run.parent
    page = RunsPage(home=source_home)
    qtbot.addWidget(page)
    page.show()
    qtbot.waitExposed(page)
    page.select_paths([finished_run])
    assert page.pack_button.isEnabled()
    pack = tmp_path / "shared.wbrun"
    page.pack_run(str(finished_run), str(pack), with_data=True)
    qtbot.waitUntil(lambda: page.message is not None, timeout=30000)
    assert page.message.windowTitle() == "Run packed" and pack.is_file()
    assert "data/train/reviews.tsv" in zipfile.ZipFile(pack).namelist()

    home = tmp_path / "other-machine-runs"
    importer = RunsPage(home=home)
    qtbot.addWidget(importer)
    importer.show()
    qtbot.waitExposed(importer)
    assert importer.proxy.rowCount() == 0
    importer.import_run(str(pack))
    qtbot.waitUntil(lambda: importer.message is not None, timeout=30000)
    assert importer.message.windowTitle() == "Run imported", importer.message.informativeText()
    assert importer.proxy.rowCount() == 1
    (selected,) = importer.selected_paths()
    imported = home / finished_run.name
    assert selected == str(imported)
    assert summarize(imported).metrics == summarize(finished_run).metrics
    assert json.loads((imported / "config.json").read_text())["data"]["train"].startswith(str(imported))
    state = importer.proxy.index(0, importer.model.COLUMNS.index("State")).data()
    assert state == "finished"

    # A crafted archive: refused with the member named, nothing added to the runs home.
    bad = tmp_path / "bad.wbrun"
    with zipfile.ZipFile(pack) as src, zipfile.ZipFile(bad, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        dst.writestr("../escape.json", "{}")
    importer.message = None
    importer.import_run(str(bad))
    qtbot.waitUntil(lambda: importer.message is not None, timeout=30000)
    assert importer.message.windowTitle() == "Import failed"
    assert importer.message.icon() == QMessageBox.Icon.Warning
    assert "'../escape.json'" in importer.message.text() and "refused" in importer.message.text()
    assert sorted(p.name for p in home.iterdir()) == [finished_run.name]
    assert not (tmp_path / "escape.json").exists()
    importer.message.close()
    page.message.close()


def test_opening_a_wbrun_with_the_app_imports_it(qtbot, tmp_path, runs_home, finished_run):  # noqa: F811
    from workbench.app.window import MainWindow
    from workbench.core.export.pack import pack_run

    pack = pack_run(finished_run, tmp_path / "from-a-colleague.wbrun").path
    window = MainWindow()  # not shown: `workbench FILE.wbrun` and a file-manager open both end in open_path
    qtbot.addWidget(window)
    window.open_path(str(pack))
    assert window.current_step() == "runs"
    page = window.runs_page
    qtbot.waitUntil(lambda: page.message is not None, timeout=30000)
    assert page.message.windowTitle() == "Run imported"
    assert (runs_home / finished_run.name / "model" / "model.safetensors").is_file()
    page.message.close()
