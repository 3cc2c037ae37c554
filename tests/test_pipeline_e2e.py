"""End to end: the `micro` preset through the real CLI (Prefect's local ephemeral server, MLflow on SQLite)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("e2e")
    run_root = base / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(PREFECT_HOME=str(base / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               SNOWCODER_CACHE=os.environ.get("SNOWCODER_CACHE", str(Path.home() / ".cache" / "snowcoder")))
    proc = subprocess.run(
        [sys.executable, "-m", "snowcoder.cli", "run", "--preset", "micro", "--run-root", str(run_root)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-6000:]
    return run_root, proc


def test_last_line_names_summary_with_three_phases(micro_run):
    run_root, proc = micro_run
    last = proc.stdout.strip().splitlines()[-1]
    assert last == str(run_root / "summary.json")
    summary = json.loads(Path(last).read_text())
    assert [p["phase"] for p in summary["phases"]] == ["alpha", "beta", "final"]
    for p in summary["phases"]:
        assert 0.0 <= p["humaneval_pass@1"] <= 1.0
        assert 0.0 < p["heldout_loss"] < 20.0
        assert p["tokens_trained"] > 0
    # the table is printed before the last line
    assert "HumanEval pass@1" in proc.stdout
    # every crawled file is kept or excluded with a reason
    data = summary["data"]
    assert data["crawled_files"] >= data["after_filter"] >= data["after_dedup"] >= data["after_decontamination"] > 0


def test_mlflow_parent_with_child_per_phase(micro_run):
    from mlflow.tracking import MlflowClient

    run_root, _ = micro_run
    summary = json.loads((run_root / "summary.json").read_text())
    client = MlflowClient(tracking_uri=summary["mlflow"]["tracking_uri"])
    parent = client.get_run(summary["mlflow"]["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["prefect.flow_run_id"]
    runs = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(r.info.run_name for r in runs) == ["phase1-alpha", "phase2-beta", "phase3-final"]
    for phase in ("alpha", "beta", "final"):
        assert f"{phase}.humaneval_pass_at_1" in parent.data.metrics
        assert f"{phase}.heldout_loss" in parent.data.metrics
    history = client.get_metric_history(parent.info.run_id, "heldout_loss")
    assert sorted(m.step for m in history) == [0, 1, 2]
    alpha = next(r for r in runs if r.info.run_name == "phase1-alpha")
    assert len(client.get_metric_history(alpha.info.run_id, "loss")) >= 2  # the training loss curve


def test_checkpoints_load_and_generate(micro_run):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_root, _ = micro_run
    summary = json.loads((run_root / "summary.json").read_text())
    for p in summary["phases"]:
        tok = AutoTokenizer.from_pretrained(p["checkpoint"])
        model = AutoModelForCausalLM.from_pretrained(p["checkpoint"])
        ids = tok("def add(a, b):", return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=8, do_sample=False)
        assert out.shape[1] > ids["input_ids"].shape[1]
        assert isinstance(tok.decode(out[0]), str)
