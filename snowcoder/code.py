"""The version of the code a piece of work runs: a digest of its modules' sources and, transitively, of every module
of ours they import. Used for stage reuse keys (tasks/steps.py), work directories of resumable stages (crawl,
dedup) and the check that Dask workers run the same code as the merge (tasks/shards.py). Not the git SHA, so
editing a README or another stage does not invalidate finished work.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
from pathlib import Path

PACKAGES = ("tasks", "model", "snowcoder")
# configs are keyed by value where they matter; these modules are bookkeeping, not the work's logic
NOT_CODE = {"snowcoder.config", "snowcoder.manifest", "snowcoder.tracking", "snowcoder.cli", "tasks.steps"}


@functools.lru_cache(maxsize=None)
def module_closure(module: str) -> tuple[tuple[str, str], ...]:
    """(module, source sha256) of `module` and every module of ours it imports, transitively (AST, lazy imports too).
    A package named here counts with all its modules. Configs are keyed by value, so snowcoder.config and other
    bookkeeping modules are left out."""
    seen: dict[str, str] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen or name in NOT_CODE:
            continue
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            continue
        source = Path(spec.origin).read_bytes()
        seen[name] = hashlib.sha256(source).hexdigest()
        if name == module and spec.submodule_search_locations:
            todo += [f"{name}.{p.stem}" for p in Path(spec.origin).parent.glob("*.py") if p.stem != "__init__"]
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                todo += [a.name for a in node.names if a.name.split(".")[0] in PACKAGES]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                    and node.module.split(".")[0] in PACKAGES:
                todo.append(node.module)  # `from pkg import mod` names a module: take it when it is one
                todo += [f"{node.module}.{a.name}" for a in node.names
                         if importlib.util.find_spec(node.module).submodule_search_locations]
    return tuple(sorted(seen.items()))


def code_digest(*modules: str) -> str:
    """Version of the code that a stage runs: a digest of its modules' sources (not the git SHA, so editing a README
    or another stage does not invalidate finished work)."""
    h = hashlib.sha256()
    for module in modules:
        for name, sha in module_closure(module):
            h.update(f"{name}:{sha}\n".encode())
    return h.hexdigest()[:16]
