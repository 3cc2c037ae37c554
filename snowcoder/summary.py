"""The end-of-run summary: a table of phases and where everything is."""
from __future__ import annotations

from typing import Any


def build_summary(config, parent, phases, seconds: float) -> dict[str, Any]:
    from snowcoder import tracking

    return {
        "run_root": config.run_root,
        "preset": config.preset,
        "config_digest": config.digest(),
        "seconds": round(seconds, 1),
        "mlflow": {
            "tracking_uri": parent.tracking_uri,
            "experiment_id": parent.experiment_id,
            "parent_run_id": parent.run_id,
            "child_run_ids": {p.phase: p.mlflow_run_id for p in phases},
            "ui": tracking.ui_hint(parent.tracking_uri),
            "registered_models": {p.phase: f"models:/{config.train.registered_model}@{p.phase}" for p in phases
                                  if p.checkpoint and config.train.registered_model},
        },
        "phases": [p.row() for p in phases],
        "data": _data_counts(phases[0]),
        "synthetic": {k: phases[2].manifests["synthesize"].counts.get(k) for k in ("generated", "kept", "rejected")}
        if len(phases) > 2 else {},
        "reused_stages": sorted(f"{p.phase}/{stage}" for p in phases for stage, how in p.stages().items()
                                if how == "reused"),
    }


def _data_counts(alpha) -> dict[str, Any]:
    m = alpha.manifests
    return {
        "crawled_files": m["crawl"].counts.get("files_seen"),
        "after_filter": m["filter"].counts.get("docs"),
        "after_dedup": m["dedup"].counts.get("docs"),
        "after_decontamination": m["decontaminate"].counts.get("docs"),
        "train_docs": m["data"].counts.get("train", m["data"].counts.get("docs")),
        "heldout_docs": m["data"].counts.get("heldout"),
        "exclusions": {stage: m[stage].uris.get("exclusions") for stage in ("crawl", "filter", "dedup", "decontaminate")},
    }


def format_table(summary: dict[str, Any]) -> str:
    """Fixed-width table for the terminal."""
    head = ["phase", "docs", "tokens trained", "held-out loss", "HumanEval pass@1", "time (s)"]
    rows = []
    for p in summary["phases"]:
        rows.append([
            p["phase"],
            "-" if p["docs"] is None else str(p["docs"]),
            str(p["tokens_trained"]),
            "-" if p["heldout_loss"] is None else f"{p['heldout_loss']:.4f}",
            "-" if p["humaneval_pass@1"] is None else f"{p['humaneval_pass@1']:.4f}",
            f"{p['seconds']:.0f}",
        ])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    out = [line(head), line(["-" * w for w in widths])] + [line(r) for r in rows]
    out.append("")
    for p in summary["phases"]:
        if p["checkpoint"]:
            out.append(f"checkpoint {p['phase']:<5}: {p['checkpoint']}")
    if summary.get("reused_stages"):
        out.append(f"reused {len(summary['reused_stages'])} finished stage(s) from an earlier run in this run root "
                   "(same inputs, config and code); --no-reuse runs them again")
    ml = summary["mlflow"]
    out.append(f"MLflow: parent run {ml['parent_run_id']} in {ml['tracking_uri']}")
    out.append(f"        open the UI with: {ml['ui']}")
    if ml.get("registered_models"):
        out.append("        registry: " + ", ".join(ml["registered_models"].values()))
    return "\n".join(out)


def format_eval(manifest) -> str:
    """The table `snowcoder eval` prints: one row per benchmark (and verdict) with its pass@k."""
    benches = manifest.stats.get("benchmarks", {})
    ks = sorted({k for b in benches.values() for k in b if k.startswith("pass@")}, key=lambda k: int(k[5:]))
    head = ["benchmark", "tasks", "samples", *ks, "statuses"]
    rows = [[name, str(b["n_tasks"]), str(b["n_samples"]), *(f"{b[k]:.4f}" if k in b else "-" for k in ks),
             ", ".join(f"{s} {n}" for s, n in sorted(b["status_counts"].items()))] for name, b in benches.items()]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    out = [line(head), line(["-" * w for w in widths]), *(line(r) for r in rows)]
    if "heldout_loss" in manifest.counts:
        out.append(f"held-out loss: {manifest.counts['heldout_loss']:.4f}")
    out.append(f"per-sample verdicts: {manifest.uris['results']}")
    return "\n".join(out)
