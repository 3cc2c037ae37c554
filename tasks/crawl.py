"""Crawl: turn code sources into documents (parquet shards), accounting for every file seen.

Arctic-SnowCoder's phase-1 data is The Stack v1 + GitHub crawls (arXiv 2409.02326 §2.2); nobody ships a crawler
(see shared/reference/data-curation.md §1). The sources this stage reads (local directories, the embedded corpus,
git remotes, object storage / any fsspec URL, dumps in The Stack's schema) and how each is split into repositories
are described in tasks/sources.py; `data.sources` and `data.source_list` name them.

Caps (DataConfig): each repository contributes at most `max_files_per_repo` files, a deterministic pseudo-random
(sha1 of the path) and therefore spread-out subset; the total `max_files` is filled round-robin over repositories so
that the cap does not keep only the alphabetically first repositories. Capped-out files are never read: they are
counted (`skipped_by_cap`), not listed; so are files with other extensions (`skipped_by_extension`).

Every file chosen ends up in exactly one of: the documents, or the exclusions with a reason (unreadable, too-large,
empty, binary, not-utf8, symlink-outside, missing, and for dumps malformed-json, missing-path, missing-content,
non-string-content, duplicate-path); a source that fails as a whole is one exclusion row (clone-failed, list-failed,
empty-source) with path "". Only when no source yields any file at all does the crawl stop with a UserError.

Resumable per repository. The crawl works in `<out_dir>/_crawl/<key>/` (key: the crawl settings and this code):
  plan.json + items.parquet   the listing after the caps (repositories, their chosen files, git commits) and its
                              cut into batches; written once, so a resumed crawl reads the same files from the
                              same commits
  batches/<b>.parquet         one finished batch (documents and exclusions), written atomically. A batch is a run of
                              whole repositories of one source, in (source, repository) order, cut after
                              BATCH_FILES files (one file of a dump per batch): a small repository is not worth
                              its own file, a big one is a batch by itself
A git remote is cloned once per crawl into the clone cache and reused by a resumed crawl (a finished clone carries a
marker), then removed when its batch is done. A crawl killed part-way and run again skips the finished batches; the
merge streams the batches in order, rows sorted by (repository, path) within each, so the outputs are the same
however often the crawl was interrupted. The work directory is removed once the outputs are written.

This module also holds the small helpers every phase-1 stage uses to read its input and write its outputs
(`read_docs`, `exclusions_frame`, `write_stage_outputs`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from typing import Callable

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from snowcoder import storage
from snowcoder.code import code_digest
from snowcoder.config import DataConfig, UserError
from snowcoder.manifest import Manifest
from tasks import sources as src
from tasks.language import detect_language
from tasks.sources import EMBEDDED_PYTHON, Item, Record, RepoListing  # noqa: F401  (EMBEDDED_PYTHON re-exported)

log = logging.getLogger("snowcoder.crawl")

from tasks.docio import DEFAULT_SHARD_DOCS  # noqa: E402
WORK_DIR = "_crawl"
DOC_EXTRA_COLUMNS = ["license", "source_uri"]  # besides storage.DOC_COLUMNS: license if known, where the bytes came from
_PARTIAL_COLUMNS = [*storage.DOC_COLUMNS, *DOC_EXTRA_COLUMNS, "reason"]
BATCH_FILES = 1000  # files (and exclusions) per batch: the unit a killed crawl re-reads
# Called after each batch is committed with (batches committed in this run, batches to do): a test hook (raise or
# SIGKILL from it to simulate a crash part-way).
AFTER_BATCH: Callable[[int, int], None] | None = None


# --------------------------------------------------------------------------- helpers shared by phase-1 stages
# (in tasks/docio.py; re-exported here for callers of the old location)
from tasks.docio import (  # noqa: E402,F401
    _content_digest, doc_id_for, exclusions_frame, read_docs, shard_docs_of, write_stage_outputs,
)


# --------------------------------------------------------------------------- caps
def _spread_order(items: list[Item]) -> list[Item]:
    """Items in a deterministic pseudo-random order (sha1 of the relative path): any prefix is spread out."""
    return sorted(items, key=lambda it: hashlib.sha1(it.path.encode()).hexdigest())


def select_items(repos: list[RepoListing], max_files: int | None, max_files_per_repo: int | None) -> list[list[Item]]:
    """Per repository, the items kept by the caps (sorted by path): the per-repo cap first, then the total cap
    filled round-robin over repositories (deterministic)."""
    queues = [_spread_order(r.items)[:max_files_per_repo] if max_files_per_repo else _spread_order(r.items)
              for r in repos]
    total = sum(len(q) for q in queues)
    budget = total if max_files is None else min(max_files, total)
    taken = [0] * len(queues)
    chosen, depth = 0, 0
    while chosen < budget:
        for i, queue in enumerate(queues):
            if depth < len(queue) and chosen < budget:
                taken[i] += 1
                chosen += 1
        depth += 1
    return [sorted(q[:n], key=lambda it: it.path) for q, n in zip(queues, taken)]


# --------------------------------------------------------------------------- work directory (resume)
def _code_version() -> str:
    return code_digest(__name__)  # this module and what it imports: sources, language, docio, storage


def work_key(cfg: DataConfig) -> str:
    """What decides the listing and the per-repository outputs: the crawl settings, the source list's content and
    this code (not the shard size, the held-out split, the runner, the clone cache or the worker count)."""
    keyed = cfg.model_dump(mode="json", exclude={"heldout_fraction", "task_runner", "shard_docs", "io_workers", "cache_dir"})
    blob = json.dumps({"cfg": keyed, "list": src.source_list_digest(cfg), "code": _code_version()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class _Work:
    """`<out_dir>/_crawl/<key>/`: the plan and one partial per finished batch."""

    def __init__(self, out_dir: str, key: str):
        self.root = storage.join(out_dir, WORK_DIR)
        self.dir = storage.join(self.root, key)
        self.plan_uri = storage.join(self.dir, "plan.json")
        self.items_uri = storage.join(self.dir, "items.parquet")

    def partial_uri(self, index: int) -> str:
        return storage.join(self.dir, "batches", f"{index:06d}.arrow")

    def drop_stale(self) -> None:
        """Remove work directories of other settings or code (a resumed crawl must not mix them)."""
        fs, root = storage.fs_for(self.root)
        try:
            entries = fs.ls(root, detail=False)
        except (FileNotFoundError, NotADirectoryError):
            return
        mine = storage.fs_for(self.dir)[1].rstrip("/")
        for entry in entries:
            if entry.rstrip("/") != mine:
                fs.rm(entry, recursive=True)

    def done(self) -> set[int]:
        fs, path = storage.fs_for(storage.join(self.dir, "batches"))
        try:
            names = [p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)]
        except (FileNotFoundError, NotADirectoryError):
            return set()
        return {int(n[:-6]) for n in names if n.endswith(".arrow") and n[:-6].isdigit()}

    def remove(self) -> None:
        fs, root = storage.fs_for(self.root)
        if fs.exists(root):
            fs.rm(root, recursive=True)


def _save_plan(work: _Work, repos: list[RepoListing], batches: list[list[int]], counts: dict) -> None:
    rows = [(i, it.path, it.locator, it.size) for i, r in enumerate(repos) for it in r.items]
    items = pd.DataFrame(rows, columns=["repo", "path", "locator", "size"]).astype({"repo": "int64", "size": "int64"})
    storage.write_parquet(items, work.items_uri)
    storage.write_json(work.plan_uri, {"repos": [r.to_json() for r in repos], "counts": counts,
                                       "batches": batches})  # written last: the plan's commit


def _load_plan(work: _Work) -> tuple[list[RepoListing], list[list[int]], dict] | None:
    if not storage.exists(work.plan_uri):
        return None
    try:
        plan = storage.read_json(work.plan_uri)
        items = storage.read_parquet(work.items_uri)
    except Exception as exc:  # a torn plan: list again
        log.warning("crawl: ignoring an unreadable plan in %s (%s)", work.dir, exc)
        return None
    per_repo: dict[int, list[Item]] = {}
    for i, path, locator, size in zip(items["repo"], items["path"], items["locator"], items["size"]):
        per_repo.setdefault(int(i), []).append(Item(str(path), str(locator), int(size)))
    repos = [RepoListing.from_json(d, per_repo.get(i, [])) for i, d in enumerate(plan["repos"])]
    return repos, plan["batches"], plan["counts"]


def _make_plan(specs: list[src.SourceSpec], cfg: DataConfig, key: str
               ) -> tuple[list[RepoListing], list[list[int]], dict]:
    """List every source, apply the caps, cut the batches. UserError when no source yields any file."""
    repos = src.list_sources(specs, cfg, key)
    candidates = sum(len(r.items) for r in repos)
    if candidates == 0 and not any(r.excluded for r in repos):
        for r in repos:
            src.release(r)
        problems = "; ".join(f"{r.source!r}: {r.error}" + (f" ({r.message})" if r.message else "") for r in repos)
        if len(specs) == 1 and repos[0].error == "empty-source":
            raise UserError(f"data source {specs[0].uri!r} has no files with extensions {src.Extensions(cfg.extensions)}")
        raise UserError(f"no data source yielded any file: {problems}")
    chosen = select_items(repos, cfg.max_files, cfg.max_files_per_repo)
    for repo, items in zip(repos, chosen):
        repo.items = items
    counts = {"candidates": candidates, "repos_discovered": sum(1 for r in repos if r.items),
              "skipped_by_extension": sum(r.skipped_ext for r in repos)}
    return repos, make_batches(repos), counts


def _rows_of(repo: RepoListing) -> int:
    return len(repo.items) + len(repo.excluded) + (1 if repo.error else 0)


def make_batches(repos: list[RepoListing], batch_files: int | None = None) -> list[list[int]]:
    """Repository indices cut into batches, in (source, dump file, repository) order: a batch never spans two
    sources or two dump files, never splits repositories of the same name, and is closed once it holds
    `batch_files` rows. Deterministic: it depends on the plan only."""
    limit = batch_files or BATCH_FILES
    order = sorted((i for i, r in enumerate(repos) if _rows_of(r)),
                   key=lambda i: (repos[i].source, repos[i].part, repos[i].name))
    batches: list[list[int]] = []
    size = 0
    for i in order:
        r = repos[i]
        prev = repos[batches[-1][-1]] if batches else None
        same_unit = prev is not None and (prev.source, prev.part) == (r.source, r.part)
        if not same_unit or (size >= limit and prev.name != r.name and r.kind != "dump"):
            batches.append([])
            size = 0
        batches[-1].append(i)
        size += _rows_of(r)
    return batches


# --------------------------------------------------------------------------- one batch
_PARTIAL_SCHEMA = pa.schema([(c, pa.int64() if c == "size_bytes" else pa.string()) for c in _PARTIAL_COLUMNS])
_DOCS_SCHEMA = pa.schema([_PARTIAL_SCHEMA.field(c) for c in [*storage.DOC_COLUMNS, *DOC_EXTRA_COLUMNS]])
_EXCLUSIONS_SCHEMA = pa.schema([pa.field(c, pa.int64() if c == "size_bytes" else pa.string())
                                for c in storage.EXCLUSION_COLUMNS])


def _write_partial(rows: list[tuple], uri: str) -> None:
    """A finished batch as one Arrow IPC file (lz4): written and read back at memory speed, unlike parquet, whose
    encoding of hundreds of MB of unique strings would cost as much as the crawl itself. Atomic (storage)."""
    columns = list(zip(*rows)) if rows else [[] for _ in _PARTIAL_COLUMNS]
    table = pa.Table.from_arrays([pa.array(col, type=f.type) for col, f in zip(columns, _PARTIAL_SCHEMA)],
                                 schema=_PARTIAL_SCHEMA)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="lz4")) as writer:
        writer.write_table(table)
    storage.write_bytes(uri, sink.getvalue().to_pybytes())


def _read_partial(uri: str) -> pa.Table:
    return pa.ipc.open_file(pa.BufferReader(storage.read_bytes(uri))).read_all()


def _partial_rows(repo: RepoListing, records: list[Record]) -> list[tuple]:
    """A finished repository's rows (_PARTIAL_COLUMNS): documents (reason null) and exclusions, one per record,
    listing exclusion or source error."""
    rows = []
    for r in records:
        doc_id = doc_id_for(repo.source, repo.name, r.path)
        if r.reason is None:
            rows.append((doc_id, repo.name, r.path, detect_language(r.path) or r.language, r.content, r.size,
                         hashlib.sha256(r.content.encode("utf-8")).hexdigest(), repo.source, r.license or repo.license,
                         r.source_uri, None))
        else:
            rows.append((doc_id, repo.name, r.path, None, None, r.size, None, repo.source, None, r.source_uri, r.reason))
    for path, reason, size in repo.excluded:
        rows.append((doc_id_for(repo.source, repo.name, path), repo.name, path, None, None, size, None, repo.source,
                     None, None, reason))
    if repo.error:
        rows.append((doc_id_for(repo.source, repo.name, ""), repo.name, "", None, None, 0, None, repo.source, None,
                     None, repo.error))
    return rows


def _read_batches(specs: list[src.SourceSpec], repos: list[RepoListing], batches: list[list[int]], work: _Work,
                  cfg: DataConfig, clone_tag: str, done: set[int]) -> int:
    """Read and commit every batch not in `done`; returns how many were read now."""
    by_uri = {s.uri: s for s in specs}
    todo = [b for b in range(len(batches)) if b not in done]
    t_last = time.monotonic()
    for n, b in enumerate(todo, 1):
        members = batches[b]
        spec = by_uri[repos[members[0]].source]
        with_items = [(i, repos[i], repos[i].items) for i in members if repos[i].items]
        records: dict[int, list[Record]] = {i: [] for i in members}
        for i, record in src.read_items(spec, with_items, cfg, clone_tag):
            records[i].append(record)
        short = [repos[i].name for i in members if len(records[i]) != len(repos[i].items)]
        if short:  # a reader gave fewer records than items: a bug, never silently fewer rows
            raise RuntimeError(f"crawl: source {spec.uri} gave no record for some files of {short}")
        rows = [row for i in members for row in _partial_rows(repos[i], records[i])]
        rows.sort(key=lambda row: (row[1], row[2]))  # (repo, path): the order of the outputs
        _write_partial(rows, work.partial_uri(b))
        for i in members:
            src.release(repos[i])
        if time.monotonic() - t_last > 10 or n == len(todo):
            t_last = time.monotonic()
            log.info("crawl: batch %d/%d done (%d repositories, %d rows)", n, len(todo), len(members), len(rows))
        if AFTER_BATCH is not None:
            AFTER_BATCH(n, len(todo))
    return len(todo)


# --------------------------------------------------------------------------- merge
class _ShardWriter:
    """`<out_dir>/<prefix>-00000.parquet`, ... of `rows` rows each, written as Arrow tables arrive (the layout of
    storage.write_shards of all rows at once; one empty shard when there are none)."""

    def __init__(self, out_dir: str, prefix: str, rows: int, schema: pa.Schema):
        self.out_dir, self.prefix, self.rows, self.schema = out_dir, prefix, rows, schema
        self.tables: list[pa.Table] = []
        self.buffered = 0
        self.uris: list[str] = []

    def add(self, table: pa.Table) -> None:
        if table.num_rows:
            self.tables.append(table.select(self.schema.names).cast(self.schema))
            self.buffered += table.num_rows
        while self.buffered >= self.rows:
            self._flush(self.rows)

    def _flush(self, n: int) -> None:
        table = pa.concat_tables(self.tables) if len(self.tables) > 1 else self.tables[0]
        self._write(table.slice(0, n))
        rest = table.slice(n)
        self.tables, self.buffered = ([rest] if rest.num_rows else []), rest.num_rows

    def _write(self, table: pa.Table) -> None:
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        uri = storage.join(self.out_dir, f"{self.prefix}-{len(self.uris):05d}.parquet")
        storage.write_bytes(uri, sink.getvalue().to_pybytes())
        self.uris.append(uri)

    def close(self) -> list[str]:
        if self.buffered:
            self._flush(self.buffered)
        if not self.uris:
            self._write(self.schema.empty_table())
        return self.uris


def _remove_stale_shards(out_dir: str, prefix: str, keep: list[str]) -> None:
    """Shards of an earlier, larger crawl into the same directory (not in the manifest, but confusing)."""
    fs, path = storage.fs_for(out_dir)
    kept = {storage.fs_for(u)[1] for u in keep}
    for found in fs.glob(path.rstrip("/") + f"/{prefix}-*.parquet"):
        if found not in kept:
            fs.rm_file(found)


def _merge(repos: list[RepoListing], batches: list[list[int]], work: _Work, out_dir: str, shard_docs: int
           ) -> tuple[dict, dict]:
    """Stream every batch, in order, rows sorted by (repository, path) within it, into the docs and exclusions
    shards. Returns (uris, tallies: counts, per-reason / per-language tables and the content digest)."""
    storage.makedirs(out_dir)
    docs_out = _ShardWriter(out_dir, "docs", shard_docs, _DOCS_SCHEMA)
    excl_out = _ShardWriter(out_dir, "exclusions", shard_docs, _EXCLUSIONS_SCHEMA)
    h = hashlib.sha256()
    excluded_keys: list[str] = []
    reasons: Counter = Counter()
    languages: Counter = Counter()
    n_docs = n_bytes = 0
    kept_repos = {(r.source, r.name) for r in repos if r.items}
    for b in range(len(batches)):
        rows = _read_partial(work.partial_uri(b))
        is_doc = pc.is_null(rows["reason"])
        n_excl = rows.num_rows - pc.sum(is_doc.cast(pa.int64())).as_py() if rows.num_rows else 0
        docs = rows.filter(is_doc) if n_excl else rows
        excl = rows.filter(pc.invert(is_doc)) if n_excl else rows.slice(0, 0)
        excl = excl.append_column("stage", pa.array(["crawl"] * excl.num_rows, pa.string()))
        for doc_id, sha in zip(docs["doc_id"].to_pylist(), docs["content_sha256"].to_pylist()):
            h.update(f"d:{doc_id}:{sha}\n".encode())
        excl_reasons = excl["reason"].to_pylist()
        excluded_keys += [f"x:{d}:{r}\n" for d, r in zip(excl["doc_id"].to_pylist(), excl_reasons)]
        n_docs += docs.num_rows
        n_bytes += pc.sum(docs["size_bytes"]).as_py() or 0
        languages.update(lang or "unknown" for lang in docs["language"].to_pylist())
        reasons.update(excl_reasons)
        docs_out.add(docs)
        excl_out.add(excl)
    for line in excluded_keys:  # the digest of write_stage_outputs: every doc, then every exclusion
        h.update(line.encode())
    uris = {"docs": docs_out.close(), "exclusions": excl_out.close()}
    _remove_stale_shards(out_dir, "docs", uris["docs"])
    _remove_stale_shards(out_dir, "exclusions", uris["exclusions"])
    tallies = {"docs": n_docs, "excluded": len(excluded_keys), "bytes": n_bytes, "repos": len(kept_repos),
               "digest": h.hexdigest()[:16], "excluded_by_reason": dict(sorted(reasons.items())),
               "docs_by_language": dict(sorted(languages.items()))}
    return uris, tallies


def _sources_report(specs: list[src.SourceSpec], repos: list[RepoListing]) -> list[dict]:
    """Per source: its kind, repositories, git commits and errors (sources.json next to the shards)."""
    out = []
    for spec in specs:
        mine = [r for r in repos if r.source == spec.uri]
        entry: dict = {"source": spec.uri, "kind": spec.kind, "repos": len([r for r in mine if not r.error]),
                       "files": sum(len(r.items) for r in mine)}
        if spec.kind == "git":
            entry.update({"target": spec.target, "ref": spec.ref, "commit": mine[0].commit if mine else None})
        errors = [f"{r.error}: {r.message}" if r.message else r.error for r in mine if r.error]
        if errors:
            entry["error"] = "; ".join(errors)
        out.append(entry)
    return out


# --------------------------------------------------------------------------- stage
def crawl(cfg: DataConfig, out_dir: str) -> Manifest:
    """Crawl the sources of `cfg` into document shards + exclusion shards under out_dir; return the manifest.

    Resumes a crawl of the same settings that was killed part-way (see the module docstring)."""
    t0 = time.perf_counter()
    specs = src.resolve_sources(cfg)
    key = work_key(cfg)
    work = _Work(out_dir, key)
    work.drop_stale()
    clone_tag = hashlib.sha1(f"{key}:{out_dir}".encode()).hexdigest()[:16]  # this crawl's clones
    loaded = _load_plan(work)
    if loaded is None:
        repos, batches, plan_counts = _make_plan(specs, cfg, clone_tag)
        _save_plan(work, repos, batches, plan_counts)
        done: set[int] = set()
    else:
        repos, batches, plan_counts = loaded
        done = work.done()
        log.info("crawl: resuming in %s: %d of %d batches already done", work.dir, len(done), len(batches))
    selected = sum(len(r.items) for r in repos)
    log.info("crawl: %d sources, %d repos, %d candidate files, %d selected by caps, %d batches", len(specs),
             len(repos), plan_counts["candidates"], selected, len(batches))

    read_now = _read_batches(specs, repos, batches, work, cfg, clone_tag, done)
    uris, tallies = _merge(repos, batches, work, out_dir, cfg.shard_docs)
    report = _sources_report(specs, repos)
    uris["sources"] = storage.join(out_dir, "sources.json")
    storage.write_json(uris["sources"], report)
    work.remove()
    for r in repos:
        src.release(r)

    seconds = time.perf_counter() - t0
    counts = {
        "files_seen": tallies["docs"] + tallies["excluded"],
        "docs": tallies["docs"],
        "excluded": tallies["excluded"],
        "bytes": tallies["bytes"],
        "repos": tallies["repos"],
        "repos_discovered": plan_counts["repos_discovered"],
        "candidates": plan_counts["candidates"],
        "skipped_by_cap": plan_counts["candidates"] - selected,
        "skipped_by_extension": plan_counts["skipped_by_extension"],
        "sources": len(specs),
        "source_errors": sum(1 for e in report if "error" in e),
        "batches": len(batches),
        "batches_resumed": len(done),
    }
    stats = {
        "excluded_by_reason": tallies["excluded_by_reason"],
        "docs_by_language": tallies["docs_by_language"],
        "sources": [s.uri for s in specs],
        "source_errors": {e["source"]: e["error"] for e in report if "error" in e},
        "git_commits": {e["source"]: e["commit"] for e in report if e.get("commit")},
        "seconds": round(seconds, 3),
        "files_per_s": round(counts["files_seen"] / seconds, 1) if seconds > 0 else None,
        "mb_per_s": round(tallies["bytes"] / 1e6 / seconds, 2) if seconds > 0 else None,
        "shard_docs": cfg.shard_docs,
    }
    log.info("crawl: %d docs (%.1f MB), %d excluded %s in %.1fs (%d batches read now, %d resumed)",
             counts["docs"], counts["bytes"] / 1e6, counts["excluded"], tallies["excluded_by_reason"], seconds,
             read_now, len(done))
    return Manifest(stage="crawl", uris=uris, counts={k: float(v) for k, v in counts.items()}, stats=stats,
                    digest=tallies["digest"])
