"""Benchmark loaders: each published format parses into the uniform record; missing data gives a clear error."""
from __future__ import annotations

import gzip
import json
import shutil
import sys
import types
from typing import get_args
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from snowcoder.config import BenchmarkSource, DecontamConfig, UserError
from tasks import benchmarks as B

FIX = Path(__file__).parent / "fixtures" / "benchmarks"
FILES = {
    "humaneval+": "HumanEvalPlus-mini.jsonl",
    "mbpp": "mbpp.jsonl",
    "mbpp+": "MbppPlus-mini.jsonl",
    "evoeval_difficult": "EvoEval_difficult.jsonl",
    "bigcodebench": "BigCodeBench-mini.jsonl",
}


def fixture(name: str) -> str:
    return str(FIX / name)


def check_record(r: dict, benchmark: str) -> None:
    assert set(B.RECORD_FIELDS) <= set(r)
    assert r["benchmark"] == benchmark
    assert all(isinstance(r[k], str) for k in B.RECORD_FIELDS)
    assert r["prompt"].strip() and r["canonical_solution"].strip() and r["entry_point"]


@pytest.mark.parametrize("benchmark", sorted(FILES))
def test_each_loader_parses_its_fixture(benchmark):
    records = B.load_benchmark(benchmark, fixture(FILES[benchmark]))
    assert len(records) == 3
    for r in records:
        check_record(r, benchmark)
    # fresh dicts each call: callers may mutate them
    records[0]["prompt"] = "changed"
    assert B.load_benchmark(benchmark, fixture(FILES[benchmark]))[0]["prompt"] != "changed"


def test_humaneval_bundled_and_from_file(tmp_path):
    he = B.load_humaneval()
    assert len(he) == 164 and [r["task_id"] for r in he[:3]] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    assert he[-1]["task_id"] == "HumanEval/163"
    check_record(he[0], "humaneval")
    assert set(he[0]) == {"benchmark", *B.HUMANEVAL_FIELDS}
    # the same problems from a published-format file (gzipped jsonl, lines in another order)
    path = tmp_path / "HumanEval.jsonl.gz"
    rows = [{k: r[k] for k in B.HUMANEVAL_FIELDS} for r in reversed(he[:5])]
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    assert B.load_humaneval(str(path)) == he[:5]


def test_humaneval_plus_fields():
    plus = {r["task_id"]: r for r in B.load_humaneval_plus(fixture(FILES["humaneval+"]))}
    he = {r["task_id"]: r for r in B.load_humaneval()}
    p = plus["HumanEval/0"]
    assert p["prompt"] == he["HumanEval/0"]["prompt"] and p["entry_point"] == "has_close_elements"
    assert p["base_input"][0] == [[1.0, 2.0, 3.0], 0.5] and p["plus_input"] and p["atol"] == 0
    assert "$_CONTRACT_$" in p["contract"] and "def check(candidate)" in p["test"]
    assert plus["HumanEval/2"]["atol"] == 1e-06
    assert list(plus) == ["HumanEval/0", "HumanEval/2", "HumanEval/12"]  # numeric task order


def test_mbpp_original_and_sanitized():
    orig = B.load_mbpp(fixture("mbpp.jsonl"))
    assert [r["task_id"] for r in orig] == ["Mbpp/2", "Mbpp/3", "Mbpp/4"]  # integer ids get EvalPlus's prefix
    r2, _, r4 = orig
    assert r2["prompt"] == "Write a function to find the similar elements from the given two tuple lists."
    assert r2["canonical_solution"].startswith("def similar_elements(")
    assert r2["entry_point"] == "similar_elements" and len(r2["test_list"]) == 3
    assert r2["test"].splitlines()[0] == "assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)"
    assert r4["test"].splitlines()[0] == "import heapq as hq"  # test_setup_code runs first
    assert r4["entry_point"] == "heap_queue_largest" and r4["challenge_test_list"] == []

    san = {r["task_id"]: r for r in B.load_mbpp(fixture("sanitized-mbpp.json"))}
    assert list(san) == ["Mbpp/2", "Mbpp/7", "Mbpp/82"]
    assert san["Mbpp/7"]["prompt"].startswith("Write a function to find all words")
    assert san["Mbpp/82"]["test"].splitlines() == ["import math", san["Mbpp/82"]["test_list"][0]]
    assert san["Mbpp/82"]["entry_point"] == "volume_sphere"


def test_mbpp_plus_release_format():
    r = B.load_mbpp_plus(fixture(FILES["mbpp+"]))[0]
    assert r["task_id"] == "Mbpp/2" and r["entry_point"] == "similar_elements"
    assert r["prompt"].startswith('"""\nWrite a function to find the shared elements')
    assert r["test"].strip().startswith("assert set(similar_elements(")  # the `assertion` field
    assert r["base_input"][0] == [[3, 4, 5, 6], [5, 7, 4, 10]] and "contract" in r


def test_evoeval_and_bigcodebench_fields():
    evo = B.load_evoeval("difficult", fixture(FILES["evoeval_difficult"]))
    assert [r["task_id"] for r in evo] == ["EvoEval/0", "EvoEval/1", "EvoEval/2"]
    assert evo[0]["inputs"][0] == "[(1.0, 0), (2.0, 1), (3.0, 2)], 0.5" and evo[0]["test"] == ""
    bcb = B.load_bigcodebench(fixture(FILES["bigcodebench"]))
    r = bcb[0]
    assert r["task_id"] == "BigCodeBench/0" and r["entry_point"] == "task_func"
    assert r["prompt"].startswith("import itertools\nfrom random import shuffle\n\ndef task_func(")  # complete_prompt
    assert r["code_prompt"].endswith("def task_func(numbers=list(range(1, 3))):\n")
    assert "You should write self-contained code" in r["instruct_prompt"]
    assert r["libs"] == ["random", "itertools"]  # the published repr of a list, parsed
    assert r["test"].startswith("import unittest")


def test_other_file_shapes(tmp_path):
    """gzip, parquet (list columns come back as numpy arrays) and a JSON object keyed by task id."""
    rows = [json.loads(line) for line in (FIX / FILES["mbpp+"]).read_text().splitlines()]
    gz = tmp_path / "MbppPlus-v0.2.0.jsonl.gz"
    gz.write_bytes(gzip.compress((FIX / FILES["mbpp+"]).read_bytes()))
    pq = tmp_path / "mbpp.parquet"
    pd.DataFrame([json.loads(line) for line in (FIX / "mbpp.jsonl").read_text().splitlines()]).to_parquet(pq)
    keyed = tmp_path / "mbpp_plus.json"
    keyed.write_text(json.dumps({r["task_id"]: {k: v for k, v in r.items() if k != "task_id"} for r in rows}))
    reference = B.load_mbpp_plus(fixture(FILES["mbpp+"]))
    assert B.load_mbpp_plus(str(gz)) == reference
    assert B.load_mbpp_plus(str(keyed)) == reference
    from_parquet = B.load_mbpp(str(pq))
    assert from_parquet == B.load_mbpp(fixture("mbpp.jsonl"))
    assert type(from_parquet[0]["test_list"]) is list


def test_missing_data_gives_a_clear_error(tmp_path):
    missing = str(tmp_path / "MbppPlus-v0.2.0.jsonl.gz")
    with pytest.raises(UserError, match=r"mbpp\+: benchmark file not found: .*MbppPlus-v0\.2\.0\.jsonl\.gz"):
        B.load_mbpp_plus(missing)
    with pytest.raises(UserError, match=r"bigcodebench: no data given: set a path to .* or a hub dataset id"):
        B.load_benchmark("bigcodebench")
    with pytest.raises(UserError, match="unknown benchmark 'apps'"):
        B.load_benchmark("apps")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"task_id": "Mbpp/2", "prompt": "x"\n')
    with pytest.raises(UserError, match="cannot parse"):
        B.load_mbpp_plus(str(broken))
    wrong = tmp_path / "wrong.jsonl"  # a HumanEval file given as BigCodeBench
    wrong.write_text((FIX / FILES["humaneval+"]).read_text())
    with pytest.raises(UserError, match="no 'complete_prompt' field"):
        B.load_bigcodebench(str(wrong))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(UserError, match="no problems"):
        B.load_mbpp(str(empty))


def test_changed_file_is_reread(tmp_path):
    path = tmp_path / "EvoEval_difficult.jsonl"
    shutil.copy(FIX / FILES["evoeval_difficult"], path)
    assert len(B.load_evoeval("difficult", str(path))) == 3
    path.write_text(path.read_text().splitlines()[0] + "\n")
    assert len(B.load_evoeval("difficult", str(path))) == 1


def test_names_and_sources():
    assert B.canonical_name("HumanEval+") == "humaneval+"
    assert B.canonical_name("humanevalplus") == "humaneval+"
    assert B.canonical_name("MBPP_plus") == "mbpp+"
    assert B.canonical_name("EvoEval_tool_use") == "evoeval_tool_use"
    assert B.canonical_name("bcb") == "bigcodebench"
    assert set(B.BENCHMARKS) == set(B.BENCHMARK_NAMES) == set(B.DEFAULT_HUB) == set(B.PUBLISHED_FILE)
    # what DecontamConfig holds: plain names stand for {name: ...}
    cfg = DecontamConfig(benchmarks=["humaneval", {"name": "mbpp+", "path": fixture(FILES["mbpp+"])}])
    assert cfg.benchmarks[0] == BenchmarkSource(name="humaneval")
    assert [r["task_id"] for r in B.load_source(cfg.benchmarks[1])][:1] == ["Mbpp/2"]
    assert len(B.load_source("humaneval")) == 164
    assert B.load_source({"name": "mbpp", "path": fixture("mbpp.jsonl")})[0]["task_id"] == "Mbpp/2"
    with pytest.raises(ValidationError, match="name"):
        DecontamConfig(benchmarks=[{"name": "apps"}])
    with pytest.raises(ValidationError, match="'mbpp' needs a path"):
        DecontamConfig(benchmarks=[{"name": "mbpp"}])
    # the config's names are the loaders' names
    assert set(get_args(BenchmarkSource.model_fields["name"].annotation)) == set(B.BENCHMARK_NAMES)


def test_mbpp_entry_point():
    code = "def helper(x):\n    return x\n\ndef main_fn(a, b):\n    return helper(a) + b\n"
    assert B.mbpp_entry_point(code, ["assert main_fn(1, 2) == 3"]) == "main_fn"
    assert B.mbpp_entry_point(code, ["assert something_else()"]) == "main_fn"  # fallback: the last def
    assert B.mbpp_entry_point("x = 1", []) == ""


# --------------------------------------------------------------------------- the hub path (no network)
def test_hub_through_datasets(monkeypatch):
    """With `datasets` importable, a hub id goes through load_dataset; rows in the hub's MBPP+ shape (int ids,
    code, prompt, test_list, test) become records; a dataset dict without split takes the latest version split."""
    calls = []
    hub_rows = [{"task_id": 3, "code": "def is_not_prime(n):\n    return n < 2\n", "prompt": "Write a python function "
                 "to identify non-prime numbers.", "source_file": "x.ipynb", "test_imports": [],
                 "test_list": ["assert is_not_prime(2) == False"], "test": "assert is_not_prime(2) == False\n"}]
    bcb_rows = [json.loads(line) for line in (FIX / FILES["bigcodebench"]).read_text().splitlines()]

    def load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        if path == "bigcode/bigcodebench":
            return {"v0.1.0_hf": bcb_rows[:1], "v0.1.2": bcb_rows[:2], "v0.1.10": bcb_rows}
        return hub_rows

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    B._load.cache_clear()
    r = B.load_mbpp_plus(hub="evalplus/mbppplus")[0]
    assert calls[-1] == ("evalplus/mbppplus", None, "test")
    assert (r["task_id"], r["entry_point"], r["canonical_solution"]) == ("Mbpp/3", "is_not_prime", hub_rows[0]["code"])
    assert r["test"] == hub_rows[0]["test"]
    assert B.load_benchmark("mbpp+", path="hf:evalplus/mbppplus") == [r]  # 'hf:' paths mean a hub id
    assert len(B.load_bigcodebench(hub="bigcode/bigcodebench")) == 3  # v0.1.10 > v0.1.2 (numeric, not text order)
    B.load_mbpp(hub="google-research-datasets/mbpp")
    assert calls[-1] == ("google-research-datasets/mbpp", "full", "test")
    B._load.cache_clear()


def test_hub_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # not installed: the huggingface_hub path
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match=r"cannot load hub dataset 'evalplus/no-such-set'.*give a local path"):
        B.load_benchmark("mbpp+", hub="evalplus/no-such-set")


def test_pick_hub_files():
    files = [".gitattributes", "README.md", "data/v0.1.0_hf-00000-of-00001.parquet", "data/v0.1.2-00000.parquet",
             "data/v0.1.10-00000-of-00001.parquet"]
    assert B._pick_hub_files(files, None, None) == ["data/v0.1.10-00000-of-00001.parquet"]
    assert B._pick_hub_files(files, "v0.1.2", None) == ["data/v0.1.2-00000.parquet"]
    mbpp = ["full/test-00000-of-00001.parquet", "full/train-00000-of-00001.parquet",
            "sanitized/test-00000-of-00001.parquet"]
    assert B._pick_hub_files(mbpp, "test", "full") == ["full/test-00000-of-00001.parquet"]
    assert B._pick_hub_files(["test.jsonl", "README.md"], None, None) == ["test.jsonl"]
