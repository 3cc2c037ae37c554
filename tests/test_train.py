"""End-to-end training through `accelerate launch` on CPU (tasks/train.py -> model/train.py)."""
from __future__ import annotations

import math
import os
import sys
import time

import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from snowcoder import storage
from snowcoder.config import ModelConfig, PhaseTrainConfig, TokenizerConfig, TrainConfig, UserError
from tasks.tokenize import pack, tokenize_shards, train_tokenizer
from snowcoder.reports import read_metrics
from tasks.train import _run_streaming, accelerate_config_path, run_training

MICRO = ModelConfig(n_layers=2, hidden=64, ffn=172, n_heads=2, seq_len=64)
# A micro model gains nothing from 2 threads, and on a busy 2-core box OpenMP spin-waits make it ~10x slower.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def python_files(n: int) -> list[str]:
    ops = ["+", "-", "*", "//", "%", "**"]
    files = []
    for i in range(n):
        op = ops[i % len(ops)]
        files.append(
            f'def combine_{i}(a, b):\n    """Combine a and b with {op}."""\n    return a {op} b\n\n\n'
            f"class Counter{i}:\n    def __init__(self, start={i}):\n        self.value = start\n\n"
            f"    def step(self):\n        self.value = self.value {op} {i % 7 + 1}\n        return self.value\n"
        )
    return files


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """~50 small python files -> tokenizer (vocab <= 512) + packed train/validation tokens."""
    root = tmp_path_factory.mktemp("corpus")
    texts = python_files(56)
    df = pd.DataFrame(dict(doc_id=[f"d{i}" for i in range(56)], repo=[f"repo{i % 4}" for i in range(56)],
                           path=[f"m{i}.py" for i in range(56)], language="python", content=texts,
                           size_bytes=[len(t) for t in texts], content_sha256="", source="test"))
    train = storage.write_shards(df.iloc[:50], str(root / "docs"), "train", 20)
    val = storage.write_shards(df.iloc[50:], str(root / "docs"), "val", 20)
    tok = str(root / "tokenizer")
    train_tokenizer(TokenizerConfig(vocab_size=512), train, tok)
    for name, uris in (("train", train), ("val", val)):
        shards = tokenize_shards(tok, uris, str(root / f"shards-{name}")).uris["tokens"]
        pack([(shards, 1.0)], str(root / name), order="language-repo", seed=0)
    return dict(root=root, tokenizer=tok, train=str(root / "train"), val=str(root / "val"))


ALPHA = PhaseTrainConfig(tokens=24 * 8 * 64, batch_size=8, lr=3e-3, min_lr=3e-4, warmup_steps=2, eval_every=12)


@pytest.fixture(scope="module")
def alpha(corpus, tmp_path_factory) -> dict:
    """One real phase-1 run of a micro model through `accelerate launch` on CPU (~10 s on an idle 2-core box)."""
    lines: list[str] = []
    out = str(tmp_path_factory.mktemp("alpha") / "train")
    t0 = time.perf_counter()
    m = run_training(MICRO, ALPHA, TrainConfig(timeout_s=300), tokenizer_uri=corpus["tokenizer"],
                     train_tokens_uri=corpus["train"], val_tokens_uri=corpus["val"], init_from_uri=None,
                     out_dir=out, seed=0, log=lines.append, extra_env=ONE_THREAD)
    return dict(manifest=m, lines=lines, out=out, seconds=time.perf_counter() - t0)


def test_end_to_end_training_on_cpu(corpus, alpha):
    m, out, lines = alpha["manifest"], alpha["out"], alpha["lines"]
    assert m.stage == "train" and m.uris["checkpoint"] == os.path.join(out, "checkpoint")
    assert m.counts["steps"] == 24 and m.counts["tokens"] == 24 * 8 * 64 and m.counts["params"] > 0
    assert m.counts["tok_per_s"] > 0 and m.counts["flops_per_token"] > 6 * m.counts["params"]
    assert any(line.startswith("params:") for line in lines) and any("val loss" in line for line in lines)

    rows = read_metrics(m.uris["metrics"])
    assert read_metrics(out) == rows
    losses = [r["loss"] for r in rows if "loss" in r]
    assert {"step", "loss", "lr", "tokens", "tok_per_s", "elapsed_s"} <= set(rows[0])
    vocab = len(AutoTokenizer.from_pretrained(corpus["tokenizer"]))
    assert losses[0] > 0.8 * math.log(vocab)  # starts near uniform
    assert m.counts["final_loss"] < losses[0] - 1.5  # and learns
    vals = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in vals] == [12, 24] and vals[-1]["val_loss"] < losses[0] - 1.0
    assert m.counts["val_loss"] == pytest.approx(vals[-1]["val_loss"], abs=1e-4)

    tok = AutoTokenizer.from_pretrained(m.uris["checkpoint"])
    lm = AutoModelForCausalLM.from_pretrained(m.uris["checkpoint"])
    prompt = tok("def combine_3(a, b):\n", return_tensors="pt")
    with torch.no_grad():
        gen = lm.generate(**prompt, max_new_tokens=12, do_sample=False)
    assert gen.shape[1] > prompt["input_ids"].shape[1]
    assert isinstance(tok.decode(gen[0]), str)


def test_continued_training_from_checkpoint_remote_paths(corpus, alpha):
    """Phase-2 style run: init_from a checkpoint, re-warm + linear decay, grad accumulation, fsspec URIs."""
    phase = PhaseTrainConfig(tokens=5000, batch_size=4, grad_accum=2, lr=1e-3, warmup_steps=1, schedule="rewarm-linear")
    remote = "memory://snowcoder-test"
    for name in ("tokenizer", "train"):
        storage.upload_dir(corpus[name], f"{remote}/{name}")
    storage.upload_dir(alpha["manifest"].uris["checkpoint"], f"{remote}/ckpt")
    m = run_training(MICRO, phase, TrainConfig(timeout_s=300), tokenizer_uri=f"{remote}/tokenizer",
                     train_tokens_uri=f"{remote}/train", val_tokens_uri=None, init_from_uri=f"{remote}/ckpt",
                     out_dir=f"{remote}/beta", seed=1, log=lambda _: None, extra_env=ONE_THREAD)
    assert m.counts["tokens_per_step"] == 4 * 2 * 64 and m.counts["steps"] == math.ceil(5000 / 512)
    assert m.uris["checkpoint"] == f"{remote}/beta/checkpoint"
    rows = read_metrics(f"{remote}/beta")
    assert rows[-1]["lr"] < rows[0]["lr"] and not any("val_loss" in r for r in rows)
    # continued from the checkpoint: the first loss is where phase 1 ended, not a fresh start near log(vocab)
    assert rows[0]["loss"] < alpha["manifest"].counts["final_loss"] + 0.5
    assert storage.exists(f"{remote}/beta/checkpoint/model.safetensors")


def test_bad_inputs_are_user_errors(corpus, tmp_path):
    phase = PhaseTrainConfig(tokens=1000, batch_size=2)
    common = dict(tokenizer_uri=corpus["tokenizer"], val_tokens_uri=None, init_from_uri=None, seed=0)
    long = ModelConfig(n_layers=1, hidden=64, ffn=64, n_heads=2, seq_len=100_000)  # longer than the data
    with pytest.raises(UserError, match="fewer than one sequence"):
        run_training(long, phase, TrainConfig(), train_tokens_uri=corpus["train"], out_dir=str(tmp_path / "a"), **common)
    with pytest.raises(UserError, match="accelerate config"):
        run_training(MICRO, phase, TrainConfig(accelerate_config="nope"), train_tokens_uri=corpus["train"],
                     out_dir=str(tmp_path / "b"), **common)
    with pytest.raises(UserError, match="meta.json"):  # not a token directory
        run_training(MICRO, phase, TrainConfig(), train_tokens_uri=str(tmp_path), out_dir=str(tmp_path / "c"), **common)


def test_failed_run_raises_with_output_tail():
    code = "import sys; print('loading'); print('boom: bad thing', file=sys.stderr); sys.exit(3)"
    lines: list[str] = []
    with pytest.raises(RuntimeError, match="(?s)exit code 3.*boom: bad thing"):
        _run_streaming([sys.executable, "-c", code], dict(os.environ), 30, lines.append)
    assert lines == ["loading", "boom: bad thing"]


def _alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a killed orphan may linger as a zombie until init reaps it


def test_timeout_kills_the_process_group(tmp_path):
    pid_file = tmp_path / "child.pid"
    code = ("import subprocess, sys, time; "
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            f"open({str(pid_file)!r}, 'w').write(str(p.pid)); print('working', flush=True); time.sleep(60)")
    lines: list[str] = []
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match="(?s)exceeded.*working"):
        _run_streaming([sys.executable, "-c", code], dict(os.environ), 3, lines.append)
    assert time.perf_counter() - t0 < 20 and lines == ["working"]
    grandchild = int(pid_file.read_text())
    for _ in range(50):
        if not _alive(grandchild):
            break
        time.sleep(0.1)
    assert not _alive(grandchild)  # the launcher's worker processes die with it


def test_accelerate_configs_resolve_and_parse():
    from accelerate.commands.config.config_args import load_config_from_file

    expected = {"cpu": ("NO", "no", 1), "single-gpu": ("NO", "bf16", 1), "multi-gpu": ("MULTI_GPU", "bf16", 8),
                "fsdp2": ("FSDP", "bf16", 8)}
    for name, (dist, mp, n) in expected.items():
        cfg = load_config_from_file(str(accelerate_config_path(name)))
        assert (cfg.distributed_type.value, cfg.mixed_precision, cfg.num_processes) == (dist, mp, n)
    assert load_config_from_file(str(accelerate_config_path("cpu"))).use_cpu
    fsdp = load_config_from_file(str(accelerate_config_path("fsdp2"))).fsdp_config
    assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer"
    assert accelerate_config_path(str(accelerate_config_path("cpu"))) == accelerate_config_path("cpu")  # a path as-is


def _weights(checkpoint: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    return load(storage.read_bytes(storage.join(checkpoint, "model.safetensors")))


@pytest.mark.parametrize("where", ["local", "remote"])
def test_killed_training_resumes_to_identical_weights(corpus, alpha, tmp_path, monkeypatch, where):
    """SIGKILL the trainer right after its step-8 resume checkpoint; the rerun continues from step 8 and ends with
    exactly the weights of the uninterrupted run (same data order, optimizer and RNG states). Remote: the out_dir is
    on object storage (fsspec memory://); the trainer's local work directory is the same for both attempts."""
    import signal

    from tasks.train import work_dir

    monkeypatch.setenv("SNOWCODER_CACHE", str(tmp_path / "cache"))
    out_dir = str(tmp_path / "train") if where == "local" else f"memory://resume-test-{tmp_path.name}/train"
    out = work_dir(out_dir)
    cfg = TrainConfig(timeout_s=300, checkpoint_every_s=0, checkpoint_every_steps=4)
    killed: list[str] = []

    def kill_after_step_8(line: str) -> None:
        if "step 8/24 | resume checkpoint saved" in line and not killed:
            killed.append(line)
            os.killpg(int((out / "trainer.pid").read_text()), signal.SIGKILL)

    kwargs = dict(tokenizer_uri=corpus["tokenizer"], train_tokens_uri=corpus["train"], val_tokens_uri=corpus["val"],
                  init_from_uri=None, out_dir=out_dir, seed=0, extra_env=ONE_THREAD)
    with pytest.raises(RuntimeError, match="exit code"):
        run_training(MICRO, ALPHA, cfg, log=kill_after_step_8, **kwargs)
    assert killed and (out / "resume" / "step.json").is_file() and not (out / "checkpoint").exists()

    lines: list[str] = []
    m = run_training(MICRO, ALPHA, cfg, log=lines.append, **kwargs)
    assert any("resumed from" in line and "at step 8/24" in line for line in lines)
    assert m.stats["result"]["resumed_from_step"] == 8 and m.counts["steps"] == 24
    assert not (out / "resume").exists()  # cleaned up once the phase is done
    assert m.uris["checkpoint"] == storage.join(out_dir, "checkpoint")
    if where == "remote":
        assert not out.exists()  # the local work directory goes once the outputs are uploaded
    ours, reference = _weights(m.uris["checkpoint"]), _weights(alpha["manifest"].uris["checkpoint"])
    assert ours.keys() == reference.keys()
    assert all(torch.equal(ours[k], reference[k]) for k in ours)
    rows = [r for r in read_metrics(m.uris["metrics"]) if "loss" in r]
    steps = [r["step"] for r in rows]
    assert steps == sorted(set(steps)) and steps[-1] == 24  # no step logged twice after the resume
    reference_rows = [r for r in read_metrics(alpha["manifest"].uris["metrics"]) if "loss" in r]
    assert [(r["step"], r["loss"]) for r in rows] == [(r["step"], r["loss"]) for r in reference_rows]  # bit-identical


def test_two_process_cpu_run_matches_one_process(corpus, alpha, tmp_path, monkeypatch):
    """DDP over gloo with 2 processes x 4 sequences sees the same global batches as 1 process x 8: the same loss
    curve within float tolerance (all-reduce order), and the same step count. Run as the pipeline runs it (the
    train stage task, logging into a phase's MLflow run): one MLflow run gets the curve, no rank makes another."""
    import logging

    from mlflow.tracking import MlflowClient

    from snowcoder import tracking
    from tasks.steps import train_task

    for key, value in ONE_THREAD.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # a store of its own (not a shared stack server)
    parent = tracking.start_parent(str(tmp_path / "root"), "ddp-test", {}, {})
    child = tracking.start_child(parent, "phase1-alpha")
    half = ALPHA.model_copy(update={"batch_size": 4})
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append
    prefect_logger = logging.getLogger("prefect")  # the task's run logger; it does not propagate to root
    prefect_logger.addHandler(handler)
    try:
        m = train_task("alpha", MICRO, half, TrainConfig(timeout_s=900, accelerate_config="multi-cpu"),
                       corpus["tokenizer"], corpus["train"], corpus["val"], None, str(tmp_path / "ddp"), 0, child)
    finally:
        prefect_logger.removeHandler(handler)
    assert m.counts["world_size"] == 2 and m.counts["steps"] == alpha["manifest"].counts["steps"]
    ours = [r["loss"] for r in read_metrics(m.uris["metrics"]) if "loss" in r]
    ref = [r["loss"] for r in read_metrics(alpha["manifest"].uris["metrics"]) if "loss" in r]
    assert len(ours) == len(ref) and max(abs(a - b) for a, b in zip(ours, ref)) < 2e-3, (ours, ref)
    assert sum("params:" in r.getMessage() for r in records) == 1  # rank 0 alone reports
    client = MlflowClient(tracking_uri=parent.tracking_uri)
    runs = client.search_runs([parent.experiment_id])
    assert sorted(r.info.run_id for r in runs) == sorted([parent.run_id, child.run_id])  # no run per rank
    assert [h.value for h in client.get_metric_history(child.run_id, "loss")] == pytest.approx(ours)
