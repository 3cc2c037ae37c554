"""Scale-out of the per-document stages (filter, decontaminate, annotate's scoring): one Prefect task per input shard, on any
Prefect task runner — threads in this process, or Dask workers (a local cluster, an existing scheduler, or a cluster
on Kubernetes / Slurm; see docs/scale-out.md).

The shard tasks only read and decide (tasks/shards.py); the merge writes the stage's outputs in this process, so the
Manifest (counts, stats, digest) and the parquet files are the same as the pure functions' (`filter_docs`,
`decontaminate`) whatever the runner.

    run_stage("filter", cfg.filter, crawl_manifest, out_dir, "dask")              # LocalCluster, one worker per core
    run_stage("decontaminate", cfg.decontam, m, out_dir, "tcp://scheduler:8786")  # an existing Dask scheduler
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

from prefect import flow, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from pydantic import BaseModel

from snowcoder.config import UserError
from snowcoder.manifest import Manifest
from tasks.decontam import decontaminate_shard, merge_decontaminate
from tasks.filters import filter_shard, merge_filter
from tasks.shards import Part, run_sharded

TASK_OPTS = dict(cache_policy=NO_CACHE, persist_result=False)
RUNNER_SPECS = "'threads' (default), 'dask', 'dask:<n_workers>', 'dask://host:port' or 'tcp://host:port'"


# --------------------------------------------------------------------------- task runners
def prefect_api_url() -> str | None:
    """The Prefect API this process talks to: PREFECT_API_URL (environment, profile or settings context), else the
    temporary server it runs in ephemeral mode; None before that server has started."""
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return PREFECT_API_URL.value()
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the process-wide instance that ephemeral clients use
    return server.api_url if server.running else None


def local_cluster(**kwargs: Any):
    """distributed.LocalCluster(**kwargs) whose worker processes report task runs to this process's Prefect API.

    Worker processes get this process's API as PREFECT_API_URL: inheriting the environment is not enough, as the URL
    may come from a settings context (prefect_test_harness) or, in ephemeral mode, from no setting at all - and then
    each worker would start a temporary server of its own (seconds each, on the same database). Dask's INFO lines
    (~70 per cluster, here and in the workers) are turned down to warnings unless DASK_LOGGING__DISTRIBUTED says
    otherwise. DaskTaskRunner calls this when the flow starts.
    """
    import dask
    from distributed import LocalCluster

    url = prefect_api_url()
    if url and kwargs.get("processes", True):
        kwargs["env"] = {"PREFECT_API_URL": url, **(kwargs.get("env") or {})}
    level = os.environ.get("DASK_LOGGING__DISTRIBUTED", "warning")
    logging.getLogger("distributed").setLevel(level.upper())
    with dask.config.set({"distributed.nanny.pre-spawn-environ.DASK_LOGGING__DISTRIBUTED": level}):
        return LocalCluster(**kwargs)


def task_runner(spec: str | None = None, *, n_workers: int | None = None, threads_per_worker: int = 1,
                processes: bool = True, cluster_kwargs: dict[str, Any] | None = None) -> TaskRunner:
    """A Prefect task runner from a short spec (config `data.task_runner`):

    None / "threads"          Prefect's default ThreadPoolTaskRunner (in this process).
    "dask" / "dask:<n>"       prefect_dask.DaskTaskRunner on a temporary LocalCluster (`local_cluster`) with `n`
                              (default: `n_workers`, else one per core) worker processes of `threads_per_worker`
                              threads. The stages are pure Python (the GIL): processes of one thread each scale.
    "dask://host:port",       DaskTaskRunner(address=...) on an existing scheduler (`dask scheduler`, a KubeCluster,
    "tcp://host:port", ...    a SLURMCluster...); dask:// is read as tcp://.

    `cluster_kwargs` are passed on to LocalCluster (e.g. dashboard_address=None, memory_limit="2GiB").
    """
    spec = (spec or "threads").strip()
    if spec == "threads":
        return ThreadPoolTaskRunner()
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise UserError(f"task runner {spec!r} needs prefect-dask (pip install prefect-dask)") from exc
    if spec == "dask" or spec.startswith("dask:") and not spec.startswith("dask://"):
        count = spec.partition(":")[2]
        if count and not (count.isdigit() and int(count) > 0):
            raise UserError(f"task runner {spec!r}: the number of Dask workers must be a positive integer")
        workers = int(count) if count else n_workers  # None: LocalCluster's default, one per core
        kwargs = {**({"n_workers": workers} if workers else {}), "threads_per_worker": threads_per_worker,
                  "processes": processes, **(cluster_kwargs or {})}
        return DaskTaskRunner(cluster_class=local_cluster, cluster_kwargs=kwargs)
    scheme, sep, rest = spec.partition("://")
    if sep and rest and scheme in ("dask", "tcp", "tls", "ucx", "inproc", "ws", "wss"):
        return DaskTaskRunner(address=("tcp://" + rest) if scheme == "dask" else spec)
    raise UserError(f"unknown task runner {spec!r}; use {RUNNER_SPECS}")


# --------------------------------------------------------------------------- the sharded stages
@dataclass(frozen=True)
class ShardedStage:
    shard: Callable[[Any, str, int], Part]  # (cfg, shard uri, index) -> partial
    merge: Callable[..., Manifest]  # (cfg, inp, parts, out_dir, started) -> Manifest


def _merge_filter(cfg: BaseModel, inp: Manifest, parts: list[Part], out_dir: str, started: float) -> Manifest:
    return merge_filter(inp, parts, out_dir, started=started)


STAGES: dict[str, ShardedStage] = {
    "filter": ShardedStage(filter_shard, _merge_filter),
    "decontaminate": ShardedStage(decontaminate_shard, merge_decontaminate),
}


@task(name="shard", task_run_name="{stage}-shard-{index}", **TASK_OPTS)
def shard_task(fn: Callable[[str, int], Part], uri: str, index: int, stage: str) -> Part:
    """One input shard: `fn(uri, index)` returns its decisions (small), no writes. Runs wherever the task runner
    puts it (a thread here, or a Dask worker, which gets `fn` pickled: the shard function and its config)."""
    return fn(uri, index)


@task(name="merge", task_run_name="{stage}-merge", **TASK_OPTS)
def merge_task(stage: str, cfg: BaseModel, inp: Manifest, parts: list[Part], out_dir: str, started: float) -> Manifest:
    """Apply the decisions and write the stage's outputs; called directly, so it runs in the flow's process."""
    return STAGES[stage].merge(cfg, inp, parts, out_dir, started)


def prefect_map(stage: str) -> Callable[[Callable[[str, int], Part], list[str], list[int]], list[Part]]:
    """A tasks.shards map_fn: one `shard_task` per shard on the current flow's task runner; waits for all."""
    def map_fn(fn: Callable[[str, int], Part], uris: list[str], indices: list[int]) -> list[Part]:
        return shard_task.map(unmapped(fn), uris, indices, unmapped(stage)).result()

    return map_fn


@flow(name="sharded-stage", flow_run_name="{stage}-sharded", persist_result=False, validate_parameters=False)
def sharded_stage_flow(stage: str, cfg: BaseModel, inp: Manifest, out_dir: str) -> Manifest:
    """Run `stage` ('filter' or 'decontaminate') shard by shard on this flow's task runner, then merge in this
    process. Choose the runner at call time: `sharded_stage_flow.with_options(task_runner=task_runner(spec))`."""
    if stage not in STAGES:
        raise UserError(f"stage {stage!r} cannot run sharded; sharded stages: {', '.join(STAGES)}")
    started = time.perf_counter()
    merge = lambda parts: merge_task(stage, cfg, inp, parts, out_dir, started)  # noqa: E731
    return run_sharded(partial(STAGES[stage].shard, cfg), inp.shard_uris("docs"), merge, map_fn=prefect_map(stage))


@flow(name="sharded-map", flow_run_name="{stage}-shards", persist_result=False, validate_parameters=False)
def sharded_map_flow(stage: str, fn: Callable[[str, int], Part], uris: list[str], indices: list[int]) -> list[Part]:
    """One `shard_task` per shard on this flow's task runner, for stages whose shard tasks write their own outputs
    (annotate's scoring: one resumable score file per shard); returns the partials."""
    return prefect_map(stage)(fn, uris, indices)


def runner_map(stage: str, runner: str | TaskRunner | None = None) -> Callable[..., list[Part]]:
    """A tasks.shards MapFn that runs the shard tasks as `sharded_map_flow` (a subflow inside a flow) on `runner`."""
    runner = runner if isinstance(runner, TaskRunner) else task_runner(runner)

    def map_fn(fn: Callable[[str, int], Part], uris: list[str], indices: list[int]) -> list[Part]:
        return sharded_map_flow.with_options(task_runner=runner)(stage, fn, uris, indices)

    return map_fn


def run_stage(stage: str, cfg: BaseModel, inp: Manifest, out_dir: str,
              runner: str | TaskRunner | None = None) -> Manifest:
    """`sharded_stage_flow` (a Prefect flow, or a subflow when called inside one) on `runner`: a spec for
    `task_runner()` or a TaskRunner instance (e.g. DaskTaskRunner(cluster_class=..., cluster_kwargs=...))."""
    runner = runner if isinstance(runner, TaskRunner) else task_runner(runner)
    return sharded_stage_flow.with_options(task_runner=runner)(stage, cfg, inp, out_dir)
