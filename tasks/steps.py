"""Thin Prefect tasks over the pure stage functions in tasks/*.py.

Each task runs one stage, logs the stage's counts to the phase's MLflow run (explicit run id), saves the manifest
next to the stage's outputs and returns it. Data never passes through here: only configs, URIs and manifests.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import os
import signal
import time
from typing import Any, Callable

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed
from pydantic import BaseModel

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
from snowcoder.code import code_digest, module_closure as _module_closure  # noqa: F401
from snowcoder.manifest import Manifest
from snowcoder.tracking import Tracking

# Prefect's own result cache is off: reuse is keyed on content below and persisted next to the outputs (works for
# any run root, s3:// included, and survives the loss of the Prefect database).
TASK_OPTS = dict(cache_policy=NO_CACHE, persist_result=False)


def _logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except Exception:  # called outside a run (e.g. .fn() in a notebook)
        return logging.getLogger("snowcoder")


def reuse_enabled() -> bool:
    """SNOWCODER_REUSE=0 (or `snowcoder run --no-reuse`) re-runs every stage even when a finished one matches."""
    return os.environ.get("SNOWCODER_REUSE", "1").lower() not in ("0", "false", "no")


def _keyable(value: Any) -> Any:
    """What of a stage input decides its output: a manifest by its content digest (or, lacking one, its own cache
    key) and URIs; a config by its values."""
    if isinstance(value, Manifest):
        return {"stage": value.stage, "digest": value.digest or value.cache_key, "uris": value.uris}
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): _keyable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_keyable(v) for v in value]
    return value


def _is_default(value: Any, default: Any) -> bool:
    if default is inspect.Parameter.empty:
        return False
    try:
        return bool(value == default)
    except Exception:
        return False


def stage_key(stage: str, inputs: dict[str, Any], code: str) -> str:
    blob = json.dumps({"stage": stage, "inputs": _keyable(inputs), "code": code}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _finished(marker: str, key: str) -> Manifest | None:
    if not storage.exists(marker):
        return None
    try:
        done = Manifest.load(marker)
    except Exception:  # a torn or foreign file is not a finished stage
        return None
    return done if done.cache_key == key else None


def _log_manifest(stage: str, handle: Tracking | None, manifest: Manifest) -> None:
    if handle is None:
        return
    tracking.log_metrics(handle, {f"{stage}.{k}": v for k, v in manifest.counts.items()})
    tracking.log_metrics(handle, {f"{stage}.reused": float(manifest.reused)})
    tracking.log_dict(handle, manifest.model_dump(mode="json"), f"manifests/{stage}.json")


def stage_task(name: str, *, label: str | None = None, code: tuple[str, ...] = (), not_keyed: tuple[str, ...] = (),
               after: Callable[[Manifest, dict[str, Any]], None] | None = None) -> Callable:
    """Make a stage function (returning a Manifest) a Prefect task that is reused when already finished.

    The key covers the stage's arguments (configs by value, manifests by digest, URIs) and the code version of the
    `code` modules (`not_keyed` arguments or "arg.field" config fields that only set where or how fast work runs are
    left out). `<out_dir>/manifest.json` carrying that key is the stage's commit marker: it is written last, after
    every output, and removed before a re-run starts, so a run killed mid-stage re-runs that stage from scratch and
    reuses everything before it. A reused stage finishes in Prefect's `Cached` state and its counts are logged to the
    current MLflow run again (with `<stage>.reused = 1`). `after(manifest, arguments)` runs in both cases.
    Calling the result returns the Manifest; `.task` is the Prefect task (for `.submit` / `.map`).
    """
    def decorate(fn: Callable[..., Manifest]) -> Callable[..., Manifest]:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def body(*args, **kwargs):
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            arguments = dict(bound.arguments)
            handle, out_dir = arguments.get("handle"), arguments["out_dir"]
            stage = (label or name).format(**arguments)
            # arguments left at their default are not part of the key: a new optional argument keeps old work valid
            inputs = {k: v for k, v in arguments.items()
                      if k != "handle" and k not in not_keyed and not _is_default(v, sig.parameters[k].default)}
            for dotted in (n for n in not_keyed if "." in n):  # "cfg.workers": a config field that only sets speed
                arg, field = dotted.split(".", 1)
                value = inputs.get(arg)
                if isinstance(value, BaseModel):
                    value = value.model_dump(mode="json")
                if isinstance(value, dict):  # several fields of one config: the second sees the first's dict
                    inputs[arg] = {k: v for k, v in value.items() if k != field}
            key = stage_key(stage, inputs, code_digest(*code))
            marker = storage.join(out_dir, "manifest.json")
            log = _logger()
            done = _finished(marker, key) if reuse_enabled() else None
            if done is not None:
                done.reused = True
                log.info("%s: reused %s (finished earlier with the same inputs, config and code)", stage, out_dir)
                _log_manifest(stage, handle, done)
                if after:
                    after(done, arguments)
                return Completed(data=done, name="Cached", message=f"reused {marker}")
            if storage.exists(marker):
                storage.remove(marker)
            log.info("%s: start -> %s", stage, out_dir)
            t0 = time.perf_counter()
            manifest = fn(*args, **kwargs)
            if os.environ.get("SNOWCODER_FAILPOINT") == stage:  # fault injection: die with outputs written, uncommitted
                log.warning("%s: SNOWCODER_FAILPOINT: killing this process with SIGKILL", stage)
                os.kill(os.getpid(), signal.SIGKILL)
            seconds = time.perf_counter() - t0
            manifest.counts.setdefault("seconds", round(seconds, 3))
            manifest.cache_key = key
            manifest.save(marker)
            _log_manifest(stage, handle, manifest)
            if after:
                after(manifest, arguments)
            shown = ", ".join(f"{k}={v:g}" for k, v in manifest.counts.items() if isinstance(v, (int, float)))
            log.info("%s: done in %.1fs (%s)", stage, seconds, shown)
            return manifest

        prefect_task = task(name=name, **TASK_OPTS)(body)

        @functools.wraps(fn)
        def call(*args, **kwargs) -> Manifest:
            return prefect_task(*args, return_state=True, **kwargs).result()

        call.task = prefect_task
        return call

    return decorate


@stage_task("crawl", code=("tasks.crawl",))
def crawl_task(cfg: DataConfig, out_dir: str, handle: Tracking | None = None, refresh: str = "",
               source_list_digest: str = "") -> Manifest:
    """`refresh` and `source_list_digest` are only part of the reuse key: a new refresh value (scheduled refreshes)
    or an edited source-list file crawls the sources again."""
    from tasks.crawl import crawl

    return crawl(cfg, out_dir)


@stage_task("filter", code=("tasks.filters",), not_keyed=("task_runner",))
def filter_task(cfg: FilterConfig, inp: Manifest, out_dir: str, handle: Tracking | None = None,
                task_runner: str | None = None) -> Manifest:
    """task_runner: run one task per input shard there (flows/scale.py); the output is the same on every runner."""
    if task_runner:
        from flows.scale import run_stage

        manifest = run_stage("filter", cfg, inp, out_dir, task_runner)
        manifest.stats["task_runner"] = task_runner
        return manifest
    from tasks.filters import filter_docs

    return filter_docs(cfg, inp, out_dir)


@stage_task("dedup", code=("tasks.dedup",), not_keyed=("cfg.workers", "cfg.keep_work"))
def dedup_task(cfg: DedupConfig, inp: Manifest, out_dir: str, handle: Tracking | None = None) -> Manifest:
    from tasks.dedup import dedup

    return dedup(cfg, inp, out_dir)


@stage_task("decontaminate", code=("tasks.decontam",), not_keyed=("task_runner",))
def decontam_task(cfg: DecontamConfig, inp: Manifest, out_dir: str, handle: Tracking | None = None,
                  task_runner: str | None = None, benchmarks_digest: str = "") -> Manifest:
    """`benchmarks_digest` (the benchmark files' content) is only part of the reuse key: a replaced benchmark file
    at the same path decontaminates again."""
    if task_runner:
        from flows.scale import run_stage

        manifest = run_stage("decontaminate", cfg, inp, out_dir, task_runner)
        manifest.stats["task_runner"] = task_runner
        return manifest
    from tasks.decontam import decontaminate

    return decontaminate(cfg, inp, out_dir)


@stage_task("split", code=("tasks.split",))
def split_task(inp: Manifest, fraction: float, seed: int, out_dir: str, handle: Tracking | None = None) -> Manifest:
    from tasks.split import split_heldout

    return split_heldout(inp, fraction, seed, out_dir)


@stage_task("tokenizer", code=("tasks.tokenize",), not_keyed=("cfg.workers",))
def tokenizer_task(cfg: TokenizerConfig, inp: Manifest, out_dir: str, handle: Tracking | None = None) -> Manifest:
    from tasks.tokenize import train_tokenizer

    return train_tokenizer(cfg, inp.shard_uris("train"), out_dir)


@stage_task("tokenize", label="{stage}", code=("tasks.tokenize",), not_keyed=("cfg.workers",))
def tokenize_task(stage: str, cfg: TokenizerConfig, tokenizer: Manifest, docs: Manifest, out_dir: str,
                  handle: Tracking | None = None, key: str = "docs") -> Manifest:
    """One token shard per document shard of `docs.uris[key]`, cfg.workers processes at a time; a run killed
    mid-stage redoes only the shards it had not finished (tasks.tokenize.tokenize_shards)."""
    from tasks.tokenize import tokenize_shards

    return tokenize_shards(tokenizer.uris["tokenizer"], docs.shard_uris(key), out_dir, workers=cfg.workers)


@stage_task("subset-tokens", label="{stage}", code=("tasks.tokenize",))
def subset_task(stage: str, tokens: Manifest, docs: Manifest, out_dir: str, handle: Tracking | None = None) -> Manifest:
    """The documents of `docs` (a selection of the documents `tokens` was tokenized from) copied out of `tokens`'
    shards, not re-tokenized (tasks.tokenize.subset_shards); the same manifest shape as tokenize_task's."""
    from tasks.tokenize import subset_shards

    keep = storage.read_shards(docs.shard_uris("docs"), columns=["doc_id", "size_bytes"])
    return subset_shards(tokens.uris["tokens"], keep, out_dir)


@stage_task("pack-tokens", label="{stage}", code=("tasks.tokenize",))
def pack_task(
    stage: str,
    sources: list[tuple[Manifest, float]],
    out_dir: str,
    order: str,
    seed: int,
    repeat: int = 1,
    total_tokens: int | None = None,
    handle: Tracking | None = None,
    max_repeat: int | None = None,
    language_shares: dict[str, float] | None = None,
) -> Manifest:
    """Pack token shards: `sources` are (tokenize_task manifest, weight); keyed on the shards' content digests."""
    from tasks.tokenize import pack

    return pack([(m.uris["tokens"], weight) for m, weight in sources], out_dir, order=order, seed=seed,
                repeat=repeat, total_tokens=total_tokens, max_repeat=max_repeat, language_shares=language_shares)


def _log_training(manifest: Manifest, args: dict[str, Any]) -> None:
    """Params and the loss curve of a training phase, on its MLflow run (also when the phase is reused)."""
    from snowcoder.reports import read_metrics

    handle = args.get("handle")
    if handle is None:
        return
    tracking.log_params(
        handle,
        {"model": args["model_cfg"].model_dump(mode="json"), "train": args["phase_cfg"].model_dump(mode="json"),
         "accelerate_config": args["train_cfg"].accelerate_config, "init_from": args["init_from_uri"] or "scratch"},
    )
    tracking.log_metric_series(handle, read_metrics(manifest.uris["metrics"]))
    name = args["train_cfg"].registered_model
    if name:
        version = tracking.register_model(handle, manifest.uris["checkpoint"], name, alias=args["phase"],
                                          tags={"phase": args["phase"], "steps": str(manifest.counts.get("steps"))},
                                          digest=manifest.digest)
        tracking.set_tags(handle, {"snowcoder.registered_model": f"{name}/{version}@{args['phase']}"})


@stage_task("train", label="train-{phase}", code=("tasks.train", "model"), after=_log_training,
            # what only sets where/how often/how long, or belongs to another phase (phase_cfg is passed on its own)
            not_keyed=("train_cfg.registered_model", "train_cfg.timeout_s", "train_cfg.checkpoint_every_s",
                       "train_cfg.checkpoint_every_steps", "train_cfg.activation_checkpointing", "train_cfg.order",
                       "train_cfg.alpha", "train_cfg.beta", "train_cfg.final"))
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
    """Launch `accelerate launch ... -m model.train` as a subprocess and stream its output. A run killed mid-phase
    continues from the trainer's last resume checkpoint in out_dir."""
    from tasks.train import run_training

    log = _logger()
    return run_training(
        model_cfg, phase_cfg, train_cfg,
        tokenizer_uri=tokenizer_uri, train_tokens_uri=train_tokens_uri, val_tokens_uri=val_tokens_uri,
        init_from_uri=init_from_uri, out_dir=out_dir, seed=seed, log=lambda line: log.info("[%s] %s", phase, line),
    )


def _log_evaluation(manifest: Manifest, args: dict[str, Any]) -> None:
    handle = args.get("handle")
    if handle is None:
        return
    scores = {k: v for k, v in manifest.counts.items() if k in ("heldout_loss", "solution_loss") or "_pass@" in k}
    tracking.log_metrics(handle, scores)
    for name in ("samples", "results", "tasks"):
        if name in manifest.uris:
            tracking.log_file(handle, manifest.uris[name], "eval")


@stage_task("evaluate", label="eval-{phase}", code=("tasks.evaluate",), after=_log_evaluation)
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

    return evaluate(checkpoint_uri, cfg, out_dir, heldout_tokens_uri=heldout_tokens_uri, seq_len=seq_len)


def _log_annotation(manifest: Manifest, args: dict[str, Any]) -> None:
    """The annotator's validation on its phase's MLflow run (also when the stage is reused): per-language score
    quantiles as metrics, the held-out calibration plot with the benchmark ROC-AUCs, the score histogram with the
    selection threshold the select stage will apply, the validation JSON, and the exported HF model dir, registered
    as `annotate.registered_model`@phase2 (AutoModelForSequenceClassification, trust_remote_code=True)."""
    handle = args.get("handle")
    if handle is None:
        return
    from snowcoder import reports
    from tasks.annotate import selection_thresholds

    stats = manifest.stats
    quantiles = {f"annotate.score_{q}.{lang}": v for lang, row in (stats.get("per_language") or {}).items()
                 for q, v in row.items() if q != "n"}
    tracking.log_metrics(handle, quantiles)
    validation = stats.get("benchmark_validation") or {}
    tracking.log_dict(handle, {k: stats.get(k) for k in ("benchmark_validation", "calibration", "per_language")},
                      "annotator/validation.json")
    aucs = {name: v.get("auc") for name, v in validation.items() if isinstance(v, dict)}
    tracking.log_figure(handle, reports.calibration_plot(stats.get("calibration"), benchmark_auc=aucs),
                        "annotator/calibration.png")
    scores = storage.read_parquet(manifest.uris["scores"])
    tracking.log_figure(handle, reports.score_histogram(scores, selection_thresholds(args["cfg"], scores)),
                        "annotator/score-histogram.png")
    tracking.log_file(handle, manifest.uris["annotator_meta"], "annotator")
    name = args["cfg"].registered_model
    if name and manifest.uris.get("model"):  # a reused annotator (same head digest) is not uploaded again
        version = tracking.register_model(handle, manifest.uris["model"], name, alias="phase2",
                                          digest=manifest.stats["head_digest"],
                                          artifact_path="annotator/model", tags={"encoder": args["cfg"].encoder})
        tracking.set_tags(handle, {"snowcoder.registered_annotator": f"{name}/{version}@phase2"})


@stage_task("annotate", code=("tasks.annotate",), after=_log_annotation, not_keyed=("task_runner",))
def annotate_task(cfg: AnnotateConfig, docs: Manifest, out_dir: str, seed: int, handle: Tracking | None = None,
                  decontam: DecontamConfig | None = None, task_runner: str | None = None) -> Manifest:
    """task_runner: score one Prefect task per document shard there (flows/scale.py); the scores are the same."""
    from tasks.annotate import annotate

    map_fn = None
    if task_runner:
        from flows.scale import runner_map

        map_fn = runner_map("annotate", task_runner)
    manifest = annotate(cfg, docs, out_dir, seed=seed, decontam=decontam, map_fn=map_fn)
    if task_runner:
        manifest.stats["task_runner"] = task_runner
    return manifest


@stage_task("select", code=("tasks.annotate",))
def select_task(cfg: AnnotateConfig, scores: Manifest, docs: Manifest, out_dir: str, handle: Tracking | None = None) -> Manifest:
    from tasks.annotate import select

    return select(cfg, scores.uris["scores"], docs, out_dir)


def _log_synthesis(manifest: Manifest, args: dict[str, Any]) -> None:
    """The data card (seeds, generator, prompt digest, sampling, acceptance by reason) as a Markdown page and JSON on
    the phase's MLflow run; the manifest that holds it and the counts are logged by stage_task."""
    handle, card = args.get("handle"), manifest.stats.get("data_card")
    if handle is None or not card:
        return
    from tasks.synthesize import data_card_markdown

    tracking.log_text(handle, data_card_markdown(card), "data_cards/synthesize.md")
    tracking.log_dict(handle, card, "data_cards/synthesize.json")


# fields that set the phase-3 mixture (used after this stage) or only where and how fast generation runs
_SYNTH_NOT_KEYED = tuple(f"cfg.{name}" for name in ("language_shares", "synthetic_weight", "concurrency", "timeout_s",
                                                    "max_retries", "api_key_env", "secret_block", "exec_workers"))


@stage_task("synthesize", code=("tasks.synthesize",), not_keyed=_SYNTH_NOT_KEYED, after=_log_synthesis)
def _synth_stage(cfg: SynthConfig, seeds: Manifest, decontam_cfg: DecontamConfig, out_dir: str,
                 handle: Tracking | None = None, prompt_digest: str = "") -> Manifest:
    """prompt_digest is only part of the reuse key (a template is no Python module: the code digest misses it)."""
    from tasks.synthesize import synthesize

    return synthesize(cfg, seeds, out_dir, decontam_cfg=decontam_cfg)


def synth_task(
    cfg: SynthConfig, seeds: Manifest, decontam_cfg: DecontamConfig, out_dir: str, handle: Tracking | None = None
) -> Manifest:
    """The synthesize stage, reused only when the prompt template file (its sha256) is unchanged too."""
    from tasks.synthesize import load_template

    digest = load_template(cfg.prompt_template).digest
    return _synth_stage(cfg, seeds, decontam_cfg, out_dir, handle, prompt_digest=digest)


synth_task.task = _synth_stage.task  # type: ignore[attr-defined]
