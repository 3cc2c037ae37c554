"""Crawl (every file seen is kept or excluded with a reason; caps; sources), language detection, held-out split."""
from __future__ import annotations

import hashlib
import os

import pandas as pd
import pytest

from snowcoder import storage
from snowcoder.config import DataConfig, UserError
from snowcoder.manifest import Manifest
from tasks import crawl as crawl_mod
from tasks.crawl import crawl, write_stage_outputs
from tasks.language import detect_language
from tasks.split import split_heldout

GOOD = "def add(a, b):\n    return a + b\n"


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)


def _outputs(m: Manifest) -> tuple[pd.DataFrame, pd.DataFrame]:
    return storage.read_shards(m.shard_uris("docs")), storage.read_shards(m.shard_uris("exclusions"))


# --------------------------------------------------------------------------- language
@pytest.mark.parametrize(
    "path, lang",
    [
        ("a/b.py", "python"), ("X.java", "java"), ("m.cpp", "c++"), ("m.hpp", "c++"), ("m.c", "c"), ("m.h", "c"),
        ("app.js", "javascript"), ("i.php", "php"), ("P.cs", "c#"), ("main.go", "go"), ("ui.tsx", "typescript"),
        ("q.sql", "sql"), ("r.rb", "ruby"), ("lib.rs", "rust"), ("nb.ipynb", "jupyter notebook"),
        ("S.scala", "scala"), ("K.kt", "kotlin"), ("run.sh", "shell"), ("w.dart", "dart"), ("V.swift", "swift"),
        ("d.json", "json"), ("c.yml", "yaml"), ("README.md", "markdown"), ("src/MAIN.PY", "python"),
        ("Dockerfile", "dockerfile"), ("Makefile", "makefile"), ("notes.txt", None), ("LICENSE", None),
        (".gitignore", None),
    ],
)
def test_detect_language(path, lang):
    assert detect_language(path) == lang


# --------------------------------------------------------------------------- crawl of a local directory
@pytest.fixture
def tree(tmp_path):
    """Two repos with one file of each kind the crawler must exclude, plus files of other extensions."""
    src = tmp_path / "src"
    _write(src / "repoA" / "good.py", GOOD)
    _write(src / "repoA" / "pkg" / "deep.py", GOOD + "# deep\n")
    _write(src / "repoA" / "empty.py", b"")
    _write(src / "repoA" / "binary.py", b"import os\x00\x01\x02")
    _write(src / "repoA" / "latin1.py", "s = 'caf\u00e9'\n".encode("latin-1"))
    _write(src / "repoA" / "big.py", "x = 1\n" * 100)  # 600 bytes > max_file_bytes below
    _write(src / "repoA" / "notes.txt", "not crawled")
    os.symlink(src / "repoA" / "missing-target.py", src / "repoA" / "broken.py")  # dangling link: unreadable
    _write(src / "repoA" / "__pycache__" / "cached.py", GOOD)  # skipped directory
    _write(src / "repoA" / ".git" / "hook.py", GOOD)  # hidden directory skipped
    _write(src / "repoB" / "b.py", GOOD + "# b\n")
    _write(src / "top.py", GOOD + "# top\n")  # top-level file: repo named after the source dir
    return src


def test_crawl_accounts_for_every_file(tree, tmp_path):
    cfg = DataConfig(sources=[str(tree)], max_files=None, max_files_per_repo=None, max_file_bytes=500, shard_docs=2)
    m = crawl(cfg, str(tmp_path / "out"))
    docs, excl = _outputs(m)

    expected = {
        ("repoA", "good.py"), ("repoA", "pkg/deep.py"), ("repoA", "empty.py"), ("repoA", "binary.py"),
        ("repoA", "latin1.py"), ("repoA", "big.py"), ("repoA", "broken.py"), ("repoB", "b.py"), ("src", "top.py"),
    }
    seen = set(zip(docs.repo, docs.path)) | set(zip(excl.repo, excl.path))
    assert seen == expected
    assert not set(zip(docs.repo, docs.path)) & set(zip(excl.repo, excl.path))
    reasons = dict(zip(excl.path, excl.reason))
    assert reasons == {"empty.py": "empty", "binary.py": "binary", "latin1.py": "not-utf8",
                       "big.py": "too-large", "broken.py": "unreadable"}
    assert set(excl.stage) == {"crawl"}
    assert list(excl.columns) == storage.EXCLUSION_COLUMNS
    assert list(docs.columns) == storage.DOC_COLUMNS

    assert m.counts["files_seen"] == 9 and m.counts["docs"] == 4 and m.counts["excluded"] == 5
    assert m.counts["skipped_by_cap"] == 0 and m.counts["repos"] == 3
    assert m.counts["bytes"] == docs.size_bytes.sum()
    assert m.stats["excluded_by_reason"] == {"binary": 1, "empty": 1, "not-utf8": 1, "too-large": 1, "unreadable": 1}
    assert len(m.shard_uris("docs")) == 2  # shard_docs=2

    row = docs.set_index("path").loc["good.py"]
    assert row.content == GOOD and row.language == "python" and row.source == str(tree)
    assert row.doc_id == hashlib.sha1(f"{tree}:repoA:good.py".encode()).hexdigest()[:16]
    assert row.content_sha256 == hashlib.sha256(GOOD.encode()).hexdigest()
    m.save(str(tmp_path / "out" / "manifest.json"))  # the Prefect step saves it (the commit marker of the stage)
    assert Manifest.load(str(tmp_path / "out" / "manifest.json")) == m


def test_crawl_unreadable_via_permission_error(tmp_path, monkeypatch):
    src = tmp_path / "repo"
    _write(src / "a.py", GOOD)
    _write(src / "locked.py", GOOD + "# locked\n")
    real_open = open

    def fake_open(path, *args, **kwargs):
        if str(path).endswith("locked.py"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(crawl_mod, "open", fake_open, raising=False)
    m = crawl(DataConfig(sources=[str(src)]), str(tmp_path / "out"))
    docs, excl = _outputs(m)
    assert list(docs.path) == ["a.py"] and list(docs.repo) == ["repo"]  # no sub-dirs: the dir is the repo
    assert dict(zip(excl.path, excl.reason)) == {"locked.py": "unreadable"}


def test_crawl_user_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="empty"):
        crawl(DataConfig(sources=[str(empty)]), str(tmp_path / "o1"))
    with pytest.raises(UserError, match="does not exist"):
        crawl(DataConfig(sources=[str(tmp_path / "nope")]), str(tmp_path / "o2"))
    _write(tmp_path / "txt" / "r" / "a.txt", "text")
    with pytest.raises(UserError, match="no files with extensions"):
        crawl(DataConfig(sources=[str(tmp_path / "txt")]), str(tmp_path / "o3"))
    with pytest.raises(UserError, match="embedded"):
        crawl(DataConfig(sources=["embedded:cobol"]), str(tmp_path / "o4"))


def test_caps_round_robin_and_deterministic(tmp_path):
    src = tmp_path / "src"
    for r in "abc":
        for i in range(10):
            _write(src / f"repo_{r}" / f"f{i:02d}.py", f"x_{r}_{i} = {i}\n")
    cfg = DataConfig(sources=[str(src)], max_files=6, max_files_per_repo=4)
    m1 = crawl(cfg, str(tmp_path / "o1"))
    m2 = crawl(cfg, str(tmp_path / "o2"))
    d1, _ = _outputs(m1)
    d2, _ = _outputs(m2)
    assert d1.doc_id.tolist() == d2.doc_id.tolist() and m1.digest == m2.digest
    assert d1.repo.value_counts().to_dict() == {"repo_a": 2, "repo_b": 2, "repo_c": 2}  # spread over repos
    assert m1.counts["skipped_by_cap"] == 24 and m1.counts["files_seen"] == 6
    assert list(zip(d1.repo, d1.path)) == sorted(zip(d1.repo, d1.path))  # output in (repo, path) order

    m3 = crawl(DataConfig(sources=[str(src)], max_files=None, max_files_per_repo=4), str(tmp_path / "o3"))
    d3, _ = _outputs(m3)
    assert d3.repo.value_counts().to_dict() == {"repo_a": 4, "repo_b": 4, "repo_c": 4}
    assert set(d1.doc_id) <= set(d3.doc_id)  # a smaller total cap takes a prefix of each repo's subset
    assert d3[d3.repo == "repo_a"].path.tolist() != [f"f{i:02d}.py" for i in range(4)]  # not the first 4 by name


def test_crawl_embedded_python(tmp_path):
    m = crawl(DataConfig(sources=["embedded:python"], max_files=60, max_files_per_repo=5), str(tmp_path / "out"))
    docs, excl = _outputs(m)
    assert m.counts["files_seen"] == 60 == len(docs) + len(excl)
    assert m.counts["skipped_by_cap"] > 1000
    assert all(r == "stdlib" or r.startswith(("stdlib/", "site-packages")) for r in docs.repo)
    assert docs.repo.nunique() >= 12  # round-robin: one file from each of many repos, not 60 from the first few
    assert not any("__pycache__" in p or ".dist-info" in p for p in docs.path)
    assert set(docs.language) == {"python"}


# --------------------------------------------------------------------------- held-out split
def _manifest_with_docs(tmp_path, n: int) -> Manifest:
    df = pd.DataFrame(
        {"doc_id": [f"{i:016x}" for i in range(n)], "repo": "r", "path": [f"f{i}.py" for i in range(n)],
         "language": "python", "content": [f"x = {i}\n" for i in range(n)], "size_bytes": 6,
         "content_sha256": [f"{i}" for i in range(n)], "source": "test"},
        columns=storage.DOC_COLUMNS,
    )
    excl = pd.DataFrame(columns=storage.EXCLUSION_COLUMNS)
    return write_stage_outputs("crawl", df, excl, str(tmp_path / "in"), 7, {"docs": n}, {})


def test_split_deterministic_and_order_independent(tmp_path):
    inp = _manifest_with_docs(tmp_path, 200)
    a = split_heldout(inp, 0.1, 3, str(tmp_path / "a"))
    b = split_heldout(inp, 0.1, 3, str(tmp_path / "b"))
    held_a = set(storage.read_shards(a.shard_uris("heldout")).doc_id)
    train_a = set(storage.read_shards(a.shard_uris("train")).doc_id)
    assert held_a == set(storage.read_shards(b.shard_uris("heldout")).doc_id) and a.digest == b.digest
    assert not held_a & train_a and len(held_a | train_a) == 200
    assert 5 <= len(held_a) <= 40  # ~10% of 200
    assert a.uris["docs"] == a.uris["train"]
    assert a.counts["docs"] + a.counts["heldout"] == 200

    # order independence: a reversed input gives the same held-out docs
    docs = storage.read_shards(inp.shard_uris("docs")).iloc[::-1]
    rev = write_stage_outputs("crawl", docs, pd.DataFrame(columns=storage.EXCLUSION_COLUMNS),
                              str(tmp_path / "rev"), 50, {}, {})
    c = split_heldout(rev, 0.1, 3, str(tmp_path / "c"))
    assert set(storage.read_shards(c.shard_uris("heldout")).doc_id) == held_a
    # another seed gives another split
    d = split_heldout(inp, 0.1, 4, str(tmp_path / "d"))
    assert set(storage.read_shards(d.shard_uris("heldout")).doc_id) != held_a


def test_split_at_least_one_heldout(tmp_path):
    inp = _manifest_with_docs(tmp_path, 2)
    m = split_heldout(inp, 0.001, 1, str(tmp_path / "s"))
    assert m.counts["heldout"] == 1 and m.counts["docs"] == 1
    m0 = split_heldout(inp, 0.0, 1, str(tmp_path / "s0"))
    assert m0.counts["heldout"] == 0 and m0.counts["docs"] == 2
