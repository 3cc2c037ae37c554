"""Dedup: normalisation, shingles, planted exact and near duplicates, survivors, and a timing run on embedded:python."""
from __future__ import annotations

import time

import pandas as pd
from datasketch import LeanMinHash

from snowcoder import storage
from snowcoder.config import DataConfig, DedupConfig, FilterConfig
from tasks.crawl import crawl, write_stage_outputs
from tasks.dedup import dedup, minhash_signatures, near_duplicate_clusters, normalize, shingles
from tasks.filters import filter_docs

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


def _frame(items: list[tuple[str, str, str]]) -> pd.DataFrame:
    """(repo, path, content) -> a docs frame."""
    df = pd.DataFrame(items, columns=["repo", "path", "content"])
    df["doc_id"] = [f"{i:016x}" for i in range(len(df))]
    df["language"] = "python"
    df["size_bytes"] = df["content"].str.len()
    df["content_sha256"] = df["doc_id"]
    df["source"] = "test"
    return df[storage.DOC_COLUMNS]


def _manifest(tmp_path, df):
    return write_stage_outputs("filter", df, pd.DataFrame(columns=storage.EXCLUSION_COLUMNS),
                               str(tmp_path / "in"), 3, {}, {})


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


def test_minhash_signatures():
    sigs = minhash_signatures([BASE, BASE, UNRELATED_1], num_perm=64, ngram=5, seed=1)
    assert all(isinstance(s, LeanMinHash) for s in sigs) and len(sigs[0].hashvalues) == 64
    assert sigs[0].jaccard(sigs[1]) == 1.0
    assert sigs[0].jaccard(sigs[2]) < 0.2


def test_near_duplicate_clusters_planted():
    df = _frame([("r1", "inv.py", BASE), ("r2", "net.py", UNRELATED_1), ("r3", "inv.py", RENAMED),
                 ("r4", "math.py", UNRELATED_2), ("r5", "inv.py", COMMENTED)])
    clusters = near_duplicate_clusters(df, DedupConfig())
    assert clusters == [[0, 2, 4]]


def test_dedup_stage(tmp_path):
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
    m = dedup(DedupConfig(), _manifest(tmp_path, df), str(tmp_path / "out"))
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
    assert m.counts["docs_in"] == 7 and m.counts["docs"] == 4
    assert m.counts["exact_duplicates"] == 2 and m.counts["near_duplicates"] == 1
    assert m.stats["timing"]["docs_per_s"] > 0
    # deterministic: same input, same output
    m2 = dedup(DedupConfig(), _manifest(tmp_path, df), str(tmp_path / "out2"))
    assert m2.digest == m.digest


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
          + f" near-dedup {d.stats['timing']['near_docs_per_s']} docs/s, {d.stats['timing']['near_mb_per_s']} MB/s")
    assert c.counts["files_seen"] == 2000
    assert d.counts["docs"] <= f.counts["docs"] <= c.counts["docs"] and d.counts["docs"] > 1000
    assert times["crawl"] < 30 and times["dedup"] < 60


def test_empty_input(tmp_path):
    """A stage whose input has no docs writes empty shards and zero counts (no crash on empty frames)."""
    empty = _manifest(tmp_path, _frame([]))
    f = filter_docs(FilterConfig(), empty, str(tmp_path / "f"))
    d = dedup(DedupConfig(), f, str(tmp_path / "d"))
    assert d.counts["docs_in"] == 0 and d.counts["docs"] == 0
    assert storage.read_shards(d.shard_uris("docs")).empty
