"""Reports: figures and small tables built from what a run leaves in its run root (pure functions).

Nothing here talks to Prefect or MLflow; the flows log what these functions return:
  - figures (matplotlib `Figure`, drawn with the Agg canvas, no pyplot global state, safe in threads):
      loss_curve          a phase's training loss per step (raw + smoothed), validation loss points, lr on a twin axis
      loss_curves         all phases on one continuous step axis (alpha -> beta -> final)
      score_histogram     phase-2 annotator scores per language, the selection threshold, the kept share
      calibration_plot    phase-2 annotator reliability diagram (held-out split), ECE and benchmark ROC-AUC
      filter_waterfall    docs and bytes each heuristic filter removed, and what remained after it
      phase_comparison    HumanEval pass@1 and held-out loss of alpha / beta / final
  - tables and text for Prefect artifacts (JSON-serialisable values only):
      waterfall_rows, stats_table, phase_markdown
  - save_figure(fig, uri) writes a PNG through snowcoder.storage (local path or s3://);
    render_run(run_root) draws every figure a finished run root supports.

Inputs are read where the stages write them (see `run_figures` for the paths). Every function accepts missing or
empty inputs (no validation loss, a language with one score, nothing excluded) and then draws what there is, with a
note in the axes instead of raising.
"""
from __future__ import annotations

import io
import json
import logging
import math
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from snowcoder import storage
from snowcoder.manifest import Manifest

log = logging.getLogger("snowcoder.reports")

PHASES = ("alpha", "beta", "final")
PHASE_DIRS = {"alpha": "phase1", "beta": "phase2", "final": "phase3"}
PASS_AT_1 = "humaneval_pass@1"
SCORE_BINS = 20  # same number of bins as tasks/annotate.py's stored histogram
MAX_LANGUAGES = 12  # score histogram panels; the remaining (smallest) languages are named in the title
BYTES_UNITS = ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB"))

COLORS = {"raw": "#9ecae1", "smooth": "#08519c", "val": "#d94801", "lr": "#636363", "kept": "#31a354",
          "dropped": "#bdbdbd", "threshold": "#d94801", "docs": "#3182bd", "bytes": "#756bb1", "left": "#252525"}
PHASE_COLORS = {"alpha": "#3182bd", "beta": "#31a354", "final": "#d94801"}


# =========================================================================== small helpers
def _figure(width: float = 8.0, height: float = 4.5) -> Figure:
    return Figure(figsize=(width, height), layout="constrained", dpi=100)


def _note(ax, text: str) -> None:
    """A grey message in the middle of an axes (used where there is nothing to draw)."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="#636363", fontsize=11)


def _number(value: Any) -> float | None:
    """A finite float, or None (None, NaN, inf, strings that are not numbers)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _jsonable(value: Any) -> Any:
    """Numbers as int when integral, NaN/inf as None, numpy scalars as Python: safe for a Prefect table artifact."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        x = float(value)
        if not math.isfinite(x):
            return None
        return int(x) if x.is_integer() and abs(x) < 2**53 else x
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


def human_bytes(n: float | None) -> str:
    """2932141 -> '2.93 MB'."""
    x = _number(n)
    if x is None:
        return "-"
    for scale, unit in BYTES_UNITS:
        if abs(x) >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.0f} B"


def human_number(n: float | None) -> str:
    """1131338 -> '1.13M', 0.1234567 -> '0.1235', 231.0 -> '231'."""
    x = _number(n)
    if x is None:
        return "-"
    if x.is_integer() and abs(x) < 1e5:
        return f"{int(x):,}"
    for scale, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.4g}"


def _as_dict(manifest: Manifest | Mapping | None) -> dict:
    """A Manifest (or its JSON form) as a plain dict with stage/uris/counts/stats/digest (missing parts empty)."""
    if manifest is None:
        d: dict = {}
    elif isinstance(manifest, Manifest):
        d = manifest.model_dump(mode="json")
    else:
        d = dict(manifest)
    return {"stage": d.get("stage", ""), "uris": d.get("uris") or {}, "counts": d.get("counts") or {},
            "stats": d.get("stats") or {}, "digest": d.get("digest") or ""}


def _first(counts: Mapping, *keys: str) -> float | None:
    for key in keys:
        x = _number(counts.get(key))
        if x is not None:
            return x
    return None


# =========================================================================== training loss
def read_metrics(uri: str) -> list[dict]:
    """Rows of a `metrics.jsonl` written by model/train.py (the file, or the training out_dir holding it; train rows:
    step, loss, lr, tokens, tok_per_s, elapsed_s; validation rows: step, val_loss). A missing file gives []; an
    unreadable line (a run killed mid-write) is skipped."""
    if not uri.endswith(".jsonl"):
        uri = storage.join(uri, "metrics.jsonl")
    if not storage.exists(uri):
        log.warning("no metrics at %s", uri)
        return []
    rows = []
    for line in storage.read_text(uri).splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            log.warning("skipping an unreadable line of %s", uri)
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _metric_frames(metrics: list[dict] | pd.DataFrame | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train rows: step, loss, lr[, tokens]; validation rows: step, val_loss), sorted by step, numeric."""
    df = pd.DataFrame(metrics) if not isinstance(metrics, pd.DataFrame) else metrics.copy()
    if df.empty or "step" not in df.columns:
        return pd.DataFrame(columns=["step", "loss", "lr"]), pd.DataFrame(columns=["step", "val_loss"])
    df = df.apply(pd.to_numeric, errors="coerce").dropna(subset=["step"])
    cols = [c for c in ("step", "loss", "lr", "tokens") if c in df.columns]
    train = df[cols].dropna(subset=["loss"]) if "loss" in df.columns else pd.DataFrame(columns=["step", "loss"])
    val = df[["step", "val_loss"]].dropna() if "val_loss" in df.columns else pd.DataFrame(columns=["step", "val_loss"])
    return train.sort_values("step").reset_index(drop=True), val.sort_values("step").reset_index(drop=True)


def smooth(values: Iterable[float], span: int | None = None) -> np.ndarray:
    """Bias-corrected exponential moving average (as TensorBoard's smoothing); span = points it averages over,
    default a tenth of the curve (at least 1: no smoothing for very short curves)."""
    y = np.asarray(list(values), dtype=float)
    if len(y) == 0:
        return y
    span = span or max(1, len(y) // 10)
    if span <= 1:
        return y.copy()
    return pd.Series(y).ewm(span=span, adjust=True).mean().to_numpy()  # adjust=True: the debiased average


def loss_curve(metrics: list[dict] | pd.DataFrame | None, title: str) -> Figure:
    """Training loss per optimizer step: raw (light) and smoothed (dark) lines, validation loss as points, the
    learning rate on a twin y axis (right). Axes: fig.axes[0] = loss, fig.axes[1] = lr (when recorded)."""
    train, val = _metric_frames(metrics)
    fig = _figure()
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    if train.empty and val.empty:
        _note(ax, "no metrics recorded")
        return fig
    handles = []
    if not train.empty:
        steps, loss = train["step"].to_numpy(), train["loss"].to_numpy()
        span = max(1, len(loss) // 10)
        smoothed = span > 2  # short curves (< 30 logged points) are shown raw only
        marker = "o" if len(steps) <= 30 else None
        (raw,) = ax.plot(steps, loss, color=COLORS["raw" if smoothed else "smooth"], lw=1 if smoothed else 2,
                         marker=marker, ms=3, label="train loss")
        handles.append(raw)
        if smoothed:
            (sm,) = ax.plot(steps, smooth(loss, span), color=COLORS["smooth"], lw=2,
                            label=f"train loss (EMA, {span} points)")
            handles.append(sm)
    if not val.empty:
        (v,) = ax.plot(val["step"].to_numpy(), val["val_loss"].to_numpy(), color=COLORS["val"], ls="--", marker="o",
                       ms=6, label="validation loss")
        handles.append(v)
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if "lr" in train.columns and train["lr"].notna().any():
        lr_ax = ax.twinx()
        lr_rows = train.dropna(subset=["lr"])
        (lr,) = lr_ax.plot(lr_rows["step"].to_numpy(), lr_rows["lr"].to_numpy(), color=COLORS["lr"], ls=":", lw=1.5,
                           label="learning rate")
        lr_ax.set_ylabel("learning rate")
        lr_ax.set_ylim(bottom=0)
        lr_ax.yaxis.set_major_formatter(lambda v, _pos: f"{v:.2g}")
        handles.append(lr)
    _tokens_axis(ax, train)
    # below the axes: inside, it would hide the end of the curve (best placement ignores the lr twin axis)
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=9)
    return fig


def _tokens_axis(ax, train: pd.DataFrame) -> None:
    """A secondary x axis in tokens on top, when tokens per step is constant (it is, for one training run)."""
    if "tokens" not in train.columns or len(train) < 1:
        return
    rows = train.dropna(subset=["tokens"])
    rows = rows[rows["step"] > 0]
    if rows.empty:
        return
    per_step = (rows["tokens"] / rows["step"]).to_numpy()
    if not np.allclose(per_step, per_step[0]) or per_step[0] <= 0:
        return
    k = float(per_step[0])
    top = ax.secondary_xaxis("top", functions=(lambda s: s * k, lambda t: t / k))
    top.set_xlabel("tokens")
    top.xaxis.set_major_formatter(lambda x, _pos: human_number(x))


def loss_curves(metrics_by_phase: Mapping[str, list[dict] | pd.DataFrame | None], title: str = "Training loss by phase"
                ) -> Figure:
    """All phases on one axis, one after the other (phase k's steps start where phase k-1 ended): smoothed training
    loss per phase and its validation points, with a dotted line at each phase boundary."""
    fig = _figure(9, 4.5)
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.set_xlabel("step (cumulative over phases)")
    ax.set_ylabel("loss (nats/token)")
    offset, drawn = 0.0, False
    for phase, metrics in metrics_by_phase.items():
        train, val = _metric_frames(metrics)
        color = PHASE_COLORS.get(phase, None)
        if not train.empty:
            steps = train["step"].to_numpy() + offset
            loss = train["loss"].to_numpy()
            ax.plot(steps, loss, color=color, lw=1, alpha=0.35)
            ax.plot(steps, smooth(loss), color=color, lw=2, label=f"{phase} train")
            drawn = True
        if not val.empty:
            ax.plot(val["step"].to_numpy() + offset, val["val_loss"].to_numpy(), color=color, ls="none", marker="o",
                    mec="black", label=f"{phase} validation")
            drawn = True
        last = max([offset] + [float(f["step"].max()) + offset for f in (train, val) if not f.empty])
        if drawn and last > offset:
            ax.axvline(last, color="#969696", ls=":", lw=1)
        offset = last
    if not drawn:
        _note(ax, "no metrics recorded")
        return fig
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    return fig


# =========================================================================== annotator scores
def score_histogram(scores: pd.DataFrame | None, thresholds: Mapping[str, float] | None = None,
                    bins: int = SCORE_BINS) -> Figure:
    """Annotator scores, one panel per language (largest first, at most MAX_LANGUAGES): a histogram stacked into
    kept (score >= the language's selection threshold) and dropped, the threshold as a vertical line, and the kept
    share in the legend. Without thresholds, plain histograms."""
    thresholds = {str(k): float(v) for k, v in (thresholds or {}).items() if _number(v) is not None}
    df = pd.DataFrame(columns=["language", "score"]) if scores is None else scores
    if "score" not in df.columns:
        df = pd.DataFrame(columns=["language", "score"])
    df = df.assign(score=pd.to_numeric(df["score"], errors="coerce"))
    df = df.assign(language=df["language"].fillna("unknown").astype(str) if "language" in df.columns else "all")
    df = df.dropna(subset=["score"])
    if df.empty:
        fig = _figure(6, 4)
        ax = fig.add_subplot()
        ax.set_title("Annotator scores")
        ax.set_xlabel("score")
        ax.set_ylabel("files")
        _note(ax, "no scores recorded")
        return fig

    sizes = df["language"].value_counts()
    languages = sorted(sizes.index[:MAX_LANGUAGES], key=lambda lang: (-sizes[lang], lang))
    ncols = min(3, len(languages))
    nrows = math.ceil(len(languages) / ncols)
    fig = _figure(4.2 * ncols + 0.6, 3.2 * nrows + 0.6)
    lo, hi = min(0.0, float(df["score"].min())), max(1.0, float(df["score"].max()))
    edges = np.linspace(lo, hi, bins + 1)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, lang in zip(axes.flat, languages):
        s = df.loc[df["language"] == lang, "score"].to_numpy()
        thr = thresholds.get(lang)
        ax.set_title(f"{lang} ({len(s):,} file{'' if len(s) == 1 else 's'})", fontsize=10)
        ax.set_xlabel("score")
        ax.set_ylabel("files")
        if thr is None:
            ax.hist(s, bins=edges, color=COLORS["docs"], label=f"all {len(s):,}")
        else:
            kept, dropped = s[s >= thr], s[s < thr]
            share = len(kept) / len(s)
            ax.hist([dropped, kept], bins=edges, stacked=True, color=[COLORS["dropped"], COLORS["kept"]],
                    label=[f"dropped {len(dropped):,}", f"kept {len(kept):,} ({share:.0%})"])
            ax.axvline(thr, color=COLORS["threshold"], ls="--", lw=1.5, label=f"threshold {thr:.3f}")
        ax.set_xlim(lo, hi)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(languages):]:
        ax.set_visible(False)
    rest = len(sizes) - len(languages)
    title = "Annotator scores per language" + (f" (largest {len(languages)} of {len(sizes)} languages)" if rest else "")
    fig.suptitle(title)
    return fig


def calibration_plot(bins: list[Mapping] | None, title: str = "Annotator calibration (held-out split)",
                     benchmark_auc: Mapping[str, float] | None = None) -> Figure:
    """Reliability diagram of the annotator on its held-out split: per probability bin, the fraction of positives
    against the mean predicted probability (the diagonal is perfect calibration), marker size ~ examples in the bin,
    with the example counts as bars below. `bins` as tasks.annotate.calibration_bins writes them (lo, hi, n,
    mean_prob, frac_pos); the benchmark ROC-AUCs, when given, go in the legend."""
    rows = [b for b in (bins or []) if b.get("n") and _number(b.get("mean_prob")) is not None
            and _number(b.get("frac_pos")) is not None]
    fig = _figure(6, 6)
    top, bottom = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    top.plot([0, 1], [0, 1], color=COLORS["dropped"], ls="--", lw=1, label="perfectly calibrated")
    top.set_title(title)
    top.set_ylabel("fraction of positives")
    bottom.set_xlabel("predicted probability")
    bottom.set_ylabel("examples")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    if not rows:
        _note(top, "no calibration data recorded")
        return fig
    n = np.array([b["n"] for b in rows], dtype=float)
    x = np.array([float(b["mean_prob"]) for b in rows])
    y = np.array([float(b["frac_pos"]) for b in rows])
    ece = float((n * np.abs(x - y)).sum() / n.sum())
    label = f"annotator (ECE {ece:.3f})"
    for name, auc in (benchmark_auc or {}).items():
        if _number(auc) is not None:
            label += f"\n{name} ROC-AUC {float(auc):.3f}"
    top.plot(x, y, color=COLORS["smooth"], marker="o", lw=1.5, label=label)
    top.scatter(x, y, s=20 + 200 * n / n.max(), color=COLORS["smooth"], alpha=0.4)
    top.grid(alpha=0.3)
    top.legend(fontsize=8, loc="upper left")
    lo = np.array([float(b.get("lo", 0.0)) for b in rows])
    hi = np.array([float(b.get("hi", 1.0)) for b in rows])
    bottom.bar(lo, n, width=hi - lo, align="edge", color=COLORS["docs"], edgecolor="white")
    bottom.yaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


# =========================================================================== filter waterfall
def _removed_per_filter(m: dict, exclusions: pd.DataFrame | None) -> list[tuple[str, int, int | None]]:
    """(filter, docs removed, bytes removed or None when unknown), in the order the filters ran.

    From the manifest's stats['waterfall'] (tasks/filters.py) when there, else from the exclusions table (its
    'reason' and 'size_bytes' columns, rows of this stage only), else from stats['excluded_by_reason'] (docs only)."""
    stats = m["stats"]
    excl = None
    if exclusions is not None and len(exclusions) and "reason" in exclusions.columns:
        excl = exclusions
        if "stage" in excl.columns and m["stage"]:
            excl = excl[excl["stage"].isin([m["stage"], None]) | excl["stage"].isna()]
        sizes = pd.to_numeric(excl["size_bytes"], errors="coerce").fillna(0) if "size_bytes" in excl.columns else None
        excl = pd.DataFrame({"reason": excl["reason"].astype(str),
                             "size_bytes": sizes if sizes is not None else np.nan})
    by_reason = excl.groupby("reason", sort=False)["size_bytes"] if excl is not None else None

    rows = []
    if stats.get("waterfall"):
        for r in stats["waterfall"]:
            name = str(r.get("filter"))
            docs = int(_number(r.get("docs_removed")) or 0)
            b = _number(r.get("bytes_removed"))
            if b is None and by_reason is not None and name in by_reason.groups:
                b = _number(by_reason.get_group(name).sum(min_count=1))
            rows.append((name, docs, None if b is None else int(b)))
        return rows
    order = list((stats.get("excluded_by_reason") or {}).keys())
    if excl is not None:
        counts = excl["reason"].value_counts()
        order += [r for r in counts.index if r not in order]
        for name in order:
            if name in by_reason.groups:
                b = _number(by_reason.get_group(name).sum(min_count=1))
                rows.append((name, int(counts[name]), None if b is None else int(b)))
            else:
                rows.append((name, 0, 0))
        return rows
    return [(str(k), int(_number(v) or 0), None) for k, v in (stats.get("excluded_by_reason") or {}).items()]


def waterfall_rows(filter_manifest: Manifest | Mapping | None, exclusions: pd.DataFrame | None = None) -> list[dict]:
    """The filter waterfall as table rows: {filter, docs_removed, bytes_removed, docs_left, bytes_left}, in the
    order the filters ran (each file is removed by the first filter that hits it), preceded by an 'input' row.

    docs_in = counts['docs_in'] (else kept docs + removed); bytes_in = counts['bytes'] + counts['bytes_removed'] (kept
    + removed bytes). bytes_removed/bytes_left are None where the run did not record bytes."""
    m = _as_dict(filter_manifest)
    removed = _removed_per_filter(m, exclusions)
    counts = m["counts"]
    docs_removed = sum(d for _, d, _ in removed)
    known_bytes = all(b is not None for _, _, b in removed)
    bytes_removed = sum(b for _, _, b in removed if b is not None)
    docs_in = _first(counts, "docs_in")
    if docs_in is None:
        kept = _first(counts, "docs")
        docs_in = None if kept is None else kept + docs_removed
    bytes_in = None
    if _first(counts, "bytes") is not None:
        bytes_in = _first(counts, "bytes") + (_first(counts, "bytes_removed") or (bytes_removed if known_bytes else 0))
    rows = [{"filter": "input", "docs_removed": 0, "bytes_removed": 0,
             "docs_left": None if docs_in is None else int(docs_in),
             "bytes_left": None if bytes_in is None else int(bytes_in)}]
    docs_left, bytes_left = docs_in, bytes_in
    for name, d, b in removed:
        docs_left = None if docs_left is None else docs_left - d
        bytes_left = None if bytes_left is None or b is None else bytes_left - b
        rows.append({"filter": name, "docs_removed": int(d), "bytes_removed": None if b is None else int(b),
                     "docs_left": None if docs_left is None else int(docs_left),
                     "bytes_left": None if bytes_left is None else int(bytes_left)})
    return rows


def filter_waterfall(filter_manifest: Manifest | Mapping | None, exclusions: pd.DataFrame | None = None) -> Figure:
    """Two panels, one horizontal bar per filter, top to bottom in the order the filters ran: files removed (left)
    and bytes removed (right), each bar labelled with what it removed (and its share of the input) and what was
    left after it. Filters that removed nothing keep their row, so the order stays readable."""
    rows = waterfall_rows(filter_manifest, exclusions)
    filters = [r for r in rows if r["filter"] != "input"]
    fig = _figure(12, 1.6 + 0.45 * max(len(filters), 3))
    axes = fig.subplots(1, 2, sharey=True)
    total_docs = sum(r["docs_removed"] for r in filters)
    total_bytes = sum(r["bytes_removed"] or 0 for r in filters)
    docs_in, bytes_in = rows[0]["docs_left"], rows[0]["bytes_left"]
    handles = []
    title = "Heuristic filters: what each removed"
    if docs_in:
        title += f" — {total_docs:,} of {docs_in:,} files ({total_docs / docs_in:.1%})"
    if bytes_in:
        title += f", {human_bytes(total_bytes)} of {human_bytes(bytes_in)} ({total_bytes / bytes_in:.1%})"
    fig.suptitle(title)
    for ax, kind, label, fmt in ((axes[0], "docs", "files", human_number), (axes[1], "bytes", "bytes", human_bytes)):
        total_in = rows[0][f"{kind}_left"]
        ax.set_title(f"{label} removed per filter", fontsize=10)
        ax.set_xlabel(f"{label} removed")
        if not filters:
            ax.set_ylabel("filter")
            _note(ax, "no filters recorded")
            continue
        y = np.arange(len(filters))
        widths = [r[f"{kind}_removed"] or 0 for r in filters]
        bars = ax.barh(y, widths, color=COLORS[kind],
                       label=f"{label} removed (bar label: removed, share of the input → {label} left after)")
        labels = []
        for r in filters:
            removed, left = r[f"{kind}_removed"], r[f"{kind}_left"]
            text = "n/a" if removed is None else fmt(removed)
            if removed is not None and total_in:
                text += f" ({removed / total_in:.1%})"
            if left is not None:
                text += f" → {fmt(left)} left"
            labels.append(text)
        ax.bar_label(bars, labels=labels, fontsize=8, padding=3)
        ax.set_yticks(y, [r["filter"] for r in filters])
        ax.set_ylim(len(filters) - 0.5, -0.5)  # first filter on top
        ax.set_xlim(0, max(widths + [1]) * 2.2)  # room for the labels right of the bars
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
        ax.xaxis.set_major_formatter(lambda v, _pos, f=fmt: f(v))
        ax.grid(alpha=0.3, axis="x")
        handles.append(bars)
    axes[0].set_ylabel("filter (in the order applied)")
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8)
    return fig


# =========================================================================== phases
def _phase_rows(summary: Mapping | None) -> list[dict]:
    rows = list((summary or {}).get("phases") or [])
    return [r for r in rows if isinstance(r, Mapping)]


def phase_comparison(summary: Mapping | None) -> Figure:
    """Two panels across phases (alpha, beta, final, in the summary's order): HumanEval pass@1 as bars from 0 (left),
    held-out loss and final training loss as lines with points on a zoomed axis (right; losses of consecutive phases
    differ in the second decimal). Each phase's tick says how many tokens it trained on; missing values read 'n/a'.
    Rows that carry `n_problems` (one value for all) get it in the pass@1 legend."""
    rows = _phase_rows(summary)
    fig = _figure(10, 4.4)
    ax_pass, ax_loss = fig.subplots(1, 2)
    fig.suptitle("Phases compared" + (f" — preset {summary['preset']}" if summary and summary.get("preset") else ""))
    for ax, title, ylabel in ((ax_pass, "HumanEval pass@1 (greedy)", "pass@1"),
                              (ax_loss, "Loss", "loss (nats/token)")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("phase (tokens trained)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, axis="y")
    if not rows:
        _note(ax_pass, "no phases recorded")
        _note(ax_loss, "no phases recorded")
        return fig
    x = np.arange(len(rows))
    ticks = [str(r.get("phase", i)) + (f"\n{human_number(r['tokens_trained'])}" if _number(r.get("tokens_trained"))
                                       is not None else "") for i, r in enumerate(rows)]

    passes = [_number(r.get(PASS_AT_1)) for r in rows]
    n_problems = {int(n) for n in (_number(r.get("n_problems")) for r in rows) if n is not None}
    pass_label = "pass@1" + (f" ({n_problems.pop()} problems)" if len(n_problems) == 1 else "")
    bars = ax_pass.bar(x, [p or 0 for p in passes], color=COLORS["docs"], width=0.6, label=pass_label)
    ax_pass.bar_label(bars, labels=["n/a" if p is None else f"{p:.1%}" for p in passes], padding=2, fontsize=9)
    ax_pass.set_ylim(0, min(1.0, max([p or 0 for p in passes] + [0.04]) * 1.25))
    ax_pass.yaxis.set_major_formatter(lambda v, _pos: f"{v:.0%}")
    ax_pass.set_xticks(x, ticks)
    ax_pass.set_xlim(-0.6, len(rows) - 0.4)
    ax_pass.legend(fontsize=8, loc="upper left")

    handles = []
    for key, label, color, style in (("heldout_loss", "held-out loss", COLORS["val"], "-"),
                                     ("train_loss", "final train loss (last log interval)", COLORS["left"], "--")):
        values = [_number(r.get(key)) for r in rows]
        pts = [(xi, v) for xi, v in zip(x, values) if v is not None]
        if not pts:
            continue
        (line,) = ax_loss.plot([p[0] for p in pts], [p[1] for p in pts], color=color, ls=style, marker="o", ms=6,
                               label=label)
        handles.append(line)
        if key == "heldout_loss":
            for xi, v in pts:
                ax_loss.annotate(f"{v:.3f}", (xi, v), textcoords="offset points", xytext=(0, 8), ha="center",
                                 fontsize=9, color=color)
    ax_loss.set_xticks(x, ticks)
    ax_loss.set_xlim(-0.4, len(rows) - 0.6)
    if handles:
        ax_loss.margins(y=0.2)
        ax_loss.legend(handles=handles, fontsize=8, loc="upper right")
    else:
        _note(ax_loss, "no losses recorded")
    return fig


# =========================================================================== Prefect artifacts
_DOCS_KEYS = ("docs", "n_docs", "unique_docs", "scored")
_TOKENS_KEYS = ("n_tokens", "tokens")
_SECONDS_KEYS = ("wall_seconds", "seconds")


def stats_table(manifests: Mapping[str, Manifest | Mapping]) -> list[dict]:
    """One row per stage for a Prefect table artifact, same keys in every row: stage (the phase's name for it),
    step (Manifest.stage), docs, bytes, tokens, excluded, seconds (stage wall time), digest, other (the remaining
    counts as 'key=value' text). Values are JSON-serialisable (None where a stage has no such count)."""
    rows = []
    for name, manifest in manifests.items():
        m = _as_dict(manifest)
        c = m["counts"]
        # the key each named column takes (the first present of its group); 'other' shows the rest
        docs_key = next((k for k in _DOCS_KEYS if _number(c.get(k)) is not None), None)
        tokens_key = next((k for k in _TOKENS_KEYS if _number(c.get(k)) is not None), None)
        seconds_key = next((k for k in _SECONDS_KEYS if _number(c.get(k)) is not None), None)
        taken = {docs_key, tokens_key, seconds_key, "bytes", "excluded"}
        other = {k: v for k, v in c.items() if k not in taken}
        rows.append({
            "stage": str(name),
            "step": m["stage"],
            "docs": _jsonable(c.get(docs_key)) if docs_key else None,
            "bytes": _jsonable(_number(c.get("bytes"))),
            "tokens": _jsonable(c.get(tokens_key)) if tokens_key else None,
            "excluded": _jsonable(_number(c.get("excluded"))),
            "seconds": None if seconds_key is None else round(float(c[seconds_key]), 2),
            "digest": m["digest"] or None,
            "other": ", ".join(f"{k}={human_number(v) if _number(v) is not None else v}" for k, v in other.items()),
        })
    return rows


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _fmt_count(key: str, value: Any) -> str:
    if "bytes" in key and "per" not in key and _number(value) is not None:
        return human_bytes(value)
    return human_number(value) if _number(value) is not None else str(value)


def phase_markdown(phase: str, manifests: Mapping[str, Manifest | Mapping], mlflow_url: str | None = None,
                   extra: Mapping[str, Any] | None = None) -> str:
    """A readable markdown summary of one phase for a Prefect markdown artifact: the MLflow link, headline numbers
    (`extra`, e.g. held-out loss, pass@1, checkpoint), a table of stages (key counts, seconds, digest) and every
    stage's full counts under it."""
    out = [f"# Phase {phase}", ""]
    out.append(f"MLflow run: [{mlflow_url}]({mlflow_url})" if mlflow_url else "MLflow run: not recorded")
    out.append("")
    if extra:
        out += ["## Results", ""]
        for key, value in extra.items():
            shown = f"{value:.4g}" if isinstance(value, float) and math.isfinite(value) else value
            out.append(f"- **{_md_cell(key)}**: {_md_cell('-' if value is None else shown)}")
        out.append("")
    rows = stats_table(manifests)
    if not rows:
        out.append("_No stages recorded._")
        return "\n".join(out) + "\n"
    total = sum(r["seconds"] or 0 for r in rows)
    out += ["## Stages", "", f"{len(rows)} stages, {total:.1f} s of stage time.", ""]
    out.append("| stage | docs | bytes | tokens | excluded | seconds | digest |")
    out.append("|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        cells = [r["stage"] + (f" ({r['step']})" if r["step"] and r["step"] != r["stage"] else ""),
                 human_number(r["docs"]), human_bytes(r["bytes"]), human_number(r["tokens"]),
                 human_number(r["excluded"]), "-" if r["seconds"] is None else f"{r['seconds']:.1f}",
                 f"`{r['digest']}`" if r["digest"] else "-"]
        out.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    out += ["", "## Counts per stage", ""]
    for name, manifest in manifests.items():
        counts = _as_dict(manifest)["counts"]
        shown = ", ".join(f"{k} {_fmt_count(k, v)}" for k, v in counts.items()) or "no counts"
        out.append(f"- **{_md_cell(name)}**: {_md_cell(shown)}")
    return "\n".join(out) + "\n"


# =========================================================================== output
def save_figure(fig: Figure, uri: str, dpi: int = 120) -> str:
    """Write `fig` as a PNG to `uri` (local path or s3://, through snowcoder.storage); returns the uri."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    storage.write_bytes(uri, buf.getvalue())
    return uri


def figure_png(fig: Figure, dpi: int = 120) -> bytes:
    """The PNG bytes of `fig` (for an MLflow log_image / artifact without a file)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _read_manifest(uri: str) -> dict | None:
    return storage.read_json(uri) if storage.exists(uri) else None


def _read_exclusions(manifest: dict | None) -> pd.DataFrame | None:
    if not manifest:
        return None
    uris = manifest.get("uris", {}).get("exclusions") or []
    uris = [uris] if isinstance(uris, str) else [u for u in uris if storage.exists(u)]
    return storage.read_shards(uris, columns=storage.EXCLUSION_COLUMNS) if uris else None


def run_figures(run_root: str) -> dict[str, Figure]:
    """Every figure a run root supports, by file stem. Reads:
      phase1/filter/manifest.json (+ its exclusions shards)   -> filter-waterfall
      phase{1,2,3}/train/metrics.jsonl                         -> loss-alpha, loss-beta, loss-final, loss-phases
      phase2/annotate/scores.parquet, phase2/select/manifest.json (stats.thresholds) -> score-histogram
      summary.json                                             -> phase-comparison
    Parts that are missing (a run still going, a phase that failed) are skipped."""
    figs: dict[str, Figure] = {}
    filt = _read_manifest(storage.join(run_root, "phase1", "filter", "manifest.json"))
    if filt:
        figs["filter-waterfall"] = filter_waterfall(filt, _read_exclusions(filt))
    metrics = {}
    for phase, folder in PHASE_DIRS.items():
        uri = storage.join(run_root, folder, "train", "metrics.jsonl")
        if storage.exists(uri):
            metrics[phase] = read_metrics(uri)
            figs[f"loss-{phase}"] = loss_curve(metrics[phase], f"Training loss — phase {folder[-1]} ({phase})")
    if metrics:
        figs["loss-phases"] = loss_curves(metrics)
    scores_uri = storage.join(run_root, "phase2", "annotate", "scores.parquet")
    if storage.exists(scores_uri):
        select = _read_manifest(storage.join(run_root, "phase2", "select", "manifest.json")) or {}
        figs["score-histogram"] = score_histogram(storage.read_parquet(scores_uri),
                                                  (select.get("stats") or {}).get("thresholds"))
    summary_uri = storage.join(run_root, "summary.json")
    if storage.exists(summary_uri):
        figs["phase-comparison"] = phase_comparison(storage.read_json(summary_uri))
    return figs


def render_run(run_root: str, out_dir: str | None = None) -> dict[str, str]:
    """Draw `run_figures(run_root)` and write them as `<out_dir>/<name>.png` (default <run_root>/plots)."""
    out_dir = out_dir or storage.join(run_root, "plots")
    return {name: save_figure(fig, storage.join(out_dir, f"{name}.png")) for name, fig in run_figures(run_root).items()}
