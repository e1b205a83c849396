"""int8 for a run that was trained without it (the Export page's int8 box): the run's evaluation split
is read again from its config, exactly as training split it, and ``onnx_export.quantize_and_compare``
adds model.int8.onnx and its figures to RUN/model (the folder is rewritten beside itself and swapped
in, as every export is)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..cancel import NEVER, CancelToken
from ..config import RunConfig
from ..errors import InputError
from ..events import Callbacks
from .model import _atomic_folder
from .onnx_export import CHECK_FILE, INT8_FILE, ONNX_FILE, quantize_and_compare, read_check
from .target import MARKER


def prepare_eval_split(run_dir: str | Path, cache_dir: str | Path | None = None, callbacks: Callbacks | None = None,
                       cancel: CancelToken = NEVER):
    """(task, prepared data, encoded evaluation split) of a finished run, from its config.json; the
    data must be unchanged since training (its fingerprint is compared)."""
    from ..data.fingerprints import data_fingerprints
    from ..tasks import get_task

    run = Path(run_dir).expanduser().resolve()
    callbacks = callbacks or Callbacks()
    try:
        raw = json.loads((run / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise InputError("has no readable config.json; is it a Workbench run?", path=run) from None
    resolved = raw.pop("resolved", {}) or {}
    config = RunConfig.from_dict(raw)
    paths = [p for p in (config.data.train, config.data.val, config.data.test) if p]
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise InputError("the run's data is not there any more; int8 is measured on the run's evaluation split, "
                         "so it needs the data the model was trained on", path=missing[0])
    recorded = resolved.get("data_fingerprint") or {}
    if recorded and any(recorded.get(p) != fp for p, fp in data_fingerprints(paths).items()):
        raise InputError("the run's data changed since training, so its evaluation split cannot be read again; "
                         "train again with --quantize int8", path=paths[0])
    task = get_task(config.task, config.data.train)
    task.configure(config)
    cache = Path(cache_dir or tempfile.mkdtemp(prefix="workbench-int8-"))
    data = task.prepare_data(config.data, config.train.seed, cache, callbacks, cancel)
    preprocessor = task.load_preprocessor(str(run / "model"))
    name = data.eval_split
    split = task.encode(name, data.splits[name], preprocessor, config.train.max_length, cache, callbacks, cancel)
    return task, data, split


def add_int8(run_dir: str | Path, callbacks: Callbacks | None = None, cancel: CancelToken = NEVER) -> dict[str, Any]:
    """Write RUN/model/model.int8.onnx and its figures (``onnx_check.json["int8"]``); returns them."""
    run = Path(run_dir).expanduser().resolve()
    model_dir = run / "model"
    if not (model_dir / ONNX_FILE).is_file():
        raise InputError(f"has no {ONNX_FILE} to quantize (see {CHECK_FILE} for why)", path=model_dir)
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    batch = (config.get("train") or {}).get("batch_size") or 32
    with tempfile.TemporaryDirectory(prefix="workbench-int8-") as cache:
        task, data, split = prepare_eval_split(run, cache, callbacks, cancel)
        result: dict[str, Any] = {}

        def write(folder: Path) -> None:
            shutil.copytree(model_dir, folder, dirs_exist_ok=True)
            result.update(quantize_and_compare(task, folder, split, data, callbacks=callbacks, cancel=cancel,
                                               batch_size=2 * batch))
            record = read_check(folder) or {}
            record["int8"] = result
            (folder / CHECK_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")
            meta = json.loads((folder / MARKER).read_text(encoding="utf-8"))
            meta["files"] = sorted(set(meta.get("files", [])) | {INT8_FILE})
            (folder / MARKER).write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")

        _atomic_folder(model_dir, write, cancel)
    return result
