"""Phase 1 — general pretraining (alpha): crawl -> filter -> dedup -> decontaminate -> split -> BPE -> token shards
-> pack -> train -> evaluate."""
from __future__ import annotations

import time

from prefect import flow

from flows.common import PhaseResult, complete_phase, prefect_tags
from snowcoder import storage, tracking
from snowcoder.config import PipelineConfig
from snowcoder.manifest import Manifest
from snowcoder.tracking import Tracking
from tasks import steps


def data_stages(config: PipelineConfig, run: Tracking | None, refresh: str = "") -> dict[str, Manifest]:
    """The phase-1 data: every stage reads the previous stage's manifest and writes under <run root>/phase1/."""
    out = lambda stage: storage.join(config.run_root, "phase1", stage)  # noqa: E731
    from tasks.decontam import benchmarks_digest
    from tasks.sources import source_list_digest

    m: dict[str, Manifest] = {}
    m["crawl"] = steps.crawl_task(config.data, out("crawl"), run, refresh, source_list_digest(config.data))
    m["filter"] = steps.filter_task(config.filter, m["crawl"], out("filter"), run, task_runner=config.data.task_runner)
    m["dedup"] = steps.dedup_task(config.dedup, m["filter"], out("dedup"), run)
    m["decontaminate"] = steps.decontam_task(config.decontam, m["dedup"], out("decontaminate"), run,
                                             task_runner=config.data.task_runner,
                                             benchmarks_digest=benchmarks_digest(config.decontam))
    m["data"] = steps.split_task(m["decontaminate"], config.data.heldout_fraction, config.seed, out("split"), run)
    m["tokenizer"] = steps.tokenizer_task(config.tokenizer, m["data"], out("tokenizer"), run)
    for split in ("train", "heldout"):
        m[f"tokenize-{split}"] = steps.tokenize_task(f"tokenize-{split}", config.tokenizer, m["tokenizer"], m["data"],
                                                     out(f"shards-{split}"), run, key=split)
    m["tokens"] = steps.pack_task("pack-train", [(m["tokenize-train"], 1.0)], out("tokens"), config.train.order,
                                  config.seed, handle=run)
    m["heldout"] = steps.pack_task("pack-heldout", [(m["tokenize-heldout"], 1.0)], out("tokens-heldout"), "random",
                                   config.seed, handle=run)
    return m


@flow(name="phase1-alpha", log_prints=True)
def phase1_flow(config: PipelineConfig, parent: Tracking, until: str | None = None, refresh: str = "") -> PhaseResult:
    t0 = time.perf_counter()
    with tracking.scope(tracking.start_child(parent, "phase1-alpha",
                                             tags={"snowcoder.phase": "alpha", **prefect_tags()})) as run:
        m = data_stages(config, run, refresh)
        return complete_phase(config, "alpha", m, m["tokenizer"].uris["tokenizer"], m["heldout"].uris["tokens"], None,
                              config.seed, run, until, t0)
