"""Span tagging schemes (IO, IOB1, IOB2/BIO, IOBES, BILOU): detect, decode, convert, check.

A tag is ``O`` or ``P-TYPE`` where P is one of B, I, E, S, L, U. All schemes encode the same thing,
a list of typed spans, so conversion is decode-then-encode. Decoding is lenient in the way the
CoNLL ``conlleval`` script is (an ``I-X`` after ``O`` starts an entity), so an invalid sequence
still means something; :func:`invalid_transitions` reports where a file breaks its scheme.

Tags that are not all of that shape (part-of-speech tags such as ``NOUN``) are "plain" tags:
nothing here applies to them.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterable, NamedTuple, Sequence

IO, IOB1, IOB2, IOBES, BILOU = "IO", "IOB1", "IOB2", "IOBES", "BILOU"
SCHEMES = (IO, IOB1, IOB2, IOBES, BILOU)
PLAIN = "plain"  # not span tags at all
# What users type: "bio" and "bioes" are common names for IOB2 and IOBES.
ALIASES = {"io": IO, "iob1": IOB1, "iob": IOB2, "iob2": IOB2, "bio": IOB2, "iobes": IOBES, "bioes": IOBES,
           "bilou": BILOU, "bilou2": BILOU}

_TAG = re.compile(r"([BIESLU])-(.+)\Z")


class Span(NamedTuple):
    start: int
    end: int  # exclusive
    type: str


def split_tag(tag: str) -> tuple[str | None, str]:
    """("O", "") for O, (prefix, type) for a span tag, (None, tag) for anything else."""
    if tag == "O":
        return "O", ""
    m = _TAG.match(tag)
    return (m.group(1), m.group(2)) if m else (None, tag)


def is_span_tagset(tags: Iterable[str]) -> bool:
    """Whether every tag is O or prefix-TYPE, with at least one prefixed tag."""
    prefixed = False
    for tag in tags:
        prefix, _ = split_tag(tag)
        if prefix is None:
            return False
        prefixed |= prefix != "O"
    return prefixed


def entity_types(tags: Iterable[str]) -> list[str]:
    return sorted({t for p, t in map(split_tag, tags) if p not in ("O", None)})


def detect_scheme(sentences: Iterable[Sequence[str]]) -> str:
    """The scheme the sentences are written in, or PLAIN when they are not span tags.

    E/S prefixes mean IOBES, L/U mean BILOU. With only I (and O) the tags are IO. When B occurs,
    IOB2 puts it at the start of every entity while IOB1 uses it only to separate two adjacent
    entities of one type, so a B after O (or at a sentence start) means IOB2.
    """
    prefixes: Counter[str] = Counter()
    b_at_start = False
    seen_any = False
    for tags in sentences:
        prev_prefix, prev_type = "O", ""
        for tag in tags:
            seen_any = True
            prefix, typ = split_tag(tag)
            if prefix is None:
                return PLAIN
            prefixes[prefix] += 1
            if prefix == "B" and (prev_prefix == "O" or prev_type != typ):
                b_at_start = True
            prev_prefix, prev_type = prefix, typ
    prefixes.pop("O", None)
    if not seen_any or not prefixes:
        return PLAIN
    if prefixes.keys() & {"L", "U"}:
        return BILOU
    if prefixes.keys() & {"E", "S"}:
        return IOBES
    if "B" not in prefixes:
        return IO
    return IOB2 if b_at_start else IOB1


def to_spans(tags: Sequence[str]) -> list[Span]:
    """Typed spans of a tag sequence in any scheme, decoded leniently (as conlleval does)."""
    spans: list[Span] = []
    start, typ = None, ""
    for i, tag in enumerate(tags):
        prefix, t = split_tag(tag)
        if prefix in ("O", None):
            if start is not None:
                spans.append(Span(start, i, typ))
            start = None
            continue
        if start is None or prefix in ("B", "S", "U") or t != typ:
            if start is not None:
                spans.append(Span(start, i, typ))
            start, typ = i, t
        if prefix in ("E", "L", "S", "U"):
            spans.append(Span(start, i + 1, typ))
            start = None
    if start is not None:
        spans.append(Span(start, len(tags), typ))
    return spans


def from_spans(spans: Sequence[Span], n: int, scheme: str) -> list[str]:
    """Tags for ``n`` tokens carrying ``spans`` in ``scheme``."""
    tags = ["O"] * n
    prev_end, prev_type = -1, None
    for s in spans:
        length = s.end - s.start
        if scheme == IO:
            tags[s.start:s.end] = [f"I-{s.type}"] * length
        elif scheme == IOB1:
            first = "B" if prev_end == s.start and prev_type == s.type else "I"
            tags[s.start:s.end] = [f"{first}-{s.type}"] + [f"I-{s.type}"] * (length - 1)
        elif scheme == IOB2:
            tags[s.start:s.end] = [f"B-{s.type}"] + [f"I-{s.type}"] * (length - 1)
        elif scheme in (IOBES, BILOU):
            single, begin, inside, end = ("S", "B", "I", "E") if scheme == IOBES else ("U", "B", "I", "L")
            if length == 1:
                tags[s.start] = f"{single}-{s.type}"
            else:
                tags[s.start:s.end] = [f"{begin}-{s.type}"] + [f"{inside}-{s.type}"] * (length - 2) + [f"{end}-{s.type}"]
        else:
            raise ValueError(f"unknown tag scheme {scheme!r}")
        prev_end, prev_type = s.end, s.type
    return tags


def convert(tags: Sequence[str], target: str) -> list[str]:
    """``tags`` (any span scheme) rewritten in ``target``."""
    return from_spans(to_spans(tags), len(tags), target)


def invalid_transitions(tags: Sequence[str], scheme: str) -> list[tuple[int, str]]:
    """(token index, problem) for each place where ``tags`` break the rules of ``scheme``."""
    if scheme in (IO, PLAIN):
        return []
    problems: list[tuple[int, str]] = []
    parsed = [split_tag(t) for t in tags]
    continuing = {"I", "E"} if scheme == IOBES else {"I", "L"} if scheme == BILOU else {"I"}
    opening = {"B", "I"}  # tags that must be followed by a continuation in IOBES/BILOU
    for i, (prefix, typ) in enumerate(parsed):
        prev_prefix, prev_type = parsed[i - 1] if i else ("O", "")
        before = f"'{tags[i - 1]}'" if i else "the sentence start"
        same_entity = prev_prefix not in ("O", None) and prev_type == typ
        if scheme == IOB2 and prefix == "I" and not same_entity:
            problems.append((i, f"'{tags[i]}' follows {before}; under IOB2 an entity starts with B-{typ}"))
        elif scheme == IOB1 and prefix == "B" and not same_entity:
            problems.append((i, f"'{tags[i]}' follows {before}; under IOB1 B- only separates two adjacent "
                                f"{typ} entities"))
        elif scheme in (IOBES, BILOU):
            if prefix in continuing and not (same_entity and prev_prefix in opening):
                problems.append((i, f"'{tags[i]}' follows {before}; it must continue a {typ} entity "
                                    f"opened by B-{typ}"))
            if prefix in opening:
                nxt = parsed[i + 1] if i + 1 < len(parsed) else ("O", "")
                if not (nxt[0] in continuing and nxt[1] == typ):
                    after = f"'{tags[i + 1]}'" if i + 1 < len(parsed) else "the sentence end"
                    end = "E" if scheme == IOBES else "L"
                    problems.append((i, f"'{tags[i]}' is followed by {after}; under {scheme} a {typ} entity "
                                        f"ends with {end}-{typ}"))
    return problems


def resolve_target(requested: str | None, detected: str) -> str:
    """The scheme to train with. "auto" keeps IO and IOB2 and turns IOB1, IOBES and BILOU into IOB2,
    the scheme `transformers.pipeline(..., aggregation_strategy=...)` groups correctly."""
    key = (requested or "auto").strip().lower()
    if detected == PLAIN or key == "none":
        return PLAIN
    if key == "auto":
        return detected if detected in (IO, IOB2) else IOB2
    if key not in ALIASES:
        raise ValueError(key)
    return ALIASES[key]
