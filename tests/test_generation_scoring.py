"""Scores of generated text (workbench/core/tasks/generation/scoring.py): each metric agrees with the library
or reference implementation it stands for, and the headline metric follows the references."""

from __future__ import annotations

import json
import re
import string
from collections import Counter

import pytest
import sacrebleu
from rouge_score import rouge_scorer
from sklearn.metrics import classification_report, confusion_matrix, f1_score

from workbench.core.tasks.generation.scoring import (
    OTHER,
    RougeTokenizer,
    choose_headline,
    class_report,
    exact_match,
    json_list_f1,
    normalize_answer,
    score_generations,
    scores_text,
    token_f1,
)

PREDICTIONS = ["The cat sat on the mat.", "a quick brown fox", "It is raining today", "", "Paris, France",
               "42 apples and 7 pears", "completely unrelated words here"]
REFERENCES = ["A cat was sitting on the mat", "The quick brown fox jumps", "Today it rains", "nothing",
              "Paris", "forty-two apples and seven pears", "the answer is somewhere else"]


# The official SQuAD v1.1 evaluation script's functions, verbatim but for names, as the reference.
def squad_normalize(s):
    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def squad_f1(prediction, ground_truth):
    prediction_tokens = squad_normalize(prediction).split()
    ground_truth_tokens = squad_normalize(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


# ---- exact match and token F1 ----------------------------------------------------------------------
def test_normalize_answer_is_squads_on_ascii_and_strips_unicode_punctuation():
    for text in PREDICTIONS + REFERENCES + ["  The  Cat,  sat!! ", "$5 + an apple", "the-end", "A"]:
        assert normalize_answer(text) == squad_normalize(text)
    assert normalize_answer("  The  Cat,  sat!! ") == "cat sat"
    assert normalize_answer("«Paris»。") == "paris"
    assert normalize_answer("¿Qué tal?") == "qué tal"


def test_exact_match_and_token_f1_by_hand():
    assert exact_match("The Cat!", "cat") == 1.0
    assert exact_match("cats", "cat") == 0.0
    assert token_f1("the cat sat", "a cat sat down") == pytest.approx(0.8)  # P 1, R 2/3
    assert token_f1("x x y", "x y y") == pytest.approx(2 / 3)  # multiset overlap: one x, one y
    assert token_f1("dog", "cat") == 0.0
    # SQuAD v2's rule for empty answers: two empty answers agree, one empty answer scores 0.
    assert token_f1("", "") == 1.0 and exact_match("", "") == 1.0
    assert token_f1("", "cat") == 0.0 and token_f1("The.", "cat") == 0.0
    for p, r in zip(PREDICTIONS, REFERENCES):
        if normalize_answer(p) and normalize_answer(r):
            assert token_f1(p, r) == pytest.approx(squad_f1(p, r))


def test_token_f1_splits_unspaced_scripts_into_characters():
    assert token_f1("北京是首都", "北京") == pytest.approx(2 * (2 / 5) * 1 / (2 / 5 + 1))
    assert token_f1("東京タワー", "東京タワー。") == 1.0
    assert exact_match("Привет, мир!", "привет мир") == 1.0


# ---- chrF, BLEU, ROUGE-L: the libraries' own numbers -------------------------------------------------
def test_chrf_and_bleu_equal_sacrebleu():
    s = score_generations(PREDICTIONS, REFERENCES)
    assert s.chrf == pytest.approx(sacrebleu.corpus_chrf(PREDICTIONS, [REFERENCES]).score / 100)
    assert s.bleu == pytest.approx(sacrebleu.corpus_bleu(PREDICTIONS, [REFERENCES]).score / 100)
    for row, p, r in zip(s.per_example, PREDICTIONS, REFERENCES):
        assert row["chrf"] == pytest.approx(sacrebleu.sentence_chrf(p, [r]).score / 100)
        assert row["bleu"] == pytest.approx(sacrebleu.sentence_bleu(p, [r]).score / 100)
    assert all(0.0 <= v <= 1.0 for row in s.per_example for v in row.values())


def test_rouge_l_equals_rouge_score_on_ascii_text():
    s = score_generations(PREDICTIONS, REFERENCES)
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    expected = [scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(PREDICTIONS, REFERENCES)]
    assert [row["rouge_l"] for row in s.per_example] == pytest.approx(expected)
    assert s.rouge_l == pytest.approx(sum(expected) / len(expected))


def test_rouge_tokens_equal_rouge_scores_on_ascii_and_keep_other_scripts():
    default = rouge_scorer.RougeScorer(["rougeL"])._tokenizer
    for text in PREDICTIONS + REFERENCES + ["Hello_world: x-ray 3.14, U.S.A."]:
        assert RougeTokenizer().tokenize(text) == default.tokenize(text)
    # rouge-score alone drops every Cyrillic letter (score 0); here LCS 2 of 2 and 3 words: F 0.8.
    assert rouge_scorer.RougeScorer(["rougeL"]).score("Москва столица России", "Москва — столица")["rougeL"].fmeasure == 0
    s = score_generations(["Москва — столица"], ["Москва столица России"])
    assert s.rouge_l == pytest.approx(0.8)
    assert RougeTokenizer().tokenize("Café naïve हिन्दी 北京市") == ["café", "naïve", "हिन्दी", "北", "京", "市"]


# ---- entity F1 over JSON lists -----------------------------------------------------------------------
def test_json_list_f1_by_hand():
    preds = ['["EU", "German", "German"]', 'Here: ```json\n["Peter Blackburn"]\n```', "I don't know", "[]",
             'The entities are ["BRUSSELS"] in it.']
    refs = ['["EU", "German", "British"]', '["Peter Blackburn"]', '["Germany"]', "[]", '["BRUSSELS"]']
    r = json_list_f1(preds, refs)
    # true positives EU, German (once: the reference names it once), Peter Blackburn, BRUSSELS.
    assert (r["true_positives"], r["predicted"], r["expected"]) == (4, 5, 6)
    assert r["precision"] == pytest.approx(4 / 5) and r["recall"] == pytest.approx(4 / 6)
    assert r["f1"] == pytest.approx(2 * 0.8 * (4 / 6) / (0.8 + 4 / 6))
    assert r["unparseable"] == 1 and r["unparseable_references"] == 0 and r["n"] == 5


def test_json_list_f1_edge_cases():
    assert json_list_f1(["[]"], ["[]"])["f1"] == 1.0  # nothing to find, nothing found
    assert json_list_f1(["not json"], ['["A"]'])["f1"] == 0.0
    assert json_list_f1(['[" EU "]'], ['["EU"]'])["f1"] == 1.0  # stripped
    typed = '[{"text": "EU", "type": "ORG"}]'
    assert json_list_f1(['[{"type": "ORG", "text": "EU"}]'], [typed])["f1"] == 1.0  # objects by content
    assert json_list_f1(['[{"type": "LOC", "text": "EU"}]'], [typed])["f1"] == 0.0
    assert json_list_f1(['["Zürich", "東京"]'], ['["東京", "Zürich"]'])["f1"] == 1.0
    assert json_list_f1(['{"a": 1}'], ['["A"]'])["unparseable"] == 1  # an object is not a list
    with pytest.raises(ValueError):
        json_list_f1(["[]"], [])


def test_entity_task_is_headed_by_entity_f1_per_example_too():
    preds = ['["EU", "German"]', '["Peter"]', "nothing"]
    refs = ['["EU", "German", "British"]', '["Peter"]', "[]"]
    s = score_generations(preds, refs)
    assert s.headline == "entity_f1" and s.classes is None
    assert s.entity_f1 == pytest.approx(json_list_f1(preds, refs)["f1"])
    assert s.example_score == pytest.approx([0.8, 1.0, 1.0])
    assert s.entities is not None and s.entities["unparseable"] == 1
    assert "entity_f1" in s.metrics and "hold no JSON list" in scores_text(s)


# ---- generative classification -----------------------------------------------------------------------
def test_class_report_equals_sklearn():
    refs = ["positive", "negative", "Positive ", "neutral", "negative", "neutral", "positive", "negative"]
    preds = ["Positive", "negative", "negative", "neutral", "I think negative", "positive", "positive", "NEGATIVE"]
    r = class_report(preds, refs)
    assert r is not None
    classes = ["negative", "neutral", "positive"]
    assert r["labels"] == classes + [OTHER]
    gold = [x.strip().casefold() for x in refs]
    pred = [x.strip().casefold() if x.strip().casefold() in classes else OTHER for x in preds]
    sk = classification_report(gold, pred, labels=classes, output_dict=True, zero_division=0)
    for row in r["per_class"]:
        want = sk[row["label"]]
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx(
            (want["precision"], want["recall"], want["f1-score"], want["support"]))
    assert r["macro_f1"] == pytest.approx(f1_score(gold, pred, labels=classes, average="macro", zero_division=0))
    assert r["weighted_f1"] == pytest.approx(f1_score(gold, pred, labels=classes, average="weighted", zero_division=0))
    assert r["macro_precision"] == pytest.approx(sk["macro avg"]["precision"])
    assert r["confusion_matrix"] == confusion_matrix(gold, pred, labels=classes + [OTHER]).tolist()
    assert r["accuracy"] == pytest.approx(5 / 8) and r["n"] == 8 and r["other"] == 1
    json.dumps(r)  # fit for a report file


def test_class_report_keeps_the_references_spelling_and_rare_answers_fall_in_other():
    refs = ["Sports"] * 10 + ["World"] * 9 + ["sports"] + ["Business news"]  # one rare answer: 1 of 21 < 10%
    preds = ["sports"] * 10 + ["World"] * 9 + ["Sports"] + ["Business news"]
    r = class_report(preds, refs)
    assert r is not None and r["labels"] == ["Sports", "World", OTHER]
    # The rare reference is an "(other)" row; the prediction that matches it is an exact match all the same.
    assert r["confusion_matrix"][2] == [0, 0, 1] and r["accuracy"] == 1.0


@pytest.mark.parametrize("refs", [
    [f"class {i}" for i in range(21) for _ in range(2)],  # 21 classes > max_classes
    ["a", "a", "b", "b"] + [f"once {i}" for i in range(2)],  # rare answers are a third of the references
    ["yes"] * 10,  # a single class
    [f"free text answer {i}" for i in range(10)],
])
def test_class_report_is_none_unless_the_references_are_a_few_classes(refs):
    assert class_report(refs, refs) is None


def test_class_report_max_classes():
    refs = [f"c{i}" for i in range(5) for _ in range(3)]
    assert class_report(refs, refs, max_classes=4) is None
    assert class_report(refs, refs, max_classes=5) is not None


# ---- the headline metric -------------------------------------------------------------------------
def test_headline_rules():
    short = ["Paris", "in 1969", "Neil Armstrong", "blue", "the red one", "42"]
    assert choose_headline(short) == "token_f1"
    assert score_generations(short, short).headline == "token_f1"
    labels = ["spam", "ham", "spam", "ham", "ham"]
    assert score_generations(labels, labels).headline == "exact_match"
    long = ["The committee met on Tuesday and agreed to postpone the vote until next month.",
            "Heavy rain caused flooding in several towns along the river overnight."]
    assert choose_headline(long) == "chrf"  # translation-like or general: no way to tell, chrF
    articles = [" ".join([r] * 4) for r in long]
    assert choose_headline(long, prompts=articles) == "rouge_l"  # far shorter than their sources
    assert choose_headline(long, prompts=["Translate: " + r for r in long]) == "chrf"
    assert choose_headline(['["EU"]', "[]"]) == "entity_f1"
    assert choose_headline([]) == "token_f1"
    # Median reference length decides: 6 words is long.
    assert choose_headline(["one two three four five six"] * 3) == "chrf"
    assert choose_headline(["one two three four five"] * 3 + ["x"]) == "token_f1"


def test_example_score_is_the_headline_per_example():
    s = score_generations(PREDICTIONS, REFERENCES)
    assert s.headline == "token_f1"
    assert s.example_score == [row["token_f1"] for row in s.per_example]
    assert s.token_f1 == pytest.approx(sum(s.example_score) / len(s.example_score))
    assert s.headline_value == s.token_f1
    worst = sorted(range(s.n), key=lambda i: s.example_score[i])[0]
    assert s.example_score[worst] == 0.0


# ---- odd input -------------------------------------------------------------------------------------
def test_empty_predictions_score_zero_without_error():
    refs = ["Paris", "the moon landing was in 1969", "blue"]
    s = score_generations(["", "", ""], refs)
    assert (s.exact_match, s.token_f1, s.chrf, s.bleu, s.rouge_l) == (0.0, 0.0, 0.0, 0.0, 0.0)
    assert s.n == 3 and len(s.per_example) == 3
    none = score_generations([], [])
    assert none.n == 0 and none.per_example == [] and scores_text(none) == "no examples scored"
    with pytest.raises(ValueError):
        score_generations(["a"], ["a", "b"])


def test_unicode_text_scores():
    preds = ["Der Hund läuft schnell 🐕", "北京是中国的首都", "Ελλάδα", "naïve café"]
    refs = ["Der Hund rennt schnell 🐕", "中国的首都是北京", "Ελλάδα", "naive cafe"]
    s = score_generations(preds, refs)
    assert s.chrf == pytest.approx(sacrebleu.corpus_chrf(preds, [refs]).score / 100)
    assert s.bleu == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score / 100)
    assert s.per_example[2]["exact_match"] == 1.0 and s.per_example[2]["rouge_l"] == 1.0
    assert s.per_example[1]["token_f1"] == 1.0  # the same characters in another order
    assert 0.0 < s.per_example[1]["rouge_l"] < 1.0
    assert s.per_example[3]["exact_match"] == 0.0  # accents are letters, not decoration
    text = scores_text(s)
    assert text.startswith("token F1") and "n=4" in text
    json.dumps(s.to_dict(), ensure_ascii=False)


def test_scores_text_shows_the_class_table():
    refs = ["spam", "ham", "spam", "ham", "ham"]
    s = score_generations(["spam", "ham", "ham", "ham", "eggs"], refs)
    text = scores_text(s)
    assert text.splitlines()[0].startswith("exact match 0.6000")
    assert "class" in text and "spam" in text and "1 answer outside the classes" in text
    d = s.to_dict()
    assert d["headline"] == "exact_match" and d["classes"]["labels"] == ["ham", "spam", OTHER]
