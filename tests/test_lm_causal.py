"""Causal LMs: GPT-2 layer dropping, top-k logit KD and its cache, ROUGE-L, and KD on real text."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from edgedistill.distill.losses import divergence  # noqa: E402
from edgedistill.lm.causal import (  # noqa: E402
    CausalTrainConfig,
    layer_dropped_gpt2,
    next_token_agreement,
    perplexity,
    rouge_l,
    teacher_topk,
    tiny_gpt2,
    token_blocks,
    train_causal,
    train_tokenizer,
)
from edgedistill.lm.terms import topk_kd_loss  # noqa: E402


def test_rouge_l_by_hand():
    assert rouge_l([1, 2, 3, 4], [1, 3, 4, 5]) == pytest.approx(0.75)  # LCS 1,3,4: P = R = 3/4
    assert rouge_l([1, 2], [1, 2]) == 1.0 and rouge_l([1], [2]) == 0.0 and rouge_l([], [1]) == 0.0
    assert rouge_l([1, 2, 3], [3, 2, 1, 4]) == pytest.approx(2 * (1 / 3) * (1 / 4) / (1 / 3 + 1 / 4))


def test_topk_kd_loss_on_fixed_tensors():
    student = torch.tensor([[[2.0, 0.0, 1.0, -1.0]]])  # batch 1, 1 position, vocabulary 4
    teacher = torch.tensor([[[1.0, 3.0, 0.0, -2.0]]])
    top = teacher.topk(2, dim=-1)  # tokens 1 and 0
    got = topk_kd_loss(student, top.values, top.indices, temperature=1.0)
    p = torch.softmax(torch.tensor([3.0, 1.0]), 0)  # teacher over its top-2, renormalized
    q = torch.softmax(torch.tensor([0.0, 2.0]), 0)  # student over the same tokens
    assert got.item() == pytest.approx(float((p * (p.log() - q.log())).sum()), rel=1e-5)
    # With k = the whole vocabulary it is the full divergence, for every kind.
    full = teacher.topk(4, dim=-1)
    for kind in ("forward_kl", "reverse_kl", "jsd"):
        assert topk_kd_loss(student, full.values, full.indices, 2.0, kind).item() == pytest.approx(
            divergence(student[0], teacher[0], 2.0, kind).item(), rel=1e-5)


def test_layer_dropped_gpt2_copies_blocks_and_shares_the_vocabulary():
    teacher = tiny_gpt2(50, layers=4, hidden=16, heads=2, context=16)
    student, kept = layer_dropped_gpt2(teacher, 2)
    assert kept == [1, 3] and student.config.n_layer == 2 and len(student.transformer.h) == 2
    for i, j in enumerate(kept):
        for (name, a), (_, b) in zip(student.transformer.h[i].state_dict().items(),
                                     teacher.transformer.h[j].state_dict().items()):
            assert torch.equal(a, b), name
    assert torch.equal(student.lm_head.weight, teacher.lm_head.weight)
    student_weight = student.transformer.h[0].attn.c_attn.weight
    teacher_weight = teacher.transformer.h[1].attn.c_attn.weight
    assert student_weight.data_ptr() != teacher_weight.data_ptr()


def test_topk_cache_miss_then_hit(tmp_path):
    teacher = tiny_gpt2(50, layers=1, hidden=16, heads=2, context=8).eval()
    blocks = torch.randint(0, 50, (5, 8), generator=torch.Generator().manual_seed(0))
    first = teacher_topk(teacher, blocks, 4, root=tmp_path)
    second = teacher_topk(teacher, blocks, 4, root=tmp_path)
    assert (first.status, second.status) == ("miss", "hit")
    assert first.values.shape == (5, 8, 4) and np.array_equal(first.indices, second.indices)
    with torch.no_grad():
        want = teacher(blocks).logits.topk(4, dim=-1)
    assert np.allclose(second.values, want.values.numpy())
    assert teacher_topk(teacher, blocks, 3, root=tmp_path).status == "miss"


@pytest.mark.slow
def test_kd_from_a_trained_teacher_on_real_text(tmp_path):
    """A tiny GPT-2 trained here on pydoc topics; its 1-layer student learns with top-k KD, on real text."""
    from edgedistill.lm.text import bundled_documents, split_by_document

    splits = split_by_document(bundled_documents(), test_fraction=0.2, seed=0)
    tokenizer = train_tokenizer(splits.train, vocab_size=300)
    train, test = token_blocks(tokenizer, splits.train[:1500], 32), token_blocks(tokenizer, splits.test[:200], 32)
    teacher = tiny_gpt2(len(tokenizer), layers=2, hidden=32, heads=2, context=32)
    train_causal(teacher, train, CausalTrainConfig(epochs=2, lr=3e-3), label="teacher")
    assert perplexity(teacher, test) < len(tokenizer) / 4  # learned something of English
    undistilled, _ = layer_dropped_gpt2(teacher, 1)
    student, _ = layer_dropped_gpt2(teacher, 1)
    topk = teacher_topk(teacher, train, 16, root=tmp_path)
    run = train_causal(student, train, CausalTrainConfig(epochs=1, lr=3e-3, alpha=0.5), topk=topk, label="kd")
    assert set(run.history[0]) == {"epoch", "ce", "kd"} and all(math.isfinite(v) for v in run.history[0].values())
    assert next_token_agreement(student, teacher, test) > next_token_agreement(undistilled, teacher, test)
    assert perplexity(student, test) < perplexity(undistilled, test)


def test_causal_training_is_guarded_by_the_one_loop():
    """Causal LMs train in the shared loop (distill/trainer.py:train_epochs): a step that blows the weights up
    stops training at the NaN guard, naming the loss term and the step, not later with garbage weights."""
    from edgedistill.errors import StageFailed

    torch.manual_seed(0)
    blocks = torch.randint(0, 50, (8, 16))
    model = tiny_gpt2(50, layers=1, hidden=16, heads=2, context=16)
    with pytest.raises(StageFailed, match=r"blow-up: loss term 'ce' became (nan|inf) at epoch 1, step [2-4]"):
        train_causal(model, blocks, CausalTrainConfig(epochs=1, batch_size=2, lr=1e30), label="blow-up")
