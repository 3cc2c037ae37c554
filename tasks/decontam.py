"""Benchmark decontamination: drop files that contain a benchmark prompt or solution, or a long piece of one.

Arctic-SnowCoder decontaminates its data (arXiv 2409.02326, abstract) without giving the method. We combine the two
methods the open pipelines use (shared/reference/data-curation.md §8, "Decontamination" row):

1. Exact substrings, as BigCode (bigcode-dataset `decontamination/find_substrings.py`, migrated into Magicoder's
   `src/magicoder/decontamination/find_substrings.py`): a file is contaminated when it contains, case-insensitively,
   a benchmark prompt or canonical solution. We match whitespace-normalised text (runs of whitespace -> one space), so
   a re-indented or re-wrapped copy is caught too, and add each prompt's function signature line and docstring body
   (and BigCodeBench's instruct prompt) as separate strings, so a copy without the prompt's imports or surrounding
   helpers is caught as well. Strings shorter than DecontamConfig.min_substring_chars are not matched (too generic;
   BigCode keeps e.g. HumanEval's "return x + y").
2. Long n-gram overlap, as datatrove (`pipeline/decont/n_grams.py`: 12-grams of lowercased, punctuation-free words
   of the prompt and the gold answer, one shared n-gram flags a document; data-curation.md §8 names datatrove's
   12-gram as the anchor): a file is contaminated when it shares a run of DecontamConfig.ngram_size (12) words with a
   task's prompt + canonical solution (+ BigCodeBench's instruct prompt). Words are lowercased runs of two or more
   ASCII word characters: punctuation is dropped as datatrove does (and as BigCode tokenises code on non-identifier
   characters, data-curation.md §4), so reformatting, re-quoting, re-spacing or turning a docstring into `#` comments
   does not hide a copied fragment. Three guards keep clean code clean (measured on the 38,608 stdlib/site-packages
   files of this machine, 540 MB: 35 files matched HumanEval with plain `\\w+` words, all false; 0 with the guards):
   one-character words (loop variables, digits) are not words; an indexed n-gram needs 2 words that are not Python
   keywords, builtins or numbers (no "for in range len for in range len ..."); and an n-gram found in more than
   DecontamConfig.max_ngram_tasks tasks of one benchmark is boilerplate (imports, "Requirements: - pandas - numpy"
   headers) and is not matched. On 40 HumanEval docstrings planted as `#` comments, or cut in half, the n-gram check
   catches 33/40 and 31/40 (the rest have fewer than 12 words); the substring check alone catches none.

Speed: one pass over each file, ~20-25 MB/s per core on code (the substring check alone: ~35). A file's words are
found once (one regex over its UTF-8 bytes) and serve both checks. Substrings: a benchmark string is tested with `in`
against the whitespace-normalised lowercased file only when all its inner words (whole words in any text containing
it) are among the file's words, found through its longest inner word (an inverted index). N-grams: the benchmark
n-grams are a sorted array of 64-bit polynomial hashes of word ids; a file's words are mapped to ids (words no
benchmark uses break windows), every window's hash is computed with numpy and looked up by binary search, and a hit
is verified word by word.

Every hit is reported (hits.parquet: doc_id, repo, path, benchmark, task_id, kind, match, n_ngrams; kind is
prompt / solution / signature / docstring / instruct_prompt for substrings and ngram for overlaps), with counts per
benchmark in the stats. A file's exclusion reason is `contaminated:<task>`, the task of its first substring hit
(else the task it shares most n-grams with): HumanEval/12, Mbpp/2, BigCodeBench/7, EvoEval_difficult/3.

Sharding: `decontaminate_shard` decides one input shard (no writes), `merge_decontaminate` writes the outputs;
`decontaminate` does both in this process, flows/scale.py on Dask workers (see tasks/shards.py).
"""
from __future__ import annotations

import builtins
import hashlib
import json
import keyword
import logging
import re
import time
from functools import lru_cache
from itertools import repeat
from typing import Iterable, NamedTuple

import numpy as np
import pandas as pd

from snowcoder import storage
from snowcoder.config import DecontamConfig
from snowcoder.manifest import Manifest
from tasks.benchmarks import file_version, load_source
from tasks.docio import exclusions_frame, read_docs, shard_docs_of, write_stage_outputs
from tasks.shards import code_version, ordered_parts, read_shard, split_by_shard

log = logging.getLogger("snowcoder.decontam")

HIT_COLUMNS = ["doc_id", "repo", "path", "benchmark", "task_id", "kind", "match", "n_ngrams"]
MATCH_PREVIEW_CHARS = 200  # report column `match` keeps this much of the matched text
_WORD = re.compile(rb"\w\w+")  # on UTF-8 bytes: ASCII word characters, 1.5x faster than on str
_BASE = np.uint64(0x100000001B3)  # FNV-1 64-bit prime: multiplier of the polynomial window hash
# Python's keywords and builtins (and `self`): an indexed n-gram needs MIN_INFORMATIVE_WORDS words that are neither
# these nor numbers, else it is syntax or data ("for in range len for in range len ...", which matched a clean scipy
# test file) and is not indexed.
GENERIC_WORDS = frozenset(w.lower().encode() for w in keyword.kwlist + keyword.softkwlist + dir(builtins) + ["self"])
MIN_INFORMATIVE_WORDS = 2


class BenchmarkSubstring(str):
    """A whitespace-normalised benchmark string that remembers its task (`item_id`, `benchmark`, `task_id`) and
    which part of it it is (`kind`)."""

    item_id: str
    benchmark: str
    task_id: str
    kind: str

    def __new__(cls, text: str, item_id: str, benchmark: str = "", task_id: str = "",
                kind: str = "") -> "BenchmarkSubstring":
        obj = super().__new__(cls, text)
        obj.item_id, obj.benchmark, obj.task_id, obj.kind = item_id, benchmark, task_id or item_id, kind
        return obj

    def __reduce__(self):
        return (BenchmarkSubstring, (str(self), self.item_id, self.benchmark, self.task_id, self.kind))


class Match(NamedTuple):
    """One hit of one document: which task, what kind of match, the matched text, how many n-grams."""

    benchmark: str
    task_id: str
    item_id: str
    kind: str
    match: str
    n_ngrams: int


def normalize_whitespace(text: str) -> str:
    """Collapse every run of whitespace to one space and strip."""
    return " ".join(text.split())


def tokens(text: str) -> list[bytes]:
    """The words of the n-gram check (and the substring prefilter), as UTF-8 bytes: runs of two or more ASCII word
    characters ([A-Za-z0-9_]) of the lowercased text; punctuation, whitespace, other characters and one-character
    words are dropped."""
    return _WORD.findall(text.lower().encode("utf-8", "surrogatepass"))


def words(text: str) -> list[str]:
    """`tokens` as str (for reading and tests)."""
    return [t.decode() for t in tokens(text)]


def _informative(word: bytes) -> bool:
    """Words that make an n-gram task-specific: not a Python keyword or builtin, not a number."""
    return word not in GENERIC_WORDS and not word.isdigit()


def item_id(problem: dict) -> str:
    """Name of a task in exclusion reasons: the published task id (HumanEval/12, Mbpp/2, BigCodeBench/7); EvoEval's
    ids ("EvoEval/3") are shared by its variants, so they get the variant: EvoEval_difficult/3."""
    benchmark, task_id = problem.get("benchmark", ""), str(problem["task_id"])
    if benchmark.startswith("evoeval_"):
        return f"EvoEval_{benchmark.removeprefix('evoeval_')}/{task_id.rsplit('/', 1)[-1]}"
    return task_id


def _signature_and_docstring(prompt: str, entry_point: str) -> tuple[str, str]:
    """The `def entry_point(...)...:` line(s) of a prompt and the body of the docstring after it (without an entry
    point or its def: the prompt's first triple-quoted string, e.g. EvalPlus's MBPP+ prompts)."""
    start = prompt.find(f"def {entry_point}(") if entry_point else -1
    signature, end = "", 0
    if start >= 0:
        lines, end = [], start
        for line in prompt[start:].splitlines(keepends=True):  # a signature may span several lines
            lines.append(line)
            end += len(line)
            if line.rstrip().endswith(":"):
                break
        signature = "".join(lines)
    elif entry_point and "def " in prompt:
        return "", ""
    match = re.search(r'("""|\'\'\')(.*?)\1', prompt[end:], re.DOTALL)
    return signature, (match.group(2) if match else "")


def problem_strings(problem: dict) -> list[tuple[str, str]]:
    """(kind, text) of one problem matched as substrings: prompt, solution, signature, docstring, instruct_prompt."""
    signature, docstring = _signature_and_docstring(problem.get("prompt", ""), problem.get("entry_point", ""))
    return [("prompt", problem.get("prompt", "")), ("solution", problem.get("canonical_solution", "")),
            ("signature", signature), ("docstring", docstring), ("instruct_prompt", problem.get("instruct_prompt", ""))]


def problem_ngram_texts(problem: dict) -> list[str]:
    """Texts of one problem whose n-grams are indexed: prompt + solution as one text (so n-grams spanning the two
    count, datatrove's find_overlap_ngrams) and BigCodeBench's instruct prompt."""
    prompt_and_solution = problem.get("prompt", "") + "\n" + problem.get("canonical_solution", "")
    return [prompt_and_solution, problem.get("instruct_prompt", "")]


# --------------------------------------------------------------------------- the index
def window_hashes(ids: np.ndarray, n: int) -> np.ndarray:
    """64-bit polynomial hash of every window of `n` consecutive word ids (uint64, wrapping)."""
    count = len(ids) - n + 1
    h = np.zeros(count, dtype=np.uint64)
    for k in range(n):
        h = h * _BASE + ids[k : k + count]
    return h


def _unknown_windows(ids: np.ndarray, n: int) -> np.ndarray:
    """True for every window that holds a word no benchmark uses (id 0): it cannot match."""
    unknown = np.concatenate([[0], np.cumsum(ids == 0)])
    return (unknown[n:] - unknown[:-n]) > 0


class BenchmarkIndex(list):
    """The benchmark strings (a list of BenchmarkSubstring, what `benchmark_substrings` always returned) plus the
    lookup structures of both checks: token -> strings for the substring check, and the n-gram table."""

    def __init__(self, problems: list[dict], min_chars: int, n: int, max_tasks: int):
        super().__init__()
        self.n = n
        self.digest = hashlib.sha256(json.dumps(problems, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.tasks: dict[str, int] = {}  # benchmark -> number of tasks
        for p in problems:
            self.tasks[p["benchmark"]] = self.tasks.get(p["benchmark"], 0) + 1
        self._add_substrings(problems, min_chars)
        self._add_ngrams(problems, n, max_tasks)

    # substrings
    def _add_substrings(self, problems: list[dict], min_chars: int) -> None:
        seen: set[str] = set()
        for p in problems:
            for kind, raw in problem_strings(p):
                text = normalize_whitespace(raw)
                if len(text) >= min_chars and text.lower() not in seen:
                    seen.add(text.lower())
                    self.append(BenchmarkSubstring(text, item_id(p), p["benchmark"], str(p["task_id"]), kind))
        self.lowered = [s.lower() for s in self]
        self.anchors: dict[bytes, list[int]] = {}
        self.unanchored: list[int] = []
        self.inner: list[frozenset[bytes]] = []
        for j, s in enumerate(self.lowered):
            inner = tokens(s)[1:-1]  # the first and last word of a string may be cut out of a longer word
            self.inner.append(frozenset(inner))
            anchor = max(inner, key=len) if inner else None
            if anchor is None:
                self.unanchored.append(j)
            else:
                self.anchors.setdefault(anchor, []).append(j)

    def substring_hits(self, text: str, toks: list[bytes]) -> list[int]:
        """Positions (in this list) of the strings found in `text` (whitespace-normalised, lowercased), in order.
        A string can only be in the text when its inner words (whole words in the text too) are all among the text's
        words `toks`: the anchor (its longest inner word) finds the candidates, only those whose inner words are all
        there are tested with `in`."""
        present = set(toks)
        candidates = set(self.unanchored)
        for token in self.anchors.keys() & present:
            candidates.update(j for j in self.anchors[token] if self.inner[j] <= present)
        if not candidates:
            return []
        norm = normalize_whitespace(text).lower()
        return sorted(j for j in candidates if self.lowered[j] in norm)

    # n-grams
    def _add_ngrams(self, problems: list[dict], n: int, max_tasks: int) -> None:
        """Sorted hash array `keys` with, per key, its owner problem and where the n-gram sits (for verification).
        N-grams of more than max_tasks tasks of one benchmark are dropped; across benchmarks the first owner wins."""
        self.vocab: dict[bytes, int] = {}
        self.owners = [(p["benchmark"], str(p["task_id"]), item_id(p)) for p in problems]
        self.texts: list[np.ndarray] = []
        empty = np.zeros(0, dtype=np.uint64)
        self.keys, self.key_owner, self.key_text, self.key_pos = empty, empty, empty, empty
        self.n_boilerplate = 0
        if n <= 0:
            return
        hashes, owners, texts, positions = [], [], [], []
        for o, p in enumerate(problems):
            for text in problem_ngram_texts(p):
                toks = tokens(text)
                if len(toks) < n:
                    continue
                ids = np.fromiter((self.vocab.setdefault(t, len(self.vocab) + 1) for t in toks), np.uint64, len(toks))
                good = np.concatenate([[0], np.cumsum([_informative(t) for t in toks])])
                informative = np.flatnonzero(good[n:] - good[:-n] >= MIN_INFORMATIVE_WORDS)
                hashes.append(window_hashes(ids, n)[informative])
                owners.append(np.full(len(informative), o, dtype=np.int64))
                texts.append(np.full(len(informative), len(self.texts), dtype=np.int64))
                positions.append(informative.astype(np.int64))
                self.texts.append(ids)
        if not hashes:
            return
        h, owner, text, pos = (np.concatenate(a) for a in (hashes, owners, texts, positions))
        # boilerplate: n-grams found in more than max_tasks distinct tasks of one benchmark
        numbers = {b: i for i, b in enumerate(dict.fromkeys(b for b, _, _ in self.owners))}
        benchmark_of = np.array([numbers[b] for b, _, _ in self.owners], dtype=np.int64)[owner]
        keep = np.ones(len(h), dtype=bool)
        self.n_boilerplate = 0
        for b in np.unique(benchmark_of):
            mask = benchmark_of == b
            pairs = np.unique(np.stack([h[mask], owner[mask].astype(np.uint64)], axis=1), axis=0)
            uniq, n_tasks = np.unique(pairs[:, 0], return_counts=True)
            common = uniq[n_tasks > max_tasks]
            self.n_boilerplate += len(common)
            keep[mask] = ~np.isin(h[mask], common)
        h, owner, text, pos = h[keep], owner[keep], text[keep], pos[keep]
        # one entry per hash: the first occurrence (benchmark order, task order, text order)
        _, first = np.unique(h, return_index=True)
        self.keys, self.key_owner, self.key_text, self.key_pos = h[first], owner[first], text[first], pos[first]

    def ngram_hits(self, toks: list[bytes]) -> dict[int, tuple[int, int]]:
        """{owner: (number of matching n-gram positions, first position)} for a text's words."""
        n = self.n
        if n <= 0 or len(toks) < n or not len(self.keys):
            return {}
        ids = np.fromiter(map(self.vocab.get, toks, repeat(0)), np.uint64, len(toks))
        candidates = np.flatnonzero(~_unknown_windows(ids, n))
        if not len(candidates):
            return {}
        h = window_hashes(ids, n)[candidates]
        j = np.minimum(np.searchsorted(self.keys, h), len(self.keys) - 1)
        found = self.keys[j] == h
        out: dict[int, tuple[int, int]] = {}
        for pos, k in zip(candidates[found].tolist(), j[found].tolist()):
            t, start = int(self.key_text[k]), int(self.key_pos[k])
            if not np.array_equal(ids[pos : pos + n], self.texts[t][start : start + n]):
                continue  # a 64-bit hash collision
            owner = int(self.key_owner[k])
            count, first = out.get(owner, (0, pos))
            out[owner] = (count + 1, first)
        return out

    def scan(self, text: str) -> list[Match]:
        """Every hit of `text`: substring hits in index order, then n-gram hits (most shared n-grams first)."""
        toks = tokens(text)
        matches = []
        for j in self.substring_hits(text, toks):
            s = self[j]
            matches.append(Match(s.benchmark, s.task_id, s.item_id, s.kind, str(s)[:MATCH_PREVIEW_CHARS], 0))
        hits = self.ngram_hits(toks)
        for owner, (count, first) in sorted(hits.items(), key=lambda kv: (-kv[1][0], kv[0])):
            benchmark, task_id, item = self.owners[owner]
            ngram = b" ".join(toks[first : first + self.n]).decode()[:MATCH_PREVIEW_CHARS]
            matches.append(Match(benchmark, task_id, item, "ngram", ngram, count))
        return matches


def decide(matches: list[Match]) -> Match | None:
    """The hit a file's exclusion reason names: the first one (substring hits come first)."""
    return matches[0] if matches else None


def _sources_key(cfg: DecontamConfig) -> tuple:
    """The config plus the version (size, mtime) of each benchmark file: a changed file rebuilds the index."""
    return cfg.model_dump_json(), tuple(file_version(b.path) if b.path and not b.path.startswith("hf:") else ""
                                        for b in cfg.benchmarks)


@lru_cache(maxsize=4)
def _index(cfg_json: str, _versions: tuple) -> BenchmarkIndex:
    cfg = DecontamConfig.model_validate_json(cfg_json)
    t0 = time.perf_counter()
    problems = [p for source in cfg.benchmarks for p in load_source(source)]
    index = BenchmarkIndex(problems, cfg.min_substring_chars, cfg.ngram_size, cfg.max_ngram_tasks)
    log.debug("benchmark index: %d tasks, %d strings, %d %d-grams (%d boilerplate dropped) in %.2fs", len(problems),
              len(index), len(index.keys), cfg.ngram_size, getattr(index, "n_boilerplate", 0), time.perf_counter() - t0)
    return index


def benchmark_index(cfg: DecontamConfig) -> BenchmarkIndex:
    """The index of every configured benchmark (built once per process and config)."""
    return _index(*_sources_key(cfg))


def benchmarks_digest(cfg: DecontamConfig) -> str:
    """Digest of the configured benchmarks' problems (not of the config): changes when a benchmark file does. For
    stage keys, since a path in the config says nothing about the file's content."""
    return benchmark_index(cfg).digest


def benchmark_substrings(cfg: DecontamConfig) -> BenchmarkIndex:
    """Whitespace-normalised benchmark strings (>= cfg.min_substring_chars) as BenchmarkSubstring (str + .item_id):
    the BenchmarkIndex, a list, so `find_contamination(text, benchmark_substrings(cfg))` runs both checks."""
    return benchmark_index(cfg)


# --------------------------------------------------------------------------- matching one text
@lru_cache(maxsize=8192)
def _prepared(substring: str) -> tuple[str, str | None]:
    """(lowercased normalised string, its longest inner token or None when it has fewer than 3 tokens)."""
    lowered = normalize_whitespace(substring).lower()
    inner = lowered.split(" ")[1:-1]
    return lowered, (max(inner, key=len) if inner else None)


def find_matches(text: str, substrings: Iterable[str]) -> list[Match]:
    """Every benchmark hit in `text`. With a BenchmarkIndex: substrings and n-grams; with plain strings: substrings
    (a plain `str` reports itself as its item id)."""
    if isinstance(substrings, BenchmarkIndex):
        return substrings.scan(text)
    norm = normalize_whitespace(text).lower()
    if not norm:
        return []
    tokens = set(norm.split(" "))
    out = []
    for sub in substrings:
        lowered, anchor = _prepared(sub)
        if lowered and (anchor is None or anchor in tokens) and lowered in norm:
            item = getattr(sub, "item_id", sub)
            out.append(Match(getattr(sub, "benchmark", ""), getattr(sub, "task_id", item), item,
                             getattr(sub, "kind", "substring"), str(sub)[:MATCH_PREVIEW_CHARS], 0))
    return out


def find_contamination(text: str, substrings: Iterable[str]) -> str | None:
    """Item id of the hit that makes `text` contaminated (case- and whitespace-insensitive substrings first, then
    n-grams when `substrings` is a BenchmarkIndex), else None. For plain `str` substrings the matched substring itself
    is returned."""
    hit = decide(find_matches(text, substrings))
    return hit.item_id if hit else None


# --------------------------------------------------------------------------- the stage
def decontaminate_shard(cfg: DecontamConfig, uri: str, index: int, docs: pd.DataFrame | None = None) -> dict:
    """Decontamination decisions for one input shard (no writes): per document the item id of its deciding hit
    (None = clean) and its benchmark, plus every hit as [row, benchmark, task_id, kind, match, n_ngrams].
    `docs`: the shard's rows when the caller has read them already."""
    t0 = time.perf_counter()
    docs = read_shard(uri) if docs is None else docs
    bindex = benchmark_index(cfg)
    hits: list[str | None] = []
    hit_benchmarks: list[str | None] = []
    matches: list[list] = []
    for row, content in enumerate(docs["content"]):
        found = bindex.scan(content or "")
        first = decide(found)
        hits.append(first.item_id if first else None)
        hit_benchmarks.append(first.benchmark if first else None)
        matches += [[row, m.benchmark, m.task_id, m.kind, m.match, m.n_ngrams] for m in found]
    excluded = sum(h is not None for h in hits)
    log.debug("decontaminate shard %d: %d docs, %d contaminated, %d hits", index, len(docs), excluded, len(matches))
    return {"index": index, "uri": uri, "code": code_version(__name__, "tasks.benchmarks"), "docs_in": len(docs),
            "excluded": excluded, "substrings": len(bindex), "ngrams": len(bindex.keys), "hits": hits,
            "hit_benchmarks": hit_benchmarks, "matches": matches,
            "benchmarks_digest": bindex.digest, "tasks": bindex.tasks,
            "bytes": int(docs["size_bytes"].sum()) if len(docs) else 0,
            "seconds": round(time.perf_counter() - t0, 3)}


def _hits_frame(docs: pd.DataFrame, parts: list[dict]) -> pd.DataFrame:
    """The hit report: one row per (document, task, kind) hit, in document order."""
    rows, offset = [], 0
    doc_id, repo, path = docs["doc_id"].to_numpy(), docs["repo"].to_numpy(), docs["path"].to_numpy()
    for p in parts:
        for r, benchmark, task_id, kind, match, n_ngrams in p["matches"]:
            i = offset + r
            rows.append((doc_id[i], repo[i], path[i], benchmark, task_id, kind, match, int(n_ngrams)))
        offset += p["docs_in"]
    frame = pd.DataFrame(rows, columns=HIT_COLUMNS)
    return frame.astype({c: "string" for c in HIT_COLUMNS if c != "n_ngrams"} | {"n_ngrams": "int64"})


def _hit_summary(hits: pd.DataFrame, decided: list[tuple[str, str]]) -> dict:
    """Per benchmark: documents excluded for it, documents with any hit, hits by kind."""
    out: dict[str, dict] = {}
    for benchmark, group in hits.groupby("benchmark", sort=True):
        out[str(benchmark)] = {
            "docs_with_hits": int(group["doc_id"].nunique()),
            "hits": len(group),
            "by_kind": {str(k): int(v) for k, v in group["kind"].value_counts().sort_index().items()},
            "contaminated": 0,
        }
    for benchmark, _ in decided:
        out.setdefault(benchmark, {"docs_with_hits": 0, "hits": 0, "by_kind": {}, "contaminated": 0})
        out[benchmark]["contaminated"] += 1
    return out


def merge_decontaminate(cfg: DecontamConfig, inp: Manifest, parts: list[dict], out_dir: str,
                        started: float | None = None, docs: pd.DataFrame | None = None) -> Manifest:
    """Apply the shards' decisions to the input docs; exclusions carry 'contaminated:<task>'; hits.parquet lists
    every hit.

    `started` (time.perf_counter() at the start of the stage, same process) gives stats["seconds"]; without it the
    shards' own seconds are summed. `docs`: read_docs(inp), when the caller has it already.
    """
    parts = ordered_parts(inp, parts, "hits", code_version(__name__, "tasks.benchmarks"))
    docs = read_docs(inp) if docs is None else docs
    hits = [h for p in parts for h in p["hits"]]
    hit_benchmarks = [b for p in parts for b in p["hit_benchmarks"]]
    if len(hits) != len(docs):
        raise ValueError(f"decontaminate: {len(hits)} decisions for {len(docs)} input docs")
    if parts:
        n_substrings, n_ngrams = parts[0]["substrings"], parts[0]["ngrams"]
        digest, tasks = parts[0]["benchmarks_digest"], parts[0]["tasks"]
    else:
        bindex = benchmark_index(cfg)
        n_substrings, n_ngrams, digest, tasks = len(bindex), len(bindex.keys), bindex.digest, bindex.tasks
    dirty = pd.Series([h is not None for h in hits], index=docs.index, dtype=bool)
    excluded = exclusions_frame(docs[dirty], "decontaminate", [f"contaminated:{h}" for h in hits if h is not None])
    kept = docs[~dirty]

    report = _hits_frame(docs, parts)
    storage.makedirs(out_dir)
    hits_uri = storage.join(out_dir, "hits.parquet")
    storage.write_parquet(report, hits_uri)

    seconds = time.perf_counter() - started if started is not None else sum(p["seconds"] for p in parts)
    mb = float(docs["size_bytes"].sum()) / 1e6 if len(docs) else 0.0
    by_item: dict[str, int] = {}
    for h in hits:
        if h is not None:
            by_item[h] = by_item.get(h, 0) + 1
    decided = [(b, h) for b, h in zip(hit_benchmarks, hits) if h is not None]
    by_benchmark = _hit_summary(report, decided)
    counts = {
        "docs_in": len(docs),
        "docs": len(kept),
        "excluded": len(excluded),
        "contaminated": len(excluded),
        "bytes": int(kept["size_bytes"].sum()),
        "substrings": n_substrings,
        "ngrams": n_ngrams,
        "hits": len(report),
        **{f"contaminated_{b.name.replace('+', '_plus')}": by_benchmark.get(b.name, {}).get("contaminated", 0)
           for b in cfg.benchmarks},
    }
    stats = {
        "benchmarks": [b.model_dump(exclude_none=True) for b in cfg.benchmarks],
        "benchmarks_digest": digest,
        "benchmark_tasks": tasks,
        "min_substring_chars": cfg.min_substring_chars,
        "ngram_size": cfg.ngram_size,
        "max_ngram_tasks": cfg.max_ngram_tasks,
        "contaminated_by_item": dict(sorted(by_item.items())),
        "contaminated_by_benchmark": {b: v["contaminated"] for b, v in by_benchmark.items()},
        "hits_by_benchmark": by_benchmark,
        "seconds": round(seconds, 3),
        "docs_per_s": round(len(docs) / seconds, 1) if seconds > 0 else None,
        "mb_per_s": round(mb / seconds, 2) if seconds > 0 else None,
    }
    log.info("decontaminate: %d -> %d docs (%d contaminated, %d hits; %d benchmark strings, %d n-grams) in %.1fs "
             "(%.1f MB/s)%s", len(docs), len(kept), len(excluded), len(report), n_substrings, n_ngrams, seconds,
             mb / seconds if seconds > 0 else 0.0,
             "".join(f"; {b}: {v['contaminated']} docs, {v['hits']} hits" for b, v in by_benchmark.items()))
    return write_stage_outputs("decontaminate", kept, excluded, out_dir, shard_docs_of(inp), counts, stats,
                               extra_uris={"hits": hits_uri})


def decontaminate(cfg: DecontamConfig, inp: Manifest, out_dir: str) -> Manifest:
    """Drop input docs containing a benchmark string or sharing a long n-gram with one; exclusions carry
    'contaminated:<task>', hits.parquet every hit.

    Shard by shard in this process (`decontaminate_shard`, then `merge_decontaminate`; the input is read once);
    flows/scale.py runs the same shard function as Prefect tasks on threads or Dask workers, with the same outputs.
    """
    t0 = time.perf_counter()
    docs = read_docs(inp)
    uris = inp.shard_uris("docs")
    parts = [decontaminate_shard(cfg, uri, i, rows)
             for i, (uri, rows) in enumerate(zip(uris, split_by_shard(inp, docs)))]
    return merge_decontaminate(cfg, inp, parts, out_dir, started=t0, docs=docs)
