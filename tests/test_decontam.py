"""Decontamination: planted benchmark prompts (re-indented, partial, re-cased) and solutions of every benchmark are
found, by exact substring or by a long n-gram inside a bigger file; near misses and clean code are not; the stage
reports every hit."""
from __future__ import annotations

import json
import pickle
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from snowcoder import storage
from snowcoder.config import DecontamConfig, UserError
from tasks.benchmarks import load_benchmark, load_humaneval
from tasks.crawl import write_stage_outputs
from tasks.decontam import (
    HIT_COLUMNS,
    BenchmarkIndex,
    benchmark_substrings,
    decontaminate,
    decontaminate_shard,
    find_contamination,
    find_matches,
    normalize_whitespace,
    words,
)

FIX = Path(__file__).parent / "fixtures" / "benchmarks"
CFG = DecontamConfig()
ALL = DecontamConfig(benchmarks=[
    "humaneval",
    {"name": "mbpp", "path": str(FIX / "mbpp.jsonl")},
    {"name": "mbpp+", "path": str(FIX / "MbppPlus-mini.jsonl")},
    {"name": "evoeval_difficult", "path": str(FIX / "EvoEval_difficult.jsonl")},
    {"name": "bigcodebench", "path": str(FIX / "BigCodeBench-mini.jsonl")},
])
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


@pytest.fixture(scope="module")
def every():
    return benchmark_substrings(ALL)


def _docs(contents: list[str]) -> pd.DataFrame:
    df = pd.DataFrame({"content": contents})
    df["doc_id"] = [f"{i:016x}" for i in range(len(df))]
    df["repo"], df["path"], df["language"], df["source"] = "r", [f"f{i}.py" for i in range(len(df))], "python", "t"
    df["size_bytes"] = df["content"].str.len()
    df["content_sha256"] = df["doc_id"]
    return df[storage.DOC_COLUMNS]


def _input(tmp_path, contents: list[str], shard_docs: int = 10):
    return write_stage_outputs("dedup", _docs(contents), pd.DataFrame(columns=storage.EXCLUSION_COLUMNS),
                               str(tmp_path / "in"), shard_docs, {}, {"shard_docs": shard_docs})


# --------------------------------------------------------------------------- exact substrings (HumanEval)
def test_load_humaneval(problems):
    assert len(problems) == 164
    p = problems["HumanEval/0"]
    assert set(p) == {"benchmark", "task_id", "prompt", "canonical_solution", "test", "entry_point"}
    assert p["entry_point"] == "has_close_elements" and p["benchmark"] == "humaneval"
    assert [r["task_id"] for r in load_benchmark("humaneval")][:3] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    with pytest.raises(UserError, match="unknown benchmark"):
        load_benchmark("mbpp-nonexistent")


def test_benchmark_substrings(subs):
    assert len(subs) > 300
    assert all(isinstance(s, str) and len(s) >= CFG.min_substring_chars for s in subs)
    assert all(s == normalize_whitespace(s) for s in subs)
    assert {s.item_id for s in subs} >= {"HumanEval/0", "HumanEval/163"}
    assert "def has_close_elements(numbers: List[float], threshold: float) -> bool:" in subs  # signature line
    assert {s.kind for s in subs} == {"prompt", "solution", "signature", "docstring"}
    assert "return x + y" not in subs  # HumanEval/53's solution is too short to match
    s = pickle.loads(pickle.dumps(subs[0]))
    assert s == subs[0] and (s.item_id, s.benchmark, s.kind) == (subs[0].item_id, "humaneval", "prompt")
    assert len(benchmark_substrings(DecontamConfig(min_substring_chars=400))) < len(subs)
    assert benchmark_substrings(CFG) is subs  # built once per process and config


def test_reindented_prompt_inside_a_class(problems, subs):
    prompt = problems["HumanEval/12"]["prompt"]
    planted = "class Helpers:\n" + textwrap.indent(prompt, "        ") + "        return None\n"
    assert prompt not in planted  # the raw prompt is not a substring: indentation differs
    assert find_contamination(CLEAN + planted, subs) == "HumanEval/12"
    assert "prompt" in {m.kind for m in find_matches(CLEAN + planted, subs)}


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
    assert [m.kind for m in find_matches(only_doc, subs)][0] == "docstring"


def test_canonical_solution_case_insensitive(problems, subs):
    sol = problems["HumanEval/12"]["canonical_solution"]
    text = "def pick_longest(strings):\n" + sol.upper().replace("    ", "\t")
    assert find_contamination(text, subs) == "HumanEval/12"
    assert find_matches(text, subs)[0].kind == "solution"


def test_clean_code_and_glued_boundaries(subs):
    assert find_contamination(CLEAN, subs) is None
    assert find_contamination("", subs) is None
    # a benchmark string glued to neighbouring characters is still found (matches the naive `in` semantics)
    s = next(x for x in subs if x.item_id == "HumanEval/2" and x.startswith("def "))
    assert find_contamination("xx" + s + "yy", subs) == "HumanEval/2"
    # plain str substrings: the matched substring itself comes back
    assert find_contamination("A Needle in a haystack", ["needle in a"]) == "needle in a"


def test_substring_index_matches_naive_search(subs):
    """The token -> strings shortcut finds exactly the strings a plain lowercase `in` over all strings finds."""
    texts = [CLEAN] + [CLEAN + "\n" + s.upper() + "\n" for s in subs[::7]] + ["prefix" + s[5:] for s in subs[::11]]
    for text in texts:
        norm = normalize_whitespace(text).lower()
        naive = [s for s in subs if s.lower() in norm]
        fast = [m for m in find_matches(text, subs) if m.kind != "ngram"]
        assert [m.item_id for m in fast] == [s.item_id for s in naive]
        assert [m.kind for m in fast] == [s.kind for s in naive]
        # the plain-list path (no index) gives the same first hit
        assert find_contamination(text, list(subs)) == (naive[0].item_id if naive else None)


# --------------------------------------------------------------------------- long n-gram overlap
def test_ngram_overlap_inside_a_bigger_file(problems, subs):
    """Part of HumanEval/12's docstring as `#` comment lines in a bigger file: no benchmark string is a substring
    (the `#`s interrupt it), the 12-word overlap catches it."""
    comment = ("# Out of list of strings, return the longest one. Return the first one in case of multiple\n"
               "# strings of the same length.\n")
    text = CLEAN * 20 + comment + "def pick(xs):\n    return max(xs, key=len)\n" + CLEAN * 20
    matches = find_matches(text, subs)
    assert [m.kind for m in matches] == ["ngram"]
    assert matches[0].item_id == "HumanEval/12" and matches[0].n_ngrams >= 5
    assert matches[0].match.startswith("out of list of strings return the longest one")
    assert find_contamination(text, subs) == "HumanEval/12"
    # re-formatted solution code (other spacing, quotes, line breaks) shares the same words
    sol = problems["HumanEval/0"]["canonical_solution"]
    squashed = "def close(numbers, threshold):\n" + sol.replace(" != ", "!=").replace(" = ", "=").replace("    ", "  ")
    assert normalize_whitespace(sol).lower() not in normalize_whitespace(squashed).lower()
    assert find_contamination(squashed, subs) == "HumanEval/0"


def test_near_misses_are_not_caught(problems, subs):
    p = problems["HumanEval/12"]
    stream = words(p["prompt"] + "\n" + p["canonical_solution"])
    assert find_contamination(" ".join(stream), subs) == "HumanEval/12"
    # the same words with a foreign word after every 11: no run of 12 benchmark words, no benchmark substring
    broken = [w for i in range(0, len(stream), 11) for w in stream[i:i + 11] + ["zqxj"]]
    assert find_contamination(" ".join(broken), subs) is None
    # 11 words of a docstring: below the n-gram length
    assert find_contamination("# out of list of strings return the longest one return the", subs) is None
    # single letters and numbers are not words: a numeric table that repeats a docstring's numbers is clean
    assert find_contamination("data = [1.0, 2.0, 3.0, 4.0, 5.0, 2.2, 1.0, 2.8, 3.0, 4.0, 5.0, 2.0]", subs) is None
    loops = "for i in range(len(l)):\n    for j in range(i + 1, len(l)):\n        pass\n"
    assert find_contamination(loops, subs) is None


def test_boilerplate_and_uninformative_ngrams_are_not_indexed():
    shared = "Requirements: the helper reads configuration values from environment variables before starting work."
    topics = ["apples", "rivers", "planets"]
    tasks = [{"benchmark": "toy", "task_id": f"Toy/{i}", "entry_point": f"f{i}",
              "prompt": f'def f{i}(x):\n    """{shared} Then the {topics[i]} task computes its own answer."""\n',
              "canonical_solution": "    for i in range(len(x)):\n        for j in range(len(x)):\n            pass\n"
                                    "    return [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]\n"} for i in range(3)]
    strict = BenchmarkIndex(tasks, min_chars=1000, n=12, max_tasks=1)
    assert strict.n_boilerplate > 0 and len(strict) == 0  # min_chars=1000: n-grams only
    assert find_matches(shared, strict) == []  # in all 3 tasks: boilerplate
    assert [m.item_id for m in find_matches(shared + " Then the rivers task", strict)] == ["Toy/1"]
    assert find_matches("return [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]", strict) == []  # numbers
    lenient = BenchmarkIndex(tasks, min_chars=1000, n=12, max_tasks=3)
    assert [m.item_id for m in find_matches(shared, lenient)] == ["Toy/0"]  # the first owner wins
    off = BenchmarkIndex(tasks, min_chars=1000, n=0, max_tasks=1)
    assert len(off.keys) == 0 and find_matches(shared + " Then the rivers task", off) == []


# --------------------------------------------------------------------------- every benchmark
def test_every_benchmark_is_caught(every):
    """Prompts, solutions and instruct prompts of each configured benchmark, planted in other code."""
    def planted(p, part, transform=lambda s: s):
        return CLEAN + "\n\n" + textwrap.indent(transform(p[part]), "    ") + "\n" + CLEAN

    expected = {"mbpp": "Mbpp/{}", "mbpp+": "Mbpp/{}", "evoeval_difficult": "EvoEval_difficult/{}",
                "bigcodebench": "BigCodeBench/{}"}
    short_solutions = []
    for source in ALL.benchmarks[1:]:
        for p in load_benchmark(source.name, source.path):
            want = expected[source.name].format(p["task_id"].rsplit("/", 1)[-1])
            assert find_contamination(planted(p, "prompt"), every) == want, (source.name, p["task_id"], "prompt")
            hit = find_contamination(planted(p, "canonical_solution", str.upper), every)
            short = len(normalize_whitespace(p["canonical_solution"])) < ALL.min_substring_chars
            assert hit == (None if short else want), (source.name, p["task_id"], "solution")
            short_solutions += [f"{source.name}:{p['task_id']}"] * short
            if source.name == "bigcodebench":
                assert find_contamination(planted(p, "instruct_prompt"), every) == want
    assert short_solutions == ["mbpp+:Mbpp/17"]  # `return 4*a`: below min_substring_chars, no 12 words
    kinds = {(m.benchmark, m.kind) for m in find_matches(planted(load_benchmark(
        "bigcodebench", str(FIX / "BigCodeBench-mini.jsonl"))[1], "instruct_prompt"), every)}
    assert ("bigcodebench", "instruct_prompt") in kinds
    assert find_contamination(CLEAN, every) is None


def test_configured_benchmark_without_its_file(tmp_path):
    cfg = DecontamConfig(benchmarks=["humaneval", {"name": "mbpp+", "path": str(tmp_path / "MbppPlus.jsonl.gz")}])
    inp = _input(tmp_path, [CLEAN])
    with pytest.raises(UserError, match=r"mbpp\+: benchmark file not found: .*MbppPlus\.jsonl\.gz"):
        decontaminate(cfg, inp, str(tmp_path / "out"))
    with pytest.raises(ValidationError, match="'bigcodebench' needs a path to its data file or a hub dataset id"):
        DecontamConfig(benchmarks=["bigcodebench"])


# --------------------------------------------------------------------------- the stage
def test_decontaminate_stage(tmp_path, problems):
    contents = [
        CLEAN,
        "# utils\n" + textwrap.indent(problems["HumanEval/23"]["prompt"] + "    return 0\n", "    "),
        "def helper(x):\n" + problems["HumanEval/12"]["canonical_solution"],
        "def strlen(s):\n    return len(s)\n",  # HumanEval/23's solution body alone: too short to count
    ]
    inp = _input(tmp_path, contents)
    m = decontaminate(CFG, inp, str(tmp_path / "out"))
    kept = storage.read_shards(m.shard_uris("docs"))
    excl = storage.read_shards(m.shard_uris("exclusions"))
    assert sorted(kept.path) == ["f0.py", "f3.py"]
    assert dict(zip(excl.path, excl.reason)) == {"f1.py": "contaminated:HumanEval/23",
                                                 "f2.py": "contaminated:HumanEval/12"}
    assert set(excl.stage) == {"decontaminate"}
    assert m.counts["docs_in"] == 4 and m.counts["docs"] == 2 and m.counts["contaminated"] == 2
    assert m.stats["contaminated_by_item"] == {"HumanEval/12": 1, "HumanEval/23": 1}
    assert m.stats["contaminated_by_benchmark"] == {"humaneval": 2} and m.counts["contaminated_humaneval"] == 2
    assert m.stats["ngram_size"] == 12 and m.stats["mb_per_s"] is not None


def test_report_lists_every_hit(tmp_path, problems, every):
    """One file carrying three benchmarks' text: every (benchmark, task, kind) hit is a row of hits.parquet; the
    exclusion reason names the first; counts per benchmark in the stats. Shards and merge agree with one pass."""
    mbpp3 = next(p for p in load_benchmark("mbpp", str(FIX / "mbpp.jsonl")) if p["task_id"] == "Mbpp/3")
    bcb0 = load_benchmark("bigcodebench", str(FIX / "BigCodeBench-mini.jsonl"))[0]
    bcb_fragment = "# " + " ".join(bcb0["prompt"].split("Args:")[0].split()[-20:]) + "\n"  # 20 words, as a comment
    multi = problems["HumanEval/12"]["prompt"] + "    pass\n\n" + mbpp3["canonical_solution"] + "\n" + bcb_fragment
    contents = [CLEAN, multi, CLEAN.replace("settings", "config"), bcb_fragment + CLEAN]
    inp = _input(tmp_path, contents, shard_docs=2)
    m = decontaminate(ALL, inp, str(tmp_path / "out"))
    hits = storage.read_parquet(m.uris["hits"])
    assert list(hits.columns) == HIT_COLUMNS
    assert m.counts["hits"] == len(hits) and m.counts["contaminated"] == 2
    found = {(r.path, r.benchmark, r.task_id, r.kind) for r in hits.itertuples()}
    assert {("f1.py", "humaneval", "HumanEval/12", "prompt"), ("f1.py", "humaneval", "HumanEval/12", "signature"),
            ("f1.py", "humaneval", "HumanEval/12", "docstring"), ("f1.py", "humaneval", "HumanEval/12", "ngram"),
            ("f1.py", "mbpp", "Mbpp/3", "solution"), ("f1.py", "bigcodebench", "BigCodeBench/0", "ngram"),
            ("f3.py", "bigcodebench", "BigCodeBench/0", "ngram")} <= found
    assert not {r for r in found if r[0] in ("f0.py", "f2.py")}
    assert set(hits.doc_id[hits.path == "f1.py"]) == {"0000000000000001"}
    assert (hits.n_ngrams[hits.kind == "ngram"] > 0).all() and (hits.n_ngrams[hits.kind != "ngram"] == 0).all()
    excl = storage.read_shards(m.shard_uris("exclusions"))
    assert dict(zip(excl.path, excl.reason)) == {"f1.py": "contaminated:HumanEval/12",
                                                 "f3.py": "contaminated:BigCodeBench/0"}
    by = m.stats["hits_by_benchmark"]
    assert m.stats["contaminated_by_benchmark"] == {"bigcodebench": 1, "humaneval": 1, "mbpp": 0}
    assert by["bigcodebench"]["docs_with_hits"] == 2 and by["bigcodebench"]["by_kind"] == {"ngram": 2}
    assert by["mbpp"]["contaminated"] == 0 and by["mbpp"]["hits"] >= 1
    assert (m.counts["contaminated_humaneval"], m.counts["contaminated_bigcodebench"], m.counts["contaminated_mbpp"],
            m.counts["contaminated_mbpp_plus"]) == (1, 1, 0, 0)
    assert [b["name"] for b in m.stats["benchmarks"]] == ["humaneval", "mbpp", "mbpp+", "evoeval_difficult",
                                                          "bigcodebench"]
    # shard partials are small, JSON-able and carry the same hits
    parts = [decontaminate_shard(ALL, u, i) for i, u in enumerate(inp.shard_uris("docs"))]
    json.dumps(parts)
    assert [h for p in parts for h in p["hits"]] == [None, "HumanEval/12", None, "BigCodeBench/0"]
    assert sum(len(p["matches"]) for p in parts) == len(hits)


def test_clean_corpus_has_no_hits(tmp_path):
    """Empty report (with its columns) when nothing matches; n-grams off still runs the substring check."""
    inp = _input(tmp_path, [CLEAN, CLEAN.upper(), ""])
    m = decontaminate(DecontamConfig(ngram_size=0), inp, str(tmp_path / "out"))
    assert m.counts["hits"] == 0 and m.counts["ngrams"] == 0 and m.counts["docs"] == 3
    assert list(storage.read_parquet(m.uris["hits"]).columns) == HIT_COLUMNS
    assert m.stats["hits_by_benchmark"] == {} and m.stats["contaminated_by_benchmark"] == {}


def test_changed_benchmark_file_rebuilds_the_index(tmp_path):
    """The index is cached per process; a benchmark file that changes (size/mtime) is read again, and the digest
    that stage keys can use changes with it."""
    from tasks.decontam import benchmarks_digest

    path = tmp_path / "EvoEval_difficult.jsonl"
    lines = (FIX / "EvoEval_difficult.jsonl").read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:1]))
    cfg = DecontamConfig(benchmarks=[{"name": "evoeval_difficult", "path": str(path)}])
    p2 = load_benchmark("evoeval_difficult", str(FIX / "EvoEval_difficult.jsonl"))[2]
    before = benchmarks_digest(cfg)
    assert find_contamination(p2["prompt"], benchmark_substrings(cfg)) is None
    path.write_text("".join(lines))
    assert find_contamination(p2["prompt"], benchmark_substrings(cfg)) == "EvoEval_difficult/2"
    assert benchmarks_digest(cfg) != before
