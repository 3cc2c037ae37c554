"""The whole Arctic-SnowCoder recipe as one DAG: phase 1 (alpha) -> phase 2 (beta) -> phase 3 (final)."""
from __future__ import annotations

import platform
import subprocess
import time
from pathlib import Path

from prefect import flow, get_run_logger

from flows.common import STOPS, prefect_tags, reached
from flows.phase1 import phase1_flow
from flows.reporting import publish_pipeline
from flows.phase2 import phase2_flow
from flows.phase3 import phase3_flow
from snowcoder import storage, tracking
from snowcoder.config import PipelineConfig, UserError
from snowcoder.summary import build_summary

REPO_ROOT = Path(__file__).resolve().parents[1]


def _git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=5).stdout.strip() or "unknown"
    except Exception:
        return "unknown"


@flow(name="snowcoder-pipeline", log_prints=True)
def pipeline(config: PipelineConfig, until: str | None = None, refresh: str = "") -> dict:
    """Run all three phases (or stop after `until`, one of flows.common.STOPS); returns the summary (also written to
    <run root>/summary.json). Stages that finished in an earlier run with the same inputs, config and code are reused;
    a new `refresh` value makes the crawl read its sources again (what follows re-runs only if their content changed)."""
    if until is not None and until not in STOPS:
        raise UserError(f"unknown stop {until!r}; choose one of: {', '.join(STOPS)}")
    t0 = time.perf_counter()
    log = get_run_logger()
    digest = config.digest()
    storage.write_json(storage.join(config.run_root, "config.json"),
                       {"digest": digest, "config": config.model_dump(mode="json")})
    parent = tracking.start_parent(
        config.run_root,
        run_name=f"pipeline-{config.preset}" + (f"-until-{until}" if until else ""),
        tags={**prefect_tags(), "snowcoder.config_digest": digest, "snowcoder.preset": config.preset,
              "git_sha": _git_sha(), "snowcoder.run_root": config.run_root, "host": platform.node(),
              "snowcoder.until": until or "eval-final"},
        params={"preset": config.preset, "config_digest": digest, "run_root": config.run_root},
    )
    tracking.log_dict(parent, config.model_dump(mode="json"), "config.json")
    log.info("MLflow parent run %s (%s)", parent.run_id, parent.tracking_uri)
    with tracking.scope(parent):
        phases = [phase1_flow(config, parent, until, refresh)]
        if not reached(until, "eval-alpha"):
            phases.append(phase2_flow(config, parent, phases[0], until))
        if not reached(until, "eval-beta"):
            phases.append(phase3_flow(config, parent, phases[0], phases[1], until))
        for i, phase in enumerate(phases):  # side-by-side comparison on the parent run
            if "eval" not in phase.manifests:
                continue
            ev = phase.manifests["eval"].counts
            scores = {"humaneval_pass@1": ev.get("humaneval_pass@1", float("nan")),
                      "heldout_loss": ev.get("heldout_loss", float("nan")),
                      "solution_loss": ev.get("solution_loss", float("nan")),
                      **{k: v for k, v in ev.items() if "_pass@" in k}}  # every benchmark and verdict
            tracking.log_metrics(parent, {f"{phase.phase}.{k}": v for k, v in scores.items()})
            tracking.log_metrics(parent, scores, step=i)
        summary = build_summary(config, parent, phases, seconds=time.perf_counter() - t0)
        summary["until"] = until or "eval-final"
        summary_uri = storage.join(config.run_root, "summary.json")
        storage.write_json(summary_uri, summary)
        tracking.log_dict(parent, summary, "summary.json")
        publish_pipeline(summary, parent, phases)
    summary["summary_uri"] = summary_uri
    return summary
