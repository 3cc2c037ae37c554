"""Document I/O shared by the phase-1 stages: read a stage's input documents, build exclusion rows, write a stage's
outputs (docs + exclusions shards) with its content digest, document ids.

Kept apart from the crawler so that a stage's reuse key (tasks/steps.py hashes the source of the modules a stage
imports) does not change when the crawler does.
"""
from __future__ import annotations

import hashlib

import pandas as pd

from snowcoder import storage
from snowcoder.manifest import Manifest

DEFAULT_SHARD_DOCS = 1000


def read_docs(inp: Manifest) -> pd.DataFrame:
    """All documents of a stage's input manifest (`uris["docs"]`), in shard order."""
    df = storage.read_shards(inp.shard_uris("docs"))
    for col in storage.DOC_COLUMNS:
        if col not in df.columns:
            df[col] = pd.Series(dtype=object)
    return df.reset_index(drop=True)


def shard_docs_of(inp: Manifest) -> int:
    """Shard size chosen at crawl time (DataConfig.shard_docs), carried along in each manifest's stats."""
    return int(inp.stats.get("shard_docs", DEFAULT_SHARD_DOCS))


def exclusions_frame(docs: pd.DataFrame, stage: str, reasons: list[str] | pd.Series) -> pd.DataFrame:
    """Exclusion rows (storage.EXCLUSION_COLUMNS) for the documents `docs`, one reason each."""
    out = pd.DataFrame(
        {
            "doc_id": docs["doc_id"].to_numpy(),
            "repo": docs["repo"].to_numpy(),
            "path": docs["path"].to_numpy(),
            "source": docs["source"].to_numpy(),
            "stage": stage,
            "reason": list(reasons),
            "size_bytes": docs["size_bytes"].to_numpy(),
        },
        columns=storage.EXCLUSION_COLUMNS,
    )
    out["size_bytes"] = out["size_bytes"].astype("int64")
    return out


def _content_digest(docs: pd.DataFrame, excluded: pd.DataFrame) -> str:
    h = hashlib.sha256()
    for doc_id, sha in zip(docs["doc_id"], docs["content_sha256"]):
        h.update(f"d:{doc_id}:{sha}\n".encode())
    for doc_id, reason in zip(excluded["doc_id"], excluded["reason"]):
        h.update(f"x:{doc_id}:{reason}\n".encode())
    return h.hexdigest()[:16]


def write_stage_outputs(
    stage: str,
    docs: pd.DataFrame,
    excluded: pd.DataFrame,
    out_dir: str,
    shard_docs: int,
    counts: dict[str, float],
    stats: dict,
    extra_uris: dict | None = None,
) -> Manifest:
    """Write `docs-*.parquet` and `exclusions-*.parquet` under out_dir, save and return the stage's Manifest.

    The digest covers (doc_id, content_sha256) of kept docs and (doc_id, reason) of exclusions, in order, so it
    does not depend on the parquet writer's version.
    """
    storage.makedirs(out_dir)
    docs = docs.reset_index(drop=True)
    excluded = excluded.reset_index(drop=True)
    uris = {
        "docs": storage.write_shards(docs, out_dir, "docs", shard_docs),
        "exclusions": storage.write_shards(excluded, out_dir, "exclusions", shard_docs),
    }
    uris.update(extra_uris or {})
    stats = {**stats, "shard_docs": shard_docs}
    manifest = Manifest(
        stage=stage,
        uris=uris,
        counts={k: float(v) for k, v in counts.items()},
        stats=stats,
        digest=_content_digest(docs, excluded),
    )
    return manifest


def doc_id_for(source: str, repo: str, path: str) -> str:
    return hashlib.sha1(f"{source}:{repo}:{path}".encode()).hexdigest()[:16]
