"""The local stack (snowcoder.stack): settings, failure messages, and a real Prefect + MLflow + moto stack.

The fast tests start no server (or only a process that dies at once). The slow ones share the session `stack`
fixture (tests/conftest.py), except the down/restore test, which runs its own S3-only stack.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from snowcoder import stack as stack_lib
from snowcoder.config import UserError

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "infra" / "gpu-work-pool" / "base-job-template.json"


def _settings(tmp_path, **kw) -> stack_lib.StackSettings:
    ports = stack_lib.free_ports(3)
    return stack_lib.StackSettings(state_dir=tmp_path / "state", s3_port=ports[0], mlflow_port=ports[1],
                               prefect_port=ports[2], **kw)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


# ------------------------------------------------------------------------------------------------ fast: no servers
def test_settings_defaults_and_env_overrides(tmp_path):
    s = stack_lib.StackSettings.from_env({})
    assert (s.host, s.prefect_port, s.mlflow_port, s.s3_port) == ("127.0.0.1", 4200, 5000, 5555)
    assert s.state_dir == Path.cwd().resolve() / ".stack"
    s = stack_lib.StackSettings.from_env({"SNOWCODER_STACK_DIR": str(tmp_path), "SNOWCODER_PREFECT_PORT": "4300",
                                      "SNOWCODER_S3_PORT": "5600", "SNOWCODER_STACK_TIMEOUT": "30"}, mlflow_port=5100)
    assert (s.state_dir, s.prefect_port, s.mlflow_port, s.s3_port) == (tmp_path.resolve(), 4300, 5100, 5600)
    assert s.startup_timeout == 30.0 and s.prefect_api_url == "http://127.0.0.1:4300/api"
    with pytest.raises(UserError, match="SNOWCODER_MLFLOW_PORT"):
        stack_lib.StackSettings.from_env({"SNOWCODER_MLFLOW_PORT": "five"})
    with pytest.raises(UserError, match="must differ"):
        stack_lib.StackSettings(s3_port=5000)


def test_env_file_sources_in_a_shell(tmp_path):
    s = _settings(tmp_path)
    env = stack_lib.write_env_file(s)
    assert env == stack_lib.client_env(s)
    assert env["PREFECT_API_URL"] == f"http://127.0.0.1:{s.prefect_port}/api"
    assert env["MLFLOW_TRACKING_URI"] == f"http://127.0.0.1:{s.mlflow_port}"
    assert env["AWS_ENDPOINT_URL_S3"] == env["FSSPEC_S3_ENDPOINT_URL"] == f"http://127.0.0.1:{s.s3_port}"
    out = subprocess.run(["bash", "-c", f". {s.env_file}; env"], capture_output=True, text=True, check=True,
                         env={"PATH": os.environ["PATH"]}).stdout
    shell_env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert all(shell_env[key] == value for key, value in env.items())


def test_cli_env_prints_export_lines(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("SNOWCODER_S3_PORT", "5601")
    assert stack_lib.main(["--state-dir", str(tmp_path), "env"]) == 0
    out = capsys.readouterr().out
    assert "export AWS_ENDPOINT_URL_S3=http://127.0.0.1:5601\n" in out
    assert "export PREFECT_API_URL=http://127.0.0.1:4200/api\n" in out


def test_missing_moto_server_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "empty-venv" / "bin" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError, match="moto_server.*not found.*pip install"):
        stack_lib.up(_settings(tmp_path))


def test_port_taken_by_a_foreign_process(tmp_path):
    s = _settings(tmp_path)
    with socket.socket() as foreign:
        foreign.bind(("127.0.0.1", s.mlflow_port))
        foreign.listen()
        with pytest.raises(UserError, match=f"port {s.mlflow_port} .* taken by another process"):
            stack_lib.up(s)
    assert not s.log_file("s3").exists()  # every port is checked before anything starts
    assert not any(s.pid_file(name).exists() for name in stack_lib.SERVICES)


def test_a_service_that_dies_reports_its_log(tmp_path, monkeypatch):
    def dying(name, settings):
        return [sys.executable, "-c", "print('boom-marker: cannot start'); raise SystemExit(3)"], dict(os.environ)

    monkeypatch.setattr(stack_lib, "_command", dying)
    s = _settings(tmp_path)
    with pytest.raises(stack_lib.StackError, match="(?s)s3 exited before it became healthy.*boom-marker"):
        stack_lib.up(s)
    assert not s.pid_file("s3").exists()


def test_a_failed_first_start_removes_the_half_created_database(tmp_path, monkeypatch):
    # an interrupted first MLflow start leaves a half-migrated SQLite file the next start cannot open
    def half_migrating(name, settings):
        db = settings.state_dir / "mlflow" / "mlflow.db"
        db.parent.mkdir(parents=True, exist_ok=True)
        return [sys.executable, "-c", f"open({str(db)!r}, 'w').write('half'); raise SystemExit(1)"], dict(os.environ)

    monkeypatch.setattr(stack_lib, "_command", half_migrating)
    s = _settings(tmp_path)
    with pytest.raises(stack_lib.StackError, match="mlflow exited"):
        stack_lib.up(s, services=("mlflow",))
    assert not (s.state_dir / "mlflow" / "mlflow.db").exists()
    (s.state_dir / "mlflow" / "mlflow.db").write_text("an existing database is never removed")
    with pytest.raises(stack_lib.StackError):
        stack_lib.up(s, services=("mlflow",))
    assert (s.state_dir / "mlflow" / "mlflow.db").exists()


def test_gpu_work_pool_template_is_consistent():
    from prefect.utilities.templating import apply_values, find_placeholders

    template = json.loads(TEMPLATE.read_text())
    assert set(template) == {"job_configuration", "variables"}
    props = template["variables"]["properties"]
    used = {p.name for p in find_placeholders(template["job_configuration"])}
    assert used == set(props), "every variable must be referenced in job_configuration and vice versa"
    defaults = {name: spec["default"] for name, spec in props.items() if "default" in spec}
    job = apply_values(template["job_configuration"], {**defaults, "gpu_count": 4})["job_manifest"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 4
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 4
    assert job["spec"]["template"]["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert container["volumeMounts"][0]["mountPath"] == "/dev/shm"


# ------------------------------------------------------------------------------------- slow: the session stack
@pytest.mark.slow
def test_stack_is_up_and_healthy(stack):
    s = stack.settings
    assert _get(f"{s.prefect_url}/api/health").strip() == "true"
    assert _get(f"{s.mlflow_url}/health").strip() == "OK"
    report = stack_lib.status(s)
    assert all(info["up"] and info["running"] for info in report.values()), report
    assert (s.state_dir / "env").read_text().count("export ") == len(stack.env)
    assert set(stack.timings) >= {"s3", "mlflow", "prefect"}


@pytest.mark.slow
def test_up_again_is_idempotent(stack):
    t0 = time.monotonic()
    timings: dict = {}
    env = stack_lib.up(stack.settings, timings)
    assert env == stack.env
    assert not set(timings) & {"s3", "mlflow", "prefect"}  # nothing was started
    assert time.monotonic() - t0 < 15
    report = stack_lib.status(stack.settings)
    assert {name: info["pid"] for name, info in report.items()} == stack.pids


@pytest.mark.slow
def test_mlflow_artifact_is_an_object_in_moto(stack, tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=stack.env["MLFLOW_TRACKING_URI"])
    experiment_id = client.create_experiment(f"stack-test-{time.time_ns()}")
    run = client.create_run(experiment_id)
    (tmp_path / "hello.txt").write_text("artifact through the MLflow proxy")
    client.log_artifact(run.info.run_id, str(tmp_path / "hello.txt"))
    client.log_metric(run.info.run_id, "loss", 1.5)
    client.set_terminated(run.info.run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")  # proxied: the client holds no S3 credentials

    s3 = stack_lib.s3_client(stack.settings)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=stack.settings.mlflow_bucket).get("Contents", [])]
    key = f"artifacts/{experiment_id}/{run.info.run_id}/artifacts/hello.txt"
    assert key in keys, keys
    body = s3.get_object(Bucket=stack.settings.mlflow_bucket, Key=key)["Body"].read()
    assert body == b"artifact through the MLflow proxy"


_FSSPEC_ROUNDTRIP = """
import sys, fsspec
uri = sys.argv[1]
with fsspec.open(uri, "wb") as f:
    f.write(b"run root bytes")
with fsspec.open(uri, "rb") as f:
    assert f.read() == b"run root bytes"
print("ok")
"""


@pytest.mark.slow
@pytest.mark.parametrize("variables", ["all", "AWS_ENDPOINT_URL_S3 only"])
def test_fsspec_s3_io_with_only_the_env(stack, variables, tmp_path):
    env = dict(stack.env)
    if variables != "all":  # botocore's own variable is enough for s3fs (no fsspec-specific one needed)
        env = {k: v for k, v in env.items() if k.startswith("AWS_")}
    clean = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env}  # nothing from the test process leaks in
    uri = f"s3://{stack.settings.runs_bucket}/test/{variables.split()[0]}.bin"
    out = subprocess.run([sys.executable, "-c", _FSSPEC_ROUNDTRIP, uri], env=clean, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
    s3 = stack_lib.s3_client(stack.settings)
    assert s3.get_object(Bucket=stack.settings.runs_bucket, Key=uri.split("/", 3)[3])["Body"].read() == b"run root bytes"


@pytest.mark.slow
def test_prefect_accepts_the_gpu_work_pool(stack):
    body = json.dumps({"name": "snowcoder-gpu", "type": "kubernetes",
                       "base_job_template": json.loads(TEMPLATE.read_text())}).encode()
    request = urllib.request.Request(f"{stack.env['PREFECT_API_URL']}/work_pools/", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 201
    pool = json.loads(_get(f"{stack.env['PREFECT_API_URL']}/work_pools/snowcoder-gpu"))
    assert pool["base_job_template"]["variables"]["properties"]["gpu_count"]["default"] == 8


@pytest.mark.slow
def test_cli_status_against_the_running_stack(stack, monkeypatch, capsys):
    s = stack.settings
    for var, port in (("SNOWCODER_S3_PORT", s.s3_port), ("SNOWCODER_MLFLOW_PORT", s.mlflow_port),
                      ("SNOWCODER_PREFECT_PORT", s.prefect_port)):
        monkeypatch.setenv(var, str(port))
    assert stack_lib.main(["--state-dir", str(s.state_dir), "status"]) == 0
    out = capsys.readouterr().out
    assert out.count(" up ") == 3 and s.prefect_url in out and s.mlflow_url in out


# ------------------------------------------------------------------------- slow: down, own short-lived stack
@pytest.mark.slow
def test_down_stops_every_process_and_s3_objects_survive(tmp_path):
    s = _settings(tmp_path)
    stack_lib.up(s, services=("s3",))
    pid = stack_lib.status(s)["s3"]["pid"]
    assert stack_lib.group_members(pid)
    stack_lib.s3_client(s).put_object(Bucket=s.runs_bucket, Key="run-1/manifest.json", Body=b'{"ok": true}')

    assert stack_lib.down(s) == {"prefect": False, "mlflow": False, "s3": True}
    assert stack_lib.group_members(pid) == [] and not s.pid_file("s3").exists()
    assert not stack_lib.status(s)["s3"]["up"]
    assert (s.snapshot_dir / s.runs_bucket / "run-1" / "manifest.json").read_bytes() == b'{"ok": true}'

    try:
        stack_lib.up(s, services=("s3",))  # a fresh moto, refilled from the snapshot
        body = stack_lib.s3_client(s).get_object(Bucket=s.runs_bucket, Key="run-1/manifest.json")["Body"].read()
        assert body == b'{"ok": true}'
    finally:
        pid = stack_lib.status(s)["s3"]["pid"]
        stack_lib.down(s, save_s3=False)
    assert pid is None or stack_lib.group_members(pid) == []
