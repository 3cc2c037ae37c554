"""Dedup: normalisation, tokens and shingles, both MinHash backends on planted pairs, LSH parameters, the staged stage
(exact + near, survivors, determinism, resume after a kill, bounded structures) and a timing run on embedded:python."""
from __future__ import annotations

import os
import random
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from snowcoder import storage
from snowcoder.config import DataConfig, DedupConfig, FilterConfig
from tasks import dedup as dd
from tasks.crawl import crawl, write_stage_outputs
from tasks.dedup import (bucket_pairs, candidate_probability, connected_components, dedup, lsh_params, lsh_shape,
                         minhash_signatures, near_duplicate_clusters, normalize, shingle_hashes, shingles, token_hashes,
                         tokens)
from tasks.filters import filter_docs

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ["numpy", "datasketch", pytest.param("rensa", marks=pytest.mark.skipif(
    __import__("importlib").util.find_spec("rensa") is None, reason="rensa not installed"))]

BASE = '''"""Small inventory helpers used by the warehouse service."""
from dataclasses import dataclass, field


@dataclass
class Item:
    name: str
    quantity: int = 0
    price: float = 0.0
    tags: list = field(default_factory=list)


class Inventory:
    def __init__(self):
        self.items = {}

    def add(self, name, quantity=1, price=0.0):
        item = self.items.get(name)
        if item is None:
            item = Item(name=name, quantity=quantity, price=price)
            self.items[name] = item
        else:
            item.quantity += quantity
        return item

    def remove(self, name, quantity=1):
        if name not in self.items:
            raise KeyError(f"unknown item {name}")
        item = self.items[name]
        if item.quantity < quantity:
            raise ValueError("not enough stock")
        item.quantity -= quantity
        if item.quantity == 0:
            del self.items[name]

    def total_value(self):
        return sum(i.quantity * i.price for i in self.items.values())

    def find_by_tag(self, tag):
        return sorted(i.name for i in self.items.values() if tag in i.tags)

    def restock(self, levels):
        for name, level in levels.items():
            current = self.items.get(name)
            missing = level - (current.quantity if current else 0)
            if missing > 0:
                self.add(name, missing)

    def report(self):
        lines = [f"{i.name}: {i.quantity} x {i.price:.2f}" for i in self.items.values()]
        return "\\n".join(sorted(lines))
'''
RENAMED = BASE.replace("missing", "shortfall")  # a renamed local variable
COMMENTED = BASE.replace("    def total_value(self):\n",
                         "    # Value of everything in stock, at list price.\n    def total_value(self):\n")
UNRELATED_1 = '''import socket


def fetch(host, port=80, path="/"):
    request = f"GET {path} HTTP/1.0\\r\\nHost: {host}\\r\\n\\r\\n".encode()
    with socket.create_connection((host, port), timeout=5) as conn:
        conn.sendall(request)
        chunks = []
        while True:
            data = conn.recv(4096)
            if not data:
                break
            chunks.append(data)
    head, _, body = b"".join(chunks).partition(b"\\r\\n\\r\\n")
    status = int(head.split()[1])
    return status, body
'''
UNRELATED_2 = '''def fibonacci(n):
    """Return the n-th Fibonacci number, iteratively."""
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def primes_below(limit):
    sieve = [True] * limit
    sieve[0:2] = [False, False]
    for i in range(2, int(limit ** 0.5) + 1):
        if sieve[i]:
            sieve[i * i::i] = [False] * len(range(i * i, limit, i))
    return [i for i, is_prime in enumerate(sieve) if is_prime]
'''
STDLIB_FILES = ["argparse.py", "calendar.py", "configparser.py", "csv.py", "dataclasses.py", "difflib.py", "enum.py",
                "fractions.py", "functools.py", "gettext.py", "glob.py", "gzip.py", "heapq.py", "inspect.py",
                "ipaddress.py", "json/decoder.py", "json/encoder.py", "logging/handlers.py", "mailbox.py",
                "netrc.py", "pathlib.py", "pprint.py", "shlex.py", "shutil.py", "smtplib.py", "string.py",
                "tarfile.py", "textwrap.py", "threading.py", "zipfile.py"]


def _frame(items: list[tuple[str, str, str]], source: str = "test") -> pd.DataFrame:
    """(repo, path, content) -> a docs frame."""
    df = pd.DataFrame(items, columns=["repo", "path", "content"])
    df["doc_id"] = [f"{i:016x}" for i in range(len(df))]
    df["language"] = "python"
    df["size_bytes"] = df["content"].str.len()
    df["content_sha256"] = df["doc_id"]
    df["source"] = source
    return df[storage.DOC_COLUMNS]


def _manifest(tmp_path, df, shard_docs: int = 3, name: str = "in"):
    return write_stage_outputs("filter", df, pd.DataFrame(columns=storage.EXCLUSION_COLUMNS),
                               str(tmp_path / name), shard_docs, {}, {})


def _stdlib_texts() -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    return [(root / f).read_text(encoding="utf-8") for f in STDLIB_FILES if (root / f).exists()]


def _mutate(text: str, fraction: float, rng: random.Random) -> str:
    """`text` with about `fraction` of its lines changed (a token appended)."""
    lines = text.split("\n")
    return "\n".join(f"{line} + edited_{rng.randint(0, 10**6)}" if rng.random() < fraction else line
                     for line in lines)


def _true_jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a, 5), shingles(b, 5)
    return len(sa & sb) / len(sa | sb)


def _planted_corpus() -> tuple[list[str], list[tuple[int, int, float]]]:
    """Stdlib files plus a mutated copy of each (edit rates 1%..60% of lines): texts and (i, j, true Jaccard)."""
    rng = random.Random(3)
    originals = _stdlib_texts()
    rates = [0.01, 0.03, 0.06, 0.12, 0.25, 0.4, 0.6]
    texts, pairs = list(originals), []
    for k, text in enumerate(originals):
        texts.append(_mutate(text, rates[k % len(rates)], rng))
        pairs.append((k, len(texts) - 1, _true_jaccard(text, texts[-1])))
    return texts, pairs


# --------------------------------------------------------------------------- pure helpers
def test_normalize():
    assert normalize("a = 1  \r\nb = 2\t\r\n\r\n") == normalize("a = 1\nb = 2") == "a = 1\nb = 2"
    assert normalize("x\ry") == "x\ny"
    assert normalize("    indented") == "    indented"  # leading whitespace is significant


def test_shingles():
    assert shingles("a.b(c, d) + e_1", 5) == {b"a b c d e_1"}
    assert shingles("one two three", 2) == {b"one two", b"two three"}
    assert shingles("ab", 5) == {b"ab"}  # fewer tokens than n: one shingle of all tokens
    assert shingles("  (){}  ", 5) == set()
    assert len(shingles(BASE, 5)) > 150


def test_token_hashes_give_the_regex_tokens():
    """Byte-level tokens = the regex split of the str (non-ASCII separates); equal tokens <-> equal hashes."""
    long = "x" * 3000  # longer than any token before it: the table of powers grows
    texts = [BASE, "héllo wörld_1=2;x\r\ny", "", "  (){} ", "ünï 名前 = 3", "a", UNRELATED_1, "\ud800lone surrogate",
             f"{long} y {long}x {long}"]
    hashes, offsets = token_hashes(texts)
    assert offsets.tolist() == np.cumsum([0] + [len(tokens(t)) for t in texts]).tolist()
    flat = [tok for t in texts for tok in tokens(t)]
    assert flat[offsets[1]:offsets[2]] == ["h", "llo", "w", "rld_1", "2", "x", "y"]
    by_token: dict[str, int] = {}
    for tok, h in zip(flat, hashes.tolist()):
        assert by_token.setdefault(tok, h) == h
    assert len(set(by_token.values())) == len(by_token)  # distinct tokens, distinct hashes


@pytest.mark.parametrize("n", [1, 2, 5])
def test_shingle_hashes_are_the_shingle_sets(n):
    texts = [BASE, "", "one", "one two three", UNRELATED_2, "x y x y x y x y"]
    sh, s_off = shingle_hashes(*token_hashes(texts), n)
    for i, t in enumerate(texts):
        assert len(set(sh[s_off[i]:s_off[i + 1]].tolist())) == len(shingles(t, n))


def test_lsh_params_match_datasketch():
    from datasketch.lsh import _optimal_param  # scipy quad: the reference for our numpy integration

    assert lsh_params(0.7, 256) == (25, 10)  # BigCode's setting
    for num_perm in (32, 128, 256, 500):
        for threshold in (0.5, 0.7, 0.85):
            assert lsh_params(threshold, num_perm) == tuple(_optimal_param(threshold, num_perm, 0.5, 0.5))
            for w in (0.2, 0.9, 0.95):  # datasketch's weights are (false positive, false negative)
                assert lsh_params(threshold, num_perm, w) == tuple(_optimal_param(threshold, num_perm, 1 - w, w))
    with pytest.raises(ValueError):
        lsh_params(0.7, 256, 1.0)


def test_default_lsh_shape_trades_candidates_for_recall_only_with_verification():
    # with verification, LSH false positives are dropped, so the default shape misses fewer near-threshold pairs
    assert lsh_shape(DedupConfig()) == (36, 7)
    assert lsh_shape(DedupConfig(verify=False)) == (25, 10)
    assert lsh_shape(DedupConfig(verify=False, recall_weight=0.95)) == (36, 7)
    assert candidate_probability(0.75, 36, 7) > 0.99 > 0.8 > candidate_probability(0.75, 25, 10)
    assert candidate_probability(0.3, 36, 7) < 0.01  # dissimilar files still rarely meet


@pytest.mark.parametrize("backend", BACKENDS)
def test_minhash_signatures(backend):
    cfg = DedupConfig(backend=backend)
    sig, valid = minhash_signatures([BASE, BASE, UNRELATED_1, "(){}", RENAMED], cfg)
    assert sig.shape == (5, 256) and sig.dtype == np.uint32
    assert valid.tolist() == [True, True, True, False, True]
    assert (sig[0] == sig[1]).all()
    assert (sig[0] == sig[2]).mean() < 0.1
    assert abs((sig[0] == sig[4]).mean() - _true_jaccard(BASE, RENAMED)) < 0.1
    other, _ = minhash_signatures([BASE], DedupConfig(backend=backend, seed=2))
    assert (other[0] != sig[0]).any()  # the seed picks the permutations


@pytest.mark.parametrize("backend", ["numpy", "datasketch"])
def test_estimates_are_unbiased(backend):
    """Signature agreement tracks the true Jaccard of the shingle sets (error ~ binomial, sd <= 0.031 at 256)."""
    texts, pairs = _planted_corpus()
    sig, _ = minhash_signatures(texts, DedupConfig(backend=backend))
    errors = np.array([(sig[i] == sig[j]).mean() - jac for i, j, jac in pairs])
    assert abs(errors.mean()) < 0.02 and np.sqrt((errors ** 2).mean()) < 0.045


@pytest.mark.parametrize("backend", BACKENDS)
def test_near_duplicate_clusters_planted(backend):
    df = _frame([("r1", "inv.py", BASE), ("r2", "net.py", UNRELATED_1), ("r3", "inv.py", RENAMED),
                 ("r4", "math.py", UNRELATED_2), ("r5", "inv.py", COMMENTED)])
    assert near_duplicate_clusters(df, DedupConfig(backend=backend)) == [[0, 2, 4]]


def test_backends_agree_on_planted_pairs():
    """Same LSH behaviour: every planted pair with true J >= 0.85 found, none with J <= 0.55, by both backends;
    and datasketch signatures through our banding give MinHashLSH's own candidates (BigCode semantics)."""
    from datasketch import LeanMinHash, MinHash, MinHashLSH

    texts, pairs = _planted_corpus()
    df = _frame([(f"r{i}", "f.py", t) for i, t in enumerate(texts)])
    found = {}
    for backend in ("numpy", "datasketch"):
        clusters = near_duplicate_clusters(df, DedupConfig(backend=backend))
        same = {frozenset((a, b)) for c in clusters for a in c for b in c if a < b}
        found[backend] = {(i, j) for i, j, _ in pairs if frozenset((i, j)) in same}
        assert all(frozenset((i, j)) in same for i, j, jac in pairs if jac >= 0.85), backend
        assert not any(frozenset((i, j)) in same for i, j, jac in pairs if jac <= 0.55), backend
        assert all(len(c) == 2 for c in clusters)  # no pair across files
    assert len([p for p in pairs if 0.55 < p[2] < 0.85]) >= 3  # the borderline band is exercised too
    # reference semantics: MinHashLSH buckets over the same datasketch signatures, unverified
    cfg = DedupConfig(backend="datasketch", verify=False)
    sig, valid = minhash_signatures(texts, cfg)
    ours = dd.clusters_from_signatures(sig, valid, cfg)[0]
    lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm)
    hashed = MinHash.bulk([shingles(t, 5) for t in texts], num_perm=cfg.num_perm, seed=cfg.seed)
    for i, m in enumerate(hashed):
        lsh.insert(i, LeanMinHash(m))
    edges = np.array([(i, j) for i, m in enumerate(hashed) for j in lsh.query(m) if j > i]).reshape(-1, 2)
    assert ours == connected_components(edges)


def test_bucket_pairs_are_linear_in_bucket_size():
    """A bucket of k docs gives at most 2(k-1) candidate pairs (star + chain), never k(k-1)/2."""
    k = 5000
    pairs = dd.unique_pairs(bucket_pairs(np.zeros(k, dtype=np.uint64), np.arange(k, dtype=np.int64)))
    assert len(pairs) <= 2 * (k - 1) and (pairs[:, 0] < pairs[:, 1]).all()
    assert connected_components(pairs) == [list(range(k))]
    hashes = np.array([7, 3, 7, 9, 3], dtype=np.uint64)
    assert {tuple(p) for p in dd.unique_pairs(bucket_pairs(hashes, np.arange(5)))} == {(0, 2), (1, 4)}


# --------------------------------------------------------------------------- the stage
@pytest.mark.parametrize("backend", ["numpy", "datasketch"])
def test_dedup_stage(tmp_path, backend):
    crlf = BASE.replace("\n", "  \r\n")  # same file with CRLF endings and trailing spaces: exact duplicate
    df = _frame([
        ("b-fork", "inv.py", crlf),
        ("a-orig", "inv.py", BASE),
        ("c-fork", "inventory.py", COMMENTED),  # longest of its near-dup cluster: the survivor
        ("d", "net.py", UNRELATED_1),
        ("e", "math.py", UNRELATED_2),
        ("f", "net_copy.py", UNRELATED_1),
        ("g", "short.py", "x"),  # too few tokens for a 5-gram: still compared as one shingle
    ])
    ids = dict(zip(df.repo, df.doc_id))
    cfg = DedupConfig(backend=backend)
    m = dedup(cfg, _manifest(tmp_path, df), str(tmp_path / "out"))
    kept = storage.read_shards(m.shard_uris("docs"))
    excl = storage.read_shards(m.shard_uris("exclusions"))

    assert sorted(kept.repo) == ["c-fork", "d", "e", "g"]
    reasons = dict(zip(excl.repo, excl.reason))
    assert reasons == {
        "b-fork": f"exact-duplicate-of:{ids['a-orig']}",  # first by (repo, path)
        "f": f"exact-duplicate-of:{ids['d']}",
        "a-orig": f"near-duplicate-of:{ids['c-fork']}",
    }
    assert set(excl.stage) == {"dedup"}
    assert set(kept.doc_id) | set(excl.doc_id) == set(df.doc_id) and not set(kept.doc_id) & set(excl.doc_id)
    assert m.counts["docs_in"] == 7 and m.counts["docs"] == 4 and m.counts["excluded"] == 3
    assert m.counts["exact_duplicates"] == 2 and m.counts["near_duplicates"] == 1 and m.counts["near_clusters"] == 1
    assert m.counts["bytes"] == kept.size_bytes.sum()
    assert len(m.shard_uris("docs")) == len(m.shard_uris("exclusions")) == 3  # one per input shard
    clusters = storage.read_parquet(m.uris["clusters"])
    assert sorted(clusters.repo) == ["a-orig", "c-fork"] and set(clusters.cluster) == {ids["c-fork"]}
    assert m.stats["timing"]["docs_per_s"] > 0 and m.stats["params"]["bands"] == 36
    assert not (tmp_path / "out" / "work").exists()  # intermediate files removed after a finished run
    # deterministic: same input, same output
    m2 = dedup(cfg, _manifest(tmp_path, df), str(tmp_path / "out2"))
    assert m2.digest == m.digest


def test_survivor_rules(tmp_path):
    longer = COMMENTED + "\n# trailing note\n"
    df = _frame([("a", "x.py", BASE), ("b", "x.py", longer), ("c", "x.py", RENAMED)])
    df.loc[2, "source"] = "github"
    inp = _manifest(tmp_path, df)

    def kept(**kw) -> list[str]:
        m = dedup(DedupConfig(**kw), inp, str(tmp_path / f"out-{len(kw)}-{sorted(kw.items())!r:.40}"))
        return sorted(storage.read_shards(m.shard_uris("docs")).repo)

    assert kept() == ["b"]  # longest
    assert kept(survivor="first") == ["a"]  # smallest (repo, path)
    assert kept(prefer_sources=["github"]) == ["c"]  # preferred source first


def test_dedup_deterministic_across_shardings_and_workers(tmp_path):
    texts, _ = _planted_corpus()
    df = _frame([(f"r{i:03d}", "f.py", t) for i, t in enumerate(texts)])
    one = dedup(DedupConfig(), _manifest(tmp_path, df, shard_docs=100, name="one"), str(tmp_path / "o1"))
    many = dedup(DedupConfig(workers=2), _manifest(tmp_path, df, shard_docs=7, name="many"), str(tmp_path / "o2"))
    kept = [set(storage.read_shards(m.shard_uris("docs")).doc_id) for m in (one, many)]
    reasons = [dict(storage.read_shards(m.shard_uris("exclusions"))[["doc_id", "reason"]].values) for m in (one, many)]
    assert kept[0] == kept[1] and reasons[0] == reasons[1] and one.counts["near_duplicates"] >= 15
    assert many.stats["work"]["signature_shards_computed"] == len(many.shard_uris("docs")) == 9


def test_band_batches_give_the_same_pairs(tmp_path, monkeypatch):
    """A band-table budget too small for all bands at once (one band per batch) changes nothing but the batching."""
    texts, _ = _planted_corpus()
    inp = _manifest(tmp_path, _frame([(f"r{i:03d}", "f.py", t) for i, t in enumerate(texts)]), shard_docs=10)
    whole = dedup(DedupConfig(keep_work=True), inp, str(tmp_path / "a"))
    monkeypatch.setattr(dd, "BAND_TABLE_BYTES", 1)
    batched = dedup(DedupConfig(keep_work=True), inp, str(tmp_path / "b"))
    assert whole.stats["work"]["bucket_batches_computed"] == 1
    assert batched.stats["work"]["bucket_batches_computed"] == whole.stats["params"]["bands"] == 36
    assert batched.digest == whole.digest and batched.counts == whole.counts
    work = tmp_path / "b" / "work" / batched.stats["work"]["key"]
    assert len(list(work.glob("edges-*.npy"))) == 36 and len(list(work.glob("sig-*.npz"))) == 6


class _Killed(Exception):
    pass


def test_resume_after_kill_during_near_dedup(tmp_path, monkeypatch):
    """Killed after 3 of 6 signature shards: the re-run reuses those 3 (not recomputed: same files, same mtimes)
    and keeps the same set as an uninterrupted run; a run with another config starts over (stale work removed)."""
    texts, _ = _planted_corpus()
    inp = _manifest(tmp_path, _frame([(f"r{i:03d}", "f.py", t) for i, t in enumerate(texts)]), shard_docs=10)
    clean = dedup(DedupConfig(), inp, str(tmp_path / "clean"))

    def kill(step: str, n: int) -> None:
        if step == "signatures" and n == 3:
            raise _Killed

    monkeypatch.setattr(dd, "_HOOK", kill)
    with pytest.raises(_Killed):
        dedup(DedupConfig(), inp, str(tmp_path / "out"))
    (work,) = (tmp_path / "out" / "work").iterdir()
    stamps = {p.name: p.stat().st_mtime_ns for p in work.glob("sig-*.npz")}
    assert len(stamps) == 3
    monkeypatch.setattr(dd, "_HOOK", None)
    resumed = dedup(DedupConfig(keep_work=True), inp, str(tmp_path / "out"))  # keep_work, workers: not in the key
    assert {p.name: p.stat().st_mtime_ns for p in work.glob("sig-*.npz") if p.name in stamps} == stamps
    w = resumed.stats["work"]
    assert (w["signature_shards_reused"], w["signature_shards_computed"]) == (3, 3)
    assert (w["keys_shards_reused"], w["keys_shards_computed"]) == (6, 0)
    assert resumed.digest == clean.digest and resumed.counts == clean.counts
    kept = [set(storage.read_shards(m.shard_uris("docs")).doc_id) for m in (clean, resumed)]
    assert kept[0] == kept[1]
    # another config: the stale work dir is removed, nothing is reused
    monkeypatch.setattr(dd, "_HOOK", kill)
    with pytest.raises(_Killed):
        dedup(DedupConfig(threshold=0.8), inp, str(tmp_path / "out"))
    assert [p.name for p in (tmp_path / "out" / "work").iterdir()] != [work.name]
    assert not work.exists()


def test_resume_after_sigkill(tmp_path):
    """A real kill: the stage in a subprocess SIGKILLs itself after 2 signature shards (SNOWCODER_DEDUP_FAILPOINT);
    the re-run in this process reuses those 2 and gives the uninterrupted run's output."""
    texts, _ = _planted_corpus()
    inp = _manifest(tmp_path, _frame([(f"r{i:03d}", "f.py", t) for i, t in enumerate(texts)]), shard_docs=10)
    clean = dedup(DedupConfig(), inp, str(tmp_path / "clean"))
    out = tmp_path / "out"
    code = ("import sys; from snowcoder.config import DedupConfig; from snowcoder.manifest import Manifest; "
            "from tasks.dedup import dedup; "
            "dedup(DedupConfig(), Manifest.model_validate_json(sys.argv[1]), sys.argv[2])")
    env = {**os.environ, "SNOWCODER_DEDUP_FAILPOINT": "signatures:2"}
    proc = subprocess.run([sys.executable, "-c", code, inp.model_dump_json(), str(out)], cwd=ROOT, env=env)
    assert proc.returncode == -9  # SIGKILL
    resumed = dedup(DedupConfig(), inp, str(out))
    assert resumed.stats["work"]["signature_shards_reused"] == 2
    assert resumed.digest == clean.digest


def test_pipeline_timing_embedded_python(tmp_path):
    """crawl + filter + dedup on embedded:python capped at 2000 files (the `tiny` preset's cap); prints timings."""
    times = {}
    t = time.perf_counter()
    c = crawl(DataConfig(sources=["embedded:python"], max_files=2000, max_files_per_repo=200), str(tmp_path / "c"))
    times["crawl"] = time.perf_counter() - t
    t = time.perf_counter()
    f = filter_docs(FilterConfig(), c, str(tmp_path / "f"))
    times["filter"] = time.perf_counter() - t
    t = time.perf_counter()
    d = dedup(DedupConfig(), f, str(tmp_path / "d"))
    times["dedup"] = time.perf_counter() - t
    mb = c.counts["bytes"] / 1e6
    print(f"\nembedded:python, 2000 files ({mb:.1f} MB kept by crawl): "
          + ", ".join(f"{k} {v:.2f}s" for k, v in times.items())
          + f"; docs {c.counts['docs']:.0f} -> {f.counts['docs']:.0f} -> {d.counts['docs']:.0f}"
          + f" (exact {d.counts['exact_duplicates']:.0f}, near {d.counts['near_duplicates']:.0f});"
          + f" dedup {d.stats['timing']['mb_per_s']} MB/s, near-dedup {d.stats['timing']['near_mb_per_s']} MB/s")
    assert c.counts["files_seen"] == 2000
    assert d.counts["docs"] <= f.counts["docs"] <= c.counts["docs"] and d.counts["docs"] > 1000
    assert times["crawl"] < 30 and times["dedup"] < 20


def test_empty_input(tmp_path):
    """A stage whose input has no docs writes empty shards and zero counts (no crash on empty frames)."""
    empty = _manifest(tmp_path, _frame([]))
    f = filter_docs(FilterConfig(), empty, str(tmp_path / "f"))
    d = dedup(DedupConfig(), f, str(tmp_path / "d"))
    assert d.counts["docs_in"] == 0 and d.counts["docs"] == 0
    assert storage.read_shards(d.shard_uris("docs")).empty
