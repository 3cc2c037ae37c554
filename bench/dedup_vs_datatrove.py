"""Near-dedup bench: our phase 1 (filter + exact + near dedup) against datatrove's default MinHash dedup pipeline, on
the same corpus in the same run: MB/s per core for both, their ratio, and precision/recall of both on planted,
labelled near-duplicates.

    .venv/bin/python bench/dedup_vs_datatrove.py [--mb 32] [--groups 400] [--negatives 200]
        [--backends numpy,datasketch,rensa] [--datatrove-tokenizers default,whitespace]
        [--datatrove-venv bench/.cache/venv-datatrove] [--no-datatrove] [--profile]

Corpus (deterministic for a given interpreter, installed packages and filter code): Python files of this
interpreter's stdlib and site-packages, in sha1-of-path order, about --mb MB including the planted files below.
Labelled, planted (originals and donors are files our filter keeps unchanged, so every planted pair is scored):
  - groups: an original file (4-60 KB, chosen so that no two originals are near-duplicates of each other) plus one
    variant, cycling through four kinds: a fork with small edits (~3% of lines changed, deleted or added), a vendored
    copy (a "copied from" header, imports of the package rewritten, another repo and path), a license-header variant
    (an Apache/MIT/BSD header prepended), renamed identifiers (two functions/classes/names renamed everywhere);
  - negatives (planted distinct files): the first 35% or 55% of an original's lines followed by the body of a file
    that is not in the corpus (so it shares its header/imports with the original but is a different file).
Truth: a group's two files are duplicates; any other pair of labelled files is not. Pairs with unlabelled files are
not scored. Precision = TP / (TP + FP) over pairs of labelled files put in one cluster, recall = TP / planted pairs;
scored on the labelled files kept by our filter (the filter's removals are not dedup decisions), the same set for
both tools. The true Jaccard (BigCode shingles) of every labelled pair is printed as a summary.

Throughput: MB of the corpus over the wall seconds of the stage calls, each tool in one process with one worker, so
MB/s = MB/s per core. Ours: tasks.filters.filter_docs then tasks.dedup.dedup in this process (imports excluded);
datatrove: bench/datatrove_minhash.py in a separate venv (created on first use, git-ignored: `datatrove[processing]`,
spacy, orjson, rensa), the four stages timed inside that process (interpreter start and imports excluded); the
"whitespace" variant swaps its spaCy word tokenizer for str.split. Reference on this machine (issue 4): datatrove
default ~0.25 MB/s/core P 0.99 R 0.94; a plain datasketch pipeline ~2.5 MB/s/core R 0.93; our target >= 5.
"""
from __future__ import annotations

import argparse
import cProfile
import hashlib
import importlib.util
import io
import json
import os
import pstats
import random
import re
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from snowcoder import storage  # noqa: E402
from snowcoder.config import DedupConfig, FilterConfig  # noqa: E402
from tasks.crawl import write_stage_outputs  # noqa: E402
from tasks.dedup import dedup, lsh_shape, shingles  # noqa: E402
from tasks.filters import filter_docs  # noqa: E402

DEFAULT_VENV = ROOT / "bench" / ".cache" / "venv-datatrove"  # `.cache/` is git-ignored
LICENSES = [
    "# Licensed under the Apache License, Version 2.0 (the \"License\");\n# you may not use this file except in "
    "compliance with the License.\n# You may obtain a copy of the License at\n#\n#     "
    "http://www.apache.org/licenses/LICENSE-2.0\n#\n# Unless required by applicable law or agreed to in writing, "
    "software\n# distributed under the License is distributed on an \"AS IS\" BASIS,\n# WITHOUT WARRANTIES OR "
    "CONDITIONS OF ANY KIND, either express or implied.\n# See the License for the specific language governing "
    "permissions and\n# limitations under the License.\n",
    "# Copyright (c) 2021 The Contributors\n#\n# Permission is hereby granted, free of charge, to any person "
    "obtaining a copy\n# of this software and associated documentation files (the \"Software\"), to deal\n# in the "
    "Software without restriction, including without limitation the rights\n# to use, copy, modify, merge, publish, "
    "distribute, sublicense, and/or sell\n# copies of the Software.\n",
    "# SPDX-License-Identifier: BSD-3-Clause\n# Copyright 2019, the authors. All rights reserved.\n# Use of this "
    "source code is governed by a BSD-style license that can be\n# found in the LICENSE file.\n",
]
KINDS = ["fork", "vendored", "license", "rename"]


# --------------------------------------------------------------------------- corpus
def python_files() -> list[tuple[str, str, Path]]:
    """(repo, path, file) of this interpreter's stdlib and site-packages .py files, in sha1-of-name order."""
    paths = sysconfig.get_paths()
    roots = [("stdlib", Path(paths["stdlib"])), ("site-packages", Path(paths["purelib"]))]
    out = []
    for prefix, root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in ("site-packages", "dist-packages", "__pycache__")]
            for name in filenames:
                if name.endswith(".py"):
                    rel = Path(dirpath, name).relative_to(root)
                    top = rel.parts[0] if len(rel.parts) > 1 else "_top"
                    out.append((f"{prefix}/{top}", str(rel), Path(dirpath, name)))
    return sorted(out, key=lambda f: hashlib.sha1(f"{f[0]}/{f[1]}".encode()).hexdigest())


def read_text(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if not 300 <= len(data) <= 200_000:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def fork(text: str, rng: random.Random) -> str:
    lines = text.split("\n")
    code = [i for i, line in enumerate(lines) if line.strip()]
    for i in sorted(rng.sample(code, max(2, len(code) * 3 // 100)), reverse=True):
        op = rng.choice(["comment", "delete", "insert", "number"])
        indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
        if op == "comment":
            lines[i] += "  # patched in fork"
        elif op == "delete":
            del lines[i]
        elif op == "insert":
            lines.insert(i, f"{indent}log_debug('fork: step {rng.randint(0, 99)}')")
        else:
            lines[i] = re.sub(r"\b\d+\b", lambda m: str(int(m.group()) + 1), lines[i]) + "  # tuned"
    return "\n".join(lines)


def vendored(text: str, repo: str, rng: random.Random) -> str:
    pkg = repo.split("/")[-1]
    header = f"# Copied from {pkg} {rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 9)} (vendored copy).\n" \
             f"# Local changes are marked with MYAPP; refresh with tools/revendor.py.\n"
    body = re.sub(rf"^(\s*)(from|import) {re.escape(pkg)}\b", rf"\1\2 myapp._compat.{pkg}", text, flags=re.M)
    return header + body


def license_variant(text: str, rng: random.Random) -> str:
    return rng.choice(LICENSES) + "\n" + text


def rename(text: str, rng: random.Random) -> str:
    names = set(re.findall(r"^\s*(?:def|class)\s+([A-Za-z_]\w*)", text, flags=re.M))
    names |= set(re.findall(r"^\s*([A-Za-z_]\w{3,})\s*=", text, flags=re.M))
    n_tokens = max(1, len(re.findall(r"[A-Za-z_0-9]+", text)))
    counts = {n: len(re.findall(rf"\b{re.escape(n)}\b", text)) for n in sorted(names)}
    ok = [n for n, c in counts.items() if 2 <= c <= max(2, n_tokens // 150) and not n.startswith("__")]
    for name in rng.sample(ok, min(2, len(ok))):
        new = "".join(p.capitalize() for p in name.split("_")) + "Impl" if name.islower() else name + "_impl"
        text = re.sub(rf"\b{re.escape(name)}\b", new, text)
    return text


def negative(text: str, donor: str, fraction: float) -> str:
    a, d = text.split("\n"), donor.split("\n")
    return "\n".join(a[: int(len(a) * fraction)] + d[int(len(d) * 0.2):])


def jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a, 5), shingles(b, 5)
    return len(sa & sb) / max(1, len(sa | sb))


def distinct(texts: list[str]) -> list[int]:
    """Indices of `texts` with no near-duplicate (true Jaccard >= 0.5) among the earlier kept ones (datasketch LSH
    candidates at 0.5, confirmed on the shingle sets)."""
    from datasketch import MinHash, MinHashLSH

    sets = [shingles(t, 5) for t in texts]
    lsh = MinHashLSH(threshold=0.5, num_perm=128)
    kept = []
    for i, m in enumerate(MinHash.bulk(sets, num_perm=128, seed=7)):
        if any(len(sets[i] & sets[j]) / max(1, len(sets[i] | sets[j])) >= 0.5 for j in lsh.query(m)):
            continue
        lsh.insert(i, m)
        kept.append(i)
    return kept


def passing_filter(files: list[tuple[str, str, str]]) -> list[int]:
    """Indices of (repo, path, text) files that our filter keeps unchanged (chosen as originals and donors, so the
    planted pairs are scored: the filter's removals are not dedup decisions)."""
    df = pd.DataFrame(files, columns=["repo", "path", "content"])
    df["doc_id"] = [f"{i:016x}" for i in range(len(df))]
    df["language"], df["source"] = "python", "bench"
    df["size_bytes"] = [len(t.encode("utf-8")) for t in df.content]
    df["content_sha256"] = [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in df.content]
    with tempfile.TemporaryDirectory() as tmp:
        m = write_stage_outputs("crawl", df[storage.DOC_COLUMNS], pd.DataFrame(columns=storage.EXCLUSION_COLUMNS),
                                f"{tmp}/in", 1000, {}, {})
        kept = storage.read_shards(filter_docs(FilterConfig(), m, f"{tmp}/out").shard_uris("docs"))
    unchanged = {d for d, sha in zip(kept.doc_id, kept.content_sha256)
                 if sha == df.content_sha256.iat[int(d, 16)]}  # not redacted
    return [i for i in range(len(df)) if df.doc_id.iat[i] in unchanged]


def build_corpus(mb: float, n_groups: int, n_negatives: int, seed: int) -> tuple[pd.DataFrame, dict, list]:
    """(docs frame, label per doc_id, labelled pairs [(a, b, kind, truth, jaccard)])."""
    rng = random.Random(seed)
    files = python_files()
    pool, total, cursor = [], 0, 0
    budget = mb * 1e6 - 16_000 * (n_groups + n_negatives)  # leave room for the planted files (~16 KB each)
    while total < budget and cursor < len(files):
        repo, path, f = files[cursor]
        cursor += 1
        text = read_text(f)
        if text is not None:
            pool.append((repo, path, text))
            total += len(text.encode("utf-8"))
    rest = []  # donors for negatives: files not in the corpus
    while len(rest) < 3 * n_negatives and cursor < len(files):
        repo, path, f = files[cursor]
        cursor += 1
        text = read_text(f)
        if text is not None and 4_000 <= len(text) <= 60_000:
            rest.append((repo, path, text))
    rest = [rest[i][2] for i in passing_filter(rest)]
    candidates = [i for i, (_, _, t) in enumerate(pool) if 4_000 <= len(t) <= 60_000]
    rng.shuffle(candidates)
    candidates = candidates[: 4 * (n_groups + n_negatives)]
    candidates = [candidates[k] for k in passing_filter([pool[i] for i in candidates])]
    keep = distinct([pool[i][2] for i in candidates])
    originals = [candidates[k] for k in keep][: n_groups + n_negatives]
    if len(originals) < n_groups + n_negatives:
        raise SystemExit(f"only {len(originals)} distinct originals of 4-60 KB: lower --groups/--negatives")

    docs = [(repo, path, text) for repo, path, text in pool]
    labels: dict[int, str] = {}  # doc position -> truth group
    pairs = []
    for g, i in enumerate(originals[:n_groups]):
        repo, path, text = pool[i]
        kind = KINDS[g % len(KINDS)]
        if kind == "fork":
            variant = (f"fork-{g}/{repo.split('/')[-1]}", path, fork(text, rng))
        elif kind == "vendored":
            variant = (f"app-{g}", f"myapp/_compat/{repo.split('/')[-1]}/{path}", vendored(text, repo, rng))
        elif kind == "license":
            variant = (f"relicensed-{g}", path, license_variant(text, rng))
        else:
            variant = (f"renamed-{g}", path, rename(text, rng))
        docs.append(variant)
        labels[i] = labels[len(docs) - 1] = f"g{g}"
        pairs.append((i, len(docs) - 1, kind, True, jaccard(text, variant[2])))
    donors = [rest[k] for k in distinct(rest)]
    for k, i in enumerate(originals[n_groups:]):
        repo, path, text = pool[i]
        fraction = 0.35 if k % 2 == 0 else 0.55
        docs.append((f"rewrite-{k}", path, negative(text, donors[k % len(donors)], fraction)))
        labels[i] = f"o{k}"
        labels[len(docs) - 1] = f"n{k}"
        pairs.append((i, len(docs) - 1, f"distinct-{int(fraction * 100)}", False, jaccard(text, docs[-1][2])))

    order = list(range(len(docs)))
    rng.shuffle(order)
    df = pd.DataFrame([docs[i] for i in order], columns=["repo", "path", "content"])
    df["doc_id"] = [hashlib.sha1(f"bench:{r}:{p}".encode()).hexdigest()[:16] for r, p in zip(df.repo, df.path)]
    if df["doc_id"].duplicated().any():
        raise SystemExit("duplicate (repo, path) in the corpus")
    ids = {pos: df["doc_id"].iat[new] for new, pos in enumerate(order)}
    df["language"] = "python"
    df["size_bytes"] = [len(t.encode("utf-8")) for t in df.content]
    df["content_sha256"] = [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in df.content]
    df["source"] = "bench"
    labelled = {ids[pos]: group for pos, group in labels.items()}
    labelled_pairs = [(ids[a], ids[b], kind, truth, j) for a, b, kind, truth, j in pairs]
    return df[storage.DOC_COLUMNS], labelled, labelled_pairs


# --------------------------------------------------------------------------- scoring
def score(labels: dict[str, str], cluster_of: dict[str, str], scored: set[str], pairs: list,
          threshold: float = 0.7) -> dict:
    """Pairwise precision/recall over the labelled docs in `scored` (cluster_of: doc_id -> predicted cluster), the
    recall on planted pairs whose true Jaccard is >= threshold, and the planted pairs it got wrong ((kind, true
    Jaccard) of each missed pair and of each merged distinct pair)."""
    truth_sizes: dict[str, int] = {}
    predicted: dict[str, list[str]] = {}
    for doc, group in labels.items():
        if doc in scored:
            truth_sizes[group] = truth_sizes.get(group, 0) + 1
            predicted.setdefault(cluster_of.get(doc, doc), []).append(group)
    tp = fp = 0
    for groups in predicted.values():
        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                tp, fp = (tp + 1, fp) if groups[i] == groups[j] else (tp, fp + 1)
    positives = sum(n * (n - 1) // 2 for n in truth_sizes.values())
    same = [(kind, round(j, 2)) for a, b, kind, truth, j in pairs if a in scored and b in scored
            and (cluster_of.get(a, a) == cluster_of.get(b, b)) != truth]
    above = [cluster_of.get(a, a) == cluster_of.get(b, b) for a, b, _, truth, j in pairs
             if truth and j >= threshold and a in scored and b in scored]
    return {"tp": tp, "fp": fp, "fn": positives - tp, "precision": tp / (tp + fp) if tp + fp else 1.0,
            "recall": tp / positives if positives else 1.0, "wrong_planted_pairs": same,
            "recall_above": sum(above) / len(above) if above else 1.0}


def our_clusters(manifest) -> dict[str, str]:
    """doc_id -> cluster root, from the dedup exclusions ("...-duplicate-of:<doc_id>")."""
    excl = storage.read_shards(manifest.shard_uris("exclusions"), columns=["doc_id", "reason"])
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    for doc, reason in zip(excl.doc_id, excl.reason):
        a, b = find(doc), find(reason.split(":", 1)[1])
        if a != b:
            parent[a] = b
    return {doc: find(doc) for doc in set(parent) | set(parent.values())}


# --------------------------------------------------------------------------- runs
def ensure_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    check = [python, "-c", "import datatrove, spacy, orjson, xxhash"]
    if not python.exists() or subprocess.run(check, capture_output=True).returncode:
        print(f"creating the datatrove bench venv {venv} (pip install 'datatrove[processing]' spacy orjson rensa) ...",
              flush=True)
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", "datatrove[processing]", "spacy", "orjson", "rensa"],
                       check=True)
    return python


def run_ours(crawl_manifest, tmp: Path, backend: str, recall_weight: float | None, profile: bool) -> dict:
    name = f"{backend}-{recall_weight}"
    t = time.perf_counter()
    filtered = filter_docs(FilterConfig(), crawl_manifest, str(tmp / f"filter-{name}"))
    t_filter = time.perf_counter() - t
    cfg = DedupConfig(backend=backend, recall_weight=recall_weight)
    profiler = cProfile.Profile() if profile else None
    t = time.perf_counter()
    if profiler:
        profiler.enable()
    deduped = dedup(cfg, filtered, str(tmp / f"dedup-{name}"))
    if profiler:
        profiler.disable()
    t_dedup = time.perf_counter() - t
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
        print(f"\ncProfile of dedup (backend {backend}), top 15 by own time:\n{out.getvalue()}")
    kept = set(storage.read_shards(filtered.shard_uris("docs"), columns=["doc_id"]).doc_id)
    return {"filter_seconds": t_filter, "dedup_seconds": t_dedup, "filtered": filtered, "deduped": deduped,
            "kept_by_filter": kept, "dedup_mb": filtered.counts.get("bytes", 0) / 1e6}


def run_datatrove(df: pd.DataFrame, tmp: Path, venv: Path, tokenizer: str) -> dict:
    python = ensure_venv(venv)
    src = tmp / "jsonl"
    src.mkdir(exist_ok=True)
    with open(src / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for doc_id, text in zip(df.doc_id, df.content):
            fh.write(json.dumps({"id": doc_id, "text": text}) + "\n")
    out = tmp / f"datatrove-{tokenizer}.json"
    cmd = [str(python), str(ROOT / "bench" / "datatrove_minhash.py"), "--input", str(src),
           "--work", str(tmp / f"dt-{tokenizer}"), "--out", str(out), "--tokenizer", tokenizer]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"datatrove run failed:\n{proc.stderr[-4000:]}")
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=32.0, help="corpus size in MB (>= 30 for the published comparison)")
    ap.add_argument("--groups", type=int, default=400, help="planted near-duplicate pairs")
    ap.add_argument("--negatives", type=int, default=200, help="planted distinct files")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backends", default="numpy,datasketch,rensa",
                    help="our dedup backends (comma-separated; rensa comes from the bench venv if .venv lacks it)")
    ap.add_argument("--recall-weights", default="default",
                    help="dedup.recall_weight values to run (comma-separated; 'default' = the config default)")
    ap.add_argument("--datatrove-venv", type=Path, default=DEFAULT_VENV)
    ap.add_argument("--datatrove-tokenizers", default="default", help="default and/or whitespace (comma-separated)")
    ap.add_argument("--no-datatrove", action="store_true")
    ap.add_argument("--profile", action="store_true", help="cProfile our dedup call")
    args = ap.parse_args()

    if "rensa" in args.backends.split(",") and importlib.util.find_spec("rensa") is None:
        # same interpreter version in both venvs: borrow the bench venv's rensa (appended: .venv's packages win)
        ensure_venv(args.datatrove_venv)
        sys.path += [str(p) for p in args.datatrove_venv.glob("lib/python*/site-packages")]
    t = time.perf_counter()
    df, labels, pairs = build_corpus(args.mb, args.groups, args.negatives, args.seed)
    mb = df.size_bytes.sum() / 1e6
    print(f"corpus: {len(df)} Python files, {mb:.1f} MB ({len(labels)} labelled: {args.groups} planted pairs, "
          f"{args.negatives} planted distinct files), built in {time.perf_counter() - t:.1f}s")
    for kind in [*KINDS, "distinct-35", "distinct-55"]:
        js = [j for _, _, k, _, j in pairs if k == kind]
        if js:
            print(f"  {kind:<12} n={len(js):<4} true Jaccard min {min(js):.2f}  median {float(np.median(js)):.2f}"
                  f"  max {max(js):.2f}")

    rows_ = []
    with tempfile.TemporaryDirectory(prefix="dedup-bench-") as tmpdir:
        tmp = Path(tmpdir)
        crawl_manifest = write_stage_outputs("crawl", df, pd.DataFrame(columns=storage.EXCLUSION_COLUMNS),
                                             str(tmp / "crawl"), 1000, {"docs": len(df)}, {})
        scored = None
        weights = [None if w == "default" else float(w) for w in args.recall_weights.split(",") if w]
        for backend, weight in [(b, w) for b in args.backends.split(",") if b for w in weights]:
            r = run_ours(crawl_manifest, tmp, backend, weight, args.profile)
            scored = r["kept_by_filter"] if scored is None else scored
            s = score(labels, our_clusters(r["deduped"]), scored, pairs)
            d = r["deduped"].counts
            removed = (d["exact_duplicates"] + d["near_duplicates"]) / max(1, d["docs_in"])
            bands, rows = lsh_shape(DedupConfig(backend=backend, recall_weight=weight))
            label = f"ours ({backend}, {bands}x{rows})"
            rows_.append((f"{label}: filter+exact+near", mb, r["filter_seconds"] + r["dedup_seconds"], s, removed))
            rows_.append((f"{label}: exact+near only", r["dedup_mb"], r["dedup_seconds"], s, removed))
            print(f"{label}: filter {r['filter_seconds']:.1f}s ({d['docs_in']:.0f} docs kept), dedup "
                  f"{r['dedup_seconds']:.1f}s: {d['exact_duplicates']:.0f} exact + {d['near_duplicates']:.0f} near "
                  f"duplicates removed; {d.get('candidate_pairs', 0):.0f} candidate pairs; steps "
                  f"{r['deduped'].stats['timing']}; planted pairs wrong (kind, true J): {s['wrong_planted_pairs']}")
        if scored is None:
            scored = set(df.doc_id)
        if not args.no_datatrove:
            for tok in [x for x in args.datatrove_tokenizers.split(",") if x]:
                dt = run_datatrove(df, tmp, args.datatrove_venv, tok)
                cluster_of = {doc: f"c{c}" for doc, c in dt["cluster"].items() if c != -1}
                s = score(labels, cluster_of, scored, pairs)
                rows_.append((f"datatrove ({tok} tokenizer)", mb, dt["total_seconds"], s,
                             len(dt["removed"]) / max(1, dt["docs"])))
                print(f"datatrove ({tok}): " + ", ".join(f"{k} {v:.1f}s" for k, v in dt["seconds"].items())
                      + f"; {len(dt['removed'])} removed; planted pairs wrong (kind, true J): "
                      + str(s["wrong_planted_pairs"]))

    print(f"\n{'pipeline':<38}{'MB':>7}{'seconds':>9}{'MB/s/core':>11}{'removed':>9}{'P':>7}{'R':>7}"
          f"{'R(J>=.7)':>10}")
    for name, size, secs, s, removed in rows_:
        print(f"{name:<38}{size:>7.1f}{secs:>9.1f}{size / secs:>11.2f}{removed:>8.1%}{s['precision']:>7.3f}"
              f"{s['recall']:>7.3f}{s['recall_above']:>10.3f}")
    base = [r for r in rows_ if r[0].startswith("datatrove (default")]
    if base:
        ref = base[0][1] / base[0][2]
        for name, size, secs, _, _ in rows_:
            if name.startswith("ours"):
                print(f"ratio {name} / datatrove default: {size / secs / ref:.1f}x")
    n_pairs = sum(1 for a, b, _, truth, _ in pairs if truth and a in scored and b in scored)
    print(f"(precision/recall: pairs of the {len(scored & set(labels))} labelled files kept by our filter, "
          f"{n_pairs} planted pairs; R(J>=.7): planted pairs with true Jaccard >= 0.7 (BigCode shingles); "
          f"one process, one worker each, so MB/s = MB/s per core)")


if __name__ == "__main__":
    main()
