"""Tokenizer training, pre-tokenization into token shards, and token packing.

train_tokenizer: a byte-level BPE (HF `tokenizers`) over the phase-1 training documents, saved as an HF tokenizer
    directory (AutoTokenizer.from_pretrained loads it). The paper only says "vocab 64000" (arXiv 2409.02326,
    Table 1); special tokens follow StarCoder: <|endoftext|> (eos, also bos), <|pad|>, and the FIM tokens.
tokenize_shards: one task per document shard, in parallel processes: each writes a token shard `<name>.bin` (flat
    token ids, uint16 when the vocab fits, else uint32; each document followed by <|endoftext|>) and its index
    `<name>.index.parquet` (doc_id, repo, language, start, length), the index last as the shard's commit marker,
    so a killed run resumes shard by shard; `shards.json` lists a finished directory's shards. Reports tokens/s.
pack: token shards (memory-mapped, not re-tokenized) -> one flat `tokens.bin` + `meta.json` that model/data.py
    memory-maps. Documents are ordered "grouped by language, then by repository, concatenated in random order"
    (§2.2, §3.3 / Table 3: the best of the grouping ablations; StarCoder2-style repo grouping), or file-level
    random, and joined by <|endoftext|>. Several sources mix by weight; `language_shares` sets a language's share
    of the mixture (phase 3: Python about 50%, the other languages' proportions unchanged, §2.4).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import signal
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
import pandas as pd

from snowcoder import storage
from snowcoder.code import code_digest
from snowcoder.config import TokenizerConfig, UserError
from snowcoder.manifest import Manifest

log = logging.getLogger("snowcoder.tokenize")

EOS = "<|endoftext|>"
PAD = "<|pad|>"
FIM = ["<fim_prefix>", "<fim_middle>", "<fim_suffix>"]
SPECIAL_TOKENS = [EOS, PAD, *FIM]  # ids 0..4 in a trained tokenizer
ENCODE_BATCH = 512  # documents per batch-encode call
SHARD_FORMAT = 1  # version of the token-shard layout below (part of every shard's resume key)
SHARD_META_KEY = b"snowcoder.tokens"  # parquet schema metadata of a shard index: dtype, counts, resume key
SHARDS_FILE = "shards.json"  # a token-shard directory's table of contents, written after all its shards
INDEX_COLUMNS = ["doc_id", "repo", "language", "start", "length"]


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


# --------------------------------------------------------------------------- token shards
def token_dtype(vocab_size: int) -> np.dtype:
    """The dtype of token ids: uint16 when the vocab is below 65536 (half the bytes of uint32), else uint32."""
    return np.dtype(np.uint16 if vocab_size < 65536 else np.uint32)


def _shard_name(doc_uri: str) -> str:
    """`.../train-00003.parquet` -> `train-00003`: a token shard is named after its document shard."""
    name = doc_uri.rstrip("/").rsplit("/", 1)[-1]
    return name[: -len(".parquet")] if name.endswith(".parquet") else name


def _encode(tok, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, no special tokens added (the Rust batch encoder when the tokenizer has one)."""
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:
        fast = getattr(backend, "encode_batch_fast", backend.encode_batch)
        return [e.ids for e in fast(texts, add_special_tokens=False)]
    return tok(texts, add_special_tokens=False)["input_ids"]


def _read_shard_meta(index_uri: str) -> dict | None:
    """The metadata a token shard's index carries (None when there is no index or it is not ours)."""
    import pyarrow.parquet as pq

    if not storage.exists(index_uri):
        return None
    fs, path = storage.fs_for(index_uri)
    try:
        with fs.open(path, "rb") as fh:
            raw = (pq.read_schema(fh).metadata or {}).get(SHARD_META_KEY)
        return json.loads(raw) if raw else None
    except Exception:  # a torn or foreign file is not a finished shard
        return None


def _index_bytes(index: pd.DataFrame, meta: dict) -> bytes:
    """The index as parquet, with the shard's metadata (dtype, tokenizer, counts, resume key) in its schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(index, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           SHARD_META_KEY: json.dumps(meta, sort_keys=True).encode()})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _offsets(lengths: np.ndarray) -> np.ndarray:
    """Start of each document in a shard's .bin: the running sum of the lengths before it."""
    starts = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    return starts


def _write_shard(prefix: str, tokens: np.ndarray, index: pd.DataFrame, key: str, counts: dict,
                 shared: dict) -> dict:
    """Write one token shard: `<prefix>.bin`, then `<prefix>.index.parquet` (the commit marker) carrying the resume
    key, the counts and the shard's info (name, `shared` tokenizer fields, content digest, tokens per language).
    Returns counts + info: what `_commit_dir` sums."""
    data = tokens.tobytes()
    content = hashlib.sha256(data)
    content.update(pd.util.hash_pandas_object(index, index=False).to_numpy().tobytes())
    info = {"shard": prefix.rstrip("/").rsplit("/", 1)[-1], **shared, "content_sha256": content.hexdigest()[:16],
            "per_language": {str(k): int(v) for k, v in index.groupby("language")["length"].sum().items()}}
    storage.write_bytes(f"{prefix}.bin", data)
    storage.write_bytes(f"{prefix}.index.parquet", _index_bytes(index, {"format": SHARD_FORMAT, "key": key,
                                                                        "counts": counts, "info": info}))
    return {**counts, **info}


def _commit_dir(out_dir: str, shared: dict, results: list[dict]) -> tuple[str, dict, dict[str, int]]:
    """Write `<out_dir>/shards.json` (the shards in order and the tokenizer fields they share: what `pack` reads) and
    return (its digest, the summed counts, tokens per language)."""
    toc = {"format": SHARD_FORMAT, **shared,
           "shards": [{k: r[k] for k in ("shard", "docs", "tokens", "bytes", "content_sha256")} for r in results]}
    storage.write_json(storage.join(out_dir, SHARDS_FILE), toc)
    per_language: dict[str, int] = {}
    for r in results:
        for lang, n in r["per_language"].items():
            per_language[lang] = per_language.get(lang, 0) + n
    n_tokens, n_bytes = sum(r["tokens"] for r in results), sum(r["bytes"] for r in results)
    counts = {"shards": len(results), "shards_reused": sum(r["skipped"] for r in results),
              "docs": sum(r["docs"] for r in results), "tokens": n_tokens, "bytes": n_bytes,
              "bytes_per_token": round(n_bytes / max(1, n_tokens), 3)}
    return hashlib.sha256(json.dumps(toc, sort_keys=True).encode()).hexdigest()[:16], counts, per_language


def tokenize_shard(tokenizer_dir: str, doc_uri: str, out_prefix: str) -> dict:
    """Tokenize one document shard (parquet: doc_id, repo, language, content) into `<out_prefix>.bin` and
    `<out_prefix>.index.parquet`.

    The .bin is the flat token array (numpy `token_dtype(vocab)`), each document followed by <|endoftext|>; index
    row i is document i: doc_id, repo, language, start (offset in the .bin, in tokens) and length (its tokens with
    the trailing <|endoftext|>), so the rows tile the .bin in input order. Both files are written atomically
    (storage: tmp + rename locally, one PUT on object stores), the index last: it is the shard's commit marker.
    A shard whose index exists and carries the same resume key (tokenizer files, document-shard content, this
    module's code) is skipped, so a killed run redoes only unfinished shards; any other index is stale and the
    shard is redone. Returns the shard's counts (docs, tokens, bytes, seconds, tokens_per_s, skipped) and what
    tokenize_shards checks across shards (dtype, vocab_size, eos_id, tokenizer_digest, content_sha256).
    """
    from transformers import AutoTokenizer

    t0 = time.perf_counter()
    index_uri = f"{out_prefix}.index.parquet"
    raw = storage.read_bytes(doc_uri)
    with storage.local_dir(tokenizer_dir) as tok_path:
        tok_digest = _files_digest([p for p in tok_path.iterdir() if p.is_file() and p.name != "manifest.json"])
        key = hashlib.sha256(json.dumps({"format": SHARD_FORMAT, "tokenizer": tok_digest, "code": code_digest(__name__),
                                         "docs": hashlib.sha256(raw).hexdigest()}).encode()).hexdigest()[:24]
        done = _read_shard_meta(index_uri)
        if done is not None and done.get("key") == key:
            return {**done["counts"], **done["info"], "seconds": 0.0, "tokens_per_s": 0.0, "skipped": 1}
        storage.remove(index_uri)  # a stale shard (other inputs or code): uncommit it before touching its .bin
        tok = AutoTokenizer.from_pretrained(str(tok_path))
    vocab = max(len(tok), getattr(tok, "vocab_size", 0) or 0)
    eos_id = tok.eos_token_id
    if eos_id is None:
        raise UserError(f"tokenizer {tokenizer_dir} has no eos token; documents could not be separated")
    dtype = token_dtype(vocab)

    docs = pd.read_parquet(io.BytesIO(raw), columns=["doc_id", "repo", "language", "content"])
    texts = ["" if c is None or c != c else str(c) for c in docs["content"].tolist()]
    eos = np.array([eos_id], dtype=dtype)
    pieces: list[np.ndarray] = []  # ids as numpy per batch: 2-4 bytes a token, not a Python int's 28
    for start in range(0, len(texts), ENCODE_BATCH):
        for ids in _encode(tok, texts[start : start + ENCODE_BATCH]):
            pieces += [np.asarray(ids, dtype=dtype), eos]
    tokens = np.concatenate([*pieces, np.zeros(0, dtype=dtype)])
    lengths = np.asarray([len(p) + 1 for p in pieces[::2]], dtype=np.int64)
    index = pd.DataFrame({
        "doc_id": docs["doc_id"].astype(str).to_numpy(),
        "repo": docs["repo"].fillna("unknown").astype(str).to_numpy(),
        "language": docs["language"].fillna("unknown").astype(str).to_numpy(),
        "start": _offsets(lengths), "length": lengths,
    }, columns=INDEX_COLUMNS)
    counts = {"docs": len(index), "tokens": len(tokens),
              "bytes": sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)}
    shared = {"dtype": dtype.name, "vocab_size": vocab, "eos_id": int(eos_id), "tokenizer_digest": tok_digest}
    result = _write_shard(out_prefix, tokens, index, key, counts, shared)
    seconds = time.perf_counter() - t0
    return {**result, "seconds": round(seconds, 3), "tokens_per_s": round(len(tokens) / max(seconds, 1e-9), 1),
            "skipped": 0}


def _worker_init() -> None:
    # one shard per process: the tokenizer's own thread pool would only oversubscribe the cores
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def _after_shard(n: int) -> None:
    """After the n-th shard is committed in this run: SNOWCODER_TOKENIZE_FAILPOINT=<n> kills this process
    (SIGKILL; fault injection for resume tests)."""
    if os.environ.get("SNOWCODER_TOKENIZE_FAILPOINT") == str(n):
        log.warning("tokenize: SNOWCODER_TOKENIZE_FAILPOINT %d: killing this process with SIGKILL", n)
        os.kill(os.getpid(), signal.SIGKILL)


def _remove_stale(out_dir: str, names: set[str]) -> None:
    """Delete shard files of documents shards that are no longer inputs, and the directory's table of contents."""
    fs, path = storage.fs_for(out_dir)
    if not fs.exists(path):
        return
    for entry in fs.ls(path, detail=False):
        base = entry.rstrip("/").rsplit("/", 1)[-1]
        stem = base[: -len(".bin")] if base.endswith(".bin") else \
            base[: -len(".index.parquet")] if base.endswith(".index.parquet") else None
        if (stem is not None and stem not in names) or base == SHARDS_FILE:
            fs.rm_file(entry)


def tokenize_shards(tokenizer_dir: str, doc_uris: list[str], out_dir: str, workers: int = 1) -> Manifest:
    """Tokenize every document shard into a token shard under out_dir (tokenize_shard), `workers` processes at a
    time (spawned; in this process when workers == 1), then write `<out_dir>/shards.json`: the shards in input
    order with their counts, and the dtype, vocab, eos id and tokenizer digest they share (what `pack` reads).
    Shards finished by an earlier, killed run with the same inputs are skipped. The output does not depend on
    `workers`. tokens_per_s = tokens tokenized in this run / wall seconds."""
    if workers < 1:
        raise UserError(f"tokenize: workers must be >= 1, got {workers}")
    if not doc_uris:
        raise UserError("tokenize: no document shards given")
    names = [_shard_name(u) for u in doc_uris]
    if len(set(names)) != len(names):
        raise UserError(f"tokenize: document shards must have distinct file names, got {doc_uris}")
    storage.makedirs(out_dir)
    _remove_stale(out_dir, set(names))
    prefixes = [storage.join(out_dir, n) for n in names]
    t0 = time.perf_counter()
    results: list[dict] = []

    def finished(result: dict) -> None:
        results.append(result)
        log.info("tokenize %s: %s %d docs, %d tokens (%.0f tokens/s)", result["shard"],
                 "reused" if result["skipped"] else "wrote", result["docs"], result["tokens"], result["tokens_per_s"])
        if not result["skipped"]:
            _after_shard(sum(1 for r in results if not r["skipped"]))

    if workers > 1 and len(doc_uris) > 1:
        with ProcessPoolExecutor(max_workers=min(workers, len(doc_uris)), mp_context=get_context("spawn"),
                                 initializer=_worker_init) as pool:
            for result in pool.map(tokenize_shard, [tokenizer_dir] * len(doc_uris), doc_uris, prefixes):
                finished(result)
    else:
        for doc_uri, prefix in zip(doc_uris, prefixes):
            finished(tokenize_shard(tokenizer_dir, doc_uri, prefix))
    wall = time.perf_counter() - t0

    shared = {k: results[0][k] for k in ("dtype", "vocab_size", "eos_id", "tokenizer_digest")}
    if any({k: r[k] for k in shared} != shared for r in results):
        raise UserError(f"tokenize: the tokenizer at {tokenizer_dir} changed while its shards were written; run again")
    digest, counts, per_language = _commit_dir(out_dir, shared, results)
    computed = sum(r["tokens"] for r in results if not r["skipped"])
    log.info("tokenized %d shards (%d reused): %d tokens from %.1f MB in %.1fs (%.0f tokens/s, %d workers)",
             len(results), counts["shards_reused"], counts["tokens"], counts["bytes"] / 1e6, wall,
             computed / max(wall, 1e-9), workers)
    return Manifest(
        stage="tokenize",
        uris={"tokens": out_dir, "shards": prefixes, "toc": storage.join(out_dir, SHARDS_FILE)},
        counts={**counts, "wall_seconds": round(wall, 3), "tokens_per_s": round(computed / max(wall, 1e-9), 1),
                "workers": workers},
        stats={"dtype": shared["dtype"], "vocab_size": shared["vocab_size"], "per_language": per_language,
               "per_shard": [{k: r[k] for k in ("shard", "docs", "tokens", "bytes", "seconds", "tokens_per_s",
                                                "skipped")} for r in results]},
        digest=digest,
    )


def subset_shards(token_dir: str, keep: pd.DataFrame, out_dir: str) -> Manifest:
    """The documents of `keep` (columns doc_id, size_bytes) cut out of the token shards at `token_dir` (written by
    tokenize_shards) into a token-shard directory of the same format under `out_dir`: one output shard per source
    shard that keeps a document, documents in source order, tokens copied from the memory-mapped .bin, nothing
    re-tokenized. What phase 2 does with its selection: the selected files were tokenized in phase 1 already, and
    copying ids is I/O where tokenizing is CPU (at paper scale, 12.5B tokens). Output shards are committed like
    tokenize_shard's (index last, resume key over the source shard, the kept ids and this code), so a killed run
    redoes only unfinished shards. Every id in `keep` must be in the source shards."""
    t0 = time.perf_counter()
    wanted = set(keep["doc_id"].astype(str))
    size_of = keep.drop_duplicates("doc_id").set_index("doc_id")["size_bytes"] if "size_bytes" in keep else None
    keep_digest = hashlib.sha256("\n".join(sorted(wanted)).encode()).hexdigest()
    storage.makedirs(out_dir)
    results: list[dict] = []
    found: set[str] = set()
    with storage.local_dir(token_dir) as src:
        toc_path = src / SHARDS_FILE
        if not toc_path.exists():
            raise UserError(f"subset: {token_dir} is not a token-shard directory (no {SHARDS_FILE})")
        toc = json.loads(toc_path.read_text())
        shared = {k: toc[k] for k in ("dtype", "vocab_size", "eos_id", "tokenizer_digest")}
        dtype = np.dtype(toc["dtype"])
        names = []
        for shard in toc["shards"]:
            index = pd.read_parquet(src / f"{shard['shard']}.index.parquet", columns=INDEX_COLUMNS)
            rows = index[index["doc_id"].astype(str).isin(wanted)]
            if rows.empty:
                continue
            name = shard["shard"]
            names.append(name)
            prefix = storage.join(out_dir, name)
            index_uri = f"{prefix}.index.parquet"
            key = hashlib.sha256(json.dumps({"format": SHARD_FORMAT, "code": code_digest(__name__), "keep": keep_digest,
                                             "source": shard["content_sha256"]}).encode()).hexdigest()[:24]
            found.update(rows["doc_id"].astype(str))
            done = _read_shard_meta(index_uri)
            if done is not None and done.get("key") == key:
                results.append({**done["counts"], **done["info"], "skipped": 1})
                continue
            storage.remove(index_uri)
            tokens = np.memmap(src / f"{name}.bin", dtype=dtype, mode="r")
            data = np.concatenate([tokens[a : a + n] for a, n in zip(rows["start"], rows["length"])] or
                                  [np.zeros(0, dtype=dtype)])
            lengths = rows["length"].to_numpy(dtype=np.int64)
            out_index = rows.assign(start=_offsets(lengths), length=lengths)[INDEX_COLUMNS].reset_index(drop=True)
            ids = out_index["doc_id"].astype(str)
            counts = {"docs": len(out_index), "tokens": int(len(data)),
                      "bytes": int(ids.map(size_of).fillna(0).sum()) if size_of is not None else 0}
            results.append({**_write_shard(prefix, data, out_index, key, counts, shared), "skipped": 0})
    missing = wanted - found
    if missing:
        raise UserError(f"subset: {len(missing)} selected documents are not in the token shards at {token_dir} "
                        f"(e.g. {sorted(missing)[:3]}): they were tokenized from another document set")
    if not results:
        raise UserError(f"subset: nothing selected from {token_dir}")
    _remove_stale(out_dir, set(names))
    digest, counts, per_language = _commit_dir(out_dir, shared, results)
    wall = time.perf_counter() - t0
    log.info("subset of %s: %d docs, %d tokens in %d shards (%d reused) in %.1fs", token_dir, len(wanted),
             counts["tokens"], counts["shards"], counts["shards_reused"], wall)
    return Manifest(
        stage="tokenize",
        uris={"tokens": out_dir, "shards": [storage.join(out_dir, n) for n in names],
              "toc": storage.join(out_dir, SHARDS_FILE), "source": token_dir},
        counts={**counts, "wall_seconds": round(wall, 3), "tokens_per_s": round(counts["tokens"] / max(wall, 1e-9), 1)},
        stats={"dtype": shared["dtype"], "vocab_size": shared["vocab_size"], "per_language": per_language,
               "copied_from": token_dir},
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


def validate_language_shares(shares: dict[str, float] | None) -> dict[str, float]:
    """Check language_shares: every share in [0, 1] and their sum <= 1 ({} or None: no shares)."""
    shares = dict(shares or {})
    bad = {lang: s for lang, s in shares.items() if not isinstance(s, (int, float)) or not 0 <= s <= 1}
    if bad:
        raise UserError(f"pack: language shares must be numbers in [0, 1], got {bad}")
    if sum(shares.values()) > 1 + 1e-9:
        raise UserError(f"pack: language shares sum to {sum(shares.values()):g} > 1: {shares}")
    return {str(lang): float(s) for lang, s in shares.items()}


def language_budgets(total: int, weights: list[float], unique: list[dict[str, int]], shares: dict[str, float],
                     max_repeat: int | None = None) -> list[dict[str, int]]:
    """Tokens each (source, language) contributes to a `total`-token mixture in which the named languages take
    `shares` of the whole (e.g. {"python": 0.5}, arXiv 2409.02326 §2.4: phase 3 raises Python to about 50% and
    keeps the other languages' proportions unchanged).

    The natural mixture gives source i weight_i / sum(weights) of the total and, inside it, each language its share
    of the source's unique tokens (`unique[i][lang]`). With shares: a named language gets share x total; the other
    languages split the rest (1 - sum of shares) in their natural proportions; inside a language each source keeps
    its natural part (weight x that language's share of the source). `max_repeat` caps every (source, language)
    at max_repeat x its unique tokens; what a capped language cannot fill goes to the other languages by their
    targets (so its share is not reached), what a capped source cannot fill inside a language to that language's
    other sources. Sources with weight 0 take no part.
    Raises UserError for a named language that no source (of weight > 0) has; when no other language is left to
    fill the rest, the named languages fill the whole mixture in proportion to their shares (logged).
    """
    shares = validate_language_shares(shares)
    if len(weights) != len(unique):
        raise ValueError("weights and unique token counts differ in length")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise UserError(f"pack: source weights must be >= 0 and sum to > 0, got {weights}")
    wsum = sum(weights)
    natural = [{lang: total * w / wsum * u / max(1, sum(src.values())) for lang, u in src.items() if u > 0}
               if w > 0 else {} for w, src in zip(weights, unique)]
    present: dict[str, float] = {}
    for nat in natural:
        for lang, n in nat.items():
            present[lang] = present.get(lang, 0.0) + n
    absent = sorted(lang for lang in shares if lang not in present)
    if absent:
        raise UserError(f"pack: language_shares names {', '.join(absent)}, which no source (of weight > 0) has; "
                        f"languages present: {', '.join(sorted(present))}")
    target = dict(shares)
    others = {lang: n for lang, n in present.items() if lang not in shares}
    rest = max(0.0, 1.0 - sum(shares.values()))
    if others:
        target.update({lang: rest * n / sum(others.values()) for lang, n in others.items()})
    elif rest > 1e-9:
        log.warning("pack: no language besides %s to fill the other %.0f%% of the mixture; the named languages "
                    "fill it in proportion to their shares", ", ".join(sorted(shares)), 100 * rest)
    if sum(target.values()) <= 0:
        raise UserError(f"pack: language_shares {shares} leave no language to pack")
    langs = sorted(target)
    lang_unique = [sum(src.get(lang, 0) for w, src in zip(weights, unique) if w > 0) for lang in langs]
    per_lang = mixture_budgets(total, [target[lang] for lang in langs], lang_unique, max_repeat)
    out: list[dict[str, int]] = [{} for _ in weights]
    for lang, budget in zip(langs, per_lang):
        if budget <= 0:
            continue
        cells = [i for i, nat in enumerate(natural) if nat.get(lang, 0) > 0]
        split = mixture_budgets(budget, [natural[i][lang] for i in cells], [unique[i][lang] for i in cells],
                                max_repeat)
        for i, b in zip(cells, split):
            if b > 0:
                out[i][lang] = b
    return out


class _TokenSource:
    """The token shards of one pack source (one or more token directories written by tokenize_shards): their
    indexes concatenated (with a `shard` column) and their .bin files memory-mapped. `dirs` are local paths."""

    def __init__(self, dirs: list[Path]):
        self.bins: list[np.ndarray] = []
        frames, self.toc = [], None
        for d in dirs:
            toc_path = d / SHARDS_FILE
            if not toc_path.exists():
                raise UserError(f"pack: {d} is not a token-shard directory (no {SHARDS_FILE}; write it with "
                                "tasks.tokenize.tokenize_shards)")
            toc = json.loads(toc_path.read_text())
            shared = {k: toc[k] for k in ("dtype", "vocab_size", "eos_id", "tokenizer_digest")}
            if self.toc is None:
                self.toc = shared
            elif shared != self.toc:
                raise UserError(f"pack: {d} was tokenized with another tokenizer than {dirs[0]}")
            for shard in toc["shards"]:
                index = pd.read_parquet(d / f"{shard['shard']}.index.parquet", columns=INDEX_COLUMNS)
                n = int(index["length"].sum())
                tokens = (np.memmap(d / f"{shard['shard']}.bin", dtype=np.dtype(toc["dtype"]), mode="r") if n
                          else np.zeros(0, dtype=toc["dtype"]))
                if len(tokens) != n:
                    raise UserError(f"pack: {d}/{shard['shard']}.bin holds {len(tokens)} tokens, its index {n}")
                frames.append(index.assign(shard=len(self.bins)))
                self.bins.append(tokens)
        self.index = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*INDEX_COLUMNS, "shard"])
        self.unique_tokens = int(self.index["length"].sum())

    def per_language(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.index.groupby("language")["length"].sum().items()}

    def emit(self, writer: _TokenWriter, budgets: dict[str, int] | None, *, order: str, seed: int, repeat: int,
             by_language: bool) -> tuple[dict[str, int], int, int]:
        """Write this source's documents: `repeat` passes when budgets is None, else cycle (re-ordered each cycle,
        seed + cycle) until every budget is filled, cutting a document at its budget. budgets is keyed by language
        when by_language, else {"*": budget}. Returns (tokens per language, docs written, cycles)."""
        idx = self.index
        langs = idx["language"].astype(str).tolist()
        shard, start, length = idx["shard"].tolist(), idx["start"].tolist(), idx["length"].tolist()
        remaining = None if budgets is None else {g: b for g, b in budgets.items() if b > 0}
        per_language: dict[str, int] = {}
        n_docs, cycle = 0, 0
        while (remaining is None and cycle < repeat) or (remaining is not None and remaining):
            docs_before = n_docs
            for pos in order_documents(idx, order, seed + cycle):
                n = length[pos]
                if remaining is not None:
                    group = langs[pos] if by_language else "*"
                    left = remaining.get(group, 0)
                    if left <= 0:
                        continue
                    n = min(n, left)
                    if left == n:
                        del remaining[group]
                    else:
                        remaining[group] = left - n
                writer.write(self.bins[shard[pos]][start[pos] : start[pos] + n])
                per_language[langs[pos]] = per_language.get(langs[pos], 0) + n
                n_docs += 1
                if remaining is not None and not remaining:
                    break
            cycle += 1
            if n_docs == docs_before:  # nothing left to write for the open budgets (never for a valid plan)
                break
        return per_language, n_docs, cycle


def pack(
    sources: list[tuple[str | list[str], float]],
    out_dir: str,
    *,
    order: Literal["language-repo", "random"],
    seed: int,
    repeat: int = 1,
    total_tokens: int | None = None,
    max_repeat: int | None = None,
    language_shares: dict[str, float] | None = None,
) -> Manifest:
    """Pack token shards into `<out_dir>/tokens.bin` + `meta.json` (what model/data.py memory-maps).

    A source is (token-shard directory or directories written by tokenize_shards, weight); its shards are
    memory-mapped, never re-tokenized. One source, no total_tokens and no language_shares: the source's documents
    `repeat` times, each repetition ordered with seed + i (paper phase 2: the top-quality tokens repeated 4x,
    Table 6). Otherwise every source contributes weight / sum(weights) * total_tokens tokens, cycling through its
    documents (re-ordered each cycle) and cutting the last document at the budget (phase 3: synthetic +
    high-quality mixture); without total_tokens the budget is repeat * (all sources' tokens). `max_repeat` caps how
    often any source is cycled (see mixture_budgets). `language_shares` ({"python": 0.5}) makes the named languages
    that share of the whole mixture, the other languages keeping their relative proportions and, inside a
    language, the sources theirs (exact definition and errors: language_budgets). meta.json records the achieved
    per-language shares.
    """
    if not sources:
        raise UserError("pack: no sources given")
    if repeat < 1:
        raise UserError(f"pack: repeat must be >= 1, got {repeat}")
    for i, (_, weight) in enumerate(sources):
        if weight < 0:
            raise UserError(f"pack: source {i} has a negative weight {weight}")
    shares = validate_language_shares(language_shares)
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        opened: list[_TokenSource] = []
        for i, (dirs, _) in enumerate(sources):
            dirs = [dirs] if isinstance(dirs, str) else list(dirs)
            src = _TokenSource([stack.enter_context(storage.local_dir(d)) for d in dirs])
            if src.unique_tokens == 0:
                raise UserError(f"pack: source {i} has no documents ({', '.join(dirs)})")
            if opened and src.toc != opened[0].toc:
                raise UserError(f"pack: source {i} was tokenized with another tokenizer than source 0")
            opened.append(src)
        toc = opened[0].toc
        dtype = np.dtype(toc["dtype"])
        weights = [float(w) for _, w in sources]
        unique = [s.unique_tokens for s in opened]
        unique_tokens = sum(unique)

        plan: list[dict[str, int] | None]
        if len(opened) == 1 and total_tokens is None and not shares:
            plan = [None]
        else:
            total = total_tokens if total_tokens is not None else repeat * unique_tokens
            if shares:
                plan = language_budgets(total, weights, [s.per_language() for s in opened], shares, max_repeat)
            else:
                plan = [{"*": b} for b in mixture_budgets(total, weights, unique, max_repeat)]
            planned = sum(sum(p.values()) for p in plan)
            if total - planned > max(2, total // 1000):  # more than rounding: every source is capped
                log.warning("pack: max_repeat=%s caps the mixture at %d of the %d tokens asked for",
                            max_repeat, planned, total)

        per_language: dict[str, int] = {}
        per_source: dict[str, int] = {}
        n_docs = 0
        with local_output(out_dir) as local:
            tmp = local / ".tokens.bin.tmp"
            writer = _TokenWriter(tmp, dtype)
            for i, (src, budgets) in enumerate(zip(opened, plan)):
                langs, docs, cycles = src.emit(writer, budgets, order=order, seed=seed, repeat=repeat,
                                               by_language=bool(shares))
                for lang, n in langs.items():
                    per_language[lang] = per_language.get(lang, 0) + n
                per_source[str(i)] = sum(langs.values())
                n_docs += docs
                log.info("source %d: %d tokens (%d cycle(s) over %d docs)", i, per_source[str(i)], cycles,
                         len(src.index))
            writer.close()
            os.replace(tmp, local / "tokens.bin")
            achieved = {lang: round(n / max(1, writer.n_tokens), 4) for lang, n in sorted(per_language.items())}
            meta_json = {
                "dtype": dtype.name, "n_tokens": writer.n_tokens, "n_docs": n_docs, "vocab_size": toc["vocab_size"],
                "eos_id": toc["eos_id"], "tokenizer_digest": toc["tokenizer_digest"], "order": order, "seed": seed,
                "repeat": repeat, "total_tokens": total_tokens, "max_repeat": max_repeat,
                "language_shares": shares or None, "language_shares_achieved": achieved,
                "per_language": per_language, "per_source": per_source,
                "sources": [{"index": i, "dirs": [d] if isinstance(d, str) else list(d), "weight": w,
                             "docs": len(s.index), "unique_tokens": s.unique_tokens,
                             "budget": None if p is None else sum(p.values())}
                            for i, ((d, w), s, p) in enumerate(zip(sources, opened, plan))],
            }
            storage.write_json(str(local / "meta.json"), meta_json)
        unique_docs = sum(len(s.index) for s in opened)
    seconds = time.perf_counter() - t0
    log.info("packed %d tokens (%d docs) in %.1fs -> %s; language shares %s", writer.n_tokens, n_docs, seconds,
             out_dir, achieved)
    return Manifest(
        stage="pack",
        uris={"tokens": out_dir, "tokens_bin": storage.join(out_dir, "tokens.bin"),
              "meta": storage.join(out_dir, "meta.json")},
        counts={"n_tokens": writer.n_tokens, "n_docs": n_docs, "unique_tokens": unique_tokens,
                "unique_docs": unique_docs, "seconds": round(seconds, 3),
                "tokens_per_s": round(writer.n_tokens / max(seconds, 1e-9), 1)},
        stats={"per_language": per_language, "per_source": per_source, "dtype": dtype.name, "order": order,
               "language_shares": shares or None, "language_shares_achieved": achieved},
        digest=writer.sha.hexdigest()[:16],
    )
