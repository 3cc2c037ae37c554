"""MinHash signature throughput of each dedup backend on the embedded corpus, same files, same process: BigCode's
per-shingle `MinHash.update` loop (baseline), and our backends datasketch (`MinHash.bulk`, the reference), rensa (if
importable) and numpy (the default).

    .venv/bin/python bench/dedup_speed.py [--files 1000] [--num-perm 256]

Prints MB/s and docs/s for each, the ratio to the baseline, and checks that the datasketch backend's signatures are
the baseline's. Reference (shared/reference/performance.md): peers publish about 0.8 MB/s per core for the signature
stage. End-to-end numbers (exact + near dedup, and datatrove): bench/dedup_vs_datatrove.py.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from datasketch import MinHash

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snowcoder.config import DataConfig, DedupConfig  # noqa: E402
from tasks.crawl import crawl, read_docs  # noqa: E402
from tasks.dedup import minhash_signatures, shingles  # noqa: E402


def load(n: int) -> list[str]:
    """The first n files of the embedded default corpus, read by the crawl stage itself."""
    with tempfile.TemporaryDirectory() as tmp:
        return read_docs(crawl(DataConfig(max_files=n), tmp))["content"].tolist()


def baseline(texts: list[str], cfg: DedupConfig) -> np.ndarray:
    out = []
    for t in texts:
        m = MinHash(num_perm=cfg.num_perm, seed=cfg.seed)
        for s in shingles(t, cfg.ngram):
            m.update(s)
        out.append(m.hashvalues.astype(np.uint32))
    return np.array(out)


def timed(fn, *args):
    t0 = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--num-perm", type=int, default=DedupConfig().num_perm)
    args = ap.parse_args()
    texts = load(args.files)
    texts = [t for t in texts if shingles(t, 5)]  # the baseline has no "no token" case
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    print(f"{len(texts)} files, {mb:.1f} MB, num_perm={args.num_perm}, ngram=5")
    minhash_signatures(texts[:20], DedupConfig(num_perm=args.num_perm))  # warm-up (lookup tables)
    base, t_base = timed(baseline, texts, DedupConfig(num_perm=args.num_perm))
    rows = [("baseline: per-shingle update", t_base)]
    backends = ["datasketch", "numpy"] + (["rensa"] if importlib.util.find_spec("rensa") else [])
    for backend in backends:
        (sig, _), secs = timed(minhash_signatures, texts, DedupConfig(num_perm=args.num_perm, backend=backend))
        rows.append((f"backend {backend}", secs))
        if backend == "datasketch":
            print(f"datasketch backend == baseline signatures: {int((sig == base).all(axis=1).sum())}/{len(texts)}")
    print(f"{'path':<30}{'seconds':>9}{'MB/s':>8}{'docs/s':>9}{'x baseline':>12}")
    for name, secs in rows:
        print(f"{name:<30}{secs:>9.2f}{mb / secs:>8.2f}{len(texts) / secs:>9.0f}{t_base / secs:>12.1f}")


if __name__ == "__main__":
    main()
