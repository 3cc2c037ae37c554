"""Crawl: turn code sources into documents (parquet shards), accounting for every file seen.

Arctic-SnowCoder's phase-1 data is The Stack v1 + GitHub crawls (arXiv 2409.02326 §2.2); nobody ships a crawler
(see shared/reference/data-curation.md §1), so this stage reads *local* code trees that stand in for repositories:

  embedded:python  the running interpreter's standard library and site-packages. Repositories are:
                   `stdlib/<pkg>` per top-level stdlib package directory, `stdlib` for the top-level stdlib modules
                   (`json/`, `os.py`, ...), likewise `site-packages/<pkg>` and `site-packages`. `__pycache__`,
                   hidden directories, `*.dist-info`/`*.egg-info` and the stdlib's own `site-packages` are skipped.
                   A document's `path` is relative to the stdlib (or site-packages) directory, e.g. `json/decoder.py`.
  <directory>      a local directory: each immediate sub-directory is one repository named after it (top-level
                   files of the directory form one more repository named after the directory); a directory without
                   sub-directories is itself one repository. `path` is relative to the repository directory.

Caps (DataConfig): each repository contributes at most `max_files_per_repo` files, a deterministic pseudo-random
(sha1 of the path) and therefore spread-out subset; the total `max_files` is filled round-robin over repositories so
that the cap does not keep only the alphabetically first repositories. Capped-out files are never read: they are
counted (`skipped_by_cap`), not listed.

Every file read ends up in exactly one of: the documents, or the exclusions with a reason
(unreadable, too-large, empty, binary, not-utf8).

This module also holds the small helpers every phase-1 stage uses to read its input and write its outputs
(`read_docs`, `exclusions_frame`, `write_stage_outputs`).
"""
from __future__ import annotations

import hashlib
import logging
import os
import stat
import sysconfig
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from snowcoder import storage
from snowcoder.config import DataConfig, UserError
from snowcoder.manifest import Manifest
from tasks.language import detect_language

log = logging.getLogger("snowcoder.crawl")

EMBEDDED_PYTHON = "embedded:python"
DEFAULT_SHARD_DOCS = 1000
_SKIP_DIRS = {"__pycache__", "node_modules"}
_SKIP_DIR_SUFFIXES = (".dist-info", ".egg-info")


# --------------------------------------------------------------------------- helpers shared by phase-1 stages
def read_docs(inp: Manifest) -> pd.DataFrame:
    """All documents of a stage's input manifest (`uris["docs"]`), in shard order."""
    df = storage.read_shards(inp.shard_uris("docs"))
    for col in storage.DOC_COLUMNS:
        if col not in df.columns:
            df[col] = pd.Series(dtype=object)
    return df.reset_index(drop=True)


def shard_docs_of(inp: Manifest) -> int:
    """Shard size chosen at crawl time (DataConfig.shard_docs), carried along in each manifest's stats."""
    return int(inp.stats.get("shard_docs", DEFAULT_SHARD_DOCS))


def exclusions_frame(docs: pd.DataFrame, stage: str, reasons: list[str] | pd.Series) -> pd.DataFrame:
    """Exclusion rows (storage.EXCLUSION_COLUMNS) for the documents `docs`, one reason each."""
    out = pd.DataFrame(
        {
            "doc_id": docs["doc_id"].to_numpy(),
            "repo": docs["repo"].to_numpy(),
            "path": docs["path"].to_numpy(),
            "source": docs["source"].to_numpy(),
            "stage": stage,
            "reason": list(reasons),
            "size_bytes": docs["size_bytes"].to_numpy(),
        },
        columns=storage.EXCLUSION_COLUMNS,
    )
    out["size_bytes"] = out["size_bytes"].astype("int64")
    return out


def _content_digest(docs: pd.DataFrame, excluded: pd.DataFrame) -> str:
    h = hashlib.sha256()
    for doc_id, sha in zip(docs["doc_id"], docs["content_sha256"]):
        h.update(f"d:{doc_id}:{sha}\n".encode())
    for doc_id, reason in zip(excluded["doc_id"], excluded["reason"]):
        h.update(f"x:{doc_id}:{reason}\n".encode())
    return h.hexdigest()[:16]


def write_stage_outputs(
    stage: str,
    docs: pd.DataFrame,
    excluded: pd.DataFrame,
    out_dir: str,
    shard_docs: int,
    counts: dict[str, float],
    stats: dict,
    extra_uris: dict | None = None,
) -> Manifest:
    """Write `docs-*.parquet` and `exclusions-*.parquet` under out_dir, save and return the stage's Manifest.

    The digest covers (doc_id, content_sha256) of kept docs and (doc_id, reason) of exclusions, in order, so it
    does not depend on the parquet writer's version.
    """
    storage.makedirs(out_dir)
    docs = docs.reset_index(drop=True)
    excluded = excluded.reset_index(drop=True)
    uris = {
        "docs": storage.write_shards(docs, out_dir, "docs", shard_docs),
        "exclusions": storage.write_shards(excluded, out_dir, "exclusions", shard_docs),
    }
    uris.update(extra_uris or {})
    stats = {**stats, "shard_docs": shard_docs}
    manifest = Manifest(
        stage=stage,
        uris=uris,
        counts={k: float(v) for k, v in counts.items()},
        stats=stats,
        digest=_content_digest(docs, excluded),
    )
    return manifest


def doc_id_for(source: str, repo: str, path: str) -> str:
    return hashlib.sha1(f"{source}:{repo}:{path}".encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- discovery
@dataclass
class Repo:
    source: str
    name: str
    root: Path  # document paths are relative to this directory
    files: list[Path] = field(default_factory=list)  # absolute, sorted


def _normalise_extensions(extensions: list[str]) -> tuple[str, ...]:
    return tuple(sorted({(e if e.startswith(".") else "." + e).lower() for e in extensions}))


def _keep_dir(name: str) -> bool:
    return not (name.startswith(".") or name in _SKIP_DIRS or name.endswith(_SKIP_DIR_SUFFIXES))


def _matches(name: str, extensions: tuple[str, ...]) -> bool:
    return name.lower().endswith(extensions)


def _walk(directory: Path, extensions: tuple[str, ...]) -> list[Path]:
    """Matching files under `directory` (recursively, symlinked dirs not followed), sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = sorted(d for d in dirnames if _keep_dir(d))
        found.extend(Path(dirpath, f) for f in filenames if _matches(f, extensions))
    return sorted(found)


def _top_level_files(directory: Path, extensions: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in directory.iterdir() if _matches(p.name, extensions) and not p.is_dir())


def _package_repos(source: str, prefix: str, root: Path, extensions: tuple[str, ...], skip: set[str]) -> list[Repo]:
    """One repo per top-level package directory of `root`, plus `prefix` for its top-level module files."""
    repos = []
    top = _top_level_files(root, extensions)
    if top:
        repos.append(Repo(source, prefix, root, top))
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and not entry.is_symlink() and _keep_dir(entry.name) and entry.name not in skip:
            files = _walk(entry, extensions)
            if files:
                repos.append(Repo(source, f"{prefix}/{entry.name}", root, files))
    return repos


def _embedded_python_repos(source: str, extensions: tuple[str, ...]) -> list[Repo]:
    paths = sysconfig.get_paths()
    stdlib, purelib = Path(paths["stdlib"]), Path(paths["purelib"])
    repos = _package_repos(source, "stdlib", stdlib, extensions, skip={"site-packages", "dist-packages"})
    if purelib.is_dir() and purelib.resolve() != stdlib.resolve():
        repos += _package_repos(source, "site-packages", purelib, extensions, skip=set())
    return repos


def _directory_repos(source: str, extensions: tuple[str, ...]) -> list[Repo]:
    root = Path(source).expanduser()
    if not root.is_dir():
        raise UserError(f"data source {source!r} does not exist or is not a directory")
    name = root.resolve().name or "root"
    subdirs = [d for d in sorted(root.iterdir()) if d.is_dir() and _keep_dir(d.name)]
    if not subdirs:
        files = _walk(root, extensions)
        return [Repo(source, name, root, files)] if files else []
    repos = []
    top = _top_level_files(root, extensions)
    if top:
        repos.append(Repo(source, name, root, top))
    for sub in subdirs:
        files = _walk(sub, extensions)
        if files:
            repos.append(Repo(source, sub.name, sub, files))
    return repos


def discover_repos(source: str, extensions: list[str]) -> list[Repo]:
    """Repositories (with their matching files) of one source; UserError when it has none."""
    exts = _normalise_extensions(extensions)
    if source == EMBEDDED_PYTHON:
        repos = _embedded_python_repos(source, exts)
    elif source.startswith("embedded:"):
        raise UserError(f"unknown embedded data source {source!r}; the only one is {EMBEDDED_PYTHON!r}")
    elif storage.is_remote(source):
        raise UserError(f"data source {source!r}: only local directories and {EMBEDDED_PYTHON!r} can be crawled")
    else:
        repos = _directory_repos(source, exts)
    if not repos:
        raise UserError(f"data source {source!r} has no files with extensions {', '.join(exts)}")
    return repos


# --------------------------------------------------------------------------- caps
def _spread_order(repo: Repo) -> list[Path]:
    """Files in a deterministic pseudo-random order (sha1 of the relative path): any prefix is spread out."""
    return sorted(repo.files, key=lambda p: hashlib.sha1(str(p.relative_to(repo.root)).encode()).hexdigest())


def select_files(repos: list[Repo], max_files: int | None, max_files_per_repo: int | None) -> list[tuple[Repo, Path]]:
    """Apply the per-repo cap, then fill the total cap round-robin over repos (deterministic)."""
    queues = [_spread_order(r)[:max_files_per_repo] if max_files_per_repo else _spread_order(r) for r in repos]
    total = sum(len(q) for q in queues)
    budget = total if max_files is None else min(max_files, total)
    chosen: list[tuple[Repo, Path]] = []
    depth = 0
    while len(chosen) < budget:
        for repo, queue in zip(repos, queues):
            if depth < len(queue) and len(chosen) < budget:
                chosen.append((repo, queue[depth]))
        depth += 1
    return sorted(chosen, key=lambda rp: (rp[0].source, rp[0].name, str(rp[1].relative_to(rp[0].root))))


# --------------------------------------------------------------------------- reading
def read_file(path: Path, max_file_bytes: int) -> tuple[str | None, str | None, int]:
    """(content, None, size) for a usable text file, else (None, reason, size)."""
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
    size = len(data)
    if size > max_file_bytes:
        return None, "too-large", size
    if size == 0:
        return None, "empty", 0
    if b"\x00" in data:
        return None, "binary", size
    try:
        content = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None, "not-utf8", size
    return content, None, size


# --------------------------------------------------------------------------- stage
def crawl(cfg: DataConfig, out_dir: str) -> Manifest:
    """Crawl cfg.sources into document shards + exclusion shards under out_dir; return the manifest."""
    t0 = time.perf_counter()
    if not cfg.sources:
        raise UserError("data.sources is empty: name at least one source (e.g. 'embedded:python' or a directory)")
    repos = [repo for source in cfg.sources for repo in discover_repos(source, cfg.extensions)]
    candidates = sum(len(r.files) for r in repos)
    selected = select_files(repos, cfg.max_files, cfg.max_files_per_repo)
    log.info("crawl: %d repos, %d candidate files, %d selected by caps", len(repos), candidates, len(selected))

    docs, excluded = [], []
    for repo, path in selected:
        rel = path.relative_to(repo.root).as_posix()
        doc_id = doc_id_for(repo.source, repo.name, rel)
        content, reason, size = read_file(path, cfg.max_file_bytes)
        if reason is not None:
            excluded.append((doc_id, repo.name, rel, repo.source, "crawl", reason, size))
            continue
        docs.append(
            (doc_id, repo.name, rel, detect_language(rel), content, size,
             hashlib.sha256(content.encode("utf-8")).hexdigest(), repo.source)
        )
    docs_df = pd.DataFrame(docs, columns=storage.DOC_COLUMNS).astype({"size_bytes": "int64"})
    excl_df = pd.DataFrame(excluded, columns=storage.EXCLUSION_COLUMNS).astype({"size_bytes": "int64"})

    seconds = time.perf_counter() - t0
    by_reason = dict(sorted(Counter(excl_df["reason"]).items()))
    counts = {
        "files_seen": len(selected),
        "docs": len(docs_df),
        "excluded": len(excl_df),
        "bytes": int(docs_df["size_bytes"].sum()),
        "repos": len({(r.source, r.name) for r, _ in selected}),
        "repos_discovered": len(repos),
        "candidates": candidates,
        "skipped_by_cap": candidates - len(selected),
    }
    stats = {
        "excluded_by_reason": by_reason,
        "docs_by_language": dict(sorted(Counter(docs_df["language"].fillna("unknown")).items())),
        "sources": list(cfg.sources),
        "seconds": round(seconds, 3),
        "files_per_s": round(len(selected) / seconds, 1) if seconds > 0 else None,
    }
    log.info("crawl: %d docs (%.1f MB), %d excluded %s in %.1fs",
             counts["docs"], counts["bytes"] / 1e6, counts["excluded"], by_reason, seconds)
    return write_stage_outputs("crawl", docs_df, excl_df, out_dir, cfg.shard_docs, counts, stats)
