"""Desktop app: several GPUs. The device list offers "All N GPUs" (the device list faked to hold two),
Copy Command gives the CLI line, and a multi-process run is a child process group the controller
follows through its run directory (the child faked at the process boundary: a script that writes a
run directory as the launcher's rank 0 would)."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from app_support import APP_MARKS, aloop, load, use_tiny_model, window  # noqa: F401 - fixtures

from workbench.core.config import DataConfig, RunConfig, TrainConfig

pytestmark = [*APP_MARKS, pytest.mark.timeout(120)]

FAKE_LAUNCHER = textwrap.dedent('''
    """Writes RUN as rank 0 of a 2-process run would; "hang" ignores SIGINT (a stuck launcher)."""
    import json, os, signal, sys, time
    from pathlib import Path

    run, mode = Path(sys.argv[1]), sys.argv[2]
    run.mkdir(parents=True, exist_ok=True)
    (run / "argv.json").write_text(json.dumps(sys.argv))

    def status(state, **extra):
        tmp = run / ".status.json.tmp"
        tmp.write_text(json.dumps({"state": state, "pid": os.getpid(), **extra}))
        os.replace(tmp, run / "status.json")

    stop, pause = [], []
    signal.signal(signal.SIGINT, signal.SIG_IGN if mode == "hang" else (lambda *a: stop.append(1)))
    def on_pause(*a):
        if not (run / "status.json").exists():  # the app must wait until rank 0 has opened the run
            (run / "paused-too-early").touch()
        pause.append(1)

    signal.signal(signal.SIGUSR1, on_pause)  # the launcher passes it on to rank 0
    if mode == "late":
        time.sleep(1.5)  # the launcher and rank 0 still starting
    status("running")
    with open(run / "metrics.jsonl", "a") as f:
        def event(**e):
            f.write(json.dumps(e) + "\\n")
            f.flush()
        event(event="RunStarted", run_dir=str(run))
        steps = 6 if mode == "finish" else 10_000
        for step in range(1, steps + 1):
            if stop:
                status("cancelled")
                event(event="Cancelled")
                sys.exit(130)
            if pause:
                status("paused", step=step - 1, message=f"paused at step {step - 1} of {steps}")
                event(event="Paused", step=step - 1, message=f"paused at step {step - 1} of {steps}")
                sys.exit(4)
            event(event="StepMetrics", step=step, total_steps=steps, epoch=step / steps, loss=1.0 / step,
                  learning_rate=1e-3, samples_per_second=100.0, elapsed_s=0.1 * step, eta_s=1.0, grad_norm=None,
                  mfu=0.42, peak_memory_gib=3.5)
            time.sleep(0.05)
        (run / "report.json").write_text(json.dumps({"task": "text-classification", "split": "test",
            "metrics": {"accuracy": 0.75}, "training": {"samples_per_second": 321.0, "train_seconds": 2.0}}))
        status("finished", metrics={"accuracy": 0.75})
        event(event="Finished", metrics={"accuracy": 0.75}, samples_per_second=321.0, run_dir=str(run), export_dir=None)
''')


@pytest.fixture()
def two_gpus(monkeypatch):
    from workbench.core import device

    def fake():
        return [device.DeviceInfo("cuda:0", "NVIDIA H200 (139.8 GiB)", 139.8),
                device.DeviceInfo("cuda:1", "NVIDIA H200 (139.8 GiB)", 139.8), device.DeviceInfo("cpu", "CPU (2 threads)")]

    monkeypatch.setattr(device, "available_devices", fake)


@pytest.fixture()
def fake_launcher(tmp_path, monkeypatch):
    script = tmp_path / "fake_launcher.py"
    script.write_text(FAKE_LAUNCHER)
    from workbench.app import child_run

    real = child_run.child_command
    mode = {"value": "finish"}
    calls = []

    def command(config, run_dir, config_file):
        calls.append(real(config, run_dir, config_file))  # what the app would have started
        return [sys.executable, str(script), run_dir, mode["value"]]

    monkeypatch.setattr(child_run, "child_command", command)
    return mode, calls


def test_the_device_list_offers_all_gpus_and_copy_command_repeats_it(two_gpus, qtbot, window, sentiment_tsv,
                                                                     tiny_model_dir):
    load(qtbot, window, sentiment_tsv)
    use_tiny_model(qtbot, window, tiny_model_dir)
    page = window.model_page
    qtbot.waitUntil(lambda: page.devices_loaded, timeout=60000)
    items = [(page.device.itemText(i), page.device.itemData(i)) for i in range(page.device.count())]
    assert ("All 2 GPUs (NVIDIA H200, one process each)", "all-gpus:2") in items
    page.device.setCurrentIndex([d for _, d in items].index("all-gpus:2"))
    t = window.state.config.train
    assert (t.device, t.num_processes) == ("cuda", 2)
    page.sync_from_config()  # the choice reads back from the config
    assert page.device.currentData() == "all-gpus:2"

    window.go_to("train")
    train = window.train_page
    train.copy_button.click()
    from PySide6.QtWidgets import QApplication

    line = QApplication.clipboard().text()
    assert line.startswith(f"workbench train {window.state.config.data.train}")
    assert "--device cuda" in line and "--num-processes 2" in line and "--batch-size 16" in line
    assert "Copied: workbench train" in train.log.toPlainText()


def test_a_multi_process_run_is_a_child_followed_through_its_run_directory(qtbot, fake_launcher, runs_home, tmp_path):
    from workbench.app.controller import TrainingController

    mode, calls = fake_launcher
    controller = TrainingController()
    seen = []
    controller.events.connect(seen.extend)
    config = RunConfig(data=DataConfig(train=str(tmp_path / "reviews.tsv")), task="text-classification",
                       train=TrainConfig(device="cuda", num_processes=2))
    with qtbot.waitSignal(controller.started, timeout=5000) as started:
        controller.start(config)
    run_dir = started.args[0]
    assert Path(run_dir).parent == runs_home and controller.running and controller.can_pause
    with qtbot.waitSignal(controller.finished, timeout=30000) as done:
        pass
    result = done.args[0]
    assert result.run_dir == run_dir and result.metrics == {"accuracy": 0.75} and result.samples_per_second == 321.0
    steps = [e["step"] for e in seen if e["event"] == "StepMetrics"]
    assert steps == [1, 2, 3, 4, 5, 6] and seen[-1]["event"] == "Finished"
    assert not controller.running
    # The command the app starts: the CLI's launcher with the config, its run directory and N.
    argv = calls[0]
    assert argv[1:4] == ["-m", "workbench", "train"] and argv[argv.index("--num-processes") + 1] == "2"
    assert argv[argv.index("--run-dir") + 1] == run_dir
    saved = json.loads(Path(argv[argv.index("--config") + 1]).read_text()) if Path(
        argv[argv.index("--config") + 1]).exists() else None
    assert saved is None  # the config file is removed once the run has ended


def test_cancel_interrupts_the_group_and_kills_one_that_does_not_stop(qtbot, fake_launcher, runs_home, tmp_path,
                                                                      monkeypatch):
    from workbench.app import child_run
    from workbench.app.controller import TrainingController

    mode, _ = fake_launcher
    config = RunConfig(data=DataConfig(train=str(tmp_path / "reviews.tsv")), task="text-classification",
                       train=TrainConfig(device="cuda", num_processes=2))
    controller = TrainingController()
    for behaviour in ("cancel", "hang"):
        mode["value"] = behaviour
        monkeypatch.setattr(child_run, "KILL_AFTER_S", 1.0)
        seen = []
        controller.events.connect(seen.extend)
        run_dir = controller.start(config)
        qtbot.waitUntil(lambda: any(e["event"] == "StepMetrics" for e in seen), timeout=20000)
        with qtbot.waitSignal(controller.cancelled, timeout=30000):
            controller.cancel()
        controller.events.disconnect()
        status = json.loads((Path(run_dir) / "status.json").read_text())
        assert status["state"] == "cancelled", behaviour  # said by the child, or by the app after killing it
        assert not controller.running


@pytest.mark.parametrize("when", ["running", "late"])
def test_pause_asks_the_group_to_stop_at_a_checkpoint(qtbot, fake_launcher, runs_home, tmp_path, when):
    """Pause during the run, or at once (the launcher still starting: the request waits for rank 0)."""
    from workbench.app.controller import TrainingController

    mode, _ = fake_launcher
    mode["value"] = "long" if when == "running" else "late"
    config = RunConfig(data=DataConfig(train=str(tmp_path / "reviews.tsv")), task="text-classification",
                       train=TrainConfig(device="cuda", num_processes=2))
    controller = TrainingController()
    seen = []
    controller.events.connect(seen.extend)
    run_dir = controller.start(config)
    if when == "running":
        qtbot.waitUntil(lambda: any(e["event"] == "StepMetrics" for e in seen), timeout=20000)
    assert controller.can_pause
    with qtbot.waitSignal(controller.pausing, timeout=5000):
        controller.pause()
    with qtbot.waitSignal(controller.paused, timeout=30000) as paused:
        pass
    assert paused.args[0].startswith("paused at step")
    assert json.loads((Path(run_dir) / "status.json").read_text())["state"] == "paused"
    assert not (Path(run_dir) / "paused-too-early").exists()
    assert not controller.running
