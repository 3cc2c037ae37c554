"""Deduplication: exact (normalised content hash), then near duplicates with MinHash + LSH, in staged, resumable steps.

Arctic-SnowCoder's phase-1 data is deduplicated (arXiv 2409.02326 §2.2) without published parameters, so we follow
BigCode's near-dedup (bigcode-dataset `near_deduplication/minhash_deduplication.py`, used for The Stack/StarCoder):
5-gram shingles of identifier tokens, 256 permutations, LSH at Jaccard 0.7 with datasketch's optimal (bands, rows),
candidate pairs merged with union-find, one survivor per cluster. See shared/reference/data-curation.md §4.
Two additions: LSH candidates are confirmed by their estimated Jaccard (signature agreement) >= threshold before
they are merged (text-dedup's optional verification; `dedup.verify`), which removes LSH false positives; and since
false positives are then cheap, (bands, rows) are chosen weighting misses 0.95 instead of 0.5 (`dedup.recall_weight`:
36 x 7 instead of BigCode's 25 x 10, so a pair at Jaccard 0.75 is a candidate with probability 0.994, not 0.77).

How code is tokenised: tokens are the maximal runs of `[A-Za-z_0-9]` (BigCode splits on `[^A-Za-z_0-9]+`):
identifiers, keywords and numbers are tokens, case is kept; whitespace, punctuation, operators and every non-ASCII
character separate tokens. A shingle is n consecutive tokens; a file with 1..n-1 tokens is one shingle of all its
tokens; a file with no token is not compared (exact dedup only).

Signature backends (`dedup.backend`), all with these shingles and the same LSH/verification/clustering:
- numpy (default; fastest by measurement, bench/dedup_vs_datatrove.py): tokens are found and hashed in bulk on the
  UTF-8 bytes (a lookup table marks identifier bytes; a polynomial hash per token + the splitmix64 finaliser), a
  shingle's 64-bit hash combines its n token hashes, its top 32 bits enter MinHash. The permutations are datasketch
  2.0's default "affine32" family, h -> a_k*h + b_k mod 2^32 with odd a_k, applied to all shingles of a file as one
  (num_perm x shingles) uint32 matrix op. No Python object per token or shingle.
- datasketch (the reference): `MinHash.bulk` over the shingle strings (sha1, affine32).
- rensa (optional, `pip install rensa`): its Rust R-MinHash over the shingle strings.
Signatures of different backends are not interchangeable (different hash functions); their LSH behaviour is the
same within sampling noise (tests/test_dedup.py compares them on planted pairs).

Steps. Each writes under `<out_dir>/work/<key>/` (key: config, input manifest, this module's source) and is skipped
when its file is already there, so a killed run resumes at the last finished shard (or band batch):
  1. keys-NNNNN.parquet, one per input shard: sha256 of the normalised content + doc_id/repo/path/source/size.
  2. exact.parquet: exact duplicates; the survivor of a group is the first by (repo, path).
  3. sig-NNNNN.npz, one per input shard: for docs kept by 2 that have a token: global doc index, MinHash
     signature (num_perm x uint32), LSH band hashes (bands x uint64).
  4. edges-NNNNN.npy, one per batch of bands: candidate pairs. Per band, the (band hash, doc) table is sorted; a run
     of equal hashes is a bucket; each member is paired with the bucket's first member and with its predecessor
     (star + chain: 2(k-1) pairs for a bucket of k, never k^2).
  5. clusters.parquet (copied to out_dir): candidates verified, connected components by union-find, one survivor
     per component: `dedup.survivor` "longest" (BigCode-like; ties -> smallest (repo, path)) or "first" (smallest
     (repo, path)), after `dedup.prefer_sources` when given.
  6. docs-NNNNN / exclusions-NNNNN.parquet, one pair per input shard (always rewritten: one read + one write).
     Removed files carry "exact-duplicate-of:<doc_id>" / "near-duplicate-of:<doc_id>".

Memory bound, for n docs in, s docs per input shard, k = num_perm, b bands, E candidate pairs among m docs, x docs
removed: steps 1, 3, 6 hold one shard (O(s x file size)); step 2 holds O(n x 32 B) (exact keys, sort order, sizes)
plus (repo, path) of the docs in exact-duplicate groups; step 4 holds O(n x b' x 24 B) for a batch of b' bands,
b' chosen to keep this under BAND_TABLE_BYTES (512 MiB: all 36 bands at once up to ~0.6M docs, one band at a time
beyond, 24 B per doc); step 5 holds O(E x 16 B + m x k x 4 B); step 6 the O(x) exclusion reasons. Candidate pairs
are at most 2(k-1) per bucket of k, so E <= 2 x b x n whatever the data: nothing is O(n^2), and no Python object is
made per token or shingle.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import os
import re
import signal
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from snowcoder import storage
from snowcoder.code import code_digest
from snowcoder.config import DedupConfig, UserError
from snowcoder.manifest import Manifest
from tasks.docio import exclusions_frame, shard_docs_of

log = logging.getLogger("snowcoder.dedup")

NON_ALPHA = re.compile(r"[^A-Za-z_0-9]+")  # BigCode's tokenisation for code near-dedup
BACKENDS = ("numpy", "datasketch", "rensa")
BAND_TABLE_BYTES = 512 << 20  # step 4: most memory for the (band hash, doc) table of one batch of bands
_BAND_ROW_BYTES = 24  # per doc and band: hash (8) + doc index (8) + sort order (8)
_MINHASH_CHUNK = 4096  # shingles per (num_perm x chunk) uint32 block (4 MiB at 256 perms)
_TOKEN_BATCH_CHARS = 1 << 20  # text per token_hashes call
_WORK_VERSION = "1"

# test hook: called as _HOOK(step, n) after the n-th shard (or band batch) of a step is written in this run
_HOOK: Callable[[str, int], None] | None = None


# --------------------------------------------------------------------------- exact dedup
def normalize(content: str) -> str:
    """Content for exact dedup: \\r\\n and \\r -> \\n, trailing whitespace stripped per line and at the end."""
    text = content.replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(map(str.rstrip, text.split("\n"))).rstrip("\n")


def exact_key(content: str) -> str:
    return hashlib.sha256(normalize(content).encode("utf-8", "surrogatepass")).hexdigest()


def _exact_key_pair(content: str) -> tuple[int, int]:
    """First 128 bits of exact_key as two uint64s (what step 1 stores)."""
    d = hashlib.sha256(normalize(content).encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(d[:8], "big"), int.from_bytes(d[8:16], "big")


# --------------------------------------------------------------------------- tokens and shingles
def tokens(content: str) -> list[str]:
    return [t for t in NON_ALPHA.split(content) if t]


def shingles(content: str, n: int) -> set[bytes]:
    """Set of token n-grams (joined by a space, utf-8) of `content` split on `[^A-Za-z_0-9]+`.

    A file with fewer than n tokens gives its whole token list as one shingle; a file with no token gives an
    empty set (it cannot be compared and is left to exact dedup).
    """
    toks = tokens(content)
    if not toks:
        return set()
    if len(toks) < n:
        return {" ".join(toks).encode("utf-8", "surrogatepass")}
    return {" ".join(toks[i : i + n]).encode("utf-8", "surrogatepass") for i in range(len(toks) - n + 1)}


def _u64(x: int) -> np.uint64:
    return np.uint64(x & 0xFFFFFFFFFFFFFFFF)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (a bijection on uint64 with good avalanche), vectorised; wraps mod 2^64."""
    x = x ^ (x >> np.uint64(30))
    x *= _u64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= _u64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def _constants(n: int, salt: int) -> np.ndarray:
    """n fixed odd 64-bit multipliers (splitmix64 of salt + i): the same on every machine and numpy version."""
    return _mix64(np.arange(salt, salt + n, dtype=np.uint64) * _u64(0x9E3779B97F4A7C15)) | np.uint64(1)


_WORD_BYTE = np.zeros(256, dtype=bool)
_WORD_BYTE[np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_", np.uint8)] = True
_TOKEN_BASE = _u64(0x100000001B3)  # odd: polynomial hash base (FNV prime)
_powers_cache = np.ones(1, dtype=np.uint64)


def _powers(n: int) -> np.ndarray:
    """_TOKEN_BASE**i mod 2^64 for i < n (grown on demand, by doubling)."""
    global _powers_cache
    if len(_powers_cache) < n:
        size = 1 << max(10, int(n - 1).bit_length())
        p = np.full(size, _TOKEN_BASE, dtype=np.uint64)
        p[0] = 1
        _powers_cache = np.cumprod(p)  # uint64 products wrap mod 2^64
    return _powers_cache


def token_hashes(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of the `[A-Za-z_0-9]+` tokens of all `texts` (in order) and each text's token offsets
    (len(texts) + 1: text i has tokens [off[i], off[i+1])). Equal tokens get equal hashes, in any text.

    Works on the UTF-8 bytes in bulk: a byte is part of a token iff it is ASCII [A-Za-z_0-9], which gives the same
    tokens as the regex on the str (non-ASCII characters separate tokens either way).
    """
    encoded = [t.encode("utf-8", "surrogatepass") for t in texts]
    data = np.frombuffer(b"\n".join(encoded), dtype=np.uint8)  # "\n" is a separator: no token spans two texts
    word = _WORD_BYTE[data]
    edge = np.diff(word.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts, ends = np.flatnonzero(edge == 1), np.flatnonzero(edge == -1)
    text_starts = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum([len(e) + 1 for e in encoded], out=text_starts[1:])
    offsets = np.searchsorted(starts, text_starts)
    if len(starts) == 0:
        return np.zeros(0, dtype=np.uint64), offsets
    lengths = ends - starts
    chars = data[word].astype(np.uint64)  # token bytes only, token after token
    first = np.cumsum(lengths) - lengths  # where each token starts in `chars`
    chars *= _powers(int(lengths.max()))[np.arange(len(chars)) - np.repeat(first, lengths)]
    poly = np.add.reduceat(chars, first)  # sum of byte_j * BASE^j over each token
    return _mix64(poly ^ (lengths.astype(np.uint64) * _u64(0x9E3779B97F4A7C15))), offsets


def shingle_hashes(tok: np.ndarray, offsets: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of every token n-gram of each text (from `token_hashes`) and their per-text offsets.

    Text i's shingles are [s_off[i], s_off[i+1]); a text with 1..n-1 tokens has one shingle (all its tokens),
    one with no token none.
    """
    counts = np.diff(offsets)
    per_text = np.where(counts >= n, counts - n + 1, np.minimum(counts, 1))
    s_off = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(per_text, out=s_off[1:])
    out = np.empty(int(s_off[-1]), dtype=np.uint32)
    mult = _constants(n, salt=1000)
    if len(tok) >= n:
        m = len(tok) - n + 1
        acc = tok[:m] * mult[0]
        for j in range(1, n):
            acc += tok[j : j + m] * mult[j]
        windows = (_mix64(acc) >> np.uint64(32)).astype(np.uint32)
        long_texts = np.flatnonzero(counts >= n)  # their windows lie inside them: copy them in place
        lens = per_text[long_texts]
        out[_ranges(s_off[long_texts], lens)] = windows[_ranges(offsets[long_texts], lens)]
    for i in np.flatnonzero((counts > 0) & (counts < n)):  # short texts: one shingle of all their tokens
        k = int(counts[i])
        acc = (tok[offsets[i] : offsets[i] + k] * mult[:k]).sum(dtype=np.uint64)
        out[s_off[i]] = np.uint32(int(_mix64(np.array([acc], dtype=np.uint64))[0]) >> 32)
    return out, s_off


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + l) for each (s, l)."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    base = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    return base + np.arange(total)


# --------------------------------------------------------------------------- MinHash backends
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) of the affine32 family, a odd (datasketch 2.0's default scheme; RandomState's stream is frozen)."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint64).astype(np.uint32)
    return a, b


def _minhash_numpy(texts: list[str], cfg: DedupConfig) -> tuple[np.ndarray, np.ndarray]:
    a, b = _permutations(cfg.num_perm, cfg.seed)
    a, b = a[:, None], b[:, None]
    sig = np.full((len(texts), cfg.num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    valid = np.zeros(len(texts), dtype=bool)
    for lo, hi in _batches(texts, _TOKEN_BATCH_CHARS):  # ~1 MB of text at a time: the byte arrays stay in cache
        tok, offsets = token_hashes(texts[lo:hi])
        sh, s_off = shingle_hashes(tok, offsets, cfg.ngram)
        valid[lo:hi] = np.diff(s_off) > 0
        for i in range(hi - lo):
            row, end = sig[lo + i], int(s_off[i + 1])
            for s in range(int(s_off[i]), end, _MINHASH_CHUNK):
                block = a * sh[s : min(s + _MINHASH_CHUNK, end)][None, :]  # uint32: wraps mod 2^32
                block += b
                np.minimum(row, block.min(axis=1), out=row)
    return sig, valid


def _batches(texts: list[str], max_chars: int) -> Iterable[tuple[int, int]]:
    """Consecutive [lo, hi) ranges of texts with about max_chars characters each (at least one text)."""
    lo, total = 0, 0
    for i, t in enumerate(texts):
        total += len(t)
        if total >= max_chars:
            yield lo, i + 1
            lo, total = i + 1, 0
    if lo < len(texts):
        yield lo, len(texts)


def _minhash_datasketch(texts: list[str], cfg: DedupConfig) -> tuple[np.ndarray, np.ndarray]:
    from datasketch import MinHash

    sets = [shingles(t, cfg.ngram) for t in texts]
    valid = np.array([bool(s) for s in sets], dtype=bool)
    sig = np.full((len(texts), cfg.num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    hashed = MinHash.bulk([s for s in sets if s], num_perm=cfg.num_perm, seed=cfg.seed)
    if hashed:
        sig[valid] = np.array([m.hashvalues for m in hashed]).astype(np.uint32)  # affine32 (2.x) / legacy (< 2^32)
    return sig, valid


def _minhash_rensa(texts: list[str], cfg: DedupConfig) -> tuple[np.ndarray, np.ndarray]:
    try:
        from rensa import RMinHash
    except ImportError as e:
        raise UserError("dedup.backend 'rensa' needs the rensa package: pip install rensa") from e
    sig = np.full((len(texts), cfg.num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    valid = np.zeros(len(texts), dtype=bool)
    for i, t in enumerate(texts):
        s = shingles(t, cfg.ngram)
        if s:
            m = RMinHash(num_perm=cfg.num_perm, seed=cfg.seed)
            m.update(list(s))
            sig[i], valid[i] = m.digest(), True
    return sig, valid


_BACKENDS = {"numpy": _minhash_numpy, "datasketch": _minhash_datasketch, "rensa": _minhash_rensa}


def minhash_signatures(texts: list[str], cfg: DedupConfig) -> tuple[np.ndarray, np.ndarray]:
    """MinHash signatures of `texts` with `cfg.backend`: (uint32 array (len(texts), num_perm), valid mask).
    A text without any token is not valid (its row is all 0xFFFFFFFF)."""
    if cfg.backend not in _BACKENDS:
        raise UserError(f"dedup.backend must be one of {', '.join(BACKENDS)}, got {cfg.backend!r}")
    return _BACKENDS[cfg.backend](list(texts), cfg)


# --------------------------------------------------------------------------- LSH, candidates, components
@functools.lru_cache(maxsize=64)
def lsh_params(threshold: float, num_perm: int, recall_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) minimising (1 - w) x false-positive area + w x false-negative area at `threshold`, w =
    recall_weight: datasketch MinHashLSH's `_optimal_param` with weights (1 - w, w) (BigCode: 256 perms at 0.7,
    w = 0.5 -> 25 bands x 10 rows), the integrals done by Simpson's rule in numpy instead of scipy's quad (same
    result, ~100x faster; tested). With `dedup.verify` a false-positive candidate costs one signature comparison
    and is then dropped, so the default weights misses more (0.95 -> 36 x 7: a pair at Jaccard 0.75 becomes a
    candidate with probability 0.994 instead of 0.77)."""
    if not 0.0 < recall_weight < 1.0:
        raise ValueError(f"recall_weight must be in (0, 1), got {recall_weight}")
    pairs = [(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)]
    b = np.array([p[0] for p in pairs], dtype=float)[:, None]
    r = np.array([p[1] for p in pairs], dtype=float)[:, None]

    def integral(lo: float, hi: float, f: Callable[[np.ndarray], np.ndarray], points: int = 513) -> np.ndarray:
        s = np.linspace(lo, hi, points)[None, :]
        w = np.ones(points)
        w[1:-1:2], w[2:-1:2] = 4, 2
        return (f(s) * w).sum(axis=1) * (hi - lo) / (3 * (points - 1))

    false_pos = integral(0.0, threshold, lambda s: 1 - (1 - s**r) ** b)
    false_neg = integral(threshold, 1.0, lambda s: (1 - s**r) ** b)
    return pairs[int(np.argmin((1.0 - recall_weight) * false_pos + recall_weight * false_neg))]


def candidate_probability(jaccard: float, bands: int, rows: int) -> float:
    """Probability that a pair with this Jaccard similarity shares at least one of `bands` bands of `rows` rows."""
    return 1.0 - (1.0 - jaccard**rows) ** bands


def lsh_shape(cfg: DedupConfig) -> tuple[int, int]:
    """(bands, rows) of a dedup config."""
    weight = cfg.recall_weight if cfg.recall_weight is not None else (0.95 if cfg.verify else 0.5)
    return lsh_params(cfg.threshold, cfg.num_perm, weight)


def band_hashes(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(bands, n) uint64: one hash per band of `rows` signature values (equal bands -> equal hashes)."""
    n = sig.shape[0]
    band = sig[:, : bands * rows].reshape(n, bands, rows).astype(np.uint64)
    h = (band * _constants(rows, salt=2000)).sum(axis=2, dtype=np.uint64)  # wraps mod 2^64
    return np.ascontiguousarray(_mix64(h).T)


def bucket_pairs(hashes: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Candidate pairs (E, 2) [smaller id, larger id] from one band: docs with equal hashes share a bucket; each
    member is paired with the bucket's first (smallest) member and with the previous member."""
    if len(ids) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    order = np.lexsort((ids, hashes))
    h, ids = hashes[order], ids[order]
    same = h[1:] == h[:-1]  # position i+1 is in the bucket of position i
    chain = np.stack([ids[:-1][same], ids[1:][same]], axis=1)
    run_start = np.flatnonzero(np.r_[True, ~same])
    first = np.repeat(ids[run_start], np.diff(np.r_[run_start, len(ids)]))
    member = first != ids
    star = np.stack([first[member], ids[member]], axis=1)
    return np.concatenate([chain, star]).astype(np.int64)


def unique_pairs(pairs: np.ndarray) -> np.ndarray:
    if len(pairs) == 0:
        return pairs.reshape(0, 2).astype(np.int64)
    return np.unique(pairs, axis=0)


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Fraction of equal signature values, row by row."""
    return (sig_a == sig_b).mean(axis=1)


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def connected_components(pairs: np.ndarray) -> list[list[int]]:
    """Components (size >= 2, sorted lists of ids, sorted by first id) of the graph with edges `pairs`.
    Union-find over the ids that occur in a pair only: memory O(pairs), not O(all docs)."""
    if len(pairs) == 0:
        return []
    nodes, inverse = np.unique(pairs, return_inverse=True)
    uf = _UnionFind(len(nodes))
    for a, b in inverse.reshape(-1, 2).tolist():
        uf.union(a, b)
    groups: dict[int, list[int]] = {}
    for i, node in enumerate(nodes.tolist()):
        groups.setdefault(uf.find(i), []).append(node)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0])


def clusters_from_signatures(sig: np.ndarray, valid: np.ndarray, cfg: DedupConfig) -> tuple[list[list[int]], dict]:
    """Near-duplicate clusters (lists of row positions) among in-memory signatures, and pair counts."""
    bands, rows = lsh_shape(cfg)
    ids = np.flatnonzero(valid)
    bh = band_hashes(sig[ids], bands, rows)
    pairs = unique_pairs(np.concatenate([bucket_pairs(bh[j], ids) for j in range(bands)] or [np.zeros((0, 2))]))
    verified = pairs
    if cfg.verify and len(pairs):
        verified = pairs[estimated_jaccard(sig[pairs[:, 0]], sig[pairs[:, 1]]) >= cfg.threshold]
    return connected_components(verified), {"candidate_pairs": len(pairs), "verified_pairs": len(verified)}


def near_duplicate_clusters(docs_df: pd.DataFrame, cfg: DedupConfig) -> list[list[int]]:
    """Near-duplicate clusters among `docs_df` rows, as sorted lists of row positions (size >= 2), in memory."""
    sig, valid = minhash_signatures(docs_df["content"].tolist(), cfg)
    return clusters_from_signatures(sig, valid, cfg)[0]


def survivor_key(idx: int, chars: int, repo: str, path: str, source: str, cfg: DedupConfig) -> tuple:
    """Sort key of a cluster member: the smallest key survives. `prefer_sources` first (in their order), then
    "longest" (most characters; BigCode keeps one file per cluster) or "first", then smallest (repo, path)."""
    rank = cfg.prefer_sources.index(source) if source in cfg.prefer_sources else len(cfg.prefer_sources)
    return rank, -int(chars) if cfg.survivor == "longest" else 0, str(repo), str(path), int(idx)


def cluster_survivor(docs_df: pd.DataFrame, members: list[int], cfg: DedupConfig | None = None) -> int:
    """Survivor of a cluster of `docs_df` row positions (default: longest content; ties -> smallest (repo, path))."""
    cfg = cfg or DedupConfig()
    return min(members, key=lambda i: survivor_key(i, len(docs_df["content"].iat[i]), docs_df["repo"].iat[i],
                                                   docs_df["path"].iat[i], docs_df["source"].iat[i], cfg))


# --------------------------------------------------------------------------- staged, resumable stage
def _checkpoint(step: str, n: int) -> None:
    """After the n-th shard of `step` written in this run: test hook, and the fault-injection env var
    SNOWCODER_DEDUP_FAILPOINT=<step>:<n> (SIGKILL this process there; steps: keys, signatures, buckets)."""
    if _HOOK is not None:
        _HOOK(step, n)
    if os.environ.get("SNOWCODER_DEDUP_FAILPOINT") == f"{step}:{n}":
        log.warning("dedup: SNOWCODER_DEDUP_FAILPOINT %s:%d: killing this process with SIGKILL", step, n)
        os.kill(os.getpid(), signal.SIGKILL)


def _write_npz(uri: str, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    storage.write_bytes(uri, buf.getvalue())


def _read_npz(uri: str) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(storage.read_bytes(uri))) as z:
        return {k: z[k] for k in z.files}


def _keys_shard(in_uri: str, out_uri: str) -> int:
    """Step 1 for one input shard: exact keys and metadata (everything later steps need but the content)."""
    df = storage.read_parquet(in_uri, columns=["doc_id", "repo", "path", "source", "content", "size_bytes"])
    content = ["" if c is None or c != c else c for c in df["content"].tolist()]  # None/NaN: no content
    pairs = [_exact_key_pair(c) for c in content]
    keys = pd.DataFrame({
        "doc_id": df["doc_id"].astype(str).to_numpy(),
        "repo": df["repo"].astype(str).to_numpy(),
        "path": df["path"].astype(str).to_numpy(),
        "source": df["source"].astype(str).to_numpy(),
        "chars": np.array([len(c) for c in content], dtype=np.int64),
        "size_bytes": df["size_bytes"].fillna(0).astype("int64").to_numpy(),
        "k0": np.array([p[0] for p in pairs], dtype=np.uint64),
        "k1": np.array([p[1] for p in pairs], dtype=np.uint64),
    })
    storage.write_parquet(keys, out_uri)
    return len(keys)


def _signature_shard(in_uri: str, out_uri: str, first_idx: int, skip: np.ndarray, cfg: DedupConfig) -> int:
    """Step 3 for one input shard: signatures and band hashes of its docs not in `skip` (exact duplicates)."""
    content = ["" if c is None or c != c else c for c in storage.read_parquet(in_uri, columns=["content"])["content"]]
    idx = np.arange(first_idx, first_idx + len(content), dtype=np.int64)
    keep = ~np.isin(idx, skip)
    sig, valid = minhash_signatures([c for c, k in zip(content, keep) if k], cfg)
    idx = idx[keep][valid]
    sig = sig[valid]
    bands, rows = lsh_shape(cfg)
    _write_npz(out_uri, idx=idx, sig=sig, bands=band_hashes(sig, bands, rows))
    return len(idx)


class _Work:
    """Files of one dedup run under <out_dir>/work/<key>/ (the key changes with config, input and code)."""

    def __init__(self, cfg: DedupConfig, inp: Manifest, out_dir: str):
        source = code_digest(__name__)
        blob = json.dumps({"v": _WORK_VERSION, "cfg": cfg.model_dump(mode="json", exclude={"workers", "keep_work"}),
                           "docs": inp.shard_uris("docs"), "digest": inp.digest, "code": source}, sort_keys=True)
        self.key = hashlib.sha256(blob.encode()).hexdigest()[:16]
        self.root = storage.join(out_dir, "work")
        self.dir = storage.join(self.root, self.key)

    def file(self, name: str) -> str:
        return storage.join(self.dir, name)

    def clear_stale(self) -> None:
        """Remove work dirs of other keys (another config/input/code): they can never be resumed."""
        fs, path = storage.fs_for(self.root)
        if not fs.exists(path):
            return
        for entry in fs.ls(path, detail=False):
            if entry.rstrip("/").rsplit("/", 1)[-1] != self.key:
                fs.rm(entry, recursive=True)

    def remove(self) -> None:
        fs, path = storage.fs_for(self.root)
        if fs.exists(path):
            fs.rm(path, recursive=True)


def _run_shards(step: str, jobs: list[tuple], fn: Callable, workers: int) -> tuple[int, int]:
    """Run fn(*job) for each job whose output (job[1]) is missing; (computed, reused). In job order with 1 worker,
    in a spawn process pool otherwise (each job writes its own file, so the output is the same)."""
    todo = [job for job in jobs if not storage.exists(job[1])]
    reused = len(jobs) - len(todo)
    if reused:
        log.info("dedup %s: %d of %d shards already done (resumed)", step, reused, len(jobs))
    if workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            for n, _ in enumerate(pool.map(fn, *zip(*todo)), 1):
                _checkpoint(step, reused + n)
    else:
        for n, job in enumerate(todo, 1):
            fn(*job)
            _checkpoint(step, reused + n)
    return len(todo), reused


def _gather(uris: list[str], offsets: np.ndarray, wanted: np.ndarray, columns: list[str]) -> pd.DataFrame:
    """Rows `wanted` (global indices, any order) of the per-shard parquet files `uris`, with an `idx` column."""
    wanted = np.unique(wanted)
    parts = []
    for s, uri in enumerate(uris):
        local = wanted[(wanted >= offsets[s]) & (wanted < offsets[s + 1])] - offsets[s]
        if len(local):
            part = storage.read_parquet(uri, columns=columns).iloc[local]
            parts.append(part.assign(idx=local + offsets[s]))
    if not parts:
        return pd.DataFrame(columns=[*columns, "idx"])
    return pd.concat(parts, ignore_index=True)


def _exact_step(work: _Work, key_uris: list[str], offsets: np.ndarray) -> pd.DataFrame:
    """Step 2: exact-duplicate rows (idx, survivor_idx, survivor_doc_id); survivor = first by (repo, path)."""
    uri = work.file("exact.parquet")
    if storage.exists(uri):
        return storage.read_parquet(uri)
    keys = np.concatenate([storage.read_parquet(u, columns=["k0", "k1"]).to_numpy(np.uint64).reshape(-1, 2)
                           for u in key_uris] + [np.zeros((0, 2), np.uint64)])
    order = np.lexsort((keys[:, 1], keys[:, 0]))
    sk = keys[order]
    same = np.all(sk[1:] == sk[:-1], axis=1)
    in_group = np.r_[same, False] | np.r_[False, same]
    group_of = np.cumsum(np.r_[True, ~same]) - 1  # group number of each sorted row
    members = order[in_group] if len(keys) else order
    rows = []
    if len(members):
        meta = _gather(key_uris, offsets, members, ["doc_id", "repo", "path"])
        record = {r[-1]: r[:-1] for r in zip(*(meta[c].tolist() for c in ["doc_id", "repo", "path", "idx"]))}
        groups: dict[int, list[int]] = {}
        for g, i in zip(group_of[in_group].tolist(), members.tolist()):
            groups.setdefault(g, []).append(i)
        for g in groups.values():
            keep = min(g, key=lambda i: (record[i][1], record[i][2], i))
            rows += [(i, keep, record[keep][0]) for i in g if i != keep]
    exact = pd.DataFrame(rows, columns=["idx", "survivor_idx", "survivor_doc_id"]).astype(
        {"idx": "int64", "survivor_idx": "int64"}).sort_values("idx", ignore_index=True)
    storage.write_parquet(exact, uri)
    return exact


def _bucket_step(work: _Work, sig_uris: list[str], n_bands: int, n_sig: int) -> tuple[np.ndarray, int, int]:
    """Step 4: candidate pairs from all bands, in batches of bands (one edges file per batch); n_sig: an upper
    bound of the number of signatures (sizes the batches)."""
    per_batch = max(1, min(n_bands, BAND_TABLE_BYTES // max(1, n_sig * _BAND_ROW_BYTES)))
    batches = [list(range(lo, min(lo + per_batch, n_bands))) for lo in range(0, n_bands, per_batch)]
    computed = reused = 0
    edges = []
    for batch in batches:
        uri = work.file(f"edges-{batch[0]:05d}.npy")
        if not storage.exists(uri):
            ids, table = [], []
            for u in sig_uris:
                z = _read_npz(u)
                ids.append(z["idx"])
                table.append(z["bands"][batch[0] : batch[-1] + 1])
            ids_all = np.concatenate(ids) if ids else np.zeros(0, np.int64)
            table_all = np.concatenate(table, axis=1) if table else np.zeros((len(batch), 0), np.uint64)
            pairs = unique_pairs(np.concatenate([bucket_pairs(table_all[j], ids_all) for j in range(len(batch))]))
            buf = io.BytesIO()
            np.save(buf, pairs)
            storage.write_bytes(uri, buf.getvalue())
            computed += 1
            _checkpoint("buckets", computed)
        else:
            reused += 1
        edges.append(np.load(io.BytesIO(storage.read_bytes(uri))))
    return unique_pairs(np.concatenate(edges) if edges else np.zeros((0, 2), np.int64)), computed, reused


def _verify(pairs: np.ndarray, sig_uris: list[str], threshold: float) -> np.ndarray:
    """Pairs whose estimated Jaccard is >= threshold; signatures of the docs in `pairs` only are loaded."""
    nodes = np.unique(pairs)
    sig = None
    for u in sig_uris:
        z = _read_npz(u)
        hit = np.isin(z["idx"], nodes)
        if hit.any():
            if sig is None:
                sig = np.empty((len(nodes), z["sig"].shape[1]), dtype=np.uint32)
            sig[np.searchsorted(nodes, z["idx"][hit])] = z["sig"][hit]
    a, b = np.searchsorted(nodes, pairs[:, 0]), np.searchsorted(nodes, pairs[:, 1])
    keep = np.zeros(len(pairs), dtype=bool)
    for s in range(0, len(pairs), 65536):
        keep[s : s + 65536] = estimated_jaccard(sig[a[s : s + 65536]], sig[b[s : s + 65536]]) >= threshold
    return pairs[keep]


def _cluster_step(work: _Work, cfg: DedupConfig, key_uris: list[str], offsets: np.ndarray,
                  sig_uris: list[str], n_bands: int, n_sig: int) -> tuple[pd.DataFrame, dict]:
    """Steps 4-5: clusters.parquet (idx, doc_id, repo, path, cluster (survivor doc_id), survivor, size)."""
    uri = work.file("clusters.parquet")
    info_uri = work.file("clusters.json")
    if storage.exists(uri) and storage.exists(info_uri):
        return storage.read_parquet(uri), storage.read_json(info_uri)
    pairs, computed, reused = _bucket_step(work, sig_uris, n_bands, n_sig)
    verified = _verify(pairs, sig_uris, cfg.threshold) if cfg.verify and len(pairs) else pairs
    components = connected_components(verified)
    members = np.array([i for c in components for i in c], dtype=np.int64)
    meta = _gather(key_uris, offsets, members, ["doc_id", "repo", "path", "source", "chars"])
    columns = ["doc_id", "repo", "path", "source", "chars", "idx"]
    record = {r[-1]: r[:-1] for r in zip(*(meta[c].tolist() for c in columns))}
    rows = []
    for comp in components:
        best = min(comp, key=lambda i: survivor_key(i, record[i][4], record[i][1], record[i][2], record[i][3], cfg))
        rows += [(i, record[i][0], record[i][1], record[i][2], record[best][0], i == best, len(comp)) for i in comp]
    clusters = pd.DataFrame(rows, columns=["idx", "doc_id", "repo", "path", "cluster", "survivor", "size"]).astype(
        {"idx": "int64", "size": "int64", "survivor": bool})
    info = {"candidate_pairs": int(len(pairs)), "verified_pairs": int(len(verified)),
            "bucket_batches_computed": computed, "bucket_batches_reused": reused}
    storage.write_parquet(clusters, uri)
    storage.write_json(info_uri, info)
    return clusters, info


def _filter_step(in_uris: list[str], offsets: np.ndarray, reasons: pd.Series, out_dir: str
                 ) -> tuple[list[str], list[str], dict, str]:
    """Step 6: per input shard, kept docs and exclusions (with reasons); counts and the content digest."""
    doc_uris, excl_uris, excl_lines = [], [], []
    digest = hashlib.sha256()
    kept_docs = kept_bytes = 0
    for s, in_uri in enumerate(in_uris or [None]):
        df = storage.read_parquet(in_uri) if in_uri else pd.DataFrame(columns=storage.DOC_COLUMNS)
        idx = np.arange(offsets[s], offsets[s] + len(df)) if in_uri else np.zeros(0, np.int64)
        removed = reasons.reindex(idx).notna().to_numpy()
        kept = df[~removed].reset_index(drop=True)
        excluded = exclusions_frame(df[removed], "dedup", reasons.reindex(idx[removed]).tolist())
        doc_uris.append(storage.join(out_dir, f"docs-{s:05d}.parquet"))
        excl_uris.append(storage.join(out_dir, f"exclusions-{s:05d}.parquet"))
        storage.write_parquet(kept, doc_uris[-1])
        storage.write_parquet(excluded, excl_uris[-1])
        for doc_id, sha in zip(kept["doc_id"], kept["content_sha256"]):
            digest.update(f"d:{doc_id}:{sha}\n".encode())
        excl_lines += [f"x:{d}:{r}\n" for d, r in zip(excluded["doc_id"], excluded["reason"])]
        kept_docs += len(kept)
        kept_bytes += int(kept["size_bytes"].sum()) if len(kept) else 0
    for line in excl_lines:
        digest.update(line.encode())
    return doc_uris, excl_uris, {"docs": kept_docs, "bytes": kept_bytes}, digest.hexdigest()[:16]


def dedup(cfg: DedupConfig, inp: Manifest, out_dir: str) -> Manifest:
    """Exact then near dedup of the input docs; writes survivors + exclusions (stage 'dedup') under out_dir.

    Outputs: docs-NNNNN.parquet and exclusions-NNNNN.parquet (one pair per input shard, input order),
    clusters.parquet (every near-duplicate cluster member with its survivor). Resumable: see the module docstring.
    """
    if cfg.backend not in _BACKENDS:
        raise UserError(f"dedup.backend must be one of {', '.join(BACKENDS)}, got {cfg.backend!r}")
    t0 = time.perf_counter()
    timing: dict[str, float] = {}
    in_uris = inp.shard_uris("docs")
    storage.makedirs(out_dir)
    work = _Work(cfg, inp, out_dir)
    work.clear_stale()
    bands, rows = lsh_shape(cfg)

    # 1. exact keys per shard
    t = time.perf_counter()
    key_uris = [work.file(f"keys-{s:05d}.parquet") for s in range(len(in_uris))]
    keys_done = _run_shards("keys", list(zip(in_uris, key_uris)), _keys_shard, cfg.workers)
    per_shard = [storage.read_parquet(u, columns=["size_bytes"])["size_bytes"].to_numpy(np.int64) for u in key_uris]
    sizes = np.concatenate(per_shard + [np.zeros(0, np.int64)])
    offsets = np.zeros(len(in_uris) + 1, dtype=np.int64)
    np.cumsum([len(x) for x in per_shard], out=offsets[1:])
    n_docs, mb = int(offsets[-1]), float(sizes.sum()) / 1e6
    # 2. exact duplicates
    exact = _exact_step(work, key_uris, offsets)
    timing["exact_seconds"] = time.perf_counter() - t

    # 3. signatures per shard (docs kept by exact dedup)
    t = time.perf_counter()
    sig_uris = [work.file(f"sig-{s:05d}.npz") for s in range(len(in_uris))]
    skip = exact["idx"].to_numpy(np.int64)
    jobs = [(in_uris[s], sig_uris[s], int(offsets[s]), skip[(skip >= offsets[s]) & (skip < offsets[s + 1])], cfg)
            for s in range(len(in_uris))]
    sig_done = _run_shards("signatures", jobs, _signature_shard, cfg.workers)
    timing["signature_seconds"] = time.perf_counter() - t
    # 4-5. buckets -> candidate pairs -> verified -> components -> survivors
    t = time.perf_counter()
    clusters, info = _cluster_step(work, cfg, key_uris, offsets, sig_uris, bands, n_docs - len(exact))
    timing["cluster_seconds"] = time.perf_counter() - t
    near_seconds = timing["signature_seconds"] + timing["cluster_seconds"]

    # 6. filter
    t = time.perf_counter()
    near = clusters[~clusters["survivor"]]
    reasons = pd.concat([
        pd.Series([f"exact-duplicate-of:{d}" for d in exact["survivor_doc_id"]], index=exact["idx"], dtype=object),
        pd.Series([f"near-duplicate-of:{d}" for d in near["cluster"]], index=near["idx"], dtype=object),
    ]).sort_index()
    doc_uris, excl_uris, kept, digest = _filter_step(in_uris, offsets, reasons, out_dir)
    clusters_uri = storage.join(out_dir, "clusters.parquet")
    storage.write_parquet(clusters.drop(columns=["idx"]), clusters_uri)
    timing["filter_seconds"] = time.perf_counter() - t
    if not cfg.keep_work:
        work.remove()

    seconds = time.perf_counter() - t0
    n_unique = n_docs - len(exact)
    unique_mb = mb - float(sizes[exact["idx"].to_numpy(np.int64)].sum()) / 1e6
    sizes_cluster = clusters.groupby("cluster")["size"].first() if len(clusters) else pd.Series(dtype="int64")
    counts = {
        "docs_in": n_docs,
        "docs": kept["docs"],
        "excluded": len(reasons),
        "exact_duplicates": len(exact),
        "near_duplicates": len(near),
        "near_clusters": len(sizes_cluster),
        "bytes": kept["bytes"],
        "candidate_pairs": info["candidate_pairs"],
        "verified_pairs": info["verified_pairs"],
    }
    per_core = max(1, cfg.workers)
    stats = {
        "params": {"backend": cfg.backend, "num_perm": cfg.num_perm, "threshold": cfg.threshold, "ngram": cfg.ngram,
                   "seed": cfg.seed, "bands": bands, "rows": rows, "verify": cfg.verify, "survivor": cfg.survivor,
                   "prefer_sources": list(cfg.prefer_sources), "tokenizer": NON_ALPHA.pattern},
        "largest_clusters": sorted(sizes_cluster.astype(int).tolist(), reverse=True)[:10],
        "work": {"key": work.key, "keys_shards_computed": keys_done[0], "keys_shards_reused": keys_done[1],
                 "signature_shards_computed": sig_done[0], "signature_shards_reused": sig_done[1],
                 "bucket_batches_computed": info.get("bucket_batches_computed", 0),
                 "bucket_batches_reused": info.get("bucket_batches_reused", 0), "workers": cfg.workers},
        "timing": {
            **{k: round(v, 3) for k, v in timing.items()},
            "seconds": round(seconds, 3),
            "near_seconds": round(near_seconds, 3),
            "docs_per_s": round(n_docs / seconds, 1) if seconds > 0 else None,
            "mb_per_s": round(mb / seconds, 2) if seconds > 0 else None,
            "mb_per_s_per_core": round(mb / seconds / per_core, 2) if seconds > 0 else None,
            "near_docs_per_s": round(n_unique / near_seconds, 1) if near_seconds > 0 else None,
            "near_mb_per_s": round(unique_mb / near_seconds, 2) if near_seconds > 0 else None,
        },
        "shard_docs": shard_docs_of(inp),
    }
    log.info("dedup: %d -> %d docs (%d exact, %d near duplicates in %d clusters) in %.1fs (%.1f MB/s)",
             n_docs, kept["docs"], len(exact), len(near), len(sizes_cluster), seconds, mb / max(seconds, 1e-9))
    return Manifest(stage="dedup", uris={"docs": doc_uris, "exclusions": excl_uris, "clusters": clusters_uri},
                    counts={k: float(v) for k, v in counts.items()}, stats=stats, digest=digest)
