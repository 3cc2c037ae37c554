"""Model Registry: each phase's HF export is registered with an alias per phase, and loads back from the registry."""
from __future__ import annotations

import mlflow
import pandas as pd
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from model.config import PRESETS, llama_config
from snowcoder import storage, tracking
from snowcoder.config import TokenizerConfig
from tasks.tokenize import train_tokenizer


def _export(path, seed: int, tok_dir) -> None:
    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(tok_dir)
    LlamaForCausalLM(llama_config(PRESETS["micro"]["model"], len(tok), 0, 0, 1)).save_pretrained(path)
    tok.save_pretrained(path)


def test_phase_exports_are_registered_with_aliases_and_load_back(tmp_path, monkeypatch):
    texts = [f"def f{i}(x):\n    return x + {i}\n" for i in range(40)]
    docs = storage.write_shards(pd.DataFrame({"content": texts}), str(tmp_path / "docs"), "train", 100)
    train_tokenizer(TokenizerConfig(vocab_size=300), docs, str(tmp_path / "tok"))
    root = str(tmp_path / "run")
    parent = tracking.start_parent(root, "registry-test", {}, {})
    versions = {}
    for seed, phase in enumerate(["alpha", "beta", "final", "beta"]):  # beta twice: the alias moves to the newest
        _export(tmp_path / f"export-{seed}", seed, tmp_path / "tok")
        child = tracking.start_child(parent, f"phase-{phase}")
        versions[phase] = tracking.register_model(child, str(tmp_path / f"export-{seed}"), "snowcoder-test", phase,
                                                  tags={"phase": phase})
    assert versions == {"alpha": "1", "beta": "4", "final": "3"}

    # monkeypatch, not mlflow.set_tracking_uri: that also sets MLFLOW_TRACKING_URI for every later test
    monkeypatch.setenv("MLFLOW_TRACKING_URI", parent.tracking_uri)
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias("snowcoder-test", "beta").version) == "4"
    for phase, seed in (("alpha", 0), ("final", 2), ("beta", 3)):
        local = mlflow.artifacts.download_artifacts(f"models:/snowcoder-test@{phase}", dst_path=str(tmp_path / phase))
        model = AutoModelForCausalLM.from_pretrained(local)
        tok = AutoTokenizer.from_pretrained(local)
        expected = LlamaForCausalLM.from_pretrained(tmp_path / f"export-{seed}")
        assert torch.equal(model.model.embed_tokens.weight, expected.model.embed_tokens.weight)
        assert tok.eos_token == "<|endoftext|>"


def test_an_export_already_registered_is_not_uploaded_again(tmp_path):
    """A re-run that reuses a finished training registers nothing new: the alias moves to the version whose digest
    matches, and the new run gets no model artifacts."""
    from mlflow.tracking import MlflowClient

    texts = [f"def g{i}(x):\n    return x - {i}\n" for i in range(40)]
    docs = storage.write_shards(pd.DataFrame({"content": texts}), str(tmp_path / "docs"), "train", 100)
    train_tokenizer(TokenizerConfig(vocab_size=300), docs, str(tmp_path / "tok"))
    _export(tmp_path / "export", 0, tmp_path / "tok")
    parent = tracking.start_parent(str(tmp_path / "run"), "registry-reuse", {}, {})
    first, again = (tracking.start_child(parent, f"phase-alpha-{i}") for i in range(2))
    v1 = tracking.register_model(first, str(tmp_path / "export"), "reuse-test", "alpha", digest="d1")
    v2 = tracking.register_model(again, str(tmp_path / "export"), "reuse-test", "alpha", digest="d1")
    v3 = tracking.register_model(again, str(tmp_path / "export"), "reuse-test", "alpha", digest="d2")
    assert (v1, v2, v3) == ("1", "1", "2")
    client = MlflowClient(parent.tracking_uri)
    assert str(client.get_model_version_by_alias("reuse-test", "alpha").version) == "2"
    assert [a.path for a in client.list_artifacts(first.run_id)] == ["model"]
