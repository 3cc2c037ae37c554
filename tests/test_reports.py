"""Figures, tables and markdown of snowcoder.reports, on small synthetic inputs (no pipeline run)."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from snowcoder import reports, storage
from snowcoder.manifest import Manifest

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- helpers
def metrics_rows(n: int, val_every: int | None = None, tokens_per_step: int = 1024) -> list[dict]:
    rows = []
    for s in range(1, n + 1):
        rows.append({"step": s, "loss": 7.0 - 0.01 * s, "lr": 1e-3 * s / n, "tokens": s * tokens_per_step})
        if val_every and s % val_every == 0:
            rows.append({"step": s, "val_loss": 7.1 - 0.01 * s})
    return rows


def line(ax, label: str):
    found = [ln for ln in ax.get_lines() if ln.get_label() == label]
    return found[0] if found else None


def legend_texts(fig: Figure) -> list[str]:
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None] + list(fig.legends)
    return [t.get_text() for lg in legends for t in lg.get_texts()]


def all_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def filter_manifest() -> Manifest:
    """Shaped like tasks/filters.py's output: 10 docs in, 1000 bytes in, 3 removed by two filters."""
    waterfall = [
        {"filter": "unknown-language", "docs_removed": 0, "bytes_removed": 0, "docs_remaining": 10},
        {"filter": "too-short", "docs_removed": 1, "bytes_removed": 10, "docs_remaining": 9},
        {"filter": "max-line-length", "docs_removed": 2, "bytes_removed": 290, "docs_remaining": 7},
        {"filter": "auto-generated", "docs_removed": 0, "bytes_removed": 0, "docs_remaining": 7},
    ]
    counts = {"docs_in": 10, "docs": 7, "excluded": 3, "bytes": 700, "bytes_removed": 300}
    by_reason = {w["filter"]: w["docs_removed"] for w in waterfall}
    return Manifest(stage="filter", counts=counts, stats={"waterfall": waterfall, "excluded_by_reason": by_reason})


def exclusions_frame(reasons_sizes: list[tuple[str, int]], stage: str = "filter") -> pd.DataFrame:
    return pd.DataFrame([{"doc_id": f"d{i}", "repo": "r", "path": f"p{i}.py", "source": "s", "stage": stage,
                          "reason": reason, "size_bytes": size} for i, (reason, size) in enumerate(reasons_sizes)],
                        columns=storage.EXCLUSION_COLUMNS)


# --------------------------------------------------------------------------- loss curves
def test_loss_curve_lines_val_points_and_lr_axis():
    rows = metrics_rows(60, val_every=20)
    fig = reports.loss_curve(rows, "alpha")
    ax = fig.axes[0]
    assert ax.get_title() == "alpha" and ax.get_xlabel() == "step" and "loss" in ax.get_ylabel()
    raw = line(ax, "train loss")
    assert list(raw.get_xdata()) == list(range(1, 61))
    assert np.allclose(raw.get_ydata(), [7.0 - 0.01 * s for s in range(1, 61)])
    smoothed = [ln for ln in ax.get_lines() if ln.get_label().startswith("train loss (EMA")]
    assert len(smoothed) == 1 and len(smoothed[0].get_ydata()) == 60
    val = line(ax, "validation loss")
    assert list(val.get_xdata()) == [20, 40, 60]
    assert np.allclose(val.get_ydata(), [6.9, 6.7, 6.5])
    lr_axes = [a for a in fig.axes if a.get_ylabel() == "learning rate"]
    assert len(lr_axes) == 1
    assert np.isclose(max(lr_axes[0].get_lines()[0].get_ydata()), 1e-3)
    assert {"train loss", "validation loss", "learning rate"} <= set(legend_texts(fig))


def test_loss_curve_without_val_loss_or_lr_and_from_dataframe():
    df = pd.DataFrame([{"step": s, "loss": 5.0 / s} for s in range(1, 6)])
    fig = reports.loss_curve(df, "beta")
    ax = fig.axes[0]
    assert line(ax, "validation loss") is None
    assert not any(a.get_ylabel() == "learning rate" for a in fig.axes)
    assert list(line(ax, "train loss").get_xdata()) == [1, 2, 3, 4, 5]
    # short curves are shown raw only (no smoothed duplicate)
    assert not any(ln.get_label().startswith("train loss (EMA") for ln in ax.get_lines())


@pytest.mark.parametrize("metrics", [[], None, pd.DataFrame(), [{"step": 3, "val_loss": 4.0}], [{"foo": 1}]])
def test_loss_curve_empty_or_partial_inputs(metrics):
    fig = reports.loss_curve(metrics, "empty")
    ax = fig.axes[0]
    assert ax.get_title() == "empty"
    has_val = isinstance(metrics, list) and metrics and "val_loss" in metrics[0]
    assert (line(ax, "validation loss") is not None) == bool(has_val)
    if not has_val:
        assert any("no metrics" in t for t in all_texts(ax))
    reports.figure_png(fig)  # draws without raising


def test_smooth_is_debiased_ema_and_identity_for_span_1():
    assert np.allclose(reports.smooth([3.0, 3.0, 3.0], span=5), [3.0, 3.0, 3.0])  # no pull towards 0 at the start
    assert np.allclose(reports.smooth([1.0, 2.0, 3.0], span=1), [1.0, 2.0, 3.0])
    y = reports.smooth([0.0] * 10 + [1.0] * 10, span=4)
    assert y[9] == 0.0 and 0.0 < y[10] < 1.0 and np.all(np.diff(y[10:]) > 0)
    assert len(reports.smooth([])) == 0


def test_loss_curves_puts_phases_end_to_end():
    metrics = {"alpha": metrics_rows(10, val_every=10), "beta": metrics_rows(5, val_every=5), "final": []}
    fig = reports.loss_curves(metrics)
    ax = fig.axes[0]
    beta = line(ax, "beta train")
    assert list(beta.get_xdata()) == [11, 12, 13, 14, 15]  # continues after alpha's 10 steps
    assert list(line(ax, "beta validation").get_xdata()) == [15]
    assert line(ax, "final train") is None
    assert "alpha train" in legend_texts(fig)
    empty = reports.loss_curves({"alpha": [], "beta": None})
    assert any("no metrics" in t for t in all_texts(empty.axes[0]))


def test_read_metrics_missing_file_and_truncated_line(tmp_path):
    assert reports.read_metrics(str(tmp_path / "nope.jsonl")) == []
    uri = tmp_path / "metrics.jsonl"
    uri.write_text('{"step": 1, "loss": 2.0}\n\n{"step": 1, "val_loss": 2.5}\n{"step": 2, "lo')
    assert reports.read_metrics(str(uri)) == [{"step": 1, "loss": 2.0}, {"step": 1, "val_loss": 2.5}]


# --------------------------------------------------------------------------- score histogram
def test_score_histogram_threshold_line_and_kept_share():
    rng = np.random.default_rng(0)
    scores = pd.DataFrame({"doc_id": range(130), "language": ["python"] * 100 + ["go"] * 29 + ["lua"],
                           "score": np.r_[rng.uniform(0, 1, 100), rng.uniform(0, 1, 29), [0.5]]})
    thresholds = {"python": 0.7, "go": 0.2, "lua": 0.5}
    fig = reports.score_histogram(scores, thresholds)
    panels = {ax.get_title().split(" (")[0]: ax for ax in fig.axes if ax.get_visible()}
    assert set(panels) == {"python", "go", "lua"}
    for lang, ax in panels.items():
        s = scores.loc[scores["language"] == lang, "score"]
        thr_line = [ln for ln in ax.get_lines() if ln.get_label().startswith("threshold")]
        assert len(thr_line) == 1 and np.isclose(thr_line[0].get_xdata()[0], thresholds[lang])
        dropped, kept = ax.containers  # stacked: [dropped, kept], each bar's own height
        assert sum(p.get_height() for p in kept) == (s >= thresholds[lang]).sum()
        assert sum(p.get_height() for p in dropped) == (s < thresholds[lang]).sum()
        share = (s >= thresholds[lang]).mean()
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert any(t.startswith("kept") and f"({share:.0%})" in t for t in legend)
        assert ax.get_xlabel() == "score" and ax.get_ylabel() == "files"
    assert panels["lua"].get_title() == "lua (1 file)"
    assert fig._suptitle is not None


def test_score_histogram_without_thresholds_empty_and_missing_language():
    scores = pd.DataFrame({"language": ["python", None, "python"], "score": [0.1, 0.2, np.nan]})
    fig = reports.score_histogram(scores, None)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert {ax.get_title().split(" (")[0] for ax in axes} == {"python", "unknown"}
    assert all(not ax.get_lines() for ax in axes)  # no threshold lines
    assert sum(p.get_height() for ax in axes for c in ax.containers for p in c) == 2  # the NaN score is dropped
    for empty in (None, pd.DataFrame(), pd.DataFrame({"language": [], "score": []})):
        fig = reports.score_histogram(empty, {"python": 0.5})
        assert any("no scores" in t for t in all_texts(fig.axes[0]))


def test_score_histogram_caps_the_number_of_panels():
    langs = [f"lang{i:02d}" for i in range(reports.MAX_LANGUAGES + 3)]
    scores = pd.DataFrame({"language": [lang for i, lang in enumerate(langs) for _ in range(i + 1)]})
    scores["score"] = 0.5
    fig = reports.score_histogram(scores, {})
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == reports.MAX_LANGUAGES
    assert "lang00" not in {ax.get_title().split(" (")[0] for ax in visible}  # the smallest are left out
    assert f"of {len(langs)} languages" in fig._suptitle.get_text()


# --------------------------------------------------------------------------- filter waterfall
def test_waterfall_rows_add_up():
    rows = reports.waterfall_rows(filter_manifest())
    names = ["input", "unknown-language", "too-short", "max-line-length", "auto-generated"]
    assert [r["filter"] for r in rows] == names
    assert rows[0]["docs_left"] == 10 and rows[0]["bytes_left"] == 1000
    removed = rows[1:]
    assert rows[0]["docs_left"] - sum(r["docs_removed"] for r in removed) == removed[-1]["docs_left"] == 7
    assert rows[0]["bytes_left"] - sum(r["bytes_removed"] for r in removed) == removed[-1]["bytes_left"] == 700
    for prev, row in zip(rows, rows[1:]):
        assert prev["docs_left"] - row["docs_removed"] == row["docs_left"]
        assert prev["bytes_left"] - row["bytes_removed"] == row["bytes_left"]
    json.dumps(rows)
    # the manifest's JSON form works the same
    assert reports.waterfall_rows(filter_manifest().model_dump(mode="json")) == rows


def test_waterfall_rows_from_exclusions_only():
    m = {"stage": "filter", "counts": {"docs": 5, "bytes": 500}, "stats": {}}
    excl = pd.concat([exclusions_frame([("too-short", 3), ("max-line-length", 100), ("too-short", 7)]),
                      exclusions_frame([("exact-duplicate", 999)], stage="dedup")])  # another stage's row: ignored
    rows = reports.waterfall_rows(m, excl)
    by = {r["filter"]: r for r in rows}
    assert by["too-short"]["docs_removed"] == 2 and by["too-short"]["bytes_removed"] == 10
    assert by["max-line-length"]["bytes_removed"] == 100
    assert "exact-duplicate" not in by
    assert rows[0]["docs_left"] == 8 and rows[0]["bytes_left"] == 610 and rows[-1]["docs_left"] == 5
    assert rows[-1]["bytes_left"] == 500


def test_waterfall_rows_zero_excluded_and_missing():
    m = Manifest(stage="filter", counts={"docs_in": 4, "docs": 4, "bytes": 40, "bytes_removed": 0},
                 stats={"waterfall": [{"filter": "too-short", "docs_removed": 0, "bytes_removed": 0}]})
    rows = reports.waterfall_rows(m, exclusions_frame([]))
    assert rows[-1] == {"filter": "too-short", "docs_removed": 0, "bytes_removed": 0, "docs_left": 4,
                        "bytes_left": 40}
    assert reports.waterfall_rows(None) == [{"filter": "input", "docs_removed": 0, "bytes_removed": 0,
                                             "docs_left": None, "bytes_left": None}]
    # docs known per reason but no bytes: bytes stay unknown (None), not invented
    only_docs = {"counts": {"docs": 3}, "stats": {"excluded_by_reason": {"too-short": 1}}}
    rows = reports.waterfall_rows(only_docs)
    assert rows[1]["docs_removed"] == 1 and rows[1]["bytes_removed"] is None and rows[1]["docs_left"] == 3


def test_filter_waterfall_bars():
    fig = reports.filter_waterfall(filter_manifest())
    docs_ax, bytes_ax = fig.axes[:2]
    assert [t.get_text() for t in docs_ax.get_yticklabels()] == [
        "unknown-language", "too-short", "max-line-length", "auto-generated"]
    assert [p.get_width() for p in docs_ax.containers[0]] == [0, 1, 2, 0]
    assert [p.get_width() for p in bytes_ax.containers[0]] == [0, 10, 290, 0]
    labels = [t.get_text() for t in docs_ax.texts]
    assert "2 (20.0%) → 7 left" in labels
    assert "files removed" in docs_ax.get_xlabel() and "bytes removed" in bytes_ax.get_xlabel()
    assert "3 of 10 files" in fig._suptitle.get_text()
    assert any(t.startswith("files removed") for t in legend_texts(fig))


@pytest.mark.parametrize("manifest", [None, {}, {"stage": "filter", "counts": {"docs_in": 3, "docs": 3}}])
def test_filter_waterfall_empty(manifest):
    fig = reports.filter_waterfall(manifest, exclusions_frame([]))
    assert any("no filters" in t for t in all_texts(fig.axes[0]))
    reports.figure_png(fig)


# --------------------------------------------------------------------------- phases
def summary(**overrides) -> dict:
    phases = [
        {"phase": "alpha", "heldout_loss": 3.2, "humaneval_pass@1": 0.05, "train_loss": 3.1, "tokens_trained": 1000},
        {"phase": "beta", "heldout_loss": 3.0, "humaneval_pass@1": 0.10, "train_loss": 2.9, "tokens_trained": 500},
        {"phase": "final", "heldout_loss": 2.9, "humaneval_pass@1": 0.15, "train_loss": 2.8, "tokens_trained": 200},
    ]
    return {"preset": "micro", "phases": phases, **overrides}


def test_phase_comparison_panels():
    fig = reports.phase_comparison(summary())
    pass_ax, loss_ax = fig.axes[:2]
    assert [p.get_height() for p in pass_ax.containers[0]] == pytest.approx([0.05, 0.10, 0.15])
    assert [t.get_text().split("\n")[0] for t in pass_ax.get_xticklabels()] == ["alpha", "beta", "final"]
    held = line(loss_ax, "held-out loss")
    assert list(held.get_ydata()) == pytest.approx([3.2, 3.0, 2.9])
    assert line(loss_ax, "final train loss (last log interval)") is not None
    assert pass_ax.get_ylabel() == "pass@1" and "loss" in loss_ax.get_ylabel()
    assert "pass@1" in legend_texts(fig) and "held-out loss" in legend_texts(fig)


def test_phase_comparison_missing_values():
    s = summary()
    s["phases"][1]["humaneval_pass@1"] = None
    s["phases"][2]["heldout_loss"] = float("nan")
    fig = reports.phase_comparison(s)
    pass_ax, loss_ax = fig.axes[:2]
    assert "n/a" in [t.get_text() for t in pass_ax.texts]
    assert list(line(loss_ax, "held-out loss").get_xdata()) == [0, 1]  # the NaN point is left out
    for row in s["phases"]:
        row["n_problems"] = 164
    assert "pass@1 (164 problems)" in legend_texts(reports.phase_comparison(s))
    for empty in (None, {}, {"phases": []}):
        fig = reports.phase_comparison(empty)
        assert any("no phases" in t for t in all_texts(fig.axes[0]))


# --------------------------------------------------------------------------- artifacts
def manifests() -> dict[str, Manifest]:
    return {
        "crawl": Manifest(stage="crawl", counts={"docs": 12, "bytes": 1200, "excluded": 2, "seconds": 0.5,
                                                 "files_seen": 14}, digest="aaaa"),
        "filter": filter_manifest(),
        "tokens": Manifest(stage="pack", counts={"n_docs": 7, "n_tokens": 5000, "seconds": 0.25}, digest="bbbb"),
        "train": Manifest(stage="train", counts={"tokens": 4096, "seconds": 1.0, "wall_seconds": 9.5,
                                                 "final_loss": 3.25, "val_loss": float("nan")}),
    }


def test_stats_table_rows_are_uniform_and_serialisable():
    rows = reports.stats_table(manifests())
    assert [r["stage"] for r in rows] == ["crawl", "filter", "tokens", "train"]
    keys = {tuple(r) for r in rows}
    assert len(keys) == 1
    assert set(rows[0]) >= {"stage", "docs", "tokens", "seconds", "digest"}
    by = {r["stage"]: r for r in rows}
    assert by["crawl"]["docs"] == 12 and by["crawl"]["digest"] == "aaaa" and "files_seen=14" in by["crawl"]["other"]
    assert by["tokens"]["docs"] == 7 and by["tokens"]["tokens"] == 5000 and by["tokens"]["step"] == "pack"
    assert by["train"]["seconds"] == 9.5  # the stage's wall time, not the training loop's
    assert by["train"]["tokens"] == 4096 and by["train"]["docs"] is None and by["train"]["digest"] is None
    text = json.dumps(rows, allow_nan=False)  # no NaN/inf, no numpy types
    assert "NaN" not in text
    assert reports.stats_table({}) == []


def test_phase_markdown_has_every_stage_and_the_link():
    url = "http://127.0.0.1:5000/#/experiments/1/runs/abc123"
    md = reports.phase_markdown("alpha", manifests(), url, {"heldout_loss": 3.14159, "humaneval_pass@1": 0.1,
                                                           "note": "a|b"})
    assert md.startswith("# Phase alpha")
    assert f"]({url})" in md
    for stage in ("crawl", "filter", "tokens", "train"):
        assert f"| {stage}" in md and f"**{stage}**" in md
    assert "3.142" in md and "a\\|b" in md  # pipes escaped so the table/list stays intact
    assert "`aaaa`" in md and "1.2 kB" in md
    table = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert len({ln.count("|") - ln.count("\\|") for ln in table}) == 1  # same number of cells on every line
    bare = reports.phase_markdown("beta", {}, None, None)
    assert "not recorded" in bare and "No stages" in bare


# --------------------------------------------------------------------------- output
def test_save_figure_writes_png_locally_and_through_fsspec(tmp_path):
    fig = reports.loss_curve(metrics_rows(3), "png")
    uri = reports.save_figure(fig, str(tmp_path / "plots" / "loss.png"))
    data = (tmp_path / "plots" / "loss.png").read_bytes()
    assert uri.endswith("loss.png") and data.startswith(PNG_MAGIC) and len(data) > 1000
    remote = "memory://snowcoder-reports-test/plots/loss.png"  # the remote branch of storage (as s3://)
    reports.save_figure(fig, remote)
    assert storage.read_bytes(remote).startswith(PNG_MAGIC)


def test_human_formatting():
    assert reports.human_bytes(2_932_141) == "2.93 MB" and reports.human_bytes(12) == "12 B"
    assert reports.human_bytes(None) == "-" and reports.human_number(math.nan) == "-"
    assert reports.human_number(231.0) == "231" and reports.human_number(1_131_338) == "1.13M"


def test_render_run_on_a_small_run_root(tmp_path):
    root = str(tmp_path)
    filter_manifest().save(storage.join(root, "phase1", "filter", "manifest.json"))
    storage.write_jsonl(storage.join(root, "phase1", "train", "metrics.jsonl"), metrics_rows(4, val_every=4))
    storage.write_parquet(pd.DataFrame({"doc_id": ["a", "b"], "language": ["python"] * 2, "score": [0.2, 0.9]}),
                          storage.join(root, "phase2", "annotate", "scores.parquet"))
    storage.write_json(storage.join(root, "phase2", "select", "manifest.json"),
                       {"stage": "select", "stats": {"thresholds": {"python": 0.9}}})
    storage.write_json(storage.join(root, "summary.json"), summary())
    written = reports.render_run(root)
    assert set(written) == {"filter-waterfall", "loss-alpha", "loss-phases", "score-histogram", "phase-comparison"}
    for uri in written.values():
        assert storage.read_bytes(uri).startswith(PNG_MAGIC)


# --------------------------------------------------------------------------- annotator calibration
def test_calibration_plot_points_counts_and_legend():
    bins = [{"lo": 0.0, "hi": 0.5, "n": 4, "mean_prob": 0.2, "frac_pos": 0.25},
            {"lo": 0.5, "hi": 1.0, "n": 6, "mean_prob": 0.8, "frac_pos": 0.5},
            {"lo": 0.9, "hi": 1.0, "n": 0, "mean_prob": None, "frac_pos": None}]  # an empty bin is not drawn
    fig = reports.calibration_plot(bins, benchmark_auc={"humaneval": 0.812})
    top, bottom = fig.axes[:2]
    curve = [ln for ln in top.get_lines() if ln.get_label().startswith("annotator")]
    assert len(curve) == 1
    assert list(curve[0].get_xdata()) == [0.2, 0.8] and list(curve[0].get_ydata()) == [0.25, 0.5]
    ece = (4 * 0.05 + 6 * 0.3) / 10
    assert f"ECE {ece:.3f}" in curve[0].get_label() and "humaneval ROC-AUC 0.812" in curve[0].get_label()
    assert [p.get_height() for p in bottom.patches] == [4, 6]
    for empty in (None, [], [{"lo": 0, "hi": 1, "n": 0, "mean_prob": None, "frac_pos": None}]):
        fig = reports.calibration_plot(empty)
        assert any("no calibration" in t for t in all_texts(fig.axes[0]))
