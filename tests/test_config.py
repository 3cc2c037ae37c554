import json
import math

import pytest
import yaml

from snowcoder.cli import main
from snowcoder.config import PRESETS, UserError, load_config


def test_presets_validate_and_differ():
    digests = {name: load_config(name).digest() for name in PRESETS}
    assert len(set(digests.values())) == len(PRESETS)


def test_paper_preset_is_the_paper_model_and_schedule():
    c = load_config("paper-1.3b")
    m = c.model
    assert (m.n_layers, m.hidden, m.ffn, m.n_heads, m.seq_len, m.tie_embeddings) == (24, 2048, 5632, 16, 8192, True)
    assert c.tokenizer.vocab_size == 64_000
    assert c.train.alpha.schedule == "cosine" and c.train.alpha.lr == 5.3e-4 and c.train.alpha.min_lr == 5.3e-5
    assert c.train.alpha.warmup_steps == 600
    assert c.train.beta.schedule == "rewarm-linear" and c.train.beta.warmup_steps == 1000 and c.train.beta.repeat == 4
    # 512 sequences of 8192 tokens per optimizer step on 8 devices
    assert c.train.alpha.batch_size * c.train.alpha.grad_accum * 8 == 512


def test_paper_preset_token_horizons_schedules_and_mixtures_match_the_recipe():
    """recipe.md §1 and §5: 500B / 50B / 5B tokens; phase 2 = 12.5B unique top tokens x 4, re-warmed 0 -> 5.3e-4
    over 1000 steps then linearly to 0; phase 1 warms up over 600 steps, cosine 5.3e-4 -> 5.3e-5 over ~119k steps;
    phase 3 raises Python to ~50%."""
    from model.schedules import lr_at

    c = load_config("paper-1.3b")
    t = c.train
    assert (t.alpha.tokens, t.beta.tokens, t.final.tokens) == (500e9, 50e9, 5e9)
    assert t.beta.tokens / t.beta.repeat == 12.5e9
    per_step = 512 * c.model.seq_len
    steps = {p: math.ceil(getattr(t, p).tokens / per_step) for p in ("alpha", "beta")}
    assert steps == {"alpha": 119_210, "beta": 11_921}
    a = dict(schedule=t.alpha.schedule, lr=t.alpha.lr, min_lr=t.alpha.min_lr, warmup_steps=t.alpha.warmup_steps)
    assert lr_at(599, steps["alpha"], **a) == pytest.approx(5.3e-4 * 600 / 601)
    assert lr_at(600, steps["alpha"], **a) == pytest.approx(5.3e-4)
    assert lr_at(steps["alpha"], steps["alpha"], **a) == pytest.approx(5.3e-5)
    b = dict(schedule=t.beta.schedule, lr=t.beta.lr, min_lr=t.beta.min_lr, warmup_steps=t.beta.warmup_steps)
    assert lr_at(0, steps["beta"], **b) < 1e-6 and lr_at(1000, steps["beta"], **b) == pytest.approx(5.3e-4)
    assert lr_at(steps["beta"], steps["beta"], **b) == 0.0
    assert c.synth.language_shares == {"python": 0.5}
    assert c.synth.endpoint and c.synth.endpoint_model == "meta-llama/Llama-3.1-70B-Instruct"  # served, not in-process
    assert c.train.order == "language-repo"  # files grouped by language, then repository (Table 3)


def test_yaml_overrides_merge_into_preset(tmp_path):
    f = tmp_path / "o.yaml"
    f.write_text(yaml.safe_dump({"model": {"n_layers": 3}, "train": {"beta": {"repeat": 2}}}))
    c = load_config("micro", f)
    assert c.model.n_layers == 3 and c.model.hidden == 64  # rest of the micro preset kept
    assert c.train.beta.repeat == 2 and c.train.beta.schedule == "rewarm-linear"
    assert c.digest() != load_config("micro").digest()


def test_yaml_can_select_preset(tmp_path):
    f = tmp_path / "o.yaml"
    f.write_text("preset: micro\neval: {limit: 2}\n")
    c = load_config("tiny", f)
    assert c.preset == "micro" and c.eval.limit == 2 and c.model.hidden == 64


def test_run_root_not_in_digest():
    assert load_config("micro", run_root="/a").digest() == load_config("micro", run_root="s3://b/c").digest()


@pytest.mark.parametrize(
    "content, message",
    [("model: {n_layers: 0}", "model.n_layers"), ("nonsense_field: 1", "nonsense_field"), ("[1, 2", "not valid YAML"),
     ("- a\n- b", "mapping")],
)
def test_bad_config_files_give_clear_errors(tmp_path, content, message):
    f = tmp_path / "bad.yaml"
    f.write_text(content)
    with pytest.raises(UserError, match=message):
        load_config("tiny", f)


def test_cli_unknown_preset_is_a_clean_error(capsys):
    assert main(["run", "--preset", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'nope'" in err and "Traceback" not in err


def test_cli_missing_and_empty_source(tmp_path, capsys):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"data": {"sources": [str(tmp_path / "missing")]}}))
    assert main(["run", "--preset", "micro", "--config", str(f), "--run-root", str(tmp_path / "r")]) == 2
    assert "does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no code here")
    f.write_text(yaml.safe_dump({"data": {"sources": [str(empty)]}}))
    assert main(["run", "--preset", "micro", "--config", str(f), "--run-root", str(tmp_path / "r")]) == 2
    assert "holds no files" in capsys.readouterr().err


def test_cli_config_prints_resolved_config(capsys):
    assert main(["config", "--preset", "micro"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["config"]["preset"] == "micro" and len(out["digest"]) == 16


def test_all_benchmarks_adds_the_evaluated_ones_to_the_decontaminated_ones():
    cfg = load_config("tiny", overrides={"eval": {"benchmarks": ["humaneval", {"name": "mbpp", "path": "/data/mbpp.jsonl"}]}})
    merged = cfg.all_benchmarks()
    assert [b.name for b in merged.benchmarks] == ["humaneval", "mbpp"]
    assert merged.ngram_size == cfg.decontam.ngram_size and [b.name for b in cfg.decontam.benchmarks] == ["humaneval"]
    assert load_config("tiny").all_benchmarks() == load_config("tiny").decontam  # the default: nothing to add
