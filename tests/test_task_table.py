"""The table of tasks and methods (workbench/core/tasks/table.py): light to import, in agreement with
the Task classes, and the one place outside core/tasks that names a task."""

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.core.config import METHODS as CONFIG_METHODS
from workbench.core.config import ModelConfig, RunConfig, TrainConfig
from workbench.core.errors import InputError
from workbench.core.tasks import get_task, task_class, task_menu_titles, task_names
from workbench.core.tasks.table import (
    ANALYSES,
    BASELINE,
    CALIBRATION,
    DEFAULT_METHOD,
    DEFAULT_TASK,
    FROZEN_METHOD,
    METHODS,
    TASKS,
    applicable_methods,
    default_lr,
    first_task_of,
    method_spec,
    modality_of,
    prediction_kind,
    spec_or_none,
    task_run_by,
    task_spec,
)

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "workbench"


def test_the_table_imports_no_heavy_library():
    code = ("import sys, workbench.core.tasks.table, workbench.core.tasks, workbench.core.config, "
            "workbench.core.command\n"
            "heavy = ('torch', 'transformers', 'datasets', 'numpy', 'pyarrow', 'sklearn', 'PySide6')\n"
            "print(','.join(m for m in heavy if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("name", list(TASKS))
def test_every_task_class_agrees_with_its_spec(name):
    spec = TASKS[name]
    cls = task_class(name)
    assert cls.spec is spec
    assert f"{cls.__module__}:{cls.__qualname__}" == spec.task_class
    assert (cls.name, cls.title, cls.pipeline_tag) == (spec.name, spec.heading, spec.pipeline_tag)
    assert (cls.modality, cls.row_unit) == (spec.modality, spec.row_unit)
    assert cls.metrics == spec.metrics and cls.default_metric == spec.default_metric
    assert spec.default_metric in spec.metric_names
    assert cls.calibrated == spec.supports(CALIBRATION) and cls.frozen_baseline == spec.supports(BASELINE)
    assert set(spec.analyses) <= set(ANALYSES)
    # every task takes the general methods; QLoRA (a 4-bit base) is generation's alone
    general = {m.name for m in METHODS.values() if not m.quantized_base}
    assert set(spec.lr) == general | ({"qlora"} if spec.name == "text-generation" else set())
    assert spec.modality in ("text", "image")
    import transformers

    assert hasattr(transformers, spec.auto_model)


@pytest.mark.parametrize("name", list(TASKS))
def test_readers_and_views_name_what_exists(name):
    spec = TASKS[name]
    for path in spec.readers:
        module, attr = path.split(":")
        assert callable(getattr(importlib.import_module(module), attr)), path
    for path in (spec.evaluate_view, spec.try_it_view):
        if path is None:
            continue
        # The app's classes, found in their source without importing Qt.
        module, cls = path.split(":")
        tree = ast.parse((ROOT / (module.replace(".", "/") + ".py")).read_text(encoding="utf-8"))
        assert cls in {n.name for n in tree.body if isinstance(n, ast.ClassDef)}, path


def test_registry_functions_read_the_table():
    assert task_names() == ["auto", *(n for n, t in TASKS.items() if t.own_command is None)]
    assert "masked-lm" not in task_names() and task_run_by("adapt") == "masked-lm"
    titles = task_menu_titles()
    assert titles["token-classification"] == "Token tagging (entities, parts of speech)"
    assert list(titles)[0] == "auto"
    assert get_task("ner").name == "token-classification" and get_task("Pairs").name == "text-pair-classification"
    assert get_task(None).name == DEFAULT_TASK
    with pytest.raises(InputError, match="unknown task 'nope'; choose one of: auto, text-classification"):
        get_task("nope")
    with pytest.raises(InputError, match="unknown task"):
        task_spec("nope")


def test_lookups_for_names_read_from_files():
    assert spec_or_none("regression").name == "text-regression" and spec_or_none(None) is None
    assert spec_or_none("something-newer") is None
    assert prediction_kind("token-classification") == "tags" and prediction_kind("masked-lm") is None
    assert prediction_kind("text-regression") == "values" and prediction_kind("image-classification") == "classes"
    assert modality_of("image-classification") == "image" and modality_of(None) == "text"
    assert first_task_of("image") == "image-classification"


def test_default_learning_rate_per_task_and_method():
    for task in ("text-classification", "token-classification", "text-pair-classification", "text-regression"):
        assert default_lr(task, "full") == 5e-5
        assert default_lr(task, "frozen") == 1e-3
        assert default_lr(task, "lora") == default_lr(task, "adalora") == 5e-4
    assert default_lr("ner", "full") == 5e-5  # aliases resolve
    assert default_lr("image-classification", "full") == 5e-4  # EfficientNet-Lite0, the default image backbone
    assert default_lr("image-classification", "frozen") == 1e-3
    with pytest.raises(InputError, match="unknown --method 'dora'; choose one of: full, frozen, lora, adalora, qlora"):
        default_lr("text-classification", "dora")
    # QLoRA is generation's alone: its table names it, the others refuse it by name
    assert default_lr("text-generation", "qlora") == default_lr("text-generation", "lora") == 2e-4
    with pytest.raises(InputError, match=r"--method qlora \(QLoRA\) applies to text generation, not to text "
                                         r"classification; choose one of full, frozen, lora, adalora$"):
        default_lr("text-classification", "qlora")


def test_image_learning_rate_follows_the_backbone():
    task = get_task("image-classification")

    def lr(model, method="full"):
        return task.default_lr(RunConfig(model=ModelConfig(name=model, method=method)))

    assert lr("efficientnet-lite0") == 5e-4 and lr("efficientnet-lite0", "frozen") == 1e-3
    assert lr("small-cnn") == 2e-3
    assert lr("someone/vit-base") == 5e-5  # a Hugging Face checkpoint fully fine-tuned: the text default
    assert lr("someone/vit-base", "lora") == 5e-4


def test_methods_come_from_the_table():
    assert CONFIG_METHODS == tuple(METHODS) == ("full", "frozen", "lora", "adalora", "qlora")
    assert DEFAULT_METHOD == ModelConfig().method and METHODS[FROZEN_METHOD].frozen_backbone
    assert [m for m in METHODS.values() if m.uses_adapters] == [METHODS["lora"], METHODS["adalora"], METHODS["qlora"]]
    assert [m.name for m in METHODS.values() if m.quantized_base] == ["qlora"]
    assert applicable_methods(hf_backbone=True) == ("full", "frozen", "lora", "adalora")
    assert applicable_methods(hf_backbone=True, task="text-generation")[-1] == "qlora"
    assert applicable_methods(hf_backbone=False, task="image-classification") == ("full", "frozen")
    assert all(m.hf_only == m.uses_adapters for m in METHODS.values())
    assert ModelConfig(method="adalora").uses_adapters and not ModelConfig(method="frozen").uses_adapters
    assert not ModelConfig(method="unknown").uses_adapters
    assert method_spec("adalora").adaptive_rank and not method_spec("lora").adaptive_rank
    with pytest.raises(InputError, match="unknown --method"):
        method_spec("dora")
    from workbench.core.training.methods import TrainingMethod

    assert method_spec("frozen").title == "frozen backbone (head only)"
    assert TrainingMethod("lora", 1, 10, targets=["q"], settings={"r": 8, "alpha": 16.0}).describe().startswith("LoRA r=8")
    assert TrainingMethod("full", 10, 10).summary() == {"method": "full", "trainable_parameters": 10,
                                                        "total_parameters": 10}
    assert get_task("text-classification").groups_by_length("full")
    assert not get_task("text-classification").groups_by_length("lora")


def test_learning_rate_left_out_is_the_tasks_default():
    assert TrainConfig().lr is None
    cfg = RunConfig(task="text-classification")
    cfg.data.train = "x.tsv"
    cfg.validate()  # None is valid: the run resolves it
    from workbench.core.command import TRAIN_FLAGS, command_line

    # The line states the rate the run will take (the table's), as it always said the learning rate
    assert command_line(cfg).endswith("--lr 5e-05")
    cfg.model.method = "lora"
    assert command_line(cfg).endswith("--lr 0.0005")
    images = RunConfig(task="image-classification")
    images.data.train = "photos"
    assert "--lr" not in command_line(images)  # by backbone: the repeat resolves it again
    cfg.model.method = "full"
    cfg.train.lr = 5e-4
    assert "--lr 0.0005" in command_line(cfg)
    assert "lora" in TRAIN_FLAGS["--method"][3] and "5e-5" in TRAIN_FLAGS["--lr"][3]
    cfg.train.lr, cfg.model.method = None, "qlora"  # a method the task does not take: no rate (the run refuses it)
    assert "--method qlora" in command_line(cfg) and "--lr" not in command_line(cfg)
    cfg.model.method = "full"
    cfg.train.lr = 2.0
    with pytest.raises(InputError, match="--lr must be between 0 and 1"):
        cfg.validate()


# ---- no task names outside the table ----------------------------------------------------------------

TASK_NAMES = set(TASKS) | {alias for t in TASKS.values() for alias in t.aliases if "-" in alias}
METHOD_NAMES = set(METHODS)
# Modules that once branched on method names and must look them up instead.
METHOD_FREE = ("core/command.py", "core/training/methods.py", "core/predict", "core/export/target.py",
               "core/analysis/compare.py", "core/adaptation/adapted.py", "cli", "app")


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def _literals(path: Path, names: set[str], keys_allowed: bool = False) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _docstrings(tree)
    if keys_allowed:  # a key of written data (a run summary's "lora" section), not a branch on a name
        skip |= {id(k) for node in ast.walk(tree) if isinstance(node, ast.Dict) for k in node.keys if k is not None}
    return [f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.value!r}" for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and id(node) not in skip and node.value in names]


def test_no_task_name_is_written_outside_core_tasks():
    files = [p for p in (PACKAGE / "core").rglob("*.py") if (PACKAGE / "core" / "tasks") not in p.parents]
    files += list((PACKAGE / "cli").rglob("*.py")) + list((PACKAGE / "app").rglob("*.py"))
    found = [hit for p in files for hit in _literals(p, TASK_NAMES)]
    assert not found, "task names outside core/tasks (look them up in core/tasks/table.py):\n" + "\n".join(found)


def test_no_method_name_is_compared_where_the_table_answers():
    files = []
    for part in METHOD_FREE:
        p = PACKAGE / part
        files += list(p.rglob("*.py")) if p.is_dir() else [p]
    found = [hit for p in files for hit in _literals(p, METHOD_NAMES, keys_allowed=True)]
    assert not found, "method names (look them up in core/tasks/table.py):\n" + "\n".join(found)
