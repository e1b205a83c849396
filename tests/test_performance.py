"""MFU's FLOP count (workbench/core/training/performance.py) against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.core.training.performance import FlopCount, StepCounter, peak_flops

# A BERT of 2 layers, hidden 8, intermediate 16, 2 labels. Its parameters outside embedding tables:
#   embeddings' LayerNorm                       2 x 8                     =   16
#   per layer: Q, K, V, O (8x8 + 8 each)        4 x 72                    =  288
#              attention LayerNorm              16, intermediate 8x16+16 = 144, output 16x8+8 = 136, LayerNorm 16
#              a layer                          288 + 16 + 144 + 136 + 16 =  600
#   2 layers                                                              = 1200
#   pooler 8x8 + 8 = 72, classifier 8x2 + 2 = 18
#   N = 16 + 1200 + 72 + 18                                               = 1306
N = 1306
L, H = 2, 8


def tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=100, hidden_size=H, num_hidden_layers=L, num_attention_heads=2, intermediate_size=16,
                     max_position_embeddings=16, type_vocab_size=2, num_labels=2)
    return BertForSequenceClassification(cfg)


def test_full_fine_tune_is_6n_plus_12lht_without_embeddings():
    f = FlopCount.of(tiny_bert())
    assert (f.dense, f.weight_grads, f.activation_grads, f.layers, f.hidden) == (N, N, N, L, H)
    assert f.per_token == 6 * 1306 == 7836
    assert f.attention_per_pair == 12 * L * H == 192
    assert f.per_token_at(10) == 7836 + 1920
    # Two rows of 3 and 5 real tokens: 8 tokens, 3*3 + 5*5 = 34 (query, key) pairs.
    assert f.tokens(8, 34) == 8 * 7836 + 34 * 192


def test_frozen_backbone_counts_the_forward_and_the_head_only():
    model = tiny_bert()
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith("classifier.")
    f = FlopCount.of(model)
    assert (f.dense, f.weight_grads, f.activation_grads) == (N, 18, 18)
    assert f.per_token == 2 * (1306 + 18 + 18) == 2684
    assert f.attention_per_pair == pytest.approx(4 * L * H * (1 + 2 * 18 / 1306))


def test_lora_counts_adapter_weight_gradients_and_activation_gradients_from_layer_0_up():
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(tiny_bert(), peft.LoraConfig(r=2, lora_alpha=4, target_modules=["query", "value"]))
    for name, p in model.named_parameters():
        if "classifier" in name:
            p.requires_grad = True
    # Adapters: A (2x8) + B (8x2) = 32 per target, 2 targets x 2 layers = 128; N grows to 1434. Weight
    # gradients: 128 + the classifier's 18 = 146. Activation gradients from layer 0's query adapter up:
    # everything but the embeddings' LayerNorm (16) and layer 0's frozen query weights (72): 1346.
    f = FlopCount.of(model)
    assert (f.dense, f.weight_grads, f.activation_grads) == (1434, 146, 1346)
    assert f.per_token == 2 * (1434 + 146 + 1346) == 5852


def test_step_counter_counts_real_tokens_and_squared_lengths():
    c = StepCounter()
    c.start(tiny_bert(), torch.device("cpu"), "fp32")
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])  # the batcher's host parts are NumPy arrays
    c.add_batch([{"attention_mask": mask}], rows=2)
    assert (c.tokens, c.pairs, c.params) == (8, 34, N)
    c.add_batch([{"attention_mask": torch.from_numpy(mask)}], rows=2)
    assert (c.tokens, c.pairs) == (16, 68)
    c.tokens, c.pairs = 8, 34
    assert c.model_flops() == 8 * 7836 + 34 * 192
    assert c.read(1.0) == (None, None)  # off CUDA: no MFU, no peak memory


def test_image_models_have_no_attention_term():
    from workbench.core.tasks.image.models import ImageClassifier

    f = FlopCount.of(ImageClassifier("small-cnn", 3))
    assert f.layers == 0 and f.attention_per_pair == 0 and f.per_token == 6 * f.dense


@pytest.mark.parametrize("name, tflops", [
    ("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756), ("NVIDIA H200", 989.4), ("NVIDIA GH200 480GB", 989.4),
    ("NVIDIA A100-SXM4-80GB", 312), ("NVIDIA A10", 125), ("NVIDIA L40S", 362.05), ("NVIDIA L40", 181.05),
    ("NVIDIA L4", 121), ("NVIDIA GeForce RTX 4090", 165.2), ("NVIDIA GeForce RTX 3090", 71), ("Tesla T4", 65),
])
def test_peak_table_holds_dense_bf16_with_fp32_accumulate(name, tflops):
    assert peak_flops(name) == pytest.approx(tflops * 1e12)


def test_unknown_gpu_has_no_peak():
    assert peak_flops("Some Future GPU") is None
