"""Storage by URI (fsspec). A local path and an s3:// URL go through the same functions.

Documents travel between stages as parquet shards under `<run root>/<phase>/<stage>/`; each stage returns a small
`Manifest` (see snowcoder.manifest). Writes are atomic for local paths (tmp + rename) so a killed stage never
leaves a half-written file that looks complete.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import fsspec
import pandas as pd

# Columns of a documents shard and of an exclusions shard (every input file ends up in exactly one of them).
DOC_COLUMNS = ["doc_id", "repo", "path", "language", "content", "size_bytes", "content_sha256", "source"]
EXCLUSION_COLUMNS = ["doc_id", "repo", "path", "source", "stage", "reason", "size_bytes"]


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def join(root: str, *parts: str) -> str:
    root = str(root)
    if is_remote(root):
        return "/".join([root.rstrip("/"), *[p.strip("/") for p in parts]])
    return str(Path(root, *parts))


def fs_for(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = fsspec.core.url_to_fs(uri)
    return fs, path


def exists(uri: str) -> bool:
    fs, path = fs_for(uri)
    return fs.exists(path)


def remove(uri: str) -> None:
    """Delete one file (no error if it is already gone)."""
    fs, path = fs_for(uri)
    if fs.exists(path):
        fs.rm_file(path)


def makedirs(uri: str) -> None:
    fs, path = fs_for(uri)
    if not is_remote(uri):
        fs.makedirs(path, exist_ok=True)


_UMASK = os.umask(0)
os.umask(_UMASK)


def write_bytes(uri: str, data: bytes) -> None:
    if is_remote(uri):
        fs, path = fs_for(uri)
        fs.pipe_file(path, data)
        return
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give them the mode a plain open() would
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def read_bytes(uri: str) -> bytes:
    fs, path = fs_for(uri)
    return fs.cat_file(path)


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def write_json(uri: str, obj: Any) -> None:
    write_text(uri, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(uri: str) -> Any:
    return json.loads(read_text(uri))


def write_jsonl(uri: str, rows: list[dict]) -> None:
    write_text(uri, "".join(json.dumps(r, default=str) + "\n" for r in rows))


def read_jsonl(uri: str) -> list[dict]:
    return [json.loads(line) for line in read_text(uri).splitlines() if line.strip()]


def write_parquet(df: pd.DataFrame, uri: str) -> None:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    write_bytes(uri, buf.getvalue())


def read_parquet(uri: str, columns: list[str] | None = None) -> pd.DataFrame:
    fs, path = fs_for(uri)
    with fs.open(path, "rb") as fh:
        return pd.read_parquet(fh, columns=columns)


def write_shards(df: pd.DataFrame, out_dir: str, prefix: str, shard_rows: int) -> list[str]:
    """Write `df` as `<out_dir>/<prefix>-00000.parquet`, ... (at least one shard, even when empty)."""
    uris = []
    n = len(df)
    starts = range(0, n, shard_rows) if n else [0]
    for i, start in enumerate(starts):
        uri = join(out_dir, f"{prefix}-{i:05d}.parquet")
        write_parquet(df.iloc[start : start + shard_rows], uri)
        uris.append(uri)
    return uris


def read_shards(uris: list[str], columns: list[str] | None = None) -> pd.DataFrame:
    frames = [read_parquet(u, columns=columns) for u in uris]
    if not frames:
        return pd.DataFrame(columns=columns or DOC_COLUMNS)
    return pd.concat(frames, ignore_index=True)


def digest_files(uris: list[str]) -> str:
    """Content digest over a list of files (order-sensitive)."""
    h = hashlib.sha256()
    for uri in uris:
        h.update(uri.rsplit("/", 1)[-1].encode())
        h.update(hashlib.sha256(read_bytes(uri)).digest())
    return h.hexdigest()[:16]


def upload_dir(local_dir: str | Path, uri: str) -> None:
    """Copy a local directory to `uri` (no-op when `uri` is that same local directory)."""
    local_dir = Path(local_dir)
    if not is_remote(uri):
        dest = Path(uri)
        if dest.resolve() == local_dir.resolve():
            return
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(local_dir, dest)
        return
    fs, path = fs_for(uri)
    fs.put(str(local_dir) + "/", path, recursive=True)


@contextlib.contextmanager
def local_dir(uri: str) -> Iterator[Path]:
    """Yield a local directory holding the contents of `uri` (the directory itself when it is local)."""
    if not is_remote(uri):
        yield Path(uri)
        return
    fs, path = fs_for(uri)
    with tempfile.TemporaryDirectory(prefix="snowcoder-") as tmp:
        fs.get(path.rstrip("/") + "/", tmp, recursive=True)
        yield Path(tmp)


def local_cache_dir() -> Path:
    """Cache for converted assets (e.g. the GGUF generator as an HF folder), outside any run root."""
    base = os.environ.get("SNOWCODER_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "snowcoder")
    Path(base).mkdir(parents=True, exist_ok=True)
    return Path(base)
