"""Deduplication: exact (normalised content hash), then near-duplicates with MinHash + LSH.

Arctic-SnowCoder's phase-1 data is deduplicated (arXiv 2409.02326 §2.2) without published parameters, so we follow
BigCode's near-dedup (bigcode-dataset `near_deduplication/minhash_deduplication.py`, used for The Stack/StarCoder):
shingles are 5-grams of tokens split on `[^A-Za-z_0-9]+`, MinHash signatures (datasketch), LSH at Jaccard 0.7,
candidate pairs merged with union-find, one survivor per cluster. See shared/reference/data-curation.md §4.
One addition: LSH candidates are confirmed by their estimated Jaccard (signature agreement) >= threshold before
they are merged (text-dedup's optional verification), which removes LSH false positives at ~no cost.

Survivors: exact duplicates keep the first file by (repo, path); a near-duplicate cluster keeps its longest file
(ties -> smallest (repo, path)). Every removed file is listed in the exclusions with the survivor's doc_id:
"exact-duplicate-of:<doc_id>" / "near-duplicate-of:<doc_id>".
"""
from __future__ import annotations

import hashlib
import logging
import re
import time
from typing import Iterable

import pandas as pd
from datasketch import LeanMinHash, MinHash, MinHashLSH

from snowcoder.config import DedupConfig
from snowcoder.manifest import Manifest
from tasks.crawl import exclusions_frame, read_docs, shard_docs_of, write_stage_outputs

log = logging.getLogger("snowcoder.dedup")

NON_ALPHA = re.compile(r"[^A-Za-z_0-9]+")  # BigCode's tokenisation for code near-dedup


# --------------------------------------------------------------------------- pure helpers
def normalize(content: str) -> str:
    """Content for exact dedup: \\r\\n and \\r -> \\n, trailing whitespace stripped per line and at the end."""
    text = content.replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(line.rstrip() for line in text.split("\n")).rstrip("\n")


def exact_key(content: str) -> str:
    return hashlib.sha256(normalize(content).encode("utf-8")).hexdigest()


def shingles(content: str, n: int) -> set[bytes]:
    """Set of token n-grams (joined by a space, utf-8) of `content` split on `[^A-Za-z_0-9]+`.

    A file with fewer than n tokens gives its whole token list as one shingle; a file with no token gives an
    empty set (it cannot be compared and is left to exact dedup).
    """
    tokens = [t for t in NON_ALPHA.split(content) if t]
    if not tokens:
        return set()
    if len(tokens) < n:
        return {" ".join(tokens).encode("utf-8")}
    return {" ".join(tokens[i : i + n]).encode("utf-8") for i in range(len(tokens) - n + 1)}


def minhash_signatures(texts: Iterable[str], num_perm: int, ngram: int, seed: int) -> list[LeanMinHash]:
    """MinHash signatures of `texts` (datasketch `MinHash.bulk`: batch hashing, 7-11x faster than per-shingle)."""
    shingle_sets = [shingles(t, ngram) for t in texts]
    return [LeanMinHash(m) for m in MinHash.bulk(shingle_sets, num_perm=num_perm, seed=seed)]


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def clusters_from_signatures(
    signatures: list[LeanMinHash | None], threshold: float, num_perm: int
) -> list[list[int]]:
    """Clusters (sorted lists of positions, size >= 2, sorted by first member) of near-duplicate signatures.

    LSH candidates are merged when their estimated Jaccard is >= threshold. `None` signatures are skipped.
    """
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    with lsh.insertion_session() as session:
        for i, sig in enumerate(signatures):
            if sig is not None:
                session.insert(i, sig, check_duplication=False)
    uf = _UnionFind(len(signatures))
    for i, sig in enumerate(signatures):
        if sig is None:
            continue
        for j in lsh.query(sig):
            if j > i and sig.jaccard(signatures[j]) >= threshold:
                uf.union(i, j)
    groups: dict[int, list[int]] = {}
    for i, sig in enumerate(signatures):
        if sig is not None:
            groups.setdefault(uf.find(i), []).append(i)
    return sorted((sorted(g) for g in groups.values() if len(g) > 1), key=lambda g: g[0])


def near_duplicate_clusters(docs_df: pd.DataFrame, cfg: DedupConfig) -> list[list[int]]:
    """Near-duplicate clusters among `docs_df` rows, as lists of row positions (size >= 2)."""
    shingle_sets = [shingles(t, cfg.ngram) for t in docs_df["content"].tolist()]
    hashed = MinHash.bulk(shingle_sets, num_perm=cfg.num_perm, seed=cfg.seed)
    signatures = [LeanMinHash(m) if s else None for m, s in zip(hashed, shingle_sets)]  # no token: not compared
    return clusters_from_signatures(signatures, cfg.threshold, cfg.num_perm)


def cluster_survivor(docs_df: pd.DataFrame, members: list[int]) -> int:
    """Longest content wins; ties -> smallest (repo, path)."""
    return min(members, key=lambda i: (-len(docs_df["content"].iat[i]), docs_df["repo"].iat[i], docs_df["path"].iat[i]))


# --------------------------------------------------------------------------- stage
def _exact_dedup(docs: pd.DataFrame) -> tuple[pd.Series, list[str | None]]:
    """Per row (docs sorted by repo, path): kept flag and, for duplicates, 'exact-duplicate-of:<doc_id>'."""
    first: dict[str, str] = {}
    reasons: list[str | None] = []
    for content, doc_id in zip(docs["content"], docs["doc_id"]):
        key = exact_key(content)
        if key in first:
            reasons.append(f"exact-duplicate-of:{first[key]}")
        else:
            first[key] = doc_id
            reasons.append(None)
    return pd.Series([r is None for r in reasons], index=docs.index, dtype=bool), reasons


def dedup(cfg: DedupConfig, inp: Manifest, out_dir: str) -> Manifest:
    """Exact then near dedup of the input docs; writes survivors + exclusions (stage 'dedup') under out_dir."""
    t0 = time.perf_counter()
    docs = read_docs(inp).sort_values(["repo", "path"], kind="stable").reset_index(drop=True)
    mb = float(docs["size_bytes"].sum()) / 1e6

    kept_mask, exact_reasons = _exact_dedup(docs)
    exact_excl = exclusions_frame(docs[~kept_mask], "dedup", [r for r in exact_reasons if r is not None])
    unique = docs[kept_mask].reset_index(drop=True)
    t_exact = time.perf_counter() - t0

    t1 = time.perf_counter()
    clusters = near_duplicate_clusters(unique, cfg)
    near_reason: dict[int, str] = {}
    for members in clusters:
        survivor = cluster_survivor(unique, members)
        for i in members:
            if i != survivor:
                near_reason[i] = f"near-duplicate-of:{unique['doc_id'].iat[survivor]}"
    t_near = time.perf_counter() - t1

    near_idx = sorted(near_reason)
    near_excl = exclusions_frame(unique.iloc[near_idx], "dedup", [near_reason[i] for i in near_idx])
    kept = unique.drop(index=near_idx).reset_index(drop=True)
    excluded = pd.concat([exact_excl, near_excl], ignore_index=True)

    seconds = time.perf_counter() - t0
    unique_mb = float(unique["size_bytes"].sum()) / 1e6
    counts = {
        "docs_in": len(docs),
        "docs": len(kept),
        "excluded": len(excluded),
        "exact_duplicates": len(exact_excl),
        "near_duplicates": len(near_excl),
        "near_clusters": len(clusters),
        "bytes": int(kept["size_bytes"].sum()),
    }
    stats = {
        "params": {"num_perm": cfg.num_perm, "threshold": cfg.threshold, "ngram": cfg.ngram, "seed": cfg.seed,
                   "tokenizer": NON_ALPHA.pattern},
        "largest_clusters": sorted((len(c) for c in clusters), reverse=True)[:10],
        "timing": {
            "seconds": round(seconds, 3),
            "exact_seconds": round(t_exact, 3),
            "near_seconds": round(t_near, 3),
            "docs_per_s": round(len(docs) / seconds, 1) if seconds > 0 else None,
            "mb_per_s": round(mb / seconds, 2) if seconds > 0 else None,
            "near_docs_per_s": round(len(unique) / t_near, 1) if t_near > 0 else None,
            "near_mb_per_s": round(unique_mb / t_near, 2) if t_near > 0 else None,
        },
    }
    log.info("dedup: %d -> %d docs (%d exact, %d near duplicates in %d clusters) in %.1fs",
             len(docs), len(kept), len(exact_excl), len(near_excl), len(clusters), seconds)
    return write_stage_outputs("dedup", kept, excluded, out_dir, shard_docs_of(inp), counts, stats)
