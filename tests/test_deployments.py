"""The platform as users run it: the real local stack (Prefect server, MLflow server, S3 on moto), the deployments of
deployments/prefect.yaml registered by `snowcoder deploy`, a process worker, runs triggered through the Prefect API,
and the quickstart notebook. Slow: starts servers (shared through the session fixture `stack` in conftest.py)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
DEPLOYMENTS = {"snowcoder/pipeline", "snowcoder-data/data", "snowcoder-data/data-weekly-refresh",
               "snowcoder-annotate/annotate", "snowcoder-synthesize/synthesize", "snowcoder-train/train",
               "snowcoder-evaluate/evaluate"}


@pytest.fixture(scope="module")
def deployed(stack, tmp_path_factory):
    """`snowcoder deploy` against the stack, then a process worker for the snowcoder-process pool."""
    home = tmp_path_factory.mktemp("deploy")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "SNOWCODER_", "AWS_"))}
    env.update(stack.env, PREFECT_HOME=str(home / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               SNOWCODER_HOME=str(REPO), PYTHONPATH=str(REPO),
               SNOWCODER_CACHE=os.environ.get("SNOWCODER_CACHE", str(Path.home() / ".cache" / "snowcoder")))
    proc = subprocess.run([sys.executable, "-m", "snowcoder.cli", "deploy"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = open(home / "worker.log", "w")
    worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", "snowcoder-process",
                               "--limit", "1"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        yield env
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=10)
        log.close()


@pytest.fixture
def prefect_api(deployed):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: deployed["PREFECT_API_URL"]}):
        yield deployed


def test_deployments_have_typed_schemas_and_reject_bad_parameters(prefect_api):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        deployments = client.read_deployments()
        flows = {f.id: f.name for f in client.read_flows()}
        names = {f"{flows[d.flow_id]}/{d.name}" for d in deployments}
        assert DEPLOYMENTS <= names
        dep = client.read_deployment_by_name("snowcoder/pipeline")
        assert dep.enforce_parameter_schema and dep.work_pool_name == "snowcoder-process"
        schema = dep.parameter_openapi_schema
        assert schema["properties"]["preset"]["enum"] == ["tiny", "micro", "paper-1.3b"]
        assert schema["properties"]["preset"]["description"]
        defs = schema["definitions"]
        lr = defs["PhaseTrainOverrides"]["properties"]["lr"]
        assert lr["description"] and lr["anyOf"][0]["exclusiveMinimum"] == 0
        threshold = defs["DedupOverrides"]["properties"]["threshold"]
        assert threshold["description"] and threshold["anyOf"][0]["exclusiveMaximum"] == 1
        for section in ("data", "filter", "dedup", "train", "annotate", "synth", "eval"):
            assert schema["definitions"]["PipelineOverrides"]["properties"][section]["description"]

        weekly = client.read_deployment_by_name("snowcoder-data/data-weekly-refresh")
        assert weekly.schedules and weekly.schedules[0].schedule.cron == "0 3 * * 1"
        assert weekly.schedules[0].schedule.timezone == "Europe/Zurich"
        assert weekly.parameters["refresh_sources"] is True

        before = len(client.read_flow_runs())
        for bad in ({"overrides": {"train": {"alpha": {"lr": -1}}}}, {"overrides": {"dedup": {"threshold": 2}}},
                    {"preset": "huge"}):
            with pytest.raises(Exception) as err:
                client.create_flow_run_from_deployment(dep.id, parameters=bad)
            assert "409" in str(err.value) or "Validation" in str(err.value) or "validation" in str(err.value)
        assert len(client.read_flow_runs()) == before  # rejected before any run existed


def test_pipeline_deployment_runs_on_s3_and_tracks_to_the_mlflow_server(prefect_api, stack):
    import boto3
    import s3fs
    from mlflow import MlflowClient
    from prefect.deployments import run_deployment

    run_root = "s3://snowcoder-runs/deployed-micro"
    flow_run = run_deployment("snowcoder/pipeline", timeout=1500, parameters={
        "preset": "micro", "overrides": {"eval": {"limit": 4}, "synth": {"n_seeds": 1}}, "run_root": run_root})
    assert flow_run.state.is_completed(), flow_run.state

    s = stack.settings
    fs = s3fs.S3FileSystem(key=s.access_key, secret=s.secret_key, client_kwargs={"endpoint_url": s.s3_url})
    summary = json.loads(fs.cat(f"{run_root}/summary.json"))
    assert [p["phase"] for p in summary["phases"]] == ["alpha", "beta", "final"]
    assert all(p["checkpoint"].startswith(run_root) for p in summary["phases"])
    assert fs.exists(f"{run_root}/phase3/train/checkpoint/model.safetensors")

    client = MlflowClient(stack.env["MLFLOW_TRACKING_URI"])
    assert summary["mlflow"]["tracking_uri"] == stack.env["MLFLOW_TRACKING_URI"]
    parent = client.get_run(summary["mlflow"]["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["prefect.root_flow_run_id"] == str(flow_run.id)
    assert parent.data.tags["prefect.flow_run_url"].startswith(stack.env["PREFECT_API_URL"].removesuffix("/api"))
    for phase in ("alpha", "beta", "final"):
        assert f"{phase}.humaneval_pass_at_1" in parent.data.metrics and f"{phase}.heldout_loss" in parent.data.metrics
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(r.info.run_name for r in children) == ["phase1-alpha", "phase2-beta", "phase3-final"]
    assert all(r.data.tags["prefect.root_flow_run_id"] == str(flow_run.id) for r in children)
    assert all(r.info.status == "FINISHED" and r.data.metrics for r in children)

    # Prefect artifacts per phase: a markdown summary, a stats table, a link to the phase's MLflow run
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    keys = [f"{p}-{kind}" for p in ("alpha", "beta", "final") for kind in ("summary", "stages", "mlflow")]
    with get_client(sync_client=True) as pc:
        artifacts = pc.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys + ["pipeline-summary"])))
    by_key = {a.key: a for a in artifacts}
    assert set(keys + ["pipeline-summary"]) <= set(by_key)
    alpha_run = next(r for r in children if r.info.run_name == "phase1-alpha")
    assert alpha_run.info.run_id in by_key["alpha-mlflow"].data and "crawl" in by_key["alpha-summary"].data

    # artifacts are objects in the S3 bucket behind the MLflow server (proxied artifact storage)
    keys = [o["Key"] for page in boto3.client("s3", endpoint_url=s.s3_url, aws_access_key_id=s.access_key,
                                              aws_secret_access_key=s.secret_key, region_name=s.region)
            .get_paginator("list_objects_v2").paginate(Bucket=s.mlflow_bucket) for o in page.get("Contents", [])]
    parent_keys = [k for k in keys if f"/{parent.info.run_id}/artifacts/" in k]
    assert any(k.endswith("summary.json") for k in parent_keys)
    assert any(k.endswith("plots/phase-comparison.png") for k in parent_keys)
    alpha = next(r for r in children if r.info.run_name == "phase1-alpha")
    assert any(k.endswith("plots/loss-alpha.png") for k in keys if alpha.info.run_id in k)
    assert any(k.endswith("plots/filter-waterfall.png") for k in keys if alpha.info.run_id in k)


def test_quickstart_notebook_executes(deployed, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(REPO / "notebooks" / "quickstart.ipynb", as_version=4)
    env = {**deployed, "SNOWCODER_NOTEBOOK_RUN_ROOT": str(tmp_path / "notebook-micro")}
    NotebookClient(nb, timeout=1200, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute(env=env)
    outputs = "".join(o.get("text", "") for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", []))
    assert "summary.json" in outputs and "COMPLETED" in outputs
    assert any("image/png" in o.get("data", {}) for cell in nb.cells for o in cell.get("outputs", []))
    summary = json.loads((tmp_path / "notebook-micro" / "summary.json").read_text())
    assert summary["reused_stages"]  # the deployment run reused what the direct call finished
