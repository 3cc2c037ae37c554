"""Benchmark decontamination: drop files that contain a benchmark prompt or solution.

Arctic-SnowCoder decontaminates its data (arXiv 2409.02326, abstract) without giving the method; we use BigCode's
(bigcode-dataset `decontamination/find_substrings.py`, migrated into Magicoder's
`src/magicoder/decontamination/find_substrings.py`): a file is contaminated when it contains, case-insensitively, a
benchmark prompt or canonical solution. We match on whitespace-normalised text (runs of whitespace -> one space), so
a re-indented or re-wrapped copy is caught too, and add each prompt's function signature line and docstring body as
separate strings, so a copy without the prompt's imports or surrounding helpers is caught as well. Strings shorter
than DecontamConfig.min_substring_chars are not matched (too generic).

Speed: each text is normalised once; a benchmark string is tested with `in` only when one of its inner tokens (which
must appear space-delimited in any text containing it) occurs in the text's token set.

Sharding: `decontaminate_shard` decides one input shard (no writes), `merge_decontaminate` writes the outputs;
`decontaminate` does both in this process, flows/scale.py on Dask workers (see tasks/shards.py).
"""
from __future__ import annotations

import logging
import re
import time
from functools import lru_cache
from typing import Iterable

import pandas as pd

from snowcoder.config import DecontamConfig
from snowcoder.manifest import Manifest
from tasks.benchmarks import load_benchmark
from tasks.crawl import exclusions_frame, read_docs, shard_docs_of, write_stage_outputs
from tasks.shards import code_version, ordered_parts, read_shard, split_by_shard

log = logging.getLogger("snowcoder.decontam")


class BenchmarkSubstring(str):
    """A whitespace-normalised benchmark string that remembers the benchmark item it came from."""

    item_id: str

    def __new__(cls, text: str, item_id: str) -> "BenchmarkSubstring":
        obj = super().__new__(cls, text)
        obj.item_id = item_id
        return obj

    def __reduce__(self):
        return (BenchmarkSubstring, (str(self), self.item_id))


def normalize_whitespace(text: str) -> str:
    """Collapse every run of whitespace to one space and strip."""
    return " ".join(text.split())


def _signature_and_docstring(prompt: str, entry_point: str) -> tuple[str, str]:
    """The `def entry_point(...)...:` line(s) and the docstring body of `entry_point` in a HumanEval prompt."""
    start = prompt.find(f"def {entry_point}(")
    if start < 0:
        return "", ""
    lines, end = [], start
    for line in prompt[start:].splitlines(keepends=True):  # a signature may span several lines
        lines.append(line)
        end += len(line)
        if line.rstrip().endswith(":"):
            break
    signature = "".join(lines)
    match = re.search(r'("""|\'\'\')(.*?)\1', prompt[end:], re.DOTALL)
    return signature, (match.group(2) if match else "")


def problem_strings(problem: dict) -> list[str]:
    """Strings of one problem matched against files: prompt, canonical solution, signature line, docstring body."""
    strings = [problem.get("prompt", ""), problem.get("canonical_solution", "")]
    if problem.get("entry_point"):
        strings += list(_signature_and_docstring(problem.get("prompt", ""), problem["entry_point"]))
    return strings


def benchmark_substrings(cfg: DecontamConfig) -> list[str]:
    """Whitespace-normalised benchmark strings (>= cfg.min_substring_chars) as BenchmarkSubstring (str + .item_id)."""
    out: list[str] = []
    seen: set[str] = set()
    for name in cfg.benchmarks:
        for problem in load_benchmark(name):
            for raw in problem_strings(problem):
                text = normalize_whitespace(raw)
                if len(text) >= cfg.min_substring_chars and text.lower() not in seen:
                    seen.add(text.lower())
                    out.append(BenchmarkSubstring(text, problem["task_id"]))
    return out


@lru_cache(maxsize=8192)
def _prepared(substring: str) -> tuple[str, str | None]:
    """(lowercased normalised string, its longest inner token or None when it has fewer than 3 tokens)."""
    lowered = normalize_whitespace(substring).lower()
    inner = lowered.split(" ")[1:-1]
    return lowered, (max(inner, key=len) if inner else None)


def find_contamination(text: str, substrings: Iterable[str]) -> str | None:
    """Item id of the first benchmark string found in `text` (case- and whitespace-insensitive), else None.

    For plain `str` substrings (no `.item_id`), the matched substring itself is returned.
    """
    norm = normalize_whitespace(text).lower()
    if not norm:
        return None
    tokens = set(norm.split(" "))
    for sub in substrings:
        lowered, anchor = _prepared(sub)
        if not lowered or (anchor is not None and anchor not in tokens):
            continue
        if lowered in norm:
            return getattr(sub, "item_id", sub)
    return None


def decontaminate_shard(cfg: DecontamConfig, uri: str, index: int, docs: pd.DataFrame | None = None) -> dict:
    """Decontamination decisions for one input shard (no writes): the matched item id per document, None = clean.
    `docs`: the shard's rows when the caller has read them already."""
    t0 = time.perf_counter()
    docs = read_shard(uri) if docs is None else docs
    substrings = benchmark_substrings(cfg)
    hits = [find_contamination(content, substrings) for content in docs["content"]]
    log.debug("decontaminate shard %d: %d docs, %d contaminated", index, len(docs), sum(h is not None for h in hits))
    return {"index": index, "uri": uri, "code": code_version(__name__, "tasks.benchmarks"), "docs_in": len(docs),
            "excluded": sum(h is not None for h in hits), "substrings": len(substrings), "hits": hits,
            "seconds": round(time.perf_counter() - t0, 3)}


def merge_decontaminate(cfg: DecontamConfig, inp: Manifest, parts: list[dict], out_dir: str,
                        started: float | None = None, docs: pd.DataFrame | None = None) -> Manifest:
    """Apply the shards' decisions to the input docs; exclusions carry 'contaminated:<task_id>'.

    `started` (time.perf_counter() at the start of the stage, same process) gives stats["seconds"]; without it the
    shards' own seconds are summed. `docs`: read_docs(inp), when the caller has it already.
    """
    parts = ordered_parts(inp, parts, "hits", code_version(__name__, "tasks.benchmarks"))
    docs = read_docs(inp) if docs is None else docs
    hits = [h for p in parts for h in p["hits"]]
    if len(hits) != len(docs):
        raise ValueError(f"decontaminate: {len(hits)} decisions for {len(docs)} input docs")
    n_substrings = parts[0]["substrings"] if parts else len(benchmark_substrings(cfg))
    dirty = pd.Series([h is not None for h in hits], index=docs.index, dtype=bool)
    excluded = exclusions_frame(docs[dirty], "decontaminate", [f"contaminated:{h}" for h in hits if h is not None])
    kept = docs[~dirty]

    seconds = time.perf_counter() - started if started is not None else sum(p["seconds"] for p in parts)
    by_item: dict[str, int] = {}
    for h in hits:
        if h is not None:
            by_item[h] = by_item.get(h, 0) + 1
    counts = {
        "docs_in": len(docs),
        "docs": len(kept),
        "excluded": len(excluded),
        "contaminated": len(excluded),
        "bytes": int(kept["size_bytes"].sum()),
        "substrings": n_substrings,
    }
    stats = {
        "benchmarks": list(cfg.benchmarks),
        "min_substring_chars": cfg.min_substring_chars,
        "contaminated_by_item": dict(sorted(by_item.items())),
        "seconds": round(seconds, 3),
        "docs_per_s": round(len(docs) / seconds, 1) if seconds > 0 else None,
    }
    log.info("decontaminate: %d -> %d docs (%d contaminated, %d benchmark strings) in %.1fs",
             len(docs), len(kept), len(excluded), n_substrings, seconds)
    return write_stage_outputs("decontaminate", kept, excluded, out_dir, shard_docs_of(inp), counts, stats)


def decontaminate(cfg: DecontamConfig, inp: Manifest, out_dir: str) -> Manifest:
    """Drop input docs containing a benchmark string; exclusions carry 'contaminated:<task_id>'.

    Shard by shard in this process (`decontaminate_shard`, then `merge_decontaminate`; the input is read once);
    flows/scale.py runs the same shard function as Prefect tasks on threads or Dask workers, with the same outputs.
    """
    t0 = time.perf_counter()
    docs = read_docs(inp)
    uris = inp.shard_uris("docs")
    parts = [decontaminate_shard(cfg, uri, i, rows)
             for i, (uri, rows) in enumerate(zip(uris, split_by_shard(inp, docs)))]
    return merge_decontaminate(cfg, inp, parts, out_dir, started=t0, docs=docs)
