"""What the bundle carries, found from installed metadata, and the pins it is built from.

    python packaging/bundle_deps.py check      # the environment holds exactly the pinned versions
    python packaging/bundle_deps.py freeze     # write packaging/bundle-constraints.txt from this environment
    python packaging/bundle_deps.py verified   # exit 0 when packaging/bundle.verified matches the inputs
    python packaging/bundle_deps.py list       # the runtime dependencies and the packages they import as

The runtime dependencies are those of the installed `workbench` distribution, followed recursively
through `importlib.metadata` (requirements whose environment markers hold here, with the extras each
requirement asks for). `workbench.spec` carries the data files and metadata of every one of them, so
a new dependency of transformers (as `kernels` was, with the JSON file it reads at import) is carried
without anyone adding it to a list. `freeze` pins that set plus PyInstaller and its own dependencies:
the versions a verified bundle was built from. `build.py` refuses other versions unless it is asked to
upgrade the pins (`--update-pins`), which builds, smoke-tests, and only then rewrites the file.

`packaging/bundle.verified` records a hash of what decides the bundle (this folder's build files, the
pins, pyproject's dependencies); `build.py` writes it after a pinned build passed its smoke test, and
`.ci/run` builds and smoke-tests the bundle only when the committed hash differs from the inputs'.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONSTRAINTS = HERE / "bundle-constraints.txt"
VERIFIED = HERE / "bundle.verified"
# The files whose content decides the bundle (with the pins and pyproject's dependencies).
BUILD_INPUTS = ("workbench.spec", "workbench_entry.py", "build.py", "bundle_deps.py")
# What the build needs besides the app's runtime dependencies.
BUILD_TOOLS = ("pyinstaller",)

# Files of an installed package that a program never reads at run time: headers, sources, stubs,
# static libraries, build files and tests. Everything else a dependency ships is carried.
DEV_ONLY = ["**/*.h", "**/*.hpp", "**/*.cuh", "**/*.cu", "**/*.c", "**/*.cc", "**/*.cpp", "**/*.pxd", "**/*.pyx",
            "**/*.pxi", "**/*.pyi", "**/py.typed", "**/*.lib", "**/*.a", "**/*.cmake", "**/include/**",
            "**/tests/**", "**/test/**", "**/*.so.*", "**/__pycache__/**"]
# Packages whose PyInstaller hook deliberately picks their data files (Qt's plugins, translations
# and QML for the Qt modules the app imports): carrying all of them would add ~50 MB of unused Qt.
HOOK_SELECTS_DATA = {"PySide6", "shiboken6"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_closure(root: str = "workbench", extras: tuple[str, ...] = ()) -> dict[str, md.Distribution]:
    """The installed distributions `root` needs at run time, by canonical name (root included)."""
    seen: dict[str, md.Distribution] = {}
    extras_seen: dict[str, set[str]] = {}
    todo: list[tuple[str, tuple[str, ...]]] = [(root, extras)]
    while todo:
        name, wanted = todo.pop()
        key = canonical(name)
        new_extras = set(wanted) - extras_seen.get(key, set())
        if key in seen and not new_extras:
            continue
        try:
            dist = seen.get(key) or md.distribution(name)
        except md.PackageNotFoundError:
            raise SystemExit(f"{name} is required (by {root}'s dependencies) but not installed here") from None
        seen[key] = dist
        extras_seen.setdefault(key, set()).update(wanted)
        envs = [{"extra": e} for e in ("", *sorted(extras_seen[key]))]
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                todo.append((req.name, tuple(req.extras)))
    return seen


def top_level_names(dist: md.Distribution) -> list[str]:
    """The import names a distribution installs (its top-level packages and modules)."""
    text = dist.read_text("top_level.txt")
    if text:
        names = {line.strip().replace("/", ".").split(".")[0] for line in text.splitlines() if line.strip()}
    else:
        names = set()
        for f in dist.files or []:
            first = f.parts[0]
            if len(f.parts) > 1 and not first.endswith((".dist-info", ".data", ".libs", ".egg-info")) \
                    and first not in ("..", "bin", "__pycache__") and f.parts[-1] == "__init__.py":
                names.add(first)
            elif len(f.parts) == 1 and f.suffix in (".py", ".so", ".pyd"):
                names.add(f.name.split(".")[0])
    return sorted(n for n in names if n.isidentifier() and not n.startswith("_distutils"))


def is_package(name: str) -> bool:
    """Whether an import name is a package (a folder that can hold data files), without importing it."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return False
    return spec is not None and spec.submodule_search_locations is not None


def bundled_distributions(excludes: list[str]) -> dict[str, tuple[md.Distribution, list[str]]]:
    """The runtime closure less the distributions whose every import name the spec excludes."""
    out = {}
    for key, dist in runtime_closure().items():
        names = top_level_names(dist)
        if names and all(n in excludes for n in names):
            continue
        out[key] = (dist, [n for n in names if n not in excludes])
    return out


# ---- pins ------------------------------------------------------------------------------------------

def pinned_set() -> dict[str, md.Distribution]:
    """What the pins cover: the runtime closure and the build tools with theirs."""
    dists = runtime_closure()
    for tool in BUILD_TOOLS:
        dists.update(runtime_closure(tool))
    dists.pop("workbench", None)
    return dists


def public_version(dist: md.Distribution) -> str:
    # torch's CPU wheel is 2.13.0+cpu: pin the public version, which the local build satisfies
    return Version(dist.version).public


def read_pins(path: Path = CONSTRAINTS) -> dict[str, str]:
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonical(name)] = version.strip()
    return pins


def freeze(path: Path = CONSTRAINTS) -> None:
    import platform

    dists = pinned_set()
    lines = [
        "# The versions the Workbench bundle is built from, verified together by packaging/build.py's smoke test.",
        "# Written by `python packaging/build.py --update-pins` (which calls `python packaging/bundle_deps.py",
        "# freeze` after the build passed): the runtime dependencies of workbench, found recursively from",
        "# installed metadata, and PyInstaller's. Install them with",
        '#     pip install torch==<torch pin below> && pip install -e ".[bundle]" -c packaging/bundle-constraints.txt',
        f"# Verified on Python {platform.python_version()}, {sys.platform}-{platform.machine()}"
        f" (torch {md.version('torch')}).",
    ]
    lines += [f"{dists[k].metadata['Name']}=={public_version(dists[k])}" for k in sorted(dists)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {path} ({len(dists)} pins)")


def check_pins(path: Path = CONSTRAINTS) -> list[str]:
    """What differs between this environment and the pins (empty: it matches)."""
    pins = read_pins(path)
    problems = []
    for key, dist in sorted(pinned_set().items()):
        want = pins.get(key)
        have = public_version(dist)
        if want is None:
            problems.append(f"{dist.metadata['Name']} {have} is installed and needed, but not pinned")
        elif Version(want) != Version(have):
            problems.append(f"{dist.metadata['Name']} {have} is installed, the pin is {want}")
    return problems


# ---- the verified stamp ----------------------------------------------------------------------------

def inputs_hash(with_pins: bool = True) -> str:
    """SHA-256 of what decides the bundle: this folder's build files, the pins, pyproject's dependencies."""
    h = hashlib.sha256()
    for name in (*BUILD_INPUTS, *((CONSTRAINTS.name,) if with_pins else ())):
        h.update(name.encode() + b"\0" + (HERE / name).read_bytes().replace(b"\r\n", b"\n") + b"\0")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    deps = {"dependencies": project["dependencies"],
            "bundle": project.get("optional-dependencies", {}).get("bundle", [])}
    h.update(json.dumps(deps, sort_keys=True).encode())
    return h.hexdigest()


def read_verified() -> dict:
    try:
        return json.loads(VERIFIED.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def write_verified(figures: dict) -> None:
    keep = ("bundle_bytes", "archive_bytes", "build_s", "smoke_s", "bundle_version_s", "bundle_first_paint_s",
            "platform", "variant")
    record = {"inputs_sha256": inputs_hash(), **{k: figures[k] for k in keep if k in figures},
              "versions": {n: md.version(n) for n in ("torch", "transformers", "tokenizers", "huggingface-hub",
                                                          "PySide6-Essentials", "onnxruntime", "pyinstaller")}}
    VERIFIED.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {VERIFIED}")


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "check"
    if command == "check":
        problems = check_pins()
        for p in problems:
            print(p)
        if not problems:
            print(f"this environment holds the pinned versions ({CONSTRAINTS.relative_to(ROOT)})")
        else:
            print(f'\nnot the pinned versions: pip install -e ".[bundle]" -c {CONSTRAINTS.relative_to(ROOT)}')
        return 1 if problems else 0
    if command == "freeze":
        freeze()
        return 0
    if command == "verified":
        recorded = read_verified().get("inputs_sha256")
        now = inputs_hash()
        print(f"bundle inputs {now[:12]}; last verified build {str(recorded)[:12]}: "
              f"{'same, no need to build' if recorded == now else 'different, build and smoke-test'}")
        return 0 if recorded == now else 1
    if command == "list":
        for key, (dist, names) in sorted(bundled_distributions([]).items()):
            print(f"{dist.metadata['Name']:36} {dist.version:16} {' '.join(names)}")
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
