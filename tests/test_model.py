"""Model config, parameter/FLOP counts, LR schedules and token windows (model/*.py)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from transformers import LlamaForCausalLM

from model.config import PRESETS, flops_per_token, llama_config, param_count
from model.data import TokenWindows, batch_indices
from model.schedules import lr_at


# --------------------------------------------------------------------------- config
def test_paper_model_has_about_1_36b_params():
    p = PRESETS["paper-1.3b"]
    cfg = llama_config(p["model"], p["vocab_size"], 0, 0, 1)
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size) == (24, 2048, 5632)
    assert cfg.num_attention_heads == cfg.num_key_value_heads == 16 and cfg.tie_word_embeddings
    n = param_count(cfg)
    assert 1.35e9 < n < 1.37e9  # recipe.md §5: 1.233B in layers + 131M tied embeddings
    # 6N + attention term at seq 8192: 6 * 1.364e9 + 12 * 24 * 2048 * 8192
    assert flops_per_token(cfg, 8192) == pytest.approx(6 * n + 12 * 24 * 2048 * 8192)


def test_paper_preset_builds_a_1_36b_model_on_the_meta_device():
    """The real module, built without memory: its parameter count is the formula's, about 1.36B (recipe.md §5)."""
    from snowcoder.config import load_config

    cfg = load_config("paper-1.3b")
    lcfg = llama_config(cfg.model.model_dump(mode="json"), cfg.tokenizer.vocab_size, 0, 0, 1)
    with torch.device("meta"):
        lm = LlamaForCausalLM(lcfg)
    n = sum(p.numel() for p in lm.parameters())  # tied: the output head is the embedding, counted once
    assert lm.lm_head.weight is lm.model.embed_tokens.weight
    assert n == param_count(lcfg) and 1.35e9 < n < 1.37e9
    assert all(p.device.type == "meta" for p in lm.parameters())


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("n_kv", [None, 1])
def test_param_count_matches_the_real_model(tie, n_kv):
    model = dict(PRESETS["micro"]["model"], tie_embeddings=tie, n_kv_heads=n_kv)
    cfg = llama_config(model, 300, 0, 0, 1)
    lm = LlamaForCausalLM(cfg)
    assert param_count(cfg) == sum(p.numel() for p in lm.parameters())
    assert lm.config._attn_implementation == "sdpa"
    assert cfg.num_key_value_heads == (n_kv or cfg.num_attention_heads)
    # untied: the output head counts in the FLOPs, the input embedding lookup does not
    expected_n = param_count(cfg) - (0 if tie else 300 * cfg.hidden_size)
    assert flops_per_token(cfg, 128) == pytest.approx(6 * expected_n + 12 * 2 * 64 * 128)


def test_llama_config_rejects_bad_shapes():
    with pytest.raises(ValueError):
        llama_config(dict(PRESETS["micro"]["model"], n_heads=3), 300, 0, 0, 1)
    with pytest.raises(ValueError):
        llama_config(dict(PRESETS["micro"]["model"], dropout=0.1), 300, 0, 0, 1)


# --------------------------------------------------------------------------- schedules
def test_cosine_schedule():
    kw = dict(schedule="cosine", lr=1e-3, min_lr=1e-4, warmup_steps=10)
    assert lr_at(0, 100, **kw) == pytest.approx(1e-3 / 11)  # warmup starts near 0 but already learns
    assert lr_at(9, 100, **kw) == pytest.approx(1e-3 * 10 / 11)
    assert lr_at(10, 100, **kw) == pytest.approx(1e-3)  # peak right after warmup
    assert lr_at(55, 100, **kw) == pytest.approx((1e-3 + 1e-4) / 2)  # half-way through the decay
    assert lr_at(100, 100, **kw) == pytest.approx(1e-4)
    assert lr_at(500, 100, **kw) == pytest.approx(1e-4)  # floor holds past the horizon
    values = [lr_at(s, 100, **kw) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_rewarm_linear_schedule():
    kw = dict(schedule="rewarm-linear", lr=5.3e-4, min_lr=5.3e-5, warmup_steps=1000)  # paper phase 2
    assert lr_at(0, 11_900, **kw) < 1e-6
    assert lr_at(1000, 11_900, **kw) == pytest.approx(5.3e-4)
    assert lr_at(1000 + 10_900 // 2, 11_900, **kw) == pytest.approx(5.3e-4 / 2, rel=1e-3)
    assert lr_at(11_900, 11_900, **kw) == 0.0  # decays to 0, not to min_lr
    assert 0 < lr_at(11_899, 11_900, **kw) < 1e-6


def test_linear_constant_and_short_runs():
    assert lr_at(0, 10, schedule="linear", lr=1.0, min_lr=0.5, warmup_steps=5) == 1.0  # no warmup
    assert lr_at(5, 10, schedule="linear", lr=1.0, min_lr=0.5, warmup_steps=5) == pytest.approx(0.5)
    assert lr_at(7, 10, schedule="constant", lr=0.3, min_lr=0.0, warmup_steps=5) == 0.3
    # warmup is capped at half the run: a 4-step run still reaches its peak
    assert lr_at(2, 4, schedule="cosine", lr=1.0, min_lr=0.0, warmup_steps=100) == pytest.approx(1.0)
    assert lr_at(0, 1, schedule="rewarm-linear", lr=1.0, min_lr=0.0, warmup_steps=10) == 1.0
    with pytest.raises(ValueError):
        lr_at(0, 10, schedule="step", lr=1.0, min_lr=0.0, warmup_steps=0)


# --------------------------------------------------------------------------- data
def write_tokens(path, n: int, dtype: str = "uint16") -> np.ndarray:
    path.mkdir(parents=True, exist_ok=True)
    arr = (np.arange(n) % 5000).astype(dtype)
    arr.tofile(path / "tokens.bin")
    (path / "meta.json").write_text(json.dumps({"dtype": dtype, "n_tokens": n}))
    return arr


@pytest.mark.parametrize("dtype", ["uint16", "uint32"])
def test_windows_tile_the_tokens(tmp_path, dtype):
    arr = write_tokens(tmp_path, 1001, dtype)
    data = TokenWindows(tmp_path, seq_len=100)
    assert len(data) == 10
    x, y = data.batch([0, 9])
    assert x.shape == y.shape == (2, 100) and x.dtype == torch.int64
    assert torch.equal(x[0], torch.from_numpy(arr[:100].astype(np.int64)))
    assert torch.equal(y[0], torch.from_numpy(arr[1:101].astype(np.int64)))  # targets shifted by one
    assert y[1, -1].item() == arr[1000]  # the last token is a target
    with pytest.raises(IndexError):
        data[10]
    assert len(TokenWindows(tmp_path, seq_len=1000)) == 1
    assert len(TokenWindows(tmp_path, seq_len=1001)) == 0


def test_meta_mismatch_is_caught(tmp_path):
    write_tokens(tmp_path, 100)
    (tmp_path / "meta.json").write_text(json.dumps({"dtype": "uint16", "n_tokens": 99}))
    with pytest.raises(ValueError):
        TokenWindows(tmp_path, 10)


def take(it, k):
    return [next(it).tolist() for _ in range(k)]


def test_batch_indices_epochs_ranks_and_resume():
    n, bs = 10, 4
    stream = take(batch_indices(n, bs, seed=1), 5)  # 20 indices = exactly two epochs
    flat = sum(stream, [])
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))
    assert flat[:10] != flat[10:]  # a fresh permutation per epoch
    assert take(batch_indices(n, bs, seed=1), 5) == stream  # deterministic
    assert take(batch_indices(n, bs, seed=2), 5) != stream
    assert take(batch_indices(n, bs, seed=1, skip_batches=3), 2) == stream[3:]  # resume skips k batches
    # two ranks split each global batch of 2 x 2 between them, without overlap
    r0, r1 = take(batch_indices(n, 2, seed=1, rank=0, world_size=2), 5), take(batch_indices(n, 2, seed=1, rank=1, world_size=2), 5)
    assert [a + b for a, b in zip(r0, r1)] == stream
    with pytest.raises(ValueError):
        next(batch_indices(0, bs, seed=1))


def test_param_count_formula_scales():
    p = PRESETS["tiny"]
    cfg = llama_config(p["model"], p["vocab_size"], 0, 0, 1)
    assert math.isclose(param_count(cfg), 5_261_568)  # this-machine.md §6: "5.26M"


# --------------------------------------------------------------------------- trainer options
def _loss_and_grads(model, x):
    from model.train import causal_lm_loss

    model.zero_grad(set_to_none=True)
    loss = causal_lm_loss(model, x[:, :-1], x[:, 1:])
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("option", ["activation_checkpointing", "compile"])
def test_trainer_options_keep_loss_gradients_and_parameter_names(option):
    """Activation checkpointing recomputes the same math (identical on CPU); torch.compile fuses it (close); neither
    renames a parameter, so checkpoints and resume states are interchangeable with an eager run's."""
    import copy

    from model.train import apply_options

    torch.manual_seed(0)
    eager = LlamaForCausalLM(llama_config(PRESETS["micro"]["model"], 300, 0, 0, 1))
    other = copy.deepcopy(eager)
    applied = apply_options(other, **{"activation_checkpointing": False, "compile": False, option: True})
    assert len(applied) == 1
    other.train(), eager.train()
    x = torch.randint(0, 300, (2, 33))
    loss_a, grads_a = _loss_and_grads(eager, x)
    loss_b, grads_b = _loss_and_grads(other, x)
    assert list(other.state_dict()) == list(eager.state_dict())
    tol = dict(rtol=0, atol=0) if option == "activation_checkpointing" else dict(rtol=1e-4, atol=1e-5)
    assert loss_b == pytest.approx(loss_a, abs=tol["atol"])
    for name, g in grads_a.items():
        torch.testing.assert_close(grads_b[name], g, **tol)
