"""Run one training phase as an `accelerate launch -m model.train` subprocess.

The trainer (model/train.py) takes a plain JSON spec and runs on any node; this module localizes the inputs,
writes the spec, launches it with the committed accelerate config (infra/accelerate/<name>.yaml), streams its
output line by line, enforces a wall-clock timeout (killing the whole process group) and uploads the outputs.
"""
from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from snowcoder import storage
from snowcoder.config import ModelConfig, PhaseTrainConfig, TrainConfig, UserError
from snowcoder.manifest import Manifest

REPO_ROOT = Path(__file__).resolve().parents[1]
ACCELERATE_DIR = REPO_ROOT / "infra" / "accelerate"
TAIL_LINES = 40


def accelerate_config_path(name_or_path: str) -> Path:
    """'cpu' -> infra/accelerate/cpu.yaml; anything else is taken as a path to a config file."""
    named = ACCELERATE_DIR / f"{name_or_path}.yaml"
    path = named if named.is_file() else Path(name_or_path)
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in ACCELERATE_DIR.glob("*.yaml")))
        raise UserError(f"accelerate config {name_or_path!r} not found (named configs: {known}; or give a file path)")
    return path.resolve()


def launch_command(config_file: Path, spec_path: Path) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file),
            "-m", "model.train", "--spec", str(spec_path)]


def _run_streaming(cmd: list[str], env: dict, timeout_s: float, log: Callable[[str], None],
                   pid_file: Path | None = None) -> None:
    """Run cmd in its own process group, stream its merged output to `log`; raise RuntimeError on failure.
    The group id is kept in pid_file while it runs (see _stop_stale_trainer)."""
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1, errors="replace", start_new_session=True)
    if pid_file is not None:
        pid_file.write_text(str(proc.pid))

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            log(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        rc = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        reader.join(timeout=5)
        raise RuntimeError(f"training exceeded {timeout_s:.0f}s and was killed; last output:\n" + "\n".join(tail)) from None
    except BaseException:  # e.g. KeyboardInterrupt / flow cancellation: never leave a trainer running
        _kill_group(proc)
        raise
    reader.join(timeout=30)
    if pid_file is not None:
        pid_file.unlink(missing_ok=True)
    if rc != 0:
        raise RuntimeError(f"training failed (exit code {rc}); last output:\n" + "\n".join(tail))


def _stop_stale_trainer(pid_file: Path) -> None:
    """A run killed with SIGKILL cannot stop its trainer (own process group); the trainer notices within a step
    (watch_pid), but a resumed run must not overlap it: kill a group left in pid_file that still runs model.train."""
    if not pid_file.is_file():
        return
    with contextlib.suppress(ValueError, OSError):
        pgid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pgid}/cmdline").read_bytes().replace(b"\0", b" ")
        if b"model.train" in cmdline:
            os.killpg(pgid, signal.SIGKILL)
            for _ in range(50):
                if not Path(f"/proc/{pgid}").exists():
                    break
                time.sleep(0.1)
    pid_file.unlink(missing_ok=True)


def work_dir(out_dir: str) -> Path:
    """Where the trainer writes: `out_dir` itself when it is local. For a remote `out_dir` (s3://...), a local
    directory under the snowcoder cache that is the same for every run into that `out_dir`, so a run killed and
    started again on this machine continues from its resume checkpoint; it is removed once the outputs are uploaded.
    (A restart on another machine starts the phase over: resume checkpoints are not uploaded while training runs.)"""
    if not storage.is_remote(out_dir):
        return Path(out_dir).resolve()
    return storage.local_cache_dir() / "train-work" / hashlib.sha256(out_dir.encode()).hexdigest()[:16]


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM the trainer's process group (launcher + workers), SIGKILL it if still alive after 10 s."""
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def _dir_digest(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(path)).encode())
        with p.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def run_training(
    model_cfg: ModelConfig,
    phase_cfg: PhaseTrainConfig,
    train_cfg: TrainConfig,
    *,
    tokenizer_uri: str,
    train_tokens_uri: str,
    val_tokens_uri: str | None,
    init_from_uri: str | None,
    out_dir: str,
    seed: int,
    log: Callable[[str], None] = print,
    max_val_batches: int = 20,
    extra_env: dict[str, str] | None = None,
) -> Manifest:
    """Train one phase; returns Manifest(stage="train", uris {checkpoint, metrics, result}, counts from result.json).

    extra_env is added to the trainer's environment only (e.g. MLFLOW_RUN_ID), never to this process's.
    """
    config_file = accelerate_config_path(train_cfg.accelerate_config)
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        def local(uri: str | None) -> str | None:  # a local copy of a (possibly remote) input directory
            return str(stack.enter_context(storage.local_dir(uri))) if uri else None

        tokenizer_dir, train_dir = local(tokenizer_uri), local(train_tokens_uri)
        val_dir, init_dir = local(val_tokens_uri), local(init_from_uri)
        for name, d, must in (("tokenizer", tokenizer_dir, "tokenizer_config.json"), ("train tokens", train_dir, "meta.json"),
                              ("val tokens", val_dir, "meta.json"), ("init checkpoint", init_dir, "config.json")):
            if d is not None and not (Path(d) / must).is_file():
                raise UserError(f"{name} directory {d} has no {must}")
        n_tokens = json.loads((Path(train_dir) / "meta.json").read_text())["n_tokens"]
        if n_tokens < model_cfg.seq_len + 1:
            raise UserError(f"training data has {n_tokens} tokens: fewer than one sequence of {model_cfg.seq_len + 1}")
        work = work_dir(out_dir)
        work.mkdir(parents=True, exist_ok=True)

        spec = {
            "model": model_cfg.model_dump(mode="json"),
            "tokenizer_dir": tokenizer_dir, "train_tokens": train_dir, "val_tokens": val_dir, "init_from": init_dir,
            "out_dir": str(work), "seed": seed, "phase": phase_cfg.model_dump(mode="json"),
            "mixed_precision": train_cfg.mixed_precision, "max_val_batches": max_val_batches,
            "init_from_digest": _dir_digest(Path(init_dir)) if init_dir else None,
            "checkpoint_every_s": train_cfg.checkpoint_every_s, "checkpoint_every_steps": train_cfg.checkpoint_every_steps,
            "activation_checkpointing": train_cfg.activation_checkpointing, "compile": train_cfg.compile,
            "watch_pid": os.getpid(),
        }
        spec_path = work / "spec.json"
        spec_path.write_text(json.dumps(spec, indent=2) + "\n")
        _stop_stale_trainer(work / "trainer.pid")
        # a rerun into the same directory starts clean, except for a resume checkpoint (and the metrics it continues)
        (work / "result.json").unlink(missing_ok=True)
        shutil.rmtree(work / "checkpoint", ignore_errors=True)

        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
        env["PYTHONUNBUFFERED"] = "1"
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        if not _has_cuda():
            env.setdefault("ACCELERATE_USE_CPU", "1")  # multi-process configs then run gloo DDP on CPUs
        env.update(extra_env or {})
        cmd = launch_command(config_file, spec_path)
        log("launch: " + " ".join(cmd))
        _run_streaming(cmd, env, train_cfg.timeout_s, log, pid_file=work / "trainer.pid")

        result_path = work / "result.json"
        if not result_path.is_file():
            raise RuntimeError(f"training exited cleanly but wrote no {result_path}")
        result = json.loads(result_path.read_text())
        digest = _dir_digest(work / "checkpoint")
        storage.upload_dir(work, out_dir)
        if storage.is_remote(out_dir):  # uploaded: the local work directory has done its job
            shutil.rmtree(work, ignore_errors=True)

    counts = {k: float(v) for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    counts["wall_seconds"] = round(time.perf_counter() - t0, 2)
    return Manifest(
        stage="train",
        uris={"checkpoint": storage.join(out_dir, "checkpoint"), "metrics": storage.join(out_dir, "metrics.jsonl"),
              "result": storage.join(out_dir, "result.json"), "spec": storage.join(out_dir, "spec.json")},
        counts=counts,
        stats={"accelerate_config": str(config_file), "init_from": init_from_uri, "result": result},
        digest=digest,
    )
