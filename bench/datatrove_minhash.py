"""datatrove's default MinHash dedup pipeline on a JSONL corpus; run by bench/dedup_vs_datatrove.py inside the bench
venv (it needs `datatrove[processing]` and spacy, which the project's .venv does not have).

    <bench venv>/bin/python bench/datatrove_minhash.py --input DIR --work DIR --out result.json [--tokenizer default]

The four stages of datatrove's examples/minhash_deduplication.py with MinhashConfig() defaults (5-grams of words,
14 buckets x 8 hashes, 64-bit xxhash, text normalised: lowercase, no punctuation, numbers normalised) and the
default word tokenizer for English (spaCy's blank "en"), each stage with one worker (so seconds are core-seconds).
Writes {seconds per stage, seconds, docs, removed ids, cluster id per doc id}.
"""
from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", required=True, help="folder of *.jsonl files with text and id")
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokenizer", choices=["default", "whitespace"], default="default",
                    help="default: datatrove's English word tokenizer (spaCy); whitespace: plain str.split")
    args = ap.parse_args()

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupSignature
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                                  MinhashDedupFilter)
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers.jsonl import JsonlWriter
    from datatrove.utils.typeshelper import Languages

    config = MinhashConfig()
    language: object = Languages.english
    if args.tokenizer == "whitespace":
        from datatrove.utils.word_tokenizers import WordTokenizer

        class SplitTokenizer(WordTokenizer):  # datatrove's WhitespaceTokenizer runs spaCy "xx"; this is str.split
            def word_tokenize(self, text: str) -> list[str]:
                return text.split()

            def sent_tokenize(self, text: str) -> list[str]:
                return text.splitlines()

            def span_tokenize(self, text: str) -> list[tuple[int, int]]:
                raise NotImplementedError

        language = SplitTokenizer()
    w = args.work
    stages = {
        "signatures": LocalPipelineExecutor(
            pipeline=[JsonlReader(args.input), MinhashDedupSignature(output_folder=f"{w}/signatures", config=config,
                                                                      language=language)],
            tasks=1, workers=1, logging_dir=f"{w}/logs/signatures"),
        "buckets": LocalPipelineExecutor(
            pipeline=[MinhashDedupBuckets(input_folder=f"{w}/signatures", output_folder=f"{w}/buckets",
                                          config=config)],
            tasks=config.num_buckets, workers=1, logging_dir=f"{w}/logs/buckets"),
        "cluster": LocalPipelineExecutor(
            pipeline=[MinhashDedupCluster(input_folder=f"{w}/buckets", output_folder=f"{w}/remove_ids",
                                          config=config, save_cluster_id=True)],
            tasks=1, workers=1, logging_dir=f"{w}/logs/cluster"),
        "filter": LocalPipelineExecutor(
            pipeline=[JsonlReader(args.input),
                      MinhashDedupFilter(input_folder=f"{w}/remove_ids", load_cluster_ids=True,
                                         exclusion_writer=JsonlWriter(f"{w}/removed")),
                      JsonlWriter(f"{w}/output")],
            tasks=1, workers=1, logging_dir=f"{w}/logs/filter"),
    }
    seconds = {}
    for name, executor in stages.items():
        t = time.perf_counter()
        executor.run()
        seconds[name] = time.perf_counter() - t

    cluster, removed = {}, []
    for folder, is_removed in ((f"{w}/output", False), (f"{w}/removed", True)):
        for path in sorted(glob.glob(os.path.join(folder, "*.jsonl.gz"))):
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                for line in fh:
                    doc = json.loads(line)
                    cluster[doc["id"]] = doc["metadata"].get("minhash_cluster_id", -1)
                    if is_removed:
                        removed.append(doc["id"])
    with open(args.out, "w") as fh:
        json.dump({"seconds": seconds, "total_seconds": sum(seconds.values()), "docs": len(cluster),
                   "removed": removed, "cluster": cluster, "tokenizer": args.tokenizer,
                   "config": str(config)}, fh)


if __name__ == "__main__":
    main()
