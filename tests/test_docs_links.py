"""The README and docs/ stay navigable: every relative Markdown link points to a file that exists (and,
with an anchor, to a heading that exists), and every source path or module the docs name in code
spans exists. Moving a section or a module without updating the docs fails here, not in a reader's
browser."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
# Code spans that name a file of this repository (core/, app/ and cli/ are read under workbench/).
SOURCE_PATH = re.compile(r"^(?:workbench|benchmarks|packaging|tests|docs|\.ci|core|app|cli)/[\w./-]*$")
MODULE = re.compile(r"^workbench\.(?:core|app|cli)(?:\.\w+)+")  # not workbench.json, .spec, ...


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, where links and headings count."""
    out, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append((number, line))
    return out


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: link targets kept as text, lower case, punctuation other than
    hyphens and underscores dropped, each space a hyphen."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if m:
            slug = github_slug(m.group(2))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            if n:
                seen[f"{slug}-{n}"] = 1
    return set(seen)


def links(path: Path) -> list[tuple[int, str]]:
    found = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        for m in LINK.finditer(CODE_SPAN.sub("", line)):
            found.append((number, m.group(1)))
    return found


def code_spans(path: Path) -> list[tuple[int, str]]:
    return [(number, m.group(2).strip()) for number, line in prose_lines(path.read_text(encoding="utf-8"))
            for m in CODE_SPAN.finditer(line)]


def broken_link(doc: Path, target: str) -> str | None:
    """Why ``target``, a link in ``doc``, leads nowhere; None when it is fine or not ours to check."""
    if SCHEME.match(target):
        return None
    file_part, _, anchor = target.partition("#")
    dest = (doc.parent / file_part).resolve() if file_part else doc
    if not dest.exists():
        return f"{file_part} does not exist"
    if anchor:
        if dest.suffix != ".md":
            return f"an anchor into {dest.name}, which is not Markdown"
        if anchor not in anchors(dest):
            return f"{dest.name} has no heading #{anchor}"
    return None


def missing_source(span: str) -> str | None:
    """Why a code span that names a repository file or a workbench module names nothing; None if it is
    not such a span, is a pattern (NAME, *, ...) or exists."""
    if SOURCE_PATH.match(span) and not re.search(r"[A-Z*]|\.\.\.", span.split("/")[-1] + span):
        path = ROOT / span if span.split("/")[0] in ("workbench", "benchmarks", "packaging", "tests", "docs",
                                                      ".ci") else ROOT / "workbench" / span
        return None if path.exists() else f"{span}: no such file"
    m = MODULE.match(span)
    if m:
        return missing_module(m.group(0))
    return None


def missing_module(dotted: str) -> str | None:
    """``workbench.a.b.name``: the longest prefix must be a module (or package) of this repository, and
    the rest, if any, a name that module defines."""
    parts = dotted.split(".")
    for cut in range(len(parts), 1, -1):
        base = ROOT.joinpath(*parts[:cut])
        module = base.with_suffix(".py") if base.with_suffix(".py").exists() else base / "__init__.py"
        if module.exists():
            rest = parts[cut:]
            if not rest:
                return None
            defined = re.search(rf"^\s*(?:def|class)\s+{rest[0]}\b|^{rest[0]}\s*[:=]", module.read_text(),
                                re.MULTILINE)
            return None if defined else f"{dotted}: {'.'.join(parts[:cut])} defines no {rest[0]}"
    return f"{dotted}: no such module"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(doc):
    problems = [f"{doc.name}:{n}: ({t}) {why}" for n, t in links(doc) if (why := broken_link(doc, t))]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_source_path_named_exists(doc):
    problems = [f"{doc.name}:{n}: {why}" for n, s in code_spans(doc) if (why := missing_source(s))]
    assert not problems, "\n".join(problems)


def test_the_docs_pages_exist_and_the_readme_links_each():
    readme_targets = {t.partition("#")[0] for _, t in links(ROOT / "README.md")}
    for page in ("GUIDE", "CLI", "FORMATS", "BENCHMARKS", "ARCHITECTURE"):
        assert (ROOT / "docs" / f"{page}.md").is_file()
        assert f"docs/{page}.md" in readme_targets, f"README.md does not link docs/{page}.md"


def test_the_checker_catches_what_it_should(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "A.md").write_text("# A page\n\n## Install: the bundle, the `--model` flag\n")
    readme = tmp_path / "README.md"
    readme.write_text("")
    assert broken_link(readme, "docs/A.md#install-the-bundle-the---model-flag") is None
    assert broken_link(readme, "docs/A.md#a-page") is None
    assert "no heading" in broken_link(readme, "docs/A.md#install")
    assert "does not exist" in broken_link(readme, "docs/B.md")
    assert broken_link(readme, "https://example.org/nowhere") is None
    assert links_in("see [x](a.md) and `[not](a link)` and ![img](p.png)\n```\n[code](z.md)\n```\n",
                    tmp_path) == ["a.md", "p.png"]
    assert github_slug("Backbones (`--model`)") == "backbones---model"
    assert missing_source("core/run/pipeline.py") is None
    assert missing_source("core/run/nowhere.py") is not None
    assert missing_source("workbench/core/tasks/NAME.py") is None  # a placeholder
    assert missing_module("workbench.core.run.pipeline.run_training") is None
    assert missing_module("workbench.core.run.pipeline.no_such_name") is not None


def links_in(text: str, folder: Path) -> list[str]:
    page = folder / "page.md"
    page.write_text(text)
    return [t for _, t in links(page)]
