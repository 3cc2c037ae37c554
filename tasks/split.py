"""Held-out split for validation loss: a deterministic function of (seed, doc_id), not of document order.

A doc is held out when sha1(f"{seed}:{doc_id}") mapped to [0, 1) is below `fraction`, so adding or removing other
documents never moves a doc between train and held-out. With fraction > 0 and at least 2 docs, at least one doc is
held out (the one with the smallest hash) and at least one stays in train.
"""
from __future__ import annotations

import hashlib
import logging

import pandas as pd

from snowcoder import storage
from snowcoder.config import UserError
from snowcoder.manifest import Manifest
from tasks.docio import read_docs, shard_docs_of

log = logging.getLogger("snowcoder.split")


def split_key(doc_id: str, seed: int) -> float:
    """Uniform in [0, 1), from sha1(seed:doc_id)."""
    return int(hashlib.sha1(f"{seed}:{doc_id}".encode()).hexdigest()[:15], 16) / 16**15


def heldout_mask(doc_ids: list[str], fraction: float, seed: int) -> list[bool]:
    keys = [split_key(d, seed) for d in doc_ids]
    mask = [k < fraction for k in keys]
    n = len(keys)
    if fraction > 0 and n >= 2:
        order = sorted(range(n), key=lambda i: (keys[i], doc_ids[i]))
        if not any(mask):
            mask[order[0]] = True
        if all(mask):
            mask[order[-1]] = False
    return mask


def _digest(train: pd.DataFrame, heldout: pd.DataFrame) -> str:
    h = hashlib.sha256()
    for tag, df in (("t", train), ("h", heldout)):
        for doc_id, sha in zip(df["doc_id"], df["content_sha256"]):
            h.update(f"{tag}:{doc_id}:{sha}\n".encode())
    return h.hexdigest()[:16]


def split_heldout(inp: Manifest, fraction: float, seed: int, out_dir: str) -> Manifest:
    """Split the input docs into train (`uris["train"]`, also `uris["docs"]`) and held-out (`uris["heldout"]`)."""
    if not 0.0 <= fraction < 1.0:
        raise UserError(f"held-out fraction must be in [0, 1), got {fraction}")
    docs = read_docs(inp)
    mask = pd.Series(heldout_mask(docs["doc_id"].tolist(), fraction, seed), index=docs.index, dtype=bool)
    train, heldout = docs[~mask].reset_index(drop=True), docs[mask].reset_index(drop=True)

    shard_docs = shard_docs_of(inp)
    storage.makedirs(out_dir)
    train_uris = storage.write_shards(train, out_dir, "train", shard_docs)
    heldout_uris = storage.write_shards(heldout, out_dir, "heldout", shard_docs)
    manifest = Manifest(
        stage="split",
        uris={"docs": train_uris, "train": train_uris, "heldout": heldout_uris, "exclusions": []},
        counts={
            "docs_in": float(len(docs)),
            "docs": float(len(train)),
            "heldout": float(len(heldout)),
            "bytes": float(train["size_bytes"].sum()),
            "heldout_bytes": float(heldout["size_bytes"].sum()),
        },
        stats={"fraction": fraction, "seed": seed, "shard_docs": shard_docs},
        digest=_digest(train, heldout),
    )
    log.info("split: %d train, %d held-out docs", len(train), len(heldout))
    return manifest
