"""Per-shard stages: run a stage's per-document decisions shard by shard, then merge them into the stage's outputs.

A sharded stage is a pair of pure functions:
  shard_fn(uri, index) -> dict   reads one input shard and returns a small JSON-able *partial*: its index, its URI,
                                 one decision per document (in row order) and a few numbers. No data, no writes.
  merge_fn(parts) -> Manifest    reads the input again, applies the decisions and writes the outputs exactly as the
                                 whole-stage function would (same shard layout, counts, stats and digest).

The partials carry decisions, not documents, because the outputs are re-sharded by `shard_docs` after rows are
dropped: an output shard mixes rows of several input shards, so per-input-shard output files could not give the
same layout. Workers therefore only read; all writing happens once, in the merge.

`run_sharded` is `merge_fn(map_fn(shard_fn, uris, indices))`: with the default `map_fn` (the built-in `map`) it runs
sequentially; flows/scale.py passes a mapper that runs each shard as a Prefect task on any task runner (threads, or
Dask workers). The stages' own in-process functions (`filter_docs`, `decontaminate`) read the input once and give each
shard function its rows (`split_by_shard`), so the default path reads no more than before sharding.
"""
from __future__ import annotations

import itertools
from typing import Any, Callable, Iterable

import pandas as pd
import pyarrow.parquet as pq

from snowcoder import storage
from snowcoder.code import code_digest
from snowcoder.config import UserError
from snowcoder.manifest import Manifest
from tasks.docio import read_docs

Part = dict[str, Any]
ShardFn = Callable[[str, int], Part]
MapFn = Callable[[ShardFn, list[str], list[int]], Iterable[Part]]


def code_version(*modules: str) -> str:
    """Digest of the code of `modules` and this module (snowcoder.code: with every module of ours they import, e.g.
    tasks.docio, which reads the shards). Partials carry it and the merge compares it with its own: a Dask worker
    running other code (a stale image or venv) would make other decisions, and must fail the stage instead of
    changing its outputs silently."""
    return code_digest(*modules, __name__)


def read_shard(uri: str) -> pd.DataFrame:
    """The documents of one shard, exactly as `read_docs` gives them for a whole manifest (missing columns added)."""
    return read_docs(Manifest(stage="shard", uris={"docs": [uri]}))


def shard_rows(uri: str) -> int:
    """Number of rows of a parquet shard, from its footer (the data is not read)."""
    fs, path = storage.fs_for(uri)
    with fs.open(path, "rb") as fh:
        return pq.ParquetFile(fh).metadata.num_rows


def split_by_shard(inp: Manifest, docs: pd.DataFrame) -> list[pd.DataFrame]:
    """`docs` = read_docs(inp), cut back into its input shards: the in-process path reads the input once and hands
    each shard function its rows, instead of each shard and then the merge reading them again."""
    ends = list(itertools.accumulate(shard_rows(u) for u in inp.shard_uris("docs")))
    if (ends[-1] if ends else 0) != len(docs):
        raise ValueError(f"{inp.stage}: shards hold {ends[-1] if ends else 0} rows, read {len(docs)}")
    return [docs.iloc[a:b] for a, b in zip([0, *ends[:-1]], ends)]


def ordered_parts(inp: Manifest, parts: Iterable[Part], key: str, code: str | None = None) -> list[Part]:
    """Partials sorted by shard index, checked against the input manifest: one per input shard, one decision per row.

    `key` names the per-row decision list in each partial. Raises ValueError when they do not fit (a bug or partials
    from another input), UserError when a partial's `code` version differs from `code` (a worker with other code).
    """
    parts = sorted(parts, key=lambda p: p["index"])
    for p in parts:
        if code is not None and p.get("code") != code:
            raise UserError(f"shard {p['index']} ran on a worker with other code (version {p.get('code')}, here "
                            f"{code}): give the Dask workers the same snowcoder version as the flow")
    uris = inp.shard_uris("docs")
    if [p["uri"] for p in parts] != uris or [p["index"] for p in parts] != list(range(len(uris))):
        raise ValueError(f"{inp.stage}: partial results do not match the input shards ({len(parts)} for {len(uris)})")
    for p in parts:
        if len(p[key]) != p["docs_in"]:
            raise ValueError(f"shard {p['index']}: {len(p[key])} decisions for {p['docs_in']} docs")
    return parts


def run_sharded(shard_fn: ShardFn, uris: list[str], merge_fn: Callable[[list[Part]], Manifest],
                map_fn: MapFn | None = None) -> Manifest:
    """merge_fn(map_fn(shard_fn, uris, indices)); sequential in this process when map_fn is None."""
    indices = list(range(len(uris)))
    parts = list((map_fn or map)(shard_fn, uris, indices))
    return merge_fn(parts)
