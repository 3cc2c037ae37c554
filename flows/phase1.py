"""Phase 1 — general pretraining (alpha): crawl -> filter -> dedup -> decontaminate -> tokenize -> train -> evaluate."""
from __future__ import annotations

import time

from prefect import flow

from flows.common import PhaseResult, train_and_evaluate
from snowcoder import storage, tracking
from snowcoder.config import PipelineConfig
from snowcoder.tracking import Tracking
from tasks import steps


@flow(name="phase1-alpha", log_prints=True)
def phase1_flow(config: PipelineConfig, parent: Tracking) -> PhaseResult:
    t0 = time.perf_counter()
    out = lambda stage: storage.join(config.run_root, "phase1", stage)  # noqa: E731
    run = tracking.start_child(parent, "phase1-alpha", tags={"snowcoder.phase": "alpha"})

    crawled = steps.crawl_task(config.data, out("crawl"), run)
    filtered = steps.filter_task(config.filter, crawled, out("filter"), run)
    deduped = steps.dedup_task(config.dedup, filtered, out("dedup"), run)
    clean = steps.decontam_task(config.decontam, deduped, out("decontaminate"), run)
    split = steps.split_task(clean, config.data.heldout_fraction, config.seed, out("split"), run)

    tok = steps.tokenizer_task(config.tokenizer, split, out("tokenizer"), run)
    tokenizer_dir = tok.uris["tokenizer"]
    train_tokens = steps.pack_task(
        "pack-train", tokenizer_dir, [(split.shard_uris("train"), 1.0)], out("tokens"),
        config.train.order, config.seed, handle=run,
    )
    heldout_tokens = steps.pack_task(
        "pack-heldout", tokenizer_dir, [(split.shard_uris("heldout"), 1.0)], out("tokens-heldout"),
        "random", config.seed, handle=run,
    )
    trained, evaluated = train_and_evaluate(
        config, "alpha", tokenizer_dir, train_tokens.uris["tokens"], heldout_tokens.uris["tokens"], None,
        storage.join(config.run_root, "phase1"), config.seed, run,
    )
    tracking.finish(run)
    return PhaseResult(
        phase="alpha",
        manifests={"crawl": crawled, "filter": filtered, "dedup": deduped, "decontaminate": clean, "data": split,
                   "tokenizer": tok, "tokens": train_tokens, "heldout": heldout_tokens, "train": trained,
                   "eval": evaluated},
        mlflow_run_id=run.run_id,
        seconds=time.perf_counter() - t0,
    )
