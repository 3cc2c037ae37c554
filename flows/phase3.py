"""Phase 3 — enhanced pretraining with synthetic data (final): synthesize from top files -> mix -> train."""
from __future__ import annotations

import time

from prefect import flow, get_run_logger

from flows.common import PhaseResult, complete_phase, prefect_tags
from snowcoder import storage, tracking
from snowcoder.config import PipelineConfig
from snowcoder.manifest import Manifest
from snowcoder.tracking import Tracking
from tasks import steps


@flow(name="phase3-final", log_prints=True)
def phase3_flow(config: PipelineConfig, parent: Tracking, alpha: PhaseResult, beta: PhaseResult,
                until: str | None = None) -> PhaseResult:
    t0 = time.perf_counter()
    out = lambda stage: storage.join(config.run_root, "phase3", stage)  # noqa: E731
    with tracking.scope(tracking.start_child(parent, "phase3-final",
                                             tags={"snowcoder.phase": "final", **prefect_tags()})) as run:
        selected = beta.manifests["select"]
        m: dict[str, Manifest] = {}
        m["synthesize"] = m["data"] = steps.synth_task(config.synth, selected, config.all_benchmarks(),
                                                       out("synthesize"), run)
        tokenizer = alpha.manifests["tokenizer"]
        m["tokenize"] = steps.tokenize_task("tokenize-synthetic", config.tokenizer, tokenizer, m["synthesize"],
                                            out("shards-synthetic"), run)
        selected_tokens = beta.manifests["tokenize"]  # the phase-2 selection, tokenized in phase 2
        if m["synthesize"].counts.get("kept", 0) > 0:
            sources = [(m["tokenize"], config.synth.synthetic_weight),
                       (selected_tokens, 1.0 - config.synth.synthetic_weight)]
        else:
            get_run_logger().warning("no synthetic file passed validation: phase 3 trains on the phase-2 data alone")
            sources = [(selected_tokens, 1.0)]
        m["tokens"] = steps.pack_task(
            "pack-final", sources, out("tokens"), config.train.order, config.seed + 2,
            total_tokens=config.train.final.tokens if len(sources) > 1 else None, handle=run,
            max_repeat=config.train.final.max_repeat, language_shares=config.synth.language_shares or None,
        )
        tokenizer_dir = tokenizer.uris["tokenizer"]
        return complete_phase(config, "final", m, tokenizer_dir, alpha.manifests["heldout"].uris["tokens"],
                              beta.checkpoint, config.seed + 2, run, until, t0)
