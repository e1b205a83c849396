"""Search and tracking in the app: Run > Find Best Settings (dialog.py), and Run > Log Runs To, the
trackers (TensorBoard, MLflow) the app's runs log to, remembered in the app's settings.

    install(window, run_menu)   # from MainWindow._build_menus: the two entries of the Run menu
"""

from __future__ import annotations

import copy

from PySide6.QtGui import QAction
from PySide6.QtWidgets import QMessageBox

from ...core.config import TRACKERS, RunConfig

REPORT_TO_KEY = "tracking/report_to"
TITLES = {"tensorboard": "TensorBoard (RUN/tensorboard)", "mlflow": "MLflow (local store in the runs home)"}


def saved_trackers() -> list[str]:
    from ..look import settings

    value = settings().value(REPORT_TO_KEY, "") or ""
    names = value if isinstance(value, list) else str(value).split(",")
    return [n for n in names if n in TRACKERS]


def install(window, menu) -> None:
    """The Run menu's search and tracker entries; the saved trackers apply to the window's runs."""
    menu.addSeparator()
    act = QAction("Find &Best Settings…", window)
    act.setStatusTip("Search learning rate, epochs, batch size... on the current data and model (Optuna)")
    act.triggered.connect(lambda: open_search(window))
    menu.addAction(act)
    window.search_action = act
    trackers = menu.addMenu("&Log Runs To")
    window.state.config.report_to = saved_trackers()
    window.tracker_actions = {}
    for name in TRACKERS:
        choice = trackers.addAction(TITLES[name])
        choice.setCheckable(True)
        choice.setChecked(name in window.state.config.report_to)
        choice.toggled.connect(lambda on, w=window: _trackers_changed(w))
        window.tracker_actions[name] = choice


def _trackers_changed(window) -> None:
    from ..look import settings

    names = [n for n, a in window.tracker_actions.items() if a.isChecked()]
    window.state.config.report_to = names
    settings().setValue(REPORT_TO_KEY, ",".join(names))


def open_search(window):
    from .dialog import SearchDialog

    if not window.state.has_data:
        QMessageBox.information(window, "Find Best Settings", "Open a dataset first (File > Open).")
        return None
    if window.state.running:
        QMessageBox.information(window, "Find Best Settings", "A run is training: search once it has ended.")
        return None
    dialog = SearchDialog(window.state.config, lambda config: train_with(window, config), window)
    dialog.show()
    return dialog


def train_with(window, best: RunConfig) -> None:
    """The best settings become the Model page's, and the final run starts (tested once, exported)."""
    config = window.state.config
    config.train = copy.deepcopy(best.train)
    config.model.lora_rank, config.model.lora_alpha = best.model.lora_rank, best.model.lora_alpha
    window.model_page.sync_from_config()
    window.state.config_changed.emit()
    window.go_to("train")
    window.ensure_train_page().start()
