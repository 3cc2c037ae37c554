"""Phase-3 synthesis: code extraction, validation of synthetic files, prompt shape, seed choice, resume."""
from __future__ import annotations

import hashlib

import pandas as pd
import pytest

from snowcoder import storage
from snowcoder.config import DecontamConfig, SynthConfig, UserError
from snowcoder.manifest import Manifest
from tasks.benchmarks import load_humaneval
from tasks.decontam import benchmark_substrings
from tasks import synthesize as synth
from tasks.synthesize import build_prompt, extract_code, select_seeds, seed_snippet, validate

GOOD = '''"""Return the largest even number in a list, or None when there is none."""


def largest_even(numbers):
    evens = [n for n in numbers if n % 2 == 0]
    return max(evens) if evens else None


assert largest_even([1, 2, 3, 8, 5]) == 8
assert largest_even([1, 3]) is None
assert largest_even([]) is None
'''


@pytest.fixture(scope="module")
def substrings():
    return benchmark_substrings(DecontamConfig())


# --------------------------------------------------------------------------- extract_code
def test_extract_code_prefers_the_python_block():
    text = "Here:\n```bash\nls -l\n```\nand\n```python\nx = 1\n```\n```python\ny = 2\n```"
    assert extract_code(text) == "x = 1\n"


def test_extract_code_falls_back_to_an_untagged_block():
    assert extract_code("```\nprint(1)\n```") == "print(1)\n"
    assert extract_code("```py\nz = 3\n```") == "z = 3\n"


def test_extract_code_none_without_a_closed_block():
    assert extract_code("just prose, no code") is None
    assert extract_code("```python\ndef f():\n    return 1\n") is None  # cut by max_new_tokens
    assert extract_code("```bash\nls\n```") is None


# --------------------------------------------------------------------------- validate
def test_validate_accepts_a_passing_file(substrings):
    assert validate(GOOD, 10, substrings) == (True, "ok")


def test_validate_rejects_missing_or_broken_code(substrings):
    assert validate(None, 10, substrings) == (False, "no-code")
    assert validate("  \n", 10, substrings) == (False, "no-code")
    assert validate("def f(:\n    pass\nassert f()\n", 10, substrings) == (False, "syntax-error")


def test_validate_requires_module_level_asserts_that_call_the_solution(substrings):
    no_asserts = GOOD.split("\n\nassert")[0] + "\n"
    assert validate(no_asserts, 10, substrings) == (False, "no-tests")
    never_called = no_asserts + "\n\ndef test_it():\n    assert largest_even([2]) == 2\n"
    assert validate(never_called, 10, substrings) == (False, "no-tests")
    trivial = no_asserts + "\nassert True\nassert 1 + 1 == 2\n"
    assert validate(trivial, 10, substrings) == (False, "no-tests")


def test_validate_rejects_failing_tests(substrings):
    ok, reason = validate(GOOD.replace("== 8", "== 9"), 10, substrings)
    assert not ok and reason.startswith("tests-failed: ") and "AssertionError" in reason


def test_validate_rejects_an_early_exit_before_the_asserts(substrings):
    cheat = GOOD.replace("\n\nassert largest_even([1, 2", "\n\nimport os; os._exit(0)\nassert largest_even([1, 2")
    cheat = cheat.replace("== 8", "== 999")
    ok, reason = validate(cheat, 10, substrings)
    assert not ok and reason.startswith("tests-failed")


def test_validate_rejects_a_timeout(substrings):
    slow = GOOD + "while True:\n    pass\n"
    assert validate(slow, 1.0, substrings) == (False, "timeout")


def test_validate_rejects_humaneval_contamination(substrings):
    problem = load_humaneval()[0]
    tests = "\n\nassert has_close_elements([1.0, 2.0], 0.5) is False\n"
    contaminated = problem["prompt"] + problem["canonical_solution"] + tests
    ok, reason = validate(contaminated, 10, substrings)
    assert not ok and reason == "contaminated:HumanEval/0"


def test_validate_rejects_copies_of_the_demonstrations(substrings):
    answer = synth.DEMONSTRATIONS[0][1]
    assert validate(answer, 10, substrings) == (False, "copied-example")


# --------------------------------------------------------------------------- prompt and seeds
def test_build_prompt_shape():
    header = "# Licensed under ...\n# (c) someone\n\nimport os\n\n\n"
    seed = header + "def walk(path):\n    return list(os.walk(path))\n" + "x = 1\n" * 100
    messages = build_prompt(seed, seed_chars=200)
    assert messages[0] == {"role": "system", "content": synth.SYSTEM_PROMPT}
    assert [m["role"] for m in messages[1:]] == ["user", "assistant"] * synth.USE_DEMONSTRATIONS + ["user"]
    last = messages[-1]["content"]
    assert "def walk(path)" in last and "Licensed" not in last  # starts at the first definition
    assert "assert" in last
    assert len(seed_snippet(seed, 200)) <= 200
    assert len(seed_snippet("def f():\n" + "    x = 1\n" * 40, 10_000).splitlines()) == synth.SNIPPET_LINES


# --------------------------------------------------------------------------- staged completion parts
def test_longest_parsable_prefix_cuts_at_the_last_line_that_parses():
    code = "def f(x):\n    return x + 1\n\nassert f(1) == 2\nassert f(2) ==\nmore prose"
    assert synth.longest_parsable_prefix(code) == "def f(x):\n    return x + 1\n\nassert f(1) == 2\n"
    assert synth.longest_parsable_prefix("def f(:\n") == ""
    assert synth.longest_parsable_prefix("x = 1") == "x = 1"


def test_problem_solution_and_tests_parts():
    assert synth.problem_part(' Sum a list.\n\nMore.""" junk') == "Sum a list."
    assert synth.problem_part("  \n") is None
    assert synth.solution_part(" total(xs):\n    return sum(xs)\n\n\n\nprint(1)") == (
        "def total(xs):\n    return sum(xs)\n", "total")
    assert synth.solution_part("\n(broken") is None
    tests = synth.tests_part("[1, 2]) == 3\nassert total([]) == 0\nassert total([1]) ==\n\nprose", "total")
    assert tests == ["assert total([1, 2]) == 3", "assert total([]) == 0"]
    multi = synth.tests_part("\n    [1, 2]\n) == 3\nassert total([1, 2]) == 3\nx = 1\nassert total([4]) == 4\n", "total")
    assert multi == ["assert total(\n    [1, 2]\n) == 3", "assert total([4]) == 4"]  # statements, deduplicated
    assert len(synth.tests_part("[]) == 0\n" + "".join(f"assert total([{i}]) == {i}\n" for i in range(9)),
                                "total")) == synth.MAX_TESTS
    code = synth.assemble("Sum a list.", "def total(xs):\n    return sum(xs)\n", tests)
    assert code.startswith('"""Sum a list."""\n') and code.endswith("assert total([]) == 0\n")


def test_stage_budgets_sum_to_max_new_tokens():
    assert sum(synth.stage_budgets(320)) == 320 and sum(synth.stage_budgets(160)) == 160


def test_render_prompt_applies_the_chat_template_and_opens_the_answer():
    class Tok:
        chat_template = "x"

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            assert not tokenize and add_generation_prompt
            return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"

    text = synth.render_prompt(Tok(), build_prompt("def f():\n    pass\n", 200))
    assert text.endswith("<assistant>" + synth.ASSISTANT_PREFIX)


def _doc(doc_id, language, score, content="def f():\n    return 1\n"):
    return {"doc_id": doc_id, "repo": "r", "path": f"{doc_id}.py", "language": language, "content": content,
            "size_bytes": len(content), "content_sha256": hashlib.sha256(content.encode()).hexdigest(),
            "source": "test", "score": score}


def test_select_seeds_prefers_python_then_score():
    docs = pd.DataFrame([_doc("a", "python", 0.2), _doc("b", "java", 0.99), _doc("c", "python", 0.9),
                         _doc("d", "python", 0.5)])
    assert select_seeds(docs, 2)["doc_id"].tolist() == ["c", "d"]
    assert select_seeds(docs, 4)["doc_id"].tolist() == ["c", "d", "a", "b"]
    with pytest.raises(UserError):
        select_seeds(docs.drop(columns="score"), 2)


# --------------------------------------------------------------------------- the stage, with a stub generator
def test_synthesize_with_a_stub_generator_dedups_records_and_resumes(tmp_path, monkeypatch):
    """Generation is stubbed (the real generator is the slow test below); extraction, validation, outputs are real."""
    # what the generator writes at each stage: problem (after '"""'), solution (after 'def'), tests
    good_solution = " largest_even(numbers):\n    evens = [n for n in numbers if n % 2 == 0]\n" \
                    "    return max(evens) if evens else None\n\n\n"
    good_tests = "[1, 2, 3, 8, 5]) == 8\nassert largest_even([1, 3]) is None\nassert largest_even([]) is None\n\n"
    answers = {
        "s1": ["Return the largest even number in a list, or None when there is none.\"\"\"", good_solution, good_tests],
        "s2": ["Return the largest even number in a list, or None when there is none.", good_solution, good_tests],
        "s3": ['Bad."""', " f():\n    return 1\n", ") == 2\n"],
        "s4": ["Fine.", "\n(never a function", ""],
    }
    calls = []

    def fake_generate_with(model, tok, prompts, **kwargs):
        stage = [synth.STOPS_PROBLEM, synth.STOPS_SOLUTION, synth.STOPS_TESTS].index(kwargs["stops"])
        if stage == 0:
            calls.append(len(prompts))
        return [(answers[p.split("SEED:")[1][:2]][stage], 7) for p in prompts]

    monkeypatch.setattr(synth, "load_generator", lambda name: (object(), object()))
    monkeypatch.setattr(synth, "render_prompt", lambda tok, messages: messages[-1]["content"])
    monkeypatch.setattr("tasks.evaluate.generate_with", fake_generate_with)

    docs = pd.DataFrame([_doc(f"s{i}", "python", 1.0 - i / 10, content=f"SEED:s{i}\n") for i in range(1, 5)])
    seeds_dir = tmp_path / "seeds"
    uris = storage.write_shards(docs, str(seeds_dir), "docs", 10)
    seeds = Manifest(stage="select", uris={"docs": uris})
    cfg = SynthConfig(n_seeds=4, batch_size=3, max_new_tokens=16, exec_timeout_s=5)
    out = str(tmp_path / "synth")

    m = synth.synthesize(cfg, seeds, out, decontam_cfg=DecontamConfig())
    assert calls == [3, 1]
    assert m.stage == "synthesize"
    assert m.counts["generated"] == 4 and m.counts["kept"] == 1 and m.counts["rejected"] == 3
    assert m.counts["tokens_generated"] == 7 * 3 * 3 + 7 * 2
    assert m.stats["rejected_by_reason"] == {"duplicate": 1, "tests-failed": 1, "no-solution": 1}
    kept = storage.read_shards(m.shard_uris("docs"))
    assert list(kept.columns) == storage.DOC_COLUMNS
    assert kept["path"].tolist() == ["synthetic/s1-0.py"] and kept["repo"].tolist() == ["synthetic"]
    assert kept["source"].tolist() == ["synthetic:embedded:smollm2"] and kept["language"].tolist() == ["python"]
    assert kept["content"].iloc[0] == GOOD
    records = storage.read_jsonl(m.uris["generations"])
    assert [(r["seed_doc_id"], r["kept"], r["reason"].split(":")[0]) for r in records] == [
        ("s1", True, "ok"), ("s2", False, "duplicate"), ("s3", False, "tests-failed"), ("s4", False, "no-solution")]

    # resume: a run killed after the first batch (3 records, last line torn) only generates the missing seed
    lines = storage.read_text(m.uris["generations"]).splitlines()
    storage.write_text(m.uris["generations"], "\n".join(lines[:3]) + "\n" + lines[3][:20])
    calls.clear()
    m2 = synth.synthesize(cfg, seeds, out, decontam_cfg=DecontamConfig())
    assert calls == [1]
    rate = "gen_tok_per_s"  # depends on timing
    assert {k: v for k, v in m2.counts.items() if k != rate} == {k: v for k, v in m.counts.items() if k != rate}
    assert m2.digest == m.digest
    # complete: nothing to generate, nothing duplicated
    calls.clear()
    m3 = synth.synthesize(cfg, seeds, out, decontam_cfg=DecontamConfig())
    assert calls == [] and len(storage.read_jsonl(m3.uris["generations"])) == 4


# --------------------------------------------------------------------------- the real generator
@pytest.mark.slow
def test_load_generator_and_synthesize_one_seed(tmp_path):
    import sysconfig
    from pathlib import Path

    content = Path(sysconfig.get_paths()["stdlib"], "colorsys.py").read_text()
    docs = pd.DataFrame([{**_doc("colorsys", "python", 0.9, content), "path": "colorsys.py"}])
    uris = storage.write_shards(docs, str(tmp_path / "seeds"), "docs", 10)
    cfg = SynthConfig(n_seeds=1, max_new_tokens=48, batch_size=1, seed_chars=400)
    m = synth.synthesize(cfg, Manifest(stage="select", uris={"docs": uris}), str(tmp_path / "synth"),
                         decontam_cfg=DecontamConfig())
    assert m.stage == "synthesize" and m.counts["generated"] == 1
    assert m.counts["kept"] + m.counts["rejected"] == 1
    assert 0 < m.counts["tokens_generated"] <= 48 and m.counts["gen_tok_per_s"] > 0
    assert sum(m.stats["rejected_by_reason"].values()) == m.counts["rejected"]
    kept = storage.read_shards(m.shard_uris("docs"))
    assert list(kept.columns) == storage.DOC_COLUMNS and len(kept) == m.counts["kept"]
    (record,) = storage.read_jsonl(m.uris["generations"])
    assert record["generation"].startswith(synth.ASSISTANT_PREFIX) and record["seed_doc_id"] == "colorsys"
