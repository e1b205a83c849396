"""Tag scheme detection, conversion and invalid-sequence reports."""

from __future__ import annotations

import itertools

import pytest

from workbench.core.data.tag_schemes import (
    BILOU,
    IO,
    IOB1,
    IOB2,
    IOBES,
    PLAIN,
    SCHEMES,
    Span,
    convert,
    detect_scheme,
    from_spans,
    invalid_transitions,
    is_span_tagset,
    resolve_target,
    to_spans,
)

# Two adjacent PER entities, a three-token ORG, a single LOC: every scheme writes these differently.
SPANS = [Span(0, 2, "PER"), Span(2, 3, "PER"), Span(4, 7, "ORG"), Span(8, 9, "LOC")]
N = 10
WRITTEN = {
    IOB2: "B-PER I-PER B-PER O B-ORG I-ORG I-ORG O B-LOC O",
    IOB1: "I-PER I-PER B-PER O I-ORG I-ORG I-ORG O I-LOC O",
    IOBES: "B-PER E-PER S-PER O B-ORG I-ORG E-ORG O S-LOC O",
    BILOU: "B-PER L-PER U-PER O B-ORG I-ORG L-ORG O U-LOC O",
    IO: "I-PER I-PER I-PER O I-ORG I-ORG I-ORG O I-LOC O",
}


@pytest.mark.parametrize("scheme", SCHEMES)
def test_from_spans_writes_each_scheme(scheme):
    assert " ".join(from_spans(SPANS, N, scheme)) == WRITTEN[scheme]


@pytest.mark.parametrize("scheme", [IOB2, IOB1, IOBES, BILOU])
def test_spans_round_trip(scheme):
    assert to_spans(WRITTEN[scheme].split()) == SPANS


def test_io_merges_adjacent_entities_of_one_type():
    assert to_spans(WRITTEN[IO].split())[0] == Span(0, 3, "PER")


@pytest.mark.parametrize("src,dst", list(itertools.permutations([IOB2, IOB1, IOBES, BILOU], 2)))
def test_convert_between_schemes(src, dst):
    assert " ".join(convert(WRITTEN[src].split(), dst)) == WRITTEN[dst]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_detect(scheme):
    assert detect_scheme([WRITTEN[scheme].split(), ["O", "O"]]) == scheme


def test_detect_plain_and_mixed():
    assert detect_scheme([["NOUN", "VERB"], ["DET"]]) == PLAIN
    assert detect_scheme([["B-PER", "NOUN"]]) == PLAIN  # not all span-shaped
    assert detect_scheme([["O", "O"]]) == PLAIN  # nothing but O
    assert detect_scheme([]) == PLAIN
    assert is_span_tagset(["O", "B-PER"]) and not is_span_tagset(["O"]) and not is_span_tagset(["X", "O"])


def test_invalid_iob2_sequences():
    problems = invalid_transitions("O I-PER B-LOC I-ORG I-ORG".split(), IOB2)
    assert [i for i, _ in problems] == [1, 3]
    assert "'I-PER' follows 'O'" in problems[0][1] and "B-PER" in problems[0][1]
    assert invalid_transitions(["I-PER"], IOB2)[0][1].startswith("'I-PER' follows the sentence start")
    assert invalid_transitions(WRITTEN[IOB2].split(), IOB2) == []


def test_invalid_iobes_and_bilou_and_iob1():
    p = invalid_transitions("B-PER O E-LOC S-ORG I-ORG".split(), IOBES)
    assert [i for i, _ in p] == [0, 2, 4, 4]  # B not closed, E without B, I without B and not closed
    assert invalid_transitions(WRITTEN[IOBES].split(), IOBES) == []
    assert invalid_transitions(WRITTEN[BILOU].split(), BILOU) == []
    assert [i for i, _ in invalid_transitions("O L-PER".split(), BILOU)] == [1]
    assert [i for i, _ in invalid_transitions("O B-PER".split(), IOB1)] == [1]
    assert invalid_transitions(WRITTEN[IOB1].split(), IOB1) == []
    assert invalid_transitions("O I-PER I-LOC".split(), IO) == []


def test_lenient_decoding_of_invalid_sequences():
    # conlleval: an I- after O starts an entity; a type change starts another.
    assert to_spans("O I-PER I-PER I-LOC".split()) == [Span(1, 3, "PER"), Span(3, 4, "LOC")]
    assert convert("O I-PER I-PER I-LOC".split(), IOB2) == "O B-PER I-PER B-LOC".split()


def test_resolve_target():
    assert resolve_target("auto", IOB2) == IOB2
    assert resolve_target("auto", IO) == IO
    for s in (IOB1, IOBES, BILOU):
        assert resolve_target("auto", s) == IOB2
    assert resolve_target("bioes", IOB2) == IOBES and resolve_target("BIO", IOBES) == IOB2
    assert resolve_target("none", IOB2) == PLAIN and resolve_target("iob2", PLAIN) == PLAIN
    with pytest.raises(ValueError):
        resolve_target("xyz", IOB2)
