"""Crawl sources against real servers: git remotes served by `git daemon` on 127.0.0.1, object storage on a moto S3
server (snowcoder.stack, S3 only), dumps in The Stack's schema (parquet, jsonl, jsonl.gz) with malformed rows; spec
syntax and source lists. Every input must end up in the docs or in the exclusions with the right reason."""
from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import time
import types
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from snowcoder import storage
from snowcoder.config import DataConfig, UserError
from snowcoder.manifest import Manifest
from tasks import sources as S
from tasks.crawl import crawl

GOOD = "def add(a, b):\n    return a + b\n"


def _outputs(m: Manifest) -> tuple[pd.DataFrame, pd.DataFrame]:
    return storage.read_shards(m.shard_uris("docs")), storage.read_shards(m.shard_uris("exclusions"))


def _write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)


def _wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


# --------------------------------------------------------------------------------------------------------------------
# Spec syntax and source lists
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "spec, kind, target, ref",
    [
        ("embedded:python", "embedded", "embedded:python", None),
        ("/data/code", "local", "/data/code", None),
        ("git+https://github.com/o/r.git", "git", "https://github.com/o/r.git", None),
        ("git+https://github.com/o/r.git@v1.2", "git", "https://github.com/o/r.git", "v1.2"),
        ("git+ssh://git@host.org/o/r.git@main", "git", "ssh://git@host.org/o/r.git", "main"),
        ("git://127.0.0.1:9418/repo-a", "git", "git://127.0.0.1:9418/repo-a", None),
        ("https://gitlab.com/o/r.git", "git", "https://gitlab.com/o/r.git", None),
        ("git@github.com:o/r.git", "git", "git@github.com:o/r.git", None),
        ("git@github.com:o/r.git@dev", "git", "git@github.com:o/r.git", "dev"),
        ("git+file:///srv/repos/x", "git", "file:///srv/repos/x", None),
        ("s3://bucket/prefix/", "fsspec", "s3://bucket/prefix/", None),
        ("gcs://bucket/p", "fsspec", "gcs://bucket/p", None),
        ("s3://bucket/stack/*.parquet", "dump", "s3://bucket/stack/*.parquet", None),
        ("/dumps/python.jsonl.gz", "dump", "/dumps/python.jsonl.gz", None),
        ("dump+s3://bucket/export.bin", "dump", "s3://bucket/export.bin", None),
        ("https://example.org/data.jsonl", "dump", "https://example.org/data.jsonl", None),
    ],
)
def test_parse_spec(spec, kind, target, ref):
    parsed = S.parse_spec(spec)
    assert (parsed.kind, parsed.target, parsed.ref, parsed.uri) == (kind, target, ref, spec)


def test_git_repo_names():
    names = {s: S.git_repo_name(S.parse_spec(s)) for s in
             ["git+https://github.com/o/r.git@v1", "git://h:1/repo-a.git", "git@github.com:o/r.git",
              "git+file:///srv/x/y/proj", "https://gitlab.com/g/sub/r.git"]}
    assert list(names.values()) == ["o/r", "repo-a", "o/r", "proj", "g/sub/r"]


def test_source_lists_text_and_yaml(tmp_path):
    (tmp_path / "code").mkdir()
    text = tmp_path / "sources.txt"
    text.write_text("# my sources\n\ncode   # a relative directory\ngit+https://h/o/r.git@v2\n  s3://b/p/\n")
    specs = S.load_source_list(str(text))
    assert [(s.kind, s.target, s.ref) for s in specs] == [
        ("local", str(tmp_path / "code"), None), ("git", "https://h/o/r.git", "v2"), ("fsspec", "s3://b/p/", None)]
    assert specs[0].uri == str(tmp_path / "code")  # relative to the list, recorded absolute

    yml = tmp_path / "sources.yaml"
    yml.write_text("sources:\n  - data/*.jsonl\n  - uri: s3://b/github/\n    repo_depth: 2\n"
                   "  - {uri: x.parquet, columns: {content: text, repo: [project, repo]}}\n")
    a, b, c = S.load_source_list(str(yml))
    assert (a.kind, a.target) == ("dump", str(tmp_path / "data" / "*.jsonl"))
    assert (b.kind, b.repo_depth) == ("fsspec", 2)
    assert c.column_candidates(DataConfig())["content"] == ["text"]
    assert c.column_candidates(DataConfig())["repo"] == ["project", "repo"]

    cfg = DataConfig(source_list=str(text))
    assert cfg.sources == []  # a source list alone does not also crawl the embedded default
    assert len(S.resolve_sources(cfg)) == 3
    both = DataConfig(sources=["embedded:python"], source_list=str(text))
    assert [s.uri for s in S.resolve_sources(both)][0] == "embedded:python"

    bad = tmp_path / "bad.yaml"
    bad.write_text("- {uri: x, depth: 3}\n")
    with pytest.raises(UserError, match="only ref, repo_depth"):
        S.load_source_list(str(bad))
    with pytest.raises(UserError, match="cannot be read"):
        S.load_source_list(str(tmp_path / "nope.txt"))
    with pytest.raises(UserError, match="does not exist"):
        S.check_sources(DataConfig(sources=[str(tmp_path / "missing")]))
    assert S.source_list_digest(cfg) != S.source_list_digest(DataConfig(source_list=str(yml)))


# --------------------------------------------------------------------------------------------------------------------
# git remotes: a real `git daemon` on 127.0.0.1
# --------------------------------------------------------------------------------------------------------------------
def _git(*args: str, cwd: Path) -> str:
    proc = subprocess.run(["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", *args], cwd=cwd,
                          check=True, capture_output=True, text=True)
    return proc.stdout.strip()


def _make_repo(work: Path, files: dict[str, str | bytes], links: dict[str, str] | None = None) -> None:
    for rel, data in files.items():
        _write(work / rel, data)
    for rel, target in (links or {}).items():
        os.symlink(target, work / rel)
    _git("init", "-q", "-b", "main", ".", cwd=work)
    _git("add", "-A", cwd=work)
    _git("commit", "-q", "-m", "init", cwd=work)


@pytest.fixture(scope="module")
def git_server(tmp_path_factory):
    """Two repositories served read-only by `git daemon`: repo-a (main), repo-b (main + a `dev` branch)."""
    from snowcoder.stack import free_ports

    base = tmp_path_factory.mktemp("git")
    served = base / "served"
    a, b = base / "work" / "repo-a", base / "work" / "repo-b"
    _make_repo(a, {"a.py": GOOD, "pkg/b.py": GOOD + "# b\n", "bin.py": b"\x00\x01\x02", "README.md": "# A\n"},
               links={"leak.py": "/etc/passwd"})  # a symlink leaving the repository
    _make_repo(b, {"main.py": "print('main')\n"})
    _git("checkout", "-q", "-b", "dev", cwd=b)
    _write(b / "dev.py", "print('dev')\n")
    _git("add", "-A", cwd=b)
    _git("commit", "-q", "-m", "dev", cwd=b)
    _git("checkout", "-q", "main", cwd=b)
    heads = {}
    for work in (a, b):
        _git("clone", "-q", "--bare", str(work), str(served / f"{work.name}.git"), cwd=base)
        heads[work.name] = {br: _git("rev-parse", br, cwd=work) for br in (["main", "dev"] if work == b else ["main"])}
    port = free_ports(1)[0]
    proc = subprocess.Popen(["git", "daemon", f"--base-path={served}", "--export-all", f"--port={port}",
                             "--reuseaddr", "--listen=127.0.0.1", str(served)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port)
        yield types.SimpleNamespace(url=f"git://127.0.0.1:{port}", heads=heads, port=port, served=served)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_git_remotes(git_server, tmp_path):
    url, heads = git_server.url, git_server.heads
    cache = tmp_path / "clones"
    cfg = DataConfig(sources=[f"{url}/repo-a.git", f"git+{url}/repo-b.git@dev", f"{url}/no-such-repo.git"],
                     cache_dir=str(cache), max_files=None, max_files_per_repo=None, git_timeout_s=60)
    m = crawl(cfg, str(tmp_path / "out"))
    docs, excl = _outputs(m)
    assert sorted(zip(docs.repo, docs.path)) == [("repo-a", "a.py"), ("repo-a", "pkg/b.py"),
                                                 ("repo-b", "dev.py"), ("repo-b", "main.py")]
    assert sorted(zip(excl.repo, excl.path, excl.reason)) == [
        ("no-such-repo", "", "clone-failed"), ("repo-a", "bin.py", "binary"), ("repo-a", "leak.py", "symlink-outside")]
    assert "root:" not in "".join(docs.content)  # /etc/passwd was not read through the link
    assert m.stats["git_commits"] == {f"{url}/repo-a.git": heads["repo-a"]["main"],
                                      f"git+{url}/repo-b.git@dev": heads["repo-b"]["dev"]}
    row = docs.set_index("path").loc["dev.py"]
    assert row.source == f"git+{url}/repo-b.git@dev" and row.source_uri == f"{url}/repo-b.git@{heads['repo-b']['dev']}#dev.py"
    assert m.counts["skipped_by_extension"] == 1 and m.counts["source_errors"] == 1  # README.md; the missing remote
    assert m.stats["source_errors"][f"{url}/no-such-repo.git"].startswith("clone-failed: ")
    report = storage.read_json(m.uris["sources"])
    assert [e["commit"] for e in report if e["kind"] == "git"] == [heads["repo-a"]["main"], heads["repo-b"]["dev"], None]
    assert not any(cache.iterdir())  # clones are removed once their batch is done


def test_git_file_remote_and_ref_option(git_server, tmp_path):
    """Any URL `git clone` takes: a file:// remote, with the ref given as a source-list option."""
    lst = tmp_path / "sources.yaml"
    lst.write_text(f"- uri: git+file://{git_server.served}/repo-b.git\n  ref: dev\n")
    m = crawl(DataConfig(source_list=str(lst), cache_dir=str(tmp_path / "c")), str(tmp_path / "out"))
    docs, excl = _outputs(m)
    assert sorted(docs.path) == ["dev.py", "main.py"] and set(docs.repo) == {"repo-b"} and len(excl) == 0
    assert set(docs.source) == {f"git+file://{git_server.served}/repo-b.git@dev"}
    assert list(m.stats["git_commits"].values()) == [git_server.heads["repo-b"]["dev"]]


def test_git_clone_by_commit_and_reuse(git_server, tmp_path):
    sha = git_server.heads["repo-b"]["main"]
    spec = S.parse_spec(f"git+{git_server.url}/repo-b.git@{sha}")
    dest = tmp_path / "clone"
    assert S.clone(spec, dest, timeout=60) == sha
    assert sorted(p.name for p in dest.iterdir() if p.name != ".git") == ["main.py"]
    # a finished clone (marker present) is reused by a resumed crawl: no network needed
    moved = S.SourceSpec(spec.uri, "git", "git://127.0.0.1:1/unreachable.git", ref=sha)
    assert S.clone(moved, dest, timeout=10) == sha
    with pytest.raises(RuntimeError):
        S.clone(moved, dest, timeout=10, reuse=False)
    assert not dest.exists()


# --------------------------------------------------------------------------------------------------------------------
# Object storage: a real moto S3 server
# --------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    from snowcoder import stack

    s3_port, mlflow_port, prefect_port = stack.free_ports(3)
    settings = stack.StackSettings(state_dir=tmp_path_factory.mktemp("stack"), s3_port=s3_port,
                                   mlflow_port=mlflow_port, prefect_port=prefect_port)
    env = stack.up(settings, services=("s3",))
    try:
        yield types.SimpleNamespace(settings=settings, env=env, bucket=settings.runs_bucket)
    finally:
        stack.down(settings, save_s3=False)


@pytest.fixture
def s3(s3_server, monkeypatch):
    """An s3fs filesystem on the moto server, with the AWS_* environment that the crawl's fsspec calls pick up."""
    import s3fs

    for key, value in s3_server.env.items():
        if key.startswith(("AWS_", "FSSPEC_")):
            monkeypatch.setenv(key, value)
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem(key="test", secret="test", client_kwargs={"endpoint_url": s3_server.settings.s3_url})
    yield types.SimpleNamespace(fs=fs, bucket=s3_server.bucket)
    s3fs.S3FileSystem.clear_instance_cache()


def test_object_storage_prefixes_are_repositories(s3, tmp_path):
    root = f"{s3.bucket}/corpus"
    s3.fs.pipe({
        f"{root}/alpha/src/a.py": GOOD.encode(),
        f"{root}/alpha/b.py": (GOOD + "# b\n").encode(),
        f"{root}/alpha/bin.py": b"\x00\x01",
        f"{root}/alpha/big.py": b"x = 1\n" * 200,  # 1200 bytes > max_file_bytes: too-large from the listing size
        f"{root}/alpha/empty.py": b"",
        f"{root}/alpha/latin1.py": "s = 'caf\u00e9'\n".encode("latin-1"),
        f"{root}/beta/c.py": (GOOD + "# c\n").encode(),
        f"{root}/beta/notes.txt": b"not code",
        f"{root}/beta/.git/hook.py": GOOD.encode(),  # hidden directories are never crawled
        f"{root}/top.py": (GOOD + "# top\n").encode(),
        f"{s3.bucket}/github/owner1/proj/x.py": GOOD.encode(),
        f"{s3.bucket}/github/owner2/lib/y.py": (GOOD + "# y\n").encode(),
    })
    lst = tmp_path / "sources.yaml"
    lst.write_text(f"- s3://{root}/\n- uri: s3://{s3.bucket}/github/\n  repo_depth: 2\n- s3://no-such-bucket/x/\n")
    cfg = DataConfig(source_list=str(lst), max_file_bytes=1000, max_files=None, max_files_per_repo=None)
    out = f"s3://{s3.bucket}/runs/crawl"  # the outputs (and the resume work directory) on S3 too
    m = crawl(cfg, out)
    docs, excl = _outputs(m)
    assert sorted(zip(docs.repo, docs.path)) == [
        ("alpha", "b.py"), ("alpha", "src/a.py"), ("beta", "c.py"), ("corpus", "top.py"),
        ("owner1/proj", "x.py"), ("owner2/lib", "y.py")]
    assert sorted(zip(excl.repo, excl.path, excl.reason)) == [
        ("alpha", "big.py", "too-large"), ("alpha", "bin.py", "binary"), ("alpha", "empty.py", "empty"),
        ("alpha", "latin1.py", "not-utf8"), ("x", "", "list-failed")]
    assert excl.set_index("path").loc["big.py", "size_bytes"] == 1200
    row = docs.set_index("path").loc["src/a.py"]
    assert row.content == GOOD and row.source == f"s3://{root}/" and row.source_uri == f"s3://{root}/alpha/src/a.py"
    assert m.counts["skipped_by_extension"] == 1
    assert m.uris["docs"][0].startswith(f"s3://{s3.bucket}/runs/crawl/docs-")
    assert not s3.fs.exists(f"{s3.bucket}/runs/crawl/_crawl")  # the work directory is removed at the end


def test_dump_on_object_storage(s3, tmp_path):
    table = pa.table({"content": [GOOD, "x = 1\n"], "max_stars_repo_path": ["a.py", "b.py"],
                      "max_stars_repo_name": ["o/r", "o/s"], "max_stars_repo_licenses": [["MIT"], ["Apache-2.0"]]})
    for i in range(2):
        with s3.fs.open(f"{s3.bucket}/dumps/part-{i}.parquet", "wb") as fh:
            pq.write_table(table, fh)
    m = crawl(DataConfig(sources=[f"s3://{s3.bucket}/dumps/*.parquet"]), str(tmp_path / "out"))
    docs, excl = _outputs(m)
    assert sorted(zip(docs.repo, docs.path, docs.license)) == [("o/r", "a.py", "MIT"), ("o/s", "b.py", "Apache-2.0")]
    assert sorted(zip(excl.reason, excl.path)) == [("duplicate-path", "a.py#part-1:0"), ("duplicate-path", "b.py#part-1:1")]
    assert docs.source_uri.tolist()[0] == f"s3://{s3.bucket}/dumps/part-0.parquet#row=0"


# --------------------------------------------------------------------------------------------------------------------
# Dumps in The Stack's schema
# --------------------------------------------------------------------------------------------------------------------
def test_parquet_dump_stack_v1_schema(tmp_path):
    """The Stack v1 columns; a binary content column lets rows carry undecodable bytes and NULs."""
    rows = [
        ("o/r", "src/a.py", GOOD.encode(), ["MIT"], "Python"),
        ("o/r", "src/b.py", None, ["MIT"], "Python"),  # null content
        ("o/r", None, b"x = 1\n", [], "Python"),  # null path
        ("o/s", "c.py", b"caf\xe9 = 1\n", None, "Python"),  # not utf-8
        ("o/s", "d.py", b"\x00\x01", None, "Python"),  # binary
        ("o/s", "e.py", b"", None, "Python"),  # empty
        (None, "f.py", b"y = 2\n", ["BSD-3-Clause", "MIT"], "Python"),  # no repository: the file's stem
        ("o/s", "g.java", b"class G {}\n", None, "Java"),  # another extension: counted, not read
        ("o/s", "big.py", b"z = 3\n" * 300, None, "Python"),  # too large
    ]
    table = pa.table({
        "hexsha": [f"{i:040x}" for i in range(len(rows))],
        "max_stars_repo_name": [r[0] for r in rows], "max_stars_repo_path": [r[1] for r in rows],
        "content": pa.array([r[2] for r in rows], type=pa.binary()),
        "max_stars_repo_licenses": pa.array([r[3] for r in rows], type=pa.list_(pa.string())),
        "lang": [r[4] for r in rows],
    })
    dump = tmp_path / "the-stack-python.parquet"
    pq.write_table(table, dump, row_group_size=3)
    m = crawl(DataConfig(sources=[str(dump)], max_file_bytes=1000), str(tmp_path / "out"))
    docs, excl = _outputs(m)
    assert sorted(zip(docs.repo, docs.path, docs.license, docs.language)) == [
        ("o/r", "src/a.py", "MIT", "python"), ("the-stack-python", "f.py", "BSD-3-Clause, MIT", "python")]
    assert sorted(zip(excl.repo, excl.path, excl.reason)) == [
        ("o/r", "src/b.py", "missing-content"), ("o/r", "the-stack-python#2", "missing-path"),
        ("o/s", "big.py", "too-large"), ("o/s", "c.py", "not-utf8"), ("o/s", "d.py", "binary"), ("o/s", "e.py", "empty")]
    assert m.counts["files_seen"] == 8 and m.counts["skipped_by_extension"] == 1

    # a dump without any content column is a user mistake, named clearly
    pq.write_table(pa.table({"path": ["a.py"], "body": ["x"]}), tmp_path / "odd.parquet")
    with pytest.raises(UserError, match="no content column .*dump_columns"):
        crawl(DataConfig(sources=[str(tmp_path / "odd.parquet")]), str(tmp_path / "o2"))
    # ... which a column mapping fixes
    m2 = crawl(DataConfig(sources=[str(tmp_path / "odd.parquet")], dump_columns={"content": ["body"]}),
               str(tmp_path / "o3"))
    assert _outputs(m2)[0].content.tolist() == ["x"]


def test_jsonl_gz_dump_malformed_rows(tmp_path):
    """Stack-v2-like jsonl.gz rows, with every kind of malformed row; each ends up in docs or exclusions."""
    lines = [
        json.dumps({"repo_name": "o/r", "path": "a.py", "content": GOOD, "detected_licenses": ["MIT"],
                    "language": "Python"}),
        "{not json",  # malformed-json
        json.dumps(["a", "list"]),  # not an object: malformed-json
        json.dumps({"repo_name": "o/r", "path": "b.py"}),  # no content key
        json.dumps({"repo_name": "o/r", "path": "c.py", "content": None}),  # null content
        json.dumps({"repo_name": "o/r", "path": "d.py", "content": 42}),  # not a string
        json.dumps({"repo_name": "o/r", "path": "e.py", "content": ["x"]}),  # not a string
        json.dumps({"repo_name": "o/r", "path": 7, "content": "x = 1\n"}),  # path not a string
        json.dumps({"repo_name": "o/r", "path": "a.py", "content": "again = 1\n"}),  # same repo + path again
        json.dumps({"repo_name": "o/r", "path": "s.py", "content": "bad = '\ud800'\n"}),  # lone surrogate
        json.dumps({"repo_name": "o/t", "path": "nul.py", "content": "a\u0000b"}),  # NUL: binary
        json.dumps({"repo_name": "o/t", "path": "ok.py", "content": "print(1)\n", "license_type": "permissive"}),
        "",  # blank lines are not rows
    ]
    dump = tmp_path / "v2.jsonl.gz"
    dump.write_bytes(gzip.compress("\n".join(lines).encode()))
    m = crawl(DataConfig(sources=[str(dump)]), str(tmp_path / "out"))
    docs, excl = _outputs(m)
    assert sorted(zip(docs.repo, docs.path, docs.license)) == [("o/r", "a.py", "MIT"), ("o/t", "ok.py", "permissive")]
    assert docs.set_index("path").loc["a.py", "content"] == GOOD
    assert sorted(zip(excl.path, excl.reason)) == [
        ("a.py#v2:8", "duplicate-path"), ("b.py", "missing-content"), ("c.py", "missing-content"),
        ("d.py", "non-string-content"), ("e.py", "non-string-content"), ("nul.py", "binary"), ("s.py", "not-utf8"),
        ("v2#1", "malformed-json"), ("v2#2", "malformed-json"), ("v2#7", "missing-path")]
    assert m.counts["files_seen"] == 12  # every non-blank line


def test_jsonl_dump_column_mapping(tmp_path):
    dump = tmp_path / "custom.jsonl"
    dump.write_text("\n".join(json.dumps(r) for r in [
        {"project": "p1", "file": "m.py", "text": "a = 1\n"},
        {"project": "p2", "file": "n.py", "text": "b = 2\n"},
    ]) + "\n")
    lst = tmp_path / "list.yaml"
    lst.write_text("- uri: custom.jsonl\n  columns: {content: text, path: file, repo: project}\n")
    m = crawl(DataConfig(source_list=str(lst)), str(tmp_path / "out"))
    docs, excl = _outputs(m)
    assert sorted(zip(docs.repo, docs.path, docs.content)) == [("p1", "m.py", "a = 1\n"), ("p2", "n.py", "b = 2\n")]
    assert len(excl) == 0 and set(docs.source) == {str(dump)}
    with pytest.raises(UserError, match="no row has a content field"):
        crawl(DataConfig(sources=[str(dump)], dump_columns={"path": ["file"], "content": ["body"]}), str(tmp_path / "o2"))


def test_every_source_type_in_one_crawl_resumes(git_server, tmp_path, monkeypatch):
    """A crawl of a directory, a git remote and a dump together, killed after its first batch and run again, gives
    the outputs of an uninterrupted crawl."""
    from tasks import crawl as crawl_mod

    local = tmp_path / "local"
    for r in range(3):
        _write(local / f"r{r}" / "m.py", f"x = {r}\n")
    dump = tmp_path / "d.jsonl"
    dump.write_text("\n".join(json.dumps({"repo_name": f"o/{i % 2}", "path": f"f{i}.py", "content": f"v = {i}\n"})
                              for i in range(5)) + "\n{bad\n")
    cfg = DataConfig(sources=[str(local), f"{git_server.url}/repo-a.git", str(dump)], cache_dir=str(tmp_path / "c"),
                     max_files=None, max_files_per_repo=None)
    monkeypatch.setattr(crawl_mod, "BATCH_FILES", 1)
    full = crawl(cfg, str(tmp_path / "full"))

    def crash(done, total):
        if done == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(crawl_mod, "AFTER_BATCH", crash)
    with pytest.raises(KeyboardInterrupt):
        crawl(cfg, str(tmp_path / "out"))
    monkeypatch.setattr(crawl_mod, "AFTER_BATCH", None)
    resumed = crawl(cfg, str(tmp_path / "out"))
    assert resumed.counts["batches_resumed"] == 2 and resumed.counts["batches"] == full.counts["batches"] == 5
    assert resumed.digest == full.digest
    for key in ("docs", "exclusions"):
        a = storage.read_shards(full.shard_uris(key))
        b = storage.read_shards(resumed.shard_uris(key))
        pd.testing.assert_frame_equal(a, b)
    assert set(storage.read_shards(full.shard_uris("docs")).source) == {str(local), f"{git_server.url}/repo-a.git",
                                                                      str(dump)}
