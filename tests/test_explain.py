"""Explanations: integrated gradients are complete (they sum to the logit difference); saliency."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def tiny_classifier(tiny_model_dir):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2,
                                                               id2label={0: "neg", 1: "pos"}).eval()
    with torch.no_grad():  # a random head is near zero: a sharper one gives the logits something to explain
        model.classifier.weight.normal_(0, 5.0)
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def test_integrated_gradients_are_complete(tiny_classifier):
    from workbench.core.analysis.explain import integrated_gradients

    model, tok = tiny_classifier
    att = integrated_gradients(model, tok, "the film was great and the music superb", steps=64)
    assert att.tokens[0] == "[CLS]" and att.tokens[-1] == "[SEP]" and len(att.scores) == len(att.tokens)
    gap = att.logit - att.baseline_logit
    assert abs(gap) > 1e-3
    assert sum(att.scores) == pytest.approx(gap, abs=0.02 * abs(gap) + 1e-3)
    assert abs(att.delta) <= 0.02 * abs(gap) + 1e-3
    # More steps: a smaller discretisation error
    coarse = integrated_gradients(model, tok, "the film was great and the music superb", steps=4)
    assert abs(att.delta) <= abs(coarse.delta) + 1e-6
    # The baseline of special tokens is themselves: they get (almost) nothing
    assert abs(att.scores[0]) < 1e-6 and abs(att.scores[-1]) < 1e-6


def test_integrated_gradients_pairs_and_html(tiny_classifier):
    from workbench.core.analysis.explain import attribution_html, integrated_gradients

    model, tok = tiny_classifier
    att = integrated_gradients(model, tok, "good plot", "bad <ending>", target=0, steps=16)
    assert att.label == "neg" and att.target == 0
    html = attribution_html(att, "good plot")
    assert "good" in html and "background-color" in html and "<ending>" not in html


def test_image_saliency_points_at_the_object():
    import torch

    from workbench.core.analysis.explain import image_saliency, overlay

    class CentreSpot(torch.nn.Module):  # the class logit reads only a 4x4 patch
        def forward(self, x):
            spot = x[:, :, 10:14, 10:14].mean((1, 2, 3))
            return torch.stack([spot, -spot], 1)

    pixels = np.random.default_rng(0).normal(size=(1, 3, 24, 24)).astype(np.float32)
    sal, target = image_saliency(CentreSpot(), pixels)
    assert sal.shape == (24, 24) and target in (0, 1) and sal.max() == pytest.approx(1.0)
    assert sal[10:14, 10:14].mean() > 5 * sal[:6, :6].mean()
    out = overlay(np.zeros((24, 24, 3), np.uint8), sal)
    assert out.dtype == np.uint8 and out[12, 12, 0] > out[0, 0, 0]
