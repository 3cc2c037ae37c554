"""MLflow tracking with explicit run ids (never the fluent, thread-local active run).

One parent run per pipeline run, one child run per phase (alpha, beta, final). The tracking store defaults to a
SQLite database under a local run root (the file store is deprecated in MLflow 3); MLFLOW_TRACKING_URI overrides.
"""
from __future__ import annotations

import contextlib

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from pydantic import BaseModel

from snowcoder import storage

EXPERIMENT = "snowcoder"


class Tracking(BaseModel):
    """What a task needs to log into the right run: small and serialisable (passed between flows)."""

    tracking_uri: str
    experiment_id: str
    run_id: str  # the run this handle logs into (parent or a phase's child)
    parent_run_id: str | None = None


def default_tracking_uri(run_root: str) -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    if storage.is_remote(run_root):
        # SQLite cannot live on object storage: keep the store next to the working directory.
        base = Path(".state").resolve()
    else:
        base = Path(run_root).resolve()
    base.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{base / 'mlflow.db'}"


def _client(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def _experiment_id(client, run_root: str, tracking_uri: str) -> str:
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is not None:
        return exp.experiment_id
    artifact_location = None
    if tracking_uri.startswith("sqlite:"):
        root = run_root if storage.is_remote(run_root) else Path(run_root).resolve().as_uri()
        artifact_location = storage.join(root, "mlartifacts") if storage.is_remote(root) else root + "/mlartifacts"
    return client.create_experiment(EXPERIMENT, artifact_location=artifact_location)


def start_parent(run_root: str, run_name: str, tags: dict[str, str], params: dict[str, Any]) -> Tracking:
    uri = default_tracking_uri(run_root)
    client = _client(uri)
    exp_id = _experiment_id(client, run_root, uri)
    run = client.create_run(exp_id, run_name=run_name, tags=tags)
    handle = Tracking(tracking_uri=uri, experiment_id=exp_id, run_id=run.info.run_id)
    log_params(handle, params)
    return handle


def start_child(parent: Tracking, run_name: str, tags: dict[str, str] | None = None) -> Tracking:
    client = _client(parent.tracking_uri)
    all_tags = {"mlflow.parentRunId": parent.run_id, **(tags or {})}
    run = client.create_run(parent.experiment_id, run_name=run_name, tags=all_tags)
    return Tracking(
        tracking_uri=parent.tracking_uri,
        experiment_id=parent.experiment_id,
        run_id=run.info.run_id,
        parent_run_id=parent.run_id,
    )


def finish(handle: Tracking, status: str = "FINISHED") -> None:
    _client(handle.tracking_uri).set_terminated(handle.run_id, status=status)


@contextlib.contextmanager
def scope(handle: Tracking) -> Iterator[Tracking]:
    """Ends the run FINISHED when the block completes, FAILED when it raises (KILLED on Ctrl-C), never left RUNNING."""
    try:
        yield handle
    except KeyboardInterrupt:
        finish(handle, status="KILLED")
        raise
    except BaseException:
        finish(handle, status="FAILED")
        raise
    finish(handle)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def log_params(handle: Tracking, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    flat = flatten(params)
    items = [Param(k[:250], json.dumps(v) if isinstance(v, (list, dict)) else str(v)[:6000]) for k, v in flat.items()]
    client = _client(handle.tracking_uri)
    for i in range(0, len(items), 100):
        client.log_batch(handle.run_id, params=items[i : i + 100])


def _metric_name(name: str) -> str:
    # MLflow allows alphanumerics, _ - . space / ; '@' is not allowed.
    return name.replace("@", "_at_")


def log_metrics(handle: Tracking, metrics: dict[str, float], step: int = 0) -> None:
    from mlflow.entities import Metric
    import time

    now = int(time.time() * 1000)
    items = [
        Metric(_metric_name(k), float(v), now, step)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
    ]
    client = _client(handle.tracking_uri)
    for i in range(0, len(items), 1000):
        client.log_batch(handle.run_id, metrics=items[i : i + 1000])


def log_metric_series(handle: Tracking, rows: list[dict], step_key: str = "step") -> None:
    """Log rows like {step: 3, loss: 2.1, lr: ...} as metric histories (e.g. a training loss curve)."""
    from mlflow.entities import Metric
    import time

    now = int(time.time() * 1000)
    items = []
    for row in rows:
        step = int(row.get(step_key, 0))
        for k, v in row.items():
            if k == step_key or not isinstance(v, (int, float)) or isinstance(v, bool):
                continue
            if math.isfinite(float(v)):
                items.append(Metric(_metric_name(k), float(v), now, step))
    client = _client(handle.tracking_uri)
    for i in range(0, len(items), 1000):
        client.log_batch(handle.run_id, metrics=items[i : i + 1000])


def set_tags(handle: Tracking, tags: dict[str, str]) -> None:
    from mlflow.entities import RunTag

    _client(handle.tracking_uri).log_batch(handle.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def log_dict(handle: Tracking, obj: Any, artifact_file: str) -> None:
    _client(handle.tracking_uri).log_dict(handle.run_id, obj, artifact_file)


def log_text(handle: Tracking, text: str, artifact_file: str) -> None:
    _client(handle.tracking_uri).log_text(handle.run_id, text, artifact_file)


def log_file(handle: Tracking, uri: str, artifact_path: str | None = None) -> None:
    """Log a (possibly remote) file as an artifact."""
    client = _client(handle.tracking_uri)
    if not storage.is_remote(uri):
        client.log_artifact(handle.run_id, uri, artifact_path)
        return
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / uri.rsplit("/", 1)[-1]
        local.write_bytes(storage.read_bytes(uri))
        client.log_artifact(handle.run_id, str(local), artifact_path)


def log_table(handle: Tracking, rows: list[dict[str, Any]], artifact_file: str) -> None:
    """Rows of dicts as an MLflow table artifact (columns = the union of the keys)."""
    import pandas as pd

    _client(handle.tracking_uri).log_table(handle.run_id, pd.DataFrame(rows), artifact_file)


def ui_hint(tracking_uri: str) -> str:
    if tracking_uri.startswith("sqlite:"):
        return f"mlflow ui --backend-store-uri {tracking_uri}"
    return tracking_uri


def log_figure(handle: Tracking, figure: Any, artifact_file: str) -> None:
    """A matplotlib figure as a PNG artifact (shown inline in the MLflow UI)."""
    _client(handle.tracking_uri).log_figure(handle.run_id, figure, artifact_file)


def run_url(handle: Tracking) -> str | None:
    """Link to the run in the MLflow UI when the tracking store is a server (None for a local SQLite store)."""
    if not handle.tracking_uri.startswith(("http://", "https://")):
        return None
    return f"{handle.tracking_uri.rstrip('/')}/#/experiments/{handle.experiment_id}/runs/{handle.run_id}"


def register_model(handle: Tracking, model_dir_uri: str, name: str, alias: str, tags: dict[str, str] | None = None,
                   digest: str | None = None, artifact_path: str = "model") -> str:
    """Log an exported model directory (HF weights + tokenizer) as the run's `<artifact_path>/` artifacts, register it as a
    new version of the registered model `name` and point `alias` at it (the alias moves; older versions stay).
    With `digest` (the content digest of the export): a version already registered with that digest is reused
    and only the alias moves, so a re-run that reuses a finished training uploads nothing again.
    Returns the version. Load it back anywhere with
    `AutoModelForCausalLM.from_pretrained(mlflow.artifacts.download_artifacts("models:/<name>@<alias>"))`."""
    from mlflow.exceptions import MlflowException

    client = _client(handle.tracking_uri)
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="snowcoder checkpoints; aliases alpha, beta, final = the "
                                       "latest export of each phase (arXiv 2409.02326)")
    same = [v for v in client.search_model_versions(f"name='{name}'")
            if digest and v.tags.get("snowcoder.digest") == digest]
    if same:
        version = max(same, key=lambda v: int(v.version)).version
    else:
        with storage.local_dir(model_dir_uri) as local:
            client.log_artifacts(handle.run_id, str(local), artifact_path)
        source = client.get_run(handle.run_id).info.artifact_uri.rstrip("/") + "/" + artifact_path
        version_tags = {**(tags or {}), **({"snowcoder.digest": digest} if digest else {})}
        version = client.create_model_version(name, source=source, run_id=handle.run_id, tags=version_tags).version
    client.set_registered_model_alias(name, alias, version)
    return str(version)
