"""Help > About: versions and devices, and "Copy diagnostics" puts them on the clipboard; the CLI's
`--version` and `--diagnostics` say the same."""

from __future__ import annotations

import pytest
from app_support import APP_MARKS

pytestmark = [*APP_MARKS, pytest.mark.timeout(120)]


def test_help_about_shows_versions_and_copies_diagnostics(qtbot, runs_home):
    import torch
    import transformers
    from PySide6.QtGui import QGuiApplication

    from workbench import __version__
    from workbench.app.about import AboutDialog
    from workbench.app.window import MainWindow

    window = MainWindow()  # not shown: the menu is all this test needs
    qtbot.addWidget(window)

    help_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Help")
    (about,) = [a for a in help_menu.actions() if a.text() == "&About Workbench"]
    about.trigger()
    dialog = window.findChild(AboutDialog)
    assert dialog is not None
    assert f"Workbench {__version__}" in dialog.title.text()
    assert not dialog.copy_button.isEnabled()  # until the versions are in
    qtbot.waitUntil(lambda: dialog.ready, timeout=60000)
    text = dialog.details.toPlainText()
    lines = dict(line.split(": ", 1) for line in text.splitlines())
    assert lines["workbench"] == __version__
    assert lines["torch"] == torch.__version__ and lines["transformers"] == transformers.__version__
    assert lines["PySide6"][0].isdigit() and lines["python"].startswith("3.")
    assert "CPU" in lines["devices"]
    QGuiApplication.clipboard().clear()
    qtbot.mouseClick(dialog.copy_button, __import__("PySide6.QtCore").QtCore.Qt.MouseButton.LeftButton)
    assert QGuiApplication.clipboard().text() == text
    assert dialog.copied.text() == "Copied to the clipboard."
    dialog.close()


def test_cli_version_and_diagnostics(capsys):
    from workbench import __version__
    from workbench.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"workbench {__version__}"
    assert main(["--diagnostics"]) == 0
    out = capsys.readouterr().out
    assert f"workbench: {__version__}" in out and "torch: " in out and "devices: " in out
