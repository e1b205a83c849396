"""Build the self-contained Workbench bundle with PyInstaller, smoke-test it, and archive it.

    pip install -e ".[bundle]" -c packaging/bundle-constraints.txt   # the pinned versions, PyInstaller
    python packaging/build.py            # dist/workbench/ (run ./workbench), its smoke test, the archive
    python packaging/build.py --smoke-only   # test an existing dist/workbench again
    python packaging/build.py --smoke-only --data FILE.tsv   # ... training the default backbone on FILE
    python packaging/build.py --variant cuda # from an environment whose torch is a CUDA build
    python packaging/build.py --update-pins  # after upgrading packages: build, smoke-test, re-pin

Pinned builds: the bundle is built from the versions in packaging/bundle-constraints.txt, which
were verified together; the build refuses an environment holding other versions of any runtime
dependency (packaging/bundle_deps.py finds them from installed metadata, recursively). Upgrading is a
deliberate step: `pip install -U ...` in the build environment, then `python packaging/build.py
--update-pins`, which builds and smoke-tests the bundle from what is installed and rewrites the pins
only when the smoke test passed. A pinned build that passes writes packaging/bundle.verified (a hash
of this folder's build files, the pins and pyproject's dependencies, with the figures); commit it:
.ci/run builds and smoke-tests the bundle only when that hash no longer matches.

The bundle is one folder: Python, torch, Qt, the app and the default backbones (all-MiniLM-L6-v2 for
text, EfficientNet-Lite0 for images). On a machine without Python, unpack the archive and run
`./workbench` (the app) or `./workbench train DATA ...` (the CLI); `./install-desktop-entry.sh` adds
it to the applications menu (Linux).

The smoke test runs the bundle in a minimal environment (no PYTHONPATH, no user site, HF_HUB_OFFLINE=1,
a fresh HOME): `--version`; `models` lists both default backbones; a tiny text run (a local tiny BERT
folder) trains offline and exports, and its export predicts (ONNX Runtime); the run packs and unpacks;
the default backbone (all-MiniLM-L6-v2, carried by its package) trains a few steps, exports and its
export predicts (on --data FILE when given); an image run fine-tunes the bundled EfficientNet-Lite0;
the app opens its window offscreen, paints and quits with status 0. It prints the bundle's size and
start-up times beside the installed app's.

Written for Linux, Windows and macOS (the same spec; on Windows the archive is a .zip); verified on
Linux x86-64 only. Why PyInstaller rather than briefcase: briefcase builds an installer per platform
from a wheel and its requirements, so the CPU torch build (from its own index) and the backbone
packages would have to be re-resolved per target; PyInstaller bundles the environment that already
passed the tests, hooks for torch, transformers, PySide6 and pyarrow exist, and it makes a plain
folder that runs in place, which the issue asks for.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXE_NAME = "workbench.exe" if sys.platform == "win32" else "workbench"

INSTALL_SH = """#!/bin/sh
# Add Workbench to the applications menu, with its icon and file types (under ~/.local/share).
exec "$(dirname "$(readlink -f "$0")")/workbench" --install-desktop-entry
"""
UNINSTALL_SH = """#!/bin/sh
# Remove what install-desktop-entry.sh added.
exec "$(dirname "$(readlink -f "$0")")/workbench" --uninstall-desktop-entry
"""
README = """Workbench {version} ({variant}, {platform})

    ./workbench                      the desktop app
    ./workbench train DATA.tsv       the command line (see ./workbench --help)
    ./install-desktop-entry.sh       add Workbench to the applications menu (Linux)
    ./uninstall-desktop-entry.sh     remove it again

Everything Workbench needs is in this folder: Python, PyTorch, Qt and the default backbones. Nothing
is installed elsewhere; delete the folder to remove it (run the uninstall script first if you added
the menu entry).
"""


def log(message: str) -> None:
    print(f"[build] {message}", flush=True)


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


# ---- building --------------------------------------------------------------------------------------

def check_environment(variant: str, pinned: bool) -> None:
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        raise SystemExit('PyInstaller is not installed here: '
                         'pip install -e ".[bundle]" -c packaging/bundle-constraints.txt') from None
    if pinned:
        import bundle_deps

        problems = bundle_deps.check_pins()
        if problems:
            raise SystemExit("this environment does not hold the pinned versions (packaging/bundle-constraints.txt):\n  "
                             + "\n  ".join(problems)
                             + '\ninstall them: pip install -e ".[bundle]" -c packaging/bundle-constraints.txt\n'
                             "(or, to upgrade the pins deliberately: python packaging/build.py --update-pins)")
        log("the environment holds the pinned versions (packaging/bundle-constraints.txt)")
    import torch

    cuda = torch.version.cuda
    if variant == "cpu" and cuda:
        raise SystemExit(f"this environment's torch is a CUDA build ({torch.__version__}); install the CPU build "
                         "(pip install torch --index-url https://download.pytorch.org/whl/cpu) or pass --variant cuda")
    if variant == "cuda" and not cuda:
        raise SystemExit("--variant cuda needs a CUDA build of torch in this environment "
                         "(pip install torch --index-url https://download.pytorch.org/whl/cu124)")


def run_pyinstaller(dist: Path, work: Path, variant: str, clean: bool) -> Path:
    env = {**os.environ, "WORKBENCH_BUNDLE_VARIANT": variant}
    cmd = [sys.executable, "-m", "PyInstaller", str(ROOT / "packaging" / "workbench.spec"), "--noconfirm",
           "--distpath", str(dist), "--workpath", str(work), "--log-level", "WARN"]
    if clean:
        cmd.append("--clean")
    log(" ".join(cmd))
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)
    log(f"PyInstaller finished in {time.perf_counter() - t0:.0f} s")
    return dist / "workbench"


def finish_bundle(bundle: Path, variant: str) -> None:
    """Byte-compile the source-only packages (no compiling at first start), add the scripts and README."""
    import compileall

    from workbench import __version__

    internal = bundle / "_internal"
    for package in ("transformers",):
        if (internal / package).is_dir():
            compileall.compile_dir(str(internal / package), quiet=1, workers=os.cpu_count() or 1)
    if sys.platform.startswith("linux"):
        for name, text in (("install-desktop-entry.sh", INSTALL_SH), ("uninstall-desktop-entry.sh", UNINSTALL_SH)):
            path = bundle / name
            path.write_text(text, encoding="utf-8")
            path.chmod(0o755)
    (bundle / "README.txt").write_text(README.format(version=__version__, variant=variant, platform=platform_tag()),
                                       encoding="utf-8")


def platform_tag() -> str:
    import platform

    system = {"linux": "linux", "darwin": "macos", "win32": "windows"}.get(sys.platform, sys.platform)
    return f"{system}-{platform.machine().lower()}"


def make_archive(bundle: Path, variant: str) -> Path:
    from workbench import __version__

    stem = f"workbench-{__version__}-{platform_tag()}-{variant}"
    t0 = time.perf_counter()
    if sys.platform == "win32":
        out = Path(shutil.make_archive(str(bundle.parent / stem), "zip", bundle.parent, bundle.name))
    else:
        out = bundle.parent / f"{stem}.tar.gz"
        tmp = out.with_name(f".{out.name}.tmp")
        with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
            tar.add(bundle, arcname="workbench")
        os.replace(tmp, out)
    log(f"archive {out} ({out.stat().st_size / 1e6:,.0f} MB) in {time.perf_counter() - t0:.0f} s")
    return out


# ---- smoke test ------------------------------------------------------------------------------------

WORDS_POS = "good great excellent wonderful superb lovely".split()
WORDS_NEG = "bad awful terrible horrible dreadful poor".split()
WORDS = "movie film plot actor scene story the a was and it".split()


def _tiny_inputs(folder: Path) -> tuple[Path, Path, Path]:
    """A tiny labelled TSV, a tiny BERT folder (from a config: no download) and a folder of images."""
    from PIL import Image
    from transformers import BertConfig, BertModel, BertTokenizerFast

    rng = random.Random(0)
    data = folder / "reviews.tsv"
    with open(data, "w", encoding="utf-8") as f:
        f.write("text\tlabel\n")
        for i in range(80):
            label = "pos" if i % 2 else "neg"
            words = rng.sample(WORDS, 4) + rng.sample(WORDS_POS if label == "pos" else WORDS_NEG, 2)
            rng.shuffle(words)
            f.write(f"{' '.join(words)}\t{label}\n")
    model = folder / "tiny-bert"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(WORDS + WORDS_POS + WORDS_NEG))]
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    tok.save_pretrained(model)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=37, max_position_embeddings=64)).save_pretrained(model)
    images = folder / "photos"
    for name, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
        (images / name).mkdir(parents=True)
        for i in range(8):
            shade = tuple(max(0, min(255, c + rng.randint(-30, 30))) for c in colour)
            Image.new("RGB", (48, 48), shade).save(images / name / f"{i}.png")
    return data, model, images


def minimal_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """What a user's shell has, without any Python: no PYTHONPATH, no virtual environment, offline."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", "TMPDIR": str(home),
           "HF_HUB_OFFLINE": "1", "WORKBENCH_HOME": str(home / "workbench"), "XDG_DATA_HOME": str(home / "share")}
    if sys.platform == "win32":  # Windows needs these to start a process at all
        root = os.environ.get("SYSTEMROOT", r"C:\Windows")
        env.update(SYSTEMROOT=root, WINDIR=root, PATH=f"{root}\\System32;{root}", TEMP=str(home), TMP=str(home),
                   USERPROFILE=str(home))
    return {**env, **(extra or {})}


def _run(cmd: list[str], env: dict[str, str], what: str, timeout: float = 900) -> subprocess.CompletedProcess:
    t0 = time.perf_counter()
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    took = time.perf_counter() - t0
    if result.returncode != 0:
        raise SystemExit(f"smoke test failed: {what} exited {result.returncode}\n$ {' '.join(cmd)}\n"
                         f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    log(f"ok: {what} ({took:.1f} s)")
    result.seconds = took  # type: ignore[attr-defined]
    return result


def first_paint_seconds(cmd: list[str], env: dict[str, str]) -> float:
    """Seconds from starting the app to its first painted window (offscreen), which then quits with 0."""
    env = {**env, "QT_QPA_PLATFORM": "offscreen", "WORKBENCH_STARTUP_PROBE": "1"}
    t0 = time.time()
    result = _run(cmd, env, "the app opens a window offscreen, paints and quits", timeout=300)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise SystemExit(f"smoke test failed: the app printed no first-paint line\n{result.stdout}\n{result.stderr}")
    return json.loads(lines[-1])["first_paint_time"] - t0


def best_of(n: int, measure) -> float:
    return min(measure() for _ in range(n))


def smoke_test(bundle: Path, compare_installed: bool = True, data_file: Path | None = None) -> dict[str, float]:
    exe = str(bundle / EXE_NAME)
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="workbench-smoke-") as tmp_name:
        tmp = Path(tmp_name)
        home = tmp / "home"
        home.mkdir()
        env = minimal_env(home)
        data, model, images = _tiny_inputs(tmp)

        version = _run([exe, "--version"], env, "--version")
        log(f"    {version.stdout.strip()}")
        figures["bundle_version_s"] = best_of(3, lambda: _run([exe, "--version"], env, "--version").seconds)
        models = _run([exe, "models"], env, "models").stdout
        for name in ("all-MiniLM-L6-v2", "efficientnet-lite0"):
            if name not in models:
                raise SystemExit(f"smoke test failed: `workbench models` does not list {name}:\n{models}")
        export = tmp / "export"
        out = _run([exe, "train", str(data), "--model", str(model), "--epochs", "1", "--max-steps", "3",
                    "--batch-size", "8", "--max-length", "16", "--export", str(export), "-q"], env,
                   "train a tiny text model offline and export it")
        summary = json.loads(out.stdout.strip().splitlines()[-1])
        for name in ("model.safetensors", "model.onnx", "workbench.json"):
            if not (export / name).is_file():
                raise SystemExit(f"smoke test failed: the export has no {name}: {sorted(os.listdir(export))}")
        _run([exe, "predict", str(export), str(data), "-o", str(tmp / "predictions.tsv"), "-q"], env,
             "predict with the export (ONNX Runtime)")
        _run([exe, "pack", summary["run_dir"], "-o", str(tmp / "run.wbrun"), "-q"], env, "pack the run")
        _run([exe, "unpack", str(tmp / "run.wbrun"), "-o", str(tmp / "unpacked"), "-q"], env, "unpack it")
        # The default backbone, as a user's first run takes it: no --model.
        real = data_file or data
        export2 = tmp / "export-default"
        out = _run([exe, "train", str(real), "--epochs", "1", "--max-steps", "3", "--batch-size", "8",
                    "--max-length", "32", "--export", str(export2), "-q"], env,
                   f"train the default backbone (all-MiniLM-L6-v2) on {real.name} offline and export it")
        summary = json.loads(out.stdout.strip().splitlines()[-1])
        log(f"    {json.dumps(summary.get('metrics', {}))[:200]}")
        _run([exe, "predict", str(export2), str(real), "-o", str(tmp / "predictions-default.tsv"), "-q"], env,
             "predict with the default backbone's export")
        _run([exe, "train", str(images), "--epochs", "1", "--max-steps", "1", "--batch-size", "4",
              "--image-size", "64", "-q"], env, "fine-tune the bundled EfficientNet-Lite0 on images")
        figures["bundle_first_paint_s"] = best_of(2, lambda: first_paint_seconds([exe], env))
        if compare_installed:
            installed = [sys.executable, "-m", "workbench"]
            penv = {**env, "PYTHONPATH": str(ROOT)}
            figures["installed_version_s"] = best_of(3, lambda: _run(installed + ["--version"], penv,
                                                                     "installed --version").seconds)
            figures["installed_first_paint_s"] = best_of(2, lambda: first_paint_seconds(installed, penv))
    return figures


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", choices=("cpu", "cuda"), default="cpu", help="the torch build bundled (default cpu)")
    p.add_argument("--dist", default=str(ROOT / "dist"), help="where dist/workbench goes (default ./dist)")
    p.add_argument("--work", default=str(ROOT / "build" / "pyinstaller"), help="PyInstaller's work folder")
    p.add_argument("--clean", action="store_true", help="let PyInstaller start from an empty cache")
    p.add_argument("--no-smoke", action="store_true", help="skip the smoke test")
    p.add_argument("--smoke-only", action="store_true", help="only smoke-test an existing bundle")
    p.add_argument("--no-archive", action="store_true", help="do not write the .tar.gz (.zip on Windows)")
    p.add_argument("--json", metavar="FILE", help="also write the measured figures here as JSON")
    p.add_argument("--data", metavar="FILE", help="a labelled TSV/CSV the default backbone trains on in the smoke "
                   "test (default: a tiny generated one)")
    pins = p.add_mutually_exclusive_group()
    pins.add_argument("--update-pins", action="store_true", help="build from whatever is installed and, when the "
                      "smoke test passes, rewrite packaging/bundle-constraints.txt and bundle.verified from it")
    pins.add_argument("--unpinned", action="store_true", help="build from whatever is installed, pinned or not "
                      "(a trial: nothing is recorded)")
    a = p.parse_args()
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "packaging"))
    import bundle_deps

    dist = Path(a.dist).resolve()
    bundle = dist / "workbench"
    figures: dict[str, object] = {"variant": a.variant, "platform": platform_tag()}
    # What this build is made from: an edit to packaging/ while it runs is not recorded as verified.
    inputs = bundle_deps.inputs_hash(with_pins=not a.update_pins)
    if not a.smoke_only:
        check_environment(a.variant, pinned=not (a.update_pins or a.unpinned))
        t0 = time.perf_counter()
        bundle = run_pyinstaller(dist, Path(a.work).resolve(), a.variant, a.clean)
        finish_bundle(bundle, a.variant)
        figures["build_s"] = round(time.perf_counter() - t0)
    if not (bundle / EXE_NAME).is_file():
        raise SystemExit(f"no bundle at {bundle}; build it first (python packaging/build.py)")
    figures["bundle_bytes"] = folder_size(bundle)
    log(f"bundle {bundle}: {figures['bundle_bytes'] / 1e6:,.0f} MB")
    if not a.no_smoke:
        t0 = time.perf_counter()
        data_file = Path(a.data).resolve() if a.data else None
        figures.update({k: round(v, 2) for k, v in smoke_test(bundle, data_file=data_file).items()})
        figures["smoke_s"] = round(time.perf_counter() - t0)
        log(f"smoke test passed in {figures['smoke_s']} s")
    if not a.no_archive and not a.smoke_only:
        archive = make_archive(bundle, a.variant)
        figures["archive"] = str(archive)
        figures["archive_bytes"] = archive.stat().st_size
    if not a.smoke_only and not a.no_smoke and not a.unpinned and a.variant == "cpu":
        if a.update_pins:
            bundle_deps.freeze()  # the new pins are what was built: only the other inputs must be unchanged
        if inputs == bundle_deps.inputs_hash(with_pins=not a.update_pins):
            bundle_deps.write_verified(figures)  # these inputs passed: .ci/run need not build them again
        else:
            log("packaging/ or the pins changed while building: packaging/bundle.verified is left as it was")
    print(json.dumps(figures))
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
