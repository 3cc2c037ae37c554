"""MinHash signature throughput on the embedded corpus: our path (datasketch `MinHash.bulk`) vs the per-shingle
`MinHash.update` loop of BigCode's near-dedup script, both run here in the same process on the same files.

    .venv/bin/python bench/dedup_speed.py [--files 1000] [--num-perm 256]

Prints MB/s and docs/s for each and the ratio ours/baseline. Reference (shared/reference/performance.md): peers
publish about 0.8 MB/s per core for the signature stage.
"""
from __future__ import annotations

import argparse
import tempfile
import time

from datasketch import MinHash

from snowcoder.config import DataConfig, DedupConfig
from tasks.crawl import crawl, read_docs
from tasks.dedup import minhash_signatures, shingles


def load(n: int) -> list[str]:
    """The first n files of the embedded default corpus, read by the crawl stage itself."""
    with tempfile.TemporaryDirectory() as tmp:
        return read_docs(crawl(DataConfig(max_files=n), tmp))["content"].tolist()


def baseline(texts: list[str], cfg: DedupConfig) -> list[MinHash]:
    out = []
    for t in texts:
        m = MinHash(num_perm=cfg.num_perm, seed=cfg.seed)
        for s in shingles(t, cfg.ngram):
            m.update(s)
        out.append(m)
    return out


def timed(fn, *args):
    t0 = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--num-perm", type=int, default=DedupConfig().num_perm)
    args = ap.parse_args()
    cfg = DedupConfig(num_perm=args.num_perm)
    texts = load(args.files)
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    print(f"{len(texts)} files, {mb:.1f} MB, num_perm={cfg.num_perm}, ngram={cfg.ngram}")
    base, t_base = timed(baseline, texts, cfg)
    ours, t_ours = timed(minhash_signatures, texts, cfg.num_perm, cfg.ngram, cfg.seed)
    same = sum(b.hashvalues.tolist() == o.hashvalues.tolist() for b, o in zip(base, ours))
    print(f"{'path':<28}{'seconds':>9}{'MB/s':>8}{'docs/s':>9}")
    for name, secs in [("baseline: per-shingle update", t_base), ("ours: MinHash.bulk", t_ours)]:
        print(f"{name:<28}{secs:>9.2f}{mb / secs:>8.2f}{len(texts) / secs:>9.0f}")
    print(f"ratio ours/baseline: {t_base / t_ours:.2f}x  (identical signatures: {same}/{len(texts)})")


if __name__ == "__main__":
    main()
