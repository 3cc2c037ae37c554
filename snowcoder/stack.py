"""The local stack: Prefect server + MLflow tracking server + an S3 endpoint (moto), one command up, one down.

    snowcoder stack up        # start what is not running yet, wait until healthy, write <state>/env
    snowcoder stack status    # each service up/down with its URL
    snowcoder stack env       # the `export` lines (eval "$(snowcoder stack env)")
    snowcoder stack down      # stop everything; the S3 objects are saved to <state>/s3/ first

Services (each in its own process group, log in <state>/logs/<name>.log, pid in <state>/pids/<name>.pid):

  s3       moto_server on :5555, an in-memory S3. Buckets `snowcoder-mlflow` (MLflow artifacts) and
           `snowcoder-runs` (pipeline run roots, e.g. s3://snowcoder-runs/tiny-1). moto keeps objects in memory
           only, so `down` copies every object to <state>/s3/<bucket>/<key> and the next `up` uploads them again.
  mlflow   `mlflow server` on :5000, SQLite backend in <state>/mlflow/mlflow.db, proxied artifacts stored in
           s3://snowcoder-mlflow/artifacts (clients need no S3 credentials for artifacts).
  prefect  `prefect server start` on :4200, PREFECT_HOME=<state>/prefect (SQLite).

Every setting can be overridden from the environment (SNOWCODER_STACK_DIR, SNOWCODER_PREFECT_PORT, ...; see
StackSettings.from_env). POSIX only (process groups, signals). Only the standard library (and snowcoder.config) is
imported at module import; boto3 is imported when buckets are touched.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from snowcoder.config import UserError

log = logging.getLogger("snowcoder.stack")

SERVICES = ("s3", "mlflow", "prefect")  # start order; stop order is the reverse


class StackError(UserError):
    """A service did not start, did not stop, or its port is taken."""


@dataclass
class StackSettings:
    """Where the local stack listens and keeps its state. Defaults suit one developer machine."""

    host: str = "127.0.0.1"
    prefect_port: int = 4200
    mlflow_port: int = 5000  # MLflow's own default; moto's default is 5000 too, hence s3_port 5555
    s3_port: int = 5555
    state_dir: Path = field(default_factory=lambda: Path.cwd() / ".stack")
    mlflow_bucket: str = "snowcoder-mlflow"  # MLflow's proxied artifacts under s3://<mlflow_bucket>/artifacts
    runs_bucket: str = "snowcoder-runs"  # pipeline run roots: s3://<runs_bucket>/<run name>
    access_key: str = "test"  # moto accepts any credentials; these are the conventional ones
    secret_key: str = "test"
    region: str = "us-east-1"
    startup_timeout: float = 120.0  # seconds per service until healthy (Prefect needs ~16 s, MLflow ~12-21 s on 2 cores)
    stop_timeout: float = 15.0  # SIGTERM grace period before SIGKILL

    # environment variable -> field name (values are converted to the field's type)
    ENV_OVERRIDES = {
        "SNOWCODER_STACK_DIR": "state_dir",
        "SNOWCODER_STACK_HOST": "host",
        "SNOWCODER_PREFECT_PORT": "prefect_port",
        "SNOWCODER_MLFLOW_PORT": "mlflow_port",
        "SNOWCODER_S3_PORT": "s3_port",
        "SNOWCODER_MLFLOW_BUCKET": "mlflow_bucket",
        "SNOWCODER_RUNS_BUCKET": "runs_bucket",
        "SNOWCODER_STACK_TIMEOUT": "startup_timeout",
    }

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir).expanduser().resolve()
        ports = [self.s3_port, self.mlflow_port, self.prefect_port]
        if len(set(ports)) != 3:
            raise UserError(f"the stack's ports must differ: s3={self.s3_port} mlflow={self.mlflow_port} "
                            f"prefect={self.prefect_port}")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides) -> "StackSettings":
        """Defaults, then SNOWCODER_* environment variables, then keyword overrides."""
        environ = os.environ if environ is None else environ
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        values: dict = {}
        for var, name in cls.ENV_OVERRIDES.items():
            raw = environ.get(var)
            if raw in (None, ""):
                continue
            kind = types[name]
            try:
                values[name] = int(raw) if kind == "int" else float(raw) if kind == "float" else raw
            except ValueError:
                raise UserError(f"{var}={raw!r} is not a valid {kind}") from None
        values.update(overrides)
        return cls(**values)

    # URLs --------------------------------------------------------------------------------------------------------
    @property
    def s3_url(self) -> str:
        return f"http://{self.host}:{self.s3_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    @property
    def prefect_url(self) -> str:
        return f"http://{self.host}:{self.prefect_port}"

    @property
    def prefect_api_url(self) -> str:
        return f"{self.prefect_url}/api"

    def port(self, name: str) -> int:
        return {"s3": self.s3_port, "mlflow": self.mlflow_port, "prefect": self.prefect_port}[name]

    def url(self, name: str) -> str:
        return {"s3": self.s3_url, "mlflow": self.mlflow_url, "prefect": self.prefect_url}[name]

    def health_url(self, name: str) -> str:
        return self.url(name) + {"s3": "/", "mlflow": "/health", "prefect": "/api/health"}[name]

    # state layout --------------------------------------------------------------------------------------------------
    def pid_file(self, name: str) -> Path:
        return self.state_dir / "pids" / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.state_dir / "logs" / f"{name}.log"

    @property
    def env_file(self) -> Path:
        return self.state_dir / "env"

    @property
    def snapshot_dir(self) -> Path:
        return self.state_dir / "s3"


# --------------------------------------------------------------------------------------------------------------------
# The environment clients need
# --------------------------------------------------------------------------------------------------------------------
def client_env(settings: StackSettings) -> dict[str, str]:
    """Variables that point Prefect, MLflow, boto3 and s3fs/fsspec at the stack.

    AWS_ENDPOINT_URL_S3 is read by botocore (>= 1.31) when a client is created, so it works for boto3 and for
    s3fs (through aiobotocore) even when set after import. FSSPEC_S3_ENDPOINT_URL is fsspec's own config variable
    (read once, at `import fsspec`): a fallback for older botocore. MLFLOW_S3_ENDPOINT_URL matters only for an
    MLflow client writing artifacts to s3:// directly (not needed with this stack's proxied artifacts).
    """
    return {
        "PREFECT_API_URL": settings.prefect_api_url,
        "MLFLOW_TRACKING_URI": settings.mlflow_url,
        "AWS_ACCESS_KEY_ID": settings.access_key,
        "AWS_SECRET_ACCESS_KEY": settings.secret_key,
        "AWS_DEFAULT_REGION": settings.region,
        "AWS_ENDPOINT_URL_S3": settings.s3_url,
        "FSSPEC_S3_ENDPOINT_URL": settings.s3_url,
        "MLFLOW_S3_ENDPOINT_URL": settings.s3_url,
    }


def format_env(env: dict[str, str]) -> str:
    return "".join(f"export {key}={shlex.quote(value)}\n" for key, value in env.items())


def write_env_file(settings: StackSettings) -> dict[str, str]:
    env = client_env(settings)
    settings.env_file.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# snowcoder local stack (written by `snowcoder stack up`); load it with: . {settings.env_file}\n"
              f"# Prefect UI {settings.prefect_url}   MLflow UI {settings.mlflow_url}   S3 {settings.s3_url}\n")
    settings.env_file.write_text(header + format_env(env))
    return env


# --------------------------------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------------------------------
_CHILDREN: dict[int, subprocess.Popen] = {}  # processes this interpreter started (reaped in down())


def _executable(name: str) -> str:
    """A console script of this venv (next to sys.executable), else from PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    hint = {"moto_server": "pip install 'moto[server]'  (or: pip install -e '.[stack]')"}.get(name, f"pip install {name}")
    raise StackError(f"`{name}` not found next to {sys.executable} or on PATH; install it: {hint}")


def _base_env() -> dict[str, str]:
    env = dict(os.environ)
    # a cloud API key, a run id meant for a training subprocess or a real AWS profile must not reach the local servers
    for key in ("PREFECT_API_KEY", "MLFLOW_RUN_ID", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        env.pop(key, None)
    env.update({"DO_NOT_TRACK": "true", "MLFLOW_ENABLE_TELEMETRY": "false", "PYTHONUNBUFFERED": "1"})
    return env


def _command(name: str, s: StackSettings) -> tuple[list[str], dict[str, str]]:
    env = _base_env()
    s3_env = {"AWS_ACCESS_KEY_ID": s.access_key, "AWS_SECRET_ACCESS_KEY": s.secret_key,
              "AWS_DEFAULT_REGION": s.region, "MLFLOW_S3_ENDPOINT_URL": s.s3_url, "AWS_ENDPOINT_URL_S3": s.s3_url}
    if name == "s3":
        return [_executable("moto_server"), "-H", s.host, "-p", str(s.s3_port)], env
    if name == "mlflow":
        db = s.state_dir / "mlflow" / "mlflow.db"
        db.parent.mkdir(parents=True, exist_ok=True)
        env.update(s3_env)
        # MLflow's job runner (GenAI judge/optimizer jobs) starts 7 huey consumer processes: not needed for training
        # runs and heavy on a small machine. MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true in the caller's env turns it on.
        env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        return [_executable("mlflow"), "server",
                "--backend-store-uri", f"sqlite:///{db}",
                "--artifacts-destination", f"s3://{s.mlflow_bucket}/artifacts", "--serve-artifacts",
                "--host", s.host, "--port", str(s.mlflow_port),
                "--workers", "1"], env  # 1 uvicorn worker: 12 s instead of 21 s to healthy on 2 cores
    if name == "prefect":
        home = s.state_dir / "prefect"
        home.mkdir(parents=True, exist_ok=True)
        env.update({"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                    "PREFECT_API_URL": s.prefect_api_url, "PREFECT_UI_API_URL": s.prefect_api_url})
        return [_executable("prefect"), "server", "start", "--host", s.host, "--port", str(s.prefect_port)], env
    raise ValueError(name)


def _database(name: str, settings: StackSettings) -> Path | None:
    """The SQLite file a service keeps in the state dir."""
    return {"mlflow": settings.state_dir / "mlflow" / "mlflow.db",
            "prefect": settings.state_dir / "prefect" / "prefect.db"}.get(name)


def _remove_database(db: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)


def _read_pid(settings: StackSettings, name: str) -> int | None:
    try:
        return int(settings.pid_file(name).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _reap(pid: int) -> None:
    """Collect an exited child of this interpreter so that it does not linger as a zombie."""
    proc = _CHILDREN.get(pid)
    if proc is not None:
        proc.poll()
        return
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _proc_stat(pid: str) -> tuple[str, int] | None:
    """(state, process group) of a process from /proc, or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw.rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp ...
    return fields[0], int(fields[2])


def _is_ours(pid: int, name: str) -> bool:
    """Whether a live pid from a pid file still runs this service (guards against a reused pid after a reboot)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return True  # no /proc: trust the pid file
    return {"s3": "moto_server", "mlflow": "mlflow", "prefect": "prefect"}[name] in cmdline


def _pid_alive(pid: int) -> bool:
    _reap(pid)
    stat = _proc_stat(str(pid))
    if stat is not None:
        return stat[0] != "Z"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not Path("/proc").is_dir()  # /proc exists but has no entry: gone


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    _reap(pgid)
    if Path("/proc/self/stat").exists():
        members = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                stat = _proc_stat(entry)
                if stat and stat[1] == pgid and stat[0] != "Z":
                    members.append(int(entry))
        return members
    try:  # no /proc (macOS): the group exists while kill(-pgid, 0) succeeds
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []
    except PermissionError:
        pass
    return [pgid]


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # local health checks bypass any HTTP(S)_PROXY


def _healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with _DIRECT.open(url, timeout=timeout) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports that are free right now (for tests and side-by-side stacks)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text[-lines:])


def _start(name: str, settings: StackSettings) -> int:
    cmd, env = _command(name, settings)
    for path in (settings.log_file(name), settings.pid_file(name)):
        path.parent.mkdir(parents=True, exist_ok=True)
    with open(settings.log_file(name), "ab") as logf:
        logf.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(cmd)}\n".encode())
        logf.flush()
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                cwd=settings.state_dir, start_new_session=True)
    _CHILDREN[proc.pid] = proc
    settings.pid_file(name).write_text(f"{proc.pid}\n")
    log.info("started %s (pid %d): %s", name, proc.pid, shlex.join(cmd))
    return proc.pid


def _failure(name: str, settings: StackSettings, what: str) -> StackError:
    logf = settings.log_file(name)
    return StackError(f"{name} {what} (log: {logf})\n--- last lines of {logf} ---\n{_log_tail(logf)}")


def _wait_healthy(pending: dict[str, tuple[int, float]], settings: StackSettings) -> dict[str, float]:
    """Poll the services in `pending` ({name: (pid, start time)}) together; {name: seconds until healthy}."""
    waiting, seconds = dict(pending), {}
    while waiting:
        for name, (pid, t0) in list(waiting.items()):
            if _healthy(settings.health_url(name)):
                seconds[name] = time.monotonic() - t0
                del waiting[name]
                log.info("%s healthy at %s (%.1f s)", name, settings.url(name), seconds[name])
            elif not _pid_alive(pid):
                raise _failure(name, settings, "exited before it became healthy")
            elif time.monotonic() - t0 > settings.startup_timeout:
                raise _failure(name, settings, f"did not answer {settings.health_url(name)} within "
                                               f"{settings.startup_timeout:.0f} s")
        if waiting:
            time.sleep(0.25)
    return seconds


def _stop(name: str, settings: StackSettings) -> bool:
    """SIGTERM the service's process group, SIGKILL after the grace period. True when something was stopped."""
    pid = _read_pid(settings, name)
    if pid is None:
        return False
    if _pid_alive(pid) and not _is_ours(pid, name):  # a stale pid file whose pid now belongs to someone else
        log.warning("%s: pid %d from %s is not this stack's process; leaving it alone", name, pid,
                    settings.pid_file(name))
        settings.pid_file(name).unlink(missing_ok=True)
        return False
    stopped = False
    if group_members(pid):
        stopped = True
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + settings.stop_timeout
        while group_members(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if group_members(pid):
            log.warning("%s did not stop within %.0f s of SIGTERM: SIGKILL", name, settings.stop_timeout)
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 10
            while group_members(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
        left = group_members(pid)
        if left:
            raise StackError(f"{name}: processes {left} are still running after SIGKILL")
    _CHILDREN.pop(pid, None)
    settings.pid_file(name).unlink(missing_ok=True)
    return stopped


# --------------------------------------------------------------------------------------------------------------------
# Buckets (boto3 against moto)
# --------------------------------------------------------------------------------------------------------------------
def s3_client(settings: StackSettings):
    """A boto3 S3 client for the stack's endpoint (explicit credentials: independent of the caller's env)."""
    import boto3

    return boto3.client("s3", endpoint_url=settings.s3_url, aws_access_key_id=settings.access_key,
                        aws_secret_access_key=settings.secret_key, region_name=settings.region)


def _ensure_bucket(client, bucket: str) -> None:
    try:
        client.create_bucket(Bucket=bucket)  # us-east-1: no LocationConstraint (see this-machine.md §4)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass


def _restore_buckets(settings: StackSettings, client) -> int:
    """Upload <state>/s3/<bucket>/<key> (written by the last `down`) into the fresh moto. Returns objects uploaded."""
    root = settings.snapshot_dir
    count = 0
    if not root.is_dir():
        return 0
    for bucket_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        _ensure_bucket(client, bucket_dir.name)
        for path in sorted(p for p in bucket_dir.rglob("*") if p.is_file()):
            client.upload_file(str(path), bucket_dir.name, path.relative_to(bucket_dir).as_posix())
            count += 1
    return count


def _snapshot_buckets(settings: StackSettings) -> int:
    """Copy every object of the running moto to <state>/s3/<bucket>/<key> (replacing the previous snapshot)."""
    client = s3_client(settings)
    partial = settings.state_dir / "s3.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    count = 0
    for bucket in client.list_buckets().get("Buckets", []):
        name = bucket["Name"]
        (partial / name).mkdir()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                dest = (partial / name / key).resolve()
                if key.endswith("/") or not dest.is_relative_to((partial / name).resolve()):
                    log.warning("s3 snapshot: skipping key %r of bucket %s (not a plain file path)", key, name)
                    continue
                try:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    client.download_file(name, key, str(dest))
                except OSError as exc:  # e.g. both "a" and "a/b" exist as keys
                    log.warning("s3 snapshot: skipping s3://%s/%s: %s", name, key, exc)
                    continue
                count += 1
    shutil.rmtree(settings.snapshot_dir, ignore_errors=True)
    partial.rename(settings.snapshot_dir)
    return count


# --------------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------------
def _check_port(name: str, settings: StackSettings) -> None:
    if _port_open(settings.host, settings.port(name)):
        raise StackError(f"port {settings.port(name)} on {settings.host} is taken by another process (not this "
                         f"stack's {name} in {settings.state_dir}); stop it or choose another port with "
                         f"SNOWCODER_{name.upper()}_PORT")


def _running(settings: StackSettings, name: str) -> int | None:
    """The pid of this stack's live process for `name` (from its pid file), else None."""
    pid = _read_pid(settings, name)
    return pid if pid is not None and _pid_alive(pid) and _is_ours(pid, name) else None


def up(settings: StackSettings | None = None, timings: dict[str, float] | None = None,
       services: tuple[str, ...] = SERVICES) -> dict[str, str]:
    """Start the services that are not running, wait until each is healthy, create the buckets, write <state>/env.

    Idempotent: a service whose pid file names a live process that answers its health URL is left alone.
    On failure everything started by this call is stopped again and a StackError (a UserError) is raised, its
    message ending in the tail of the failing service's log. `timings` (optional) receives seconds to healthy
    per service started by this call (and "buckets"). `services` picks a subset (e.g. ("s3",)).
    Returns the client environment (same as <state>/env).
    """
    settings = settings or StackSettings.from_env()
    timings = {} if timings is None else timings
    unknown = set(services) - set(SERVICES)
    if unknown:
        raise UserError(f"unknown stack service(s) {sorted(unknown)}; choose from {', '.join(SERVICES)}")
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    to_start = [name for name in SERVICES if name in services and _running(settings, name) is None]
    for name in to_start:  # every port is checked before anything starts
        _check_port(name, settings)
    # A first start that is interrupted (timeout, Ctrl-C) can leave a half-migrated database that the next start
    # cannot open; databases created by this call are removed again on failure.
    fresh_dbs = [db for db in (_database(name, settings) for name in to_start) if db and not db.exists()]
    started: list[str] = []
    try:
        # S3 first (MLflow's artifact store and the run roots live there), then MLflow and Prefect together:
        # both are CPU-bound at startup (imports, DB migrations); overlapping them saves several seconds.
        for group in (("s3",), ("mlflow", "prefect")):
            pending: dict[str, tuple[int, float]] = {}
            for name in (n for n in group if n in services):
                pid = _running(settings, name)
                if pid is None:
                    settings.pid_file(name).unlink(missing_ok=True)
                    pid = _start(name, settings)
                    started.append(name)
                elif _healthy(settings.health_url(name)):
                    log.info("%s already up (pid %d) at %s", name, pid, settings.url(name))
                    continue
                pending[name] = (pid, time.monotonic())  # just started, or ours and still starting
            for name, seconds in _wait_healthy(pending, settings).items():
                if name in started:
                    timings[name] = seconds
            if "s3" in group and "s3" in services:
                t0 = time.monotonic()
                client = s3_client(settings)
                restored = _restore_buckets(settings, client) if "s3" in started else 0
                for bucket in (settings.mlflow_bucket, settings.runs_bucket):
                    _ensure_bucket(client, bucket)
                timings["buckets"] = time.monotonic() - t0
                log.info("buckets %s, %s ready (%d objects restored from %s)", settings.mlflow_bucket,
                         settings.runs_bucket, restored, settings.snapshot_dir)
    except BaseException:
        for name in reversed(started):
            try:
                _stop(name, settings)
            except Exception as exc:  # keep the original error
                log.warning("while cleaning up %s: %s", name, exc)
        for db in fresh_dbs:
            _remove_database(db)
        raise
    return write_env_file(settings)


def down(settings: StackSettings | None = None, save_s3: bool = True) -> dict[str, bool]:
    """Stop the stack (Prefect, MLflow, then S3). Before S3 stops, its objects are saved to <state>/s3/ unless
    save_s3=False. Returns {service: whether a running process was stopped}. Raises StackError if a process
    survives SIGKILL."""
    settings = settings or StackSettings.from_env()
    result = {}
    for name in reversed(SERVICES):
        if name == "s3" and save_s3:
            if _running(settings, "s3") is not None and _healthy(settings.health_url("s3")):
                try:
                    count = _snapshot_buckets(settings)
                except Exception as exc:  # keep moto (and the objects in it) running
                    raise StackError(f"could not save the S3 objects to {settings.snapshot_dir} ({exc}); the S3 "
                                     "server is still running: retry, or stop it with `down --discard-s3`") from exc
                log.info("saved %d S3 objects to %s", count, settings.snapshot_dir)
        result[name] = _stop(name, settings)
        log.info("%s %s", name, "stopped" if result[name] else "was not running")
    return result


def status(settings: StackSettings | None = None) -> dict[str, dict]:
    """{service: {"up": healthy?, "url": ..., "pid": pid from the pid file or None, "running": pid alive?}}."""
    settings = settings or StackSettings.from_env()
    report = {}
    for name in SERVICES:
        pid = _read_pid(settings, name)
        report[name] = {"up": _healthy(settings.health_url(name)), "url": settings.url(name), "pid": pid,
                        "running": _running(settings, name) is not None}
    return report


# --------------------------------------------------------------------------------------------------------------------
# Command line: snowcoder stack up|down|status|env
# --------------------------------------------------------------------------------------------------------------------
_LABELS = {"s3": "S3 (moto)", "mlflow": "MLflow UI", "prefect": "Prefect UI"}


def _print_urls(settings: StackSettings) -> None:
    for name in ("prefect", "mlflow", "s3"):
        print(f"  {_LABELS[name]:<11} {settings.url(name)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="snowcoder stack", description="Local Prefect + MLflow + S3 (moto) stack.")
    parser.add_argument("--state-dir", default=None, help="state directory (default: $SNOWCODER_STACK_DIR or ./.stack)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start the stack (idempotent) and write <state>/env")
    p_down = sub.add_parser("down", help="stop the stack (saves the S3 objects to <state>/s3/ first)")
    p_down.add_argument("--discard-s3", action="store_true", help="do not save the S3 objects")
    sub.add_parser("status", help="each service up/down with its URL")
    sub.add_parser("env", help="print the export lines for clients")
    args = parser.parse_args(argv)
    if not log.handlers and not logging.getLogger().handlers:  # progress lines on stderr unless logging is set up
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("stack: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)

    try:
        overrides = {"state_dir": Path(args.state_dir)} if args.state_dir else {}
        settings = StackSettings.from_env(**overrides)
        if args.command == "up":
            t0 = time.monotonic()
            timings: dict[str, float] = {}
            up(settings, timings)
            took = ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
            if not set(timings) & set(SERVICES):
                took = "all services were already running"
            print(f"stack up in {time.monotonic() - t0:.1f} s ({took})")
            _print_urls(settings)
            print(f"  run roots   s3://{settings.runs_bucket}/<name>   (snowcoder run --run-root s3://{settings.runs_bucket}/tiny-1)")
            print(f"client environment: . {settings.env_file}   (or: eval \"$(snowcoder stack env)\")")
        elif args.command == "down":
            t0 = time.monotonic()
            result = down(settings, save_s3=not args.discard_s3)
            stopped = [name for name, was in result.items() if was]
            print(f"stack down in {time.monotonic() - t0:.1f} s: stopped {', '.join(stopped) or 'nothing (not running)'}")
        elif args.command == "status":
            report = status(settings)
            for name, info in report.items():
                state = "up" if info["up"] else ("starting/unhealthy" if info["running"] else "down")
                owner = f"pid {info['pid']}" if info["running"] else ("not ours" if info["up"] else "")
                print(f"  {_LABELS[name]:<11} {info['url']:<24} {state:<8} {owner}".rstrip())
            return 0 if all(info["up"] for info in report.values()) else 1
        elif args.command == "env":
            print(format_env(client_env(settings)), end="")
        return 0
    except UserError as exc:
        print(f"snowcoder stack: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("snowcoder stack: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
