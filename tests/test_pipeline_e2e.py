"""End to end: the `micro` preset through the real CLI (Prefect's local ephemeral server, MLflow on SQLite)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def cli_env(base: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "SNOWCODER_"))}
    env.update(PREFECT_HOME=str(base / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               SNOWCODER_CACHE=os.environ.get("SNOWCODER_CACHE", str(Path.home() / ".cache" / "snowcoder")), **extra)
    return env


def run_cli(run_root: Path, *args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "snowcoder.cli", "run", "--preset", "micro", "--run-root", str(run_root), *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    if check:
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-6000:]
    return proc


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="module")
def micro_run(base_dir):
    run_root = base_dir / "run"
    return run_root, run_cli(run_root, env=cli_env(base_dir))


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
    table = json.loads(Path(client.download_artifacts(parent.info.run_id, "phase-comparison.json")).read_text())
    assert [row[table["columns"].index("phase")] for row in table["data"]] == ["alpha", "beta", "final"]
    assert "humaneval_pass@1" in table["columns"] and "heldout_loss" in table["columns"]
    # each phase's export registered, alias = phase, version made by that phase's run
    assert summary["mlflow"]["registered_models"] == {p: f"models:/snowcoder@{p}" for p in ("alpha", "beta", "final")}
    for run in runs:
        phase = run.data.tags["snowcoder.phase"]
        assert client.get_model_version_by_alias("snowcoder", phase).run_id == run.info.run_id
    # the annotator: its validation and its HF export, registered from the phase-2 run
    beta = next(r for r in runs if r.info.run_name == "phase2-beta")
    assert "benchmark_auc_humaneval" in {k.split(".", 1)[-1] for k in beta.data.metrics}
    assert client.get_model_version_by_alias("snowcoder-annotator", "phase2").run_id == beta.info.run_id
    exported = {a.path for a in client.list_artifacts(beta.info.run_id, "annotator/model")}
    assert {"annotator/model/config.json", "annotator/model/model.safetensors"} <= exported


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


def kill_session(sid: int) -> None:
    """SIGKILL every process left in session `sid` (e.g. an orphaned ephemeral Prefect server)."""
    import signal

    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.getsid(int(pid)) == sid:
                    os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


# ------------------------------------------------------------------ resume and reuse (same run root, same config)
PHASE1_DATA = ("crawl", "filter", "dedup", "decontaminate", "split", "tokenizer", "shards-train", "shards-heldout",
               "tokens", "tokens-heldout")
# phase 1: 10 data stages + train + eval; phase 2: annotate, select, tokenize, pack, train, eval; phase 3: synthesize,
# tokenize, pack, train, eval
N_STAGE_TASKS = 12 + 6 + 5


def manifest_digests(run_root: Path, phase: str, stages) -> dict[str, str]:
    return {s: json.loads((run_root / phase / s / "manifest.json").read_text())["digest"] for s in stages}


def test_identical_rerun_reuses_every_stage(micro_run, base_dir):
    run_root, first = micro_run
    before = manifest_digests(run_root, "phase1", PHASE1_DATA)
    again = run_cli(run_root, env=cli_env(base_dir))
    summary = json.loads((run_root / "summary.json").read_text())
    for phase in summary["phases"]:
        assert set(phase["stages"].values()) == {"reused"}, phase["stages"]
    # from Prefect's recorded task states: every stage task finished Cached, none ran, no trainer was launched
    log = again.stdout + again.stderr
    assert log.count("Finished in state Cached(") == N_STAGE_TASKS
    assert "Finished in state Completed()" not in "".join(l for l in log.splitlines(True) if "Task run" in l)
    assert "launch:" not in log
    assert manifest_digests(run_root, "phase1", PHASE1_DATA) == before
    from mlflow.tracking import MlflowClient  # the reused annotator was not uploaded or registered again

    client = MlflowClient(tracking_uri=summary["mlflow"]["tracking_uri"])
    digest = client.get_model_version_by_alias("snowcoder-annotator", "phase2").tags["snowcoder.digest"]
    versions = client.search_model_versions("name='snowcoder-annotator'")
    assert sum(v.tags.get("snowcoder.digest") == digest for v in versions) == 1
    assert [p["heldout_loss"] for p in summary["phases"]] == [
        p["heldout_loss"] for p in json.loads(first.stdout.strip().splitlines()[-1] and
                                              (run_root / "summary.json").read_text())["phases"]]


def test_phase3_change_reruns_only_phase3(micro_run, base_dir):
    run_root, _ = micro_run
    override = base_dir / "phase3-only.yaml"
    override.write_text("synth:\n  max_new_tokens: 150\n")
    run_cli(run_root, "--config", str(override), env=cli_env(base_dir))
    summary = json.loads((run_root / "summary.json").read_text())
    stages = {p["phase"]: p["stages"] for p in summary["phases"]}
    assert set(stages["alpha"].values()) == set(stages["beta"].values()) == {"reused"}
    assert stages["final"]["synthesize"] == "ran"
    # what follows synthesis re-runs only when its output changed (with no synthetic file kept, the mixture is the
    # phase-2 data either way and may be reused)
    synth = json.loads((run_root / "phase3" / "synthesize" / "manifest.json").read_text())
    if synth["counts"].get("kept", 0) > 0:
        assert stages["final"]["tokens"] == "ran"


def test_run_killed_in_a_data_stage_resumes_identically(micro_run, base_dir):
    """SIGKILL (fault injection) in the middle of near-dedup, after its first signature shard; the rerun reuses
    crawl, filter and the finished signature shard, redoes the rest and ends with exactly the data of the
    uninterrupted run."""
    reference, _ = micro_run
    run_root = base_dir / "killed-data"
    log = base_dir / "killed-data.log"
    with log.open("w") as out:
        killed = subprocess.Popen(
            [sys.executable, "-m", "snowcoder.cli", "run", "--preset", "micro", "--run-root", str(run_root),
             "--until", "data"], cwd=REPO, env=cli_env(base_dir, SNOWCODER_DEDUP_FAILPOINT="signatures:1"), stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True)
        killed.wait(timeout=600)
    kill_session(killed.pid)  # what a SIGKILL leaves behind (Prefect's ephemeral server) goes with its session
    assert killed.returncode == -9, log.read_text()[-3000:]
    assert (run_root / "phase1" / "dedup").is_dir() and not (run_root / "phase1" / "dedup" / "manifest.json").exists()
    run_cli(run_root, "--until", "data", env=cli_env(base_dir))
    summary = json.loads((run_root / "summary.json").read_text())
    assert {s: summary["phases"][0]["stages"][s] for s in ("crawl", "filter", "dedup")} == \
        {"crawl": "reused", "filter": "reused", "dedup": "ran"}
    dedup = json.loads((run_root / "phase1" / "dedup" / "manifest.json").read_text())
    assert dedup["stats"]["work"]["signature_shards_reused"] >= 1 and dedup["digest"] == json.loads(
        (reference / "phase1" / "dedup" / "manifest.json").read_text())["digest"]
    assert manifest_digests(run_root, "phase1", PHASE1_DATA) == manifest_digests(reference, "phase1", PHASE1_DATA)
    def docs(root: Path) -> list[str]:
        split = json.loads((root / "phase1" / "split" / "manifest.json").read_text())["uris"]
        return sorted(pd.concat(pd.read_parquet(u, columns=["doc_id"]) for u in split["train"] + split["heldout"]).doc_id)

    assert docs(run_root) == docs(reference)  # no document lost or duplicated


def test_run_killed_in_training_resumes_from_its_checkpoint(micro_run, base_dir):
    """SIGKILL the whole CLI process group after the trainer saved a resume checkpoint; the orphaned trainer stops
    by itself, the rerun continues from the checkpoint and ends with the uninterrupted run's weights."""
    import signal
    import time

    import torch
    from safetensors.torch import load_file

    reference, _ = micro_run
    run_root = base_dir / "killed-train"
    override = base_dir / "checkpoints.yaml"
    override.write_text("train:\n  checkpoint_every_s: 0\n  checkpoint_every_steps: 5\n")
    args = [sys.executable, "-m", "snowcoder.cli", "run", "--preset", "micro", "--run-root", str(run_root),
            "--config", str(override), "--until", "train-alpha"]
    proc = subprocess.Popen(args, cwd=REPO, env=cli_env(base_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "resume checkpoint saved" in line:
            kill_session(proc.pid)  # the CLI, its ephemeral Prefect server; not the trainer (own session)
            break
    proc.wait(timeout=60)
    proc.stdout.close()
    assert proc.returncode == -9, "".join(seen[-40:])
    train_dir = run_root / "phase1" / "train"
    assert (train_dir / "resume" / "step.json").is_file() and not (train_dir / "manifest.json").exists()
    trainer = int((train_dir / "trainer.pid").read_text())
    deadline = time.time() + 60
    while Path(f"/proc/{trainer}").exists() and time.time() < deadline:
        time.sleep(0.2)  # the orphaned trainer notices its orchestrator is gone within a step
    assert not Path(f"/proc/{trainer}").exists()

    resumed = run_cli(run_root, "--config", str(override), "--until", "train-alpha", env=cli_env(base_dir))
    assert "resumed from" in resumed.stdout + resumed.stderr
    ours = load_file(str(train_dir / "checkpoint" / "model.safetensors"))
    ref = load_file(str(reference / "phase1" / "train" / "checkpoint" / "model.safetensors"))
    assert ours.keys() == ref.keys() and all(torch.equal(ours[k], ref[k]) for k in ours)


def test_data_phase_on_dask_equals_the_default_run(micro_run, base_dir):
    """The phase-1 data with its per-shard tasks on a local Dask cluster (prefect-dask) is the default run's data."""
    reference, _ = micro_run
    run_root = base_dir / "dask"
    override = base_dir / "dask.yaml"
    override.write_text("data:\n  task_runner: 'dask:2'\n")
    run_cli(run_root, "--config", str(override), "--until", "data", env=cli_env(base_dir))
    for stage in ("filter", "decontaminate"):
        stats = json.loads((run_root / "phase1" / stage / "manifest.json").read_text())["stats"]
        assert stats["task_runner"] == "dask:2"
    assert manifest_digests(run_root, "phase1", PHASE1_DATA) == manifest_digests(reference, "phase1", PHASE1_DATA)
