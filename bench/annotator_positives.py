"""Experiment (paper §3.4, Table 3): does an annotator trained with instruction-style positives tell benchmark
solutions from random corpus files better than one trained without? Reports the benchmark ROC-AUC of each.

Corpus: the `tiny` (or --preset micro) crawl of the embedded source (the running interpreter's standard library),
the phase-1 default. Negatives (all arms): random corpus files (first window). Positives, one arm each:
  hq-files        without instruction data (the paper's ANN-HQ): whole well-documented files (Python files with at
                  least two self-contained documented functions), first window; no problem/solution shape
  hq+functions    half hq-files, half instruction-style functions (the paper's ANN-HQINS)
  functions       self-contained documented functions (problem = docstring, solution = body) with the imports they
                  use, as written: HumanEval's shape (annotate.positives default, positives_rendering 'function')
  problem-lines   the same functions with a "# Problem: <docstring>" line first (positives_rendering 'problem')
  random-files    random corpus files that are not negatives: a control, which should sit near chance
Validation (all arms): HumanEval prompt + canonical solution (164) vs --val-files random corpus files that no arm
trained on (nor was a positive cut from); held-out ROC-AUC on each arm's own 20% split too. Same encoder, window,
epochs and seed everywhere.

    .venv/bin/python bench/annotator_positives.py [--preset tiny] [--n 150] [--val-files 200] [--window 128]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from snowcoder import storage  # noqa: E402
from snowcoder.config import load_config  # noqa: E402
from tasks import annotate as ann  # noqa: E402


def corpus(preset: str, out_dir: str) -> pd.DataFrame:
    """The preset's crawl (phase-1 documents before filtering) as one frame."""
    from tasks.crawl import crawl

    m = crawl(load_config(preset).data, out_dir)
    return storage.read_shards(m.shard_uris("docs"))


def hq_files(docs: pd.DataFrame, n: int, seed: int) -> list[str]:
    """Up to `n` well-documented Python files: at least two self-contained documented functions each."""
    py = docs[docs["language"] == "python"]
    good = [c for c in py["content"] if len(ann.documented_functions(c or "")) >= 2]
    order = np.random.default_rng(seed).permutation(len(good))[:n]
    return [good[i] for i in order]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--encoder", default="embedded:minilm")
    ap.add_argument("--n", type=int, default=150, help="positives and negatives per arm")
    ap.add_argument("--val-files", type=int, default=200)
    ap.add_argument("--window", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from snowcoder.config import BenchmarkSource

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        docs = corpus(args.preset, tmp)
    docs = docs[docs["content"].fillna("").str.strip() != ""].reset_index(drop=True)
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(docs))
    neg_rows, val_rows = order[: args.n], order[args.n : args.n + args.val_files]
    file_rows = order[args.n + args.val_files : 2 * args.n + args.val_files]
    train_rows = np.r_[neg_rows, file_rows]
    pool = docs.drop(index=np.r_[val_rows, neg_rows])  # positives never come from validation files or negatives
    functions = ann.docstring_function_positives(pool, args.n, args.seed, render="function")
    hq = hq_files(pool, args.n, args.seed)
    half = args.n // 2
    arms = {"hq-files": hq, "hq+functions": hq[:half] + functions[: args.n - half], "functions": functions,
            "problem-lines": ann.docstring_function_positives(pool, args.n, args.seed, render="problem"),
            "random-files": docs.loc[file_rows, "content"].tolist()}
    encoder = ann.Encoder(args.encoder, args.window)
    window = encoder.window_tokens
    negatives = [ann.windows(t, encoder.tokenizer, window)[0] for t in docs.loc[neg_rows, "content"]]
    neg_emb = encoder.embed(negatives, 32)
    val_files = docs.loc[val_rows, "content"].tolist()
    print(f"corpus: {len(docs)} files ({args.preset} crawl); {len(negatives)} negatives; validation: HumanEval vs "
          f"{len(val_files)} unseen files; {args.encoder}, window {window}; overlap train/val rows: "
          f"{len(set(train_rows) & set(val_rows))}")
    rows = []
    for name, pos in arms.items():
        pos = [ann.windows(t, encoder.tokenizer, window)[0] for t in pos]
        w, b, m = ann.train_annotator(encoder.embed(pos, 32), neg_emb, epochs=args.epochs, lr=1e-2, seed=args.seed)
        val = ann.benchmark_validation(encoder, (w, b), [BenchmarkSource(name="humaneval")], val_files, window, 32)
        he = val["humaneval"]
        rows.append({"positives": name, "n_pos": len(pos), "heldout_auc": round(m["heldout_auc"], 3),
                     "humaneval_auc": round(he["auc"], 3), "he_mean_score": he["solution_mean_score"],
                     "files_mean_score": he["file_mean_score"]})
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"({time.perf_counter() - t0:.0f}s)")


if __name__ == "__main__":
    main()
