"""Crawl (every file seen is kept or excluded with a reason; caps; a hostile corpus; resume after a kill), language
detection, held-out split. Source types against real servers: tests/test_sources.py."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from snowcoder import storage
from snowcoder.config import DataConfig, UserError
from snowcoder.manifest import Manifest
from tasks import sources as sources_mod
from tasks import crawl as crawl_mod
from tasks.crawl import DOC_EXTRA_COLUMNS, crawl, write_stage_outputs
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
    assert list(docs.columns) == storage.DOC_COLUMNS + DOC_EXTRA_COLUMNS

    assert m.counts["files_seen"] == 9 and m.counts["docs"] == 4 and m.counts["excluded"] == 5
    assert m.counts["skipped_by_cap"] == 0 and m.counts["repos"] == 3
    assert m.counts["bytes"] == docs.size_bytes.sum()
    assert m.stats["excluded_by_reason"] == {"binary": 1, "empty": 1, "not-utf8": 1, "too-large": 1, "unreadable": 1}
    assert len(m.shard_uris("docs")) == 2  # shard_docs=2

    row = docs.set_index("path").loc["good.py"]
    assert row.content == GOOD and row.language == "python" and row.source == str(tree)
    assert row.doc_id == hashlib.sha1(f"{tree}:repoA:good.py".encode()).hexdigest()[:16]
    assert row.content_sha256 == hashlib.sha256(GOOD.encode()).hexdigest()
    assert row.source_uri == f"file://{tree}/repoA/good.py" and pd.isna(row.license)
    assert not (tmp_path / "out" / crawl_mod.WORK_DIR).exists()  # the work directory is gone once outputs exist
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

    monkeypatch.setattr(sources_mod, "open", fake_open, raising=False)
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


# --------------------------------------------------------------------------- a hostile corpus
def test_hostile_corpus_every_file_accounted_for(tmp_path, monkeypatch):
    """Binary, undecodable, huge single-line, symlink loops, symlinks leaving the source, a FIFO, unreadable and
    empty files: no crash, no endless walk, every file in the docs or the exclusions with its reason."""
    src, outside = tmp_path / "src", tmp_path / "outside"
    _write(outside / "secret.py", "KEY = 'not yours'\n")
    _write(outside / "pkg" / "lib.py", GOOD)
    r = src / "repo"
    _write(r / "ok.py", GOOD)
    _write(r / "bin.py", b"\x7fELF\x00\x00\x01")
    _write(r / "cp1252.py", b"s = '\x93quoted\x94'\n")
    _write(r / "one_line.py", "x = '" + "a" * 200_000 + "'\n")  # 200 KB on one line: kept, the filters judge it
    _write(r / "huge_line.py", "y = '" + "b" * 1_100_000 + "'\n")  # over max_file_bytes: too-large, never read
    _write(r / "empty.py", b"")
    _write(r / "locked.py", GOOD + "# locked\n")
    _write(r / "sub" / "deep.py", GOOD + "# deep\n")
    os.symlink(r, r / "sub" / "loop")  # directory loop: not descended
    os.symlink("..", r / "sub" / "up")  # another loop, relative
    os.symlink(r / "ok.py", r / "alias.py")  # a link inside the source: read like a file
    os.symlink(outside / "secret.py", r / "leak.py")  # a link leaving the source: excluded, not read
    os.symlink(outside / "pkg", r / "vendored")  # a directory link leaving the source: excluded
    os.symlink(r / "a_loop.py", r / "b_loop.py")  # a file link loop: unreadable
    os.symlink(r / "b_loop.py", r / "a_loop.py")
    os.symlink(r / "gone.py", r / "dangling.py")
    os.mkfifo(r / "pipe.py")  # not a regular file: unreadable (and no blocking open)
    real_open = open

    def fake_open(path, *args, **kwargs):
        if str(path).endswith("locked.py"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(sources_mod, "open", fake_open, raising=False)
    cfg = DataConfig(sources=[str(src)], max_files=None, max_files_per_repo=None)
    m = crawl(cfg, str(tmp_path / "out"))
    docs, excl = _outputs(m)
    assert set(docs.path) == {"ok.py", "one_line.py", "sub/deep.py", "alias.py"}
    assert dict(zip(excl.path, excl.reason)) == {
        "bin.py": "binary", "cp1252.py": "not-utf8", "huge_line.py": "too-large", "empty.py": "empty",
        "locked.py": "unreadable", "leak.py": "symlink-outside", "vendored": "symlink-outside",
        "a_loop.py": "unreadable", "b_loop.py": "unreadable", "dangling.py": "unreadable", "pipe.py": "unreadable",
    }
    assert excl.set_index("path").loc["huge_line.py", "size_bytes"] > 1_000_000
    assert docs.set_index("path").loc["one_line.py", "size_bytes"] == 200_007
    assert "not yours" not in "".join(docs.content)
    assert m.counts["files_seen"] == len(docs) + len(excl) == 15


def test_empty_source_among_others_is_counted_all_empty_is_an_error(tmp_path):
    good, empty, other = tmp_path / "good", tmp_path / "empty", tmp_path / "txt"
    _write(good / "a.py", GOOD)
    empty.mkdir()
    _write(other / "r" / "notes.txt", "text only")
    m = crawl(DataConfig(sources=[str(good), str(empty), str(other)]), str(tmp_path / "o1"))
    docs, excl = _outputs(m)
    assert list(docs.path) == ["a.py"]
    assert sorted(zip(excl.source, excl.path, excl.reason)) == [(str(empty), "", "empty-source"),
                                                                (str(other), "", "empty-source")]
    assert m.counts["source_errors"] == 2 and m.counts["skipped_by_extension"] == 1
    assert set(m.stats["source_errors"]) == {str(empty), str(other)}
    with pytest.raises(UserError, match="no data source yielded any file"):
        crawl(DataConfig(sources=[str(empty), str(other)]), str(tmp_path / "o2"))


def test_extensions_star_takes_every_file(tmp_path):
    _write(tmp_path / "r" / "a.py", GOOD)
    _write(tmp_path / "r" / "README", "read me\n")
    _write(tmp_path / "r" / "x.rs", "fn main() {}\n")
    m = crawl(DataConfig(sources=[str(tmp_path / "r")], extensions=["*"]), str(tmp_path / "o"))
    docs, _ = _outputs(m)
    assert [x if isinstance(x, str) else None for x in docs.language] == [None, "python", "rust"]
    assert docs.path.tolist() == ["README", "a.py", "x.rs"]


# --------------------------------------------------------------------------- resume after a crash
def _corpus(root: Path, repos: int = 6, files: int = 3) -> Path:
    for r in range(repos):
        for f in range(files):
            _write(root / f"repo{r}" / f"f{f}.py", f"def f_{r}_{f}():\n    return {r * f}\n")
        _write(root / f"repo{r}" / "bad.py", b"\x00binary")
    return root


def _same_outputs(a: Manifest, b: Manifest) -> None:
    da, xa = _outputs(a)
    db, xb = _outputs(b)
    assert a.digest == b.digest
    pd.testing.assert_frame_equal(da, db)
    pd.testing.assert_frame_equal(xa, xb)
    assert [Path(u).name for u in a.shard_uris("docs")] == [Path(u).name for u in b.shard_uris("docs")]


def test_resume_after_an_exception_skips_finished_batches(tmp_path, monkeypatch):
    src = _corpus(tmp_path / "src")
    cfg = DataConfig(sources=[str(src)], max_files=None, max_files_per_repo=None, shard_docs=5)
    monkeypatch.setattr(crawl_mod, "BATCH_FILES", 4)  # one repository (3 files + 1 exclusion) per batch
    full = crawl(cfg, str(tmp_path / "full"))
    assert full.counts["batches"] == 6 and full.counts["batches_resumed"] == 0

    def crash(done: int, total: int) -> None:
        if done == 2:
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(crawl_mod, "AFTER_BATCH", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        crawl(cfg, str(tmp_path / "out"))
    work = tmp_path / "out" / crawl_mod.WORK_DIR
    assert len(list(work.glob("*/batches/*.arrow"))) == 2
    read = []
    monkeypatch.setattr(crawl_mod, "AFTER_BATCH", lambda done, total: read.append(total))
    resumed = crawl(cfg, str(tmp_path / "out"))
    assert resumed.counts["batches_resumed"] == 2 and read == [4] * 4  # only the 4 unfinished batches were read
    _same_outputs(full, resumed)
    assert not work.exists()

    # other settings do not resume from that work directory: the stale one is dropped
    monkeypatch.setattr(crawl_mod, "AFTER_BATCH", crash)
    with pytest.raises(RuntimeError):
        crawl(cfg, str(tmp_path / "out2"))
    monkeypatch.setattr(crawl_mod, "AFTER_BATCH", None)
    other = crawl(cfg.model_copy(update={"max_files_per_repo": 2}), str(tmp_path / "out2"))
    assert other.counts["batches_resumed"] == 0 and other.counts["docs"] == 12


_KILLER = """
import os, signal, sys
sys.path.insert(0, {root!r})
from snowcoder.config import DataConfig
import tasks.crawl as c
c.BATCH_FILES = 4
c.AFTER_BATCH = lambda done, total: os.kill(os.getpid(), signal.SIGKILL) if done == 3 else None
c.crawl(DataConfig.model_validate_json({cfg!r}), {out!r})
"""


def test_resume_after_sigkill_equals_uninterrupted(tmp_path, monkeypatch):
    src = _corpus(tmp_path / "src", repos=5)
    cfg = DataConfig(sources=[str(src)], max_files=None, max_files_per_repo=None, shard_docs=4)
    out = tmp_path / "out"
    script = _KILLER.format(root=str(Path(__file__).resolve().parents[1]), cfg=cfg.model_dump_json(), out=str(out))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert len(list((out / crawl_mod.WORK_DIR).glob("*/batches/*.arrow"))) == 3
    assert not list(out.glob("docs-*.parquet"))  # killed before the merge

    monkeypatch.setattr(crawl_mod, "BATCH_FILES", 4)
    resumed = crawl(cfg, str(out))
    full = crawl(cfg, str(tmp_path / "full"))
    assert resumed.counts["batches_resumed"] == 3 and resumed.counts["batches"] == 5
    _same_outputs(full, resumed)


def test_make_batches_never_splits_a_unit():
    from tasks.sources import Item, RepoListing

    def repo(source, name, n, part=0, kind="local"):
        return RepoListing(source, name, kind, {}, items=[Item(f"f{i}", "") for i in range(n)], part=part)

    repos = [repo("s2", "b", 3), repo("s1", "z", 1), repo("s1", "a", 3), repo("s1", "a", 2), repo("s1", "c", 9),
             repo("d", "x", 5, part=0, kind="dump"), repo("d", "y", 5, part=0, kind="dump"),
             repo("d", "x", 1, part=1, kind="dump"), RepoListing("s1", "nothing", "local", {})]
    batches = crawl_mod.make_batches(repos, batch_files=3)
    assert batches == [[5, 6], [7], [2, 3], [4], [1], [0]]
    assert crawl_mod.make_batches(repos, batch_files=100) == [[5, 6], [7], [2, 3, 4, 1], [0]]


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
