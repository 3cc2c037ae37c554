"""Tokenizer training and token packing.

train_tokenizer: a byte-level BPE (HF `tokenizers`) over the phase-1 training documents, saved as an HF tokenizer
    directory (AutoTokenizer.from_pretrained loads it). The paper only says "vocab 64000" (arXiv 2409.02326,
    Table 1); special tokens follow StarCoder: <|endoftext|> (eos, also bos), <|pad|>, and the FIM tokens.
pack: documents -> one flat `tokens.bin` + `meta.json` that model/data.py memory-maps. Documents are ordered
    "grouped by language, then by repository, concatenated in random order" (§2.2, §3.3 / Table 3: the best of
    the grouping ablations; StarCoder2-style repo grouping), or file-level random, and joined by <|endoftext|>.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
import pandas as pd

from snowcoder import storage
from snowcoder.config import TokenizerConfig, UserError
from snowcoder.manifest import Manifest

log = logging.getLogger("snowcoder.tokenize")

EOS = "<|endoftext|>"
PAD = "<|pad|>"
FIM = ["<fim_prefix>", "<fim_middle>", "<fim_suffix>"]
SPECIAL_TOKENS = [EOS, PAD, *FIM]  # ids 0..4 in a trained tokenizer
ENCODE_BATCH = 512  # documents per batch-encode call


@contextlib.contextmanager
def local_output(out_dir: str) -> Iterator[Path]:
    """A local directory to write into: `out_dir` itself when local, else a temp dir uploaded on success."""
    if not storage.is_remote(out_dir):
        path = Path(out_dir)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="snowcoder-out-") as tmp:
        yield Path(tmp)
        storage.upload_dir(tmp, out_dir)


def _files_digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- tokenizer
def _bpe_tokenizer(texts: list[str], vocab_size: int, min_frequency: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: nothing is ever unknown
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer, length=len(texts))
    return tok


def train_tokenizer(cfg: TokenizerConfig, doc_uris: list[str], out_dir: str) -> Manifest:
    """Train a byte-level BPE on the documents (or save cfg.pretrained) as an HF tokenizer directory at out_dir."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    t0 = time.perf_counter()
    n_docs, n_bytes = 0, 0
    if cfg.pretrained:
        log.info("loading pretrained tokenizer %s", cfg.pretrained)
        try:
            hf_tok = AutoTokenizer.from_pretrained(cfg.pretrained)
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot load tokenizer {cfg.pretrained!r}: {exc}") from None
        if hf_tok.eos_token is None:
            raise UserError(f"tokenizer {cfg.pretrained!r} has no eos token; documents could not be separated")
        if hf_tok.pad_token is None:
            hf_tok.pad_token = hf_tok.eos_token
    else:
        texts = storage.read_shards(doc_uris, columns=["content"])["content"].astype(str).tolist()
        if not texts:
            raise UserError("no documents to train the tokenizer on")
        if cfg.max_train_docs and len(texts) > cfg.max_train_docs:  # evenly spaced: every repo/language shows up
            keep = np.linspace(0, len(texts) - 1, cfg.max_train_docs).astype(int)
            texts = [texts[i] for i in keep]
        n_docs, n_bytes = len(texts), sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
        log.info("training byte-level BPE (vocab %d) on %d docs, %.1f MB", cfg.vocab_size, n_docs, n_bytes / 1e6)
        bpe = _bpe_tokenizer(texts, cfg.vocab_size, cfg.min_frequency)
        hf_tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS, bos_token=EOS, pad_token=PAD,
                                         extra_special_tokens=FIM)

    with local_output(out_dir) as local:
        hf_tok.save_pretrained(str(local))
        digest = _files_digest([p for p in local.iterdir() if p.is_file() and p.name != "manifest.json"])
    seconds = time.perf_counter() - t0
    log.info("tokenizer: vocab %d in %.1fs -> %s", len(hf_tok), seconds, out_dir)
    return Manifest(
        stage="tokenizer",
        uris={"tokenizer": out_dir},
        counts={"vocab_size": len(hf_tok), "docs": n_docs, "bytes": n_bytes, "seconds": round(seconds, 3),
                "bytes_per_s": round(n_bytes / max(seconds, 1e-9), 1)},
        stats={"pretrained": cfg.pretrained, "special_tokens": SPECIAL_TOKENS if not cfg.pretrained else None},
        digest=digest,
    )


# --------------------------------------------------------------------------- packing
def order_documents(docs: pd.DataFrame, order: Literal["language-repo", "random"], seed: int) -> np.ndarray:
    """Row positions of `docs` in packing order (deterministic given seed; independent of the input row order).

    language-repo: languages in sorted order; inside a language the repositories in seeded random order; inside a
    repository the files in seeded random order (arXiv 2409.02326 §2.2: "partitioning code files by programming
    language, grouping them by repository, and then concatenating them in random order").
    random: one seeded permutation of all files.
    """
    rng = np.random.default_rng(seed)
    canonical = np.lexsort((docs["doc_id"].astype(str).to_numpy(),))  # input order must not matter
    if order == "random":
        return canonical[rng.permutation(len(canonical))]
    if order != "language-repo":
        raise UserError(f"unknown packing order {order!r}; choose 'language-repo' or 'random'")
    lang = docs["language"].fillna("unknown").astype(str).to_numpy()[canonical]
    repo = docs["repo"].fillna("unknown").astype(str).to_numpy()[canonical]
    groups: dict[str, dict[str, list[int]]] = {}
    for pos, (lg, rp) in enumerate(zip(lang, repo)):
        groups.setdefault(lg, {}).setdefault(rp, []).append(int(canonical[pos]))
    out: list[int] = []
    for lg in sorted(groups):
        repos = sorted(groups[lg])
        for r in rng.permutation(len(repos)):
            files = groups[lg][repos[r]]
            out.extend(files[i] for i in rng.permutation(len(files)))
    return np.asarray(out, dtype=np.int64)


class _TokenWriter:
    """Append token arrays to a local binary file (buffered), hashing and counting as it goes."""

    def __init__(self, path: Path, dtype: np.dtype, flush_tokens: int = 1 << 20):
        self.path, self.dtype, self.flush_tokens = path, dtype, flush_tokens
        self.fh = path.open("wb")
        self.buf: list[np.ndarray] = []
        self.buffered = 0
        self.n_tokens = 0
        self.sha = hashlib.sha256()

    def write(self, arr: np.ndarray) -> None:
        self.buf.append(arr)
        self.buffered += len(arr)
        self.n_tokens += len(arr)
        if self.buffered >= self.flush_tokens:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            data = np.concatenate(self.buf).astype(self.dtype, copy=False).tobytes()
            self.fh.write(data)
            self.sha.update(data)
        self.buf, self.buffered = [], 0

    def close(self) -> None:
        self.flush()
        self.fh.close()


def _encode(tok, texts: list[str]) -> list[list[int]]:
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:
        fast = getattr(backend, "encode_batch_fast", backend.encode_batch)
        return [e.ids for e in fast(texts, add_special_tokens=False)]
    return tok(texts, add_special_tokens=False)["input_ids"]


def _tokenize_source(tok, uris: list[str], eos_id: int, dtype: np.dtype) -> tuple[pd.DataFrame, list[np.ndarray], dict]:
    """Read a source's shards and tokenize every document (each followed by <|endoftext|>)."""
    docs = storage.read_shards(uris, columns=["doc_id", "repo", "language", "content"])
    texts = docs["content"].astype(str).tolist()
    t0 = time.perf_counter()
    arrays: list[np.ndarray] = []
    for start in range(0, len(texts), ENCODE_BATCH):
        for ids in _encode(tok, texts[start : start + ENCODE_BATCH]):
            arrays.append(np.asarray([*ids, eos_id], dtype=dtype))
    seconds = time.perf_counter() - t0
    n_bytes = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
    return docs.drop(columns=["content"]), arrays, {"encode_seconds": seconds, "bytes": n_bytes}


def mixture_budgets(total: int, weights: list[float], unique: list[int], max_repeat: int | None = None) -> list[int]:
    """Tokens each source contributes to a `total`-token mixture: proportional to its weight, but never more than
    `max_repeat` x its unique tokens; what a capped source cannot fill is shared among the others by weight. The sum
    is below `total` only when every source is capped."""
    if len(weights) != len(unique):
        raise ValueError("weights and unique token counts differ in length")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise UserError(f"pack: source weights must be >= 0 and sum to > 0, got {weights}")
    caps = [float("inf") if max_repeat is None else max_repeat * u for u in unique]
    budgets = [0.0] * len(weights)
    open_ = [i for i, w in enumerate(weights) if w > 0]
    remaining = float(total)
    while open_ and remaining > 0.5:
        wsum = sum(weights[i] for i in open_)
        share = {i: remaining * weights[i] / wsum for i in open_}
        capped = [i for i in open_ if budgets[i] + share[i] >= caps[i]]
        if not capped:
            for i in open_:
                budgets[i] += share[i]
            break
        for i in capped:  # fill the capped sources to their cap, then share what is left among the rest
            remaining -= caps[i] - budgets[i]
            budgets[i] = caps[i]
        open_ = [i for i in open_ if i not in capped]
    return [int(round(b)) for b in budgets]


def pack(
    tokenizer_dir: str,
    sources: list[tuple[list[str], float]],
    out_dir: str,
    *,
    order: Literal["language-repo", "random"],
    seed: int,
    repeat: int = 1,
    total_tokens: int | None = None,
    max_repeat: int | None = None,
) -> Manifest:
    """Tokenize and pack documents into `<out_dir>/tokens.bin` + `meta.json`.

    One source and no total_tokens: the source's documents `repeat` times, each repetition ordered with seed + i
    (paper phase 2: the top-quality tokens repeated 4x, Table 6). Otherwise every source contributes
    weight / sum(weights) * total_tokens tokens, cycling through its documents (re-ordered each cycle) and cutting
    the last document at the budget (phase 3: synthetic + high-quality mixture). With several sources and no
    total_tokens the budget is repeat * (all sources' tokens). `max_repeat` caps how often any source is cycled
    (see mixture_budgets).
    """
    from transformers import AutoTokenizer

    if not sources:
        raise UserError("pack: no sources given")
    if repeat < 1:
        raise UserError(f"pack: repeat must be >= 1, got {repeat}")
    t0 = time.perf_counter()
    with storage.local_dir(tokenizer_dir) as tok_path:
        tok = AutoTokenizer.from_pretrained(str(tok_path))
    vocab = max(len(tok), getattr(tok, "vocab_size", 0) or 0)
    dtype = np.dtype(np.uint16 if vocab < 65536 else np.uint32)
    eos_id = tok.eos_token_id
    if eos_id is None:
        raise UserError(f"tokenizer {tokenizer_dir} has no eos token")

    tokenized, encode_s, n_bytes = [], 0.0, 0
    for i, (uris, weight) in enumerate(sources):
        if weight < 0:
            raise UserError(f"pack: source {i} has a negative weight {weight}")
        meta, arrays, info = _tokenize_source(tok, list(uris), eos_id, dtype)
        if not arrays:
            raise UserError(f"pack: source {i} has no documents ({len(uris)} shards)")
        tokenized.append((meta, arrays, float(weight)))
        encode_s += info["encode_seconds"]
        n_bytes += info["bytes"]
    unique_tokens = sum(sum(len(a) for a in arrays) for _, arrays, _ in tokenized)
    log.info("tokenized %d sources: %d tokens from %.1f MB in %.1fs", len(sources), unique_tokens, n_bytes / 1e6, encode_s)

    if len(tokenized) == 1 and total_tokens is None:
        budgets = [None]
    else:
        total = total_tokens if total_tokens is not None else repeat * unique_tokens
        budgets = mixture_budgets(total, [w for _, _, w in tokenized],
                                  [int(sum(len(a) for a in arrays)) for _, arrays, _ in tokenized], max_repeat)
        if sum(budgets) < total:
            log.warning("pack: every source hit max_repeat=%s; the mixture has %d of the %d tokens asked for",
                        max_repeat, sum(budgets), total)

    per_language: dict[str, int] = {}
    per_source: dict[str, int] = {}
    n_docs = 0
    with local_output(out_dir) as local:
        tmp = local / ".tokens.bin.tmp"
        writer = _TokenWriter(tmp, dtype)
        for i, ((meta, arrays, _), budget) in enumerate(zip(tokenized, budgets)):
            langs = meta["language"].fillna("unknown").astype(str).to_numpy()
            written, cycle = 0, 0
            while (budget is None and cycle < repeat) or (budget is not None and written < budget):
                for pos in order_documents(meta, order, seed + cycle):
                    arr = arrays[pos]
                    if budget is not None and written + len(arr) > budget:
                        arr = arr[: budget - written]
                    writer.write(arr)
                    written += len(arr)
                    n_docs += 1
                    per_language[langs[pos]] = per_language.get(langs[pos], 0) + len(arr)
                    if budget is not None and written >= budget:
                        break
                cycle += 1
            per_source[str(i)] = written
            log.info("source %d: %d tokens (%d cycle(s) over %d docs)", i, written, cycle, len(arrays))
        writer.close()
        os.replace(tmp, local / "tokens.bin")
        meta_json = {
            "dtype": dtype.name, "n_tokens": writer.n_tokens, "n_docs": n_docs, "vocab_size": vocab,
            "eos_id": eos_id, "order": order, "seed": seed, "repeat": repeat, "total_tokens": total_tokens,
            "per_language": per_language, "per_source": per_source,
            "sources": [{"index": i, "weight": w, "docs": len(a), "unique_tokens": int(sum(len(x) for x in a))}
                        for i, (_, a, w) in enumerate(tokenized)],
        }
        storage.write_json(str(local / "meta.json"), meta_json)
    seconds = time.perf_counter() - t0
    log.info("packed %d tokens (%d docs) in %.1fs -> %s", writer.n_tokens, n_docs, seconds, out_dir)
    return Manifest(
        stage="pack",
        uris={"tokens": out_dir, "tokens_bin": storage.join(out_dir, "tokens.bin"),
              "meta": storage.join(out_dir, "meta.json")},
        counts={"n_tokens": writer.n_tokens, "n_docs": n_docs, "unique_tokens": unique_tokens,
                "unique_docs": sum(len(a) for _, a, _ in tokenized), "bytes": n_bytes,
                "bytes_per_token": round(n_bytes / max(1, unique_tokens), 3), "seconds": round(seconds, 3),
                "tokens_per_s": round(unique_tokens / max(encode_s, 1e-9), 1)},
        stats={"per_language": per_language, "per_source": per_source, "dtype": dtype.name, "order": order},
        digest=writer.sha.hexdigest()[:16],
    )
