"""`snowcoder deploy`: register deployments/prefect.yaml on the Prefect server that PREFECT_API_URL names.

It is the documented line, run for you:
    prefect work-pool create snowcoder-process --type process      # once; skipped when the pool exists
    SNOWCODER_HOME=$PWD prefect --no-prompt deploy --prefect-file deployments/prefect.yaml --all
then start a worker with `prefect worker start --pool snowcoder-process` (or `snowcoder deploy --worker`).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from snowcoder.config import UserError

REPO_ROOT = Path(__file__).resolve().parents[1]
PREFECT_FILE = REPO_ROOT / "deployments" / "prefect.yaml"
POOL = "snowcoder-process"


def _prefect(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "prefect", *args]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise UserError(f"`prefect {' '.join(args)}` failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return proc


def deploy(names: list[str] | None = None, pool: str = POOL) -> list[str]:
    """Create the process work pool if missing and register the deployments (all, or the named ones)."""
    env = dict(os.environ)
    if not env.get("PREFECT_API_URL"):
        raise UserError("PREFECT_API_URL is not set: start the local stack (`snowcoder stack up`, then "
                        "`source .stack/env`) or point it at your Prefect server")
    env.setdefault("SNOWCODER_HOME", str(REPO_ROOT))
    if _prefect("work-pool", "inspect", pool, env=env, check=False).returncode != 0:
        _prefect("work-pool", "create", pool, "--type", "process", env=env)
    selection = [arg for name in names for arg in ("--name", name)] if names else ["--all"]
    out = _prefect("--no-prompt", "deploy", "--prefect-file", str(PREFECT_FILE), *selection, env=env)
    return [line.strip() for line in out.stdout.splitlines() if "Deployment '" in line]


def worker_command(pool: str = POOL) -> list[str]:
    return [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool]
