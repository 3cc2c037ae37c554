"""Phase 2 — continued pretraining on high-quality data (beta): annotate -> select per language -> repeat -> train."""
from __future__ import annotations

import time

from prefect import flow

from flows.common import PhaseResult, complete_phase, prefect_tags
from snowcoder import storage, tracking
from snowcoder.config import PipelineConfig
from snowcoder.manifest import Manifest
from snowcoder.tracking import Tracking
from tasks import steps


@flow(name="phase2-beta", log_prints=True)
def phase2_flow(config: PipelineConfig, parent: Tracking, alpha: PhaseResult, until: str | None = None) -> PhaseResult:
    t0 = time.perf_counter()
    out = lambda stage: storage.join(config.run_root, "phase2", stage)  # noqa: E731
    with tracking.scope(tracking.start_child(parent, "phase2-beta",
                                             tags={"snowcoder.phase": "beta", **prefect_tags()})) as run:
        docs = alpha.manifests["data"]  # the decontaminated phase-1 training split
        m: dict[str, Manifest] = {}
        m["annotate"] = steps.annotate_task(config.annotate, docs, out("annotate"), config.seed, run,
                                            decontam=config.all_benchmarks(), task_runner=config.data.task_runner)
        m["select"] = m["data"] = steps.select_task(config.annotate, m["annotate"], docs, out("select"), run)
        tokenizer = alpha.manifests["tokenizer"]
        # the selected files' tokens, copied out of phase 1's token shards (tokenized once, in phase 1)
        m["tokenize"] = steps.subset_task("tokens-beta", alpha.manifests["tokenize-train"], m["select"], out("shards"),
                                          run)
        m["tokens"] = steps.pack_task(
            "pack-beta", [(m["tokenize"], 1.0)], out("tokens"), config.train.order, config.seed + 1,
            repeat=config.train.beta.repeat, handle=run,
        )
        tokenizer_dir = tokenizer.uris["tokenizer"]
        return complete_phase(config, "beta", m, tokenizer_dir, alpha.manifests["heldout"].uris["tokens"],
                              alpha.checkpoint, config.seed + 1, run, until, t0)
