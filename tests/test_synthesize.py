"""Phase-3 synthesis: prompt templates, seed snippets and stratification, validation of synthetic files, dedup,
the local (stubbed) generator, and the OpenAI-compatible backend against a real server on 127.0.0.1 (`snowcoder serve`
over a micro random checkpoint): a run completes with one record per seed, through a proxy that fails 30% of requests,
and after a SIGKILL mid-way; an API key never reaches the records, the manifest or the logs."""
from __future__ import annotations

import hashlib
import io
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest

from snowcoder import storage
from snowcoder.config import DecontamConfig, SynthConfig, UserError
from snowcoder.manifest import Manifest
from tasks import synthesize as synth
from tasks.benchmarks import load_humaneval
from tasks.decontam import benchmark_substrings
from tasks.synthesize import extract_code, load_template, seed_quotas, seed_snippet, select_seeds, validate
from test_llm_client import FaultyProxy, checkpoint, server  # noqa: F401  (fixtures: micro checkpoint, `snowcoder serve`)

REPO = Path(__file__).resolve().parents[1]

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


# --------------------------------------------------------------------------- prompt templates
def test_default_template_renders_system_and_user_turns():
    template = load_template("oss_instruct_pretrain")
    path = synth.PROMPTS_DIR / "oss_instruct_pretrain.md"
    assert template.digest == hashlib.sha256(path.read_bytes()).hexdigest()
    messages = template.messages("def walk(path):\n    return {x: 1}", "java")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == ("You are exceptionally skilled at crafting high-quality programming problems "
                                      "and offering precise solutions.")  # Magicoder's, verbatim
    user = messages[1]["content"]
    assert "java code snippet:\n\ndef walk(path):\n    return {x: 1}\n\nGain inspiration" in user
    assert "{snippet}" not in user and "{language}" not in user and "assert" in user and "<!--" not in user
    assert template.example_names == frozenset()


def test_fewshot_template_keeps_the_demonstration_turns_and_its_names():
    template = load_template("oss_instruct_pretrain_fewshot")
    messages = template.messages("x = 1", "python")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[2]["content"].startswith("```python\n") and "x = 1" in messages[3]["content"]
    assert "x = 1" not in messages[1]["content"]  # only the last turn gets the snippet
    assert template.example_names == {"strip_all_prefixes"}
    assert template.digest != load_template("oss_instruct_pretrain").digest


def test_template_from_a_path_and_bad_templates(tmp_path):
    good = tmp_path / "mine.md"
    good.write_text("notes\n## system\nS {snippet}\n## user\nWrite from {snippet} ({language}).\n")
    template = load_template(str(good))
    assert template.messages("A{language}", "go") == [  # the snippet goes in last: its braces stay literal
        {"role": "system", "content": "S {snippet}"}, {"role": "user", "content": "Write from A{language} (go)."}]
    for text in ("## user\nno snippet\n", "## user\n{snippet}\n## assistant\nok\n",
                 "## user\nhi\n## system\nlate\n## user\n{snippet}\n", "no parts {snippet}"):
        good.write_text(text)
        with pytest.raises(UserError, match="prompt template"):
            load_template(str(good))
    with pytest.raises(UserError, match="not found"):
        load_template("no_such_template")


# --------------------------------------------------------------------------- seeds
CONTENT = "".join(f"line {i}\n" if i % 4 else "\n" for i in range(1, 41))  # lines 4, 8, ... are blank


def test_seed_snippets_are_consecutive_lines_within_bounds_and_reproducible():
    lines = CONTENT.splitlines()
    spans = []
    for sample in range(40):
        s = seed_snippet(CONTENT, "doc", sample, min_lines=2, max_lines=6, max_chars=10_000, seed=976)
        assert s.text == "\n".join(lines[s.first_line - 1: s.last_line])  # consecutive, range kept for lineage
        assert lines[s.first_line - 1].strip()  # starts on a non-blank line
        assert s.last_line - s.first_line + 1 <= 6 and s.last_line <= len(lines)
        assert s == seed_snippet(CONTENT, "doc", sample, min_lines=2, max_lines=6, max_chars=10_000, seed=976)
        spans.append((s.first_line, s.last_line))
    assert len(set(spans)) > 20  # samples draw their own snippets
    one = seed_snippet(CONTENT, "doc", 0, min_lines=1, max_lines=1, max_chars=10_000, seed=1)
    assert one.first_line == one.last_line
    assert seed_snippet(CONTENT, "doc", 0, min_lines=1, max_lines=15, max_chars=10_000, seed=1) != \
        seed_snippet(CONTENT, "doc", 0, min_lines=1, max_lines=15, max_chars=10_000, seed=2)
    cut = seed_snippet("a" * 50 + "\n" + "b" * 50 + "\n", "d", 0, min_lines=2, max_lines=2, max_chars=60, seed=0)
    assert len(cut.text) <= 60 and "\n" not in cut.text


def test_seed_quotas_follow_the_shares_and_refill_from_other_languages():
    counts = {"python": 100, "java": 30, "go": 10}
    assert seed_quotas(counts, 20, {"python": 0.5}) == {"python": 10, "java": 7, "go": 3}  # 7.5 / 2.5: name order
    assert seed_quotas(counts, 20, {"python": 0.5, "go": 0.5}) == {"python": 10, "java": 0, "go": 10}
    assert seed_quotas(counts, 40, {"go": 0.5}) == {"python": 23, "java": 7, "go": 10}  # go has only 10
    assert seed_quotas(counts, 500, {"python": 0.5}) == counts
    assert seed_quotas({"python": 3}, 2, {"python": 0.2}) == {"python": 2}
    assert sum(seed_quotas(counts, 7, {}).values()) == 7


def _doc(doc_id, language, score, content="def f():\n    return 1\n"):
    return {"doc_id": doc_id, "repo": "r", "path": f"{doc_id}.py", "language": language, "content": content,
            "size_bytes": len(content), "content_sha256": hashlib.sha256(content.encode()).hexdigest(),
            "source": "test", "score": score}


def test_select_seeds_takes_the_best_files_per_language_in_score_order():
    docs = pd.DataFrame([_doc("a", "python", 0.2), _doc("b", "java", 0.99), _doc("c", "python", 0.9),
                         _doc("d", "python", 0.5), _doc("e", "java", 0.1), _doc("f", "python", 1.0, "  \n")])
    assert select_seeds(docs, 2, {"python": 0.5})["doc_id"].tolist() == ["b", "c"]
    assert select_seeds(docs, 4, {"python": 0.75})["doc_id"].tolist() == ["b", "c", "d", "a"]
    assert select_seeds(docs, 9, {})["doc_id"].tolist() == ["b", "c", "d", "a", "e"]  # the empty file is no seed
    with pytest.raises(UserError):
        select_seeds(docs.drop(columns="score"), 2, {})


def test_synth_config_checks_snippet_lines_and_seed_shares():
    with pytest.raises(ValueError, match="snippet_min_lines"):
        SynthConfig(snippet_min_lines=5, snippet_max_lines=2)
    with pytest.raises(ValueError, match="seed_language_shares"):
        SynthConfig(seed_language_shares={"python": 0.8, "java": 0.5})


# --------------------------------------------------------------------------- extract_code
def test_extract_code_prefers_the_python_block():
    text = "Here:\n```bash\nls -l\n```\nand\n```python\nx = 1\n```\n```python\ny = 2\n```"
    assert extract_code(text) == "x = 1\n"
    assert extract_code("```\nprint(1)\n```") == "print(1)\n" and extract_code("```py\nz = 3\n```") == "z = 3\n"
    assert extract_code("just prose, no code") is None
    assert extract_code("```python\ndef f():\n    return 1\n") is None  # cut by max_new_tokens
    assert extract_code("```bash\nls\n```") is None


def test_code_from_reply_takes_a_block_or_an_unfenced_file():
    assert synth.code_from_reply("Sure:\n```python\nx = 1\n```\nDone.") == "x = 1\n"
    assert synth.code_from_reply("\nx = 1\nassert x\n") == "x = 1\nassert x\n"
    assert synth.code_from_reply("Here is a file:\n```python\nx = (") is None  # truncated fence
    assert synth.code_from_reply("Just words, sorry.") is None


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


def test_validate_rejects_failing_tests_and_an_early_exit(substrings):
    ok, reason = validate(GOOD.replace("== 8", "== 9"), 10, substrings)
    assert not ok and reason.startswith("tests-failed: ") and "AssertionError" in reason
    cheat = GOOD.replace("\n\nassert largest_even([1, 2", "\n\nimport os; os._exit(0)\nassert largest_even([1, 2")
    ok, reason = validate(cheat.replace("== 8", "== 999"), 10, substrings)
    assert not ok and reason.startswith("tests-failed")


def test_validate_rejects_a_timeout(substrings):
    assert validate(GOOD + "while True:\n    pass\n", 1.0, substrings) == (False, "timeout")


def test_validate_rejects_humaneval_contamination(substrings):
    problem = load_humaneval()[0]
    contaminated = problem["prompt"] + problem["canonical_solution"] + \
        "\n\nassert has_close_elements([1.0, 2.0], 0.5) is False\n"
    assert validate(contaminated, 10, substrings) == (False, "contaminated:HumanEval/0")


def test_validate_rejects_copies_of_the_demonstrations(substrings):
    template = load_template("oss_instruct_pretrain_fewshot")
    answer = extract_code(template.parts[2][1])
    assert validate(answer, 10, substrings, template.example_names) == (False, "copied-example")
    assert validate(answer, 10, substrings) == (True, "ok")  # the default template has no demonstration


# --------------------------------------------------------------------------- dedup of valid files
BODY = "".join(f"    total_{i} = values[{i}] * weight_{i} + offset\n" for i in range(30))
FILE_A = f"def score(values, offset):\n{BODY}    return total_0\n\n\nassert score(list(range(30)), 0) == 0\n"


def test_dedup_outcomes_exact_near_and_phase2_duplicates():
    near = FILE_A.replace("total_29 = values[29]", "total_29 = values[28]")
    phase2 = FILE_A.replace("offset", "shift").replace("def score", "def rate")  # not near A: shift everywhere
    copied = phase2.replace("total_3 = ", "total_3 =  ") + "\n# copied\n"
    rows = [{"valid": True, "code": FILE_A, "reason": "ok"},
            {"valid": True, "code": FILE_A.replace("\n\n\nassert", "\nassert"), "reason": "ok"},  # formatting only
            {"valid": False, "code": None, "reason": "tests-failed: AssertionError"},
            {"valid": True, "code": near, "reason": "ok"},
            {"valid": True, "code": copied, "reason": "ok"}]
    assert synth.dedup_outcomes(rows, [phase2, "unrelated text " * 20], 0.7) == [
        "ok", "duplicate", "tests-failed", "near-duplicate", "near-duplicate-phase2"]
    assert synth.dedup_outcomes(rows[:1], [], 0.7) == ["ok"]


def test_record_log_writes_one_record_per_key_under_concurrency(tmp_path):
    uri = str(tmp_path / "generations.jsonl")
    log = synth.RecordLog(uri, [{"seed_doc_id": "a", "sample": 0, "prompt_digest": "p", "settings_digest": "s"}] * 2)
    rows = [{"seed_doc_id": f"s{i % 5}", "sample": 0, "prompt_digest": "p", "settings_digest": "s", "i": i}
            for i in range(40)]
    threads = [threading.Thread(target=log.append, args=(r,)) for r in rows]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    written = storage.read_jsonl(uri)
    assert len(written) == 6 and len({synth.record_key(r) for r in written}) == 6 and log.appended == 5


# --------------------------------------------------------------------------- staged completion parts (local)
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
    multi = synth.tests_part("\n    [1, 2]\n) == 3\nassert total([1, 2]) == 3\nx = 1\nassert total([4]) == 4\n",
                             "total")
    assert multi == ["assert total(\n    [1, 2]\n) == 3", "assert total([4]) == 4"]  # statements, deduplicated
    assert len(synth.tests_part("[]) == 0\n" + "".join(f"assert total([{i}]) == {i}\n" for i in range(9)),
                                "total")) == synth.MAX_TESTS
    code = synth.assemble("Sum a list.", "def total(xs):\n    return sum(xs)\n", tests)
    assert code.startswith('"""Sum a list."""\n') and code.endswith("assert total([]) == 0\n")
    assert sum(synth.stage_budgets(320)) == 320 and sum(synth.stage_budgets(160)) == 160


def test_render_prompt_applies_the_chat_template_and_opens_the_answer():
    class Tok:
        chat_template = "x"

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            assert not tokenize and add_generation_prompt
            return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"

    text = synth.render_prompt(Tok(), load_template("oss_instruct_pretrain").messages("def f():", "python"))
    assert text.startswith("<system>You are") and text.endswith("<assistant>" + synth.ASSISTANT_PREFIX)


# --------------------------------------------------------------------------- the stage, local generator stubbed
def _seeds(tmp_path, docs) -> Manifest:
    uris = storage.write_shards(pd.DataFrame(docs), str(tmp_path / "seeds"), "docs", 10)
    return Manifest(stage="select", uris={"docs": uris}, digest="seed-digest")


TIMING = ("requests_per_s", "output_tok_per_s", "generated_this_run", "seconds")


def _record_set(uri: str) -> dict:
    """Records by key, without timings and final outcomes (what must not depend on how the run went)."""
    rows = storage.read_jsonl(uri)
    assert len({synth.record_key(r) for r in rows}) == len(rows)
    drop = ("gen_seconds", "kept", "outcome")
    return {synth.record_key(r): {k: v for k, v in r.items() if k not in drop} for r in rows}


def test_synthesize_with_a_stub_local_generator_records_dedups_and_resumes(tmp_path, monkeypatch):
    """Generation is stubbed (the real generator is the slow test below); validation, records, outputs are real."""
    good_solution = " largest_even(numbers):\n    evens = [n for n in numbers if n % 2 == 0]\n" \
                    "    return max(evens) if evens else None\n\n\n"
    good_tests = "[1, 2, 3, 8, 5]) == 8\nassert largest_even([1, 3]) is None\nassert largest_even([]) is None\n\n"
    answers = {  # what the generator writes at each stage: problem (after '"""'), solution (after 'def'), tests
        "s1": ['Return the largest even number in a list, or None when there is none."""', good_solution,
               good_tests],
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

    seeds = _seeds(tmp_path, [_doc(f"s{i}", "python", 1.0 - i / 10, content=f"SEED:s{i}\n") for i in range(1, 5)])
    cfg = SynthConfig(n_seeds=4, batch_size=3, max_new_tokens=16, exec_timeout_s=5)
    out = str(tmp_path / "synth")

    m = synth.synthesize(cfg, seeds, out, decontam_cfg=DecontamConfig())
    assert calls == [3, 1]
    assert m.counts["generated"] == 4 and m.counts["kept"] == 1 and m.counts["rejected"] == 3
    assert m.counts["tokens_generated"] == 7 * 3 * 3 + 7 * 2 and m.counts["acceptance_rate"] == 0.25
    assert m.stats["rejected_by_reason"] == {"duplicate": 1, "no-solution": 1, "tests-failed": 1}
    assert {k: v for k, v in m.counts.items() if k.startswith("rejected.")} == {
        "rejected.duplicate": 1, "rejected.no-solution": 1, "rejected.tests-failed": 1}
    kept = storage.read_shards(m.shard_uris("docs"))
    assert list(kept.columns) == storage.DOC_COLUMNS and kept["content"].tolist() == [GOOD]
    assert kept["path"].tolist() == ["synthetic/s1-0.py"] and kept["source"].tolist() == ["synthetic:embedded:smollm2"]
    records = sorted(storage.read_jsonl(m.uris["generations"]), key=lambda r: r["seed_doc_id"])
    assert [(r["seed_doc_id"], r["kept"], r["outcome"]) for r in records] == [
        ("s1", True, "ok"), ("s2", False, "duplicate"), ("s3", False, "tests-failed"), ("s4", False, "no-solution")]
    digest = load_template(cfg.prompt_template).digest
    assert {r["prompt_digest"] for r in records} == {digest} and m.stats["prompt_digest"] == digest
    assert records[0]["snippet_lines"] == [1, 1] and records[0]["seed_language"] == "python"
    card = m.stats["data_card"]
    assert card["generator"] == {"backend": "local", "model": "embedded:smollm2", "endpoint": None}
    assert card["prompt"]["sha256"] == digest and card["seeds"]["languages"] == {"python": 4}
    assert card["acceptance"]["rejected_by_reason"] == m.stats["rejected_by_reason"]
    assert "| duplicate | 1 |" in synth.data_card_markdown(card)

    # resume: a run killed after 3 records (the 4th line torn) generates only the missing key
    lines = storage.read_text(m.uris["generations"]).splitlines()
    storage.write_text(m.uris["generations"], "\n".join(lines[:3]) + "\n" + lines[3][:20])
    calls.clear()
    m2 = synth.synthesize(cfg, seeds, out, decontam_cfg=DecontamConfig())
    assert calls == [1]
    same = lambda c: {k: v for k, v in c.items() if k not in TIMING}  # noqa: E731
    assert same(m2.counts) == same(m.counts) and m2.digest == m.digest
    calls.clear()
    m3 = synth.synthesize(cfg, seeds, out, decontam_cfg=DecontamConfig())
    assert calls == [] and len(storage.read_jsonl(m3.uris["generations"])) == 4
    # another prompt template is another key: everything is generated again, the old records stay in the file
    calls.clear()
    m4 = synth.synthesize(cfg.model_copy(update={"prompt_template": "oss_instruct_pretrain_fewshot"}), seeds, out,
                          decontam_cfg=DecontamConfig())
    assert calls == [3, 1] and m4.counts["generated"] == 4 and len(storage.read_jsonl(m4.uris["generations"])) == 8


# --------------------------------------------------------------------------- the endpoint backend, real server
SECRET = "sk-synth-test-" + "q7" * 16
KEY_ENV = "SNOWCODER_TEST_SYNTH_KEY"


@pytest.fixture(scope="module")
def endpoint_seeds(tmp_path_factory) -> Manifest:
    """6 phase-2 files (4 Python, 2 Java) with scores."""
    body = "".join(f"    value_{i} = compute({i}, data)\n" for i in range(12))
    docs = [_doc(f"py{i}", "python", 0.9 - i / 20, f"def f{i}(data):\n{body}    return value_{i % 12}\n")
            for i in range(4)]
    docs += [_doc(f"jv{i}", "java", 0.8 - i / 20, f"class C{i} {{\n  int x = {i};\n  int get() {{ return x; }}\n}}\n")
             for i in range(2)]
    return _seeds(tmp_path_factory.mktemp("endpoint-seeds"), docs)


def endpoint_cfg(url: str, **kw) -> SynthConfig:
    return SynthConfig(**{"endpoint": url, "api_key_env": KEY_ENV, "n_seeds": 6, "max_new_tokens": 24,
                          "concurrency": 3, "exec_timeout_s": 5, **kw})


@pytest.fixture(scope="module")
def reference_run(server, endpoint_seeds, tmp_path_factory):  # noqa: F811
    """An uninterrupted run against the server, every log record (DEBUG, all loggers) captured."""
    out = str(tmp_path_factory.mktemp("reference") / "synth")
    logs = io.StringIO()
    handler = logging.StreamHandler(logs)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    os.environ[KEY_ENV] = SECRET
    try:
        m = synth.synthesize(endpoint_cfg(server), endpoint_seeds, out, decontam_cfg=DecontamConfig())
    finally:
        os.environ.pop(KEY_ENV, None)
        root.removeHandler(handler)
        root.setLevel(level)
    return m, logs.getvalue()


@pytest.mark.slow  # starts `snowcoder serve`
def test_a_run_against_a_real_server_records_every_seed_once(reference_run, endpoint_seeds, server):  # noqa: F811
    m, logs = reference_run
    records = storage.read_jsonl(m.uris["generations"])
    assert sorted(r["seed_doc_id"] for r in records) == ["jv0", "jv1", "py0", "py1", "py2", "py3"]
    assert all(r["sample"] == 0 and r["generator"] == "micro" and r["tokens"] > 0 for r in records)
    # a random model writes garbage: acceptance is checked by the flow's counting, not by content
    c = m.counts
    assert c["generated"] == 6 and c["kept"] + c["rejected"] == 6
    assert sum(v for k, v in c.items() if k.startswith("rejected.")) == c["rejected"]
    assert sum(r["kept"] for r in records) == c["kept"] and c["acceptance_rate"] == round(c["kept"] / 6, 4)
    assert c["http_requests"] == 6 and c["retries"] == 0 and c["failures"] == 0
    assert c["requests_per_s"] > 0 and c["output_tok_per_s"] > 0
    assert c["tokens_generated"] == m.stats["client"]["completion_tokens"] == sum(r["tokens"] for r in records)
    card = m.stats["data_card"]
    assert card["generator"] == {"backend": "endpoint", "model": "micro", "endpoint": server}  # from /v1/models
    assert card["seeds"]["languages"] == {"java": 2, "python": 4}
    assert card["prompt"]["sha256"] == load_template("oss_instruct_pretrain").digest
    for r in records:  # lineage: the snippet is the seed's lines first_line..last_line
        first, last = r["snippet_lines"]
        assert 1 <= first <= last <= 16 and r["seed_language"] == ("java" if r["seed_doc_id"].startswith("jv") else
                                                                   "python")
    # the key went to the server but nowhere else
    assert SECRET not in storage.read_text(m.uris["generations"]) and SECRET not in m.model_dump_json()
    assert SECRET not in logs and "synthesize: 6/6 records" in logs


@pytest.mark.slow  # starts `snowcoder serve`
def test_through_a_proxy_failing_30_percent_every_seed_gets_exactly_one_record(
        reference_run, endpoint_seeds, server, tmp_path):  # noqa: F811
    proxy = FaultyProxy(server, lambda n: {2: 503, 5: 4.5, 8: 429}.get(n % 10))  # 3 of every 10 fail
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{proxy.server_address[1]}/v1"
        cfg = endpoint_cfg(url, endpoint_model="micro", timeout_s=4.0, max_retries=8, concurrency=4)
        m = synth.synthesize(cfg, endpoint_seeds, str(tmp_path / "synth"), decontam_cfg=DecontamConfig())
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert proxy.failed == 3 and proxy.held == 1 and proxy.count == 9  # 6 answers, a 503, a timeout, a 429
    assert _record_set(m.uris["generations"]) == _record_set(reference_run[0].uris["generations"])
    c = m.counts
    assert c["retries"] == proxy.failed and c["http_requests"] == 6 + proxy.failed and c["failures"] == 0
    assert c["retries"] <= cfg.max_retries * 6  # bounded: no request was tried more than max_retries + 1 times
    same = lambda c: {k: v for k, v in c.items() if k not in TIMING + ("retries", "http_requests")}  # noqa: E731
    assert same(c) == same(reference_run[0].counts) and m.digest == reference_run[0].digest


KILLED_RUN = """import sys
from snowcoder.config import DecontamConfig, SynthConfig
from snowcoder.manifest import Manifest
from tasks.synthesize import synthesize
synthesize(SynthConfig.model_validate_json(sys.argv[1]), Manifest.model_validate_json(sys.argv[2]), sys.argv[3],
           decontam_cfg=DecontamConfig())
"""


@pytest.mark.slow  # starts `snowcoder serve`
def test_a_run_killed_mid_way_resumes_to_the_same_records(
        reference_run, endpoint_seeds, server, tmp_path):  # noqa: F811
    out = str(tmp_path / "synth")
    cfg = endpoint_cfg(server)
    env = {**os.environ, KEY_ENV: SECRET, synth.FAILPOINT_ENV: "2"}  # SIGKILL after the 2nd record
    killed = subprocess.run([sys.executable, "-c", KILLED_RUN, cfg.model_dump_json(), endpoint_seeds.model_dump_json(),
                             out], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert SECRET not in killed.stdout + killed.stderr
    gen_uri = str(Path(out) / "generations.jsonl")
    assert len(storage.read_jsonl(gen_uri)) == 2 and not list(Path(out).glob("docs-*"))
    m = synth.synthesize(cfg, endpoint_seeds, out, decontam_cfg=DecontamConfig())
    assert m.counts["generated_this_run"] == 4 and m.counts["http_requests"] == 4
    assert _record_set(gen_uri) == _record_set(reference_run[0].uris["generations"])
    assert m.digest == reference_run[0].digest


# --------------------------------------------------------------------------- the real local generator
@pytest.mark.slow
def test_load_generator_and_synthesize_one_seed(tmp_path):
    import sysconfig

    content = Path(sysconfig.get_paths()["stdlib"], "colorsys.py").read_text()
    seeds = _seeds(tmp_path, [{**_doc("colorsys", "python", 0.9, content), "path": "colorsys.py"}])
    cfg = SynthConfig(n_seeds=1, max_new_tokens=48, batch_size=1, seed_chars=400)
    m = synth.synthesize(cfg, seeds, str(tmp_path / "synth"), decontam_cfg=DecontamConfig())
    assert m.stage == "synthesize" and m.counts["generated"] == 1
    assert m.counts["kept"] + m.counts["rejected"] == 1
    assert 0 < m.counts["tokens_generated"] <= 48 and m.counts["output_tok_per_s"] > 0
    assert sum(m.stats["rejected_by_reason"].values()) == m.counts["rejected"]
    kept = storage.read_shards(m.shard_uris("docs"))
    assert list(kept.columns) == storage.DOC_COLUMNS and len(kept) == m.counts["kept"]
    (record,) = storage.read_jsonl(m.uris["generations"])
    assert record["generation"].startswith(synth.ASSISTANT_PREFIX) and record["seed_doc_id"] == "colorsys"
