"""The one object holding what the user has chosen so far, shared by every page.

Pages never talk to each other directly: they edit ``AppState`` and react to its signals, so moving
between pages keeps everything and each page can be built (or rebuilt) on its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Signal

from ..core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from ..core.tasks.table import DEFAULT_METHOD, DEFAULT_TASK, default_lr, modality_of
from . import carried

if TYPE_CHECKING:
    from .dataset import LoadedData


def default_config() -> RunConfig:
    return RunConfig(data=DataConfig(), model=ModelConfig(), train=TrainConfig())


class AppState(QObject):
    dataset_changed = Signal(object)  # LoadedData | None: a new file was loaded (or cleared)
    columns_changed = Signal(object)  # LoadedData: the column choice (and with it the validation) changed
    config_changed = Signal()  # any field of the RunConfig being edited
    run_dir_changed = Signal(str)  # the run shown on Train/Evaluate/Export ("" for none)
    running_changed = Signal(bool)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.data: LoadedData | None = None
        self.config: RunConfig = default_config()
        self.run_dir: str = ""
        self.running = False
        self.backbone_parameters: int | None = None  # of the selected backbone, for the Train page summary
        # The learning rate a run takes while config.train.lr is None: the task's default for the
        # method and backbone (the Model page works it out and shows it; the engine resolves the same).
        self.default_lr = default_lr(DEFAULT_TASK, DEFAULT_METHOD)
        # Adapt the backbone to unlabelled texts (masked-LM) before fine-tuning: a run of two stages.
        self.adapt_first = False
        self.adapt_texts: str | None = None  # None: the training file's own texts
        self.adapt_epochs = 1.0
        # The Model-page settings' values as the app last chose them (carried.py): one that differs
        # was changed by the user, and is kept for the next dataset where it applies.
        self.auto: dict[str, Any] = carried.values(self.config)
        self.kept: dict[str, str] = {}  # {setting: "learning rate 3e-4"} kept from before the last load

    # ---- data ---------------------------------------------------------------------------------------
    @property
    def has_data(self) -> bool:
        return self.data is not None and self.data.usable

    def set_data(self, data: LoadedData | None, quick_trial: bool = False) -> None:
        """Use ``data`` (None: none); the settings follow it as on a fresh start, but for those the user
        changed that still apply (``kept``); ``quick_trial``: the bundled sample's quick settings."""
        self.data = data
        d = self.config.data
        if data is None:
            self.config.data = DataConfig(val_fraction=d.val_fraction, test_fraction=d.test_fraction)
        else:
            d.train = str(data.path)
            d.val = data.val_path
            d.test = data.test_path
            self._pin_columns(data)
            self._rederive_settings(data, quick_trial)
        self.dataset_changed.emit(data)
        self.config_changed.emit()

    def set_columns(self, data: LoadedData) -> None:
        self.data = data
        self._pin_columns(data)
        self.columns_changed.emit(data)
        self.config_changed.emit()

    def _pin_columns(self, data: LoadedData) -> None:
        # What the preview showed is what the engine reads: the format and columns are pinned.
        d = self.config.data
        if not getattr(data, "checked_here", True):
            # The engine reads other tasks' files its own way (CoNLL, pairs, scores): pin nothing but
            # the delimiter the user chose on the Data page.
            d.has_header = d.text_column = d.label_column = d.label_separator = d.label_columns = None
            d.delimiter = getattr(data, "delimiter", None)
            for key, value in (getattr(data, "data_options", None) or {}).items():  # multi-label label settings
                setattr(d, key, value)
            return
        d.delimiter = data.table.format.delimiter
        d.has_header = data.table.format.has_header
        d.text_column = data.choice.text if data.choice else None
        d.label_column = data.choice.label if data.choice else None

    def _rederive_settings(self, data: LoadedData, quick_trial: bool) -> None:
        task = self.config.task if self.config.task != "auto" else getattr(data, "task", DEFAULT_TASK)
        self.auto, self.kept = carried.rederive(self.config, self.auto, task, quick_trial)

    # ---- settings the app chooses -------------------------------------------------------------------
    def user_changed(self, key: str) -> bool:
        """Whether the user changed setting ``key`` ("train.metric") from the value the app chose."""
        return carried.get(self.config, key) != self.auto.get(key)

    def choose(self, key: str, value: Any) -> None:
        """Set ``key`` as the app's own choice (the task's metric, a method that applies): the next
        dataset chooses it afresh, and it is no longer "kept from before"."""
        carried.assign(self.config, key, value)
        self.auto[key] = value
        self.kept.pop(key, None)

    def forget_changes(self) -> None:
        """Count every setting as the app's choice (after Restore Defaults): none is kept."""
        self.auto = carried.values(self.config)
        self.kept = {}

    # ---- config and runs ----------------------------------------------------------------------------
    def adaptation_config(self) -> RunConfig | None:
        """The adaptation stage's run for the config being edited (None: no adaptation): the chosen
        texts, or the training file's own read as training reads it; the fine-tuning's length,
        batch, seed and device."""
        image = "image" in (modality_of(self.config.task), modality_of(getattr(self.data, "task", None)))
        if not self.adapt_first or image:
            return None
        from ..core.adaptation.adapt import adaptation_config

        c = self.config
        own = not self.adapt_texts or self.adapt_texts == c.data.train
        train = TrainConfig(epochs=self.adapt_epochs, batch_size=c.train.batch_size, max_length=c.train.max_length,
                            seed=c.train.seed, device=c.train.device, precision=c.train.precision)
        cfg = adaptation_config(c.data.train if own else self.adapt_texts, c.model.name,
                                text_column=c.data.text_column if own else None, train=train)
        if own:
            cfg.data.delimiter, cfg.data.has_header = c.data.delimiter, c.data.has_header
        return cfg

    def touch_config(self) -> None:
        self.config_changed.emit()

    def set_run_dir(self, run_dir: str) -> None:
        self.run_dir = run_dir
        self.run_dir_changed.emit(run_dir)

    def set_running(self, running: bool) -> None:
        if running != self.running:
            self.running = running
            self.running_changed.emit(running)
