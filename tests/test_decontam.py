"""Decontamination: planted HumanEval prompts (re-indented, partial) and solutions are found; clean code is not."""
from __future__ import annotations

import pickle
import textwrap

import pandas as pd
import pytest

from snowcoder import storage
from snowcoder.config import DecontamConfig, UserError
from tasks.benchmarks import load_benchmark, load_humaneval
from tasks.crawl import write_stage_outputs
from tasks.decontam import benchmark_substrings, decontaminate, find_contamination, normalize_whitespace

CFG = DecontamConfig()
CLEAN = '''import json


def load_settings(path):
    """Read a JSON settings file and fill in defaults."""
    with open(path) as fh:
        settings = json.load(fh)
    settings.setdefault("verbose", False)
    return settings
'''


@pytest.fixture(scope="module")
def problems():
    return {p["task_id"]: p for p in load_humaneval()}


@pytest.fixture(scope="module")
def subs():
    return benchmark_substrings(CFG)


def test_load_humaneval(problems):
    assert len(problems) == 164
    p = problems["HumanEval/0"]
    assert set(p) == {"task_id", "prompt", "canonical_solution", "test", "entry_point"}
    assert p["entry_point"] == "has_close_elements"
    assert [r["task_id"] for r in load_benchmark("humaneval")][:3] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    with pytest.raises(UserError, match="unknown benchmark"):
        load_benchmark("mbpp-nonexistent")


def test_benchmark_substrings(subs):
    assert len(subs) > 300
    assert all(isinstance(s, str) and len(s) >= CFG.min_substring_chars for s in subs)
    assert all(s == normalize_whitespace(s) for s in subs)
    assert {s.item_id for s in subs} >= {"HumanEval/0", "HumanEval/163"}
    assert "def has_close_elements(numbers: List[float], threshold: float) -> bool:" in subs  # signature line
    assert "return x + y" not in subs  # HumanEval/53's solution is too short to match
    s = pickle.loads(pickle.dumps(subs[0]))
    assert s == subs[0] and s.item_id == subs[0].item_id
    assert len(benchmark_substrings(DecontamConfig(min_substring_chars=400))) < len(subs)


def test_reindented_prompt_inside_a_class(problems, subs):
    prompt = problems["HumanEval/12"]["prompt"]
    planted = "class Helpers:\n" + textwrap.indent(prompt, "        ") + "        return None\n"
    assert prompt not in planted  # the raw prompt is not a substring: indentation differs
    assert find_contamination(CLEAN + planted, subs) == "HumanEval/12"


def test_docstring_and_signature_without_imports(problems, subs):
    # HumanEval/0 without its `from typing import List` line, the docstring re-wrapped, a different body
    p = problems["HumanEval/0"]
    sig_line = "def has_close_elements(numbers: List[float], threshold: float) -> bool:"
    doc = p["prompt"].split('"""')[1]
    rewrapped = " ".join(doc.split())
    text = f'{sig_line}\n    """{textwrap.fill(rewrapped, 60)}"""\n    return False\n'
    assert find_contamination(text, subs) == "HumanEval/0"
    only_doc = f'def close(xs, t):\n    """{textwrap.fill(rewrapped, 50)}\n    """\n'
    assert find_contamination(only_doc, subs) == "HumanEval/0"


def test_canonical_solution_case_insensitive(problems, subs):
    sol = problems["HumanEval/12"]["canonical_solution"]
    text = "def pick_longest(strings):\n" + sol.upper().replace("    ", "\t")
    assert find_contamination(text, subs) == "HumanEval/12"


def test_clean_code_and_glued_boundaries(subs):
    assert find_contamination(CLEAN, subs) is None
    assert find_contamination("", subs) is None
    # a benchmark string glued to neighbouring characters is still found (matches the naive `in` semantics)
    s = next(x for x in subs if x.item_id == "HumanEval/2" and x.startswith("def "))
    assert find_contamination("xx" + s + "yy", subs) == "HumanEval/2"
    # plain str substrings: the matched substring itself comes back
    assert find_contamination("A Needle in a haystack", ["needle in a"]) == "needle in a"


def test_matches_naive_search(subs):
    """The anchor-token shortcut finds exactly what a plain lowercase `in` over all strings finds."""
    texts = [CLEAN] + [CLEAN + "\n" + s.upper() + "\n" for s in subs[::7]] + ["prefix" + s[5:] for s in subs[::11]]
    for text in texts:
        norm = normalize_whitespace(text).lower()
        naive = next((s.item_id for s in subs if s.lower() in norm), None)
        assert find_contamination(text, subs) == naive


def test_decontaminate_stage(tmp_path, problems):
    contents = [
        CLEAN,
        "# utils\n" + textwrap.indent(problems["HumanEval/23"]["prompt"] + "    return 0\n", "    "),
        "def helper(x):\n" + problems["HumanEval/12"]["canonical_solution"],
        "def strlen(s):\n    return len(s)\n",  # HumanEval/23's solution body alone: too short to count
    ]
    df = pd.DataFrame({"content": contents})
    df["doc_id"] = [f"{i:016x}" for i in range(len(df))]
    df["repo"], df["path"], df["language"], df["source"] = "r", [f"f{i}.py" for i in range(len(df))], "python", "t"
    df["size_bytes"] = df["content"].str.len()
    df["content_sha256"] = df["doc_id"]
    inp = write_stage_outputs("dedup", df[storage.DOC_COLUMNS], pd.DataFrame(columns=storage.EXCLUSION_COLUMNS),
                              str(tmp_path / "in"), 10, {}, {})
    m = decontaminate(CFG, inp, str(tmp_path / "out"))
    kept = storage.read_shards(m.shard_uris("docs"))
    excl = storage.read_shards(m.shard_uris("exclusions"))
    assert sorted(kept.path) == ["f0.py", "f3.py"]
    assert dict(zip(excl.path, excl.reason)) == {"f1.py": "contaminated:HumanEval/23",
                                                 "f2.py": "contaminated:HumanEval/12"}
    assert set(excl.stage) == {"decontaminate"}
    assert m.counts["docs_in"] == 4 and m.counts["docs"] == 2 and m.counts["contaminated"] == 2
    assert m.stats["contaminated_by_item"] == {"HumanEval/12": 1, "HumanEval/23": 1}
