"""Thin Prefect tasks over the pure stage functions in tasks/*.py.

Each task runs one stage, logs the stage's counts to the phase's MLflow run (explicit run id), saves the manifest
next to the stage's outputs and returns it. Data never passes through here: only configs, URIs and manifests.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from snowcoder import storage, tracking
from snowcoder.config import (
    AnnotateConfig,
    DataConfig,
    DecontamConfig,
    DedupConfig,
    EvalConfig,
    FilterConfig,
    ModelConfig,
    PhaseTrainConfig,
    SynthConfig,
    TokenizerConfig,
    TrainConfig,
)
from snowcoder.manifest import Manifest
from snowcoder.tracking import Tracking

# Caching across runs is deliberate work (issue: resume and reuse); until then every task runs.
TASK_OPTS = dict(cache_policy=NO_CACHE, persist_result=False)


def _logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except Exception:  # called outside a run (e.g. .fn() in a notebook)
        return logging.getLogger("snowcoder")


def record(stage: str, handle: Tracking | None, out_dir: str, run: Callable[[], Manifest]) -> Manifest:
    """Run a stage, then save its manifest and log its counts (prefixed by stage) to MLflow."""
    log = _logger()
    log.info("%s: start -> %s", stage, out_dir)
    t0 = time.perf_counter()
    manifest = run()
    seconds = time.perf_counter() - t0
    manifest.counts.setdefault("seconds", round(seconds, 3))
    manifest.save(storage.join(out_dir, "manifest.json"))
    if handle is not None:
        tracking.log_metrics(handle, {f"{stage}.{k}": v for k, v in manifest.counts.items()})
        tracking.log_dict(handle, manifest.model_dump(mode="json"), f"manifests/{stage}.json")
    shown = ", ".join(f"{k}={v:g}" for k, v in manifest.counts.items() if isinstance(v, (int, float)))
    log.info("%s: done in %.1fs (%s)", stage, seconds, shown)
    return manifest


@task(name="crawl", **TASK_OPTS)
def crawl_task(cfg: DataConfig, out_dir: str, handle: Tracking | None = None) -> Manifest:
    from tasks.crawl import crawl

    return record("crawl", handle, out_dir, lambda: crawl(cfg, out_dir))


@task(name="filter", **TASK_OPTS)
def filter_task(cfg: FilterConfig, inp: Manifest, out_dir: str, handle: Tracking | None = None) -> Manifest:
    from tasks.filters import filter_docs

    return record("filter", handle, out_dir, lambda: filter_docs(cfg, inp, out_dir))


@task(name="dedup", **TASK_OPTS)
def dedup_task(cfg: DedupConfig, inp: Manifest, out_dir: str, handle: Tracking | None = None) -> Manifest:
    from tasks.dedup import dedup

    return record("dedup", handle, out_dir, lambda: dedup(cfg, inp, out_dir))


@task(name="decontaminate", **TASK_OPTS)
def decontam_task(cfg: DecontamConfig, inp: Manifest, out_dir: str, handle: Tracking | None = None) -> Manifest:
    from tasks.decontam import decontaminate

    return record("decontaminate", handle, out_dir, lambda: decontaminate(cfg, inp, out_dir))


@task(name="split-heldout", **TASK_OPTS)
def split_task(inp: Manifest, fraction: float, seed: int, out_dir: str, handle: Tracking | None = None) -> Manifest:
    from tasks.split import split_heldout

    return record("split", handle, out_dir, lambda: split_heldout(inp, fraction, seed, out_dir))


@task(name="train-tokenizer", **TASK_OPTS)
def tokenizer_task(cfg: TokenizerConfig, inp: Manifest, out_dir: str, handle: Tracking | None = None) -> Manifest:
    from tasks.tokenize import train_tokenizer

    return record("tokenizer", handle, out_dir, lambda: train_tokenizer(cfg, inp.shard_uris("train"), out_dir))


@task(name="pack-tokens", **TASK_OPTS)
def pack_task(
    stage: str,
    tokenizer_dir: str,
    sources: list[tuple[list[str], float]],
    out_dir: str,
    order: str,
    seed: int,
    repeat: int = 1,
    total_tokens: int | None = None,
    handle: Tracking | None = None,
    max_repeat: int | None = None,
) -> Manifest:
    from tasks.tokenize import pack

    return record(
        stage,
        handle,
        out_dir,
        lambda: pack(tokenizer_dir, sources, out_dir, order=order, seed=seed, repeat=repeat, total_tokens=total_tokens,
                     max_repeat=max_repeat),
    )


@task(name="train", **TASK_OPTS)
def train_task(
    phase: str,
    model_cfg: ModelConfig,
    phase_cfg: PhaseTrainConfig,
    train_cfg: TrainConfig,
    tokenizer_uri: str,
    train_tokens_uri: str,
    val_tokens_uri: str | None,
    init_from_uri: str | None,
    out_dir: str,
    seed: int,
    handle: Tracking | None = None,
) -> Manifest:
    """Launch `accelerate launch ... -m model.train` as a subprocess; stream its output; log the loss curve."""
    from tasks.train import read_metrics, run_training

    log = _logger()
    if handle is not None:
        tracking.log_params(
            handle,
            {"model": model_cfg.model_dump(mode="json"), "train": phase_cfg.model_dump(mode="json"),
             "accelerate_config": train_cfg.accelerate_config, "init_from": init_from_uri or "scratch"},
        )
    manifest = record(
        f"train-{phase}",
        handle,
        out_dir,
        lambda: run_training(
            model_cfg, phase_cfg, train_cfg,
            tokenizer_uri=tokenizer_uri, train_tokens_uri=train_tokens_uri, val_tokens_uri=val_tokens_uri,
            init_from_uri=init_from_uri, out_dir=out_dir, seed=seed, log=lambda line: log.info("[%s] %s", phase, line),
        ),
    )
    if handle is not None:
        tracking.log_metric_series(handle, read_metrics(manifest.uris["metrics"]))
    return manifest


@task(name="evaluate", **TASK_OPTS)
def eval_task(
    phase: str,
    cfg: EvalConfig,
    checkpoint_uri: str,
    heldout_tokens_uri: str | None,
    seq_len: int,
    out_dir: str,
    handle: Tracking | None = None,
) -> Manifest:
    from tasks.evaluate import evaluate

    manifest = record(
        f"eval-{phase}",
        handle,
        out_dir,
        lambda: evaluate(checkpoint_uri, cfg, out_dir, heldout_tokens_uri=heldout_tokens_uri, seq_len=seq_len),
    )
    if handle is not None:
        tracking.log_metrics(handle, {k: v for k, v in manifest.counts.items() if k in ("humaneval_pass@1", "heldout_loss")})
        for name in ("samples", "results"):
            if name in manifest.uris:
                tracking.log_file(handle, manifest.uris[name], "eval")
    return manifest


@task(name="annotate", **TASK_OPTS)
def annotate_task(cfg: AnnotateConfig, docs: Manifest, out_dir: str, seed: int, handle: Tracking | None = None) -> Manifest:
    from tasks.annotate import annotate

    return record("annotate", handle, out_dir, lambda: annotate(cfg, docs, out_dir, seed=seed))


@task(name="select", **TASK_OPTS)
def select_task(cfg: AnnotateConfig, scores: Manifest, docs: Manifest, out_dir: str, handle: Tracking | None = None) -> Manifest:
    from tasks.annotate import select

    return record("select", handle, out_dir, lambda: select(cfg, scores.uris["scores"], docs, out_dir))


@task(name="synthesize", **TASK_OPTS)
def synth_task(
    cfg: SynthConfig, seeds: Manifest, decontam_cfg: DecontamConfig, out_dir: str, handle: Tracking | None = None
) -> Manifest:
    from tasks.synthesize import synthesize

    return record("synthesize", handle, out_dir, lambda: synthesize(cfg, seeds, out_dir, decontam_cfg=decontam_cfg))
