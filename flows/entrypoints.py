"""Deployable flows: typed parameters (a preset + optional overrides), one per way users start work.

Each resolves its parameters into a PipelineConfig and runs the pipeline DAG up to its stop point. Stages that
already finished in the run root with the same inputs, config and code are reused, so `train(phase="beta")` on a
run root where phase 1 is done only annotates and trains, and `evaluate` on a trained run root only evaluates.
Registered by deployments/prefect.yaml (`snowcoder deploy`); the Prefect UI renders the parameters as a form and,
with enforce_parameter_schema, the server rejects out-of-bound values before a run starts.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from prefect import flow
from prefect.runtime import flow_run

from flows.pipeline import pipeline as pipeline_dag
from snowcoder.params import NO_OVERRIDES, PipelineOverrides, Preset, resolve

Phase = Literal["alpha", "beta", "final"]


def _run(preset: str, overrides, run_root: str | None, until: str | None, refresh: str = "") -> dict:
    config = resolve(preset, overrides, run_root)
    if "://" not in config.run_root:  # relative to where the worker runs (the checkout, see deployments/prefect.yaml)
        config.run_root = str(Path(config.run_root).resolve())
    return pipeline_dag(config, until=until, refresh=refresh)


@flow(name="snowcoder", log_prints=True)
def pipeline(preset: Preset = "tiny", overrides: PipelineOverrides = NO_OVERRIDES, run_root: str | None = None) -> dict:
    """The whole Arctic-SnowCoder recipe: phase 1 (alpha), phase 2 (beta), phase 3 (final), evaluated after each.

    Args:
        preset: Starting configuration: micro (tests, ~2 min on CPU), tiny (~7 min on 2 CPU cores), paper-1.3b (the paper's model and schedule, GPUs).
        overrides: Fields changed on top of the preset; empty fields keep the preset's value.
        run_root: Local directory or s3:// URL for all outputs (default: the preset's). Finished stages in it are reused.
    """
    return _run(preset, overrides, run_root, None)


@flow(name="snowcoder-data", log_prints=True)
def data(preset: Preset = "tiny", overrides: PipelineOverrides = NO_OVERRIDES, run_root: str | None = None,
         refresh_sources: bool = False) -> dict:
    """Phase-1 data: crawl, filter, dedup, decontaminate, split, tokenizer, packed tokens.

    Args:
        preset: Starting configuration (see the snowcoder flow).
        overrides: Fields changed on top of the preset; empty fields keep the preset's value.
        run_root: Local directory or s3:// URL for all outputs (default: the preset's).
        refresh_sources: Crawl the sources again even if an earlier crawl with the same settings finished (a scheduled refresh); later stages re-run only if the crawled content changed.
    """
    refresh = str(flow_run.scheduled_start_time or flow_run.id) if refresh_sources else ""
    return _run(preset, overrides, run_root, "data", refresh)


@flow(name="snowcoder-annotate", log_prints=True)
def annotate(preset: Preset = "tiny", overrides: PipelineOverrides = NO_OVERRIDES, run_root: str | None = None) -> dict:
    """Phase 2 data: train the quality annotator, score the phase-1 files, keep the top per language, pack.

    Args:
        preset: Starting configuration (see the snowcoder flow).
        overrides: Fields changed on top of the preset; empty fields keep the preset's value.
        run_root: Local directory or s3:// URL (default: the preset's); phase 1 is reused from it when finished.
    """
    return _run(preset, overrides, run_root, "annotate")


@flow(name="snowcoder-synthesize", log_prints=True)
def synthesize(preset: Preset = "tiny", overrides: PipelineOverrides = NO_OVERRIDES,
               run_root: str | None = None) -> dict:
    """Phase 3 data: an LLM writes problem + solution + tests files from top phase-2 seeds; validated, mixed, packed.

    Args:
        preset: Starting configuration (see the snowcoder flow).
        overrides: Fields changed on top of the preset; empty fields keep the preset's value.
        run_root: Local directory or s3:// URL (default: the preset's); earlier phases are reused from it when finished.
    """
    return _run(preset, overrides, run_root, "synthesize")


@flow(name="snowcoder-train", log_prints=True)
def train(phase: Phase = "alpha", preset: Preset = "tiny", overrides: PipelineOverrides = NO_OVERRIDES,
          run_root: str | None = None) -> dict:
    """Train one phase (and whatever it needs that is not finished yet in the run root).

    Args:
        phase: alpha (general pretraining), beta (high-quality continued pretraining) or final (with synthetic data).
        preset: Starting configuration (see the snowcoder flow).
        overrides: Fields changed on top of the preset; empty fields keep the preset's value.
        run_root: Local directory or s3:// URL (default: the preset's).
    """
    return _run(preset, overrides, run_root, f"train-{phase}")


@flow(name="snowcoder-evaluate", log_prints=True)
def evaluate(phase: Phase = "alpha", preset: Preset = "tiny", overrides: PipelineOverrides = NO_OVERRIDES,
             run_root: str | None = None) -> dict:
    """Evaluate one phase's checkpoint: HumanEval pass@1 (sandboxed) and held-out loss.

    Args:
        phase: alpha, beta or final.
        preset: Starting configuration (see the snowcoder flow).
        overrides: Fields changed on top of the preset; empty fields keep the preset's value.
        run_root: Local directory or s3:// URL (default: the preset's).
    """
    return _run(preset, overrides, run_root, f"eval-{phase}")
