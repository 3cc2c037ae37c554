"""Crawl sources: where code comes from, listed as repositories of files, then read into text.

Nobody ships a code crawler (shared/reference/data-curation.md §1: every framework starts from files it is handed;
The Stack v1 came from cloning GitHub repositories, v2 from Software Heritage), so this module reads the inputs a
user can point the data phase at. A *source spec* (an entry of `data.sources`, or a line of `data.source_list`) is:

  embedded:python                       the running interpreter's stdlib + site-packages (see `_embedded_repos`)
  /some/dir  ./dir  file:///some/dir    a local directory: each sub-directory one repository (top-level files one
                                        more, named after the directory; no sub-directories: the directory itself)
  git+https://host/owner/repo.git[@ref] a git remote, anything `git clone` takes: git+https://, git+ssh://,
  git+file:///path  git://host/repo     git+file://, git://, an https URL ending in .git, or scp-like
  https://host/o/r.git  git@host:o/r    `git@host:o/r.git`. Shallow clone (--depth 1) of the default branch or of
                                        `@ref` (branch, tag or full commit SHA); one repository per remote, named
                                        after the URL's path ("o/r"); the commit SHA is recorded.
  s3://bucket/prefix/  (any fsspec URL) object storage: each top-level prefix below the URL one repository
                                        (`data.repo_depth` levels: 2 gives "owner/repo"); top-level objects form one
                                        more named after the prefix. Credentials/endpoint from the environment
                                        (AWS_* variables, AWS_ENDPOINT_URL_S3), as for the run root.
  data/*.parquet  x.jsonl  x.jsonl.gz   a dump in The Stack's schema (local or URL; globs expand to every match);
  dump+<uri>                            one row per file; repository, path, license and language from its columns
                                        (`DUMP_COLUMNS`, overridable by `data.dump_columns`).

In a YAML source list an entry may also be a mapping {uri, ref, repo_depth, columns, name} (per-source options).

Listing is cheap and reads no content (object sizes come from the listing; a dump's content column is not read):
each source gives `RepoListing`s holding candidate `Item`s plus what the listing itself already excluded (a symlink
pointing outside the source, a malformed dump row, a remote that failed to clone...). The crawl applies its caps to
the items, then `read_items` turns each chosen item into exactly one `Record`: text, or a reason. Reasons:

  unreadable  too-large  empty  binary (NUL byte)  not-utf8        any source
  symlink-outside                                                  local / git: a symlink leaving the source
  missing                                                          the item vanished between listing and reading
  malformed-json  missing-path  missing-content  non-string-content  duplicate-path        dumps
  clone-failed  list-failed  empty-source                          a whole source (one row, path "")
"""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import posixpath
import re
import shutil
import stat
import subprocess
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from snowcoder import storage
from snowcoder.config import DataConfig, UserError

log = logging.getLogger("snowcoder.crawl")

EMBEDDED_PYTHON = "embedded:python"
DUMP_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz", ".json.gz")
# Column names tried in order per field: The Stack v1 (max_stars_repo_*, lang), v2 (repo_name, detected_licenses,
# language), StarCoder data and common jsonl dumps. `data.dump_columns` replaces the list of a field.
DUMP_COLUMNS: dict[str, list[str]] = {
    "content": ["content", "text", "code"],
    "path": ["path", "max_stars_repo_path", "max_forks_repo_path", "max_issues_repo_path", "file_path", "filepath"],
    "repo": ["repository_name", "repo_name", "max_stars_repo_name", "max_forks_repo_name", "max_issues_repo_name",
             "repo", "repository"],
    "license": ["licenses", "max_stars_repo_licenses", "detected_licenses", "license", "license_type"],
    "language": ["lang", "language"],
}
_SKIP_DIRS = {"__pycache__", "node_modules"}
_SKIP_DIR_SUFFIXES = (".dist-info", ".egg-info")
_SCP_LIKE = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9._-]+:(?!//)")
_SHA = re.compile(r"^[0-9a-f]{40}$")


# --------------------------------------------------------------------------------------------------------------------
# Specs
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SourceSpec:
    """One source. `uri` is what the user wrote (the `source` column of its documents); `target` what is opened."""

    uri: str
    kind: str  # embedded | local | git | fsspec | dump
    target: str
    ref: str | None = None
    repo_depth: int | None = None
    columns: tuple[tuple[str, tuple[str, ...]], ...] = ()
    name: str | None = None

    def column_candidates(self, cfg: DataConfig) -> dict[str, list[str]]:
        cols = {k: list(v) for k, v in DUMP_COLUMNS.items()}
        cols.update({k: list(v) for k, v in cfg.dump_columns.items()})
        cols.update({k: list(v) for k, v in self.columns})
        return cols


def _is_dump_name(uri: str) -> bool:
    return uri.split("?", 1)[0].lower().endswith(DUMP_SUFFIXES)


def _split_ref(url: str) -> tuple[str, str | None]:
    """pip-style `url@ref`: the ref is after the last '@' of the path (not the user@ of the host part)."""
    if "://" in url:
        scheme, rest = url.split("://", 1)
        host, slash, path = rest.partition("/")
        if "@" in path:
            path, ref = path.rsplit("@", 1)
            return f"{scheme}://{host}{slash}{path}", ref or None
        return url, None
    head, colon, path = url.partition(":")  # scp-like git@host:o/r.git@ref
    if "@" in path:
        path, ref = path.rsplit("@", 1)
        return f"{head}{colon}{path}", ref or None
    return url, None


def _is_git(uri: str) -> bool:
    if uri.startswith(("git+", "git://")) or _SCP_LIKE.match(uri):
        return True
    if uri.startswith(("https://", "http://", "ssh://")):
        return _split_ref(uri)[0].rstrip("/").endswith(".git")
    return False


def parse_spec(entry: str | dict, base_dir: str | None = None) -> SourceSpec:
    """A SourceSpec from a spec string or a {uri, ref, repo_depth, columns, name} mapping (see the module docstring).

    Relative local paths are taken relative to `base_dir` when given (the directory of a source list)."""
    options: dict[str, Any] = {}
    if isinstance(entry, dict):
        unknown = set(entry) - {"uri", "ref", "repo_depth", "columns", "name"}
        if "uri" not in entry or unknown:
            raise UserError(f"source entry {entry!r}: needs 'uri' and only ref, repo_depth, columns, name besides it")
        options = {k: v for k, v in entry.items() if k != "uri"}
        entry = entry["uri"]
    if not isinstance(entry, str) or not entry.strip():
        raise UserError(f"source entry {entry!r} is not a non-empty string")
    uri = entry.strip()
    columns = tuple(sorted((k, tuple([v] if isinstance(v, str) else v)) for k, v in (options.get("columns") or {}).items()))
    unknown_fields = {k for k, _ in columns} - set(DUMP_COLUMNS)
    if unknown_fields:
        raise UserError(f"source {uri!r}: unknown dump column field(s) {sorted(unknown_fields)}; fields: {', '.join(DUMP_COLUMNS)}")
    common = dict(repo_depth=options.get("repo_depth"), columns=columns, name=options.get("name"))

    if uri.startswith("embedded:"):
        if uri != EMBEDDED_PYTHON:
            raise UserError(f"unknown embedded data source {uri!r}; the only one is {EMBEDDED_PYTHON!r}")
        return SourceSpec(uri, "embedded", uri)
    if uri.startswith("dump+"):
        target = _local_or_url(uri[5:], base_dir)
        return SourceSpec(_listed(uri[5:], target, base_dir, "dump+"), "dump", target, **common)
    if _is_git(uri):
        target, ref = _split_ref(uri[4:] if uri.startswith("git+") else uri)
        if options.get("ref") and ref is None:  # a ref given as an option is part of the source id too
            ref, uri = str(options["ref"]), f"{uri}@{options['ref']}"
        return SourceSpec(uri, "git", target, ref=ref, **common)
    if _is_dump_name(uri):
        target = _local_or_url(uri, base_dir)
        return SourceSpec(_listed(uri, target, base_dir), "dump", target, **common)
    if storage.is_remote(uri):
        return SourceSpec(uri, "fsspec", uri, **common)
    path = _local_or_url(uri, base_dir)
    return SourceSpec(_listed(uri, path, base_dir), "local", path, **common)


def _listed(uri: str, target: str, base_dir: str | None, prefix: str = "") -> str:
    """The source id of a spec: as written, except that a relative path in a source list is recorded resolved."""
    if base_dir is None or storage.is_remote(uri) or Path(uri).expanduser().is_absolute():
        return prefix + uri
    return prefix + target


def _local_or_url(uri: str, base_dir: str | None) -> str:
    if storage.is_remote(uri):
        return uri
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    path = Path(uri).expanduser()
    if base_dir is not None and not path.is_absolute() and not storage.is_remote(base_dir):
        path = Path(base_dir) / path
    return str(path)


def load_source_list(uri: str) -> list[SourceSpec]:
    """Specs from a source-list file: YAML (a list, or a mapping with `sources:`) or text (one per line, # comments)."""
    try:
        text = storage.read_text(uri)
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"data.source_list {uri!r} cannot be read: {exc}") from None
    base_dir = uri.rsplit("/", 1)[0] if storage.is_remote(uri) else str(Path(uri).expanduser().resolve().parent)
    entries: list[Any]
    if uri.lower().endswith((".yaml", ".yml")):
        import yaml

        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise UserError(f"data.source_list {uri!r} is not valid YAML: {exc}") from None
        if isinstance(loaded, dict) and "sources" in loaded:
            loaded = loaded["sources"]
        if not isinstance(loaded, list):
            raise UserError(f"data.source_list {uri!r} must hold a YAML list of sources (or a mapping with 'sources:')")
        entries = loaded
    else:
        entries = [line.split(" #", 1)[0].strip() for line in text.splitlines()]
        entries = [e for e in entries if e and not e.startswith("#")]
    return [parse_spec(e, base_dir) for e in entries]


def resolve_sources(cfg: DataConfig) -> list[SourceSpec]:
    """All specs of a crawl: `data.sources`, then the entries of `data.source_list`. UserError when there are none."""
    specs = [parse_spec(s) for s in cfg.sources]
    if cfg.source_list:
        specs += load_source_list(cfg.source_list)
    if not specs:
        raise UserError("data.sources is empty: name at least one source (e.g. 'embedded:python' or a directory), "
                        "or a data.source_list file")
    seen: set[str] = set()
    unique = []
    for spec in specs:  # the same source twice would give every document twice
        if spec.uri not in seen:
            seen.add(spec.uri)
            unique.append(spec)
    return unique


def check_sources(cfg: DataConfig) -> list[SourceSpec]:
    """Preflight (no network): the specs parse, local directories and dump files exist. Returns the specs."""
    specs = resolve_sources(cfg)
    for spec in specs:
        if spec.kind == "local" and not Path(spec.target).is_dir():
            what = "is not a directory" if Path(spec.target).exists() else "does not exist"
            raise UserError(f"data source {spec.uri!r} {what}")
        if spec.kind == "dump" and not storage.is_remote(spec.target) and not _has_glob(spec.target) \
                and not Path(spec.target).is_file():
            raise UserError(f"data source {spec.uri!r}: dump file {spec.target} does not exist")
    return specs


def source_list_digest(cfg: DataConfig) -> str:
    """Digest of the source-list file's content ('' without one): a changed list must not reuse an earlier crawl."""
    if not cfg.source_list:
        return ""
    try:
        return hashlib.sha256(storage.read_bytes(cfg.source_list)).hexdigest()[:16]
    except OSError:
        return "unreadable"


def _has_glob(path: str) -> bool:
    return any(c in path for c in "*?[")


# --------------------------------------------------------------------------------------------------------------------
# Listings and records
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class Item:
    """A candidate file: `path` relative to its repository (posix), `locator` where to read it, `size` if listed."""

    path: str
    locator: str
    size: int = -1


@dataclass
class RepoListing:
    """One repository of a source, as listed (nothing read yet)."""

    source: str
    name: str
    kind: str
    where: dict[str, Any]  # what the reader needs: a root directory, a clone, a dump's files...
    items: list[Item] = field(default_factory=list)
    excluded: list[tuple[str, str, int]] = field(default_factory=list)  # (path, reason, size): decided by the listing
    commit: str | None = None
    license: str | None = None
    error: str | None = None  # the whole source failed: reason (one exclusion row, path "")
    message: str | None = None  # detail of the error, for the logs and sources.json
    skipped_ext: int = 0  # files with other extensions: counted, not read
    part: int = 0  # a dump's file index (its repositories are read one file at a time)

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "items"}

    @classmethod
    def from_json(cls, d: dict, items: list[Item]) -> "RepoListing":
        d = dict(d)
        d["excluded"] = [tuple(x) for x in d.get("excluded", [])]
        return cls(items=items, **d)


@dataclass(slots=True)
class Record:
    """What reading one item gave: text, or the reason it is excluded."""

    path: str
    content: str | None
    reason: str | None
    size: int
    source_uri: str
    language: str | None = None  # a hint (a dump's `lang`); the crawl detects it from the path first
    license: str | None = None


class Extensions:
    """The `data.extensions` matcher ('*' matches every file)."""

    def __init__(self, extensions: list[str]):
        self.all = "*" in extensions
        self.suffixes = tuple(sorted({(e if e.startswith(".") else "." + e).lower() for e in extensions if e != "*"}))

    def __call__(self, name: str) -> bool:
        return self.all or name.lower().endswith(self.suffixes)

    def __str__(self) -> str:
        return "*" if self.all else ", ".join(self.suffixes)


def keep_dir(name: str) -> bool:
    """Directories never crawled: hidden ones (.git, .github...), __pycache__, node_modules, *.dist-info/*.egg-info."""
    return not (name.startswith(".") or name in _SKIP_DIRS or name.endswith(_SKIP_DIR_SUFFIXES))


def decode(data: bytes, max_file_bytes: int) -> tuple[str | None, str | None]:
    """(text, None) for usable bytes, else (None, reason): too-large, empty, binary (a NUL byte), not-utf8."""
    if len(data) > max_file_bytes:
        return None, "too-large"
    if not data:
        return None, "empty"
    if b"\x00" in data:
        return None, "binary"
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError:
        return None, "not-utf8"


def read_local(path: str, max_file_bytes: int) -> tuple[bytes | None, str | None, int]:
    """(bytes, None, size) of a regular file, else (None, reason, size): unreadable or too-large (not read)."""
    try:
        st = os.stat(path)  # follows symlinks: a broken link raises here
        if not stat.S_ISREG(st.st_mode):
            return None, "unreadable", 0
        if st.st_size > max_file_bytes:
            return None, "too-large", st.st_size
        with open(path, "rb") as fh:
            data = fh.read(max_file_bytes + 1)
    except OSError:
        return None, "unreadable", 0
    return data, None, len(data)


def _record(path: str, data: bytes | None, reason: str | None, size: int, uri: str, cfg: DataConfig) -> Record:
    if reason is None:
        content, reason = decode(data or b"", cfg.max_file_bytes)
        return Record(path, content, reason, size, uri)
    return Record(path, None, reason, size, uri)


# --------------------------------------------------------------------------------------------------------------------
# Local trees (embedded, directories, git clones)
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class _Walk:
    files: list[str] = field(default_factory=list)  # absolute paths, sorted
    excluded: list[tuple[str, str, int]] = field(default_factory=list)  # (absolute path, reason, size)
    skipped_ext: int = 0


def _inside(path: str, boundary: str) -> bool:
    real = os.path.realpath(path)
    return real == boundary or real.startswith(boundary.rstrip(os.sep) + os.sep)


def walk(directory: str, exts: Extensions, boundary: str | None = None, recurse: bool = True) -> _Walk:
    """Matching files under `directory`, sorted. Symlinked directories are never descended (no loops); with a
    `boundary` (the real path of the source), a symlink (file or directory) resolving outside it is excluded
    ('symlink-outside') and a symlinked directory inside it is skipped (its files are walked at their real place)."""
    out = _Walk()
    todo = [directory]
    while todo:
        current = todo.pop()
        try:
            entries = list(os.scandir(current))
        except OSError:
            out.excluded.append((current, "unreadable", 0))
            continue
        for entry in entries:
            try:
                is_link = entry.is_symlink()
                is_dir = entry.is_dir()  # follows a symlink
            except OSError:
                is_link, is_dir = False, False
            if is_dir:
                if not keep_dir(entry.name):
                    continue
                if is_link:
                    if boundary is not None and not _inside(entry.path, boundary):
                        out.excluded.append((entry.path, "symlink-outside", 0))
                    continue
                if recurse:
                    todo.append(entry.path)
                continue
            if not exts(entry.name):
                out.skipped_ext += 1
                continue
            if is_link and boundary is not None and os.path.exists(entry.path) and not _inside(entry.path, boundary):
                out.excluded.append((entry.path, "symlink-outside", 0))
                continue
            out.files.append(entry.path)
    out.files.sort()
    out.excluded.sort()
    return out


def _tree_repo(source: str, name: str, kind: str, root: str, found: _Walk, **extra) -> RepoListing:
    cut = len(root.rstrip(os.sep)) + 1
    rel = lambda p: p[cut:].replace(os.sep, "/")  # noqa: E731  (walk() gives paths under root)
    return RepoListing(
        source, name, kind, {"root": root, **extra.pop("where", {})},
        items=[Item(rel(p), p) for p in found.files],
        excluded=[(rel(p), reason, size) for p, reason, size in found.excluded],
        skipped_ext=found.skipped_ext, **extra,
    )


def _package_repos(source: str, prefix: str, root: Path, exts: Extensions, skip: set[str]) -> list[RepoListing]:
    """One repo per top-level package directory of `root`, plus `prefix` for its top-level module files."""
    repos = [_tree_repo(source, prefix, "embedded", str(root), walk(str(root), exts, recurse=False))]
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and not entry.is_symlink() and keep_dir(entry.name) and entry.name not in skip:
            repos.append(_tree_repo(source, f"{prefix}/{entry.name}", "embedded", str(root), walk(str(entry), exts)))
    return repos


def _embedded_repos(spec: SourceSpec, exts: Extensions) -> list[RepoListing]:
    """The interpreter's own code: `stdlib/<pkg>` per top-level stdlib package, `stdlib` for its top-level modules,
    likewise `site-packages/<pkg>` and `site-packages`. Paths are relative to the stdlib (site-packages) directory."""
    paths = sysconfig.get_paths()
    stdlib, purelib = Path(paths["stdlib"]), Path(paths["purelib"])
    repos = _package_repos(spec.uri, "stdlib", stdlib, exts, skip={"site-packages", "dist-packages"})
    if purelib.is_dir() and purelib.resolve() != stdlib.resolve():
        repos += _package_repos(spec.uri, "site-packages", purelib, exts, skip=set())
    return repos


def _directory_repos(spec: SourceSpec, exts: Extensions) -> list[RepoListing]:
    root = Path(spec.target)
    if not root.is_dir():
        raise UserError(f"data source {spec.uri!r} does not exist or is not a directory")
    boundary = os.path.realpath(root)
    name = spec.name or Path(boundary).name or "root"
    try:
        subdirs = [d for d in sorted(root.iterdir()) if d.is_dir() and keep_dir(d.name)]
    except OSError as exc:
        raise UserError(f"data source {spec.uri!r} cannot be listed: {exc}") from None
    real_subdirs = [d for d in subdirs if not d.is_symlink()]
    if not subdirs:
        return [_tree_repo(spec.uri, name, "local", str(root), walk(str(root), exts, boundary))]
    repos = [_tree_repo(spec.uri, name, "local", str(root), walk(str(root), exts, boundary, recurse=False))]
    for sub in real_subdirs:
        repos.append(_tree_repo(spec.uri, sub.name, "local", str(sub), walk(str(sub), exts, boundary)))
    return repos


def _read_tree(repo: RepoListing, items: list[Item], cfg: DataConfig) -> Iterator[Record]:
    for item in items:
        data, reason, size = read_local(item.locator, cfg.max_file_bytes)
        yield _record(item.path, data, reason, size, "file://" + item.locator, cfg)


# --------------------------------------------------------------------------------------------------------------------
# Git remotes
# --------------------------------------------------------------------------------------------------------------------
def git_repo_name(spec: SourceSpec) -> str:
    """'owner/repo' from https://host/owner/repo.git, 'repo' from git://host/repo or file:///x/y/repo."""
    if spec.name:
        return spec.name
    url = spec.target
    if "://" in url:
        scheme, rest = url.split("://", 1)
        path = rest.partition("/")[2]
        if scheme == "file":
            path = posixpath.basename(path.rstrip("/"))
    else:
        path = url.partition(":")[2]  # scp-like
    path = path.strip("/")
    path = path[:-4] if path.endswith(".git") else path
    return path or "repo"


def clone_dir(cfg: DataConfig, spec: SourceSpec, work_key: str) -> Path:
    base = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else storage.local_cache_dir() / "git"
    tag = hashlib.sha1(f"{spec.target}@{spec.ref}:{work_key}".encode()).hexdigest()[:16]
    return base / f"{re.sub(r'[^A-Za-z0-9._-]+', '-', git_repo_name(spec))[-40:]}-{tag}"


def _git_env() -> dict[str, str]:
    env = dict(os.environ)
    # never wait for a password or a host-key prompt: a remote that wants one fails (and is excluded)
    env.update({"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false", "SSH_ASKPASS": "/bin/false",
                "GIT_SSH_COMMAND": env.get("GIT_SSH_COMMAND", "ssh -o BatchMode=yes"), "GIT_LFS_SKIP_SMUDGE": "1"})
    return env


def _git(args: list[str], timeout: float, cwd: str | None = None) -> str:
    git = shutil.which("git")
    if git is None:
        raise UserError("git remotes are data sources but the `git` executable is not installed")
    proc = subprocess.run([git, *args], cwd=cwd, env=_git_env(), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        raise RuntimeError(lines[-1] if lines else f"git {args[0]} exited with {proc.returncode}")
    return proc.stdout.strip()


_CLONE_DONE = ".snowcoder-clone"  # next to .git in a finished clone: the commit (a killed crawl reuses the clone)


def clone(spec: SourceSpec, dest: Path, timeout: float, reuse: bool = True) -> str:
    """Shallow clone of `spec` into `dest`; returns the commit SHA. A finished clone of an earlier, killed attempt of
    the same crawl is reused (`reuse`); anything else there is replaced. Raises RuntimeError on failure."""
    marker = dest / ".git" / _CLONE_DONE
    if reuse and marker.is_file():
        return marker.read_text().strip()
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        if spec.ref and _SHA.match(spec.ref):  # a commit: fetch just it (the server must allow it)
            _git(["init", "-q", str(dest)], timeout)
            _git(["remote", "add", "origin", spec.target], timeout, cwd=str(dest))
            _git(["fetch", "-q", "--depth", "1", "origin", spec.ref], timeout, cwd=str(dest))
            _git(["checkout", "-q", "FETCH_HEAD"], timeout, cwd=str(dest))
        else:
            branch = ["--branch", spec.ref] if spec.ref else []
            _git(["clone", "-q", "--depth", "1", "--no-tags", *branch, "--", spec.target, str(dest)], timeout)
        commit = _git(["rev-parse", "HEAD"], timeout, cwd=str(dest))
        marker.write_text(commit + "\n")
        return commit
    except subprocess.TimeoutExpired:
        shutil.rmtree(dest, ignore_errors=True)
        raise RuntimeError(f"timed out after {timeout:g} s") from None
    except RuntimeError:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def _git_repos(specs: list[SourceSpec], exts: Extensions, cfg: DataConfig, work_key: str) -> dict[str, list[RepoListing]]:
    """Clone every git remote (io_workers at a time) and list each clone as one repository."""

    def one(spec: SourceSpec) -> list[RepoListing]:
        name, dest = git_repo_name(spec), clone_dir(cfg, spec, work_key)
        where = {"clone": str(dest), "target": spec.target, "ref": spec.ref}
        try:
            commit = clone(spec, dest, cfg.git_timeout_s)
        except RuntimeError as exc:
            log.warning("crawl: git clone of %s failed: %s", spec.target, exc)
            return [RepoListing(spec.uri, name, "git", where, error="clone-failed", message=str(exc))]
        found = walk(str(dest), exts, boundary=os.path.realpath(dest))
        log.info("crawl: cloned %s @ %s (%d files)", spec.target, commit[:12], len(found.files))
        return [_tree_repo(spec.uri, name, "git", str(dest), found, commit=commit, where=where)]

    with ThreadPoolExecutor(max_workers=min(cfg.io_workers, max(len(specs), 1))) as pool:
        return dict(zip([s.uri for s in specs], pool.map(one, specs)))


def _read_git(repo: RepoListing, items: list[Item], cfg: DataConfig, spec: SourceSpec, work_key: str) -> Iterator[Record]:
    """Read a cloned repository; on a resumed crawl whose clone is gone, clone again (the same commit when the remote
    has not moved; otherwise the new one is read and logged)."""
    dest = Path(repo.where["clone"])
    if _safe_head(dest) != repo.commit:
        try:
            commit = clone(spec, dest, cfg.git_timeout_s, reuse=False)
        except RuntimeError as exc:
            log.warning("crawl: re-clone of %s failed: %s", spec.target, exc)
            commit = None
        if commit != repo.commit:
            log.warning("crawl: %s moved from %s to %s since the listing", spec.target, repo.commit, commit)
    for item in items:
        path = dest / item.path
        if not path.exists() and not path.is_symlink():
            yield Record(item.path, None, "missing", 0, f"{spec.target}@{repo.commit}#{item.path}")
            continue
        data, reason, size = read_local(str(path), cfg.max_file_bytes)
        yield _record(item.path, data, reason, size, f"{spec.target}@{repo.commit}#{item.path}", cfg)


def _safe_head(dest: Path) -> str | None:
    try:
        return (dest / ".git" / _CLONE_DONE).read_text().strip()
    except OSError:
        return None


# --------------------------------------------------------------------------------------------------------------------
# Object storage / any fsspec URL
# --------------------------------------------------------------------------------------------------------------------
def _fsspec_repos(spec: SourceSpec, exts: Extensions, cfg: DataConfig) -> list[RepoListing]:
    """Objects under the URL, grouped into repositories by the first `repo_depth` path levels."""
    depth = spec.repo_depth or cfg.repo_depth
    fs, root = storage.fs_for(spec.target)
    root = root.rstrip("/")
    base_name = spec.name or posixpath.basename(root) or root or "root"
    where = {"url": spec.target}
    try:
        listing = fs.find(root, detail=True, withdirs=False)
    except Exception as exc:  # missing bucket, no permission, unreachable endpoint...
        log.warning("crawl: listing %s failed: %s", spec.target, exc)
        return [RepoListing(spec.uri, base_name, "fsspec", where, error="list-failed", message=f"{type(exc).__name__}: {exc}")]
    repos: dict[str, RepoListing] = {}
    for path in sorted(listing):
        info = listing[path]
        if info.get("type") == "directory" or path.endswith("/"):
            continue
        rel = path[len(root) + 1:] if path.startswith(root + "/") else posixpath.basename(path)
        parts = rel.split("/")
        if not all(keep_dir(p) for p in parts[:-1]):
            continue
        name, relpath = (("/".join(parts[:depth]), "/".join(parts[depth:])) if len(parts) > depth
                         else (base_name, rel))
        repo = repos.setdefault(name, RepoListing(spec.uri, name, "fsspec", where))
        if not exts(parts[-1]):
            repo.skipped_ext += 1
            continue
        repo.items.append(Item(relpath, path, int(info.get("size") or 0)))
    return [repos[k] for k in sorted(repos)]


def _read_fsspec(repo: RepoListing, items: list[Item], cfg: DataConfig) -> Iterator[Record]:
    """Objects fetched `io_workers * 8` at a time (fsspec `cat` runs them concurrently on async filesystems)."""
    fs, _ = storage.fs_for(repo.where["url"])
    batch = max(cfg.io_workers * 8, 1)
    for start in range(0, len(items), batch):
        chunk = items[start:start + batch]
        wanted = [it.locator for it in chunk if 0 <= it.size <= cfg.max_file_bytes or it.size < 0]
        try:
            got = fs.cat(wanted, on_error="return") if wanted else {}
        except Exception as exc:  # the whole batch failed (e.g. connection lost): each object is unreadable
            log.warning("crawl: reading %d objects of %s failed: %s", len(wanted), repo.where["url"], exc)
            got = {p: exc for p in wanted}
        if len(wanted) == 1 and not isinstance(got, dict):
            got = {wanted[0]: got}
        for it in chunk:
            uri = fs.unstrip_protocol(it.locator)
            if it.size > cfg.max_file_bytes:
                yield Record(it.path, None, "too-large", it.size, uri)
                continue
            data = got.get(it.locator)
            if data is None:
                data = got.get(fs._strip_protocol(it.locator))
            if isinstance(data, FileNotFoundError):
                yield Record(it.path, None, "missing", 0, uri)
            elif isinstance(data, (bytes, bytearray)):
                yield _record(it.path, bytes(data), None, len(data), uri, cfg)
            else:
                yield Record(it.path, None, "unreadable", 0, uri)


# --------------------------------------------------------------------------------------------------------------------
# Dumps in The Stack's schema (parquet / jsonl / jsonl.gz)
# --------------------------------------------------------------------------------------------------------------------
def _dump_files(spec: SourceSpec) -> list[str]:
    """The dump's file URIs (a glob expands to every match, sorted)."""
    if not _has_glob(spec.target):
        if not storage.is_remote(spec.target) and not Path(spec.target).is_file():
            raise UserError(f"data source {spec.uri!r}: dump file {spec.target} does not exist")
        return [spec.target]
    fs, pattern = storage.fs_for(spec.target)
    matches = sorted(fs.glob(pattern))
    return [fs.unstrip_protocol(m) if storage.is_remote(spec.target) else m for m in matches]


def _open_binary(uri: str):
    fs, path = storage.fs_for(uri)
    fh = fs.open(path, "rb")
    return gzip.open(fh) if uri.lower().endswith(".gz") else fh


def _iter_json_rows(uri: str) -> Iterator[tuple[int, Any]]:
    """(row number, parsed object or a ValueError) per non-blank line."""
    with _open_binary(uri) as fh:
        row = 0
        for line in fh:
            if not line.strip():
                continue
            try:
                yield row, json.loads(line)
            except ValueError as exc:
                yield row, exc
            row += 1


def _first(row: dict, names: list[str]) -> tuple[bool, Any]:
    for name in names:
        if name in row:
            return True, row[name]
    return False, None


def _license(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value or None
    try:
        values = [str(v) for v in list(value) if v is not None]
    except TypeError:
        return str(value)
    return ", ".join(values) or None


def _iter_dump_meta(uri: str, cols: dict[str, list[str]]) -> Iterator[tuple[int, Any, Any, bool]]:
    """(row, repo, path, parse_ok) per row, reading only the path and repo columns of a parquet file."""
    if uri.lower().endswith(".parquet"):
        import pyarrow.parquet as pq

        fs, path = storage.fs_for(uri)
        with fs.open(path, "rb") as fh:
            pf = pq.ParquetFile(fh)
            names = set(pf.schema_arrow.names)
            content = next((c for c in cols["content"] if c in names), None)
            path_col = next((c for c in cols["path"] if c in names), None)
            if content is None or path_col is None:
                missing = "content" if content is None else "path"
                raise UserError(f"dump {uri}: no {missing} column (tried {', '.join(cols[missing])}; the file has "
                                f"{', '.join(sorted(names))}); map it with data.dump_columns")
            repo_col = next((c for c in cols["repo"] if c in names), None)
            wanted = [path_col] + ([repo_col] if repo_col else [])
            row = 0
            for batch in pf.iter_batches(batch_size=8192, columns=wanted):
                paths = batch.column(path_col).to_pylist()
                repos = batch.column(repo_col).to_pylist() if repo_col else [None] * len(paths)
                for p, r in zip(paths, repos):
                    yield row, r, p, True
                    row += 1
        return
    seen_content = seen_rows = False
    for row, obj in _iter_json_rows(uri):
        if not isinstance(obj, dict):
            yield row, None, None, False
            continue
        seen_rows = True
        seen_content = seen_content or _first(obj, cols["content"])[0]
        yield row, _first(obj, cols["repo"])[1], _first(obj, cols["path"])[1], True
    if seen_rows and not seen_content:
        raise UserError(f"dump {uri}: no row has a content field (tried {', '.join(cols['content'])}); map it "
                        "with data.dump_columns")


def _dump_repos(spec: SourceSpec, exts: Extensions, cfg: DataConfig) -> list[RepoListing]:
    """Rows grouped by their repository column (the file's stem when there is none), per dump file (`part`, and
    `where["file"]`). A row's locator is its row number in that file. Rows that cannot be documents are decided here: malformed-json, missing-path,
    duplicate-path (the same repository and path again)."""
    cols = spec.column_candidates(cfg)
    files = _dump_files(spec)
    repos: dict[tuple[int, str], RepoListing] = {}
    seen: set[tuple[str, str]] = set()
    for fi, uri in enumerate(files):
        stem = posixpath.basename(uri.split("?", 1)[0])
        stem = stem[: -len(next(s for s in DUMP_SUFFIXES if stem.lower().endswith(s)))] if _is_dump_name(stem) else stem
        for row, repo_name, path, ok in _iter_dump_meta(uri, cols):
            name = repo_name if isinstance(repo_name, str) and repo_name else (spec.name or stem)
            repo = repos.get((fi, name))
            if repo is None:
                repo = repos[(fi, name)] = RepoListing(spec.uri, name, "dump", {"file": uri}, part=fi)
            if not ok:
                repo.excluded.append((f"{stem}#{row}", "malformed-json", 0))
            elif not isinstance(path, str) or not path:
                repo.excluded.append((f"{stem}#{row}", "missing-path", 0))
            elif not exts(posixpath.basename(path)):
                repo.skipped_ext += 1
            elif (name, path) in seen:
                repo.excluded.append((f"{path}#{stem}:{row}", "duplicate-path", 0))
            else:
                seen.add((name, path))
                repo.items.append(Item(path, str(row)))
    return [repos[k] for k in sorted(repos)]


def _iter_dump_rows(uri: str, cols: dict[str, list[str]], rows: set[int]) -> Iterator[tuple[int, dict]]:
    """(row, {content, license, language, has_content}) for the wanted rows of one dump file, in row order."""
    if uri.lower().endswith(".parquet"):
        import pyarrow.parquet as pq

        fs, path = storage.fs_for(uri)
        with fs.open(path, "rb") as fh:
            pf = pq.ParquetFile(fh)
            names = set(pf.schema_arrow.names)
            picked = {f: next((c for c in cols[f] if c in names), None) for f in ("content", "license", "language")}
            wanted = sorted({c for c in picked.values() if c})
            row = 0
            for batch in pf.iter_batches(batch_size=1024, columns=wanted):
                n = batch.num_rows
                if not any(r in rows for r in range(row, row + n)):
                    row += n
                    continue
                data = {f: batch.column(c).to_pylist() if c else [None] * n for f, c in picked.items()}
                for i in range(n):
                    if row + i in rows:
                        yield row + i, {"has_content": True, **{f: data[f][i] for f in data}}
                row += n
        return
    for row, obj in _iter_json_rows(uri):
        if row in rows and isinstance(obj, dict):
            has, content = _first(obj, cols["content"])
            yield row, {"has_content": has, "content": content, "license": _first(obj, cols["license"])[1],
                        "language": _first(obj, cols["language"])[1]}


def dump_record(path: str, values: dict, uri: str, max_file_bytes: int) -> Record:
    """A dump row as a Record: missing-content (absent or null), non-string-content, or text like a file."""
    content = values.get("content")
    lic = _license(values.get("license"))
    lang = values.get("language")
    lang = lang.lower() if isinstance(lang, str) and lang else None
    if content is None:
        return Record(path, None, "missing-content", 0, uri, lang, lic)
    if isinstance(content, (bytes, bytearray)):
        text, reason = decode(bytes(content), max_file_bytes)
        return Record(path, text, reason, len(content), uri, lang, lic)
    if not isinstance(content, str):
        return Record(path, None, "non-string-content", 0, uri, lang, lic)
    try:
        data = content.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from a JSON "\ud800"
        return Record(path, None, "not-utf8", len(content), uri, lang, lic)
    if len(data) > max_file_bytes:
        return Record(path, None, "too-large", len(data), uri, lang, lic)
    text, reason = decode(data, max_file_bytes)
    return Record(path, text if reason is None else None, reason, len(data), uri, lang, lic)


def _read_dump(spec: SourceSpec, batch: list[tuple[int, RepoListing, list[Item]]], cfg: DataConfig
               ) -> Iterator[tuple[int, Record]]:
    """One pass over each dump file that holds wanted rows (a batch holds the repositories of one file)."""
    cols = spec.column_candidates(cfg)
    wanted: dict[str, dict[int, tuple[int, Item]]] = {}
    for index, repo, items in batch:
        rows = wanted.setdefault(repo.where["file"], {})
        for it in items:
            rows[int(it.locator)] = (index, it)
    for uri, rows in wanted.items():
        for row, values in _iter_dump_rows(uri, cols, set(rows)):
            index, it = rows.pop(row)
            yield index, dump_record(it.path, values, f"{uri}#row={row}", cfg.max_file_bytes)
        for row, (index, it) in sorted(rows.items()):  # rows gone since the listing
            yield index, Record(it.path, None, "missing", 0, f"{uri}#row={row}")


# --------------------------------------------------------------------------------------------------------------------
# Entry points used by the crawl
# --------------------------------------------------------------------------------------------------------------------
def list_sources(specs: list[SourceSpec], cfg: DataConfig, work_key: str) -> list[RepoListing]:
    """Every repository of every source, in spec order (also those without a matching file: they carry the count of
    skipped files). A source that lists nothing gives one 'empty-source' row; git remotes are cloned here
    (concurrently)."""
    exts = Extensions(cfg.extensions)
    git = _git_repos([s for s in specs if s.kind == "git"], exts, cfg, work_key) if any(
        s.kind == "git" for s in specs) else {}
    out: list[RepoListing] = []
    for spec in specs:
        if spec.kind == "embedded":
            repos = _embedded_repos(spec, exts)
        elif spec.kind == "local":
            repos = _directory_repos(spec, exts)
        elif spec.kind == "git":
            repos = git[spec.uri]
        elif spec.kind == "fsspec":
            repos = _fsspec_repos(spec, exts, cfg)
        else:
            repos = _dump_repos(spec, exts, cfg)
        if not any(r.items or r.excluded or r.error for r in repos):
            name = spec.name or (git_repo_name(spec) if spec.kind == "git" else
                                 posixpath.basename(spec.target.rstrip("/")) or spec.target)
            repos = [RepoListing(spec.uri, name, spec.kind, {}, error="empty-source",
                                 message=f"no files with extensions {exts}",
                                 skipped_ext=sum(r.skipped_ext for r in repos))]
            log.warning("crawl: source %s has no files with extensions %s", spec.uri, exts)
        out += repos
    return out


def read_items(spec: SourceSpec, batch: list[tuple[int, RepoListing, list[Item]]], cfg: DataConfig, work_key: str
               ) -> Iterator[tuple[int, Record]]:
    """(repo index, Record) for every item of `batch` (repos of one source), exactly one Record per item. Records of
    one repository come together except for dumps, whose rows are read in file order."""
    if not batch:
        return
    if spec.kind == "dump":
        yield from _read_dump(spec, batch, cfg)
        return
    for index, repo, items in batch:
        if spec.kind == "git":
            records: Iterable[Record] = _read_git(repo, items, cfg, spec, work_key)
        elif spec.kind == "fsspec":
            records = _read_fsspec(repo, items, cfg)
        else:
            records = _read_tree(repo, items, cfg)
        for record in records:
            yield index, record


def release(repo: RepoListing) -> None:
    """Free what a finished repository held (a git clone)."""
    if repo.kind == "git" and repo.where.get("clone"):
        shutil.rmtree(repo.where["clone"], ignore_errors=True)


__all__ = [
    "DUMP_COLUMNS", "EMBEDDED_PYTHON", "Extensions", "Item", "Record", "RepoListing", "SourceSpec", "check_sources",
    "clone", "decode", "dump_record", "keep_dir", "list_sources", "load_source_list", "parse_spec",
    "read_items", "read_local", "release", "resolve_sources", "source_list_digest", "walk",
]
