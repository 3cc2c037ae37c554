"""Phase 2 — continued pretraining on high-quality data (beta): annotate -> select per language -> repeat -> train."""
from __future__ import annotations

import time

from prefect import flow

from flows.common import PhaseResult, train_and_evaluate
from snowcoder import storage, tracking
from snowcoder.config import PipelineConfig
from snowcoder.tracking import Tracking
from tasks import steps


@flow(name="phase2-beta", log_prints=True)
def phase2_flow(config: PipelineConfig, parent: Tracking, alpha: PhaseResult) -> PhaseResult:
    t0 = time.perf_counter()
    out = lambda stage: storage.join(config.run_root, "phase2", stage)  # noqa: E731
    run = tracking.start_child(parent, "phase2-beta", tags={"snowcoder.phase": "beta"})
    docs = alpha.manifests["data"]  # the decontaminated phase-1 training split

    scores = steps.annotate_task(config.annotate, docs, out("annotate"), config.seed, run)
    selected = steps.select_task(config.annotate, scores, docs, out("select"), run)
    tokenizer_dir = alpha.manifests["tokenizer"].uris["tokenizer"]
    tokens = steps.pack_task(
        "pack-beta", tokenizer_dir, [(selected.shard_uris("docs"), 1.0)], out("tokens"), config.train.order,
        config.seed + 1, repeat=config.train.beta.repeat, handle=run,
    )
    heldout = alpha.manifests["heldout"].uris["tokens"]
    trained, evaluated = train_and_evaluate(
        config, "beta", tokenizer_dir, tokens.uris["tokens"], heldout, alpha.checkpoint,
        storage.join(config.run_root, "phase2"), config.seed + 1, run,
    )
    tracking.finish(run)
    return PhaseResult(
        phase="beta",
        manifests={"annotate": scores, "select": selected, "data": selected, "tokens": tokens, "train": trained,
                   "eval": evaluated},
        mlflow_run_id=run.run_id,
        seconds=time.perf_counter() - t0,
    )
