"""What a phase shows once it is done: Prefect artifacts (markdown summary, stats table, link to the MLflow run) and
plots logged to MLflow (loss curve; filter waterfall in phase 1; annotator score histogram in phase 2).
The figures and tables come from snowcoder/reports.py (pure); this module only publishes them."""
from __future__ import annotations

import logging

from snowcoder import reports, storage, tracking
from snowcoder.tracking import Tracking

log = logging.getLogger("snowcoder.reporting")


def _artifacts(key: str, markdown: str, table: list[dict] | None = None, link: str | None = None,
               link_text: str = "MLflow run") -> None:
    """Prefect artifacts of the current flow run (keys: lowercase letters, digits, dashes)."""
    from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

    create_markdown_artifact(markdown=markdown, key=f"{key}-summary", description=f"{key}: what was done")
    if table:
        create_table_artifact(table=table, key=f"{key}-stages", description=f"{key}: one row per stage")
    if link:
        create_link_artifact(link=link, link_text=link_text, key=f"{key}-mlflow", description=f"{key}: MLflow run")


def publish_phase(result, run: Tracking) -> None:
    """Artifacts and plots of one finished phase (also when its stages were reused)."""
    m, phase = result.manifests, result.phase
    try:
        if "train" in m:
            tracking.log_figure(run, reports.loss_curve(reports.read_metrics(m["train"].uris["metrics"]),
                                                        f"Training loss ({phase})"), f"plots/loss-{phase}.png")
        if "filter" in m:
            exclusions = storage.read_shards(m["filter"].shard_uris("exclusions"), columns=storage.EXCLUSION_COLUMNS) \
                if m["filter"].shard_uris("exclusions") else None
            tracking.log_figure(run, reports.filter_waterfall(m["filter"], exclusions), "plots/filter-waterfall.png")
            tracking.log_dict(run, reports.waterfall_rows(m["filter"], exclusions), "filter-waterfall.json")
        if "annotate" in m and "scores" in m["annotate"].uris:
            scores = storage.read_parquet(m["annotate"].uris["scores"])
            thresholds = m["select"].stats.get("thresholds") if "select" in m else None
            tracking.log_figure(run, reports.score_histogram(scores, thresholds), "plots/score-histogram.png")
        extra = {k: v for k, v in result.row().items() if k in ("heldout_loss", "humaneval_pass@1", "tokens_trained")}
        _artifacts(phase, reports.phase_markdown(phase, m, tracking.run_url(run), extra), reports.stats_table(m),
                   tracking.run_url(run))
    except Exception as exc:  # reporting must never fail a finished phase
        log.warning("reporting for phase %s failed: %s", phase, exc)


def publish_pipeline(summary: dict, parent: Tracking, phases) -> None:
    """Cross-phase plots on the parent run, the plots folder of the run root, and the pipeline's artifacts."""
    try:
        tracking.log_figure(parent, reports.phase_comparison(summary), "plots/phase-comparison.png")
        metrics = {p.phase: reports.read_metrics(p.manifests["train"].uris["metrics"])
                   for p in phases if "train" in p.manifests}
        if metrics:
            tracking.log_figure(parent, reports.loss_curves(metrics), "plots/loss-phases.png")
        lines = ["# snowcoder run", "", f"run root: `{summary['run_root']}`", "",
                 "| phase | docs | tokens trained | held-out loss | HumanEval pass@1 |", "|---|---|---|---|---|"]
        for row in summary["phases"]:
            lines.append(f"| {row['phase']} | {row['docs']} | {row['tokens_trained']} | {row['heldout_loss']} | "
                         f"{row['humaneval_pass@1']} |")
        _artifacts("pipeline", "\n".join(lines), link=tracking.run_url(parent), link_text="MLflow parent run")
        # alpha -> beta -> final as one table in the MLflow UI (Artifacts, Evaluation tab): every benchmark's pass@k
        table = [{"phase": r["phase"], "heldout_loss": r["heldout_loss"], "solution_loss": r.get("solution_loss"),
                  **r.get("scores", {})}
                 for r in summary["phases"]]
        tracking.log_table(parent, table, "phase-comparison.json")
    except Exception as exc:
        log.warning("pipeline reporting failed: %s", exc)
