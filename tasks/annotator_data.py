"""Phase 2: the annotator's training set (Arctic-SnowCoder §2.3): positives, negatives, and the builder that makes
them a clean, balanced set.

Positives come from the sources in AnnotateConfig.positives (n_positives split evenly across them):
  'corpus:docstring-functions' (offline default)  self-contained documented top-level Python functions cut from the
        decontaminated phase-1 corpus, with the imports they use: problem (docstring) + solution (body) in the shape
        of a HumanEval task ("function" rendering), or with the docstring's first paragraph as a "# Problem:" line
        ("problem" rendering). bench/annotator_positives.py measured the first at HumanEval ROC-AUC 0.84 and the
        second at 0.66: positives that look like the downstream tasks make the annotator (the paper's lesson).
  a .parquet / .jsonl / .json file or URL  column `content` (or `text`), or problem+solution / instruction+response /
        prompt+completion joined (Magicoder OSS-Instruct, StarCoder2-Instruct dumps).
  'hf:<dataset id>'  the same from the hub (paper: hqcode, Magicoder-OSS-Instruct-75K, self-oss-instruct-sc2).
Negatives are random phase-1 files (their first encoder window).

`build_training_set` then (each drop counted by reason, so nothing is lost silently):
  1. drops exact duplicates among the positives,
  2. drops positives that contain a benchmark prompt or solution (tasks/decontam.py: substrings and word n-grams, every
     benchmark the run evaluates on): a hub dataset may hold HumanEval/MBPP solutions, and a positive that *is* a
     benchmark solution makes the benchmark ROC-AUC (the paper's predictor) meaningless,
  3. drops negatives that are the file a positive was cut from, or a duplicate of another negative or a positive,
  4. near-dedup (tasks/dedup.py MinHash-LSH, verified Jaccard) across both classes: the same text must not be both a
     positive and a negative; a positive's near-duplicate negatives go, and near-duplicates within a class keep one,
  5. keeps each source's quota of positives (sources are over-asked to leave room for the drops),
  6. balances the classes (`balance`): both sides cut to the smaller one by a seeded sample.
"""
from __future__ import annotations

import ast
import builtins
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd

from snowcoder import storage
from snowcoder.config import DedupConfig, UserError

CORPUS_DOCSTRING_FUNCTIONS = "corpus:docstring-functions"
RENDERINGS = ("function", "problem")
NEGATIVE_SOURCE = "phase1"

log = logging.getLogger("snowcoder.annotate")


class Example(NamedTuple):
    """One training text: where it came from (a positives source spec, or "phase1" for negatives) and, when it was
    cut from or is a phase-1 document, that document's id."""

    text: str
    source: str
    doc_id: str | None = None


# --------------------------------------------------------------------------- positives from the corpus
_BUILTINS = frozenset(dir(builtins)) | {"__name__", "__file__", "__doc__", "__class__"}


def _bound_names(node: ast.AST) -> set[str]:
    """Names a function binds itself: parameters, assignment/loop/with/except targets, inner defs and imports."""
    bound: set[str] = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.arg):
            bound.add(sub.arg)
        elif isinstance(sub, ast.Name) and isinstance(sub.ctx, (ast.Store, ast.Del)):
            bound.add(sub.id)
        elif isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(sub.name)
        elif isinstance(sub, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in sub.names)
        elif isinstance(sub, ast.ExceptHandler) and sub.name:
            bound.add(sub.name)
        elif isinstance(sub, (ast.Global, ast.Nonlocal)):
            bound.update(sub.names)
    return bound


def _free_names(node: ast.AST) -> set[str]:
    loaded = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return loaded - _bound_names(node) - _BUILTINS


def _top_level_imports(tree: ast.Module) -> dict[str, str]:
    """Name bound by a top-level import -> the import statement (one name per statement, re-rendered)."""
    out: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Import):
            for a in node.names:
                out[(a.asname or a.name).split(".")[0]] = f"import {a.name}" + (f" as {a.asname}" if a.asname else "")
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                if a.name != "*":
                    out[a.asname or a.name] = f"from {node.module} import {a.name}" + (
                        f" as {a.asname}" if a.asname else ""
                    )
    return out


def documented_functions(source: str, min_lines: int = 3, max_lines: int = 60, render: str = "function") -> list[str]:
    """Self-contained, documented top-level functions of a Python file, each rendered as one problem/solution document.

    Kept: top-level `def` (not methods), with a docstring whose first paragraph has >= 3 words, `min_lines`..`max_lines`
    lines (decorators included), not a test, and *self-contained*: every free name is a builtin, the function itself or
    bound by a top-level import (those imports are copied in). Rendered (`render`):

        "function" (HumanEval's shape)        "problem"
        <imports it uses>                     # Problem: <first paragraph of the docstring, one line>
                                              <imports it uses>
        <the function's source>
                                              <the function's source>
    """
    if render not in RENDERINGS:
        raise UserError(f"positives rendering must be one of {', '.join(RENDERINGS)}, got {render!r}")
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    lines = source.splitlines()
    imports = _top_level_imports(tree)
    out = []
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.name.startswith("test"):
            continue
        doc = ast.get_docstring(node)
        if not doc:
            continue
        problem = " ".join(doc.strip().split("\n\n")[0].split())
        if len(problem.split()) < 3:
            continue
        start = min([d.lineno for d in node.decorator_list] + [node.lineno])
        end = node.end_lineno or node.lineno
        if not min_lines <= end - start + 1 <= max_lines:
            continue
        free = _free_names(node) - {node.name}
        if free - imports.keys():
            continue
        needed = sorted({imports[n] for n in free})
        body = "\n".join(lines[start - 1 : end])
        if render == "problem":
            head = f"# Problem: {problem}\n" + ("\n".join(needed) + "\n" if needed else "") + "\n"
        else:
            head = "\n".join(needed) + "\n\n\n" if needed else ""
        out.append(f"{head}{body}\n")
    return out


def docstring_function_examples(docs_df: pd.DataFrame, n: int, seed: int, per_file: int = 3,
                                render: str = "function") -> list[Example]:
    """Up to `n` distinct problem/solution documents cut from the Python files of `docs_df` (see
    `documented_functions`), each with the doc_id it was cut from (when `docs_df` has one). Files are visited in a
    seeded random order and give at most `per_file` functions each (chosen at random), so the sample is
    deterministic and spread across files and repositories."""
    if "language" in docs_df.columns:
        docs_df = docs_df[docs_df["language"] == "python"]
    rng = np.random.default_rng(seed)
    contents = docs_df["content"].tolist()
    doc_ids = docs_df["doc_id"].tolist() if "doc_id" in docs_df.columns else [None] * len(contents)
    out: list[Example] = []
    seen: set[str] = set()
    for i in rng.permutation(len(contents)):
        found = documented_functions(contents[i] or "", render=render)
        if len(found) > per_file:
            found = [found[j] for j in sorted(rng.choice(len(found), per_file, replace=False))]
        for text in found:
            if text not in seen:
                seen.add(text)
                out.append(Example(text, CORPUS_DOCSTRING_FUNCTIONS, doc_ids[i]))
                if len(out) >= n:
                    return out
    return out


def docstring_function_positives(docs_df: pd.DataFrame, n: int, seed: int, per_file: int = 3,
                                 render: str = "function") -> list[str]:
    """The texts of `docstring_function_examples`."""
    return [e.text for e in docstring_function_examples(docs_df, n, seed, per_file, render)]


# --------------------------------------------------------------------------- positives from files and the hub
def _render_rows(df: pd.DataFrame, spec: str) -> list[str]:
    """One training text per row: `content` (or `text`), or problem+solution / instruction+response, joined."""
    cols = set(df.columns)
    pairs = [("problem", "solution"), ("instruction", "response"), ("prompt", "completion")]
    if "content" in cols or "text" in cols:
        texts = df["content" if "content" in cols else "text"].astype(str)
    else:
        pair = next((p for p in pairs if set(p) <= cols), None)
        if pair is None:
            raise UserError(
                f"positives source {spec!r} needs a 'content' column or one of the column pairs "
                f"{', '.join('+'.join(p) for p in pairs)} (found: {', '.join(sorted(map(str, cols)))})"
            )
        texts = df[pair[0]].astype(str).str.strip() + "\n\n" + df[pair[1]].astype(str).str.strip()
    return [t for t in texts.tolist() if t and t.strip()]


def load_examples(spec: str, docs_df: pd.DataFrame | None, n: int, seed: int,
                  render: str = "function") -> list[Example]:
    """Up to `n` positive examples from one source (deterministic for a seed).

    spec: 'corpus:docstring-functions' (from `docs_df`, the decontaminated phase-1 corpus),
          a .parquet / .jsonl / .json path or URL (column `content`, or `problem`+`solution`, or
          `instruction`+`response`), or 'hf:<dataset id>' (its train split, through `datasets`)."""
    if spec == CORPUS_DOCSTRING_FUNCTIONS:
        if docs_df is None:
            raise UserError(f"positives source {spec!r} needs the phase-1 documents")
        return docstring_function_examples(docs_df, n, seed, render=render)
    return [Example(t, spec) for t in _load_table_positives(spec, n, seed)]


def load_positives(spec: str, docs_df: pd.DataFrame | None, n: int, seed: int, render: str = "function") -> list[str]:
    """The texts of `load_examples`."""
    return [e.text for e in load_examples(spec, docs_df, n, seed, render)]


def _load_table_positives(spec: str, n: int, seed: int) -> list[str]:
    """Up to `n` texts of a table source (file/URL or hf:<id>), a seeded sample."""
    if spec.startswith("corpus:"):
        raise UserError(f"unknown positives source {spec!r}; the corpus source is {CORPUS_DOCSTRING_FUNCTIONS!r}")
    if spec.startswith("hf:"):
        try:
            import datasets
        except ImportError:
            raise UserError(f"positives source {spec!r} needs the `datasets` package (pip install datasets)") from None
        ds = datasets.load_dataset(spec[3:], split="train")
        if len(ds) > n:
            ds = ds.shuffle(seed=seed).select(range(n))
        return _render_rows(ds.to_pandas(), spec)[:n]
    lowered = spec.lower()
    if not lowered.endswith((".parquet", ".jsonl", ".json")):
        raise UserError(
            f"positives source {spec!r}: expected {CORPUS_DOCSTRING_FUNCTIONS!r}, hf:<id>, or a .parquet/.jsonl file"
        )
    if not storage.exists(spec):
        raise UserError(f"positives file not found: {spec}")
    if lowered.endswith(".parquet"):
        df = storage.read_parquet(spec)
    else:
        rows = storage.read_jsonl(spec) if lowered.endswith(".jsonl") else storage.read_json(spec)
        df = pd.DataFrame(rows)
    texts = _render_rows(df, spec)
    order = np.random.default_rng(seed).permutation(len(texts))[:n]
    return [texts[i] for i in order]




# --------------------------------------------------------------------------- the builder
def over_ask(n: int) -> int:
    """How many examples to ask a source for so that `n` are likely left after the builder's drops."""
    return n + max(2, math.ceil(0.25 * n))


@dataclass
class TrainingSet:
    """The annotator's training examples and what the builder did: `stats["dropped"]` counts every dropped example
    by reason, `stats["contaminated"]` counts contaminated positives per benchmark (with a few item ids)."""

    positives: list[Example]
    negatives: list[Example]
    stats: dict = field(default_factory=dict)


def _contamination(texts: list[str], benchmarks) -> list[tuple[str, str] | None]:
    """Per text: (benchmark, item id) of the hit that makes it contaminated, or None (tasks/decontam.py rules)."""
    from tasks.decontam import decide, find_matches

    out = []
    for text in texts:
        hit = decide(find_matches(text, benchmarks))
        out.append((hit.benchmark or "benchmark", hit.item_id) if hit else None)
    return out


def _near_duplicate_drops(texts: list[str], n_pos: int, dedup: DedupConfig) -> dict[int, str]:
    """Index -> drop reason for near-duplicates among `texts` (positives first, then negatives). In a cluster that
    holds a positive, the first positive stays and the rest go (positives: "positive-near-duplicate", negatives:
    "negative-near-positive"); a cluster of negatives keeps its first ("negative-near-duplicate")."""
    from tasks.dedup import clusters_from_signatures, minhash_signatures

    if len(texts) < 2:
        return {}
    sig, valid = minhash_signatures(texts, dedup)
    drops: dict[int, str] = {}
    for members in clusters_from_signatures(sig, valid, dedup)[0]:
        members = sorted(members)
        for m in members[1:]:
            if m < n_pos:
                drops[m] = "positive-near-duplicate"
            else:
                drops[m] = "negative-near-positive" if members[0] < n_pos else "negative-near-duplicate"
    return drops


def build_training_set(positives: list[Example], negatives: list[Example], *, quotas: dict[str, int],
                       n_negatives: int, benchmarks=None, dedup: DedupConfig | None = None, balance: bool = True,
                       seed: int = 0) -> TrainingSet:
    """Clean, balanced annotator training set from candidate examples (see the module docstring for the steps).

    positives: candidates of every source, in each source's own order (earlier = preferred); `quotas[source]` of them
    are kept per source at most. negatives: random phase-1 files, `n_negatives` kept at most. benchmarks: a
    tasks.decontam BenchmarkIndex (or plain strings) positives are decontaminated against; None = no check.
    dedup: MinHash settings of the cross-class near-dedup (None = no near-dedup). Deterministic for a seed."""
    from tasks.dedup import exact_key

    dropped: Counter = Counter()
    contaminated: Counter = Counter()
    contaminated_items: list[str] = []

    # 1-2: exact duplicates and benchmark contamination among the positives
    pos: list[Example] = []
    seen: set[str] = set()
    for ex in positives:
        key = exact_key(ex.text)
        if key in seen or not ex.text.strip():
            dropped["positive-duplicate" if ex.text.strip() else "positive-empty"] += 1
            continue
        seen.add(key)
        pos.append(ex)
    if benchmarks is not None:
        hits = _contamination([e.text for e in pos], benchmarks)
        for hit in (h for h in hits if h):
            contaminated[hit[0]] += 1
            if len(contaminated_items) < 20:
                contaminated_items.append(hit[1])
        dropped["positive-contaminated"] += sum(1 for h in hits if h)
        pos = [e for e, h in zip(pos, hits) if h is None]

    # 3: negatives that are a positive's source file, or an exact duplicate of a positive or of another negative
    sources = {e.doc_id for e in pos if e.doc_id is not None}
    neg: list[Example] = []
    pos_keys = {exact_key(e.text) for e in pos}
    neg_keys: set[str] = set()
    for ex in negatives:
        key = exact_key(ex.text)
        if ex.doc_id is not None and ex.doc_id in sources:
            dropped["negative-source-of-positive"] += 1
        elif key in pos_keys:
            dropped["negative-duplicate-of-positive"] += 1
        elif key in neg_keys or not ex.text.strip():
            dropped["negative-duplicate" if ex.text.strip() else "negative-empty"] += 1
        else:
            neg_keys.add(key)
            neg.append(ex)

    # 4: near-duplicates across and within the classes
    if dedup is not None:
        n_pos = len(pos)
        drops = _near_duplicate_drops([e.text for e in pos + neg], n_pos, dedup)
        dropped.update(drops.values())
        pos = [e for i, e in enumerate(pos) if i not in drops]
        neg = [e for i, e in enumerate(neg) if i + n_pos not in drops]

    # 5: each source's quota of positives, and the negatives asked for
    kept: Counter = Counter()
    quota_pos = []
    for ex in pos:
        if kept[ex.source] < quotas.get(ex.source, 0):
            kept[ex.source] += 1
            quota_pos.append(ex)
    dropped["positive-over-quota"] += len(pos) - len(quota_pos)
    dropped["negative-over-quota"] += max(0, len(neg) - n_negatives)
    pos, neg = quota_pos, neg[:n_negatives]

    # 6: balance the classes by a seeded sample of the larger one (order kept)
    if balance and pos and neg and len(pos) != len(neg):
        n = min(len(pos), len(neg))
        rng = np.random.default_rng(seed)
        if len(pos) > n:
            dropped["positive-balance"] += len(pos) - n
            pos = [pos[i] for i in np.sort(rng.choice(len(pos), n, replace=False))]
        else:
            dropped["negative-balance"] += len(neg) - n
            neg = [neg[i] for i in np.sort(rng.choice(len(neg), n, replace=False))]

    per_source = Counter(e.source for e in pos)
    for spec, quota in quotas.items():
        if per_source[spec] < quota:
            log.warning("positives source %s gave %d of %d requested examples", spec, per_source[spec], quota)
    stats = {"positives": len(pos), "negatives": len(neg), "positives_per_source": {k: per_source[k] for k in quotas},
             "candidates": {"positives": len(positives), "negatives": len(negatives)},
             "dropped": {k: v for k, v in sorted(dropped.items()) if v},
             "contaminated": dict(sorted(contaminated.items())), "contaminated_items": contaminated_items,
             "balanced": bool(balance)}
    return TrainingSet(pos, neg, stats)
