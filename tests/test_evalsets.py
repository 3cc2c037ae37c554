"""Benchmark records -> prompts, stop sequences, sandbox jobs and scores (tasks/evalsets.py).

Jobs run through the real sandbox (tasks.execution.run_checks): canonical solutions pass, wrong completions fail,
"base" and "plus" verdicts differ where only the plus inputs catch a bug, floats compare with EvalPlus's tolerance,
and expected outputs are computed in another process.
"""
from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path

import pytest

from snowcoder.config import UserError
from tasks import benchmarks as B
from tasks import evalsets as E
from tasks.evaluate import STOP_SEQUENCES, truncate_completion
from tasks.execution import CheckJob, ExecResult, run_checks

FIX = Path(__file__).parent / "fixtures" / "benchmarks"
FIXTURES = [("humaneval+", "HumanEvalPlus-mini.jsonl"), ("mbpp+", "MbppPlus-mini.jsonl"),
            ("evoeval_difficult", "EvoEval_difficult.jsonl"), ("mbpp", "mbpp.jsonl"), ("mbpp", "sanitized-mbpp.json"),
            ("bigcodebench", "BigCodeBench-mini.jsonl")]
TIMEOUT_S = 20.0  # generous: the box running the tests is shared


def load(name: str, file: str) -> list[dict]:
    return B.load_benchmark(name, str(FIX / file))


def by_id(name: str, file: str, task_id: str) -> dict:
    return next(r for r in load(name, file) if r["task_id"] == task_id)


def run(rec: dict, completions: list[str], expected: dict | None = None, suite: str | None = None) -> list:
    jobs = [CheckJob(*E.check_job(rec, c, expected, suite)) for c in completions]
    return run_checks(jobs, TIMEOUT_S, 2)


def returns_none(rec: dict) -> str:
    """A wrong completion: the function returns None (MBPP: the model writes the whole function)."""
    if E.family(rec) == "mbpp":
        return f"def {rec['entry_point']}(*args):\n    return None\n"
    return "\n    return None\n"


def inline_record(**fields) -> dict:
    """A HumanEval+-style record written in the test (EvalPlus release fields)."""
    rec = {"benchmark": "humaneval+", "task_id": "HumanEval/900", "test": "", "atol": 0, "contract": "",
           "prompt": 'def add(a, b):\n    """Add two numbers."""\n', "canonical_solution": "    return a + b\n",
           "entry_point": "add", "base_input": [[0.1, 0.2]], "plus_input": [[1.5, 2.25]]}
    rec.update(fields)
    return rec


# --------------------------------------------------------------------------- prompts and stop sequences
def test_model_prompt_follows_each_harness():
    he = B.load_humaneval()[0]
    assert E.model_prompt(he) == he["prompt"].rstrip() and he["prompt"].endswith("\n")
    assert E.model_prompt(he, strip_newlines=False) == he["prompt"]
    evo = load("evoeval_difficult", "EvoEval_difficult.jsonl")[0]
    assert E.model_prompt(evo) == evo["prompt"].rstrip()

    mbpp = by_id("mbpp", "mbpp.jsonl", "Mbpp/2")  # bigcode-harness mbpp.py: docstring with text and first assert
    assert E.model_prompt(mbpp) == ('"""\nWrite a function to find the similar elements from the given two tuple '
                                    'lists.\nassert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)\n"""\n')
    # EvalPlus's MBPP+ prompt is the same docstring built over sanitized MBPP: both conventions agree
    sanitized = by_id("mbpp", "sanitized-mbpp.json", "Mbpp/2")
    plus = by_id("mbpp+", "MbppPlus-mini.jsonl", "Mbpp/2")
    assert E.model_prompt(plus) == plus["prompt"].strip() + "\n" == E.model_prompt(sanitized)

    bcb = load("bigcodebench", "BigCodeBench-mini.jsonl")[0]
    assert E.model_prompt(bcb) == bcb["prompt"] and bcb["prompt"].endswith('"""\n')

    with pytest.raises(UserError, match="test_list"):
        E.model_prompt({**sanitized, "test_list": []})


def test_stop_sequences_per_benchmark():
    he, mbpp = B.load_humaneval()[0], by_id("mbpp", "mbpp.jsonl", "Mbpp/2")
    bcb = load("bigcodebench", "BigCodeBench-mini.jsonl")[0]
    assert E.stop_sequences(he) == STOP_SEQUENCES
    assert '\n"""' in E.stop_sequences(mbpp) and "\ndef " not in E.stop_sequences(mbpp)
    assert {"\nimport ", "\ndef "} <= set(E.stop_sequences(bcb))
    # an MBPP completion may define helpers: cut at the test the model starts writing, not at the second def
    text = "def helper(x):\n    return x\n\ndef f(x):\n    return helper(x)\nassert f(1) == 1\n"
    assert truncate_completion(text, E.stop_sequences(mbpp)) == text[: text.index("\nassert")]
    assert truncate_completion(text, E.stop_sequences(he)) == "def helper(x):\n    return x\n"


# --------------------------------------------------------------------------- canonical passes, wrong fails
def test_humaneval_first_ten_canonical_pass_wrong_fail():
    problems = B.load_humaneval()[:10]
    assert all(E.suites(p) == {"test": "humaneval"} for p in problems)
    jobs = [CheckJob(*E.check_job(p, c)) for p in problems for c in (p["canonical_solution"], returns_none(p))]
    results = run_checks(jobs, TIMEOUT_S, 2)
    assert [r.status for r in results[0::2]] == ["passed"] * 10, [r.message for r in results[0::2]]
    assert [r.status for r in results[1::2]] == ["failed"] * 10


@pytest.mark.parametrize("name,file", FIXTURES)
def test_fixture_canonical_passes_and_wrong_fails(name, file):
    for rec in load(name, file):
        expected = E.expected_outputs(rec)
        has_tests = E.family(rec) != "bigcodebench" or "def test_" in rec["test"]  # BigCodeBench/2: setUp only
        for suite in E.suites(rec):
            good, bad = run(rec, [rec["canonical_solution"], returns_none(rec)], expected, suite)
            assert good.status == "passed", (rec["task_id"], suite, good.message)
            if has_tests:
                assert bad.status == "failed", (rec["task_id"], suite)


def test_base_and_plus_verdicts_differ():
    longest = by_id("humaneval+", "HumanEvalPlus-mini.jsonl", "HumanEval/12")
    assert E.suites(longest) == {"base": "humaneval", "plus": "humaneval+"}
    first = "\n    return strings[0] if strings else None\n"  # right on the base inputs only
    base, plus = (run(longest, [first], E.expected_outputs(longest), s)[0] for s in ("base", "plus"))
    assert (base.status, plus.status) == ("passed", "failed")
    assert "plus input #0" in plus.message and "expected 'ccc'" in plus.message

    perimeter = by_id("mbpp+", "MbppPlus-mini.jsonl", "Mbpp/17")
    assert E.suites(perimeter) == {"base": "mbpp", "plus": "mbpp+"}
    truncating = "def square_perimeter(a):\n  return 4 * int(a)\n"  # plus input 0.5
    expected = E.expected_outputs(perimeter)
    assert [r.status for r in (run(perimeter, [truncating], expected, s)[0] for s in ("base", "plus"))] == [
        "passed", "failed"]


def test_float_tolerance_through_the_sandbox():
    truncate = by_id("humaneval+", "HumanEvalPlus-mini.jsonl", "HumanEval/2")  # atol 1e-6
    expected = E.expected_outputs(truncate)
    near, far = "\n    return number % 1.0 + 1e-9\n", "\n    return number % 1.0 + 1e-4\n"
    assert [r.status for r in run(truncate, [near, far], expected, "plus")] == ["passed", "failed"]
    # atol 0 with float outputs: EvalPlus enforces 1e-6 (0.1 + 0.2 = 0.30000000000000004)
    add = inline_record()
    expected = E.expected_outputs(add)
    assert expected["base"]["outputs"] == [0.1 + 0.2]
    close, off = "    return 0.3 if a < 1 else a + b\n", "    return 0.3001 if a < 1 else a + b\n"
    assert [r.status for r in run(add, [close, off], expected, "plus")] == ["passed", "failed"]


def test_evalplus_comparison_semantics():
    match = E._evalplus_match
    assert match([], 1, 1.0, 0, "humaneval", "f")  # == first: an int equal to the float passes
    assert match([], 0.1 + 0.2, 0.3, 0, "humaneval", "f") and not match([], 0.3001, 0.3, 0, "humaneval", "f")
    assert match([], [1.0, 2.0000001], [1.0, 2.0], 0, "humaneval", "f")  # lists of floats: atol 1e-6 too
    assert not match([], (1.0, 2.0000001), [1.0, 2.0], 0, "humaneval", "f")  # not exact, and another type
    assert not match([], [1.0], [1.0, 2.0], 0, "humaneval", "f")
    assert match([], 10, 11, 2, "mbpp", "f") and not match([], 10, 13, 2, "mbpp", "f")  # explicit atol, ints
    assert not match([], math.nan, math.nan, 0, "humaneval", "f") and match([], math.inf, math.inf, 0, "mbpp", "f")
    assert not match([], "abc", "abd", 1e-3, "mbpp", "f")
    # special oracles
    assert match([], (5, 4), (4, 5), 0, "mbpp", "similar_elements") and not match([], (5, 4), (4, 5), 0, "mbpp", "f")
    assert match([], "Found a match!", True, 0, "mbpp", "text_match_three")
    assert not match([], None, True, 0, "mbpp", "text_match_three")
    assert match([], 0, 12, 0, "mbpp", "sum_div") and match([], "anything", 1, 0, "mbpp", "are_equivalent")
    cubic = [[-6, 11, -6, 1]]  # roots 1, 2, 3: any root passes, not only the reference's
    assert match(cubic, 2.0000001, 1.0, 1e-4, "humaneval", "find_zero")
    assert not match(cubic, 5.0, 1.0, 1e-4, "humaneval", "find_zero")


def test_evoeval_comparison_semantics():
    equal = E._evoeval_equal
    assert not equal(1, 1.0) and not equal((1, 2), [1, 2]) and equal([], [])
    assert equal([1.0, 2.0], [1.0000001, 2.0]) and equal({"a": [1.0]}, {"a": [1.0000001]})
    assert equal(math.nan, math.nan) and not equal({"a": 1}, {"b": 1}) and equal({1, 2}, {2, 1})
    palindrome = E._evoeval_oracle
    assert palindrome("difficult", "EvoEval/10", ["aB"], "aBa", "aBa") is True
    assert palindrome("difficult", "EvoEval/10", ["aB"], "aBc", "aBa") is False
    assert palindrome("difficult", "EvoEval/11", ["aB"], "aBc", "aBa") is None
    assert E._allclose(1.0, [1.0, 1.0000001], rtol=0, atol=1e-6)  # numpy-style broadcast of a scalar


# --------------------------------------------------------------------------- expected outputs, out of process
def test_expected_outputs_run_in_another_process():
    spy = inline_record(canonical_solution="    import math, os\n    math.pi = 3\n    return [os.getpid(), math.pi]\n",
                        base_input=[[1, 2]], plus_input=[[3, 4], [5, 6]])
    expected = E.expected_outputs(spy)
    (pid, pi), = expected["base"]["outputs"]
    assert pid != os.getpid() and pi == 3 and math.pi > 3.14  # the patch stayed in the child
    assert len(expected["plus"]["seconds"]) == 2 and all(s >= 0 for s in expected["plus"]["seconds"])
    assert E.reference_seconds(expected, "plus") == pytest.approx(sum(expected["base"]["seconds"])
                                                                  + sum(expected["plus"]["seconds"]))
    assert E.expected_outputs(B.load_humaneval()[0]) == {}  # checked by its own test code: nothing to compute

    with pytest.raises(UserError, match=r"HumanEval/900.*plus input #1: ZeroDivisionError"):
        E.expected_outputs(inline_record(canonical_solution="    return a / (b - 6)\n", base_input=[[1, 2]],
                                         plus_input=[[3, 4], [5, 6]]))
    with pytest.raises(UserError, match="not builtin data"):
        E.expected_outputs(inline_record(canonical_solution="    return object()\n"))
    with pytest.raises(UserError, match="took over 1s"):
        E.expected_outputs(inline_record(canonical_solution="    while True:\n        pass\n"), timeout_s=1.0)


def test_a_completion_cannot_change_the_expected_outputs():
    add = inline_record()
    expected = E.expected_outputs(add)
    # a wrong completion that also patches the json module the checks decode their cases with (no cases: pass?)
    forge = ("    return None\n\nimport json\n"
             "json.loads = lambda *a, **k: {'dict': [['inputs', []], ['outputs', []]]}\n")
    honest = "    return a + b\n"
    assert [r.status for r in run(add, [forge, honest], expected, "plus")] == ["failed", "passed"]


def test_mbpp_plus_inputs_get_their_tuples_back():
    shared = by_id("mbpp+", "MbppPlus-mini.jsonl", "Mbpp/2")
    expected = E.expected_outputs(shared)
    assert expected["base"]["inputs"][0] == [(3, 4, 5, 6), (5, 7, 4, 10)]
    assert set(expected["base"]["outputs"][0]) == {4, 5}
    # tuples arrive as tuples, and the order of the shared elements does not matter (set-equality task)
    reordered = ("def similar_elements(a, b):\n  assert isinstance(a, tuple) and isinstance(b, tuple)\n"
                 "  return tuple(sorted(set(a) & set(b), reverse=True))\n")
    assert run(shared, [reordered], expected, "plus")[0].status == "passed"


def test_evoeval_variant_with_base_and_plus_inputs():
    verbose = {"benchmark": "evoeval_verbose", "task_id": "EvoEval/7", "test": "",
               "prompt": 'def double(x):\n    """Twice x, at length."""\n', "canonical_solution": "    return 2 * x\n",
               "entry_point": "double", "base_input": [[1], [2.5]], "plus_input": [[-3]]}
    assert E.suites(verbose) == {"base": "evoeval_verbose", "plus": "evoeval_verbose+"}
    expected = E.expected_outputs(verbose)
    assert expected["base"]["outputs"] == [2, 5.0] and expected["plus"]["outputs"] == [-6]
    # EvoEval compares kinds: 5 (int) for 5.0 (float) fails, although 5 == 5.0
    as_int = "\n    return int(2 * x)\n"
    assert [r.status for r in run(verbose, ["\n    return x + x\n", as_int], expected, "plus")] == [
        "passed", "failed"]


# --------------------------------------------------------------------------- BigCodeBench and errors
def test_bigcodebench_job_says_when_the_sandbox_lacks_a_library():
    assert [E.sandbox_missing_libs(r) for r in load("bigcodebench", "BigCodeBench-mini.jsonl")] == [[], [], []]
    rec = {"benchmark": "bigcodebench", "task_id": "BigCodeBench/900", "libs": ["numpy"], "entry_point": "task_func",
           "prompt": 'import numpy as np\nfrom scipy import stats\n\ndef task_func(n):\n    """Sum of 0..n-1."""\n',
           "canonical_solution": "    return int(np.sum(np.arange(n)))\n",
           "test": "import unittest\nclass TestCases(unittest.TestCase):\n"
                   "    def test_four(self):\n        self.assertEqual(task_func(4), 6)\n"}
    assert E.sandbox_missing_libs(rec) == ["numpy", "scipy"]
    result = run(rec, [rec["canonical_solution"]])[0]
    assert result.status == "failed" and E.SANDBOX_LIBS_MARKER in result.message and "numpy" in result.message
    summary = E.score({"bigcodebench": {"BigCodeBench/900": [result]}})["benchmarks"]["bigcodebench"]
    assert summary["n_missing_libs"] == 1 and summary["pass@1"] == 0.0


def test_check_job_refuses_what_it_cannot_check():
    plus = by_id("humaneval+", "HumanEvalPlus-mini.jsonl", "HumanEval/0")
    with pytest.raises(UserError, match="expected_outputs"):
        E.check_job(plus, "    return True\n")
    with pytest.raises(UserError, match="lack"):
        E.check_job(plus, "    return True\n", {"base": {"inputs": [], "outputs": [], "seconds": []}}, "plus")
    mbpp = by_id("mbpp", "mbpp.jsonl", "Mbpp/2")
    with pytest.raises(UserError, match="no 'plus' inputs"):
        E.check_job(mbpp, "pass\n", {}, "plus")
    with pytest.raises(UserError, match="not a Python identifier"):
        E.check_job({**mbpp, "entry_point": "a b"}, "pass\n")
    with pytest.raises(UserError, match="nothing to check"):
        E.suites({**mbpp, "test": ""})
    with pytest.raises(UserError, match="unknown benchmark"):
        E.family({"benchmark": "apps", "task_id": "x"})


# --------------------------------------------------------------------------- scores and the data codec
def test_score_pass_at_k_by_hand():
    ok, bad = ExecResult("passed", "ok", 0.1), ExecResult("failed", "AssertionError: base input #0", 0.1)
    results = {"humaneval": {"HumanEval/0": [ok, bad, ok, bad, bad], "HumanEval/1": [ok] * 5},
               "humaneval+": {"HumanEval/0": [bad, {"status": "timeout", "message": "timed out after 4s"}] + [bad] * 3,
                              "HumanEval/1": [{"status": "passed", "message": "ok"}] * 5}}
    out = E.score(results, k_list=(1, 2, 10))
    he, plus = out["benchmarks"]["humaneval"], out["benchmarks"]["humaneval+"]
    pass2 = 1 - math.comb(3, 2) / math.comb(5, 2)  # n=5, c=2: 0.7
    assert he["pass@1"] == pytest.approx((0.4 + 1.0) / 2) and he["pass@2"] == pytest.approx((pass2 + 1.0) / 2)
    assert "pass@10" not in he  # k above the samples per task: left out
    assert he["n_tasks"] == 2 and he["n_samples"] == 10 and he["status_counts"] == {"passed": 7, "failed": 3}
    assert plus["pass@1"] == pytest.approx(0.5) and plus["status_counts"] == {"failed": 4, "timeout": 1,
                                                                              "passed": 5}
    row = next(r for r in out["tasks"] if r["benchmark"] == "humaneval+" and r["task_id"] == "HumanEval/0")
    assert row == {"benchmark": "humaneval+", "task_id": "HumanEval/0", "n": 5, "passed": 0,
                   "statuses": {"failed": 4, "timeout": 1}, "first_failure": "AssertionError: base input #0"}
    with pytest.raises(UserError, match="no samples"):
        E.score({"mbpp": {"Mbpp/2": []}})


def test_codec_round_trips_builtin_data():
    values = [None, True, 0, -5, 1.5, -0.0, math.inf, "s\n", b"\x00\xff", 1 + 2j, (1, (2,)), [1, [2.0]],
              {1, 2}, frozenset({3}), {(1, 2): {"a": [1.0]}, 3: None}, []]
    for v in values:
        back = E._decode(json.loads(json.dumps(E._encode(v))))
        assert back == v and repr(back) == repr(v)  # same types, same order
    huge = 7**20000  # more digits than int <-> str conversion allows: travels as hex
    assert E._decode(json.loads(json.dumps(E._encode([huge, -huge])))) == [huge, -huge]
    assert math.isnan(E._decode(json.loads(json.dumps(E._encode(math.nan)))))
    assert type(E._decode(E._encode(Counter("aab")))) is dict  # subclasses become their builtin base
    with pytest.raises(TypeError, match="not builtin data"):
        E._encode([object()])
